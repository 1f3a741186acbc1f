//! The cost model: from measured rates ([`Calibration`]) and a job, the seconds each
//! placement is expected to take, and the choice. Pure: no engine, no measurement.
//!
//! CPU time = reads × elements / CPU rate for the job's row regime and input form. GPU time =
//! fixed latency + reads × (bytes to upload / upload bandwidth + elements / kernel rate), no
//! upload when the data already lives on the GPU. Split time: rows shared so both sides finish
//! together. `reads` is the passes the request takes (two for Jensen–Shannon needing
//! normalised rows). A report's agreement statistics over logits are one more pass wherever
//! they run: on the GPU over the data already uploaded, at its logits rate; on the CPU
//! (`cpu::agreeing`) while the rows are in cache, at a third of a logits pass
//! ([`CPU_AGREEMENT_PASS`]); a split's rows once more after the whole block (one pass).

use crate::element::Dtype;
use crate::error::{Error, Result};
use crate::request::{InputForm, Request};
use crate::semantics::plan::PassPlan;

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
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Measured rates. Elements per second are per input matrix (rows × cols), per pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// The cache format; a cache of another version is measured again.
    pub version: u32,
    /// Who was measured: CPU SIMD level and threads, adapter and driver.
    pub key: String,
    /// The system the adapter part of `key` was read on (`scheduler::system`): where it
    /// matches, a later run takes the cache without loading the GPU drivers to read it again.
    /// Absent from older caches.
    #[serde(default)]
    pub system: Option<String>,
    /// CPU elements/s by [regime][form: 0 probabilities, 1 logits].
    pub cpu: [[f64; 2]; 3],
    /// GPU kernel elements/s, data already on the device; 0 when there is no GPU.
    pub gpu: [[f64; 2]; 3],
    /// Host → GPU bytes/s.
    pub upload: f64,
    /// Fixed cost of one GPU call (submit, wait, read back), seconds.
    pub gpu_latency: f64,
    pub gpu_is_software: bool,
    /// Whether the GPU computes f64 inputs in f64 (else they are narrowed to f32, and
    /// `Auto` keeps them on the CPU).
    pub gpu_f64: bool,
    /// CPU elements/s of f64 rows, medium regime [probabilities, logits]: f64 rows run
    /// other kernels (f64 lanes, twice the bytes), at a fraction of the f32 rates that the
    /// other regimes are scaled by.
    pub cpu_f64: [f64; 2],
    /// GPU kernel elements/s of f64 probability rows (medium regime) where `gpu_f64`; 0
    /// where not measured (see [`UNMEASURED_GPU_F64_SHARE`]).
    pub gpu_f64_kernel: f64,
    /// The largest relative spread (slowest / fastest − 1) between repeated timings of one
    /// measurement: a measurement taken under heavy load shows here, and a cache with a
    /// spread above `calibration::PLAUSIBLE_SPREAD` is measured again.
    pub spread: f64,
}

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

/// What a job is, for planning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Job {
    pub rows: usize,
    pub cols: usize,
    pub dtype: Dtype,
    pub input: InputForm,
    /// Full reads of the data the request takes (see `PassPlan::reads`).
    pub reads: usize,
    /// The inputs already live in GPU buffers.
    pub on_gpu: bool,
    /// A report's agreement statistics (top-K, Σ min) are computed too.
    pub agreement: bool,
}

impl Job {
    pub fn of(req: &Request, rows: usize, cols: usize, dtype: Dtype, on_gpu: bool) -> Job {
        Job {
            rows,
            cols,
            dtype,
            input: req.input,
            reads: PassPlan::of(req).reads(),
            on_gpu,
            agreement: false,
        }
    }

    /// The same job with the agreement statistics (logits only: probabilities have none).
    pub fn with_agreement(self, agreement: bool) -> Job {
        Job {
            agreement: agreement && self.input != InputForm::Probabilities,
            ..self
        }
    }
}

/// The CPU's agreement pass over logits as a share of a logits pass: one exponential per
/// element, the rows still in the core's cache (`cpu::agreeing`). Measured on W4-shaped
/// files (BENCHMARKS.md, session 29): 0.3–0.35.
pub const CPU_AGREEMENT_PASS: f64 = 0.35;

