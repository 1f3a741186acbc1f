//! e^x and ln x in f64 lanes, generic over pulp's `Simd` (the f64 kernels' counterparts of
//! `simd_math`), each within 2 ulp of libm over its range (tested on every SIMD level).

use pulp::Simd;

/// Arguments below this give 0 (e^−708 is still normal).
pub const EXP_FLOOR: f64 = -708.0;

const LN2_HI: f64 = std::f64::consts::LN_2;
const LN2_LO: f64 = 2.319_046_813_846_299_6e-17;

/// 1/k! for k = 0..=15 (k! exact in f64, so each is the correctly rounded reciprocal): the
/// exponential's Taylor coefficients, and the ψ series' (`kernels::logits_f64`).
pub const INV_FACTORIAL: [f64; 16] = {
    let mut c = [1.0; 16];
    let mut k = 2;
    while k < 16 {
        let mut f = 1.0;
        let mut i = 2;
        while i <= k {
            f *= i as f64;
            i += 1;
        }
        c[k] = 1.0 / f;
        k += 1;
    }
    c
};

/// e^r for |r| ≤ ln2/2 to r^13/13!: the first term left out is below 1e-17.
const EXP_TERMS: usize = 14;

/// 1/(first + 2k) for k = 0..N: the atanh series Σ s^2k/(2k + 1) behind ln (`first` 1) and
/// its tail after the first term (`first` 3, `kernels::probs_f64`).
pub const fn odd_reciprocals<const N: usize>(first: usize) -> [f64; N] {
    let mut c = [0.0; N];
    let mut k = 0;
    while k < N {
        c[k] = 1.0 / (first + 2 * k) as f64;
        k += 1;
    }
    c
}

/// ln m = 2s·R(s²), s = (m − 1)/(m + 1), |s| ≤ 0.1716 for m in [√½, √2), R to s^20/21:
/// the first term left out is below 1e-18.
const LN_R: [f64; 11] = odd_reciprocals(1);

/// e^t for t ≤ 0 (finite), within 2 ulp; 0 below [`EXP_FLOOR`].
#[inline(always)]
pub fn exp_nonpos<S: Simd>(s: S, t: S::f64s) -> S::f64s {
    // 1.5·2^52 + 1023: adding it rounds t·log2(e) to an integer n, leaving n + 1023 in the
    // low bits; times 2^52 (wrapping) those bits are 2^n's.
    const SHIFTER: f64 = 6_755_399_441_056_767.0;
    let k = s.mul_add_f64s(
        t,
        s.splat_f64s(std::f64::consts::LOG2_E),
        s.splat_f64s(SHIFTER),
    );
    let n = s.sub_f64s(k, s.splat_f64s(SHIFTER));
    let r = s.mul_add_f64s(n, s.splat_f64s(-LN2_HI), t);
    let r = s.mul_add_f64s(n, s.splat_f64s(-LN2_LO), r);
    let e = horner(s, r, &INV_FACTORIAL[..EXP_TERMS]);
    let scale = s.mul_u64s(s.transmute_u64s_f64s(k), s.splat_u64s(1 << 52));
    let v = s.mul_f64s(e, s.transmute_f64s_u64s(scale));
    s.select_f64s(
        s.greater_than_or_equal_f64s(t, s.splat_f64s(EXP_FLOOR)),
        v,
        s.splat_f64s(0.0),
    )
}

