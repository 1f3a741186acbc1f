//! The exact path: every kernel's sums computed element by element in f64. It is the
//! definition the SIMD and GPU kernels approximate, what f64 inputs and the reference engine
//! run, where rows the fast kernels flag end up, and what handles the rare values (NaN,
//! negatives, ±inf, extreme magnitudes) inside SIMD blocks. It also reports bad values.

use super::plan::{Kernel, RowParams};
use super::rows::Bad;
use super::sums::{shift_from, two_sum, AgreeSums, JsSums, LogitSums, Partial, ProbSums, NO_TOP};
use crate::element::Element;
use crate::error::{BadKind, Side};
use crate::request::Divergence;

pub use crate::consts::BLOCK;

/// t(x, y) = x·ln(x/y) − x + y ≥ 0, the generalised KL term; +inf when y = 0 < x.
#[inline]
pub fn gkl(x: f64, y: f64) -> f64 {
    gkl_d(x, y, x - y)
}

/// [`gkl`] given d = x − y, for callers that know it better than x − y rounds (JS's
/// x − m = (x − y)/2, where m's rounding would be all of a near-identical pair's x − m).
#[inline]
pub fn gkl_d(x: f64, y: f64, d: f64) -> f64 {
    if x == 0.0 {
        return y;
    }
    if y == 0.0 {
        return f64::INFINITY;
    }
    let r = d / y;
    if r.abs() < 0.01 {
        // y·φ(r), φ(r) = (1+r)ln(1+r) − r = Σ_{k≥2} (−r)^k / (k(k−1)): no cancellation.
        let poly = 1.0 / 2.0
            - r * (1.0 / 6.0
                - r * (1.0 / 12.0
                    - r * (1.0 / 20.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r * (1.0 / 56.0))))));
        return y * r * r * poly;
    }
    let ratio = x / y;
    let l = if r.abs() < 0.5 {
        // ln of the rounded ratio would carry 2^−53 absolute, ~1e-12 of t at r = 0.01.
        r.ln_1p()
    } else if ratio.is_normal() {
        ratio.ln()
    } else {
        x.ln() - y.ln()
    };
    x * l - d
}

/// x·ln y with 0·ln 0 = 0 and x·ln 0 = −inf for x > 0.
#[inline]
pub fn xlogy(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        0.0
    } else if y == 0.0 {
        f64::NEG_INFINITY
    } else {
        x * y.ln()
    }
}

#[inline]
fn check_prob(v: f64, side: Side) -> Result<(), (Side, BadKind)> {
    if v.is_nan() {
        Err((side, BadKind::NotANumber))
    } else if v < 0.0 {
        Err((side, BadKind::Negative))
    } else if v == f64::INFINITY {
        Err((side, BadKind::Infinite))
    } else {
        Ok(())
    }
}

#[inline]
fn check_logit(v: f64, side: Side) -> Result<(), (Side, BadKind)> {
    if v.is_nan() {
        Err((side, BadKind::NotANumber))
    } else if v == f64::INFINITY {
        Err((side, BadKind::Infinite))
    } else {
        Ok(())
    }
}

/// Add one probability pair to `acc`, after checking both values.
#[inline]
pub fn prob_element(
    div: Divergence,
    p: f64,
    q: f64,
    acc: &mut ProbSums,
) -> Result<(), (Side, BadKind)> {
    check_prob(p, Side::P)?;
    if div != Divergence::Entropy {
        check_prob(q, Side::Q)?;
    }
    acc.sp += p;
    acc.sq += q;
    acc.diff += p - q;
    match div {
        Divergence::Kl => acc.main += gkl(p, q),
        Divergence::ReverseKl => acc.main += gkl(q, p),
        Divergence::SymmetricKl => {
            acc.main += gkl(p, q);
            acc.main2 += gkl(q, p);
        }
        Divergence::JensenShannon => {
            let (m, half_d) = (0.5 * (p + q), 0.5 * (p - q));
            acc.main += gkl_d(p, m, half_d) + gkl_d(q, m, -half_d);
        }
        Divergence::CrossEntropy => acc.main += xlogy(p, q),
        Divergence::Entropy => acc.main += xlogy(p, p),
    }
    Ok(())
}

