//! Mergeable statistics: a run split into shards and merged equals one run over all rows
//! (counts exactly, moments to rounding, min/max with global rows, percentiles within the
//! sketch's relative bound), and a serialised summary is validated on read.

use kldiv::summary::{report, sketch::ALPHA, Meta, RowTarget, Summary};
use kldiv::{Divergence, Dtype, Request};
use proptest::prelude::*;

fn meta() -> Meta {
    Meta::of(&Request::new(Divergence::Kl), 8, Dtype::F32)
}

/// One summary over `rows`, starting at global row `first`.
fn summary_of(rows: &[(f64, bool, Option<RowTarget>)], first: u64, keep: bool) -> Summary {
    let mut s = Summary::new(meta(), keep, first).with_targets(keep);
    for &(v, same, t) in rows {
        s.push_row(v, same, t);
    }
    s
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    a == b || (a - b).abs() <= rel * a.abs().max(b.abs())
}

/// The sketch's bound on a percentile: α times the larger of the two order statistics it
/// interpolates between (the value itself, unless they straddle zero).
fn within_sketch_bound(values: &[f64], pct: f64, got: f64, exact: f64) -> bool {
    let mut s: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    s.sort_by(f64::total_cmp);
    let pos = pct / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (s[pos.floor() as usize], s[pos.ceil() as usize]);
    got == exact || (got - exact).abs() <= ALPHA * 1.0001 * lo.abs().max(hi.abs())
}

