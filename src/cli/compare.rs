//! `kldiv compare P Q`: per-row divergence between two tensors, streamed from memory-mapped
//! files a block of rows at a time, summarised with llama.cpp-style statistics.

use super::{DeviceArg, DivergenceArg, Failure, InputArg};
use kldiv::io::tensor::{Block, TensorFile};
use kldiv::scheduler::Engine;
use kldiv::{Element, NanPolicy, Normalization, Request, Unit};
use rayon::prelude::*;
use std::io::{IsTerminal, Write};
use std::time::Instant;

/// Bytes of each input decoded or touched per block: bounds memory whatever the file size.
const BLOCK_BYTES: usize = 64 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// P: FILE.npy, FILE.safetensors, or FILE.safetensors:TENSOR. The last axis is the
    /// distribution; all leading axes are rows.
    p: String,
    /// Q: same shape and element type as P (may be another tensor of the same file).
    q: String,
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
    out: Option<std::path::PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Progress on stderr for jobs over about a second, only on a terminal.
struct Progress {
    start: Instant,
    shown: bool,
    last: Instant,
    enabled: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Progress {
            start: now,
            shown: false,
            last: now,
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }
    fn update(&mut self, done: usize, total: usize, cols: usize) {
        let t = self.start.elapsed().as_secs_f64();
        if !self.enabled
            || done == 0
            || (!self.shown && t < 1.0)
            || self.last.elapsed().as_secs_f64() < 0.2
        {
            return;
        }
        self.shown = true;
        self.last = Instant::now();
        let rate = done as f64 / t;
        let eta = (total - done) as f64 / rate;
        eprint!(
            "\r{done}/{total} rows  {:.2} Gelem/s  ETA {eta:.0} s   ",
            rate * cols as f64 / 1e9
        );
        let _ = std::io::stderr().flush();
    }
    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn load(spec: &str) -> Result<TensorFile, Failure> {
    Ok(TensorFile::open(spec)?)
}

/// Index of the largest value (first on ties; NaN never wins).
fn argmax<T: Element>(row: &[T]) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, v) in row.iter().enumerate() {
        let v = v.to_f64();
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0
}

struct Totals {
    values: Vec<f64>,
    same_top: usize,
}