/// ln y for normal, finite y > 0, within 2 ulp (other lanes: unspecified; callers patch
/// them). Levels whose u32 lanes do not tile the f64 lanes (one-lane scalar) take libm.
#[inline(always)]
pub fn ln<S: Simd>(s: S, y: S::f64s) -> S::f64s {
    // y = 2^k·m with m in [√½, √2): offset the bits so the exponent field rounds at √2.
    const SQRT_HALF_BITS: u64 = 0x3fe6_a09e_667f_3bcd;
    let ix = s.add_u64s(
        s.transmute_u64s_f64s(y),
        s.splat_u64s(0x3ff0_0000_0000_0000 - SQRT_HALF_BITS),
    );
    let m_bits = s.add_u64s(
        s.and_u64s(ix, s.splat_u64s(0x000f_ffff_ffff_ffff)),
        s.splat_u64s(SQRT_HALF_BITS),
    );
    let Some(k) = exponent(s, ix) else {
        let mut out = y;
        let lanes: &mut [f64] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut out));
        for v in lanes {
            *v = v.ln();
        }
        return out;
    };
    let f = s.sub_f64s(s.transmute_f64s_u64s(m_bits), s.splat_f64s(1.0));
    let t = s.div_f64s(f, s.add_f64s(f, s.splat_f64s(2.0)));
    let ln_m = s.mul_f64s(s.add_f64s(t, t), horner(s, s.mul_f64s(t, t), &LN_R));
    let lo = s.mul_add_f64s(k, s.splat_f64s(LN2_LO), ln_m);
    s.mul_add_f64s(k, s.splat_f64s(LN2_HI), lo)
}

/// The unbiased exponent field (bits 52..63 of each lane of `ix`, minus 1023) as f64: the
/// u32 lanes shift it down to the high word's bottom, and 2^84's ulp (2^32) reads the high
/// word as an integer. `None` where u32 lanes do not tile the f64 lanes.
#[inline(always)]
fn exponent<S: Simd>(s: S, ix: S::u64s) -> Option<S::f64s> {
    let words: S::u32s = bytemuck::try_cast(ix).ok()?;
    let shifted = s.wrapping_dyn_shr_u32s(words, s.splat_u32s(20));
    let high: S::u64s = bytemuck::try_cast(shifted).ok()?;
    const TWO_84: u64 = 0x4530_0000_0000_0000;
    let v = s.or_u64s(
        s.and_u64s(high, s.splat_u64s(0xffff_ffff_0000_0000)),
        s.splat_u64s(TWO_84),
    );
    // (2^84 + e·2^64 − 2^84)·2^−64 = e, then e − 1023.
    let e = s.mul_f64s(
        s.sub_f64s(
            s.transmute_f64s_u64s(v),
            s.splat_f64s(f64::from_bits(TWO_84)),
        ),
        s.splat_f64s(1.0 / 18_446_744_073_709_551_616.0),
    );
    Some(s.sub_f64s(e, s.splat_f64s(1023.0)))
}

/// x − y as an exact pair (hi, lo), lane by lane (Knuth's TwoSum): logits far apart in
/// magnitude lose nothing.
#[inline(always)]
pub fn two_diff<S: Simd>(s: S, x: S::f64s, y: S::f64s) -> (S::f64s, S::f64s) {
    let hi = s.sub_f64s(x, y);
    let xv = s.add_f64s(hi, y);
    let yv = s.sub_f64s(xv, hi);
    (hi, s.add_f64s(s.sub_f64s(x, xv), s.sub_f64s(yv, y)))
}

/// Whether every value of `a` and `b` is finite with |v| ≤ `big` (false for NaN): the
/// blocks the f64 kernels take in lanes, the others going through the exact path's loop.
#[inline(always)]
pub fn all_within<S: Simd>(s: S, a: &[f64], b: &[f64], big: f64) -> bool {
    // (A loop, not iterator closures: closures holding SIMD code are not compiled with
    // the kernel's target features.)
    let (av, at) = S::as_simd_f64s(a);
    let (bv, bt) = S::as_simd_f64s(b);
    let vbig = s.splat_f64s(big);
    for (&x, &y) in av.iter().zip(bv) {
        if !pair_within(s, x, y, vbig) {
            return false;
        }
    }
    at.iter().chain(bt).all(|v| v.abs() <= big)
}

/// Whether every lane of `x` and `y` is finite with |v| ≤ `big` (false for NaN).
#[inline(always)]
pub fn pair_within<S: Simd>(s: S, x: S::f64s, y: S::f64s, big: S::f64s) -> bool {
    all(
        s,
        s.and_m64s(
            s.less_than_or_equal_f64s(s.abs_f64s(x), big),
            s.less_than_or_equal_f64s(s.abs_f64s(y), big),
        ),
    )
}

