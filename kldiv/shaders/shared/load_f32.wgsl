// Element loads for f32 inputs. The inputs are bound as quads (16-byte vectors) so that
// aligned rows load four elements at once (`load4_*`); `load_*` reads one element of a quad.
// The host binds whole quads (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<f32>>;

fn load_p(i: u32) -> f32 {
    return p_in[i >> 2u][i & 3u];
}

fn load_q(i: u32) -> f32 {
    return q_in[i >> 2u][i & 3u];
}

// Elements 4v … 4v + 3.
fn load4_p(v: u32) -> vec4<f32> {
    return p_in[v];
}

fn load4_q(v: u32) -> vec4<f32> {
    return q_in[v];
}
