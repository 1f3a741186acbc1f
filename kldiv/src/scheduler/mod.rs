//! The [`Scheduler`]: one object users call, which places each job on the CPU engine, the GPU
//! engine, or both (rows split between them), from a measured cost model, and says why.
//!
//! - [`cost`]: the cost model (pure): rates + job → estimates and choice.
//! - [`calibration`]: measuring the rates, and their cache file.
//! - [`system`]: what the adapter list depends on, read without loading a driver.
//! - here: execution — running the choice, splitting rows, recovering from GPU failures.

pub mod calibration;
pub mod cost;
pub mod system;

pub use cost::{Calibration, DeviceMode, Job, Placement, Plan, Regime};

/// Between the CPU and GPU parts of a calibration key.
const KEY_GPU: &str = " | gpu ";

/// The GPU part of the key of a build without the `gpu` feature. Its calibration has no GPU
/// figures, so a build with a GPU must not take it on the same system (it would never place
/// work there), nor the reverse (it would place work on a GPU it cannot open).
const KEY_NO_GPU_BUILD: &str = "none in this build";

/// Why a build without the `gpu` feature has no GPU (its `GpuUnavailable` errors say it).
#[cfg(not(feature = "gpu"))]
pub const GPU_NOT_BUILT: &str = "built without the `gpu` feature";

use crate::cpu::CpuEngine;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::output::Output;
use crate::request::Request;
use crate::semantics::finish::reduce;
use crate::semantics::rows::{relocate_row_by, validate_shape};
use ndarray::ArrayView2;
use std::sync::{Mutex, OnceLock};

/// The result of a scheduled job: per-row values, where they ran, and why.
#[derive(Debug, Clone)]
pub struct Run {
    pub values: Vec<f64>,
    /// For logits, each row's argmaxes and log-sum-exps from the same read (see
    /// [`crate::PerRow::tops`]); empty otherwise.
    pub tops: Vec<Option<crate::RowTops>>,
    /// Each row's agreement sums where [`Scheduler::run_report`] was asked for them (`None`
    /// rows are left to the caller): from a second pass over the rows while they are in the
    /// GPU's buffers or the CPU core's cache; empty where the job was split between them or
    /// recovered from a GPU failure (the caller computes them then).
    pub agreement: Vec<Option<crate::semantics::sums::AgreeSums>>,
    pub placement: Placement,
    pub plan: Plan,
    /// E.g. a GPU failure that `auto` recovered from on the CPU.
    pub warnings: Vec<String>,
}

/// Where a calibration came from.
#[derive(Debug)]
pub enum Calibrated {
    /// Read from the cache file.
    Cached,
    /// Measured now; saved to the cache file unless `cache_error` says otherwise.
    Measured { cache_error: Option<Error> },
}

/// CPU and (when built and present) GPU engines, with the cost model choosing between them.
pub struct Scheduler {
    mode: DeviceMode,
    cpu: CpuEngine,
    /// The GPU engine, opened on first use, or why there is none.
    #[cfg(feature = "gpu")]
    gpu: OnceLock<std::result::Result<crate::gpu::GpuEngine, String>>,
    calibration: Mutex<Option<Calibration>>,
}

impl Scheduler {
    /// Mode from `KLDIV_DEVICE` (default `auto`). Nothing is measured or opened yet.
    pub fn new() -> Result<Self> {
        Ok(Self::with_mode(DeviceMode::from_env()?))
    }

