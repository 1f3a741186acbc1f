//! The `kldiv` Python module (`kldiv._kldiv`; `kldiv/__init__.py` is the public face): numpy
//! arrays in, the library's engines and summaries underneath. Arrays are read in place when
//! row-contiguous (copied once otherwise); the GIL is released while rows are computed, a
//! block at a time, and Ctrl-C is honoured between blocks.

use kldiv::scheduler::{DeviceMode, Scheduler};
use kldiv::semantics::rows::relocate_row_by;
use kldiv::summary::{report, Meta};
use kldiv::{
    bf16, f16, Divergence, Dtype, Element, InputForm, NanPolicy, Normalization, Request, Unit,
};
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods, ToPyArray};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

mod files;

create_exception!(
    kldiv,
    Error,
    PyValueError,
    "Bad input: the message names what and where; `.side` ('P' or 'Q'), `.row` and `.col` \
     (0-based) are set when the error is about one value (else None)."
);

/// Elements of each side per block: bounds the time between Ctrl-C checks.
const BLOCK_ELEMS: usize = 16 << 20;

/// A library error as a Python exception: bad input → `kldiv.Error`, else RuntimeError.
fn to_py(py: Python<'_>, e: kldiv::Error) -> PyErr {
    if !e.is_input_error() {
        return PyRuntimeError::new_err(e.to_string());
    }
    let (side, row, col) = match &e {
        kldiv::Error::BadValue { side, row, col, .. } => (Some(*side), Some(*row), Some(*col)),
        kldiv::Error::NotNormalized { side, row, .. } | kldiv::Error::NoMass { side, row } => {
            (Some(*side), Some(*row), None)
        }
        kldiv::Error::BadTarget { row, .. } => (None, Some(*row), None),
        _ => (None, None, None),
    };
    let err = Error::new_err(e.to_string());
    let v = err.value(py);
    let side = side.map(|s| if s == kldiv::Side::P { "P" } else { "Q" });
    let _ = v.setattr("side", side);
    let _ = v.setattr("row", row);
    let _ = v.setattr("col", col);
    err
}

fn bad(msg: impl Into<String>) -> PyErr {
    Error::new_err(msg.into())
}

/// One scheduler per device mode, shared by every call and thread (the GPU opens once).
fn engine(device: &str) -> PyResult<Arc<Scheduler>> {
    static ENGINES: OnceLock<Mutex<HashMap<String, Arc<Scheduler>>>> = OnceLock::new();
    let mode: DeviceMode = device.parse().map_err(|_| {
        bad(format!(
            "device must be auto, cpu, gpu or split, not {device:?}"
        ))
    })?;
    let mut map = ENGINES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| PyRuntimeError::new_err("engine cache poisoned"))?;
    Ok(map
        .entry(device.to_string())
        .or_insert_with(|| {
            let s = Scheduler::with_mode(mode);
            if matches!(mode, DeviceMode::Auto | DeviceMode::Split) {
                match kldiv::scheduler::calibration::default_cache_path() {
                    Some(path) => drop(s.calibrate_cached(&path)),
                    None => drop(s.calibrate()),
                }
            }
            Arc::new(s)
        })
        .clone())
}

/// The request the keyword arguments describe.
struct Options {
    req: Request,
    device: String,
}

/// The divergence spelled `name` as the command line spells it.
fn divergence_named(name: &str) -> PyResult<Divergence> {
    Divergence::from_name(name).ok_or_else(|| {
        let all: Vec<&str> = Divergence::ALL.iter().map(|d| d.name()).collect();
        bad(format!(
            "divergence must be one of {}, not {name:?}",
            all.join(", ")
        ))
    })
}

