//! The f32 SIMD kernels, generic over pulp's `Simd`: one block of a row at a time.
//!
//! A block's sums are kept in f32 lanes (each lane adds at most FLUSH terms) and then added
//! into f64, so rounding error stays flat however long the row is. Vectors holding anything
//! outside the fast path's range (NaN, negatives, ±inf, magnitudes beyond the kernels' range)
//! go to the exact f64 path (`semantics::exact`), which also reports bad input.
//!
//! - `probs`: probability rows (and short rows a lane per row),
//! - `logits`: logits rows and Jensen–Shannon over logits.

mod agree_f64;
mod js_f64;
mod logits;
mod logits_f64;
mod probs;
mod probs_f64;

pub use probs::{short_rows, SHORT_ROW};

use crate::consts::BLOCK;
use crate::element::{Dtype, Element};
use crate::semantics::exact;
use crate::semantics::plan::{Kernel, RowParams};
use crate::semantics::rows::Bad;
use crate::semantics::sums::{JsSums, LogitSums, Partial, ProbSums};
use half::{bf16, f16};
use logits::{block_shift, logit_block, logit_js_block};
use probs::{bf16_words_align, prob_block, Bf16Block, F16Block, LowParts};
use pulp::Simd;

/// Block-sized f32 buffers for widening f16/bf16 and for transformed inputs.
pub struct Scratch {
    a: Vec<f32>,
    b: Vec<f32>,
    /// The low parts of rescaled values in `a`, `b` (see [`affine_block`]).
    a_lo: Vec<f32>,
    b_lo: Vec<f32>,
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
            a_lo: vec![0.0; BLOCK],
            b_lo: vec![0.0; BLOCK],
            wide_p: vec![0.0; 16 * SHORT_ROW],
            wide_q: vec![0.0; 16 * SHORT_ROW],
        }
    }
}

/// Vectors a lane accumulator takes before it is flushed into f64: keeps every f32 lane
/// sum short (≤ 32 terms, relative error ≤ 2e-6 worst case) on every SIMD width, the
/// one-lane scalar level included.
pub(super) const FLUSH: usize = 32;

/// How far ahead of the element being summed the kernels ask for input (bytes): the
/// hardware's stream prefetcher alone left the arithmetic waiting on memory at the start of
/// every block (perf: the logits kernel's max scan held ~40% of its samples).
pub(super) const PREFETCH_AHEAD: usize = 4 * BLOCK;

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

/// Probabilities divided by their row sums (rescaled re-reads and the second JS pass): each
/// value split into its f32 value (`a`, `b`) and the rest (`a_lo`, `b_lo`), exactly (an FMA
/// gives x·s − fl(x·s)) or, with a pseudocount, to f64's rounding. Rounded to f32 alone,
/// each value would carry an error of 2^−24 of itself, which is all of p − q once KL is below
/// ~1e-6 (measured: 1e-4 relative at KL ≈ 5e-9). The scales' own rounding only scales a
/// whole row, which the finishing rules take from the sums.
#[inline(always)]
fn affine_block(
    (a, b): (&mut [f32], &mut [f32]),
    (a_lo, b_lo): (&mut [f32], &mut [f32]),
    (add, p, q): (f64, f64, f64),
) {
    // Values outside f32's range go to the exact path on their high part alone.
    let finite_or_zero = |hi: f32, lo: f32| if hi.is_finite() { lo } else { 0.0 };
    let product = |x: &mut f32, lo: &mut f32, s: f32| {
        let hi = *x * s;
        *lo = finite_or_zero(hi, x.mul_add(s, -hi));
        *x = hi;
    };
    // The pseudocount only touches values ≥ 0: negatives and NaN are still reported.
    let shifted = |x: &mut f32, lo: &mut f32, s: f64| {
        let v = if *x >= 0.0 {
            (*x as f64 + add) * s
        } else {
            *x as f64 * s
        };
        let hi = v as f32;
        *lo = finite_or_zero(hi, (v - hi as f64) as f32);
        *x = hi;
    };
    for (xs, los, s) in [(a, a_lo, p), (b, b_lo, q)] {
        if add == 0.0 {
            let s = s as f32;
            for (x, lo) in xs.iter_mut().zip(los.iter_mut()) {
                product(x, lo, s);
            }
        } else {
            for (x, lo) in xs.iter_mut().zip(los.iter_mut()) {
                shifted(x, lo, s);
            }
        }
    }
}

