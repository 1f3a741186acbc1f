//! Per-row statistics beyond the divergence, with the SIMD kernels' arithmetic: each side's
//! top K (argmax for K = 1), its log-normaliser (ln Σ e^x for logits and log-probabilities,
//! ln Σ x for probabilities), and Σ min(p, q). The report needs them for targets (NLL, Δp),
//! "same top" and the agreement statistics; in f64 with libm they cost 4–14× the divergence.
//!
//! One read of each side per row (the maximum is kept per 512-element block and the running
//! sum rescaled when it grows), plus one more only for Σ min(p, q); rows of logits whose
//! maxima and log-sum-exps the divergence pass gave take one read of both sides for all of it
//! (`row_stats_given`). Top K compares the raw values (softmax and division by Σ are
//! monotone), lower index first on ties. Rows holding anything else than finite values and
//! −inf masks (probabilities: finite values ≥ 0), rows without mass, f64 rows, and rows with
//! fewer than K candidates give `None`: the caller computes those in f64 (`summary`).
//!
//! Accuracy: exponentials within 3 ulp of f32, lane sums of at most FLUSH (32) terms added into f64
//! per block: ln Σ within 2e-6 absolute, so NLL within 2e-6 and Σ min within 2e-6·Σ.

use super::kernels::{FLUSH, PREFETCH_AHEAD};
use super::simd_math::{abs, all, any, exp_nonpos, prefetch_ahead};
use super::{pool, CpuEngine};
use crate::consts::{BIG_LOGIT, BLOCK};
use crate::element::{Dtype, Element};
use crate::request::InputForm;
use crate::semantics::sums::RowTops;
use pulp::{Simd, WithSimd};

/// The largest K a caller may ask for.
pub const MAX_TOP: usize = 16;

/// What to compute for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// Indices of the K largest values of each side (1: the argmax), at most [`MAX_TOP`].
    pub top: usize,
    /// Each side's log-normaliser (`SideStats::ln_sum`: needed for ln p, p_max and Σ min;
    /// without it only the top K is computed and `ln_sum` is NaN).
    pub ln_sum: bool,
    /// Σ min(p, q) over the normalised rows (implies `ln_sum`).
    pub sum_min: bool,
}

/// One side of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SideStats {
    /// The K largest values' indices, largest first; `top[..k]` is filled.
    pub top: [u32; MAX_TOP],
    /// The largest value.
    pub max: f32,
    /// Logits: ln Σ e^(x − max) (so ln p_i = x_i − max − ln_sum); probabilities: ln Σ x.
    pub ln_sum: f64,
}

impl SideStats {
    /// ln p of column `i` of `row` (the row this was computed from).
    pub fn ln_prob<T: Element>(&self, input: InputForm, row: &[T], i: usize) -> f64 {
        match input {
            InputForm::Probabilities => row[i].to_f64().ln() - self.ln_sum,
            _ => (row[i].to_f64() - self.max as f64) - self.ln_sum,
        }
    }

    /// The largest probability.
    pub fn p_max(&self, input: InputForm) -> f64 {
        match input {
            InputForm::Probabilities => ((self.max as f64).ln() - self.ln_sum).exp(),
            _ => (-self.ln_sum).exp(),
        }
    }
}

/// Both sides of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats {
    pub p: SideStats,
    pub q: SideStats,
    /// Σ min(p, q), when asked for.
    pub sum_min: f64,
}

impl CpuEngine {
    /// [`RowStats`] of each row of row-major `p`, `q` (`cols` wide), or `None` for a row the
    /// f64 path must compute (see the module's notes).
    pub fn row_stats<T: Element>(
        &self,
        input: InputForm,
        p: &[T],
        q: &[T],
        cols: usize,
        want: Want,
    ) -> Vec<Option<RowStats>> {
        self.row_stats_given(input, p, q, cols, want, &[])
    }

