//! The semantics table of the README, one test per line, on every CPU path.

mod common;
use kldiv::{
    BadKind, CpuEngine, Divergence, Error, InputForm, NanPolicy, Normalization, Reduction, Request,
    Side, SimdLevel, Unit,
};

fn engines() -> Vec<CpuEngine> {
    [
        SimdLevel::Reference,
        SimdLevel::Scalar,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Auto,
    ]
    .iter()
    .filter_map(|&l| CpuEngine::with_level(l).ok())
    .collect()
}

/// Every CPU engine's per-row results.
fn run(req: &Request, p: &[f32], q: &[f32], rows: usize, cols: usize) -> Vec<Vec<f64>> {
    engines()
        .iter()
        .map(|e| e.per_row(req, p, q, rows, cols).expect("computes"))
        .collect()
}

fn run_err(req: &Request, p: &[f32], q: &[f32], rows: usize, cols: usize) -> Vec<Error> {
    engines()
        .iter()
        .map(|e| e.per_row(req, p, q, rows, cols).expect_err("must fail"))
        .collect()
}

/// A row of `n` equal probabilities with `p[i]` overridden by `vals`, renormalised exactly
/// enough for f32 (the rest absorbs the change).
fn row_with(n: usize, vals: &[(usize, f32)]) -> Vec<f32> {
    let fixed: f32 = vals.iter().map(|v| v.1).sum();
    let rest = (1.0 - fixed) / (n - vals.len()) as f32;
    let mut r = vec![rest; n];
    for &(i, v) in vals {
        r[i] = v;
    }
    r
}

#[test]
fn zero_p_contributes_nothing_even_when_q_is_zero() {
    // Sizes cover a pure tail (7), a vector body (64) and irregular vectors mid-row (1000).
    for n in [7usize, 64, 1000] {
        let p = row_with(n, &[(1, 0.0), (3, 0.0)]);
        let q = row_with(n, &[(1, 0.2), (3, 0.0)]);
        let want: f64 = p
            .iter()
            .zip(&q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(&a, &b)| a as f64 * (a as f64 / b as f64).ln())
            .sum();
        for got in run(&Request::new(Divergence::Kl), &p, &q, 1, n) {
            assert!(
                (got[0] - want).abs() <= 1e-5 * want,
                "n={n}: {} vs {want}",
                got[0]
            );
        }
    }
}

#[test]
fn q_zero_where_p_positive_is_plus_infinity() {
    for n in [7usize, 64, 1000] {
        let p = row_with(n, &[(5, 0.1)]);
        let q = row_with(n, &[(5, 0.0)]);
        for got in run(&Request::new(Divergence::Kl), &p, &q, 1, n) {
            assert_eq!(got[0], f64::INFINITY);
        }
        for div in [Divergence::SymmetricKl, Divergence::CrossEntropy] {
            for got in run(&Request::new(div), &p, &q, 1, n) {
                assert_eq!(got[0], f64::INFINITY, "{div:?}");
            }
        }
        // Reverse KL reads q·ln(q/p): finite here. JS stays finite and ≤ ln 2.
        for got in run(&Request::new(Divergence::ReverseKl), &p, &q, 1, n) {
            assert!(got[0].is_finite());
        }
        for got in run(&Request::new(Divergence::JensenShannon), &p, &q, 1, n) {
            assert!(got[0].is_finite() && got[0] <= std::f64::consts::LN_2);
        }
    }
}

#[test]
fn identical_rows_give_exactly_zero() {
    let mut rng = common::Rng::new(9);
    let (p, _) = common::prob_pair(&mut rng, 3, 777, 0.1);
    let p = common::to_f32(&p);
    for div in [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ] {
        for got in run(&Request::new(div), &p, &p, 3, 777) {
            assert_eq!(got, vec![0.0; 3], "{div:?}");
        }
    }
    // Logits shifted by a constant are the same distribution.
    let a: Vec<f32> = (0..777 * 3)
        .map(|i| ((i * 37 % 101) as f32) * 0.05)
        .collect();
    let b: Vec<f32> = a.iter().map(|x| x + 3.0).collect();
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for got in run(&req, &a, &b, 3, 777) {
        for v in got {
            assert!(v.abs() < 1e-9, "{v}");
        }
    }
}

