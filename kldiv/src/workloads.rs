//! The benchmark workloads of WORKLOADS.md (W1–W4), generated deterministically.

use crate::request::InputForm;
use rayon::prelude::*;

/// One benchmark shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    pub name: &'static str,
    pub rows: usize,
    pub cols: usize,
    pub input: InputForm,
    pub what: &'static str,
}

pub const W1: Workload = Workload {
    name: "W1",
    rows: 4096,
    cols: 32_000,
    input: InputForm::Probabilities,
    what: "next-token distributions over an LLM vocabulary",
};
pub const W2: Workload = Workload {
    name: "W2",
    rows: 1_000_000,
    cols: 16,
    input: InputForm::Probabilities,
    what: "drift monitoring over many small histograms",
};
pub const W3: Workload = Workload {
    name: "W3",
    rows: 64,
    cols: 2_000_000,
    input: InputForm::Probabilities,
    what: "a few huge rows",
};
pub const W4: Workload = Workload {
    name: "W4",
    rows: 1024,
    cols: 128_256,
    input: InputForm::Logits,
    what: "KL of two softmaxes over a Llama-3-size vocabulary",
};

pub const ALL: [Workload; 4] = [W1, W2, W3, W4];

impl Workload {
    /// The same shape with rows divided by `factor` (at least one row).
    pub fn scaled(self, factor: usize) -> Workload {
        Workload {
            rows: (self.rows / factor.max(1)).max(1),
            ..self
        }
    }
    pub fn elements(&self) -> usize {
        self.rows * self.cols
    }
}

/// SplitMix64 per row, so generation is parallel and reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// P and Q for a workload, row-major f32, as WORKLOADS.md describes:
/// probabilities p ~ Dirichlet(1)+1e-6, q = p·exp(0.1·N) renormalised; logits a = 2·N,
/// b = a + 0.1·N.
pub fn generate(w: &Workload, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let n = w.elements();
    let mut p = vec![0f32; n];
    let mut q = vec![0f32; n];
    p.par_chunks_mut(w.cols)
        .zip(q.par_chunks_mut(w.cols))
        .enumerate()
        .for_each(|(r, (pr, qr))| {
            let mut rng = Rng(seed ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            match w.input {
                InputForm::Probabilities => {
                    let mut sp = 0.0;
                    let mut tmp: Vec<f64> = Vec::with_capacity(w.cols);
                    for _ in 0..w.cols {
                        let x = -rng.uniform().ln() + 1e-6;
                        sp += x;
                        tmp.push(x);
                    }
                    let mut sq = 0.0;
                    for (i, x) in tmp.iter_mut().enumerate() {
                        *x /= sp;
                        pr[i] = *x as f32;
                        *x *= (0.1 * rng.normal()).exp();
                        sq += *x;
                    }
                    for (i, x) in tmp.iter().enumerate() {
                        qr[i] = (x / sq) as f32;
                    }
                }
                _ => {
                    for i in 0..w.cols {
                        let a = 2.0 * rng.normal();
                        pr[i] = a as f32;
                        qr[i] = (a + 0.1 * rng.normal()) as f32;
                    }
                }
            }
        });
    (p, q)
}
