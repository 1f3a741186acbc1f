//! Agreement between P and Q beyond the divergence (opt-in: one more read of each row, by
//! the engine that ran the rows — `cpu::agreeing` or the GPU's agreement pass — or here by
//! `cpu::row_stats` for rows given without; f64 for the rows none takes): top-K agreement,
//! Σ min(p, q) = 1 − TV (the acceptance rate of speculative decoding), and KLD by P's
//! confidence. Every statistic is a count or moments: mergeable.

use super::moments::Moments;
use crate::cpu::row_stats::RowStats;
use crate::element::Element;
use crate::request::InputForm;
use crate::semantics::sums::{AgreeSums, RowTops};
use serde::{Deserialize, Serialize};

/// The K of the top-K statistics.
pub const TOP_K: [usize; 3] = [1, 5, 10];
/// Upper edges of P's confidence buckets (max p); the last bucket is [0.95, 1].
pub const BUCKET_EDGES: [f64; 4] = [0.25, 0.5, 0.75, 0.95];

/// One row's agreement values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowAgreement {
    /// For each K: P's top-1 is among Q's top K.
    pub top1_in_q_topk: [bool; 3],
    /// For each K: the share of P's top K found in Q's top K.
    pub topk_overlap: [f64; 3],
    /// Σ min(p, q) over the row (1 − total variation distance).
    pub sum_min: f64,
    /// max p: P's confidence.
    pub p_max: f64,
}

/// The bucket of a confidence.
pub fn bucket(p_max: f64) -> usize {
    BUCKET_EDGES.iter().take_while(|&&e| p_max >= e).count()
}

/// A row's probabilities in f64 (normalised; logits and log-probabilities through their
/// log-sum-exp). None when the row has no mass or a value that is not a number.
fn probs_of<T: Element>(input: InputForm, row: &[T]) -> Option<Vec<f64>> {
    let v: Vec<f64> = row.iter().map(|x| x.to_f64()).collect();
    if v.iter().any(|x| x.is_nan()) {
        return None;
    }
    match input {
        InputForm::Probabilities => {
            let s: f64 = v.iter().sum();
            (s > 0.0 && s.is_finite()).then(|| v.iter().map(|x| x / s).collect())
        }
        _ => {
            let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !m.is_finite() {
                return None;
            }
            let e: Vec<f64> = v.iter().map(|x| (x - m).exp()).collect();
            let s: f64 = e.iter().sum();
            Some(e.iter().map(|x| x / s).collect())
        }
    }
}

/// Indices of the k largest values, largest first (the lower index first on ties).
fn top_k(v: &[f64], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if best.len() == k && x <= v[best[k - 1]] {
            continue;
        }
        let at = best.partition_point(|&j| v[j] >= x);
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

/// The agreement of one row pair (None for a row without probabilities on a side).
pub fn row<T: Element>(input: InputForm, p: &[T], q: &[T]) -> Option<RowAgreement> {
    let (a, b) = (probs_of(input, p)?, probs_of(input, q)?);
    let kmax = TOP_K[2].min(a.len());
    let (ta, tb) = (top_k(&a, kmax), top_k(&b, kmax));
    let sum_min = a.iter().zip(&b).map(|(x, y)| x.min(*y)).sum();
    Some(from_tops(&ta, &tb, sum_min, a[ta[0]]))
}

/// A row's agreement from each side's top `TOP_K[2]` (capped at the row length), largest
/// first.
fn from_tops<I: PartialEq>(ta: &[I], tb: &[I], sum_min: f64, p_max: f64) -> RowAgreement {
    let mut r = RowAgreement {
        top1_in_q_topk: [false; 3],
        topk_overlap: [0.0; 3],
        sum_min,
        p_max,
    };
    for (i, &k) in TOP_K.iter().enumerate() {
        let k = k.min(ta.len());
        r.top1_in_q_topk[i] = tb[..k].contains(&ta[0]);
        let hits = ta[..k].iter().filter(|j| tb[..k].contains(j)).count();
        r.topk_overlap[i] = hits as f64 / k as f64;
    }
    r
}

/// The agreement of one row pair from its SIMD statistics (`cpu::row_stats`, asked for the
/// top `TOP_K[2]` and Σ min): the same values as [`row`] computes in f64.
pub fn from_stats(input: InputForm, st: &RowStats, cols: usize) -> RowAgreement {
    let kmax = TOP_K[2].min(cols);
    let (ta, tb) = (&st.p.top[..kmax], &st.q.top[..kmax]);
    from_tops(ta, tb, st.sum_min, st.p.p_max(input))
}

/// The agreement of one row pair from an engine's agreement pass (`semantics::run::agreement`)
/// and the tops of its first pass: the same values as [`row`] computes in f64.
pub fn from_sums(s: &AgreeSums, tops: &RowTops) -> RowAgreement {
    let p_max = (tops.max_a - tops.lse_a).exp();
    from_tops(s.top_a.cols(), s.top_b.cols(), s.sum_min, p_max)
}

/// KLD of the rows in one confidence bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Moments of the finite values, and rows whose value is +inf.
    pub kld: Moments,
    pub inf: u64,
}

