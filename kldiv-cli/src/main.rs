//! The `kldiv` command line: `compare`, `bench`, `info`. Exit codes: 0 success, 2 bad usage
//! or invalid input, 1 any other failure. Errors are one line on stderr, never a panic trace.

/// `println!` for reports: a closed pipe ends the program quietly, a full disk is exit 1.
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::output::print(&format!("{}\n", format_args!($($t)*)))?
    };
}

mod bench;
mod compare;
mod export_kld;
mod llama_compat;
mod merge;
mod output;
mod plot;
mod progress;
mod sigbus;

use clap::{Parser, Subcommand, ValueEnum};
#[cfg(not(feature = "gpu"))]
use kldiv::scheduler::GPU_NOT_BUILT;
use kldiv::{Divergence, InputForm};

#[derive(Parser)]
#[command(
    name = "kldiv",
    version,
    about = "KL divergence over batches of distributions, on CPU and GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compare two arrays row by row (P ‖ Q) and print summary statistics.
    Compare(compare::Args),
    /// Time every engine on the built-in workloads W1–W4 (the README's main command).
    Bench(bench::Args),
    /// Write a llama.cpp KL-divergence base (.kld) from logits of any engine.
    ExportKld(export_kld::Args),
    /// Merge shard summaries (`compare --summary-out`) and print the report of the whole run.
    Merge(merge::Args),
    /// Describe the CPU (SIMD level, threads) and any GPU adapters.
    Info,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputArg {
    /// Probabilities: non-negative, each row sums to 1 (checked; see --normalize).
    Probs,
    /// Natural-log probabilities (log-softmax output); -inf is probability 0. Rows are
    /// checked to sum to 1 after exponentiating.
    Logprobs,
    /// Unnormalised scores (a model's raw output); each row goes through a softmax. -inf
    /// (a masked token) is probability 0.
    Logits,
}

