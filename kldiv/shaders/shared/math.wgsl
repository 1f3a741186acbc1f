// Numerics shared by every kernel: the same polynomials as the CPU engine (the constants
// come from src/consts.rs, written in front of this file by src/gpu/shaders.rs), so GPU and
// CPU agree to a few ulp; no reliance on the driver's log/exp accuracy (lavapipe's `log` is
// off by ~1e-7 absolute near 1) or on IEEE inf/NaN behaviour: special values are recognised
// by their bits.
//
// Uses: TINY_BITS, HUGE_BITS, NEG_INF_BITS, BIG_LOGIT_BITS, LN_P, LN2_HI, LN2_LO, EXP_Q,
// LOG2_E, EXP_MIN, GKL_P, U_NEAR, PSI_P, PSI_NEAR, JS_G, JS_NEAR, LN2.

// 0, or a positive value in [TINY, HUGE]. False for NaN, ±inf, negatives (and −0).
fn prob_ok(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return b == 0u || (b >= TINY_BITS && b <= HUGE_BITS);
}

fn is_neg_inf(v: f32) -> bool {
    return bitcast<u32>(v) == NEG_INF_BITS;
}

// The stand-in for −inf the kernels use (the bits of −inf).
fn neg_inf() -> f32 {
    return bitcast<f32>(NEG_INF_BITS);
}

// +0 (−0 fails `prob_ok` and is left to the exact path).
fn is_zero(v: f32) -> bool {
    return bitcast<u32>(v) == 0u;
}

// Bit-for-bit equality.
fn same(a: f32, b: f32) -> bool {
    return bitcast<u32>(a) == bitcast<u32>(b);
}

// A finite logit with |v| ≤ BIG_LOGIT.
fn logit_ok(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) <= BIG_LOGIT_BITS;
}

// ln x for positive normal x.
fn ln_pos(x: f32) -> f32 {
    let ix = bitcast<u32>(x) + (0x3f800000u - 0x3f3504f3u);
    let k = f32(i32(ix >> 23u) - 127);
    let f = bitcast<f32>((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0;
    var p = LN_P[8];
    p = fma(p, f, LN_P[7]);
    p = fma(p, f, LN_P[6]);
    p = fma(p, f, LN_P[5]);
    p = fma(p, f, LN_P[4]);
    p = fma(p, f, LN_P[3]);
    p = fma(p, f, LN_P[2]);
    p = fma(p, f, LN_P[1]);
    p = fma(p, f, LN_P[0]);
    let f2 = f * f;
    let y = f2 * f * p;
    let lo = fma(f2, -0.5, fma(k, LN2_LO, y));
    return fma(k, LN2_HI, f + lo);
}

// e^x for x ≤ ~0; below e^EXP_MIN (and for −inf) gives 0.
fn exp_nonpos(x: f32) -> f32 {
    if (x < EXP_MIN) {
        return 0.0;
    }
    let n = round(x * LOG2_E);
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, x));
    var q = EXP_Q[5];
    q = fma(q, r, EXP_Q[4]);
    q = fma(q, r, EXP_Q[3]);
    q = fma(q, r, EXP_Q[2]);
    q = fma(q, r, EXP_Q[1]);
    q = fma(q, r, EXP_Q[0]);
    let e = fma(r * r, q, r) + 1.0;
    return e * bitcast<f32>(u32(i32(n) + 127) << 23u);
}

// t(x, y) = x·ln(x/y) − x + y ≥ 0 for x, y in [TINY, HUGE]. Near x = y it is
// (x−y)·u·P(u), u = (x−y)/(x+y): no log, no cancellation (see src/cpu/simd_math.rs).
fn gkl(x: f32, y: f32) -> f32 {
    return gkl_d(x, y, x - y);
}

// gkl given d = x − y, for callers that know it better than x − y rounds it.
fn gkl_d(x: f32, y: f32, d: f32) -> f32 {
    let u = d / (x + y);
    if (abs(u) <= U_NEAR) {
        var p = GKL_P[8];
        p = fma(p, u, GKL_P[7]);
        p = fma(p, u, GKL_P[6]);
        p = fma(p, u, GKL_P[5]);
        p = fma(p, u, GKL_P[4]);
        p = fma(p, u, GKL_P[3]);
        p = fma(p, u, GKL_P[2]);
        p = fma(p, u, GKL_P[1]);
        p = fma(p, u, GKL_P[0]);
        return d * u * p;
    }
    return fma(x, ln_pos(x / y), -d);
}

// w·ψ(x), ψ(x) = e^−x − 1 + x, where w·e^−x = w_shift is known without overflow.
fn weighted_psi(w: f32, w_shift: f32, x: f32) -> f32 {
    if (abs(x) <= PSI_NEAR) {
        var p = PSI_P[7];
        p = fma(p, x, PSI_P[6]);
        p = fma(p, x, PSI_P[5]);
        p = fma(p, x, PSI_P[4]);
        p = fma(p, x, PSI_P[3]);
        p = fma(p, x, PSI_P[2]);
        p = fma(p, x, PSI_P[1]);
        p = fma(p, x, PSI_P[0]);
        return w * (x * x * p);
    }
    return fma(w, x, w_shift - w);
}

// A bound on the rounding error of r = x − y computed in f32, from the exponents alone
// (integer operations, which no fast-math can rewrite): x − y is a multiple of the smaller
// operand's ulp, so r is exact when its exponent is at most the smaller operand's;
// otherwise the error is at most half an ulp of r.
fn sub_err(x: f32, y: f32, r: f32) -> f32 {
    let bx = bitcast<u32>(x) & 0x7fffffffu;
    let by = bitcast<u32>(y) & 0x7fffffffu;
    if (bx == 0u || by == 0u) {
        return 0.0;
    }
    let emin = max(min(bx >> 23u, by >> 23u), 1u);
    let er = (bitcast<u32>(r) & 0x7fffffffu) >> 23u;
    if (er <= emin) {
        return 0.0;
    }
    if (er <= 24u) {
        return 1.4e-45;
    }
    return bitcast<f32>((er - 24u) << 23u);
}

// F(u) = u²·G(u²) for |u| ≤ JS_NEAR (Taylor series of G in JS_G), else
// 2(ln 2 − ln(1+e) − e|u|/(1+e)), e = e^−|u|.
fn js_f(u: f32) -> f32 {
    let a = abs(u);
    if (a <= JS_NEAR) {
        let v = u * u;
        var g = JS_G[8];
        g = fma(g, v, JS_G[7]);
        g = fma(g, v, JS_G[6]);
        g = fma(g, v, JS_G[5]);
        g = fma(g, v, JS_G[4]);
        g = fma(g, v, JS_G[3]);
        g = fma(g, v, JS_G[2]);
        g = fma(g, v, JS_G[1]);
        g = fma(g, v, JS_G[0]);
        return v * g;
    }
    let e = exp_nonpos(-a);
    return 2.0 * (LN2 - ln_pos(1.0 + e) - e * a / (1.0 + e));
}
