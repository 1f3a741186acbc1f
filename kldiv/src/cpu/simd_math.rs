//! Vectorised ln, exp and the generalised-KL term, generic over pulp's `Simd` so one body
//! serves AVX-512, AVX2+FMA, NEON and scalar. The coefficients live in `crate::consts`
//! (shared with the WGSL kernels); the tests below bound the f32 results against f64.

use pulp::Simd;

use crate::consts::{EXP_MIN, EXP_Q, GKL_Q, LN2_HI, LN2_LO, LN_P, U_NEAR};
pub use crate::consts::{HUGE, TINY};

/// c[0] + c[1]·x + … + c[8]·x⁸ by Estrin's scheme: 4 dependent steps instead of Horner's 8,
/// so that successive vectors overlap in the pipeline (Horner's chain was the critical path
/// of the probability kernels).
#[inline(always)]
pub fn poly9<S: Simd>(s: S, x: S::f32s, c: &[f32; 9]) -> S::f32s {
    let k = |i: usize| s.splat_f32s(c[i]);
    let x2 = s.mul_f32s(x, x);
    let x4 = s.mul_f32s(x2, x2);
    let a0 = s.mul_add_e_f32s(k(1), x, k(0));
    let a1 = s.mul_add_e_f32s(k(3), x, k(2));
    let a2 = s.mul_add_e_f32s(k(5), x, k(4));
    let a3 = s.mul_add_e_f32s(k(7), x, k(6));
    let b0 = s.mul_add_e_f32s(a1, x2, a0);
    let b1 = s.mul_add_e_f32s(a3, x2, a2);
    // x⁴·(b1 + c8·x⁴) holds the terms from x⁴ up.
    let b1 = s.mul_add_e_f32s(k(8), x4, b1);
    s.mul_add_e_f32s(b1, x4, b0)
}

#[inline(always)]
pub fn horner<S: Simd>(s: S, x: S::f32s, c: &[f32]) -> S::f32s {
    let mut acc = s.splat_f32s(c[c.len() - 1]);
    for &ci in c[..c.len() - 1].iter().rev() {
        acc = s.mul_add_e_f32s(acc, x, s.splat_f32s(ci));
    }
    acc
}

/// Natural log of positive, finite, normal x.
#[inline(always)]
pub fn ln<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    // x = 2^k·m with m ∈ [√½, √2): shift the bits so the exponent field rounds at √2.
    let bits = s.transmute_u32s_f32s(x);
    let ix = s.add_u32s(bits, s.splat_u32s(0x3f80_0000 - 0x3f35_04f3));
    let k_biased = s.wrapping_dyn_shr_u32s(ix, s.splat_u32s(23));
    let m_bits = s.add_u32s(
        s.and_u32s(ix, s.splat_u32s(0x007f_ffff)),
        s.splat_u32s(0x3f35_04f3),
    );
    let f = s.sub_f32s(s.transmute_f32s_u32s(m_bits), s.splat_f32s(1.0));
    // k as f32 without an int→float instruction: 2^23 + k_biased, minus (2^23 + 127).
    let k = s.sub_f32s(
        s.transmute_f32s_u32s(s.add_u32s(k_biased, s.splat_u32s(0x4b00_0000))),
        s.splat_f32s(8_388_735.0),
    );
    let f2 = s.mul_f32s(f, f);
    let y = s.mul_f32s(s.mul_f32s(f2, f), poly9(s, f, &LN_P));
    let lo = s.mul_add_e_f32s(k, s.splat_f32s(LN2_LO), y);
    let lo = s.mul_add_e_f32s(f2, s.splat_f32s(-0.5), lo);
    s.mul_add_e_f32s(k, s.splat_f32s(LN2_HI), s.add_f32s(f, lo))
}

/// e^x for x ≤ ~0 (−inf allowed: gives 0). Results below e^−87 flush to 0.
#[inline(always)]
pub fn exp_nonpos<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let t = s.mul_add_e_f32s(
        x,
        s.splat_f32s(std::f32::consts::LOG2_E),
        s.splat_f32s(SHIFTER),
    );
    let n = s.sub_f32s(t, s.splat_f32s(SHIFTER));
    let r = s.mul_add_e_f32s(n, s.splat_f32s(-LN2_HI), x);
    let r = s.mul_add_e_f32s(n, s.splat_f32s(-LN2_LO), r);
    let r2 = s.mul_f32s(r, r);
    let e = s.add_f32s(
        s.mul_add_e_f32s(r2, horner(s, r, &EXP_Q), r),
        s.splat_f32s(1.0),
    );
    // 2^n: the integer n sits in t's low mantissa bits.
    let nb = s.sub_u32s(s.transmute_u32s_f32s(t), s.splat_u32s(0x4b40_0000 - 127));
    let scale = s.transmute_f32s_u32s(s.wrapping_dyn_shl_u32s(nb, s.splat_u32s(23)));
    let under = s.less_than_f32s(x, s.splat_f32s(EXP_MIN));
    s.select_f32s(under, s.splat_f32s(0.0), s.mul_f32s(e, scale))
}

