//! The f32 SIMD kernels: one block of a row at a time, generic over pulp's `Simd`.
//!
//! A block's sums are kept in f32 lanes (each lane adds at most BLOCK/lanes terms) and then
//! added into f64, so rounding error stays flat however long the row is. Vectors holding
//! anything outside the fast path's range (NaN, negatives, ±inf, |x| < 2^-60 but non-zero)
//! are handed lane by lane to the exact f64 element functions, which also report bad input.

use super::simd_math::{abs, all, exp_nonpos, gkl, horner, ln, neg, poly9, HUGE, TINY};
use super::transpose;
use crate::consts::{BIG_LOGIT, BLOCK, JS_G, JS_NEAR, PSI_NEAR, PSI_P};
use crate::element::Element;
use crate::request::Divergence;
use crate::semantics::exact;
use crate::semantics::finish::LaneSums;
use crate::semantics::plan::{Kernel, RowParams};
use crate::semantics::rows::Bad;
use crate::semantics::sums::{JsSums, LogitSums, Partial, ProbSums};
use pulp::Simd;

/// Block-sized f32 buffers for widening f16/bf16 and for transformed inputs.
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    /// A group of short f16/bf16 rows widened to f32, before [`short_rows`] transposes it.
    wide_p: Vec<f32>,
    wide_q: Vec<f32>,
}

impl Scratch {
    pub fn new() -> Self {
        // Large enough for one block, and for 16 transposed rows of SHORT_ROW columns.
        let n = BLOCK.max(16 * SHORT_ROW);
        Scratch {
            a: vec![0.0; n],
            b: vec![0.0; n],
            wide_p: vec![0.0; 16 * SHORT_ROW],
            wide_q: vec![0.0; 16 * SHORT_ROW],
        }
    }
}

/// Lanes where the fast path is exact: both values within [TINY, HUGE], or one of them 0
/// and the other at most HUGE (zeros only reach the exact selects in `gkl0` / `xlogy0`).
/// On the bit patterns as unsigned integers, negatives, NaN and ±inf all compare above
/// HUGE, so two min/max and three compares decide it.
#[inline(always)]
fn regular<S: Simd>(s: S, x: S::f32s, y: S::f32s) -> S::m32s {
    let (bx, by) = (s.transmute_u32s_f32s(x), s.transmute_u32s_f32s(y));
    let lo = s.min_u32s(bx, by);
    let hi = s.max_u32s(bx, by);
    let hi_ok = s.less_than_or_equal_u32s(hi, s.splat_u32s(HUGE.to_bits()));
    let lo_ok = s.or_m32s(
        s.greater_than_or_equal_u32s(lo, s.splat_u32s(TINY.to_bits())),
        s.equal_u32s(lo, s.splat_u32s(0)),
    );
    s.and_m32s(hi_ok, lo_ok)
}

struct ProbAcc<S: Simd> {
    main: S::f32s,
    main2: S::f32s,
    sp: S::f32s,
    sq: S::f32s,
    diff: S::f32s,
    /// Rounding error of `diff`, kept by TwoSum: Σ(p − q) decides literal KL when p ≈ q.
    diff_lo: S::f32s,
}

/// Horizontal sum of the lanes of a non-negative accumulator: an f32 tree adds at most
/// 4 ulp (16 lanes), negligible next to the terms' own error.
#[inline(always)]
fn lanes_sum<S: Simd>(s: S, v: S::f32s) -> f64 {
    s.reduce_sum_f32s(v) as f64
}

/// Horizontal sum in f64, pairwise: for signed accumulators whose total may cancel.
#[inline(always)]
fn lanes_sum_f64<S: Simd>(s: S, v: S::f32s) -> f64 {
    let mut buf = [0f32; 16];
    s.partial_store_f32s(&mut buf, v);
    let mut w = [0f64; 16];
    for i in 0..16 {
        w[i] = buf[i] as f64;
    }
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            w[i] += w[i + width];
        }
        width /= 2;
    }
    w[0]
}