/// How much faster than the CPU alone `Auto` must predict a GPU or split placement of data
/// that is not on the GPU yet before it takes it: calibration's small probes misjudge the
/// rates by 30–50% on some machines (an H200 host's 16 cores calibrated at half their speed),
/// and a wrong GPU share costs far more than the CPU's margin forgone (there, splits ran
/// 1.5–3.4× slower than the CPU alone where they were predicted 6–12% faster).
pub const AUTO_MARGIN: f64 = 0.8;

/// The GPU's f64 rate as a share of its f32 rate where calibration had no time to measure
/// it: consumer GPUs run f64 at 1/32–1/64 of f32, data-centre ones at 1/2, so an unmeasured
/// f64 GPU is taken as slow rather than trusted with f64 work it may crawl through.
pub const UNMEASURED_GPU_F64_SHARE: f64 = 1.0 / 16.0;

/// `part / whole` where both were measured (> 0), kept within [1/1000, 4]; else `otherwise`.
fn share(part: f64, whole: f64, otherwise: f64) -> f64 {
    if part > 0.0 && whole > 0.0 {
        (part / whole).clamp(1e-3, 4.0)
    } else {
        otherwise
    }
}

impl Calibration {
    /// What f64 rows run at on each engine, as a share of its f32 rates (1 for other jobs,
    /// and on a GPU that narrows f64 to f32).
    fn f64_shares(&self, job: &Job, f: usize) -> (f64, f64) {
        if job.dtype != Dtype::F64 {
            return (1.0, 1.0);
        }
        let cpu = share(self.cpu_f64[f], self.cpu[1][f], 1.0);
        let gpu = if self.gpu_f64 {
            share(
                self.gpu_f64_kernel,
                self.gpu[1][0],
                UNMEASURED_GPU_F64_SHARE,
            )
        } else {
            1.0
        };
        (cpu, gpu)
    }

