//! The distribution of one per-row quantity (a divergence, Δp): counts of NaN and infinite
//! rows, moments of the finite ones, extremes with their global rows, and a quantile sketch;
//! on one machine also every value, so that percentiles stay exact.

use super::moments::Moments;
use super::sketch::{Sketch, SketchWire};
use crate::stats::{percentile, summarize, Summary as Stats, PERCENTILES};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq)]
pub struct Values {
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    finite: Moments,
    /// Over every non-NaN value (infinities included), first row on ties.
    min: (f64, u64),
    max: (f64, u64),
    /// Over the finite values.
    finite_min: f64,
    finite_max: f64,
    sketch: Sketch,
    /// Every value pushed, NaN included, while the summary keeps them (see `exact`).
    exact: Option<Vec<f64>>,
}

impl Values {
    /// `keep`: also keep every value, for exact percentiles (8 bytes a row).
    pub fn new(keep: bool) -> Values {
        Values {
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
            finite: Moments::default(),
            min: (f64::INFINITY, 0),
            max: (f64::NEG_INFINITY, 0),
            finite_min: f64::INFINITY,
            finite_max: f64::NEG_INFINITY,
            sketch: Sketch::default(),
            exact: keep.then(Vec::new),
        }
    }

    pub fn push(&mut self, v: f64, row: u64) {
        if let Some(e) = &mut self.exact {
            e.push(v);
        }
        if v.is_nan() {
            self.nan += 1;
            return;
        }
        if v < self.min.0 || self.count() == 0 {
            self.min = (v, row);
        }
        if v > self.max.0 || self.count() == 0 {
            self.max = (v, row);
        }
        if v == f64::INFINITY {
            self.pos_inf += 1;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += 1;
        } else {
            self.finite.push(v);
            self.sketch.push(v);
            self.finite_min = self.finite_min.min(v);
            self.finite_max = self.finite_max.max(v);
        }
    }

    /// Adds `o`'s rows (which come after this one's in row order, for ties of min/max).
    pub fn merge(&mut self, o: &Values) {
        if o.count() > 0 && (self.count() == 0 || o.min.0 < self.min.0) {
            self.min = o.min;
        }
        if o.count() > 0 && (self.count() == 0 || o.max.0 > self.max.0) {
            self.max = o.max;
        }
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.finite = self.finite.merge(&o.finite);
        self.finite_min = self.finite_min.min(o.finite_min);
        self.finite_max = self.finite_max.max(o.finite_max);
        self.sketch.merge(&o.sketch);
        self.exact = match (self.exact.take(), &o.exact) {
            (Some(mut a), Some(b)) => {
                a.extend_from_slice(b);
                Some(a)
            }
            _ => None,
        };
    }

    /// Moves the rows named by min/max by `by` (a shard placed after others).
    pub fn shift_rows(&mut self, by: u64) {
        self.min.1 += by;
        self.max.1 += by;
    }

    /// Values that are not NaN.
    pub fn count(&self) -> u64 {
        self.finite.n + self.pos_inf + self.neg_inf
    }

    pub fn nan_count(&self) -> u64 {
        self.nan
    }

    pub fn inf_count(&self) -> u64 {
        self.pos_inf
    }

    pub fn finite_moments(&self) -> Moments {
        self.finite.moments_or_nan()
    }

    /// Every value in push order, when kept.
    pub fn exact(&self) -> Option<&[f64]> {
        self.exact.as_deref()
    }

    /// Whether percentiles come from every value (else from the sketch, within
    /// `sketch::ALPHA`).
    pub fn is_exact(&self) -> bool {
        self.exact.is_some()
    }

    /// The non-NaN value at rank r: −inf rows, then the finite ones, then +inf rows.
    fn at_rank(&self, r: u64) -> f64 {
        if r < self.neg_inf {
            return f64::NEG_INFINITY;
        }
        let r = r - self.neg_inf;
        if r < self.finite.n {
            return self.finite_at_rank(r);
        }
        f64::INFINITY
    }

    fn finite_at_rank(&self, r: u64) -> f64 {
        // The extremes are known exactly: the first and last ranks are them (a merged
        // report's "Maximum KLD" is the maximum, not a sketch bucket near it), and the
        // sketch never reads beyond them.
        if r == 0 {
            return self.finite_min;
        }
        if r + 1 == self.finite.n {
            return self.finite_max;
        }
        self.sketch
            .at_rank(r)
            .clamp(self.finite_min, self.finite_max)
    }

    /// Percentile over the non-NaN values, numpy's linear interpolation.
    pub fn percentile(&self, pct: f64) -> f64 {
        self.percentiles(&[pct])[0]
    }