/// Sums over a piece of a probability row. `q` is ignored for entropy (pass `p` again).
pub fn prob_segment<T: Element>(div: Divergence, p: &[T], q: &[T]) -> Result<ProbSums, Bad> {
    let mut total = ProbSums::default();
    for (bi, (pb, qb)) in p.chunks(BLOCK).zip(q.chunks(BLOCK)).enumerate() {
        let mut acc = ProbSums::default();
        for (j, (&pv, &qv)) in pb.iter().zip(qb).enumerate() {
            prob_element(div, pv.to_f64(), qv.to_f64(), &mut acc).map_err(|(side, kind)| Bad {
                side,
                kind,
                col: bi * BLOCK + j,
            })?;
        }
        total.merge(&acc);
    }
    Ok(total)
}

/// The largest finite values of each side (−inf for a side with none).
fn finite_maxima<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let max = |v: &[T]| {
        v.iter()
            .map(|x| x.to_f64())
            .filter(|x| x.is_finite())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    (max(a), max(b))
}

/// The shift c of a row of logits (see [`LogitSums`]): its first block's
/// lse_a − lse_b = (ma − mb) + ln(sa/sb), close to the ideal shift of the whole row when the
/// first block looks like the rest. Rows where it is not get re-read with their own ideal
/// shift (`sums::LogitOutcome::Reshift`), so this only has to be cheap and deterministic.
pub fn row_shift<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let n = a.len().min(BLOCK);
    let (ma, mb) = finite_maxima(&a[..n], &b[..n]);
    if !(ma.is_finite() && mb.is_finite()) {
        // No mass on a side in the first block: shift by the row's maxima.
        return max_shift(a, b);
    }
    let sum = |v: &[T], m: f64| v.iter().map(|x| (x.to_f64() - m).exp()).sum::<f64>();
    shift_from(ma, mb, (sum(&a[..n], ma) / sum(&b[..n], mb)).ln())
}

/// The shift by the row's maxima, c = ma − mb: what the exact path uses (within ln(cols) of
/// the ideal shift, plenty for f64 sums).
pub fn max_shift<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let (ma, mb) = finite_maxima(a, b);
    shift_from(ma, mb, 0.0)
}

/// e^(c − (ma − mb)) for a piece's sums: turns e^(b−mb) into e^(a−ma)·e^(−x).
pub fn gamma(s: &LogitSums) -> f64 {
    s.shift_gap().exp()
}

/// ψ(x) = e^−x − 1 + x for |x| ≤ 1, without cancellation.
fn psi_small(x: f64) -> f64 {
    if x.abs() <= 1e-3 {
        x * x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x / 120.0)))
    } else {
        (-x).exp_m1() + x
    }
}

/// Sums over one block of logits relative to the block's own maxima; `shift` is the row's
/// c, `None` on a row's first block, which then sets it.
pub fn logit_block<T: Element>(
    a: &[T],
    b: &[T],
    shift: &mut Option<(f64, f64)>,
) -> Result<LogitSums, Bad> {
    let bad = |col, (side, kind)| Bad { side, kind, col };
    for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
        check_logit(x.to_f64(), Side::P).map_err(|e| bad(j, e))?;
        check_logit(y.to_f64(), Side::Q).map_err(|e| bad(j, e))?;
    }
    let (hi, lo) = *shift.get_or_insert_with(|| row_shift(a, b));
    let mut s = LogitSums::with_shift(hi, lo);
    (s.ma, s.mb) = finite_maxima(a, b);
    let first = |v: &[T], m: f64| {
        v.iter()
            .position(|x| x.to_f64() == m)
            .map_or(NO_TOP, |i| i as u64)
    };
    s.top_a = if s.ma.is_finite() {
        first(a, s.ma)
    } else {
        NO_TOP
    };
    s.top_b = if s.mb.is_finite() {
        first(b, s.mb)
    } else {
        NO_TOP
    };
    match (s.ma.is_finite(), s.mb.is_finite()) {
        (false, false) => return Ok(s),
        // A side with no mass here is measured from the other side and the shift, so that
        // g stays 1 (its weights are 0 either way; see `LogitSums`).
        (false, true) => s.ma = s.mb + (hi + lo),
        (true, false) => s.mb = s.ma - (hi + lo),
        (true, true) => {}
    }
    let g = gamma(&s);
    for (&x, &y) in a.iter().zip(b) {
        logit_element(x.to_f64(), y.to_f64(), &mut s, g);
    }
    // The ψ terms rest on g·wb = wa·e^−x: with g or 1/g over- or underflowing they are
    // meaningless, and the row is finished in the plain form.
    if s.shift_gap().is_nan() || s.shift_gap().abs() > 700.0 {
        s.psi_a = f64::NAN;
        s.psi_b = f64::NAN;
    }
    Ok(s)
}

