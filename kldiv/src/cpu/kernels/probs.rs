//! Probability rows: the divergences' t-terms, Σp, Σq and Σ(p − q) per block, and groups of
//! short rows summed a row per lane.

use super::super::simd_math::{all, gkl_d, ln, neg, prefetch_ahead, HUGE, TINY};
use super::super::transpose;
use super::{lanes_sum, lanes_sum_f64, Scratch, FLUSH, PREFETCH_AHEAD};
use crate::element::Element;
use crate::request::Divergence;
use crate::semantics::exact;
use crate::semantics::finish::LaneSums;
use crate::semantics::rows::Bad;
use crate::semantics::sums::ProbSums;
use half::{bf16, f16};
use pulp::{Simd, WithSimd};

/// Rows at most this long go through [`short_rows`] when they are probabilities.
pub use crate::consts::SHORT_ROW;

/// Lanes where the fast path is exact: both values within [TINY, HUGE], or one of them 0
/// and the other at most HUGE (zeros only reach the exact selects in `gkl` / `xlogy0`).
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

impl<S: Simd> ProbAcc<S> {
    #[inline(always)]
    fn zero(s: S) -> Self {
        let zero = s.splat_f32s(0.0);
        ProbAcc {
            main: zero,
            main2: zero,
            sp: zero,
            sq: zero,
            diff: zero,
            diff_lo: zero,
        }
    }

