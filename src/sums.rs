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

/// Partial sums over (a piece of) a row of logits a (for P) and b (for Q).
///
/// Weights are taken relative to the piece's maxima: wa = e^(a−ma), wb = e^(b−mb), so
/// sa = Σ wa and sb = Σ wb never overflow. The row has one shift c, kept as the pair
/// `shift_hi + shift_lo` exactly as the kernel used it; with x = a − b − c:
///
/// KL(P‖Q) = E_p[x] + L with L = ln E_p[e^−x] = (c − (ma − mb)) + ln(sb/sa)   (plain form)
///         = ln(1+X) − X + E_p[ψ(x)] with X = E_p[ψ(x)] − E_p[x]               (ψ form)
///
/// where ψ(x) = e^−x − 1 + x ≥ 0 and 1 + X = E_p[e^−x]. The ψ form keeps every digit when
/// X ≈ 0, which the ideal shift c* = lse_a − lse_b gives exactly (the engines take c from
/// the row's first block, and re-read rows where that was not good enough); the plain form is
/// better when P and Q differ a lot. [`finish_logits`] takes the form with the smaller error
/// estimate, from `ax_*` (Σ w·|x|) and `xerr_*` (a bound on the rounding of x itself, which
/// only the GPU has: the CPU forms x exactly by TwoSum). Cross-entropy and entropy need no
/// shift: H(P,Q) = ln sb − E_p[b − mb] and H(P) = ln sa − E_p[a − ma] add two non-negative
/// terms. `q_zero` counts entries with a finite and b = −inf (q = 0 < p), `p_zero` the
/// reverse.
///
/// A piece where one side has no finite value measures that side from the other's maximum
/// and the shift (so that the ψ terms it carries stay finite); its sums are 0 and it never
/// sets the row's maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitSums {
    pub ma: f64,
    pub mb: f64,
    pub sa: f64,
    pub sb: f64,
    /// Σ wa·(a − ma) ≤ 0.
    pub ea: f64,
    /// Σ wa·(b − mb) ≤ 0 over entries where both are finite.
    pub eb: f64,
    /// Σ wa·x and Σ wb·x.
    pub xa: f64,
    pub xb: f64,
    /// Σ wa·|x| and Σ wb·|x|.
    pub ax_a: f64,
    pub ax_b: f64,
    /// Σ wa·ψ(x) and Σ wb·ψ(−x); NaN when they could not be formed (the ψ form is then
    /// unavailable for the row).
    pub psi_a: f64,
    pub psi_b: f64,
    /// Σ wa·δ and Σ wb·δ, δ a bound on the rounding error of x (0 where x is exact).
    pub xerr_a: f64,
    pub xerr_b: f64,
    /// The row's shift c = shift_hi + shift_lo.
    pub shift_hi: f64,
    pub shift_lo: f64,
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
            ea: 0.0,
            eb: 0.0,
            xa: 0.0,
            xb: 0.0,
            ax_a: 0.0,
            ax_b: 0.0,
            psi_a: 0.0,
            psi_b: 0.0,
            xerr_a: 0.0,
            xerr_b: 0.0,
            shift_hi: 0.0,
            shift_lo: 0.0,
            q_zero: 0,
            p_zero: 0,
        }
    }
}

/// a + b as an unevaluated pair (hi, lo) with hi + lo exact (Knuth's TwoSum).
#[inline]
pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// The shift c = (ma − mb) + extra as a pair, ma − mb exact: what logsumexp-style shifts
/// look like (`extra` = ln(sa/sb), or 0 for a shift by the maxima alone).
pub fn shift_from(ma: f64, mb: f64, extra: f64) -> (f64, f64) {
    if !(ma.is_finite() && mb.is_finite()) {
        return (0.0, 0.0);
    }
    let (hi, lo) = two_sum(ma, -mb);
    let (hi, lo2) = two_sum(hi, extra);
    (hi, lo + lo2)
}

/// `v·k` with 0·k = 0 for any k (a side without mass scaled by an infinite factor).
#[inline]
fn scaled(v: f64, k: f64) -> f64 {
    if v == 0.0 {
        0.0
    } else {
        v * k
    }
}

impl LogitSums {
    /// Empty sums of a row whose shift is `hi + lo`.
    pub fn with_shift(hi: f64, lo: f64) -> Self {
        LogitSums {
            shift_hi: hi,
            shift_lo: lo,
            ..LogitSums::default()
        }
    }

