// Bindings and indexing shared by the kernels.

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
}

@group(0) @binding(3) var<uniform> params: Params;
// Per global row: the logits reference pair and shift (ra, rb, c, 0); or a second pass's
// (scale_p, scale_q, 0, 0) or softmax (ma, ln sa, mb, ln sb).
@group(0) @binding(4) var<storage, read_write> row_data: array<vec4<f32>>;

const WG: u32 = 256u;
const EPT: u32 = 16u;
const SEG: u32 = 4096u; // WG * EPT elements per workgroup

// Linear workgroup index from a 2-D grid (65535 workgroups per dimension).
fn group_index(wid: vec3<u32>) -> u32 {
    return wid.y * params.grid_x + wid.x;
}

fn elem(row: u32, col: u32) -> u32 {
    return params.elem_offset + row * params.row_stride + col;
}
