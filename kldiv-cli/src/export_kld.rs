//! `kldiv export-kld`: a llama.cpp KL-divergence base (`.kld`) from logits computed by any
//! engine (torch, vLLM), so `llama-perplexity --kl-divergence-base` can compare a quantised
//! model against them. Byte-exact with llama.cpp's writer (see `kldiv::io::kld`).

use crate::output::OutputFile;
use crate::Failure;
use kldiv::io::kld::{self, KldLayout};
use kldiv::io::tensor::{Stored, TensorFile};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Logits with one row per token position of every chunk: n_chunk·n_ctx rows (e.g. an
    /// [n_chunk, n_ctx, n_vocab] array), f32, f16, bf16 or f64 (narrowed to f32).
    logits: String,
    /// The token ids, n_chunk·n_ctx of them (.npy of int32 or int64, any shape).
    #[arg(long)]
    tokens: String,
    /// Tokens per chunk (llama-perplexity's -c): positions n_ctx/2 … n_ctx − 2 of each chunk
    /// are stored, as llama.cpp does.
    #[arg(long)]
    n_ctx: usize,
    /// The .kld file to write (never one of the inputs; written whole or not at all).
    #[arg(short, long)]
    out: PathBuf,
}

fn fail(message: String) -> Failure {
    Failure { code: 2, message }
}

pub fn run(a: Args) -> Result<(), Failure> {
    let logits = TensorFile::open(&a.logits)?;
    let tokens = TensorFile::open(&a.tokens)?;
    if !matches!(
        logits.stored(),
        Stored::F32 | Stored::F16 | Stored::BF16 | Stored::F64
    ) {
        return Err(fail(format!(
            "{}: logits must be f32, f16, bf16 or f64, not {}",
            logits.label(),
            logits.stored().name()
        )));
    }
    if !matches!(tokens.stored(), Stored::I32 | Stored::I64) {
        return Err(fail(format!(
            "{}: token ids must be int32 or int64, not {}",
            tokens.label(),
            tokens.stored().name()
        )));
    }
    let (rows, n_vocab) = (logits.rows(), logits.cols());
    if a.n_ctx < 3 || rows % a.n_ctx != 0 {
        return Err(fail(format!(
            "{} has {rows} rows: --n-ctx {} must be at least 3 and divide them (one row per \
             token position of every chunk)",
            logits.label(),
            a.n_ctx
        )));
    }
    let l = KldLayout {
        n_ctx: a.n_ctx,
        n_vocab,
        n_chunk: rows / a.n_ctx,
    };
    if [l.n_ctx, l.n_vocab, l.n_chunk]
        .iter()
        .any(|&v| v > i32::MAX as usize)
    {
        return Err(fail(
            "n_ctx, n_vocab and n_chunk must fit in an int32".into(),
        ));
    }
    let n_tokens = tokens.rows() * tokens.cols();
    if n_tokens != rows {
        return Err(fail(format!(
            "{} holds {n_tokens} token ids, {} has {rows} positions",
            tokens.label(),
            logits.label()
        )));
    }
    let ids = tokens.rows_as::<f64>(0, tokens.rows());
    let mut ids32 = Vec::with_capacity(n_tokens);
    for (i, &t) in ids.iter().enumerate() {
        if !(0.0..n_vocab as f64).contains(&t) {
            return Err(fail(format!(
                "{}: token {i} is {t}, outside the vocabulary [0, {n_vocab})",
                tokens.label()
            )));
        }
        ids32.push(t as i32);
    }
    let out = OutputFile::prepare(&a.out, &[&logits.path, &tokens.path])?;
    // A bad logit aborts the write (nothing is left behind) and is reported as bad input.
    let mut bad: Option<Failure> = None;
    let written = out.commit(|w| {
        w.write_all(&kld::encode_head(&l, &ids32))?;
        let mut rec = Vec::with_capacity(l.record_bytes() as usize);
        for row in 0..l.scored_rows() {
            let at = l.position_of(row);
            let v: Vec<f32> = if logits.stored() == Stored::F64 {
                logits
                    .rows_as::<f64>(at, at + 1)
                    .iter()
                    .map(|&x| x as f32)
                    .collect()
            } else {
                logits.rows_as::<f32>(at, at + 1).into_owned()
            };
            if let Some(col) = v.iter().position(|x| x.is_nan() || *x == f32::INFINITY) {
                bad = Some(fail(format!(
                    "{}: row {at} column {col} is {} (logits must be finite or -inf)",
                    logits.label(),
                    v[col]
                )));
                return Err(std::io::Error::other("bad logits"));
            }
            rec.clear();
            kld::encode_row(&v, &mut rec);
            w.write_all(&rec)?;
        }
        Ok(())
    });
    match (bad, written) {
        (Some(f), _) => Err(f),
        (None, r) => r,
    }
}
