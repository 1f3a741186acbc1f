//! The CPU engine: runs passes ([`PassEngine`]) with SIMD kernels (runtime-dispatched) over
//! rows, spread over kldiv's threads. What the sums mean and how rows are finished is
//! `semantics`'s business; here: which rows each thread takes, SIMD levels, short rows in
//! lanes, long rows in pieces.

mod agreeing;
mod kernels;
mod pool;
mod quotients;
mod read_probe;
pub mod row_stats;
mod simd_math;
mod simd_math_f64;
mod slices;
mod transpose;

pub use pool::map as par_map;
pub(crate) use quotients::power_of_two_inverse;
pub use read_probe::{ReadKernel, ReadLimit};

use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::request::Request;
use crate::semantics::exact::{self, BLOCK};
use crate::semantics::finish;
use crate::semantics::plan::{Kernel, Pass, RowParams, Rows};
use crate::semantics::rows::{validate_shape, Irregular, RowPair, RowSums, Shape};
use crate::semantics::run::{Finish, PassEngine};
use crate::semantics::sums::{Partial, ProbSums};
use kernels::Scratch;
use pulp::{Simd, WithSimd};
use std::borrow::Cow;
use std::mem::MaybeUninit;

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
    /// Every element through the exact f64 path: slow, the reference.
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
/// Elements one task handles when rows are grouped (keeps task overhead small for W2).
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

/// Rows of P and Q on the host, row-major.
#[derive(Debug)]
pub struct HostRows<'a, T> {
    pub p: &'a [T],
    pub q: &'a [T],
}

impl<T> Clone for HostRows<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for HostRows<'_, T> {}

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

    /// Per-row values (before the request's reduction) for row-major `p`, `q` of
    /// `rows × cols`. For entropy `q` is not read (pass `p`).
    pub fn per_row<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        let v = self.per_row_each(req, &[req.divergence], p, q, rows, cols)?;
        Ok(v.values.into_iter().next().unwrap_or_default())
    }

    /// Per-row values of `req` with each of `divs` as its divergence, in that order: the
    /// KL family (KL, reverse KL, symmetric KL) from one shared pass, the others each in
    /// their own (see `semantics::run::per_row_set`); for logits, each row's argmaxes and
    /// log-sum-exps from the same read.
    pub fn per_row_each<T: Element>(
        &self,
        req: &Request,
        divs: &[crate::Divergence],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<crate::PerRow> {
        let shape = validate_shape(p.len(), q.len(), rows, cols, req)?;
        let q = if req.reads_q() { q } else { p };
        T::cpu_per_row(self, req, divs, HostRows { p, q }, shape)
    }

    /// Whether this engine computes `T` on the exact f64 path.
    fn is_exact(&self, dtype: Dtype) -> bool {
        matches!(self.level, Level::Reference) || dtype == Dtype::F64
    }

    /// How exact rows are read: in f64 lanes where a kernel has them (f64 inputs; not the
    /// reference engine, which is the element-by-element definition).
    fn exact_lanes(&self) -> bool {
        !matches!(self.level, Level::Reference)
    }
}

impl PassEngine for CpuEngine {
    type Src<'a, T: Element> = HostRows<'a, T>;

