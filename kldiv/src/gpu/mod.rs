//! The GPU engine: runs passes ([`PassEngine`]) with WGSL compute shaders through wgpu.
//! Device, queue, pipelines and buffers are created once and reused; inputs of any size
//! stream through in chunks, two in flight, and only per-row sums come back.
//!
//! - `adapter`: which GPU, and the device opened on it.
//! - `pipelines`: the bind-group layout and compiled kernel variants.
//! - `dispatch`: how a pass is cut into chunks and dispatches (pure).
//! - `stream`: chunks uploaded (or bound from the caller's buffers), run, read back.
//! - `records`: what kernels write, and how it becomes `semantics` sums.
//! - `shaders`: WGSL assembly, the constants shared with Rust, and their checks.
//! - `probe`: the adapter's own read limit (a plain read kernel), for benchmarks.
//!
//! f64 inputs run through f64 kernels where the adapter has SHADER_F64, and are narrowed to
//! f32 elsewhere. Rows holding values the kernels do not handle (NaN, negatives, ±inf
//! probabilities, magnitudes outside [2^-60, 2^60], f64 values that narrowing would change) are
//! flagged by bit tests; `semantics::run` recomputes them on the exact path, which also
//! reports bad input exactly as the CPU engine does.

mod adapter;
mod dispatch;
mod host;
mod pipelines;
mod probe;
mod records;
mod shaders;
mod stream;

pub use adapter::{preferred_info as preferred_adapter_info, AdapterDescription};

use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::request::{Divergence, Request};
use crate::semantics::finish;
use crate::semantics::plan::{Kernel, Pass, RowParams, Rows};
use crate::semantics::rows::{validate_shape, Irregular, RowPair, RowSums, Shape};
use crate::semantics::run::{Finish, PassEngine};
use crate::semantics::sums::Partial;
use pipelines::Pipelines;
use records::Folded;
use shaders::{KernelFile, Reduce};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stream::{Slot, StreamPass};

/// How long a single wait on the device may take before it is reported as hung.
const WAIT: Duration = Duration::from_secs(120);

/// What the last completed call moved and ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub bytes_uploaded: u64,
    pub bytes_read_back: u64,
    pub dispatches: u64,
    pub chunks: u64,
    /// Rows computed on the CPU's exact path because they held values the kernels do not
    /// handle, or needed more accuracy than the f32 sums gave.
    pub rows_on_cpu: u64,
    /// Time the kernels ran on the GPU, from timestamp queries (None without
    /// TIMESTAMP_QUERY).
    pub kernel_ns: Option<u64>,
    /// f64 inputs were narrowed to f32 for the kernels (the adapter has no SHADER_F64):
    /// results carry f32 rounding (values narrowing would change still went to the exact
    /// path). False where f64 inputs ran through the f64 kernels.
    pub f64_in_f32: bool,
}

/// Where a call's inputs are: host slices, or GPU buffers the caller already filled
/// (row-major, `rows × cols` elements of `T`, from byte 0).
#[derive(Debug)]
pub enum Source<'a, T> {
    Host(&'a [T], &'a [T]),
    Device(&'a wgpu::Buffer, &'a wgpu::Buffer),
}

impl<T> Clone for Source<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Source<'_, T> {}

/// The GPU back end. `Send + Sync`; share it across threads (calls are serialised).
pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterDescription,
    pipelines: Pipelines,
    slots: Mutex<[Slot; 2]>,
    /// Grow-only P and Q buffers that a report's two passes (divergences, then agreement)
    /// read from one upload; reused from block to block of a file.
    resident: Mutex<[Option<wgpu::Buffer>; 2]>,
    lost: Arc<AtomicBool>,
    chunk_bytes: u64,
    /// min_storage_buffer_offset_alignment.
    align: u64,
    /// f64 inputs run through the f64 kernels (the device has SHADER_F64).
    f64_kernels: bool,
    /// How workgroups merge their threads' records (subgroups where the device has them).
    reduce: Reduce,
    /// The call in progress, then the last one completed.
    current: Mutex<CallStats>,
    last: Mutex<CallStats>,
}

fn gpu_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpu(format!("{what}: {e}"))
}

impl GpuEngine {
    /// Open the preferred adapter. Honours `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `KLDIV_ADAPTER` (a substring of the adapter name). No adapter is an error, not a panic.
    pub fn new() -> Result<Self> {
        Self::from_adapter(&adapter::preferred()?)
    }

