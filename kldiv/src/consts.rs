//! The numbers the fast kernels are built from, in one place: the SIMD kernels read them
//! here, and `gpu::shaders` writes them into every WGSL shader, so the two engines cannot
//! drift apart. Polynomials were fitted for this crate by weighted least squares on Chebyshev
//! nodes (relative error ≤ 2e-9 before f32 rounding) or are truncated Taylor series; the
//! tests of `cpu::simd_math` bound the f32 results against f64 on every SIMD level.

// Some constants are read only by the WGSL kernels: unused without the `gpu` feature.
#![cfg_attr(not(feature = "gpu"), allow(dead_code))]

/// Elements per row block: the fast kernels keep a block's sums in f32 and add blocks in
/// f64, so rounding does not grow with row length; the logits shift is taken over a row's
/// first block.
pub const BLOCK: usize = 512;

/// Rows at most this long are short: a row per SIMD lane on the CPU, a row per thread on
/// the GPU.
pub const SHORT_ROW: usize = 64;

/// ln(1+f) = f − f²/2 + f³·P(f) on f ∈ [√½−1, √2−1].
pub const LN_P: [f32; 9] = [
    0.333_333_1,
    -0.250_000_15,
    0.200_022_04,
    -0.166_676_45,
    0.142_178_83,
    -0.124_112_51,
    0.119_047_575,
    -0.116_465_75,
    0.066_753_455,
];

/// e^r = 1 + r + r²·Q(r) on r ∈ [−ln2/2, ln2/2].
pub const EXP_Q: [f32; 6] = [
    0.5,
    0.166_666_66,
    0.041_666_27,
    0.008_333_43,
    0.001_394_602_5,
    0.000_198_265_03,
];

/// ln 2 split so that k·LN2_HI is exact for |k| < 2^15.
pub const LN2_HI: f32 = 0.693_359_4;
pub const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x underflows to 0 below this (f32).
pub const EXP_MIN: f32 = -87.0;

/// Smallest and largest non-zero probabilities the fast paths accept: inside
/// [2^-60, 2^60] every ratio, product and square stays a normal f32. Anything else takes the
/// exact path.
pub const TINY: f32 = 8.673_617e-19;
pub const HUGE: f32 = 1.152_921_5e18;

/// Logits beyond ±this take the exact path (so that differences of two stay finite in f32).
pub const BIG_LOGIT: f32 = 1e30;

/// t(x, y) = x·ln(x/y) − x + y near x = y: (x−y)·u·P(u) with u = (x−y)/(x+y),
/// P(u) = 1 + u/3 + u²/3 + u³/5 + … (from ln(x/y) = 2·atanh u), truncated after u⁸/9: the
/// next term is below 4e-9 relative for |u| ≤ [`U_NEAR`]. The coefficients come in equal
/// pairs, so P(u) = 1 + (u + u²)·Q(u²) with Q = [`GKL_Q`]: the CPU evaluates that form (6
/// operations instead of 10), the shaders this one.
pub const GKL_P: [f32; 9] = [
    1.0, GKL_Q[0], GKL_Q[0], GKL_Q[1], GKL_Q[1], GKL_Q[2], GKL_Q[2], GKL_Q[3], GKL_Q[3],
];
/// Q(v) = 1/3 + v/5 + v²/7 + v³/9 (see [`GKL_P`]).
pub const GKL_Q: [f32; 4] = [1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0];
/// Near-one branch bound on |u| = |x−y|/(x+y) (ratios in [0.74, 1.35]).
pub const U_NEAR: f32 = 0.15;

/// ψ(x)/x² = 1/2 − x/6 + x²/24 − … for |x| ≤ [`PSI_NEAR`] (truncation < 2e-9 relative),
/// ψ(x) = e^−x − 1 + x.
pub const PSI_P: [f32; 8] = [
    1.0 / 2.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 120.0,
    1.0 / 720.0,
    -1.0 / 5040.0,
    1.0 / 40320.0,
    -1.0 / 362_880.0,
];
pub const PSI_NEAR: f32 = 0.5;

