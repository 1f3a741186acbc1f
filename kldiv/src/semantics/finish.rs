//! How a row's sums become its value: the row checks, normalisation, the choice between
//! equivalent forms by their error estimates, infinities, clamping and units. Every engine's
//! sums go through these functions, once per row, on the host.

use super::sums::{JsSums, LogitSums, ProbSums};
use crate::error::{Error, Result, Side};
use crate::request::{Divergence, InputForm, Normalization, Request, Unit};

/// ln(1+x) − x (x > −1) to a few ulp of its value: the correction that normalising a row
/// adds. Formed directly it cancels (ln(1+x) ≈ x): a relative error of ~4ε/|x|, all of it
/// for |x| < 1e-16, where the value is −x²/2. Near 0 it is taken from u = x/(2+x)
/// (ln(1+x) = 2·atanh u): −x²/(2+x) + 2·(u³/3 + u⁵/5 + …), whose terms shrink by u² ≤ 1/1000.
#[inline]
fn ln1p_minus(x: f64) -> f64 {
    if x.abs() > 1.0 / 16.0 {
        // Here the cancellation costs at most 64ε.
        return x.ln_1p() - x;
    }
    let u = x / (2.0 + x);
    let u2 = u * u;
    // 1/3 + u²/5 + … + u¹⁰/13: the next term is below 2^-60 of the value for |x| ≤ 1/16.
    let mut series = 1.0 / 13.0;
    for k in [11.0, 9.0, 7.0, 5.0, 3.0] {
        series = series * u2 + 1.0 / k;
    }
    -x * x / (2.0 + x) + 2.0 * u * u2 * series
}

/// Tolerance on |row sum − 1| in effect for this request, if rows are checked at all.
pub fn sum_tolerance(req: &Request, dtype: crate::element::Dtype) -> Option<f64> {
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
    let v = clamp_range(req, v, clamp);
    match req.unit {
        Unit::Nats => v,
        Unit::Bits => v / std::f64::consts::LN_2,
    }
}

