//! Jensen–Shannon's second pass over f64 logits in f64 lanes: the sums of
//! `exact::logit_js_segment` (Σ m·F(u), Σp, Σq), block by block. A block holding a value the
//! lanes do not take (−inf masks, NaN, +inf, |v| > `BIG`) goes through the exact path's
//! loop, which also reports bad input.
//!
//! Per element pair: p and q by two exponentials (2 ulp), u = ln p − ln q from a − b kept
//! exactly (TwoSum), and F(u) from its series in u² where |u| ≤ `JS_NEAR_F64` (every digit
//! as F → u²/4), else from e^−|u| and ln(1 + e^−|u|).

use super::super::simd_math_f64::{all, all_within, exp_nonpos, horner, ln, two_diff};
use crate::consts::{BLOCK, JS_NEAR_F64};
use crate::semantics::exact;
use crate::semantics::rows::Bad;
use crate::semantics::sums::{shift_from, JsSums};
use pulp::Simd;

use super::logits_f64::BIG;

/// F(u) = u·tanh(u/2) − 2·ln cosh(u/2) = Σ F_k·u^(2k+2), k = 0..17: within 2e-17 of F for
/// |u| ≤ 1 (the coefficients' ratio tends to −1/π²). Exact rationals: 1/4, −1/32, 1/288,
/// −17/46080, 31/806400, −691/174182400, …
const F_SERIES: [f64; 17] = [
    0.25,
    -0.03125,
    0.003472222222222222,
    -0.0003689236111111111,
    3.844246031746032e-05,
    -3.967105746619636e-06,
    4.0717132110981315e-07,
    -4.165175591615634e-08,
    4.251465901724481e-09,
    -4.3329745966219877e-10,
    4.411226989909052e-11,
    -4.4872435396725295e-12,
    4.561734047454414e-13,
    -4.635208654156131e-14,
    4.70804444125741e-15,
    -4.780527057639037e-16,
    4.852877655307447e-17,
];