/// `p`, `q` as slices of `H` where `T` is `H` (bf16 and f16 have their own loops).
#[inline(always)]
fn as_pair<'a, H: Element, T: Element>(p: &'a [T], q: &'a [T]) -> Option<(&'a [H], &'a [H])> {
    if T::DTYPE != H::DTYPE {
        return None;
    }
    Some((
        bytemuck::try_cast_slice(p).ok()?,
        bytemuck::try_cast_slice(q).ok()?,
    ))
}

/// A piece of a row on the exact path (f64 inputs): f64 probability rows (`probs_f64`), f64
/// logits rows (`logits_f64`), Jensen–Shannon's second pass over them (`js_f64`) and their
/// agreement pass (`agree_f64`) in f64 lanes, with the exact path's sums; rescaled rows
/// element by element (`exact::segment`).
#[inline(always)]
pub fn exact_segment<S: Simd, T: Element>(
    s: S,
    kernel: Kernel,
    params: RowParams,
    p: &[T],
    q: &[T],
) -> Result<Partial, Bad> {
    if T::DTYPE != Dtype::F64 {
        return exact::segment(kernel, params, p, q);
    }
    let (pf, qf) = (bytemuck::cast_slice(p), bytemuck::cast_slice(q));
    match (kernel, params) {
        (Kernel::Probs(div), RowParams::None) => {
            probs_f64::segment(s, div, pf, qf).map(Partial::Probs)
        }
        (Kernel::Logits(_), RowParams::Shift { hi, lo }) => {
            logits_f64::segment(s, pf, qf, Some((hi, lo))).map(Partial::Logits)
        }
        (Kernel::Logits(_), RowParams::None) => {
            logits_f64::segment(s, pf, qf, None).map(Partial::Logits)
        }
        (Kernel::LogitsJs, RowParams::Softmax { ma, lnsa, mb, l }) => {
            js_f64::segment(s, pf, qf, (ma, lnsa, mb, l)).map(Partial::Js)
        }
        (Kernel::LogitsAgree, RowParams::Softmax { ma, lnsa, mb, l }) => {
            agree_f64::segment(s, pf, qf, (ma, lnsa, mb, l)).map(Partial::Agree)
        }
        _ => exact::segment(kernel, params, p, q),
    }
}

