//! `kldiv compare P Q`: per-row divergence between two tensors, streamed from memory-mapped
//! files a block of rows at a time, summarised with llama.cpp-style statistics.

use crate::output::{self, OutputFile};
use crate::{DeviceArg, DivergenceArg, Failure, InputArg};
use kldiv::io::tensor::{common_type, TensorFile};
use kldiv::scheduler::Scheduler;
use kldiv::{Dtype, Element, InputForm, NanPolicy, Normalization, Request, Unit};
use rayon::prelude::*;
use std::fmt::Write as _;

mod sides;
mod targets;
use crate::llama_report::{num, share_with_error};
use sides::{kld_sides, Side};
use targets::{add_targets, compat_block, read_targets};
/// Bytes of each input decoded or touched per block: bounds memory whatever the file size.
const BLOCK_BYTES: usize = 64 << 20;

#[derive(clap::Args)]
pub struct Args {
    /// P: FILE.npy, FILE.safetensors (one tensor), or FILE.safetensors:NAME. NAME is
    /// everything after the first ".safetensors:" and is matched exactly (it may contain
    /// ':'). The last axis is the distribution; all leading axes are rows.
    p: String,
    /// Q: same shape as P (may be another tensor of the same file). Element types may
    /// differ: both are read in the type that holds each exactly (f32 against bf16/f16 as
    /// f32, anything against f64 or integer counts as f64).
    q: String,
    /// What the values are (default: probs; logits when a side is a llama.cpp .kld base, whose
    /// records are log-probabilities: --input then describes the other side).
    #[arg(long, value_enum)]
    input: Option<InputArg>,
    /// What to compute per row.
    #[arg(long, value_enum, default_value = "kl")]
    divergence: DivergenceArg,
    /// Where to run (default: KLDIV_DEVICE, else auto).
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Print where the work ran and why (the scheduler's estimates) to stderr.
    #[arg(long)]
    explain: bool,
    /// Divide each probability row by its sum instead of rejecting rows that do not sum to 1
    /// (for counts and unnormalised weights).
    #[arg(long)]
    normalize: bool,
    /// Smoothing, opt-in: add EPS to every probability of P and Q, then divide each row by
    /// its sum (implies --normalize). Off by default, so q = 0 < p gives +inf.
    #[arg(long, value_name = "EPS")]
    pseudocount: Option<f64>,
    /// Report in bits instead of nats.
    #[arg(long)]
    bits: bool,
    /// A row with NaN gets NaN instead of stopping with an error.
    #[arg(long)]
    propagate_nan: bool,
    /// Write the per-row values here (1-D float64 .npy). Never an input file; written to a
    /// temporary file beside it and renamed into place when complete.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// The actual next token of each row (.npy of int32 or int64, one id per row; −100
    /// ignores that row, as torch does): adds perplexities, Δp and llama.cpp's report. A
    /// .kld side brings its own (record j of chunk c predicts token c·n_ctx + n_ctx/2 + j + 1).
    #[arg(long)]
    targets: Option<String>,
    /// With P a llama.cpp .kld base and Q logits: llama.cpp's own arithmetic (base values as
    /// quantised, terms with base log p ≤ −16 left out, f32), to reproduce its report
    /// number for number. The default is exact.
    #[arg(long)]
    llama_compat: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub(super) fn load(spec: &str) -> Result<TensorFile, Failure> {
    let t = TensorFile::open(spec)?;
    let (start, len) = t.mapped();
    crate::sigbus::watch(start, len, &t.label());
    Ok(t)
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

pub(super) struct Totals {
    values: Vec<f64>,
    same_top: usize,
    explain: Option<String>,
    /// Per row with a target: −ln p_P(t), −ln p_Q(t), p_Q(t) − p_P(t).
    nll_p: Vec<f64>,
    nll_q: Vec<f64>,
    dp: Vec<f64>,
}

/// One block of rows `[r0, r1)`, read from both files in element type `T`; `targets` are
/// the block's.
fn run_block<T: Element>(
    engine: &Scheduler,
    req: &Request,
    (p, q): (&Side, &Side),
    (r0, r1): (usize, usize),
    targets: Option<&[i64]>,
    totals: &mut Totals,
) -> kldiv::Result<()> {
    let cols = p.file.cols();
    let pb = p.rows_as::<T>(r0, r1);
    let qb = if req.reads_q() {
        q.rows_as::<T>(r0, r1)
    } else {
        pb.clone()
    };
    let run = engine.run(req, &pb, &qb, r1 - r0, cols)?;
    for w in &run.warnings {
        crate::warn(w);
    }
    if totals.explain.is_none() {
        totals.explain = Some(run.plan.to_string());
    }
    totals.values.extend_from_slice(&run.values);
    if req.reads_q() {
        if let Some(t) = targets {
            add_targets(req, &pb, &qb, cols, t, totals);
        }
        totals.same_top += pb
            .par_chunks(cols)
            .zip(qb.par_chunks(cols))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let input = a.input.unwrap_or(InputArg::Probs);
    let mut req = Request::new(a.divergence.into()).input(input.into());
    if a.normalize {
        req = req.normalization(Normalization::Normalize);
    }
    if a.bits {
        req = req.unit(Unit::Bits);
    }
    if a.propagate_nan {
        req = req.nan(NanPolicy::Propagate);
    }
    if let Some(eps) = a.pseudocount {
        req = req.pseudocount(eps);
    }
    // A request that cannot run fails before any file is read.
    req.resolved()?;
    let p = load(&a.p)?;
    let q = load(&a.q)?;
    let (ps, qs, kld) = kld_sides(&p, &q)?;
    if kld.is_some() {
        // Quantised log-probabilities are not normalised to the last digit: both sides are
        // read as logits (a row's softmax), which logits and log-probabilities both are.
        if a.input == Some(InputArg::Probs) {
            return Err(Failure {
                code: 2,
                message: "a .kld base holds log-probabilities: compare it with logits or \
                          log-probabilities (--input logits or --input logprobs)"
                    .into(),
            });
        }
        req = req.input(InputForm::Logits);
    }
    if req.reads_q() && (ps.rows(), p.cols()) != (qs.rows(), q.cols()) {
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
    let (rows, cols) = (ps.rows(), p.cols());
    if rows == 0 || cols == 0 {
        return Err(Failure {
            code: 2,
            message: format!(
                "empty input: {} is {:?} and {} is {:?} (need at least one row and one column)",
                p.label(),
                p.shape(),
                q.label(),
                q.shape()
            ),
        });
    }
    let dtype = if req.reads_q() {
        common_type(p.stored(), q.stored())
    } else {
        p.dtype()
    };
    let targets = read_targets(a.targets.as_deref(), &p, &q, kld, rows, cols)?;
    let compat = a.llama_compat;
    if compat
        && (p.kld_layout().is_none()
            || q.kld_layout().is_some()
            || req.divergence != kldiv::Divergence::Kl)
    {
        return Err(Failure {
            code: 2,
            message: "--llama-compat reproduces llama.cpp's KL of a .kld base (P) against \
                      logits (Q): give the .kld first, an array of logits second, and the \
                      default --divergence kl"
                .into(),
        });
    }
    // Before any work: a bad --out path fails now, not after the whole job.
    let out = match &a.out {
        Some(path) => Some(OutputFile::prepare(path, &[&p.path, &q.path])?),
        None => None,
    };
    let engine = crate::engine(a.device)?;
    let per_block = (BLOCK_BYTES / (cols * dtype.size_bytes()).max(1)).max(1);
    let mut totals = Totals {
        values: Vec::with_capacity(rows),
        same_top: 0,
        explain: None,
        nll_p: vec![],
        nll_q: vec![],
        dp: vec![],
    };
    let mut progress = crate::progress::bar(rows as u64, a.quiet);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per_block).min(rows);
        let block = (r0, r1);
        let t = &mut totals;
        let tg = targets.as_deref().map(|v| &v[r0..r1]);
        let sides = (&ps, &qs);
        let result = match dtype {
            _ if compat => {
                compat_block(&req, sides, block, tg, t);
                Ok(())
            }
            Dtype::F32 => run_block::<f32>(&engine, &req, sides, block, tg, t),
            Dtype::F64 => run_block::<f64>(&engine, &req, sides, block, tg, t),
            Dtype::F16 => run_block::<kldiv::f16>(&engine, &req, sides, block, tg, t),
            Dtype::BF16 => run_block::<kldiv::bf16>(&engine, &req, sides, block, tg, t),
        };
        if let Err(e) = result {
            progress.abandon();
            return Err(locate(
                kldiv::semantics::rows::relocate_row_by(e, r0),
                &req,
                &p,
                &q,
            ));
        }
        r0 = r1;
        progress.set_position(r0 as u64);
    }
    progress.finish();
    if a.explain {
        explain(&engine, totals.explain.take().unwrap_or_default());
    }
    let per_row = totals.values;
    if let Some(out) = out {
        out.commit(|w| kldiv::io::npy::write_f64_to(w, &[per_row.len()], &per_row))?;
    }
    let report = Report {
        req: &req,
        p: &p,
        q: &q,
        dtype,
        unit: if a.bits { "bits" } else { "nats" },
        same_top: totals.same_top,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    let mode = if compat { "llama-compat" } else { "exact" };
    let llama = targets.is_some().then(|| {
        crate::llama_report::stats(&crate::llama_report::TargetRows {
            nll_p: &totals.nll_p,
            nll_q: &totals.nll_q,
            dp: &totals.dp,
            kld: &per_row,
            same_top: totals.same_top,
        })
    });
    let text = match (a.json, &llama) {
        (true, llama) => {
            let mut j = report.json(&per_row);
            if let (Some(l), Some(obj)) = (llama, j.as_object_mut()) {
                if let serde_json::Value::Object(extra) = crate::llama_report::json(l) {
                    obj.extend(extra);
                }
                obj.insert("mode".into(), mode.into());
            }
            format!("{j}\n")
        }
        (false, None) => report.text(&per_row),
        (false, Some(l)) => format!(
            "{}\nllama.cpp's report ({mode} arithmetic):\n{}",
            report.text(&per_row),
            crate::llama_report::text(l)
        ),
    };
    output::print(&text)
}

fn explain(engine: &Scheduler, plan: String) {
    crate::warn_raw(&format!("kldiv: {:?} mode, {plan}", engine.mode()));
    #[cfg(feature = "gpu")]
    if let Ok(g) = engine.gpu() {
        let st = g.last_call();
        if st.chunks > 0 {
            let kernels = st.kernel_ns.map_or("not timed".into(), |ns| {
                format!("{:.3} ms", ns as f64 / 1e6)
            });
            crate::warn_raw(&format!(
                "kldiv: gpu {} (last block): {:.1} MB up, {:.1} KB back, {} dispatches in {} chunks, kernels {kernels}",
                g.adapter().name,
                st.bytes_uploaded as f64 / 1e6,
                st.bytes_read_back as f64 / 1e3,
                st.dispatches,
                st.chunks,
            ));
        }
    }
}

struct Report<'a> {
    req: &'a Request,
    p: &'a TensorFile,
    q: &'a TensorFile,
    dtype: Dtype,
    unit: &'static str,
    same_top: usize,
    elapsed_s: f64,
}

impl Report<'_> {
    /// Share of rows whose argmax agrees, with its standard error.
    fn same_top(&self, rows: usize) -> Option<(f64, f64)> {
        self.req
            .reads_q()
            .then(|| share_with_error(self.same_top, rows))
    }

    fn json(&self, per_row: &[f64]) -> serde_json::Value {
        let s = kldiv::stats::summarize(per_row);
        let pct: serde_json::Map<String, serde_json::Value> = s
            .percentiles
            .iter()
            .map(|(p, v)| (format!("p{p}"), num(*v)))
            .collect();
        let finite: Vec<f64> = per_row.iter().copied().filter(|v| v.is_finite()).collect();
        let f = kldiv::stats::summarize(&finite);
        let mut j = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "p": self.p.label(),
            "q": self.q.label(),
            "elapsed_s": self.elapsed_s,
            "divergence": divergence_name(self.req.divergence),
            "input": input_name(self.req.input),
            "unit": self.unit,
            "rows": per_row.len(),
            "cols": self.p.cols(),
            "dtype": self.dtype.name(),
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
            // Rows whose value is +inf (q = 0 < p), and the statistics of the others.
            "inf_rows": per_row.iter().filter(|v| **v == f64::INFINITY).count(),
            "finite": {
                "count": f.count,
                "mean": num(f.mean),
                "sem": num(f.sem),
                "min": num(f.min),
                "median": num(f.median),
                "max": num(f.max),
            },
        });
        if let Some((share, se)) = self.same_top(per_row.len()) {
            j["same_top"] = serde_json::json!({ "mean": share, "sem": num(se) });
        }
        j
    }

