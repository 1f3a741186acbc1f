// Jensen–Shannon over logits, second pass: the rows' maxima and log-sums are known
// (row_data = (ma, ln sa, mb, l = ln sb − ln sa)). Each element adds m·F(u), m = (p+q)/2 and
// u = ln p − ln q = (a − b − (ma − mb)) + l, so near-identical rows keep their
// digits (src/semantics/exact.rs `logit_js_segment`, the exact twin). u is formed in plain
// `real` (f32, or f64); its rounding is bounded from the exponents (`sub_err`) and the host
// re-reads rows whose bound is too large. Uses: LN2, js_f, exp_nonpos, sub_err, logit_ok,
// is_neg_inf. `JsRec` is mirrored by src/gpu/records.rs.

struct JsRec {
    h: real,     // Σ m·F(u)
    err: real,   // Σ m·δ·(|u| + 2δ), δ the rounding bound of u
    amu: real,   // Σ m·|u|, for the rounding of the row constants
    sp: real,
    sq: real,
    bad: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

// The record the workgroup reduction (shared/reduce_*.wgsl) merges.
alias Rec = JsRec;

@group(0) @binding(2) var<storage, read_write> out: array<JsRec>;

fn js_zero() -> JsRec {
    return JsRec(0.0, 0.0, 0.0, 0.0, 0.0, 0u, 0u, 0u, 0u);
}

fn merge(a: JsRec, b: JsRec) -> JsRec {
    var bad = a.bad;
    if (bad == 0u || (b.bad != 0u && b.bad < bad)) {
        bad = b.bad;
    }
    return JsRec(a.h + b.h, a.err + b.err, a.amu + b.amu, a.sp + b.sp, a.sq + b.sq, bad, 0u, 0u, 0u);
}

fn js_step(acc: ptr<function, JsRec>, x: real, y: real, r: vec4<real>, c: real, l: real, col: u32) {
    let okx = logit_ok(x) || is_neg_inf(x);
    let oky = logit_ok(y) || is_neg_inf(y);
    if (!okx || !oky) {
        if ((*acc).bad == 0u) {
            (*acc).bad = col + 1u;
        }
        return;
    }
    let na = is_neg_inf(x);
    let nb = is_neg_inf(y);
    var p: real = 0.0;
    var q: real = 0.0;
    if (!na) {
        p = exp_nonpos((x - r.x) - r.y);
    }
    if (!nb) {
        q = exp_nonpos((y - r.z) - (r.y + r.w));
    }
    (*acc).sp += p;
    (*acc).sq += q;
    if (na && nb) {
        return;
    }
    if (na || nb) {
        // Disjoint support: (p + q)·ln 2.
        (*acc).h += (p + q) * LN2;
        return;
    }
    let d = x - y;
    let xs = d - c;
    let u = xs + l;
    let delta = sub_err(x, y, d) + sub_err(xs, -l, u) + sub_err(d, c, xs);
    let m = 0.5 * (p + q);
    (*acc).h = fma(m, js_f(u), (*acc).h);
    (*acc).err = fma(m * delta, abs(u) + 2.0 * delta, (*acc).err);
    (*acc).amu = fma(m, abs(u), (*acc).amu);
}

// Medium and long rows: one workgroup per segment (16-byte vectors where the rows are
// aligned).
@compute @workgroup_size(WG)
fn rows_wg(ids: WgIds) {
    let g = group_index(ids.wid);
    let row = g / params.segs;
    let seg = g % params.segs;
    if (row >= params.rows) {
        return;
    }
    let r = row_data[params.row0 + row];
    // The row constants as this kernel rounds them (the host knows both roundings).
    let c = r.x - r.z;
    let l = r.w;
    var acc = js_zero();
    let base = seg * SEG;
    var last: Loaded;
    for (var k = 0u; k < EPT; k++) {
        let col = seg_column(base, k, ids.lid);
        if (col < params.cols) {
            let v = seg_pair(row, col, k, &last);
            js_step(&acc, v.x, v.y, r, c, l, params.col0 + col);
        }
    }
    let total = reduce_wg(acc, ids);
    if (is_first(ids)) {
        out[g] = total;
    }
}

// Short rows: a workgroup stages a tile of rows (shared/tile.wgsl), then a thread per row.
@compute @workgroup_size(WG)
fn rows_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = staged_row(wid, lid);
    if (row == NO_ROW) {
        return;
    }
    let r = row_data[params.row0 + row];
    let c = r.x - r.z;
    let l = r.w;
    var acc = js_zero();
    for (var col = 0u; col < params.cols; col++) {
        let v = tile_pair(lid, col);
        js_step(&acc, v.x, v.y, r, c, l, params.col0 + col);
    }
    out[row] = acc;
}