/// gkl with the zero conventions: t(0, y) = y, t(x, 0) = +inf.
#[inline(always)]
fn gkl0<S: Simd>(s: S, x: S::f32s, y: S::f32s) -> S::f32s {
    let t = gkl(s, x, y);
    let t = s.select_f32s(
        s.equal_f32s(y, s.splat_f32s(0.0)),
        s.splat_f32s(f32::INFINITY),
        t,
    );
    s.select_f32s(s.equal_f32s(x, s.splat_f32s(0.0)), y, t)
}

/// x·ln y with 0·ln y = 0 and x·ln 0 = −inf.
#[inline(always)]
fn xlogy0<S: Simd>(s: S, x: S::f32s, y: S::f32s) -> S::f32s {
    let zero = s.splat_f32s(0.0);
    let safe_y = s.select_f32s(s.equal_f32s(y, zero), s.splat_f32s(1.0), y);
    let t = s.mul_f32s(x, ln(s, safe_y));
    let t = s.select_f32s(s.equal_f32s(y, zero), s.splat_f32s(f32::NEG_INFINITY), t);
    s.select_f32s(s.equal_f32s(x, zero), zero, t)
}

#[inline(always)]
fn prob_step<S: Simd>(s: S, div: Divergence, x: S::f32s, y: S::f32s, acc: &mut ProbAcc<S>) {
    acc.sp = s.add_f32s(acc.sp, x);
    acc.sq = s.add_f32s(acc.sq, y);
    // x − y is exact when x ≈ y (Sterbenz); TwoSum keeps what the addition drops.
    let d = s.sub_f32s(x, y);
    let sum = s.add_f32s(acc.diff, d);
    let dd = s.sub_f32s(sum, acc.diff);
    let err = s.add_f32s(s.sub_f32s(acc.diff, s.sub_f32s(sum, dd)), s.sub_f32s(d, dd));
    acc.diff = sum;
    acc.diff_lo = s.add_f32s(acc.diff_lo, err);
    match div {
        Divergence::Kl => acc.main = s.add_f32s(acc.main, gkl0(s, x, y)),
        Divergence::ReverseKl => acc.main = s.add_f32s(acc.main, gkl0(s, y, x)),
        Divergence::SymmetricKl => {
            acc.main = s.add_f32s(acc.main, gkl0(s, x, y));
            acc.main2 = s.add_f32s(acc.main2, gkl0(s, y, x));
        }
        Divergence::JensenShannon => {
            let m = s.mul_f32s(s.add_f32s(x, y), s.splat_f32s(0.5));
            let t = s.add_f32s(gkl0(s, x, m), gkl0(s, y, m));
            // m = 0 only where x = y = 0, whose term is 0.
            let t = s.select_f32s(s.equal_f32s(m, s.splat_f32s(0.0)), m, t);
            acc.main = s.add_f32s(acc.main, t);
        }
        Divergence::CrossEntropy => acc.main = s.add_f32s(acc.main, xlogy0(s, x, y)),
        Divergence::Entropy => acc.main = s.add_f32s(acc.main, xlogy0(s, x, x)),
    }
}

/// Exact f64 handling of `p[range]`, `q[range]` into `extra`.
fn prob_lanes_exact(
    div: Divergence,
    p: &[f32],
    q: &[f32],
    start: usize,
    extra: &mut ProbSums,
) -> Result<(), Bad> {
    for (j, (&x, &y)) in p.iter().zip(q).enumerate() {
        exact::prob_element(div, x as f64, y as f64, extra).map_err(|(side, kind)| Bad {
            side,
            kind,
            col: start + j,
        })?;
    }
    Ok(())
}

/// Vectors a lane accumulator takes before it is flushed into f64: keeps every f32 lane
/// sum short (≤ 32 terms, relative error ≤ 2e-6 worst case) on every SIMD width, the
/// one-lane scalar level included.
const FLUSH: usize = 32;

