//! The statistics of llama.cpp's `llama-perplexity --kl-divergence` report, from a
//! [`Summary`], with its formulas and its layout (same labels, same order, same precision), so
//! scripts that parse llama.cpp's output read ours:
//! - mean ± uncertainty: SE = sqrt((mean(x²) − mean(x)²)/(n − 1));
//! - covariance of two means: (mean(xy) − mean(x)·mean(y))/(n − 1);
//! - percentiles: linear interpolation at f·(n − 1) of the sorted values; in llama-compat
//!   mode as llama.cpp computes them (each value rounded to f32, the interpolation in f32, the
//!   median the mean of the two middle values), so that its printed digits are reproduced.
//!
//! Non-finite numbers print as glibc's printf prints them ("-nan", "inf"), as llama.cpp's do.

use super::{Summary, TargetStats};
use std::fmt::Write as _;

/// How a report names its main divergence's statistics: llama.cpp's labels for KL, the
/// divergence's own name for any other, so that no other divergence is read as KL (by a
/// person, or by a script that parses llama.cpp's report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Labels {
    /// In the text's lines ("Mean    KLD:", "KLD where max p in …").
    pub short: &'static str,
    /// The text block's title ("====== KL divergence statistics ======").
    pub title: &'static str,
    /// The JSON key ("kld", "kld_by_p_confidence", "mean_kld").
    pub key: &'static str,
}

impl Labels {
    /// The labels of a divergence by its command-line name.
    pub fn of(divergence: &str) -> Labels {
        let (short, title, key) = match divergence {
            "reverse-kl" => ("RKLD", "reverse KL divergence", "reverse_kld"),
            "symmetric-kl" => ("SKLD", "symmetric KL divergence", "symmetric_kld"),
            "js" => ("JSD", "Jensen-Shannon divergence", "jsd"),
            "cross-entropy" => ("CE", "cross-entropy", "cross_entropy"),
            "entropy" => ("H", "entropy", "entropy"),
            _ => ("KLD", "KL divergence", "kld"),
        };
        Labels { short, title, key }
    }
}

/// Every number of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaStats {
    /// What `kld` and `kld_pct` hold: KL, unless the run's first divergence was another.
    pub labels: Labels,
    pub count: usize,
    pub ppl_q: (f64, f64),
    pub ppl_p: (f64, f64),
    pub cor_ln_ppl: f64,
    pub ln_ppl_ratio: (f64, f64),
    pub ppl_ratio: (f64, f64),
    pub ppl_diff: (f64, f64),
    pub kld: (f64, f64),
    /// (percent, value), 0 and 100 being the minimum and maximum.
    pub kld_pct: Vec<(f64, f64)>,
    pub dp: (f64, f64),
    pub dp_pct: Vec<(f64, f64)>,
    pub rms_dp: (f64, f64),
    pub same_top: (f64, f64),
}

/// The rows of llama.cpp's report, in its order (100 = maximum, 50 = median, 0 = minimum).
pub const KLD_PCT: [f64; 11] = [
    100.0, 99.9, 99.0, 95.0, 90.0, 50.0, 10.0, 5.0, 1.0, 0.1, 0.0,
];
pub const DP_PCT: [f64; 13] = [
    100.0, 99.9, 99.0, 95.0, 90.0, 75.0, 50.0, 25.0, 10.0, 5.0, 1.0, 0.1, 0.0,
];

