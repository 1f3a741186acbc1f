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
        cpu: &crate::cpu::CpuEngine,
        (r0, r1): (usize, usize),
        buf: &'s mut Vec<f32>,
    ) -> Option<Cow<'s, [f32]>> {
        let v = self.unscaled::<f32>(r0, r1);
        if self.temperature == 1.0 {
            return Some(v);
        }
        let inverse = crate::cpu::power_of_two_inverse(self.temperature)?;
        cpu.quotients_f32(&v, inverse, buf)
            .then_some(Cow::Borrowed(&buf[..]))
    }

    /// Rows `[r0, r1)` divided by the temperature in f64, in `buf`: each x/t the f64
    /// division's, from the values as stored (borrowed where the file holds f32 or f64),
    /// formed in parallel.
    fn tempered_f64<'s>(
        &'s self,
        cpu: &crate::cpu::CpuEngine,
        (r0, r1): (usize, usize),
        buf: &'s mut Vec<f64>,
    ) -> &'s [f64] {
        let t = self.temperature;
        if self.file.dtype() == crate::Dtype::F64 {
            cpu.quotients_f64(&self.unscaled::<f64>(r0, r1), t, buf);
        } else {
            cpu.quotients_f64(&self.unscaled::<f32>(r0, r1), t, buf);
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
    (p, q): (&Side, &Side),
    rows: (usize, usize),
    targets: Option<&[i64]>,
    summary: &mut crate::Summary,
) -> Result<crate::scheduler::Run> {
    use crate::Dtype as D;
    // Read in the wider type, each row is still checked as the type its file stores.
    let req = &req.for_stored(p.file.dtype(), q.file.dtype());
    let blocks = Blocks { engine, req, p, q };
    match read_type(req, (p, q)) {
        D::F32 => blocks.typed::<f32>(rows, targets, summary),
        D::F64 => blocks.typed::<f64>(rows, targets, summary),
        D::F16 => blocks.typed::<half::f16>(rows, targets, summary),
        D::BF16 => blocks.typed::<half::bf16>(rows, targets, summary),
    }
}

/// What each block of a comparison runs with (see [`run_block`]).
struct Blocks<'a> {
    engine: &'a crate::scheduler::Scheduler,
    req: &'a crate::Request,
    p: &'a Side<'a>,
    q: &'a Side<'a>,
}

impl Blocks<'_> {
    fn typed<T: Element>(
        &self,
        (r0, r1): (usize, usize),
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        let (p, q) = (self.p, self.q);
        if T::DTYPE == crate::Dtype::F64 && (p.temperature != 1.0 || q.temperature != 1.0) {
            return self.tempered_rows((r0, r1), targets, summary);
        }
        let pb = p.unscaled::<T>(r0, r1);
        let qb = if self.req.reads_q() {
            q.unscaled::<T>(r0, r1)
        } else {
            pb.clone()
        };
        self.block((&pb, &qb), r1 - r0, targets, summary)
    }

    /// Tempered logits, formed in buffers block by block. Where the CPU runs the block, it
    /// goes in sub-blocks of `TEMPERED_ELEMS` per thread, so that the kernel reads the
    /// quotients from cache, and the buffers stay that small (a buffer the size of a block
    /// cost more in page faults and memory traffic than the kernel: 3× the f64 files' time).
    fn tempered_rows(
        &self,
        (r0, r1): (usize, usize),
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        use crate::scheduler::{Job, Placement};
        let (engine, cols) = (self.engine, self.p.cols());
        let job = Job::of(self.req, r1 - r0, cols, crate::Dtype::F64, false)
            .with_agreement(summary.agreement.is_some());
        let plan = engine.plan(&job);
        let step = match plan.placement {
            Placement::Cpu => engine.cpu().threads() * TEMPERED_ELEMS / cols.max(1),
            _ => r1 - r0,
        }
        .max(1);
        let sub_block = |s0: usize, summary: &mut crate::Summary| {
            let s1 = (s0 + step).min(r1);
            let tg = targets.map(|t| &t[s0 - r0..s1 - r0]);
            self.tempered_block((s0, s1), tg, summary)
                .map_err(|e| crate::semantics::rows::relocate_row_by(e, s0 - r0))
        };
        let mut run = sub_block(r0, summary)?;
        for s0 in (r0 + step..r1).step_by(step) {
            run.warnings.extend(sub_block(s0, summary)?.warnings);
        }
        run.plan = plan;
        Ok(run)
    }

    /// Rows `[r0, r1)` of tempered logits: f32 quotients where the temperatures are powers
    /// of two (as distillation's 2 or 4 are) and every quotient is an f32 (away from f32's
    /// range limits), so the block keeps f32's kernels and bound; else f64 quotients.
    fn tempered_block(
        &self,
        (r0, r1): (usize, usize),
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        let (p, q, cpu) = (self.p, self.q, self.engine.cpu());
        if p.file.dtype() != crate::Dtype::F64 && q.file.dtype() != crate::Dtype::F64 {
            let (mut pbuf, mut qbuf) = (take(&p.quotients), take(&q.quotients));
            let run = (|| {
                let pf = p.tempered_f32(cpu, (r0, r1), &mut pbuf)?;
                let qf = if self.req.reads_q() {
                    q.tempered_f32(cpu, (r0, r1), &mut qbuf)?
                } else {
                    pf.clone()
                };
                Some(self.block((&pf, &qf), r1 - r0, targets, summary))
            })();
            put_back(&p.quotients, pbuf);
            put_back(&q.quotients, qbuf);
            if let Some(run) = run {
                return run;
            }
        }
        let (mut pbuf, mut qbuf) = (take(&p.quotients_f64), take(&q.quotients_f64));
        let pf = p.tempered_f64(cpu, (r0, r1), &mut pbuf);
        let qf = if self.req.reads_q() {
            q.tempered_f64(cpu, (r0, r1), &mut qbuf)
        } else {
            pf
        };
        let run = self.block((pf, qf), r1 - r0, targets, summary);
        put_back(&p.quotients_f64, pbuf);
        put_back(&q.quotients_f64, qbuf);
        run
    }

    /// `rows` rows `(pb, qb)` through the scheduler into `summary`, with the summary's
    /// further divergences over the same block (read from the files once, and the KL family
    /// computed in one pass).
    fn block<T: Element>(
        &self,
        (pb, qb): (&[T], &[T]),
        rows: usize,
        targets: Option<&[i64]>,
        summary: &mut crate::Summary,
    ) -> Result<crate::scheduler::Run> {
        let (req, cols) = (self.req, self.p.cols());
        let also = summary.also_divergences();
        let agreement = summary.agreement.is_some();
        let (run, also_values) = self
            .engine
            .run_report(req, &also, agreement, pb, qb, rows, cols)?;
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
}

/// Elements per thread of a tempered sub-block on the CPU: 2 MiB of f64 quotients a side.
/// Smaller sub-blocks (a row or two) split their rows into pieces, which cost more.
const TEMPERED_ELEMS: usize = 1 << 18;

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
