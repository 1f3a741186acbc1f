// Logits and log-probabilities: per-segment sums of src/sums.rs (LogitSums), the twin of
// the CPU's logit kernel. −inf means probability 0 and is handled by bit tests; NaN, +inf
// and |x| > 1e30 set `bad`.
//
// Computes in `real` (f32, or f64 for f64 inputs on adapters with SHADER_F64).
// x = a − b − c is formed in plain `real` (compensated sums are not reliable in WGSL); instead
// each element's rounding is bounded from the exponents (`sub_err`) and summed into xerr_*,
// and the host re-reads rows whose bound is too large for the accuracy target.
// Uses: SHIFT_COLS, NO_MAX (src/gpu/shaders.rs), exp_nonpos, ln_pos, sub_err,
// weighted_psi, logit_ok, is_neg_inf. `LogitRec` is mirrored by src/gpu/records.rs.

struct LogitRec {
    ma: real,
    mb: real,
    sa: real,
    sb: real,
    ea: real,
    eb: real,
    xa: real,
    xb: real,
    ax_a: real,
    ax_b: real,
    psi_a: real,
    psi_b: real,
    xerr_a: real,
    xerr_b: real,
    // The row's shift c = c_hi + c_lo, as this kernel subtracted it.
    c_hi: real,
    c_lo: real,
    // Elements at the maximum weigh exactly 1: sa, sb hold the rest, these count them, so
    // that f32 keeps the rest to its own precision (ln Σ of a peaked row needs it).
    na: u32,
    nb: u32,
    q_zero: u32,
    p_zero: u32,
    bad: u32,
    psi_bad: u32, // the ψ terms could not be formed somewhere in this segment
    // The column (in the row) of each side's first maximum; NO_TOP where it has no finite value.
    top_a: u32,
    top_b: u32,
}

// The record the workgroup reduction (shared/reduce_*.wgsl) merges.
alias Rec = LogitRec;

@group(0) @binding(2) var<storage, read_write> out: array<LogitRec>;


// The row's shift from its first block: c = (ma − mb) + ln(sa/sb) over its first 512
// columns (src/cpu/scalar.rs `row_shift`), as (c_hi, c_lo); (0, 0) when a side has no
// finite value there. One thread per row, run on the dispatch holding column 0.
@compute @workgroup_size(WG)
fn shift(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid) * WG + lid;
    if (row >= params.rows) {
        return;
    }
    var ma = NO_MAX;
    var mb = NO_MAX;
    var fa = false;
    var fb = false;
    let n = min(params.cols, SHIFT_COLS);
    for (var c = 0u; c < n; c++) {
        let x = load_p(elem(row, c));
        let y = load_q(elem(row, c));
        if (logit_ok(x)) {
            ma = max(ma, x);
            fa = true;
        }
        if (logit_ok(y)) {
            mb = max(mb, y);
            fb = true;
        }
    }
    var shift = vec4<real>(0.0);
    if (fa && fb) {
        var sa: real = 0.0;
        var sb: real = 0.0;
        for (var c = 0u; c < n; c++) {
            let x = load_p(elem(row, c));
            let y = load_q(elem(row, c));
            if (logit_ok(x)) {
                sa += exp_nonpos(x - ma);
            }
            if (logit_ok(y)) {
                sb += exp_nonpos(y - mb);
            }
        }
        shift = shift_of(ma, mb, sa, sb);
    }
    row_data[params.row0 + row] = shift;
}

// The row's shift (c_hi, c_lo, 0, 0) from each side's maximum and Σ e^(x − max) over the
// row's first block.
fn shift_of(ma: real, mb: real, sa: real, sb: real) -> vec4<real> {
    return vec4<real>(ma - mb, ln_pos(sa) - ln_pos(sb), 0.0, 0.0);
}

fn rec_empty(r: vec4<real>) -> LogitRec {
    return LogitRec(NO_MAX, NO_MAX, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    r.x, r.y, 0u, 0u, 0u, 0u, 0u, 0u, NO_TOP, NO_TOP);
}

// The first maximum of two pieces: the larger maximum, the lower column on a tie.
fn first_top(m1: real, t1: u32, m2: real, t2: u32) -> u32 {
    if (t1 == NO_TOP) {
        return t2;
    }
    if (t2 == NO_TOP || m1 > m2) {
        return t1;
    }
    if (m2 > m1) {
        return t2;
    }
    return min(t1, t2);
}