/// Whether every lane of `m` is set.
#[inline(always)]
pub fn all<S: Simd>(s: S, m: S::m64s) -> bool {
    s.first_true_m64s(s.not_m64s(m)) >= S::F64_LANES
}

/// c[0] + c[1]·x + … by Horner's scheme.
#[inline(always)]
pub fn horner<S: Simd>(s: S, x: S::f64s, c: &[f64]) -> S::f64s {
    let mut acc = s.splat_f64s(c[c.len() - 1]);
    for &ci in c[..c.len() - 1].iter().rev() {
        acc = s.mul_add_f64s(acc, x, s.splat_f64s(ci));
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulp::WithSimd;

    struct Map<'a>(&'a [f64], &'a mut [f64], bool);
    impl WithSimd for Map<'_> {
        type Output = ();
        fn with_simd<S: Simd>(self, s: S) {
            let (xs, _) = S::as_simd_f64s(self.0);
            let (ys, _) = S::as_mut_simd_f64s(self.1);
            for (x, y) in xs.iter().zip(ys) {
                *y = if self.2 { ln(s, *x) } else { exp_nonpos(s, *x) };
            }
        }
    }

    /// `f` on every SIMD level this machine has (x padded to whole vectors of 8).
    fn every_level(xs: &mut Vec<f64>, pad: f64, is_ln: bool) -> Vec<Vec<f64>> {
        while !xs.len().is_multiple_of(8) {
            xs.push(pad);
        }
        let mut ys = vec![0.0; xs.len()];
        Simd::vectorize(pulp::Scalar::new(), Map(xs, &mut ys, is_ln));
        let mut out = vec![ys.clone()];
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v) = pulp::x86::V3::try_new() {
                Simd::vectorize(v, Map(xs, &mut ys, is_ln));
                out.push(ys.clone());
            }
            if let Some(v) = pulp::x86::V4::try_new() {
                Simd::vectorize(v, Map(xs, &mut ys, is_ln));
                out.push(ys.clone());
            }
        }
        out
    }

    fn unit(state: &mut u64) -> f64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*state >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn exponential_within_two_ulp() {
        let mut rng = 3u64;
        let mut xs: Vec<f64> = (0..40_000).map(|k| -(k as f64) * 0.0177).collect();
        xs.extend((0..8000).map(|_| -unit(&mut rng) * 1e-3));
        xs.extend([0.0, -0.0, -1e-300, -707.9, -708.0, -708.1, -745.2, -1e6]);
        for ys in every_level(&mut xs, -1.0, false) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = if x < EXP_FLOOR { 0.0 } else { x.exp() };
                let ulp = f64::EPSILON * want;
                assert!(
                    (y - want).abs() <= 2.0 * ulp,
                    "e^{x}: {y:e} against {want:e}"
                );
            }
        }
    }

    /// Over every binade of the normal range, near 1 from both sides, at √½ and √2 (where
    /// the exponent rounds) and at the range's ends: within 2 ulp of the result everywhere,
    /// near 1 (where the result is small) included.
    #[test]
    fn logarithm_within_two_ulp() {
        let mut rng = 5u64;
        let mut xs = vec![
            1.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            std::f64::consts::FRAC_1_SQRT_2,
            std::f64::consts::SQRT_2,
            1.0 + f64::EPSILON,
            1.0 - f64::EPSILON / 2.0,
        ];
        for e in -1022..1024 {
            let base = 2f64.powi(e);
            for _ in 0..8 {
                xs.push(base * (1.0 + unit(&mut rng)));
            }
        }
        xs.extend((0..4000).map(|_| 1.0 + (unit(&mut rng) - 0.5) * 1e-6));
        xs.extend((0..4000).map(|_| 0.5 + unit(&mut rng)));
        for ys in every_level(&mut xs, 1.0, true) {
            for (&x, &y) in xs.iter().zip(&ys) {
                let want = x.ln();
                let ulp = f64::EPSILON * want.abs();
                assert!(
                    (y - want).abs() <= 2.0 * ulp,
                    "ln {x:e}: {y:e} against {want:e}"
                );
            }
        }
    }
}
