//! The CPU's report over logits: the divergences and each row's agreement sums (top 10 of
//! each side, Σ min(p, q)) from `row_stats` given the divergence pass's maxima and
//! log-sum-exps, a slice of rows at a time on one thread (`slices`), so that the agreement
//! read finds the rows in the core's cache. f64 rows take the plan's agreement pass
//! (`semantics::run::agreement`, f64 lanes) over the same slice.

use super::row_stats::{RowStats, Want};
use super::{slices, CpuEngine, HostRows};
use crate::element::{Dtype, Element};
use crate::error::Result;
use crate::request::{InputForm, Request};
use crate::semantics::rows::{relocate_row_by, validate_shape, Shape};
use crate::semantics::run::{agreement, PerRow};
use crate::semantics::sums::{AgreeSums, TopList, TOP_LIST};

impl CpuEngine {
    /// [`CpuEngine::per_row_each`] and, for logits and log-probabilities, each row's
    /// agreement sums (`None` for rows the f64 path must compute: see `row_stats`), the same
    /// values [`crate::gpu::GpuEngine::per_row_each_agreeing`] gives. Other inputs get no
    /// agreement sums (empty).
    pub fn per_row_each_agreeing<T: Element>(
        &self,
        req: &Request,
        divs: &[crate::Divergence],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<(PerRow, Vec<Option<AgreeSums>>)> {
        validate_shape(p.len(), q.len(), rows, cols, req)?;
        if req.input == InputForm::Probabilities || !req.reads_q() {
            return Ok((self.per_row_each(req, divs, p, q, rows, cols)?, vec![]));
        }
        let want = Want {
            top: TOP_LIST,
            ln_sum: true,
            sum_min: true,
        };
        let parts = slices::each(rows, 2 * cols * T::DTYPE.size_bytes(), |r0, r1| {
            let (p, q) = (&p[r0 * cols..r1 * cols], &q[r0 * cols..r1 * cols]);
            let run = self
                .per_row_each(req, divs, p, q, r1 - r0, cols)
                .map_err(|e| relocate_row_by(e, r0))?;
            if T::DTYPE == Dtype::F64 && run.tops.len() == r1 - r0 {
                // f64 rows: the plan's agreement pass, in f64 lanes (`kernels::agree_f64`).
                let shape = Shape {
                    rows: r1 - r0,
                    cols,
                };
                let sums = agreement(self, HostRows { p, q }, shape, &run.tops)
                    .map_err(|e| relocate_row_by(e, r0))?;
                return Ok((run, sums));
            }
            let stats = self.row_stats_given(req.input, p, q, cols, want, &run.tops);
            let sums = stats.iter().enumerate().map(|(r, st)| {
                let span = r * cols..(r + 1) * cols;
                st.map(|st| agree_sums(&st, &p[span.clone()], &q[span]))
            });
            Ok((run, sums.collect::<Vec<_>>()))
        });
        let mut agreement = Vec::with_capacity(rows);
        let runs = parts.into_iter().map(|part| {
            part.map(|(run, sums)| {
                agreement.extend(sums);
                run
            })
        });
        let out = slices::join(runs, divs.len())?;
        // Sums are only read beside their rows' tops.
        if out.tops.len() != rows {
            agreement.clear();
        }
        Ok((out, agreement))
    }
}

/// A row's agreement sums from its statistics (the top lists hold the columns' values).
fn agree_sums<T: Element>(st: &RowStats, a: &[T], b: &[T]) -> AgreeSums {
    let list = |top: &[u32], row: &[T]| {
        let mut l = TopList::default();
        for &c in &top[..TOP_LIST.min(row.len())] {
            l.push(row[c as usize].to_f64(), c as u64);
        }
        l
    };
    AgreeSums {
        sum_min: st.sum_min,
        top_a: list(&st.p.top, a),
        top_b: list(&st.q.top, b),
    }
}