/// Sums over one block of probabilities (len ≤ BLOCK).
#[inline(always)]
pub fn prob_block<S: Simd>(s: S, div: Divergence, p: &[f32], q: &[f32]) -> Result<ProbSums, Bad> {
    let lanes = S::F32_LANES;
    let (pv, pt) = S::as_simd_f32s(p);
    let (qv, qt) = S::as_simd_f32s(q);
    let mut out = ProbSums::default();
    for (k, (pc, qc)) in pv.chunks(FLUSH).zip(qv.chunks(FLUSH)).enumerate() {
        out.merge(&prob_vectors(s, div, pc, qc, p, q, k * FLUSH * lanes)?);
    }
    if !pt.is_empty() {
        // Zero padding is harmless: t(0, 0) = 0 and 0·ln 0 = 0.
        let (x, y) = (s.partial_load_f32s(pt), s.partial_load_f32s(qt));
        let start = p.len() - pt.len();
        if all(s, regular(s, x, y)) {
            out.merge(&prob_vectors(s, div, &[x], &[y], p, q, start)?);
        } else {
            prob_lanes_exact(div, pt, qt, start, &mut out)?;
        }
    }
    Ok(out)
}

/// Sums over up to FLUSH vectors starting at element `start` of `p`, `q`.
#[inline(always)]
fn prob_vectors<S: Simd>(
    s: S,
    div: Divergence,
    pv: &[S::f32s],
    qv: &[S::f32s],
    p: &[f32],
    q: &[f32],
    start: usize,
) -> Result<ProbSums, Bad> {
    let zero = s.splat_f32s(0.0);
    let mut acc = ProbAcc::<S> {
        main: zero,
        main2: zero,
        sp: zero,
        sq: zero,
        diff: zero,
        diff_lo: zero,
    };
    let mut extra = ProbSums::default();
    let lanes = S::F32_LANES;
    debug_assert!(pv.len() <= 32);
    // Vectors for the exact path are only marked here: a call inside the loop would make
    // the compiler keep the accumulators in memory.
    let mut irregular = 0u32;
    for (i, (&x, &y)) in pv.iter().zip(qv).enumerate() {
        if all(s, regular(s, x, y)) {
            prob_step(s, div, x, y, &mut acc);
        } else {
            irregular |= 1 << i;
        }
    }
    while irregular != 0 {
        let i = irregular.trailing_zeros() as usize;
        irregular &= irregular - 1;
        let r = start + i * lanes..start + (i + 1) * lanes;
        prob_lanes_exact(div, &p[r.clone()], &q[r.clone()], r.start, &mut extra)?;
    }
    let mut out = ProbSums {
        main: lanes_sum(s, acc.main),
        main2: lanes_sum(s, acc.main2),
        sp: lanes_sum(s, acc.sp),
        sq: lanes_sum(s, acc.sq),
        diff: lanes_sum_f64(s, acc.diff) + lanes_sum_f64(s, acc.diff_lo),
    };
    out.merge(&extra);
    Ok(out)
}

/// w·ψ(x) where w·e^−x = `w_shift`: series near 0, direct form elsewhere.
#[inline(always)]
fn weighted_psi<S: Simd>(s: S, w: S::f32s, w_shift: S::f32s, x: S::f32s, near: S::m32s) -> S::f32s {
    let series = s.mul_f32s(w, s.mul_f32s(s.mul_f32s(x, x), horner(s, x, &PSI_P)));
    if all(s, near) {
        series
    } else {
        let direct = s.mul_add_e_f32s(w, x, s.sub_f32s(w_shift, w));
        s.select_f32s(near, series, direct)
    }
}

/// Rows at most this long go through [`short_rows`] when they are probabilities.
pub use crate::consts::SHORT_ROW;

/// The sums of `S::F32_LANES` short rows, lane r holding row r's (from [`short_rows`]).
pub struct RowLanes<S: Simd>(ProbAcc<S>);

impl<S: Simd> RowLanes<S> {
    /// The group's sums as the lane finisher takes them.
    #[inline(always)]
    pub fn lane_sums(&self, s: S) -> LaneSums<S> {
        let acc = &self.0;
        LaneSums {
            main: acc.main,
            main2: acc.main2,
            sp: acc.sp,
            sq: acc.sq,
            diff: s.add_f32s(acc.diff, acc.diff_lo),
        }
    }

