// Element loads for bf16 inputs: bound as quads of elements (two u32 words, 8 bytes) and
// widened by a shift; `load4_*` reads a quad at once, `load_*` one element of it. The host
// binds whole quads (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec2<u32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec2<u32>>;

fn bf16_lo(word: u32) -> f32 {
    return bitcast<f32>(word << 16u);
}

fn bf16_hi(word: u32) -> f32 {
    return bitcast<f32>(word & 0xffff0000u);
}

fn bf16_of(word: u32, i: u32) -> f32 {
    return select(bf16_lo(word), bf16_hi(word), (i & 1u) == 1u);
}

fn bf16_quad(w: vec2<u32>) -> vec4<f32> {
    return vec4<f32>(bf16_lo(w.x), bf16_hi(w.x), bf16_lo(w.y), bf16_hi(w.y));
}

fn load_p(i: u32) -> f32 {
    return bf16_of(p_in[i >> 2u][(i >> 1u) & 1u], i);
}

fn load_q(i: u32) -> f32 {
    return bf16_of(q_in[i >> 2u][(i >> 1u) & 1u], i);
}

// Elements 4v … 4v + 3.
fn load4_p(v: u32) -> vec4<f32> {
    return bf16_quad(p_in[v]);
}

fn load4_q(v: u32) -> vec4<f32> {
    return bf16_quad(q_in[v]);
}
