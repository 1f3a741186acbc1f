// Element loads for bf16 inputs, widened by a shift. The inputs are bound as 16-byte vectors
// of VEC elements (four u32 words) so that aligned rows load a vector at once (`loadv_*`);
// `load_*` reads one element of one. The host binds whole vectors (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;

fn bf16_lo(word: u32) -> f32 {
    return bitcast<f32>(word << 16u);
}

fn bf16_hi(word: u32) -> f32 {
    return bitcast<f32>(word & 0xffff0000u);
}

fn bf16_of(word: u32, i: u32) -> f32 {
    return select(bf16_lo(word), bf16_hi(word), (i & 1u) == 1u);
}

fn vec_of(w: vec4<u32>) -> array<real, VEC> {
    return array<real, VEC>(bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y),
                           bf16_lo(w.z), bf16_hi(w.z), bf16_lo(w.w), bf16_hi(w.w));
}

fn load_p(i: u32) -> f32 {
    return bf16_of(p_in[i >> 3u][(i >> 1u) & 3u], i);
}

fn load_q(i: u32) -> f32 {
    return bf16_of(q_in[i >> 3u][(i >> 1u) & 3u], i);
}

// Elements VEC·v … VEC·v + VEC − 1.
fn loadv_p(v: u32) -> array<real, VEC> {
    return vec_of(p_in[v]);
}

fn loadv_q(v: u32) -> array<real, VEC> {
    return vec_of(q_in[v]);
}
