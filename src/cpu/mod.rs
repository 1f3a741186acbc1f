//! The CPU engine: SIMD kernels (runtime-dispatched) over rows, spread over threads.

mod kernels;
mod pool;
pub mod scalar;
mod simd_math;
mod transpose;

use crate::element::{Dtype, Element};
use crate::error::{BadKind, Error, Result, Side};
use crate::request::{Divergence, InputForm, NanPolicy, Normalization, Request};
use crate::sums::{self, LogitOutcome, Partial, ProbSums};
use kernels::Scratch;
use pulp::{Simd, WithSimd};

/// A bad input value, located by column within the piece being summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad {
    pub side: Side,
    pub kind: BadKind,
    pub col: usize,
}

/// Which sums a pass collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Probs(Divergence),
    Logits(Divergence),
    /// Jensen–Shannon over logits whose maxima and log-sums are known (its second pass,
    /// with `Transform::Softmax`): computed from ln p − ln q, see `scalar::logit_js_segment`.
    LogitsJs,
}

/// How a row is rewritten on the fly before the kernel sees it (second passes only). The
/// row data stays f64 between passes; f32 kernels round it as late as they can.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    None,
    /// Multiply P and Q by these (1 / row sums).
    Scale {
        p: f64,
        q: f64,
    },
    /// Replace logits by probabilities e^((a − ma) − ln sa), from the row's maxima and
    /// the logs of its sums relative to them.
    Softmax {
        ma: f64,
        lnsa: f64,
        mb: f64,
        lnsb: f64,
    },
}

/// The instruction set the f32 kernels run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    /// The best this CPU has, detected once.
    Auto,
    /// The same f32 algorithm, one lane at a time.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2,
    /// x86-64 AVX-512.
    Avx512,
    /// Every element through the exact f64 functions: slow, used as the reference.
    Reference,
}

#[derive(Debug, Clone, Copy)]
enum Level {
    Arch(pulp::Arch),
    Scalar,
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    #[cfg(target_arch = "x86_64")]
    V4(pulp::x86::V4),
    Reference,
}

impl Level {
    fn run<Op: WithSimd>(self, op: Op) -> Op::Output {
        match self {
            Level::Arch(a) => a.dispatch(op),
            Level::Scalar | Level::Reference => Simd::vectorize(pulp::Scalar::new(), op),
            #[cfg(target_arch = "x86_64")]
            Level::V3(v) => Simd::vectorize(v, op),
            #[cfg(target_arch = "x86_64")]
            Level::V4(v) => Simd::vectorize(v, op),
        }
    }
}

/// Rows shorter than this many elements are never split across threads.
const SPLIT_MIN: usize = 1 << 15;
/// Elements one task handles when rows are grouped (keeps rayon overhead small for W2).
const TASK_ELEMS: usize = 1 << 16;

/// The CPU back end. Cheap to create and `Copy`; SIMD detection happens in `new`.
#[derive(Debug, Clone, Copy)]
pub struct CpuEngine {
    level: Level,
}

impl Default for CpuEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuEngine {
    /// Uses the widest SIMD this CPU supports.
    pub fn new() -> Self {
        CpuEngine {
            level: Level::Arch(pulp::Arch::new()),
        }
    }

    /// Forces an instruction set; an error if this CPU lacks it.
    pub fn with_level(level: SimdLevel) -> Result<Self> {
        let missing = |what: &str| Error::InvalidRequest(format!("this CPU has no {what}"));
        let level = match level {
            SimdLevel::Auto => Level::Arch(pulp::Arch::new()),
            SimdLevel::Scalar => Level::Scalar,
            SimdLevel::Reference => Level::Reference,
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => {
                Level::V3(pulp::x86::V3::try_new().ok_or_else(|| missing("AVX2+FMA"))?)
            }
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => {
                Level::V4(pulp::x86::V4::try_new().ok_or_else(|| missing("AVX-512"))?)
            }
            #[cfg(not(target_arch = "x86_64"))]
            SimdLevel::Avx2 | SimdLevel::Avx512 => return Err(missing("x86-64 SIMD")),
        };
        Ok(CpuEngine { level })
    }

