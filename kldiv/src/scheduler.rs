//! The scheduler: one engine for users, which decides per job whether the CPU engine, the
//! GPU engine or both (rows split between them) run it, from a measured cost model.
//!
//! Cost model, per job: CPU time = elements / CPU throughput for the job's regime and input
//! form; GPU time = fixed latency + bytes to upload / measured upload bandwidth + elements /
//! GPU kernel throughput (no upload when the data already lives on the GPU); split time =
//! elements / (sum of both throughputs) plus the GPU's fixed latency. Throughputs come from a
//! short calibration (≤ 0.3 s) measured on first use in `auto` mode, or explicitly with
//! [`Engine::calibrate`], and can be saved and loaded so a process need not re-measure.

use crate::element::{Dtype, Element};
use crate::error::{Error, Result};
use crate::request::{Divergence, InputForm, Normalization, Request};
use crate::CpuEngine;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Where work may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceMode {
    /// Pick the fastest placement from the cost model (the default).
    Auto,
    Cpu,
    Gpu,
    /// Rows split between GPU and CPU in proportion to their predicted throughput.
    Split,
}

impl DeviceMode {
    /// `KLDIV_DEVICE` = auto | cpu | gpu | split, else `Auto`.
    pub fn from_env() -> Result<Self> {
        match std::env::var("KLDIV_DEVICE") {
            Err(_) => Ok(DeviceMode::Auto),
            Ok(v) => v.parse(),
        }
    }
}

impl std::str::FromStr for DeviceMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(DeviceMode::Auto),
            "cpu" => Ok(DeviceMode::Cpu),
            "gpu" => Ok(DeviceMode::Gpu),
            "split" => Ok(DeviceMode::Split),
            other => Err(Error::InvalidRequest(format!(
                "device {other:?}: expected auto, cpu, gpu or split"
            ))),
        }
    }
}

/// Row-length regimes, which the engines handle differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// ≤ 64 columns: many rows per SIMD vector / GPU workgroup.
    Short,
    /// ≤ 65,536 columns.
    Medium,
    /// Longer: rows split across threads / workgroups.
    Long,
}

impl Regime {
    pub fn of(cols: usize) -> Regime {
        match cols {
            0..=64 => Regime::Short,
            65..=65_536 => Regime::Medium,
            _ => Regime::Long,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// Measured throughputs. Elements per second are per input matrix (rows × cols).
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Who was measured: CPU SIMD level and threads, adapter and driver.
    pub key: String,
    /// CPU elements/s by [regime][form: 0 probabilities, 1 logits].
    pub cpu: [[f64; 2]; 3],
    /// GPU kernel elements/s, data already on the device; 0 when there is no GPU.
    pub gpu: [[f64; 2]; 3],
    /// Host → GPU bytes/s.
    pub upload: f64,
    /// Fixed cost of one GPU call (submit, wait, read back), seconds.
    pub gpu_latency: f64,
    pub gpu_is_software: bool,
    /// The largest relative spread (slowest / fastest − 1) between repeated timings of one
    /// measurement: a measurement taken under heavy load shows here, and a cache with a
    /// spread above [`PLAUSIBLE_SPREAD`] is measured again.
    pub spread: f64,
}

/// Calibrations whose timings disagreed by more than this are not trusted from a cache.
pub const PLAUSIBLE_SPREAD: f64 = 0.5;

/// The placement chosen for a job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    Cpu,
    Gpu,
    /// The first `gpu_rows` rows on the GPU, the rest on the CPU.
    Split {
        gpu_rows: usize,
    },
}

/// A plan: the choice and the estimates behind it (seconds; `None` when not possible).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub placement: Placement,
    pub cpu_s: f64,
    pub gpu_s: Option<f64>,
    pub split_s: Option<f64>,
    pub reason: String,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |s| format!("{:.3} ms", s * 1e3));
        write!(
            f,
            "placement {:?}: estimated cpu {:.3} ms, gpu {}, split {} ({})",
            self.placement,
            self.cpu_s * 1e3,
            opt(self.gpu_s),
            opt(self.split_s),
            self.reason
        )
    }
}

/// What a job was, for planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    pub rows: usize,
    pub cols: usize,
    pub dtype: Dtype,
    pub input: InputForm,
    /// The inputs already live in GPU buffers.
    pub on_gpu: bool,
}