/// The request the keyword arguments spell (every entry point takes the same ones).
#[allow(clippy::too_many_arguments)]
fn options(
    divergence: &str,
    input: &str,
    unit: &str,
    normalize: bool,
    pseudocount: Option<f64>,
    propagate_nan: bool,
    device: &str,
    stored_as: Option<(String, String)>,
) -> PyResult<Options> {
    let names = |all: Vec<&str>| all.join(", ");
    let div = divergence_named(divergence)?;
    let form = InputForm::from_name(input).ok_or_else(|| {
        bad(format!(
            "input must be one of {}, not {input:?}",
            names(InputForm::ALL.iter().map(|d| d.name()).collect())
        ))
    })?;
    let unit = Unit::from_name(unit)
        .ok_or_else(|| bad(format!("unit must be nats or bits, not {unit:?}")))?;
    let mut req = Request::new(div).input(form).unit(unit);
    if normalize {
        req = req.normalization(Normalization::Normalize);
    }
    if propagate_nan {
        req = req.nan(NanPolicy::Propagate);
    }
    if let Some(eps) = pseudocount {
        req = req.pseudocount(eps);
    }
    // Arrays cast to one type (kl() does): rows are checked as the types they were stored in.
    if let Some((p, q)) = stored_as {
        let dtype = |n: &str| {
            Dtype::from_name(n)
                .ok_or_else(|| bad(format!("stored_as names f16, bf16, f32 or f64, not {n:?}")))
        };
        req = req.for_stored(dtype(&p)?, dtype(&q)?);
    }
    Python::attach(|py| req.resolved().map_err(|e| to_py(py, e)))?;
    Ok(Options {
        req,
        device: device.to_string(),
    })
}