/// The second-pass sums over a piece of an f64 logits row whose maxima and log-sums are
/// known, as `exact::logit_js_segment(a, b, params)` gives them (to the rounding of f64
/// sums taken in another order).
#[inline(always)]
pub fn segment<S: Simd>(
    s: S,
    a: &[f64],
    b: &[f64],
    params: (f64, f64, f64, f64),
) -> Result<JsSums, Bad> {
    let mut total = JsSums::default();
    for (bi, (ab, bb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let sums = match block(s, ab, bb, params) {
            Some(sums) => sums,
            None => exact::logit_js_segment(ab, bb, params).map_err(|e| Bad {
                col: e.col + bi * BLOCK,
                ..e
            })?,
        };
        total.merge(&sums);
    }
    Ok(total)
}

/// F(u) lane by lane: the series near 0, 2·(ln 2 − ln(1 + e) − e·|u|/(1 + e)) with
/// e = e^−|u| beyond (no cancellation that matters there: F ≥ F(1) ≈ 0.24).
#[inline(always)]
fn js_f<S: Simd>(s: S, u: S::f64s) -> S::f64s {
    let au = s.abs_f64s(u);
    let v = s.mul_f64s(u, u);
    let series = s.mul_f64s(v, horner(s, v, &F_SERIES));
    let near = s.less_than_or_equal_f64s(au, s.splat_f64s(JS_NEAR_F64));
    if all(s, near) {
        return series;
    }
    let e = exp_nonpos(s, s.neg_f64s(au));
    let one_e = s.add_f64s(s.splat_f64s(1.0), e);
    let rest = s.add_f64s(ln(s, one_e), s.div_f64s(s.mul_f64s(e, au), one_e));
    let direct = s.mul_f64s(
        s.splat_f64s(2.0),
        s.sub_f64s(s.splat_f64s(std::f64::consts::LN_2), rest),
    );
    s.select_f64s(near, series, direct)
}

/// One block's sums, or `None` where the exact path must take it.
#[inline(always)]
fn block<S: Simd>(
    s: S,
    a: &[f64],
    b: &[f64],
    (ma, lnsa, mb, l): (f64, f64, f64, f64),
) -> Option<JsSums> {
    let (av, at) = S::as_simd_f64s(a);
    let (bv, bt) = S::as_simd_f64s(b);
    if !all_within(s, a, b, BIG) {
        return None;
    }
    let (c_hi, c_lo) = shift_from(ma, mb, 0.0);
    let (vma, vla) = (s.splat_f64s(ma), s.splat_f64s(lnsa));
    let (vmb, vlb) = (s.splat_f64s(mb), s.splat_f64s(lnsa + l));
    let (vc_hi, vc_lo, vl) = (s.splat_f64s(c_hi), s.splat_f64s(c_lo), s.splat_f64s(l));
    let half = s.splat_f64s(0.5);
    let (mut h, mut sp, mut sq) = (s.splat_f64s(0.0), s.splat_f64s(0.0), s.splat_f64s(0.0));
    for (&x, &y) in av.iter().zip(bv) {
        let p = exp_nonpos(s, s.sub_f64s(s.sub_f64s(x, vma), vla));
        let q = exp_nonpos(s, s.sub_f64s(s.sub_f64s(y, vmb), vlb));
        let (d_hi, d_lo) = two_diff(s, x, y);
        let u = s.add_f64s(
            s.add_f64s(s.sub_f64s(d_hi, vc_hi), s.sub_f64s(d_lo, vc_lo)),
            vl,
        );
        h = s.mul_add_f64s(s.mul_f64s(half, s.add_f64s(p, q)), js_f(s, u), h);
        sp = s.add_f64s(sp, p);
        sq = s.add_f64s(sq, q);
    }
    let mut out = JsSums {
        h: s.reduce_sum_f64s(h),
        sp: s.reduce_sum_f64s(sp),
        sq: s.reduce_sum_f64s(sq),
        err: 0.0,
    };
    if !at.is_empty() {
        // Finite values within BIG: the exact loop reports nothing.
        out.merge(&exact::logit_js_segment(at, bt, (ma, lnsa, mb, l)).ok()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::softmax_params as params;
    use super::*;
    use crate::error::BadKind;
    use pulp::WithSimd;

    #[derive(Clone, Copy)]
    struct Run<'a>(&'a [f64], &'a [f64], (f64, f64, f64, f64));
    impl WithSimd for Run<'_> {
        type Output = Result<JsSums, Bad>;
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            segment(s, self.0, self.1, self.2)
        }
    }

    fn every_level(a: &[f64], b: &[f64], k: (f64, f64, f64, f64)) -> Vec<Result<JsSums, Bad>> {
        crate::cpu::on_every_level(Run(a, b, k))
    }

    struct Rng(u64);
    impl Rng {
        fn normal(&mut self) -> f64 {
            let mut u = || {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (x, y) = (u(), u());
            (-2.0 * x.ln()).sqrt() * (std::f64::consts::TAU * y).cos()
        }
    }

    #[test]
    fn the_series_is_f_to_its_last_digits() {
        for i in 0..=2000 {
            let u = i as f64 / 2000.0 * JS_NEAR_F64;
            let series = u * u * F_SERIES.iter().rev().fold(0.0, |acc, &c| acc * u * u + c);
            let want = exact::js_f(u);
            assert!(
                // (exact::js_f's own τ = e/(e + 2) carries a few ulp of F.)
                (series - want).abs() <= 1e-15 * want,
                "u = {u}: {series} vs {want}"
            );
        }
    }

    /// Rows near and far apart (|u| on both sides of the series' range), large offsets and
    /// odd lengths: the exact path's sums to f64 rounding, on every SIMD level.
    #[test]
    fn sums_match_the_exact_path() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (cols, spread, offset) in [
            (1, 0.1, 0.0),
            (7, 1e-9, 0.0),
            (333, 0.1, 1e4),
            (1000, 3.0, -2e5),
            (1537, 1e-6, 3e10),
        ] {
            let a: Vec<f64> = (0..cols).map(|_| 3.0 * rng.normal() + offset).collect();
            let b: Vec<f64> = a.iter().map(|x| x + spread * rng.normal()).collect();
            let k = params(&a, &b);
            let want = exact::logit_js_segment(&a, &b, k).unwrap();
            for got in every_level(&a, &b, k) {
                let got = got.unwrap();
                assert!(
                    (got.h - want.h).abs() <= 1e-14 * want.h,
                    "{cols}: {got:?} vs {want:?}"
                );
                assert!((got.sp - want.sp).abs() <= 1e-14 * want.sp);
                assert!((got.sq - want.sq).abs() <= 1e-14 * want.sq);
            }
        }
    }

    /// −inf masks take the exact loop (their terms are (p + q)·ln 2 or 0); NaN is reported
    /// at its column, in a later block too.
    #[test]
    fn masks_and_bad_values_take_the_exact_loop() {
        let mut rng = Rng(7);
        let mut a: Vec<f64> = (0..1200).map(|_| rng.normal()).collect();
        let mut b: Vec<f64> = a.iter().map(|x| x + 0.2 * rng.normal()).collect();
        a[3] = f64::NEG_INFINITY;
        b[700] = f64::NEG_INFINITY;
        let finite = |v: &[f64]| {
            v.iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect::<Vec<_>>()
        };
        let (fa, fb) = (finite(&a), finite(&b));
        let k = params(&fa, &fb);
        let want = exact::logit_js_segment(&a, &b, k).unwrap();
        for got in every_level(&a, &b, k) {
            let got = got.unwrap();
            assert!(
                (got.h - want.h).abs() <= 1e-14 * want.h,
                "{got:?} vs {want:?}"
            );
        }
        b[1100] = f64::NAN;
        for got in every_level(&a, &b, k) {
            let e = got.unwrap_err();
            assert_eq!((e.col, e.kind), (1100, BadKind::NotANumber), "{e:?}");
        }
    }
}
