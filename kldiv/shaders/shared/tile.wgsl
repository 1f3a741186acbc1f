// Short rows staged through workgroup memory: a workgroup takes params.tile_rows whole rows,
// loads them with coalesced reads (neighbouring threads read neighbouring elements, 16-byte
// vectors where rows are aligned), then each of the first tile_rows threads reads its own row from
// the tile. Row r of the tile starts at r·tile_stride(), an odd number of elements, so the
// threads reading column c of neighbouring rows hit different memory banks.
// Uses TILE and NO_ROW (src/gpu/shaders.rs); the host sizes tile_rows from it (src/gpu/dispatch.rs).

var<workgroup> tile_p: array<real, TILE>;
var<workgroup> tile_q: array<real, TILE>;

fn tile_stride() -> u32 {
    return params.cols | 1u;
}

// Rows [first, first + n) into the tile. Called in uniform control flow (it ends with a
// barrier).
fn load_tile(first: u32, n: u32, lid: u32) {
    let s = tile_stride();
    let total = n * params.cols;
    if (params.wide != 0u) {
        // Columns are a multiple of VEC: a vector never straddles two rows.
        for (var e = VEC * lid; e < total; e += VEC * WG) {
            let r = e / params.cols;
            let c = e % params.cols;
            let i = elem(first + r, c) / VEC;
            var p = loadv_p(i);
            var q = loadv_q(i);
            let at = r * s + c;
            for (var j = 0u; j < VEC; j++) {
                tile_p[at + j] = p[j];
                tile_q[at + j] = q[j];
            }
        }
    } else {
        for (var e = lid; e < total; e += WG) {
            let r = e / params.cols;
            let c = e % params.cols;
            let i = elem(first + r, c);
            tile_p[r * s + c] = load_p(i);
            tile_q[r * s + c] = load_q(i);
        }
    }
    workgroupBarrier();
}

// Column c of the tile's row r, as (p, q).
fn tile_pair(r: u32, c: u32) -> vec2<real> {
    let at = r * tile_stride() + c;
    return vec2<real>(tile_p[at], tile_q[at]);
}

// The row this thread computes from its workgroup's tile (rows_tile), the tile loaded; NO_ROW
// for threads without one. Called in uniform control flow. The thread's row in the tile is
// its `lid`.
fn staged_row(wid: vec3<u32>, lid: u32) -> u32 {
    let first = group_index(wid) * params.tile_rows;
    if (first >= params.rows) {
        return NO_ROW;
    }
    let n = min(params.tile_rows, params.rows - first);
    load_tile(first, n, lid);
    return select(NO_ROW, first + lid, lid < n);
}
