//! Two properties the engines must hold whatever the data looks like:
//! - a Fortran-order file gives the same per-row values and the same error locations as the
//!   C-order file of the same array, for every input form and divergence, rank 2 to 4;
//! - rows of logits with any finite values (magnitudes up to 1e30 mixed with ordinary ones)
//!   match the f64 reference on the same stored values within the documented 1e-5, for
//!   every divergence, on every CPU path and on the GPU.

mod common;
use common::files::{f32_npy_fortran, f32_npy_shaped, tmp};
use common::{
    close, log_softmax_rows, logit_pair, prob_pair, reference, to_f32, to_f64, Div, Form, ALL_DIVS,
};
use kldiv::io::tensor::TensorFile;
use kldiv::{CpuEngine, Divergence, Error, InputForm, NanPolicy, Request, SimdLevel};
use proptest::prelude::*;

const FORMS: [InputForm; 3] = [
    InputForm::Probabilities,
    InputForm::LogProbabilities,
    InputForm::Logits,
];

/// Values of one input form for `rows × cols`, from a seed.
fn data(form: InputForm, rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = common::Rng::new(seed);
    match form {
        InputForm::Probabilities => to_f32(&prob_pair(&mut rng, rows, cols, 0.5).0),
        InputForm::LogProbabilities => {
            let (a, _) = logit_pair(&mut rng, rows, cols, 0.5);
            to_f32(&log_softmax_rows(&a, cols))
        }
        InputForm::Logits => to_f32(&logit_pair(&mut rng, rows, cols, 0.5).0),
    }
}

/// What a file yields through the reader and the CPU engine: values, or the error.
fn through_file(path: &std::path::Path, q: &[f32], req: &Request) -> Result<Vec<f64>, Error> {
    let t = TensorFile::open(path.to_str().unwrap())?;
    let p = t.rows_as::<f32>(0, t.rows());
    CpuEngine::new().per_row(req, &p, q, t.rows(), t.cols())
}

fn describe(r: &Result<Vec<f64>, Error>) -> String {
    match r {
        Ok(v) => format!("{v:?}"),
        Err(e) => e.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn fortran_and_c_order_files_agree(
        lead in prop::collection::vec(1usize..5, 1..4),
        cols in 1usize..40,
        seed in 0u64..1000,
        bad_at in prop::option::of(0usize..10_000),
    ) {
        let mut shape = lead.clone();
        shape.push(cols);
        let rows: usize = lead.iter().product();
        for form in FORMS {
            let mut p = data(form, rows, cols, seed);
            let q = data(form, rows, cols, seed + 1);
            if let Some(i) = bad_at {
                let n = p.len();
                p[i % n] = f32::NAN;
            }
            let (c, f) = (tmp("lay_c.npy"), tmp("lay_f.npy"));
            f32_npy_shaped(&c, &shape, &p);
            f32_npy_fortran(&f, &shape, &p);
            for (div, _) in ALL_DIVS {
                for nan in [NanPolicy::Error, NanPolicy::Propagate] {
                    let req = Request::new(div).input(form).nan(nan);
                    let from_c = through_file(&c, &q, &req);
                    let from_f = through_file(&f, &q, &req);
                    let (a, b) = (describe(&from_c), describe(&from_f));
                    prop_assert_eq!(&a, &b, "{:?} {:?} {:?}", shape, form, div);
                    // And the C file is the array itself.
                    let direct = CpuEngine::new().per_row(&req, &p, &q, rows, cols);
                    prop_assert_eq!(&a, &describe(&direct));
                }
            }
        }
    }
}

/// A logit of any magnitude: mostly ordinary, sometimes huge (±1e4 … ±1e30), sometimes −inf.
fn logit() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -8.0f32..8.0,
        1 => prop::sample::select(vec![1e4f32, -1e4, 1e8, -1e8, 1e20, -1e20, 3e10, 1e30, -1e30]),
        1 => (-30.0f32..30.0).prop_map(|x| x * 1e3),
        1 => Just(f32::NEG_INFINITY),
    ]
}

