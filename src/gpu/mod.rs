//! The GPU engine: the CPU engine's requests and semantics, executed by WGSL compute shaders
//! through wgpu. Device, queue, pipelines and buffers are created once and reused; inputs of
//! any size stream through in chunks, two in flight, and only per-row sums come back.
//!
//! The GPU reduces each row (or 4096-column segment) to the same partial sums as the CPU
//! engine (`sums::ProbSums` / `sums::LogitSums`); the host adds segments in f64 and applies
//! the shared finishing rules. Values the kernels do not handle (NaN, negatives, ±inf
//! probabilities, magnitudes outside [2^-60, 2^60]) are flagged per row by bit tests, and
//! those rows are recomputed by the CPU's exact path, which also reports bad input exactly
//! as the CPU engine does.

mod shaders;

pub use shaders::KernelFile;

use crate::cpu::SimdLevel;
use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::request::{Divergence, InputForm, Normalization, Request};
use crate::sums::{self, LogitSums, Partial, ProbSums};
use crate::CpuEngine;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Elements per workgroup segment (shaders/shared/layout.wgsl SEG).
const SEG: usize = 4096;
/// Rows this short use one thread per row (probabilities only).
const SHORT_ROW: usize = 64;
/// Workgroups per dispatch dimension.
const MAX_GROUPS: usize = 65_535;
/// How long a single wait on the device may take before it is reported as hung.
const WAIT: Duration = Duration::from_secs(120);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    cols: u32,
    row_stride: u32,
    elem_offset: u32,
    segs: u32,
    grid_x: u32,
    row0: u32,
    col0: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct ProbRec {
    main: f32,
    main2: f32,
    sp: f32,
    sq: f32,
    diff: f32,
    q_zero: u32,
    p_zero: u32,
    bad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LogitRec {
    ma: f32,
    mb: f32,
    sa: f32,
    sb: f32,
    ea: f32,
    eb: f32,
    xa: f32,
    xb: f32,
    ax_a: f32,
    ax_b: f32,
    psi_a: f32,
    psi_b: f32,
    xerr_a: f32,
    xerr_b: f32,
    c_hi: f32,
    c_lo: f32,
    na: u32,
    nb: u32,
    q_zero: u32,
    p_zero: u32,
    bad: u32,
    psi_bad: u32,
    _pad: [u32; 2],
}

/// shaders/logits_js.wgsl `JsRec`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct JsRec {
    h: f32,
    err: f32,
    amu: f32,
    sp: f32,
    sq: f32,
    bad: u32,
    _pad: [u32; 2],
}

/// Where a call's inputs are: host slices, or GPU buffers the caller already filled
/// (row-major, `rows × cols` elements of `T`, from byte 0).
#[derive(Clone, Copy)]
enum Source<'a, T> {
    Host(&'a [T], &'a [T]),
    Device(&'a wgpu::Buffer, &'a wgpu::Buffer),
}

/// One row (or part of one) of P and Q on the host.
type RowPair<'a, T> = (std::borrow::Cow<'a, [T]>, std::borrow::Cow<'a, [T]>);

/// A chunk of the input: (first row, rows, first column, columns).
type Chunk = (usize, usize, usize, usize);

/// Which adapter the engine runs on.
#[derive(Debug, Clone)]
pub struct AdapterDescription {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    /// A software rasteriser (lavapipe, llvmpipe, WARP): correct, but no faster than a CPU.
    pub is_software: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
    pub timestamps: bool,
}

/// What the last call moved and ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub bytes_uploaded: u64,
    pub bytes_read_back: u64,
    pub dispatches: u64,
    pub chunks: u64,
    /// Rows recomputed on the CPU because they held values the kernels do not handle.
    pub rows_on_cpu: u64,
    /// Time the kernels ran on the GPU, from timestamp queries (None without
    /// TIMESTAMP_QUERY).
    pub kernel_ns: Option<u64>,
}

/// Where a pass reads its rows from and what it does with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PipeKey {
    file: KernelFile,
    dtype: Dtype,
    entry: &'static str,
    div: u32,
    transform: u32,
}

#[derive(Default)]
struct Slot {
    p: Option<wgpu::Buffer>,
    q: Option<wgpu::Buffer>,
    out: Option<wgpu::Buffer>,
    readback: Option<wgpu::Buffer>,
    params: Vec<wgpu::Buffer>,
    row_data: Option<wgpu::Buffer>,
    /// Timestamp queries (begin, end per pass), their resolve buffer and readback buffer.
    timing: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
    timed_passes: u32,
}