    /// Name of the instruction set in use, e.g. "avx512".
    pub fn simd_name(&self) -> &'static str {
        match self.level {
            Level::Scalar => "scalar",
            Level::Reference => "reference-f64",
            #[cfg(target_arch = "x86_64")]
            Level::V3(_) => "avx2",
            #[cfg(target_arch = "x86_64")]
            Level::V4(_) => "avx512",
            Level::Arch(a) => arch_name(a),
        }
    }

    /// Threads the engine spreads work over (kldiv's own pool; `RAYON_NUM_THREADS`).
    pub fn threads(&self) -> usize {
        pool::threads()
    }

    /// Per-row values (before the request's reduction) for row-major `p`, `q` of `rows × cols`.
    pub fn per_row<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        crate::validate_shape(p.len(), q.len(), rows, cols, req)?;
        let tol = sums::sum_tolerance(req, T::DTYPE);
        let probs = req.input == InputForm::Probabilities;
        let two_pass = req.divergence == Divergence::JensenShannon
            && (!probs || req.normalization == Normalization::Normalize);
        let kernel = if probs {
            Kernel::Probs(req.divergence)
        } else {
            Kernel::Logits(req.divergence)
        };
        let exact = self.is_exact::<T>();
        let eps = if exact {
            sums::SUMS_EPS_F64
        } else {
            sums::SUMS_EPS_F32
        };
        let row = |r: usize| (&p[r * cols..(r + 1) * cols], &q[r * cols..(r + 1) * cols]);
        if !two_pass {
            let finish = RowValues {
                req,
                tol,
                eps,
                lanes: kernels::LaneFinish::new(req, tol),
                follow: std::sync::Mutex::new(vec![]),
            };
            let mut out = self.map_rows(kernel, &[], p, q, rows, cols, &finish)?;
            let mut follow = finish.follow.into_inner().unwrap_or_default();
            follow.sort_by_key(|f| f.0);
            // On the pool too: its threads have the stacks the kernels need.
            let values = pool::map(follow.len(), |i| {
                let (r, f) = follow[i];
                let (pr, qr) = row(r);
                match f {
                    // Sums far apart under Normalize: divide first (see `sums::needs_rescale`).
                    Follow::Rescale => self.rescaled_row(req, pr, qr, r),
                    Follow::Reshift { hi, lo } => self.reshifted_row(req, tol, pr, qr, r, (hi, lo)),
                    Follow::Exact => exact_row(req, tol, pr, qr, r),
                }
            });
            // The lowest failing row's error first.
            for (&(r, _), v) in follow.iter().zip(values) {
                out[r] = v?;
            }
            return Ok(out);
        }
        // Jensen–Shannon needs the normalised distributions inside its logarithms: a first
        // pass finds each row's sum (or maxima and log-sum-exp), the second reads the row
        // rescaled. What passes between them stays f64.
        let first = if probs {
            Kernel::Probs(Divergence::Kl)
        } else {
            Kernel::Logits(Divergence::Entropy)
        };
        let transforms = self.map_rows(first, &[], p, q, rows, cols, &|row, r| match r {
            Err(bad) if nan_row(req, &bad) => Ok(None),
            Err(bad) => Err(located(row, bad)),
            Ok(Partial::Probs(s)) => {
                sums::check_probs(req, &s, tol, row)?;
                Ok(Some(Transform::Scale {
                    p: 1.0 / s.sp,
                    q: 1.0 / s.sq,
                }))
            }
            Ok(Partial::Logits(s)) => {
                sums::check_logits(req, &s, tol, row)?;
                Ok(Some(Transform::Softmax {
                    ma: s.ma,
                    lnsa: s.sa.ln(),
                    mb: s.mb,
                    lnsb: s.sb.ln(),
                }))
            }
        })?;
        let second = Request {
            input: InputForm::Probabilities,
            normalization: Normalization::Normalize,
            ..*req
        };
        let kernel = if probs {
            Kernel::Probs(Divergence::JensenShannon)
        } else {
            Kernel::LogitsJs
        };
        self.map_rows(
            kernel,
            &transforms,
            p,
            q,
            rows,
            cols,
            &|row, r| match (r, transforms[row]) {
                (_, None) => Ok(f64::NAN),
                (Err(bad), _) => Err(located(row, bad)),
                (Ok(Partial::Probs(s)), _) => sums::finish_probs(&second, &s, None, row),
                (Ok(Partial::Logits(_)), _) => unreachable!("second pass reads probabilities"),
            },
        )
    }

    /// Whether this engine computes `T` on the exact f64 path.
    fn is_exact<T: Element>(&self) -> bool {
        matches!(self.level, Level::Reference) || T::DTYPE == Dtype::F64
    }

    /// A logits row read again with its ideal shift (see `sums::LogitOutcome::Reshift`); on
    /// the exact path if that is still not enough.
    fn reshifted_row<T: Element>(
        &self,
        req: &Request,
        tol: Option<f64>,
        p: &[T],
        q: &[T],
        row: usize,
        shift: (f64, f64),
    ) -> Result<f64> {
        let Kernel::Logits(div) = kernel_of(req) else {
            return exact_row(req, tol, p, q, row);
        };
        let sums = self.level.run(SegmentOp {
            kernel: Kernel::Logits(div),
            transform: Transform::None,
            p,
            q,
            shift: Some(shift),
            scratch: &mut Scratch::new(),
        });
        match sums {
            Ok(Partial::Logits(s)) => {
                match sums::finish_logits(req, &s, tol, row, sums::SUMS_EPS_F32, true)? {
                    LogitOutcome::Value(v) => Ok(v),
                    _ => exact_row(req, tol, p, q, row),
                }
            }
            _ => exact_row(req, tol, p, q, row),
        }
    }

    /// One probability row divided by its sums before the divergence is taken: for rows whose
    /// sums are far apart. NaN rows (NanPolicy::Propagate) stay NaN.
    fn rescaled_row<T: Element>(&self, req: &Request, p: &[T], q: &[T], row: usize) -> Result<f64> {
        let cols = p.len();
        let exact = |x: T| x.to_f64();
        let (sp, sq): (f64, f64) = (
            p.iter().copied().map(exact).sum(),
            q.iter().copied().map(exact).sum(),
        );
        if !(sp > 0.0 && sq > 0.0 && sp.is_finite() && sq.is_finite()) {
            return Ok(f64::NAN);
        }
        let ps: Vec<f64> = p.iter().map(|&x| x.to_f64() / sp).collect();
        let qs: Vec<f64> = q.iter().map(|&x| x.to_f64() / sq).collect();
        let v = if T::DTYPE == Dtype::F64 {
            self.per_row(req, &ps, &qs, 1, cols)
        } else {
            let (pf, qf): (Vec<f32>, Vec<f32>) = (
                ps.iter().map(|&x| x as f32).collect(),
                qs.iter().map(|&x| x as f32).collect(),
            );
            self.per_row(req, &pf, &qf, 1, cols)
        };
        v.map(|v| v[0]).map_err(|e| crate::relocate_row(e, row))
    }

    /// Run `kernel` over every row and map each row's sums through `finish`, in parallel.
    /// Errors come back for the lowest failing row.
    #[allow(clippy::too_many_arguments)]
    fn map_rows<T: Element, R: Copy + Default + Send + Sync>(
        &self,
        kernel: Kernel,
        transforms: &[Option<Transform>],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
        finish: &impl Finish<Out = R>,
    ) -> Result<Vec<R>> {
        let transform = |row: usize| {
            transforms
                .get(row)
                .copied()
                .flatten()
                .unwrap_or(Transform::None)
        };
        let skip = |row: usize| transforms.get(row).is_some_and(|t| t.is_none());
        let threads = self.threads();
        let level = self.level;
        let exact = self.is_exact::<T>();
        let run = move |t: Transform, ps: &[T], qs: &[T], shift, scratch: &mut Scratch| {
            if exact {
                exact_segment(kernel, t, ps, qs, shift)
            } else {
                level.run(SegmentOp {
                    kernel,
                    transform: t,
                    p: ps,
                    q: qs,
                    shift,
                    scratch,
                })
            }
        };

        if rows >= 2 * threads || cols < 2 * SPLIT_MIN {
            let mut per_task = (TASK_ELEMS / cols).clamp(1, rows.div_ceil(4 * threads).max(1));
            if cols <= kernels::SHORT_ROW {
                // Whole groups of 16 rows, so that the lane-per-row path sees them.
                per_task = per_task.next_multiple_of(16);
            }
            // Tasks write their rows' results in place (no per-task vectors to copy).
            let mut all = vec![R::default(); rows];
            let done: Vec<Result<()>> = pool::chunks_mut(&mut all, per_task, |c, out| {
                let r0 = c * per_task;
                // One dispatch per task, not per row: short rows (W2) are dominated by
                // per-row overhead otherwise.
                level.run(RowsOp {
                    kernel,
                    exact,
                    p,
                    q,
                    cols,
                    rows: r0..r0 + out.len(),
                    transforms,
                    finish,
                    out,
                })
            });
            // The lowest failing row's error: tasks are in row order.
            done.into_iter().collect::<Result<()>>()?;
            return Ok(all);
        }

        // Few long rows: split each row into pieces so every thread has work.
        let pieces = (4 * threads).div_ceil(rows).min(cols / SPLIT_MIN).max(1);
        let piece_len = cols.div_ceil(pieces).next_multiple_of(scalar::BLOCK);
        let pieces = cols.div_ceil(piece_len);
        let parts: Vec<std::result::Result<Partial, Bad>> = pool::map(rows * pieces, |i| {
            let (row, k) = (i / pieces, i % pieces);
            let c0 = k * piece_len;
            let c1 = (c0 + piece_len).min(cols);
            let base = row * cols;
            let mut scratch = Scratch::new();
            if skip(row) {
                return Ok(Partial::Probs(ProbSums::default()));
            }
            // Every piece of a logits row needs the row's shift, from its first block (the
            // f64 path shifts by the row's maxima and never re-reads).
            let shift = matches!(kernel, Kernel::Logits(_)).then(|| {
                let (pr, qr) = (&p[base..base + cols], &q[base..base + cols]);
                if exact {
                    scalar::max_shift(pr, qr)
                } else {
                    scalar::row_shift(pr, qr)
                }
            });
            let (ps, qs) = (&p[base + c0..base + c1], &q[base + c0..base + c1]);
            run(transform(row), ps, qs, shift, &mut scratch).map_err(|b| Bad {
                col: b.col + c0,
                ..b
            })
        });
        (0..rows)
            .map(|row| {
                let mut acc: std::result::Result<Partial, Bad> = parts[row * pieces];
                for part in &parts[row * pieces + 1..(row + 1) * pieces] {
                    acc = match (acc, part) {
                        (Ok(mut a), Ok(b)) => {
                            a.merge(b);
                            Ok(a)
                        }
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(*e),
                    };
                }
                if skip(row) {
                    acc = Err(Bad {
                        side: Side::P,
                        kind: BadKind::NotANumber,
                        col: 0,
                    });
                }
                finish.row(row, acc)
            })
            .collect()
    }
}

