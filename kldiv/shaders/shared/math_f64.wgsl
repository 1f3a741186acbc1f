// Numerics for f64 inputs on adapters with SHADER_F64: the f64 twins of math.wgsl, accurate
// to a few f64 ulp (the exact path, their reference, uses the standard library). WGSL has no
// f64 log or exp and naga no f64 bitcast, so ln reduces by the exponent of the nearest f32
// (every argument here lies inside f32's normal range) and exp by ldexp; the series are
// generated from src/consts.rs (`poly_*`, written in front of this file). Values come from
// load_f64.wgsl, which never lets a NaN or an infinity through, so plain comparisons
// classify them.
//
// Uses: TINY, HUGE, BIG_LOGIT, NEG_INF_STANDIN, LN2, LN2_HI, LN2_LO, LOG2_E, EXP_MIN, SQRT2,
// HALF_ULP, U_NEAR, PSI_NEAR, JS_NEAR, poly_ln, poly_exp, poly_gkl, poly_js.

// 0, or a positive value in [TINY, HUGE].
fn prob_ok(v: f64) -> bool {
    return v == 0.0 || (v >= TINY && v <= HUGE);
}

fn is_neg_inf(v: f64) -> bool {
    return v == NEG_INF_STANDIN;
}

fn neg_inf() -> f64 {
    return NEG_INF_STANDIN;
}

// A finite logit with |v| ≤ BIG_LOGIT.
fn logit_ok(v: f64) -> bool {
    return abs(v) <= BIG_LOGIT;
}

fn is_zero(v: f64) -> bool {
    return v == 0.0;
}

fn same(a: f64, b: f64) -> bool {
    return a == b;
}

// The biased exponent of the f32 nearest v: v's own exponent, or one more where rounding to
// f32 carries into it.
fn f32_exponent(v: f64) -> u32 {
    return (bitcast<u32>(f32(v)) >> 23u) & 0xffu;
}

// ln x for x > 0 inside f32's normal range: x = 2^k·m, m in [√½, √2], f = m − 1,
// ln(1+f) = f − (f²/2 − s(f²/2 + R(s²))) with s = f/(2+f) (fdlibm's form).
fn ln_pos(x: f64) -> f64 {
    var k = i32(f32_exponent(x)) - 127;
    var m = ldexp(x, -k);
    if (m > SQRT2) {
        m = m * 0.5;
        k += 1;
    }
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let hfsq = 0.5 * f * f;
    let r = z * poly_ln(z);
    let kf = f64(k);
    return fma(kf, LN2_HI, (f - (hfsq - s * (hfsq + r))) + kf * LN2_LO);
}

// e^x for x ≤ ~0; below EXP_MIN gives 0: e^x = 2^n·e^r, |r| ≤ ln2/2.
fn exp_nonpos(x: f64) -> f64 {
    if (x < EXP_MIN) {
        return 0.0;
    }
    let n = round(x * LOG2_E);
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, x));
    let e = fma(r * r, poly_exp(r), r) + 1.0;
    return ldexp(e, i32(n));
}

// t(x, y) = x·ln(x/y) − x + y ≥ 0 for x, y in [TINY, HUGE]; near x = y, (x−y)·u·P(u) with
// u = (x−y)/(x+y) (math.wgsl).
fn gkl(x: f64, y: f64) -> f64 {
    return gkl_d(x, y, x - y);
}

// gkl given d = x − y, for callers that know it better than x − y rounds it.
fn gkl_d(x: f64, y: f64, d: f64) -> f64 {
    let u = d / (x + y);
    if (abs(u) <= U_NEAR) {
        return d * u * poly_gkl(u);
    }
    return fma(x, ln_pos(x / y), -d);
}

// w·ψ(x), ψ(x) = e^−x − 1 + x = x²·Σ (−x)^j/(j+2)!, where w·e^−x = w_shift is known.
fn weighted_psi(w: f64, w_shift: f64, x: f64) -> f64 {
    if (abs(x) <= PSI_NEAR) {
        return w * (x * x * poly_exp(-x));
    }
    return fma(w, x, w_shift - w);
}

// A bound on the rounding error of r = x − y computed in f64 (math.wgsl `sub_err`): r is
// exact when its exponent is below the smaller operand's; the exponents come from f32
// (one too large at most), so the test keeps a margin of one; else half an ulp of r.
fn sub_err(x: f64, y: f64, r: f64) -> f64 {
    if (x == 0.0 || y == 0.0) {
        return 0.0;
    }
    let emin = min(f32_exponent(x), f32_exponent(y));
    if (emin > 1u && f32_exponent(r) + 1u <= emin) {
        return 0.0;
    }
    return abs(r) * HALF_ULP;
}

// F(u) = (1+τ)ln(1+τ) + (1−τ)ln(1−τ) = Σ τ^2k/(k(2k−1)), τ = tanh(u/2) = (e^u−1)/(e^u+1),
// for |u| ≤ JS_NEAR; beyond, 2(ln 2 − ln(1+e) − e|u|/(1+e)), e = e^−|u| (math.wgsl).
fn js_f(u: f64) -> f64 {
    let a = abs(u);
    if (a <= JS_NEAR) {
        let em = fma(a * a, poly_exp(a), a);
        let t = em / (em + 2.0);
        let v = t * t;
        return v * poly_js(v);
    }
    let e = exp_nonpos(-a);
    return 2.0 * (LN2 - ln_pos(1.0 + e) - e * a / (1.0 + e));
}