/// The GPU back end. `Send + Sync`; share it across threads (calls are serialised).
pub struct GpuEngine {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterDescription,
    layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    modules: Mutex<HashMap<(KernelFile, Dtype), wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipeKey, wgpu::ComputePipeline>>,
    slots: Mutex<[Slot; 2]>,
    lost: Arc<AtomicBool>,
    chunk_bytes: u64,
    /// min_storage_buffer_offset_alignment.
    align: u64,
    last: Mutex<CallStats>,
}

fn gpu_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Gpu(format!("{what}: {e}"))
}

/// Adapter preference: a real GPU first, software rasterisers last.
fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The adapter [`GpuEngine::new`] opens: Vulkan, Metal or DX12 (never GL, where wgpu falls
/// back silently and which lacks what the kernels need), named like `KLDIV_ADAPTER` or
/// `WGPU_ADAPTER_NAME` when set, discrete GPUs first.
fn preferred_adapter() -> Result<wgpu::Adapter> {
    // GL is never taken, so it is not even loaded (its EGL probing prints warnings and is
    // one more driver that can fail); WGPU_BACKEND still decides when set.
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all() - wgpu::Backends::GL);
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    let adapters = pollster::block_on(instance.enumerate_adapters(backends));
    let wanted = std::env::var("KLDIV_ADAPTER")
        .or_else(|_| std::env::var("WGPU_ADAPTER_NAME"))
        .ok()
        .map(|s| s.to_lowercase());
    let mut candidates: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            info.backend != wgpu::Backend::Gl
                && wanted
                    .as_ref()
                    .is_none_or(|w| info.name.to_lowercase().contains(w))
        })
        .collect();
    candidates.sort_by_key(|a| rank(a.get_info().device_type));
    candidates.into_iter().next().ok_or_else(|| {
        Error::GpuUnavailable(match &wanted {
            Some(w) => format!("no Vulkan/Metal/DX12 adapter named like {w:?}"),
            None => "no Vulkan, Metal or DX12 adapter found (install a driver, e.g. \
                     mesa-vulkan-drivers for lavapipe)"
                .into(),
        })
    })
}

/// The adapter [`GpuEngine::new`] would open, described without opening a device (the
/// scheduler's calibration key needs no more).
pub fn preferred_adapter_info() -> Result<AdapterDescription> {
    Ok(AdapterDescription::of(&preferred_adapter()?))
}

impl AdapterDescription {
    fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterDescription {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer: limits.max_buffer_size,
            timestamps: adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY),
        }
    }
}

impl GpuEngine {
    /// Open the preferred adapter. Honours `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `KLDIV_ADAPTER` (a substring of the adapter name). No adapter is an error, not a panic.
    pub fn new() -> Result<Self> {
        Self::from_adapter(&preferred_adapter()?)
    }

