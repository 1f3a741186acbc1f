//! Test helpers: a seeded generator and a textbook f64 reference written from the
//! definitions, sharing no code with the library.
#![allow(dead_code)]

pub mod files;

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn exp1(&mut self) -> f64 {
        -self.uniform().ln()
    }
}

/// WORKLOADS.md data: P rows Dirichlet(1) (+1e-6), Q = P·exp(σ·N) renormalised. f64 values.
pub fn prob_pair(rng: &mut Rng, rows: usize, cols: usize, sigma: f64) -> (Vec<f64>, Vec<f64>) {
    let mut p = Vec::with_capacity(rows * cols);
    let mut q = Vec::with_capacity(rows * cols);
    for _ in 0..rows {
        let pr: Vec<f64> = (0..cols).map(|_| rng.exp1() + 1e-6).collect();
        let sp: f64 = pr.iter().sum();
        let pr: Vec<f64> = pr.iter().map(|x| x / sp).collect();
        let qr: Vec<f64> = pr
            .iter()
            .map(|x| x * (sigma * rng.normal()).exp())
            .collect();
        let sq: f64 = qr.iter().sum();
        p.extend(pr);
        q.extend(qr.iter().map(|x| x / sq));
    }
    (p, q)
}

/// Logits a = 2·N, b = a + σ·N.
pub fn logit_pair(rng: &mut Rng, rows: usize, cols: usize, sigma: f64) -> (Vec<f64>, Vec<f64>) {
    let a: Vec<f64> = (0..rows * cols).map(|_| 2.0 * rng.normal()).collect();
    let b = a.iter().map(|x| x + sigma * rng.normal()).collect();
    (a, b)
}

/// f64 data rounded to f32.
pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The exact f64 image of f32 data (what the reference must see).
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Form {
    Probs,
    LogProbs,
    Logits,
}

impl Form {
    pub fn input(self) -> kldiv::InputForm {
        match self {
            Form::Probs => kldiv::InputForm::Probabilities,
            Form::LogProbs => kldiv::InputForm::LogProbabilities,
            Form::Logits => kldiv::InputForm::Logits,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Div {
    Kl,
    Reverse,
    Symmetric,
    Js,
    CrossEntropy,
    Entropy,
}

/// Every divergence of the library beside the reference's name for it.
pub const ALL_DIVS: [(kldiv::Divergence, Div); 6] = [
    (kldiv::Divergence::Kl, Div::Kl),
    (kldiv::Divergence::ReverseKl, Div::Reverse),
    (kldiv::Divergence::SymmetricKl, Div::Symmetric),
    (kldiv::Divergence::JensenShannon, Div::Js),
    (kldiv::Divergence::CrossEntropy, Div::CrossEntropy),
    (kldiv::Divergence::Entropy, Div::Entropy),
];

/// Each row of `v` (rows of `cols`) as log-probabilities: log-softmax in f64.
pub fn log_softmax_rows(v: &[f64], cols: usize) -> Vec<f64> {
    v.chunks(cols).flat_map(log_softmax).collect()
}

fn log_softmax(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
    x.iter().map(|v| v - lse).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    let mut s = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            if b == 0.0 {
                return f64::INFINITY;
            }
            s += a * (a / b).ln();
        }
    }
    s
}

fn xlogy_sum(p: &[f64], q: &[f64]) -> f64 {
    let mut s = 0.0;
    for (&a, &b) in p.iter().zip(q) {
        if a > 0.0 {
            s += a * b.ln();
        }
    }
    s
}

/// The textbook value of one row. `normalize` divides probability rows by their sums first.
pub fn reference(div: Div, form: Form, p: &[f64], q: &[f64], normalize: bool) -> f64 {
    let (p, q): (Vec<f64>, Vec<f64>) = match form {
        Form::Probs if normalize => {
            let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
            (
                p.iter().map(|x| x / sp).collect(),
                q.iter().map(|x| x / sq).collect(),
            )
        }
        Form::Probs => (p.to_vec(), q.to_vec()),
        Form::LogProbs | Form::Logits => {
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            (
                lp.iter().map(|x| x.exp()).collect(),
                lq.iter().map(|x| x.exp()).collect(),
            )
        }
    };
    let v = match div {
        Div::Kl => kl(&p, &q),
        Div::Reverse => kl(&q, &p),
        Div::Symmetric => kl(&p, &q) + kl(&q, &p),
        Div::Js => {
            let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| 0.5 * (a + b)).collect();
            0.5 * kl(&p, &m) + 0.5 * kl(&q, &m)
        }
        Div::CrossEntropy => -xlogy_sum(&p, &q),
        Div::Entropy => -xlogy_sum(&p, &p),
    };
    v
}