    /// The lanes added up, as a block's sums.
    #[inline(always)]
    fn sums(&self, s: S) -> ProbSums {
        ProbSums {
            main: lanes_sum(s, self.main),
            main2: lanes_sum(s, self.main2),
            sp: lanes_sum(s, self.sp),
            sq: lanes_sum(s, self.sq),
            diff: lanes_sum_f64(s, self.diff) + lanes_sum_f64(s, self.diff_lo),
        }
    }
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

/// The low parts of rescaled values (see `kernels::affine_block`): element i is
/// `x[i] + lo[i]` to f64's rounding, so that p − q keeps its digits when p ≈ q.
pub type LowParts<'a> = Option<(&'a [f32], &'a [f32])>;

/// [`LowParts`] as vectors.
type LowVectors<'a, S> = Option<(&'a [<S as Simd>::f32s], &'a [<S as Simd>::f32s])>;

/// One vector of terms. `lo` holds the low parts of `x` and `y` where they have them (a
/// rescaled read): p − q is then formed from both parts, exactly to f32's rounding of the
/// difference itself.
#[inline(always)]
fn prob_step<S: Simd>(
    s: S,
    div: Divergence,
    (x, y): (S::f32s, S::f32s),
    lo: Option<(S::f32s, S::f32s)>,
    acc: &mut ProbAcc<S>,
) {
    // x − y is exact when x ≈ y (Sterbenz); so are the low parts' difference's few bits.
    let with_lo = |v: S::f32s, l: Option<S::f32s>| match l {
        Some(l) => s.add_f32s(v, l),
        None => v,
    };
    let d = with_lo(s.sub_f32s(x, y), lo.map(|(xl, yl)| s.sub_f32s(xl, yl)));
    acc.sp = s.add_f32s(acc.sp, x);
    acc.sq = s.add_f32s(acc.sq, y);
    // TwoSum keeps what the addition drops.
    let sum = s.add_f32s(acc.diff, d);
    let dd = s.sub_f32s(sum, acc.diff);
    let err = s.add_f32s(s.sub_f32s(acc.diff, s.sub_f32s(sum, dd)), s.sub_f32s(d, dd));
    acc.diff = sum;
    acc.diff_lo = s.add_f32s(acc.diff_lo, err);
    match div {
        Divergence::Kl => acc.main = s.add_f32s(acc.main, gkl_d(s, x, y, d)),
        Divergence::ReverseKl => acc.main = s.add_f32s(acc.main, gkl_d(s, y, x, neg(s, d))),
        Divergence::SymmetricKl => {
            acc.main = s.add_f32s(acc.main, gkl_d(s, x, y, d));
            acc.main2 = s.add_f32s(acc.main2, gkl_d(s, y, x, neg(s, d)));
        }
        Divergence::JensenShannon => {
            // x − m = d/2 and y − m = −d/2 exactly: m's rounding would otherwise stay in
            // t(x, m) + t(y, m) at second order (~2^−48·m a column, all of a JS of 1e-12).
            // Where m only scales (u's denominator, the far branch), rounding is harmless.
            let m = s.mul_f32s(s.add_f32s(x, y), s.splat_f32s(0.5));
            let dx = s.mul_f32s(d, s.splat_f32s(0.5));
            let t = s.add_f32s(gkl_d(s, x, m, dx), gkl_d(s, y, m, neg(s, dx)));
            // m = 0 only where x = y = 0, whose term is 0.
            let t = s.select_f32s(s.equal_f32s(m, s.splat_f32s(0.0)), m, t);
            acc.main = s.add_f32s(acc.main, t);
        }
        Divergence::CrossEntropy => acc.main = s.add_f32s(acc.main, xlogy0(s, x, y)),
        Divergence::Entropy => acc.main = s.add_f32s(acc.main, xlogy0(s, x, x)),
    }
}

/// Exact f64 handling of `p[range]`, `q[range]` into `extra`.
fn prob_lanes_exact<T: Element>(
    div: Divergence,
    p: &[T],
    q: &[T],
    start: usize,
    extra: &mut ProbSums,
) -> Result<(), Bad> {
    for (j, (&x, &y)) in p.iter().zip(q).enumerate() {
        exact::prob_element(div, x.to_f64(), y.to_f64(), extra).map_err(|(side, kind)| Bad {
            side,
            kind,
            col: start + j,
        })?;
    }
    Ok(())
}

/// Sums over one block of probabilities (len ≤ BLOCK), with the values' low parts where
/// they have them.
#[inline(always)]
pub fn prob_block<S: Simd>(
    s: S,
    div: Divergence,
    p: &[f32],
    q: &[f32],
    lo: LowParts,
) -> Result<ProbSums, Bad> {
    // Each arm compiles its own loop: plain reads keep no test of `lo` in theirs.
    match lo {
        None => prob_block_parts(s, div, p, q, None),
        Some(lo) => prob_block_parts(s, div, p, q, Some(lo)),
    }
}

/// [`prob_block`]'s body, once `lo`'s presence is known where it is compiled.
#[inline(always)]
fn prob_block_parts<S: Simd>(
    s: S,
    div: Divergence,
    p: &[f32],
    q: &[f32],
    lo: LowParts,
) -> Result<ProbSums, Bad> {
    let lanes = S::F32_LANES;
    let (pv, pt) = S::as_simd_f32s(p);
    let (qv, qt) = S::as_simd_f32s(q);
    let mut out = ProbSums::default();
    let lo_vectors = lo.map(|(a, b)| (S::as_simd_f32s(a), S::as_simd_f32s(b)));
    for (k, (pc, qc)) in pv.chunks(FLUSH).zip(qv.chunks(FLUSH)).enumerate() {
        let r = k * FLUSH..(k * FLUSH + pc.len());
        let lc = lo_vectors.map(|((a, _), (b, _))| (&a[r.clone()], &b[r.clone()]));
        out.merge(&prob_vectors(
            s,
            div,
            (pc, qc),
            lc,
            (p, q, lo),
            r.start * lanes,
        )?);
    }
    if !pt.is_empty() {
        // Zero padding is harmless: t(0, 0) = 0 and 0·ln 0 = 0.
        let (x, y) = (s.partial_load_f32s(pt), s.partial_load_f32s(qt));
        let lt =
            lo_vectors.map(|((_, a), (_, b))| [s.partial_load_f32s(a), s.partial_load_f32s(b)]);
        let start = p.len() - pt.len();
        let lc = lt
            .as_ref()
            .map(|[a, b]| (std::slice::from_ref(a), std::slice::from_ref(b)));
        out.merge(&prob_vectors(s, div, (&[x], &[y]), lc, (p, q, lo), start)?);
    }
    Ok(out)
}

/// Sums over up to FLUSH vectors (with their low parts, if any) starting at element `start`
/// of `p`, `q`.
#[inline(always)]
fn prob_vectors<S: Simd>(
    s: S,
    div: Divergence,
    (pv, qv): (&[S::f32s], &[S::f32s]),
    lo: LowVectors<S>,
    (p, q, lo_elems): (&[f32], &[f32], LowParts),
    start: usize,
) -> Result<ProbSums, Bad> {
    let mut acc = ProbAcc::<S>::zero(s);
    debug_assert!(pv.len() <= 32);
    // Vectors for the exact path are only marked here: a call inside the loop would make
    // the compiler keep the accumulators in memory.
    let mut irregular = 0u32;
    for (i, (x, y)) in pv.iter().zip(qv).enumerate() {
        prefetch_ahead(x, PREFETCH_AHEAD);
        prefetch_ahead(y, PREFETCH_AHEAD);
        let (x, y) = (*x, *y);
        if all(s, regular(s, x, y)) {
            prob_step(s, div, (x, y), lo.map(|(a, b)| (a[i], b[i])), &mut acc);
        } else {
            irregular |= 1 << i;
        }
    }
    let width = S::F32_LANES;
    with_marked(s, div, &acc, (irregular, width), (p, q, lo_elems), start)
}

/// The sums of `acc` and, from the exact path, of the vectors marked in `irregular` (bit i:
/// elements `start + i·width .. start + (i + 1)·width` of `p`, `q`, with their low parts
/// where they have them).
#[inline(always)]
fn with_marked<S: Simd, T: Element>(
    s: S,
    div: Divergence,
    acc: &ProbAcc<S>,
    (mut irregular, width): (u32, usize),
    (p, q, lo): (&[T], &[T], LowParts),
    start: usize,
) -> Result<ProbSums, Bad> {
    let mut extra = ProbSums::default();
    while irregular != 0 {
        let i = irregular.trailing_zeros() as usize;
        irregular &= irregular - 1;
        let r = start + i * width..(start + (i + 1) * width).min(p.len());
        match lo {
            None => prob_lanes_exact(div, &p[r.clone()], &q[r.clone()], r.start, &mut extra)?,
            Some((pl, ql)) => {
                for j in r {
                    let (x, y) = (p[j].to_f64() + pl[j] as f64, q[j].to_f64() + ql[j] as f64);
                    exact::prob_element(div, x, y, &mut extra).map_err(|(side, kind)| Bad {
                        side,
                        kind,
                        col: j,
                    })?;
                }
            }
        }
    }
    let mut out = acc.sums(s);
    out.merge(&extra);
    Ok(out)
}

/// Whether `p` and `q` start equally far from a 4-byte boundary, as [`prob_block_bf16`]
/// needs (always so for rows of one array pair read from files).
pub fn bf16_words_align(p: &[bf16], q: &[bf16]) -> bool {
    p.as_ptr() as usize % 4 == q.as_ptr() as usize % 4
}

/// Sums over one block of bf16 probabilities, widened inside the SIMD loop instead of
/// through scratch (which cost as much as the arithmetic): a bf16 is the top half of an f32,
/// so a vector of u32 words, two bf16 each, gives the even elements (word << 16) and the odd
/// ones (word & 0xffff0000) as two f32 vectors. Sums do not depend on the order; columns
/// sent to the exact path keep their own numbers. For `p`, `q` that [`bf16_words_align`].
#[inline(always)]
fn prob_block_bf16<S: Simd>(
    s: S,
    div: Divergence,
    p: &[bf16],
    q: &[bf16],
) -> Result<ProbSums, Bad> {
    // A row starting between two words is peeled by one element.
    let head = (p.as_ptr() as usize % 4) / 2;
    let words = p.len().saturating_sub(head) / 2;
    let body = head..head + 2 * words;
    match (
        bytemuck::try_cast_slice::<bf16, u32>(&p[body.clone()]),
        bytemuck::try_cast_slice::<bf16, u32>(&q[body]),
    ) {
        (Ok(pw), Ok(qw)) => {
            let (pv, _) = S::as_simd_u32s(pw);
            let (qv, _) = S::as_simd_u32s(qw);
            bf16_block_body(s, div, (pv, qv), p, q, head)
        }
        // Unequal alignment (see `bf16_words_align`): correct, only slow.
        _ => {
            let mut out = ProbSums::default();
            prob_lanes_exact(div, p, q, 0, &mut out)?;
            Ok(out)
        }
    }
}

/// [`prob_block_bf16`] as its own function per SIMD level (`s.vectorize(Bf16Block {..})`):
/// inlined into the kernels of every element type, it would be compiled for each of them.
pub struct Bf16Block<'a> {
    pub div: Divergence,
    pub p: &'a [bf16],
    pub q: &'a [bf16],
}