    /// Open a device on a chosen adapter.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self> {
        let alimits = adapter.limits();
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: alimits.max_storage_buffer_binding_size,
            max_buffer_size: alimits.max_buffer_size,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kldiv"),
            required_features: features,
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| Error::GpuUnavailable(format!("request_device failed: {e}")))?;
        let mut desc = AdapterDescription::of(adapter);
        desc.timestamps = !features.is_empty();
        Ok(Self::from_device(device, queue, desc))
    }

    /// Build the engine on a device the caller already has (e.g. shared with a renderer or
    /// another wgpu-based library).
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: AdapterDescription) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        device.set_device_lost_callback(move |_, _| flag.store(true, Ordering::SeqCst));
        let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("kldiv"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(4, false),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("kldiv"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let chunk_bytes = info.max_storage_binding.min(info.max_buffer).min(1 << 30);
        let align = device.limits().min_storage_buffer_offset_alignment.max(4) as u64;
        GpuEngine {
            device,
            queue,
            info,
            layout,
            pipeline_layout,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            slots: Mutex::new([Slot::default(), Slot::default()]),
            lost,
            chunk_bytes,
            align,
            last: Mutex::new(CallStats::default()),
        }
    }

    pub fn adapter(&self) -> &AdapterDescription {
        &self.info
    }

    /// Limit the bytes of each input chunk (rounded to whole segments); tests use this to
    /// force chunking on small inputs.
    pub fn set_chunk_bytes(&mut self, bytes: u64) {
        self.chunk_bytes = bytes.clamp(
            8 * SEG as u64,
            self.info.max_storage_binding.min(self.info.max_buffer),
        );
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

    fn pipeline(&self, key: PipeKey) -> Result<wgpu::ComputePipeline> {
        let mut pipes = self
            .pipelines
            .lock()
            .map_err(|_| Error::Gpu("poisoned lock".into()))?;
        if let Some(p) = pipes.get(&key) {
            return Ok(p.clone());
        }
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| Error::Gpu("poisoned lock".into()))?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = modules
            .entry((key.file, key.dtype))
            .or_insert_with(|| {
                let src = shaders::source(key.file, key.dtype);
                self.device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some("kldiv"),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    })
            })
            .clone();
        let constants: Vec<(&str, f64)> = match key.file {
            KernelFile::Probs => vec![("DIV", key.div as f64), ("TRANSFORM", key.transform as f64)],
            KernelFile::Logits | KernelFile::LogitsJs => vec![],
        };
        let pipe = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key.entry),
                layout: Some(&self.pipeline_layout),
                module: &module,
                entry_point: Some(key.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err("pipeline creation failed", e));
        }
        pipes.insert(key, pipe.clone());
        Ok(pipe)
    }

    /// Per-row values, the GPU twin of [`CpuEngine::per_row`].
    pub fn per_row<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        crate::validate_shape(p.len(), q.len(), rows, cols, req)?;
        let q = if req.reads_q() { q } else { p };
        self.run(req, Source::Host(p, q), rows, cols)
    }

    /// Per-row values for inputs already on this engine's device: `p` and `q` hold
    /// `rows × cols` row-major elements of `T` (f32, f16 or bf16) from byte 0, with
    /// STORAGE and COPY_SRC usage (see [`GpuEngine::upload`]). Nothing crosses to the host
    /// but the per-row sums (and rows holding values only the exact CPU path handles).
    pub fn per_row_resident<T: Element>(
        &self,
        req: &Request,
        p: &wgpu::Buffer,
        q: &wgpu::Buffer,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        if T::DTYPE == Dtype::F64 {
            return Err(Error::InvalidRequest(
                "GPU-resident inputs must be f32, f16 or bf16".into(),
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
        self.run::<T>(req, Source::Device(p, q), rows, cols)
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

    /// Elements `[start, start + n)` of a device buffer, read back to the host.
    fn read_elems<T: Element>(&self, buf: &wgpu::Buffer, start: usize, n: usize) -> Result<Vec<T>> {
        let es = T::DTYPE.size_bytes() as u64;
        let b0 = (start as u64 * es) / 4 * 4;
        let b1 = ((start + n) as u64 * es)
            .next_multiple_of(4)
            .min(buf.size());
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kldiv row readback"),
            size: (b1 - b0).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, b0, &staging, 0, Some(b1 - b0));
        self.queue.submit([enc.finish()]);
        self.map_and_wait(&staging, b1 - b0)?;
        let view = staging
            .get_mapped_range(0..b1 - b0)
            .map_err(|e| gpu_err("reading a row", e))?;
        let skip = (start as u64 * es - b0) as usize;
        let bytes = &view[skip..skip + n * es as usize];
        let out: Vec<T> = bytes
            .chunks_exact(es as usize)
            .map(bytemuck::pod_read_unaligned)
            .collect();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    fn map_and_wait(&self, buf: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        buf.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(WAIT),
            })
            .map_err(|e| gpu_err("waiting for the GPU", e))?;
        self.check_alive()?;
        rx.recv_timeout(WAIT)
            .map_err(|_| Error::Gpu("the GPU did not return results".into()))?
            .map_err(|e| gpu_err("reading results", e))
    }

    /// One row of both inputs on the host (for the exact path).
    fn host_row<'a, T: Element>(
        &self,
        src: Source<'a, T>,
        row: usize,
        cols: usize,
        start: usize,
        n: usize,
    ) -> Result<RowPair<'a, T>> {
        let r = row * cols + start..row * cols + start + n;
        Ok(match src {
            Source::Host(p, q) => (p[r.clone()].into(), q[r].into()),
            Source::Device(p, q) => (
                self.read_elems(p, r.start, n)?.into(),
                self.read_elems(q, r.start, n)?.into(),
            ),
        })
    }

    fn run<T: Element>(
        &self,
        req: &Request,
        src: Source<'_, T>,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        self.check_alive()?;
        let mut stats = CallStats::default();
        let tol = sums::sum_tolerance(req, T::DTYPE);
        let probs = req.input == InputForm::Probabilities;
        let two_pass = req.divergence == Divergence::JensenShannon
            && (!probs || req.normalization == Normalization::Normalize);
        let exact = |row: usize| -> Result<f64> {
            // The CPU's exact path: same values, same errors (with this row's index).
            let (pr, qr) = self.host_row(src, row, cols, 0, cols)?;
            CpuEngine::with_level(SimdLevel::Reference)?
                .per_row(req, &pr, &qr, 1, cols)
                .map(|v| v[0])
                .map_err(|e| crate::relocate_row(e, row))
        };
        let file = if probs {
            KernelFile::Probs
        } else {
            KernelFile::Logits
        };
        let out = if !two_pass {
            let parts =
                self.run_pass(file, req.divergence, 0, None, src, rows, cols, &mut stats)?;
            let mut out = Vec::with_capacity(rows);
            for (row, part) in parts.into_iter().enumerate() {
                out.push(match part {
                    None => {
                        stats.rows_on_cpu += 1;
                        exact(row)?
                    }
                    // Far-apart row sums under Normalize: the CPU rereads the row rescaled.
                    Some(Partial::Probs(s)) if sums::needs_rescale(req, &s) => {
                        stats.rows_on_cpu += 1;
                        exact(row)?
                    }
                    Some(Partial::Probs(s)) => sums::finish_probs(req, &s, tol, row)?,
                    Some(Partial::Logits(s)) => {
                        match sums::finish_logits(req, &s, tol, row, sums::SUMS_EPS_F32, true)? {
                            sums::LogitOutcome::Value(v) => v,
                            // The bound asks for more than these sums give: the exact path.
                            _ => {
                                stats.rows_on_cpu += 1;
                                exact(row)?
                            }
                        }
                    }
                });
            }
            out
        } else {
            // Jensen–Shannon needs normalised rows inside its logarithms: a first pass for the
            // row sums (or log-sum-exps), a second that reads the rows rescaled.
            let first = if probs {
                Divergence::Kl
            } else {
                Divergence::Entropy
            };
            let parts = self.run_pass(file, first, 0, None, src, rows, cols, &mut stats)?;
            let mut data = vec![[0f32; 4]; rows];
            // The same in f64 (logits): what the kernel's roundings are measured against.
            let mut logit_rows = vec![[0f64; 4]; rows];
            let mut fallback = vec![false; rows];
            for (row, part) in parts.iter().enumerate() {
                match part {
                    None => fallback[row] = true,
                    Some(Partial::Probs(s)) => {
                        sums::check_probs(req, s, tol, row)?;
                        data[row] = [(1.0 / s.sp) as f32, (1.0 / s.sq) as f32, 0.0, 0.0];
                    }
                    Some(Partial::Logits(s)) => {
                        sums::check_logits(req, s, tol, row)?;
                        // Maxima are input values (exact in f32); ln of the sums is small.
                        logit_rows[row] = [s.ma, s.sa.ln(), s.mb, s.sb.ln()];
                        data[row] = logit_rows[row].map(|v| v as f32);
                    }
                }
            }
            // Probabilities are rescaled (transform 1); logits go through the log-domain
            // kernel of shaders/logits_js.wgsl.
            let (file2, transform) = if probs {
                (KernelFile::Probs, 1)
            } else {
                (KernelFile::LogitsJs, 0)
            };
            let parts = self.run_pass(
                file2,
                Divergence::JensenShannon,
                transform,
                Some(&data),
                src,
                rows,
                cols,
                &mut stats,
            )?;
            let second = Request {
                input: InputForm::Probabilities,
                normalization: Normalization::Normalize,
                ..*req
            };
            let mut out = Vec::with_capacity(rows);
            for (row, part) in parts.into_iter().enumerate() {
                let value = match part {
                    Some(Partial::Probs(s)) if !fallback[row] => {
                        let v = sums::finish_probs(&second, &s, None, row)?;
                        let ok = probs
                            || js_logits_bound(&s, &data[row], &logit_rows[row])
                                <= sums::LOGIT_TARGET * v;
                        ok.then_some(v)
                    }
                    _ => None,
                };
                out.push(match value {
                    Some(v) => v,
                    None => {
                        stats.rows_on_cpu += 1;
                        exact(row)?
                    }
                });
            }
            out
        };
        if let Ok(mut last) = self.last.lock() {
            *last = stats;
        }
        Ok(out)
    }

    /// One pass over all rows: per-row partial sums, `None` for rows to recompute exactly.
    #[allow(clippy::too_many_arguments)]
    fn run_pass<T: Element>(
        &self,
        file: KernelFile,
        div: Divergence,
        transform: u32,
        row_data: Option<&[[f32; 4]]>,
        src: Source<'_, T>,
        rows: usize,
        cols: usize,
        stats: &mut CallStats,
    ) -> Result<Vec<Option<Partial>>> {
        let dtype = if T::DTYPE == Dtype::F64 {
            Dtype::F32
        } else {
            T::DTYPE
        };
        let esize = dtype.size_bytes() as u64;
        let div_code = match div {
            Divergence::Kl => 0,
            Divergence::ReverseKl => 1,
            Divergence::SymmetricKl => 2,
            Divergence::JensenShannon => 3,
            Divergence::CrossEntropy => 4,
            Divergence::Entropy => 5,
        };
        let short = file != KernelFile::Logits && cols <= SHORT_ROW;
        let rec_size = rec_size(file);
        // Chunks: whole rows when a row fits in one binding, else column ranges of one row.
        // (Bindings into a caller's buffer start at an aligned offset: leave room for it.)
        let max_elems = ((self.chunk_bytes - self.align) / esize) as usize;
        let chunks: Vec<Chunk> = if cols <= max_elems {
            let segs = if short { 1 } else { cols.div_ceil(SEG) };
            let by_records = (self.chunk_bytes / (rec_size * segs as u64)).max(1) as usize;
            let per = (max_elems / cols).min(by_records).max(1);
            (0..rows.div_ceil(per))
                .map(|c| (c * per, (per).min(rows - c * per), 0, cols))
                .collect()
        } else {
            let span = (max_elems / SEG).max(1) * SEG;
            (0..rows)
                .flat_map(|r| {
                    (0..cols.div_ceil(span))
                        .map(move |k| (r, 1, k * span, span.min(cols - k * span)))
                })
                .collect()
        };
        let mut parts: Vec<Option<Partial>> = vec![None; rows];
        let mut flagged = vec![false; rows];
        let mut pending: Option<(usize, Chunk, u64)> = None;
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| Error::Gpu("poisoned lock".into()))?;
        // One step past the end: the last chunk is read after the loop's final submit.
        for k in 0..=chunks.len() {
            let mut next = None;
            if let Some(&chunk) = chunks.get(k) {
                let slot = k % 2;
                let bytes = self.submit_chunk(
                    &mut slots[slot],
                    file,
                    dtype,
                    div_code,
                    transform,
                    short,
                    row_data,
                    src,
                    cols,
                    chunk,
                    stats,
                )?;
                next = Some((slot, chunk, bytes));
            }
            // Read the previous chunk while this one runs.
            if let Some((ps, pc, bytes)) = pending.take() {
                let ns = self.collect(
                    &slots[ps],
                    file,
                    div,
                    pc,
                    bytes,
                    short,
                    &mut parts,
                    &mut flagged,
                )?;
                add_ns(stats, ns);
            }
            pending = next;
        }
        for (part, f) in parts.iter_mut().zip(&flagged) {
            if *f {
                *part = None;
            }
        }
        Ok(parts)
    }

    /// Upload one chunk into `slot`, dispatch, copy its records for reading. Returns the
    /// record bytes to read back.
    #[allow(clippy::too_many_arguments)]
    fn submit_chunk<T: Element>(
        &self,
        slot: &mut Slot,
        file: KernelFile,
        dtype: Dtype,
        div: u32,
        transform: u32,
        short: bool,
        row_data: Option<&[[f32; 4]]>,
        src: Source<'_, T>,
        cols: usize,
        (r0, nrows, c0, ncols): Chunk,
        stats: &mut CallStats,
    ) -> Result<u64> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let valid = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Either upload the chunk into this slot's buffers, or bind the caller's buffers at
        // the chunk (from an aligned offset, the remainder passed as elem_offset).
        let esize = if T::DTYPE == Dtype::F64 {
            4
        } else {
            T::DTYPE.size_bytes() as u64
        };
        let (pbuf, qbuf, offset, size, elem_offset) = match src {
            Source::Host(p, q) => {
                let pb = self.bytes_of(p, r0, nrows, c0, ncols, cols);
                let qb = self.bytes_of(q, r0, nrows, c0, ncols, cols);
                let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
                let pbuf = ensure(&self.device, &mut slot.p, pb.len() as u64, usage);
                self.queue.write_buffer(&pbuf, 0, &pb);
                let qbuf = ensure(&self.device, &mut slot.q, qb.len() as u64, usage);
                self.queue.write_buffer(&qbuf, 0, &qb);
                stats.bytes_uploaded += (pb.len() + qb.len()) as u64;
                (pbuf, qbuf, 0, pb.len() as u64, 0)
            }
            Source::Device(p, q) => {
                let e0 = (r0 * cols + c0) as u64;
                let e1 = e0 + ((nrows - 1) * cols + ncols) as u64;
                let b0 = e0 * esize / self.align * self.align;
                let end = (e1 * esize).next_multiple_of(4).min(p.size()).min(q.size());
                (
                    p.clone(),
                    q.clone(),
                    b0,
                    end - b0,
                    ((e0 * esize - b0) / esize) as u32,
                )
            }
        };
        let size = std::num::NonZeroU64::new(size.next_multiple_of(4).max(4));
        stats.chunks += 1;

        let segs = if short { 1 } else { ncols.div_ceil(SEG) };
        let nrec = (nrows * segs) as u64;
        let rec_size = rec_size(file);
        let out_bytes = nrec * rec_size;
        let out = ensure(
            &self.device,
            &mut slot.out,
            out_bytes,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let readback = ensure(
            &self.device,
            &mut slot.readback,
            out_bytes,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        );
        let rd = ensure(
            &self.device,
            &mut slot.row_data,
            (nrows as u64 * 16).max(16),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        if let Some(data) = row_data {
            self.queue
                .write_buffer(&rd, 0, bytemuck::cast_slice(&data[r0..r0 + nrows]));
            stats.bytes_uploaded += nrows as u64 * 16;
        }
        let split_row = ncols != cols;
        if file == KernelFile::Logits && split_row {
            // A row split over chunks needs its shift in every chunk: take it on the host
            // from the row's first block, as the CPU engine does.
            let n = cols.min(crate::cpu::scalar::BLOCK);
            let (pr, qr) = self.host_row(src, r0, cols, 0, n)?;
            let (hi, lo) = crate::cpu::scalar::row_shift(&pr, &qr);
            let c_hi = hi as f32;
            let c_lo = ((hi - c_hi as f64) + lo) as f32;
            self.queue
                .write_buffer(&rd, 0, bytemuck::cast_slice(&[c_hi, c_lo, 0.0, 0.0]));
        }

        let mut passes: Vec<(PipeKey, usize)> = vec![];
        let entry = if short { "rows_thread" } else { "rows_wg" };
        if file == KernelFile::Logits && !split_row {
            passes.push((
                PipeKey {
                    file,
                    dtype,
                    entry: "shift",
                    div: 0,
                    transform: 0,
                },
                nrows.div_ceil(256),
            ));
        }
        let groups = if short {
            nrows.div_ceil(256)
        } else {
            nrows * segs
        };
        passes.push((
            PipeKey {
                file,
                dtype,
                entry,
                div,
                transform,
            },
            groups,
        ));

        while slot.params.len() < passes.len() {
            slot.params
                .push(self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kldiv params"),
                    size: std::mem::size_of::<Params>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
        }
        if self.info.timestamps && slot.timing.is_none() {
            let qs = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kldiv timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 4,
            });
            let buf = |usage| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kldiv timestamps"),
                    size: 32,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let resolve = buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
            let read = buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
            slot.timing = Some((qs, resolve, read));
        }
        let mut encoder = self.device.create_command_encoder(&Default::default());
        for (i, (key, groups)) in passes.iter().enumerate() {
            let pipe = self.pipeline(*key)?;
            let grid_x = (*groups).clamp(1, MAX_GROUPS);
            let grid_y = groups.div_ceil(grid_x).max(1);
            if grid_y > MAX_GROUPS {
                return Err(Error::Gpu(format!(
                    "{groups} workgroups exceed one dispatch"
                )));
            }
            let params = Params {
                rows: nrows as u32,
                cols: ncols as u32,
                row_stride: ncols as u32,
                elem_offset,
                segs: segs as u32,
                grid_x: grid_x as u32,
                row0: 0,
                col0: c0 as u32,
            };
            self.queue
                .write_buffer(&slot.params[i], 0, bytemuck::bytes_of(&params));
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("kldiv"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &pbuf,
                            offset,
                            size,
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &qbuf,
                            offset,
                            size,
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: out.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: slot.params[i].as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: rd.as_entire_binding(),
                    },
                ],
            });
            let timestamp_writes = slot
                .timing
                .as_ref()
                .map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.0,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                });
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(key.entry),
                timestamp_writes,
            });
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(grid_x as u32, grid_y as u32, 1);
            stats.dispatches += 1;
        }
        encoder.copy_buffer_to_buffer(&out, 0, &readback, 0, Some(out_bytes));
        stats.bytes_read_back += out_bytes;
        slot.timed_passes = 0;
        if let Some((qs, resolve, read)) = &slot.timing {
            let n = passes.len() as u32;
            encoder.resolve_query_set(qs, 0..2 * n, resolve, 0);
            encoder.copy_buffer_to_buffer(resolve, 0, read, 0, Some(16 * n as u64));
            slot.timed_passes = n;
        }
        self.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(valid.pop()) {
            return Err(gpu_err("validation", e));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(gpu_err("out of GPU memory", e));
        }
        Ok(out_bytes)
    }

    /// The bytes of one chunk as the GPU reads them (f64 narrowed to f32; 4-byte padded).
    fn bytes_of<'a, T: Element>(
        &self,
        v: &'a [T],
        r0: usize,
        nrows: usize,
        c0: usize,
        ncols: usize,
        cols: usize,
    ) -> std::borrow::Cow<'a, [u8]> {
        let range = if ncols == cols {
            r0 * cols..(r0 + nrows) * cols
        } else {
            r0 * cols + c0..r0 * cols + c0 + ncols
        };
        let slice = &v[range];
        if T::DTYPE == Dtype::F64 {
            let f: Vec<f32> = slice.iter().map(|x| x.to_f64() as f32).collect();
            return std::borrow::Cow::Owned(bytemuck::cast_slice(&f).to_vec());
        }
        let bytes: &[u8] = bytemuck::cast_slice(slice);
        if bytes.len().is_multiple_of(4) {
            std::borrow::Cow::Borrowed(bytes)
        } else {
            let mut b = bytes.to_vec();
            b.resize(bytes.len().next_multiple_of(4), 0);
            std::borrow::Cow::Owned(b)
        }
    }

    /// Wait for a chunk's records and fold them into per-row partial sums.
    #[allow(clippy::too_many_arguments)]
    fn collect(
        &self,
        slot: &Slot,
        file: KernelFile,
        div: Divergence,
        (r0, nrows, _, ncols): Chunk,
        bytes: u64,
        short: bool,
        parts: &mut [Option<Partial>],
        flagged: &mut [bool],
    ) -> Result<Option<u64>> {
        let readback = slot
            .readback
            .as_ref()
            .ok_or_else(|| Error::Gpu("readback buffer missing".into()))?;
        self.map_and_wait(readback, bytes)?;
        {
            let view = readback
                .get_mapped_range(0..bytes)
                .map_err(|e| gpu_err("reading results", e))?;
            let segs = if short { 1 } else { ncols.div_ceil(SEG) };
            match file {
                KernelFile::Probs => {
                    let recs: &[ProbRec] = bytemuck::cast_slice(&view);
                    for r in 0..nrows {
                        let row = r0 + r;
                        for rec in &recs[r * segs..(r + 1) * segs] {
                            if rec.bad != 0 {
                                flagged[row] = true;
                            }
                            let s = prob_sums(div, rec);
                            match &mut parts[row] {
                                Some(Partial::Probs(acc)) => acc.merge(&s),
                                slot => *slot = Some(Partial::Probs(s)),
                            }
                        }
                    }
                }
                KernelFile::LogitsJs => {
                    let recs: &[JsRec] = bytemuck::cast_slice(&view);
                    for r in 0..nrows {
                        let row = r0 + r;
                        for rec in &recs[r * segs..(r + 1) * segs] {
                            if rec.bad != 0 {
                                flagged[row] = true;
                            }
                            // main = Σ m·F(u); main2 and diff carry the rounding bound's
                            // pieces to `run` (see `js_logits_bound`).
                            let s = ProbSums {
                                main: rec.h as f64,
                                main2: rec.err as f64,
                                sp: rec.sp as f64,
                                sq: rec.sq as f64,
                                diff: rec.amu as f64,
                            };
                            match &mut parts[row] {
                                Some(Partial::Probs(acc)) => acc.merge(&s),
                                slot => *slot = Some(Partial::Probs(s)),
                            }
                        }
                    }
                }
                KernelFile::Logits => {
                    let recs: &[LogitRec] = bytemuck::cast_slice(&view);
                    for r in 0..nrows {
                        let row = r0 + r;
                        for rec in &recs[r * segs..(r + 1) * segs] {
                            if rec.bad != 0 {
                                flagged[row] = true;
                            }
                            let s = logit_sums(rec);
                            match &mut parts[row] {
                                Some(Partial::Logits(acc)) => acc.merge(&s),
                                slot => *slot = Some(Partial::Logits(s)),
                            }
                        }
                    }
                }
            }
        }
        readback.unmap();
        // Kernel time of this chunk's passes, from the timestamp queries.
        let Some((_, _, read)) = slot.timing.as_ref().filter(|_| slot.timed_passes > 0) else {
            return Ok(None);
        };
        let n = slot.timed_passes as u64;
        self.map_and_wait(read, 16 * n)?;
        let ticks: u64 = {
            let view = read
                .get_mapped_range(0..16 * n)
                .map_err(|e| gpu_err("reading timestamps", e))?;
            let t: &[u64] = bytemuck::cast_slice(&view);
            t.chunks_exact(2).map(|p| p[1].saturating_sub(p[0])).sum()
        };
        read.unmap();
        Ok(Some(
            (ticks as f64 * self.queue.get_timestamp_period() as f64) as u64,
        ))
    }
}