/// [`finalize`] without the unit: what it does to a value in nats.
#[inline]
pub fn clamp_range(req: &Request, v: f64, clamp: bool) -> f64 {
    let mut v = v;
    if clamp && v < 0.0 {
        v = 0.0;
    }
    if clamp && req.divergence == Divergence::JensenShannon && v > std::f64::consts::LN_2 {
        v = std::f64::consts::LN_2;
    }
    v
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

/// The arithmetic [`plain_value`] needs, so that one formula serves f64 rows and the SIMD
/// lanes that finish groups of short rows (see [`LaneFinish`]).
pub trait Arith: Copy {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn half(self) -> Self;
    fn neg(self) -> Self;
}

impl Arith for f64 {
    #[inline(always)]
    fn add(self, o: f64) -> f64 {
        self + o
    }
    #[inline(always)]
    fn sub(self, o: f64) -> f64 {
        self - o
    }
    #[inline(always)]
    fn half(self) -> f64 {
        0.5 * self
    }
    #[inline(always)]
    fn neg(self) -> f64 {
        -self
    }
}

/// The value of a probability row whose sums are taken as they stand (`Check`, `AsGiven`,
/// or rows already divided by their sums), before clamping and units: the t-terms of
/// [`ProbSums`] plus the linear part Σ(p − q) they leave out.
#[inline(always)]
pub fn plain_value<A: Arith>(div: Divergence, main: A, main2: A, diff: A) -> A {
    match div {
        Divergence::Kl => main.add(diff),
        Divergence::ReverseKl => main.sub(diff),
        Divergence::SymmetricKl => main.add(main2),
        Divergence::JensenShannon => main.half(),
        Divergence::CrossEntropy | Divergence::Entropy => main.neg(),
    }
}

/// The value of one probability row from its sums. For Jensen–Shannon with normalisation the
/// sums come from inputs already divided by their row sums (a second pass).
#[inline]
pub fn finish_probs(req: &Request, s: &ProbSums, tol: Option<f64>, row: usize) -> Result<f64> {
    check_probs(req, s, tol, row)?;
    let norm = req.normalization == Normalization::Normalize;
    let v = match req.divergence {
        Divergence::Kl if norm => s.main / s.sp + ln1p_minus(-s.diff / s.sp),
        Divergence::ReverseKl if norm => s.main / s.sq + ln1p_minus(s.diff / s.sq),
        Divergence::SymmetricKl if norm => {
            s.main / s.sp + ln1p_minus(-s.diff / s.sp) + s.main2 / s.sq + ln1p_minus(s.diff / s.sq)
        }
        // The second pass's rows were divided by first-pass sums, so their totals are
        // c(1 ± ε) rather than 1, and Jensen–Shannon is not scale-free in their ratio:
        // Σ t-terms / 2 = c·(JS + ε²/2 + O(ε·JS)). ε = Σ(p − q)/Σ(p + q) (`diff` keeps its
        // digits); left in, ε²/2 (~1e-14 for f32 sums) was all of a JS of 1e-15.
        Divergence::JensenShannon if norm => {
            let c = s.sp + s.sq;
            let e = s.diff / c;
            s.main / c - 0.5 * e * e
        }
        Divergence::CrossEntropy if norm => -s.main / s.sp + s.sq.ln(),
        Divergence::Entropy if norm => -s.main / s.sp + s.sp.ln(),
        div => plain_value(div, s.main, s.main2, s.diff),
    };
    Ok(finalize(
        req,
        v,
        req.normalization != Normalization::AsGiven,
    ))
}

/// The value of a Jensen–Shannon-over-logits row from its second-pass sums, or `None` when
/// the engine's rounding bound is above the target for sums of relative error `eps`
/// ([`logit_target`]; the row is then computed on the exact path).
pub fn finish_js(req: &Request, s: &JsSums, eps: f64) -> Option<f64> {
    let v = 0.5 * s.h;
    (s.err <= logit_target(eps) * v || v.is_nan()).then(|| finalize(req, v, true))
}

/// Short probability rows finished in the SIMD lanes that summed them (one row per lane),
/// for requests that take each row's sums as they stand (`Check` or `AsGiven`): the row
/// checks, conservatively (the tolerance is rounded down to f32), and [`plain_value`]. A
/// group with any doubtful row goes row by row through [`finish_probs`], which decides
/// exactly and builds the error; clamping and units are applied by [`finalize`] in f64.
#[derive(Debug, Clone, Copy)]
pub struct LaneFinish {
    div: Divergence,
    /// |Σ − 1| ≤ this passes; +inf when sums are not checked (only Σ > 0 is).
    tol: f32,
    reads_q: bool,
}

/// The sums of a group of short rows, lane r holding row r's.
#[derive(Clone, Copy)]
pub struct LaneSums<S: pulp::Simd> {
    pub main: S::f32s,
    pub main2: S::f32s,
    pub sp: S::f32s,
    pub sq: S::f32s,
    pub diff: S::f32s,
}

impl<S: pulp::Simd> LaneSums<S> {
    /// The lanes of symmetric KL's kernel as `member`'s kernel gives them (see
    /// `Partial::as_kl_member`): reverse KL's t-terms are in `main2`.
    #[inline(always)]
    pub fn as_kl_member(&self, member: Divergence) -> LaneSums<S> {
        match member {
            Divergence::ReverseKl => LaneSums {
                main: self.main2,
                ..*self
            },
            _ => *self,
        }
    }
}

/// SIMD lanes as [`Arith`].
#[derive(Clone, Copy)]
struct Lanes<S: pulp::Simd>(S, S::f32s);

impl<S: pulp::Simd> Arith for Lanes<S> {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        Lanes(self.0, self.0.add_f32s(self.1, o.1))
    }
    #[inline(always)]
    fn sub(self, o: Self) -> Self {
        Lanes(self.0, self.0.sub_f32s(self.1, o.1))
    }
    #[inline(always)]
    fn half(self) -> Self {
        Lanes(self.0, self.0.mul_f32s(self.1, self.0.splat_f32s(0.5)))
    }
    #[inline(always)]
    fn neg(self) -> Self {
        Lanes(self.0, self.0.sub_f32s(self.0.splat_f32s(0.0), self.1))
    }
}

impl LaneFinish {
    /// `None` when rows must be finished one by one (`Normalize` rescales each row).
    pub fn new(req: &Request, tol: Option<f64>) -> Option<LaneFinish> {
        let tol = match (req.normalization, tol) {
            (Normalization::Normalize, _) => return None,
            (_, None) => f32::INFINITY,
            (_, Some(t)) => {
                let t32 = t as f32;
                if t32 as f64 > t {
                    t32.next_down()
                } else {
                    t32
                }
            }
        };
        Some(LaneFinish {
            div: req.divergence,
            tol,
            reads_q: req.reads_q(),
        })
    }

