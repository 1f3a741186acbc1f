// Element loads for f32 inputs. The inputs are bound as 16-byte vectors of VEC elements so
// that aligned rows load a vector at once (`loadv_*`); `load_*` reads one element of one.
// The host binds whole vectors (src/gpu/stream.rs).
@group(0) @binding(0) var<storage, read> p_in: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<f32>>;

fn load_p(i: u32) -> f32 {
    return p_in[i >> 2u][i & 3u];
}

fn load_q(i: u32) -> f32 {
    return q_in[i >> 2u][i & 3u];
}

fn vec_of(w: vec4<f32>) -> array<real, VEC> {
    return array<real, VEC>(w.x, w.y, w.z, w.w);
}

// Elements VEC·v … VEC·v + VEC − 1.
fn loadv_p(v: u32) -> array<real, VEC> {
    return vec_of(p_in[v]);
}

fn loadv_q(v: u32) -> array<real, VEC> {
    return vec_of(q_in[v]);
}