    /// Several percentiles (kept values are sorted once for all of them).
    pub fn percentiles(&self, pcts: &[f64]) -> Vec<f64> {
        if let Some(e) = &self.exact {
            let mut s: Vec<f64> = e.iter().copied().filter(|v| !v.is_nan()).collect();
            s.sort_by(f64::total_cmp);
            return pcts.iter().map(|&p| percentile(&s, p)).collect();
        }
        pcts.iter()
            .map(|&p| interpolate(self.count(), p, |r| self.at_rank(r)))
            .collect()
    }

    /// The report's statistics over every non-NaN value.
    pub fn stats(&self) -> Stats {
        let (min, max) = (self.min, self.max);
        let mut s = match &self.exact {
            Some(e) => summarize(e),
            None => {
                let n = self.count();
                let mean = match (self.pos_inf > 0, self.neg_inf > 0) {
                    (true, true) => f64::NAN,
                    (true, false) => f64::INFINITY,
                    (false, true) => f64::NEG_INFINITY,
                    (false, false) => self.finite_moments().mean,
                };
                let std = if mean.is_finite() {
                    self.finite.std()
                } else {
                    f64::NAN
                };
                Stats {
                    count: n as usize,
                    nan_rows: self.nan as usize,
                    mean,
                    sem: std / (n as f64).sqrt(),
                    std,
                    min: 0.0,
                    min_row: 0,
                    max: 0.0,
                    max_row: 0,
                    median: self.percentile(50.0),
                    percentiles: PERCENTILES
                        .iter()
                        .copied()
                        .zip(self.percentiles(&PERCENTILES))
                        .collect(),
                }
            }
        };
        // Rows are global (a shard's offset included), which the kept values do not know.
        if s.count > 0 {
            (s.min, s.min_row, s.max, s.max_row) = (min.0, min.1 as usize, max.0, max.1 as usize);
        } else {
            (s.min, s.max) = (f64::INFINITY, f64::NEG_INFINITY);
        }
        s
    }

    /// The statistics of the finite values only (rows and percentiles beyond the median are
    /// not used by the reports).
    pub fn finite_stats(&self) -> Stats {
        if let Some(e) = &self.exact {
            let f: Vec<f64> = e.iter().copied().filter(|v| v.is_finite()).collect();
            return summarize(&f);
        }
        let m = self.finite_moments();
        let std = self.finite.std();
        Stats {
            count: m.n as usize,
            nan_rows: 0,
            mean: m.mean,
            sem: std / (m.n as f64).sqrt(),
            std,
            min: self.finite_min,
            min_row: 0,
            max: self.finite_max,
            max_row: 0,
            median: interpolate(m.n, 50.0, |r| self.finite_at_rank(r)),
            percentiles: vec![],
        }
    }

    pub(super) fn to_wire(&self) -> ValuesWire {
        ValuesWire {
            count: self.count(),
            nan: self.nan,
            pos_inf: self.pos_inf,
            neg_inf: self.neg_inf,
            finite: self.finite,
            min: Num(self.min.0),
            min_row: self.min.1,
            max: Num(self.max.0),
            max_row: self.max.1,
            finite_min: Num(self.finite_min),
            finite_max: Num(self.finite_max),
            sketch: self.sketch.to_wire(),
        }
    }

    pub(super) fn from_wire(w: &ValuesWire) -> Result<Values, String> {
        let sketch = Sketch::from_wire(&w.sketch)?;
        let f = &w.finite;
        let count =
            f.n.checked_add(w.pos_inf)
                .and_then(|c| c.checked_add(w.neg_inf));
        if count != Some(w.count) || sketch.count() != f.n {
            return Err(format!(
                "counts disagree: {} values, {} finite + {} +inf + {} -inf, sketch of {}",
                w.count,
                f.n,
                w.pos_inf,
                w.neg_inf,
                sketch.count()
            ));
        }
        let finite_ok = f.n == 0
            || (f.mean.is_finite()
                && f.m2.is_finite()
                && f.m2 >= 0.0
                && w.finite_min.0 <= f.mean
                && f.mean <= w.finite_max.0);
        let extremes_ok = w.count == 0 || w.min.0 <= w.max.0;
        if !finite_ok || !extremes_ok {
            return Err("moments or extremes are not consistent".into());
        }
        Ok(Values {
            nan: w.nan,
            pos_inf: w.pos_inf,
            neg_inf: w.neg_inf,
            finite: *f,
            min: (w.min.0, w.min_row),
            max: (w.max.0, w.max_row),
            finite_min: w.finite_min.0,
            finite_max: w.finite_max.0,
            sketch,
            exact: None,
        })
    }
}

impl Moments {
    /// NaN mean for no values (as a mean of nothing is).
    fn moments_or_nan(self) -> Moments {
        if self.n == 0 {
            Moments {
                mean: f64::NAN,
                ..self
            }
        } else {
            self
        }
    }
}