    /// The rows' values in nats, unclamped, or `None` when some row must be finished alone.
    #[inline(always)]
    pub fn values<S: pulp::Simd>(&self, s: S, lanes: &LaneSums<S>) -> Option<S::f32s> {
        let one = s.splat_f32s(1.0);
        let tol = s.splat_f32s(self.tol);
        let ok = |sum: S::f32s| {
            let dev = s.sub_f32s(sum, one);
            let abs_dev = s.max_f32s(dev, s.sub_f32s(s.splat_f32s(0.0), dev));
            s.and_m32s(
                s.greater_than_f32s(sum, s.splat_f32s(0.0)),
                s.less_than_or_equal_f32s(abs_dev, tol),
            )
        };
        let mut pass = ok(lanes.sp);
        if self.reads_q {
            pass = s.and_m32s(pass, ok(lanes.sq));
        }
        // Every lane passes only if no lane fails.
        let failing = s.select_f32s(pass, s.splat_f32s(0.0), one);
        if s.reduce_max_f32s(failing) != 0.0 {
            return None;
        }
        let v = plain_value(
            self.div,
            Lanes(s, lanes.main),
            Lanes(s, lanes.main2),
            Lanes(s, lanes.diff),
        );
        Some(v.1)
    }
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

/// The same for f64 sums (the exact path's, or f64 GPU kernels'): what the rounding of
/// x = a − b − c may cost (the exact path forms it by TwoSum, at no cost; f64 kernels bound
/// it) before the row is re-read. Sums' own rounding (1e-13 relative) is always accepted.
pub const LOGIT_TARGET_F64: f64 = 1e-12;

/// The target for sums of relative error `eps` ([`SUMS_EPS_F32`] or [`SUMS_EPS_F64`]).
pub fn logit_target(eps: f64) -> f64 {
    if eps < SUMS_EPS_F32 {
        LOGIT_TARGET_F64
    } else {
        LOGIT_TARGET
    }
}

/// Relative error of the sums each kind of pass produces (per accumulated quantity), as the
/// error estimates of [`finish_logits`] assume it: f32 lanes of at most 32 terms (CPU) or a
/// 16-term thread sum and a 256-way tree (GPU), then f64; or the f64 path.
pub const SUMS_EPS_F32: f64 = 6e-7;
pub const SUMS_EPS_F64: f64 = 1e-13;

/// What one f32 term of the logits kernels (w·ψ(x) of KL, m·F(u) of Jensen–Shannon's second
/// pass) can lose to underflow: below 2^−126, x², ψ and w·ψ are subnormal (spacing 2^−149)
/// or 0, so each term is off by at most a few 2^−149. A floor under the f32 kernels' error,
/// per element, which sends rows whose value is near it (≲ 1e-39 per column: logits that
/// differ by ~1e-19 or less) to the exact path.
pub const F32_TERM_FLOOR: f64 = 1.121_038_771_459_853_7e-44; // 2^−146

/// l = ln sb − ln sa of a logits row, for the second pass of Jensen–Shannon, where
/// ln p − ln q = (a − b − (ma − mb)) + l. On near-identical rows those log-ratios are tiny
/// and the difference of the two log-sums, off by the sums' rounding (2ε), is all of them;
/// from P's ψ sums l = ln(1 + X) − (c − (ma − mb)), X = E_p[ψ(x)] − E_p[x] = E_p[e^−x] − 1
/// (see [`LogitSums`]), is off by ε·(E_p[ψ] + E_p|x|)/(1 + X): relative to x itself. The
/// better of the two by that estimate. (Entries where q = 0 < p leave X without their
/// −p, so those rows take the difference.)
pub fn log_sum_ratio(s: &LogitSums, eps: f64) -> f64 {
    let plain = s.sb.ln() - s.sa.ln();
    let (epsi, ex, eax) = (s.psi_a / s.sa, s.xa / s.sa, s.ax_a / s.sa);
    let x = epsi - ex;
    if s.q_zero > 0 || !(epsi.is_finite() && x > -1.0) {
        return plain;
    }
    // X = E[ψ] − E[x] rounds in f64 at the size of its terms, then 1/(1+X) through ln_1p.
    let err = (eps + F64_ROUND) * (epsi + eax) / (1.0 + x) + s.xerr_a / s.sa;
    if err < 2.0 * eps {
        x.ln_1p() - s.shift_gap()
    } else {
        plain
    }
}

/// One f64 rounding, with a little room (ε/2 = 1.1e-16).
const F64_ROUND: f64 = 1.2e-16;

/// One direction of KL from E_w[x], E_w|x|, E_w[ψ], L = ln E_w[e^−x] and the bound `dx` on
/// what the rounding of x costs: (value, error estimate) of the better of the two forms.
fn kl_forms(ex: f64, eax: f64, epsi: f64, l: f64, dx: f64, eps: f64) -> (f64, f64) {
    let plain = ex + l;
    let err_plain = eps * (eax + 2.0) + F64_ROUND * (ex.abs() + l.abs()) + dx;
    let x = epsi - ex;
    if epsi.is_finite() && x > -1.0 {
        let v = ln1p_minus(x) + epsi;
        // ∂v/∂E[ψ] = 1/(1+X), ∂v/∂E[x] = X/(1+X); and the f64 steps themselves (X = E[ψ] −
        // E[x], then −X + E[ψ]) each round at the size of X: when one weight is far above
        // the shift (a spike), E[ψ] and X reach e^40 and more and only the plain form is exact.
        let err =
            eps * (epsi + x.abs() * eax) / (1.0 + x) + F64_ROUND * (2.0 * x.abs() + epsi) + dx;
        if err <= err_plain || !plain.is_finite() {
            return (v, err);
        }
    }
    (plain, err_plain)
}

/// The value of one logits / log-probabilities row from its sums, or the follow-up that
/// gets it within [`LOGIT_TARGET`]. `eps` is the relative error of the sums (see
/// [`SUMS_EPS_F32`]); f64 sums (`SUMS_EPS_F64`) are taken unless the rounding of x they carry
/// is above [`LOGIT_TARGET_F64`] (never on the exact path, whose x is exact).
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
    // Cross-entropy and entropy do not use x.
    let x_cost = match req.divergence {
        Divergence::CrossEntropy | Divergence::Entropy => 0.0,
        _ => dx,
    };
    let within = if eps < SUMS_EPS_F32 {
        x_cost <= LOGIT_TARGET_F64 * v.abs()
    } else {
        err <= LOGIT_TARGET * v.abs()
    };
    if within || v.is_nan() || v == inf {
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
pub fn reduce(req: &Request, per_row: Vec<f64>) -> crate::output::Output {
    match req.reduction {
        crate::request::Reduction::PerRow => crate::output::Output::PerRow(per_row),
        crate::request::Reduction::Sum => crate::output::Output::Scalar(per_row.iter().sum()),
        crate::request::Reduction::MeanOverRows => {
            let n = per_row.len() as f64;
            crate::output::Output::Scalar(per_row.iter().sum::<f64>() / n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ln1p_minus;

    /// Against the Taylor series −x²/2 + x³/3 − x⁴/4 + … at x = ±2^−k, where every power is
    /// exact and the terms fall by 2^−k: a few ulp of the value. (Formed as ln(1+x) − x it
    /// is 0 below 2^−53 and wrong in the 6th digit at 2^−33.)
    #[test]
    fn ln1p_minus_keeps_its_digits_near_zero() {
        for k in [5, 8, 12, 20, 33, 40, 52, 60, 100, 300, 500] {
            for sign in [1.0, -1.0] {
                let x = sign * 2f64.powi(-k);
                let want = (2..40).rev().fold(0.0, |acc, n| {
                    let sign = if n % 2 == 0 { -1.0 } else { 1.0 };
                    acc + sign * x.powi(n) / n as f64
                });
                let got = ln1p_minus(x);
                assert!(
                    (got - want).abs() <= 4.0 * f64::EPSILON * want.abs(),
                    "x = {x:e}: {got:e} vs {want:e}"
                );
            }
        }
    }

    #[test]
    fn the_f32_term_floor_is_two_to_the_minus_146() {
        assert_eq!(super::F32_TERM_FLOOR, 2f64.powi(-146));
    }

    /// Away from 0 it is the direct form, and the two forms meet at the switch.
    #[test]
    fn ln1p_minus_is_continuous_where_it_changes_form() {
        for x in [-0.9f64, -0.5, 0.2, 3.0, 1e6] {
            let want = x.ln_1p() - x;
            assert!((ln1p_minus(x) - want).abs() <= 1e-15 * want.abs(), "{x}");
        }
        let edge = 1.0 / 16.0;
        for x in [edge, -edge] {
            let (inside, outside) = (ln1p_minus(x), ln1p_minus(x * (1.0 + 1e-15)));
            assert!((inside - outside).abs() <= 1e-13 * inside.abs(), "{x}");
        }
    }
}
