//! What to compute, as plain data. The CPU and GPU engines both execute a [`Request`].

/// How the input rows represent distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputForm {
    /// Non-negative values; each row sums to 1 (checked, see [`Normalization`]).
    Probabilities,
    /// Natural-log probabilities; `-inf` means probability 0.
    LogProbabilities,
    /// Unnormalised logits; each row goes through a fused log-softmax. `-inf` means probability 0.
    Logits,
}

/// Which quantity each row yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Divergence {
    /// KL(P‖Q) = Σ p·ln(p/q).
    Kl,
    /// KL(Q‖P).
    ReverseKl,
    /// Jeffreys divergence KL(P‖Q) + KL(Q‖P).
    SymmetricKl,
    /// Jensen–Shannon divergence ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2; at most ln 2.
    JensenShannon,
    /// Cross-entropy H(P,Q) = −Σ p·ln q = H(P) + KL(P‖Q).
    CrossEntropy,
    /// Entropy H(P) = −Σ p·ln p. Q is not read.
    Entropy,
}

/// How per-row values are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// One value per row (the default).
    PerRow,
    /// Sum over rows.
    Sum,
    /// Mean over rows: the batch-mean divergence. (Not torch's mean over elements.)
    MeanOverRows,
}

/// Unit of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    Nats,
    Bits,
}

/// What to do with rows whose probabilities (or exp of log-probabilities) do not sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// Error when a row's sum is off from 1 by more than the tolerance (the default).
    /// `None` takes the tolerance of the element type, see [`default_sum_tolerance`].
    Check { tolerance: Option<f64> },
    /// Divide each row by its sum (no second pass over the data, except for Jensen–Shannon).
    Normalize,
    /// Use the values as given: Σ p·ln(p/q) literally, with no check and no clamp at zero.
    AsGiven,
}

/// What NaN in the input does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NanPolicy {
    /// An error naming the row and column (the default).
    Error,
    /// The row's value becomes NaN; other rows are unaffected.
    Propagate,
}

/// A complete description of one computation. Build with [`Request::new`] and the setters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub divergence: Divergence,
    pub input: InputForm,
    pub reduction: Reduction,
    pub unit: Unit,
    pub normalization: Normalization,
    pub nan: NanPolicy,
    /// Smoothing, opt-in: added to every probability of both rows, which are then divided by
    /// their sums (so it implies `Normalize`). 0 (the default) is off, and q = 0 < p then
    /// gives +inf as it should. Probabilities only.
    pub pseudocount: f64,
}

impl Default for Request {
    fn default() -> Self {
        Request {
            divergence: Divergence::Kl,
            input: InputForm::Probabilities,
            reduction: Reduction::PerRow,
            unit: Unit::Nats,
            normalization: Normalization::Check { tolerance: None },
            nan: NanPolicy::Error,
            pseudocount: 0.0,
        }
    }
}

impl Request {
    /// KL(P‖Q) per row, in nats, over probabilities whose rows are checked to sum to 1.
    pub fn new(divergence: Divergence) -> Self {
        Request {
            divergence,
            ..Default::default()
        }
    }
    pub fn input(mut self, input: InputForm) -> Self {
        self.input = input;
        self
    }
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }
    pub fn unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }
    pub fn normalization(mut self, normalization: Normalization) -> Self {
        self.normalization = normalization;
        self
    }
    pub fn nan(mut self, nan: NanPolicy) -> Self {
        self.nan = nan;
        self
    }
    /// Add `eps` to every probability and normalise (the "smoothed KL" of practice).
    pub fn pseudocount(mut self, eps: f64) -> Self {
        self.pseudocount = eps;
        self
    }

    /// The request as the engines run it: checked, with what its options imply made explicit
    /// (a pseudocount normalises).
    pub fn resolved(&self) -> crate::error::Result<Request> {
        let bad = |why: &str| Err(crate::error::Error::InvalidRequest(why.into()));
        if !(self.pseudocount.is_finite() && self.pseudocount >= 0.0) {
            return bad("the pseudocount must be a finite number ≥ 0");
        }
        if self.pseudocount == 0.0 {
            return Ok(*self);
        }
        if self.input != InputForm::Probabilities {
            return bad("a pseudocount applies to probabilities or counts, not to logits");
        }
        Ok(Request {
            normalization: Normalization::Normalize,
            ..*self
        })
    }

    /// The request for sides stored as `p` and `q` and computed in a wider type (an f16
    /// side beside an f64 one is read as f64): a row check without an explicit tolerance
    /// takes the looser of the stored types' defaults, since each row carries the rounding
    /// of the type it was stored in, not of the one it is read in.
    pub fn for_stored(self, p: crate::element::Dtype, q: crate::element::Dtype) -> Request {
        match self.normalization {
            Normalization::Check { tolerance: None } => {
                let q = if self.reads_q() { q } else { p };
                let tolerance = default_sum_tolerance(p).max(default_sum_tolerance(q));
                self.normalization(Normalization::Check {
                    tolerance: Some(tolerance),
                })
            }
            _ => self,
        }
    }

    /// Whether Q is read at all.
    pub fn reads_q(&self) -> bool {
        self.divergence != Divergence::Entropy
    }
}