    /// Each row's sums in f64, as the row-by-row path hands them on.
    #[inline(always)]
    pub fn to_sums(&self, s: S, out: &mut [ProbSums]) {
        let acc = &self.0;
        let lanes = |v: S::f32s| {
            let mut buf = [0f32; 16];
            s.partial_store_f32s(&mut buf, v);
            buf
        };
        let (main, main2) = (lanes(acc.main), lanes(acc.main2));
        let (sp, sq) = (lanes(acc.sp), lanes(acc.sq));
        let (diff, diff_lo) = (lanes(acc.diff), lanes(acc.diff_lo));
        for (r, o) in out.iter_mut().enumerate() {
            *o = ProbSums {
                main: main[r] as f64,
                main2: main2[r] as f64,
                sp: sp[r] as f64,
                sq: sq[r] as f64,
                diff: diff[r] as f64 + diff_lo[r] as f64,
            };
        }
    }
}

/// Sums of `S::F32_LANES` consecutive short probability rows at once, one row per lane.
///
/// Horizontal reductions would cost more than the arithmetic for 16-column rows (W2), so
/// the rows are transposed through `scratch` and summed column by column: each lane ends up
/// holding its row's sums. `None` when some value needs the exact path; the caller then
/// runs those rows one by one.
#[inline(always)]
pub fn short_rows<S: Simd, T: Element>(
    s: S,
    div: Divergence,
    p: &[T],
    q: &[T],
    cols: usize,
    scratch: &mut Scratch,
) -> Option<RowLanes<S>> {
    let lanes = S::F32_LANES;
    debug_assert!(cols <= SHORT_ROW && p.len() == lanes * cols);
    let Scratch {
        a,
        b,
        wide_p,
        wide_q,
    } = scratch;
    // f16 / bf16 groups are widened to f32 first; f32 is read in place.
    let (p, q): (&[f32], &[f32]) = if T::DTYPE == crate::Dtype::F32 {
        (bytemuck::cast_slice(p), bytemuck::cast_slice(q))
    } else {
        T::widen_into(p, wide_p);
        T::widen_into(q, wide_q);
        (&wide_p[..p.len()], &wide_q[..q.len()])
    };
    transpose::rows_to_columns(s, p, cols, a);
    transpose::rows_to_columns(s, q, cols, b);
    let (xv, _) = S::as_simd_f32s(&a[..cols * lanes]);
    let (yv, _) = S::as_simd_f32s(&b[..cols * lanes]);
    // `div` as a constant in each arm: the loop is generated once per divergence, without a
    // `match` per vector (+6% on W2; on long rows the same gained nothing and doubled the
    // crate's compile time, so it is done here only).
    match div {
        Divergence::Kl => columns(s, Divergence::Kl, xv, yv),
        Divergence::ReverseKl => columns(s, Divergence::ReverseKl, xv, yv),
        Divergence::SymmetricKl => columns(s, Divergence::SymmetricKl, xv, yv),
        Divergence::JensenShannon => columns(s, Divergence::JensenShannon, xv, yv),
        Divergence::CrossEntropy => columns(s, Divergence::CrossEntropy, xv, yv),
        Divergence::Entropy => columns(s, Divergence::Entropy, xv, yv),
    }
}

