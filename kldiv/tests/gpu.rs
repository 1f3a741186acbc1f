//! What only the GPU engine has: chunked streaming against whole inputs, inputs already in
//! GPU buffers, sharing across threads, 2-D dispatch grids. (Its accuracy and edge cases are
//! in the suite every engine runs: `every_engine.rs`.) On Mesa lavapipe in CI; without any
//! adapter these tests skip with one line, except in CI (CI=true or KLDIV_REQUIRE_GPU=1),
//! where a missing Vulkan adapter fails the run.
#![cfg(feature = "gpu")]

mod common;
use common::*;
use kldiv::gpu::GpuEngine;
use kldiv::{bf16, CpuEngine, Divergence, Error, InputForm, Request, Side};
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

/// A whole-input engine and one that streams inputs in small chunks (forcing chunking and
/// column splits), of the test's own: `last_call` is per engine, and a shared engine's last
/// call may be another test's.
fn own_engines() -> Option<(GpuEngine, GpuEngine)> {
    engine()?;
    let mut small = GpuEngine::new().ok()?;
    small.set_chunk_bytes(64 * 1024);
    Some((GpuEngine::new().ok()?, small))
}

#[test]
fn chunked_inputs_agree_with_whole_inputs() {
    let Some((gpu, small)) = own_engines() else {
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

/// Inputs already on the GPU: same values as host inputs, with nothing uploaded, through
/// chunked bindings at aligned offsets, and bad values still reported by row and column.
#[test]
fn resident_inputs_match_host_inputs() {
    let Some((gpu, small)) = own_engines() else {
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
        for e in [&gpu, &small] {
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
                // f64 stays resident where the engine computes f64 (row data: 4 f64).
                if e.computes_f64() {
                    let host = e.per_row(&req, &p, &q, rows, cols).unwrap();
                    let (pb, qb) = (e.upload(&p), e.upload(&q));
                    let dev = e
                        .per_row_resident::<f64>(&req, &pb, &qb, rows, cols)
                        .unwrap();
                    // No input crosses: at most a row-data entry per row of each chunk.
                    let st = e.last_call();
                    assert!(st.bytes_uploaded <= 32 * rows as u64 * st.chunks, "{st:?}");
                    for (a, b) in host.iter().zip(&dev) {
                        assert!(
                            close(*a, *b, 1e-13, 1e-15),
                            "{form:?} {div:?} f64: {a} vs {b}"
                        );
                    }
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

/// Short rows go a tile of rows per workgroup (shaders/shared/tile.wgsl): every width up to
/// the short-row limit, odd and even, with and without whole 16-byte vectors per row, over
/// several tiles and a partial one, in each element type and input form (probabilities
/// rescaled to sum 1), against the exact path on the values the engine sees. Tolerance: the f32 kernels' documented bound
/// (1e-5 relative, with 1e-7 absolute for values near 0); f64 kernels 2e-12 relative.
/// Ordinary rows must stay on the GPU (a tile kernel flagging every row would pass on values
/// alone).
#[test]
fn short_rows_of_every_width_through_tiles() {
    let Some((gpu, _)) = own_engines() else {
        return;
    };
    let exact = CpuEngine::with_level(kldiv::SimdLevel::Reference).unwrap();
    let mut rng = Rng::new(91);
    let rows = 700;
    for cols in [1, 2, 6, 10, 12, 16, 31, 63, 64] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.4);
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        for (input, x, y) in [
            (InputForm::Probabilities, &p, &q),
            (InputForm::Logits, &a, &b),
        ] {
            let (xf, yf) = (to_f32(x), to_f32(y));
            let (xh, yh): (Vec<bf16>, Vec<bf16>) = (
                x.iter().map(|&v| bf16::from_f64(v)).collect(),
                y.iter().map(|&v| bf16::from_f64(v)).collect(),
            );
            let seen = |v: &[bf16]| v.iter().map(|h| h.to_f64()).collect::<Vec<f64>>();
            let (xhf, yhf) = (seen(&xh), seen(&yh));
            for &div in Divergence::ALL {
                // bf16 rows are not normalised to 1e-6: every form is rescaled (which takes
                // the kernels' scaled re-read too).
                let req = Request::new(div)
                    .input(input)
                    .normalization(kldiv::Normalization::Normalize);
                let what = format!("{div:?} {input:?} {rows}x{cols}");
                let check = |got: Vec<f64>, want: Vec<f64>, rel: f64, abs: f64, dtype: &str| {
                    // Logits rows whose rounding bound exceeds the accuracy target (tiny
                    // values of very short rows; every one-column row is 0) are rightly
                    // recomputed by the host: most must still stay on the GPU.
                    let on_cpu = gpu.last_call().rows_on_cpu;
                    match input {
                        InputForm::Probabilities => assert_eq!(on_cpu, 0, "{what} {dtype}"),
                        _ if cols > 1 => {
                            assert!(on_cpu <= rows as u64 / 4, "{what} {dtype}: {on_cpu}")
                        }
                        _ => {}
                    }
                    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            close(*g, *w, rel, abs),
                            "{what} {dtype} row {r}: {g} vs {w}"
                        );
                    }
                };
                let got = gpu.per_row(&req, &xf, &yf, rows, cols).unwrap();
                let want = exact
                    .per_row(&req, &to_f64(&xf), &to_f64(&yf), rows, cols)
                    .unwrap();
                check(got, want, 1e-5, 1e-7, "f32");
                let got = gpu.per_row(&req, &xh, &yh, rows, cols).unwrap();
                let want = exact.per_row(&req, &xhf, &yhf, rows, cols).unwrap();
                check(got, want, 1e-5, 1e-7, "bf16");
                if gpu.computes_f64() {
                    let got = gpu.per_row(&req, x, y, rows, cols).unwrap();
                    let want = exact.per_row(&req, x, y, rows, cols).unwrap();
                    check(got, want, 2e-12, 1e-15, "f64");
                }
            }
        }
    }
}

/// f64 inputs run through the f64 kernels where the adapter has SHADER_F64 (lavapipe has it:
/// in CI this is required): ordinary rows never leave the GPU, nothing is narrowed, and the
/// values are the exact path's to 2e-12 relative (the bound `every_engine` holds every f64
/// engine to).
#[test]
fn f64_inputs_run_in_f64_kernels() {
    let Some((gpu, _)) = own_engines() else {
        return;
    };
    if required() {
        assert!(gpu.adapter().f64, "lavapipe has SHADER_F64");
    }
    if !gpu.computes_f64() {
        eprintln!("skipping: this adapter has no SHADER_F64");
        return;
    }
    let exact = CpuEngine::with_level(kldiv::SimdLevel::Reference).unwrap();
    let mut rng = Rng::new(77);
    for (rows, cols) in [(300, 16), (20, 1000), (2, 9000)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.4);
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        for &div in Divergence::ALL {
            for (input, x, y) in [
                (InputForm::Probabilities, &p, &q),
                (InputForm::Logits, &a, &b),
            ] {
                let req = Request::new(div).input(input);
                let got = gpu.per_row(&req, x, y, rows, cols).unwrap();
                let stats = gpu.last_call();
                let want = exact.per_row(&req, x, y, rows, cols).unwrap();
                assert!(!stats.f64_in_f32, "{div:?} {input:?}");
                assert_eq!(stats.rows_on_cpu, 0, "{div:?} {input:?} {rows}x{cols}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(close(*g, *w, 2e-12, 1e-15), "{div:?} {input:?}: {g} vs {w}");
                }
            }
        }
    }
}

/// Where f64 kernels are off (adapters without SHADER_F64; forced here), f64 inputs are
/// narrowed to f32, the call says so, values carry f32 rounding only, and values narrowing
/// would change (a q below f32's range) still go to the exact path: never 0 or +inf.
#[test]
fn f64_without_f64_kernels_is_narrowed_and_says_so() {
    if engine().is_none() {
        return;
    }
    let mut gpu = GpuEngine::new().unwrap();
    gpu.set_f64_kernels(false);
    assert!(!gpu.computes_f64());
    let kl = Request::new(Divergence::Kl);
    let got = gpu
        .per_row(&kl, &[1.0f64, 0.0], &[1e-50, 1.0], 1, 2)
        .unwrap()[0];
    let stats = gpu.last_call();
    assert!(stats.f64_in_f32);
    assert_eq!(stats.rows_on_cpu, 1);
    assert!(close(got, 50.0 * 10f64.ln(), 1e-12, 0.0), "{got}");
    let mut rng = Rng::new(78);
    let (p, q) = prob_pair(&mut rng, 40, 300, 0.4);
    let exact = CpuEngine::with_level(kldiv::SimdLevel::Reference).unwrap();
    let got = gpu.per_row(&kl, &p, &q, 40, 300).unwrap();
    let want = exact.per_row(&kl, &p, &q, 40, 300).unwrap();
    assert!(gpu.last_call().f64_in_f32);
    for (g, w) in got.iter().zip(&want) {
        assert!(close(*g, *w, 1e-5, 0.0), "{g} vs {w}");
    }
}

/// Logit rows for the agreement pass: random, with ties (rounded to a coarse grid), −inf
/// masks on either side, and a large common offset, in the element type `T`.
fn agreement_rows<T: kldiv::Element>(rng: &mut Rng, rows: usize, cols: usize) -> (Vec<T>, Vec<T>) {
    let (mut p, mut q) = logit_pair(rng, rows, cols, 1.0);
    for r in 0..rows {
        let row = r * cols..(r + 1) * cols;
        match r % 4 {
            1 => {
                for x in p[row.clone()].iter_mut().chain(&mut q[row]) {
                    *x = (*x * 2.0).round() / 2.0;
                }
            }
            2 => {
                for (j, i) in row.enumerate() {
                    if j % 3 == 1 {
                        p[i] = f64::NEG_INFINITY;
                    }
                    if j % 5 == 2 && j > 0 {
                        q[i] = f64::NEG_INFINITY;
                    }
                }
            }
            3 => {
                for x in p[row.clone()].iter_mut().chain(&mut q[row]) {
                    *x += 1e4;
                }
            }
            _ => {}
        }
    }
    let cast = |v: Vec<f64>| v.into_iter().map(T::from_f64).collect();
    (cast(p), cast(q))
}

/// The agreement pass (Σ min(p, q) and each side's 10 largest logits) on the GPU, whole and
/// in chunks that split rows, and on the CPU engine, against an f64 reference from a sort:
/// the same columns in the same order, Σ min within the first pass's log-sum-exp error.
#[test]
fn agreement_pass_matches_an_f64_reference() {
    let Some((gpu, small)) = own_engines() else {
        return;
    };
    fn check<T: kldiv::Element>(gpu: &GpuEngine, small: &GpuEngine, tol: f64) {
        let mut rng = Rng::new(71);
        for (rows, cols) in [
            (8, 1),
            (8, 7),
            (12, 10),
            (9, 64),
            (8, 65),
            (5, 4103),
            (4, 40_000),
        ] {
            let (p, q) = agreement_rows::<T>(&mut rng, rows, cols);
            let req = Request::new(Divergence::Kl).input(InputForm::Logits);
            let tops = gpu
                .per_row_each(&req, &[Divergence::Kl], &p, &q, rows, cols)
                .unwrap()
                .tops;
            assert_eq!(tops.len(), rows);
            let cpu_sums = kldiv::semantics::run::agreement(
                &CpuEngine::new(),
                kldiv::cpu::HostRows { p: &p, q: &q },
                kldiv::semantics::rows::Shape { rows, cols },
                &tops,
            )
            .unwrap();
            for (engine, sums) in [
                (
                    "gpu",
                    gpu.agreement_rows(&p, &q, rows, cols, &tops).unwrap(),
                ),
                (
                    "chunked",
                    small.agreement_rows(&p, &q, rows, cols, &tops).unwrap(),
                ),
                ("cpu", cpu_sums),
            ] {
                for r in 0..rows {
                    let ctx = format!("{} {engine} {rows}×{cols} row {r}", T::DTYPE);
                    let a: Vec<f64> = p[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|x| x.to_f64())
                        .collect();
                    let b: Vec<f64> = q[r * cols..(r + 1) * cols]
                        .iter()
                        .map(|x| x.to_f64())
                        .collect();
                    let s = sums[r].unwrap_or_else(|| panic!("{ctx}: no sums"));
                    let k = cols.min(10);
                    assert_eq!(s.top_a.cols(), top_cols(&a, k), "{ctx}: P's top");
                    assert_eq!(s.top_b.cols(), top_cols(&b, k), "{ctx}: Q's top");
                    let want = sum_min_of(&a, &b);
                    assert!(
                        (s.sum_min - want).abs() <= tol,
                        "{ctx}: Σ min {} vs {want}",
                        s.sum_min
                    );
                }
            }
            if cols == 40_000 {
                assert!(small.last_call().chunks > 2, "chunking was not exercised");
            }
        }
    }
    // f32 kernels: exponentials and the first pass's log-sum-exp within ~2e-6 relative.
    check::<f32>(&gpu, &small, 1e-5);
    check::<bf16>(&gpu, &small, 1e-5);
    if gpu.computes_f64() {
        check::<f64>(&gpu, &small, 1e-12);
    }
}

/// A report with agreement statistics from rows that ran on the GPU (agreement from its
/// second pass, over the same upload as the first) equals the CPU's (`cpu::agreeing`):
/// every count exactly, Σ min to the f32 sums' error.
#[test]
fn agreement_report_on_the_gpu_matches_the_cpu() {
    use kldiv::scheduler::{DeviceMode, Scheduler};
    use kldiv::summary::Meta;
    if engine().is_none() {
        return;
    }
    let (rows, cols) = (48, 700);
    let (p, q) = agreement_rows::<f32>(&mut Rng::new(5), rows, cols);
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let uploaded = std::cell::Cell::new(0);
    let report = |mode| {
        let sched = Scheduler::with_mode(mode);
        let run = sched
            .run_report(&req, &[], true, &p, &q, rows, cols)
            .unwrap()
            .0;
        if mode == DeviceMode::Gpu {
            uploaded.set(sched.gpu().unwrap().last_call().bytes_uploaded);
        }
        let mut s =
            kldiv::Summary::new(Meta::of(&req, cols, kldiv::Dtype::F32), true, 0).with_agreement();
        s.add_block_from_run(
            &req,
            (&p, &q),
            cols,
            &run.values,
            (&run.tops, &run.agreement),
            None,
        )
        .unwrap();
        (run.agreement.len(), s.agreement.unwrap())
    };
    let (on_gpu, g) = report(DeviceMode::Gpu);
    let (on_cpu, c) = report(DeviceMode::Cpu);
    assert_eq!(
        (on_gpu, on_cpu),
        (rows, rows),
        "agreement sums from each engine's run"
    );
    // Both sides once, and the rows' parameters (≤ 32 bytes a row) for the second pass.
    let once = 2 * 4 * (rows * cols) as u64;
    assert!(
        (once..once + 64 * rows as u64).contains(&uploaded.get()),
        "{} bytes uploaded for {once} of inputs",
        uploaded.get()
    );
    assert_eq!(g.rows, rows as u64);
    assert_eq!(g.top1_in_q_topk, c.top1_in_q_topk);
    for k in 0..3 {
        assert_eq!(
            g.topk_overlap[k].mean, c.topk_overlap[k].mean,
            "overlap {k}"
        );
    }
    assert_eq!(
        g.buckets.map(|b| b.rows()),
        c.buckets.map(|b| b.rows()),
        "confidence buckets"
    );
    assert!(
        (g.sum_min.mean - c.sum_min.mean).abs() <= 1e-5,
        "{:?} {:?}",
        g.sum_min,
        c.sum_min
    );
}

/// The blocks of a file reuse the GPU's input buffers (grown, never shrunk): a smaller block
/// after a larger one is read to its own end (odd length, not a whole vector), never into
/// the larger block's stale bytes after it.
#[test]
fn a_smaller_block_after_a_larger_one_reads_only_its_own_rows() {
    use kldiv::scheduler::{DeviceMode, Scheduler};
    if engine().is_none() {
        return;
    }
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let gpu = Scheduler::with_mode(DeviceMode::Gpu);
    let cpu = Scheduler::with_mode(DeviceMode::Cpu);
    let mut rng = Rng::new(9);
    for (rows, cols, lift) in [(24, 1000, 40.0f32), (5, 333, 0.0)] {
        let (p, q) = agreement_rows::<f32>(&mut rng, rows, cols);
        // The first block's logits sit far above the second's: read as the second's, they
        // would move its maxima, tops and Σ min.
        let p: Vec<f32> = p.iter().map(|x| x + lift).collect();
        let (g, _) = gpu.run_report(&req, &[], true, &p, &q, rows, cols).unwrap();
        let (c, _) = cpu
            .run_report(&req, &[], false, &p, &q, rows, cols)
            .unwrap();
        assert_eq!(
            g.agreement.len(),
            rows,
            "{rows}×{cols}: agreement from the GPU"
        );
        for r in 0..rows {
            let ctx = format!("{rows}×{cols} row {r}");
            let (gv, cv) = (g.values[r], c.values[r]);
            assert!(
                gv == cv || (gv - cv).abs() <= 1e-5 * cv.abs().max(1e-3),
                "{ctx}: KL {gv} vs {cv}"
            );
            let a: Vec<f64> = p[r * cols..(r + 1) * cols]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let b: Vec<f64> = q[r * cols..(r + 1) * cols]
                .iter()
                .map(|&x| x as f64)
                .collect();
            let s = g.agreement[r].unwrap_or_else(|| panic!("{ctx}: no sums"));
            assert_eq!(s.top_a.cols(), top_cols(&a, 10), "{ctx}: P's top");
            assert_eq!(s.top_b.cols(), top_cols(&b, 10), "{ctx}: Q's top");
            let want = sum_min_of(&a, &b);
            assert!(
                (s.sum_min - want).abs() <= 1e-5,
                "{ctx}: Σ min {} vs {want}",
                s.sum_min
            );
        }
    }
}