    pub fn with_mode(mode: DeviceMode) -> Self {
        Scheduler {
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

    /// The GPU engine, opened on first use; `GpuUnavailable` with the reason when there is
    /// none.
    #[cfg(feature = "gpu")]
    pub fn gpu(&self) -> Result<&crate::gpu::GpuEngine> {
        self.gpu
            .get_or_init(|| {
                crate::gpu::GpuEngine::new().map_err(|e| match e {
                    Error::GpuUnavailable(why) => why,
                    other => other.to_string(),
                })
            })
            .as_ref()
            .map_err(|why| Error::GpuUnavailable(why.clone()))
    }

    /// Whether the GPU engine has been opened (a device created) by this scheduler.
    #[cfg(feature = "gpu")]
    pub fn gpu_opened(&self) -> bool {
        self.gpu.get().is_some()
    }

    /// Who a calibration describes: CPU SIMD level and threads, adapter and driver. Built
    /// from the adapter's description alone: no device is created for it.
    pub fn calibration_key(&self) -> String {
        #[cfg(feature = "gpu")]
        let gpu = match crate::gpu::preferred_adapter_info() {
            Ok(a) => format!("{} / {} / {}", a.name, a.backend, a.driver),
            Err(_) => "no gpu".to_string(),
        };
        #[cfg(not(feature = "gpu"))]
        let gpu = KEY_NO_GPU_BUILD.to_string();
        format!("{}{KEY_GPU}{gpu}", self.cpu_key())
    }

    /// The CPU part of [`Scheduler::calibration_key`]: SIMD level and threads.
    fn cpu_key(&self) -> String {
        format!("cpu {} x{}", self.cpu.simd_name(), self.cpu.threads())
    }

    /// Whether `c` was measured on this CPU and on this `system` (`system::fingerprint`):
    /// then its adapter part holds without enumerating the adapters again.
    fn same_system(&self, c: &Calibration, system: &Option<String>) -> bool {
        system.is_some()
            && c.system == *system
            // Made by a build of the same kind (with or without the `gpu` feature).
            && c.key.split_once(KEY_GPU).is_some_and(|(cpu, gpu)| {
                cpu == self.cpu_key() && (gpu == KEY_NO_GPU_BUILD) != cfg!(feature = "gpu")
            })
    }

    /// Use a saved calibration if it was measured on this CPU and adapter; returns whether
    /// it was taken.
    pub fn set_calibration(&self, c: Calibration) -> bool {
        if c.key != self.calibration_key() {
            return false;
        }
        self.install(c);
        true
    }

    /// Makes `c` the calibration in use.
    fn install(&self, c: Calibration) {
        if let Ok(mut slot) = self.calibration.lock() {
            *slot = Some(c);
        }
    }

    /// The calibration in use, measuring it now (≤ 0.5 s) if there is none yet.
    pub fn calibrate(&self) -> Calibration {
        if let Ok(slot) = self.calibration.lock() {
            if let Some(c) = slot.as_ref() {
                return c.clone();
            }
        }
        #[allow(unused_mut)]
        let mut c = calibration::measure_cpu(self.calibration_key(), &self.cpu);
        #[cfg(feature = "gpu")]
        if let Ok(g) = self.gpu() {
            calibration::measure_gpu(&mut c, g, self.cpu.threads());
        }
        if let Ok(mut slot) = self.calibration.lock() {
            *slot = Some(c.clone());
        }
        c
    }

    /// Use the calibration cached at `path`, or measure and save it there. A cache from
    /// another CPU or adapter, of another format, or measured under load (timings that
    /// disagree by more than `calibration::PLAUSIBLE_SPREAD`) is measured again. A cache
    /// that cannot be read or written is reported in the result, never a reason to fail.
    ///
    /// A cache from this same system (`system::fingerprint`) is taken without enumerating
    /// the GPU adapters, which loads every driver (~40 ms a run on lavapipe); others are
    /// checked against the adapter's description, and recorded with this system when it
    /// matches.
    pub fn calibrate_cached(&self, path: &std::path::Path) -> (Calibration, Calibrated) {
        let mut cache_error = None;
        let system = system::fingerprint();
        match calibration::load(path) {
            Ok(Some(c)) if c.spread <= calibration::PLAUSIBLE_SPREAD => {
                if self.same_system(&c, &system) {
                    self.install(c.clone());
                    return (c, Calibrated::Cached);
                }
                if self.set_calibration(c.clone()) {
                    if c.system == system {
                        return (c, Calibrated::Cached); // no system to record (not Linux)
                    }
                    let c = Calibration { system, ..c };
                    // Best effort: a cache that cannot be rewritten still served this run.
                    let _ = calibration::save(path, &c);
                    return (c, Calibrated::Cached);
                }
            }
            Ok(_) => {}
            Err(e) => cache_error = Some(e),
        }
        let c = Calibration {
            system,
            ..self.calibrate()
        };
        if let Err(e) = calibration::save(path, &c) {
            cache_error = cache_error.or(Some(e));
        }
        (c, Calibrated::Measured { cache_error })
    }

    /// The plan for `req` over a job (calibrating first in `auto` and `split` modes).
    pub fn plan(&self, job: &Job) -> Plan {
        match self.mode {
            DeviceMode::Cpu => Plan {
                placement: Placement::Cpu,
                cpu_s: 0.0,
                gpu_s: None,
                split_s: None,
                reason: "cpu requested".into(),
            },
            mode => self.calibrate().plan(mode, job),
        }
    }

    /// `req` over two `[rows, cols]` views, placed by the scheduler and reduced as the
    /// request asks. Any memory layout is accepted; views that are not row-major contiguous
    /// are copied once.
    pub fn compute<T: Element>(
        &self,
        req: &Request,
        p: ArrayView2<T>,
        q: ArrayView2<T>,
    ) -> Result<Output> {
        let (p, q) = crate::row_major(req, p, q)?;
        let (rows, cols) = p.dim();
        let q = q.as_ref().unwrap_or(&p);
        let run = self.run(req, crate::slice(&p), crate::slice(q), rows, cols)?;
        Ok(reduce(req, run.values))
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
        Ok(self.run_with(req, &[], p, q, rows, cols)?.0)
    }

    /// [`Scheduler::run`], and beside it the per-row values of the same request with each of
    /// `also` as its divergence, from the same placement: the KL family (KL, reverse KL,
    /// symmetric KL) shares one pass over the data (see `semantics::run::per_row_set`).
    pub fn run_with<T: Element>(
        &self,
        req: &Request,
        also: &[crate::Divergence],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<(Run, Vec<Vec<f64>>)> {
        self.run_report(req, also, false, p, q, rows, cols)
    }

    /// [`Scheduler::run_with`], and where `agreement` asks for it and the job runs on the GPU,
    /// each row's agreement sums over logits from a second read there ([`Run::agreement`]).
    #[allow(clippy::too_many_arguments)]
    pub fn run_report<T: Element>(
        &self,
        req: &Request,
        also: &[crate::Divergence],
        agreement: bool,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<(Run, Vec<Vec<f64>>)> {
        validate_shape(p.len(), q.len(), rows, cols, req)?;
        let q = if req.reads_q() { q } else { p };
        let divs: Vec<crate::Divergence> = std::iter::once(req.divergence)
            .chain(also.iter().copied())
            .collect();
        let job = Job::of(req, rows, cols, T::DTYPE, false).with_agreement(agreement);
        // Logits only: `with_agreement` drops it for probabilities.
        let agreeing = job.agreement;
        let plan = self.plan(&job);
        if debug_log() {
            eprintln!(
                "kldiv: {:?} mode, {rows}×{cols} {}: {plan}",
                self.mode,
                T::DTYPE
            );
        }
        let mut warnings = vec![];
        let recover = |e: Error, what: &str, warnings: &mut Vec<String>| {
            if self.mode == DeviceMode::Auto && !e.is_input_error() {
                warnings.push(format!("GPU failed ({e}); {what} finished on the CPU"));
                Ok(())
            } else {
                Err(e)
            }
        };
        let cpu = |p, q, rows| self.cpu.per_row_each(req, &divs, p, q, rows, cols);
        let gpu = |p, q, rows| {
            self.gpu_rows(req, &divs, false, p, q, rows, cols)
                .map(|r| r.0)
        };
        let mut agree = vec![];
        let mut values = match plan.placement {
            Placement::Cpu if agreeing => {
                let (v, a) = self
                    .cpu
                    .per_row_each_agreeing(req, &divs, p, q, rows, cols)?;
                agree = a;
                v
            }
            Placement::Cpu => cpu(p, q, rows)?,
            Placement::Gpu => match self.gpu_rows(req, &divs, agreeing, p, q, rows, cols) {
                Ok((v, a)) => {
                    agree = a;
                    v
                }
                Err(e) => {
                    recover(e, "the job", &mut warnings)?;
                    cpu(p, q, rows)?
                }
            },
            Placement::Split { gpu_rows } => {
                let k = gpu_rows * cols;
                let (pg, pc) = p.split_at(k);
                let (qg, qc) = q.split_at(k);
                let (g, c) = std::thread::scope(|s| {
                    let g = s.spawn(|| gpu(pg, qg, gpu_rows));
                    let c = cpu(pc, qc, rows - gpu_rows);
                    (g.join(), c)
                });
                let c = c.map_err(|e| relocate_row_by(e, gpu_rows))?;
                let mut g = match g {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        recover(e, "its rows", &mut warnings)?;
                        cpu(pg, qg, gpu_rows)?
                    }
                    Err(_) => return Err(Error::Gpu("the GPU thread panicked".into())),
                };
                for (g, mut c) in g.values.iter_mut().zip(c.values) {
                    g.append(&mut c);
                }
                // Tops only where both halves have them, row for row.
                if g.tops.len() == gpu_rows && c.tops.len() == rows - gpu_rows {
                    g.tops.extend(c.tops);
                } else {
                    g.tops.clear();
                }
                g
            }
        };
        let main = values.values.remove(0);
        Ok((
            Run {
                values: main,
                tops: values.tops,
                agreement: agree,
                placement: plan.placement,
                plan,
                warnings,
            },
            values.values,
        ))
    }

    /// The GPU's rows, and where `agreeing` their agreement sums from the same upload
    /// (empty otherwise).
    #[cfg(feature = "gpu")]
    #[allow(clippy::too_many_arguments)]
    fn gpu_rows<T: Element>(
        &self,
        req: &Request,
        divs: &[crate::Divergence],
        agreeing: bool,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<(
        crate::PerRow,
        Vec<Option<crate::semantics::sums::AgreeSums>>,
    )> {
        let gpu = self.gpu()?;
        if agreeing {
            return gpu.per_row_each_agreeing(req, divs, p, q, rows, cols);
        }
        Ok((gpu.per_row_each(req, divs, p, q, rows, cols)?, vec![]))
    }

    #[cfg(not(feature = "gpu"))]
    #[allow(clippy::too_many_arguments)]
    fn gpu_rows<T: Element>(
        &self,
        _: &Request,
        _: &[crate::Divergence],
        _: bool,
        _: &[T],
        _: &[T],
        _: usize,
        _: usize,
    ) -> Result<(
        crate::PerRow,
        Vec<Option<crate::semantics::sums::AgreeSums>>,
    )> {
        Err(Error::GpuUnavailable(GPU_NOT_BUILT.into()))
    }
}

/// `KLDIV_LOG=debug` prints every plan to stderr.
fn debug_log() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("KLDIV_LOG").is_ok_and(|v| v.eq_ignore_ascii_case("debug")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plausible cached calibration (CPU 2 Gelem/s, the GPU at `gpu` elements/s).
    fn cached(key: String, system: Option<String>, gpu: f64) -> Calibration {
        Calibration {
            version: calibration::VERSION,
            key,
            system,
            cpu: [[2e9; 2]; 3],
            gpu: [[gpu; 2]; 3],
            upload: 20e9,
            gpu_latency: 50e-6,
            gpu_is_software: false,
            gpu_f64: false,
            cpu_f64: [0.0; 2],
            gpu_f64_kernel: 0.0,
            spread: 0.1,
        }
    }

    #[test]
    fn a_plausible_cache_is_used_without_opening_the_gpu() {
        let dir = std::env::temp_dir().join(format!("kldiv-cal-{}", std::process::id()));
        let path = dir.join("calibration.json");
        let s = Scheduler::with_mode(DeviceMode::Auto);
        let mut c = Calibration {
            gpu_is_software: true,
            ..cached(s.calibration_key(), None, 1e9)
        };
        calibration::save(&path, &c).unwrap();
        let (got, how) = s.calibrate_cached(&path);
        // Taken, and recorded with this system for the next run.
        c.system = system::fingerprint();
        assert_eq!(got, c);
        assert!(matches!(how, Calibrated::Cached));
        assert_eq!(calibration::load(&path).unwrap(), Some(c.clone()));
        // The key comes from the adapter's description: no device was created for it.
        #[cfg(feature = "gpu")]
        assert!(!s.gpu_opened());
        // Timings that disagreed (a loaded machine) are measured again, and the cache
        // rewritten with the new measurement.
        c.spread = 5.0;
        calibration::save(&path, &c).unwrap();
        let s = Scheduler::with_mode(DeviceMode::Auto);
        let (fresh, how) = s.calibrate_cached(&path);
        assert!(matches!(how, Calibrated::Measured { cache_error: None }));
        assert_ne!(fresh.spread, 5.0);
        assert_eq!(fresh.key, c.key);
        assert_eq!(calibration::load(&path).unwrap(), Some(fresh));
        // A cache that cannot be written is reported, and the measurement still used.
        let blocked = dir.join("a-file").join("calibration.json");
        std::fs::write(dir.join("a-file"), b"not a directory").unwrap();
        let (_, how) = Scheduler::with_mode(DeviceMode::Auto).calibrate_cached(&blocked);
        assert!(matches!(
            how,
            Calibrated::Measured {
                cache_error: Some(_)
            }
        ));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A cache recorded on this system is taken on its word: its adapter part, which
    /// names no adapter here, is not checked (checking would enumerate the adapters). On
    /// another system, or another CPU, it is measured again.
    #[cfg(feature = "gpu")]
    #[test]
    fn a_cache_from_this_system_is_taken_without_enumerating_adapters() {
        let Some(here) = system::fingerprint() else {
            return; // not Linux: always checked against the adapters
        };
        let dir = std::env::temp_dir().join(format!("kldiv-cal-sys-{}", std::process::id()));
        let path = dir.join("calibration.json");
        let s = Scheduler::with_mode(DeviceMode::Auto);
        let c = cached(
            format!("{}{KEY_GPU}an adapter this machine lacks", s.cpu_key()),
            Some(here.clone()),
            0.0,
        );
        calibration::save(&path, &c).unwrap();
        let (got, how) = s.calibrate_cached(&path);
        assert!(matches!(how, Calibrated::Cached));
        assert_eq!(got, c);
        for other in [
            Calibration {
                system: Some(format!("{here}pci another card\n")),
                ..c.clone()
            },
            Calibration {
                key: format!("cpu another x64{KEY_GPU}an adapter this machine lacks"),
                ..c.clone()
            },
        ] {
            calibration::save(&path, &other).unwrap();
            let s = Scheduler::with_mode(DeviceMode::Auto);
            let (fresh, how) = s.calibrate_cached(&path);
            assert!(matches!(how, Calibrated::Measured { .. }));
            assert_eq!(fresh.key, s.calibration_key());
            assert_eq!(fresh.system, Some(here.clone()));
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A build without the `gpu` feature and a build with it, on the same system and CPU,
    /// each measure again rather than take the other's cache (a GPU build took a CPU-only
    /// build's calibration and never placed work on the GPU; a CPU-only build took a GPU
    /// build's and planned GPU work it could not run).
    #[test]
    fn a_cache_from_the_other_kind_of_build_is_measured_again() {
        let Some(here) = system::fingerprint() else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("kldiv-cal-build-{}", std::process::id()));
        let path = dir.join("calibration.json");
        let s = Scheduler::with_mode(DeviceMode::Auto);
        let other = if cfg!(feature = "gpu") {
            KEY_NO_GPU_BUILD
        } else {
            "an adapter"
        };
        let c = cached(format!("{}{KEY_GPU}{other}", s.cpu_key()), Some(here), 50e9);
        calibration::save(&path, &c).unwrap();
        let (fresh, how) = s.calibrate_cached(&path);
        assert!(matches!(how, Calibrated::Measured { .. }), "{how:?}");
        assert_eq!(fresh.key, s.calibration_key());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn compute_honours_the_reduction() {
        use crate::request::{Divergence, Reduction};
        let p = ndarray::array![[0.5f32, 0.5], [0.9, 0.1]];
        let q = ndarray::array![[0.5f32, 0.5], [0.5, 0.5]];
        let s = Scheduler::with_mode(DeviceMode::Cpu);
        let req = Request::new(Divergence::Kl);
        let rows = s.compute(&req, p.view(), q.view()).unwrap();
        let mean = s
            .compute(&req.reduction(Reduction::MeanOverRows), p.view(), q.view())
            .unwrap();
        let v = rows.per_row().unwrap();
        assert_eq!(mean.scalar().unwrap(), (v[0] + v[1]) / 2.0);
    }
}