/// For logits the reference above loses digits in exp/log; this keeps the log domain.
pub fn reference_logits_kl(a: &[f64], b: &[f64]) -> f64 {
    let (la, lb) = (log_softmax(a), log_softmax(b));
    la.iter()
        .zip(&lb)
        .filter(|(x, _)| x.is_finite())
        .map(|(x, y)| x.exp() * (x - y))
        .sum()
}

pub fn rows_of(v: &[f64], cols: usize) -> impl Iterator<Item = &[f64]> {
    v.chunks(cols)
}

/// |got − want| ≤ rel·|want| + abs, with infinities matching exactly.
pub fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    if want.is_infinite() || got.is_infinite() {
        return got == want;
    }
    (got - want).abs() <= rel * want.abs() + abs
}

/// Σ (p·ln(p/q) − p + q), the KL of unnormalised rows.
pub fn generalized_kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&a, &b)| if a > 0.0 { a * (a / b).ln() - a + b } else { b })
        .sum()
}

/// Every divergence of `form` on rows `pe`, `qe` (the exact values the engine sees) against
/// the reference: 1e-5 relative per row. `run` computes one request's per-row values.
///
/// Normalised cross-entropy and entropy are corrected in one pass (−Σp·ln q/Σp + ln Σq): their
/// bound adds 5e-6·|uncorrected value| (the kernel's 4e-6 per-term bound, with margin). KL,
/// reverse and symmetric KL reread rows whose sums differ by > 0.1%, and JS normalises in a
/// second pass: no slack for them.
#[allow(clippy::too_many_arguments)]
pub fn check_all_divergences(
    what: &str,
    form: Form,
    pe: &[f64],
    qe: &[f64],
    cols: usize,
    normalize: bool,
    run: &mut dyn FnMut(&kldiv::Request) -> Result<Vec<f64>, kldiv::Error>,
) {
    check_all_divergences_within(what, form, pe, qe, cols, normalize, (1e-5, 1e-12), run);
}

/// [`check_all_divergences`] to a given (relative, absolute) tolerance.
#[allow(clippy::too_many_arguments)]
pub fn check_all_divergences_within(
    what: &str,
    form: Form,
    pe: &[f64],
    qe: &[f64],
    cols: usize,
    normalize: bool,
    (rel, abs): (f64, f64),
    run: &mut dyn FnMut(&kldiv::Request) -> Result<Vec<f64>, kldiv::Error>,
) {
    use kldiv::{Normalization, Request};
    let input = form.input();
    let xlogy_abs = |p: &[f64], q: &[f64]| {
        let s: f64 = p
            .iter()
            .zip(q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(a, b)| a * b.ln())
            .sum();
        s.abs() / p.iter().sum::<f64>()
    };
    for (div, rdiv) in ALL_DIVS {
        let mut req = Request::new(div).input(input);
        if normalize {
            req = req.normalization(Normalization::Normalize);
        }
        let got = run(&req).unwrap_or_else(|e| panic!("{what} {div:?}: {e}"));
        for (r, (a, b)) in pe.chunks(cols).zip(qe.chunks(cols)).enumerate() {
            let want = reference(rdiv, form, a, b, normalize);
            let slack = match rdiv {
                _ if !normalize || form != Form::Probs => 0.0,
                Div::CrossEntropy => 5e-6 * xlogy_abs(a, b),
                Div::Entropy => 5e-6 * xlogy_abs(a, a),
                _ => 0.0,
            };
            let g = got[r];
            assert!(
                close(g, want, rel, abs + slack),
                "{what} {form:?} {div:?} {}x{cols} norm={normalize} row {r}: got {g:e} want {want:e} rel {:e}",
                pe.len() / cols,
                (g - want).abs() / want.abs()
            );
        }
    }
}

/// The K largest of `v` (largest first, the lower index first on ties; −inf below every
/// number): the agreement statistics' order, from a sort.
pub fn top_cols(v: &[f64], k: usize) -> Vec<u64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&i, &j| v[j].partial_cmp(&v[i]).unwrap().then(i.cmp(&j)));
    idx.into_iter().take(k).map(|i| i as u64).collect()
}

/// Σ min(p, q) of two logit rows, in f64 through each row's log-sum-exp.
pub fn sum_min_of(a: &[f64], b: &[f64]) -> f64 {
    let lse = |v: &[f64]| {
        let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let (la, lb) = (lse(a), lse(b));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - la).exp().min((y - lb).exp()))
        .sum()
}
