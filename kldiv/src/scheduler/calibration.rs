//! Measuring the rates the cost model needs (≤ 0.5 s, on `workloads` data), and keeping them
//! in a JSON cache file between processes.

use super::cost::Calibration;
use crate::cpu::CpuEngine;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::request::{Divergence, InputForm, Normalization, Request};
use crate::workloads::{self, Workload};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The cache format written by this version; others are measured again.
pub const VERSION: u32 = 5;

/// Calibrations whose timings disagreed by more than this are not trusted from a cache.
pub const PLAUSIBLE_SPREAD: f64 = 0.5;

/// The default cache file: `$XDG_CACHE_HOME/kldiv/calibration.json` or `~/.cache/...`.
pub fn default_cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("kldiv").join("calibration.json"))
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The calibration cached at `path`: `Ok(None)` when there is none (or it is of another
/// version), an error when the file cannot be read or is not a calibration.
pub fn load(path: &Path) -> Result<Option<Calibration>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, e)),
    };
    let c: Calibration = serde_json::from_str(&text).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: format!("not a kldiv calibration: {e}"),
    })?;
    Ok((c.version == VERSION).then_some(c))
}

/// Write `c` to `path` (then rename, so a concurrent reader never sees half a file).
pub fn save(path: &Path, c: &Calibration) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let text = serde_json::to_string_pretty(c).map_err(|e| Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// The request calibration times (synthetic rows, so no sum check).
fn probe(input: InputForm) -> Request {
    Request::new(Divergence::Kl)
        .normalization(Normalization::AsGiven)
        .input(input)
}

/// The fastest of up to 5 timed runs of `f` (as many as fit in 20 ms after the first),
/// after a warm-up: interference (other processes, a driver's start-up threads, cores
/// waking up) only ever slows a run, and on a 16-core host the mean of 3 came out 1–7× below
/// the engine's speed from one process to the next. How far the two fastest runs disagree
/// goes into `spread`.
fn time(spread: &mut f64, f: &mut dyn FnMut() -> Result<()>) -> f64 {
    let _ = f(); // warm-up: pipelines, caches
    let t = Instant::now();
    let mut runs = vec![];
    while runs.len() < 5 && (runs.is_empty() || t.elapsed().as_secs_f64() < 0.02) {
        let r = Instant::now();
        if f().is_err() {
            return f64::INFINITY;
        }
        runs.push(r.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    if runs.len() > 1 && runs[0] > 0.0 {
        *spread = spread.max(runs[1] / runs[0] - 1.0);
    }
    runs[0]
}

/// How many times the 2-thread probe sizes a machine of `threads` threads measures: each
/// thread gets as much work as on 2 cores. With the 2-core sizes, 16 threads measured the
/// CPU at a tenth of its speed (thread start-up against 4k elements a thread), and `auto`
/// put a share on a GPU that was slower than the CPU alone.
fn probe_scale(threads: usize) -> usize {
    (threads / 2).clamp(1, 64)
}

/// A small job of each regime, in the workloads' data (W2-, W1- and W3-like rows), sized for
/// `threads` threads.
fn probe_workload(regime: usize, input: InputForm, threads: usize) -> Workload {
    let k = probe_scale(threads);
    let (rows, cols) = [(4096 * k, 16), (16 * k, 4096), (1, 131_072 * k)][regime];
    Workload {
        name: "calibration",
        rows,
        cols,
        input,
        what: "scheduler calibration",
    }
}

/// Workload `w`'s rows as `T` (generated in f32; f64 rows widened from them).
fn probe_rows<T: Element>(w: &Workload) -> (Vec<T>, Vec<T>) {
    let (p, q) = workloads::generate(w, 7);
    let cast = |v: Vec<f32>| v.into_iter().map(|x| T::from_f64(f64::from(x))).collect();
    (cast(p), cast(q))
}

/// The CPU engine's elements/s on workload `w`'s rows as `T`.
fn cpu_rate<T: Element>(cpu: &CpuEngine, spread: &mut f64, w: &Workload) -> f64 {
    let (p, q) = probe_rows::<T>(w);
    let req = probe(w.input);
    let s = time(spread, &mut || {
        cpu.per_row(&req, &p, &q, w.rows, w.cols).map(|_| ())
    });
    w.elements() as f64 / s
}

/// The GPU kernel's elements/s on workload `w`'s rows as `T`: the end-to-end time less the
/// calibration's latency and the upload of both sides, never credited with more than 4×
/// the end-to-end rate.
#[cfg(feature = "gpu")]
fn gpu_kernel_rate<T: Element>(
    g: &crate::gpu::GpuEngine,
    spread: &mut f64,
    w: &Workload,
    c: &Calibration,
) -> f64 {
    let n = w.elements() as f64;
    let (p, q) = probe_rows::<T>(w);
    let req = probe(w.input);
    let s = time(spread, &mut || {
        g.per_row(&req, &p, &q, w.rows, w.cols).map(|_| ())
    });
    let total = (s - c.gpu_latency).max(1e-9);
    let upload = 2.0 * T::DTYPE.size_bytes() as f64 * n / c.upload;
    n / (total - upload).max(0.25 * total)
}

/// Measure the CPU engine (≤ 0.2 s); the GPU's rates stay 0 (see [`measure_gpu`]). Callers
/// open the GPU after this, so that its driver's start-up does not run beside these runs.
pub fn measure_cpu(key: String, cpu: &CpuEngine) -> Calibration {
    let mut spread = 0f64;
    let threads = cpu.threads();
    let forms = [InputForm::Probabilities, InputForm::Logits];
    let mut rates = [[0.0; 2]; 3];
    for (r, row) in rates.iter_mut().enumerate() {
        for (f, &input) in forms.iter().enumerate() {
            row[f] = cpu_rate::<f32>(cpu, &mut spread, &probe_workload(r, input, threads));
        }
    }
    // f64 rows run other kernels: their rate at the medium regime, the others scaled by it.
    let cpu_f64 =
        forms.map(|input| cpu_rate::<f64>(cpu, &mut spread, &probe_workload(1, input, threads)));
    Calibration {
        version: VERSION,
        key,
        system: None,
        cpu: rates,
        gpu: [[0.0; 2]; 3],
        upload: 1.0,
        gpu_latency: 0.0,
        gpu_is_software: false,
        gpu_f64: false,
        cpu_f64,
        gpu_f64_kernel: 0.0,
        spread,
    }
}

/// Add the GPU engine's rates to a calibration of the CPU (≤ 0.3 s).
#[cfg(feature = "gpu")]
pub fn measure_gpu(c: &mut Calibration, g: &crate::gpu::GpuEngine, threads: usize) {
    let mut spread = c.spread;
    let forms = [InputForm::Probabilities, InputForm::Logits];
    let budget = Instant::now();
    c.gpu_is_software = g.adapter().is_software;
    c.gpu_f64 = g.adapter().f64;
    // Latency: a one-row job. Upload: a large buffer write. Kernel: end-to-end time
    // minus both.
    let one = Workload {
        rows: 1,
        ..probe_workload(0, InputForm::Probabilities, threads)
    };
    let (p, q) = workloads::generate(&one, 7);
    let req = probe(InputForm::Probabilities);
    c.gpu_latency = time(&mut spread, &mut || {
        g.per_row(&req, &p, &q, 1, one.cols).map(|_| ())
    });
    c.upload = g.measure_upload(8 << 20).unwrap_or(1e9);
    // Kernel throughput from medium rows (one pipeline per input form, to stay in
    // the time budget); the other regimes take the same rate.
    for (f, &input) in forms.iter().enumerate() {
        if budget.elapsed().as_secs_f64() > 0.25 {
            c.gpu[1][f] = c.gpu[1][0].max(1.0);
            continue;
        }
        c.gpu[1][f] = gpu_kernel_rate::<f32>(g, &mut spread, &probe_workload(1, input, threads), c);
    }
    c.gpu[0] = c.gpu[1];
    c.gpu[2] = c.gpu[1];
    // f64 kernels where the adapter has them, in what is left of the budget (else the
    // cost model assumes a slow f64 unit: `cost::UNMEASURED_GPU_F64_SHARE`).
    if c.gpu_f64 && budget.elapsed().as_secs_f64() <= 0.25 {
        let w = probe_workload(1, InputForm::Probabilities, threads);
        c.gpu_f64_kernel = gpu_kernel_rate::<f64>(g, &mut spread, &w, c);
    }
    c.spread = spread;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_grow_with_the_threads_and_stay_bounded() {
        assert_eq!(probe_scale(1), 1);
        assert_eq!(probe_scale(2), 1);
        assert_eq!(probe_scale(16), 8);
        assert_eq!(probe_scale(1024), 64);
        for regime in 0..3 {
            let small = probe_workload(regime, InputForm::Logits, 2).elements();
            let large = probe_workload(regime, InputForm::Logits, 16).elements();
            assert_eq!(large, 8 * small, "regime {regime}");
        }
        // The regimes keep their row lengths (the cost model's boundaries at 64 and 65536).
        assert_eq!(probe_workload(0, InputForm::Logits, 64).cols, 16);
        assert_eq!(probe_workload(1, InputForm::Logits, 64).cols, 4096);
        assert!(probe_workload(2, InputForm::Logits, 1).cols > 65_536);
    }

    #[test]
    fn calibrations_round_trip_through_the_cache_file() {
        let dir = std::env::temp_dir().join(format!("kldiv-cal-rt-{}", std::process::id()));
        let path = dir.join("c.json");
        let c = Calibration {
            version: VERSION,
            key: "cpu avx512 x2 | gpu none".into(),
            system: Some("icd lvp_icd.json 1 2".into()),
            cpu: [[1.5e9, 1.0e9], [3e9, 2e9], [3e9, 2e9]],
            gpu: [[0.0; 2]; 3],
            upload: 1.0,
            gpu_latency: 0.0,
            gpu_is_software: false,
            gpu_f64: false,
            cpu_f64: [0.5e9, 0.3e9],
            gpu_f64_kernel: 0.0,
            spread: 0.2,
        };
        save(&path, &c).unwrap();
        assert_eq!(load(&path).unwrap(), Some(c.clone()));
        // Another version is not used; a corrupt file is an error, not a calibration.
        std::fs::write(
            &path,
            serde_json::to_string(&Calibration { version: 1, ..c }).unwrap(),
        )
        .unwrap();
        assert_eq!(load(&path).unwrap(), None);
        std::fs::write(&path, "{\"version\": 2, \"key\": 7}").unwrap();
        assert!(load(&path).is_err());
        assert_eq!(load(&dir.join("missing.json")).unwrap(), None);
        std::fs::remove_dir_all(&dir).ok();
    }
}