/// t(x, y) = x·ln(x/y) − x + y, given d = x − y, for x, y each 0 or in [TINY, HUGE], with the zero
/// conventions t(0, y) = y and t(x, 0) = +inf (x > 0).
///
/// With u = (x−y)/(x+y): t = (x−y)·u·P(u), P(u) = 1 + u/3 + u²/3 + u³/5 + u⁴/5 + …
/// (from ln(x/y) = 2·atanh u). x − y is exact when x ≈ y, so this branch has no
/// cancellation: relative error a few ulp however close x and y are. Far from one
/// (|u| > 0.15, ratio outside [0.74, 1.35]) the direct form loses at most a factor ~25.
/// Callers whose x and y carry low parts (a rescaled read) pass d formed from both, which
/// this branch then keeps to its own rounding.
#[inline(always)]
pub fn gkl_d<S: Simd>(s: S, x: S::f32s, y: S::f32s, d: S::f32s) -> S::f32s {
    let u = s.div_f32s(d, s.add_f32s(x, y));
    let near = s.less_than_or_equal_f32s(abs(s, u), s.splat_f32s(U_NEAR));
    // Data with p ≈ q (the usual case) skips the log, the second division and the zero
    // selects: a lane holding a zero has |u| = 1 or u = NaN, so it is never near.
    if all(s, near) {
        return gkl_near(s, d, u);
    }
    let t = if !any(s, near) {
        gkl_far(s, x, y, d)
    } else {
        s.select_f32s(near, gkl_near(s, d, u), gkl_far(s, x, y, d))
    };
    let zero = s.splat_f32s(0.0);
    let t = s.select_f32s(s.equal_f32s(y, zero), s.splat_f32s(f32::INFINITY), t);
    s.select_f32s(s.equal_f32s(x, zero), y, t)
}

/// [`gkl_d`] with d = x − y as f32 rounds it (exact when x ≈ y).
#[cfg(test)]
#[inline(always)]
pub fn gkl<S: Simd>(s: S, x: S::f32s, y: S::f32s) -> S::f32s {
    gkl_d(s, x, y, s.sub_f32s(x, y))
}

// (Helpers, not closures: only `#[inline(always)]` functions are compiled with the
// caller's target features.)
/// P(u) as 1 + (u + u²)·Q(u²) (see `consts::GKL_P`), times (x−y)·u.
#[inline(always)]
fn gkl_near<S: Simd>(s: S, d: S::f32s, u: S::f32s) -> S::f32s {
    let v = s.mul_f32s(u, u);
    let p = s.mul_add_e_f32s(s.add_f32s(u, v), horner(s, v, &GKL_Q), s.splat_f32s(1.0));
    s.mul_f32s(s.mul_f32s(d, u), p)
}

#[inline(always)]
fn gkl_far<S: Simd>(s: S, x: S::f32s, y: S::f32s, d: S::f32s) -> S::f32s {
    let l = ln(s, s.div_f32s(x, y));
    s.mul_add_e_f32s(x, l, neg(s, d))
}

/// `s` as AVX-512, where it is: for the few steps pulp's portable API lacks (shuffles,
/// f16 conversion). The check is on the type, so it folds away at compile time.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn as_v4<S: Simd>(s: S) -> Option<pulp::x86::V4> {
    (&s as &dyn std::any::Any).downcast_ref().copied()
}

/// Asks the cache for the line `ahead` bytes past `v`. A prefetch reads nothing
/// architecturally and never faults, so an address past the input's end is harmless (it is
/// dropped). No-op off x86-64.
#[inline(always)]
pub fn prefetch_ahead<T>(v: &T, ahead: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let at = (v as *const T).cast::<i8>().wrapping_add(ahead);
        // SAFETY: see above; SSE (which the intrinsic needs) is in every x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, ahead);
}

/// |x|. pulp's provided `abs_f32s` / `neg_f32s` are only `#[inline]`: where the compiler
/// declines, they run outside the SIMD context as calls (seen in profiles).
#[inline(always)]
pub fn abs<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    s.transmute_f32s_u32s(s.and_u32s(s.transmute_u32s_f32s(x), s.splat_u32s(0x7fff_ffff)))
}

/// −x (as 0 − x: the sign of a zero result does not matter to any caller).
#[inline(always)]
pub fn neg<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    s.sub_f32s(s.splat_f32s(0.0), x)
}

#[inline(always)]
pub fn any<S: Simd>(s: S, m: S::m32s) -> bool {
    s.first_true_m32s(m) < S::F32_LANES
}

