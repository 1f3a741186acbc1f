//! Targets (the actual next tokens): where they come from, each row's NLL under P and Q and
//! Δp, and llama.cpp's own arithmetic for `--llama-compat`.

use super::{load, Totals};
use crate::Failure;
use kldiv::io::kld::KldLayout;
use kldiv::io::sides::{kld_targets, Side};
use kldiv::io::tensor::{Stored, TensorFile};
use kldiv::summary::{check_target_ids, RowTarget, IGNORE};
use kldiv::{Request, Unit};

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
        (None, Some(l)) => kld_targets(p, q, l, rows),
        (None, None) => return Ok(None),
    };
    let what = spec.unwrap_or("the .kld tokens");
    check_target_ids(&ids, cols).map_err(|e| bad(format!("{what}: {e}")))?;
    Ok(Some(ids))
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
    let cols = p.cols();
    let (pb, qb) = (p.rows_as::<f32>(r0, r1), q.rows_as::<f32>(r0, r1));
    let unit = if req.unit == Unit::Bits {
        std::f64::consts::LN_2
    } else {
        1.0
    };
    // kldiv's own threads: rayon's global pool panics where it cannot start.
    let rows: Vec<crate::llama_compat::CompatRow> = kldiv::cpu::par_map(r1 - r0, |i| {
        let (base, logits) = (&pb[i * cols..(i + 1) * cols], &qb[i * cols..(i + 1) * cols]);
        let t = targets
            .map(|t| t[i])
            .filter(|&t| t != IGNORE)
            .map(|t| t as usize);
        crate::llama_compat::row(base, logits, t)
    });
    for r in rows {
        let target = r.nll.map(|(nll_q, nll_base)| RowTarget {
            nll_p: nll_base as f64,
            nll_q: nll_q as f64,
            dp: ((-nll_q).exp() - (-nll_base).exp()) as f64,
        });
        let scored = totals.summary.push_row(r.kld / unit, r.same_top, target);
        if let (Some((nll_q, nll_base)), true) = (r.nll, scored) {
            totals.summary.push_llama_nll(nll_q, nll_base);
        }
    }
    if totals.explain.is_none() {
        totals.explain = Some("llama.cpp-compatible arithmetic on the CPU (--llama-compat)".into());
    }
}
