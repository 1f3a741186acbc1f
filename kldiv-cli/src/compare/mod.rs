//! `kldiv compare P Q`: per-row divergence between two tensors, streamed from memory-mapped
//! files a block of rows at a time, summarised with llama.cpp-style statistics.

use crate::output::{self, OutputFile};
use crate::{DeviceArg, DivergenceArg, Failure, InputArg};
use kldiv::io::tensor::TensorFile;
use kldiv::scheduler::Scheduler;
use kldiv::{InputForm, NanPolicy, Normalization, Request, Unit};

mod targets;
use kldiv::io::sides::{kld_sides, paged, Side};
use kldiv::summary::{report, Meta, Summary};
use targets::{compat_block, read_targets};
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
    /// What to compute per row. Several, comma-separated (kl,reverse-kl,js), are computed
    /// over the same read of both files: the first drives the report and the others follow
    /// it (their mean ± s.e., median, p99 and max; all of it in --json under "also"), and
    /// --out then gets a last axis with one value per divergence, in the order given.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "kl")]
    divergence: Vec<DivergenceArg>,
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
    /// Divide P's logits by T before their softmax (sampling temperature; --input logits).
    #[arg(long, value_name = "T")]
    temperature_p: Option<f64>,
    /// Divide Q's logits by T before their softmax.
    #[arg(long, value_name = "T")]
    temperature_q: Option<f64>,
    /// Also report how P and Q agree: top-K agreement (K = 1, 5, 10), Σ min(p, q) (1 − total
    /// variation: speculative decoding's acceptance rate), and mean KLD by P's confidence
    /// (max p in [0, .25), [.25, .5), [.5, .75), [.75, .95), [.95, 1]). One more read of
    /// each row where the job runs: on the CPU right after its divergence pass (rows still
    /// in cache; f64 for f64 inputs and irregular rows), on the GPU a second kernel for
    /// logits and log-probabilities. Σ min within 2e-6 (CPU) or 1e-5 (GPU) of f64 for f32
    /// kernels.
    #[arg(long)]
    agreement: bool,
    /// Also write the run's mergeable statistics here (JSON), for `kldiv merge`.
    #[arg(long, value_name = "FILE")]
    summary_out: Option<std::path::PathBuf>,
    /// The global index of this input's first row (a shard's place in the whole run), so
    /// that the rows named in reports and merged summaries are global.
    #[arg(long, default_value_t = 0, value_name = "N")]
    row_offset: u64,
    /// Vocabularies of different sizes are compared over their common prefix (the first
    /// min(V_P, V_Q) columns of every row, each row renormalised by its softmax; probabilities
    /// need --normalize), as ExLlamaV3 does. Without it, different sizes are an error.
    #[arg(long)]
    vocab_min: bool,
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

pub(super) struct Totals {
    summary: Summary,
    explain: Option<String>,
}

/// One block of rows `[r0, r1)` through the scheduler into the summary.
fn run_block(
    engine: &Scheduler,
    req: &Request,
    sides: (&Side, &Side),
    rows: (usize, usize),
    targets: Option<&[i64]>,
    totals: &mut Totals,
) -> kldiv::Result<()> {
    let run = kldiv::io::sides::run_block(engine, req, sides, rows, targets, &mut totals.summary)?;
    for w in &run.warnings {
        crate::warn(w);
    }
    if totals.explain.is_none() {
        let agreement = match (totals.summary.agreement.is_some(), run.agreement.is_empty()) {
            (false, _) => "",
            (true, false) => "; agreement statistics: a second pass on the GPU",
            (true, true) => "; agreement statistics: one more read on the host",
        };
        totals.explain = Some(format!("{}{agreement}", run.plan));
    }
    Ok(())
}