/// Sums of columns of short rows (see [`short_rows`]).
#[inline(always)]
fn columns<S: Simd>(s: S, div: Divergence, xv: &[S::f32s], yv: &[S::f32s]) -> Option<RowLanes<S>> {
    let zero = s.splat_f32s(0.0);
    let mut acc = ProbAcc::<S> {
        main: zero,
        main2: zero,
        sp: zero,
        sq: zero,
        diff: zero,
        diff_lo: zero,
    };
    for (&x, &y) in xv.iter().zip(yv) {
        if !all(s, regular(s, x, y)) {
            return None;
        }
        prob_step(s, div, x, y, &mut acc);
    }
    Some(RowLanes(acc))
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

/// The row's shift c from its first block (see `exact::row_shift`), with SIMD exponentials;
/// `None` when that block holds values only the f64 path handles.
#[inline(always)]
fn block_shift<S: Simd>(s: S, a: &[f32], b: &[f32]) -> Option<(f64, f64)> {
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
/// row's shift c = hi + lo (see [`LogitSums`]).
#[inline(always)]
pub fn logit_block<S: Simd>(
    s: S,
    div: Divergence,
    a: &[f32],
    b: &[f32],
    shift: (f64, f64),
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
    let need_a = matches!(div, Divergence::Kl | Divergence::SymmetricKl);
    let need_b = matches!(div, Divergence::ReverseKl | Divergence::SymmetricKl);
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
        for (&x, &y) in ac.iter().zip(bc) {
            let (da, db) = (s.sub_f32s(x, vma), s.sub_f32s(y, vmb));
            let wa = exp_nonpos(s, da);
            let wb = exp_nonpos(s, db);
            // Elements at the maximum weigh exactly 1: counted apart, so that the f32 sums
            // keep the small rest to its own precision (ln Σ of a peaked row needs it).
            let (at_a, at_b) = (s.equal_f32s(da, zero), s.equal_f32s(db, zero));
            na = s.add_f32s(na, s.select_f32s(at_a, one, zero));
            nb = s.add_f32s(nb, s.select_f32s(at_b, one, zero));
            sa = s.add_f32s(sa, s.select_f32s(at_a, zero, wa));
            sb = s.add_f32s(sb, s.select_f32s(at_b, zero, wb));
            if need_ea {
                ea = s.mul_add_e_f32s(wa, da, ea);
            }
            if need_eb {
                eb = s.mul_add_e_f32s(wa, db, eb);
            }
            if need_a || need_b {
                let (d_hi, d_lo) = two_diff(s, x, y);
                let xs = s.add_f32s(s.sub_f32s(d_hi, vc_hi), s.sub_f32s(d_lo, vc_lo));
                let axs = abs(s, xs);
                let near = s.less_than_or_equal_f32s(axs, s.splat_f32s(PSI_NEAR));
                if need_a {
                    xa = s.mul_add_e_f32s(wa, xs, xa);
                    axa = s.mul_add_e_f32s(wa, axs, axa);
                    pa = s.add_f32s(pa, weighted_psi(s, wa, s.mul_f32s(vg, wb), xs, near));
                }
                if need_b {
                    xb = s.mul_add_e_f32s(wb, xs, xb);
                    axb = s.mul_add_e_f32s(wb, axs, axb);
                    let nxs = neg(s, xs);
                    pb = s.add_f32s(pb, weighted_psi(s, wb, s.mul_f32s(vg_inv, wa), nxs, near));
                }
            }
        }
        out.sa += lanes_sum(s, na) + lanes_sum(s, sa);
        out.sb += lanes_sum(s, nb) + lanes_sum(s, sb);
        // ea, eb are sums of non-positive terms.
        out.ea -= lanes_sum(s, neg(s, ea));
        out.eb -= lanes_sum(s, neg(s, eb));
        out.xa += lanes_sum_f64(s, xa);
        out.xb += lanes_sum_f64(s, xb);
        out.ax_a += lanes_sum(s, axa);
        out.ax_b += lanes_sum(s, axb);
        out.psi_a += lanes_sum(s, pa);
        out.psi_b += lanes_sum(s, pb);
    }
    for (&x, &y) in at.iter().zip(bt) {
        exact::logit_element(x as f64, y as f64, &mut out, g);
    }
    // The ψ terms rest on g·wb = wa·e^−x: with g or 1/g outside f32's normal range they are
    // meaningless, and the row is finished in the plain form (or re-read).
    if out.shift_gap().abs().is_nan() || out.shift_gap().abs() > 80.0 {
        out.psi_a = f64::NAN;
        out.psi_b = f64::NAN;
    }
    Ok(out)
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
    (ma, lnsa, mb, lnsb): (f64, f64, f64, f64),
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
            return exact::logit_js_segment(a, b, (ma, lnsa, mb, lnsb));
        }
    }
    let (vma, vmb) = (s.splat_f32s(ma as f32), s.splat_f32s(mb as f32));
    let (vla, vlb) = (s.splat_f32s(lnsa as f32), s.splat_f32s(lnsb as f32));
    // c = ma − mb exactly (both are input values), and ln sb − ln sa as an f32 pair.
    let (c_hi, c_lo) = {
        let (x, y) = (ma as f32, mb as f32);
        let hi = x - y;
        let xv = hi + y;
        (hi, (x - xv) + ((xv - hi) - y))
    };
    let l = lnsb - lnsa;
    let (l_hi, l_lo) = (l as f32, (l - (l as f32) as f64) as f32);
    let (vc_hi, vc_lo) = (s.splat_f32s(c_hi), s.splat_f32s(c_lo));
    let (vl_hi, vl_lo) = (s.splat_f32s(l_hi), s.splat_f32s(l_lo));
    let half = s.splat_f32s(0.5);
    let zero = s.splat_f32s(0.0);
    let mut out = JsSums::default();
    for (ac, bc) in av.chunks(FLUSH).zip(bv.chunks(FLUSH)) {
        let (mut h, mut sp, mut sq) = (zero, zero, zero);
        for (&x, &y) in ac.iter().zip(bc) {
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
    if !at.is_empty() {
        let start = a.len() - at.len();
        let tail = exact::logit_js_segment(at, bt, (ma, lnsa, mb, lnsb)).map_err(|e| Bad {
            col: e.col + start,
            ..e
        })?;
        out.merge(&tail);
    }
    Ok(out)
}

/// Probabilities divided by their row sums, into scratch (rescaled re-reads and the second
/// JS pass).
#[inline(always)]
fn scale_block(a: &mut [f32], b: &mut [f32], (p, q): (f64, f64)) {
    let (p, q) = (p as f32, q as f32);
    for x in a.iter_mut() {
        *x *= p;
    }
    for x in b.iter_mut() {
        *x *= q;
    }
}

/// Sums over one piece of a row: the body every CPU path shares. For logits, `params` may
/// hold the row's shift (a piece of a split row, or a re-read); without it the piece is a
/// whole row and its first block gives the shift.
#[inline(always)]
pub fn segment<S: Simd, T: Element>(
    s: S,
    kernel: Kernel,
    params: RowParams,
    p: &[T],
    q: &[T],
    scratch: &mut Scratch,
) -> Result<Partial, Bad> {
    let shift = match (kernel, params) {
        (Kernel::Logits(_), RowParams::Shift { hi, lo }) => (hi, lo),
        (Kernel::Logits(_), _) => {
            let n = p.len().min(BLOCK);
            let (x, y): (&[f32], &[f32]) = if T::DTYPE == crate::Dtype::F32 {
                (bytemuck::cast_slice(&p[..n]), bytemuck::cast_slice(&q[..n]))
            } else {
                T::widen_into(&p[..n], &mut scratch.a);
                T::widen_into(&q[..n], &mut scratch.b);
                (&scratch.a[..n], &scratch.b[..n])
            };
            block_shift(s, x, y).unwrap_or_else(|| exact::row_shift(p, q))
        }
        _ => (0.0, 0.0),
    };
    let scale = match params {
        RowParams::Scale { p, q } if matches!(kernel, Kernel::Probs(_)) => Some((p, q)),
        _ => None,
    };
    let js_params = match params {
        RowParams::Softmax { ma, lnsa, mb, lnsb } => (ma, lnsa, mb, lnsb),
        _ => (0.0, 0.0, 0.0, 0.0),
    };
    let mut probs = ProbSums::default();
    let mut logits = LogitSums::default();
    let mut js = JsSums::default();
    for (bi, (pb, qb)) in p.chunks(BLOCK).zip(q.chunks(BLOCK)).enumerate() {
        let (x, y): (&[f32], &[f32]) = if T::DTYPE == crate::Dtype::F32 && scale.is_none() {
            (bytemuck::cast_slice(pb), bytemuck::cast_slice(qb))
        } else {
            let n = pb.len();
            T::widen_into(pb, &mut scratch.a);
            T::widen_into(qb, &mut scratch.b);
            if let Some(sc) = scale {
                scale_block(&mut scratch.a[..n], &mut scratch.b[..n], sc);
            }
            (&scratch.a[..n], &scratch.b[..n])
        };
        let relocate = |e: Bad| Bad {
            col: e.col + bi * BLOCK,
            ..e
        };
        match kernel {
            Kernel::Probs(div) => probs.merge(&prob_block(s, div, x, y).map_err(relocate)?),
            Kernel::Logits(div) => {
                logits.merge(&logit_block(s, div, x, y, shift).map_err(relocate)?)
            }
            Kernel::LogitsJs => js.merge(&logit_js_block(s, x, y, js_params).map_err(relocate)?),
        }
    }
    Ok(match kernel {
        Kernel::Probs(_) => Partial::Probs(probs),
        Kernel::Logits(_) => Partial::Logits(logits),
        Kernel::LogitsJs => Partial::Js(js),
    })
}
