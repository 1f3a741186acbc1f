//! The GPU engine against the textbook f64 reference and against the CPU engine, on Mesa
//! lavapipe in CI. Without any adapter these tests skip with one line, except in CI
//! (CI=true or KLDIV_REQUIRE_GPU=1), where a missing Vulkan adapter fails the run.
#![cfg(feature = "gpu")]

mod common;
use common::*;
use kldiv::gpu::GpuEngine;
use kldiv::{
    bf16, f16, BadKind, CpuEngine, Divergence, Element, Error, InputForm, NanPolicy, Request, Side,
};
use std::sync::OnceLock;

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("KLDIV_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// One engine for the whole test binary (device and pipelines are built once).
fn engine() -> Option<&'static GpuEngine> {
    static ENGINE: OnceLock<Option<GpuEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| match GpuEngine::new() {
            Ok(e) => {
                let a = e.adapter();
                eprintln!("GPU tests on {} ({}, {})", a.name, a.backend, a.device_type);
                if required() {
                    assert_eq!(
                        a.backend, "Vulkan",
                        "CI must run the GPU tests on Vulkan (lavapipe)"
                    );
                }
                Some(e)
            }
            Err(e) => {
                assert!(!required(), "no GPU adapter in CI: {e}");
                eprintln!("skipping GPU tests: {e}");
                None
            }
        })
        .as_ref()
}

/// A second engine that streams inputs in small chunks (forces chunking and column splits).
fn chunked() -> Option<&'static GpuEngine> {
    static ENGINE: OnceLock<Option<GpuEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            engine()?;
            let mut e = GpuEngine::new().ok()?;
            e.set_chunk_bytes(64 * 1024);
            Some(e)
        })
        .as_ref()
}

/// GPU vs reference for every divergence, 1e-5 relative (the same bound as the CPU).
#[allow(clippy::too_many_arguments)]
fn check<T: Element>(
    gpu: &GpuEngine,
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
    // The GPU computes in f32: for f64 inputs the reference sees the f32-rounded values.
    let widen = |v: &[T]| -> Vec<f64> {
        v.iter()
            .map(|x| {
                if T::DTYPE == kldiv::Dtype::F64 {
                    x.to_f64() as f32 as f64
                } else {
                    x.to_f64()
                }
            })
            .collect()
    };
    let (pe, qe) = (widen(&p), widen(&q));
    check_all_divergences(what, form, &pe, &qe, cols, normalize, &mut |req| {
        gpu.per_row(req, &p, &q, rows, cols)
    });
}

const SHAPES: [(usize, usize); 6] = [
    (1, 1),
    (40, 16),
    (300, 64),
    (5, 1000),
    (3, 4097),
    (2, 70_001),
];

