//! The CPU's report pass over logits (`CpuEngine::per_row_each_agreeing`: the divergences,
//! then each row's agreement sums while the rows are in cache) against the f64 definitions.

mod common;
use common::{sum_min_of, top_cols};
use kldiv::semantics::sums::TOP_LIST;
use kldiv::{bf16, CpuEngine, Divergence, Dtype, Element, Error, InputForm, Request};

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

/// Sliced or not (shapes of one slice, several, and rows longer than a slice), the
/// values and tops are the engine's own, and the agreement sums those of the f64
/// definitions: the same columns in the same order, Σ min within 2e-6 (f32 and bf16) or
/// 1e-14 (f64).
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
            let want = sum_min_of(&a, &b);
            let got = s.sum_min;
            // f64 rows keep f64's precision (f64 lanes, `kernels::agree_f64`), up to the
            // rounding of x − lse (a few ulp of the logits' magnitude) and of sums over
            // `cols` terms (the reference's and the engine's log-sums, in other orders).
            let big = a
                .iter()
                .chain(&b)
                .filter(|x| x.is_finite())
                .fold(0f64, |m, x| m.max(x.abs()));
            let tol = if T::DTYPE == Dtype::F64 {
                1e-14 + 8.0 * f64::EPSILON * big + 2.0 * f64::EPSILON * cols as f64
            } else {
                2e-6
            };
            assert!(
                (got - want).abs() <= tol,
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
        check::<f64>(&e, &p, &q, rows, cols);
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
