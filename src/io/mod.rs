//! Reading inputs from files.

pub mod npy;

use crate::{Dtype, Element, Output, Request, Result};

/// A row-major matrix whose element type is known only at run time (from a file).
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<half::f16>),
    BF16(Vec<half::bf16>),
}

/// A [`Matrix`] with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Shaped {
    pub data: Matrix,
    pub rows: usize,
    pub cols: usize,
}

impl Matrix {
    pub fn dtype(&self) -> Dtype {
        match self {
            Matrix::F32(_) => Dtype::F32,
            Matrix::F64(_) => Dtype::F64,
            Matrix::F16(_) => Dtype::F16,
            Matrix::BF16(_) => Dtype::BF16,
        }
    }

    pub fn with_shape(self, rows: usize, cols: usize) -> Shaped {
        Shaped {
            data: self,
            rows,
            cols,
        }
    }

    /// The row-major layout of a matrix stored column-major as `r × c` (Fortran order).
    fn transposed(self, r: usize, c: usize) -> Matrix {
        fn t<T: Copy>(v: Vec<T>, r: usize, c: usize) -> Vec<T> {
            // v is row-major r × c; return row-major c × r.
            (0..c)
                .flat_map(|j| (0..r).map(move |i| (i, j)))
                .map(|(i, j)| v[i * c + j])
                .collect()
        }
        match self {
            Matrix::F32(v) => Matrix::F32(t(v, r, c)),
            Matrix::F64(v) => Matrix::F64(t(v, r, c)),
            Matrix::F16(v) => Matrix::F16(t(v, r, c)),
            Matrix::BF16(v) => Matrix::BF16(t(v, r, c)),
        }
    }
}

impl Shaped {
    /// Element `i` (row-major) as f64.
    pub fn get_f64(&self, i: usize) -> f64 {
        match &self.data {
            Matrix::F32(v) => v[i] as f64,
            Matrix::F64(v) => v[i],
            Matrix::F16(v) => v[i].to_f64(),
            Matrix::BF16(v) => v[i].to_f64(),
        }
    }
}

/// Run `req` on two run-time-typed matrices with `f`, which receives typed slices.
/// Mismatched element types or shapes are errors.
pub fn with_pair<R>(
    p: &Shaped,
    q: &Shaped,
    req: &Request,
    f: impl FnOnce(&dyn DynPair) -> Result<R>,
) -> Result<R> {
    if req.reads_q() {
        if p.data.dtype() != q.data.dtype() {
            return Err(crate::Error::DtypeMismatch {
                p: p.data.dtype().name(),
                q: q.data.dtype().name(),
            });
        }
        if (p.rows, p.cols) != (q.rows, q.cols) {
            return Err(crate::Error::ShapeMismatch {
                p_rows: p.rows,
                p_cols: p.cols,
                q_rows: q.rows,
                q_cols: q.cols,
            });
        }
    }
    f(&Pair { p, q })
}

/// A pair of same-typed matrices, typed at run time.
pub trait DynPair {
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    fn dtype(&self) -> Dtype;
    /// Per-row values through the scheduler.
    fn run(
        &self,
        engine: &crate::scheduler::Engine,
        req: &Request,
    ) -> Result<crate::scheduler::Run>;
}

struct Pair<'a> {
    p: &'a Shaped,
    q: &'a Shaped,
}

fn typed<T: Element>(m: &Shaped, get: fn(&Matrix) -> Option<&Vec<T>>) -> &[T] {
    get(&m.data).map(|v| v.as_slice()).unwrap_or(&[])
}

impl DynPair for Pair<'_> {
    fn rows(&self) -> usize {
        self.p.rows
    }
    fn cols(&self) -> usize {
        self.p.cols
    }
    fn dtype(&self) -> Dtype {
        self.p.data.dtype()
    }
    fn run(
        &self,
        engine: &crate::scheduler::Engine,
        req: &Request,
    ) -> Result<crate::scheduler::Run> {
        let (r, c) = (self.p.rows, self.p.cols);
        let q = if req.reads_q() { self.q } else { self.p };
        macro_rules! go {
            ($variant:ident) => {{
                fn get(m: &Matrix) -> Option<&Vec<impl Element>> {
                    match m {
                        Matrix::$variant(v) => Some(v),
                        _ => None,
                    }
                }
                engine.run(req, typed(self.p, get), typed(q, get), r, c)
            }};
        }
        match self.p.data {
            Matrix::F32(_) => go!(F32),
            Matrix::F64(_) => go!(F64),
            Matrix::F16(_) => go!(F16),
            Matrix::BF16(_) => go!(BF16),
        }
    }
}

/// Reduce per-row values as the request asks.
pub fn reduce(req: &Request, per_row: Vec<f64>) -> Output {
    crate::sums::reduce(req, per_row)
}
