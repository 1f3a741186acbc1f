//! Logits rows: log-sum-exp sums and the ψ terms of `LogitSums` per block, the row's shift
//! from its first block, and Jensen–Shannon over logits in the log domain.

use super::super::simd_math::{abs, all, any, exp_nonpos, horner, ln, neg, poly9, prefetch_ahead};
use super::{lanes_sum, lanes_sum_f64, FLUSH, PREFETCH_AHEAD};
use crate::consts::{BIG_LOGIT, JS_G, JS_NEAR, PSI_NEAR, PSI_P};
use crate::request::Divergence;
use crate::semantics::exact;
use crate::semantics::finish::F32_TERM_FLOOR;
use crate::semantics::rows::Bad;
use crate::semantics::sums::{JsSums, LogitSums, NO_TOP};
use pulp::Simd;

/// ψ(x) = e^−x − 1 + x by its series, x²·PSI_P(x) (for |x| ≤ PSI_NEAR).
#[inline(always)]
fn psi_series<S: Simd>(s: S, x: S::f32s) -> S::f32s {
    s.mul_f32s(s.mul_f32s(x, x), horner(s, x, &PSI_P))
}

/// w·ψ(x) where w·e^−x = `w_shift`, from the series `psi` = ψ(x) near 0 and the direct
/// form elsewhere.
#[inline(always)]
fn weighted_psi<S: Simd>(
    s: S,
    w: S::f32s,
    psi: S::f32s,
    w_shift: S::f32s,
    x: S::f32s,
    near: S::m32s,
    all_near: bool,
) -> S::f32s {
    let series = s.mul_f32s(w, psi);
    if all_near {
        series
    } else {
        let direct = s.mul_add_e_f32s(w, x, s.sub_f32s(w_shift, w));
        s.select_f32s(near, series, direct)
    }
}

/// x − y as an exact pair (hi, lo), lane by lane (Knuth's TwoSum): logits far apart in
/// magnitude lose nothing.
#[inline(always)]
fn two_diff<S: Simd>(s: S, x: S::f32s, y: S::f32s) -> (S::f32s, S::f32s) {
    let hi = s.sub_f32s(x, y);
    let xv = s.add_f32s(hi, y);
    let yv = s.sub_f32s(xv, hi);
    let lo = s.add_f32s(s.sub_f32s(x, xv), s.sub_f32s(yv, y));
    (hi, lo)
}

/// The index of the first element of `v` equal to `m` (NO_TOP if none): a compare per
/// vector until the vector that holds it, then element by element. (pulp's
/// `first_true_m32s` is not the lowest lane on every level: only "any" is asked of it.)
#[inline(always)]
fn first_at<S: Simd>(s: S, v: &[f32], m: f32) -> u64 {
    let (vv, _) = S::as_simd_f32s(v);
    let vm = s.splat_f32s(m);
    let start = vv
        .iter()
        .position(|&x| any(s, s.equal_f32s(x, vm)))
        .unwrap_or(vv.len())
        * S::F32_LANES;
    v[start..]
        .iter()
        .position(|&x| x == m)
        .map_or(NO_TOP, |j| (start + j) as u64)
}

