//! The one error type of the crate: every failure a user or a driver can cause is a variant here.

use std::fmt;
use std::path::PathBuf;

/// Which input a value error was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    P,
    Q,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::P => "P",
            Side::Q => "Q",
        })
    }
}

/// What is wrong with one input value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// NaN.
    NotANumber,
    /// A probability below zero.
    Negative,
    /// +inf (or -inf where the input is probabilities).
    Infinite,
}

impl fmt::Display for BadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadKind::NotANumber => "NaN",
            BadKind::Negative => "a negative probability",
            BadKind::Infinite => "an infinite value",
        })
    }
}

/// Everything that can go wrong in kldiv. Values never panic; they come back as one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("shape mismatch: P is {p_rows}×{p_cols}, Q is {q_rows}×{q_cols}")]
    ShapeMismatch {
        p_rows: usize,
        p_cols: usize,
        q_rows: usize,
        q_cols: usize,
    },
    #[error("empty input: {rows} rows × {cols} columns (need at least one row and one column)")]
    Empty { rows: usize, cols: usize },
    #[error("{side} has {kind} at row {row}, column {col}")]
    BadValue {
        side: Side,
        kind: BadKind,
        row: usize,
        col: usize,
    },
    #[error("{side} row {row} sums to {sum} (tolerance {tolerance:e} around 1)")]
    NotNormalized {
        side: Side,
        row: usize,
        sum: f64,
        tolerance: f64,
    },
    #[error("{side} row {row} has no probability mass (all zeros or all -inf)")]
    NoMass { side: Side, row: usize },
    /// A row's target id (the actual next token) that is neither a column nor `IGNORE` (−100).
    #[error("target of row {row} is {target}, outside [0, {cols}) (−100 ignores a row)")]
    BadTarget {
        row: usize,
        target: i64,
        cols: usize,
    },
    #[error("element types differ: P is {p}, Q is {q}")]
    DtypeMismatch { p: &'static str, q: &'static str },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A serialised summary that cannot be read, or two that cannot be merged.
    #[error("summary: {0}")]
    Summary(String),
    #[error("no usable GPU: {0}")]
    GpuUnavailable(String),
    #[error("GPU failure: {0}")]
    Gpu(String),
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a result failed (a full disk, a closed output): not the input's fault.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error is about the caller's input, files included (exit code 2 in the
    /// command line); false for engine failures.
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            Error::GpuUnavailable(_) | Error::Gpu(_) | Error::Output { .. }
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
