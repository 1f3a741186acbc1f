//! Every CPU path (f64 reference, scalar f32, AVX2, AVX-512, auto) against the textbook f64
//! reference on random data, for every divergence, input form and element type.
//!
//! Tolerance: relative 1e-5 per row (the crate's accuracy target for f32 inputs) plus 1e-12
//! absolute, only so that rows whose value is exactly 0 compare. Inputs are the same values
//! for the engine and the reference (f16/bf16/f32 data is widened exactly to f64).

mod common;
use common::*;
use kldiv::{bf16, f16, CpuEngine, Divergence, Element, InputForm, Request, SimdLevel};

const LEVELS: [SimdLevel; 5] = [
    SimdLevel::Reference,
    SimdLevel::Scalar,
    SimdLevel::Avx2,
    SimdLevel::Avx512,
    SimdLevel::Auto,
];

fn engines() -> Vec<(SimdLevel, CpuEngine)> {
    LEVELS
        .iter()
        .filter_map(|&l| CpuEngine::with_level(l).ok().map(|e| (l, e)))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn check<T: Element>(
    what: &str,
    conv: fn(f64) -> T,
    form: Form,
    p64: &[f64],
    q64: &[f64],
    rows: usize,
    cols: usize,
    normalize: bool,
) {
    let p: Vec<T> = p64.iter().map(|&x| conv(x)).collect();
    let q: Vec<T> = q64.iter().map(|&x| conv(x)).collect();
    let pe: Vec<f64> = p.iter().map(|x| x.to_f64()).collect();
    let qe: Vec<f64> = q.iter().map(|x| x.to_f64()).collect();
    for (level, engine) in engines() {
        let what = format!("{what} {level:?}");
        check_all_divergences(&what, form, &pe, &qe, cols, normalize, &mut |req| {
            engine.per_row(req, &p, &q, rows, cols)
        });
    }
}

// (40, 16) and (37, 33) reach the lane-per-row path for short rows (tasks hold whole
// groups of 16 rows), with leftover rows.
const SHAPES: [(usize, usize); 8] = [
    (1, 1),
    (3, 17),
    (40, 16),
    (37, 33),
    (5, 100),
    (4, 1000),
    (3, 4097),
    (2, 70_001),
];

#[test]
fn probabilities_f32_all_paths() {
    let mut rng = Rng::new(1);
    for (rows, cols) in SHAPES {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.1);
        check("f32", |x| x as f32, Form::Probs, &p, &q, rows, cols, false);
        // Far-apart rows exercise the direct branch of the t-term.
        let (p, q) = prob_pair(&mut rng, rows, cols, 2.0);
        check(
            "f32 far",
            |x| x as f32,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
    }
}

#[test]
fn probabilities_normalized_on_request() {
    let mut rng = Rng::new(2);
    for (rows, cols) in SHAPES {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.5);
        // Scale rows far from 1: only Normalization::Normalize accepts them.
        let p: Vec<f64> = p
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1.0 + (i / cols) as f64))
            .collect();
        let q: Vec<f64> = q.iter().map(|x| x * 0.37).collect();
        check(
            "f32 normalize",
            |x| x as f32,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            true,
        );
    }
}