/// The row's shift c from its first block (see `exact::row_shift`), with SIMD exponentials;
/// `None` when that block holds values only the f64 path handles.
#[inline(always)]
pub(super) fn block_shift<S: Simd>(s: S, a: &[f32], b: &[f32]) -> Option<(f64, f64)> {
    let (av, at) = S::as_simd_f32s(a);
    let (bv, bt) = S::as_simd_f32s(b);
    let big = s.splat_f32s(BIG_LOGIT);
    let mut mxa = s.splat_f32s(f32::NEG_INFINITY);
    let mut mxb = mxa;
    for (&x, &y) in av.iter().zip(bv) {
        let ok = s.and_m32s(
            s.less_than_or_equal_f32s(abs(s, x), big),
            s.less_than_or_equal_f32s(abs(s, y), big),
        );
        if !all(s, ok) {
            return None;
        }
        mxa = s.max_f32s(mxa, x);
        mxb = s.max_f32s(mxb, y);
    }
    let (mut ma, mut mb) = (s.reduce_max_f32s(mxa), s.reduce_max_f32s(mxb));
    for (&x, &y) in at.iter().zip(bt) {
        if !(x.abs() <= BIG_LOGIT && y.abs() <= BIG_LOGIT) {
            return None;
        }
        ma = ma.max(x);
        mb = mb.max(y);
    }
    let (vma, vmb) = (s.splat_f32s(ma), s.splat_f32s(mb));
    let (mut sa, mut sb) = (s.splat_f32s(0.0), s.splat_f32s(0.0));
    for (&x, &y) in av.iter().zip(bv) {
        sa = s.add_f32s(sa, exp_nonpos(s, s.sub_f32s(x, vma)));
        sb = s.add_f32s(sb, exp_nonpos(s, s.sub_f32s(y, vmb)));
    }
    let (mut sa, mut sb) = (lanes_sum(s, sa), lanes_sum(s, sb));
    for (&x, &y) in at.iter().zip(bt) {
        sa += ((x - ma) as f64).exp();
        sb += ((y - mb) as f64).exp();
    }
    Some(crate::semantics::sums::shift_from(
        ma as f64,
        mb as f64,
        (sa / sb).ln(),
    ))
}

/// Sums over one block of logits (len ≤ BLOCK), relative to the block's maxima, with the
/// row's shift c = hi + lo (see [`LogitSums`]). `floor` is each side's maximum over the
/// row's earlier blocks (−inf for none): the block's first maximum is located only where
/// it is above (else `top_*` stays NO_TOP, which the merge leaves to the earlier blocks).
#[inline(always)]
pub fn logit_block<S: Simd>(
    s: S,
    div: Divergence,
    a: &[f32],
    b: &[f32],
    shift: (f64, f64),
    floor: (f64, f64),
) -> Result<LogitSums, Bad> {
    let (av, at) = S::as_simd_f32s(a);
    let (bv, bt) = S::as_simd_f32s(b);
    let big = s.splat_f32s(BIG_LOGIT);
    let mut mxa = s.splat_f32s(f32::NEG_INFINITY);
    let mut mxb = mxa;
    let exact = || exact::logit_block(a, b, &mut Some(shift));
    for (&x, &y) in av.iter().zip(bv) {
        let ok = s.and_m32s(
            s.less_than_or_equal_f32s(abs(s, x), big),
            s.less_than_or_equal_f32s(abs(s, y), big),
        );
        if !all(s, ok) {
            // −inf masks, NaN or +inf: the exact path handles and reports them.
            return exact();
        }
        mxa = s.max_f32s(mxa, x);
        mxb = s.max_f32s(mxb, y);
    }
    let (mut ma, mut mb) = (s.reduce_max_f32s(mxa), s.reduce_max_f32s(mxb));
    for (&x, &y) in at.iter().zip(bt) {
        if !(x.abs() <= BIG_LOGIT && y.abs() <= BIG_LOGIT) {
            return exact();
        }
        ma = ma.max(x);
        mb = mb.max(y);
    }
    // The shift as the f32 pair this kernel subtracts; the sums record exactly that pair.
    let c_hi = shift.0 as f32;
    let c_lo = ((shift.0 - c_hi as f64) + shift.1) as f32;
    let mut out = LogitSums::with_shift(c_hi as f64, c_lo as f64);
    out.ma = ma as f64;
    out.mb = mb as f64;
    let g = exact::gamma(&out);
    // |ln γ|, fixed from here on (the tail below reads ma, mb and the shift, never sets them).
    let gap = out.shift_gap().abs();
    let consts = (ma, mb, c_hi, c_lo, g, gap <= DERIVE_GAP);
    match div {
        Divergence::Kl => block_sums::<S, true, false>(s, div, av, bv, consts, &mut out),
        Divergence::ReverseKl => block_sums::<S, false, true>(s, div, av, bv, consts, &mut out),
        Divergence::SymmetricKl => block_sums::<S, true, true>(s, div, av, bv, consts, &mut out),
        _ => block_sums::<S, false, false>(s, div, av, bv, consts, &mut out),
    }
    // The f32 ψ terms' underflow, as an error of x (the tail below is f64).
    let lost = underflow_bound::<S>(av);
    out.xerr_a += lost;
    out.xerr_b += lost;
    for (&x, &y) in at.iter().zip(bt) {
        exact::logit_element(x as f64, y as f64, &mut out, g);
    }
    // The ψ terms rest on g·wb = wa·e^−x: with g or 1/g outside f32's normal range they are
    // meaningless, and the row is finished in the plain form (or re-read).
    if gap.is_nan() || gap > 80.0 {
        out.psi_a = f64::NAN;
        out.psi_b = f64::NAN;
    }
    // The first maxima, only where this block holds the row's so far: the running maximum
    // grows in a few blocks of a row, and a scan in each would cost ~6% of the kernel.
    if ma as f64 > floor.0 {
        out.top_a = first_at(s, a, ma);
    }
    if mb as f64 > floor.1 {
        out.top_b = first_at(s, b, mb);
    }
    Ok(out)
}

