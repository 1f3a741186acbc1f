//! The sides of a comparison, where one is a llama.cpp `.kld` base: its scored positions
//! against an array of the same rows or of every position.

use crate::Failure;
use kldiv::io::kld::KldLayout;
use kldiv::io::tensor::TensorFile;
use kldiv::Element;
use std::borrow::Cow;

/// One side of a comparison: a file, and for an array compared with a llama.cpp `.kld` base
/// that holds every token position, the layout whose scored positions are its rows.
pub(super) struct Side<'a> {
    pub(super) file: &'a TensorFile,
    scored_of: Option<KldLayout>,
}

impl Side<'_> {
    pub(super) fn rows(&self) -> usize {
        self.scored_of.map_or(self.file.rows(), |l| l.scored_rows())
    }

    /// Rows `[r0, r1)` of this side (scored positions gathered where needed).
    pub(super) fn rows_as<T: Element>(&self, r0: usize, r1: usize) -> Cow<'_, [T]> {
        match self.scored_of {
            None => self.file.rows_as(r0, r1),
            Some(l) => {
                let mut out = Vec::with_capacity((r1 - r0) * self.file.cols());
                for r in r0..r1 {
                    let at = l.position_of(r);
                    out.extend_from_slice(&self.file.rows_as::<T>(at, at + 1));
                }
                Cow::Owned(out)
            }
        }
    }
}

/// The sides of a comparison that involves a `.kld` base: both `.kld` (same layout), or an
/// array with either the scored positions' rows or every position's.
pub(super) fn kld_sides<'a>(
    p: &'a TensorFile,
    q: &'a TensorFile,
) -> Result<(Side<'a>, Side<'a>, Option<KldLayout>), Failure> {
    let plain = |f| Side {
        file: f,
        scored_of: None,
    };
    let (l, array) = match (p.kld_layout(), q.kld_layout()) {
        (None, None) => return Ok((plain(p), plain(q), None)),
        (Some(a), Some(b)) if a != b => {
            return Err(Failure {
                code: 2,
                message: format!(
                    "{} ({a:?}) and {} ({b:?}) are .kld bases of different shapes",
                    p.label(),
                    q.label()
                ),
            })
        }
        (Some(a), Some(_)) => return Ok((plain(p), plain(q), Some(a))),
        (Some(l), None) => (l, q),
        (None, Some(l)) => (l, p),
    };
    let scored_of = if array.rows() == l.scored_rows() {
        None
    } else if array.rows() == l.positions() {
        Some(l)
    } else {
        return Err(Failure {
            code: 2,
            message: format!(
                "{} has {} rows; the .kld base scores {} of its {} chunks × {} positions: give \
                 one row per scored position ({}) or per position ({})",
                array.label(),
                array.rows(),
                l.scored_rows(),
                l.n_chunk,
                l.n_ctx,
                l.scored_rows(),
                l.positions()
            ),
        });
    };
    let side = |f: &'a TensorFile| Side {
        file: f,
        scored_of: if std::ptr::eq(f, array) {
            scored_of
        } else {
            None
        },
    };
    Ok((side(p), side(q), Some(l)))
}
