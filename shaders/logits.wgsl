// Logits and log-probabilities: per-segment log-sum-exp sums and the ψ terms of
// src/sums.rs (LogitSums), the twin of the CPU's logit kernel. −inf means probability 0
// and is handled by bit tests; NaN, +inf and |x| > 1e30 set `bad`.

struct LogitRec {
    ma: f32,
    mb: f32,
    sa: f32,
    sb: f32,
    ta: f32,
    tb: f32,
    ea: f32,
    psi_a: f32,
    psi_b: f32,
    shift: f32,
    q_zero: u32,
    p_zero: u32,
    bad: u32,
    psi_bad: u32, // the ψ terms overflowed somewhere in this segment
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(2) var<storage, read_write> out: array<LogitRec>;

// Columns of a row's first block, over which the shift c is taken (src/cpu/scalar.rs BLOCK).
const SHIFT_COLS: u32 = 512u;

// The per-row shift c = (max of the first block's a) − (max of its b), or 0 when either
// has no finite value: one thread per row, run on the dispatch holding column 0.
@compute @workgroup_size(256)
fn shift(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid) * WG + lid;
    if (row >= params.rows) {
        return;
    }
    var ma = -3.4e38;
    var mb = -3.4e38;
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
    var c = 0.0;
    if (fa && fb) {
        c = ma - mb;
    }
    row_data[params.row0 + row] = vec2<f32>(c, 0.0);
}

fn rec_empty(c: f32) -> LogitRec {
    return LogitRec(-3.4e38, -3.4e38, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, c, 0u, 0u, 0u, 0u, 0u, 0u);
}

// Scale of a sum taken relative to max m onto max m_new (m ≤ m_new); 0 for an empty side.
fn rescale(s: f32, m: f32, m_new: f32) -> f32 {
    if (s == 0.0) {
        return 0.0;
    }
    return exp_nonpos(m - m_new);
}

fn merge(a: LogitRec, b: LogitRec) -> LogitRec {
    var r = a;
    r.ma = max(a.ma, b.ma);
    r.mb = max(a.mb, b.mb);
    let xa = rescale(a.sa, a.ma, r.ma);
    let ya = rescale(b.sa, b.ma, r.ma);
    let xb = rescale(a.sb, a.mb, r.mb);
    let yb = rescale(b.sb, b.mb, r.mb);
    r.sa = a.sa * xa + b.sa * ya;
    r.ta = a.ta * xa + b.ta * ya;
    r.ea = a.ea * xa + b.ea * ya;
    r.psi_a = a.psi_a * xa + b.psi_a * ya;
    r.sb = a.sb * xb + b.sb * yb;
    r.tb = a.tb * xb + b.tb * yb;
    r.psi_b = a.psi_b * xb + b.psi_b * yb;
    r.q_zero = a.q_zero + b.q_zero;
    r.p_zero = a.p_zero + b.p_zero;
    r.psi_bad = a.psi_bad | b.psi_bad;
    r.bad = a.bad;
    if (r.bad == 0u || (b.bad != 0u && b.bad < r.bad)) {
        r.bad = b.bad;
    }
    return r;
}

var<workgroup> part: array<LogitRec, 256>;

// One workgroup per 4096-element segment. Each thread holds its 16 elements in registers,
// takes their maxima, then sums relative to them (each element is read from memory once);
// the workgroup merges with log-sum-exp rescaling.
@compute @workgroup_size(256)
fn rows_wg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid);
    let row = g / params.segs;
    let seg = g % params.segs;
    if (row >= params.rows) {
        return;
    }
    let c_shift = row_data[params.row0 + row].x;
    var xa: array<f32, 16>;
    var xb: array<f32, 16>;
    var acc = rec_empty(c_shift);
    var ma = -3.4e38;
    var mb = -3.4e38;
    var any_elem = false;
    let base = seg * SEG;
    for (var k = 0u; k < EPT; k++) {
        let c = base + k * WG + lid;
        var x = bitcast<f32>(NEG_INF_BITS);
        var y = x;
        if (c < params.cols) {
            x = load_p(elem(row, c));
            y = load_q(elem(row, c));
            let okx = logit_ok(x) || is_neg_inf(x);
            let oky = logit_ok(y) || is_neg_inf(y);
            if (!okx || !oky) {
                if (acc.bad == 0u) {
                    acc.bad = params.col0 + c + 1u;
                }
                x = bitcast<f32>(NEG_INF_BITS);
                y = x;
            }
            if (logit_ok(x)) {
                ma = max(ma, x);
                any_elem = true;
            }
            if (logit_ok(y)) {
                mb = max(mb, y);
                any_elem = true;
            }
        }
        xa[k] = x;
        xb[k] = y;
    }
    acc.ma = ma;
    acc.mb = mb;
    // wa·e^−x = e^(b − ma + c) = g·wb and wb·e^x = wa/g (src/cpu/scalar.rs `gamma`).
    // Beyond e^±80 (wildly different rows, or a side with no mass here) the ψ form is
    // flagged and the host uses the plain log-sum-exp difference for the row instead.
    let arg = c_shift - (ma - mb);
    var gam = 1.0;
    if (abs(arg) <= 80.0) {
        gam = select(1.0 / exp_nonpos(-arg), exp_nonpos(arg), arg <= 0.0);
    } else if (any_elem) {
        acc.psi_bad = 1u;
    }
    for (var k = 0u; k < EPT; k++) {
        let x = xa[k];
        let y = xb[k];
        let na = is_neg_inf(x);
        let nb = is_neg_inf(y);
        var wa = 0.0;
        var wb = 0.0;
        if (!na) {
            wa = exp_nonpos(x - ma);
        }
        if (!nb) {
            wb = exp_nonpos(y - mb);
        }
        acc.sa += wa;
        acc.sb += wb;
        if (!na && !nb) {
            let d = x - y;
            acc.ta = fma(wa, d, acc.ta);
            acc.tb = fma(wb, d, acc.tb);
            acc.ea = fma(wa, x, acc.ea);
            let xs = d - c_shift;
            acc.psi_a += weighted_psi(wa, gam * wb, xs);
            acc.psi_b += weighted_psi(wb, wa / gam, -xs);
        } else if (!na) {
            acc.q_zero += 1u;
            acc.ea = fma(wa, x, acc.ea);
            acc.psi_b += wa / gam;
        } else if (!nb) {
            acc.p_zero += 1u;
            acc.psi_a += gam * wb;
        }
    }
    part[lid] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part[lid] = merge(part[lid], part[lid + s]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var r = part[0];
        r.shift = c_shift;
        out[g] = r;
    }
}