    fn text(&self, per_row: &[f64]) -> String {
        let s = kldiv::stats::summarize(per_row);
        let mut o = String::new();
        let dtypes = if self.req.reads_q() && self.p.stored() != self.q.stored() {
            format!(
                "{} and {}, read as {}",
                self.p.stored().name(),
                self.q.stored().name(),
                self.dtype
            )
        } else {
            self.p.stored().name().to_string()
        };
        let _ = writeln!(
            o,
            "{:?}(P‖Q) of {} and {}: {} rows × {} columns, {dtypes} {:?}, in {}",
            self.req.divergence,
            self.p.label(),
            self.q.label(),
            self.p.rows(),
            self.p.cols(),
            self.req.input,
            self.unit
        );
        let _ = writeln!(o, "  mean      {:.6e} ± {:.2e}", s.mean, s.sem);
        let _ = writeln!(o, "  std       {:.6e}", s.std);
        let _ = writeln!(o, "  min       {:.6e}  (row {})", s.min, s.min_row);
        for (pct, v) in s.percentiles.iter().rev() {
            if *pct < 50.0 {
                let _ = writeln!(o, "  p{pct:<8} {v:.6e}");
            }
        }
        let _ = writeln!(o, "  median    {:.6e}", s.median);
        for (pct, v) in s.percentiles.iter().rev() {
            if *pct > 50.0 {
                let _ = writeln!(o, "  p{pct:<8} {v:.6e}");
            }
        }
        let _ = writeln!(o, "  max       {:.6e}  (row {})", s.max, s.max_row);
        if let Some((share, se)) = self.same_top(per_row.len()) {
            let _ = writeln!(
                o,
                "  same top  {share:.4} ± {se:.4}  (rows whose argmax agrees)"
            );
        }
        if s.nan_rows > 0 {
            let _ = writeln!(o, "  NaN rows  {}", s.nan_rows);
        }
        let inf = per_row.iter().filter(|v| **v == f64::INFINITY).count();
        if inf > 0 {
            let finite: Vec<f64> = per_row.iter().copied().filter(|v| v.is_finite()).collect();
            let f = kldiv::stats::summarize(&finite);
            let _ = writeln!(
                o,
                "  inf rows  {inf} (q = 0 where p > 0); the other {} rows: mean {:.6e} ± {:.2e}, max {:.6e}",
                f.count, f.mean, f.sem, f.max
            );
        }
        o
    }
}

