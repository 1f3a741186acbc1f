//! The sides of a comparison, where one is a llama.cpp `.kld` base: its scored positions
//! against an array of the same rows or of every position.

use super::kld::KldLayout;
use super::tensor::TensorFile;
use crate::element::Element;
use crate::error::{Error, Result};
use std::borrow::Cow;
use std::sync::Mutex;

/// One side of a comparison: a file, and for an array compared with a llama.cpp `.kld` base
/// that holds every token position, the layout whose scored positions are its rows.
pub struct Side<'a> {
    pub file: &'a TensorFile,
    scored_of: Option<KldLayout>,
    /// Logits are divided by this (1: as stored): in f32 where that is exact (a power of
    /// two), else in f64 (`run_block`).
    temperature: f64,
    /// Columns read from each row: all of them, or a prefix (`with_cols`).
    cols: usize,
    /// A block's quotients by a power-of-two temperature, kept from block to block (a fresh
    /// buffer per block cost more in page faults than the division).
    quotients: Mutex<Vec<f32>>,
    /// A block's quotients in f64 (any other temperature), kept the same way.
    quotients_f64: Mutex<Vec<f64>>,
}

impl Side<'_> {
    /// Logits of this side divided by `t` (> 0, finite) before their softmax.
    pub fn with_temperature(mut self, t: f64) -> Result<Self> {
        if !(t > 0.0 && t.is_finite()) {
            return Err(Error::InvalidRequest(format!(
                "a temperature must be positive and finite, not {t}"
            )));
        }
        self.temperature = t;
        Ok(self)
    }

    /// Only the first `cols` columns of each row (≤ the file's): two vocabularies compared
    /// over their common prefix, as ExLlamaV3 does (each row then renormalised by its
    /// softmax, or by `--normalize` for probabilities).
    pub fn with_cols(mut self, cols: usize) -> Result<Self> {
        if cols == 0 || cols > self.file.cols() {
            return Err(Error::InvalidRequest(format!(
                "{} has {} columns: cannot read the first {cols}",
                self.file.label(),
                self.file.cols()
            )));
        }
        self.cols = cols;
        Ok(self)
    }

    pub fn rows(&self) -> usize {
        self.scored_of.map_or(self.file.rows(), |l| l.scored_rows())
    }

    /// Reads rows `[r0, r1)` ahead (see `TensorFile::read_ahead`), for the next block (see
    /// [`paged`]).
    pub fn read_ahead(&self, r0: usize, r1: usize) {
        if self.scored_of.is_none() {
            self.file.read_ahead(r0, r1.min(self.rows()));
        }
    }

    /// Unmaps rows `[r0, r1)` from this process (see `TensorFile::release`).
    pub fn release(&self, r0: usize, r1: usize) {
        if self.scored_of.is_none() {
            self.file.release(r0, r1);
        }
    }

    /// Columns read from each row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `[r0, r1)` divided by the temperature as f32 values, in `buf`, where the
    /// temperature is a power of two and each quotient is exactly an f32; else `None`.
    /// A side without a temperature is borrowed as it is read (no copy).
    fn tempered_f32<'s>(
        &'s self,
        (r0, r1): (usize, usize),
        buf: &'s mut Vec<f32>,
    ) -> Option<Cow<'s, [f32]>> {
        let v = self.unscaled::<f32>(r0, r1);
        if self.temperature == 1.0 {
            return Some(v);
        }
        let inverse = power_of_two_inverse(self.temperature)?;
        quotients_f32(&v, inverse, buf).then_some(Cow::Borrowed(&buf[..]))
    }

    /// Rows `[r0, r1)` divided by the temperature in f64, in `buf`: each x/t the f64
    /// division's, from the values as stored (borrowed where the file holds f32 or f64),
    /// formed in parallel.
    fn tempered_f64<'s>(&'s self, (r0, r1): (usize, usize), buf: &'s mut Vec<f64>) -> &'s [f64] {
        if self.file.dtype() == crate::Dtype::F64 {
            quotients_f64(&self.unscaled::<f64>(r0, r1), self.temperature, buf);
        } else {
            quotients_f64(&self.unscaled::<f32>(r0, r1), self.temperature, buf);
        }
        &buf[..]
    }

    /// Rows `[r0, r1)` of this side as `T`, divided by the temperature (in f64, then
    /// rounded to `T`): for readers other than [`run_block`] (`--llama-compat`'s f32 rows).
    pub fn rows_as<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        if self.temperature != 1.0 {
            let t = self.temperature;
            let v = self.unscaled::<f64>(r0, r1);
            return Cow::Owned(v.iter().map(|&x| T::from_f64(x / t)).collect());
        }
        self.unscaled(r0, r1)
    }

    /// Rows `[r0, r1)` as stored, without the temperature (scored positions gathered where
    /// needed; only the columns read).
    fn unscaled<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        let all = self.whole_rows::<T>(r0, r1);
        let (n, stored) = (self.cols, self.file.cols());
        if n == stored {
            return all;
        }
        Cow::Owned(all.chunks(stored).flat_map(|r| &r[..n]).copied().collect())
    }

    fn whole_rows<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        match self.scored_of {
            None => self.file.rows_as(r0, r1),
            Some(l) => {
                let mut out = Vec::with_capacity((r1 - r0) * self.file.cols());
                for r in r0..r1 {
                    let at = l.position_of(r);
                    out.extend_from_slice(&self.file.rows_as::<T>(at, at + 1));
                }
                Cow::Owned(out)
            }
        }
    }
}