/// What the f32 terms of whole vectors `v` can lose to underflow (`F32_TERM_FLOOR` each).
#[inline(always)]
fn underflow_bound<S: Simd>(v: &[S::f32s]) -> f64 {
    (v.len() * S::F32_LANES) as f64 * F32_TERM_FLOOR
}

/// The weights `w` of a vector with those at the block's maximum (`d` = 0, weight exactly 1)
/// set to 0 and counted into `n`. A block holds its maximum once or a few times, so the
/// count and the select are a branch that is almost never taken (the same sums, bit for
/// bit, as selecting in every vector, at a third of the vector operations).
#[inline(always)]
fn without_maxima<S: Simd>(s: S, d: S::f32s, w: S::f32s, n: &mut S::f32s) -> S::f32s {
    let zero = s.splat_f32s(0.0);
    let at = s.equal_f32s(d, zero);
    if any(s, at) {
        *n = s.add_f32s(*n, s.select_f32s(at, s.splat_f32s(1.0), zero));
        s.select_f32s(at, zero, w)
    } else {
        w
    }
}

/// |ln γ| up to which wb may be taken from wa (see [`block_sums`]): the weights that way
/// cannot see (wa flushed to 0 below e^−87) are then below e^−66 of the block's sb ≥ 1.
const DERIVE_GAP: f64 = 20.0;