/// The f64 path over a piece of a row; a logits piece without a shift is a whole row and is
/// shifted by its maxima.
fn exact_segment<T: Element>(
    kernel: Kernel,
    t: Transform,
    p: &[T],
    q: &[T],
    shift: Option<(f64, f64)>,
) -> std::result::Result<Partial, Bad> {
    match (kernel, t) {
        (Kernel::Probs(div), Transform::None) => {
            scalar::prob_segment(div, p, q).map(Partial::Probs)
        }
        (Kernel::Probs(div), t) => {
            let map = |x: T, y: T| -> (f64, f64) {
                let (x, y) = (x.to_f64(), y.to_f64());
                match t {
                    Transform::Scale { p, q } => (x * p, y * q),
                    Transform::Softmax { ma, lnsa, mb, lnsb } => {
                        (((x - ma) - lnsa).exp(), ((y - mb) - lnsb).exp())
                    }
                    Transform::None => (x, y),
                }
            };
            let (ps, qs): (Vec<f64>, Vec<f64>) = p.iter().zip(q).map(|(&x, &y)| map(x, y)).unzip();
            scalar::prob_segment(div, &ps, &qs).map(Partial::Probs)
        }
        (Kernel::Logits(_), _) => {
            let shift = shift.unwrap_or_else(|| scalar::max_shift(p, q));
            scalar::logit_segment(p, q, Some(shift)).map(Partial::Logits)
        }
        (Kernel::LogitsJs, Transform::Softmax { ma, lnsa, mb, lnsb }) => {
            scalar::logit_js_segment(p, q, (ma, lnsa, mb, lnsb)).map(Partial::Probs)
        }
        (Kernel::LogitsJs, _) => unreachable!("JS over logits needs the first pass's sums"),
    }
}