#[allow(clippy::too_many_arguments)]
fn run_block<T: Element>(
    engine: &Engine,
    req: &Request,
    p: &[T],
    q: &[T],
    rows: usize,
    cols: usize,
    totals: &mut Totals,
    explain: &mut Option<String>,
) -> kldiv::Result<()> {
    let run = engine.run(req, p, q, rows, cols)?;
    for w in &run.warnings {
        eprintln!("kldiv: warning: {w}");
    }
    if explain.is_none() {
        *explain = Some(run.plan.to_string());
    }
    totals.values.extend_from_slice(&run.values);
    if req.reads_q() {
        totals.same_top += p
            .par_chunks(cols)
            .zip(q.par_chunks(cols))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
    }
    Ok(())
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
    if req.reads_q() {
        if p.dtype() != q.dtype() {
            return Err(kldiv::Error::DtypeMismatch {
                p: p.dtype().name(),
                q: q.dtype().name(),
            }
            .into());
        }
        if p.shape() != q.shape() {
            return Err(Failure {
                code: 2,
                message: format!(
                    "shape mismatch: {} is {:?}, {} is {:?}",
                    p.label(),
                    p.shape(),
                    q.label(),
                    q.shape()
                ),
            });
        }
    }
    let (rows, cols) = (p.rows(), p.cols());
    if rows == 0 || cols == 0 {
        return Err(kldiv::Error::Empty { rows, cols }.into());
    }
    let engine = super::engine(a.device)?;
    let per_block = (BLOCK_BYTES / (cols * p.dtype().size_bytes()).max(1)).max(1);
    let mut totals = Totals {
        values: Vec::with_capacity(rows),
        same_top: 0,
    };
    let mut explain = None;
    let mut progress = Progress::new(a.quiet);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per_block).min(rows);
        let n = r1 - r0;
        let qf = if req.reads_q() { &q } else { &p };
        let result = match (p.block(r0, r1), qf.block(r0, r1)) {
            (Block::F32(x), Block::F32(y)) => {
                run_block(&engine, &req, &x, &y, n, cols, &mut totals, &mut explain)
            }
            (Block::F64(x), Block::F64(y)) => {
                run_block(&engine, &req, &x, &y, n, cols, &mut totals, &mut explain)
            }
            (Block::F16(x), Block::F16(y)) => {
                run_block(&engine, &req, &x, &y, n, cols, &mut totals, &mut explain)
            }
            (Block::BF16(x), Block::BF16(y)) => {
                run_block(&engine, &req, &x, &y, n, cols, &mut totals, &mut explain)
            }
            _ => unreachable!("element types were checked"),
        };
        result.map_err(|e| locate(kldiv::relocate_row_by(e, r0), &p, &q))?;
        r0 = r1;
        progress.update(r0, rows, cols);
    }
    progress.finish();
    if a.explain {
        eprintln!(
            "kldiv: {:?} mode, {}",
            engine.mode(),
            explain.unwrap_or_default()
        );
        if let Ok(g) = engine.gpu() {
            let st = g.last_call();
            if st.chunks > 0 {
                let kernels = st.kernel_ns.map_or("not timed".into(), |ns| {
                    format!("{:.3} ms", ns as f64 / 1e6)
                });
                eprintln!(
                    "kldiv: gpu {} (last block): {:.1} MB up, {:.1} KB back, {} dispatches in {} chunks, kernels {kernels}",
                    g.adapter().name,
                    st.bytes_uploaded as f64 / 1e6,
                    st.bytes_read_back as f64 / 1e3,
                    st.dispatches,
                    st.chunks,
                );
            }
        }
    }
    let per_row = totals.values;
    if let Some(out) = &a.out {
        kldiv::io::npy::write_f64(out, &per_row)?;
    }
    let s = kldiv::stats::summarize(&per_row);
    let unit = if a.bits { "bits" } else { "nats" };
    let top = req.reads_q().then(|| {
        let share = totals.same_top as f64 / rows as f64;
        (share, (share * (1.0 - share) / rows as f64).sqrt())
    });
    if a.json {
        let pct: serde_json::Map<String, serde_json::Value> = s
            .percentiles
            .iter()
            .map(|(p, v)| (format!("p{p}"), num(*v)))
            .collect();
        let mut j = serde_json::json!({
            "divergence": format!("{:?}", req.divergence),
            "input": format!("{:?}", req.input),
            "unit": unit,
            "rows": rows,
            "cols": cols,
            "dtype": p.dtype().name(),
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
        if let Some((share, se)) = top {
            j["same_top"] = serde_json::json!(share);
            j["same_top_sem"] = serde_json::json!(se);
        }
        println!("{j}");
    } else {
        println!(
            "{:?}(P‖Q) of {} and {}: {rows} rows × {cols} columns, {} {:?}, in {unit}",
            req.divergence,
            p.label(),
            q.label(),
            p.dtype(),
            req.input
        );
        println!("  mean      {:.6e} ± {:.2e}", s.mean, s.sem);
        println!("  std       {:.6e}", s.std);
        println!("  min       {:.6e}  (row {})", s.min, s.min_row);
        for (pct, v) in s.percentiles.iter().rev() {
            if *pct < 50.0 {
                println!("  p{pct:<8} {v:.6e}");
            }
        }
        println!("  median    {:.6e}", s.median);
        for (pct, v) in s.percentiles.iter().rev() {
            if *pct > 50.0 {
                println!("  p{pct:<8} {v:.6e}");
            }
        }
        println!("  max       {:.6e}  (row {})", s.max, s.max_row);
        if let Some((share, se)) = top {
            println!("  same top  {share:.4} ± {se:.4}  (rows whose argmax agrees)");
        }
        if s.nan_rows > 0 {
            println!("  NaN rows  {}", s.nan_rows);
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
fn locate(e: kldiv::Error, p: &TensorFile, q: &TensorFile) -> Failure {
    let file = match &e {
        kldiv::Error::BadValue { side, .. }
        | kldiv::Error::NotNormalized { side, .. }
        | kldiv::Error::NoMass { side, .. } => Some(match side {
            kldiv::Side::P => p.label(),
            kldiv::Side::Q => q.label(),
        }),
        _ => None,
    };
    let mut f = Failure::from(e);
    if let Some(file) = file {
        f.message = format!("{file}: {}", f.message);
    }
    f
}
