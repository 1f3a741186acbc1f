// Agreement over logits, a pass after the first: the rows' maxima and log-sums are known
// (row_data = (ma, ln sa, mb, l = ln sb − ln sa)). Per segment (or short row): Σ min(p, q) with
// p = e^((a − ma) − ln sa), q likewise, and each side's TOPN largest logits with their
// columns, largest first, the lower column first on ties (src/semantics/exact.rs
// `logit_agree_segment`, the exact twin; the host merges the segments' lists). −inf ranks as
// NO_MAX; values the kernel does not handle set `bad` and the host computes the row in f64.
// Uses: TOPN, NO_TOP, NO_MAX, exp_nonpos, logit_ok, is_neg_inf. `AgreeRec` is mirrored by
// src/gpu/records.rs.

struct AgreeRec {
    sum_min: real,
    va: array<real, TOPN>,
    vb: array<real, TOPN>,
    ca: array<u32, TOPN>,
    cb: array<u32, TOPN>,
    bad: u32,
    _pad: u32,
}

@group(0) @binding(2) var<storage, read_write> out: array<AgreeRec>;

// One step of the workgroup's selection: the best candidate of each side, Σ min and the
// first bad column (1 + column; 0 when none) of the threads merged.
struct Cand {
    va: real,
    vb: real,
    sm: real,
    ca: u32,
    cb: u32,
    bad: u32,
}

// The record the workgroup reduction (shared/reduce_*.wgsl) merges.
alias Rec = Cand;

// Whether (v1, c1) ranks before (v2, c2): the larger value, the lower column on a tie.
fn before(v1: real, c1: u32, v2: real, c2: u32) -> bool {
    return v1 > v2 || (v1 == v2 && c1 < c2);
}

fn no_cand() -> Cand {
    return Cand(NO_MAX, NO_MAX, 0.0, NO_TOP, NO_TOP, 0u);
}

fn merge(a: Cand, b: Cand) -> Cand {
    var r = a;
    if (before(b.va, b.ca, a.va, a.ca)) {
        r.va = b.va;
        r.ca = b.ca;
    }
    if (before(b.vb, b.cb, a.vb, a.cb)) {
        r.vb = b.vb;
        r.cb = b.cb;
    }
    r.sm = a.sm + b.sm;
    if (r.bad == 0u || (b.bad != 0u && b.bad < r.bad)) {
        r.bad = b.bad;
    }
    return r;
}

// How a value ranks: −inf (probability 0) below every logit the kernel handles.
fn rank_key(x: real) -> real {
    return select(x, NO_MAX, is_neg_inf(x));
}

// min(p, q) of one pair, and its first bad column (1 + col) or 0.
fn pair_min(v: vec2<real>, r: vec4<real>, col: u32, bad: ptr<function, u32>) -> real {
    let okx = logit_ok(v.x) || is_neg_inf(v.x);
    let oky = logit_ok(v.y) || is_neg_inf(v.y);
    if (!okx || !oky) {
        if (*bad == 0u) {
            *bad = col + 1u;
        }
        return 0.0;
    }
    var p: real = 0.0;
    var q: real = 0.0;
    if (logit_ok(v.x)) {
        p = exp_nonpos(min((v.x - r.x) - r.y, 0.0));
    }
    if (logit_ok(v.y)) {
        q = exp_nonpos(min((v.y - r.z) - (r.y + r.w), 0.0));
    }
    return min(p, q);
}

fn empty_rec() -> AgreeRec {
    var rec: AgreeRec;
    rec.sum_min = 0.0;
    for (var i = 0u; i < TOPN; i++) {
        rec.va[i] = NO_MAX;
        rec.vb[i] = NO_MAX;
        rec.ca[i] = NO_TOP;
        rec.cb[i] = NO_TOP;
    }
    rec.bad = 0u;
    rec._pad = 0u;
    return rec;
}

// The winner of a selection round, for every thread.
var<workgroup> won: Cand;