/// The kernel a one-pass request runs.
fn kernel_of(req: &Request) -> Kernel {
    if req.input == InputForm::Probabilities {
        Kernel::Probs(req.divergence)
    } else {
        Kernel::Logits(req.divergence)
    }
}

/// One row on the exact f64 path, finished: what every follow-up ends in.
fn exact_row<T: Element>(
    req: &Request,
    tol: Option<f64>,
    p: &[T],
    q: &[T],
    row: usize,
) -> Result<f64> {
    let sums = exact_segment(kernel_of(req), Transform::None, p, q, None);
    match sums {
        Err(bad) if nan_row(req, &bad) => Ok(f64::NAN),
        Err(bad) => Err(located(row, bad)),
        Ok(Partial::Probs(s)) => sums::finish_probs(req, &s, tol, row),
        Ok(Partial::Logits(s)) => {
            match sums::finish_logits(req, &s, tol, row, sums::SUMS_EPS_F64, true)? {
                LogitOutcome::Value(v) => Ok(v),
                // Unreachable with f64 sums; NaN rather than a loop.
                _ => Ok(f64::NAN),
            }
        }
    }
}

/// What a row needs after the first pass.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Follow {
    /// Probability sums far apart under `Normalize`: divide, then compute.
    Rescale,
    /// Logits whose first-block shift was poor: read again with the row's ideal shift.
    Reshift { hi: f64, lo: f64 },
    /// Only the exact f64 path gets this row within the bound.
    Exact,
}