/// A numpy array of one of the element types the engines read.
enum Arr<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    F16(PyReadonlyArrayDyn<'py, f16>),
    BF16(PyReadonlyArrayDyn<'py, bf16>),
}

impl<'py> Arr<'py> {
    fn of(x: &Bound<'py, PyAny>, side: &str) -> PyResult<Arr<'py>> {
        if let Ok(a) = x.extract() {
            return Ok(Arr::F32(a));
        }
        if let Ok(a) = x.extract() {
            return Ok(Arr::F64(a));
        }
        if let Ok(a) = x.extract() {
            return Ok(Arr::F16(a));
        }
        if let Ok(a) = x.extract() {
            return Ok(Arr::BF16(a));
        }
        Err(bad(format!(
            "{side} must be a float32, float64, float16 or bfloat16 numpy array"
        )))
    }

    fn shape(&self) -> Vec<usize> {
        match self {
            Arr::F32(a) => a.shape().to_vec(),
            Arr::F64(a) => a.shape().to_vec(),
            Arr::F16(a) => a.shape().to_vec(),
            Arr::BF16(a) => a.shape().to_vec(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Arr::F32(_) => Dtype::F32,
            Arr::F64(_) => Dtype::F64,
            Arr::F16(_) => Dtype::F16,
            Arr::BF16(_) => Dtype::BF16,
        }
    }
}

/// The elements in row-major order: the array's own memory when it is C-contiguous, else
/// one copy in logical order (`as_slice` alone would also accept Fortran order, whose
/// memory order is not row-major).
fn elems<'a, T: Element + numpy::Element>(a: &'a PyReadonlyArrayDyn<'_, T>) -> Cow<'a, [T]> {
    match a.as_slice() {
        Ok(s) if a.is_c_contiguous() => Cow::Borrowed(s),
        _ => Cow::Owned(a.as_array().iter().copied().collect()),
    }
}

/// (rows, cols) of an array whose last axis is the distribution.
fn rows_cols(shape: &[usize]) -> PyResult<(usize, usize)> {
    match shape.split_last() {
        Some((&cols, lead)) => Ok((lead.iter().product(), cols)),
        None => Err(bad("arrays must have at least one axis (the distribution)")),
    }
}

/// Per-row values of `p` against `q`, a block of rows at a time with the GIL released;
/// each block's rows, values and tops (argmaxes and log-sum-exps of logits rows) also go to
/// `each` (for summaries).
fn per_row<T: Element + numpy::Element>(
    py: Python<'_>,
    o: &Options,
    p: &PyReadonlyArrayDyn<'_, T>,
    q: &PyReadonlyArrayDyn<'_, T>,
    agreement: bool,
    mut each: impl FnMut(&[T], &[T], usize, &kldiv::scheduler::Run) -> PyResult<()>,
) -> PyResult<Vec<f64>> {
    let (rows, cols) = rows_cols(p.shape())?;
    if rows == 0 && cols > 0 {
        // An empty batch has no values, as numpy and scipy give none (rows of no columns
        // are no distributions, and stay the engine's error below).
        return Ok(Vec::new());
    }
    let (pe, qe) = (elems(p), elems(q));
    let engine = engine(&o.device)?;
    let per_block = (BLOCK_ELEMS / cols.max(1)).max(1);
    let mut out = Vec::with_capacity(rows);
    let mut r0 = 0;
    while r0 < rows || (rows == 0 && r0 == 0) {
        // (rows == 0 here only with no columns either: the engine's `Empty` error.)
        let r1 = (r0 + per_block).min(rows);
        let (pb, qb) = (&pe[r0 * cols..r1 * cols], &qe[r0 * cols..r1 * cols]);
        let run = py
            .detach(|| engine.run_report(&o.req, &[], agreement, pb, qb, r1 - r0, cols))
            .map(|(run, _)| run)
            .map_err(|e| to_py(py, relocate_row_by(e, r0)))?;
        for w in &run.warnings {
            let _ = PyErr::warn(
                py,
                &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
                &std::ffi::CString::new(w.as_str()).unwrap_or_default(),
                1,
            );
        }
        each(pb, qb, cols, &run)?;
        out.extend_from_slice(&run.values);
        py.check_signals()?;
        if rows == 0 {
            break;
        }
        r0 = r1;
    }
    Ok(out)
}

/// Both sides as one element type, with equal shapes.
fn pair<'py>(
    p: &Bound<'py, PyAny>,
    q: Option<&Bound<'py, PyAny>>,
    o: &Options,
) -> PyResult<(Arr<'py>, Arr<'py>)> {
    let a = Arr::of(p, "p")?;
    let b = match q {
        Some(q) => Arr::of(q, "q")?,
        None if !o.req.reads_q() => Arr::of(p, "p")?,
        None => return Err(bad("q is required for this divergence")),
    };
    if o.req.reads_q() && a.shape() != b.shape() {
        return Err(bad(format!(
            "shape mismatch: p is {:?}, q is {:?}",
            a.shape(),
            b.shape()
        )));
    }
    if a.dtype() != b.dtype() {
        return Err(bad(format!(
            "element types differ: p is {}, q is {} (the Python wrapper casts them to one)",
            a.dtype(),
            b.dtype()
        )));
    }
    Ok((a, b))
}

macro_rules! each_type {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {
        match ($a, $b) {
            (Arr::F32($x), Arr::F32($y)) => $body,
            (Arr::F64($x), Arr::F64($y)) => $body,
            (Arr::F16($x), Arr::F16($y)) => $body,
            (Arr::BF16($x), Arr::BF16($y)) => $body,
            _ => unreachable!("pair() returns one element type"),
        }
    };
}

/// Per-row values (shaped as the leading axes), or their sum, their mean over rows, or
/// torch's batchmean.
#[pyfunction]
#[pyo3(signature = (p, q, divergence, input, unit, normalize, pseudocount, propagate_nan, device, reduction, stored_as=None))]
#[allow(clippy::too_many_arguments)]
fn _compute<'py>(
    py: Python<'py>,
    p: &Bound<'py, PyAny>,
    q: Option<&Bound<'py, PyAny>>,
    divergence: &str,
    input: &str,
    unit: &str,
    normalize: bool,
    pseudocount: Option<f64>,
    propagate_nan: bool,
    device: &str,
    reduction: &str,
    stored_as: Option<(String, String)>,
) -> PyResult<Py<PyAny>> {
    let o = options(
        divergence,
        input,
        unit,
        normalize,
        pseudocount,
        propagate_nan,
        device,
        stored_as,
    )?;
    let (a, b) = pair(p, q, &o)?;
    let shape = a.shape();
    let v = each_type!(&a, &b, |x, y| per_row(
        py,
        &o,
        x,
        y,
        false,
        |_, _, _, _| Ok(())
    )?);
    let lead = &shape[..shape.len() - 1];
    match reduction {
        "none" if lead.is_empty() => Ok(v[0].into_pyobject(py)?.into_any().unbind()),
        "none" => {
            let arr = v.to_pyarray(py).reshape(lead.to_vec())?;
            Ok(arr.into_any().unbind())
        }
        "sum" => Ok(v.iter().sum::<f64>().into_pyobject(py)?.into_any().unbind()),
        "mean" => {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            Ok(m.into_pyobject(py)?.into_any().unbind())
        }
        // torch's `batchmean`: the sum over everything divided by the first axis's length
        // (the batch of a [B, T, V] input; the length of a 1-D one, as torch divides it).
        "batchmean" => {
            let m = v.iter().sum::<f64>() / shape[0] as f64;
            Ok(m.into_pyobject(py)?.into_any().unbind())
        }
        other => Err(bad(format!(
            "reduction must be none, sum, mean or batchmean, not {other:?}"
        ))),
    }
}

/// Mergeable statistics of a comparison (see `kldiv.Summary` in Python).
#[pyclass(name = "Summary", module = "kldiv")]
struct PySummary {
    inner: kldiv::Summary,
    opts: Option<Options>,
}

/// The targets as ids, one per row, each a column of a `cols`-wide row or −100: checked
/// whole before any row is computed, so an error names its row in the caller's array.
fn targets_vec(
    py: Python<'_>,
    t: Option<&Bound<'_, PyAny>>,
    (rows, cols): (usize, usize),
) -> PyResult<Option<Vec<i64>>> {
    let Some(t) = t else { return Ok(None) };
    let v: Vec<i64> = if let Ok(a) = t.extract::<PyReadonlyArrayDyn<'_, i64>>() {
        a.as_array().iter().copied().collect()
    } else if let Ok(a) = t.extract::<PyReadonlyArrayDyn<'_, i32>>() {
        a.as_array().iter().map(|&x| x as i64).collect()
    } else {
        return Err(bad("targets must be an int32 or int64 array"));
    };
    if v.len() != rows {
        return Err(bad(format!("{} targets for {rows} rows", v.len())));
    }
    kldiv::summary::check_target_ids(&v, cols).map_err(|e| to_py(py, e))?;
    Ok(Some(v))
}