/// numpy's linear interpolation between closest ranks, over n ranked values.
fn interpolate(n: u64, pct: f64, at: impl Fn(u64) -> f64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let pos = pct / 100.0 * (n - 1) as f64;
    let (lo, hi) = (pos.floor() as u64, pos.ceil() as u64);
    let (a, b) = (at(lo), at(hi));
    if lo == hi || a == b {
        return a;
    }
    a + (b - a) * (pos - lo as f64)
}

/// An f64 in JSON: a number, or "inf", "-inf", "nan" (JSON has no such numbers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Num(pub f64);

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            v if v.is_finite() => s.serialize_f64(v),
            v if v.is_nan() => s.serialize_str("nan"),
            v if v > 0.0 => s.serialize_str("inf"),
            _ => s.serialize_str("-inf"),
        }
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        Ok(Num(match Raw::deserialize(d)? {
            Raw::N(v) => v,
            Raw::S(s) => match s.as_str() {
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" => f64::NAN,
                _ => return Err(serde::de::Error::custom(format!("not a number: {s:?}"))),
            },
        }))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValuesWire {
    count: u64,
    nan: u64,
    pos_inf: u64,
    neg_inf: u64,
    finite: Moments,
    min: Num,
    min_row: u64,
    max: Num,
    max_row: u64,
    finite_min: Num,
    finite_max: Num,
    sketch: SketchWire,
}

#[cfg(test)]
mod tests {
    use super::super::sketch::ALPHA;
    use super::*;

    #[test]
    fn sketched_statistics_match_exact_ones_within_alpha() {
        let v: Vec<f64> = (0..3000)
            .map(|i| match i % 500 {
                0 => f64::INFINITY,
                1 => f64::NAN,
                2 => 0.0,
                _ => ((i * 7919) % 3001) as f64 * 1e-4,
            })
            .collect();
        let (mut kept, mut sk) = (Values::new(true), Values::new(false));
        for (r, &x) in v.iter().enumerate() {
            kept.push(x, r as u64 + 10);
            sk.push(x, r as u64 + 10);
        }
        let (a, b) = (kept.stats(), sk.stats());
        assert_eq!((a.count, a.nan_rows), (b.count, b.nan_rows));
        assert_eq!(
            (a.min, a.min_row, a.max, a.max_row),
            (b.min, b.min_row, b.max, b.max_row)
        );
        assert_eq!(a.min_row, 12);
        assert!(a.mean.is_infinite() && b.mean.is_infinite());
        for ((p, x), (_, y)) in a.percentiles.iter().zip(&b.percentiles) {
            let ok = x == y || (x - y).abs() <= ALPHA * x.abs().max(y.abs()) * 1.001;
            assert!(ok, "p{p}: {x} vs {y}");
        }
        let (fa, fb) = (kept.finite_stats(), sk.finite_stats());
        assert_eq!(fa.count, fb.count);
        assert!((fa.mean - fb.mean).abs() <= 1e-14 * fa.mean);
        assert!((fa.std - fb.std).abs() <= 1e-12 * fa.std);
        assert!((fa.median - fb.median).abs() <= ALPHA * fa.median);
        assert_eq!((fa.min, fa.max), (fb.min, fb.max));
    }

    /// The 0th and 100th percentiles are the extremes, exactly, with or without the values
    /// kept: llama.cpp's "Maximum KLD" and "Minimum Δp" of a merged report were the sketch's
    /// buckets (0.1% off).
    #[test]
    fn sketched_extremes_are_exact() {
        let v: Vec<f64> = (0..1000)
            .map(|i| 0.0123 + ((i * 7919) % 1009) as f64 * 1.37e-4 - 0.05)
            .collect();
        let (mut kept, mut sk) = (Values::new(true), Values::new(false));
        for (r, &x) in v.iter().enumerate() {
            kept.push(x, r as u64);
            sk.push(x, r as u64);
        }
        let (lo, hi) = (
            v.iter().copied().fold(f64::INFINITY, f64::min),
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
        assert_eq!(kept.percentiles(&[0.0, 100.0]), vec![lo, hi]);
        assert_eq!(sk.percentiles(&[0.0, 100.0]), vec![lo, hi]);
        // +inf rows above them: the finite maximum is still exact at its rank.
        sk.push(f64::INFINITY, 1000);
        assert_eq!((sk.percentile(100.0), sk.at_rank(999)), (f64::INFINITY, hi));
    }

    #[test]
    fn non_finite_numbers_survive_json() {
        for v in [f64::INFINITY, f64::NEG_INFINITY, 1.5, -0.0] {
            let s = serde_json::to_string(&Num(v)).unwrap();
            assert_eq!(
                serde_json::from_str::<Num>(&s).unwrap().0.to_bits(),
                v.to_bits()
            );
        }
        let s = serde_json::to_string(&Num(f64::NAN)).unwrap();
        assert!(serde_json::from_str::<Num>(&s).unwrap().0.is_nan());
        assert!(serde_json::from_str::<Num>("\"infinite\"").is_err());
    }
}