impl Calibration {
    /// Estimates and choice for `job` under `mode`.
    pub fn plan(&self, mode: DeviceMode, job: &Job) -> Plan {
        let n = (job.rows * job.cols) as f64;
        let r = Regime::of(job.cols).index();
        let f = usize::from(job.input != InputForm::Probabilities);
        let cpu_rate = self.cpu[r][f].max(1.0);
        let cpu_s = n / cpu_rate;
        let gpu_rate = self.gpu[r][f];
        let has_gpu = gpu_rate > 0.0;
        let upload_bytes = if job.on_gpu {
            0.0
        } else {
            2.0 * n * job.dtype.size_bytes().min(4) as f64
        };
        let gpu_s =
            has_gpu.then(|| self.gpu_latency + upload_bytes / self.upload.max(1.0) + n / gpu_rate);
        let split = gpu_s.filter(|_| job.rows >= 2).map(|g| {
            // Share rows so that both sides finish together.
            let g_rate = n / (g - self.gpu_latency).max(1e-12);
            let share = g_rate / (g_rate + cpu_rate);
            let gpu_rows = ((job.rows as f64 * share).round() as usize).clamp(1, job.rows - 1);
            let t = self.gpu_latency + (n * gpu_rows as f64 / job.rows as f64) / g_rate;
            (
                t.max(n * (job.rows - gpu_rows) as f64 / job.rows as f64 / cpu_rate),
                gpu_rows,
            )
        });
        let split_s = split.map(|s| s.0);
        let (placement, reason) = match mode {
            DeviceMode::Cpu => (Placement::Cpu, "cpu requested".to_string()),
            DeviceMode::Gpu => (Placement::Gpu, "gpu requested".to_string()),
            DeviceMode::Split => match split {
                Some((_, gpu_rows)) => (Placement::Split { gpu_rows }, "split requested".into()),
                None => (
                    Placement::Cpu,
                    "split requested but no GPU (or one row)".into(),
                ),
            },
            DeviceMode::Auto => {
                let g = gpu_s.unwrap_or(f64::INFINITY);
                // A software adapter runs on these same CPU cores: splitting with it only
                // takes threads from the CPU engine.
                let s = if self.gpu_is_software {
                    f64::INFINITY
                } else {
                    split_s.unwrap_or(f64::INFINITY)
                };
                if job.on_gpu && has_gpu {
                    (Placement::Gpu, "data already on the GPU stays there".into())
                } else if !has_gpu {
                    (Placement::Cpu, "no GPU".into())
                } else if g < cpu_s && g <= s {
                    (Placement::Gpu, "GPU predicted fastest".into())
                } else if s < cpu_s && s < g {
                    let gpu_rows = split.map_or(0, |x| x.1);
                    (
                        Placement::Split { gpu_rows },
                        "GPU and CPU together predicted fastest".into(),
                    )
                } else if self.gpu_is_software {
                    (
                        Placement::Cpu,
                        "software GPU measured slower than the CPU".into(),
                    )
                } else {
                    (Placement::Cpu, "CPU predicted fastest".into())
                }
            }
        };
        Plan {
            placement,
            cpu_s,
            gpu_s,
            split_s,
            reason,
        }
    }

    /// One line per field, `name value...`: a format with no dependency, stable enough for a
    /// cache file.
    pub fn to_text(&self) -> String {
        let row = |t: &[[f64; 2]; 3]| {
            t.iter()
                .flat_map(|r| r.iter().map(|v| format!("{v:e}")))
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "key {}\ncpu {}\ngpu {}\nupload {:e}\ngpu_latency {:e}\ngpu_is_software {}\nspread {:e}\n",
            self.key.replace('\n', " "),
            row(&self.cpu),
            row(&self.gpu),
            self.upload,
            self.gpu_latency,
            self.gpu_is_software,
            self.spread
        )
    }

    pub fn from_text(text: &str) -> Result<Self> {
        let bad = |what: &str| Error::InvalidRequest(format!("calibration file: bad {what}"));
        let mut c = Calibration {
            key: String::new(),
            cpu: [[0.0; 2]; 3],
            gpu: [[0.0; 2]; 3],
            upload: 0.0,
            gpu_latency: 0.0,
            gpu_is_software: false,
            // A cache written before the spread was recorded is measured again.
            spread: f64::INFINITY,
        };
        let table = |v: &str| -> Result<[[f64; 2]; 3]> {
            let x: Vec<f64> = v
                .split_whitespace()
                .map(|s| s.parse::<f64>().map_err(|_| bad("number")))
                .collect::<Result<_>>()?;
            if x.len() != 6 {
                return Err(bad("table"));
            }
            Ok([[x[0], x[1]], [x[2], x[3]], [x[4], x[5]]])
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "key" => c.key = v.to_string(),
                "cpu" => c.cpu = table(v)?,
                "gpu" => c.gpu = table(v)?,
                "upload" => c.upload = v.trim().parse().map_err(|_| bad("upload"))?,
                "gpu_latency" => c.gpu_latency = v.trim().parse().map_err(|_| bad("latency"))?,
                "gpu_is_software" => c.gpu_is_software = v.trim() == "true",
                "spread" => c.spread = v.trim().parse().map_err(|_| bad("spread"))?,
                _ => {}
            }
        }
        if c.key.is_empty() {
            return Err(bad("key"));
        }
        Ok(c)
    }
}