/// The vector loop of [`logit_block`] over whole vectors, into `out`, compiled for which
/// P-weighted (`A`: KL, symmetric) and Q-weighted (`B`: reverse KL, symmetric) ψ sums the
/// divergence needs, so that only those accumulators live in registers. `derive`: |ln γ| ≤
/// [`DERIVE_GAP`].
///
/// Where every lane of a vector has |x| within the ψ series' range, wb = e^(b−mb) is not a
/// second exponential: γ·wb = wa·e^−x = wa·(1 − x + ψ(x)), and ψ(x) is a short series.
/// Every variant takes wb so (the same operations in the same order), so a divergence
/// computed alone and in a shared pass has the same bits.
#[inline(always)]
fn block_sums<S: Simd, const A: bool, const B: bool>(
    s: S,
    div: Divergence,
    av: &[S::f32s],
    bv: &[S::f32s],
    (ma, mb, c_hi, c_lo, g, derive): (f32, f32, f32, f32, f64, bool),
    out: &mut LogitSums,
) {
    let need_ea = div == Divergence::Entropy;
    let need_eb = div == Divergence::CrossEntropy;
    let (vma, vmb) = (s.splat_f32s(ma), s.splat_f32s(mb));
    let (vc_hi, vc_lo) = (s.splat_f32s(c_hi), s.splat_f32s(c_lo));
    let (vg, vg_inv) = (s.splat_f32s(g as f32), s.splat_f32s((1.0 / g) as f32));
    let zero = s.splat_f32s(0.0);
    let one = s.splat_f32s(1.0);
    for (ac, bc) in av.chunks(FLUSH).zip(bv.chunks(FLUSH)) {
        let (mut sa, mut sb, mut ea, mut eb) = (zero, zero, zero, zero);
        let (mut na, mut nb) = (zero, zero);
        let (mut xa, mut xb, mut axa, mut axb) = (zero, zero, zero, zero);
        let (mut pa, mut pb) = (zero, zero);
        for (xr, yr) in ac.iter().zip(bc) {
            // The next block's lines, one of each side per vector: spread over the
            // arithmetic, the reads overlap it. (Asked for all at once in the scan above,
            // they filled the core's miss buffers and the scan stalled: perf, W4.)
            prefetch_ahead(xr, PREFETCH_AHEAD);
            prefetch_ahead(yr, PREFETCH_AHEAD);
            let (x, y) = (*xr, *yr);
            let (da, db) = (s.sub_f32s(x, vma), s.sub_f32s(y, vmb));
            let wa = exp_nonpos(s, da);
            // Elements at the maximum weigh exactly 1: counted apart, so that the f32 sums
            // keep the small rest to its own precision (ln Σ of a peaked row needs it).
            sa = s.add_f32s(sa, without_maxima(s, da, wa, &mut na));
            if need_ea {
                ea = s.mul_add_e_f32s(wa, da, ea);
            }
            if need_eb {
                eb = s.mul_add_e_f32s(wa, db, eb);
            }
            let (d_hi, d_lo) = two_diff(s, x, y);
            let xs = s.add_f32s(s.sub_f32s(d_hi, vc_hi), s.sub_f32s(d_lo, vc_lo));
            let axs = abs(s, xs);
            let near = s.less_than_or_equal_f32s(axs, s.splat_f32s(PSI_NEAR));
            let all_near = all(s, near);
            // (A value, not a closure: closures are not compiled with the SIMD features.)
            let psi_x = psi_series(s, xs);
            let wb = if derive && all_near {
                let e_nx = s.add_f32s(s.sub_f32s(one, xs), psi_x);
                s.mul_f32s(s.mul_f32s(wa, vg_inv), e_nx)
            } else {
                exp_nonpos(s, db)
            };
            if A {
                xa = s.mul_add_e_f32s(wa, xs, xa);
                axa = s.mul_add_e_f32s(wa, axs, axa);
                let w_shift = s.mul_f32s(vg, wb);
                pa = s.add_f32s(pa, weighted_psi(s, wa, psi_x, w_shift, xs, near, all_near));
            }
            if B {
                let nxs = neg(s, xs);
                xb = s.mul_add_e_f32s(wb, xs, xb);
                axb = s.mul_add_e_f32s(wb, axs, axb);
                let psi_nx = psi_series(s, nxs);
                let w_shift = s.mul_f32s(vg_inv, wa);
                pb = s.add_f32s(
                    pb,
                    weighted_psi(s, wb, psi_nx, w_shift, nxs, near, all_near),
                );
            }
            sb = s.add_f32s(sb, without_maxima(s, db, wb, &mut nb));
        }
        out.sa += lanes_sum(s, na) + lanes_sum(s, sa);
        out.sb += lanes_sum(s, nb) + lanes_sum(s, sb);
        // ea, eb are sums of non-positive terms.
        if need_ea {
            out.ea -= lanes_sum(s, neg(s, ea));
        }
        if need_eb {
            out.eb -= lanes_sum(s, neg(s, eb));
        }
        if A {
            out.xa += lanes_sum_f64(s, xa);
            out.ax_a += lanes_sum(s, axa);
            out.psi_a += lanes_sum(s, pa);
        }
        if B {
            out.xb += lanes_sum_f64(s, xb);
            out.ax_b += lanes_sum(s, axb);
            out.psi_b += lanes_sum(s, pb);
        }
    }
}

/// F(u) of `consts::JS_G`, lane by lane: series near 0, closed form beyond.
#[inline(always)]
fn js_f<S: Simd>(s: S, u: S::f32s) -> S::f32s {
    let g = JS_G.map(|c| c as f32);
    let au = abs(s, u);
    let one = s.splat_f32s(1.0);
    let near = s.less_than_or_equal_f32s(au, s.splat_f32s(JS_NEAR));
    let v = s.mul_f32s(u, u);
    let series = s.mul_f32s(v, poly9(s, v, &g));
    if all(s, near) {
        return series;
    }
    let e = exp_nonpos(s, neg(s, au));
    let one_e = s.add_f32s(one, e);
    let t = s.sub_f32s(
        s.splat_f32s(std::f32::consts::LN_2),
        s.add_f32s(ln(s, one_e), s.div_f32s(s.mul_f32s(e, au), one_e)),
    );
    let direct = s.mul_f32s(s.splat_f32s(2.0), t);
    s.select_f32s(near, series, direct)
}

