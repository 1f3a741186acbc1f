//! `compare_files`: `kldiv compare P Q` on files (.npy, .safetensors[:NAME], llama.cpp .kld)
//! from Python, block by block through the library's block runner.

use crate::{bad, divergence_named, engine, options, targets_vec, to_py, PySummary, BLOCK_ELEMS};
use kldiv::io::sides::{common_vocab, kld_sides, kld_targets};
use kldiv::io::tensor::TensorFile;
use kldiv::semantics::rows::relocate_row_by;
use kldiv::summary::Meta;
use kldiv::Divergence;
use pyo3::prelude::*;

/// `kldiv compare P Q` on files (.npy, .safetensors[:NAME], llama.cpp .kld) without the
/// command line.
#[pyfunction]
#[pyo3(signature = (p, q, divergence, input, unit, normalize, pseudocount, propagate_nan, device, targets, first_row, agreement, temperature_p, temperature_q, vocab_min))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn _compare_files(
    py: Python<'_>,
    p: &str,
    q: &str,
    divergence: &str,
    input: Option<&str>,
    unit: &str,
    normalize: bool,
    pseudocount: Option<f64>,
    propagate_nan: bool,
    device: &str,
    targets: Option<&Bound<'_, PyAny>>,
    first_row: u64,
    agreement: bool,
    temperature_p: Option<f64>,
    temperature_q: Option<f64>,
    vocab_min: bool,
) -> PyResult<PySummary> {
    let open = |s: &str| TensorFile::open(s).map_err(|e| to_py(py, e));
    let (pf, qf) = (open(p)?, open(q)?);
    let (ps, qs, kld) = kld_sides(&pf, &qf).map_err(|e| to_py(py, e))?;
    // A .kld base holds log-probabilities: both sides are read as logits (a row's softmax).
    let input = match (kld, input) {
        (Some(_), None | Some("logits") | Some("logprobs")) => "logits",
        (Some(_), Some(other)) => {
            return Err(bad(format!(
                "a .kld base holds log-probabilities: compare it with logits or \
                 log-probabilities (input=\"logits\" or \"logprobs\"), not {other:?}"
            )))
        }
        (None, i) => i.unwrap_or("probs"),
    };
    // Several divergences, comma-separated: the first drives the report, the others follow.
    let divs = divergence
        .split(',')
        .map(|n| divergence_named(n.trim()))
        .collect::<PyResult<Vec<_>>>()?;
    Divergence::check_list(&divs).map_err(|e| to_py(py, e))?;
    let o = options(
        divs[0].name(),
        input,
        unit,
        normalize,
        pseudocount,
        propagate_nan,
        device,
        None,
    )?;
    let also = divs[1..].to_vec();
    let (ps, qs) = common_vocab((ps, qs), o.req.reads_q(), vocab_min, "vocab_min=True")
        .map_err(|e| to_py(py, e))?;
    let (rows, cols) = (ps.rows(), ps.cols());
    if o.req.reads_q() && (qs.rows(), qs.cols()) != (rows, cols) {
        return Err(bad(format!(
            "shape mismatch: {} is {:?}, {} is {:?}",
            pf.label(),
            pf.shape(),
            qf.label(),
            qf.shape()
        )));
    }
    if (temperature_p.is_some() || temperature_q.is_some())
        && o.req.input != kldiv::InputForm::Logits
    {
        return Err(bad(
            "temperature_p/temperature_q divide logits: give input=\"logits\"",
        ));
    }
    let ps = match temperature_p {
        Some(t) => ps.with_temperature(t).map_err(|e| to_py(py, e))?,
        None => ps,
    };
    let qs = match temperature_q {
        Some(t) => qs.with_temperature(t).map_err(|e| to_py(py, e))?,
        None => qs,
    };
    let dtype = kldiv::io::sides::read_type(&o.req, (&ps, &qs));
    let t = match (targets_vec(py, targets, (rows, cols))?, kld) {
        (Some(t), _) => Some(t),
        // A .kld side's own tokens score Q against P: entropy (P alone) goes without them.
        (None, Some(l)) if o.req.reads_q() => Some(kld_targets(&pf, &qf, l, rows)),
        (None, _) => None,
    };
    kldiv::Summary::check_extras(&o.req, t.is_some(), agreement).map_err(|e| to_py(py, e))?;
    let mut meta = Meta::of(&o.req, cols, dtype).with_temperatures(temperature_p, temperature_q);
    (meta.p, meta.q) = (pf.label(), qf.label());
    (meta.p_dtype, meta.q_dtype) = (pf.stored().name().into(), qf.stored().name().into());
    let mut s = kldiv::Summary::new(meta, true, first_row).with_also(&also, true);
    if t.is_some() {
        s = s.with_targets(true);
    }
    if agreement {
        s = s.with_agreement();
    }
    let engine = engine(&o.device)?;
    let started = std::time::Instant::now();
    let per_block = (BLOCK_ELEMS / cols.max(1)).max(1);
    let mut r0 = 0;
    while r0 < rows {
        let r1 = (r0 + per_block).min(rows);
        let tb = t.as_deref().map(|t| &t[r0..r1]);
        let label = |e: kldiv::Error| {
            let e = relocate_row_by(e, r0);
            let file = match &e {
                kldiv::Error::BadValue { side, .. }
                | kldiv::Error::NotNormalized { side, .. }
                | kldiv::Error::NoMass { side, .. } => {
                    if *side == kldiv::Side::P {
                        pf.label()
                    } else {
                        qf.label()
                    }
                }
                _ => return to_py(py, e),
            };
            let err = to_py(py, e);
            let msg = format!("{file}: {}", err.value(py));
            let _ = err.value(py).setattr("args", (msg,));
            err
        };
        // As the command line does: the previous block unmapped and the next one read ahead
        // by a helper thread while this one computes.
        py.detach(|| {
            kldiv::io::sides::paged((&ps, &qs), (r0, r1), per_block, || {
                kldiv::io::sides::run_block(&engine, &o.req, (&ps, &qs), (r0, r1), tb, &mut s)
            })
        })
        .map_err(label)?;
        py.check_signals()?;
        r0 = r1;
    }
    s.elapsed_s = started.elapsed().as_secs_f64();
    Ok(PySummary {
        inner: s,
        opts: Some(o),
    })
}
