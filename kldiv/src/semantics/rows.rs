//! Rows as engines hand them over: their sums or what went wrong, and the shape checks and row
//! numbering every entry point shares.

use super::sums::Partial;
use crate::error::{BadKind, Error, Result, Side};
use crate::request::{NanPolicy, Request};

/// The shape of a job: `rows × cols`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub rows: usize,
    pub cols: usize,
}

/// A bad input value, located by column within the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bad {
    pub side: Side,
    pub kind: BadKind,
    pub col: usize,
}

/// Why an engine hands over no sums for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Irregular {
    /// A bad value, located (the CPU engines find it exactly).
    Bad(Bad),
    /// The row holds values this engine does not handle (the GPU flags them): the exact
    /// path computes it, and reports bad values exactly.
    NeedsExact,
    /// The pass was told to skip the row (`RowParams::Skip`).
    Skipped,
}

/// What an engine hands over for one row of a pass.
pub type RowSums = std::result::Result<Partial, Irregular>;

/// One row of P and Q on the host (borrowed, or read back from a device).
pub type RowPair<'a, T> = (std::borrow::Cow<'a, [T]>, std::borrow::Cow<'a, [T]>);

/// Whether a bad value makes a NaN row rather than an error (`NanPolicy::Propagate`).
pub fn nan_row(req: &Request, bad: &Bad) -> bool {
    req.nan == NanPolicy::Propagate && bad.kind == BadKind::NotANumber
}

/// A bad value located in the whole input.
pub fn located(row: usize, bad: Bad) -> Error {
    Error::BadValue {
        side: bad.side,
        kind: bad.kind,
        row,
        col: bad.col,
    }
}

/// The sizes of `p` and `q` against `rows × cols` (Q only when the request reads it).
pub fn validate_shape(
    p_len: usize,
    q_len: usize,
    rows: usize,
    cols: usize,
    req: &Request,
) -> Result<Shape> {
    if rows == 0 || cols == 0 {
        return Err(Error::Empty { rows, cols });
    }
    let want = rows.checked_mul(cols).ok_or_else(|| {
        Error::InvalidRequest(format!(
            "{rows} × {cols} elements overflow the address space"
        ))
    })?;
    if p_len != want {
        return Err(Error::InvalidRequest(format!(
            "P holds {p_len} elements, not {rows} × {cols}"
        )));
    }
    if req.reads_q() && q_len != want {
        return Err(Error::ShapeMismatch {
            p_rows: rows,
            p_cols: cols,
            q_rows: q_len / cols,
            q_cols: if q_len.is_multiple_of(cols) {
                cols
            } else {
                q_len
            },
        });
    }
    Ok(Shape { rows, cols })
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
        Error::BadTarget { row, target, cols } => Error::BadTarget {
            row: f(row),
            target,
            cols,
        },
        other => other,
    }
}