/// Both sides over a common vocabulary: as they are when their column counts agree (or Q is
/// not read); the first min(V_P, V_Q) columns of each when `vocab_min` (ExLlamaV3's
/// rule); else an error naming both shapes and `option`, the spelling that allows it.
pub fn common_vocab<'a>(
    (p, q): (Side<'a>, Side<'a>),
    reads_q: bool,
    vocab_min: bool,
    option: &str,
) -> Result<(Side<'a>, Side<'a>)> {
    let (vp, vq) = (p.file.cols(), q.file.cols());
    if !reads_q || p.rows() != q.rows() || vp == vq {
        return Ok((p, q));
    }
    if !vocab_min {
        return Err(Error::InvalidRequest(format!(
            "vocabularies differ: {} is {:?} ({vp} columns), {} is {:?} ({vq} columns); give \
             {option} to compare over the first {}",
            p.file.label(),
            p.file.shape(),
            q.file.label(),
            q.file.shape(),
            vp.min(vq)
        )));
    }
    let n = vp.min(vq);
    Ok((p.with_cols(n)?, q.with_cols(n)?))
}

/// The target of every row of a comparison with a `.kld` side: the token record j of chunk c
/// predicts (position first + j + 1 of chunk c); −1 where the file has none.
pub fn kld_targets(p: &TensorFile, q: &TensorFile, l: KldLayout, rows: usize) -> Vec<i64> {
    let f = if p.kld_layout().is_some() { p } else { q };
    (0..rows)
        .map(|r| f.kld_token(l.target_of(r)).map_or(-1, |t| t as i64))
        .collect()
}

/// Two `.kld` bases of layout `l` hold the same tokens: else they were made from different
/// texts (or tokenizers), and their rows would be compared position by position regardless.
fn same_tokens(p: &TensorFile, q: &TensorFile, l: KldLayout) -> Result<()> {
    let differs = (0..l.positions()).find(|&i| p.kld_token(i) != q.kld_token(i));
    match differs {
        None => Ok(()),
        Some(i) => Err(Error::File {
            path: q.path.clone(),
            message: format!(
                "its tokens differ from {}'s (first at chunk {}, position {}: {} against {}): \
                 the two bases were not made from the same text",
                p.label(),
                i / l.n_ctx,
                i % l.n_ctx,
                q.kld_token(i).unwrap_or(-1),
                p.kld_token(i).unwrap_or(-1),
            ),
        }),
    }
}

