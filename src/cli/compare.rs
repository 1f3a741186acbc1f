//! `kldiv compare P Q`: per-row divergence between two files, summarised.

use super::{DeviceArg, DivergenceArg, Failure, InputArg};
use kldiv::io::{self, Shaped};
use kldiv::{NanPolicy, Normalization, Request, Unit};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// P: .npy file (f32, f64, f16; 1-D is one row; leading axes are rows).
    p: PathBuf,
    /// Q: same shape and element type as P.
    q: PathBuf,
    #[arg(long, value_enum, default_value = "probs")]
    input: InputArg,
    #[arg(long, value_enum, default_value = "kl")]
    divergence: DivergenceArg,
    /// Where to run (default: KLDIV_DEVICE, else auto).
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Print where the work ran and why (the scheduler's estimates) to stderr.
    #[arg(long)]
    explain: bool,
    /// Divide each probability row by its sum instead of rejecting rows that do not sum to 1.
    #[arg(long)]
    normalize: bool,
    /// Report in bits instead of nats.
    #[arg(long)]
    bits: bool,
    /// A row with NaN gets NaN instead of stopping with an error.
    #[arg(long)]
    propagate_nan: bool,
    /// Write the per-row values here (1-D float64 .npy).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn load(path: &Path) -> Result<Shaped, Failure> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "npy" {
        return Err(Failure {
            code: 2,
            message: format!("{}: unsupported file type (expected .npy)", path.display()),
        });
    }
    Ok(io::npy::read(path)?)
}

pub fn run(a: Args) -> Result<(), Failure> {
    let mut req = Request::new(a.divergence.into()).input(a.input.into());
    if a.normalize {
        req = req.normalization(Normalization::Normalize);
    }
    if a.bits {
        req = req.unit(Unit::Bits);
    }
    if a.propagate_nan {
        req = req.nan(NanPolicy::Propagate);
    }
    let p = load(&a.p)?;
    let q = load(&a.q)?;
    let engine = super::engine(a.device)?;
    let run = io::with_pair(&p, &q, &req, |pair| pair.run(&engine, &req))
        .map_err(|e| locate(e, &a.p, &a.q))?;
    for w in &run.warnings {
        eprintln!("kldiv: warning: {w}");
    }
    if a.explain {
        eprintln!("kldiv: {:?} mode, {}", engine.mode(), run.plan);
    }
    let per_row = run.values;
    if let Some(out) = &a.out {
        io::npy::write_f64(out, &per_row)?;
    }
    let s = kldiv::stats::summarize(&per_row);
    let unit = if a.bits { "bits" } else { "nats" };
    if a.json {
        let pct: serde_json::Map<String, serde_json::Value> = s
            .percentiles
            .iter()
            .map(|(p, v)| (format!("p{p}"), num(*v)))
            .collect();
        let j = serde_json::json!({
            "divergence": format!("{:?}", req.divergence),
            "unit": unit,
            "rows": p.rows,
            "cols": p.cols,
            "count": s.count,
            "nan_rows": s.nan_rows,
            "mean": num(s.mean),
            "sem": num(s.sem),
            "std": num(s.std),
            "min": num(s.min),
            "min_row": s.min_row,
            "median": num(s.median),
            "max": num(s.max),
            "max_row": s.max_row,
            "percentiles": pct,
        });
        println!("{j}");
    } else {
        println!(
            "{:?}(P‖Q) over {} rows × {} columns, in {unit}",
            req.divergence, p.rows, p.cols
        );
        println!("  mean    {:.6e} ± {:.2e}", s.mean, s.sem);
        println!("  std     {:.6e}", s.std);
        println!("  min     {:.6e}  (row {})", s.min, s.min_row);
        println!("  median  {:.6e}", s.median);
        println!("  max     {:.6e}  (row {})", s.max, s.max_row);
        if s.nan_rows > 0 {
            println!("  NaN rows {}", s.nan_rows);
        }
    }
    Ok(())
}

/// JSON has no infinity: write it as a string.
fn num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::json!(v.to_string())
    }
}

/// Name the file a value error came from.
fn locate(e: kldiv::Error, p: &Path, q: &Path) -> Failure {
    let file = match &e {
        kldiv::Error::BadValue { side, .. }
        | kldiv::Error::NotNormalized { side, .. }
        | kldiv::Error::NoMass { side, .. } => Some(match side {
            kldiv::Side::P => p,
            kldiv::Side::Q => q,
        }),
        _ => None,
    };
    let mut f = Failure::from(e);
    if let Some(file) = file {
        f.message = format!("{}: {}", file.display(), f.message);
    }
    f
}
