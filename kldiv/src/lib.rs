//! # kldiv
//!
//! KL divergence and its relatives over large batches of distributions: one value per row of
//! two `[rows, cols]` matrices P and Q, computed by a SIMD + threads CPU engine or a wgpu GPU
//! engine, exactly at the edges (zeros, −inf logits, p ≈ q, logits of any magnitude) and at
//! memory speed.
//!
//! ```
//! use kldiv::{Divergence, InputForm, Request};
//! use kldiv::ndarray::array;
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
//!
//! The layout: a [`Request`] says what to compute; [`semantics`] says what a row's value is
//! and which passes a request takes, once for every engine; the engines ([`CpuEngine`],
//! `gpu::GpuEngine`) only run passes; the [`scheduler`] places each job on them.

// The README's Rust examples compile and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

mod compiled;
mod consts;
pub mod cpu;
mod element;
mod error;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod io;
mod output;
mod request;
pub mod scheduler;
pub mod semantics;
pub mod stats;
pub mod summary;
pub mod workloads;

pub use cpu::{CpuEngine, SimdLevel};
pub use element::{Dtype, Element};
pub use error::{BadKind, Error, Result, Side};
pub use half::{bf16, f16};
/// The array types of the library's API, at the version kldiv is built with (use these to
/// avoid mismatched `ndarray` versions).
pub use ndarray;
pub use output::Output;
pub use request::{
    default_sum_tolerance, Divergence, InputForm, NanPolicy, Normalization, Reduction, Request,
    Unit,
};
pub use semantics::run::PerRow;
pub use semantics::sums::RowTops;
pub use summary::Summary;

use ndarray::ArrayView2;

/// Compute `req` over row-major slices `p`, `q` of shape `rows × cols` on the CPU engine.
/// For [`Divergence::Entropy`] `q` is not read (pass `p`). For GPU or automatic placement,
/// see [`scheduler::Scheduler`].
pub fn compute_slices<T: Element>(
    req: &Request,
    p: &[T],
    q: &[T],
    rows: usize,
    cols: usize,
) -> Result<Output> {
    let per_row = CpuEngine::new().per_row(req, p, q, rows, cols)?;
    Ok(semantics::finish::reduce(req, per_row))
}

/// Compute `req` over two `[rows, cols]` views on the CPU engine. Any memory layout is
/// accepted; views that are not row-major contiguous are copied once. For GPU or automatic
/// placement, see [`scheduler::Scheduler::compute`].
pub fn compute<T: Element>(req: &Request, p: ArrayView2<T>, q: ArrayView2<T>) -> Result<Output> {
    let (p, q) = row_major(req, p, q)?;
    let (rows, cols) = p.dim();
    let q = q.as_ref().unwrap_or(&p);
    compute_slices(req, slice(&p), slice(q), rows, cols)
}

/// Entropy H(P) per row (or reduced as `req` asks; `req.divergence` is ignored), on the CPU.
pub fn entropy<T: Element>(req: &Request, p: ArrayView2<T>) -> Result<Output> {
    let req = Request {
        divergence: Divergence::Entropy,
        ..*req
    };
    compute(&req, p, p)
}

/// Both views in row-major order (copied once when they are not), after the shape check.
/// `None` for Q when the request does not read it.
pub(crate) fn row_major<'a, T: Element>(
    req: &Request,
    p: ArrayView2<'a, T>,
    q: ArrayView2<'a, T>,
) -> Result<(Matrix<'a, T>, Option<Matrix<'a, T>>)> {
    if req.reads_q() && p.dim() != q.dim() {
        return Err(Error::ShapeMismatch {
            p_rows: p.nrows(),
            p_cols: p.ncols(),
            q_rows: q.nrows(),
            q_cols: q.ncols(),
        });
    }
    let q = req.reads_q().then(|| standard(q));
    Ok((standard(p), q))
}

/// A row-major matrix, borrowed or copied.
pub(crate) type Matrix<'a, T> = ndarray::CowArray<'a, T, ndarray::Ix2>;

/// The view itself when it is row-major contiguous, else a row-major copy.
fn standard<T: Element>(v: ArrayView2<'_, T>) -> Matrix<'_, T> {
    if v.is_standard_layout() {
        v.into()
    } else {
        v.as_standard_layout().into_owned().into()
    }
}

/// The elements of a standard-layout array.
pub(crate) fn slice<'a, T>(a: &'a ndarray::CowArray<'_, T, ndarray::Ix2>) -> &'a [T] {
    a.as_slice().expect("standard layout arrays are contiguous")
}
