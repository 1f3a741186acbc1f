//! Per-row partial sums, how two of them merge, and how a row's sums become its value.
//!
//! Both engines reduce a row (or a piece of one) to one of these small records; turning them
//! into a divergence happens here, on the host, once per row. That keeps the semantics (checks,
//! normalisation, infinities, clamping, units) in one place for the CPU and GPU back ends.

use crate::error::{Error, Result, Side};
use crate::request::{Divergence, InputForm, Normalization, Request, Unit};

/// Partial sums over (a piece of) a probability row.
///
/// `main` holds the divergence's own term summed over the row: Σ t(p,q) for KL where
/// t(x,y) = x·ln(x/y) − x + y ≥ 0, Σ t(q,p) for reverse KL, Σ t(p,m)+t(q,m) for
/// Jensen–Shannon, Σ p·ln q for cross-entropy, Σ p·ln p for entropy. Symmetric KL keeps
/// Σ t(q,p) in `main2`. The non-negative t-terms keep every digit when p ≈ q; the linear
/// parts they leave out are exactly Σ(p − q), kept in `diff`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProbSums {
    pub main: f64,
    pub main2: f64,
    pub sp: f64,
    pub sq: f64,
    pub diff: f64,
}

impl ProbSums {
    pub fn merge(&mut self, o: &ProbSums) {
        self.main += o.main;
        self.main2 += o.main2;
        self.sp += o.sp;
        self.sq += o.sq;
        self.diff += o.diff;
    }
}

/// Partial sums over (a piece of) a row of logits a (for P) and b (for Q), relative to the
/// piece's maxima: sa = Σ e^(a−ma), sb = Σ e^(b−mb), ta = Σ e^(a−ma)·(a−b),
/// tb = Σ e^(b−mb)·(a−b), ea = Σ e^(a−ma)·a. `q_zero` counts entries with a finite and
/// b = −inf (q = 0 < p), `p_zero` the reverse.
///
/// For KL without cancellation when P ≈ Q: with x = a − b − c for a per-row shift c (taken
/// from the row's first block so that x ≈ 0 for shifted but equal logits), psi_a = Σ e^(a−ma)·ψ(x)
/// and psi_b = Σ e^(b−mb)·ψ(−x), ψ(x) = e^−x − 1 + x ≥ 0. Then
/// KL(P‖Q) = ln(1+X) − X + psi_a/sa with X = psi_a/sa − (ta/sa − c): both parts keep their
/// digits, where ta/sa + lse_b − lse_a would lose them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitSums {
    pub ma: f64,
    pub mb: f64,
    pub sa: f64,
    pub sb: f64,
    pub ta: f64,
    pub tb: f64,
    pub ea: f64,
    pub psi_a: f64,
    pub psi_b: f64,
    pub shift: f64,
    pub q_zero: u64,
    pub p_zero: u64,
}

impl Default for LogitSums {
    fn default() -> Self {
        LogitSums {
            ma: f64::NEG_INFINITY,
            mb: f64::NEG_INFINITY,
            sa: 0.0,
            sb: 0.0,
            ta: 0.0,
            tb: 0.0,
            ea: 0.0,
            psi_a: 0.0,
            psi_b: 0.0,
            shift: 0.0,
            q_zero: 0,
            p_zero: 0,
        }
    }
}

/// Scale factors that move a sum taken relative to max `from` onto max `to` (to ≥ from).
fn rescale(from: f64, to: f64) -> f64 {
    if from == f64::NEG_INFINITY {
        0.0
    } else {
        (from - to).exp()
    }
}

impl LogitSums {
    /// Online log-sum-exp merge: rescale both sides to the larger maximum.
    pub fn merge(&mut self, o: &LogitSums) {
        if self.ma == f64::NEG_INFINITY && self.mb == f64::NEG_INFINITY {
            self.shift = o.shift; // an empty start takes the row's shift from its first piece
        }
        let ma = self.ma.max(o.ma);
        let mb = self.mb.max(o.mb);
        let (x, y) = (rescale(self.ma, ma), rescale(o.ma, ma));
        self.sa = self.sa * x + o.sa * y;
        self.ta = self.ta * x + o.ta * y;
        self.ea = self.ea * x + o.ea * y;
        self.psi_a = self.psi_a * x + o.psi_a * y;
        let (x, y) = (rescale(self.mb, mb), rescale(o.mb, mb));
        self.sb = self.sb * x + o.sb * y;
        self.tb = self.tb * x + o.tb * y;
        self.psi_b = self.psi_b * x + o.psi_b * y;
        self.ma = ma;
        self.mb = mb;
        self.q_zero += o.q_zero;
        self.p_zero += o.p_zero;
    }
    pub fn lse_a(&self) -> f64 {
        self.ma + self.sa.ln()
    }
    pub fn lse_b(&self) -> f64 {
        self.mb + self.sb.ln()
    }
}