// The workgroup's merge: its threads' records are summed around the same maxima (the
// segment's: see `rows_wg`), so they add as plain sums; only the argmax and the first bad
// column need more than an addition.
fn merge(a: LogitRec, b: LogitRec) -> LogitRec {
    var r = a;
    r.top_a = first_top(a.ma, a.top_a, b.ma, b.top_a);
    r.top_b = first_top(a.mb, a.top_b, b.mb, b.top_b);
    r.sa = a.sa + b.sa;
    r.sb = a.sb + b.sb;
    r.ea = a.ea + b.ea;
    r.eb = a.eb + b.eb;
    r.xa = a.xa + b.xa;
    r.xb = a.xb + b.xb;
    r.ax_a = a.ax_a + b.ax_a;
    r.ax_b = a.ax_b + b.ax_b;
    r.psi_a = a.psi_a + b.psi_a;
    r.psi_b = a.psi_b + b.psi_b;
    r.xerr_a = a.xerr_a + b.xerr_a;
    r.xerr_b = a.xerr_b + b.xerr_b;
    r.na = a.na + b.na;
    r.nb = a.nb + b.nb;
    r.q_zero = a.q_zero + b.q_zero;
    r.p_zero = a.p_zero + b.p_zero;
    r.psi_bad = a.psi_bad | b.psi_bad;
    if (r.bad == 0u || (b.bad != 0u && b.bad < r.bad)) {
        r.bad = b.bad;
    }
    return r;
}

// A thread's running maxima (and their columns, in acc.top_*) over the elements it has seen.
struct Maxima {
    ma: real,
    mb: real,
}

// Whether the kernel handles both values of a pair (finite logits in range, or −inf).
fn pair_ok(v: vec2<real>) -> bool {
    return (logit_ok(v.x) || is_neg_inf(v.x)) && (logit_ok(v.y) || is_neg_inf(v.y));
}

// The pair as the sums take it: a pair the kernel does not handle counts as −inf on both
// sides (its row is flagged `bad` and recomputed by the host).
fn screened(v: vec2<real>) -> vec2<real> {
    return select(vec2<real>(neg_inf()), v, pair_ok(v));
}

// Element (x, y) at column `col` of the row, seen for the maxima and checked; returns it
// `screened`. Columns must rise from call to call: a strictly larger value is the first
// maximum.
fn see(acc: ptr<function, LogitRec>, m: ptr<function, Maxima>, v: vec2<real>, col: u32) -> vec2<real> {
    if (!pair_ok(v) && (*acc).bad == 0u) {
        (*acc).bad = col + 1u;
    }
    let s = screened(v);
    if (logit_ok(s.x) && (s.x > (*m).ma || (*acc).top_a == NO_TOP)) {
        (*m).ma = s.x;
        (*acc).top_a = col;
    }
    if (logit_ok(s.y) && (s.y > (*m).mb || (*acc).top_b == NO_TOP)) {
        (*m).mb = s.y;
        (*acc).top_b = col;
    }
    return s;
}

// Sets the record's maxima from the elements seen and returns γ: a side without mass here is
// measured from the other side and the shift (γ = 1); its own sums stay 0 (src/sums.rs
// LogitSums). wa·e^−x = e^(b − ma + c) = γ·wb and wb·e^x = wa/γ (src/cpu/scalar.rs
// `gamma`). Beyond e^±80 (wildly different rows) the ψ form is flagged and the host uses
// the plain form for the row instead.
fn centre(acc: ptr<function, LogitRec>, m: Maxima, c_hi: real, c_lo: real) -> real {
    var ma = m.ma;
    var mb = m.mb;
    let has_a = ma > NO_MAX;
    let has_b = mb > NO_MAX;
    if (has_a && !has_b) {
        mb = ma - (c_hi + c_lo);
    } else if (has_b && !has_a) {
        ma = mb + (c_hi + c_lo);
    }
    (*acc).ma = ma;
    (*acc).mb = mb;
    let arg = (c_hi - (ma - mb)) + c_lo;
    var gam: real = 1.0;
    if (abs(arg) <= 80.0) {
        gam = select(1.0 / exp_nonpos(-arg), exp_nonpos(arg), arg <= 0.0);
    } else if (has_a || has_b) {
        (*acc).psi_bad = 1u;
    }
    return gam;
}

// Element (x, y), as `see` returned it, into the sums around the record's maxima.
fn add(acc: ptr<function, LogitRec>, x: real, y: real, gam: real, c_hi: real, c_lo: real) {
    let ma = (*acc).ma;
    let mb = (*acc).mb;
    let na = is_neg_inf(x);
    let nb = is_neg_inf(y);
    var wa: real = 0.0;
    var wb: real = 0.0;
    if (!na) {
        wa = exp_nonpos(x - ma);
        if (same(x, ma)) {
            (*acc).na += 1u;
        } else {
            (*acc).sa += wa;
        }
    }
    if (!nb) {
        wb = exp_nonpos(y - mb);
        if (same(y, mb)) {
            (*acc).nb += 1u;
        } else {
            (*acc).sb += wb;
        }
    }
    if (!na && !nb) {
        let d = x - y;
        let t = d - c_hi;
        let xs = t - c_lo;
        let err = sub_err(x, y, d) + sub_err(d, c_hi, t) + sub_err(t, c_lo, xs);
        let axs = abs(xs);
        (*acc).ea = fma(wa, x - ma, (*acc).ea);
        (*acc).eb = fma(wa, y - mb, (*acc).eb);
        (*acc).xa = fma(wa, xs, (*acc).xa);
        (*acc).xb = fma(wb, xs, (*acc).xb);
        (*acc).ax_a = fma(wa, axs, (*acc).ax_a);
        (*acc).ax_b = fma(wb, axs, (*acc).ax_b);
        (*acc).xerr_a = fma(wa, err, (*acc).xerr_a);
        (*acc).xerr_b = fma(wb, err, (*acc).xerr_b);
        (*acc).psi_a += weighted_psi(wa, gam * wb, xs);
        (*acc).psi_b += weighted_psi(wb, wa / gam, -xs);
    } else if (!na) {
        (*acc).q_zero += 1u;
        (*acc).ea = fma(wa, x - ma, (*acc).ea);
        (*acc).psi_b += wa / gam;
    } else if (!nb) {
        (*acc).p_zero += 1u;
        (*acc).psi_a += gam * wb;
    }
}