/// What becomes of each row's sums: its result, or the error that stops the job.
trait Finish: Sync {
    type Out;
    fn row(&self, row: usize, sums: std::result::Result<Partial, Bad>) -> Result<Self::Out>;

    /// Results of a group of short rows straight from their lane sums, one per slot of
    /// `out`; `false` (the default) sends the group through [`Finish::row`] row by row.
    #[inline(always)]
    fn lanes<S: Simd>(&self, s: S, group: &kernels::RowLanes<S>, out: &mut [Self::Out]) -> bool {
        let _ = (s, group, out);
        false
    }
}

impl<R, F> Finish for F
where
    F: Fn(usize, std::result::Result<Partial, Bad>) -> Result<R> + Sync,
{
    type Out = R;
    #[inline(always)]
    fn row(&self, row: usize, sums: std::result::Result<Partial, Bad>) -> Result<R> {
        self(row, sums)
    }
}

/// The finishing step of a one-pass request: each row's value in the request's unit, or
/// NaN and a follow-up for rows that need another look.
struct RowValues<'a> {
    req: &'a Request,
    tol: Option<f64>,
    /// Relative error of the sums this engine produces.
    eps: f64,
    /// Short rows whose sums can be finished in their lanes (not for `Normalize`).
    lanes: Option<kernels::LaneFinish>,
    follow: std::sync::Mutex<Vec<(usize, Follow)>>,
}

impl RowValues<'_> {
    fn later(&self, row: usize, f: Follow) -> Result<f64> {
        if let Ok(mut v) = self.follow.lock() {
            v.push((row, f));
        }
        Ok(f64::NAN)
    }
}

impl Finish for RowValues<'_> {
    type Out = f64;
    fn row(&self, row: usize, sums: std::result::Result<Partial, Bad>) -> Result<f64> {
        let req = self.req;
        match sums {
            Err(bad) if nan_row(req, &bad) => Ok(f64::NAN),
            Err(bad) => Err(located(row, bad)),
            Ok(Partial::Probs(s)) if sums::needs_rescale(req, &s) => {
                self.later(row, Follow::Rescale)
            }
            Ok(Partial::Probs(s)) => sums::finish_probs(req, &s, self.tol, row),
            Ok(Partial::Logits(s)) => {
                match sums::finish_logits(req, &s, self.tol, row, self.eps, false)? {
                    LogitOutcome::Value(v) => Ok(v),
                    LogitOutcome::Reshift { hi, lo } => self.later(row, Follow::Reshift { hi, lo }),
                    LogitOutcome::Exact => self.later(row, Follow::Exact),
                }
            }
        }
    }

    #[inline(always)]
    fn lanes<S: Simd>(&self, s: S, group: &kernels::RowLanes<S>, out: &mut [f64]) -> bool {
        let Some(v) = self.lanes.and_then(|l| l.values(s, group)) else {
            return false;
        };
        let mut nats = [0f32; 16];
        s.partial_store_f32s(&mut nats, v);
        let clamp = self.req.normalization != Normalization::AsGiven;
        for (slot, &v) in out.iter_mut().zip(&nats) {
            *slot = sums::finalize(self.req, v as f64, clamp);
        }
        true
    }
}

