//! Logits divided by a temperature, for the tempered blocks of `io::sides`: in f32 where
//! every quotient is exact (a power of two), else in f64; in parallel, each chunk in the
//! engine's SIMD level (a plain loop the compiler vectorises there: SSE2 alone made the
//! division cost more than the kernel that reads the quotients).

use super::{pool, CpuEngine};
use crate::element::Element;
use pulp::{Simd, WithSimd};

/// Elements one task divides.
const CHUNK: usize = 1 << 16;

/// 1/t as an f32 where t is a power of two whose inverse and itself are normal f32 values
/// (then x·(1/t) in f32 is x/t, rounded only where it leaves f32's range).
pub fn power_of_two_inverse(t: f64) -> Option<f32> {
    let inverse = (1.0 / t) as f32;
    let power_of_two = t > 0.0 && t.is_normal() && t.to_bits() & ((1 << 52) - 1) == 0;
    (power_of_two && inverse.is_normal() && (t as f32).is_normal()).then_some(inverse)
}

impl CpuEngine {
    /// `out` = each `x` times `inverse` (from [`power_of_two_inverse`]); whether every
    /// product is exactly x/t (NaN and ±inf included): a product that overflowed or lost
    /// bits as a subnormal does not give x back when multiplied by t. `out` is grown once:
    /// blocks of the same size then overwrite it (no zeroing pass).
    pub fn quotients_f32(&self, x: &[f32], inverse: f32, out: &mut Vec<f32>) -> bool {
        out.resize(x.len(), 0.0);
        let exact = pool::chunks_mut(out, CHUNK, |k, out| {
            let x = &x[k * CHUNK..][..out.len()];
            self.level.run(TimesInverse { x, inverse, out })
        });
        exact.iter().all(|&e| e)
    }

    /// `out` = each `x` divided by `t` in f64 (the division's, correctly rounded), grown
    /// once like [`CpuEngine::quotients_f32`]'s.
    pub fn quotients_f64<T: Element>(&self, x: &[T], t: f64, out: &mut Vec<f64>) {
        out.resize(x.len(), 0.0);
        pool::chunks_mut(out, CHUNK, |k, out| {
            let x = &x[k * CHUNK..][..out.len()];
            self.level.run(DividedF64 { x, t, out })
        });
    }
}

struct TimesInverse<'a> {
    x: &'a [f32],
    inverse: f32,
    out: &'a mut [f32],
}

impl WithSimd for TimesInverse<'_> {
    type Output = bool;
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> bool {
        let t = 1.0 / self.inverse;
        let mut inexact = 0u32;
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            let r = x * self.inverse;
            *o = r;
            inexact |= u32::from(!(r * t == x || x.is_nan()));
        }
        inexact == 0
    }
}

struct DividedF64<'a, T> {
    x: &'a [T],
    t: f64,
    out: &'a mut [f64],
}

impl<T: Element> WithSimd for DividedF64<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (o, x) in self.out.iter_mut().zip(self.x) {
            *o = x.to_f64() / self.t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::SimdLevel;

    /// The engines of every SIMD level this machine has.
    fn engines() -> Vec<CpuEngine> {
        [
            SimdLevel::Scalar,
            SimdLevel::Avx2,
            SimdLevel::Avx512,
            SimdLevel::Auto,
        ]
        .into_iter()
        .filter_map(|l| CpuEngine::with_level(l).ok())
        .collect()
    }

    fn quotients(x: &[f32], t: f64) -> Option<Vec<f32>> {
        let inverse = power_of_two_inverse(t)?;
        let mut first: Option<Option<Vec<f32>>> = None;
        for e in engines() {
            let mut out = vec![7.0; 3];
            let got = e.quotients_f32(x, inverse, &mut out).then_some(out);
            match &first {
                None => first = Some(got),
                Some(f) => assert!(
                    f.as_ref()
                        .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
                        == got
                            .as_ref()
                            .map(|v| v.iter().map(|x| x.to_bits()).collect()),
                    "{} differs",
                    e.simd_name()
                ),
            }
        }
        first.flatten()
    }

    /// f64 quotients are the f64 division's on every level (NaN, ±inf, subnormal
    /// quotients, f16 and f32 sources), over chunks of every size.
    #[test]
    fn f64_quotients_are_the_division() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut x: Vec<f32> = (0..CHUNK * 2 + 17)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                f32::from_bits(rng as u32)
            })
            .collect();
        x[..6].copy_from_slice(&[0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-45, 3e38]);
        let halves: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
        for t in [1.3, 0.7, 1e-300, 1e300, 3.0] {
            for e in engines() {
                let mut out = vec![];
                e.quotients_f64(&x, t, &mut out);
                assert_eq!(out.len(), x.len());
                for (o, &v) in out.iter().zip(&x) {
                    let want = v as f64 / t;
                    assert!(o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()));
                }
                e.quotients_f64(&halves, t, &mut out);
                assert_eq!(out.len(), halves.len(), "shrinks to the next block's size");
                for (o, &v) in out.iter().zip(&halves) {
                    let want = v.to_f64() / t;
                    assert!(o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()));
                }
            }
        }
    }

    /// Quotients by a power of two stay f32 except where they leave its range (overflow,
    /// or subnormals that lose bits); any other temperature leaves f64 values. Each
    /// accepted quotient is the f64 division's, over chunks of every size.
    #[test]
    fn only_exact_quotients_narrow_to_f32() {
        let x: [f32; 7] = [
            1.5,
            -3.25,
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            1e-30,
            f32::MIN_POSITIVE,
        ];
        assert_eq!(
            quotients(&x, 2.0).as_deref(),
            Some(
                &[
                    0.75,
                    -1.625,
                    0.0,
                    -0.0,
                    f32::NEG_INFINITY,
                    5e-31,
                    f32::MIN_POSITIVE / 2.0
                ][..]
            ),
            "2^-127 is a subnormal, and exact"
        );
        for t in [
            0.7,
            3.0,
            1.0 + f64::EPSILON,
            0.0,
            -2.0,
            f64::INFINITY,
            f64::NAN,
            2f64.powi(-130),
        ] {
            assert!(power_of_two_inverse(t).is_none(), "{t}");
        }
        assert!(quotients(&[1.0, 3e38], 0.5).is_none(), "overflows f32");
        assert!(
            quotients(&[f32::from_bits(3)], 2.0).is_none(),
            "a subnormal's last bit"
        );
        let above_min = f32::from_bits(f32::MIN_POSITIVE.to_bits() + 1);
        assert!(
            quotients(&[above_min], 4.0).is_none(),
            "the bits a subnormal loses"
        );
        assert!(quotients(&[f64::NAN as f32], 0.25).is_some_and(|v| v[0].is_nan()));
        let mut rng = 0x2545f4914f6cdd1du64;
        let long: Vec<f32> = (0..200_001)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                f32::from_bits((rng as u32) & 0xff7f_ffff) // finite, either sign
            })
            .filter(|x| x.abs() > 1e-30 && x.abs() < 1e30)
            .collect();
        for t in [0.125, 2.0, 1024.0] {
            let got = quotients(&long, t).expect("in range");
            assert!(got
                .iter()
                .zip(&long)
                .all(|(&g, &x)| g as f64 == x as f64 / t));
        }
        let mut edge = long.clone();
        let at = edge.len() - 1; // in the last chunk only
        edge[at] = above_min;
        assert!(quotients(&edge, 2.0).is_none());
    }
}