/// A whole logits row's shift on the exact path, by its maxima (`exact::max_shift`), taken
/// in f64 lanes for f64 rows: what each piece of a split row is given.
#[inline(always)]
pub fn exact_row_shift<S: Simd, T: Element>(s: S, p: &[T], q: &[T]) -> (f64, f64) {
    match as_pair::<f64, T>(p, q) {
        Some((a, b)) => logits_f64::row_max_shift(s, a, b),
        None => exact::max_shift(p, q),
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
            let (x, y) = (
                T::as_f32(&p[..n], &mut scratch.a),
                T::as_f32(&q[..n], &mut scratch.b),
            );
            block_shift(s, x, y).unwrap_or_else(|| exact::row_shift(p, q))
        }
        _ => (0.0, 0.0),
    };
    let scale = match params {
        RowParams::Affine { add, p, q } if matches!(kernel, Kernel::Probs(_)) => Some((add, p, q)),
        _ => None,
    };
    // (ma, ln sa, mb, l = ln sb − ln sa)
    let js_params = match params {
        RowParams::Softmax { ma, lnsa, mb, l } => (ma, lnsa, mb, l),
        _ => (0.0, 0.0, 0.0, 0.0),
    };
    if kernel == Kernel::LogitsAgree {
        // The CPU's reports take agreement from `cpu::agreeing` (SIMD, while the rows are in
        // cache) instead; this pass (f64, libm) is here so that every engine runs every plan.
        return exact::logit_agree_segment(p, q, js_params).map(Partial::Agree);
    }
    let mut probs = ProbSums::default();
    let mut logits = LogitSums::default();
    let mut js = JsSums::default();
    // bf16 probabilities (and f16 on AVX-512) are widened inside the kernel's loop, not
    // through scratch.
    let plain_probs = matches!(kernel, Kernel::Probs(_)) && scale.is_none();
    let in_loop =
        plain_probs && as_pair::<bf16, T>(p, q).is_some_and(|(p, q)| bf16_words_align(p, q));
    // F16Block declines (None) off AVX-512, and the block goes through scratch below.
    let f16_loop = plain_probs && T::DTYPE == Dtype::F16;
    for (bi, (pb, qb)) in p.chunks(BLOCK).zip(q.chunks(BLOCK)).enumerate() {
        let relocate = |e: Bad| Bad {
            col: e.col + bi * BLOCK,
            ..e
        };
        if let (true, Kernel::Probs(div), Some((p, q))) =
            (f16_loop, kernel, as_pair::<f16, T>(pb, qb))
        {
            if let Some(block) = s.vectorize(F16Block { div, p, q }) {
                probs.merge(&block.map_err(relocate)?);
                continue;
            }
        }
        let (x, y, lo): (&[f32], &[f32], LowParts) = match scale {
            None if in_loop => (&[], &[], None),
            None => (
                T::as_f32(pb, &mut scratch.a),
                T::as_f32(qb, &mut scratch.b),
                None,
            ),
            Some(sc) => {
                let n = pb.len();
                let Scratch {
                    a, b, a_lo, b_lo, ..
                } = &mut *scratch;
                T::widen_into(pb, a);
                T::widen_into(qb, b);
                affine_block(
                    (&mut a[..n], &mut b[..n]),
                    (&mut a_lo[..n], &mut b_lo[..n]),
                    sc,
                );
                (&a[..n], &b[..n], Some((&a_lo[..n], &b_lo[..n])))
            }
        };
        match kernel {
            Kernel::Probs(div) => {
                let block = match in_loop.then(|| as_pair::<bf16, T>(pb, qb)).flatten() {
                    Some((p, q)) => s.vectorize(Bf16Block { div, p, q }),
                    None => prob_block(s, div, x, y, lo),
                };
                probs.merge(&block.map_err(relocate)?)
            }
            Kernel::Logits(div) => {
                let floor = logits.located_maxima();
                let mut block = logit_block(s, div, x, y, shift, floor).map_err(relocate)?;
                block.offset_tops(bi * BLOCK);
                logits.merge(&block)
            }
            Kernel::LogitsJs => js.merge(&logit_js_block(s, x, y, js_params).map_err(relocate)?),
            Kernel::LogitsAgree => unreachable!("taken above"),
        }
    }
    Ok(match kernel {
        Kernel::Probs(_) => Partial::Probs(probs),
        Kernel::Logits(_) => Partial::Logits(logits),
        Kernel::LogitsJs => Partial::Js(js),
        Kernel::LogitsAgree => unreachable!("taken above"),
    })
}

/// A row's (ma, ln sa, mb, ln sb − ln sa) as the first pass over logits gives them to the
/// second passes (`RowParams::Softmax`), in plain f64, for the kernels' unit tests.
#[cfg(test)]
fn softmax_params(a: &[f64], b: &[f64]) -> (f64, f64, f64, f64) {
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (ma, mb) = (max(a), max(b));
    let lse = |v: &[f64], m: f64| v.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    let lnsa = lse(a, ma);
    (ma, lnsa, mb, lse(b, mb) - lnsa)
}