/// Partial sums of either input form.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partial {
    Probs(ProbSums),
    Logits(LogitSums),
}

impl Partial {
    pub fn merge(&mut self, o: &Partial) {
        match (self, o) {
            (Partial::Probs(a), Partial::Probs(b)) => a.merge(b),
            (Partial::Logits(a), Partial::Logits(b)) => a.merge(b),
            _ => unreachable!("pieces of one row always share a form"),
        }
    }
}

/// ln(1+x) − x, accurate for small x: the correction that normalising a row adds.
#[inline]
fn ln1p_minus(x: f64) -> f64 {
    x.ln_1p() - x
}

/// Tolerance on |row sum − 1| in effect for this request, if rows are checked at all.
pub fn sum_tolerance(req: &Request, dtype: crate::Dtype) -> Option<f64> {
    match req.normalization {
        Normalization::Check { tolerance } => {
            Some(tolerance.unwrap_or_else(|| crate::request::default_sum_tolerance(dtype)))
        }
        _ => None,
    }
}

/// Clamp to the mathematical range (KL ≥ 0, JS ≤ ln 2) and convert units. NaN stays NaN.
#[inline]
pub fn finalize(req: &Request, v: f64, clamp: bool) -> f64 {
    let mut v = v;
    if clamp && v < 0.0 {
        v = 0.0;
    }
    if clamp && req.divergence == Divergence::JensenShannon && v > std::f64::consts::LN_2 {
        v = std::f64::consts::LN_2;
    }
    match req.unit {
        Unit::Nats => v,
        Unit::Bits => v / std::f64::consts::LN_2,
    }
}

#[inline]
fn check_sum(side: Side, row: usize, sum: f64, tol: Option<f64>) -> Result<()> {
    // The test stays inline (it runs once per row, a million times for W2); building the
    // error does not.
    if sum > 0.0 && tol.is_none_or(|t| (sum - 1.0).abs() <= t) {
        Ok(())
    } else {
        Err(sum_error(side, row, sum, tol))
    }
}

#[cold]
#[inline(never)]
fn sum_error(side: Side, row: usize, sum: f64, tol: Option<f64>) -> Error {
    match tol {
        Some(tolerance) if sum > 0.0 => Error::NotNormalized {
            side,
            row,
            sum,
            tolerance,
        },
        _ => Error::NoMass { side, row },
    }
}

/// Whether a `Normalize` request should reread this row rescaled: when Σq/Σp is off from 1
/// by more than 0.1%, the one-pass correction Σt/Σp + ln(1+x) − x cancels and would cost
/// up to |x|/KL of the result's digits. (NaN rows are left to the NaN policy.)
#[inline]
pub fn needs_rescale(req: &Request, s: &ProbSums) -> bool {
    req.normalization == Normalization::Normalize
        && matches!(
            req.divergence,
            Divergence::Kl | Divergence::ReverseKl | Divergence::SymmetricKl
        )
        && s.sp > 0.0
        && s.sq > 0.0
        && (s.diff / s.sp).abs() > 1e-3
        && s.main.is_finite()
        && s.main2.is_finite()
}

/// The value of one probability row from its sums. For Jensen–Shannon with normalisation the
/// sums come from inputs already divided by their row sums (a second pass, see the engines).
#[inline]
pub fn finish_probs(req: &Request, s: &ProbSums, tol: Option<f64>, row: usize) -> Result<f64> {
    check_probs(req, s, tol, row)?;
    let norm = req.normalization == Normalization::Normalize;
    let v = match req.divergence {
        Divergence::Kl if norm => s.main / s.sp + ln1p_minus(-s.diff / s.sp),
        Divergence::Kl => s.main + s.diff,
        Divergence::ReverseKl if norm => s.main / s.sq + ln1p_minus(s.diff / s.sq),
        Divergence::ReverseKl => s.main - s.diff,
        Divergence::SymmetricKl if norm => {
            s.main / s.sp + ln1p_minus(-s.diff / s.sp) + s.main2 / s.sq + ln1p_minus(s.diff / s.sq)
        }
        Divergence::SymmetricKl => s.main + s.main2,
        Divergence::JensenShannon => 0.5 * s.main,
        Divergence::CrossEntropy if norm => -s.main / s.sp + s.sq.ln(),
        Divergence::CrossEntropy => -s.main,
        Divergence::Entropy if norm => -s.main / s.sp + s.sp.ln(),
        Divergence::Entropy => -s.main,
    };
    Ok(finalize(
        req,
        v,
        req.normalization != Normalization::AsGiven,
    ))
}