/// Add one logit pair to sums whose maxima and shift are already fixed; `g` = [`gamma`].
#[inline]
pub fn logit_element(x: f64, y: f64, s: &mut LogitSums, g: f64) {
    let wa = if x == f64::NEG_INFINITY {
        0.0
    } else {
        (x - s.ma).exp()
    };
    let wb = if y == f64::NEG_INFINITY {
        0.0
    } else {
        (y - s.mb).exp()
    };
    s.sa += wa;
    s.sb += wb;
    match (x == f64::NEG_INFINITY, y == f64::NEG_INFINITY) {
        (false, false) => {
            // x − y − c with x − y kept exactly (TwoSum): huge logits lose nothing.
            let (d_hi, d_lo) = two_sum(x, -y);
            let xs = (d_hi - s.shift_hi) + (d_lo - s.shift_lo);
            s.ea += wa * (x - s.ma);
            s.eb += wa * (y - s.mb);
            s.xa += wa * xs;
            s.xb += wb * xs;
            s.ax_a += wa * xs.abs();
            s.ax_b += wb * xs.abs();
            if xs.abs() <= 1.0 {
                s.psi_a += wa * psi_small(xs);
                s.psi_b += wb * psi_small(-xs);
            } else {
                // wa·e^−x = g·wb and wb·e^x = wa/g: no overflow however far apart.
                s.psi_a += g * wb - wa + wa * xs;
                s.psi_b += wa / g - wb - wb * xs;
            }
        }
        // Mass of one side where the other is zero still enters the other's log-sum-exp:
        // in ψ-form terms it is the limit w·ψ(x) → w·e^−x as x → ∓inf.
        (false, true) => {
            s.q_zero += 1;
            s.ea += wa * (x - s.ma);
            s.psi_b += wa / g;
        }
        (true, false) => {
            s.p_zero += 1;
            s.psi_a += g * wb;
        }
        (true, true) => {}
    }
}