    /// [`CpuEngine::row_stats`] where the divergence pass already gave rows of logits their
    /// maxima and log-sum-exps (`known`, one per row, or empty): those rows' log-normalisers
    /// are taken from it instead of two more exponentials per element.
    pub fn row_stats_given<T: Element>(
        &self,
        input: InputForm,
        p: &[T],
        q: &[T],
        cols: usize,
        want: Want,
        known: &[Option<RowTops>],
    ) -> Vec<Option<RowStats>> {
        let rows = p.len().checked_div(cols).unwrap_or(0);
        let known = if known.len() == rows { known } else { &[] };
        if T::DTYPE == Dtype::F64 || want.top == 0 || want.top > MAX_TOP || q.len() != p.len() {
            return vec![None; rows];
        }
        let per_task = ((1 << 16) / cols.max(1)).max(1);
        let mut out = vec![None; rows];
        let level = self.level;
        pool::chunks_mut(&mut out, per_task, |k, slots| {
            let r0 = k * per_task;
            let span = r0 * cols..(r0 + slots.len()) * cols;
            level.run(StatsTask {
                input,
                p: &p[span.clone()],
                q: &q[span],
                cols,
                want,
                known: known.get(r0..r0 + slots.len()).unwrap_or(&[]),
                out: slots,
            })
        });
        out
    }
}

struct StatsTask<'a, T> {
    input: InputForm,
    p: &'a [T],
    q: &'a [T],
    cols: usize,
    want: Want,
    known: &'a [Option<RowTops>],
    out: &'a mut [Option<RowStats>],
}

impl<T: Element> WithSimd for StatsTask<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) {
        let logits = self.input != InputForm::Probabilities;
        let mut buf = [0f32; BLOCK];
        for (r, slot) in self.out.iter_mut().enumerate() {
            let span = r * self.cols..(r + 1) * self.cols;
            *slot = row(
                s,
                logits,
                &self.p[span.clone()],
                &self.q[span],
                self.want,
                self.known.get(r).copied().flatten().filter(|_| logits),
                &mut buf,
            );
        }
    }
}

// (Helpers, not closures: only `#[inline(always)]` functions get the SIMD target features.)
#[inline(always)]
fn row<S: Simd, T: Element>(
    s: S,
    logits: bool,
    a: &[T],
    b: &[T],
    want: Want,
    known: Option<RowTops>,
    buf: &mut [f32; BLOCK],
) -> Option<RowStats> {
    let ln_sum = want.ln_sum || want.sum_min;
    if let (true, Some(t)) = (ln_sum, known) {
        return known_row(s, a, b, want, &t, buf);
    }
    let ps = side(s, logits, a, want.top, ln_sum, buf)?;
    let qs = side(s, logits, b, want.top, ln_sum, buf)?;
    let sum_min = if want.sum_min {
        sum_min(s, logits, a, b, (&ps, &qs), buf)
    } else {
        0.0
    };
    Some(RowStats {
        p: ps,
        q: qs,
        sum_min,
    })
}

/// Lanes that the fast path takes: logits finite within ±BIG_LOGIT or −inf; probabilities
/// finite and ≥ 0.
#[inline(always)]
fn valid<S: Simd>(s: S, logits: bool, v: S::f32s) -> S::m32s {
    if logits {
        s.or_m32s(
            s.less_than_or_equal_f32s(abs(s, v), s.splat_f32s(BIG_LOGIT)),
            s.equal_f32s(v, s.splat_f32s(f32::NEG_INFINITY)),
        )
    } else {
        s.and_m32s(
            s.greater_than_or_equal_f32s(v, s.splat_f32s(0.0)),
            s.less_than_or_equal_f32s(v, s.splat_f32s(f32::MAX)),
        )
    }
}

/// [`valid`] for one element.
#[inline(always)]
fn valid_one(logits: bool, e: f32) -> bool {
    if logits {
        e.abs() <= BIG_LOGIT || e == f32::NEG_INFINITY
    } else {
        (0.0..=f32::MAX).contains(&e)
    }
}

/// The sorted top list: values (largest first) and their indices, `len` filled.
struct Top {
    val: [f32; MAX_TOP],
    idx: [u32; MAX_TOP],
    len: usize,
    k: usize,
}