impl From<InputArg> for InputForm {
    fn from(a: InputArg) -> Self {
        match a {
            InputArg::Probs => InputForm::Probabilities,
            InputArg::Logprobs => InputForm::LogProbabilities,
            InputArg::Logits => InputForm::Logits,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DivergenceArg {
    /// KL(P‖Q) = Σ p·ln(p/q): +inf where q = 0 < p.
    Kl,
    /// KL(Q‖P).
    ReverseKl,
    /// Jeffreys divergence KL(P‖Q) + KL(Q‖P).
    SymmetricKl,
    /// Jensen–Shannon divergence ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2, at most ln 2 (the
    /// divergence, not SciPy's jensenshannon distance, which is its square root).
    Js,
    /// Cross-entropy H(P,Q) = −Σ p·ln q.
    CrossEntropy,
    /// Entropy H(P) = −Σ p·ln p (Q is read only for its shape).
    Entropy,
}

impl From<DivergenceArg> for Divergence {
    fn from(a: DivergenceArg) -> Self {
        match a {
            DivergenceArg::Kl => Divergence::Kl,
            DivergenceArg::ReverseKl => Divergence::ReverseKl,
            DivergenceArg::SymmetricKl => Divergence::SymmetricKl,
            DivergenceArg::Js => Divergence::JensenShannon,
            DivergenceArg::CrossEntropy => Divergence::CrossEntropy,
            DivergenceArg::Entropy => Divergence::Entropy,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The scheduler picks CPU, GPU or both from measured speeds.
    Auto,
    Cpu,
    Gpu,
    /// Rows shared between GPU and CPU.
    Split,
}

impl From<DeviceArg> for kldiv::scheduler::DeviceMode {
    fn from(d: DeviceArg) -> Self {
        use kldiv::scheduler::DeviceMode;
        match d {
            DeviceArg::Auto => DeviceMode::Auto,
            DeviceArg::Cpu => DeviceMode::Cpu,
            DeviceArg::Gpu => DeviceMode::Gpu,
            DeviceArg::Split => DeviceMode::Split,
        }
    }
}

/// The scheduler for `--device`, else `KLDIV_DEVICE`, else auto; in auto it loads (or
/// measures and caches) its calibration, warning when the cache cannot be used.
pub fn engine(device: Option<DeviceArg>) -> Result<kldiv::scheduler::Scheduler, Failure> {
    use kldiv::scheduler::{calibration, Calibrated, DeviceMode, Scheduler};
    let mode = match device {
        Some(d) => d.into(),
        None => DeviceMode::from_env()?,
    };
    let s = Scheduler::with_mode(mode);
    if matches!(mode, DeviceMode::Auto | DeviceMode::Split) {
        match calibration::default_cache_path() {
            Some(path) => {
                if let (
                    _,
                    Calibrated::Measured {
                        cache_error: Some(e),
                    },
                ) = s.calibrate_cached(&path)
                {
                    warn(&format!("calibration cache: {e}"));
                }
            }
            None => {
                s.calibrate();
            }
        };
    }
    Ok(s)
}

/// A failure with its exit code.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl From<kldiv::Error> for Failure {
    fn from(e: kldiv::Error) -> Self {
        Failure {
            code: if e.is_input_error() { 2 } else { 1 },
            message: one_line(&e.to_string()),
        }
    }
}

/// Driver errors arrive with several lines and empty "Caused by:" headings: one line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.eq_ignore_ascii_case("caused by:"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A warning on stderr, as one line; never fails (stderr may be closed).
pub fn warn(text: &str) {
    warn_raw(&format!("kldiv: warning: {}", one_line(text)));
}

/// A line on stderr; never fails.
pub fn warn_raw(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

fn run() -> i32 {
    // Mesa prints a harmless warning without it; set before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Compare(a) => compare::run(a),
        Command::Bench(a) => bench::run(a),
        Command::ExportKld(a) => export_kld::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Info => info(),
    };
    match result {
        Ok(()) => 0,
        // A closed output pipe ends the program quietly.
        Err(f) if f.message.is_empty() => f.code,
        Err(f) => {
            warn_raw(&format!("kldiv: {}", f.message));
            f.code
        }
    }
}

/// `info`'s GPU lines: the adapter the scheduler opened, or why there is none.
#[cfg(feature = "gpu")]
fn describe_gpu(e: &kldiv::scheduler::Scheduler) -> Result<(), Failure> {
    match e.gpu() {
        Ok(g) => {
            let a = g.adapter();
            outln!(
                "gpu: {} ({} backend, {} device{})",
                a.name,
                a.backend,
                a.device_type,
                if a.is_software {
                    ", software rasteriser"
                } else {
                    ""
                }
            );
            outln!("     driver {}", a.driver);
            outln!(
                "     max storage binding {} MiB, max buffer {} MiB, timestamp queries {}",
                a.max_storage_binding >> 20,
                a.max_buffer >> 20,
                a.timestamps
            );
            outln!(
                "     f64 kernels {}, workgroup reduction {}",
                g.computes_f64(),
                if g.uses_subgroups() {
                    "through subgroups"
                } else {
                    "tree in workgroup memory"
                }
            );
        }
        Err(why) => outln!("gpu: none ({why})"),
    }
    Ok(())
}

#[cfg(not(feature = "gpu"))]
fn describe_gpu(_: &kldiv::scheduler::Scheduler) -> Result<(), Failure> {
    outln!("gpu: none ({GPU_NOT_BUILT})");
    Ok(())
}

fn info() -> Result<(), Failure> {
    let cpu = kldiv::CpuEngine::new();
    outln!("cpu: {} SIMD, {} threads", cpu.simd_name(), cpu.threads());
    let e = engine(Some(DeviceArg::Auto))?;
    describe_gpu(&e)?;
    let c = e.calibrate();
    outln!("scheduler calibration ({}):", c.key);
    for (i, regime) in ["short rows (≤64)", "medium rows", "long rows (>65536)"]
        .iter()
        .enumerate()
    {
        outln!(
            "  {regime:<20} cpu {:>7.3} / {:>7.3} Gelem/s   gpu kernel {:>7.3} / {:>7.3} Gelem/s  (probs / logits)",
            c.cpu[i][0] / 1e9, c.cpu[i][1] / 1e9, c.gpu[i][0] / 1e9, c.gpu[i][1] / 1e9
        );
    }
    let gpu_f64 = match (c.gpu_f64, c.gpu_f64_kernel > 0.0) {
        (false, _) => "computed in f32".to_string(),
        (true, true) => format!("{:.3} Gelem/s (probs)", c.gpu_f64_kernel / 1e9),
        (true, false) => "not measured (assumed 1/16 of f32)".to_string(),
    };
    outln!(
        "  f64 medium rows      cpu {:>7.3} / {:>7.3} Gelem/s   gpu kernel {gpu_f64}",
        c.cpu_f64[0] / 1e9,
        c.cpu_f64[1] / 1e9
    );
    outln!(
        "  gpu upload {:.2} GB/s, fixed latency {:.3} ms",
        c.upload / 1e9,
        c.gpu_latency * 1e3
    );
    Ok(())
}

fn main() {
    std::process::exit(run());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_errors_become_one_line() {
        let wgpu_style = "Validation Error\n\nCaused by:\n    In Device::create_buffer\n      Not enough memory left.\n";
        assert_eq!(
            one_line(wgpu_style),
            "Validation Error; In Device::create_buffer; Not enough memory left."
        );
        let e = kldiv::Error::GpuUnavailable("request_device failed: x".into());
        let f = Failure::from(e);
        assert_eq!(f.code, 1);
        assert_eq!(f.message.matches("no usable GPU").count(), 1);
    }
}