// Medium and long rows: one workgroup per segment. Each thread holds its EPT pairs; TOPN
// rounds each take the workgroup's best remaining value of each side (a reduction), and the
// thread holding it marks it taken.
@compute @workgroup_size(WG)
fn rows_wg(ids: WgIds) {
    let g = group_index(ids.wid);
    let row = g / params.segs;
    let seg = g % params.segs;
    if (row >= params.rows) {
        return;
    }
    let r = row_data[params.row0 + row];
    var ka: array<real, EPT>;
    var kb: array<real, EPT>;
    // Bit k: element k is no longer a candidate (taken, or past the row's end).
    var taken_a = 0u;
    var taken_b = 0u;
    var sm: real = 0.0;
    var bad = 0u;
    let base = seg * SEG;
    var last: Loaded;
    for (var k = 0u; k < EPT; k++) {
        let col = seg_column(base, k, ids.lid);
        ka[k] = NO_MAX;
        kb[k] = NO_MAX;
        if (col < params.cols) {
            let v = seg_pair(row, col, k, &last);
            sm += pair_min(v, r, params.col0 + col, &bad);
            ka[k] = rank_key(v.x);
            kb[k] = rank_key(v.y);
        } else {
            taken_a |= 1u << k;
            taken_b |= 1u << k;
        }
    }
    var rec = empty_rec();
    for (var i = 0u; i < TOPN; i++) {
        var c = no_cand();
        if (i == 0u) {
            c.sm = sm;
            c.bad = bad;
        }
        for (var k = 0u; k < EPT; k++) {
            let col = params.col0 + seg_column(base, k, ids.lid);
            if ((taken_a & (1u << k)) == 0u && before(ka[k], col, c.va, c.ca)) {
                c.va = ka[k];
                c.ca = col;
            }
            if ((taken_b & (1u << k)) == 0u && before(kb[k], col, c.vb, c.cb)) {
                c.vb = kb[k];
                c.cb = col;
            }
        }
        let w = reduce_wg(c, ids);
        if (is_first(ids)) {
            won = w;
        }
        workgroupBarrier();
        // Read before the next round's reduction, whose barriers precede the next write.
        let best = won;
        for (var k = 0u; k < EPT; k++) {
            let col = params.col0 + seg_column(base, k, ids.lid);
            if (col == best.ca) {
                taken_a |= 1u << k;
            }
            if (col == best.cb) {
                taken_b |= 1u << k;
            }
        }
        if (i == 0u) {
            rec.sum_min = best.sm;
            rec.bad = best.bad;
        }
        rec.va[i] = best.va;
        rec.ca[i] = best.ca;
        rec.vb[i] = best.vb;
        rec.cb[i] = best.cb;
    }
    if (is_first(ids)) {
        out[g] = rec;
    }
}

// Value v at column c into a list kept largest first (at most TOPN entries, n of them filled).
fn push(vals: ptr<function, array<real, TOPN>>, cols: ptr<function, array<u32, TOPN>>, n: u32, v: real, c: u32) {
    if (n == TOPN && !before(v, c, (*vals)[TOPN - 1u], (*cols)[TOPN - 1u])) {
        return;
    }
    var at = min(n, TOPN - 1u);
    loop {
        if (at == 0u) {
            break;
        }
        let above = at - 1u;
        if (!before(v, c, (*vals)[above], (*cols)[above])) {
            break;
        }
        (*vals)[at] = (*vals)[above];
        (*cols)[at] = (*cols)[above];
        at = above;
    }
    (*vals)[at] = v;
    (*cols)[at] = c;
}

// Short rows: a workgroup stages a tile of rows (shared/tile.wgsl), then a thread per row.
@compute @workgroup_size(WG)
fn rows_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = staged_row(wid, lid);
    if (row == NO_ROW) {
        return;
    }
    let r = row_data[params.row0 + row];
    var va: array<real, TOPN>;
    var vb: array<real, TOPN>;
    var ca: array<u32, TOPN>;
    var cb: array<u32, TOPN>;
    for (var i = 0u; i < TOPN; i++) {
        va[i] = NO_MAX;
        vb[i] = NO_MAX;
        ca[i] = NO_TOP;
        cb[i] = NO_TOP;
    }
    var sm: real = 0.0;
    var bad = 0u;
    for (var c = 0u; c < params.cols; c++) {
        let v = tile_pair(lid, c);
        let col = params.col0 + c;
        sm += pair_min(v, r, col, &bad);
        let n = min(c, TOPN);
        push(&va, &ca, n, rank_key(v.x), col);
        push(&vb, &cb, n, rank_key(v.y), col);
    }
    out[row] = AgreeRec(sm, va, vb, ca, cb, bad, 0u);
}