#[test]
fn tiny_and_huge_values() {
    // Subnormal and tiny probabilities take the exact path and stay correct.
    let n = 40;
    let p = row_with(n, &[(0, 1e-40), (1, 1e-30), (17, 1e-20)]);
    let q = row_with(n, &[(0, 1e-38), (1, 1e-38), (17, 1e-5)]);
    let want: f64 = p
        .iter()
        .zip(&q)
        .map(|(&a, &b)| a as f64 * (a as f64 / b as f64).ln())
        .sum();
    for got in run(&Request::new(Divergence::Kl), &p, &q, 1, n) {
        assert!(
            (got[0] - want).abs() <= 1e-5 * want.abs(),
            "{} vs {want}",
            got[0]
        );
    }
    // Huge unnormalised weights with Normalize: scale-free.
    let big: Vec<f32> = p.iter().map(|x| x * 3e30).collect();
    let bigq: Vec<f32> = q.iter().map(|x| x * 1e25).collect();
    let req = Request::new(Divergence::Kl).normalization(Normalization::Normalize);
    for got in run(&req, &big, &bigq, 1, n) {
        assert!(
            (got[0] - want).abs() <= 1e-5 * want.abs() + 1e-6,
            "{} vs {want}",
            got[0]
        );
    }
}

#[test]
fn minus_infinity_logits_mean_probability_zero() {
    let inf = f32::NEG_INFINITY;
    // P masks column 1 (p = 0 there, fine); Q masks column 2 where P has mass → +inf.
    let a = [1.0f32, inf, 0.5, 0.2, 0.1];
    let b = [1.0f32, 0.3, 0.5, 0.2, 0.1];
    let la = log_softmax(&a);
    let lb = log_softmax(&b);
    let want: f64 = la
        .iter()
        .zip(&lb)
        .filter(|(x, _)| x.is_finite())
        .map(|(x, y)| x.exp() * (x - y))
        .sum();
    for input in [InputForm::Logits, InputForm::LogProbabilities] {
        let (a, b) = if input == InputForm::Logits {
            (a.to_vec(), b.to_vec())
        } else {
            (
                la.iter().map(|&x| x as f32).collect(),
                lb.iter().map(|&x| x as f32).collect(),
            )
        };
        let req = Request::new(Divergence::Kl).input(input);
        for got in run(&req, &a, &b, 1, 5) {
            assert!(
                (got[0] - want).abs() <= 1e-5 * want,
                "{input:?}: {} vs {want}",
                got[0]
            );
        }
        let mut b2 = b.clone();
        b2[2] = inf;
        // (Masking a log-probability un-normalises the row: skip the sum check for it.)
        let req = req.normalization(Normalization::AsGiven);
        for got in run(&req, &a, &b2, 1, 5) {
            assert_eq!(got[0], f64::INFINITY);
        }
        // Reverse KL: Q has mass on column 1 where P is −inf → +inf.
        for got in run(
            &Request::new(Divergence::ReverseKl).input(input),
            &a,
            &b,
            1,
            5,
        ) {
            assert_eq!(got[0], f64::INFINITY);
        }
    }
    // A row with no finite logit has no distribution.
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for e in run_err(&req, &[inf, inf], &[0.0, 1.0], 1, 2) {
        assert!(
            matches!(
                e,
                Error::NoMass {
                    side: Side::P,
                    row: 0
                }
            ),
            "{e}"
        );
    }
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

#[test]
fn nan_is_an_error_naming_row_and_column_or_propagates() {
    let (rows, cols) = (3, 300);
    let mut p = vec![1.0 / cols as f32; rows * cols];
    let q = p.clone();
    p[cols + 123] = f32::NAN;
    for input in [InputForm::Probabilities, InputForm::Logits] {
        let req = Request::new(Divergence::Kl).input(input);
        for e in run_err(&req, &p, &q, rows, cols) {
            assert!(
                matches!(
                    e,
                    Error::BadValue {
                        side: Side::P,
                        kind: BadKind::NotANumber,
                        row: 1,
                        col: 123
                    }
                ),
                "{e}"
            );
        }
        for got in run(&req.nan(NanPolicy::Propagate), &p, &q, rows, cols) {
            assert!(got[1].is_nan() && got[0].abs() < 1e-12 && got[2].abs() < 1e-12);
        }
        // In Q too, and in a long row split across threads.
        for e in run_err(&req, &q, &p, rows, cols) {
            assert!(
                matches!(
                    e,
                    Error::BadValue {
                        side: Side::Q,
                        row: 1,
                        col: 123,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
    // Two bad values in one block (a NaN, then a negative 77 columns earlier): the error
    // names the first in column order.
    let mut two = q.clone();
    two[cols + 200] = f32::NAN;
    two[cols + 123] = -0.5;
    for e in run_err(&Request::new(Divergence::Kl), &two, &q, rows, cols) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    side: Side::P,
                    kind: BadKind::Negative,
                    row: 1,
                    col: 123
                }
            ),
            "{e}"
        );
    }
    // Short rows, many of them: the lane-per-row path must hand the bad group back.
    let (rows, cols) = (40, 16);
    let mut p = vec![1.0 / cols as f32; rows * cols];
    p[33 * cols + 5] = f32::NAN;
    for e in run_err(&Request::new(Divergence::Kl), &p, &p.clone(), rows, cols) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    row: 33,
                    col: 5,
                    ..
                }
            ),
            "{e}"
        );
    }
    let q = vec![1.0 / cols as f32; rows * cols];
    for got in run(
        &Request::new(Divergence::Kl).nan(NanPolicy::Propagate),
        &p,
        &q,
        rows,
        cols,
    ) {
        assert!(got[33].is_nan() && got.iter().filter(|v| v.is_nan()).count() == 1);
    }
    let cols = 200_000;
    let mut p = vec![1.0 / cols as f32; cols];
    p[150_001] = f32::NAN;
    for e in run_err(&Request::new(Divergence::Kl), &p, &p.clone(), 1, cols) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    row: 0,
                    col: 150_001,
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn negative_probability_and_infinities_are_errors() {
    let mut p = vec![0.25f32; 8];
    p[6] = -0.25;
    p[7] = 0.75;
    for e in run_err(&Request::new(Divergence::Kl), &p, &[0.125; 8], 1, 8) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    kind: BadKind::Negative,
                    col: 6,
                    ..
                }
            ),
            "{e}"
        );
    }
    let mut p = vec![0.125f32; 8];
    p[3] = f32::INFINITY;
    for e in run_err(&Request::new(Divergence::Kl), &p, &[0.125; 8], 1, 8) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    kind: BadKind::Infinite,
                    col: 3,
                    ..
                }
            ),
            "{e}"
        );
    }
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for e in run_err(&req, &[0.0, 1.0], &[0.0, f32::INFINITY], 1, 2) {
        assert!(
            matches!(
                e,
                Error::BadValue {
                    side: Side::Q,
                    kind: BadKind::Infinite,
                    col: 1,
                    ..
                }
            ),
            "{e}"
        );
    }
}

