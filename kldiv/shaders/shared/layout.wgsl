// Bindings and indexing shared by the kernels. Uses: WG, EPT, SEG (src/gpu/shaders.rs).
// `Params` is mirrored by src/gpu/records.rs (layout checked by a test).

struct Params {
    // Rows in this dispatch, columns per row in this dispatch, distance between rows.
    rows: u32,
    cols: u32,
    row_stride: u32,
    // Element index of (row 0, column 0) of this dispatch in the bound buffers.
    elem_offset: u32,
    // Workgroup-sized segments per row (rows_wg), and the dispatch grid's x size.
    segs: u32,
    grid_x: u32,
    // Global index of this dispatch's first row (for per-row data) and first column.
    row0: u32,
    col0: u32,
    // 1 where every row of this dispatch starts on a 16-byte vector of VEC elements and holds
    // whole vectors (src/gpu/dispatch.rs `wide`): the kernels then load a vector at once.
    wide: u32,
    // Rows per workgroup for the short-row kernels (shared/tile.wgsl).
    tile_rows: u32,
    // 1 where the logits short-row kernel takes each row's shift itself (else row_data).
    own_shift: u32,
    _pad1: u32,
}

@group(0) @binding(3) var<uniform> params: Params;
// Per row of the chunk (from params.row0): the logits shift (c_hi, c_lo, 0, 0); or
// (scale_p, scale_q, pseudocount, 0); or (ma, ln sa, mb, ln sb) (src/gpu/records.rs `row_data`).
@group(0) @binding(4) var<storage, read_write> row_data: array<vec4<real>>;

// Linear workgroup index from a 2-D grid (65535 workgroups per dimension).
fn group_index(wid: vec3<u32>) -> u32 {
    return wid.y * params.grid_x + wid.x;
}

fn elem(row: u32, col: u32) -> u32 {
    return params.elem_offset + row * params.row_stride + col;
}