    /// Estimates and choice for `job` under `mode`.
    pub fn plan(&self, mode: DeviceMode, job: &Job) -> Plan {
        let reads = job.reads.max(1) as f64;
        let n = (job.rows * job.cols) as f64;
        let r = Regime::of(job.cols).index();
        let f = usize::from(job.input != InputForm::Probabilities);
        let (cpu_share, gpu_share) = self.f64_shares(job, f);
        let cpu_rate = (self.cpu[r][f] * cpu_share).max(1.0);
        // The agreement pass: on the CPU for CPU and split placements (a split's GPU rows
        // return no agreement), on the GPU from its upload otherwise.
        let agree = if job.agreement { 1.0 } else { 0.0 };
        let cpu_s = (reads + CPU_AGREEMENT_PASS * agree) * n / cpu_rate;
        let gpu_rate = self.gpu[r][f] * gpu_share;
        let has_gpu = gpu_rate > 0.0;
        // f64 inputs are narrowed to f32 on a GPU without f64: only asked for explicitly.
        let narrowed = job.dtype == Dtype::F64 && !self.gpu_f64;
        let upload_bytes = if job.on_gpu {
            0.0
        } else if narrowed {
            2.0 * n * 4.0
        } else {
            2.0 * n * job.dtype.size_bytes() as f64
        };
        // The divergences' passes; a split's GPU rows take only these.
        let gpu_main = has_gpu.then(|| {
            self.gpu_latency + reads * (upload_bytes / self.upload.max(1.0) + n / gpu_rate)
        });
        let gpu_s = gpu_main.map(|g| g + agree * n / gpu_rate);
        let split = gpu_main.filter(|_| job.rows >= 2).map(|g| {
            // Share rows so that both sides finish together.
            let g_rate = reads * n / (g - self.gpu_latency).max(1e-12);
            let c_rate = cpu_rate / reads;
            let share = g_rate / (g_rate + c_rate);
            let gpu_rows = ((job.rows as f64 * share).round() as usize).clamp(1, job.rows - 1);
            let t = self.gpu_latency + (n * gpu_rows as f64 / job.rows as f64) / g_rate;
            (
                t.max(n * (job.rows - gpu_rows) as f64 / job.rows as f64 / c_rate)
                    + agree * n / cpu_rate,
                gpu_rows,
            )
        });
        let split_s = split.map(|s| s.0);
        let (placement, reason) = match mode {
            DeviceMode::Cpu => (Placement::Cpu, "cpu requested".to_string()),
            DeviceMode::Gpu if narrowed => (
                Placement::Gpu,
                "gpu requested; f64 inputs computed in f32 on this GPU".to_string(),
            ),
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
                if !has_gpu {
                    (Placement::Cpu, "no GPU".into())
                } else if narrowed {
                    (
                        Placement::Cpu,
                        "f64 inputs: this GPU would compute them in f32".into(),
                    )
                } else if job.on_gpu {
                    (Placement::Gpu, "data already on the GPU stays there".into())
                } else if g < AUTO_MARGIN * cpu_s && g <= s {
                    (Placement::Gpu, "GPU predicted fastest".into())
                } else if s < AUTO_MARGIN * cpu_s && s < g {
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
                } else if g.min(s) < cpu_s {
                    (
                        Placement::Cpu,
                        "GPU or split predicted less than 20% faster: within the calibration's error"
                            .into(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn cal(cpu: f64, gpu: f64, software: bool) -> Calibration {
        Calibration {
            version: super::super::calibration::VERSION,
            key: "test".into(),
            system: None,
            cpu: [[cpu; 2]; 3],
            gpu: [[gpu; 2]; 3],
            upload: 20e9,
            gpu_latency: 50e-6,
            gpu_is_software: software,
            gpu_f64: false,
            cpu_f64: [0.0; 2],
            gpu_f64_kernel: 0.0,
            spread: 0.1,
        }
    }

    fn job(rows: usize, cols: usize, on_gpu: bool) -> Job {
        Job {
            rows,
            cols,
            dtype: Dtype::F32,
            input: InputForm::Probabilities,
            reads: 1,
            on_gpu,
            agreement: false,
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
    fn a_gpu_share_needs_a_margin_over_the_cpu() {
        // Split predicted ~10% faster than the CPU (the upload lets the GPU take a tenth of
        // the rows): the CPU.
        let mut c = cal(10e9, 1e12, false);
        c.upload = 9e9;
        let j = job(4096, 32_000, false);
        let p = c.plan(DeviceMode::Auto, &j);
        let s = p.split_s.expect("a split estimate");
        assert!(s < p.cpu_s && s > AUTO_MARGIN * p.cpu_s, "{p}");
        assert_eq!(p.placement, Placement::Cpu, "{p}");
        assert!(p.reason.contains("20%"), "{p}");
        // Well past the margin (a fast bus): a GPU share.
        c.upload = 50e9;
        let p = c.plan(DeviceMode::Auto, &j);
        assert_ne!(p.placement, Placement::Cpu, "{p}");
        // Asked for, a split is taken whatever the margin.
        c.upload = 9e9;
        let p = c.plan(DeviceMode::Split, &j);
        assert!(matches!(p.placement, Placement::Split { .. }), "{p}");
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
    fn the_request_shapes_the_plan() {
        let c = cal(2e9, 500e9, false);
        let js = Request::new(crate::Divergence::JensenShannon).input(InputForm::Logits);
        let one = Job::of(
            &Request::new(crate::Divergence::Kl),
            64,
            4096,
            Dtype::F32,
            false,
        );
        let two = Job::of(&js, 64, 4096, Dtype::F32, false);
        assert_eq!((one.reads, two.reads), (1, 2));
        let (a, b) = (
            c.plan(DeviceMode::Cpu, &one).cpu_s,
            c.plan(DeviceMode::Cpu, &two).cpu_s,
        );
        assert!(
            (b / a - 2.0).abs() < 1e-12,
            "two passes cost twice: {a} {b}"
        );
        // f64 stays on the CPU in auto when the GPU would narrow it, and says so when asked.
        let f64_job = Job::of(
            &Request::new(crate::Divergence::Kl),
            4096,
            32_000,
            Dtype::F64,
            false,
        );
        assert_eq!(c.plan(DeviceMode::Auto, &f64_job).placement, Placement::Cpu);
        assert!(c.plan(DeviceMode::Gpu, &f64_job).reason.contains("f32"));
    }

    /// f64 rows are planned at the f64 rates: the CPU's measured share of its f32 rate, the
    /// GPU's measured one where its adapter computes f64, and a slow f64 unit assumed where
    /// that was not measured.
    #[test]
    fn f64_rows_are_planned_at_f64_rates() {
        let mut c = cal(2e9, 8e9, false);
        c.upload = 1e12;
        c.cpu_f64 = [1e9; 2];
        c.gpu_f64 = true;
        let kl = Request::new(crate::Divergence::Kl);
        let [f32_job, f64_job] =
            [Dtype::F32, Dtype::F64].map(|d| Job::of(&kl, 4096, 32_000, d, false));
        let cpu = |c: &Calibration, j: &Job| c.plan(DeviceMode::Cpu, j).cpu_s;
        assert!((cpu(&c, &f64_job) / cpu(&c, &f32_job) - 2.0).abs() < 1e-12);
        // Measured at half the f32 rate: 4e9 against the CPU's 1e9.
        c.gpu_f64_kernel = 4e9;
        let measured = c.plan(DeviceMode::Auto, &f64_job);
        assert!(measured.gpu_s.unwrap() < 0.5 * measured.cpu_s, "{measured}");
        assert_ne!(measured.placement, Placement::Cpu, "{measured}");
        // Not measured: 8e9 / 16 = 0.5e9, slower than the CPU.
        c.gpu_f64_kernel = 0.0;
        let assumed = c.plan(DeviceMode::Auto, &f64_job);
        assert!(assumed.gpu_s.unwrap() > assumed.cpu_s, "{assumed}");
        // A GPU that narrows f64 to f32 runs it at its f32 rate (only when asked).
        c.gpu_f64 = false;
        let narrowed = c.plan(DeviceMode::Gpu, &f64_job);
        let f32_gpu = c.plan(DeviceMode::Gpu, &f32_job);
        assert!((narrowed.gpu_s.unwrap() / f32_gpu.gpu_s.unwrap() - 1.0).abs() < 1e-12);
    }

    /// Agreement statistics are one more pass where they run: the CPU's extra pass can make
    /// the GPU (whose second pass reads the upload it already made) the faster placement.
    #[test]
    fn agreement_is_one_more_pass_where_it_runs() {
        // CPU 1e9 elements/s; GPU kernel 4e9 behind a 56 ms upload of 1e8 f32 logits (one
        // row: no split). KL alone: CPU 100 ms, GPU 81 ms (not the 20% `AUTO_MARGIN` asks);
        // with agreement the CPU reads again from its cache (135 ms) where the GPU reads its
        // upload again (106 ms).
        let mut c = cal(1e9, 4e9, false);
        c.upload = 1.42e10;
        let logits = Request::new(crate::Divergence::Kl).input(InputForm::Logits);
        let job = Job::of(&logits, 1, 100_000_000, Dtype::F32, false);
        let plain = c.plan(DeviceMode::Auto, &job);
        let agreeing = c.plan(DeviceMode::Auto, &job.with_agreement(true));
        assert_eq!(plain.placement, Placement::Cpu, "{plain}");
        assert_eq!(agreeing.placement, Placement::Gpu, "{agreeing}");
        let ratio = agreeing.cpu_s / plain.cpu_s;
        assert!((ratio - 1.0 - CPU_AGREEMENT_PASS).abs() < 1e-12);
        let (g0, g1) = (plain.gpu_s.unwrap(), agreeing.gpu_s.unwrap());
        assert!((g1 - g0 - 1e8 / 4e9).abs() < 1e-12, "{g0} {g1}");
        // A split's GPU rows return no agreement: the CPU reads every row once more.
        let rows = Job::of(&logits, 1000, 100_000, Dtype::F32, false);
        let (s0, s1) = (
            c.plan(DeviceMode::Split, &rows).split_s.unwrap(),
            c.plan(DeviceMode::Split, &rows.with_agreement(true))
                .split_s
                .unwrap(),
        );
        assert!((s1 - s0 - 1e8 / 1e9).abs() < 1e-12, "{s0} {s1}");
        // Probabilities have no agreement statistics: no extra pass.
        let probs = Job::of(
            &Request::new(crate::Divergence::Kl),
            1000,
            100_000,
            Dtype::F32,
            false,
        );
        assert!(!probs.with_agreement(true).agreement);
    }

    #[test]
    fn device_mode_parses() {
        assert_eq!("GPU".parse::<DeviceMode>().unwrap(), DeviceMode::Gpu);
        assert!("tpu".parse::<DeviceMode>().is_err());
    }
}