impl Bucket {
    pub fn rows(&self) -> u64 {
        self.kld.n + self.inf
    }

    pub fn mean(&self) -> f64 {
        if self.inf > 0 {
            f64::INFINITY
        } else if self.kld.n == 0 {
            f64::NAN
        } else {
            self.kld.mean
        }
    }
}

/// The agreement statistics of a summary's rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    /// Rows counted (rows with probabilities on both sides).
    pub rows: u64,
    pub top1_in_q_topk: [u64; 3],
    pub topk_overlap: [Moments; 3],
    pub sum_min: Moments,
    pub buckets: [Bucket; 5],
}

impl Agreement {
    pub fn push(&mut self, r: &RowAgreement, kld: f64) {
        self.rows += 1;
        for i in 0..3 {
            self.top1_in_q_topk[i] += r.top1_in_q_topk[i] as u64;
            self.topk_overlap[i].push(r.topk_overlap[i]);
        }
        self.sum_min.push(r.sum_min);
        let b = &mut self.buckets[bucket(r.p_max)];
        if kld == f64::INFINITY {
            b.inf += 1;
        } else if !kld.is_nan() {
            b.kld.push(kld);
        }
    }

    pub fn merge(&mut self, o: &Agreement) {
        self.rows += o.rows;
        for i in 0..3 {
            self.top1_in_q_topk[i] += o.top1_in_q_topk[i];
            self.topk_overlap[i] = self.topk_overlap[i].merge(&o.topk_overlap[i]);
        }
        self.sum_min = self.sum_min.merge(&o.sum_min);
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            a.kld = a.kld.merge(&b.kld);
            a.inf += b.inf;
        }
    }

    /// Counts that must agree in a serialised summary.
    pub(super) fn check(&self, rows: u64) -> Result<(), String> {
        let ok = self.rows <= rows
            && self.top1_in_q_topk.iter().all(|&c| c <= self.rows)
            && self.topk_overlap.iter().all(|m| m.n == self.rows)
            && self.sum_min.n == self.rows
            && self.buckets.iter().map(|b| b.rows()).sum::<u64>() <= self.rows;
        if ok {
            Ok(())
        } else {
            Err("agreement counts disagree".into())
        }
    }

    /// As JSON (the report's `agreement` object), the buckets' means of the divergence
    /// `labels` names.
    pub fn json(&self, labels: super::llama::Labels) -> serde_json::Value {
        let n = self.rows as f64;
        let mut top = serde_json::Map::new();
        for (i, k) in TOP_K.iter().enumerate() {
            top.insert(
                format!("top{k}"),
                serde_json::json!({
                    "p_top1_in_q_topk": self.top1_in_q_topk[i] as f64 / n,
                    "overlap": super::llama::num(self.topk_overlap[i].mean_unc().0),
                }),
            );
        }
        let (m, se) = self.sum_min.mean_unc();
        let edges = [0.0, 0.25, 0.5, 0.75, 0.95, 1.0];
        let buckets: Vec<serde_json::Value> = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut j = serde_json::json!({
                    "p_max_from": edges[i],
                    "p_max_to": edges[i + 1],
                    "rows": b.rows(),
                    "inf_rows": b.inf,
                });
                j[format!("mean_{}", labels.key)] = super::llama::num(b.mean());
                j
            })
            .collect();
        let mut j = serde_json::json!({
            "rows": self.rows,
            "top_k": top,
            "sum_min": { "mean": super::llama::num(m), "sem": super::llama::num(se) },
        });
        j[format!("{}_by_p_confidence", labels.key)] = buckets.into();
        j
    }

    /// As text lines of the report (the buckets' means of the divergence `labels` names).
    pub fn text(&self, labels: super::llama::Labels) -> String {
        use std::fmt::Write as _;
        let n = self.rows as f64;
        let mut o = String::new();
        let _ = writeln!(o, "  agreement over {} rows:", self.rows);
        for (i, k) in TOP_K.iter().enumerate() {
            // At K = 1 the two measures are one: the argmaxes agree.
            if *k == 1 {
                let _ = writeln!(
                    o,
                    "    top-1   P's top-1 is Q's top-1: {:.4}",
                    self.top1_in_q_topk[i] as f64 / n
                );
                continue;
            }
            let _ = writeln!(
                o,
                "    top-{k:<2}  P's top-1 in Q's top-{k}: {:.4}   P's top-{k} in Q's top-{k}: {:.4}",
                self.top1_in_q_topk[i] as f64 / n,
                self.topk_overlap[i].mean
            );
        }
        let (m, se) = self.sum_min.mean_unc();
        let _ = writeln!(
            o,
            "    Σ min(p, q) {m:.6} ± {se:.6}  (1 − total variation; speculative decoding's acceptance rate)"
        );
        let edges = ["0", ".25", ".5", ".75", ".95", "1"];
        for (i, b) in self.buckets.iter().enumerate() {
            let close = if i == 4 { "]" } else { ")" };
            let range = format!("[{}, {}{close}:", edges[i], edges[i + 1]);
            let _ = write!(
                o,
                "    {} where max p in {range:<12}{:>8} rows",
                labels.short,
                b.rows()
            );
            // An empty bucket has no mean to print.
            let _ = if b.rows() > 0 {
                writeln!(o, ", mean {:.6e}", b.mean())
            } else {
                writeln!(o)
            };
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_computed_row() {
        // P = [.5, .3, .2], Q = [.2, .3, .5]: tops 0 and 2; Σ min = .2 + .3 + .2 = .7.
        let r = row(
            InputForm::Probabilities,
            &[0.5f64, 0.3, 0.2],
            &[0.2f64, 0.3, 0.5],
        )
        .unwrap();
        assert_eq!(r.top1_in_q_topk, [false, true, true]);
        // K = 5 and 10 are capped at the row's 3 entries: all of P's are in Q's.
        assert_eq!(r.topk_overlap, [0.0, 1.0, 1.0]);
        assert!((r.sum_min - 0.7).abs() < 1e-15);
        assert_eq!(r.p_max, 0.5);
        assert_eq!(bucket(0.5), 2);
        assert_eq!(
            (bucket(0.0), bucket(0.2499), bucket(0.95), bucket(1.0)),
            (0, 0, 4, 4)
        );
        // Logits: the same probabilities.
        let l = |v: [f64; 3]| v.map(f64::ln);
        let r2 = row(InputForm::Logits, &l([0.5, 0.3, 0.2]), &l([0.2, 0.3, 0.5])).unwrap();
        assert!((r2.sum_min - 0.7).abs() < 1e-15);
        assert!(row(InputForm::Logits, &[f64::NEG_INFINITY; 2], &[0.0f64; 2]).is_none());
    }

    #[test]
    fn top_k_is_ordered_with_ties_to_the_lower_index() {
        let v = [1.0, 3.0, 3.0, 0.5, 2.0, 3.0];
        assert_eq!(top_k(&v, 4), vec![1, 2, 5, 4]);
        assert_eq!(top_k(&v, 1), vec![1]);
        assert_eq!(top_k(&[7.0], 10), vec![0]);
    }
}