#[inline(always)]
pub fn all<S: Simd>(s: S, m: S::m32s) -> bool {
    s.first_true_m32s(s.not_m32s(m)) >= S::F32_LANES
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    /// Runs one of the functions over the inputs on the widest SIMD level, then on scalar.
    fn vector_map<const K: u8>(xs: &[f32], ys: &[f32]) -> Vec<f32> {
        struct Op<'a, const K: u8>(&'a [f32], &'a [f32]);
        impl<const K: u8> WithSimd for Op<'_, K> {
            type Output = Vec<f32>;
            fn with_simd<S: Simd>(self, s: S) -> Vec<f32> {
                let n = S::F32_LANES;
                let mut out = vec![];
                for (x, y) in self.0.chunks(n).zip(self.1.chunks(n)) {
                    let (vx, vy) = (s.partial_load_f32s(x), s.partial_load_f32s(y));
                    let v = match K {
                        0 => ln(s, vx),
                        1 => exp_nonpos(s, vx),
                        _ => gkl(s, vx, vy),
                    };
                    let mut buf = vec![0f32; n];
                    s.partial_store_f32s(&mut buf, v);
                    out.extend_from_slice(&buf[..x.len()]);
                }
                out
            }
        }
        let mut all = pulp::Arch::new().dispatch(Op::<K>(xs, ys));
        all.extend(Simd::vectorize(pulp::Scalar::new(), Op::<K>(xs, ys)));
        all
    }

    #[test]
    fn ln_is_within_two_ulp() {
        let mut xs = vec![];
        let mut x = TINY;
        while x < HUGE {
            xs.push(x);
            x *= 1.000_37;
        }
        xs.extend((0..2000).map(|i| 1.0 + (i as f32 - 1000.0) * 1e-6));
        let got = vector_map::<0>(&xs, &xs);
        for (i, g) in got.iter().enumerate() {
            let x = xs[i % xs.len()] as f64;
            let want = x.ln();
            // Two ulp of the result, and never worse than 1.2e-7 absolute near x = 1.
            let tol = (2.0 * f32::EPSILON as f64 * want.abs()).max(1e-13);
            assert!(
                (*g as f64 - want).abs() <= tol,
                "ln({x}) = {g}, want {want}"
            );
        }
    }

    #[test]
    fn exp_is_within_three_ulp() {
        let xs: Vec<f32> = (0..8700).map(|i| -(i as f32) * 0.01).collect();
        let got = vector_map::<1>(&xs, &xs);
        for (i, g) in got.iter().enumerate() {
            let want = (xs[i % xs.len()] as f64).exp();
            assert!(
                (*g as f64 / want - 1.0).abs() <= 3.0 * f32::EPSILON as f64,
                "exp({})",
                xs[i % xs.len()]
            );
        }
        assert_eq!(
            vector_map::<1>(&[f32::NEG_INFINITY, -100.0], &[0.0, 0.0])[..2],
            [0.0, 0.0]
        );
    }

    /// Zeros follow the conventions whichever branch the other lanes of their vector take
    /// (all near but one, all far, mixed), on every SIMD width.
    #[test]
    fn gkl_zero_conventions_in_every_branch() {
        let lanes = 16;
        for (other_x, other_y) in [(1.0f32, 1.01f32), (1.0, 9.0), (1.0, 1.2)] {
            for zero_at in 0..lanes {
                for (zx, zy, want) in [
                    (0.0, 0.25, 0.25),
                    (0.5, 0.0, f32::INFINITY),
                    (0.0, 0.0, 0.0),
                ] {
                    let mut xs = vec![other_x; lanes];
                    let mut ys = vec![other_y; lanes];
                    // A mixed vector: every other lane near one.
                    if other_y == 1.2 {
                        ys.iter_mut().step_by(2).for_each(|y| *y = 1.01);
                    }
                    xs[zero_at] = zx;
                    ys[zero_at] = zy;
                    let got = vector_map::<2>(&xs, &ys);
                    for (i, g) in got.iter().enumerate() {
                        let j = i % lanes;
                        if j == zero_at {
                            assert_eq!(*g, want, "t({zx}, {zy}) in lane {j}");
                        } else {
                            let w = crate::semantics::exact::gkl(xs[j] as f64, ys[j] as f64);
                            assert!((*g as f64 / w - 1.0).abs() < 4e-6, "lane {j}: {g} vs {w}");
                        }
                    }
                }
            }
        }
    }

    /// Relative error of the t-term against the f64 definition, across ratios from e^-8 to
    /// e^8 and within 1e-4 of one, and magnitudes from 1 down to 1e-16.
    #[test]
    fn gkl_relative_error_is_below_4e_6() {
        let mut xs = vec![];
        let mut ys = vec![];
        for i in 0..6000 {
            let y = 10f32.powi(-(i % 17));
            let r = (i as f32 - 3000.0) / 3000.0;
            let ratio = if i % 3 == 0 {
                1.0 + r * 1e-4
            } else {
                (r * 8.0).exp()
            };
            xs.push(y * ratio);
            ys.push(y);
        }
        let got = vector_map::<2>(&xs, &ys);
        for (i, g) in got.iter().enumerate() {
            let (x, y) = (xs[i % xs.len()] as f64, ys[i % ys.len()] as f64);
            let want = crate::semantics::exact::gkl(x, y);
            let err = (*g as f64 - want).abs() / want.max(1e-300);
            assert!(
                err <= 4e-6 || (x == y && *g == 0.0),
                "t({x}, {y}) = {g}, want {want}: {err:e}"
            );
        }
    }
}