fn add_ns(stats: &mut CallStats, ns: Option<u64>) {
    if let Some(ns) = ns {
        *stats.kernel_ns.get_or_insert(0) += ns;
    }
}

/// A bound on what rounding costs a Jensen–Shannon-over-logits row on the GPU. Each element's
/// u is off by its own δ (bounded in the kernel) plus the rounding δc of the kernel's f32 row
/// constants c = ma − mb and l = ln sb − ln sa; F changes by at most ½(|u| + |Δu|)·|Δu| for
/// a change Δu of its argument, and JS = ½ Σ m·F. From the kernel: `main2` = Σ m·δ·(|u| + 2δ),
/// `diff` = Σ m·|u|; Σ m = (Σp + Σq)/2.
fn js_logits_bound(s: &ProbSums, data32: &[f32; 4], exact: &[f64; 4]) -> f64 {
    let c32 = (data32[0] - data32[2]) as f64;
    let l32 = (data32[3] - data32[1]) as f64;
    let dc = ((exact[0] - exact[2]) - c32).abs() + ((exact[3] - exact[1]) - l32).abs();
    let sum_m = 0.5 * (s.sp + s.sq);
    let f_err = 0.5 * (s.main2 + dc * s.diff + 2.0 * dc * dc * sum_m);
    0.5 * f_err + sums::SUMS_EPS_F32 * s.main
}

