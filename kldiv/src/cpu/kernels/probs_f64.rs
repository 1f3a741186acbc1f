//! f64 probability rows in f64 SIMD lanes, for every divergence: the exact path's sums
//! (`exact::prob_segment`), with its per-element form in any lane where a ratio is far from
//! one or a value is 0 (or subnormal, for a logarithm), and its element-by-element loop for
//! any block holding a value it must report (NaN, a negative, +inf). Cross-entropy and
//! entropy take one vectorised ln per element (`simd_math_f64::ln`, 2 ulp).
//!
//! Near one each term is t(x, y) = x·ln(x/y) − x + y = d·u·(1 + (1 + u)·u·B(u²)) with
//! d = x − y, u = d/(x + y) and B(z) = Σ_{k≥0} z^k/(2k+3) (from ln(x/y) = 2·atanh u): no
//! logarithm and no cancellation, so each term keeps a few ulp however close x and y are.

use super::super::simd_math_f64::{all, horner, ln, odd_reciprocals};
use crate::consts::BLOCK;
use crate::request::Divergence;
use crate::semantics::exact::{self, gkl};
use crate::semantics::rows::Bad;
use crate::semantics::sums::ProbSums;
use pulp::Simd;

/// |u| up to which the series runs (x/y within [1/2, 2]); the rest goes to `gkl`.
const U_NEAR: f64 = 1.0 / 3.0;

/// B(z) = Σ_{k=0..14} z^k/(2k+3): at z ≤ 1/9 the first term left out is below 5e-16 of B,
/// and B enters t only as (1 + u)·u·B ≤ 0.16.
const B: [f64; 15] = odd_reciprocals(3);

/// x + y below this (or infinite) goes to `gkl`: d·u would lose bits as a subnormal.
const SUM_MIN: f64 = 1e-290;

/// Sums over a piece of an f64 probability row, as `exact::prob_segment(div, p, q)` gives
/// them (to the rounding of f64 sums taken in another order).
#[inline(always)]
pub fn segment<S: Simd>(s: S, div: Divergence, p: &[f64], q: &[f64]) -> Result<ProbSums, Bad> {
    let mut total = ProbSums::default();
    for (bi, (pb, qb)) in p.chunks(BLOCK).zip(q.chunks(BLOCK)).enumerate() {
        let sums = match block_of(s, div, pb, qb) {
            Some(sums) => sums,
            // A value to report (or NaN to propagate): the exact path names its column.
            None => exact::prob_segment(div, pb, qb).map_err(|b| Bad {
                col: bi * BLOCK + b.col,
                ..b
            })?,
        };
        total.merge(&sums);
    }
    Ok(total)
}

/// The divergences, numbered for [`block`]'s constant parameter.
const DIVS: [Divergence; 6] = [
    Divergence::Kl,
    Divergence::ReverseKl,
    Divergence::SymmetricKl,
    Divergence::JensenShannon,
    Divergence::CrossEntropy,
    Divergence::Entropy,
];

/// [`block`] compiled for `div` alone: one loop per divergence, without the others' arms.
#[inline(always)]
fn block_of<S: Simd>(s: S, div: Divergence, p: &[f64], q: &[f64]) -> Option<ProbSums> {
    match div {
        Divergence::Kl => block::<S, 0>(s, p, q),
        Divergence::ReverseKl => block::<S, 1>(s, p, q),
        Divergence::SymmetricKl => block::<S, 2>(s, p, q),
        Divergence::JensenShannon => block::<S, 3>(s, p, q),
        Divergence::CrossEntropy => block::<S, 4>(s, p, q),
        Divergence::Entropy => block::<S, 5>(s, p, q),
    }
}