/// The row checks of a probability row: some mass, and a sum within `tol` of 1.
#[inline]
pub fn check_probs(req: &Request, s: &ProbSums, tol: Option<f64>, row: usize) -> Result<()> {
    check_sum(Side::P, row, s.sp, tol)?;
    if req.reads_q() {
        check_sum(Side::Q, row, s.sq, tol)?;
    }
    Ok(())
}

/// The row checks of a logits row: some mass; for log-probabilities, Σ e^lp within `tol`
/// of 1 (compared as e^lse − 1, without losing digits).
pub fn check_logits(req: &Request, s: &LogitSums, tol: Option<f64>, row: usize) -> Result<()> {
    if s.sa.is_nan() || s.sa <= 0.0 {
        return Err(Error::NoMass { side: Side::P, row });
    }
    if req.reads_q() && (s.sb.is_nan() || s.sb <= 0.0) {
        return Err(Error::NoMass { side: Side::Q, row });
    }
    if req.input == InputForm::LogProbabilities {
        let sides: &[(Side, f64)] = if req.reads_q() {
            &[(Side::P, s.lse_a()), (Side::Q, s.lse_b())]
        } else {
            &[(Side::P, s.lse_a())]
        };
        for &(side, lse) in sides {
            if let Some(tolerance) = tol {
                if lse.exp_m1().abs() > tolerance {
                    return Err(Error::NotNormalized {
                        side,
                        row,
                        sum: lse.exp(),
                        tolerance,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The value of one logits / log-probabilities row from its sums.
pub fn finish_logits(req: &Request, s: &LogitSums, tol: Option<f64>, row: usize) -> Result<f64> {
    check_logits(req, s, tol, row)?;
    let (lse_a, lse_b) = (s.lse_a(), s.lse_b());
    let inf = f64::INFINITY;
    // KL = Y + ln E[e^−x] = ln(1+X) − X + E[ψ(x)], see LogitSums; the plain
    // log-sum-exp difference is the fallback when ψ overflowed (wildly different rows).
    let psi_form = |psi: f64, s_w: f64, y: f64, plain: f64| {
        let e_psi = psi / s_w;
        let x = e_psi - y;
        if e_psi.is_finite() && x > -1.0 {
            ln1p_minus(x) + e_psi
        } else {
            plain
        }
    };
    let kl_pq = || {
        if s.q_zero > 0 {
            inf
        } else {
            let y = s.ta / s.sa - s.shift;
            psi_form(s.psi_a, s.sa, y, s.ta / s.sa + (lse_b - lse_a))
        }
    };
    let kl_qp = || {
        if s.p_zero > 0 {
            inf
        } else {
            let y = -s.tb / s.sb + s.shift;
            psi_form(s.psi_b, s.sb, y, -s.tb / s.sb + (lse_a - lse_b))
        }
    };
    let v = match req.divergence {
        Divergence::Kl => kl_pq(),
        Divergence::ReverseKl => kl_qp(),
        Divergence::SymmetricKl => kl_pq() + kl_qp(),
        Divergence::CrossEntropy => (lse_a - s.ea / s.sa) + kl_pq(),
        Divergence::Entropy => lse_a - s.ea / s.sa,
        Divergence::JensenShannon => {
            unreachable!("Jensen–Shannon over logits runs as probabilities in a second pass")
        }
    };
    Ok(finalize(req, v, true))
}

/// Combine per-row values as the request asks.
pub fn reduce(req: &Request, per_row: Vec<f64>) -> crate::Output {
    match req.reduction {
        crate::Reduction::PerRow => crate::Output::PerRow(per_row),
        crate::Reduction::Sum => crate::Output::Scalar(per_row.iter().sum()),
        crate::Reduction::MeanOverRows => {
            let n = per_row.len() as f64;
            crate::Output::Scalar(per_row.iter().sum::<f64>() / n)
        }
    }
}
