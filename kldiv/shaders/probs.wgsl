// Probability inputs: per-row (or per-segment) sums for every divergence, the twin of
// src/cpu/kernels.rs. The host turns the sums into values (src/semantics/finish.rs).
// `real` is f32, or f64 for f64 inputs where the adapter has SHADER_F64 (src/gpu/shaders.rs).
// Uses: DIV_* and TRANSFORM_* codes (src/gpu/shaders.rs), prob_ok, gkl, ln_pos, is_zero.
// `ProbRec` is mirrored by src/gpu/records.rs (layout checked by a test).
//
// Zeros are handled by bit tests and counted rather than turned into infinities; values
// outside [2^-60, 2^60] (and NaN, negatives, inf) set `bad` to 1 + their column, and the
// host recomputes that row exactly.

struct ProbRec {
    main: real,
    main2: real,
    sp: real,
    sq: real,
    diff: real,
    q_zero: u32, // q = 0 < p: KL(P‖Q) is +inf
    p_zero: u32, // p = 0 < q: KL(Q‖P) is +inf
    bad: u32,
    _pad: u32,
}

// The record the workgroup reduction (shared/reduce_*.wgsl) merges.
alias Rec = ProbRec;

@group(0) @binding(2) var<storage, read_write> out: array<ProbRec>;

// One of the DIV_* codes.
override DIV: u32 = 0u;
// TRANSFORM_NONE, or TRANSFORM_SCALE: add the pseudocount row_data.z to values ≥ 0 (others
// are still reported), then multiply by row_data.xy (1/Σp, 1/Σq).
override TRANSFORM: u32 = 0u;

fn rec_zero() -> ProbRec {
    return ProbRec(0.0, 0.0, 0.0, 0.0, 0.0, 0u, 0u, 0u, 0u);
}

// The row's values as the kernel reads them: with TRANSFORM_SCALE the pseudocount d.z is
// added to values ≥ 0 and the sums' reciprocals d.xy applied (d = the row's row_data).
fn transformed(v: vec2<real>, d: vec4<real>) -> vec2<real> {
    if (TRANSFORM == TRANSFORM_SCALE) {
        return (v + select(vec2<real>(0.0), vec2<real>(d.z), v >= vec2<real>(0.0))) * d.xy;
    }
    return v;
}

// The row's row_data where the transform needs it.
fn row_scale(row: u32) -> vec4<real> {
    if (TRANSFORM == TRANSFORM_SCALE) {
        return row_data[params.row0 + row];
    }
    return vec4<real>(0.0);
}

// t(x, m) for m = (x+y)/2 with t(0, m) = m, given d = x − m. The caller passes ±(x − y)/2,
// exact where x ≈ y: x − m would carry m's rounding, which t(x, m) + t(y, m) keeps at
// second order (~2^−48·m a column, all of a JS of 1e-12).
fn js_half(x: real, m: real, d: real) -> real {
    if (is_zero(x)) {
        return m;
    }
    return gkl_d(x, m, d);
}

fn step(acc: ptr<function, ProbRec>, x: real, y: real, col: u32) {
    if (!prob_ok(x) || !prob_ok(y)) {
        if ((*acc).bad == 0u) {
            (*acc).bad = col + 1u;
        }
        return;
    }
    let xz = is_zero(x);
    let yz = is_zero(y);
    (*acc).sp += x;
    (*acc).sq += y;
    (*acc).diff += x - y;
    if (DIV == DIV_KL || DIV == DIV_SYMMETRIC) {
        if (xz) {
            (*acc).main += y;
        } else if (yz) {
            (*acc).q_zero += 1u;
        } else {
            (*acc).main += gkl(x, y);
        }
    }
    if (DIV == DIV_REVERSE || DIV == DIV_SYMMETRIC) {
        var t: real = 0.0;
        if (yz) {
            t = x;
        } else if (xz) {
            (*acc).p_zero += 1u;
        } else {
            t = gkl(y, x);
        }
        if (DIV == DIV_REVERSE) {
            (*acc).main += t;
        } else {
            (*acc).main2 += t;
        }
    }
    if (DIV == DIV_JS && !(xz && yz)) {
        let m = 0.5 * (x + y);
        let h = 0.5 * (x - y);
        (*acc).main += js_half(x, m, h) + js_half(y, m, -h);
    }
    if (DIV == DIV_CROSS && !xz) {
        if (yz) {
            (*acc).q_zero += 1u;
        } else {
            (*acc).main += x * ln_pos(y);
        }
    }
    if (DIV == DIV_ENTROPY && !xz) {
        (*acc).main += x * ln_pos(x);
    }
}

fn merge(a: ProbRec, b: ProbRec) -> ProbRec {
    var bad = a.bad;
    if (bad == 0u || (b.bad != 0u && b.bad < bad)) {
        bad = b.bad;
    }
    return ProbRec(a.main + b.main, a.main2 + b.main2, a.sp + b.sp, a.sq + b.sq,
                   a.diff + b.diff, a.q_zero + b.q_zero, a.p_zero + b.p_zero, bad, 0u);
}

// Short rows (W2: 16 columns): a workgroup stages a tile of rows (shared/tile.wgsl), then a
// thread per row.
@compute @workgroup_size(WG)
fn rows_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = staged_row(wid, lid);
    if (row == NO_ROW) {
        return;
    }
    let d = row_scale(row);
    var acc = rec_zero();
    for (var c = 0u; c < params.cols; c++) {
        let v = transformed(tile_pair(lid, c), d);
        step(&acc, v.x, v.y, params.col0 + c);
    }
    out[row] = acc;
}

// Medium and long rows: one workgroup per 4096-element segment, coalesced loads (16-byte vectors
// where the rows are aligned), a workgroup reduction (through subgroups where the adapter has them,
// else a tree in workgroup memory: shared/reduce_*.wgsl). The host adds the segments of a
// row in f64.
@compute @workgroup_size(WG)
fn rows_wg(ids: WgIds) {
    let g = group_index(ids.wid);
    let row = g / params.segs;
    let seg = g % params.segs;
    if (row >= params.rows) {
        return;
    }
    let d = row_scale(row);
    var acc = rec_zero();
    let base = seg * SEG;
    var last: Loaded;
    for (var k = 0u; k < EPT; k++) {
        let c = seg_column(base, k, ids.lid);
        if (c < params.cols) {
            let v = transformed(seg_pair(row, c, k, &last), d);
            step(&acc, v.x, v.y, params.col0 + c);
        }
    }
    let total = reduce_wg(acc, ids);
    if (is_first(ids)) {
        out[g] = total;
    }
}