/// One block's sums for `DIVS[D]`, or `None` where a value is NaN, negative or +inf.
#[inline(always)]
fn block<S: Simd, const D: usize>(s: S, p: &[f64], q: &[f64]) -> Option<ProbSums> {
    let div = DIVS[D];
    let (pv, p_tail) = S::as_simd_f64s(p);
    let (qv, q_tail) = S::as_simd_f64s(q);
    let zero = s.splat_f64s(0.0);
    let (mut sp, mut sq, mut diff, mut main, mut main2) = (zero, zero, zero, zero, zero);
    // Entropy reads Q for its sums only: the exact path checks P alone.
    let checks_q = div != Divergence::Entropy;
    for (&x, &y) in pv.iter().zip(qv) {
        let ok = if checks_q {
            s.and_m64s(regular(s, x), regular(s, y))
        } else {
            regular(s, x)
        };
        if !all(s, ok) {
            return None;
        }
        let d = s.sub_f64s(x, y);
        sp = s.add_f64s(sp, x);
        sq = s.add_f64s(sq, y);
        diff = s.add_f64s(diff, d);
        let (t, t2) = terms(s, div, x, y, d);
        main = s.add_f64s(main, t);
        main2 = s.add_f64s(main2, t2);
    }
    let mut out = ProbSums {
        main: s.reduce_sum_f64s(main),
        main2: s.reduce_sum_f64s(main2),
        sp: s.reduce_sum_f64s(sp),
        sq: s.reduce_sum_f64s(sq),
        diff: s.reduce_sum_f64s(diff),
    };
    for (&x, &y) in p_tail.iter().zip(q_tail) {
        exact::prob_element(div, x, y, &mut out).ok()?;
    }
    Some(out)
}

/// 0 ≤ v < +inf (false for NaN).
#[inline(always)]
fn regular<S: Simd>(s: S, v: S::f64s) -> S::m64s {
    s.and_m64s(
        s.greater_than_or_equal_f64s(v, s.splat_f64s(0.0)),
        s.less_than_f64s(v, s.splat_f64s(f64::INFINITY)),
    )
}

/// The main sum's term of each lane, and the second one's (symmetric KL's reverse half).
#[inline(always)]
fn terms<S: Simd>(s: S, div: Divergence, x: S::f64s, y: S::f64s, d: S::f64s) -> (S::f64s, S::f64s) {
    let zero = s.splat_f64s(0.0);
    match div {
        Divergence::Kl | Divergence::ReverseKl | Divergence::SymmetricKl => {
            let sum = s.add_f64s(x, y);
            let u = s.div_f64s(d, sum);
            let ub = u_series(s, u);
            let near = near(s, u, sum);
            // t(y, x) is t(x, y) with d, u and u·B(u²) negated.
            let (main, reverse) = match div {
                Divergence::Kl => (t_near(s, d, u, ub), None),
                Divergence::ReverseKl => (t_near(s, neg(s, d), neg(s, u), neg(s, ub)), None),
                _ => (
                    t_near(s, d, u, ub),
                    Some(t_near(s, neg(s, d), neg(s, u), neg(s, ub))),
                ),
            };
            let main = if div == Divergence::ReverseKl {
                patch(s, near, main, x, y, |x, y| gkl(y, x))
            } else {
                patch(s, near, main, x, y, gkl)
            };
            // A match, not `map_or` with a closure: the closure (SIMD code) was compiled
            // outside the kernel's target features and called per vector (f64 KL +40% time).
            let reverse = match reverse {
                Some(r) => patch(s, near, r, x, y, |x, y| gkl(y, x)),
                None => zero,
            };
            (main, reverse)
        }
        Divergence::CrossEntropy | Divergence::Entropy => {
            // x·ln y (x·ln x), with the exact path's xlogy where the logarithm's argument is
            // 0 or subnormal (0·ln 0 = 0, x·ln 0 = −inf).
            let arg = if div == Divergence::Entropy { x } else { y };
            let normal = s.greater_than_or_equal_f64s(arg, s.splat_f64s(f64::MIN_POSITIVE));
            let t = s.mul_f64s(x, ln(s, arg));
            let exact = if div == Divergence::Entropy {
                |x: f64, _: f64| exact::xlogy(x, x)
            } else {
                exact::xlogy
            };
            (patch(s, normal, t, x, y, exact), zero)
        }
        Divergence::JensenShannon => {
            // t(x, m) + t(y, m), m = (x + y)/2: x − m = d/2, x + m = (3x + y)/2, and
            // y − m = −d/2, y + m = (x + 3y)/2.
            let half_d = s.mul_f64s(d, s.splat_f64s(0.5));
            let three = s.splat_f64s(3.0);
            let sx = s.mul_add_f64s(three, x, y);
            let sy = s.mul_add_f64s(three, y, x);
            let ux = s.div_f64s(d, sx);
            let uy = s.div_f64s(neg(s, d), sy);
            let tx = t_near(s, half_d, ux, u_series(s, ux));
            let ty = t_near(s, neg(s, half_d), uy, u_series(s, uy));
            let near = s.and_m64s(near(s, ux, sx), near(s, uy, sy));
            let js = |x: f64, y: f64| {
                let (m, half_d) = (0.5 * (x + y), 0.5 * (x - y));
                exact::gkl_d(x, m, half_d) + exact::gkl_d(y, m, -half_d)
            };
            (patch(s, near, s.add_f64s(tx, ty), x, y, js), zero)
        }
    }
}