/// F(u) = (1+τ)ln(1+τ) + (1−τ)ln(1−τ), τ = tanh(u/2): the Jensen–Shannon term of one
/// element is m·F(u) with m = (p+q)/2 and u = ln p − ln q. Near 0, F = u²·G(u²) with these
/// Taylor coefficients of G (|u| ≤ [`JS_NEAR`]; truncation ~1e-9 relative); beyond,
/// F = 2(ln 2 − ln(1+e) − e|u|/(1+e)) with e = e^−|u|.
pub const JS_G: [f64; 9] = [
    0.25,
    -0.031_25,
    0.003_472_222_222_222_222,
    -3.689_236_111_111_111e-4,
    3.844_246_031_746_032e-5,
    -3.967_105_746_619_635e-6,
    4.071_713_211_098_131_7e-7,
    -4.165_175_591_615_678e-8,
    4.251_465_901_724_481e-9,
];
pub const JS_NEAR: f32 = 1.0;

// The f64 kernels (GPU adapters with SHADER_F64): every series is long enough that its
// truncation is below 1e-17 relative on its range, so they keep f64 accuracy; the tests
// below check each against the standard library.

/// ln 2 split as fdlibm splits it: k·LN2_HI_F64 is exact for |k| < 2^20.
pub const LN2_HI_F64: f64 = 6.931_471_803_691_238e-1;
pub const LN2_LO_F64: f64 = 1.908_214_929_270_587_7e-10;
/// e^x is taken as 0 below this (e^−708 is still a normal f64).
pub const EXP_MIN_F64: f64 = -708.0;
/// Near-one branch bounds of the f64 `gkl`, `weighted_psi` and `js_f`.
pub const U_NEAR_F64: f64 = 0.15;
pub const PSI_NEAR_F64: f64 = 0.5;
pub const JS_NEAR_F64: f64 = 1.0;
/// What the f64 loads turn −inf into, and NaN, +inf and magnitudes ≥ 2^1000 (finite, so
/// that no driver has to honour infinities; no input value decodes to either).
pub const NEG_INF_STANDIN_F64: f64 = -8.98846567431158e307; // −2^1020
pub const BAD_STANDIN_F64: f64 = 8.98846567431158e307;

/// ln(1+f) = f − (f²/2 − s(f²/2 + R)), s = f/(2+f), R = z·Σ_j 2z^j/(2j+3) with z = s²
/// (|s| ≤ 0.172: z^11 < 2e-17).
pub const LN_SERIES_F64: [f64; 11] = {
    let mut c = [0.0; 11];
    let mut j = 0;
    while j < c.len() {
        c[j] = 2.0 / (2 * j + 3) as f64;
        j += 1;
    }
    c
};

/// Σ_j r^j/(j+2)!: e^r = 1 + r + r²·Σ, and ψ(x) = x²·Σ at r = −x (|r| ≤ 1: 1/20! < 5e-19).
pub const EXP_SERIES_F64: [f64; 18] = {
    let mut c = [0.0; 18];
    let mut fact = 2.0;
    let mut j = 0;
    while j < c.len() {
        c[j] = 1.0 / fact;
        fact *= (j + 3) as f64;
        j += 1;
    }
    c
};

/// P(u) = 1 + u/3 + u²/3 + u³/5 + u⁴/5 + … of [`GKL_P`], to u²¹ (0.15²² < 1e-18).
pub const GKL_SERIES_F64: [f64; 22] = {
    let mut c = [0.0; 22];
    let mut j = 0;
    while j < c.len() {
        c[j] = 1.0 / (2 * j.div_ceil(2) + 1) as f64;
        j += 1;
    }
    c
};

/// F(u) = Σ_{k≥1} τ^2k/(k(2k−1)) = v·Σ_j v^j/((j+1)(2j+1)), v = τ² ≤ tanh²(½) < 0.214
/// (to v²¹: the next term is 0.214²¹/1035 < 1e-17 of the first). The exact path uses it
/// too ([`JS_G`] is an f32-grade series).
pub const JS_SERIES_F64: [f64; 22] = {
    let mut c = [0.0; 22];
    let mut j = 0;
    while j < c.len() {
        c[j] = 1.0 / ((j + 1) as f64 * (2 * j + 1) as f64);
        j += 1;
    }
    c
};