/// The report's numbers from a summary's target statistics.
pub(super) fn stats(s: &Summary, t: &TargetStats) -> LlamaStats {
    // llama.cpp takes the square root of a variance that rounding made negative (NaN) where
    // the exact report clamps it at 0.
    let compat = s.meta.mode == "llama-compat";
    let root = |v: f64| if compat { v.sqrt() } else { v.max(0.0).sqrt() };
    let (lq, lp, c) = match &t.llama_sums {
        Some(l) => llama_nll_stats(l),
        None => (t.nll.x.mean_unc(), t.nll.y.mean_unc(), t.nll.cov_of_means()),
    };
    let ppl_q = lq.0.exp();
    let ppl_p = lp.0.exp();
    let ratio_unc = root(lq.1 * lq.1 + lp.1 * lp.1 - 2.0 * c);
    let ratio = (lq.0 - lp.0).exp();
    let ppl_cov = ppl_q * ppl_p * c;
    let (uq, up) = (ppl_q * lq.1, ppl_p * lp.1);
    let mse = t.dp2.mean_unc();
    let rms = mse.0.sqrt();
    // Rows with KLD = +inf make the mean infinite and its uncertainty undefined.
    let kld = if s.values.inf_count() > 0 {
        (f64::INFINITY, f64::NAN)
    } else {
        s.values.finite_moments().mean_unc()
    };
    let pct = |v: &super::Values, p: &[f64]| -> Vec<(f64, f64)> {
        let values = match v.exact() {
            Some(kept) if compat => f32_percentiles(kept, p),
            _ => v.percentiles(p),
        };
        p.iter().copied().zip(values).collect()
    };
    LlamaStats {
        labels: Labels::of(&s.meta.divergence),
        count: t.nll.x.n as usize,
        ppl_q: (ppl_q, uq),
        ppl_p: (ppl_p, up),
        cor_ln_ppl: c / (lq.1 * lp.1),
        ln_ppl_ratio: (lq.0 - lp.0, ratio_unc),
        ppl_ratio: (ratio, ratio * ratio_unc),
        ppl_diff: (ppl_q - ppl_p, root(uq * uq + up * up - 2.0 * ppl_cov)),
        kld,
        kld_pct: pct(&s.values, &KLD_PCT),
        dp: t.dp.finite_moments().mean_unc(),
        dp_pct: pct(&t.dp, &DP_PCT),
        rms_dp: (rms, 0.5 / rms * mse.1),
        same_top: share_with_error(s.same_top as usize, s.scored_rows() as usize),
    }
}