/// t(x, y) = d·u·(1 + (1 + u)·u·B(u²)) near one, given d = x − y, u = d/(x + y) and
/// `ub` = u·B(u²).
#[inline(always)]
fn t_near<S: Simd>(s: S, d: S::f64s, u: S::f64s, ub: S::f64s) -> S::f64s {
    let one = s.splat_f64s(1.0);
    s.mul_f64s(
        s.mul_f64s(d, u),
        s.mul_add_f64s(s.add_f64s(one, u), ub, one),
    )
}

/// −v (0 − v: the sign of a zero does not matter here).
#[inline(always)]
fn neg<S: Simd>(s: S, v: S::f64s) -> S::f64s {
    s.sub_f64s(s.splat_f64s(0.0), v)
}

/// u·B(u²).
#[inline(always)]
fn u_series<S: Simd>(s: S, u: S::f64s) -> S::f64s {
    s.mul_f64s(u, horner(s, s.mul_f64s(u, u), &B))
}

/// Lanes where the series holds: |u| ≤ U_NEAR (false for NaN, as 0/0 gives) and the sum of
/// the pair normal and finite.
#[inline(always)]
fn near<S: Simd>(s: S, u: S::f64s, sum: S::f64s) -> S::m64s {
    s.and_m64s(
        s.less_than_or_equal_f64s(s.abs_f64s(u), s.splat_f64s(U_NEAR)),
        s.and_m64s(
            s.greater_than_or_equal_f64s(sum, s.splat_f64s(SUM_MIN)),
            s.less_than_or_equal_f64s(sum, s.splat_f64s(f64::MAX)),
        ),
    )
}

/// `series` lanes where `near`, `exact(x, y)` in the others (zeros, ratios far from one).
#[inline(always)]
fn patch<S: Simd>(
    s: S,
    near: S::m64s,
    series: S::f64s,
    x: S::f64s,
    y: S::f64s,
    exact: impl Fn(f64, f64) -> f64,
) -> S::f64s {
    if all(s, near) {
        return series;
    }
    let mut out = series;
    let far = s.select_f64s(near, s.splat_f64s(0.0), s.splat_f64s(1.0));
    let (xs, ys, far) = (lanes(&x), lanes(&y), lanes(&far));
    let slots: &mut [f64] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut out));
    for (k, slot) in slots.iter_mut().enumerate() {
        if far[k] != 0.0 {
            *slot = exact(xs[k], ys[k]);
        }
    }
    out
}

