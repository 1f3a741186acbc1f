// Element loads for bf16 inputs, read as packed pairs and widened by a shift.
@group(0) @binding(0) var<storage, read> p_in: array<u32>;
@group(0) @binding(1) var<storage, read> q_in: array<u32>;

fn bf16_of(word: u32, i: u32) -> f32 {
    let bits = select(word << 16u, word & 0xffff0000u, (i & 1u) == 1u);
    return bitcast<f32>(bits);
}

fn load_p(i: u32) -> f32 {
    return bf16_of(p_in[i >> 1u], i);
}

fn load_q(i: u32) -> f32 {
    return bf16_of(q_in[i >> 1u], i);
}