/// The sides of a comparison that involves a `.kld` base: both `.kld` (same layout), or an
/// array with either the scored positions' rows or every position's.
pub fn kld_sides<'a>(
    p: &'a TensorFile,
    q: &'a TensorFile,
) -> Result<(Side<'a>, Side<'a>, Option<KldLayout>)> {
    let plain = |f: &'a TensorFile| Side {
        file: f,
        scored_of: None,
        temperature: 1.0,
        cols: f.cols(),
        quotients: Mutex::default(),
        quotients_f64: Mutex::default(),
    };
    let (l, array) = match (p.kld_layout(), q.kld_layout()) {
        (None, None) => return Ok((plain(p), plain(q), None)),
        (Some(a), Some(b)) if a != b => {
            return Err(Error::File {
                path: q.path.clone(),
                message: format!(
                    "a .kld base of another shape ({b}) than {} ({a})",
                    p.label()
                ),
            })
        }
        (Some(a), Some(_)) => {
            same_tokens(p, q, a)?;
            return Ok((plain(p), plain(q), Some(a)));
        }
        (Some(l), None) => (l, q),
        (None, Some(l)) => (l, p),
    };
    let scored_of = if array.rows() == l.scored_rows() {
        None
    } else if array.rows() == l.positions() {
        Some(l)
    } else {
        return Err(Error::File {
            path: array.path.clone(),
            message: format!(
                "{} rows; the .kld base scores {} of its {} chunks × {} positions: give \
                 one row per scored position ({}) or per position ({})",
                array.rows(),
                l.scored_rows(),
                l.n_chunk,
                l.n_ctx,
                l.scored_rows(),
                l.positions()
            ),
        });
    };
    let side = |f: &'a TensorFile| Side {
        file: f,
        temperature: 1.0,
        cols: f.cols(),
        quotients: Mutex::default(),
        quotients_f64: Mutex::default(),
        scored_of: if std::ptr::eq(f, array) {
            scored_of
        } else {
            None
        },
    };
    Ok((side(p), side(q), Some(l)))
}

/// Runs `compute` on the block `(r0, r1)` (blocks of `per_block` rows) while a helper thread
/// unmaps the previous block (rows nothing borrows any more: resident memory stays at a few
/// blocks whatever the file size; unmapping on the computing side left them idle for a
/// sixth of the run) and asks the kernel to read the next one ahead, so that a block not yet
/// in the page cache is read while this one computes.
pub fn paged<R>(
    (p, q): (&Side, &Side),
    (r0, r1): (usize, usize),
    per_block: usize,
    compute: impl FnOnce() -> R,
) -> R {
    std::thread::scope(|scope| {
        scope.spawn(move || {
            if r0 > 0 {
                p.release(r0.saturating_sub(per_block), r0);
                q.release(r0.saturating_sub(per_block), r0);
            }
            p.read_ahead(r1, r1 + per_block);
            q.read_ahead(r1, r1 + per_block);
        });
        compute()
    })
}

/// The element type both sides are read in: the one that holds each exactly, or f64 where a
/// temperature scales the logits (the division is formed there).
pub fn read_type(req: &crate::Request, (p, q): (&Side, &Side)) -> crate::Dtype {
    if p.temperature != 1.0 || q.temperature != 1.0 {
        crate::Dtype::F64
    } else if req.reads_q() {
        super::tensor::common_type(p.file.stored(), q.file.stored())
    } else {
        p.file.dtype()
    }
}