/// The f64 reference for rows of logits (log-softmax in f64 on the stored values). The
/// Kullback–Leibler forms keep the log domain (la − lb), as a probability ratio would
/// lose the huge ones.
fn reference_row(div: Div, a: &[f64], b: &[f64]) -> f64 {
    // (v − max) − ln Σ e^(v − max): at 1e30, max + ln Σ would round the ln away.
    let lsm = |x: &[f64]| {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let ln_s = x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        x.iter().map(|v| (v - m) - ln_s).collect::<Vec<f64>>()
    };
    let (la, lb) = (lsm(a), lsm(b));
    let kl = |la: &[f64], lb: &[f64]| -> f64 {
        let mut s = 0.0;
        for (&x, &y) in la.iter().zip(lb) {
            if x > f64::NEG_INFINITY {
                if y == f64::NEG_INFINITY {
                    return f64::INFINITY;
                }
                s += x.exp() * (x - y);
            }
        }
        s
    };
    let cross = |la: &[f64], lb: &[f64]| -> f64 {
        let mut s = 0.0;
        for (&x, &y) in la.iter().zip(lb) {
            if x > f64::NEG_INFINITY {
                if y == f64::NEG_INFINITY {
                    return f64::INFINITY;
                }
                s -= x.exp() * y;
            }
        }
        s
    };
    match div {
        Div::Kl => kl(&la, &lb),
        Div::Reverse => kl(&lb, &la),
        Div::Symmetric => kl(&la, &lb) + kl(&lb, &la),
        Div::CrossEntropy => cross(&la, &lb),
        Div::Entropy => cross(&la, &la),
        Div::Js => {
            let p: Vec<f64> = la.iter().map(|x| x.exp()).collect();
            let q: Vec<f64> = lb.iter().map(|x| x.exp()).collect();
            reference(Div::Js, Form::Probs, &p, &q, false)
        }
    }
}

/// An engine's per-row values for a request on `rows × cols` inputs.
type RunFn<'a> = &'a dyn Fn(&Request, &[f32], &[f32], usize, usize) -> Result<Vec<f64>, Error>;

fn check_magnitudes(
    what: &str,
    run: RunFn<'_>,
    a: &[f32],
    b: &[f32],
    cols: usize,
) -> Result<(), TestCaseError> {
    let rows = a.len() / cols;
    let (ae, be) = (to_f64(a), to_f64(b));
    for (div, rdiv) in ALL_DIVS {
        let req = Request::new(div).input(InputForm::Logits);
        // Rows without any finite logit on a side have no distribution: an error then.
        let no_mass = |v: &[f64]| v.iter().all(|x| *x == f64::NEG_INFINITY);
        let bad_row = (0..rows).find(|&r| {
            no_mass(&ae[r * cols..(r + 1) * cols])
                || (div != Divergence::Entropy && no_mass(&be[r * cols..(r + 1) * cols]))
        });
        let got = run(&req, a, b, rows, cols);
        if let Some(r) = bad_row {
            match got {
                Err(Error::NoMass { row, .. }) => prop_assert_eq!(row, r),
                other => prop_assert!(
                    false,
                    "{} {:?}: want NoMass at row {}, got {:?}",
                    what,
                    div,
                    r,
                    other
                ),
            }
            continue;
        }
        let got = got.map_err(|e| TestCaseError::fail(format!("{what} {div:?}: {e}")))?;
        for r in 0..rows {
            let want = reference_row(
                rdiv,
                &ae[r * cols..(r + 1) * cols],
                &be[r * cols..(r + 1) * cols],
            );
            let want = if rdiv == Div::Js {
                want.clamp(0.0, std::f64::consts::LN_2)
            } else {
                want.max(0.0)
            };
            prop_assert!(
                close(got[r], want, 1e-5, 1e-12),
                "{} {:?} row {}: got {:e} want {:e}\na = {:?}\nb = {:?}",
                what,
                div,
                r,
                got[r],
                want,
                &a[r * cols..(r + 1) * cols],
                &b[r * cols..(r + 1) * cols]
            );
        }
    }
    Ok(())
}