impl WithSimd for Bf16Block<'_> {
    type Output = Result<ProbSums, Bad>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Self::Output {
        prob_block_bf16(s, self.div, self.p, self.q)
    }
}

/// [`prob_block_bf16`] once `p` and `q` are seen as vectors of words from element `head`.
#[inline(always)]
fn bf16_block_body<S: Simd>(
    s: S,
    div: Divergence,
    (pv, qv): (&[S::u32s], &[S::u32s]),
    p: &[bf16],
    q: &[bf16],
    head: usize,
) -> Result<ProbSums, Bad> {
    let mut out = widened_block(s, div, &p[..head], &q[..head], 0)?;
    let step = FLUSH / 2;
    for (k, (pc, qc)) in pv.chunks(step).zip(qv.chunks(step)).enumerate() {
        let start = head + 2 * k * step * S::F32_LANES;
        out.merge(&prob_pairs(s, div, pc, qc, p, q, start)?);
    }
    let end = head + 2 * pv.len() * S::F32_LANES;
    out.merge(&widened_block(s, div, &p[end..], &q[end..], end)?);
    Ok(out)
}

/// Sums over one block of f16 probabilities on AVX-512, widened inside the SIMD loop
/// (`vcvtph2ps`, 16 at a time) instead of through scratch, which took as long as the
/// arithmetic (W1 f16 ran at 0.6× f32). `None` on other SIMD levels: the caller widens
/// into scratch as before.
pub struct F16Block<'a> {
    pub div: Divergence,
    pub p: &'a [f16],
    pub q: &'a [f16],
}