/// Rows `[r0, r1)` of both sides, read in the `read_type` and checked with the tolerance of
/// the types the files store (`Request::for_stored`), through the scheduler into
/// `summary` (`targets` are the block's), with the summary's further divergences
/// (`Summary::also`) over the same block. Returns the main divergence's run (its plan and
/// warnings).
pub fn run_block(
    engine: &crate::scheduler::Scheduler,
    req: &crate::Request,
    sides: (&Side, &Side),
    rows: (usize, usize),
    targets: Option<&[i64]>,
    summary: &mut crate::Summary,
) -> Result<crate::scheduler::Run> {
    fn typed<T: Element>(
        engine: &crate::scheduler::Scheduler,
        req: &crate::Request,
        (p, q): (&Side, &Side),
        (r0, r1): (usize, usize),
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        // Logits of f32 (or narrower) files divided by a temperature are formed in f64;
        // where the temperatures are powers of two (as distillation's 2 or 4 are) and every
        // quotient is an f32 (away from f32's range limits), the block keeps f32's kernels
        // and bound instead of f64's exact path.
        let tempered = p.temperature != 1.0 || q.temperature != 1.0;
        if T::DTYPE == crate::Dtype::F64
            && tempered
            && p.file.dtype() != crate::Dtype::F64
            && q.file.dtype() != crate::Dtype::F64
        {
            let (mut pbuf, mut qbuf) = (take(&p.quotients), take(&q.quotients));
            let run = (|| {
                let pf = p.tempered_f32((r0, r1), &mut pbuf)?;
                let qf = if req.reads_q() {
                    q.tempered_f32((r0, r1), &mut qbuf)?
                } else {
                    pf.clone()
                };
                Some(block(
                    engine,
                    req,
                    p.cols(),
                    (&pf, &qf),
                    r1 - r0,
                    targets,
                    summary,
                ))
            })();
            put_back(&p.quotients, pbuf);
            put_back(&q.quotients, qbuf);
            if let Some(run) = run {
                return run;
            }
        }
        if T::DTYPE == crate::Dtype::F64 && tempered {
            let (mut pbuf, mut qbuf) = (take(&p.quotients_f64), take(&q.quotients_f64));
            let pf = p.tempered_f64((r0, r1), &mut pbuf);
            let qf = if req.reads_q() {
                q.tempered_f64((r0, r1), &mut qbuf)
            } else {
                pf
            };
            let run = block(engine, req, p.cols(), (pf, qf), r1 - r0, targets, summary);
            put_back(&p.quotients_f64, pbuf);
            put_back(&q.quotients_f64, qbuf);
            return run;
        }
        let pb = p.unscaled::<T>(r0, r1);
        let qb = if req.reads_q() {
            q.unscaled::<T>(r0, r1)
        } else {
            pb.clone()
        };
        block(engine, req, p.cols(), (&pb, &qb), r1 - r0, targets, summary)
    }
    fn block<T: Element>(
        engine: &crate::scheduler::Scheduler,
        req: &crate::Request,
        cols: usize,
        (pb, qb): (&[T], &[T]),
        rows: usize,
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        // Further divergences over the same block, read from the files once (and the KL
        // family computed in one pass).
        let also = summary.also_divergences();
        let agreement = summary.agreement.is_some();
        let (run, also_values) = engine.run_report(req, &also, agreement, pb, qb, rows, cols)?;
        summary.add_block_from_run(
            req,
            (pb, qb),
            cols,
            &run.values,
            (&run.tops, &run.agreement),
            targets,
        )?;
        for (k, values) in also_values.iter().enumerate() {
            summary.push_also(k, values)?;
        }
        Ok(run)
    }
    use crate::Dtype as D;
    // Read in the wider type, each row is still checked as the type its file stores.
    let req = &req.for_stored(sides.0.file.dtype(), sides.1.file.dtype());
    match read_type(req, sides) {
        D::F32 => typed::<f32>(engine, req, sides, rows, targets, summary),
        D::F64 => typed::<f64>(engine, req, sides, rows, targets, summary),
        D::F16 => typed::<half::f16>(engine, req, sides, rows, targets, summary),
        D::BF16 => typed::<half::bf16>(engine, req, sides, rows, targets, summary),
    }
}

fn take<T>(m: &Mutex<Vec<T>>) -> Vec<T> {
    m.lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default()
}

fn put_back<T>(m: &Mutex<Vec<T>>, v: Vec<T>) {
    if let Ok(mut slot) = m.lock() {
        *slot = v;
    }
}

/// 1/t as an f32 where t is a power of two whose inverse and itself are normal f32 values
/// (then x·(1/t) in f32 is x/t, rounded only where it leaves f32's range).
fn power_of_two_inverse(t: f64) -> Option<f32> {
    let inverse = (1.0 / t) as f32;
    let power_of_two = t > 0.0 && t.is_normal() && t.to_bits() & ((1 << 52) - 1) == 0;
    (power_of_two && inverse.is_normal() && (t as f32).is_normal()).then_some(inverse)
}