/// Per-row values like KLD (heavy-tailed, many tiny, some exact zeros and +inf) with
/// targets like Δp (both signs).
fn rows_strategy() -> impl Strategy<Value = Vec<(f64, bool, Option<RowTarget>)>> {
    prop::collection::vec(
        (
            prop_oneof![
                8 => (-12.0f64..1.5).prop_map(|e| 10f64.powf(e)),
                1 => Just(0.0),
                1 => Just(f64::INFINITY),
            ],
            any::<bool>(),
            prop::option::of((0.0f64..12.0, 0.0f64..12.0)),
        )
            .prop_map(|(v, same, t)| {
                let t = t.map(|(a, b)| RowTarget {
                    nll_p: a,
                    nll_q: b,
                    dp: (-b).exp() - (-a).exp(),
                });
                (v, same, t)
            }),
        2..400,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merged_shards_equal_one_run(rows in rows_strategy(), cuts in prop::collection::vec(0.0f64..1.0, 1..5)) {
        let n = rows.len();
        let mut at: Vec<usize> = cuts.iter().map(|c| (c * n as f64) as usize).collect();
        at.extend([0, n]);
        at.sort();
        let whole = summary_of(&rows, 0, true);
        // Shards, serialised and read back as `kldiv merge` does, merged out of order.
        let mut shards: Vec<Summary> = at
            .windows(2)
            .map(|w| summary_of(&rows[w[0]..w[1]], w[0] as u64, false))
            .map(|s| Summary::from_json(&s.to_json()).unwrap())
            .collect();
        shards.reverse();
        let mut merged = shards[0].clone();
        for s in &shards[1..] {
            merged.merge(s).unwrap();
        }
        prop_assert_eq!(merged.rows, n as u64);
        prop_assert_eq!(merged.first_row, 0);
        prop_assert_eq!(merged.same_top, whole.same_top);
        let (a, b) = (whole.values.stats(), merged.values.stats());
        prop_assert_eq!((a.count, a.nan_rows), (b.count, b.nan_rows));
        prop_assert_eq!((a.min, a.min_row), (b.min, b.min_row));
        prop_assert_eq!((a.max, a.max_row), (b.max, b.max_row));
        prop_assert_eq!(whole.values.inf_count(), merged.values.inf_count());
        let (fa, fb) = (whole.values.finite_stats(), merged.values.finite_stats());
        prop_assert!(close(fa.mean, fb.mean, 1e-12), "{} {}", fa.mean, fb.mean);
        prop_assert!(close(fa.std, fb.std, 1e-9), "{} {}", fa.std, fb.std);
        let kld: Vec<f64> = rows.iter().map(|r| r.0).collect();
        for ((p, x), (_, y)) in a.percentiles.iter().zip(&b.percentiles) {
            prop_assert!(within_sketch_bound(&kld, *p, *y, *x), "p{}: {} vs {}", p, x, y);
        }
        // llama.cpp's numbers: moments to rounding, percentiles within the sketch bound.
        let (la, lb) = (whole.llama().unwrap(), merged.llama().unwrap());
        prop_assert_eq!(la.count, lb.count);
        if la.count > 2 {
            prop_assert!(close(la.ppl_q.0, lb.ppl_q.0, 1e-12));
            prop_assert!(close(la.ppl_q.1, lb.ppl_q.1, 1e-8));
            prop_assert!(close(la.cor_ln_ppl, lb.cor_ln_ppl, 1e-8) || la.cor_ln_ppl.is_nan());
            prop_assert!(close(la.rms_dp.0, lb.rms_dp.0, 1e-12));
            let dp: Vec<f64> = rows.iter().filter_map(|r| r.2.map(|t| t.dp)).collect();
            for ((p, x), (_, y)) in la.dp_pct.iter().zip(&lb.dp_pct) {
                prop_assert!(within_sketch_bound(&dp, *p, *y, *x), "Δp p{}: {} vs {}", p, x, y);
            }
        }
        prop_assert_eq!(la.same_top, lb.same_top);
    }
}

#[test]
fn summary_json_round_trips_and_reports_the_same() {
    let rows: Vec<_> = (0..50)
        .map(|i| (i as f64 * 0.01, i % 3 == 0, None))
        .collect();
    let s = summary_of(&rows, 7, false);
    let back = Summary::from_json(&s.to_json()).unwrap();
    assert_eq!(back, s);
    assert_eq!(report::text(&back), report::text(&s));
    assert_eq!(back.values.stats().min_row, 7);
}

#[test]
fn a_corrupt_or_foreign_summary_is_an_error() {
    let rows: Vec<_> = (0..20).map(|i| (i as f64, true, None)).collect();
    let good = summary_of(&rows, 0, false).to_json();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = v.clone();
        f(&mut v);
        Summary::from_json(&v.to_string()).unwrap_err().to_string()
    };
    assert!(with(&|v| v["version"] = 2.into()).contains("version 2"));
    assert!(with(&|v| v["format"] = "other".into()).contains("not a kldiv-summary"));
    assert!(with(&|v| v["rows"] = 21.into()).contains("counts disagree"));
    assert!(with(&|v| v["values"]["count"] = 19.into()).contains("counts disagree"));
    assert!(with(&|v| v["values"]["sketch"]["zeros"] = 5.into()).contains("counts disagree"));
    assert!(with(&|v| v["values"]["finite"]["mean"] = 1e9.into()).contains("not consistent"));
    assert!(with(&|v| v["meta"]["divergence"] = "kll".into()).contains("unknown divergence"));
    assert!(with(&|v| v["same_top"] = 30.into()).contains("counts disagree"));
    assert!(with(&|v| v["extra"] = 1.into()).contains("unknown field"));
    assert!(Summary::from_json("{")
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
}

#[test]
fn summaries_of_different_comparisons_or_overlapping_rows_do_not_merge() {
    let rows: Vec<_> = (0..10).map(|i| (i as f64, true, None)).collect();
    let a = summary_of(&rows, 0, false);
    let mut b = a.clone();
    assert!(b.merge(&a).unwrap_err().to_string().contains("overlap"));
    let mut c = summary_of(&rows, 10, false);
    c.meta.divergence = "js".into();
    let mut a2 = a.clone();
    assert!(a2.merge(&c).unwrap_err().to_string().contains("divergence"));
    let mut d = summary_of(&rows, 10, false);
    d.meta.cols = 9;
    assert!(a2.merge(&d).is_err());
    let plain = Summary::new(meta(), false, 10);
    assert!(a2
        .merge(&plain)
        .unwrap_err()
        .to_string()
        .contains("targets"));
}

/// Further divergences (`--divergence kl,reverse-kl,js`) merge like the main one: two shards
/// equal one run (moments to rounding, max with its global row), survive JSON, and a summary
/// whose further values do not cover its rows, or merging different lists, is an error.
#[test]
fn further_divergences_merge_and_round_trip() {
    let also = [Divergence::ReverseKl, Divergence::JensenShannon];
    let vals: Vec<(f64, f64, f64)> = (0..100)
        .map(|i| {
            let x = (i as f64 * 0.37).sin().abs();
            (x, 2.0 * x + 0.1, (x / 3.0).min(std::f64::consts::LN_2))
        })
        .collect();
    let shard = |rows: &[(f64, f64, f64)], first: u64| {
        let mut s = Summary::new(meta(), true, first).with_also(&also, true);
        for &(a, _, _) in rows {
            s.push_row(a, false, None);
        }
        let b: Vec<f64> = rows.iter().map(|r| r.1).collect();
        let c: Vec<f64> = rows.iter().map(|r| r.2).collect();
        s.push_also(0, &b).unwrap();
        s.push_also(1, &c).unwrap();
        s
    };
    let whole = shard(&vals, 0);
    let mut merged = Summary::from_json(&shard(&vals[..37], 0).to_json()).unwrap();
    merged
        .merge(&Summary::from_json(&shard(&vals[37..], 37).to_json()).unwrap())
        .unwrap();
    assert_eq!(merged.also.len(), 2);
    for k in 0..2 {
        let (name, w) = (&whole.also[k].0, whole.also[k].1.stats());
        let (mname, m) = (&merged.also[k].0, merged.also[k].1.stats());
        assert_eq!(name, mname);
        assert_eq!(m.count, vals.len());
        assert!(
            close(m.mean, w.mean, 1e-14),
            "{name}: {} vs {}",
            m.mean,
            w.mean
        );
        assert_eq!((m.max, m.max_row), (w.max, w.max_row), "{name}");
    }
    let want_mean = vals.iter().map(|r| r.1).sum::<f64>() / vals.len() as f64;
    assert!(close(whole.also[0].1.stats().mean, want_mean, 1e-14));
    let j = report::json(&merged);
    assert!(j["also"]["reverse-kl"]["mean"].as_f64().is_some());
    assert!(j["also"]["js"]["max"].as_f64().is_some());
    assert!(report::text(&merged).contains("js: mean"));

    // Further values that do not cover the rows, and different lists, are refused.
    let mut short = Summary::new(meta(), false, 0).with_also(&also, false);
    short.push_row(0.5, false, None);
    short.push_also(0, &[0.5]).unwrap();
    assert!(Summary::from_json(&short.to_json()).is_err());
    let mut other = Summary::new(meta(), false, 200).with_also(&also[..1], false);
    other.push_row(0.5, false, None);
    other.push_also(0, &[0.5]).unwrap();
    assert!(merged.merge(&other).is_err());
}

/// llama-compat's NLL sums (llama.cpp's own) survive JSON, merge by adding, and a summary
/// whose sums count other rows than its targets is refused.
#[test]
fn llama_compat_sums_round_trip_and_merge() {
    let shard = |first: u64, n: u64| {
        let mut s = Summary::new(meta(), false, first).with_targets(false);
        for i in 0..n {
            let (q, p) = (1.0 + 0.01 * i as f32, 2.0 - 0.02 * i as f32);
            s.push_row(
                0.1,
                true,
                Some(RowTarget {
                    nll_q: q as f64,
                    nll_p: p as f64,
                    dp: 0.0,
                }),
            );
            s.push_llama_nll(q, p);
        }
        s
    };
    let (mut a, b) = (shard(0, 30), shard(30, 20));
    let back = Summary::from_json(&a.to_json()).unwrap();
    assert_eq!(back, a);
    a.merge(&b).unwrap();
    // An empty shard has no sums and takes none away.
    a.merge(&shard(50, 0)).unwrap();
    let sums = a.targets.as_ref().unwrap().llama_sums.unwrap();
    assert_eq!(sums.n, 50);
    let want = b.targets.as_ref().unwrap().llama_sums.unwrap().nll
        + shard(0, 30).targets.unwrap().llama_sums.unwrap().nll;
    assert_eq!(sums.nll, want);
    let mut v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    v["targets"]["llama_sums"]["n"] = serde_json::json!(49);
    let e = Summary::from_json(&v.to_string()).unwrap_err();
    assert!(e.to_string().contains("counts disagree"), "{e}");
}