#[test]
fn empty_and_mismatched_inputs_are_errors() {
    let e = CpuEngine::new();
    let req = Request::new(Divergence::Kl);
    assert!(matches!(
        e.per_row::<f32>(&req, &[], &[], 0, 5),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        e.per_row::<f32>(&req, &[], &[], 5, 0),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        e.per_row(&req, &[0.5f32, 0.5], &[1.0f32], 1, 2),
        Err(Error::ShapeMismatch { .. })
    ));
    let p = ndarray::Array2::<f32>::from_elem((2, 3), 1.0 / 3.0);
    let q = ndarray::Array2::<f32>::from_elem((3, 2), 0.5);
    assert!(matches!(
        kldiv::compute(&req, p.view(), q.view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn one_element_rows() {
    for got in run(
        &Request::new(Divergence::Kl),
        &[1.0, 1.0],
        &[1.0, 1.0],
        2,
        1,
    ) {
        assert_eq!(got, vec![0.0, 0.0]);
    }
    let req = Request::new(Divergence::Entropy).input(InputForm::Logits);
    for got in run(&req, &[3.0], &[3.0], 1, 1) {
        assert_eq!(got, vec![0.0]);
    }
}

#[test]
fn rows_off_from_one_are_errors_unless_normalised() {
    let p = [0.5f32, 0.4];
    let q = [0.5f32, 0.5];
    for e in run_err(&Request::new(Divergence::Kl), &p, &q, 1, 2) {
        assert!(
            matches!(
                e,
                Error::NotNormalized {
                    side: Side::P,
                    row: 0,
                    ..
                }
            ),
            "{e}"
        );
    }
    let req = Request::new(Divergence::Kl).normalization(Normalization::Normalize);
    let want =
        (5.0f64 / 9.0) * ((5.0 / 9.0) / 0.5f64).ln() + (4.0 / 9.0) * ((4.0 / 9.0) / 0.5f64).ln();
    for got in run(&req, &p, &q, 1, 2) {
        assert!((got[0] - want).abs() < 1e-7, "{} vs {want}", got[0]);
    }
    // As given: the literal Σ p·ln(p/q), negative here, not clamped.
    let req = Request::new(Divergence::Kl).normalization(Normalization::AsGiven);
    let literal = 0.5f64 * 1f64.ln() + 0.4 * (0.4f64 / 0.5).ln();
    for got in run(&req, &p, &q, 1, 2) {
        assert!((got[0] - literal).abs() < 1e-7 && got[0] < 0.0);
    }
    // A custom tolerance accepts it.
    let req = Request::new(Divergence::Kl).normalization(Normalization::Check {
        tolerance: Some(0.2),
    });
    assert!(CpuEngine::new().per_row(&req, &p, &q, 1, 2).is_ok());
}

#[test]
fn f16_softmax_rows_pass_the_default_tolerance() {
    // A 128k-entry softmax rounded to f16 does not sum to 1 exactly.
    let n = 128_256;
    let mut rng = common::Rng::new(11);
    let (p, q) = common::prob_pair(&mut rng, 1, n, 0.1);
    let ph: Vec<kldiv::f16> = p.iter().map(|&x| kldiv::f16::from_f64(x)).collect();
    let qh: Vec<kldiv::f16> = q.iter().map(|&x| kldiv::f16::from_f64(x)).collect();
    assert!(CpuEngine::new()
        .per_row(&Request::new(Divergence::Kl), &ph, &qh, 1, n)
        .is_ok());
}

#[test]
fn never_negative_for_normalised_inputs() {
    // p and q rounded separately: literal Σ p ln(p/q) can dip below 0 by rounding.
    let mut rng = common::Rng::new(12);
    let (p, q) = common::prob_pair(&mut rng, 50, 64, 1e-7);
    let (p, q) = (common::to_f32(&p), common::to_f32(&q));
    for div in [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ] {
        for got in run(&Request::new(div), &p, &q, 50, 64) {
            assert!(got.iter().all(|&v| v >= 0.0), "{div:?}");
        }
    }
}

#[test]
fn reductions_and_units() {
    let mut rng = common::Rng::new(13);
    let (p, q) = common::prob_pair(&mut rng, 10, 50, 0.3);
    let (p, q) = (common::to_f32(&p), common::to_f32(&q));
    let per_row = kldiv::compute_slices(&Request::new(Divergence::Kl), &p, &q, 10, 50).unwrap();
    let rows = per_row.per_row().unwrap().to_vec();
    let sum: f64 = rows.iter().sum();
    let get = |r: Request| {
        kldiv::compute_slices(&r, &p, &q, 10, 50)
            .unwrap()
            .scalar()
            .unwrap()
    };
    assert!((get(Request::new(Divergence::Kl).reduction(Reduction::Sum)) - sum).abs() < 1e-12);
    assert!(
        (get(Request::new(Divergence::Kl).reduction(Reduction::MeanOverRows)) - sum / 10.0).abs()
            < 1e-12
    );
    let bits = kldiv::compute_slices(
        &Request::new(Divergence::Kl).unit(Unit::Bits),
        &p,
        &q,
        10,
        50,
    )
    .unwrap();
    for (b, n) in bits.per_row().unwrap().iter().zip(&rows) {
        assert!((b * std::f64::consts::LN_2 - n).abs() < 1e-12);
    }
}

#[test]
fn non_contiguous_views_are_accepted() {
    let mut rng = common::Rng::new(14);
    let (p, q) = common::prob_pair(&mut rng, 6, 40, 0.3);
    let (p, q) = (common::to_f32(&p), common::to_f32(&q));
    let pa = ndarray::Array2::from_shape_vec((6, 40), p.clone()).unwrap();
    let qa = ndarray::Array2::from_shape_vec((6, 40), q.clone()).unwrap();
    // Fortran-order copies of the same data: a transposed view of the transpose.
    let pt = pa.t().to_owned();
    let qt = qa.t().to_owned();
    let req = Request::new(Divergence::Kl);
    let a = kldiv::compute(&req, pa.view(), qa.view()).unwrap();
    let b = kldiv::compute(&req, pt.t(), qt.t()).unwrap();
    assert_eq!(a, b);
    // Every other row: a strided view.
    let c = kldiv::compute(
        &req,
        pa.slice(ndarray::s![..;2, ..]),
        qa.slice(ndarray::s![..;2, ..]),
    )
    .unwrap();
    let a = a.per_row().unwrap();
    assert_eq!(c.per_row().unwrap(), &[a[0], a[2], a[4]]);
}
