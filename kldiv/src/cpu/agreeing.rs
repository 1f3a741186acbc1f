//! The CPU's report over logits: the divergences and each row's agreement sums (top 10 of
//! each side, Σ min(p, q)) from `row_stats` given the divergence pass's maxima and
//! log-sum-exps, a slice of rows at a time on one thread (`slices`), so that the agreement
//! read finds the rows in the core's cache.

use super::row_stats::{RowStats, Want};
use super::{slices, CpuEngine};
use crate::element::Element;
use crate::error::Result;
use crate::request::{InputForm, Request};
use crate::semantics::rows::{relocate_row_by, validate_shape};
use crate::semantics::run::PerRow;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::Divergence;
    use half::bf16;

    /// Random logits with ties (every third row on a coarse grid), −inf masks (every fourth)
    /// and a large offset (every fifth), from a fixed seed.
    fn logit_rows(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut s = seed;
        let mut rnd = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64) / (1u64 << 53) as f64 - 0.5
        };
        let (mut p, mut q) = (vec![0f32; rows * cols], vec![0f32; rows * cols]);
        for i in 0..rows * cols {
            let (r, c) = (i / cols, i % cols);
            let mut x = 6.0 * rnd();
            let mut y = x + rnd();
            if r % 3 == 1 {
                (x, y) = ((x * 2.0).round() / 2.0, (y * 2.0).round() / 2.0);
            }
            if r % 5 == 4 {
                (x, y) = (x + 1e4, y + 1e4);
            }
            (p[i], q[i]) = (x as f32, y as f32);
            if r % 4 == 2 && c % 3 == 1 {
                p[i] = f32::NEG_INFINITY;
            }
        }
        (p, q)
    }

    /// The columns of the k largest values, largest first, lower column first on ties
    /// (−0 and +0 tie: the values have no NaN).
    fn top_cols(v: &[f64], k: usize) -> Vec<u64> {
        let mut idx: Vec<u64> = (0..v.len() as u64).collect();
        let order = |i: u64, j: u64| v[j as usize].partial_cmp(&v[i as usize]);
        idx.sort_by(|&i, &j| order(i, j).expect("no NaN").then(i.cmp(&j)));
        idx.truncate(k);
        idx
    }

    fn sum_min_f64(a: &[f64], b: &[f64]) -> f64 {
        let lse = |v: &[f64]| {
            let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
        };
        let (la, lb) = (lse(a), lse(b));
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - la).exp().min((y - lb).exp()))
            .sum()
    }

    /// Sliced or not (shapes of one slice, several, and rows longer than a slice), the
    /// values and tops are the engine's own, and the agreement sums those of the f64
    /// definitions: the same columns in the same order, Σ min within 2e-6.
    #[test]
    fn agreement_sums_match_the_f64_definitions() {
        fn check<T: Element>(e: &CpuEngine, p: &[f32], q: &[f32], rows: usize, cols: usize) {
            let (p, q): (Vec<T>, Vec<T>) = (
                p.iter().map(|&x| T::from_f64(x as f64)).collect(),
                q.iter().map(|&x| T::from_f64(x as f64)).collect(),
            );
            let req = Request::new(Divergence::Kl).input(InputForm::Logits);
            let divs = [Divergence::Kl, Divergence::ReverseKl];
            let (run, sums) = e
                .per_row_each_agreeing(&req, &divs, &p, &q, rows, cols)
                .unwrap();
            let whole = e.per_row_each(&req, &divs, &p, &q, rows, cols).unwrap();
            let ctx = format!("{} {rows}×{cols}", T::DTYPE);
            // The same kernels; a row split into pieces across threads (few long rows) is
            // summed in another order than whole on one thread: equal to the f32 sums' error.
            let close = |x: f64, y: f64| x == y || (x - y).abs() <= 1e-6 * x.abs().max(1e-3);
            for (got, want) in run.values.iter().zip(&whole.values) {
                assert!(got.iter().zip(want).all(|(&x, &y)| close(x, y)), "{ctx}");
            }
            assert_eq!(run.tops.len(), whole.tops.len(), "{ctx}");
            for (g, w) in run.tops.iter().zip(&whole.tops) {
                let (g, w) = (g.expect("tops"), w.expect("tops"));
                assert_eq!(
                    (g.top_a, g.top_b, g.max_a, g.max_b),
                    (w.top_a, w.top_b, w.max_a, w.max_b)
                );
                assert!(close(g.lse_a, w.lse_a) && close(g.lse_b, w.lse_b), "{ctx}");
            }
            assert_eq!(sums.len(), rows, "{ctx}");
            for (r, sums) in sums.iter().enumerate() {
                let span = r * cols..(r + 1) * cols;
                let a: Vec<f64> = p[span.clone()].iter().map(|x| x.to_f64()).collect();
                let b: Vec<f64> = q[span].iter().map(|x| x.to_f64()).collect();
                let k = cols.min(TOP_LIST);
                let Some(s) = sums else {
                    // Only rows with fewer candidates than K are left to f64.
                    let live = a.iter().filter(|x| x.is_finite()).count();
                    assert!(live < k, "{ctx} row {r}: no sums");
                    continue;
                };
                assert_eq!(s.top_a.cols(), top_cols(&a, k), "{ctx} row {r}: P's top");
                assert_eq!(s.top_b.cols(), top_cols(&b, k), "{ctx} row {r}: Q's top");
                let want = sum_min_f64(&a, &b);
                let got = s.sum_min;
                assert!(
                    (got - want).abs() <= 2e-6,
                    "{ctx} row {r}: Σ min {got} vs {want}"
                );
            }
        }
        let e = CpuEngine::new();
        // 700 columns: 187 rows a slice, so 400 rows are three slices, the last short.
        for (rows, cols) in [(6, 10), (400, 700), (3, 200_000)] {
            let (p, q) = logit_rows(rows, cols, (rows * cols) as u64);
            check::<f32>(&e, &p, &q, rows, cols);
            check::<bf16>(&e, &p, &q, rows, cols);
        }
    }

    /// A bad value in a later slice is reported at its row in the whole input, and no
    /// agreement sums are made for probabilities.
    #[test]
    fn errors_name_the_row_in_the_whole_input() {
        let e = CpuEngine::new();
        let (rows, cols) = (400, 700);
        let (mut p, q) = logit_rows(rows, cols, 3);
        p[301 * cols + 5] = f32::NAN;
        let req = Request::new(Divergence::Kl).input(InputForm::Logits);
        let err = e
            .per_row_each_agreeing(&req, &[Divergence::Kl], &p, &q, rows, cols)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadValue {
                    row: 301,
                    col: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        let probs = Request::new(Divergence::Kl);
        let (w, h) = (vec![0.25f32; 8], vec![0.25f32; 8]);
        let (_, sums) = e
            .per_row_each_agreeing(&probs, &[Divergence::Kl], &w, &h, 2, 4)
            .unwrap();
        assert!(sums.is_empty());
    }
}
