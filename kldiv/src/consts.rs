//! The numbers the fast kernels are built from, in one place: the SIMD kernels read them
//! here, and `gpu::shaders` writes them into every WGSL shader, so the two engines cannot
//! drift apart. Polynomials were fitted for this crate by weighted least squares on Chebyshev
//! nodes (relative error ≤ 2e-9 before f32 rounding) or are truncated Taylor series; the
//! tests of `cpu::simd_math` bound the f32 results against f64 on every SIMD level.

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
/// next term is below 4e-9 relative for |u| ≤ [`U_NEAR`].
pub const GKL_P: [f32; 9] = [
    1.0,
    1.0 / 3.0,
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 9.0,
];
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