fn cpu_levels() -> Vec<(SimdLevel, CpuEngine)> {
    [
        SimdLevel::Reference,
        SimdLevel::Scalar,
        SimdLevel::Avx2,
        SimdLevel::Avx512,
        SimdLevel::Auto,
    ]
    .into_iter()
    .filter_map(|l| CpuEngine::with_level(l).ok().map(|e| (l, e)))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn logits_of_any_finite_magnitude_match_the_reference(
        (rows, cols, a, b, close_rows) in (1usize..4, 1usize..700).prop_flat_map(|(r, c)| (
            Just(r),
            Just(c),
            prop::collection::vec(logit(), r * c),
            prop::collection::vec(logit(), r * c),
            any::<bool>(),
        )),
    ) {
        let _ = rows;
        // Half the cases: Q close to P (the same large values, small noise elsewhere).
        let b: Vec<f32> = if close_rows {
            a.iter()
                .zip(&b)
                .map(|(&x, &y)| if x.abs() < 100.0 && y.is_finite() { x + 0.01 * (y / 8.0) } else { x })
                .collect()
        } else {
            b
        };
        for (level, e) in cpu_levels() {
            check_magnitudes(&format!("{level:?}"), &|req, p, q, r, c| e.per_row(req, p, q, r, c), &a, &b, cols)?;
        }
        #[cfg(feature = "gpu")]
        if let Some(g) = gpu() {
            check_magnitudes("gpu", &|req, p, q, r, c| g.per_row(req, p, q, r, c), &a, &b, cols)?;
        }
    }
}

#[cfg(feature = "gpu")]
fn gpu() -> Option<&'static kldiv::gpu::GpuEngine> {
    static ENGINE: std::sync::OnceLock<Option<kldiv::gpu::GpuEngine>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            match kldiv::gpu::GpuEngine::new() {
                Ok(e) => Some(e),
                Err(e) => {
                    assert!(!required, "no GPU adapter in CI: {e}");
                    None
                }
            }
        })
        .as_ref()
}

/// The examples, exactly.
#[test]
fn huge_logit_examples() {
    let a = [1e20f32, 0.0, 0.0, 0.0];
    let b = [0.0f32, 1.0, 2.0, 3.0];
    let want = 3.0 + (1.0 + (-1f64).exp() + (-2f64).exp() + (-3f64).exp()).ln();
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for (level, e) in cpu_levels() {
        let got = e.per_row(&req, &a, &b, 1, 4).unwrap()[0];
        // f32 sums on the SIMD levels, f64 on the reference.
        let tol = if level == SimdLevel::Reference {
            1e-12
        } else {
            1e-6
        };
        assert!(close(got, want, tol, 0.0), "{level:?}: {got} vs {want}");
    }
    #[cfg(feature = "gpu")]
    if let Some(g) = gpu() {
        let got = g.per_row(&req, &a, &b, 1, 4).unwrap()[0];
        assert!(close(got, want, 1e-6, 0.0), "gpu: {got} vs {want}");
    }
    // f64 Jensen–Shannon at 3e10 (false "no mass" errors before).
    let a = [3e10f64, 1.0, 2.0, 3.0];
    let b = [0.0f64, 1.0, 2.0, 3.0];
    let req = Request::new(Divergence::JensenShannon).input(InputForm::Logits);
    let got = CpuEngine::new().per_row(&req, &a, &b, 1, 4).unwrap()[0];
    let want = reference_row(Div::Js, &a, &b);
    assert!(close(got, want, 1e-12, 0.0), "{got} vs {want}");
}