/// Sums over a piece of a logits row. `b` is ignored for entropy (pass `a` again).
/// `shift` is the row's c, or `None` to take it from this piece's first block.
pub fn logit_segment<T: Element>(
    a: &[T],
    b: &[T],
    shift: Option<(f64, f64)>,
) -> Result<LogitSums, Bad> {
    let mut shift = shift;
    let mut total = LogitSums::default();
    for (bi, (ab, bb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let mut s = logit_block(ab, bb, &mut shift).map_err(|e| Bad {
            col: e.col + bi * BLOCK,
            ..e
        })?;
        s.offset_tops(bi * BLOCK);
        total.merge(&s);
    }
    Ok(total)
}

/// A whole logits row on the exact path: shifted by its maxima, so the f64 sums need no
/// follow-up.
pub fn logit_row_exact<T: Element>(a: &[T], b: &[T]) -> Result<LogitSums, Bad> {
    logit_segment(a, b, Some(max_shift(a, b)))
}

/// F(u) = (1+τ)ln(1+τ) + (1−τ)ln(1−τ), τ = tanh(u/2), in f64 (the Jensen–Shannon term of
/// one element is m·F(ln p − ln q)): near 0 as Σ τ^2k/(k(2k−1)) (`consts::JS_SERIES_F64`),
/// which keeps every digit as F → u²/4.
pub fn js_f(u: f64) -> f64 {
    use crate::consts::{horner, JS_NEAR_F64, JS_SERIES_F64};
    let a = u.abs();
    if a <= JS_NEAR_F64 {
        let em = a.exp_m1();
        let t = em / (em + 2.0);
        let v = t * t;
        return v * horner(&JS_SERIES_F64, v);
    }
    let e = (-a).exp();
    2.0 * (std::f64::consts::LN_2 - e.ln_1p() - e * a / (1.0 + e))
}

/// Jensen–Shannon sums over a piece of a logits row whose maxima and log-sums are known
/// (`RowParams::Softmax`): the second pass of JS over logits. `h` = Σ m·F(u), m = (p+q)/2,
/// u = ln p − ln q = (a − b − (ma − mb)) + l with a − b exact, l = ln sb − ln sa.
pub fn logit_js_segment<T: Element>(
    a: &[T],
    b: &[T],
    (ma, lnsa, mb, l): (f64, f64, f64, f64),
) -> Result<JsSums, Bad> {
    let lnsb = lnsa + l;
    let (c_hi, c_lo) = shift_from(ma, mb, 0.0);
    let mut out = JsSums::default();
    for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        let bad = |(side, kind)| Bad { side, kind, col: j };
        check_logit(x, Side::P).map_err(bad)?;
        check_logit(y, Side::Q).map_err(bad)?;
        let lp = (x - ma) - lnsa;
        let lq = (y - mb) - lnsb;
        let (p, q) = (lp.exp(), lq.exp());
        out.sp += p;
        out.sq += q;
        out.h += match (x == f64::NEG_INFINITY, y == f64::NEG_INFINITY) {
            (true, true) => 0.0,
            // Disjoint support: the term is (p + q)·ln 2.
            (true, false) | (false, true) => (p + q) * std::f64::consts::LN_2,
            (false, false) => {
                let (d_hi, d_lo) = two_sum(x, -y);
                let u = ((d_hi - c_hi) + (d_lo - c_lo)) + l;
                0.5 * (p + q) * js_f(u)
            }
        };
    }
    Ok(out)
}

/// The agreement sums of a piece of a logits row whose maxima and log-sums are known, in f64:
/// Σ min(p, q) with p = e^((a − ma) − ln sa), q = e^((b − mb) − (ln sa + l)), and each
/// side's largest logits.
pub fn logit_agree_segment<T: Element>(
    a: &[T],
    b: &[T],
    (ma, lnsa, mb, l): (f64, f64, f64, f64),
) -> Result<AgreeSums, Bad> {
    let lnsb = lnsa + l;
    let mut out = AgreeSums::default();
    for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x.to_f64(), y.to_f64());
        let bad = |(side, kind)| Bad { side, kind, col: j };
        check_logit(x, Side::P).map_err(bad)?;
        check_logit(y, Side::Q).map_err(bad)?;
        let (p, q) = (((x - ma) - lnsa).exp(), ((y - mb) - lnsb).exp());
        out.sum_min += p.min(q);
        out.top_a.push(x, j as u64);
        out.top_b.push(y, j as u64);
    }
    Ok(out)
}