/// The result of a scheduled job: values, where they ran, and why.
#[derive(Debug, Clone)]
pub struct Run {
    pub values: Vec<f64>,
    pub placement: Placement,
    pub plan: Plan,
    /// E.g. a GPU failure that `auto` recovered from on the CPU.
    pub warnings: Vec<String>,
}

/// The engine users call: CPU and (when built and present) GPU, with the scheduler choosing.
pub struct Engine {
    mode: DeviceMode,
    cpu: CpuEngine,
    #[cfg(feature = "gpu")]
    gpu: OnceLock<std::result::Result<crate::gpu::GpuEngine, String>>,
    calibration: Mutex<Option<Calibration>>,
}

impl Engine {
    /// Mode from `KLDIV_DEVICE` (default `auto`). Nothing is measured or opened yet.
    pub fn new() -> Result<Self> {
        Ok(Self::with_mode(DeviceMode::from_env()?))
    }

    pub fn with_mode(mode: DeviceMode) -> Self {
        Engine {
            mode,
            cpu: CpuEngine::new(),
            #[cfg(feature = "gpu")]
            gpu: OnceLock::new(),
            calibration: Mutex::new(None),
        }
    }

    pub fn mode(&self) -> DeviceMode {
        self.mode
    }

    pub fn cpu(&self) -> &CpuEngine {
        &self.cpu
    }

    /// The GPU engine, opened on first use; the reason when there is none.
    #[cfg(feature = "gpu")]
    pub fn gpu(&self) -> std::result::Result<&crate::gpu::GpuEngine, String> {
        self.gpu
            .get_or_init(|| {
                crate::gpu::GpuEngine::new().map_err(|e| match e {
                    Error::GpuUnavailable(why) => why,
                    other => other.to_string(),
                })
            })
            .as_ref()
            .map_err(|e| e.clone())
    }

    /// Whether the GPU engine has been opened (a device created) by this engine.
    #[cfg(feature = "gpu")]
    pub fn gpu_opened(&self) -> bool {
        self.gpu.get().is_some()
    }

    /// Who the calibration describes: CPU SIMD level and threads, adapter and driver. Built
    /// from the adapter's description alone: no device is created for it.
    fn key(&self) -> String {
        #[cfg(feature = "gpu")]
        let gpu = match crate::gpu::preferred_adapter_info() {
            Ok(a) => format!("{} / {} / {}", a.name, a.backend, a.driver),
            Err(_) => "no gpu".to_string(),
        };
        #[cfg(not(feature = "gpu"))]
        let gpu = "no gpu".to_string();
        format!(
            "cpu {} x{} | gpu {gpu}",
            self.cpu.simd_name(),
            self.cpu.threads()
        )
    }

    /// Use a saved calibration (e.g. from [`Calibration::from_text`]) if it was measured on
    /// this CPU and adapter; returns whether it was taken.
    pub fn set_calibration(&self, c: Calibration) -> bool {
        if c.key != self.key() {
            return false;
        }
        if let Ok(mut slot) = self.calibration.lock() {
            *slot = Some(c);
        }
        true
    }

    /// The calibration in use, measuring it now (≤ 0.3 s) if there is none yet.
    pub fn calibrate(&self) -> Calibration {
        if let Ok(slot) = self.calibration.lock() {
            if let Some(c) = slot.as_ref() {
                return c.clone();
            }
        }
        let c = self.measure();
        if let Ok(mut slot) = self.calibration.lock() {
            *slot = Some(c.clone());
        }
        c
    }

