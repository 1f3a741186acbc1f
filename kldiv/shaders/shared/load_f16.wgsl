// Element loads for f16 inputs, widened with bit operations: no SHADER_F16 or f16 capability
// needed, subnormals, inf and NaN kept exact. The inputs are bound as 16-byte vectors of VEC
// elements (four u32 words) so that aligned rows load a vector at once (`loadv_*`); `load_*`
// reads one element of one. The host binds whole vectors (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;

fn f16_bits_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Zero or subnormal: m · 2^-24, exact in f32.
        let mag = f32(m) * 5.9604644775390625e-8;
        return bitcast<f32>(sign | bitcast<u32>(mag));
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

fn half_of(word: u32, i: u32) -> f32 {
    return f16_bits_to_f32(select(word & 0xffffu, word >> 16u, (i & 1u) == 1u));
}

fn vec_of(w: vec4<u32>) -> array<real, VEC> {
    return array<real, VEC>(
        f16_bits_to_f32(w.x & 0xffffu), f16_bits_to_f32(w.x >> 16u),
        f16_bits_to_f32(w.y & 0xffffu), f16_bits_to_f32(w.y >> 16u),
        f16_bits_to_f32(w.z & 0xffffu), f16_bits_to_f32(w.z >> 16u),
        f16_bits_to_f32(w.w & 0xffffu), f16_bits_to_f32(w.w >> 16u));
}

fn load_p(i: u32) -> f32 {
    return half_of(p_in[i >> 3u][(i >> 1u) & 3u], i);
}

fn load_q(i: u32) -> f32 {
    return half_of(q_in[i >> 3u][(i >> 1u) & 3u], i);
}

// Elements VEC·v … VEC·v + VEC − 1.
fn loadv_p(v: u32) -> array<real, VEC> {
    return vec_of(p_in[v]);
}

fn loadv_q(v: u32) -> array<real, VEC> {
    return vec_of(q_in[v]);
}