/// Jensen–Shannon sums over one block of logits whose row maxima and log-sums are known (the
/// second pass of JS over logits): Σ m·F(u) with u = ln p − ln q formed from x − y exactly,
/// so near-identical rows keep their digits. See `exact::logit_js_segment`.
#[inline(always)]
pub fn logit_js_block<S: Simd>(
    s: S,
    a: &[f32],
    b: &[f32],
    (ma, lnsa, mb, l): (f64, f64, f64, f64),
) -> Result<JsSums, Bad> {
    let (av, at) = S::as_simd_f32s(a);
    let (bv, bt) = S::as_simd_f32s(b);
    let big = s.splat_f32s(BIG_LOGIT);
    for (&x, &y) in av.iter().zip(bv) {
        let ok = s.and_m32s(
            s.less_than_or_equal_f32s(abs(s, x), big),
            s.less_than_or_equal_f32s(abs(s, y), big),
        );
        if !all(s, ok) {
            // −inf masks, NaN, +inf: the exact path handles and reports them.
            return exact::logit_js_segment(a, b, (ma, lnsa, mb, l));
        }
    }
    let (vma, vmb) = (s.splat_f32s(ma as f32), s.splat_f32s(mb as f32));
    let (vla, vlb) = (s.splat_f32s(lnsa as f32), s.splat_f32s((lnsa + l) as f32));
    // c = ma − mb exactly (both are input values), and l = ln sb − ln sa as an f32 pair.
    let (c_hi, c_lo) = {
        let (x, y) = (ma as f32, mb as f32);
        let hi = x - y;
        let xv = hi + y;
        (hi, (x - xv) + ((xv - hi) - y))
    };
    let (l_hi, l_lo) = (l as f32, (l - (l as f32) as f64) as f32);
    let (vc_hi, vc_lo) = (s.splat_f32s(c_hi), s.splat_f32s(c_lo));
    let (vl_hi, vl_lo) = (s.splat_f32s(l_hi), s.splat_f32s(l_lo));
    let half = s.splat_f32s(0.5);
    let zero = s.splat_f32s(0.0);
    let mut out = JsSums::default();
    for (ac, bc) in av.chunks(FLUSH).zip(bv.chunks(FLUSH)) {
        let (mut h, mut sp, mut sq) = (zero, zero, zero);
        for (xr, yr) in ac.iter().zip(bc) {
            // The next block's lines, spread over the arithmetic (see `block_sums`).
            prefetch_ahead(xr, PREFETCH_AHEAD);
            prefetch_ahead(yr, PREFETCH_AHEAD);
            let (x, y) = (*xr, *yr);
            let p = exp_nonpos(s, s.sub_f32s(s.sub_f32s(x, vma), vla));
            let q = exp_nonpos(s, s.sub_f32s(s.sub_f32s(y, vmb), vlb));
            let (d_hi, d_lo) = two_diff(s, x, y);
            let xs = s.add_f32s(s.sub_f32s(d_hi, vc_hi), s.sub_f32s(d_lo, vc_lo));
            let u = s.add_f32s(s.add_f32s(xs, vl_hi), vl_lo);
            let m = s.mul_f32s(half, s.add_f32s(p, q));
            h = s.mul_add_e_f32s(m, js_f(s, u), h);
            sp = s.add_f32s(sp, p);
            sq = s.add_f32s(sq, q);
        }
        out.h += lanes_sum(s, h);
        out.sp += lanes_sum(s, sp);
        out.sq += lanes_sum(s, sq);
    }
    // The f32 terms' underflow (the tail below is f64).
    out.err += underflow_bound::<S>(av);
    if !at.is_empty() {
        let start = a.len() - at.len();
        let tail = exact::logit_js_segment(at, bt, (ma, lnsa, mb, l)).map_err(|e| Bad {
            col: e.col + start,
            ..e
        })?;
        out.merge(&tail);
    }
    Ok(out)
}