/// Bytes of one record of a kernel file.
fn rec_size(file: KernelFile) -> u64 {
    (match file {
        KernelFile::Probs => std::mem::size_of::<ProbRec>(),
        KernelFile::Logits => std::mem::size_of::<LogitRec>(),
        KernelFile::LogitsJs => std::mem::size_of::<JsRec>(),
    }) as u64
}

/// Grow-only buffer: reuse `slot` if it is big enough.
fn ensure(
    device: &wgpu::Device,
    slot: &mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
) -> wgpu::Buffer {
    let size = size.max(16).next_multiple_of(16);
    if let Some(b) = slot {
        if b.size() >= size {
            return b.clone();
        }
    }
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kldiv"),
        size,
        usage,
        mapped_at_creation: false,
    });
    *slot = Some(b.clone());
    b
}

/// A GPU record as the CPU's sums: counted zeros become the infinities they stand for.
fn prob_sums(div: Divergence, r: &ProbRec) -> ProbSums {
    let inf = f64::INFINITY;
    let mut s = ProbSums {
        main: r.main as f64,
        main2: r.main2 as f64,
        sp: r.sp as f64,
        sq: r.sq as f64,
        diff: r.diff as f64,
    };
    match div {
        Divergence::Kl if r.q_zero > 0 => s.main = inf,
        Divergence::ReverseKl if r.p_zero > 0 => s.main = inf,
        Divergence::SymmetricKl => {
            if r.q_zero > 0 {
                s.main = inf;
            }
            if r.p_zero > 0 {
                s.main2 = inf;
            }
        }
        Divergence::CrossEntropy if r.q_zero > 0 => s.main = -inf,
        _ => {}
    }
    s
}

