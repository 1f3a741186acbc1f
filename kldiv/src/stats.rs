//! Summary statistics over per-row values: what llama.cpp's `--kl-divergence` users expect.

/// Summary of per-row values. NaN rows (from `NanPolicy::Propagate`) are counted and left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub nan_rows: usize,
    pub mean: f64,
    /// Standard error of the mean: std / √count.
    pub sem: f64,
    pub std: f64,
    pub min: f64,
    pub min_row: usize,
    pub max: f64,
    pub max_row: usize,
    pub median: f64,
    /// (percent, value) for 99.9, 99, 95, 90, 10, 5, 1, 0.1.
    pub percentiles: Vec<(f64, f64)>,
}

pub const PERCENTILES: [f64; 8] = [99.9, 99.0, 95.0, 90.0, 10.0, 5.0, 1.0, 0.1];

/// Linear interpolation between closest ranks (numpy's default).
pub fn percentile(sorted: &[f64], pct: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = pct / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    if lo == hi || sorted[lo] == sorted[hi] {
        return sorted[lo];
    }
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub fn summarize(values: &[f64]) -> Summary {
    let finite: Vec<(usize, f64)> = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .collect();
    let n = finite.len();
    let mean = finite.iter().map(|x| x.1).sum::<f64>() / n as f64;
    let var = if n > 1 && mean.is_finite() {
        finite.iter().map(|x| (x.1 - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else if mean.is_finite() {
        0.0
    } else {
        f64::NAN
    };
    let std = var.sqrt();
    let (mut min, mut min_row, mut max, mut max_row) = (f64::INFINITY, 0, f64::NEG_INFINITY, 0);
    for &(i, v) in &finite {
        if v < min {
            min = v;
            min_row = i;
        }
        if v > max {
            max = v;
            max_row = i;
        }
    }
    let mut sorted: Vec<f64> = finite.iter().map(|x| x.1).collect();
    sorted.sort_by(f64::total_cmp);
    Summary {
        count: n,
        nan_rows: values.len() - n,
        mean,
        sem: std / (n as f64).sqrt(),
        std,
        min,
        min_row,
        max,
        max_row,
        median: percentile(&sorted, 50.0),
        percentiles: PERCENTILES
            .iter()
            .map(|&p| (p, percentile(&sorted, p)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_values() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0, f64::NAN]);
        assert_eq!((s.count, s.nan_rows), (4, 1));
        assert_eq!(s.mean, 2.5);
        assert!((s.std - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!((s.min, s.min_row, s.max, s.max_row), (1.0, 1, 4.0, 0));
        assert_eq!(s.median, 2.5);
        assert!((s.percentiles[0].1 - 3.997).abs() < 1e-12);
    }
}