impl WithSimd for F16Block<'_> {
    type Output = Option<Result<ProbSums, Bad>>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Self::Output {
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = super::super::simd_math::as_v4(s) {
            return Some(prob_block_f16(v4, self.div, self.p, self.q));
        }
        let _ = s;
        None
    }
}

/// [`F16Block`] on AVX-512.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prob_block_f16(
    v4: pulp::x86::V4,
    div: Divergence,
    p: &[f16],
    q: &[f16],
) -> Result<ProbSums, Bad> {
    use pulp::x86::V4;
    let widen = |v: &[f16]| -> <V4 as Simd>::f32s {
        // SAFETY: `v` holds 16 f16 (32 bytes); an unaligned load reads exactly those.
        let h = unsafe { v4.avx._mm256_loadu_si256(v.as_ptr().cast()) };
        pulp::cast(v4.avx512f._mm512_cvtph_ps(h))
    };
    let lanes = 16;
    let mut out = ProbSums::default();
    let full = p.len() / lanes;
    for k in (0..full).step_by(FLUSH) {
        let mut acc = ProbAcc::<V4>::zero(v4);
        let mut irregular = 0u32;
        for i in 0..(full - k).min(FLUSH) {
            let e = (k + i) * lanes;
            let (ps, qs) = (&p[e..e + lanes], &q[e..e + lanes]);
            prefetch_ahead(&ps[0], PREFETCH_AHEAD);
            prefetch_ahead(&qs[0], PREFETCH_AHEAD);
            let (x, y) = (widen(ps), widen(qs));
            if all(v4, regular(v4, x, y)) {
                prob_step(v4, div, (x, y), None, &mut acc);
            } else {
                irregular |= 1 << i;
            }
        }
        out.merge(&with_marked(
            v4,
            div,
            &acc,
            (irregular, lanes),
            (p, q, None),
            k * lanes,
        )?);
    }
    let end = full * lanes;
    out.merge(&widened_block(v4, div, &p[end..], &q[end..], end)?);
    Ok(out)
}

