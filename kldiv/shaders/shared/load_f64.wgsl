// Element loads for f64 inputs (adapters with SHADER_F64): each element as its two 32-bit
// words, decoded exactly by integer operations and ldexp (naga has no f64 bitcast), so that
// no NaN or infinity reaches the arithmetic: −inf becomes NEG_INF_STANDIN; NaN, +inf and
// magnitudes of 2^1000 or more become BAD_STANDIN, which every check refuses (the exact path
// then reports or computes the row).
// Bound as 16-byte vectors of VEC = 2 elements; `loadv_*` reads a vector, `load_*` one
// element of one. The host binds whole vectors (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;

fn decode_f64(w: vec2<u32>) -> f64 {
    let e = (w.y >> 20u) & 0x7ffu;
    let neg = (w.y & 0x80000000u) != 0u;
    if (e >= 2023u) {
        if (neg && e == 0x7ffu && (w.y & 0xfffffu) == 0u && w.x == 0u) {
            return NEG_INF_STANDIN;
        }
        return BAD_STANDIN;
    }
    var m = f64(w.y & 0xfffffu) * 4294967296.0 + f64(w.x);
    var k = -1074;
    if (e != 0u) {
        m = m + 4503599627370496.0;
        k = i32(e) - 1075;
    }
    let v = ldexp(m, k);
    return select(v, -v, neg);
}

// Element i of a buffer of pairs.
fn pair_elem(w: vec4<u32>, i: u32) -> f64 {
    return decode_f64(select(w.xy, w.zw, (i & 1u) == 1u));
}

fn load_p(i: u32) -> f64 {
    return pair_elem(p_in[i >> 1u], i);
}

fn load_q(i: u32) -> f64 {
    return pair_elem(q_in[i >> 1u], i);
}

// Elements VEC·v … VEC·v + VEC − 1.
fn loadv_p(v: u32) -> array<real, VEC> {
    let w = p_in[v];
    return array<real, VEC>(decode_f64(w.xy), decode_f64(w.zw));
}

fn loadv_q(v: u32) -> array<real, VEC> {
    let w = q_in[v];
    return array<real, VEC>(decode_f64(w.xy), decode_f64(w.zw));
}
