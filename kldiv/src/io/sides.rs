//! The sides of a comparison, where one is a llama.cpp `.kld` base: its scored positions
//! against an array of the same rows or of every position.

use super::kld::KldLayout;
use super::tensor::TensorFile;
use crate::element::Element;
use crate::error::{Error, Result};
use std::borrow::Cow;

/// One side of a comparison: a file, and for an array compared with a llama.cpp `.kld` base
/// that holds every token position, the layout whose scored positions are its rows.
pub struct Side<'a> {
    pub file: &'a TensorFile,
    scored_of: Option<KldLayout>,
    /// Logits are divided by this (1: as stored); rows are then read in f64.
    temperature: f64,
    /// Columns read from each row: all of them, or a prefix (`with_cols`).
    cols: usize,
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

    /// Rows `[r0, r1)` of this side (scored positions gathered where needed).
    pub fn rows_as<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        if self.temperature != 1.0 {
            let t = self.temperature;
            let v = self.unscaled::<f64>(r0, r1);
            return Cow::Owned(v.iter().map(|&x| T::from_f64(x / t)).collect());
        }
        self.unscaled(r0, r1)
    }

    /// Rows `[r0, r1)` divided by the temperature as f32 values, where each quotient (formed
    /// in f64) is exactly one; else `None`.
    /// A side without a temperature is borrowed as it is read (no copy).
    fn tempered_f32(&self, r0: usize, r1: usize) -> Option<Cow<'_, [f32]>> {
        let t = self.temperature;
        let v = self.unscaled::<f32>(r0, r1);
        if t == 1.0 {
            return Some(v);
        }
        exact_f32(v.iter().map(|&x| x as f64 / t)).map(Cow::Owned)
    }

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
        // where every quotient is an f32 (T a power of two, as distillation's 2 or 4 are,
        // away from f32's range limits), the block keeps f32's kernels and bound instead of
        // f64's exact path.
        let tempered = p.temperature != 1.0 || q.temperature != 1.0;
        if T::DTYPE == crate::Dtype::F64
            && tempered
            && p.file.dtype() != crate::Dtype::F64
            && q.file.dtype() != crate::Dtype::F64
        {
            if let Some(pf) = p.tempered_f32(r0, r1) {
                let qf = if req.reads_q() {
                    q.tempered_f32(r0, r1)
                } else {
                    Some(pf.clone())
                };
                if let Some(qf) = qf {
                    return block(engine, req, p.cols(), (&pf, &qf), r1 - r0, targets, summary);
                }
            }
        }
        let pb = p.rows_as::<T>(r0, r1);
        let qb = if req.reads_q() {
            q.rows_as::<T>(r0, r1)
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

/// `v` as f32 values where each is exactly one (NaN and ±inf included), else `None`.
fn exact_f32(v: impl ExactSizeIterator<Item = f64>) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        let f = x as f32;
        if !(f as f64 == x || x.is_nan()) {
            return None;
        }
        out.push(f);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::exact_f32;

    /// Quotients by a power of two stay f32 except where they leave its range (overflow,
    /// or subnormals that lose bits); any other temperature leaves f64 values.
    #[test]
    fn only_exact_quotients_narrow_to_f32() {
        let x: [f32; 5] = [1.5, -3.25, 0.0, f32::NEG_INFINITY, 1e-30];
        let by = |t: f64| x.iter().map(|&v| v as f64 / t).collect::<Vec<f64>>();
        assert_eq!(
            exact_f32(by(2.0).into_iter()).as_deref(),
            Some(&[0.75, -1.625, 0.0, f32::NEG_INFINITY, 5e-31][..])
        );
        assert!(exact_f32(by(0.7).into_iter()).is_none());
        assert!(
            exact_f32([3e38 / 0.5].into_iter()).is_none(),
            "overflows f32"
        );
        assert!(
            exact_f32([f32::from_bits(3) as f64 / 2.0].into_iter()).is_none(),
            "a subnormal's last bit"
        );
        assert!(exact_f32([f64::NAN].into_iter()).is_some_and(|v| v[0].is_nan()));
    }
}