#[pymethods]
impl PySummary {
    #[new]
    #[pyo3(signature = (*, divergence="kl", input="probs", unit="nats", normalize=false, pseudocount=None, propagate_nan=false, device="auto", targets=false, keep_values=true, first_row=0, agreement=false, stored_as=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        divergence: &str,
        input: &str,
        unit: &str,
        normalize: bool,
        pseudocount: Option<f64>,
        propagate_nan: bool,
        device: &str,
        targets: bool,
        keep_values: bool,
        first_row: u64,
        agreement: bool,
        stored_as: Option<(String, String)>,
    ) -> PyResult<Self> {
        let o = options(
            divergence,
            input,
            unit,
            normalize,
            pseudocount,
            propagate_nan,
            device,
            stored_as,
        )?;
        kldiv::Summary::check_extras(&o.req, targets, agreement).map_err(|e| bad(e.to_string()))?;
        let mut meta = Meta::of(&o.req, 0, Dtype::F32);
        (meta.p, meta.q) = ("array".into(), "array".into());
        let mut inner = kldiv::Summary::new(meta, keep_values, first_row);
        if targets {
            inner = inner.with_targets(keep_values);
        }
        if agreement {
            inner = inner.with_agreement();
        }
        Ok(PySummary {
            inner,
            opts: Some(o),
        })
    }

    /// Adds rows: computes the divergence of every row of p against q (and, with targets,
    /// their NLLs and Δp). Returns the per-row values.
    #[pyo3(signature = (p, q=None, targets=None))]
    fn update<'py>(
        &mut self,
        py: Python<'py>,
        p: &Bound<'py, PyAny>,
        q: Option<&Bound<'py, PyAny>>,
        targets: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        let Some(o) = &self.opts else {
            return Err(bad(
                "a summary read from JSON only merges (it does not know how to compute)",
            ));
        };
        let (a, b) = pair(p, q, o)?;
        let shape = a.shape();
        let (rows, cols) = rows_cols(&shape)?;
        if self.inner.rows > 0 && self.inner.meta.cols != cols as u64 {
            return Err(bad(format!(
                "rows of {cols} values added to a summary of rows of {}",
                self.inner.meta.cols
            )));
        }
        let t = targets_vec(py, targets, (rows, cols))?;
        if t.is_some() != self.inner.targets.is_some() {
            return Err(bad(
                "give targets to every update of a Summary(targets=True), and to no other",
            ));
        }
        self.inner.meta.cols = cols as u64;
        let dt = a.dtype().name().to_string();
        self.inner.meta.p_dtype.clone_from(&dt);
        self.inner.meta.q_dtype.clone_from(&dt);
        self.inner.meta.dtype = dt;
        let summary = &mut self.inner;
        let req = o.req;
        let mut r0 = 0usize;
        let started = std::time::Instant::now();
        let agreement = summary.agreement.is_some();
        let v = each_type!(&a, &b, |x, y| per_row(
            py,
            o,
            x,
            y,
            agreement,
            |pb, qb, cols, run| {
                let (first, n) = (r0, run.values.len());
                let tb = t.as_ref().map(|t| &t[first..first + n]);
                r0 += n;
                summary
                    .add_block_from_run(
                        &req,
                        (pb, qb),
                        cols,
                        &run.values,
                        (&run.tops, &run.agreement),
                        tb,
                    )
                    .map_err(|e| to_py(py, relocate_row_by(e, first)))
            }
        )?);
        summary.elapsed_s += started.elapsed().as_secs_f64();
        let lead = shape[..shape.len() - 1].to_vec();
        v.to_pyarray(py).reshape(lead)
    }

    /// Adds rows whose values were computed elsewhere (no argmax or targets: a summary
    /// without targets only). NaN and infinities are counted as in a comparison.
    fn add_values(&mut self, values: PyReadonlyArrayDyn<'_, f64>) -> PyResult<()> {
        if self.inner.targets.is_some() {
            return Err(bad("add_values: this summary has targets; use update()"));
        }
        for &v in values.as_array().iter() {
            self.inner.push_row(v, false, None);
        }
        Ok(())
    }

    /// Adds another summary's rows (disjoint rows of the same comparison).
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
        // Read `other` first: it may be this very object (an overlap, reported as such).
        let o = other.borrow().inner.clone();
        let py = slf.py();
        slf.borrow_mut().inner.merge(&o).map_err(|e| to_py(py, e))
    }

    /// The versioned JSON form (`kldiv merge` reads it too).
    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(py: Python<'_>, s: &str) -> PyResult<PySummary> {
        let inner = kldiv::Summary::from_json(s).map_err(|e| to_py(py, e))?;
        Ok(PySummary { inner, opts: None })
    }

    /// The report as a dict (the keys of `kldiv compare --json`).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = report::json(&self.inner).to_string();
        py.import("json")?.call_method1("loads", (text,))
    }

    /// Places these rows `by` rows later in the whole run (a shard whose place is known
    /// only after it ran).
    fn shift_rows(&mut self, by: u64) {
        self.inner.shift_rows(by);
    }

    fn __str__(&self) -> String {
        report::text(&self.inner)
    }

    /// Every per-row value, when kept (None for a summary read from JSON or merged with one).
    #[getter]
    fn values<'py>(&self, py: Python<'py>) -> Option<Bound<'py, numpy::PyArray1<f64>>> {
        self.inner.values.exact().map(|v| v.to_pyarray(py))
    }

    /// The further divergences' per-row values (`divergence="kl,reverse-kl,js"`), by name,
    /// when kept.
    #[getter]
    fn also<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        for (name, v) in &self.inner.also {
            if let Some(x) = v.exact() {
                d.set_item(name, x.to_pyarray(py))?;
            }
        }
        Ok(d)
    }

    #[getter]
    fn rows(&self) -> u64 {
        self.inner.rows
    }

    #[getter]
    fn first_row(&self) -> u64 {
        self.inner.first_row
    }
}

