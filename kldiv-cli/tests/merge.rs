//! A run split into shards (`compare --summary-out --row-offset`) and merged (`kldiv merge`)
//! prints the report of one run over all rows.

#[path = "../../kldiv/tests/common/mod.rs"]
mod common;
use common::files::{f32_npy, i32_npy, tmp};
use common::*;
use std::process::Command;

fn kldiv(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kldiv"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn close(a: &serde_json::Value, b: &serde_json::Value, rel: f64) -> bool {
    let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

#[test]
fn merged_shards_print_the_whole_runs_report() {
    let (rows, cols, cut) = (300, 24, 110);
    let mut rng = Rng::new(31);
    let (a, b) = logit_pair(&mut rng, rows, cols, 1.5);
    let (a, b) = (to_f32(&a), to_f32(&b));
    let t: Vec<i32> = (0..rows)
        .map(|r| {
            if r % 17 == 0 {
                -100
            } else {
                ((r * 7) % cols) as i32
            }
        })
        .collect();
    let path = |n: &str| tmp(&format!("merge-{n}")).to_string_lossy().into_owned();
    f32_npy(path("p.npy").as_ref(), rows, cols, &a);
    f32_npy(path("q.npy").as_ref(), rows, cols, &b);
    i32_npy(path("t.npy").as_ref(), &t);
    for (name, r0, r1) in [("0", 0, cut), ("1", cut, rows)] {
        f32_npy(
            path(&format!("p{name}.npy")).as_ref(),
            r1 - r0,
            cols,
            &a[r0 * cols..r1 * cols],
        );
        f32_npy(
            path(&format!("q{name}.npy")).as_ref(),
            r1 - r0,
            cols,
            &b[r0 * cols..r1 * cols],
        );
        i32_npy(path(&format!("t{name}.npy")).as_ref(), &t[r0..r1]);
        kldiv(&[
            "compare",
            &path(&format!("p{name}.npy")),
            &path(&format!("q{name}.npy")),
            "--input",
            "logits",
            "--targets",
            &path(&format!("t{name}.npy")),
            "--summary-out",
            &path(&format!("s{name}.json")),
            "--row-offset",
            &r0.to_string(),
            "--quiet",
            "--agreement",
        ]);
    }
    let whole = json(&kldiv(&[
        "compare",
        &path("p.npy"),
        &path("q.npy"),
        "--input",
        "logits",
        "--targets",
        &path("t.npy"),
        "--json",
        "--quiet",
        "--agreement",
    ]));
    // Shards given in any order.
    let merged = json(&kldiv(&[
        "merge",
        &path("s1.json"),
        &path("s0.json"),
        "--json",
    ]));
    for k in [
        "rows",
        "count",
        "inf_rows",
        "nan_rows",
        "min_row",
        "max_row",
        "min",
        "max",
        "target_rows",
        "same_top",
        "divergence",
        "input",
        "unit",
        "cols",
    ] {
        assert_eq!(whole[k], merged[k], "{k}");
    }
    assert_eq!(merged["percentiles_exact"], false);
    assert!(close(&whole["mean"], &merged["mean"], 1e-12));
    assert!(close(&whole["std"], &merged["std"], 1e-9));
    for (k, v) in whole["percentiles"].as_object().unwrap() {
        assert!(
            close(v, &merged["percentiles"][k], 1.0001e-3),
            "{k}: {v} {}",
            merged["percentiles"][k]
        );
    }
    for k in [
        "ppl_q",
        "ppl_p",
        "ln_ppl_ratio",
        "kld",
        "delta_p",
        "rms_delta_p",
    ] {
        assert!(close(&whole[k]["mean"], &merged[k]["mean"], 1e-10), "{k}");
        assert!(close(&whole[k]["sem"], &merged[k]["sem"], 1e-8), "{k}");
    }
    assert!(close(&whole["cor_ln_ppl"], &merged["cor_ln_ppl"], 1e-8));
    // Agreement: counts exactly, means to rounding.
    let (wa, ma) = (&whole["agreement"], &merged["agreement"]);
    assert_eq!(wa["rows"], ma["rows"]);
    for k in ["top1", "top5", "top10"] {
        assert!(close(
            &wa["top_k"][k]["p_top1_in_q_topk"],
            &ma["top_k"][k]["p_top1_in_q_topk"],
            1e-15
        ));
        assert!(close(
            &wa["top_k"][k]["overlap"],
            &ma["top_k"][k]["overlap"],
            1e-12
        ));
    }
    assert!(close(&wa["sum_min"]["mean"], &ma["sum_min"]["mean"], 1e-12));
    for i in 0..5 {
        assert_eq!(
            wa["kld_by_p_confidence"][i]["rows"],
            ma["kld_by_p_confidence"][i]["rows"]
        );
    }
    for (k, v) in whole["delta_p"]["percentiles"].as_object().unwrap() {
        assert!(
            close(v, &merged["delta_p"]["percentiles"][k], 1.0001e-3),
            "Δp {k}"
        );
    }
    // The text report says where its percentiles come from.
    let text =
        String::from_utf8(kldiv(&["merge", &path("s0.json"), &path("s1.json")]).stdout).unwrap();
    assert!(text.contains("quantile sketch"), "{text}");
    assert!(text.contains("====== KL divergence statistics ======"));
}

#[test]
fn merge_refuses_overlapping_or_corrupt_summaries() {
    let mut rng = Rng::new(5);
    let (a, b) = prob_pair(&mut rng, 20, 8, 1.0);
    let p = tmp("merge-bad-p.npy");
    let q = tmp("merge-bad-q.npy");
    f32_npy(&p, 20, 8, &to_f32(&a));
    f32_npy(&q, 20, 8, &to_f32(&b));
    // A shard's summary of p and q with these options.
    let shard = |options: &[&str], out: &std::path::Path| {
        let mut args = vec!["compare", p.to_str().unwrap(), q.to_str().unwrap()];
        args.extend(options);
        args.extend(["--summary-out", out.to_str().unwrap(), "--quiet"]);
        kldiv(&args);
    };
    let s = tmp("merge-bad-s.json");
    shard(&["--normalize"], &s);
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kldiv"))
            .args(args)
            .output()
            .unwrap()
    };
    // The same shard twice: its rows overlap.
    let out = run(&["merge", s.to_str().unwrap(), s.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--row-offset"));
    // Shards computed with different value-changing options are not merged: the message
    // names both.
    let smooth = tmp("merge-bad-smooth.json");
    shard(&["--pseudocount", "0.5", "--row-offset", "20"], &smooth);
    let out = run(&["merge", s.to_str().unwrap(), smooth.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'normalize'") && err.contains("'pseudocount 0.5'"),
        "{err}"
    );
    // A truncated file names itself.
    let text = std::fs::read_to_string(&s).unwrap();
    let cut = tmp("merge-bad-cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let out = run(&["merge", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("merge-bad-cut.json") && err.contains("not JSON"),
        "{err}"
    );
}