impl Top {
    fn new(k: usize) -> Top {
        Top {
            val: [f32::NEG_INFINITY; MAX_TOP],
            idx: [0; MAX_TOP],
            len: 0,
            k,
        }
    }

    /// The value a candidate must exceed to enter (−inf until the list is full).
    #[inline(always)]
    fn threshold(&self) -> f32 {
        if self.len < self.k {
            f32::NEG_INFINITY
        } else {
            self.val[self.k - 1]
        }
    }

    /// Inserts (x, i) after every value ≥ x: candidates arrive in index order, so ties keep
    /// the lower index first.
    fn insert(&mut self, x: f32, i: u32) {
        let at = self.val[..self.len].partition_point(|&v| v >= x);
        if at >= self.k {
            return;
        }
        let end = self.len.min(self.k - 1);
        for j in (at..end).rev() {
            self.val[j + 1] = self.val[j];
            self.idx[j + 1] = self.idx[j];
        }
        self.val[at] = x;
        self.idx[at] = i;
        self.len = (self.len + 1).min(self.k);
    }

    /// Offers a block `x` (maximum `bm`) starting at column `base`: only vectors with a lane
    /// above the threshold are looked at, and only when the block's maximum is.
    #[inline(always)]
    fn scan<S: Simd>(&mut self, s: S, x: &[f32], bm: f32, base: usize) {
        if bm <= self.threshold() {
            return;
        }
        let lanes = S::F32_LANES;
        let (xv, xt) = S::as_simd_f32s(x);
        for (j, &v) in xv.iter().enumerate() {
            if any(s, s.greater_than_f32s(v, s.splat_f32s(self.threshold()))) {
                for (l, &e) in x[j * lanes..(j + 1) * lanes].iter().enumerate() {
                    if e > self.threshold() {
                        self.insert(e, (base + j * lanes + l) as u32);
                    }
                }
            }
        }
        let start = xv.len() * lanes;
        for (l, &e) in xt.iter().enumerate() {
            if e > self.threshold() {
                self.insert(e, (base + start + l) as u32);
            }
        }
    }
}

/// One side's top K, maximum and log-normaliser, in one read.
#[inline(always)]
fn side<S: Simd, T: Element>(
    s: S,
    logits: bool,
    row: &[T],
    k: usize,
    ln_sum: bool,
    buf: &mut [f32; BLOCK],
) -> Option<SideStats> {
    let mut top = Top::new(k);
    // Logits: Σ e^(x − m) with m the running maximum; probabilities: Σ x.
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0f64;
    for (bi, block) in row.chunks(BLOCK).enumerate() {
        let x = T::as_f32(block, buf);
        let (xv, xt) = S::as_simd_f32s(x);
        let mut mx = s.splat_f32s(f32::NEG_INFINITY);
        for &v in xv {
            if !all(s, valid(s, logits, v)) {
                return None;
            }
            mx = s.max_f32s(mx, v);
        }
        let mut bm = s.reduce_max_f32s(mx);
        for &e in xt {
            if !valid_one(logits, e) {
                return None;
            }
            bm = bm.max(e);
        }
        top.scan(s, x, bm, bi * BLOCK);
        if !ln_sum {
            m = m.max(bm);
            // The mass test below needs only to know the row is not all zeros or −inf.
            sum = sum.max(if logits { 1.0 } else { bm as f64 });
        } else if logits {
            if bm > m {
                // Move the sum onto the new maximum (e^(m − bm) = 0 from −inf).
                sum *= ((m as f64) - (bm as f64)).exp();
                m = bm;
            }
            if m == f32::NEG_INFINITY {
                continue;
            }
            let vm = s.splat_f32s(m);
            let mut acc = s.splat_f32s(0.0);
            for (n, &v) in xv.iter().enumerate() {
                acc = s.add_f32s(acc, exp_nonpos(s, s.sub_f32s(v, vm)));
                if n % FLUSH == FLUSH - 1 {
                    sum += s.reduce_sum_f32s(acc) as f64;
                    acc = s.splat_f32s(0.0);
                }
            }
            sum += s.reduce_sum_f32s(acc) as f64;
            for &e in xt {
                sum += ((e - m) as f64).exp();
            }
        } else {
            m = m.max(bm);
            let mut acc = s.splat_f32s(0.0);
            for (n, &v) in xv.iter().enumerate() {
                acc = s.add_f32s(acc, v);
                if n % FLUSH == FLUSH - 1 {
                    sum += s.reduce_sum_f32s(acc) as f64;
                    acc = s.splat_f32s(0.0);
                }
            }
            sum += s.reduce_sum_f32s(acc) as f64;
            sum += xt.iter().map(|&e| e as f64).sum::<f64>();
        }
    }
    // No mass, or fewer candidates than K (−inf masks): the f64 path decides.
    let massless = if logits {
        m == f32::NEG_INFINITY
    } else {
        sum <= 0.0
    };
    if massless || !sum.is_finite() || top.len < k.min(row.len()) {
        return None;
    }
    Some(SideStats {
        top: top.idx,
        max: m,
        ln_sum: if ln_sum { sum.ln() } else { f64::NAN },
    })
}