    fn run_pass<T: Element, F: Finish>(
        &self,
        pass: &Pass<'_>,
        src: HostRows<'_, T>,
        shape: Shape,
        finish: &F,
    ) -> Result<Vec<F::Out>> {
        let Shape { rows, cols } = shape;
        let threads = self.threads();
        let level = self.level;
        let exact = self.is_exact(T::DTYPE);
        let exact_lanes = exact && self.exact_lanes();
        let visited = pass.len(rows);
        // (One thread has nothing to split a row for.)
        let whole_rows = matches!(pass.rows, Rows::Listed(_))
            || visited >= 2 * threads
            || cols < 2 * SPLIT_MIN
            || threads == 1;
        if whole_rows {
            let mut per_task = (TASK_ELEMS / cols).clamp(1, visited.div_ceil(4 * threads).max(1));
            if cols <= kernels::SHORT_ROW {
                // Whole groups of 16 rows, so that the lane-per-row path sees them.
                per_task = per_task.next_multiple_of(16);
            }
            // Tasks write their rows' results in place (no per-task vectors to copy), into
            // memory not zeroed first: for W2 the zeroing alone was ~5% of the job, done by
            // one thread before the others start.
            let mut all: Vec<F::Out> = Vec::with_capacity(visited);
            let slots = &mut all.spare_capacity_mut()[..visited];
            let done: Vec<Result<()>> = pool::chunks_mut(slots, per_task, |c, out| {
                let i0 = c * per_task;
                // One SIMD dispatch per task, not per row: short rows (W2) are dominated by
                // per-row overhead otherwise.
                level.run(RowsOp {
                    pass,
                    exact,
                    exact_lanes,
                    src,
                    cols,
                    visits: i0..i0 + out.len(),
                    finish,
                    out,
                })
            });
            // The lowest failing row's error: tasks are in row order.
            done.into_iter().collect::<Result<()>>()?;
            // SAFETY: every task returned Ok, and a task that returns Ok has written each
            // slot of its chunk (`RowsOp::with_simd` writes visit i before moving past it);
            // the chunks cover `slots`, the first `visited` elements of `all`.
            unsafe { all.set_len(visited) };
            return Ok(all);
        }

        // Few long rows: split each row into pieces so every thread has work.
        let pieces = (4 * threads).div_ceil(rows).min(cols / SPLIT_MIN).max(1);
        let piece_len = cols.div_ceil(pieces).next_multiple_of(BLOCK);
        let pieces = cols.div_ceil(piece_len);
        // Every piece of a logits row needs the row's shift: taken once per row, before
        // the pieces (the exact path's is a scan of the whole row).
        let shifts: Vec<Option<(f64, f64)>> = match pass.kernel {
            Kernel::Logits(_) if pieces > 1 => pool::map(rows, |row| {
                (pass.params(row) == RowParams::None).then(|| {
                    let (pr, qr) = row_of(src, cols, row);
                    if exact_lanes {
                        level.run(ExactShiftOp { p: pr, q: qr })
                    } else if exact {
                        exact::max_shift(pr, qr)
                    } else {
                        exact::row_shift(pr, qr)
                    }
                })
            }),
            _ => vec![],
        };
        let parts: Vec<RowSums> = pool::map(rows * pieces, |i| {
            let (row, k) = (i / pieces, i % pieces);
            let params = pass.params(row);
            if params == RowParams::Skip {
                return Err(Irregular::Skipped);
            }
            let (c0, c1) = (k * piece_len, ((k + 1) * piece_len).min(cols));
            let (pr, qr) = row_of(src, cols, row);
            let params = match shifts.get(row) {
                Some(&Some((hi, lo))) => RowParams::Shift { hi, lo },
                _ => params,
            };
            let (ps, qs) = (&pr[c0..c1], &qr[c0..c1]);
            let sums = if exact && !exact_lanes {
                exact::segment(pass.kernel, params, ps, qs)
            } else {
                level.run(SegmentOp {
                    kernel: pass.kernel,
                    params,
                    exact_lanes,
                    p: ps,
                    q: qs,
                    scratch: &mut Scratch::new(),
                })
            };
            sums.map(|s| s.offset_cols(c0)).map_err(|b| {
                Irregular::Bad(crate::semantics::rows::Bad {
                    col: b.col + c0,
                    ..b
                })
            })
        });
        (0..rows)
            .map(|row| {
                let mut acc = parts[row * pieces];
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
                finish.row(row, acc)
            })
            .collect()
    }

    fn host_row<'a, T: Element>(
        &'a self,
        src: HostRows<'a, T>,
        shape: Shape,
        row: usize,
    ) -> Result<RowPair<'a, T>> {
        let (p, q) = row_of(src, shape.cols, row);
        Ok((Cow::Borrowed(p), Cow::Borrowed(q)))
    }

    fn sums_eps(&self, dtype: Dtype) -> f64 {
        if self.is_exact(dtype) {
            finish::SUMS_EPS_F64
        } else {
            finish::SUMS_EPS_F32
        }
    }
}

/// Row `row` of both inputs.
#[inline(always)]
fn row_of<T>(src: HostRows<'_, T>, cols: usize, row: usize) -> (&[T], &[T]) {
    let r = row * cols..(row + 1) * cols;
    (&src.p[r.clone()], &src.q[r])
}

/// A run of visited rows (whole rows) inside one SIMD context.
struct RowsOp<'a, 'p, T, F: Finish> {
    pass: &'a Pass<'p>,
    exact: bool,
    /// Exact rows in f64 lanes where a kernel has them (`kernels::exact_segment`).
    exact_lanes: bool,
    src: HostRows<'a, T>,
    cols: usize,
    /// Positions in the pass's visiting order.
    visits: std::ops::Range<usize>,
    finish: &'a F,
    /// One result per visit, each written once.
    out: &'a mut [MaybeUninit<F::Out>],
}