/// ln PPL(Q) and ln PPL(P), each (mean, uncertainty), and their covariance as llama.cpp's
/// report computes them from its sums (`mean_and_uncertainty`, `covariance`): the variance
/// as mean(x²) − mean(x)², 0 where that is not positive or with 10 rows or fewer.
fn llama_nll_stats(l: &super::LlamaSums) -> ((f64, f64), (f64, f64), f64) {
    let n = l.n as f64;
    let mean_unc = |sum: f64, sum2: f64| {
        if l.n < 1 {
            return (0.0, 0.0);
        }
        let f = sum / n;
        let df = sum2 / n - f * f;
        let df = if df > 0.0 && l.n > 10 {
            (df / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        (f, df)
    };
    let cov = if l.n < 10 {
        0.0
    } else {
        (l.cross / n - (l.nll / n) * (l.base / n)) / (n - 1.0)
    };
    (mean_unc(l.nll, l.nll2), mean_unc(l.base, l.base2), cov)
}

/// Percentiles as llama.cpp's report computes them (tools/perplexity/perplexity.cpp): the
/// values as f32, sorted; the median the mean of the two middle ones (f32); the others at
/// p = f·(n − 1) in f32, (1 − frac)·v[⌊p⌋] + frac·v[⌊p⌋ + 1] in f32. NaN values are left out.
fn f32_percentiles(values: &[f64], pcts: &[f64]) -> Vec<f64> {
    let mut v: Vec<f32> = values
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| x as f32)
        .collect();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    pcts.iter()
        .map(|&pct| {
            if n == 0 {
                return f64::NAN;
            }
            let fraction = (pct / 100.0) as f32;
            let x = if pct == 50.0 {
                if n.is_multiple_of(2) {
                    0.5f32 * (v[n / 2] + v[n / 2 - 1])
                } else {
                    v[n / 2]
                }
            } else if fraction <= 0.0 {
                v[0]
            } else if fraction >= 1.0 {
                v[n - 1]
            } else {
                let p = fraction * (n - 1) as f32;
                let ip = p as usize;
                let frac = p - ip as f32;
                (1.0 - frac) * v[ip] + frac * v[(ip + 1).min(n - 1)]
            };
            x as f64
        })
        .collect()
}

/// `v` right-aligned in `width` with `prec` decimals; NaN as "-nan" (glibc's printf of the
/// NaN an x86 square root or 0/0 gives, which llama.cpp's report shows).
fn f(v: f64, width: usize, prec: usize) -> String {
    if v.is_nan() {
        format!("{:>width$}", "-nan")
    } else {
        format!("{v:width$.prec$}")
    }
}

fn label(p: f64, what: &str) -> String {
    match p {
        100.0 => format!("Maximum {what}"),
        0.0 => format!("Minimum {what}"),
        50.0 => format!("Median  {what}"),
        _ => format!("{:>4.1}%   {what}", p),
    }
}

/// llama.cpp's final three blocks.
pub fn text(s: &LlamaStats) -> String {
    let mut o = String::new();
    let pm = |o: &mut String, l: &str, (v, u): (f64, f64)| {
        let _ = writeln!(o, "{l:<30}: {} ± {}", f(v, 10, 6), f(u, 10, 6));
    };
    let _ = writeln!(o, "====== Perplexity statistics ======");
    pm(&mut o, "Mean PPL(Q)", s.ppl_q);
    pm(&mut o, "Mean PPL(base)", s.ppl_p);
    let _ = writeln!(
        o,
        "Cor(ln(PPL(Q)), ln(PPL(base))): {}%",
        f(100.0 * s.cor_ln_ppl, 6, 2)
    );
    pm(&mut o, "Mean ln(PPL(Q)/PPL(base))", s.ln_ppl_ratio);
    pm(&mut o, "Mean PPL(Q)/PPL(base)", s.ppl_ratio);
    pm(&mut o, "Mean PPL(Q)-PPL(base)", s.ppl_diff);
    let what = s.labels.short;
    let _ = writeln!(o, "\n====== {} statistics ======", s.labels.title);
    let (m, u) = (f(s.kld.0, 10, 6), f(s.kld.1, 10, 6));
    let _ = writeln!(o, "{:<8}{what}: {m} ± {u}", "Mean");
    for &(p, v) in &s.kld_pct {
        let _ = writeln!(o, "{}: {}", label(p, what), f(v, 10, 6));
    }
    let _ = writeln!(o, "\n====== Token probability statistics ======");
    let _ = writeln!(
        o,
        "Mean    Δp: {} ± {} %",
        f(100.0 * s.dp.0, 6, 3),
        f(100.0 * s.dp.1, 5, 3)
    );
    for &(p, v) in &s.dp_pct {
        let _ = writeln!(o, "{}: {}%", label(p, "Δp"), f(100.0 * v, 6, 3));
    }
    let _ = writeln!(
        o,
        "RMS Δp    : {} ± {} %",
        f(100.0 * s.rms_dp.0, 6, 3),
        f(100.0 * s.rms_dp.1, 5, 3)
    );
    let _ = writeln!(
        o,
        "Same top p: {} ± {} %",
        f(100.0 * s.same_top.0, 6, 3),
        f(100.0 * s.same_top.1, 5, 3)
    );
    o
}

/// JSON has no infinity or NaN: null (the reports count such rows beside).
pub fn num(v: f64) -> serde_json::Value {
    if v.is_finite() {
        serde_json::json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// A share k/n with its standard error sqrt(p(1−p)/(n−1)), as llama.cpp's report computes
/// it; NaN below two rows.
pub fn share_with_error(k: usize, n: usize) -> (f64, f64) {
    let share = k as f64 / n as f64;
    let se = if n < 2 {
        f64::NAN
    } else {
        (share * (1.0 - share) / (n - 1) as f64).sqrt()
    };
    (share, se)
}

fn mean_sem((m, u): (f64, f64)) -> serde_json::Value {
    serde_json::json!({ "mean": num(m), "sem": num(u) })
}

fn with_pct((m, u): (f64, f64), pct: &[(f64, f64)]) -> serde_json::Value {
    let mut j = mean_sem((m, u));
    let mut p = serde_json::Map::new();
    for &(k, v) in pct {
        match k {
            100.0 => j["max"] = num(v),
            0.0 => j["min"] = num(v),
            50.0 => j["median"] = num(v),
            _ => {
                p.insert(format!("p{k}"), num(v));
            }
        }
    }
    j["percentiles"] = serde_json::Value::Object(p);
    j
}

/// The same numbers under stable snake_case keys (non-finite values are null).
pub fn json(s: &LlamaStats) -> serde_json::Value {
    let mut j = serde_json::json!({
        "target_rows": s.count,
        "ppl_q": mean_sem(s.ppl_q),
        "ppl_p": mean_sem(s.ppl_p),
        "cor_ln_ppl": num(s.cor_ln_ppl),
        "ln_ppl_ratio": mean_sem(s.ln_ppl_ratio),
        "ppl_ratio": mean_sem(s.ppl_ratio),
        "ppl_diff": mean_sem(s.ppl_diff),
        "delta_p": with_pct(s.dp, &s.dp_pct),
        "rms_delta_p": mean_sem(s.rms_dp),
        "same_top": mean_sem(s.same_top),
    });
    j[s.labels.key] = with_pct(s.kld, &s.kld_pct);
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_top_error_uses_n_minus_one() {
        // 3 of 4 rows agree: p = 0.75, SE = sqrt(0.75 · 0.25 / 3) (llama.cpp's form).
        let (p, se) = share_with_error(3, 4);
        assert_eq!(p, 0.75);
        assert!((se - 0.25).abs() < 1e-15, "{se}");
        assert!(share_with_error(1, 1).1.is_nan());
    }

    /// llama-compat percentiles follow llama.cpp's f32 arithmetic: at 99.9% of 100,000
    /// values p = 0.999f·99999 rounds to 99899 in f32 (no interpolation), where f64 gives
    /// 99899.001 and moves 0.001 of the way to the next value: a printed difference here.
    #[test]
    fn compat_percentiles_are_llama_cpps_f32_arithmetic() {
        let mut v = vec![0.0; 99_900];
        v.extend(std::iter::repeat_n(1.0, 100));
        let got = f32_percentiles(&v, &[100.0, 99.9, 50.0, 0.0]);
        assert_eq!(got, [1.0, 0.0, 0.0, 0.0]);
        let mut exact = super::super::Values::new(true);
        for (row, &x) in v.iter().enumerate() {
            exact.push(x, row as u64);
        }
        assert!((exact.percentile(99.9) - 0.001).abs() < 1e-9);
        // The median: the two middle values' mean in f32 (even n), the middle one (odd n).
        assert_eq!(f32_percentiles(&[1.0, 2.0, 4.0, 8.0], &[50.0]), [3.0]);
        assert_eq!(f32_percentiles(&[1.0, 2.0, 4.0], &[50.0]), [2.0]);
        // Values are rounded to f32 first: 0.1 prints as llama.cpp's float does.
        assert_eq!(f32_percentiles(&[0.1], &[100.0]), [0.1f32 as f64]);
        // 10% of 11 values: p = 0.1f·10 = 1.0000000149 → 1 in f32, v[1] exactly.
        let w: Vec<f64> = (0..11).map(|i| (i * i) as f64).collect();
        assert_eq!(f32_percentiles(&w, &[10.0]), [1.0]);
        assert!(f32_percentiles(&[], &[50.0])[0].is_nan());
    }

    /// llama.cpp's NLL sums: f32 products summed in f64, its variance and covariance
    /// formulas; merged by adding, kept through JSON.
    #[test]
    fn llama_sums_follow_llama_cpps_formulas() {
        let nll: Vec<(f32, f32)> = (0..12)
            .map(|i| (1.0 + 0.1 * i as f32, 2.0 - 0.05 * (i * i % 7) as f32))
            .collect();
        let mut l = super::super::LlamaSums::default();
        for &(q, p) in &nll {
            l.push(q, p);
        }
        let n = 12.0;
        let sum =
            |f: &dyn Fn(f32, f32) -> f32| nll.iter().map(|&(q, p)| f(q, p) as f64).sum::<f64>();
        let (sq, sq2) = (sum(&|q, _| q), sum(&|q, _| q * q));
        let (sp, sp2, sx) = (sum(&|_, p| p), sum(&|_, p| p * p), sum(&|q, p| q * p));
        let ((mq, uq), (mp, up), c) = llama_nll_stats(&l);
        assert_eq!(mq, sq / n);
        assert_eq!(uq, ((sq2 / n - mq * mq) / (n - 1.0)).sqrt());
        assert_eq!((mp, up), (sp / n, ((sp2 / n - mp * mp) / (n - 1.0)).sqrt()));
        assert_eq!(c, (sx / n - mq * mp) / (n - 1.0));
        // As llama.cpp: no uncertainty with ten rows or fewer, no covariance below ten.
        let mut few = super::super::LlamaSums::default();
        for &(q, p) in &nll[..9] {
            few.push(q, p);
        }
        let ((_, u), _, c) = llama_nll_stats(&few);
        assert_eq!((u, c), (0.0, 0.0));
        few.push(nll[9].0, nll[9].1);
        let ((_, u), _, c) = llama_nll_stats(&few);
        assert_eq!(u, 0.0);
        assert!(c != 0.0);
        let mut merged = few;
        for &(q, p) in &nll[10..] {
            let mut one = super::super::LlamaSums::default();
            one.push(q, p);
            merged.merge(&one);
        }
        assert_eq!(merged.n, 12);
        assert!((merged.nll2 - l.nll2).abs() < 1e-12);
    }

    /// NaN prints as llama.cpp's printf prints it, right-aligned.
    #[test]
    fn nan_prints_as_glibc_does() {
        assert_eq!(f(f64::NAN, 10, 6), "      -nan");
        assert_eq!(f(0.5, 10, 6), "  0.500000");
        assert_eq!(f(-1.25, 6, 3), "-1.250");
    }

    #[test]
    fn formulas_on_a_hand_example() {
        // Four rows: NLLs, Δp, KLD chosen so each statistic is computable by hand.
        let nll_q = [1.0, 2.0, 3.0, 2.0];
        let nll_p = [1.0, 1.0, 3.0, 3.0];
        let dp = [0.1, -0.1, 0.2, 0.0];
        let kld = [0.0, 0.1, 0.2, 0.3];
        let req = crate::Request::new(crate::Divergence::Kl);
        let mut sum = Summary::new(super::super::Meta::of(&req, 4, crate::Dtype::F32), true, 0)
            .with_targets(true);
        for i in 0..4 {
            let t = super::super::RowTarget {
                nll_p: nll_p[i],
                nll_q: nll_q[i],
                dp: dp[i],
            };
            sum.push_row(kld[i], i != 0, Some(t));
        }
        let s = sum.llama().unwrap();
        // mean ln PPL(Q) = 2, var = (1+4+9+4)/4 − 4 = 0.5, SE = sqrt(0.5/3).
        let se = (0.5f64 / 3.0).sqrt();
        assert!((s.ppl_q.0 - 2f64.exp()).abs() < 1e-12);
        assert!((s.ppl_q.1 - 2f64.exp() * se).abs() < 1e-12);
        // ln PPL(base): mean 2, var (1+1+9+9)/4 − 4 = 1, SE sqrt(1/3).
        let se_p = (1.0f64 / 3.0).sqrt();
        // cov: mean(q·p) = (1+2+9+6)/4 = 4.5, minus 2·2 → 0.5, /3.
        let c = 0.5 / 3.0;
        assert!((s.cor_ln_ppl - c / (se * se_p)).abs() < 1e-12);
        // ln ratio: 0 ± sqrt(se² + se_p² − 2c) = sqrt(0.5/3).
        assert!(s.ln_ppl_ratio.0.abs() < 1e-12);
        assert!((s.ln_ppl_ratio.1 - se).abs() < 1e-12);
        // Δp mean 0.05; RMS sqrt(mean(dp²)) = sqrt(0.06/4).
        assert!((s.dp.0 - 0.05).abs() < 1e-12);
        assert!((s.rms_dp.0 - (0.06f64 / 4.0).sqrt()).abs() < 1e-12);
        // Same top 3/4 ± sqrt(0.75·0.25/3) = 0.25.
        assert!((s.same_top.1 - 0.25).abs() < 1e-12);
        // Median of KLD by interpolation at 0.5·3 = 1.5: 0.15.
        let med = s.kld_pct.iter().find(|p| p.0 == 50.0).unwrap().1;
        assert!((med - 0.15).abs() < 1e-12);
        let t = text(&s);
        for l in [
            "====== Perplexity statistics ======",
            "Mean PPL(Q)                   :   7.389056 ±   ",
            "Cor(ln(PPL(Q)), ln(PPL(base))): ",
            "====== KL divergence statistics ======",
            "Maximum KLD:   0.300000",
            "99.9%   KLD:",
            " 0.1%   KLD:",
            "Median  KLD:   0.150000",
            "Minimum KLD:   0.000000",
            "Mean    Δp:  5.000 ± ",
            "75.0%   Δp:",
            "RMS Δp    : ",
            "Same top p: 75.000 ± 25.000 %",
        ] {
            assert!(t.contains(l), "missing {l:?} in\n{t}");
        }
        let j = json(&s);
        assert!((j["kld"]["median"].as_f64().unwrap() - 0.15).abs() < 1e-12);
        assert!(j["delta_p"]["percentiles"]["p99.9"].is_number());
        assert!(t.contains("Mean    KLD:   0.150000 ± "), "{t}");
    }

    /// A first divergence other than KL is named as itself wherever the report would say KLD
    /// (llama.cpp's block, the agreement's buckets, their JSON keys): never read as KL.
    #[test]
    fn another_divergence_is_not_labelled_kld() {
        let req = crate::Request::new(crate::Divergence::JensenShannon);
        let meta = super::super::Meta::of(&req, 4, crate::Dtype::F32);
        let mut sum = Summary::new(meta, true, 0)
            .with_targets(true)
            .with_agreement();
        let t = super::super::RowTarget {
            nll_p: 1.0,
            nll_q: 1.5,
            dp: 0.1,
        };
        sum.push_row(0.25, true, Some(t));
        sum.push_row(0.5, false, Some(t));
        let g = super::super::agreement::row(
            crate::InputForm::Probabilities,
            &[0.5f64, 0.3, 0.2],
            &[0.2f64, 0.3, 0.5],
        )
        .unwrap();
        if let Some(a) = &mut sum.agreement {
            a.push(&g, 0.25);
        }
        let text = super::super::report::text(&sum);
        for l in [
            "====== Jensen-Shannon divergence statistics ======",
            "Mean    JSD:   0.375000 ± ",
            "Maximum JSD:   0.500000",
            "JSD where max p in [.5, .75):         1 rows, mean 2.500000e-1",
            // An empty bucket has no mean.
            "JSD where max p in [.95, 1]:          0 rows\n",
            "top-1   P's top-1 is Q's top-1: 0.0000",
        ] {
            assert!(text.contains(l), "missing {l:?} in\n{text}");
        }
        // The heading writes the divergence as its formula and the input as the CLI spells it.
        let head = text.lines().next().unwrap_or("");
        assert!(
            head.starts_with("JS(P, Q) of ") && head.contains(", f32 probs, in nats"),
            "{head}"
        );
        let entropy = Summary::new(
            super::super::Meta::of(
                &crate::Request::new(crate::Divergence::Entropy),
                4,
                crate::Dtype::F32,
            ),
            true,
            0,
        );
        let head = super::super::report::text(&entropy);
        assert!(
            head.starts_with("H(P) of ") && !head.contains(" and "),
            "{head}"
        );
        assert!(
            !text.contains("KLD") && !text.contains("KL divergence"),
            "{text}"
        );
        let j = super::super::report::json(&sum);
        assert!((j["jsd"]["mean"].as_f64().unwrap() - 0.375).abs() < 1e-12);
        assert!(j.get("kld").is_none(), "{j}");
        let buckets = &j["agreement"]["jsd_by_p_confidence"];
        assert_eq!(buckets[2]["mean_jsd"].as_f64(), Some(0.25), "{j}");
        assert!(j["agreement"].get("kld_by_p_confidence").is_none(), "{j}");
    }
}
