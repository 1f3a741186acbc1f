// Logits and log-probabilities: per-segment sums of src/sums.rs (LogitSums), the twin of
// the CPU's logit kernel. −inf means probability 0 and is handled by bit tests; NaN, +inf
// and |x| > 1e30 set `bad`.
//
// x = a − b − c is formed in plain f32 (compensated sums are not reliable in WGSL); instead
// each element's rounding is bounded from the exponents (`sub_err`) and summed into xerr_*,
// and the host re-reads rows whose bound is too large for the accuracy target.

struct LogitRec {
    ma: f32,
    mb: f32,
    sa: f32,
    sb: f32,
    ea: f32,
    eb: f32,
    xa: f32,
    xb: f32,
    ax_a: f32,
    ax_b: f32,
    psi_a: f32,
    psi_b: f32,
    xerr_a: f32,
    xerr_b: f32,
    ra: f32,
    rb: f32,
    c: f32,
    q_zero: u32,
    p_zero: u32,
    bad: u32,
    psi_bad: u32, // the ψ terms could not be formed somewhere in this segment
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(2) var<storage, read_write> out: array<LogitRec>;

// Columns of a row's first block, over which the reference pair is taken (src/cpu/scalar.rs
// BLOCK).
const SHIFT_COLS: u32 = 512u;
// "No finite value yet" (a finite stand-in for −inf, which drivers need not honour).
const NO_MAX: f32 = -3.4e38;

// The row's reference pair (ra, rb): the maxima of its first block (0 for a side with no
// finite value there), and c = ra − rb as this kernel rounds it. One thread per row, run on
// the dispatch holding column 0.
@compute @workgroup_size(256)
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
    let ra = select(0.0, ma, fa);
    let rb = select(0.0, mb, fb);
    row_data[params.row0 + row] = vec4<f32>(ra, rb, ra - rb, 0.0);
}

fn rec_empty(r: vec4<f32>) -> LogitRec {
    return LogitRec(NO_MAX, NO_MAX, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                    r.x, r.y, r.z, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
}

// Scale of a sum taken relative to max m onto max m_new (m ≤ m_new); 0 for an empty side.
fn rescale(s: f32, m: f32, m_new: f32) -> f32 {
    if (s == 0.0) {
        return 0.0;
    }
    return exp_nonpos(m - m_new);
}

// Σ w·(v − m) moved onto max m_new: Σ w(v − m_new) = Σ w(v − m) + (m − m_new)·Σ w.
fn moved(e: f32, m: f32, m_new: f32, s: f32) -> f32 {
    if (s == 0.0) {
        return e;
    }
    return e + (m - m_new) * s;
}

fn merge(a: LogitRec, b: LogitRec) -> LogitRec {
    var r = a;
    r.ma = max(a.ma, b.ma);
    r.mb = max(a.mb, b.mb);
    let xa = rescale(a.sa, a.ma, r.ma);
    let ya = rescale(b.sa, b.ma, r.ma);
    let xb = rescale(a.sb, a.mb, r.mb);
    let yb = rescale(b.sb, b.mb, r.mb);
    r.ea = moved(a.ea, a.ma, r.ma, a.sa) * xa + moved(b.ea, b.ma, r.ma, b.sa) * ya;
    r.eb = moved(a.eb, a.mb, r.mb, a.sa) * xa + moved(b.eb, b.mb, r.mb, b.sa) * ya;
    r.sa = a.sa * xa + b.sa * ya;
    r.xa = a.xa * xa + b.xa * ya;
    r.ax_a = a.ax_a * xa + b.ax_a * ya;
    r.psi_a = a.psi_a * xa + b.psi_a * ya;
    r.xerr_a = a.xerr_a * xa + b.xerr_a * ya;
    r.sb = a.sb * xb + b.sb * yb;
    r.xb = a.xb * xb + b.xb * yb;
    r.ax_b = a.ax_b * xb + b.ax_b * yb;
    r.psi_b = a.psi_b * xb + b.psi_b * yb;
    r.xerr_b = a.xerr_b * xb + b.xerr_b * yb;
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
    let refs = row_data[params.row0 + row];
    let c_shift = refs.z;
    var xa: array<f32, 16>;
    var xb: array<f32, 16>;
    var acc = rec_empty(refs);
    var ma = NO_MAX;
    var mb = NO_MAX;
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
    // flagged and the host uses the plain form for the row instead.
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
            let xs = d - c_shift;
            let err = sub_err(x, y, d) + sub_err(d, c_shift, xs);
            let axs = abs(xs);
            acc.ea = fma(wa, x - ma, acc.ea);
            acc.eb = fma(wa, y - mb, acc.eb);
            acc.xa = fma(wa, xs, acc.xa);
            acc.xb = fma(wb, xs, acc.xb);
            acc.ax_a = fma(wa, axs, acc.ax_a);
            acc.ax_b = fma(wb, axs, acc.ax_b);
            acc.xerr_a = fma(wa, err, acc.xerr_a);
            acc.xerr_b = fma(wb, err, acc.xerr_b);
            acc.psi_a += weighted_psi(wa, gam * wb, xs);
            acc.psi_b += weighted_psi(wb, wa / gam, -xs);
        } else if (!na) {
            acc.q_zero += 1u;
            acc.ea = fma(wa, x - ma, acc.ea);
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
        r.ra = refs.x;
        r.rb = refs.y;
        r.c = c_shift;
        out[g] = r;
    }
}