/// A piece of a row through `kernel` on the exact path, with the row's `params`. A logits
/// piece without a shift is a whole row and is shifted by its maxima (within ln(cols) of the
/// ideal shift: plenty for f64 sums, so the exact path never re-reads).
pub fn segment<T: Element>(
    kernel: Kernel,
    params: RowParams,
    p: &[T],
    q: &[T],
) -> Result<Partial, Bad> {
    match (kernel, params) {
        (Kernel::Probs(div), RowParams::Affine { add, p: sp, q: sq }) => {
            // The pseudocount only touches values ≥ 0: others are still reported.
            let affine = |x: f64, s: f64| if x >= 0.0 { (x + add) * s } else { x * s };
            let (ps, qs): (Vec<f64>, Vec<f64>) = p
                .iter()
                .zip(q)
                .map(|(&x, &y)| (affine(x.to_f64(), sp), affine(y.to_f64(), sq)))
                .unzip();
            prob_segment(div, &ps, &qs).map(Partial::Probs)
        }
        (Kernel::Probs(div), _) => prob_segment(div, p, q).map(Partial::Probs),
        (Kernel::Logits(_), RowParams::Shift { hi, lo }) => {
            logit_segment(p, q, Some((hi, lo))).map(Partial::Logits)
        }
        (Kernel::Logits(_), _) => logit_row_exact(p, q).map(Partial::Logits),
        (Kernel::LogitsJs, RowParams::Softmax { ma, lnsa, mb, l }) => {
            logit_js_segment(p, q, (ma, lnsa, mb, l)).map(Partial::Js)
        }
        (Kernel::LogitsJs, _) => unreachable!("JS over logits reads the first pass's sums"),
        (Kernel::LogitsAgree, RowParams::Softmax { ma, lnsa, mb, l }) => {
            logit_agree_segment(p, q, (ma, lnsa, mb, l)).map(Partial::Agree)
        }
        (Kernel::LogitsAgree, _) => unreachable!("agreement reads the first pass's sums"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gkl_matches_definition_far_from_one() {
        for &(x, y) in &[
            (0.3f64, 0.1f64),
            (0.1, 0.3),
            (1e-30, 1.0),
            (1.0, 1e-30),
            (2.0, 0.5),
        ] {
            let want: f64 = x * (x / y).ln() - x + y;
            assert!((gkl(x, y) - want).abs() <= 1e-14 * want.abs().max(1e-300));
        }
    }

    #[test]
    fn gkl_keeps_digits_near_one() {
        // t(q(1+r), q) = q((1+r)ln(1+r) − r) ≈ q r²/2 (1 − r/3): check the series branch.
        let q = 0.25;
        for &r in &[1e-3, -1e-3, 1e-6, -1e-6, 9e-3] {
            let x = q * (1.0 + r);
            let r = (x - q) / q; // the r that x really has after rounding
            let got = gkl(x, q);
            let want = if r.abs() > 1e-4 {
                q * ((1.0 + r) * r.ln_1p() - r) // cancellation costs ≤ 2e-16/r here
            } else {
                q * r * r / 2.0 * (1.0 - r / 3.0 + r * r / 6.0)
            };
            assert!((got - want).abs() <= 1e-9 * want, "r={r}: {got} vs {want}");
        }
    }

    /// Jensen–Shannon of f64 pairs 1e-13 apart: each term ≈ d²/(4m) (the next order is
    /// 1e-26 of it). With m rounded, x − m kept only its last bits (8e-7 relative, before).
    #[test]
    fn js_keeps_digits_of_near_identical_pairs() {
        for (p, q) in [
            (0.5, 0.5 + 2e-13),
            (0.125, 0.125 - 3e-14),
            (3e-5, 3e-5 * (1.0 + 1e-12)),
        ] {
            let mut acc = ProbSums::default();
            prob_element(Divergence::JensenShannon, p, q, &mut acc).unwrap();
            let d: f64 = p - q; // exact (Sterbenz)
            let want = d * d / (2.0 * (p + q));
            assert!(
                (acc.main - want).abs() <= 1e-12 * want,
                "{p} {q}: {} vs {want}",
                acc.main
            );
        }
    }

    #[test]
    fn zeros_follow_the_conventions() {
        assert_eq!(gkl(0.0, 0.3), 0.3);
        assert_eq!(gkl(0.0, 0.0), 0.0);
        assert_eq!(gkl(0.3, 0.0), f64::INFINITY);
        assert_eq!(xlogy(0.0, 0.0), 0.0);
        assert_eq!(xlogy(0.5, 0.0), f64::NEG_INFINITY);
    }
}
