//! `compare --llama-compat`: llama.cpp's own arithmetic for a `.kld` base against logits, where
//! it differs from kldiv's exact values (tools/perplexity/perplexity.cpp, the reader's
//! `log_softmax`): the base's log-probabilities are used as decoded (with their 16/65535-nat
//! quantisation, not renormalised), base terms with log p ≤ −16 are left out of the KL sum,
//! and everything but the row sums runs in f32.

/// One row as llama.cpp scores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompatRow {
    pub kld: f64,
    pub same_top: bool,
    /// (−ln p_Q(t), −ln p_base(t)) for the target t, if any.
    pub nll: Option<(f32, f32)>,
}

/// Index of the first maximum (llama.cpp's strict `>` scan).
fn first_max(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate().skip(1) {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `base_lp`: the decoded record (scale·q + min_log_prob); `logits`: Q's row.
pub fn row(base_lp: &[f32], logits: &[f32], target: Option<usize>) -> CompatRow {
    let imax = first_max(logits);
    let max = logits[imax];
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let lse = sum_exp.ln() as f32;
    let shift = max + lse;
    let mut kld = 0f64;
    for (&lp, &l) in base_lp.iter().zip(logits) {
        if lp > -16.0 {
            kld += (lp.exp() * (lp - l + shift)) as f64;
        }
    }
    CompatRow {
        kld,
        same_top: imax == first_max(base_lp),
        nll: target.map(|t| (max + lse - logits[t], -base_lp[t])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_below_minus_16_are_left_out() {
        // Base: log p = [ln .7, ln .3 − ε, −20]; Q logits [0, 0, 0]: log q = −ln 3 each.
        let base = [0.7f32.ln(), 0.3f32.ln(), -20.0];
        let q = [0.0f32, 0.0, 0.0];
        let r = row(&base, &q, Some(1));
        let l3 = 3f64.ln();
        let want = 0.7 * (0.7f64.ln() + l3) + 0.3 * (0.3f64.ln() + l3);
        assert!((r.kld - want).abs() < 1e-6, "{} vs {want}", r.kld);
        // The exact KL would add e^−20·(−20 + ln 3): left out here.
        let (nll_q, nll_base) = r.nll.unwrap();
        assert!((nll_q as f64 - l3).abs() < 1e-6);
        assert!((nll_base as f64 + 0.3f64.ln()).abs() < 1e-6);
        assert!(r.same_top);
    }
}