fn lanes<V: bytemuck::Pod>(v: &V) -> &[f64] {
    bytemuck::cast_slice(std::slice::from_ref(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    /// t(x, y) = d·(u + (1 + u)·A(u²)), d = x − y, A(z) = Σ_{k≥1} z^k/(2k+1) to 60 terms
    /// (the near branch written another way, without its truncation), or `gkl` where the
    /// series does not run.
    fn reference(x: f64, y: f64, d: f64) -> f64 {
        let u = d / (x + y);
        if x == 0.0 || y == 0.0 || u.abs() > U_NEAR {
            return exact::gkl_d(x, y, d);
        }
        let z = u * u;
        let a: f64 = (1..60)
            .rev()
            .fold(0.0, |acc, k| (acc + 1.0 / (2 * k + 1) as f64) * z);
        d * (u + (1.0 + u) * a)
    }

    #[derive(Clone, Copy)]
    struct Run<'a>(Divergence, &'a [f64], &'a [f64]);
    impl WithSimd for Run<'_> {
        type Output = Result<ProbSums, Bad>;
        fn with_simd<S: Simd>(self, s: S) -> Self::Output {
            segment(s, self.0, self.1, self.2)
        }
    }

    fn every_level(div: Divergence, p: &[f64], q: &[f64]) -> Vec<Result<ProbSums, Bad>> {
        crate::cpu::on_every_level(Run(div, p, q))
    }

    fn pairs() -> (Vec<f64>, Vec<f64>) {
        let (mut p, mut q) = (Vec::new(), Vec::new());
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for k in 0..1500 {
            let x = next() * 1e-3;
            let r = match k % 6 {
                0 => 1.0 + (next() - 0.5) * 1e-12,
                1 => 1.0 + (next() - 0.5) * 0.02,
                2 => 0.5 + 1.5 * next(),
                3 => 10f64.powf(8.0 * (next() - 0.5)),
                4 => 0.49 + 0.02 * next(), // either side of the series' edge
                _ => 1.0,
            };
            p.push(x);
            q.push(match k % 97 {
                3 => 0.0,
                50 => 1e-310, // subnormal: a logarithm's argument the lanes leave to libm
                _ => x * r,
            });
        }
        p[10] = 0.0;
        p[20] = 3e-320;
        (p, q)
    }

    /// Each term, near one (down to ratios 1e-12 from it) and far from it, with zeros and
    /// subnormals: within 16 ulp of the reference on every SIMD level (each pair fills 8
    /// lanes).
    #[test]
    fn terms_match_the_reference() {
        let (p, q) = pairs();
        for div in DIVS {
            for (&x, &y) in p.iter().zip(&q) {
                let (main, main2) = match div {
                    Divergence::Kl => (reference(x, y, x - y), 0.0),
                    Divergence::ReverseKl => (reference(y, x, y - x), 0.0),
                    Divergence::SymmetricKl => (reference(x, y, x - y), reference(y, x, y - x)),
                    Divergence::CrossEntropy => (exact::xlogy(x, y), 0.0),
                    Divergence::Entropy => (exact::xlogy(x, x), 0.0),
                    _ => {
                        let (m, half_d) = (0.5 * (x + y), 0.5 * (x - y));
                        (reference(x, m, half_d) + reference(y, m, -half_d), 0.0)
                    }
                };
                for got in every_level(div, &[x; 8], &[y; 8]) {
                    let got = got.unwrap();
                    for (g, w) in [(got.main / 8.0, main), (got.main2 / 8.0, main2)] {
                        assert!(
                            g == w || (g - w).abs() <= 16.0 * f64::EPSILON * w.abs(),
                            "{div:?} ({x}, {y}): {g} against {w}"
                        );
                    }
                }
            }
        }
    }

    /// Whole pieces (vectors, tails, several blocks) give the exact path's sums: Σp, Σq and
    /// Σ(p − q) to f64's rounding in another order, the terms within the exact path's own
    /// error (its ln of a rounded ratio: ~1e-12 of a term where x/y is 1.01).
    #[test]
    fn pieces_sum_as_the_exact_path() {
        let (p, q) = pairs();
        for div in DIVS {
            for n in [0, 1, 7, 8, 9, 513, p.len()] {
                let (ps, qs) = (&p[..n], &q[..n]);
                let plain = exact::prob_segment(div, ps, qs).unwrap();
                for got in every_level(div, ps, qs) {
                    let got = got.unwrap();
                    let pairs = [
                        (got.sp, plain.sp, 1e-14),
                        (got.sq, plain.sq, 1e-14),
                        (got.main, plain.main, 1e-11),
                        (got.main2, plain.main2, 1e-11),
                    ];
                    for (g, w, rel) in pairs {
                        let ok = g == w || (g - w).abs() <= rel * w.abs();
                        assert!(ok, "{div:?} {n}: {got:?} {plain:?}");
                    }
                    assert!((got.diff - plain.diff).abs() <= 1e-15 * (plain.sp + plain.sq));
                }
            }
        }
    }

    /// Values the exact path reports are reported at the same column; q = 0 < p is +inf.
    #[test]
    fn bad_values_are_named_where_they_are() {
        let mut p = vec![0.001; 1100];
        let q = p.clone();
        p[700] = -1.0;
        for got in every_level(Divergence::Kl, &p, &q) {
            let bad = got.unwrap_err();
            assert_eq!(bad.col, 700);
        }
        let (p, mut q) = (vec![0.5; 40], vec![0.5; 40]);
        q[33] = 0.0;
        for got in every_level(Divergence::Kl, &p, &q) {
            assert_eq!(got.unwrap().main, f64::INFINITY);
        }
    }
}