/// The even elements of a vector of bf16 pairs, as f32.
#[inline(always)]
fn even<S: Simd>(s: S, w: S::u32s) -> S::f32s {
    s.transmute_f32s_u32s(s.wrapping_dyn_shl_u32s(w, s.splat_u32s(16)))
}

/// The odd elements of a vector of bf16 pairs, as f32.
#[inline(always)]
fn odd<S: Simd>(s: S, w: S::u32s) -> S::f32s {
    s.transmute_f32s_u32s(s.and_u32s(w, s.splat_u32s(0xffff_0000)))
}

/// [`prob_block`] of fewer than 2·lanes + 1 f16/bf16 values (a block's edges), widened on
/// the stack; columns numbered from `start`.
#[inline(always)]
fn widened_block<S: Simd, T: Element>(
    s: S,
    div: Divergence,
    p: &[T],
    q: &[T],
    start: usize,
) -> Result<ProbSums, Bad> {
    if p.is_empty() {
        return Ok(ProbSums::default());
    }
    let (mut x, mut y) = ([0f32; 33], [0f32; 33]);
    let n = p.len();
    T::widen_into(p, &mut x[..n]);
    T::widen_into(q, &mut y[..n]);
    prob_block(s, div, &x[..n], &y[..n], None).map_err(|e| Bad {
        col: e.col + start,
        ..e
    })
}

/// Sums over up to FLUSH / 2 vectors of bf16 pairs (see [`prob_block_bf16`]) starting at
/// element `start` of `p`, `q`.
#[inline(always)]
fn prob_pairs<S: Simd>(
    s: S,
    div: Divergence,
    pw: &[S::u32s],
    qw: &[S::u32s],
    p: &[bf16],
    q: &[bf16],
    start: usize,
) -> Result<ProbSums, Bad> {
    let mut acc = ProbAcc::<S>::zero(s);
    debug_assert!(pw.len() <= 32);
    let mut irregular = 0u32;
    for (i, (a, b)) in pw.iter().zip(qw).enumerate() {
        prefetch_ahead(a, PREFETCH_AHEAD);
        prefetch_ahead(b, PREFETCH_AHEAD);
        let (a, b) = (*a, *b);
        let (xe, ye, xo, yo) = (even(s, a), even(s, b), odd(s, a), odd(s, b));
        if all(s, s.and_m32s(regular(s, xe, ye), regular(s, xo, yo))) {
            prob_step(s, div, (xe, ye), None, &mut acc);
            prob_step(s, div, (xo, yo), None, &mut acc);
        } else {
            irregular |= 1 << i;
        }
    }
    with_marked(
        s,
        div,
        &acc,
        (irregular, 2 * S::F32_LANES),
        (p, q, None),
        start,
    )
}

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
    // A group is 1 KiB per side (W2) with little arithmetic per byte, and the groups come in
    // order: ask for the lines PREFETCH_AHEAD bytes on now, as the long-row loops do, so
    // that the next groups' reads overlap this one's transpose and sums.
    if let (Some(p0), Some(q0)) = (p.first(), q.first()) {
        for off in (0..std::mem::size_of_val(p)).step_by(64) {
            prefetch_ahead(p0, PREFETCH_AHEAD + off);
            prefetch_ahead(q0, PREFETCH_AHEAD + off);
        }
    }
    let Scratch {
        a,
        b,
        wide_p,
        wide_q,
        ..
    } = scratch;
    // f16 / bf16 are widened on the way (in registers on AVX-512, through `wide_*` elsewhere).
    transpose::elements_to_columns(s, p, cols, a, wide_p);
    transpose::elements_to_columns(s, q, cols, b, wide_q);
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
    let mut acc = ProbAcc::<S>::zero(s);
    for (&x, &y) in xv.iter().zip(yv) {
        if !all(s, regular(s, x, y)) {
            return None;
        }
        prob_step(s, div, (x, y), None, &mut acc);
    }
    Some(RowLanes(acc))
}
