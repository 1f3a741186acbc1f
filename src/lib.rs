//! # kldiv
//!
//! KL divergence and its relatives over large batches of distributions: one value per row of
//! two `[rows, cols]` matrices P and Q, computed by a SIMD + threads CPU engine or a wgpu GPU
//! engine, exactly at the edges (zeros, −inf logits, p ≈ q) and at memory speed.
//!
//! ```
//! use kldiv::{Divergence, InputForm, Request};
//! use ndarray::array;
//!
//! let p = array![[0.5f32, 0.5], [0.9, 0.1]];
//! let q = array![[0.5f32, 0.5], [0.5, 0.5]];
//! let kl = kldiv::compute(&Request::new(Divergence::Kl), p.view(), q.view())?;
//! let rows = kl.per_row().unwrap();
//! assert_eq!(rows[0], 0.0);
//! let want = 0.9 * (0.9f64 / 0.5).ln() + 0.1 * (0.1f64 / 0.5).ln();
//! assert!((rows[1] - want).abs() < 1e-6);
//!
//! // Logits go through a fused log-softmax; nothing is materialised.
//! let a = array![[1.0f32, 2.0, 3.0]];
//! let b = array![[1.0f32, 2.0, 2.5]];
//! let req = Request::new(Divergence::Kl).input(InputForm::Logits);
//! assert!(kldiv::compute(&req, a.view(), b.view())?.per_row().unwrap()[0] > 0.0);
//! # Ok::<(), kldiv::Error>(())
//! ```

// The README's Rust examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod cpu;
mod element;
mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod io;
mod request;
pub mod scheduler;
pub mod stats;
pub mod sums;
pub mod workloads;

pub use cpu::{CpuEngine, SimdLevel};
pub use element::{Dtype, Element};
pub use error::{BadKind, Error, Result, Side};
pub use half::{bf16, f16};
pub use request::{
    default_sum_tolerance, Divergence, InputForm, NanPolicy, Normalization, Reduction, Request,
    Unit,
};

use ndarray::ArrayView2;

/// What a computation returns: one value per row, or one value for the batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    PerRow(Vec<f64>),
    Scalar(f64),
}

impl Output {
    pub fn per_row(&self) -> Option<&[f64]> {
        match self {
            Output::PerRow(v) => Some(v),
            Output::Scalar(_) => None,
        }
    }
    pub fn scalar(&self) -> Option<f64> {
        match self {
            Output::Scalar(v) => Some(*v),
            Output::PerRow(_) => None,
        }
    }
    /// All values as f64 (one for a reduction).
    pub fn into_vec(self) -> Vec<f64> {
        match self {
            Output::PerRow(v) => v,
            Output::Scalar(v) => vec![v],
        }
    }
    /// All values rounded to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Output::PerRow(v) => v.iter().map(|&x| x as f32).collect(),
            Output::Scalar(v) => vec![*v as f32],
        }
    }
}

/// An error found in a one-row recomputation, moved to the row it belongs to.
pub(crate) fn relocate_row(e: Error, row: usize) -> Error {
    map_row(e, |_| row)
}

/// An error from a block of rows starting at `first`, moved to whole-input row numbers.
pub fn relocate_row_by(e: Error, first: usize) -> Error {
    map_row(e, |r| r + first)
}

fn map_row(e: Error, f: impl Fn(usize) -> usize) -> Error {
    match e {
        Error::BadValue {
            side,
            kind,
            row,
            col,
        } => Error::BadValue {
            side,
            kind,
            row: f(row),
            col,
        },
        Error::NotNormalized {
            side,
            row,
            sum,
            tolerance,
        } => Error::NotNormalized {
            side,
            row: f(row),
            sum,
            tolerance,
        },
        Error::NoMass { side, row } => Error::NoMass { side, row: f(row) },
        other => other,
    }
}

pub(crate) fn validate_shape(
    p_len: usize,
    q_len: usize,
    rows: usize,
    cols: usize,
    req: &Request,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { rows, cols });
    }
    let want = rows.checked_mul(cols).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{rows} × {cols} elements overflow the address space"
        ))
    })?;
    let mismatch = |len: usize| Error::ShapeMismatch {
        p_rows: rows,
        p_cols: cols,
        q_rows: len / cols,
        q_cols: if len.is_multiple_of(cols) { cols } else { len },
    };
    if p_len != want {
        return Err(Error::InvalidRequest(format!(
            "P holds {p_len} elements, not {rows} × {cols}"
        )));
    }
    if req.reads_q() && q_len != want {
        return Err(mismatch(q_len));
    }
    Ok(())
}

/// Compute `req` over row-major slices `p`, `q` of shape `rows × cols` with the CPU engine.
/// For [`Divergence::Entropy`] `q` is not read (pass `p`).
pub fn compute_slices<T: Element>(
    req: &Request,
    p: &[T],
    q: &[T],
    rows: usize,
    cols: usize,
) -> Result<Output> {
    let q = if req.reads_q() { q } else { p };
    let per_row = CpuEngine::new().per_row(req, p, q, rows, cols)?;
    Ok(sums::reduce(req, per_row))
}

/// Compute `req` over two `[rows, cols]` views. Any memory layout is accepted; views that are
/// not row-major contiguous are copied once.
pub fn compute<T: Element>(req: &Request, p: ArrayView2<T>, q: ArrayView2<T>) -> Result<Output> {
    if req.reads_q() && p.dim() != q.dim() {
        return Err(Error::ShapeMismatch {
            p_rows: p.nrows(),
            p_cols: p.ncols(),
            q_rows: q.nrows(),
            q_cols: q.ncols(),
        });
    }
    let (rows, cols) = p.dim();
    let p = p.as_standard_layout();
    let q = if req.reads_q() {
        q.as_standard_layout()
    } else {
        p.view().into()
    };
    let (Some(ps), Some(qs)) = (p.as_slice(), q.as_slice()) else {
        unreachable!("standard layout arrays are contiguous")
    };
    compute_slices(req, ps, qs, rows, cols)
}

/// Entropy H(P) per row (or reduced as `req` asks; `req.divergence` is ignored).
pub fn entropy<T: Element>(req: &Request, p: ArrayView2<T>) -> Result<Output> {
    let req = Request {
        divergence: Divergence::Entropy,
        ..*req
    };
    compute(&req, p, p)
}