pub fn run(a: Args) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let input = a.input.unwrap_or(InputArg::Probs);
    let divs: Vec<kldiv::Divergence> = a.divergence.iter().map(|&d| d.into()).collect();
    kldiv::Divergence::check_list(&divs)?;
    let (main, also) = (divs[0], divs[1..].to_vec());
    let mut req = Request::new(main).input(input.into());
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
    if a.vocab_min && a.llama_compat && p.cols() != q.cols() {
        return Err(Failure {
            code: 2,
            message: "--llama-compat needs the .kld base's vocabulary on both sides \
                      (llama.cpp refuses others): not with --vocab-min"
                .into(),
        });
    }
    let (ps, qs) =
        kldiv::io::sides::common_vocab((ps, qs), req.reads_q(), a.vocab_min, "--vocab-min")?;
    if req.reads_q() && (ps.rows(), ps.cols()) != (qs.rows(), qs.cols()) {
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
    let (rows, cols) = (ps.rows(), ps.cols());
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
    let (tp, tq) = (a.temperature_p, a.temperature_q);
    if (tp.is_some() || tq.is_some()) && req.input != InputForm::Logits {
        return Err(Failure {
            code: 2,
            message: "--temperature-p/--temperature-q divide logits: give --input logits".into(),
        });
    }
    let ps = match tp {
        Some(t) => ps.with_temperature(t)?,
        None => ps,
    };
    let qs = match tq {
        Some(t) => qs.with_temperature(t)?,
        None => qs,
    };
    let dtype = kldiv::io::sides::read_type(&req, (&ps, &qs));
    // A .kld side's own tokens score Q against P: entropy (P alone) goes without them.
    let kld_targets = kld.filter(|_| req.reads_q());
    let targets = read_targets(a.targets.as_deref(), &p, &q, kld_targets, rows, cols)?;
    Summary::check_extras(&req, targets.is_some(), a.agreement)?;
    let compat = a.llama_compat;
    if compat
        && (p.kld_layout().is_none()
            || q.kld_layout().is_some()
            || req.divergence != kldiv::Divergence::Kl
            || !also.is_empty())
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
    let summary_out = match &a.summary_out {
        Some(path) => Some(OutputFile::prepare(path, &[&p.path, &q.path])?),
        None => None,
    };
    let engine = crate::engine(a.device)?;
    let per_block = (BLOCK_BYTES / (cols * dtype.size_bytes()).max(1)).max(1);
    let mut meta = Meta::of(&req, cols, dtype).with_temperatures(tp, tq);
    (meta.p, meta.q) = (p.label(), q.label());
    (meta.p_dtype, meta.q_dtype) = (p.stored().name().into(), q.stored().name().into());
    meta.mode = if compat { "llama-compat" } else { "exact" }.into();
    // Rows are numbered by P's leading axes, unless a .kld side picks scored positions.
    let row_shape: Vec<usize> = if kld.is_none() && !p.row_shape().is_empty() {
        p.row_shape().to_vec()
    } else {
        vec![rows]
    };
    meta.row_shape = row_shape.iter().map(|&d| d as u64).collect();
    let mut summary = Summary::new(meta, true, a.row_offset).with_also(&also, true);
    if targets.is_some() {
        summary = summary.with_targets(true);
    }
    if a.agreement {
        if compat {
            return Err(Failure {
                code: 2,
                message: "--agreement compares two distributions in exact arithmetic: not with \
                          --llama-compat"
                    .into(),
            });
        }
        summary = summary.with_agreement();
    }
    let mut totals = Totals {
        summary,
        explain: None,
    };
    let mut progress = crate::progress::bar(rows as u64, a.quiet);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per_block).min(rows);
        let block = (r0, r1);
        let t = &mut totals;
        let tg = targets.as_deref().map(|v| &v[r0..r1]);
        let sides = (&ps, &qs);
        let result = paged(sides, block, per_block, || {
            if compat {
                compat_block(&req, sides, block, tg, t);
                Ok(())
            } else {
                run_block(&engine, &req, sides, block, tg, t)
            }
        });
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
        let divs: Vec<kldiv::Divergence> = std::iter::once(req.divergence)
            .chain(totals.summary.also_divergences())
            .collect();
        if divs.len() > 1 {
            let names: Vec<&str> = divs.iter().map(|d| d.name()).collect();
            crate::warn_raw(&format!(
                "kldiv: {} arithmetic passes over each block for {} (the KL family, and \
                 Jensen–Shannon's first pass, share one)",
                kldiv::semantics::plan::SharedPass::reads(&req, &divs),
                names.join(", ")
            ));
        }
    }
    let mut summary = totals.summary;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    if let Some(out) = out {
        let per_row = summary.values.exact().unwrap_or_default();
        // The per-row values keep the input's leading shape ([batch, seq] → [batch, seq]);
        // with several divergences, one more axis holds them in the order given.
        if summary.also.is_empty() {
            out.commit(|w| kldiv::io::npy::write_f64_to(w, &row_shape, per_row))?;
        } else {
            let columns: Vec<&[f64]> = std::iter::once(per_row)
                .chain(
                    summary
                        .also
                        .iter()
                        .map(|(_, v)| v.exact().unwrap_or_default()),
                )
                .collect();
            let table: Vec<f64> = (0..per_row.len())
                .flat_map(|r| columns.iter().map(move |c| c[r]))
                .collect();
            let mut shape = row_shape.clone();
            shape.push(columns.len());
            out.commit(|w| kldiv::io::npy::write_f64_to(w, &shape, &table))?;
        }
    }
    if let Some(f) = summary_out {
        f.commit(|w| w.write_all(summary.to_json().as_bytes()))?;
    }
    output::print(&if a.json {
        format!("{}\n", report::json(&summary))
    } else {
        report::text(&summary)
    })
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
