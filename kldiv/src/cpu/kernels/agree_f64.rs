//! The agreement pass over f64 logits in f64 lanes: the sums of `exact::logit_agree_segment`
//! (Σ min(p, q) and each side's largest logits), block by block. A block holding a value
//! the lanes do not take (−inf masks, NaN, +inf, |v| > `BIG`) goes through the exact path's
//! loop, which also reports bad input.
//!
//! Per element pair: min(p, q) = e^min(ln p, ln q), one exponential (2 ulp) where the
//! element-by-element loop took two; a vector enters a side's top list only where one of
//! its lanes is above the list's last entry (the list decides ties and order as it did).

use super::super::simd_math_f64::{all_within, exp_nonpos};
use crate::consts::BLOCK;
use crate::semantics::exact;
use crate::semantics::rows::Bad;
use crate::semantics::sums::{AgreeSums, TopList, TOP_LIST};
use pulp::Simd;

use super::logits_f64::BIG;

/// The agreement sums over a piece of an f64 logits row whose maxima and log-sums are known,
/// as `exact::logit_agree_segment(a, b, params)` gives them (Σ min to the rounding of f64
/// sums taken in another order; the top lists exactly).
#[inline(always)]
pub fn segment<S: Simd>(
    s: S,
    a: &[f64],
    b: &[f64],
    params: (f64, f64, f64, f64),
) -> Result<AgreeSums, Bad> {
    let mut total = AgreeSums::default();
    for (bi, (ab, bb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let base = bi * BLOCK;
        if block(s, ab, bb, params, base, &mut total) {
            continue;
        }
        let sums = exact::logit_agree_segment(ab, bb, params).map_err(|e| Bad {
            col: e.col + base,
            ..e
        })?;
        total.sum_min += sums.sum_min;
        push_all(&mut total.top_a, &sums.top_a, base);
        push_all(&mut total.top_b, &sums.top_b, base);
    }
    Ok(total)
}

/// `from`'s entries into `into`, their columns moved by `base`.
fn push_all(into: &mut TopList, from: &TopList, base: usize) {
    for i in 0..from.len {
        into.push(from.val[i], from.col[i] + base as u64);
    }
}

/// What a value must exceed to enter `top` (−inf while it is not full).
#[inline(always)]
fn entry_bar(top: &TopList) -> f64 {
    if top.len == TOP_LIST {
        top.val[TOP_LIST - 1]
    } else {
        f64::NEG_INFINITY
    }
}

/// The lanes of vector `v` (columns from `col`) into `top` where one is above its bar.
#[inline(always)]
fn offer<S: Simd>(s: S, top: &mut TopList, v: S::f64s, col: usize) {
    if s.first_true_m64s(s.greater_than_f64s(v, s.splat_f64s(entry_bar(top)))) < S::F64_LANES {
        let lanes: &[f64] = bytemuck::cast_slice(std::slice::from_ref(&v));
        for (j, &x) in lanes.iter().enumerate() {
            top.push(x, (col + j) as u64);
        }
    }
}

/// One block's sums into `out` (columns from `base`); false, with `out` untouched, where the
/// exact path must take the block.
#[inline(always)]
fn block<S: Simd>(
    s: S,
    a: &[f64],
    b: &[f64],
    (ma, lnsa, mb, l): (f64, f64, f64, f64),
    base: usize,
    out: &mut AgreeSums,
) -> bool {
    let (av, at) = S::as_simd_f64s(a);
    let (bv, bt) = S::as_simd_f64s(b);
    if !all_within(s, a, b, BIG) {
        return false;
    }
    let (vma, vla) = (s.splat_f64s(ma), s.splat_f64s(lnsa));
    let (vmb, vlb) = (s.splat_f64s(mb), s.splat_f64s(lnsa + l));
    let mut sum_min = s.splat_f64s(0.0);
    for (i, (&x, &y)) in av.iter().zip(bv).enumerate() {
        let lp = s.sub_f64s(s.sub_f64s(x, vma), vla);
        let lq = s.sub_f64s(s.sub_f64s(y, vmb), vlb);
        sum_min = s.add_f64s(sum_min, exp_nonpos(s, s.min_f64s(lp, lq)));
        let col = base + i * S::F64_LANES;
        offer(s, &mut out.top_a, x, col);
        offer(s, &mut out.top_b, y, col);
    }
    out.sum_min += s.reduce_sum_f64s(sum_min);
    let start = base + a.len() - at.len();
    for (j, (&x, &y)) in at.iter().zip(bt).enumerate() {
        let lp = (x - ma) - lnsa;
        let lq = (y - mb) - (lnsa + l);
        out.sum_min += lp.min(lq).exp();
        out.top_a.push(x, (start + j) as u64);
        out.top_b.push(y, (start + j) as u64);
    }
    true
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
        type Output = Result<AgreeSums, Bad>;
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            segment(s, self.0, self.1, self.2)
        }
    }

    fn every_level(a: &[f64], b: &[f64], k: (f64, f64, f64, f64)) -> Vec<Result<AgreeSums, Bad>> {
        crate::cpu::on_every_level(Run(a, b, k))
    }

    fn row(n: usize, seed: u64, spread: f64) -> (Vec<f64>, Vec<f64>) {
        let mut x = seed;
        let mut u = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let a: Vec<f64> = (0..n).map(|_| 6.0 * u()).collect();
        let b = a.iter().map(|v| v + spread * u()).collect();
        (a, b)
    }

    fn same(got: &AgreeSums, want: &AgreeSums, what: &str) {
        assert!(
            (got.sum_min - want.sum_min).abs() <= 1e-14 * want.sum_min,
            "{what}: {} vs {}",
            got.sum_min,
            want.sum_min
        );
        assert_eq!((got.top_a, got.top_b), (want.top_a, want.top_b), "{what}");
    }

    /// Σ min to f64 rounding and the same top lists (ties to the lower column, across
    /// blocks) as the element-by-element loop, on every SIMD level.
    #[test]
    fn sums_and_tops_match_the_exact_path() {
        for (n, spread) in [(1, 0.3), (13, 0.3), (700, 1e-8), (2049, 2.0)] {
            let (mut a, mut b) = row(n, 0x2545_f491 + n as u64, spread);
            if n > 1000 {
                // Ties: equal maxima in two blocks and within one vector.
                a[3] = 9.0;
                a[1500] = 9.0;
                a[1501] = 9.0;
                b[600..620].fill(4.0);
            }
            let k = params(&a, &b);
            let want = exact::logit_agree_segment(&a, &b, k).unwrap();
            for got in every_level(&a, &b, k) {
                same(&got.unwrap(), &want, &format!("{n} columns"));
            }
        }
    }

    /// −inf masks take the exact loop, columns kept; NaN is reported at its column.
    #[test]
    fn masks_and_bad_values_take_the_exact_loop() {
        let (mut a, mut b) = row(1300, 11, 0.5);
        a[520] = f64::NEG_INFINITY;
        b[5] = f64::NEG_INFINITY;
        a[1290] = 50.0; // in a masked-free block after a masked one
        let k = params(&a, &b);
        let want = exact::logit_agree_segment(&a, &b, k).unwrap();
        assert_eq!(want.top_a.col[0], 1290);
        for got in every_level(&a, &b, k) {
            same(&got.unwrap(), &want, "masked");
        }
        b[1200] = f64::NAN;
        for got in every_level(&a, &b, k) {
            let e = got.unwrap_err();
            assert_eq!((e.col, e.kind), (1200, BadKind::NotANumber), "{e:?}");
        }
    }
}
