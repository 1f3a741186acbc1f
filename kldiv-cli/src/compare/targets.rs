//! Targets (the actual next tokens): where they come from, each row's NLL under P and Q and
//! Δp, and llama.cpp's own arithmetic for `--llama-compat`.

use super::sides::Side;
use super::{load, Totals};
use crate::Failure;
use kldiv::io::kld::KldLayout;
use kldiv::io::tensor::{Stored, TensorFile};
use kldiv::{Element, InputForm, Request, Unit};
use rayon::prelude::*;

/// The target of every row: from `--targets`, else from a `.kld` side's tokens.
pub(super) fn read_targets(
    spec: Option<&str>,
    p: &TensorFile,
    q: &TensorFile,
    kld: Option<KldLayout>,
    rows: usize,
    cols: usize,
) -> Result<Option<Vec<i64>>, Failure> {
    let bad = |message: String| Failure { code: 2, message };
    let ids: Vec<i64> = match (spec, kld) {
        (Some(spec), _) => {
            let t = load(spec)?;
            if !matches!(t.stored(), Stored::I32 | Stored::I64) {
                return Err(bad(format!(
                    "{}: targets must be int32 or int64, not {}",
                    t.label(),
                    t.stored().name()
                )));
            }
            if t.rows() * t.cols() != rows {
                return Err(bad(format!(
                    "{} holds {} targets for {rows} rows",
                    t.label(),
                    t.rows() * t.cols()
                )));
            }
            t.rows_as::<f64>(0, t.rows())
                .iter()
                .map(|&x| x as i64)
                .collect()
        }
        (None, Some(l)) => {
            let f = if p.kld_layout().is_some() { p } else { q };
            (0..rows)
                .map(|r| f.kld_token(l.target_of(r)).unwrap_or(-1) as i64)
                .collect()
        }
        (None, None) => return Ok(None),
    };
    let what = spec.unwrap_or("the .kld tokens");
    for (r, &t) in ids.iter().enumerate() {
        if t != IGNORE && !(0..cols as i64).contains(&t) {
            return Err(bad(format!(
                "{what}: target of row {r} is {t}, outside [0, {cols}) (−100 ignores a row)"
            )));
        }
    }
    Ok(Some(ids))
}

/// A target that marks a row to leave out of the target statistics (torch's ignore_index).
const IGNORE: i64 = -100;

/// ln p(t) of one row in f64: for logits and log-probabilities through the row's
/// log-sum-exp, for probabilities as ln(p_t / Σp).
fn ln_prob_of<T: Element>(input: InputForm, row: &[T], t: usize) -> f64 {
    match input {
        InputForm::Probabilities => {
            let s: f64 = row.iter().map(|x| x.to_f64()).sum();
            (row[t].to_f64() / s).ln()
        }
        _ => {
            let m = row
                .iter()
                .map(|x| x.to_f64())
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|x| (x.to_f64() - m).exp()).sum();
            row[t].to_f64() - m - s.ln()
        }
    }
}

/// A block scored with llama.cpp's arithmetic (`--llama-compat`).
pub(super) fn compat_block(
    req: &Request,
    (p, q): (&Side, &Side),
    (r0, r1): (usize, usize),
    targets: Option<&[i64]>,
    totals: &mut Totals,
) {
    // llama.cpp works on f32 base values and logits: read as such, without a detour.
    let cols = p.file.cols();
    let (pb, qb) = (p.rows_as::<f32>(r0, r1), q.rows_as::<f32>(r0, r1));
    let unit = if req.unit == Unit::Bits {
        std::f64::consts::LN_2
    } else {
        1.0
    };
    let rows: Vec<crate::llama_compat::CompatRow> = pb
        .par_chunks(cols)
        .zip(qb.par_chunks(cols))
        .enumerate()
        .map(|(i, (base, logits))| {
            let t = targets
                .map(|t| t[i])
                .filter(|&t| t != IGNORE)
                .map(|t| t as usize);
            crate::llama_compat::row(base, logits, t)
        })
        .collect();
    for r in rows {
        totals.values.push(r.kld / unit);
        totals.same_top += r.same_top as usize;
        if let Some((nll_q, nll_base)) = r.nll {
            totals.nll_q.push(nll_q as f64);
            totals.nll_p.push(nll_base as f64);
            totals.dp.push(((-nll_q).exp() - (-nll_base).exp()) as f64);
        }
    }
    if totals.explain.is_none() {
        totals.explain = Some("llama.cpp-compatible arithmetic on the CPU (--llama-compat)".into());
    }
}

/// NLLs and Δp of the rows of a block that have a target.
pub(super) fn add_targets<T: Element>(
    req: &Request,
    pb: &[T],
    qb: &[T],
    cols: usize,
    targets: &[i64],
    totals: &mut Totals,
) {
    let per_row: Vec<Option<(f64, f64)>> = pb
        .par_chunks(cols)
        .zip(qb.par_chunks(cols))
        .zip(targets.par_iter())
        .map(|((a, b), &t)| {
            (t != IGNORE).then(|| {
                let t = t as usize;
                (ln_prob_of(req.input, a, t), ln_prob_of(req.input, b, t))
            })
        })
        .collect();
    for (lp, lq) in per_row.into_iter().flatten() {
        totals.nll_p.push(-lp);
        totals.nll_q.push(-lq);
        totals.dp.push(lq.exp() - lp.exp());
    }
}