    /// Load the calibration cached at `path`, or measure and save it there. A cache from
    /// another CPU or adapter, or one measured under load (timings that disagree by more
    /// than [`PLAUSIBLE_SPREAD`]), is measured again.
    pub fn calibrate_cached(&self, path: &std::path::Path) -> Calibration {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(c) = Calibration::from_text(&text) {
                if c.spread <= PLAUSIBLE_SPREAD && self.set_calibration(c.clone()) {
                    return c;
                }
            }
        }
        let c = self.calibrate();
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // Write then rename, so a concurrent reader never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, c.to_text()).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
        c
    }

    /// The default cache file: `$XDG_CACHE_HOME/kldiv/calibration` or `~/.cache/...`.
    pub fn default_cache_path() -> Option<std::path::PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("kldiv").join("calibration"))
    }

    fn measure(&self) -> Calibration {
        #[cfg(feature = "gpu")]
        let budget = Instant::now();
        let shapes = [(4096, 16), (16, 4096), (1, 131_072)];
        let mut cpu = [[0.0; 2]; 3];
        let data = |rows: usize, cols: usize, logits: bool| -> (Vec<f32>, Vec<f32>) {
            let n = rows * cols;
            if logits {
                let a: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32) * 0.004).collect();
                let b = a
                    .iter()
                    .enumerate()
                    .map(|(i, x)| x + ((i * 31 % 17) as f32) * 0.01)
                    .collect();
                (a, b)
            } else {
                let p = vec![1.0 / cols as f32; n];
                let q: Vec<f32> = (0..n)
                    .map(|i| (1.0 + 0.01 * ((i % 3) as f32 - 1.0)) / cols as f32)
                    .collect();
                (p, q)
            }
        };
        let spread = std::cell::Cell::new(0f64);
        // Mean of up to 3 timed runs (as many as fit in 10 ms after the first), after a
        // warm-up; the spread between runs is recorded.
        let time = |f: &mut dyn FnMut() -> Result<()>| -> f64 {
            let _ = f(); // warm-up: pipelines, caches
            let t = Instant::now();
            let mut runs = vec![];
            while runs.len() < 3 && (runs.is_empty() || t.elapsed().as_secs_f64() < 0.01) {
                let r = Instant::now();
                if f().is_err() {
                    return f64::INFINITY;
                }
                runs.push(r.elapsed().as_secs_f64());
            }
            let (lo, hi) = runs
                .iter()
                .fold((f64::INFINITY, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            if runs.len() > 1 && lo > 0.0 {
                spread.set(spread.get().max(hi / lo - 1.0));
            }
            runs.iter().sum::<f64>() / runs.len() as f64
        };
        for (r, &(rows, cols)) in shapes.iter().enumerate() {
            for (f, logits) in [(0, false), (1, true)] {
                let (p, q) = data(rows, cols, logits);
                let req = probe(logits);
                let s = time(&mut || self.cpu.per_row(&req, &p, &q, rows, cols).map(|_| ()));
                cpu[r][f] = (rows * cols) as f64 / s;
            }
        }
        #[allow(unused_mut)]
        let mut c = Calibration {
            key: self.key(),
            cpu,
            gpu: [[0.0; 2]; 3],
            upload: 1.0,
            gpu_latency: 0.0,
            gpu_is_software: false,
            spread: 0.0,
        };
        #[cfg(feature = "gpu")]
        if let Ok(g) = self.gpu() {
            c.gpu_is_software = g.adapter().is_software;
            // Latency: a one-row job. Upload: a large buffer write. Kernel: end-to-end time
            // minus both.
            let (p, q) = data(1, 16, false);
            let req = probe(false);
            c.gpu_latency = time(&mut || g.per_row(&req, &p, &q, 1, 16).map(|_| ()));
            c.upload = g.measure_upload(8 << 20).unwrap_or(1e9);
            // Kernel throughput from medium rows (one pipeline per input form, to stay in
            // the time budget); the other regimes take the same rate.
            let (rows, cols) = (64, 4096);
            let n = (rows * cols) as f64;
            for (f, logits) in [(0, false), (1, true)] {
                if budget.elapsed().as_secs_f64() > 0.25 {
                    c.gpu[1][f] = c.gpu[1][0].max(1.0);
                    continue;
                }
                let (p, q) = data(rows, cols, logits);
                let req = probe(logits);
                let s = time(&mut || g.per_row(&req, &p, &q, rows, cols).map(|_| ()));
                let total = (s - c.gpu_latency).max(1e-9);
                // What is left after the upload, never credited with more than 4× the
                // end-to-end rate.
                let kernel = (total - 8.0 * n / c.upload).max(0.25 * total);
                c.gpu[1][f] = n / kernel;
            }
            c.gpu[0] = c.gpu[1];
            c.gpu[2] = c.gpu[1];
        }
        c.spread = spread.get();
        c
    }

    /// The plan for a job (calibrating first in `auto` and `split` modes).
    pub fn plan(&self, req: &Request, job: &Job) -> Plan {
        let _ = req;
        match self.mode {
            DeviceMode::Cpu => Plan {
                placement: Placement::Cpu,
                cpu_s: 0.0,
                gpu_s: None,
                split_s: None,
                reason: "cpu requested".into(),
            },
            DeviceMode::Gpu => Plan {
                placement: Placement::Gpu,
                cpu_s: 0.0,
                gpu_s: None,
                split_s: None,
                reason: "gpu requested".into(),
            },
            mode => self.calibrate().plan(mode, job),
        }
    }

    /// Per-row values, run where the plan says. In `auto`, a GPU failure finishes the job on
    /// the CPU with a warning; in `gpu` mode it is an error.
    pub fn run<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Run> {
        crate::semantics::rows::validate_shape(p.len(), q.len(), rows, cols, req)?;
        let job = Job {
            rows,
            cols,
            dtype: T::DTYPE,
            input: req.input,
            on_gpu: false,
        };
        let plan = self.plan(req, &job);
        if debug_log() {
            eprintln!(
                "kldiv: {:?} mode, {rows}×{cols} {}: {plan}",
                self.mode,
                T::DTYPE
            );
        }
        let mut warnings = vec![];
        let values = match plan.placement {
            Placement::Cpu => self.cpu.per_row(req, p, q, rows, cols)?,
            Placement::Gpu => match self.gpu_rows(req, p, q, rows, cols) {
                Ok(v) => v,
                Err(e) if self.mode == DeviceMode::Auto && !e.is_input_error() => {
                    warnings.push(format!("GPU failed ({e}); finished on the CPU"));
                    self.cpu.per_row(req, p, q, rows, cols)?
                }
                Err(e) => return Err(e),
            },
            Placement::Split { gpu_rows } => {
                let k = gpu_rows * cols;
                let (pg, pc) = p.split_at(k);
                let (qg, qc) = if req.reads_q() {
                    q.split_at(k)
                } else {
                    (pg, pc)
                };
                let (g, c) = std::thread::scope(|s| {
                    let g = s.spawn(|| self.gpu_rows(req, pg, qg, gpu_rows, cols));
                    let c = self.cpu.per_row(req, pc, qc, rows - gpu_rows, cols);
                    (g.join(), c)
                });
                let mut c = c.map_err(|e| crate::semantics::rows::relocate_row_by(e, gpu_rows))?;
                let g = match g {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) if e.is_input_error() => return Err(e),
                    Ok(Err(e)) if self.mode == DeviceMode::Auto => {
                        warnings.push(format!("GPU failed ({e}); its rows finished on the CPU"));
                        self.cpu.per_row(req, pg, qg, gpu_rows, cols)?
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(Error::Gpu("the GPU thread panicked".into())),
                };
                let mut v = g;
                v.append(&mut c);
                v
            }
        };
        Ok(Run {
            values,
            placement: plan.placement,
            plan,
            warnings,
        })
    }

    #[cfg(feature = "gpu")]
    fn gpu_rows<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>> {
        self.gpu()
            .map_err(Error::GpuUnavailable)?
            .per_row(req, p, q, rows, cols)
    }

    #[cfg(not(feature = "gpu"))]
    fn gpu_rows<T: Element>(
        &self,
        _: &Request,
        _: &[T],
        _: &[T],
        _: usize,
        _: usize,
    ) -> Result<Vec<f64>> {
        Err(Error::GpuUnavailable(
            "built without the `gpu` feature".into(),
        ))
    }
}

