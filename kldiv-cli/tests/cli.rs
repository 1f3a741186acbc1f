//! The `kldiv` binary end to end, on files the tests write.

#[path = "../../kldiv/tests/common/mod.rs"]
mod common;
use common::files::{self, f32_npy, tmp, write_npy, write_safetensors};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kldiv"))
}

/// `kldiv compare P Q --input logits --json`.
fn compare_logits(p: &str, q: &str) -> std::process::Output {
    bin()
        .args(["compare", p, q, "--input", "logits", "--json"])
        .output()
        .unwrap()
}

fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kldiv ARGS…`, which must succeed.
fn run_ok(args: &[&str]) -> std::process::Output {
    let out = bin().args(args).output().unwrap();
    assert_success(&out);
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn read_f64_npy(path: &Path) -> Vec<f64> {
    files::read_f64_npy(path).1
}

#[test]
fn compare_summarises_and_writes_per_row_values() {
    let mut rng = Rng::new(21);
    let (rows, cols) = (50, 300);
    let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
    let (pf, qf) = (to_f32(&p), to_f32(&q));
    let (pp, qp, op) = (tmp("p.npy"), tmp("q.npy"), tmp("out.npy"));
    f32_npy(&pp, rows, cols, &pf);
    f32_npy(&qp, rows, cols, &qf);
    let out = bin()
        .args([
            "compare",
            pp.to_str().unwrap(),
            qp.to_str().unwrap(),
            "--json",
            "--out",
            op.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let j = json(&out);
    let want: Vec<f64> = pf
        .chunks(cols)
        .zip(qf.chunks(cols))
        .map(|(a, b)| reference(Div::Kl, Form::Probs, &to_f64(a), &to_f64(b), false))
        .collect();
    let mean = want.iter().sum::<f64>() / rows as f64;
    assert_eq!(j["rows"], rows);
    assert_eq!(j["cols"], cols);
    assert!((j["mean"].as_f64().unwrap() - mean).abs() <= 1e-5 * mean);
    let max = want.iter().cloned().fold(0.0, f64::max);
    assert!((j["max"].as_f64().unwrap() - max).abs() <= 1e-5 * max);
    assert_eq!(j["max_row"], want.iter().position(|&v| v == max).unwrap());
    for key in ["std", "sem", "median", "min", "percentiles"] {
        assert!(!j[key].is_null(), "{key}");
    }
    let per_row = read_f64_npy(&op);
    assert_eq!(per_row.len(), rows);
    for (g, w) in per_row.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * w);
    }
    // The human table names the statistics.
    let out = bin()
        .args(["compare", pp.to_str().unwrap(), qp.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["mean", "std", "min", "median", "max"] {
        assert!(text.contains(word), "{text}");
    }
}

#[test]
fn dtypes_layouts_and_byte_orders() {
    // One 2×3 logits pair stored six ways must give the same answer.
    let a = [1.0f32, 2.0, 3.0, 0.5, -1.0, 2.0];
    let b = [1.5f32, 2.0, 2.0, 0.0, -1.0, 2.5];
    let run = |pa: &Path, pb: &Path| -> f64 {
        let out = compare_logits(pa.to_str().unwrap(), pb.to_str().unwrap());
        json(&out)["mean"].as_f64().unwrap()
    };
    let (p1, q1) = (tmp("a32.npy"), tmp("b32.npy"));
    f32_npy(&p1, 2, 3, &a);
    f32_npy(&q1, 2, 3, &b);
    let base = run(&p1, &q1);
    let want: f64 = (0..2)
        .map(|r| {
            reference_logits_kl(
                &a[r * 3..r * 3 + 3]
                    .iter()
                    .map(|&x| x as f64)
                    .collect::<Vec<_>>(),
                &b[r * 3..r * 3 + 3]
                    .iter()
                    .map(|&x| x as f64)
                    .collect::<Vec<_>>(),
            )
        })
        .sum::<f64>()
        / 2.0;
    assert!((base - want).abs() < 1e-6 * want);

    let write = |name: &str, descr: &str, fortran: bool, v: &[f32]| -> PathBuf {
        let path = tmp(name);
        let order: Vec<f32> = if fortran {
            (0..3)
                .flat_map(|j| (0..2).map(move |i| (i, j)))
                .map(|(i, j)| v[i * 3 + j])
                .collect()
        } else {
            v.to_vec()
        };
        let data: Vec<u8> = match descr {
            "<f8" => order
                .iter()
                .flat_map(|&x| (x as f64).to_le_bytes())
                .collect(),
            ">f4" => order.iter().flat_map(|x| x.to_be_bytes()).collect(),
            "<f2" => order
                .iter()
                .flat_map(|&x| kldiv::f16::from_f32(x).to_le_bytes())
                .collect(),
            _ => order.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let f = if fortran { "True" } else { "False" };
        write_npy(
            &path,
            &format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': (2, 3), }}"),
            &data,
        );
        path
    };
    for (descr, fortran) in [
        ("<f8", false),
        (">f4", false),
        ("<f4", true),
        ("<f2", false),
    ] {
        let pa = write(
            &format!("a{descr}{fortran}.npy").replace(['<', '>'], "_"),
            descr,
            fortran,
            &a,
        );
        let pb = write(
            &format!("b{descr}{fortran}.npy").replace(['<', '>'], "_"),
            descr,
            fortran,
            &b,
        );
        let got = run(&pa, &pb);
        assert!(
            (got - base).abs() <= 1e-6 * base,
            "{descr} fortran={fortran}: {got} vs {base}"
        );
    }
    // A 1-D file is one row.
    let (p, q) = (tmp("p1d.npy"), tmp("q1d.npy"));
    let d = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write_npy(
        &p,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
        &d(&a[..3]),
    );
    write_npy(
        &q,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
        &d(&b[..3]),
    );
    let out = compare_logits(p.to_str().unwrap(), q.to_str().unwrap());
    assert_eq!(json(&out)["rows"], 1);
}

fn expect_fail(args: &[&str], code: i32, needles: &[&str]) {
    let out = bin().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "args {args:?}: stderr {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

#[test]
fn bad_input_exits_2_naming_file_row_and_column() {
    let (rows, cols) = (4, 10);
    let mut p = vec![0.1f32; rows * cols];
    let q = p.clone();
    p[2 * cols + 7] = f32::NAN;
    let (pp, qp) = (tmp("nan_p.npy"), tmp("nan_q.npy"));
    f32_npy(&pp, rows, cols, &p);
    f32_npy(&qp, rows, cols, &q);
    expect_fail(
        &["compare", pp.to_str().unwrap(), qp.to_str().unwrap()],
        2,
        &["nan_p.npy", "row 2", "column 7", "NaN"],
    );
    // Negative probability in Q.
    let mut q2 = q.clone();
    q2[5] = -0.1;
    let q2p = tmp("neg_q.npy");
    f32_npy(&q2p, rows, cols, &q2);
    expect_fail(
        &["compare", qp.to_str().unwrap(), q2p.to_str().unwrap()],
        2,
        &["neg_q.npy", "row 0", "column 5", "negative"],
    );
    // Shape mismatch.
    let other = tmp("other.npy");
    f32_npy(&other, 5, 8, &[0.125; 40]);
    expect_fail(
        &["compare", qp.to_str().unwrap(), other.to_str().unwrap()],
        2,
        &["shape mismatch"],
    );
    // Rows that do not sum to 1.
    let half = tmp("half.npy");
    f32_npy(&half, rows, cols, &vec![0.05; rows * cols]);
    expect_fail(
        &["compare", half.to_str().unwrap(), qp.to_str().unwrap()],
        2,
        &["half.npy", "sums to"],
    );
    let out = bin()
        .args([
            "compare",
            half.to_str().unwrap(),
            qp.to_str().unwrap(),
            "--normalize",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json(&out)["mean"], 0.0);
}

#[test]
fn malformed_files_and_usage_errors() {
    let good = tmp("good.npy");
    f32_npy(&good, 1, 2, &[0.5, 0.5]);
    let g = good.to_str().unwrap();
    // Header promises more data than the file holds.
    let lying = tmp("lying.npy");
    write_npy(
        &lying,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000), }",
        &[0; 8],
    );
    expect_fail(
        &["compare", lying.to_str().unwrap(), g],
        2,
        &["lying.npy", "truncated"],
    );
    // Absurd shapes overflow.
    let huge = tmp("huge.npy");
    write_npy(
        &huge,
        "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 4), }",
        &[0; 8],
    );
    expect_fail(&["compare", huge.to_str().unwrap(), g], 2, &["huge.npy"]);
    // Unsupported dtype, garbage, missing file, wrong extension.
    let complex = tmp("complex.npy");
    write_npy(
        &complex,
        "{'descr': '<c8', 'fortran_order': False, 'shape': (1, 2), }",
        &[0; 16],
    );
    expect_fail(
        &["compare", complex.to_str().unwrap(), g],
        2,
        &["complex.npy", "dtype"],
    );
    let junk = tmp("junk.npy");
    std::fs::write(&junk, b"hello world, not numpy").unwrap();
    expect_fail(&["compare", junk.to_str().unwrap(), g], 2, &["junk.npy"]);
    expect_fail(
        &["compare", "/nonexistent/p.npy", g],
        2,
        &["/nonexistent/p.npy"],
    );
    expect_fail(&["compare", g], 2, &[]);
    expect_fail(&["compare", g, g, "--divergence", "nope"], 2, &[]);
}

#[test]
fn bench_quick_runs_one_workload() {
    let csv = tmp("bench.csv");
    run_ok(&[
        "bench",
        "--quick",
        "--shapes",
        "W2",
        "--repeat",
        "1",
        "--csv",
        csv.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.lines().count() >= 3 && text.contains("W2"), "{text}");
}

/// A .safetensors file from (name, dtype, shape, raw bytes).
#[test]
fn safetensors_every_dtype_named_tensors_and_higher_rank() {
    let mut rng = Rng::new(22);
    // [batch 2, seq 3, vocab 50] logits: 6 rows.
    let (a, b) = logit_pair(&mut rng, 6, 50, 0.4);
    let want: f64 = (0..6)
        .map(|r| {
            reference_logits_kl(
                &a[r * 50..(r + 1) * 50]
                    .iter()
                    .map(|&x| x as f32 as f64)
                    .collect::<Vec<_>>(),
                &b[r * 50..(r + 1) * 50]
                    .iter()
                    .map(|&x| x as f32 as f64)
                    .collect::<Vec<_>>(),
            )
        })
        .sum::<f64>()
        / 6.0;
    let f32b = |v: &[f64]| {
        v.iter()
            .flat_map(|&x| (x as f32).to_le_bytes())
            .collect::<Vec<u8>>()
    };
    let both = tmp("evals.safetensors");
    write_safetensors(
        &both,
        &[
            ("base", "F32", vec![2, 3, 50], f32b(&a)),
            ("quant", "F32", vec![2, 3, 50], f32b(&b)),
        ],
    );
    let spec = |n: &str| format!("{}:{n}", both.display());
    let out = compare_logits(&spec("base"), &spec("quant"));
    let j = json(&out);
    assert_eq!(j["rows"], 6);
    assert_eq!(j["cols"], 50);
    assert!((j["mean"].as_f64().unwrap() - want).abs() <= 1e-5 * want);
    let same_top = j["same_top"]["mean"].as_f64().unwrap();
    let agree = (0..6)
        .filter(|&r| {
            let am = |v: &[f64]| {
                v.iter()
                    .enumerate()
                    .fold((0, f64::NEG_INFINITY), |m, (i, &x)| {
                        if (x as f32 as f64) > m.1 {
                            (i, x as f32 as f64)
                        } else {
                            m
                        }
                    })
                    .0
            };
            am(&a[r * 50..(r + 1) * 50]) == am(&b[r * 50..(r + 1) * 50])
        })
        .count();
    assert!((same_top - agree as f64 / 6.0).abs() < 1e-12);
    // Standard error with n − 1, as llama.cpp's report computes it.
    let share = agree as f64 / 6.0;
    let se = (share * (1.0 - share) / 5.0).sqrt();
    assert!((j["same_top"]["sem"].as_f64().unwrap() - se).abs() < 1e-12);
    // One tensor per file: no name needed; f16 and bf16.
    for (dt, enc) in [
        (
            "F16",
            (|x: f64| kldiv::f16::from_f64(x).to_le_bytes()) as fn(f64) -> [u8; 2],
        ),
        ("BF16", |x: f64| kldiv::bf16::from_f64(x).to_le_bytes()),
    ] {
        let (pa, pb) = (
            tmp(&format!("a_{dt}.safetensors")),
            tmp(&format!("b_{dt}.safetensors")),
        );
        write_safetensors(
            &pa,
            &[(
                "x",
                dt,
                vec![6, 50],
                a.iter().flat_map(|&x| enc(x)).collect(),
            )],
        );
        write_safetensors(
            &pb,
            &[(
                "x",
                dt,
                vec![6, 50],
                b.iter().flat_map(|&x| enc(x)).collect(),
            )],
        );
        let out = compare_logits(pa.to_str().unwrap(), pb.to_str().unwrap());
        let got = json(&out)["mean"].as_f64().unwrap();
        assert!((got - want).abs() <= 0.05 * want, "{dt}: {got} vs {want}");
    }
    // Errors: two tensors and no name; unknown name; integer dtype; garbage.
    expect_fail(
        &["compare", both.to_str().unwrap(), &spec("quant")],
        2,
        &["evals.safetensors", "name one", "base, quant"],
    );
    expect_fail(
        &["compare", &spec("nope"), &spec("quant")],
        2,
        &["no tensor named \"nope\""],
    );
    let bools = tmp("bools.safetensors");
    write_safetensors(&bools, &[("x", "BOOL", vec![1, 2], vec![0; 2])]);
    expect_fail(
        &["compare", bools.to_str().unwrap(), bools.to_str().unwrap()],
        2,
        &["bools.safetensors", "dtype"],
    );
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, [255u8; 64]).unwrap();
    expect_fail(
        &["compare", junk.to_str().unwrap(), junk.to_str().unwrap()],
        2,
        &["junk.safetensors"],
    );
    let lying = tmp("lying.safetensors");
    write_safetensors(&lying, &[("x", "F32", vec![1000, 1000], vec![0; 16])]);
    expect_fail(
        &["compare", lying.to_str().unwrap(), lying.to_str().unwrap()],
        2,
        &["lying.safetensors"],
    );
}

/// Inputs larger than one block stream through in pieces and still give every row.
#[test]
fn large_inputs_stream_in_blocks() {
    // 70 rows × 262,144 f32 columns = 70 MiB per input: two blocks of 64 MiB.
    let (rows, cols) = (70, 262_144);
    let p: Vec<f32> = (0..rows * cols).map(|i| 1.0 + (i % 7) as f32).collect();
    let q: Vec<f32> = (0..rows * cols).map(|i| 1.0 + (i % 5) as f32).collect();
    let (pp, qp, op) = (tmp("big_p.npy"), tmp("big_q.npy"), tmp("big_out.npy"));
    f32_npy(&pp, rows, cols, &p);
    f32_npy(&qp, rows, cols, &q);
    run_ok(&[
        "compare",
        pp.to_str().unwrap(),
        qp.to_str().unwrap(),
        "--normalize",
        "--quiet",
        "--out",
        op.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let v = read_f64_npy(&op);
    assert_eq!(v.len(), rows);
    for r in [0, 35, 63, 64, 69] {
        let (a, b) = (&p[r * cols..(r + 1) * cols], &q[r * cols..(r + 1) * cols]);
        let want = reference(Div::Kl, Form::Probs, &to_f64(a), &to_f64(b), true);
        assert!(
            (v[r] - want).abs() <= 1e-5 * want,
            "row {r}: {} vs {want}",
            v[r]
        );
    }
    std::fs::remove_file(&pp).ok();
    std::fs::remove_file(&qp).ok();
}

#[test]
fn pseudocount_smooths_counts_with_holes() {
    // Counts [3, 1, 0] against [1, 0, 2] with ε = 0.5: P = [3.5, 1.5, 0.5]/5.5,
    // Q = [1.5, 0.5, 2.5]/4.5, KL computed here in f64 from the definition.
    let (p, q) = (tmp("pc_p.npy"), tmp("pc_q.npy"));
    f32_npy(&p, 1, 3, &[3.0, 1.0, 0.0]);
    f32_npy(&q, 1, 3, &[1.0, 0.0, 2.0]);
    let (ps, qs) = ([3.5f64, 1.5, 0.5], [1.5f64, 0.5, 2.5]);
    let want: f64 = ps
        .iter()
        .zip(&qs)
        .map(|(a, b)| (a / 5.5) * ((a / 5.5) / (b / 4.5)).ln())
        .sum();
    let (ps_, qs_) = (p.to_str().unwrap(), q.to_str().unwrap());
    let out = run_ok(&["compare", ps_, qs_, "--pseudocount", "0.5", "--json"]);
    let got = json(&out)["mean"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-6 * want, "{got} vs {want}");
    // The text report says which option changed the values.
    let out = run_ok(&["compare", ps_, qs_, "--pseudocount", "0.5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("options   pseudocount 0.5"), "{text}");
    // Without it the hole in Q is an infinite KL; with logits it means nothing.
    let out = run_ok(&["compare", ps_, qs_, "--normalize", "--json"]);
    let j = json(&out);
    // Infinity is not JSON: null, counted, with the finite rows' statistics beside.
    assert!(j["mean"].is_null());
    assert_eq!(j["inf_rows"], 1);
    assert_eq!(j["finite"]["count"], 0);
    // The command line's spellings.
    assert_eq!(
        (j["divergence"].as_str(), j["input"].as_str()),
        (Some("kl"), Some("probs"))
    );
    assert!(j["version"].is_string() && j["elapsed_s"].is_number());
    expect_fail(
        &[
            "compare",
            ps_,
            qs_,
            "--pseudocount",
            "0.1",
            "--input",
            "logits",
        ],
        2,
        &["pseudocount"],
    );
    expect_fail(
        &["compare", ps_, qs_, "--pseudocount=-1"],
        2,
        &["pseudocount"],
    );
}

#[test]
fn rows_keep_their_leading_shape_in_out_and_reports() {
    // P, Q of shape [2, 3, 4]: row (1, 2) (flat 5) differs most, row (0, 1) not at all.
    let (b, s, v) = (2, 3, 4);
    let mut p = vec![0.25f32; b * s * v];
    let mut q = p.clone();
    for r in 0..b * s {
        let d = if r == 1 { 0.0 } else { 0.01 * (r + 1) as f32 };
        p[r * v] += d;
        p[r * v + 1] -= d;
        q[r * v + 2] += d / 2.0;
        q[r * v + 3] -= d / 2.0;
    }
    let (pp, qp, op) = (tmp("shape-p.npy"), tmp("shape-q.npy"), tmp("shape-out.npy"));
    files::f32_npy_shaped(&pp, &[b, s, v], &p);
    files::f32_npy_shaped(&qp, &[b, s, v], &q);
    let (ps, qs, os) = (
        pp.to_str().unwrap(),
        qp.to_str().unwrap(),
        op.to_str().unwrap(),
    );
    let j = json(&run_ok(&[
        "compare", ps, qs, "--json", "--out", os, "--quiet",
    ]));
    assert_eq!(
        (j["min_row"].as_u64(), j["max_row"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(j["min_index"], serde_json::json!([0, 1]));
    assert_eq!(j["max_index"], serde_json::json!([1, 2]));
    let (shape, values) = files::read_f64_npy(&op);
    assert_eq!(shape, vec![b, s]);
    assert_eq!(values.len(), b * s);
    let text = String::from_utf8(run_ok(&["compare", ps, qs, "--quiet"]).stdout).unwrap();
    assert!(text.contains("(row 5, index (1, 2))"), "{text}");
    // Two-dimensional input: plain row numbers, as before.
    let (p2, q2) = (tmp("shape-p2.npy"), tmp("shape-q2.npy"));
    f32_npy(&p2, b * s, v, &p);
    f32_npy(&q2, b * s, v, &q);
    let j = json(&run_ok(&[
        "compare",
        p2.to_str().unwrap(),
        q2.to_str().unwrap(),
        "--json",
        "--quiet",
    ]));
    assert!(j.get("max_index").is_none());
}

/// Per-row KL of `got` (rows of `cols`) against softmax(a/tp) and softmax(b/tq) in f64.
fn check_tempered(
    got: &[f64],
    (a, b): (&[f64], &[f64]),
    cols: usize,
    (tp, tq): (f64, f64),
    rel: f64,
) {
    for (r, &g) in got.iter().enumerate() {
        let x: Vec<f64> = a[r * cols..(r + 1) * cols].iter().map(|v| v / tp).collect();
        let y: Vec<f64> = b[r * cols..(r + 1) * cols].iter().map(|v| v / tq).collect();
        let want = reference_logits_kl(&x, &y);
        assert!(
            close(g, want, rel, 1e-15),
            "T = {tp}, {tq} row {r} ({cols} columns): {g} vs {want}"
        );
    }
}

/// `--temperature-p/q` divide each side's logits before the softmax, formed in f64. Where
/// every quotient is an f32 (powers of two: 2 and 0.5 here) the rows keep the f32 kernels
/// and their 1e-5 bound (the inputs are f32); other temperatures (0.7, 1.3) leave f64 values
/// for the exact path, within 1e-12.
#[test]
fn temperatures_divide_each_sides_logits() {
    let (rows, cols) = (7, 33);
    let mut rng = Rng::new(12);
    let (a, b) = logit_pair(&mut rng, rows, cols, 1.0);
    let (pp, qp, op) = (tmp("temp-p.npy"), tmp("temp-q.npy"), tmp("temp-out.npy"));
    f32_npy(&pp, rows, cols, &to_f32(&a));
    f32_npy(&qp, rows, cols, &to_f32(&b));
    let (ps, qs, os) = (
        pp.to_str().unwrap(),
        qp.to_str().unwrap(),
        op.to_str().unwrap(),
    );
    let (a, b) = (to_f64(&to_f32(&a)), to_f64(&to_f32(&b)));
    for (tp, tq, rel) in [
        (2.0, 0.5, 1e-5),
        (2.0, 1.0, 1e-5),
        (0.7, 1.3, 1e-12),
        (0.5, 1.3, 1e-12),
    ] {
        let (tps, tqs) = (format!("{tp}"), format!("{tq}"));
        run_ok(&[
            "compare",
            ps,
            qs,
            "--input",
            "logits",
            "--temperature-p",
            &tps,
            "--temperature-q",
            &tqs,
            "--out",
            os,
            "--quiet",
        ]);
        check_tempered(&read_f64_npy(&op), (&a, &b), cols, (tp, tq), rel);
    }
    // An f64 file against an f16 file (odd width, rows across blocks): each side's values
    // as stored, divided in f64 (the exact path, within 1e-12).
    let (rows, cols) = (3, 1031);
    let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
    let b16: Vec<u16> = b
        .iter()
        .map(|&v| kldiv::f16::from_f64(v).to_bits())
        .collect();
    let b: Vec<f64> = b16
        .iter()
        .map(|&h| kldiv::f16::from_bits(h).to_f64())
        .collect();
    let (pd, qh) = (tmp("temp-p64.npy"), tmp("temp-q16.npy"));
    let dict = |descr: &str| {
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}")
    };
    let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(&pd, &dict("<f8"), &bytes);
    let bytes: Vec<u8> = b16.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(&qh, &dict("<f2"), &bytes);
    let (tp, tq) = (0.7, 2.0);
    run_ok(&[
        "compare",
        pd.to_str().unwrap(),
        qh.to_str().unwrap(),
        "--input",
        "logits",
        "--temperature-p",
        "0.7",
        "--temperature-q",
        "2",
        "--out",
        os,
        "--quiet",
    ]);
    check_tempered(&read_f64_npy(&op), (&a, &b), cols, (tp, tq), 1e-12);
    expect_fail(
        &["compare", ps, qs, "--temperature-p", "2"],
        2,
        &["--input logits"],
    );
    expect_fail(
        &[
            "compare",
            ps,
            qs,
            "--input",
            "logits",
            "--temperature-q",
            "0",
        ],
        2,
        &["positive"],
    );
}

/// Tempered rows on the CPU go through their blocks in sub-blocks (`io::sides`): a block of
/// 12 rows × 65,537 columns on one thread is 4 sub-blocks of 3 rows. Each row keeps its
/// value (f64 quotients within 1e-12, power-of-two ones within f32's 1e-5), its target
/// (the perplexity of the tempered Q), and its place in an error message.
#[test]
fn tempered_rows_in_sub_blocks_keep_values_targets_and_row_numbers() {
    let (rows, cols) = (12, 65_537);
    let mut rng = Rng::new(77);
    let (a, b) = logit_pair(&mut rng, rows, cols, 1.0);
    let (a, b) = (to_f32(&a), to_f32(&b));
    let t: Vec<i32> = (0..rows).map(|r| ((r * 4_099) % cols) as i32).collect();
    let (pp, qp, tp_, op) = (
        tmp("sub-p.npy"),
        tmp("sub-q.npy"),
        tmp("sub-t.npy"),
        tmp("sub-out.npy"),
    );
    f32_npy(&pp, rows, cols, &a);
    f32_npy(&qp, rows, cols, &b);
    files::i32_npy(&tp_, &t);
    let s = |p: &PathBuf| p.to_str().unwrap().to_owned();
    let (a, b) = (to_f64(&a), to_f64(&b));
    // On one thread, tempered logits of P against Q's file.
    let tempered = |p: &PathBuf, (tp, tq): (f64, f64), extra: &[&str]| {
        let (tps, tqs) = (format!("{tp}"), format!("{tq}"));
        bin()
            .env("RAYON_NUM_THREADS", "1")
            .args([
                "compare",
                &s(p),
                &s(&qp),
                "--input",
                "logits",
                "--device",
                "cpu",
            ])
            .args(["--temperature-p", &tps, "--temperature-q", &tqs])
            .args(extra)
            .output()
            .unwrap()
    };
    for (tp, tq, rel) in [(1.3, 0.7, 1e-12), (2.0, 0.5, 1e-5)] {
        let (t_arg, o_arg) = (s(&tp_), s(&op));
        let extra = ["--targets", &t_arg, "--out", &o_arg, "--json", "--quiet"];
        let j = json(&tempered(&pp, (tp, tq), &extra));
        check_tempered(&read_f64_npy(&op), (&a, &b), cols, (tp, tq), rel);
        // ln PPL(Q) = mean over rows of −log softmax(y/T_q)[target].
        let nll: f64 = (0..rows)
            .map(|r| {
                let y: Vec<f64> = b[r * cols..(r + 1) * cols].iter().map(|v| v / tq).collect();
                let m = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + y.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
                lse - y[t[r] as usize]
            })
            .sum::<f64>()
            / rows as f64;
        let got = j["ppl_q"]["mean"].as_f64().unwrap();
        assert!(
            (got.ln() - nll).abs() <= 1e-9 * nll.abs().max(1.0),
            "T = {tp}, {tq}: ln PPL(Q) {} vs {nll}",
            got.ln()
        );
    }
    // A NaN in the third sub-block is reported at its own row and column.
    let mut bad = a.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    bad[7 * cols + 5] = f32::NAN;
    let badp = tmp("sub-nan.npy");
    f32_npy(&badp, rows, cols, &bad);
    let out = tempered(&badp, (1.3, 1.0), &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sub-nan.npy") && err.contains("row 7") && err.contains("column 5"),
        "{err}"
    );
}

/// ExLlamaV3- and vLLM-style dumps: a [B, T, V] safetensors tensor against [B·T, V] logits
/// of another vocabulary size. Different sizes are an error naming both shapes, unless
/// --vocab-min compares the common prefix: each row's first min(V_P, V_Q) logits, softmaxed
/// (the reference computes exactly that, in f64).
#[test]
fn vocabularies_of_different_sizes_need_vocab_min() {
    let mut rng = Rng::new(91);
    let (b, t, vp, vq) = (2, 3, 40, 37);
    let a: Vec<f32> = (0..b * t * vp)
        .map(|_| (2.0 * rng.normal()) as f32)
        .collect();
    let q: Vec<f32> = (0..b * t * vq)
        .map(|_| (2.0 * rng.normal()) as f32)
        .collect();
    let (pp, qp) = (tmp("vocab_p.safetensors"), tmp("vocab_q.npy"));
    let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_safetensors(&pp, &[("model.logits", "F32", vec![b, t, vp], bytes)]);
    files::f32_npy(&qp, b * t, vq, &q);
    let (ps, qs) = (
        format!("{}:model.logits", pp.display()),
        qp.display().to_string(),
    );
    expect_fail(
        &["compare", &ps, &qs, "--input", "logits"],
        2,
        &[
            "vocabularies differ",
            "[2, 3, 40]",
            "[6, 37]",
            "--vocab-min",
        ],
    );
    let op = tmp("vocab_out.npy");
    let out = bin()
        .args([
            "compare",
            &ps,
            &qs,
            "--input",
            "logits",
            "--vocab-min",
            "--json",
        ])
        .args(["--out", op.to_str().unwrap()])
        .output()
        .unwrap();
    let j = json(&out);
    assert_eq!(j["cols"], vq);
    let got = read_f64_npy(&op);
    for r in 0..b * t {
        let pa = to_f64(&a[r * vp..r * vp + vq]);
        let qa = to_f64(&q[r * vq..(r + 1) * vq]);
        let want = reference(Div::Kl, Form::Logits, &pa, &qa, false);
        assert!(
            close(got[r], want, 1e-5, 1e-12),
            "row {r}: {} vs {want}",
            got[r]
        );
    }
}

/// Several divergences in one run: each one's per-row values (the --out table's columns, in
/// the order given) and its mean in the JSON report match the f64 references; a repeated
/// name and entropy in a list are usage errors.
#[test]
fn several_divergences_in_one_run() {
    let mut rng = Rng::new(92);
    let (rows, cols) = (20, 50);
    let (a, b) = logit_pair(&mut rng, rows, cols, 0.6);
    let (af, bf) = (to_f32(&a), to_f32(&b));
    let (pp, qp, op) = (tmp("multi_p.npy"), tmp("multi_q.npy"), tmp("multi_out.npy"));
    f32_npy(&pp, rows, cols, &af);
    f32_npy(&qp, rows, cols, &bf);
    let (ps, qs) = (pp.to_str().unwrap(), qp.to_str().unwrap());
    let out = bin()
        .args(["compare", ps, qs, "--input", "logits", "--json"])
        .args([
            "--divergence",
            "kl,reverse-kl,js",
            "--out",
            op.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let j = json(&out);
    let (shape, table) = files::read_f64_npy(&op);
    assert_eq!(shape, vec![rows, 3]);
    for (k, (div, key)) in [(Div::Kl, ""), (Div::Reverse, "reverse-kl"), (Div::Js, "js")]
        .into_iter()
        .enumerate()
    {
        let want: Vec<f64> = af
            .chunks(cols)
            .zip(bf.chunks(cols))
            .map(|(x, y)| reference(div, Form::Logits, &to_f64(x), &to_f64(y), false))
            .collect();
        for r in 0..rows {
            assert!(
                close(table[r * 3 + k], want[r], 1e-5, 1e-12),
                "{div:?} row {r}"
            );
        }
        let mean = want.iter().sum::<f64>() / rows as f64;
        let got = if key.is_empty() {
            j["mean"].as_f64()
        } else {
            j["also"][key]["mean"].as_f64()
        };
        assert!(close(got.unwrap(), mean, 1e-5, 0.0), "{div:?} mean");
    }
    expect_fail(
        &[
            "compare",
            ps,
            qs,
            "--input",
            "logits",
            "--divergence",
            "kl,kl",
        ],
        2,
        &["twice"],
    );
    expect_fail(
        &["compare", ps, qs, "--divergence", "kl,entropy"],
        2,
        &["entropy"],
    );
}

/// Sides stored in different types are read in the wider one, but each row keeps the
/// rounding of the type its file stores: an f16 row beside an f64 one is checked with f16's
/// sum tolerance (4e-3), not f64's (1e-6), which refused it.
#[test]
fn a_row_is_checked_with_the_tolerance_of_the_type_its_file_stores() {
    // f16 P = [¼, ¼, ¼, ¼ + 2⁻¹²] (exact in f16; sums to 1 + 2.4e-4), and the same with
    // ¼ + 2⁻⁷ (1 + 7.8e-3: beyond f16's tolerance too).
    let f16_row = |last: u16| -> Vec<u8> {
        [0x3400u16, 0x3400, 0x3400, last]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect()
    };
    let q = [0.1f64, 0.2, 0.3, 0.4];
    let (pp, bad, qp) = (tmp("p_f16.npy"), tmp("p_f16_bad.npy"), tmp("q_f64.npy"));
    let dict = |d: &str| format!("{{'descr': '{d}', 'fortran_order': False, 'shape': (1, 4), }}");
    write_npy(&pp, &dict("<f2"), &f16_row(0x3401));
    write_npy(&bad, &dict("<f2"), &f16_row(0x3420));
    let qb: Vec<u8> = q.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&qp, &dict("<f8"), &qb);
    let (ps, qs) = (pp.to_str().unwrap(), qp.to_str().unwrap());
    let j = json(&bin().args(["compare", ps, qs, "--json"]).output().unwrap());
    let p = [0.25, 0.25, 0.25, 0.25 + 2f64.powi(-12)];
    // A checked row is taken as given: Σ p·ln(p/q) of the stored values.
    let want: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
    let got = j["mean"].as_f64().unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} against {want}");
    // Q as stored (f64) beside P (f16): the looser tolerance holds for both.
    let j = json(&bin().args(["compare", qs, ps, "--json"]).output().unwrap());
    assert!(j["mean"].as_f64().unwrap() > 0.0);
    expect_fail(
        &["compare", bad.to_str().unwrap(), qs],
        2,
        &["p_f16_bad.npy", "row 0", "tolerance 4e-3"],
    );
}