/// Σ c[j]·x^j by Horner.
#[inline]
pub fn horner(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |p, &k| p.mul_add(x, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(got: f64, want: f64) -> f64 {
        (got - want).abs() / (want.abs() * f64::EPSILON).max(f64::MIN_POSITIVE)
    }

    /// The f64 kernels' ln and exp (shaders/shared/math_f64.wgsl, step for step) against the
    /// standard library: the series and splits here are what the shaders get.
    #[test]
    fn f64_series_give_ln_and_exp_to_a_few_ulp() {
        let ln = |x: f64| {
            let mut k = x.log2().round() as i32;
            let mut m = x / 2f64.powi(k);
            if m > std::f64::consts::SQRT_2 {
                m *= 0.5;
                k += 1;
            }
            if m < std::f64::consts::FRAC_1_SQRT_2 {
                m *= 2.0;
                k -= 1;
            }
            let f = m - 1.0;
            let s = f / (2.0 + f);
            let z = s * s;
            let hfsq = 0.5 * f * f;
            let r = z * horner(&LN_SERIES_F64, z);
            let kf = k as f64;
            kf.mul_add(LN2_HI_F64, (f - (hfsq - s * (hfsq + r))) + kf * LN2_LO_F64)
        };
        let exp = |x: f64| {
            let n = (x * std::f64::consts::LOG2_E).round();
            let r = n.mul_add(-LN2_LO_F64, n.mul_add(-LN2_HI_F64, x));
            let e = (r * r).mul_add(horner(&EXP_SERIES_F64, r), r) + 1.0;
            e * 2f64.powi(n as i32)
        };
        let mut worst = (0.0f64, 0.0f64);
        for i in 0..20_000 {
            let t = i as f64 / 20_000.0;
            let x = 2f64.powf(-120.0 + 240.0 * t) * (1.0 + 0.37 * (i as f64 * 0.618).fract());
            worst.0 = worst.0.max(ulps(ln(x), x.ln()));
            let y = -708.0 * t;
            worst.1 = worst.1.max(ulps(exp(y), y.exp()));
        }
        for x in [1.0 + 1e-12, 1.0 - 1e-12, 0.75, 1.4, 1.0] {
            if x != 1.0 {
                worst.0 = worst.0.max(ulps(ln(x), f64::ln(x)));
            }
        }
        assert!(worst.0 <= 2.0 && worst.1 <= 2.0, "{worst:?}");
    }

    /// ψ, the near-one t-term and the Jensen–Shannon F of the f64 kernels against their
    /// definitions in long-enough exact forms.
    #[test]
    fn f64_series_give_psi_gkl_and_js_terms() {
        for i in 1..=1000 {
            let x = PSI_NEAR_F64 * (i as f64 / 1000.0) * if i % 2 == 0 { 1.0 } else { -1.0 };
            let psi = x * x * horner(&EXP_SERIES_F64, -x);
            // The reference cancels: |x|/ψ of its own rounding.
            let want = (-x).exp_m1() + x;
            assert!(
                ulps(psi, want) <= 4.0 * (x / want).abs(),
                "psi({x}): {psi} vs {want}"
            );

            let u = U_NEAR_F64 * (i as f64 / 1000.0) * if i % 2 == 0 { 1.0 } else { -1.0 };
            // x = 1+u, y = 1−u: t = (1+u)ln((1+u)/(1−u)) − 2u.
            let t = 2.0 * u * u * horner(&GKL_SERIES_F64, u);
            let want = (1.0 + u) * 2.0 * u.atanh() - 2.0 * u;
            assert!(
                ulps(t, want) <= 8.0 * (2.0 * u / want).abs().max(1.0),
                "t({u}): {t} vs {want}"
            );

            let u = JS_NEAR_F64 * i as f64 / 1000.0;
            let em = (u * u).mul_add(horner(&EXP_SERIES_F64, u), u);
            assert!(ulps(em, u.exp_m1()) <= 2.0, "expm1({u})");
            let tau = em / (em + 2.0);
            let f = tau * tau * horner(&JS_SERIES_F64, tau * tau);
            let want = (1.0 + tau) * tau.ln_1p() + (1.0 - tau) * (-tau).ln_1p();
            assert!(ulps(f, want) <= 8.0 / tau, "F({u}): {f} vs {want}");
        }
    }
}
