//! The f64 kernel: exact element functions, used for f64 inputs, for the reference engine,
//! and for the rare SIMD lanes that need special care (NaN, negatives, extreme magnitudes).

use super::Bad;
use crate::element::Element;
use crate::error::{BadKind, Side};
use crate::request::Divergence;
use crate::sums::{LogitSums, ProbSums};

/// Elements per block: sums inside a block run in the kernel's own precision, blocks are
/// combined in f64, so rounding error does not grow with the row length.
pub const BLOCK: usize = 512;

/// t(x, y) = x·ln(x/y) − x + y ≥ 0, the generalised KL term; +inf when y = 0 < x.
#[inline]
pub fn gkl(x: f64, y: f64) -> f64 {
    if x == 0.0 {
        return y;
    }
    if y == 0.0 {
        return f64::INFINITY;
    }
    let r = (x - y) / y;
    if r.abs() < 0.01 {
        // y·φ(r), φ(r) = (1+r)ln(1+r) − r = Σ_{k≥2} (−r)^k / (k(k−1)): no cancellation.
        let poly = 1.0 / 2.0
            - r * (1.0 / 6.0
                - r * (1.0 / 12.0
                    - r * (1.0 / 20.0 - r * (1.0 / 30.0 - r * (1.0 / 42.0 - r * (1.0 / 56.0))))));
        return y * r * r * poly;
    }
    let ratio = x / y;
    let l = if ratio.is_normal() {
        ratio.ln()
    } else {
        x.ln() - y.ln()
    };
    x * l - (x - y)
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
            let m = 0.5 * (p + q);
            acc.main += gkl(p, m) + gkl(q, m);
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

/// The reference pair (ra, rb) of a row of logits: the maxima of its first block (of the
/// whole row for a side with no finite value there; 0 for a side with none at all). Every
/// path derives it the same way; when it turns out far from the row's maxima, the row is
/// read again with those (see `sums::LogitOutcome::Reshift`). Either value is a value of its
/// row (or 0), so it never exceeds that row's maximum.
pub fn row_reference<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let n = a.len().min(BLOCK);
    let max = |v: &[T]| {
        let finite_max = |v: &[T]| {
            v.iter()
                .map(|x| x.to_f64())
                .filter(|x| x.is_finite())
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let m = finite_max(&v[..n]);
        let m = if m.is_finite() { m } else { finite_max(v) };
        if m.is_finite() {
            m
        } else {
            0.0
        }
    };
    (max(a), max(b))
}

/// The reference pair of a row at its maxima (finite values only): what the exact path and
/// re-reads use.
pub fn row_maxima<T: Element>(a: &[T], b: &[T]) -> (f64, f64) {
    let max = |v: &[T]| {
        let m = v
            .iter()
            .map(|x| x.to_f64())
            .filter(|x| x.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        if m.is_finite() {
            m
        } else {
            0.0
        }
    };
    (max(a), max(b))
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

/// Sums over one block of logits relative to the block's own maxima; `reference` is the
/// row's (ra, rb), `None` on a row's first block, which then sets it.
pub fn logit_block<T: Element>(
    a: &[T],
    b: &[T],
    reference: &mut Option<(f64, f64)>,
) -> Result<LogitSums, Bad> {
    let bad = |col, (side, kind)| Bad { side, kind, col };
    for (j, (&x, &y)) in a.iter().zip(b).enumerate() {
        check_logit(x.to_f64(), Side::P).map_err(|e| bad(j, e))?;
        check_logit(y.to_f64(), Side::Q).map_err(|e| bad(j, e))?;
    }
    let (ra, rb) = *reference.get_or_insert_with(|| row_reference(a, b));
    let mut s = LogitSums::with_reference(ra, rb);
    for (&x, &y) in a.iter().zip(b) {
        s.ma = s.ma.max(x.to_f64());
        s.mb = s.mb.max(y.to_f64());
    }
    // A side with no mass in this block is measured from the reference instead, so that g
    // stays finite (its weights are 0 either way).
    if s.ma == f64::NEG_INFINITY {
        s.ma = ra;
    }
    if s.mb == f64::NEG_INFINITY {
        s.mb = rb;
    }
    let g = gamma(&s);
    for (&x, &y) in a.iter().zip(b) {
        logit_element(x.to_f64(), y.to_f64(), &mut s, g);
    }
    Ok(s)
}

/// Add one logit pair to sums whose maxima and reference are already fixed; `g` = [`gamma`].
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
            let (d_hi, d_lo) = crate::sums::two_sum(x, -y);
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
/// `reference` is the row's pair, or `None` to take it from this piece's first block.
pub fn logit_segment<T: Element>(
    a: &[T],
    b: &[T],
    reference: Option<(f64, f64)>,
) -> Result<LogitSums, Bad> {
    let mut reference = reference;
    let mut total = LogitSums::default();
    for (bi, (ab, bb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let s = logit_block(ab, bb, &mut reference).map_err(|e| Bad {
            col: e.col + bi * BLOCK,
            ..e
        })?;
        total.merge(&s);
    }
    Ok(total)
}

/// A whole logits row on the exact path: referenced to its maxima, so the result needs no
/// follow-up.
pub fn logit_row_exact<T: Element>(a: &[T], b: &[T]) -> Result<LogitSums, Bad> {
    logit_segment(a, b, Some(row_maxima(a, b)))
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

    #[test]
    fn zeros_follow_the_conventions() {
        assert_eq!(gkl(0.0, 0.3), 0.3);
        assert_eq!(gkl(0.0, 0.0), 0.0);
        assert_eq!(gkl(0.3, 0.0), f64::INFINITY);
        assert_eq!(xlogy(0.0, 0.0), 0.0);
        assert_eq!(xlogy(0.5, 0.0), f64::NEG_INFINITY);
    }
}
