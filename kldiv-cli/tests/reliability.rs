//! The command line where users and their environment break things: file layouts, files that
//! are not files, outputs that would destroy inputs, closed and full outputs, mixed and
//! integer element types, and the hints errors give.

#[path = "../../kldiv/tests/common/mod.rs"]
mod common;
use common::files::{f32_npy, f32_npy_fortran, f32_npy_shaped, tmp, write_npy, write_safetensors};
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kldiv"));
    c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

fn per_row(args: &[&str], out: &Path) -> Vec<f64> {
    let mut a = args.to_vec();
    let o = out.to_str().unwrap();
    a.extend(["--out", o, "--quiet"]);
    let r = run(&a);
    assert!(r.status.success(), "{}", stderr(&r));
    common::files::read_f64_npy(out).1
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Random probability rows, rounded to f32.
fn probs(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    to_f32(&prob_pair(&mut rng, rows, cols, 0.5).0)
}

#[test]
fn fortran_order_arrays_of_rank_3_and_4_keep_c_row_order() {
    for shape in [vec![2, 3, 4], vec![3, 2, 2, 5], vec![4, 7]] {
        let cols = *shape.last().unwrap();
        let rows: usize = shape.iter().product::<usize>() / cols;
        let p = probs(rows, cols, 1);
        let q = probs(rows, cols, 2);
        let (pc, pf, qc) = (tmp("pc.npy"), tmp("pf.npy"), tmp("qc.npy"));
        f32_npy_shaped(&pc, &shape, &p);
        f32_npy_fortran(&pf, &shape, &p);
        f32_npy_shaped(&qc, &shape, &q);
        let c = per_row(&["compare", s(&pc), s(&qc)], &tmp("c.npy"));
        let f = per_row(&["compare", s(&pf), s(&qc)], &tmp("f.npy"));
        assert_eq!(c, f, "{shape:?}");
        // Each row against the reference on C-order rows.
        for r in 0..rows {
            let want = reference(
                Div::Kl,
                Form::Probs,
                &to_f64(&p[r * cols..(r + 1) * cols]),
                &to_f64(&q[r * cols..(r + 1) * cols]),
                false,
            );
            assert!(close(c[r], want, 1e-5, 1e-12), "{shape:?} row {r}");
        }
        // A bad value is reported at the same row and column in both layouts.
        let mut bad = p.clone();
        let at = rows * cols - cols - 2; // second-to-last row
        bad[at] = -0.5;
        f32_npy_shaped(&pc, &shape, &bad);
        f32_npy_fortran(&pf, &shape, &bad);
        let want = format!("row {}, column {}", at / cols, at % cols);
        assert_fails(&run(&["compare", s(&pc), s(&qc)]), 2, &[&want]);
        assert_fails(&run(&["compare", s(&pf), s(&qc)]), 2, &[&want]);
    }
}

#[test]
fn inputs_that_are_not_regular_files_are_refused_at_once() {
    let q = tmp("q_fifo_test.npy");
    f32_npy(&q, 1, 2, &[0.5, 0.5]);
    let fifo = tmp("fifo.npy");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = bin()
        .args(["compare", s(&fifo), s(&q)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("kldiv hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(2));
    assert!(stderr(&out).contains("FIFO"), "{}", stderr(&out));
    let dir = tmp("a_dir.npy");
    std::fs::create_dir_all(&dir).unwrap();
    assert_fails(
        &run(&["compare", s(&dir), s(&q)]),
        2,
        &["a_dir.npy", "directory"],
    );
}

#[test]
fn out_never_replaces_an_input() {
    let (p, q) = (tmp("keep_p.npy"), tmp("keep_q.npy"));
    f32_npy(&p, 2, 2, &[0.5, 0.5, 0.25, 0.75]);
    f32_npy(&q, 2, 2, &[0.4, 0.6, 0.5, 0.5]);
    let before = std::fs::read(&q).unwrap();
    let link = tmp("link_to_q.npy");
    let hard = tmp("hard_q.npy");
    let _ = std::fs::remove_file(&link);
    let _ = std::fs::remove_file(&hard);
    std::os::unix::fs::symlink(&q, &link).unwrap();
    std::fs::hard_link(&q, &hard).unwrap();
    for out in [&q, &link, &hard] {
        assert_fails(
            &run(&["compare", s(&p), s(&q), "--out", s(out)]),
            2,
            &["refusing to overwrite an input"],
        );
    }
    assert_eq!(std::fs::read(&q).unwrap(), before, "the input was changed");
}

#[test]
fn out_is_checked_before_the_job() {
    // The job itself would fail on the last row; the unwritable --out must be reported first.
    let (p, q) = (tmp("late_p.npy"), tmp("late_q.npy"));
    f32_npy(&p, 2, 2, &[0.5, 0.5, 0.25, f32::NAN]);
    f32_npy(&q, 2, 2, &[0.4, 0.6, 0.5, 0.5]);
    assert_fails(
        &run(&["compare", s(&p), s(&q), "--out", "/nonexistent-dir/x.npy"]),
        1,
        &["/nonexistent-dir/x.npy"],
    );
}

#[test]
fn a_failed_write_is_exit_1_and_leaves_no_partial_file() {
    let (p, q) = (tmp("big_p.npy"), tmp("big_q.npy"));
    let rows = 4096;
    f32_npy(&p, rows, 2, &vec![0.5; rows * 2]);
    f32_npy(&q, rows, 2, &vec![0.5; rows * 2]);
    let dir = tmp("limited");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("values.npy");
    let mut cmd = bin();
    cmd.args(["compare", s(&p), s(&q), "--out", s(&out)]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            // Files may not grow past 8 KiB (the result needs 32 KiB); the write fails with
            // EFBIG instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 8192,
                rlim_max: 8192,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert_fails(&o, 1, &["values.npy"]);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // A device that is full: exit 1, and the device is still a device.
    assert_fails(
        &run(&["compare", s(&p), s(&q), "--out", "/dev/full"]),
        1,
        &["/dev/full"],
    );
    assert!(!std::fs::metadata("/dev/full").unwrap().is_file());
}

#[test]
fn closed_or_full_standard_output() {
    let (p, q) = (tmp("so_p.npy"), tmp("so_q.npy"));
    f32_npy(&p, 1, 2, &[0.5, 0.5]);
    f32_npy(&q, 1, 2, &[0.4, 0.6]);
    // A reader that went away: quiet, success (as `… | head` expects).
    let mut child = bin()
        .args(["compare", s(&p), s(&q)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // A full disk: one line, exit 1.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = bin()
        .args(["compare", s(&p), s(&q)])
        .stdout(full)
        .output()
        .unwrap();
    assert_fails(&out, 1, &["standard output"]);
}

#[test]
fn empty_inputs_name_both_files() {
    let (p, q) = (tmp("empty_p.npy"), tmp("empty_q.npy"));
    for f in [&p, &q] {
        write_npy(
            f,
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }",
            &[],
        );
    }
    assert_fails(
        &run(&["compare", s(&p), s(&q)]),
        2,
        &["empty_p.npy", "empty_q.npy", "empty"],
    );
}

#[test]
fn safetensors_tensor_names_may_hold_colons() {
    let f = tmp("colons.safetensors");
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    write_safetensors(
        &f,
        &[
            ("model:p", "F32", vec![1, 2], bytes(&[0.5, 0.5])),
            ("model:q", "F32", vec![1, 2], bytes(&[0.25, 0.75])),
        ],
    );
    let spec = |n: &str| format!("{}:{n}", s(&f));
    let o = run(&["compare", &spec("model:p"), &spec("model:q"), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
    let text = String::from_utf8_lossy(&o.stdout);
    let mean: f64 = text
        .split("\"mean\":")
        .nth(1)
        .unwrap()
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((mean - want).abs() < 1e-7, "{mean} vs {want}");
    let help = String::from_utf8_lossy(&run(&["compare", "--help"]).stdout).into_owned();
    assert!(help.contains(".safetensors:"), "{help}");
    assert!(help.contains("SciPy"), "js is explained: {help}");
    assert!(help.contains("logprobs"), "{help}");
}

#[test]
fn mixed_element_types_are_read_in_the_type_that_holds_both() {
    let (rows, cols) = (5, 33);
    let p = probs(rows, cols, 7);
    let q = probs(rows, cols, 8);
    let (pf, qf) = (tmp("mx_p32.npy"), tmp("mx_q32.npy"));
    f32_npy(&pf, rows, cols, &p);
    f32_npy(&qf, rows, cols, &q);
    // Q as bf16 (safetensors) and as f16 / f64 (.npy): P stays f32.
    let qb: Vec<half::bf16> = q.iter().map(|&x| half::bf16::from_f32(x)).collect();
    let qh: Vec<half::f16> = q.iter().map(|&x| half::f16::from_f32(x)).collect();
    let stq = tmp("mx_q.safetensors");
    write_safetensors(
        &stq,
        &[(
            "q",
            "BF16",
            vec![rows, cols],
            qb.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )],
    );
    let q16 = tmp("mx_q16.npy");
    write_npy(
        &q16,
        &format!("{{'descr': '<f2', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"),
        &qh.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
    );
    let q64 = tmp("mx_q64.npy");
    write_npy(
        &q64,
        &format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({rows}, {cols}), }}"),
        &q.iter()
            .flat_map(|&x| (x as f64).to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    let cases: [(&Path, Vec<f64>); 3] = [
        (&stq, qb.iter().map(|x| x.to_f64()).collect()),
        (&q16, qh.iter().map(|x| x.to_f64()).collect()),
        (&q64, to_f64(&q)),
    ];
    for (qpath, qv) in cases {
        let got = per_row(
            &["compare", s(&pf), s(qpath), "--normalize"],
            &tmp("mx_out.npy"),
        );
        for r in 0..rows {
            let want = reference(
                Div::Kl,
                Form::Probs,
                &to_f64(&p[r * cols..(r + 1) * cols]),
                &qv[r * cols..(r + 1) * cols],
                true,
            );
            assert!(close(got[r], want, 1e-5, 1e-12), "{qpath:?} row {r}");
        }
    }
}

#[test]
fn integer_counts_are_read_as_f64_and_hinted_to_normalize() {
    let counts_p: Vec<i32> = vec![3, 1, 0, 4, 10, 10, 2, 2];
    let counts_q: Vec<i64> = vec![1, 1, 1, 1, 5, 15, 1, 3];
    let (p, q) = (tmp("cnt_p.npy"), tmp("cnt_q.npy"));
    write_npy(
        &p,
        "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 4), }",
        &counts_p
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    write_npy(
        &q,
        "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 4), }",
        &counts_q
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>(),
    );
    assert_fails(
        &run(&["compare", s(&p), s(&q)]),
        2,
        &["cnt_p.npy", "counts", "--normalize"],
    );
    let got = per_row(&["compare", s(&p), s(&q), "--normalize"], &tmp("cnt.npy"));
    for r in 0..2 {
        let a: Vec<f64> = counts_p[r * 4..(r + 1) * 4]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let b: Vec<f64> = counts_q[r * 4..(r + 1) * 4]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let want = reference(Div::Kl, Form::Probs, &a, &b, true);
        assert!(
            close(got[r], want, 1e-12, 1e-15),
            "row {r}: {} vs {want}",
            got[r]
        );
    }
}

#[test]
fn errors_hint_at_the_input_form_that_fits() {
    let (p, q) = (tmp("hint_p.npy"), tmp("hint_q.npy"));
    // Logits passed as probabilities: negative values.
    f32_npy(&p, 1, 3, &[-1.0, 2.0, 0.5]);
    f32_npy(&q, 1, 3, &[0.3, 0.3, 0.4]);
    let o = run(&["compare", s(&p), s(&q)]);
    assert_fails(&o, 2, &["negative", "--input logits"]);
    assert!(!stderr(&o).contains("--normalize"), "{}", stderr(&o));
    // Non-negative logits: not counts, so both forms are named.
    f32_npy(&p, 1, 3, &[1.5, 2.25, 0.5]);
    assert_fails(
        &run(&["compare", s(&p), s(&q)]),
        2,
        &["--input logits", "--normalize"],
    );
    // No Rust API names in the command line's messages.
    assert!(!stderr(&run(&["compare", s(&p), s(&q)])).contains("Normalization::"));
}

#[test]
fn a_missing_gpu_is_reported_once_on_one_line() {
    let (p, q) = (tmp("g_p.npy"), tmp("g_q.npy"));
    f32_npy(&p, 1, 2, &[0.5, 0.5]);
    f32_npy(&q, 1, 2, &[0.4, 0.6]);
    let o = bin()
        .args(["compare", s(&p), s(&q), "--device", "gpu"])
        .env("KLDIV_ADAPTER", "no-such-adapter-anywhere")
        .output()
        .unwrap();
    assert_fails(&o, 1, &["no usable GPU"]);
    assert_eq!(
        stderr(&o).matches("no usable GPU").count(),
        1,
        "{}",
        stderr(&o)
    );
}