impl Divergence {
    /// Checks the divergences of one run (`--divergence kl,reverse-kl,js`, the first
    /// driving the report): at least one, none twice, and entropy (which reads P alone)
    /// only on its own.
    pub fn check_list(divs: &[Divergence]) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidRequest(m));
        if divs.is_empty() {
            return bad("no divergence given".into());
        }
        for (i, d) in divs.iter().enumerate() {
            if divs[..i].contains(d) {
                return bad(format!("divergence {} is listed twice", d.name()));
            }
        }
        if divs.len() > 1 && divs.contains(&Divergence::Entropy) {
            return bad("entropy reads P alone: compute it on its own, not in a list".into());
        }
        Ok(())
    }
}

/// Default tolerance on |row sum − 1|, per element type: it accepts the rounding of genuinely
/// normalised data stored in that type (a 128k-entry f16 softmax row is not exactly 1), and
/// rejects rows that are not distributions at all.
///
/// | type | unit roundoff u | tolerance |
/// |---|---|---|
/// | f64 | 1.1e-16 | 1e-6 |
/// | f32 | 6.0e-8 | 1e-4 (a naive f32 sum over 128k entries can drift by ~1e-5) |
/// | f16 | 4.9e-4 | 4e-3 (8u: rows rounded elementwise sum within ±u of 1) |
/// | bf16 | 3.9e-3 | 3e-2 (8u) |
pub fn default_sum_tolerance(dtype: crate::element::Dtype) -> f64 {
    match dtype {
        crate::element::Dtype::F64 => 1e-6,
        crate::element::Dtype::F32 => 1e-4,
        crate::element::Dtype::F16 => 4e-3,
        crate::element::Dtype::BF16 => 3e-2,
    }
}

/// The names used by the command line, the JSON reports and the Python package.
macro_rules! named {
    ($t:ty { $($v:ident = $n:literal),* $(,)? }) => {
        impl $t {
            pub const ALL: &'static [$t] = &[$(<$t>::$v),*];

            /// Its name on the command line and in reports.
            pub fn name(self) -> &'static str {
                match self { $(<$t>::$v => $n),* }
            }

            /// The value of a name; `None` when unknown.
            pub fn from_name(name: &str) -> Option<$t> {
                Self::ALL.iter().copied().find(|v| v.name() == name)
            }
        }
    };
}

named!(Divergence {
    Kl = "kl",
    ReverseKl = "reverse-kl",
    SymmetricKl = "symmetric-kl",
    JensenShannon = "js",
    CrossEntropy = "cross-entropy",
    Entropy = "entropy",
});

impl Divergence {
    /// Its formula, as the text report's heading writes it.
    pub fn formula(self) -> &'static str {
        match self {
            Divergence::Kl => "KL(P‖Q)",
            Divergence::ReverseKl => "KL(Q‖P)",
            Divergence::SymmetricKl => "KL(P‖Q) + KL(Q‖P)",
            Divergence::JensenShannon => "JS(P, Q)",
            Divergence::CrossEntropy => "H(P, Q)",
            Divergence::Entropy => "H(P)",
        }
    }
}

named!(InputForm {
    Probabilities = "probs",
    LogProbabilities = "logprobs",
    Logits = "logits",
});

named!(Unit {
    Nats = "nats",
    Bits = "bits",
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::Dtype;

    fn tolerance(r: Request) -> Option<f64> {
        match r.normalization {
            Normalization::Check { tolerance } => tolerance,
            _ => None,
        }
    }

    #[test]
    fn rows_are_checked_with_the_looser_stored_types_tolerance() {
        let kl = Request::new(Divergence::Kl);
        let t = |p, q| tolerance(kl.for_stored(p, q));
        assert_eq!(t(Dtype::F16, Dtype::F64), Some(4e-3));
        assert_eq!(t(Dtype::F64, Dtype::BF16), Some(3e-2));
        assert_eq!(t(Dtype::F32, Dtype::F32), Some(1e-4));
        // Entropy reads P alone: Q's type does not loosen P's check.
        let h = Request::new(Divergence::Entropy).for_stored(Dtype::F64, Dtype::BF16);
        assert_eq!(tolerance(h), Some(1e-6));
        // A tolerance given, or no check at all, stays as asked.
        let given = kl.normalization(Normalization::Check {
            tolerance: Some(0.5),
        });
        assert_eq!(
            tolerance(given.for_stored(Dtype::F64, Dtype::F16)),
            Some(0.5)
        );
        let norm = kl.normalization(Normalization::Normalize);
        assert_eq!(
            norm.for_stored(Dtype::F16, Dtype::F64).normalization,
            Normalization::Normalize
        );
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_name("f8"), None);
    }
}