#[test]
fn probabilities_other_dtypes() {
    let mut rng = Rng::new(3);
    // (40, 16) and (37, 33): f16 / bf16 short rows are widened, then go a lane per row.
    for (rows, cols) in [(3, 17), (40, 16), (37, 33), (4, 1000), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        check("f64", |x| x, Form::Probs, &p, &q, rows, cols, false);
        check("f16", f16::from_f64, Form::Probs, &p, &q, rows, cols, false);
        check(
            "bf16",
            bf16::from_f64,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
    }
}

#[test]
fn logits_and_logprobs_all_paths() {
    let mut rng = Rng::new(4);
    for (rows, cols) in SHAPES {
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        check("f32", |x| x as f32, Form::Logits, &a, &b, rows, cols, false);
        check(
            "bf16",
            bf16::from_f64,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
        // Log-probabilities: normalised in f64 first, then rounded (sums stay within 1e-4).
        let norm = |v: &[f64]| log_softmax_rows(v, cols);
        check(
            "f32",
            |x| x as f32,
            Form::LogProbs,
            &norm(&a),
            &norm(&b),
            rows,
            cols,
            false,
        );
        check("f64", |x| x, Form::Logits, &a, &b, rows, cols, false);
    }
}

/// Masked vocabularies: P is −inf on ~20% of columns, Q on half of those (so KL(P‖Q) is
/// finite and KL(Q‖P) infinite), mixed with finite logits in long rows.
#[test]
fn masked_logits_all_paths() {
    let mut rng = Rng::new(8);
    for (rows, cols) in [(3, 17), (40, 16), (37, 33), (4, 1000), (2, 70_001)] {
        let (mut a, mut b) = logit_pair(&mut rng, rows, cols, 0.5);
        for i in 0..a.len() {
            if rng.uniform() < 0.2 {
                a[i] = f64::NEG_INFINITY;
                if rng.uniform() < 0.5 {
                    b[i] = f64::NEG_INFINITY;
                }
            }
        }
        check(
            "f32 masked",
            |x| x as f32,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
    }
}

/// Near-identical rows: KL ~ 1e-9, where a naive f32 Σ p·ln(p/q) keeps no correct digit.
/// The t-term form keeps the 1e-5 relative bound for probabilities.
#[test]
fn near_identical_probability_rows_keep_relative_accuracy() {
    let mut rng = Rng::new(5);
    for (rows, cols) in [(4, 1000), (2, 32_000), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 1e-4);
        let pf = to_f32(&p);
        let qf = to_f32(&q);
        let (pe, qe) = (to_f64(&pf), to_f64(&qf));
        for (level, engine) in engines() {
            for (div, rdiv) in [
                (Divergence::Kl, Div::Kl),
                (Divergence::SymmetricKl, Div::Symmetric),
                (Divergence::JensenShannon, Div::Js),
            ] {
                let req = Request::new(div);
                let got = engine.per_row(&req, &pf, &qf, rows, cols).unwrap();
                for r in 0..rows {
                    let want = reference(
                        rdiv,
                        Form::Probs,
                        &pe[r * cols..(r + 1) * cols],
                        &qe[r * cols..(r + 1) * cols],
                        false,
                    );
                    assert!(want < 1e-6, "test data is near-identical");
                    assert!(
                        close(got[r], want.max(0.0), 1e-5, 1e-15),
                        "{level:?} {div:?} row {r}: got {:e} want {want:e}",
                        got[r]
                    );
                }
            }
        }
    }
}

/// Near-identical logits (b = a + 1e-4·N, KL ~ 5e-9): a log-sum-exp difference would keep
/// no digit here; the ψ form keeps the 1e-5 relative bound.
#[test]
fn near_identical_logits_absolute_bound() {
    let mut rng = Rng::new(6);
    let (rows, cols) = (4, 32_000);
    let (a, b) = logit_pair(&mut rng, rows, cols, 1e-4);
    let (af, bf) = (to_f32(&a), to_f32(&b));
    let (ae, be) = (to_f64(&af), to_f64(&bf));
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for (level, engine) in engines() {
        // Reverse KL through the same identity with the roles swapped.
        let rev = engine
            .per_row(
                &Request::new(Divergence::ReverseKl).input(InputForm::Logits),
                &bf,
                &af,
                rows,
                cols,
            )
            .unwrap();
        let got = engine.per_row(&req, &af, &bf, rows, cols).unwrap();
        for r in 0..rows {
            let want =
                reference_logits_kl(&ae[r * cols..(r + 1) * cols], &be[r * cols..(r + 1) * cols]);
            assert!(want < 1e-7, "test data is near-identical");
            assert!(
                close(got[r], want, 1e-5, 0.0),
                "{level:?} row {r}: got {:e} want {want:e}",
                got[r]
            );
            assert!(
                close(rev[r], want, 1e-5, 0.0),
                "{level:?} reverse row {r}: got {:e} want {want:e}",
                rev[r]
            );
        }
    }
}

/// Long rows: blocked sums keep the error flat; a 4M-column row stays within 1e-5.
#[test]
fn long_rows_do_not_accumulate_error() {
    let mut rng = Rng::new(7);
    let (rows, cols) = (1, 4_000_000);
    let (p, q) = prob_pair(&mut rng, rows, cols, 0.1);
    check_one_kl(&p, &q, rows, cols);
}

fn check_one_kl(p: &[f64], q: &[f64], rows: usize, cols: usize) {
    let (pf, qf) = (to_f32(p), to_f32(q));
    let (pe, qe) = (to_f64(&pf), to_f64(&qf));
    let got = CpuEngine::new()
        .per_row(&Request::new(Divergence::Kl), &pf, &qf, rows, cols)
        .unwrap();
    for r in 0..rows {
        let want = reference(
            Div::Kl,
            Form::Probs,
            &pe[r * cols..(r + 1) * cols],
            &qe[r * cols..(r + 1) * cols],
            false,
        );
        assert!(
            close(got[r], want, 1e-5, 0.0),
            "row {r}: {} vs {want}",
            got[r]
        );
    }
}

/// Groups of short rows are finished in their SIMD lanes (one row per lane): units,
/// `AsGiven`, the sum check and the JS bound must come out as they do row by row.
#[test]
fn short_row_groups_finish_like_single_rows() {
    use kldiv::{Error, Normalization, Side, Unit};
    let mut rng = Rng::new(8);
    let rows = 48;
    for cols in [1, 5, 8, 16, 17, 64] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        // Rows scaled by 0.9…1.1: literal sums, negative values allowed.
        let scale = |v: &[f64], k: f64| -> Vec<f64> {
            v.iter()
                .enumerate()
                .map(|(i, x)| x * (1.0 + k * ((i / cols) as f64 / rows as f64 - 0.5)))
                .collect()
        };
        let (ps, qs) = (scale(&p, 0.2), scale(&q, -0.2));
        let (pf, qf, psf, qsf) = (to_f32(&p), to_f32(&q), to_f32(&ps), to_f32(&qs));
        let (pe, qe, pse, qse) = (to_f64(&pf), to_f64(&qf), to_f64(&psf), to_f64(&qsf));
        for (level, engine) in engines() {
            let what = format!("{level:?} {rows}x{cols}");
            let bits = engine
                .per_row(
                    &Request::new(Divergence::Kl).unit(Unit::Bits),
                    &pf,
                    &qf,
                    rows,
                    cols,
                )
                .unwrap();
            let literal = engine
                .per_row(
                    &Request::new(Divergence::Kl).normalization(Normalization::AsGiven),
                    &psf,
                    &qsf,
                    rows,
                    cols,
                )
                .unwrap();
            for r in 0..rows {
                let span = r * cols..(r + 1) * cols;
                let (a, b) = (&pe[span.clone()], &qe[span.clone()]);
                let want = reference(Div::Kl, Form::Probs, a, b, false) / std::f64::consts::LN_2;
                assert!(close(bits[r], want, 1e-5, 1e-12), "{what} bits row {r}");
                let (a, b) = (&pse[span.clone()], &qse[span]);
                let want: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| if *x > 0.0 { x * (x / y).ln() } else { 0.0 })
                    .sum();
                let size: f64 = a.iter().zip(b).map(|(x, y)| (x * (x / y).ln()).abs()).sum();
                assert!(
                    close(literal[r], want, 1e-5, 1e-6 * size),
                    "{what} as given row {r}: {} vs {want}",
                    literal[r]
                );
            }

            // Rows 21 and 37 are off from 1 by 3e-4 (beyond the f32 default 1e-4), row 30
            // by 5e-5 (within): the error names row 21, P side.
            let mut off = pf.clone();
            for (row, k) in [(21, 1.0 + 3e-4), (30, 1.0 + 5e-5), (37, 1.0 + 3e-4)] {
                for x in &mut off[row * cols..(row + 1) * cols] {
                    *x = (*x as f64 * k) as f32;
                }
            }
            match engine.per_row(&Request::new(Divergence::Kl), &off, &qf, rows, cols) {
                Err(Error::NotNormalized {
                    side: Side::P,
                    row: 21,
                    ..
                }) => {}
                other => panic!("{what}: {other:?}"),
            }
            let mut fixed = off.clone();
            for x in &mut fixed[21 * cols..22 * cols] {
                *x /= 1.0 + 3e-4;
            }
            for x in &mut fixed[37 * cols..38 * cols] {
                *x /= 1.0 + 3e-4;
            }
            assert!(
                engine
                    .per_row(&Request::new(Divergence::Kl), &fixed, &qf, rows, cols)
                    .is_ok(),
                "{what}: row 30 is within the tolerance"
            );

            let mut q_off = qf.clone();
            for x in &mut q_off[25 * cols..26 * cols] {
                *x = (*x as f64 * (1.0 - 3e-4)) as f32;
            }
            assert!(
                matches!(
                    engine.per_row(&Request::new(Divergence::Kl), &pf, &q_off, rows, cols),
                    Err(Error::NotNormalized {
                        side: Side::Q,
                        row: 25,
                        ..
                    })
                ),
                "{what}"
            );

            // A row without mass is an error even when sums are taken as given.
            let mut empty = psf.clone();
            empty[33 * cols..34 * cols].fill(0.0);
            let as_given = Request::new(Divergence::Kl).normalization(Normalization::AsGiven);
            assert!(
                matches!(
                    engine.per_row(&as_given, &empty, &qsf, rows, cols),
                    Err(Error::NoMass {
                        side: Side::P,
                        row: 33
                    })
                ),
                "{what}"
            );
        }
    }

    // Disjoint supports: JS is exactly ln 2 (1 bit) and must not exceed it after rounding.
    for cols in [2, 4, 16, 64] {
        let p: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 2 == 0 { 2.0 / cols as f32 } else { 0.0 })
            .collect();
        let q: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 2 == 1 { 2.0 / cols as f32 } else { 0.0 })
            .collect();
        for (level, engine) in engines() {
            for (unit, max) in [(Unit::Nats, std::f64::consts::LN_2), (Unit::Bits, 1.0)] {
                let req = Request::new(Divergence::JensenShannon).unit(unit);
                let got = engine.per_row(&req, &p, &q, rows, cols).unwrap();
                for v in got {
                    assert!(
                        v <= max && v >= max * (1.0 - 1e-6),
                        "{level:?} {unit:?} {cols} columns: {v:e}"
                    );
                }
            }
        }
    }
}