/// The GPU that `device="gpu"` runs on, as a dict; None where there is none.
#[pyfunction]
fn _gpu_info(py: Python<'_>) -> PyResult<Option<Bound<'_, pyo3::types::PyDict>>> {
    let s = engine("gpu")?;
    let Ok(g) = s.gpu() else {
        return Ok(None);
    };
    let a = g.adapter();
    let d = pyo3::types::PyDict::new(py);
    d.set_item("name", &a.name)?;
    d.set_item("backend", &a.backend)?;
    d.set_item("device_type", &a.device_type)?;
    d.set_item("driver", &a.driver)?;
    d.set_item("software", a.is_software)?;
    d.set_item("timestamps", a.timestamps)?;
    d.set_item("computes_f64", g.computes_f64())?;
    d.set_item("subgroups", g.uses_subgroups())?;
    Ok(Some(d))
}

/// The element type two arrays stored as `a` and `b` ("f16", "bf16", "f32", "f64") are both
/// read in: the command line's rule (`Dtype::common`), kept in one place.
#[pyfunction]
fn _common_type(a: &str, b: &str) -> PyResult<&'static str> {
    let named = |n: &str| {
        Dtype::from_name(n).ok_or_else(|| PyValueError::new_err(format!("no element type {n:?}")))
    };
    Ok(named(a)?.common(named(b)?).name())
}

#[pymodule]
fn _kldiv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_class::<PySummary>()?;
    m.add_function(wrap_pyfunction!(_compute, m)?)?;
    m.add_function(wrap_pyfunction!(files::_compare_files, m)?)?;
    m.add_function(wrap_pyfunction!(_gpu_info, m)?)?;
    m.add_function(wrap_pyfunction!(_common_type, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