#[test]
fn probabilities_match_the_reference() {
    let Some(gpu) = engine() else { return };
    let mut rng = Rng::new(31);
    for (rows, cols) in SHAPES {
        for sigma in [0.1, 2.0] {
            let (p, q) = prob_pair(&mut rng, rows, cols, sigma);
            check(
                gpu,
                "f32",
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
}

#[test]
fn element_types_match_the_reference() {
    let Some(gpu) = engine() else { return };
    let mut rng = Rng::new(32);
    for (rows, cols) in [(40, 16), (3, 4097), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        check(
            gpu,
            "f16",
            f16::from_f64,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
        check(
            gpu,
            "bf16",
            bf16::from_f64,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
        check(gpu, "f64", |x| x, Form::Probs, &p, &q, rows, cols, false);
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        check(
            gpu,
            "bf16",
            bf16::from_f64,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
        check(
            gpu,
            "f16",
            f16::from_f64,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
    }
}

#[test]
fn logits_and_logprobs_match_the_reference() {
    let Some(gpu) = engine() else { return };
    let mut rng = Rng::new(33);
    for (rows, cols) in SHAPES {
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        check(
            gpu,
            "f32",
            |x| x as f32,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
        let norm = |v: &[f64]| log_softmax_rows(v, cols);
        check(
            gpu,
            "f32",
            |x| x as f32,
            Form::LogProbs,
            &norm(&a),
            &norm(&b),
            rows,
            cols,
            false,
        );
        // Masked vocabularies: −inf in P on 20%, in Q on half of those.
        let (mut a, mut b) = (a, b);
        for i in 0..a.len() {
            if rng.uniform() < 0.2 {
                a[i] = f64::NEG_INFINITY;
                if rng.uniform() < 0.5 {
                    b[i] = f64::NEG_INFINITY;
                }
            }
        }
        if a.chunks(cols).all(|r| r.iter().any(|x| x.is_finite())) {
            check(
                gpu,
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
}

#[test]
fn normalisation_and_two_pass_jensen_shannon() {
    let Some(gpu) = engine() else { return };
    let mut rng = Rng::new(34);
    for (rows, cols) in [(40, 16), (5, 1000), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.5);
        let p: Vec<f64> = p.iter().map(|x| x * 3.0).collect();
        let q: Vec<f64> = q.iter().map(|x| x * 0.37).collect();
        check(
            gpu,
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

/// Chunked streaming (64 KiB chunks: many chunks, and rows split across chunks) gives the
/// same per-row values as one chunk.
#[test]
fn chunked_inputs_agree_with_whole_inputs() {
    let (Some(gpu), Some(small)) = (engine(), chunked()) else {
        return;
    };
    let mut rng = Rng::new(35);
    for (rows, cols, form) in [
        (3000, 16, Form::Probs),
        (50, 1000, Form::Probs),
        (2, 70_001, Form::Probs),
        (3, 40_000, Form::Logits),
    ] {
        let (p, q) = if form == Form::Probs {
            prob_pair(&mut rng, rows, cols, 0.3)
        } else {
            logit_pair(&mut rng, rows, cols, 0.3)
        };
        let (p, q) = (to_f32(&p), to_f32(&q));
        let input = if form == Form::Probs {
            InputForm::Probabilities
        } else {
            InputForm::Logits
        };
        for div in [Divergence::Kl, Divergence::JensenShannon] {
            let req = Request::new(div).input(input);
            let a = gpu.per_row(&req, &p, &q, rows, cols).unwrap();
            let b = small.per_row(&req, &p, &q, rows, cols).unwrap();
            let st = small.last_call();
            assert!(st.chunks > 2, "chunking was not exercised");
            assert!(
                st.bytes_uploaded >= (p.len() * 8) as u64 && st.bytes_read_back > 0,
                "{st:?}"
            );
            if small.adapter().timestamps {
                assert!(st.kernel_ns.is_some_and(|ns| ns > 0), "{st:?}");
            }
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 1e-6 * x.abs() + 1e-12,
                    "{form:?} {div:?}: {x} vs {y}"
                );
            }
        }
    }
}

/// GPU ≍ CPU on the edge cases: identical results where the CPU gives exact answers
/// (0, inf, errors), 1e-5 elsewhere.
#[test]
fn edge_cases_match_the_cpu_engine() {
    let Some(gpu) = engine() else { return };
    let cpu = CpuEngine::new();
    let n = 300;
    let base = vec![1.0f32 / n as f32; n];
    let mut zp = base.clone();
    zp[3] = 0.0;
    zp[4] += 1.0 / n as f32;
    let mut zq = base.clone();
    zq[7] = 0.0;
    zq[8] += 1.0 / n as f32;
    let mut tiny = base.clone();
    tiny[10] += tiny[9] - 1e-30;
    tiny[9] = 1e-30;
    let mut nan = base.clone();
    nan[11] = f32::NAN;
    let mut neg = base.clone();
    neg[12] = -0.001;
    neg[13] += 0.001;
    let cases: Vec<(&str, &Vec<f32>, &Vec<f32>)> = vec![
        ("identical", &base, &base),
        ("zero in p", &zp, &base),
        ("zero in q", &base, &zq),
        ("zeros in both", &zp, &zq),
        ("tiny value", &tiny, &base),
    ];
    for div in [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
        Divergence::CrossEntropy,
        Divergence::Entropy,
    ] {
        let req = Request::new(div);
        for (name, p, q) in &cases {
            let g = gpu.per_row(&req, p, q, 1, n).unwrap()[0];
            let c = cpu.per_row(&req, p, q, 1, n).unwrap()[0];
            assert!(
                g == c || (g - c).abs() <= 1e-5 * c.abs(),
                "{div:?} {name}: gpu {g} cpu {c}"
            );
        }
        for (p, q, kind, side) in [
            (&nan, &base, BadKind::NotANumber, Side::P),
            (&base, &neg, BadKind::Negative, Side::Q),
        ] {
            if div == Divergence::Entropy && side == Side::Q {
                continue; // entropy does not read Q
            }
            let e = gpu.per_row(&req, p, q, 1, n).unwrap_err();
            let want_col = if kind == BadKind::NotANumber { 11 } else { 12 };
            assert!(
                matches!(e, Error::BadValue { kind: k, side: s, row: 0, col, .. } if k == kind && s == side && col == want_col),
                "{div:?}: {e}"
            );
        }
    }
    // NaN propagation, errors naming the right row among many.
    let rows = 10;
    let mut p = vec![1.0f32 / n as f32; rows * n];
    p[7 * n + 5] = f32::NAN;
    let q = vec![1.0f32 / n as f32; rows * n];
    let e = gpu
        .per_row(&Request::new(Divergence::Kl), &p, &q, rows, n)
        .unwrap_err();
    assert!(matches!(e, Error::BadValue { row: 7, col: 5, .. }), "{e}");
    let v = gpu
        .per_row(
            &Request::new(Divergence::Kl).nan(NanPolicy::Propagate),
            &p,
            &q,
            rows,
            n,
        )
        .unwrap();
    assert!(v[7].is_nan() && v.iter().filter(|x| x.is_nan()).count() == 1);
    // Rows off from 1, empty input.
    let half = vec![0.5f32 / n as f32; n];
    assert!(matches!(
        gpu.per_row(&Request::new(Divergence::Kl), &half, &base, 1, n),
        Err(Error::NotNormalized { side: Side::P, .. })
    ));
    assert!(matches!(
        gpu.per_row::<f32>(&Request::new(Divergence::Kl), &[], &[], 0, 3),
        Err(Error::Empty { .. })
    ));
    // −inf logits.
    let inf = f32::NEG_INFINITY;
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let a = [1.0f32, inf, 0.5, 0.2];
    let b = [1.0f32, 0.3, 0.5, inf];
    assert_eq!(gpu.per_row(&req, &a, &b, 1, 4).unwrap()[0], f64::INFINITY);
    let b2 = [1.0f32, 0.3, 0.5, 0.1];
    let g = gpu.per_row(&req, &a, &b2, 1, 4).unwrap()[0];
    let c = cpu.per_row(&req, &a, &b2, 1, 4).unwrap()[0];
    assert!((g - c).abs() <= 1e-5 * c, "{g} vs {c}");
    assert!(matches!(
        gpu.per_row(&req, &[inf, inf], &[0.0, 1.0], 1, 2),
        Err(Error::NoMass { side: Side::P, .. })
    ));
}

/// Near-identical rows (KL ~ 1e-9). The t-term keeps relative accuracy; the Σ(p−q)
/// correction is summed in plain f32 on the GPU (compensated sums are not reliable in
/// WGSL), so the bound there is 1e-5·KL + 2e-6·Σ|p−q| / √cols (f32 rounding of a
/// random-signed sum grows like √cols; measured ≈ 3.5e-7·Σ|p−q|/√cols here).
#[test]
fn near_identical_rows() {
    let Some(gpu) = engine() else { return };
    let mut rng = Rng::new(36);
    let (rows, cols) = (4, 32_000);
    let (p, q) = prob_pair(&mut rng, rows, cols, 1e-4);
    let (pf, qf) = (to_f32(&p), to_f32(&q));
    let got = gpu
        .per_row(&Request::new(Divergence::Kl), &pf, &qf, rows, cols)
        .unwrap();
    let sym = gpu
        .per_row(&Request::new(Divergence::SymmetricKl), &pf, &qf, rows, cols)
        .unwrap();
    for r in 0..rows {
        let a: Vec<f64> = pf[r * cols..(r + 1) * cols]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let b: Vec<f64> = qf[r * cols..(r + 1) * cols]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let want = reference(Div::Kl, Form::Probs, &a, &b, false).max(0.0);
        let l1: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
        assert!(
            close(got[r], want, 1e-5, 2e-6 * l1 / (cols as f64).sqrt()),
            "row {r}: {} vs {want}",
            got[r]
        );
        // Symmetric KL has no linear correction: relative accuracy holds.
        let want_sym = reference(Div::Symmetric, Form::Probs, &a, &b, false);
        assert!(
            close(sym[r], want_sym, 1e-5, 0.0),
            "sym row {r}: {} vs {want_sym}",
            sym[r]
        );
    }
    let (a, b) = logit_pair(&mut rng, rows, cols, 1e-4);
    let (af, bf) = (to_f32(&a), to_f32(&b));
    let got = gpu
        .per_row(
            &Request::new(Divergence::Kl).input(InputForm::Logits),
            &af,
            &bf,
            rows,
            cols,
        )
        .unwrap();
    for r in 0..rows {
        let x: Vec<f64> = af[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let y: Vec<f64> = bf[r * cols..(r + 1) * cols]
            .iter()
            .map(|&v| v as f64)
            .collect();
        let want = reference_logits_kl(&x, &y);
        assert!(
            close(got[r], want, 1e-4, 0.0),
            "logits row {r}: {} vs {want}",
            got[r]
        );
    }
}

/// Inputs already on the GPU: same values as host inputs, with nothing uploaded, through
/// chunked bindings at aligned offsets, and bad values still reported by row and column.
#[test]
fn resident_inputs_match_host_inputs() {
    let (Some(gpu), Some(small)) = (engine(), chunked()) else {
        return;
    };
    let mut rng = Rng::new(37);
    for (rows, cols, form) in [
        (333, 16, Form::Probs),
        (7, 3001, Form::Probs),
        (2, 70_001, Form::Probs),
        (5, 9000, Form::Logits),
    ] {
        let (p, q) = if form == Form::Probs {
            prob_pair(&mut rng, rows, cols, 0.3)
        } else {
            logit_pair(&mut rng, rows, cols, 0.3)
        };
        let input = if form == Form::Probs {
            InputForm::Probabilities
        } else {
            InputForm::Logits
        };
        let (pf, qf) = (to_f32(&p), to_f32(&q));
        let (ph, qh): (Vec<bf16>, Vec<bf16>) = (
            p.iter().map(|&x| bf16::from_f64(x)).collect(),
            q.iter().map(|&x| bf16::from_f64(x)).collect(),
        );
        for e in [gpu, small] {
            for div in [Divergence::Kl, Divergence::JensenShannon] {
                let req = Request::new(div).input(input);
                let host = e.per_row(&req, &pf, &qf, rows, cols).unwrap();
                let (pb, qb) = (e.upload(&pf), e.upload(&qf));
                let dev = e
                    .per_row_resident::<f32>(&req, &pb, &qb, rows, cols)
                    .unwrap();
                // Only per-row data (4 f32) for the second Jensen–Shannon pass crosses to the GPU.
                assert!(
                    e.last_call().bytes_uploaded <= 16 * rows as u64,
                    "{:?}",
                    e.last_call()
                );
                for (a, b) in host.iter().zip(&dev) {
                    assert!(
                        (a - b).abs() <= 1e-6 * a.abs() + 1e-12,
                        "{form:?} {div:?} f32: {a} vs {b}"
                    );
                }
                let host = e.per_row(&req, &ph, &qh, rows, cols).unwrap();
                let (pb, qb) = (e.upload(&ph), e.upload(&qh));
                let dev = e
                    .per_row_resident::<bf16>(&req, &pb, &qb, rows, cols)
                    .unwrap();
                for (a, b) in host.iter().zip(&dev) {
                    assert!(
                        (a - b).abs() <= 1e-6 * a.abs() + 1e-12,
                        "{form:?} {div:?} bf16: {a} vs {b}"
                    );
                }
            }
        }
    }
    let (rows, cols) = (4, 5000);
    let mut p = vec![1.0f32 / cols as f32; rows * cols];
    p[2 * cols + 4321] = f32::NAN;
    let (pb, qb) = (
        gpu.upload(&p),
        gpu.upload(&vec![1.0f32 / cols as f32; rows * cols]),
    );
    let e = gpu
        .per_row_resident::<f32>(&Request::new(Divergence::Kl), &pb, &qb, rows, cols)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::BadValue {
                row: 2,
                col: 4321,
                side: Side::P,
                ..
            }
        ),
        "{e}"
    );
    // A buffer too small for the shape is an error, not an out-of-bounds read.
    let e = gpu
        .per_row_resident::<f32>(&Request::new(Divergence::Kl), &pb, &qb, rows + 1, cols)
        .unwrap_err();
    assert!(matches!(e, Error::InvalidRequest(_)), "{e}");
}

/// The engine can be shared by threads.
#[test]
fn engine_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GpuEngine>();
    let Some(gpu) = engine() else { return };
    let p = vec![1.0f32 / 64.0; 4 * 64];
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    gpu.per_row(&Request::new(Divergence::Kl), &p, &p, 4, 64)
                        .unwrap()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap(), vec![0.0; 4]);
        }
    });
}

/// More workgroups than one grid dimension holds (70,000 rows of 65 columns: one workgroup
/// per row): the 2-D dispatch must still reach every row.
#[test]
fn more_rows_than_one_dispatch_dimension() {
    let Some(gpu) = engine() else { return };
    let (rows, cols) = (70_000, 65);
    let mut rng = Rng::new(38);
    let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
    let (p, q) = (to_f32(&p), to_f32(&q));
    let req = Request::new(Divergence::Kl);
    let g = gpu.per_row(&req, &p, &q, rows, cols).unwrap();
    let c = CpuEngine::new().per_row(&req, &p, &q, rows, cols).unwrap();
    for (r, (a, b)) in g.iter().zip(&c).enumerate() {
        assert!((a - b).abs() <= 1e-5 * b, "row {r}: {a} vs {b}");
    }
}