/// The command line's spelling of a divergence (`--divergence`).
fn divergence_name(d: kldiv::Divergence) -> &'static str {
    use kldiv::Divergence as D;
    match d {
        D::Kl => "kl",
        D::ReverseKl => "reverse-kl",
        D::SymmetricKl => "symmetric-kl",
        D::JensenShannon => "js",
        D::CrossEntropy => "cross-entropy",
        D::Entropy => "entropy",
    }
}

/// The command line's spelling of an input form (`--input`).
fn input_name(i: InputForm) -> &'static str {
    match i {
        InputForm::Probabilities => "probs",
        InputForm::LogProbabilities => "logprobs",
        InputForm::Logits => "logits",
    }
}

/// Name the file a value error came from, and say what to try when the data looks like
/// another input form.
fn locate(e: kldiv::Error, req: &Request, p: &TensorFile, q: &TensorFile) -> Failure {
    use kldiv::{BadKind, Error, Side};
    let (side, row) = match &e {
        Error::BadValue { side, row, .. }
        | Error::NotNormalized { side, row, .. }
        | Error::NoMass { side, row } => (*side, *row),
        _ => return Failure::from(e),
    };
    let file = if side == Side::P { p } else { q };
    let logits_hint = "if these are logits or log-probabilities, pass --input logits or \
                       --input logprobs";
    let hint = match (&e, req.input) {
        (
            Error::BadValue {
                kind: BadKind::Negative,
                ..
            },
            InputForm::Probabilities,
        ) => Some(logits_hint.to_string()),
        (Error::NotNormalized { .. }, InputForm::Probabilities) => {
            let values = file.rows_as::<f64>(row, row + 1);
            let counts =
                file.stored().is_integer() || values.iter().all(|v| v.fract() == 0.0 && *v >= 0.0);
            Some(if counts {
                "these look like counts: pass --normalize to divide each row by its sum".into()
            } else {
                format!("{logits_hint}; if they are unnormalised weights, pass --normalize")
            })
        }
        (Error::NotNormalized { .. }, InputForm::LogProbabilities) => Some(
            "if these are logits (log-probabilities up to a constant), pass --input logits".into(),
        ),
        _ => None,
    };
    let mut message = format!("{}: {e}", file.label());
    if let Some(h) = hint {
        message.push_str(" (");
        message.push_str(&h);
        message.push(')');
    }
    Failure {
        code: Failure::from(e).code,
        message,
    }
}