/// Both sides' top K and Σ min(p, q) of a row of logits whose maxima and log-sum-exps the
/// divergence pass gave (so their log-normalisers are known): one read of both sides, the
/// sums formed as [`sum_min`] forms them. `None` where a side leaves the fast path or its
/// maximum is not the given one (checked at the end: until then the terms may be wrong,
/// never used).
#[inline(always)]
fn known_row<S: Simd, T: Element>(
    s: S,
    a: &[T],
    b: &[T],
    want: Want,
    t: &RowTops,
    buf: &mut [f32; BLOCK],
) -> Option<RowStats> {
    let (ma, mb) = (t.max_a as f32, t.max_b as f32);
    let (la, lb) = (t.lse_a - t.max_a, t.lse_b - t.max_b);
    // A given maximum is a value of the row (an f32, finite where the row has mass).
    let exact = ma as f64 == t.max_a && mb as f64 == t.max_b;
    if !(exact && ma.is_finite() && mb.is_finite() && la.is_finite() && lb.is_finite()) {
        return None;
    }
    let k = want.top;
    let mut buf_b = [0f32; BLOCK];
    let (vma, vmb) = (s.splat_f32s(ma), s.splat_f32s(mb));
    let (vka, vkb) = (s.splat_f32s(la as f32), s.splat_f32s(lb as f32));
    let (mut top_a, mut top_b) = (Top::new(k), Top::new(k));
    let (mut ra, mut rb) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    let neg_inf = s.splat_f32s(f32::NEG_INFINITY);
    // Only NaN, +inf and huge values leave the row: below the given maximum any value, −inf
    // included, is exact here (x − max is exact or its e^ is 0).
    let big = s.splat_f32s(BIG_LOGIT);
    let mut total = 0f64;
    for (bi, (pb, qb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
        let x = T::as_f32(pb, buf);
        let y = T::as_f32(qb, &mut buf_b);
        let (xv, xt) = S::as_simd_f32s(x);
        let (yv, yt) = S::as_simd_f32s(y);
        let (mut mxa, mut mxb) = (neg_inf, neg_inf);
        let mut ok = s.equal_f32s(neg_inf, neg_inf);
        let mut acc = s.splat_f32s(0.0);
        for (n, (ur, vr)) in xv.iter().zip(yv).enumerate() {
            prefetch_ahead(ur, PREFETCH_AHEAD);
            prefetch_ahead(vr, PREFETCH_AHEAD);
            let (u, v) = (*ur, *vr);
            ok = s.and_m32s(
                ok,
                s.and_m32s(
                    s.less_than_or_equal_f32s(u, big),
                    s.less_than_or_equal_f32s(v, big),
                ),
            );
            (mxa, mxb) = (s.max_f32s(mxa, u), s.max_f32s(mxb, v));
            acc = s.add_f32s(acc, logit_min(s, (u, vma, vka), (v, vmb, vkb)));
            if n % FLUSH == FLUSH - 1 {
                total += s.reduce_sum_f32s(acc) as f64;
                acc = s.splat_f32s(0.0);
            }
        }
        if !all(s, ok) {
            return None;
        }
        total += s.reduce_sum_f32s(acc) as f64;
        let (mut bma, mut bmb) = (s.reduce_max_f32s(mxa), s.reduce_max_f32s(mxb));
        for (&u, &v) in xt.iter().zip(yt) {
            if !(u <= BIG_LOGIT && v <= BIG_LOGIT) {
                return None;
            }
            (bma, bmb) = (bma.max(u), bmb.max(v));
            total += logit_min_one((u, ma, la), (v, mb, lb));
        }
        top_a.scan(s, x, bma, bi * BLOCK);
        top_b.scan(s, y, bmb, bi * BLOCK);
        (ra, rb) = (ra.max(bma), rb.max(bmb));
    }
    let kk = k.min(a.len());
    if ra != ma || rb != mb || top_a.len < kk || top_b.len < kk {
        return None;
    }
    let side = |top: &Top, max, ln_sum| SideStats {
        top: top.idx,
        max,
        ln_sum,
    };
    Some(RowStats {
        p: side(&top_a, ma, la),
        q: side(&top_b, mb, lb),
        sum_min: if want.sum_min { total } else { 0.0 },
    })
}

/// min(p, q) of logits u, v with their rows' maxima and log-normalisers:
/// e^min(u − ma − ln sa, v − mb − ln sb), the differences formed in that order (u − ma is
/// exact near the maximum, where the terms matter).
#[inline(always)]
fn logit_min<S: Simd>(
    s: S,
    (u, ma, ka): (S::f32s, S::f32s, S::f32s),
    (v, mb, kb): (S::f32s, S::f32s, S::f32s),
) -> S::f32s {
    let du = s.sub_f32s(s.sub_f32s(u, ma), ka);
    let dv = s.sub_f32s(s.sub_f32s(v, mb), kb);
    exp_nonpos(s, s.min_f32s(du, dv))
}

/// [`logit_min`] for one element pair (a block's tail), in f64.
#[inline(always)]
fn logit_min_one((u, ma, la): (f32, f32, f64), (v, mb, lb): (f32, f32, f64)) -> f64 {
    let du = (u as f64 - ma as f64) - la;
    let dv = (v as f64 - mb as f64) - lb;
    du.min(dv).exp()
}

/// Σ min(p, q) over a row whose sides' statistics are known (one more read of both).
#[inline(always)]
fn sum_min<S: Simd, T: Element>(
    s: S,
    logits: bool,
    a: &[T],
    b: &[T],
    (ps, qs): (&SideStats, &SideStats),
    buf: &mut [f32; BLOCK],
) -> f64 {
    let mut buf_b = [0f32; BLOCK];
    // Logits: min(p, q) = e^min(x − ma − ln sa, y − mb − ln sb); probabilities: min(x/Σx, y/Σy).
    let (ka, kb) = if logits {
        (ps.ln_sum as f32, qs.ln_sum as f32)
    } else {
        ((-ps.ln_sum).exp() as f32, (-qs.ln_sum).exp() as f32)
    };
    let (vma, vmb) = (s.splat_f32s(ps.max), s.splat_f32s(qs.max));
    let (vka, vkb) = (s.splat_f32s(ka), s.splat_f32s(kb));
    let mut total = 0f64;
    for (pb, qb) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let x = T::as_f32(pb, buf);
        let y = T::as_f32(qb, &mut buf_b);
        let (xv, xt) = S::as_simd_f32s(x);
        let (yv, yt) = S::as_simd_f32s(y);
        let mut acc = s.splat_f32s(0.0);
        for (n, (&u, &v)) in xv.iter().zip(yv).enumerate() {
            let term = if logits {
                logit_min(s, (u, vma, vka), (v, vmb, vkb))
            } else {
                s.min_f32s(s.mul_f32s(u, vka), s.mul_f32s(v, vkb))
            };
            acc = s.add_f32s(acc, term);
            if n % FLUSH == FLUSH - 1 {
                total += s.reduce_sum_f32s(acc) as f64;
                acc = s.splat_f32s(0.0);
            }
        }
        total += s.reduce_sum_f32s(acc) as f64;
        for (&u, &v) in xt.iter().zip(yt) {
            total += if logits {
                logit_min_one((u, ps.max, ps.ln_sum), (v, qs.max, qs.ln_sum))
            } else {
                (u as f64 * (-ps.ln_sum).exp()).min(v as f64 * (-qs.ln_sum).exp())
            };
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{argmax, ln_prob_of};
    use half::bf16;

    /// Indices of the k largest values in f64, largest first, lower index first on ties.
    fn top_f64(v: &[f64], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..v.len() as u32).collect();
        idx.sort_by(|&i, &j| v[j as usize].total_cmp(&v[i as usize]).then(i.cmp(&j)));
        idx.truncate(k);
        idx
    }

    fn probs_f64(input: InputForm, row: &[f64]) -> Vec<f64> {
        let w: Vec<f64> = match input {
            InputForm::Probabilities => row.to_vec(),
            _ => {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                row.iter().map(|x| (x - m).exp()).collect()
            }
        };
        let s: f64 = w.iter().sum();
        w.iter().map(|x| x / s).collect()
    }

    /// Random rows of several lengths (odd ones, one block and more), with ties, −inf masks
    /// and large offsets; every engine level; checked against the definitions in f64.
    #[test]
    fn agree_with_f64_definitions() {
        let mut seed = 7u64;
        let mut rnd = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64) / (1u64 << 53) as f64
        };
        for level in [
            crate::SimdLevel::Scalar,
            crate::SimdLevel::Avx2,
            crate::SimdLevel::Avx512,
        ] {
            let Ok(e) = CpuEngine::with_level(level) else {
                continue;
            };
            for input in [InputForm::Logits, InputForm::Probabilities] {
                for cols in [1usize, 3, 10, 17, 511, 512, 1000, 4099] {
                    let rows = 5;
                    let mut p = vec![0f32; rows * cols];
                    let mut q = vec![0f32; rows * cols];
                    for i in 0..rows * cols {
                        let (x, y) = (rnd(), rnd());
                        match input {
                            InputForm::Probabilities => {
                                // Quantised to produce ties; some zeros.
                                p[i] = (x * 8.0).floor() as f32 / 8.0;
                                q[i] = (y * 8.0).floor() as f32 / 8.0 + 1e-3;
                            }
                            _ => {
                                let off = if i / cols == 3 { 3e4 } else { 0.0 };
                                p[i] = ((x * 12.0).floor() - 6.0 + off) as f32;
                                q[i] = (p[i] as f64 + (y - 0.5) * 2.0) as f32;
                                if i % 7 == 3 && cols > 3 {
                                    p[i] = f32::NEG_INFINITY;
                                }
                            }
                        }
                    }
                    let want = Want {
                        top: 10,
                        ln_sum: true,
                        sum_min: true,
                    };
                    let got = e.row_stats(input, &p, &q, cols, want);
                    // Top K alone (no exponentials) gives the same indices.
                    let tops_only = Want {
                        ln_sum: false,
                        sum_min: false,
                        ..want
                    };
                    let got_tops = e.row_stats(input, &p, &q, cols, tops_only);
                    let half: Vec<bf16> = p.iter().map(|&x| bf16::from_f32(x)).collect();
                    let half_q: Vec<bf16> = q.iter().map(|&x| bf16::from_f32(x)).collect();
                    let got_half = e.row_stats(input, &half, &half_q, cols, want);
                    // Each logits row's maxima and log-sum-exps given, as the divergence
                    // pass gives them: the same statistics without computing the log-sums.
                    let known: Vec<Option<RowTops>> = (0..rows)
                        .map(|r| {
                            let span = r * cols..(r + 1) * cols;
                            Some(given_of(&p[span.clone()], &q[span]))
                        })
                        .collect();
                    let got_given = e.row_stats_given(input, &p, &q, cols, want, &known);
                    if input == InputForm::Probabilities {
                        assert_eq!(got_given, got, "only logits rows take what is given");
                    }
                    for r in 0..rows {
                        let span = r * cols..(r + 1) * cols;
                        let (a, b) = (&p[span.clone()], &q[span.clone()]);
                        let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
                        let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
                        let k = 10.min(cols);
                        let live = a64.iter().filter(|x| x.is_finite()).count();
                        let massless = a64.iter().sum::<f64>() == 0.0;
                        let Some(st) = got[r] else {
                            // Only rows with fewer candidates than K, or without mass, are
                            // left to f64.
                            assert!(live < k || massless, "{level:?} {input:?} {cols} row {r}");
                            continue;
                        };
                        let ctx = format!("{level:?} {input:?} cols {cols} row {r}");
                        assert_eq!(st.p.top[..k], top_f64(&a64, k)[..], "{ctx}");
                        assert_eq!(st.q.top[..k], top_f64(&b64, k)[..], "{ctx}");
                        assert_eq!(st.p.top[0] as usize, argmax(a), "{ctx}");
                        let t = got_tops[r].expect("the same rows take the fast path");
                        assert_eq!((t.p.top, t.q.top), (st.p.top, st.q.top), "{ctx}");
                        for t in [0, cols / 2, cols - 1] {
                            let want = ln_prob_of(input, a, t);
                            let got = st.p.ln_prob(input, a, t);
                            assert!(
                                (got - want).abs() <= 2e-6 || got == want,
                                "{ctx}: ln p({t}) {got} vs {want}"
                            );
                        }
                        let (pa, pb) = (probs_f64(input, &a64), probs_f64(input, &b64));
                        let sum_min: f64 = pa.iter().zip(&pb).map(|(x, y)| x.min(*y)).sum();
                        assert!((st.sum_min - sum_min).abs() <= 2e-6, "{ctx}: Σ min");
                        let g = got_given[r].expect("the same rows take the fast path");
                        assert_eq!((g.p.top, g.q.top), (st.p.top, st.q.top), "{ctx}");
                        assert!((g.sum_min - sum_min).abs() <= 2e-6, "{ctx}: Σ min, given");
                        for t in [0, cols / 2, cols - 1] {
                            let (got, want) = (g.q.ln_prob(input, b, t), ln_prob_of(input, b, t));
                            assert!((got - want).abs() <= 2e-6 || got == want, "{ctx}: given");
                        }
                        let p_max = pa.iter().copied().fold(0.0, f64::max);
                        assert!((st.p.p_max(input) - p_max).abs() <= 2e-6 * p_max, "{ctx}");
                        // bf16 rows of the same values, rounded: their own f64 definitions.
                        if let Some(h) = got_half[r] {
                            let ah: Vec<f64> =
                                half[span.clone()].iter().map(|x| x.to_f64()).collect();
                            assert_eq!(h.p.top[..k], top_f64(&ah, k)[..], "{ctx} bf16");
                        }
                    }
                }
            }
        }
    }

    /// Each side's maximum and log-sum-exp in f64, as the divergence pass gives them.
    fn given_of(a: &[f32], b: &[f32]) -> RowTops {
        let max_lse = |x: &[f32]| {
            let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
            (m, m + s.ln())
        };
        let ((max_a, lse_a), (max_b, lse_b)) = (max_lse(a), max_lse(b));
        RowTops {
            max_a,
            lse_a,
            max_b,
            lse_b,
            ..Default::default()
        }
    }

    /// A given maximum that is not the row's leaves the row to the f64 path.
    #[test]
    fn a_given_maximum_that_is_not_the_rows_is_not_trusted() {
        let e = CpuEngine::new();
        let want = Want {
            top: 1,
            ln_sum: true,
            sum_min: true,
        };
        let (p, q) = ([0.5f32, 1.0, 2.0], [1.0f32, 0.0, 0.5]);
        let good = given_of(&p, &q);
        let given = |t| e.row_stats_given(InputForm::Logits, &p, &q, 3, want, &[Some(t)])[0];
        let (own, g) = (
            e.row_stats(InputForm::Logits, &p, &q, 3, want)[0],
            given(good),
        );
        let (own, g) = (own.expect("fast path"), g.expect("fast path"));
        assert_eq!((g.p.top, g.q.top), (own.p.top, own.q.top));
        let want_ln = (good.lse_a - good.max_a, good.lse_b - good.max_b);
        assert_eq!((g.p.ln_sum, g.q.ln_sum), want_ln);
        assert!(given(RowTops { max_a: 1.0, ..good }).is_none());
        assert!(given(RowTops { max_b: 2.0, ..good }).is_none());
    }

    /// Given log-sums do not vouch for the row: NaN or +inf anywhere in it (in a vector or in
    /// the tail) still leaves it to the f64 path.
    #[test]
    fn a_given_row_with_nan_or_inf_is_left_to_f64() {
        let want = Want {
            top: 10,
            ln_sum: true,
            sum_min: true,
        };
        let cols = 1000;
        let p: Vec<f32> = (0..cols).map(|i| (i % 13) as f32 * 0.25).collect();
        let q: Vec<f32> = (0..cols).map(|i| (i % 7) as f32 * 0.5).collect();
        let good = given_of(&p, &q);
        for level in [crate::SimdLevel::Scalar, crate::SimdLevel::Avx512] {
            let Ok(e) = CpuEngine::with_level(level) else {
                continue;
            };
            let given = |a: &[f32], b: &[f32]| {
                e.row_stats_given(InputForm::Logits, a, b, cols, want, &[Some(good)])[0]
            };
            assert!(given(&p, &q).is_some(), "{level:?}: the clean row");
            for at in [3, 700, cols - 1] {
                for bad in [f32::NAN, f32::INFINITY] {
                    let (mut bad_p, mut bad_q) = (p.clone(), q.clone());
                    (bad_p[at], bad_q[at]) = (bad, bad);
                    assert!(given(&bad_p, &q).is_none(), "{level:?} p[{at}] = {bad}");
                    assert!(given(&p, &bad_q).is_none(), "{level:?} q[{at}] = {bad}");
                }
            }
        }
    }

    /// NaN, +inf and (for probabilities) negative values leave the row to the f64 path;
    /// so do f64 inputs and rows without mass.
    #[test]
    fn rows_outside_the_fast_path_are_left_to_f64() {
        let e = CpuEngine::new();
        let want = Want {
            top: 1,
            ln_sum: false,
            sum_min: false,
        };
        let ok = [0.5f32, 1.0, 2.0];
        for bad in [f32::NAN, f32::INFINITY] {
            let row = [0.5f32, bad, 2.0];
            assert!(e.row_stats(InputForm::Logits, &row, &ok, 3, want)[0].is_none());
            assert!(e.row_stats(InputForm::Logits, &ok, &row, 3, want)[0].is_none());
        }
        let neg = [0.5f32, -0.1, 0.6];
        assert!(e.row_stats(InputForm::Probabilities, &neg, &ok, 3, want)[0].is_none());
        let masked = [f32::NEG_INFINITY; 3];
        assert!(e.row_stats(InputForm::Logits, &masked, &ok, 3, want)[0].is_none());
        let zeros = [0f32; 3];
        assert!(e.row_stats(InputForm::Probabilities, &zeros, &ok, 3, want)[0].is_none());
        let ok64 = [0.5f64, 1.0, 2.0];
        assert!(e.row_stats(InputForm::Logits, &ok64, &ok64, 3, want)[0].is_none());
        assert!(e.row_stats(InputForm::Logits, &ok, &ok, 3, want)[0].is_some());
    }
}