// One workgroup per 4096-element segment. Each thread holds its 16 elements in registers
// (loaded as 16-byte vectors where the rows are aligned) and takes their maxima; the
// workgroup takes the segment's; then every thread sums relative to those (each element is
// read from memory once) and the workgroup adds the threads' sums.
@compute @workgroup_size(WG)
fn rows_wg(ids: WgIds) {
    let g = group_index(ids.wid);
    let row = g / params.segs;
    let seg = g % params.segs;
    if (row >= params.rows) {
        return;
    }
    let shift = row_data[params.row0 + row];
    let c_hi = shift.x;
    let c_lo = shift.y;
    var xa: array<real, EPT>;
    var xb: array<real, EPT>;
    var acc = rec_empty(shift);
    var m = Maxima(NO_MAX, NO_MAX);
    var last: Loaded;
    let base = seg * SEG;
    for (var k = 0u; k < EPT; k++) {
        let c = seg_column(base, k, ids.lid);
        var v = vec2<real>(neg_inf());
        if (c < params.cols) {
            v = see(&acc, &m, seg_pair(row, c, k, &last), params.col0 + c);
        }
        xa[k] = v.x;
        xb[k] = v.y;
    }
    // Every thread sums around the segment's maxima, so that the workgroup's merges are
    // plain sums: rescaling a thread's ψ sums (held relative to its own γ, up to e^80) by
    // e^(m − max) lost them where that factor underflowed (a logit spike of ~85: KL off by
    // 2e-4).
    // A thread whose maximum is not the segment's gives up its column (compared as numbers:
    // −0 and +0 are one maximum, whose first column wins, whichever `max` returned).
    let wg_max = reduce_max_wg(vec2<real>(m.ma, m.mb), ids);
    if (m.ma != wg_max.x) {
        acc.top_a = NO_TOP;
    }
    if (m.mb != wg_max.y) {
        acc.top_b = NO_TOP;
    }
    let gam = centre(&acc, Maxima(wg_max.x, wg_max.y), c_hi, c_lo);
    for (var k = 0u; k < EPT; k++) {
        add(&acc, xa[k], xb[k], gam, c_hi, c_lo);
    }
    var r = reduce_wg(acc, ids);
    if (is_first(ids)) {
        r.c_hi = c_hi;
        r.c_lo = c_lo;
        out[g] = r;
    }
}

// Short rows (at most SHIFT_COLS columns): a workgroup stages a tile of rows
// (shared/tile.wgsl), then a thread per row takes its maxima, its shift (as `shift` would,
// unless the host gives it: params.own_shift) and its sums from the tile.
@compute @workgroup_size(WG)
fn rows_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = staged_row(wid, lid);
    if (row == NO_ROW) {
        return;
    }
    var acc = rec_empty(vec4<real>(0.0));
    var m = Maxima(NO_MAX, NO_MAX);
    for (var c = 0u; c < params.cols; c++) {
        _ = see(&acc, &m, tile_pair(lid, c), params.col0 + c);
    }
    var shift = vec4<real>(0.0);
    if (params.own_shift == 0u) {
        shift = row_data[params.row0 + row];
    } else if (m.ma > NO_MAX && m.mb > NO_MAX) {
        var sa: real = 0.0;
        var sb: real = 0.0;
        for (var c = 0u; c < params.cols; c++) {
            let v = tile_pair(lid, c);
            if (logit_ok(v.x)) {
                sa += exp_nonpos(v.x - m.ma);
            }
            if (logit_ok(v.y)) {
                sb += exp_nonpos(v.y - m.mb);
            }
        }
        shift = shift_of(m.ma, m.mb, sa, sb);
    }
    let gam = centre(&acc, m, shift.x, shift.y);
    for (var c = 0u; c < params.cols; c++) {
        let v = screened(tile_pair(lid, c));
        add(&acc, v.x, v.y, gam, shift.x, shift.y);
    }
    acc.c_hi = shift.x;
    acc.c_lo = shift.y;
    out[row] = acc;
}