/// `KLDIV_LOG=debug` prints every plan to stderr.
fn debug_log() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("KLDIV_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug")))
}

/// The request calibration times (synthetic rows, so no sum check).
fn probe(logits: bool) -> Request {
    Request::new(Divergence::Kl)
        .normalization(Normalization::AsGiven)
        .input(if logits {
            InputForm::Logits
        } else {
            InputForm::Probabilities
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal(cpu: f64, gpu: f64, software: bool) -> Calibration {
        Calibration {
            key: "test".into(),
            cpu: [[cpu; 2]; 3],
            gpu: [[gpu; 2]; 3],
            upload: 20e9,
            gpu_latency: 50e-6,
            gpu_is_software: software,
            spread: 0.1,
        }
    }

    fn job(rows: usize, cols: usize, on_gpu: bool) -> Job {
        Job {
            rows,
            cols,
            dtype: Dtype::F32,
            input: InputForm::Probabilities,
            on_gpu,
        }
    }

    #[test]
    fn slow_software_gpu_is_never_chosen() {
        let c = cal(2e9, 0.1e9, true);
        for (r, k) in [(4096, 32_000), (1, 16), (1_000_000, 16)] {
            let p = c.plan(DeviceMode::Auto, &job(r, k, false));
            assert_eq!(p.placement, Placement::Cpu, "{p}");
        }
    }

    #[test]
    fn fast_gpu_wins_big_jobs_and_loses_tiny_ones() {
        let c = cal(2e9, 500e9, false);
        let big = c.plan(DeviceMode::Auto, &job(4096, 32_000, false));
        // Upload-bound: 1 GB at 20 GB/s ≈ 52 ms, CPU 65 ms: GPU or split, not CPU.
        assert_ne!(big.placement, Placement::Cpu, "{big}");
        let tiny = c.plan(DeviceMode::Auto, &job(1, 100, false));
        assert_eq!(tiny.placement, Placement::Cpu, "{tiny}");
    }

    #[test]
    fn data_on_the_gpu_stays_there() {
        let c = cal(2e9, 0.5e9, false);
        let p = c.plan(DeviceMode::Auto, &job(10, 100, true));
        assert_eq!(p.placement, Placement::Gpu);
    }

    #[test]
    fn split_shares_rows_by_throughput() {
        // Equal speeds, negligible latency: about half the rows each.
        let mut c = cal(1e9, 1e9, false);
        c.gpu_latency = 0.0;
        c.upload = 1e15;
        let p = c.plan(DeviceMode::Split, &job(1000, 10_000, false));
        match p.placement {
            Placement::Split { gpu_rows } => assert!((450..=550).contains(&gpu_rows), "{gpu_rows}"),
            other => panic!("{other:?}"),
        }
        // In auto, the split is predicted faster than either side alone and is chosen.
        let a = c.plan(DeviceMode::Auto, &job(1000, 10_000, false));
        assert!(matches!(a.placement, Placement::Split { .. }), "{a}");
    }

    #[test]
    fn no_gpu_means_cpu_and_explicit_modes_are_obeyed() {
        let c = cal(2e9, 0.0, false);
        assert_eq!(
            c.plan(DeviceMode::Auto, &job(100, 100, false)).placement,
            Placement::Cpu
        );
        assert_eq!(
            c.plan(DeviceMode::Split, &job(100, 100, false)).placement,
            Placement::Cpu
        );
        assert_eq!(
            c.plan(DeviceMode::Gpu, &job(100, 100, false)).placement,
            Placement::Gpu
        );
    }

    #[test]
    fn calibration_round_trips_through_text() {
        let c = cal(1.5e9, 3e11, true);
        assert_eq!(Calibration::from_text(&c.to_text()).unwrap(), c);
        assert!(Calibration::from_text("cpu 1 2").is_err());
    }

    #[test]
    fn a_plausible_cache_is_used_without_opening_the_gpu() {
        let dir = std::env::temp_dir().join(format!("kldiv-cal-{}", std::process::id()));
        let path = dir.join("calibration");
        let e = Engine::with_mode(DeviceMode::Auto);
        let mut c = cal(2e9, 1e9, true);
        c.key = e.key();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&path, c.to_text()).unwrap();
        assert_eq!(e.calibrate_cached(&path), c);
        // The key comes from the adapter's description: no device was created for it.
        #[cfg(feature = "gpu")]
        assert!(!e.gpu_opened());
        // Timings that disagreed (a loaded machine) are measured again, and the cache
        // rewritten with the new measurement.
        c.spread = 5.0;
        std::fs::write(&path, c.to_text()).unwrap();
        let e = Engine::with_mode(DeviceMode::Auto);
        let fresh = e.calibrate_cached(&path);
        assert_ne!(fresh.spread, 5.0);
        assert_eq!(fresh.key, c.key);
        let saved = Calibration::from_text(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(saved, fresh);
        // A cache from before the spread was recorded counts as implausible.
        let old = c.to_text().replace("spread 5e0\n", "");
        assert_eq!(Calibration::from_text(&old).unwrap().spread, f64::INFINITY);
    }

    #[test]
    fn device_mode_parses() {
        assert_eq!("GPU".parse::<DeviceMode>().unwrap(), DeviceMode::Gpu);
        assert!("tpu".parse::<DeviceMode>().is_err());
    }
}
