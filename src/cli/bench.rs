//! `kldiv bench`: every placement on W1–W4, with throughput against the machine's measured
//! memory-read limit.

use super::Failure;
use kldiv::workloads::{self, Workload};
use kldiv::{CpuEngine, Divergence, Request, SimdLevel};
use rayon::prelude::*;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Scale the workloads down (rows / 16) to finish in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Comma-separated subset of W1,W2,W3,W4.
    #[arg(long, value_delimiter = ',')]
    shapes: Vec<String>,
    /// Timed repetitions per placement (the median is reported).
    #[arg(long)]
    repeat: Option<usize>,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also write the table as CSV here.
    #[arg(long)]
    csv: Option<std::path::PathBuf>,
}

struct Row {
    workload: String,
    shape: String,
    placement: String,
    median_s: f64,
    gelem: f64,
    gbs: f64,
    frac: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Two-stream read limit (Σ a·b over two large arrays, all threads), in GB/s.
pub fn read_limit(bytes_each: usize) -> f64 {
    let n = bytes_each / 4;
    let a: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 7) as f32).collect();
    let b: Vec<f32> = (0..n).into_par_iter().map(|i| (i % 5) as f32).collect();
    let mut times = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        let s: f32 = a
            .par_chunks(1 << 16)
            .zip(b.par_chunks(1 << 16))
            .map(|(x, y)| {
                let mut acc = [0f32; 16];
                for (xc, yc) in x.chunks_exact(16).zip(y.chunks_exact(16)) {
                    for k in 0..16 {
                        acc[k] += xc[k] * yc[k];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(s);
    }
    2.0 * bytes_each as f64 / median(times) / 1e9
}

pub fn run(a: Args) -> Result<(), Failure> {
    let factor = if a.quick { 16 } else { 1 };
    let repeat = a.repeat.unwrap_or(if a.quick { 3 } else { 5 }).max(1);
    let chosen: Vec<Workload> = workloads::ALL
        .iter()
        .filter(|w| a.shapes.is_empty() || a.shapes.iter().any(|s| s.eq_ignore_ascii_case(w.name)))
        .map(|w| w.scaled(factor))
        .collect();
    if chosen.is_empty() {
        return Err(Failure {
            code: 2,
            message: format!("--shapes {:?}: no such workload (W1, W2, W3, W4)", a.shapes),
        });
    }
    let limit_bytes = if a.quick { 256 << 20 } else { 1 << 30 };
    let limit = read_limit(limit_bytes);
    let cpu = CpuEngine::new();
    println!(
        "kldiv bench{}: {} threads, CPU SIMD {}, memory-read limit {:.1} GB/s ({:.2} Gelem/s of f32 pairs)",
        if a.quick { " --quick" } else { "" },
        cpu.threads(),
        cpu.simd_name(),
        limit,
        limit / 8.0
    );
    println!(
        "{:<4} {:>17} {:<18} {:>10} {:>9} {:>8} {:>7}",
        "", "shape", "placement", "median ms", "Gelem/s", "GB/s", "% limit"
    );
    let mut rows = vec![];
    for w in &chosen {
        let (p, q) = workloads::generate(w, 42);
        let req = Request::new(Divergence::Kl).input(w.input);
        let placements: Vec<(String, CpuEngine, usize)> = [
            ("cpu-reference-f64", SimdLevel::Reference, repeat.min(2)),
            ("cpu-scalar", SimdLevel::Scalar, repeat.min(3)),
            ("cpu-simd", SimdLevel::Auto, repeat),
        ]
        .into_iter()
        .filter_map(|(name, l, r)| {
            CpuEngine::with_level(l)
                .ok()
                .map(|e| (name.to_string(), e, r))
        })
        .collect();
        for (name, engine, reps) in placements {
            // One untimed warm-up, then the timed repetitions.
            engine.per_row(&req, &p, &q, w.rows, w.cols)?;
            let mut times = vec![];
            for _ in 0..reps {
                let t = Instant::now();
                let out = engine.per_row(&req, &p, &q, w.rows, w.cols)?;
                times.push(t.elapsed().as_secs_f64());
                std::hint::black_box(out);
            }
            let m = median(times);
            let gelem = w.elements() as f64 / m / 1e9;
            let gbs = gelem * 8.0;
            let row = Row {
                workload: w.name.to_string(),
                shape: format!("{}×{}", w.rows, w.cols),
                placement: if name == "cpu-simd" {
                    format!("cpu-simd ({})", engine.simd_name())
                } else {
                    name
                },
                median_s: m,
                gelem,
                gbs,
                frac: gbs / limit,
            };
            println!(
                "{:<4} {:>17} {:<18} {:>10.2} {:>9.3} {:>8.2} {:>6.0}%",
                row.workload,
                row.shape,
                row.placement,
                row.median_s * 1e3,
                row.gelem,
                row.gbs,
                row.frac * 100.0
            );
            rows.push(row);
        }
    }
    let io_err = |path: &std::path::Path, e: std::io::Error| Failure {
        code: 1,
        message: format!("{}: {e}", path.display()),
    };
    if let Some(path) = &a.csv {
        let mut s = String::from(
            "workload,shape,placement,median_s,gelem_per_s,gb_per_s,fraction_of_read_limit\n",
        );
        for r in &rows {
            s += &format!(
                "{},{},{},{},{},{},{}\n",
                r.workload, r.shape, r.placement, r.median_s, r.gelem, r.gbs, r.frac
            );
        }
        std::fs::write(path, s).map_err(|e| io_err(path, e))?;
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "read_limit_gb_per_s": limit,
            "threads": cpu.threads(),
            "simd": cpu.simd_name(),
            "rows": rows.iter().map(|r| serde_json::json!({
                "workload": r.workload, "shape": r.shape, "placement": r.placement,
                "median_s": r.median_s, "gelem_per_s": r.gelem, "gb_per_s": r.gbs,
                "fraction_of_read_limit": r.frac,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, j.to_string()).map_err(|e| io_err(path, e))?;
    }
    Ok(())
}
