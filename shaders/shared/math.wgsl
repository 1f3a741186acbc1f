// Numerics shared by every kernel: the same polynomials as the CPU engine (src/cpu/simd_math.rs)
// so GPU and CPU agree to a few ulp, and no reliance on the driver's log/exp accuracy
// (lavapipe's `log` is off by ~1e-7 absolute near 1) or on IEEE inf/NaN behaviour:
// special values are recognised by their bits.

const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.12194440e-4;
// Non-zero magnitudes the kernels handle: within [2^-60, 2^60]. Anything else is flagged
// and the host recomputes that row exactly.
const TINY_BITS: u32 = 0x21800000u;
const HUGE_BITS: u32 = 0x5d800000u;
const NEG_INF_BITS: u32 = 0xff800000u;
// Logits beyond ±1e30 are flagged like the CPU's fast path does.
const BIG_LOGIT_BITS: u32 = 0x7149f2cau;

// 0, or a positive value in [TINY, HUGE]. False for NaN, ±inf, negatives (and −0).
fn prob_ok(v: f32) -> bool {
    let b = bitcast<u32>(v);
    return b == 0u || (b >= TINY_BITS && b <= HUGE_BITS);
}

fn is_neg_inf(v: f32) -> bool {
    return bitcast<u32>(v) == NEG_INF_BITS;
}

// A finite logit with |v| ≤ 1e30.
fn logit_ok(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) <= BIG_LOGIT_BITS;
}

// ln x for positive normal x.
fn ln_pos(x: f32) -> f32 {
    let ix = bitcast<u32>(x) + (0x3f800000u - 0x3f3504f3u);
    let k = f32(i32(ix >> 23u) - 127);
    let f = bitcast<f32>((ix & 0x007fffffu) + 0x3f3504f3u) - 1.0;
    var p = 0.066753455;
    p = fma(p, f, -0.11646575);
    p = fma(p, f, 0.119047575);
    p = fma(p, f, -0.12411251);
    p = fma(p, f, 0.14217883);
    p = fma(p, f, -0.16667645);
    p = fma(p, f, 0.20002204);
    p = fma(p, f, -0.25000015);
    p = fma(p, f, 0.3333331);
    let f2 = f * f;
    let y = f2 * f * p;
    let lo = fma(f2, -0.5, fma(k, LN2_LO, y));
    return fma(k, LN2_HI, f + lo);
}

// e^x for x ≤ ~0; below e^-87 (and for −inf) gives 0.
fn exp_nonpos(x: f32) -> f32 {
    if (x < -87.0) {
        return 0.0;
    }
    let n = round(x * 1.4426950408889634);
    let r = fma(n, -LN2_LO, fma(n, -LN2_HI, x));
    var q = 0.00019826503;
    q = fma(q, r, 0.0013946025);
    q = fma(q, r, 0.00833343);
    q = fma(q, r, 0.04166627);
    q = fma(q, r, 0.16666666);
    q = fma(q, r, 0.5);
    let e = fma(r * r, q, r) + 1.0;
    return e * bitcast<f32>(u32(i32(n) + 127) << 23u);
}

// t(x, y) = x·ln(x/y) − x + y ≥ 0 for x, y in [TINY, HUGE]. Near x = y it is
// (x−y)·u·P(u), u = (x−y)/(x+y): no log, no cancellation (see src/cpu/simd_math.rs).
fn gkl(x: f32, y: f32) -> f32 {
    let d = x - y;
    let u = d / (x + y);
    if (abs(u) <= 0.15) {
        var p = 1.0 / 9.0;
        p = fma(p, u, 1.0 / 9.0);
        p = fma(p, u, 1.0 / 7.0);
        p = fma(p, u, 1.0 / 7.0);
        p = fma(p, u, 1.0 / 5.0);
        p = fma(p, u, 1.0 / 5.0);
        p = fma(p, u, 1.0 / 3.0);
        p = fma(p, u, 1.0 / 3.0);
        p = fma(p, u, 1.0);
        return d * u * p;
    }
    return fma(x, ln_pos(x / y), -d);
}

// w·ψ(x), ψ(x) = e^−x − 1 + x, where w·e^−x = w_shift is known without overflow.
fn weighted_psi(w: f32, w_shift: f32, x: f32) -> f32 {
    if (abs(x) <= 0.5) {
        var p = -1.0 / 362880.0;
        p = fma(p, x, 1.0 / 40320.0);
        p = fma(p, x, -1.0 / 5040.0);
        p = fma(p, x, 1.0 / 720.0);
        p = fma(p, x, -1.0 / 120.0);
        p = fma(p, x, 1.0 / 24.0);
        p = fma(p, x, -1.0 / 6.0);
        p = fma(p, x, 0.5);
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