/// `out` = each `x` times `inverse` (a power of two), in parallel; whether every product is
/// exactly x/t (NaN and ±inf included): a product that overflowed or lost bits as a
/// subnormal does not give x back when multiplied by t.
fn quotients_f32(x: &[f32], inverse: f32, out: &mut Vec<f32>) -> bool {
    const CHUNK: usize = 1 << 16;
    let t = 1.0 / inverse;
    // Grown once; blocks of the same size then overwrite it (no zeroing pass).
    out.resize(x.len(), 0.0);
    let exact = crate::cpu::par_chunks_mut(out, CHUNK, |k, out| {
        let x = &x[k * CHUNK..][..out.len()];
        let mut inexact = 0u32;
        for (o, &x) in out.iter_mut().zip(x) {
            let r = x * inverse;
            *o = r;
            inexact |= u32::from(!(r * t == x || x.is_nan()));
        }
        inexact == 0
    });
    exact.iter().all(|&e| e)
}

/// `out` = each `x` divided by `t` in f64, in parallel (grown once, like `quotients_f32`).
fn quotients_f64<T: Element>(x: &[T], t: f64, out: &mut Vec<f64>) {
    const CHUNK: usize = 1 << 16;
    out.resize(x.len(), 0.0);
    crate::cpu::par_chunks_mut(out, CHUNK, |k, out| {
        let x = &x[k * CHUNK..][..out.len()];
        for (o, x) in out.iter_mut().zip(x) {
            *o = x.to_f64() / t;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{power_of_two_inverse, quotients_f32};

    fn quotients(x: &[f32], t: f64) -> Option<Vec<f32>> {
        let mut out = vec![7.0; 3];
        let inverse = power_of_two_inverse(t)?;
        quotients_f32(x, inverse, &mut out).then_some(out)
    }

    /// Quotients by a power of two stay f32 except where they leave its range (overflow,
    /// or subnormals that lose bits); any other temperature leaves f64 values. Each
    /// accepted quotient is the f64 division's, over chunks of every size.
    #[test]
    fn only_exact_quotients_narrow_to_f32() {
        let x: [f32; 7] = [
            1.5,
            -3.25,
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            1e-30,
            f32::MIN_POSITIVE,
        ];
        assert_eq!(
            quotients(&x, 2.0).as_deref(),
            Some(
                &[
                    0.75,
                    -1.625,
                    0.0,
                    -0.0,
                    f32::NEG_INFINITY,
                    5e-31,
                    f32::MIN_POSITIVE / 2.0
                ][..]
            ),
            "2^-127 is a subnormal, and exact"
        );
        for t in [
            0.7,
            3.0,
            1.0 + f64::EPSILON,
            0.0,
            -2.0,
            f64::INFINITY,
            f64::NAN,
            2f64.powi(-130),
        ] {
            assert!(power_of_two_inverse(t).is_none(), "{t}");
        }
        assert!(quotients(&[1.0, 3e38], 0.5).is_none(), "overflows f32");
        assert!(
            quotients(&[f32::from_bits(3)], 2.0).is_none(),
            "a subnormal's last bit"
        );
        let above_min = f32::from_bits(f32::MIN_POSITIVE.to_bits() + 1);
        assert!(
            quotients(&[above_min], 4.0).is_none(),
            "the bits a subnormal loses"
        );
        assert!(quotients(&[f64::NAN as f32], 0.25).is_some_and(|v| v[0].is_nan()));
        let mut rng = 0x2545f4914f6cdd1du64;
        let long: Vec<f32> = (0..200_001)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                f32::from_bits((rng as u32) & 0xff7f_ffff) // finite, either sign
            })
            .filter(|x| x.abs() > 1e-30 && x.abs() < 1e30)
            .collect();
        for t in [0.125, 2.0, 1024.0] {
            let got = quotients(&long, t).expect("in range");
            assert!(got
                .iter()
                .zip(&long)
                .all(|(&g, &x)| g as f64 == x as f64 / t));
        }
        let mut edge = long.clone();
        let at = edge.len() - 1; // in the last chunk only
        edge[at] = above_min;
        assert!(quotients(&edge, 2.0).is_none());
    }
}
