//! Running moments that merge exactly (Welford's update, Chan et al.'s merge): a shard's
//! moments added to another's equal, to rounding, the moments of the concatenated rows.

use serde::{Deserialize, Serialize};

/// Count, mean and sum of squared deviations of a stream of values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    pub n: u64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn merge(&self, o: &Moments) -> Moments {
        if o.n == 0 {
            return *self;
        }
        if self.n == 0 {
            return *o;
        }
        let n = self.n + o.n;
        let (na, nb, nf) = (self.n as f64, o.n as f64, n as f64);
        let d = o.mean - self.mean;
        Moments {
            n,
            mean: self.mean + d * (nb / nf),
            m2: self.m2 + o.m2 + d * d * (na * nb / nf),
        }
    }

    /// The population variance m2/n (llama.cpp's mean(x²) − mean(x)²).
    pub fn var_pop(&self) -> f64 {
        self.m2.max(0.0) / self.n as f64
    }

    /// The sample standard deviation; 0 for one value, NaN for none.
    pub fn std(&self) -> f64 {
        match self.n {
            0 => f64::NAN,
            1 => 0.0,
            n => (self.m2.max(0.0) / (n - 1) as f64).sqrt(),
        }
    }

    /// The mean and its uncertainty as llama.cpp states it: sqrt(var_pop/(n − 1)).
    pub fn mean_unc(&self) -> (f64, f64) {
        let mean = if self.n == 0 { f64::NAN } else { self.mean };
        let unc = if self.n > 1 {
            (self.var_pop() / (self.n - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        (mean, unc)
    }
}

/// Moments of two values per row and their co-moment (for covariances and correlations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bivariate {
    pub x: Moments,
    pub y: Moments,
    /// Σ (x − x̄)(y − ȳ).
    pub cxy: f64,
}

impl Bivariate {
    pub fn push(&mut self, x: f64, y: f64) {
        let n = self.x.n as f64 + 1.0;
        let dx = x - self.x.mean;
        self.x.push(x);
        // The co-moment update uses x's old deviation and y's new one.
        let my_new = self.y.mean + (y - self.y.mean) / n;
        self.cxy += dx * (y - my_new);
        self.y.push(y);
    }

    pub fn merge(&self, o: &Bivariate) -> Bivariate {
        if o.x.n == 0 {
            return *self;
        }
        if self.x.n == 0 {
            return *o;
        }
        let (na, nb) = (self.x.n as f64, o.x.n as f64);
        let dx = o.x.mean - self.x.mean;
        let dy = o.y.mean - self.y.mean;
        Bivariate {
            x: self.x.merge(&o.x),
            y: self.y.merge(&o.y),
            cxy: self.cxy + o.cxy + dx * dy * (na * nb / (na + nb)),
        }
    }

    /// The covariance of the two means, as llama.cpp states it: cov_pop/(n − 1).
    pub fn cov_of_means(&self) -> f64 {
        let n = self.x.n as f64;
        self.cxy / n / (n - 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_pass(v: &[f64]) -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (m, v.iter().map(|x| (x - m) * (x - m)).sum())
    }

    #[test]
    fn moments_match_two_pass_and_merge_any_split() {
        let v: Vec<f64> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f64 * 1e-3 + 1e6)
            .collect();
        let (m, m2) = two_pass(&v);
        for split in [0, 1, 17, 500, 999, 1000] {
            let (mut a, mut b) = (Moments::default(), Moments::default());
            v[..split].iter().for_each(|&x| a.push(x));
            v[split..].iter().for_each(|&x| b.push(x));
            let s = a.merge(&b);
            assert_eq!(s.n, 1000);
            assert!((s.mean - m).abs() <= 1e-14 * m, "{split}");
            assert!((s.m2 - m2).abs() <= 1e-9 * m2, "{split}: {} vs {m2}", s.m2);
        }
    }

    #[test]
    fn co_moment_matches_definition_and_merges() {
        let x: Vec<f64> = (0..200).map(|i| (i as f64).sin()).collect();
        let y: Vec<f64> = (0..200).map(|i| (i as f64 * 0.3).cos() + x[i]).collect();
        let (mx, my) = (x.iter().sum::<f64>() / 200.0, y.iter().sum::<f64>() / 200.0);
        let c: f64 = x.iter().zip(&y).map(|(a, b)| (a - mx) * (b - my)).sum();
        let (mut a, mut b) = (Bivariate::default(), Bivariate::default());
        for i in 0..200 {
            if i < 77 {
                a.push(x[i], y[i])
            } else {
                b.push(x[i], y[i])
            }
        }
        let s = a.merge(&b);
        assert!((s.cxy - c).abs() < 1e-12, "{} vs {c}", s.cxy);
        let mut whole = Bivariate::default();
        (0..200).for_each(|i| whole.push(x[i], y[i]));
        assert!((whole.cxy - c).abs() < 1e-12);
    }
}