    /// Open a device on a chosen adapter.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let (device, queue, desc) = adapter::open(adapter)?;
        Ok(Self::from_device(device, queue, desc))
    }

    /// Build the engine on a device the caller already has (e.g. shared with a renderer or
    /// another wgpu-based library).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: AdapterDescription) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        let chunk_bytes = info.max_storage_binding.min(info.max_buffer).min(1 << 30);
        let align = device.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        let f64_kernels = info.f64 && device.features().contains(wgpu::Features::SHADER_F64);
        let reduce = if info.subgroups && device.features().contains(wgpu::Features::SUBGROUP) {
            Reduce::Subgroup
        } else {
            Reduce::Tree
        };
        GpuEngine {
            f64_kernels,
            reduce,
            pipelines: Pipelines::new(&device),
            device,
            queue,
            info,
            slots: Mutex::new([Slot::default(), Slot::default()]),
            resident: Mutex::new([None, None]),
            lost,
            chunk_bytes,
            align,
            current: Mutex::new(CallStats::default()),
            last: Mutex::new(CallStats::default()),
        }
    }

    pub fn adapter(&self) -> &AdapterDescription {
        &self.info
    }

    /// Limit the bytes of each input chunk (rounded to whole segments). A test hook: it
    /// forces chunking and row splits on small inputs.
    #[doc(hidden)]
    pub fn set_chunk_bytes(&mut self, bytes: u64) {
        self.chunk_bytes = bytes.clamp(
            8 * shaders::SEG as u64,
            self.info.max_storage_binding.min(self.info.max_buffer),
        );
    }

    /// Narrow f64 inputs to f32 kernels even where the device has f64 ones. A test hook: it
    /// keeps the path of adapters without SHADER_F64 tested on one that has it.
    #[doc(hidden)]
    pub fn set_f64_kernels(&mut self, on: bool) {
        self.f64_kernels = on && self.info.f64;
    }

    /// Reduce workgroups through a tree in workgroup memory even where the device has
    /// subgroups. A test hook: both reductions stay tested on an adapter with subgroups.
    #[doc(hidden)]
    pub fn set_subgroups(&mut self, on: bool) {
        self.reduce = if on && self.info.subgroups {
            Reduce::Subgroup
        } else {
            Reduce::Tree
        };
    }

    /// Whether workgroups reduce through subgroup operations here.
    pub fn uses_subgroups(&self) -> bool {
        self.reduce == Reduce::Subgroup
    }

    /// Whether f64 inputs are computed in f64 here (else narrowed to f32 kernels).
    pub fn computes_f64(&self) -> bool {
        self.f64_kernels
    }

    /// Host → device bandwidth in bytes/s, from one timed write of `bytes`.
    pub fn measure_upload(&self, bytes: u64) -> Result<f64> {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kldiv upload probe"),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let data = vec![0u8; bytes as usize];
        let t = std::time::Instant::now();
        self.queue.write_buffer(&buf, 0, &data);
        self.queue.submit([]);
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT),
            })
            .map_err(|e| gpu_err("waiting for the GPU", e))?;
        Ok(bytes as f64 / t.elapsed().as_secs_f64().max(1e-9))
    }

    /// What the last completed call moved and ran.
    pub fn last_call(&self) -> CallStats {
        self.last.lock().map(|s| *s).unwrap_or_default()
    }

    fn check_alive(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            Err(Error::Gpu("the GPU device was lost".into()))
        } else {
            Ok(())
        }
    }

    /// Per-row values, the GPU twin of [`crate::cpu::CpuEngine::per_row`].
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

    /// The GPU twin of [`crate::cpu::CpuEngine::per_row_each`].
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
        self.call::<T>(req, divs, Source::Host(p, q), shape)
    }

    /// Each row's agreement sums over logits or log-probabilities `p`, `q` (`rows × cols`),
    /// given each row's tops from a pass over the same rows (`PerRow::tops`): Σ min(p, q) and
    /// each side's 10 largest values, in a second read on the device. `None` for rows the
    /// caller computes in f64 (see `semantics::run::agreement`). Its statistics are added to
    /// those of the last call ([`GpuEngine::last_call`]), the pass that gave `tops`.
    pub fn agreement_rows<T: Element>(
        &self,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
        tops: &[Option<crate::RowTops>],
    ) -> Result<Vec<Option<crate::semantics::sums::AgreeSums>>> {
        let req = Request::new(Divergence::Kl).input(crate::InputForm::Logits);
        let shape = validate_shape(p.len(), q.len(), rows, cols, &req)?;
        if tops.len() != rows {
            return Err(Error::InvalidRequest(format!(
                "{} row tops for {rows} rows",
                tops.len()
            )));
        }
        self.published::<T, _>(true, || {
            T::gpu_agreement(self, Source::Host(p, q), shape, tops)
        })
    }

    /// [`GpuEngine::per_row_each`] and, for logits or log-probabilities, each row's
    /// agreement sums ([`GpuEngine::agreement_rows`]) from one upload: both passes read the
    /// same device copy of `p` and `q` (two streamed passes would send the rows over the bus
    /// twice). Inputs the device cannot hold in one buffer, and f64 on adapters without f64
    /// kernels, are streamed for each pass instead.
    pub fn per_row_each_agreeing<T: Element>(
        &self,
        req: &Request,
        divs: &[crate::Divergence],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<(
        crate::PerRow,
        Vec<Option<crate::semantics::sums::AgreeSums>>,
    )> {
        if req.input == crate::InputForm::Probabilities {
            return Ok((self.per_row_each(req, divs, p, q, rows, cols)?, vec![]));
        }
        let shape = validate_shape(p.len(), q.len(), rows, cols, req)?;
        let q = if req.reads_q() { q } else { p };
        let bytes = std::mem::size_of_val(p) as u64;
        // f64 on an adapter without f64 kernels is narrowed by the streamed upload.
        let native = T::DTYPE != Dtype::F64 || self.f64_kernels;
        if !native || bytes.next_multiple_of(16) > self.adapter().max_buffer {
            let v = self.per_row_each(req, divs, p, q, rows, cols)?;
            let a = self.agreement_rows(p, q, rows, cols, &v.tops)?;
            return Ok((v, a));
        }
        // Held through both passes: another caller's block must not overwrite these.
        let mut resident = self
            .resident
            .lock()
            .map_err(|_| Error::Gpu("poisoned lock".into()))?;
        let [rp, rq] = &mut *resident;
        let (pb, qb) = (self.upload_into(rp, p), self.upload_into(rq, q));
        let src = Source::Device(&pb, &qb);
        let v = self.call::<T>(req, divs, src, shape)?;
        let a = if v.tops.len() == rows {
            self.published::<T, _>(true, || T::gpu_agreement(self, src, shape, &v.tops))?
        } else {
            vec![]
        };
        if let Ok(mut last) = self.last.lock() {
            last.bytes_uploaded += 2 * bytes;
        }
        Ok((v, a))
    }

    /// Per-row values for inputs already on this engine's device: `p` and `q` hold
    /// `rows × cols` row-major elements of `T` (f32, f16, bf16; f64 where the engine
    /// [computes f64](GpuEngine::computes_f64)) from byte 0, with
    /// STORAGE and COPY_SRC usage (see [`GpuEngine::upload`]). Nothing crosses to the host
    /// but the per-row sums (and rows only the exact path handles).
    pub fn per_row_resident<T: Element>(
        &self,
        req: &Request,
        p: &wgpu::Buffer,
        q: &wgpu::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        if T::DTYPE == Dtype::F64 && !self.f64_kernels {
            return Err(Error::InvalidRequest(
                "GPU-resident f64 inputs need an adapter with SHADER_F64; this one has \
                 f32, f16 and bf16 kernels"
                    .into(),
            ));
        }
        if rows == 0 || cols == 0 {
            return Err(Error::Empty { rows, cols });
        }
        let need = (rows as u64)
            .checked_mul(cols as u64)
            .and_then(|n| n.checked_mul(T::DTYPE.size_bytes() as u64))
            .ok_or_else(|| Error::InvalidRequest("shape overflows".into()))?;
        for (b, side) in [(p, "P"), (q, "Q")] {
            if b.size() < need {
                return Err(Error::InvalidRequest(format!(
                    "{side} buffer holds {} bytes, {rows}×{cols} {} needs {need}",
                    b.size(),
                    T::DTYPE
                )));
            }
        }
        let q = if req.reads_q() { q } else { p };
        let v = self.call::<T>(
            req,
            &[req.divergence],
            Source::Device(p, q),
            Shape { rows, cols },
        )?;
        Ok(v.values.into_iter().next().unwrap_or_default())
    }

    /// One request: the shared orchestration on this engine, its statistics published.
    fn call<T: Element>(
        &self,
        req: &Request,
        divs: &[crate::Divergence],
        src: Source<'_, T>,
        shape: Shape,
    ) -> Result<crate::PerRow> {
        self.published::<T, _>(false, || T::gpu_per_row(self, req, divs, src, shape))
    }

    /// Runs one call's passes, then publishes their statistics as [`GpuEngine::last_call`]:
    /// the call's own, or (`continues`) added to the last call's, for a further pass over the
    /// same rows.
    fn published<T: Element, R>(
        &self,
        continues: bool,
        passes: impl FnOnce() -> Result<R>,
    ) -> Result<R> {
        self.check_alive()?;
        let start = match self.last.lock() {
            Ok(last) if continues => *last,
            _ => CallStats {
                f64_in_f32: T::DTYPE == Dtype::F64 && !self.f64_kernels,
                ..CallStats::default()
            },
        };
        if let Ok(mut c) = self.current.lock() {
            *c = start;
        }
        let out = passes()?;
        if let (Ok(c), Ok(mut last)) = (self.current.lock(), self.last.lock()) {
            *last = *c;
        }
        Ok(out)
    }

    /// Copy host data into `slot`'s buffer, grown when it is too small, zeros after the data
    /// up to a whole vector (the kernels bind whole vectors; the rest is stale and unread).
    fn upload_into<T: Element>(&self, slot: &mut Option<wgpu::Buffer>, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // COPY_SRC: rows only the exact path handles are copied back from it.
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let buf = stream::ensure(&self.device, slot, host::bound_len(bytes), usage);
        host::upload(&self.queue, &buf, bytes);
        buf
    }

    /// Copy host data into a new buffer usable by [`GpuEngine::per_row_resident`].
    pub fn upload<T: Element>(&self, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let size = (bytes.len() as u64).max(4).next_multiple_of(4);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kldiv input"),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let whole = bytes.len() / 4 * 4;
        self.queue.write_buffer(&buf, 0, &bytes[..whole]);
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buf, whole as u64, &tail);
        }
        buf
    }
}