    /// Online log-sum-exp merge: rescale both sides to the larger maximum of the pieces
    /// that have mass there. Both pieces belong to one row (same shift).
    pub fn merge(&mut self, o: &LogitSums) {
        if self.ma == f64::NEG_INFINITY && self.mb == f64::NEG_INFINITY {
            // An empty start takes the row's shift from its first piece.
            self.shift_hi = o.shift_hi;
            self.shift_lo = o.shift_lo;
        }
        let top = |m1: f64, s1: f64, m2: f64, s2: f64| match (s1 > 0.0, s2 > 0.0) {
            (true, false) => m1,
            (false, true) => m2,
            _ => m1.max(m2),
        };
        let ma = top(self.ma, self.sa, o.ma, o.sa);
        let mb = top(self.mb, self.sb, o.mb, o.sb);
        let k = |m: f64, m_new: f64| {
            if m == f64::NEG_INFINITY {
                0.0
            } else {
                (m - m_new).exp()
            }
        };
        // Sums of w·(v − m) move with the maximum: Σ w'(v − m') = k·(Σ w(v − m) + (m − m')·Σ w).
        let moved = |e: f64, m: f64, m_new: f64, s: f64| {
            if s == 0.0 {
                e
            } else {
                e + (m - m_new) * s
            }
        };
        let (x, y) = (k(self.ma, ma), k(o.ma, ma));
        self.ea = scaled(moved(self.ea, self.ma, ma, self.sa), x)
            + scaled(moved(o.ea, o.ma, ma, o.sa), y);
        self.eb = scaled(moved(self.eb, self.mb, mb, self.sa), x)
            + scaled(moved(o.eb, o.mb, mb, o.sa), y);
        self.sa = scaled(self.sa, x) + scaled(o.sa, y);
        self.xa = scaled(self.xa, x) + scaled(o.xa, y);
        self.ax_a = scaled(self.ax_a, x) + scaled(o.ax_a, y);
        self.psi_a = scaled(self.psi_a, x) + scaled(o.psi_a, y);
        self.xerr_a = scaled(self.xerr_a, x) + scaled(o.xerr_a, y);
        let (x, y) = (k(self.mb, mb), k(o.mb, mb));
        self.sb = scaled(self.sb, x) + scaled(o.sb, y);
        self.xb = scaled(self.xb, x) + scaled(o.xb, y);
        self.ax_b = scaled(self.ax_b, x) + scaled(o.ax_b, y);
        self.psi_b = scaled(self.psi_b, x) + scaled(o.psi_b, y);
        self.xerr_b = scaled(self.xerr_b, x) + scaled(o.xerr_b, y);
        self.ma = ma;
        self.mb = mb;
        self.q_zero += o.q_zero;
        self.p_zero += o.p_zero;
    }
    /// ln Σ e^a (the log-sum-exp of P's row).
    pub fn lse_a(&self) -> f64 {
        self.ma + self.sa.ln()
    }
    pub fn lse_b(&self) -> f64 {
        self.mb + self.sb.ln()
    }
    /// c − (ma − mb), the log of the factor that turns e^(b−mb) into e^(a−ma)·e^(−x).
    pub fn shift_gap(&self) -> f64 {
        let (h1, l1) = two_sum(self.shift_hi, -self.ma);
        let (h2, l2) = two_sum(h1, self.mb);
        h2 + (l2 + l1 + self.shift_lo)
    }
    /// The ideal shift c* = lse_a − lse_b of the row these sums describe (X = 0 with it).
    pub fn ideal_shift(&self) -> (f64, f64) {
        shift_from(self.ma, self.mb, (self.sa / self.sb).ln())
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

/// What a logits row's sums give: its value, or how to get it to the accuracy bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogitOutcome {
    /// The row's value (units applied, clamped).
    Value(f64),
    /// The error estimate is above the bound: read the row again with its ideal shift
    /// c* = lse_a − lse_b = hi + lo (from these sums), which makes the ψ form exact.
    Reshift { hi: f64, lo: f64 },
    /// Compute the row on the exact f64 path.
    Exact,
}

/// A logits row's error estimate may reach this fraction of its value before the row is
/// re-read (the documented bound is 1e-5: the margin covers the estimate's own looseness).
pub const LOGIT_TARGET: f64 = 4e-6;

/// Relative error of the sums each kind of pass produces (per accumulated quantity), as the
/// error estimates of [`finish_logits`] assume it: f32 lanes of at most 32 terms (CPU) or a
/// 16-term thread sum and a 256-way tree (GPU), then f64; or the f64 path.
pub const SUMS_EPS_F32: f64 = 6e-7;
pub const SUMS_EPS_F64: f64 = 1e-13;

/// One direction of KL from E_w[x], E_w|x|, E_w[ψ], L = ln E_w[e^−x] and the bound `dx` on
/// what the rounding of x costs: (value, error estimate) of the better of the two forms.
fn kl_forms(ex: f64, eax: f64, epsi: f64, l: f64, dx: f64, eps: f64) -> (f64, f64) {
    let plain = ex + l;
    let err_plain = eps * (eax + 2.0) + 1.2e-16 * (ex.abs() + l.abs()) + dx;
    let x = epsi - ex;
    if epsi.is_finite() && x > -1.0 {
        let v = ln1p_minus(x) + epsi;
        // ∂v/∂E[ψ] = 1/(1+X), ∂v/∂E[x] = X/(1+X).
        let err = eps * (epsi + x.abs() * eax) / (1.0 + x) + dx;
        if err <= err_plain || !plain.is_finite() {
            return (v, err);
        }
    }
    (plain, err_plain)
}

/// The value of one logits / log-probabilities row from its sums, or the follow-up that
/// gets it within [`LOGIT_TARGET`]. `eps` is the relative error of the sums (see
/// [`SUMS_EPS_F32`]); sums from the exact path (`SUMS_EPS_F64`) are always taken.
/// `reshifted` says the sums already come from a re-read with the ideal shift.
pub fn finish_logits(
    req: &Request,
    s: &LogitSums,
    tol: Option<f64>,
    row: usize,
    eps: f64,
    reshifted: bool,
) -> Result<LogitOutcome> {
    check_logits(req, s, tol, row)?;
    let inf = f64::INFINITY;
    let gap = s.shift_gap();
    // Cost of the rounding of x on the value, Σ (p + q)·δ (x's derivative is p − q).
    let dx = s.xerr_a / s.sa + s.xerr_b / s.sb.max(f64::MIN_POSITIVE);
    let kl_pq = || {
        if s.q_zero > 0 {
            return (inf, 0.0);
        }
        let l = gap + (s.sb.ln() - s.sa.ln());
        kl_forms(s.xa / s.sa, s.ax_a / s.sa, s.psi_a / s.sa, l, dx, eps)
    };
    // KL(Q‖P): the same with the roles swapped (x → −x, c → −c).
    let kl_qp = || {
        if s.p_zero > 0 {
            return (inf, 0.0);
        }
        let l = -gap + (s.sa.ln() - s.sb.ln());
        kl_forms(-s.xb / s.sb, s.ax_b / s.sb, s.psi_b / s.sb, l, dx, eps)
    };
    let entropy_p = || s.sa.ln() - s.ea / s.sa;
    let (v, err) = match req.divergence {
        Divergence::Kl => kl_pq(),
        Divergence::ReverseKl => kl_qp(),
        Divergence::SymmetricKl => {
            let (a, ea) = kl_pq();
            let (b, eb) = kl_qp();
            (a + b, ea + eb)
        }
        // Two non-negative terms each: no cancellation, nothing to estimate.
        Divergence::CrossEntropy if s.q_zero > 0 => (inf, 0.0),
        Divergence::CrossEntropy => (s.sb.ln() - s.eb / s.sa, 0.0),
        Divergence::Entropy => (entropy_p(), 0.0),
        Divergence::JensenShannon => {
            unreachable!("Jensen–Shannon over logits runs as probabilities in a second pass")
        }
    };
    if eps < SUMS_EPS_F32 || v.is_nan() || err <= LOGIT_TARGET * v.abs() || v == inf {
        return Ok(LogitOutcome::Value(finalize(req, v, true)));
    }
    Ok(if reshifted {
        LogitOutcome::Exact
    } else {
        let (hi, lo) = s.ideal_shift();
        LogitOutcome::Reshift { hi, lo }
    })
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