impl<T: Element, F: Finish> WithSimd for RowsOp<'_, '_, T, F> {
    type Output = Result<()>;
    #[inline(always)]
    fn with_simd<S: Simd>(mut self, s: S) -> Self::Output {
        let mut scratch = Scratch::new();
        let out = std::mem::take(&mut self.out);
        let first = self.visits.start;
        let cols = self.cols;
        let lanes = S::F32_LANES;
        // Short f32 probability rows go a lane per row (`kernels::short_rows`) in plain
        // passes over every row.
        let short = match self.pass.kernel {
            Kernel::Probs(div) if cols <= kernels::SHORT_ROW && lanes > 1 => Some(div),
            _ => None,
        }
        .filter(|_| !self.pass.has_row_data() && self.pass.rows == Rows::All && !self.exact);
        let mut i = self.visits.start;
        while i < self.visits.end {
            if let Some(div) = short.filter(|_| self.visits.end - i >= lanes) {
                // In a plain pass over every row, visit i is row i.
                let span = i * cols..(i + lanes) * cols;
                let (p, q) = (&self.src.p[span.clone()], &self.src.q[span]);
                if let Some(group) = kernels::short_rows(s, div, p, q, cols, &mut scratch) {
                    let slots = &mut out[i - first..i - first + lanes];
                    let mut values = [F::Out::default(); 16];
                    if !self
                        .finish
                        .lanes(s, &group.lane_sums(s), &mut values[..lanes])
                    {
                        let mut rows = [ProbSums::default(); 16];
                        group.to_sums(s, &mut rows[..lanes]);
                        for (k, v) in values[..lanes].iter_mut().enumerate() {
                            *v = self.finish.row(i + k, Ok(Partial::Probs(rows[k])))?;
                        }
                    }
                    for (slot, v) in slots.iter_mut().zip(values) {
                        slot.write(v);
                    }
                    i += lanes;
                    continue;
                }
                // Something needs the exact path: these rows go one by one below.
                for k in i..i + lanes {
                    out[k - first].write(self.finish.row(k, one_row(s, &self, k, &mut scratch))?);
                }
                i += lanes;
                continue;
            }
            let row = self.pass.row(i);
            out[i - first].write(self.finish.row(row, one_row(s, &self, i, &mut scratch))?);
            i += 1;
        }
        Ok(())
    }
}

/// Sums of the `i`-th visited row, whole.
#[inline(always)]
fn one_row<S: Simd, T: Element, F: Finish>(
    s: S,
    op: &RowsOp<'_, '_, T, F>,
    i: usize,
    scratch: &mut Scratch,
) -> RowSums {
    let params = op.pass.params(i);
    if params == RowParams::Skip {
        return Err(Irregular::Skipped);
    }
    let (ps, qs) = row_of(op.src, op.cols, op.pass.row(i));
    let sums = if op.exact_lanes {
        kernels::exact_segment(s, op.pass.kernel, params, ps, qs)
    } else if op.exact {
        exact::segment(op.pass.kernel, params, ps, qs)
    } else {
        kernels::segment(s, op.pass.kernel, params, ps, qs, scratch)
    };
    sums.map_err(Irregular::Bad)
}

struct SegmentOp<'a, T> {
    kernel: Kernel,
    params: RowParams,
    /// The exact path's kernels in f64 lanes where they have them (`kernels::exact_segment`).
    exact_lanes: bool,
    p: &'a [T],
    q: &'a [T],
    scratch: &'a mut Scratch,
}

impl<T: Element> WithSimd for SegmentOp<'_, T> {
    type Output = std::result::Result<Partial, crate::semantics::rows::Bad>;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> Self::Output {
        if self.exact_lanes {
            return kernels::exact_segment(s, self.kernel, self.params, self.p, self.q);
        }
        kernels::segment(s, self.kernel, self.params, self.p, self.q, self.scratch)
    }
}

/// A whole logits row's shift on the exact path (`kernels::exact_row_shift`).
struct ExactShiftOp<'a, T> {
    p: &'a [T],
    q: &'a [T],
}

impl<T: Element> WithSimd for ExactShiftOp<'_, T> {
    type Output = (f64, f64);
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> (f64, f64) {
        kernels::exact_row_shift(s, self.p, self.q)
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

/// `op` on every SIMD level this machine has (scalar, and AVX2 and AVX-512 where present):
/// the kernels' unit tests check each level against the same reference.
#[cfg(test)]
pub(crate) fn on_every_level<W: pulp::WithSimd + Copy>(op: W) -> Vec<W::Output> {
    let mut out = vec![pulp::Simd::vectorize(pulp::Scalar::new(), op)];
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(v) = pulp::x86::V3::try_new() {
            out.push(pulp::Simd::vectorize(v, op));
        }
        if let Some(v) = pulp::x86::V4::try_new() {
            out.push(pulp::Simd::vectorize(v, op));
        }
    }
    out
}