fn logit_sums(r: &LogitRec) -> LogitSums {
    // The kernels mark "no finite value yet" with −3.4e38 rather than −inf.
    let m = |v: f32, s: f32| {
        if s == 0.0 && v <= -3.3e38 {
            f64::NEG_INFINITY
        } else {
            v as f64
        }
    };
    let psi = |v: f32| if r.psi_bad != 0 { f64::NAN } else { v as f64 };
    // Elements at the maximum are counted apart from the rest of the sum.
    let (sa, sb) = (r.na as f64 + r.sa as f64, r.nb as f64 + r.sb as f64);
    LogitSums {
        ma: m(r.ma, sa as f32),
        mb: m(r.mb, sb as f32),
        sa,
        sb,
        ea: r.ea as f64,
        eb: r.eb as f64,
        xa: r.xa as f64,
        xb: r.xb as f64,
        ax_a: r.ax_a as f64,
        ax_b: r.ax_b as f64,
        psi_a: psi(r.psi_a),
        psi_b: psi(r.psi_b),
        xerr_a: r.xerr_a as f64,
        xerr_b: r.xerr_b as f64,
        // The shift as the kernel subtracted it.
        shift_hi: r.c_hi as f64,
        shift_lo: r.c_lo as f64,
        q_zero: r.q_zero as u64,
        p_zero: r.p_zero as u64,
    }
}