/// Whether a bad value makes a NaN row rather than an error (NanPolicy::Propagate).
fn nan_row(req: &Request, bad: &Bad) -> bool {
    req.nan == NanPolicy::Propagate && bad.kind == BadKind::NotANumber
}

/// A bad value located in the whole input.
fn located(row: usize, bad: Bad) -> Error {
    Error::BadValue {
        side: bad.side,
        kind: bad.kind,
        row,
        col: bad.col,
    }
}

/// A run of whole rows inside one SIMD context.
struct RowsOp<'a, T, F: Finish> {
    kernel: Kernel,
    exact: bool,
    p: &'a [T],
    q: &'a [T],
    cols: usize,
    rows: std::ops::Range<usize>,
    transforms: &'a [Option<Transform>],
    finish: &'a F,
    /// One result per row of `rows`.
    out: &'a mut [F::Out],
}

impl<T: Element, F: Finish> WithSimd for RowsOp<'_, T, F> {
    type Output = Result<()>;
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, s: S) -> Self::Output {
        let mut scratch = Scratch::new();
        let out = std::mem::take(&mut self.out);
        let first = self.rows.start;
        let cols = self.cols;
        let mut row = self.rows.start;
        let lanes = S::F32_LANES;
        // Short f32 probability rows go a lane per row, see `kernels::short_rows`.
        let short = match self.kernel {
            Kernel::Probs(div) if cols <= kernels::SHORT_ROW && lanes > 1 => Some(div),
            _ => None,
        }
        .filter(|_| self.transforms.is_empty() && !self.exact);
        let mut sums = [ProbSums::default(); 16];
        while row < self.rows.end {
            if let Some(div) = short.filter(|_| self.rows.end - row >= lanes) {
                let span = row * cols..(row + lanes) * cols;
                let (p, q) = (&self.p[span.clone()], &self.q[span]);
                let group = kernels::short_rows(s, div, p, q, cols, &mut scratch);
                if let Some(group) = group {
                    let slots = &mut out[row - first..row - first + lanes];
                    if !self.finish.lanes(s, &group, slots) {
                        let sums = &mut sums[..lanes];
                        group.to_sums(s, sums);
                        for (i, (s, slot)) in sums.iter().zip(slots).enumerate() {
                            *slot = self.finish.row(row + i, Ok(Partial::Probs(*s)))?;
                        }
                    }
                    row += lanes;
                    continue;
                }
                // Something needs the exact path: these rows go one by one below.
                for r in row..row + lanes {
                    out[r - first] = self.finish.row(r, one_row(s, &self, r, &mut scratch))?;
                }
                row += lanes;
                continue;
            }
            out[row - first] = self.finish.row(row, one_row(s, &self, row, &mut scratch))?;
            row += 1;
        }
        Ok(())
    }
}

/// Sums of one whole row.
#[inline(always)]
fn one_row<S: Simd, T: Element, F: Finish>(
    s: S,
    op: &RowsOp<'_, T, F>,
    row: usize,
    scratch: &mut Scratch,
) -> std::result::Result<Partial, Bad> {
    let cols = op.cols;
    let ps = &op.p[row * cols..(row + 1) * cols];
    let qs = &op.q[row * cols..(row + 1) * cols];
    match op.transforms.get(row) {
        // The first pass found NaN in this row (NanPolicy::Propagate).
        Some(None) => Err(Bad {
            side: Side::P,
            kind: BadKind::NotANumber,
            col: 0,
        }),
        t => {
            let t = t.copied().flatten().unwrap_or(Transform::None);
            if op.exact {
                exact_segment(op.kernel, t, ps, qs, None)
            } else {
                kernels::segment(s, op.kernel, t, ps, qs, None, scratch)
            }
        }
    }
}

struct SegmentOp<'a, T> {
    kernel: Kernel,
    transform: Transform,
    p: &'a [T],
    q: &'a [T],
    shift: Option<(f64, f64)>,
    scratch: &'a mut Scratch,
}

impl<T: Element> WithSimd for SegmentOp<'_, T> {
    type Output = std::result::Result<Partial, Bad>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Self::Output {
        kernels::segment(
            s,
            self.kernel,
            self.transform,
            self.p,
            self.q,
            self.shift,
            self.scratch,
        )
    }
}

fn arch_name(a: pulp::Arch) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        match a {
            pulp::Arch::V4(_) => "avx512",
            pulp::Arch::V3(_) => "avx2",
            _ => "scalar",
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let _ = a;
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = a;
        "scalar"
    }
}
