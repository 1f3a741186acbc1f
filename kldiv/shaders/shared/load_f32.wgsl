// Element loads for f32 inputs.
@group(0) @binding(0) var<storage, read> p_in: array<f32>;
@group(0) @binding(1) var<storage, read> q_in: array<f32>;

fn load_p(i: u32) -> f32 {
    return p_in[i];
}

fn load_q(i: u32) -> f32 {
    return q_in[i];
}
