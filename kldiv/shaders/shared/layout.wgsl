// Bindings and indexing shared by the kernels. Uses: WG, EPT, SEG, VEC (src/gpu/shaders.rs)
// and the loader's load_*, loadv_* (shared/load_*.wgsl).
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
// (scale_p, scale_q, pseudocount, 0); or (ma, ln sa, mb, l = ln sb − ln sa) (src/gpu/records.rs `row_data`).
@group(0) @binding(4) var<storage, read_write> row_data: array<vec4<real>>;

// Linear workgroup index from a 2-D grid (65535 workgroups per dimension).
fn group_index(wid: vec3<u32>) -> u32 {
    return wid.y * params.grid_x + wid.x;
}

fn elem(row: u32, col: u32) -> u32 {
    return params.elem_offset + row * params.row_stride + col;
}

// A workgroup's segment (rows_wg): each thread reads EPT elements of it, the k-th at column
// `seg_column(base, k, lid)`, columns rising with k. Where the rows are aligned
// (params.wide) the thread reads VEC consecutive elements per vector load and the workgroup
// a whole 4 KiB per step; else single elements, the workgroup WG consecutive ones per step.
fn seg_column(base: u32, k: u32, lid: u32) -> u32 {
    if (params.wide != 0u) {
        return base + VEC * ((k / VEC) * WG + lid) + k % VEC;
    }
    return base + k * WG + lid;
}

// The last vector a thread loaded, for `seg_pair`.
struct Loaded {
    p: array<real, VEC>,
    q: array<real, VEC>,
}

// Element (p, q) at column c = seg_column(base, k, lid) of the row, for k = 0, 1, … in
// order and c < params.cols (a vector is loaded at its first element; rows hold whole
// vectors, so its other elements are in the row too).
fn seg_pair(row: u32, c: u32, k: u32, last: ptr<function, Loaded>) -> vec2<real> {
    if (params.wide != 0u) {
        if (k % VEC == 0u) {
            let i = elem(row, c) / VEC;
            (*last).p = loadv_p(i);
            (*last).q = loadv_q(i);
        }
        return vec2<real>((*last).p[k % VEC], (*last).q[k % VEC]);
    }
    let i = elem(row, c);
    return vec2<real>(load_p(i), load_q(i));
}