impl PassEngine for GpuEngine {
    type Src<'a, T: Element> = Source<'a, T>;

    fn run_pass<T: Element, F: Finish>(
        &self,
        pass: &Pass<'_>,
        src: Source<'_, T>,
        shape: Shape,
        finish: &F,
    ) -> Result<Vec<F::Out>> {
        let cols = shape.cols;
        // Listed rows (re-reads: few) are gathered on the host into a contiguous block.
        let gathered: Option<(Vec<T>, Vec<T>)> = match pass.rows {
            Rows::All => None,
            Rows::Listed(rows) => {
                let mut p = Vec::with_capacity(rows.len() * cols);
                let mut q = Vec::with_capacity(rows.len() * cols);
                for &r in rows {
                    let (pr, qr) = self.host_row(src, cols, r, 0, cols)?;
                    p.extend_from_slice(&pr);
                    q.extend_from_slice(&qr);
                }
                Some((p, q))
            }
        };
        let src = match &gathered {
            Some((p, q)) => Source::Host(p, q),
            None => src,
        };
        let visits = pass.len(shape.rows);
        let in_f64 = shaders::is_f64(host::gpu_dtype(T::DTYPE, self.f64_kernels));
        let row_data: Vec<u8> = if !pass.has_row_data() {
            vec![]
        } else {
            records::row_data_bytes((0..visits).map(|i| pass.params(i)), in_f64)
        };
        let file = KernelFile::of(pass.kernel);
        let (div, transform) = match pass.kernel {
            // Probabilities with per-row data are read divided by their sums.
            Kernel::Probs(div) if pass.has_row_data() => (div, shaders::TRANSFORM_SCALE),
            Kernel::Probs(div) | Kernel::Logits(div) => (div, shaders::TRANSFORM_NONE),
            Kernel::LogitsJs => (Divergence::JensenShannon, shaders::TRANSFORM_NONE),
            // The agreement kernel has no variants.
            Kernel::LogitsAgree => (Divergence::Kl, shaders::TRANSFORM_NONE),
        };
        let mut stats = self.current.lock().map(|s| *s).unwrap_or_default();
        let streamed = self.stream(
            &StreamPass {
                file,
                div,
                transform,
                src,
                visits,
                cols,
                row_data: &row_data,
                shift_kernel: row_data.is_empty(),
            },
            &mut stats,
        )?;
        if let Ok(mut c) = self.current.lock() {
            *c = stats;
        }
        let mut out = Vec::with_capacity(visits);
        for (i, folded) in streamed.rows.into_iter().enumerate() {
            let params = pass.params(i);
            let sums: RowSums = if params == RowParams::Skip {
                Err(Irregular::Skipped)
            } else if streamed.flagged[i] {
                Err(Irregular::NeedsExact)
            } else {
                match folded {
                    Some(Folded::Probs(s)) => Ok(Partial::Probs(s)),
                    Some(Folded::Logits(s)) => Ok(Partial::Logits(s)),
                    Some(Folded::Js(s)) => Ok(Partial::Js(s.sums(params, in_f64, cols))),
                    Some(Folded::Agree(s)) => Ok(Partial::Agree(s)),
                    None => Err(Irregular::NeedsExact),
                }
            };
            out.push(finish.row(pass.row(i), sums)?);
        }
        Ok(out)
    }

    fn host_row<'a, T: Element>(
        &'a self,
        src: Source<'a, T>,
        shape: Shape,
        row: usize,
    ) -> Result<RowPair<'a, T>> {
        if let Ok(mut c) = self.current.lock() {
            c.rows_on_cpu += 1;
        }
        GpuEngine::host_row(self, src, shape.cols, row, 0, shape.cols)
    }

    fn sums_eps(&self, dtype: Dtype) -> f64 {
        if shaders::is_f64(host::gpu_dtype(dtype, self.f64_kernels)) {
            finish::SUMS_EPS_F64
        } else {
            finish::SUMS_EPS_F32
        }
    }
}
