//! One test suite for every engine: each function here checks one behaviour against the
//! textbook f64 reference (`common`) or the exact values the semantics define, on whatever
//! engine it is given. `every_engine.rs` instantiates all of them for each CPU SIMD level,
//! the GPU engine, and the GPU engine with tiny chunks, so a new divergence or input form is
//! tested on every path by construction.
//!
//! Tolerance: 1e-5 relative per row (the crate's bound for f32 inputs) plus 1e-12 absolute
//! only so that exact zeros compare; where an engine documents another bound (the GPU's
//! near-identical rows), [`TestEngine`] says so and the test uses it.
#![allow(dead_code)]

use super::common::*;
use kldiv::{
    bf16, f16, BadKind, CpuEngine, Divergence, Dtype, Element, Error, InputForm, NanPolicy,
    Normalization, Request, Side, SimdLevel, Unit,
};

/// An engine under test.
pub enum TestEngine {
    Cpu(SimdLevel, CpuEngine),
    #[cfg(feature = "gpu")]
    Gpu(&'static str, &'static kldiv::gpu::GpuEngine),
}

impl TestEngine {
    pub fn cpu(level: SimdLevel) -> Option<TestEngine> {
        CpuEngine::with_level(level)
            .ok()
            .map(|e| TestEngine::Cpu(level, e))
    }

    pub fn name(&self) -> String {
        match self {
            TestEngine::Cpu(l, _) => format!("cpu {l:?}"),
            #[cfg(feature = "gpu")]
            TestEngine::Gpu(n, _) => n.to_string(),
        }
    }

    pub fn run<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<f64>, Error> {
        match self {
            TestEngine::Cpu(_, e) => e.per_row(req, p, q, rows, cols),
            #[cfg(feature = "gpu")]
            TestEngine::Gpu(_, e) => e.per_row(req, p, q, rows, cols),
        }
    }

    /// Per-row values of `req` with each of `divs` as its divergence (the KL family from
    /// one shared pass).
    pub fn run_each<T: Element>(
        &self,
        req: &Request,
        divs: &[Divergence],
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Result<kldiv::PerRow, Error> {
        match self {
            TestEngine::Cpu(_, e) => e.per_row_each(req, divs, p, q, rows, cols),
            #[cfg(feature = "gpu")]
            TestEngine::Gpu(_, e) => e.per_row_each(req, divs, p, q, rows, cols),
        }
    }

    /// Values that must be the same computation: identical bits on the CPU (the same
    /// arithmetic in the same order); on the GPU within 1e-6 relative, since the driver may
    /// contract a·b + c differently in each pipeline it compiles.
    pub fn same_values(&self, what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}");
        let rel = if self.is_gpu() { 1e-6 } else { 0.0 };
        for (r, (&g, &w)) in got.iter().zip(want).enumerate() {
            let same = g.to_bits() == w.to_bits()
                || (g.is_nan() && w.is_nan())
                || (rel > 0.0 && close(g, w, rel, 1e-15));
            assert!(same, "{what} row {r}: {g:e}, alone {w:e}");
        }
    }

    pub fn ok<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Vec<f64> {
        self.run(req, p, q, rows, cols)
            .unwrap_or_else(|e| panic!("{}: {e}", self.name()))
    }

    pub fn err<T: Element>(
        &self,
        req: &Request,
        p: &[T],
        q: &[T],
        rows: usize,
        cols: usize,
    ) -> Error {
        match self.run(req, p, q, rows, cols) {
            Err(e) => e,
            Ok(v) => panic!("{}: expected an error, got {v:?}", self.name()),
        }
    }

    pub fn is_gpu(&self) -> bool {
        !matches!(self, TestEngine::Cpu(..))
    }

    /// Whether f64 inputs are computed in f64 (CPU: the exact path; GPU: f64 kernels where
    /// the adapter has SHADER_F64).
    pub fn computes_f64(&self) -> bool {
        match self {
            TestEngine::Cpu(..) => true,
            #[cfg(feature = "gpu")]
            TestEngine::Gpu(_, e) => e.computes_f64(),
        }
    }

    /// What the engine computes f64 inputs from: the values themselves, or (a GPU without
    /// f64) the values narrowed to f32.
    pub fn seen<T: Element>(&self, v: &[T]) -> Vec<f64> {
        v.iter()
            .map(|x| {
                if !self.computes_f64() && T::DTYPE == Dtype::F64 {
                    x.to_f64() as f32 as f64
                } else {
                    x.to_f64()
                }
            })
            .collect()
    }
}

/// (40, 16) and (37, 33) reach the lane-per-row path for short rows (tasks hold whole
/// groups of 16 rows), with leftover rows.
pub const SHAPES: [(usize, usize); 8] = [
    (1, 1),
    (3, 17),
    (40, 16),
    (37, 33),
    (5, 100),
    (4, 1000),
    (3, 4097),
    (2, 70_001),
];

/// Every divergence of `form` on `p64`, `q64` converted to `T`, against the reference on the
/// values the engine sees.
#[allow(clippy::too_many_arguments)]
fn check<T: Element>(
    e: &TestEngine,
    what: &str,
    conv: fn(f64) -> T,
    form: Form,
    p64: &[f64],
    q64: &[f64],
    rows: usize,
    cols: usize,
    normalize: bool,
) {
    let p: Vec<T> = p64.iter().map(|&x| conv(x)).collect();
    let q: Vec<T> = q64.iter().map(|&x| conv(x)).collect();
    let (pe, qe) = (e.seen(&p), e.seen(&q));
    let what = format!("{} {what}", e.name());
    let mut alone = vec![];
    check_all_divergences(&what, form, &pe, &qe, cols, normalize, &mut |req| {
        let got = e.run(req, &p, &q, rows, cols);
        if let Ok(v) = &got {
            alone.push((req.divergence, v.clone()));
        }
        got
    });
    // The KL family from one shared pass (and Jensen–Shannon's first pass, where it has
    // two): each member as its own run gave it.
    let family = [
        Divergence::ReverseKl,
        Divergence::JensenShannon,
        Divergence::Kl,
        Divergence::SymmetricKl,
    ];
    let mut req = Request::new(Divergence::ReverseKl).input(form.input());
    if normalize {
        req = req.normalization(Normalization::Normalize);
    }
    let shared = e
        .run_each(&req, &family, &p, &q, rows, cols)
        .unwrap_or_else(|err| panic!("{what} shared KL pass: {err}"))
        .values;
    for (div, got) in family.iter().zip(&shared) {
        let (_, want) = alone.iter().find(|a| a.0 == *div).expect("run alone");
        e.same_values(&format!("{what} {div:?} in the shared pass"), got, want);
    }
}

pub fn probabilities_f32(e: &TestEngine) {
    let mut rng = Rng::new(1);
    for (rows, cols) in SHAPES {
        for sigma in [0.1, 2.0] {
            let (p, q) = prob_pair(&mut rng, rows, cols, sigma);
            check(
                e,
                "f32",
                |x| x as f32,
                Form::Probs,
                &p,
                &q,
                rows,
                cols,
                false,
            );
        }
    }
}

pub fn probabilities_normalized_on_request(e: &TestEngine) {
    let mut rng = Rng::new(2);
    for (rows, cols) in SHAPES {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.5);
        // Scale rows far from 1: only Normalization::Normalize accepts them.
        let p: Vec<f64> = p
            .iter()
            .enumerate()
            .map(|(i, x)| x * (1.0 + (i / cols) as f64))
            .collect();
        let q: Vec<f64> = q.iter().map(|x| x * 0.37).collect();
        check(
            e,
            "f32 normalize",
            |x| x as f32,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            true,
        );
    }
}

pub fn other_element_types(e: &TestEngine) {
    let mut rng = Rng::new(3);
    // (40, 16) and (37, 33): f16 / bf16 short rows are widened, then go a lane per row.
    for (rows, cols) in [(3, 17), (40, 16), (37, 33), (4, 1000), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        check(e, "f64", |x| x, Form::Probs, &p, &q, rows, cols, false);
        check(
            e,
            "f16",
            f16::from_f64,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
        check(
            e,
            "bf16",
            bf16::from_f64,
            Form::Probs,
            &p,
            &q,
            rows,
            cols,
            false,
        );
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        check(
            e,
            "bf16",
            bf16::from_f64,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
        check(
            e,
            "f16",
            f16::from_f64,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
    }
}

/// bf16 probability rows at every alignment, with values the fast path leaves to the exact
/// one at even and odd columns (the CPU widens bf16 pairs inside its loop, even and odd
/// elements apart): every divergence against f64, p and q starting at different 2-byte
/// offsets, and errors naming the right column.
pub fn bf16_rows_at_any_alignment(e: &TestEngine) {
    half_rows_at_any_alignment::<bf16>(e);
}

/// The same for f16, which the CPU widens inside its loop on AVX-512 (16 at a time; values
/// below f16's range become 0, so the small ones test zeros instead).
pub fn f16_rows_at_any_alignment(e: &TestEngine) {
    half_rows_at_any_alignment::<f16>(e);
}

fn half_rows_at_any_alignment<H: Element>(e: &TestEngine) {
    let mut rng = Rng::new(21);
    // 1001 columns: every other row starts between two 4-byte words.
    let (rows, cols) = (3, 1001);
    let (mut p, mut q) = prob_pair(&mut rng, rows, cols, 0.3);
    // Set v[at] and keep the row's sum: its old value goes to the next column.
    let set = |v: &mut Vec<f64>, at: usize, x: f64| {
        v[at + 1] += v[at] - x;
        v[at] = x;
    };
    set(&mut p, 100, 0.0);
    set(&mut p, 103, 0.0);
    set(&mut q, cols + 300, 1e-30);
    set(&mut p, cols + 333, 1e-30);
    set(&mut q, 2 * cols + 501, 0.0); // q = 0 < p: KL is +inf
    set(&mut p, 2 * cols + 600, 1e-35);
    let half = |v: &[f64]| v.iter().map(|&x| H::from_f64(x)).collect::<Vec<H>>();
    let (ph, qh) = (half(&p), half(&q));
    let wide = |v: &[H]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let (pe, qe) = (wide(&ph), wide(&qh));
    // Copies one element into a buffer: a different alignment from the `Vec`'s own.
    let shifted = |v: &[H]| {
        let mut b = vec![H::from_f64(0.0)];
        b.extend_from_slice(v);
        b
    };
    let (ps, qs) = (shifted(&ph), shifted(&qh));
    for (what, pa, qa) in [
        ("aligned", &ph[..], &qh[..]),
        ("p shifted", &ps[1..], &qh[..]),
        ("q shifted", &ph[..], &qs[1..]),
        ("both shifted", &ps[1..], &qs[1..]),
    ] {
        let what = format!("{} {:?} {what}", e.name(), H::DTYPE);
        check_all_divergences(&what, Form::Probs, &pe, &qe, cols, false, &mut |req| {
            e.run(req, pa, qa, rows, cols)
        });
    }
    // A NaN at an odd column and a negative at an even one are named where they are.
    for (side, row, col, bad) in [(Side::P, 1, 457, f64::NAN), (Side::Q, 2, 222, -0.25)] {
        let (mut pb, mut qb) = (ph.clone(), qh.clone());
        let target = if side == Side::P { &mut pb } else { &mut qb };
        target[row * cols + col] = H::from_f64(bad);
        for (pa, qa) in [(pb.clone(), qb.clone()), (shifted(&pb), shifted(&qb))] {
            let off = pa.len() - pb.len();
            let err = e.err(
                &Request::new(Divergence::Kl),
                &pa[off..],
                &qa[off..],
                rows,
                cols,
            );
            assert!(
                matches!(err, Error::BadValue { side: s, row: r, col: c, .. }
                    if s == side && r == row && c == col),
                "{}: {err}",
                e.name()
            );
        }
    }
}

pub fn logits_and_logprobs(e: &TestEngine) {
    let mut rng = Rng::new(4);
    for (rows, cols) in SHAPES {
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        check(
            e,
            "f32",
            |x| x as f32,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
        // Log-probabilities: normalised in f64 first, then rounded (sums stay within 1e-4).
        let norm = |v: &[f64]| log_softmax_rows(v, cols);
        check(
            e,
            "f32",
            |x| x as f32,
            Form::LogProbs,
            &norm(&a),
            &norm(&b),
            rows,
            cols,
            false,
        );
        check(e, "f64", |x| x, Form::Logits, &a, &b, rows, cols, false);
    }
}

/// Masked vocabularies: P is −inf on ~20% of columns, Q on half of those (so KL(P‖Q) is
/// finite and KL(Q‖P) infinite), mixed with finite logits in long rows.
pub fn masked_logits(e: &TestEngine) {
    let mut rng = Rng::new(8);
    for (rows, cols) in [(3, 17), (40, 16), (37, 33), (4, 1000), (2, 70_001)] {
        let (mut a, mut b) = logit_pair(&mut rng, rows, cols, 0.5);
        for i in 0..a.len() {
            if rng.uniform() < 0.2 {
                a[i] = f64::NEG_INFINITY;
                if rng.uniform() < 0.5 {
                    b[i] = f64::NEG_INFINITY;
                }
            }
        }
        check(
            e,
            "f32 masked",
            |x| x as f32,
            Form::Logits,
            &a,
            &b,
            rows,
            cols,
            false,
        );
    }
}

/// Near-identical rows: KL ~ 1e-9, where a naive f32 Σ p·ln(p/q) keeps no correct digit.
/// The t-term form keeps 1e-5 relative for probabilities. On the GPU the Σ(p−q) correction
/// of literal KL is a plain f32 sum (compensated sums are not reliable in WGSL): its bound
/// there is 1e-5·KL + 2e-6·Σ|p−q|/√cols (measured ≈ 3.5e-7·Σ|p−q|/√cols).
pub fn near_identical_probability_rows(e: &TestEngine) {
    let mut rng = Rng::new(5);
    for (rows, cols) in [(4, 1000), (2, 32_000), (2, 70_001)] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 1e-4);
        let (pf, qf) = (to_f32(&p), to_f32(&q));
        let (pe, qe) = (to_f64(&pf), to_f64(&qf));
        for (div, rdiv) in [
            (Divergence::Kl, Div::Kl),
            (Divergence::SymmetricKl, Div::Symmetric),
            (Divergence::JensenShannon, Div::Js),
        ] {
            let got = e.ok(&Request::new(div), &pf, &qf, rows, cols);
            for r in 0..rows {
                let (a, b) = (&pe[r * cols..(r + 1) * cols], &qe[r * cols..(r + 1) * cols]);
                let want = reference(rdiv, Form::Probs, a, b, false);
                assert!(want < 1e-6, "test data is near-identical");
                let l1: f64 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
                let slack = if e.is_gpu() && div == Divergence::Kl {
                    2e-6 * l1 / (cols as f64).sqrt()
                } else {
                    1e-15
                };
                assert!(
                    close(got[r], want.max(0.0), 1e-5, slack),
                    "{} {div:?} row {r}: got {:e} want {want:e}",
                    e.name(),
                    got[r]
                );
            }
        }
    }
}

/// Near-identical rows whose sums differ (Σp = 3, Σq = 0.7) under `Normalize`: they are
/// read again divided by their sums, and each value x/Σx rounded to f32 carries 2^−24 of
/// itself, which is all of p − q once KL is below ~1e-6 (before: 1e-4 relative at KL ≈
/// 5e-9, no digit at 1e-15). KL, reverse and symmetric KL and Jensen–Shannon within 1e-5 of
/// the reference down to KL ≈ 1e-15; the GPU (f32 kernels, no compensated arithmetic in
/// WGSL) within its near-identical bound 1e-5·v + 2e-6·Σ|p−q|/√cols. Reference: the f64
/// normalised rows (p − q off by ~1e-16·p), as Σ q·φ(d/q) with d = p − q and
/// φ(r) = (1+r)·ln(1+r) − r from its series near 0 (formed directly it would cancel).
///
/// Also Jensen–Shannon of the rows as given (one pass, no rescaling): t(x, m) + t(y, m)
/// once took x − m and y − m with m = (x + y)/2 rounded, an error of ~2^−48·m a column
/// (4% at JS ≈ 1e-13 before).
pub fn rescaled_rows_keep_tiny_divergences(e: &TestEngine) {
    fn phi(r: f64) -> f64 {
        if r.abs() < 1e-2 {
            // Σ_{k≥2} (−r)^k / (k(k−1)): terms fall by ≥ 100 each.
            (2..12).map(|k| (-r).powi(k) / (k * (k - 1)) as f64).sum()
        } else {
            (1.0 + r) * r.ln_1p() - r
        }
    }
    let mut rng = Rng::new(67);
    let divs = [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ];
    for (rows, cols) in [(17, 16), (3, 300), (2, 3001)] {
        for sigma in [1e-3, 1e-5, 1e-7] {
            let (p, q) = prob_pair(&mut rng, rows, cols, sigma);
            let scaled = |v: &[f64], by: f64| to_f32(&v.iter().map(|x| by * x).collect::<Vec<_>>());
            let as_given = (
                Divergence::JensenShannon,
                Normalization::Check { tolerance: None },
            );
            let cases = std::iter::once((as_given.0, as_given.1, 1.0, 1.0)).chain(
                divs.iter()
                    .map(|&d| (d, Normalization::Normalize, 3.0, 0.7)),
            );
            for (div, norm, by_p, by_q) in cases {
                let (pf, qf) = (scaled(&p, by_p), scaled(&q, by_q));
                let req = Request::new(div).normalization(norm);
                let got = e.ok(&req, &pf, &qf, rows, cols);
                for r in 0..rows {
                    // As given (`Check`): the f32 values themselves, not renormalised.
                    let row_of = |v: &[f32]| {
                        let v = &v[r * cols..(r + 1) * cols];
                        let s: f64 = match norm {
                            Normalization::Normalize => v.iter().map(|&x| x as f64).sum(),
                            _ => 1.0,
                        };
                        v.iter().map(|&x| x as f64 / s).collect::<Vec<f64>>()
                    };
                    let (a, b) = (row_of(&pf), row_of(&qf));
                    let kl = |a: &[f64], b: &[f64]| -> f64 {
                        a.iter().zip(b).map(|(&x, &y)| y * phi((x - y) / y)).sum()
                    };
                    let want = match div {
                        Divergence::Kl => kl(&a, &b),
                        Divergence::ReverseKl => kl(&b, &a),
                        Divergence::SymmetricKl => kl(&a, &b) + kl(&b, &a),
                        _ => a
                            .iter()
                            .zip(&b)
                            .map(|(&x, &y)| {
                                let m = 0.5 * (x + y);
                                let t = (x - y) / (2.0 * m);
                                0.5 * m * (phi(t) + phi(-t))
                            })
                            .sum(),
                    };
                    let l1: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
                    let slack = if e.is_gpu() {
                        2e-6 * l1 / (cols as f64).sqrt()
                    } else {
                        0.0
                    };
                    assert!(
                        close(got[r], want, 1e-5, slack),
                        "{} {div:?} {norm:?} {rows}×{cols} σ = {sigma:e} row {r}: got {:e} want {want:e}",
                        e.name(),
                        got[r]
                    );
                }
            }
        }
    }
}

/// f64 rows near-identical (q = p·e^(σN), σ down to 1e-10, KL ~ 1e-20) keep the f64 bound,
/// 2e-12 relative, for the KL family and Jensen–Shannon, with zeros of P in some columns
/// (their mass moved to the next): the CPU's f64 lanes (a series in u = (p − q)/(p + q)) and
/// the exact path, whose Jensen–Shannon took x − m from m = (x + y)/2 rounded (3e-7 relative
/// at 1e-13 apart, before). Reference: Σ y·φ((x − y)/y) with φ's series near 0, and for
/// Jensen–Shannon ½Σ m·(φ(t) + φ(−t)), t = (x − y)/(2m). Engines that narrow f64 to f32 are
/// held to the f32 bounds elsewhere.
pub fn f64_near_identical_rows_keep_f64_accuracy(e: &TestEngine) {
    if !e.computes_f64() {
        return;
    }
    fn phi(r: f64) -> f64 {
        if r.abs() < 1e-2 {
            (2..12).map(|k| (-r).powi(k) / (k * (k - 1)) as f64).sum()
        } else {
            (1.0 + r) * r.ln_1p() - r
        }
    }
    // t(x, y) = x·ln(x/y) − x + y, with t(0, y) = y and t(x, 0) = +inf.
    let t = |x: f64, y: f64| match (x, y) {
        (0.0, _) => y,
        (_, 0.0) => f64::INFINITY,
        _ => y * phi((x - y) / y),
    };
    let js = |x: f64, y: f64| {
        let m = 0.5 * (x + y);
        if x == 0.0 || y == 0.0 {
            return 0.5 * (t(x, m) + t(y, m));
        }
        let u = (x - y) / (2.0 * m);
        0.5 * m * (phi(u) + phi(-u))
    };
    let mut rng = Rng::new(71);
    for (rows, cols) in [(17, 16), (3, 300), (2, 3001)] {
        for sigma in [1e-4, 1e-7, 1e-10] {
            let (mut p, q) = prob_pair(&mut rng, rows, cols, sigma);
            for r in (0..rows).step_by(2) {
                let at = r * cols + 5 % cols;
                p[at + 1] += p[at];
                p[at] = 0.0;
            }
            for (div, family) in [
                (Divergence::Kl, 0),
                (Divergence::ReverseKl, 1),
                (Divergence::SymmetricKl, 2),
                (Divergence::JensenShannon, 3),
            ] {
                let got = e.ok(&Request::new(div), &p, &q, rows, cols);
                for (r, &got) in got.iter().enumerate() {
                    let span = r * cols..(r + 1) * cols;
                    let pairs = || p[span.clone()].iter().zip(&q[span.clone()]);
                    let terms: f64 = pairs()
                        .map(|(&x, &y)| match family {
                            0 => t(x, y),
                            1 => t(y, x),
                            2 => t(x, y) + t(y, x),
                            _ => js(x, y),
                        })
                        .sum();
                    // KL as given is Σt + Σ(p − q): the rows' sums differ from 1 by their
                    // rounding, a difference whose own cancellation (ε·Σ|p − q|) is allowed.
                    let diff: f64 = pairs().map(|(x, y)| x - y).sum();
                    let l1: f64 = pairs().map(|(x, y)| (x - y).abs()).sum();
                    let (want, slack) = match family {
                        0 => ((terms + diff).max(0.0), 4.0 * f64::EPSILON * l1),
                        1 => ((terms - diff).max(0.0), 4.0 * f64::EPSILON * l1),
                        _ => (terms, 0.0),
                    };
                    assert!(
                        close(got, want, 2e-12, slack),
                        "{} {div:?} {rows}×{cols} σ = {sigma:e} row {r}: got {got:e} want {want:e}",
                        e.name(),
                    );
                }
            }
        }
    }
}

/// Near-identical f64 logits (b = a + σ·N, σ down to 1e-9: KL ~ 1e-19), also offset by
/// +1e4 and long enough to span many blocks, on engines that compute f64: within 2e-12
/// relative of KL(P‖Q) = Σ p·ψ(u), u = ln p − ln q = (a − b) − (lse_a − lse_b),
/// ψ(u) = e^−u − 1 + u ≥ 0 (from Σ q = Σ p·e^−u = 1; no cancellation). a − b is exact in f64
/// for such close pairs, and an error δ in the log-sums' difference moves the reference by
/// δ²/2 only (its first-order term is Σ q − 1 = 0), and δ must still be ≪ √KL: the
/// difference is solved for by Newton's method; reverse KL is Σ q·ψ(−u).
pub fn f64_near_identical_logits_keep_f64_accuracy(e: &TestEngine) {
    if !e.computes_f64() {
        return;
    }
    fn psi(u: f64) -> f64 {
        if u.abs() < 1e-2 {
            (2..12)
                .map(|k| (-u).powi(k) / (1..=k).product::<i32>() as f64)
                .sum()
        } else {
            (-u).exp_m1() + u
        }
    }
    // (max, Σ e^(v − max)): a − max is exact near the maximum, where the mass is, so the
    // weights do not round at an offset.
    fn max_sum(v: &[f64]) -> (f64, f64) {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (m, v.iter().map(|x| (x - m).exp()).sum::<f64>())
    }
    let mut rng = Rng::new(83);
    for (rows, cols) in [(3, 17), (2, 3001), (1, 70_001)] {
        for sigma in [1e-3, 1e-6, 1e-9] {
            for offset in [0.0, 1e4] {
                let (a, b) = logit_pair(&mut rng, rows, cols, sigma);
                let a: Vec<f64> = a.iter().map(|x| x + offset).collect();
                let b: Vec<f64> = b.iter().map(|x| x + offset).collect();
                let req = |div| Request::new(div).input(InputForm::Logits);
                let kl = e.ok(&req(Divergence::Kl), &a, &b, rows, cols);
                let rev = e.ok(&req(Divergence::ReverseKl), &a, &b, rows, cols);
                let sym = e.ok(&req(Divergence::SymmetricKl), &a, &b, rows, cols);
                for r in 0..rows {
                    let (ar, br) = (&a[r * cols..(r + 1) * cols], &b[r * cols..(r + 1) * cols]);
                    let ((ma, sa), (mb, sb)) = (max_sum(ar), max_sum(br));
                    let p = |x: f64| (x - ma).exp() / sa;
                    // Δ = lse_a − lse_b solves Σ p·(e^−u − 1) = 0 (Σ q = Σ p): two Newton
                    // steps from the log-sums' difference (off by ~1e-14, too much where
                    // KL ~ 1e-19) leave it off by the rounding of that sum of small terms.
                    let mut delta = (ma - mb) + (sa.ln() - sb.ln());
                    for _ in 0..2 {
                        let (mut f, mut df) = (0.0, 0.0);
                        for (&x, &y) in ar.iter().zip(br) {
                            let u = (x - y) - delta;
                            f += p(x) * (-u).exp_m1();
                            df += p(x) * (-u).exp();
                        }
                        delta -= f / df;
                    }
                    let (mut want, mut want_rev) = (0.0, 0.0);
                    for (&x, &y) in ar.iter().zip(br) {
                        let u = (x - y) - delta;
                        want += p(x) * psi(u);
                        want_rev += (y - mb).exp() / sb * psi(-u);
                    }
                    let what = format!("{} {rows}×{cols} σ {sigma:e} +{offset} row {r}", e.name());
                    for (name, got, want) in [
                        ("KL", kl[r], want),
                        ("reverse KL", rev[r], want_rev),
                        ("symmetric KL", sym[r], want + want_rev),
                    ] {
                        assert!(
                            close(got, want, 2e-12, 0.0),
                            "{what} {name}: got {got:e} want {want:e}"
                        );
                    }
                }
            }
        }
    }
}

/// Near-identical logits (b = a + 1e-4·N, KL ~ 5e-9): a log-sum-exp difference keeps no
/// digit here; the ψ form keeps 1e-5 relative on the CPU, 1e-4 on the GPU (f32 x without
/// compensation).
pub fn near_identical_logits(e: &TestEngine) {
    let mut rng = Rng::new(6);
    let (rows, cols) = (4, 32_000);
    let (a, b) = logit_pair(&mut rng, rows, cols, 1e-4);
    let (af, bf) = (to_f32(&a), to_f32(&b));
    let (ae, be) = (to_f64(&af), to_f64(&bf));
    let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let got = e.ok(&req, &af, &bf, rows, cols);
    // Reverse KL through the same identity with the roles swapped.
    let rev = e.ok(
        &Request::new(Divergence::ReverseKl).input(InputForm::Logits),
        &bf,
        &af,
        rows,
        cols,
    );
    for r in 0..rows {
        let want =
            reference_logits_kl(&ae[r * cols..(r + 1) * cols], &be[r * cols..(r + 1) * cols]);
        assert!(want < 1e-7, "test data is near-identical");
        assert!(
            close(got[r], want, rel, 0.0),
            "{} row {r}: {:e} vs {want:e}",
            e.name(),
            got[r]
        );
        assert!(
            close(rev[r], want, rel, 0.0),
            "{} reverse row {r}: {:e}",
            e.name(),
            rev[r]
        );
    }
}

/// Jensen–Shannon of near-identical logits (differences ~1e-6 and ~1e-4 on values ~2):
/// its log-ratios are as small, and the second pass once took their row term from the
/// difference of two f32 log-sums (1e-5 to 4e-4 relative error at 1e-6). Reference, in
/// the log domain (a sum of p·ln(p/m) terms would keep no digit here): u = ln p − ln q from
/// f64 log-softmaxes (off by ~4e-16, relative 4e-10 at u ~ 1e-6), JS = ½ Σ m·F(u),
/// F = (1+τ)ln(1+τ) + (1−τ)ln(1−τ) = τ² + τ⁴/6 + τ⁶/15 + τ⁸/28 + …, τ = tanh(u/2).
pub fn near_identical_logits_js(e: &TestEngine) {
    let mut rng = Rng::new(61);
    let (rows, cols) = (3, 32_000);
    let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
    let req = Request::new(Divergence::JensenShannon).input(InputForm::Logits);
    for sigma in [1e-6, 1e-4] {
        let (a, b) = logit_pair(&mut rng, rows, cols, sigma);
        let (af, bf) = (to_f32(&a), to_f32(&b));
        let got = e.ok(&req, &af, &bf, rows, cols);
        let (la, lb) = (
            log_softmax_rows(&to_f64(&af), cols),
            log_softmax_rows(&to_f64(&bf), cols),
        );
        for (r, &got) in got.iter().enumerate() {
            let span = r * cols..(r + 1) * cols;
            let want: f64 = la[span.clone()]
                .iter()
                .zip(&lb[span])
                .map(|(&x, &y)| {
                    let m = 0.5 * (x.exp() + y.exp());
                    let t2 = ((x - y) / 2.0).tanh().powi(2);
                    0.5 * m * t2 * (1.0 + t2 / 6.0 + t2 * t2 / 15.0 + t2.powi(3) / 28.0)
                })
                .sum();
            assert!(
                close(got, want, rel, 0.0),
                "{} σ = {sigma:e} row {r}: {got:e} vs {want:e}",
                e.name(),
            );
        }
    }
}

/// Rows whose blocks see P and Q at very different offsets: everywhere a = b + 0.3, except
/// one logit of one side, in the second 512-column block, h above it. There e^(b − mb) and
/// e^(a − ma) differ by ~e^h, and e^(a − ma) underflows f32 where e^(b − mb) does not, so no
/// engine may take one side's weights from the other's there (the CPU does so only where
/// the shift between them is small). Every divergence within 1e-5 relative of f64 (1e-4 on
/// the GPU), 1e-12 absolute (entropies of a near one-hot row are ~1e-30).
pub fn logit_blocks_far_apart(e: &TestEngine) {
    let mut rng = Rng::new(23);
    let cols = 1500;
    let spikes = [(60.0, true), (85.0, true), (100.0, true), (85.0, false)];
    let rows = spikes.len();
    let (a, b) = spike_rows(&mut rng, cols, &spikes.map(|(h, on_p)| (h, on_p, 700)));
    let (af, bf) = (to_f32(&a), to_f32(&b));
    let (ae, be) = (to_f64(&af), to_f64(&bf));
    let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
    for (div, rdiv) in ALL_DIVS {
        let got = e.ok(
            &Request::new(div).input(InputForm::Logits),
            &af,
            &bf,
            rows,
            cols,
        );
        for r in 0..rows {
            let (x, y) = (&ae[r * cols..(r + 1) * cols], &be[r * cols..(r + 1) * cols]);
            let want = reference(rdiv, Form::Logits, x, y, false);
            assert!(
                close(got[r], want, rel, 1e-12),
                "{} {div:?} row {r} (spike {:?}): got {:e} want {want:e}",
                e.name(),
                spikes[r],
                got[r]
            );
        }
    }
}

/// Rows of logits b uniform in (−8, 0) and a = b + 0.3, one per spike (height h, on P or on
/// Q, at column `at`): there b = 0 and a = 0.3, and the spike's side gets h more.
fn spike_rows(rng: &mut Rng, cols: usize, spikes: &[(f64, bool, usize)]) -> (Vec<f64>, Vec<f64>) {
    let rows = spikes.len();
    let (mut a, mut b) = (vec![0.0; rows * cols], vec![0.0; rows * cols]);
    for (r, &(h, on_p, at)) in spikes.iter().enumerate() {
        for j in 0..cols {
            b[r * cols + j] = -8.0 * rng.uniform();
            a[r * cols + j] = b[r * cols + j] + 0.3;
        }
        let k = r * cols + at;
        a[k] = if on_p { 0.3 + h } else { 0.3 };
        b[k] = if on_p { 0.0 } else { h };
    }
    (a, b)
}

/// One logit far above the rest, on either side, at heights where the ψ form of KL cancels
/// in f64 (found on rows like `logit_blocks_far_apart`'s: reverse KL with a spike of 45 on
/// P came out as 32.0 for 39.48, since E[ψ] and X reach e^40 and the form was chosen only
/// on the sums' own error). Short rows (the GPU's tiles) and rows of several blocks; f32 and
/// f64 inputs; every divergence within the f32 bounds of `logit_blocks_far_apart` (f64
/// inputs on engines that compute f64: 2e-12 relative).
pub fn one_far_spike_on_either_side(e: &TestEngine) {
    let mut rng = Rng::new(29);
    let heights = [30.0, 35.0, 40.0, 45.0, 50.0, 84.0];
    for (cols, at) in [(300, 150), (1500, 700)] {
        let mut spikes = vec![];
        for &h in &heights {
            spikes.push((h, true));
            spikes.push((h, false));
        }
        let rows = spikes.len();
        let at_col: Vec<_> = spikes.iter().map(|&(h, on_p)| (h, on_p, at)).collect();
        let (a, b) = spike_rows(&mut rng, cols, &at_col);
        let (af, bf) = (to_f32(&a), to_f32(&b));
        let (ae, be) = (to_f64(&af), to_f64(&bf));
        let f32_rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
        let f64_rel = if e.computes_f64() { 2e-12 } else { f32_rel };
        for (div, rdiv) in ALL_DIVS {
            let req = Request::new(div).input(InputForm::Logits);
            let got32 = e.ok(&req, &af, &bf, rows, cols);
            let got64 = e.ok(&req, &a, &b, rows, cols);
            for r in 0..rows {
                let span = r * cols..(r + 1) * cols;
                let want = |x: &[f64], y: &[f64]| {
                    reference(
                        rdiv,
                        Form::Logits,
                        &x[span.clone()],
                        &y[span.clone()],
                        false,
                    )
                };
                let cases = [
                    ("f32", got32[r], want(&ae, &be), f32_rel),
                    ("f64", got64[r], want(&a, &b), f64_rel),
                ];
                for (ty, got, want, rel) in cases {
                    assert!(
                        close(got, want, rel, 1e-12),
                        "{} {ty} {div:?} {cols} columns, spike {:?}: got {got:e} want {want:e}",
                        e.name(),
                        spikes[r],
                    );
                }
            }
        }
    }
}

/// One logit 83.5–86.5 above the rest, on either side, at random columns of rows 600–4000
/// wide: at those heights e^(m − max) of the rest's small pieces is at the edge of f32's
/// range while their ψ terms (Σ q·e^(ln p − ln q − x) at the ideal shift) are not, so a kernel
/// that rescales one piece's ψ sums onto another's maximum loses them (the GPU's workgroup
/// merges did: up to 2.6e-4 relative, depending on the merge order). Every divergence within
/// the f32 bounds of `logit_blocks_far_apart`.
pub fn spikes_at_the_edge_of_f32_range(e: &TestEngine) {
    let mut rng = Rng::new(31);
    let heights = [83.5, 84.0, 84.5, 85.0, 85.5, 86.0, 86.5];
    let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
    for cols in [600, 1000, 1500, 2000, 3000, 4000] {
        let mut spikes = vec![];
        for &h in &heights {
            for on_p in [true, false] {
                for _ in 0..3 {
                    spikes.push((h, on_p, (rng.uniform() * cols as f64) as usize));
                }
            }
        }
        let rows = spikes.len();
        let (a, b) = spike_rows(&mut rng, cols, &spikes);
        let (af, bf) = (to_f32(&a), to_f32(&b));
        let (ae, be) = (to_f64(&af), to_f64(&bf));
        for (div, rdiv) in ALL_DIVS {
            let got = e.ok(
                &Request::new(div).input(InputForm::Logits),
                &af,
                &bf,
                rows,
                cols,
            );
            for (r, &got) in got.iter().enumerate() {
                let span = r * cols..(r + 1) * cols;
                let want = reference(rdiv, Form::Logits, &ae[span.clone()], &be[span], false);
                assert!(
                    close(got, want, rel, 1e-12),
                    "{} {div:?} {cols} columns, spike {:?}: got {got:e} want {want:e}",
                    e.name(),
                    spikes[r],
                );
            }
        }
    }
}

/// Long rows: blocked sums keep the error flat; a 4M-column row stays within 1e-5.
pub fn long_rows_do_not_accumulate_error(e: &TestEngine) {
    let mut rng = Rng::new(7);
    let (rows, cols) = (1, 4_000_000);
    let (p, q) = prob_pair(&mut rng, rows, cols, 0.1);
    let (pf, qf) = (to_f32(&p), to_f32(&q));
    let got = e.ok(&Request::new(Divergence::Kl), &pf, &qf, rows, cols);
    let want = reference(Div::Kl, Form::Probs, &to_f64(&pf), &to_f64(&qf), false);
    assert!(
        close(got[0], want, 1e-5, 0.0),
        "{}: {} vs {want}",
        e.name(),
        got[0]
    );
}

/// Groups of short rows are finished in their SIMD lanes on the CPU (one row per lane):
/// units, `AsGiven`, the sum check and the JS bound must come out as they do row by row.
pub fn short_row_groups(e: &TestEngine) {
    let mut rng = Rng::new(8);
    let rows = 48;
    for cols in [1, 5, 8, 16, 17, 64] {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        // Rows scaled by 0.9…1.1: literal sums, negative values allowed.
        let scale = |v: &[f64], k: f64| -> Vec<f64> {
            v.iter()
                .enumerate()
                .map(|(i, x)| x * (1.0 + k * ((i / cols) as f64 / rows as f64 - 0.5)))
                .collect()
        };
        let (ps, qs) = (scale(&p, 0.2), scale(&q, -0.2));
        let (pf, qf, psf, qsf) = (to_f32(&p), to_f32(&q), to_f32(&ps), to_f32(&qs));
        let (pe, qe, pse, qse) = (to_f64(&pf), to_f64(&qf), to_f64(&psf), to_f64(&qsf));
        let what = format!("{} {rows}x{cols}", e.name());
        let bits = e.ok(
            &Request::new(Divergence::Kl).unit(Unit::Bits),
            &pf,
            &qf,
            rows,
            cols,
        );
        let as_given = Request::new(Divergence::Kl).normalization(Normalization::AsGiven);
        let literal = e.ok(&as_given, &psf, &qsf, rows, cols);
        for r in 0..rows {
            let span = r * cols..(r + 1) * cols;
            let (a, b) = (&pe[span.clone()], &qe[span.clone()]);
            let want = reference(Div::Kl, Form::Probs, a, b, false) / std::f64::consts::LN_2;
            assert!(close(bits[r], want, 1e-5, 1e-12), "{what} bits row {r}");
            let (a, b) = (&pse[span.clone()], &qse[span]);
            let want: f64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| if *x > 0.0 { x * (x / y).ln() } else { 0.0 })
                .sum();
            let size: f64 = a.iter().zip(b).map(|(x, y)| (x * (x / y).ln()).abs()).sum();
            assert!(
                close(literal[r], want, 1e-5, 1e-6 * size),
                "{what} as given row {r}: {} vs {want}",
                literal[r]
            );
        }
        // Rows 21 and 37 are off from 1 by 3e-4 (beyond the f32 default 1e-4), row 30 by
        // 5e-5 (within): the error names row 21, P side.
        let mut off = pf.clone();
        for (row, k) in [(21, 1.0 + 3e-4), (30, 1.0 + 5e-5), (37, 1.0 + 3e-4)] {
            for x in &mut off[row * cols..(row + 1) * cols] {
                *x = (*x as f64 * k) as f32;
            }
        }
        let kl = Request::new(Divergence::Kl);
        assert!(
            matches!(
                e.err(&kl, &off, &qf, rows, cols),
                Error::NotNormalized {
                    side: Side::P,
                    row: 21,
                    ..
                }
            ),
            "{what}"
        );
        let mut fixed = off.clone();
        for row in [21, 37] {
            for x in &mut fixed[row * cols..(row + 1) * cols] {
                *x /= 1.0 + 3e-4;
            }
        }
        e.ok(&kl, &fixed, &qf, rows, cols);
        let mut q_off = qf.clone();
        for x in &mut q_off[25 * cols..26 * cols] {
            *x = (*x as f64 * (1.0 - 3e-4)) as f32;
        }
        assert!(
            matches!(
                e.err(&kl, &pf, &q_off, rows, cols),
                Error::NotNormalized {
                    side: Side::Q,
                    row: 25,
                    ..
                }
            ),
            "{what}"
        );
        // A row without mass is an error even when sums are taken as given.
        let mut empty = psf.clone();
        empty[33 * cols..34 * cols].fill(0.0);
        assert!(
            matches!(
                e.err(&as_given, &empty, &qsf, rows, cols),
                Error::NoMass {
                    side: Side::P,
                    row: 33
                }
            ),
            "{what}"
        );
    }
    // Disjoint supports: JS is exactly ln 2 (1 bit) and must not exceed it after rounding.
    for cols in [2, 4, 16, 64] {
        let p: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 2 == 0 { 2.0 / cols as f32 } else { 0.0 })
            .collect();
        let q: Vec<f32> = (0..rows * cols)
            .map(|i| if i % 2 == 1 { 2.0 / cols as f32 } else { 0.0 })
            .collect();
        for (unit, max) in [(Unit::Nats, std::f64::consts::LN_2), (Unit::Bits, 1.0)] {
            let req = Request::new(Divergence::JensenShannon).unit(unit);
            for v in e.ok(&req, &p, &q, rows, cols) {
                assert!(
                    v <= max && v >= max * (1.0 - 1e-6),
                    "{} {unit:?} {cols}: {v:e}",
                    e.name()
                );
            }
        }
    }
}

/// A row of `n` equal probabilities with `p[i]` overridden by `vals`, renormalised exactly
/// enough for f32 (the rest absorbs the change).
fn row_with(n: usize, vals: &[(usize, f32)]) -> Vec<f32> {
    let fixed: f32 = vals.iter().map(|v| v.1).sum();
    let rest = (1.0 - fixed) / (n - vals.len()) as f32;
    let mut r = vec![rest; n];
    for &(i, v) in vals {
        r[i] = v;
    }
    r
}

pub fn zero_p_contributes_nothing(e: &TestEngine) {
    // Sizes cover a pure tail (7), a vector body (64) and irregular vectors mid-row (1000).
    for n in [7usize, 64, 1000] {
        let p = row_with(n, &[(1, 0.0), (3, 0.0)]);
        let q = row_with(n, &[(1, 0.2), (3, 0.0)]);
        let want: f64 = p
            .iter()
            .zip(&q)
            .filter(|(a, _)| **a > 0.0)
            .map(|(&a, &b)| a as f64 * (a as f64 / b as f64).ln())
            .sum();
        let got = e.ok(&Request::new(Divergence::Kl), &p, &q, 1, n)[0];
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{} n={n}: {got} vs {want}",
            e.name()
        );
    }
}

pub fn q_zero_where_p_positive_is_infinite(e: &TestEngine) {
    for n in [7usize, 64, 1000] {
        let p = row_with(n, &[(5, 0.1)]);
        let q = row_with(n, &[(5, 0.0)]);
        for div in [
            Divergence::Kl,
            Divergence::SymmetricKl,
            Divergence::CrossEntropy,
        ] {
            assert_eq!(
                e.ok(&Request::new(div), &p, &q, 1, n)[0],
                f64::INFINITY,
                "{div:?}"
            );
        }
        // Reverse KL reads q·ln(q/p): finite here. JS stays finite and ≤ ln 2.
        assert!(e.ok(&Request::new(Divergence::ReverseKl), &p, &q, 1, n)[0].is_finite());
        let js = e.ok(&Request::new(Divergence::JensenShannon), &p, &q, 1, n)[0];
        assert!(js.is_finite() && js <= std::f64::consts::LN_2);
    }
}

pub fn identical_rows_give_zero(e: &TestEngine) {
    let mut rng = Rng::new(9);
    let (p, _) = prob_pair(&mut rng, 3, 777, 0.1);
    let p = to_f32(&p);
    for div in [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ] {
        assert_eq!(
            e.ok(&Request::new(div), &p, &p, 3, 777),
            vec![0.0; 3],
            "{div:?}"
        );
    }
    // Logits shifted by a constant are the same distribution.
    let a: Vec<f32> = (0..777 * 3)
        .map(|i| ((i * 37 % 101) as f32) * 0.05)
        .collect();
    let b: Vec<f32> = a.iter().map(|x| x + 3.0).collect();
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    for v in e.ok(&req, &a, &b, 3, 777) {
        assert!(v.abs() < 1e-9, "{} {v}", e.name());
    }
}

pub fn tiny_and_huge_values(e: &TestEngine) {
    // Subnormal and tiny probabilities take the exact path and stay correct.
    let n = 40;
    let p = row_with(n, &[(0, 1e-40), (1, 1e-30), (17, 1e-20)]);
    let q = row_with(n, &[(0, 1e-38), (1, 1e-38), (17, 1e-5)]);
    let want: f64 = p
        .iter()
        .zip(&q)
        .map(|(&a, &b)| a as f64 * (a as f64 / b as f64).ln())
        .sum();
    let got = e.ok(&Request::new(Divergence::Kl), &p, &q, 1, n)[0];
    assert!(
        (got - want).abs() <= 1e-5 * want.abs(),
        "{}: {got} vs {want}",
        e.name()
    );
    // Huge unnormalised weights with Normalize: scale-free.
    let big: Vec<f32> = p.iter().map(|x| x * 3e30).collect();
    let bigq: Vec<f32> = q.iter().map(|x| x * 1e25).collect();
    let req = Request::new(Divergence::Kl).normalization(Normalization::Normalize);
    let got = e.ok(&req, &big, &bigq, 1, n)[0];
    assert!(
        (got - want).abs() <= 1e-5 * want.abs() + 1e-6,
        "{}: {got} vs {want}",
        e.name()
    );
}

/// Every divergence of P = softmax([e, 0, 0, −e]) against the uniform Q = softmax(0) in
/// closed form, for e ≤ 1e-3 (series in h = e/2, terms beyond those kept below 1e-18 of
/// each value): KL = e·tanh h − 2 ln cosh h, reverse KL = 2 ln cosh h, H(P, Q) = ln 4,
/// H(P) = ln 4 − KL, and JS = ½ Σ m·(r² + r⁴/6 + r⁶/15 + r⁸/28) with r = (p − q)/(2m),
/// p − q from expm1 (no cancellation).
fn tiny_logit_reference(div: Divergence, e: f64) -> f64 {
    let h = e / 2.0;
    let (h2, h4, h6) = (h * h, h.powi(4), h.powi(6));
    let kl = h2 - h4 / 2.0 + 2.0 * h6 / 9.0;
    let rev = h2 - h4 / 6.0 + 2.0 * h6 / 45.0;
    let ln4 = 4f64.ln();
    match div {
        Divergence::Kl => kl,
        Divergence::ReverseKl => rev,
        Divergence::SymmetricKl => kl + rev,
        Divergence::CrossEntropy => ln4,
        Divergence::Entropy => ln4 - kl,
        Divergence::JensenShannon => {
            let z = 4.0 + 4.0 * h.sinh().powi(2);
            [e, 0.0, 0.0, -e]
                .iter()
                .map(|&a| {
                    let d = (a.exp_m1() - h.sinh().powi(2)) / z;
                    let m = 0.25 + d / 2.0;
                    let r2 = (d / (2.0 * m)).powi(2);
                    0.5 * m * r2 * (1.0 + r2 / 6.0 + r2 * r2 / 15.0 + r2.powi(3) / 28.0)
                })
                .sum()
        }
    }
}

/// Logits whose every value is tiny: the row's shift cannot hold lse_a − lse_b (1 + e² is 1
/// in f64), so the value rests on ln(1+X) − X for a small X, which formed directly was 0
/// below X ≈ 1e-16 (KL of [1e-20, 0, 0, −1e-20] against zeros came out 3·e²/4, not e²/4)
/// and lost digits up to X ≈ 1e-2. f32 and (on engines computing f64) f64 inputs, every
/// divergence, within the engine's bound of the closed form.
pub fn tiny_logits_keep_their_digits(e: &TestEngine) {
    let (rows, cols) = (1, 4);
    for scale in [1e-3, 1e-6, 1e-10, 1e-15, 1e-20, 1e-30] {
        let p32 = [scale as f32, 0.0, 0.0, -(scale as f32)];
        let p64 = [scale, 0.0, 0.0, -scale];
        let (q32, q64) = ([0f32; 4], [0f64; 4]);
        for &div in Divergence::ALL {
            let req = Request::new(div).input(InputForm::Logits);
            let got = e.ok(&req, &p32, &q32, rows, cols)[0];
            let want = tiny_logit_reference(div, p32[0] as f64);
            let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
            assert!(
                close(got, want, rel, 0.0),
                "{} f32 {div:?} e = {scale:e}: {got:e} vs {want:e}",
                e.name()
            );
            if e.computes_f64() {
                let got = e.ok(&req, &p64, &q64, rows, cols)[0];
                let want = tiny_logit_reference(div, scale);
                assert!(
                    close(got, want, 1e-12, 0.0),
                    "{} f64 {div:?} e = {scale:e}: {got:e} vs {want:e}",
                    e.name()
                );
            }
        }
    }
}

fn log_softmax32(x: &[f32]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

pub fn minus_infinity_logits_mean_probability_zero(e: &TestEngine) {
    let inf = f32::NEG_INFINITY;
    // P masks column 1 (p = 0 there, fine); Q masks column 2 where P has mass → +inf.
    let a = [1.0f32, inf, 0.5, 0.2, 0.1];
    let b = [1.0f32, 0.3, 0.5, 0.2, 0.1];
    let (la, lb) = (log_softmax32(&a), log_softmax32(&b));
    let want: f64 = la
        .iter()
        .zip(&lb)
        .filter(|(x, _)| x.is_finite())
        .map(|(x, y)| x.exp() * (x - y))
        .sum();
    for input in [InputForm::Logits, InputForm::LogProbabilities] {
        let (a, b) = if input == InputForm::Logits {
            (a.to_vec(), b.to_vec())
        } else {
            (
                la.iter().map(|&x| x as f32).collect(),
                lb.iter().map(|&x| x as f32).collect(),
            )
        };
        let req = Request::new(Divergence::Kl).input(input);
        let got = e.ok(&req, &a, &b, 1, 5)[0];
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{} {input:?}: {got} vs {want}",
            e.name()
        );
        let mut b2 = b.clone();
        b2[2] = inf;
        // (Masking a log-probability un-normalises the row: skip the sum check for it.)
        let req = req.normalization(Normalization::AsGiven);
        assert_eq!(e.ok(&req, &a, &b2, 1, 5)[0], f64::INFINITY);
        // Reverse KL: Q has mass on column 1 where P is −inf → +inf.
        let rev = Request::new(Divergence::ReverseKl).input(input);
        assert_eq!(e.ok(&rev, &a, &b, 1, 5)[0], f64::INFINITY);
    }
    // A row with no finite logit has no distribution.
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let err = e.err(&req, &[inf, inf], &[0.0f32, 1.0], 1, 2);
    assert!(
        matches!(
            err,
            Error::NoMass {
                side: Side::P,
                row: 0
            }
        ),
        "{err}"
    );
}

/// Uniform 3 × 300 rows, P's row 1 holding NaN at column 123: (p, q, rows, cols).
fn nan_at_row_1_col_123() -> (Vec<f32>, Vec<f32>, usize, usize) {
    let (rows, cols) = (3, 300);
    let mut p = vec![1.0 / cols as f32; rows * cols];
    let q = p.clone();
    p[cols + 123] = f32::NAN;
    (p, q, rows, cols)
}

pub fn nan_is_an_error_naming_row_and_column_or_propagates(e: &TestEngine) {
    let (p, q, rows, cols) = nan_at_row_1_col_123();
    for input in [InputForm::Probabilities, InputForm::Logits] {
        let req = Request::new(Divergence::Kl).input(input);
        let err = e.err(&req, &p, &q, rows, cols);
        assert!(
            matches!(
                err,
                Error::BadValue {
                    side: Side::P,
                    kind: BadKind::NotANumber,
                    row: 1,
                    col: 123
                }
            ),
            "{} {err}",
            e.name()
        );
        let got = e.ok(&req.nan(NanPolicy::Propagate), &p, &q, rows, cols);
        assert!(got[1].is_nan() && got[0].abs() < 1e-12 && got[2].abs() < 1e-12);
        // In Q too.
        let err = e.err(&req, &q, &p, rows, cols);
        assert!(
            matches!(
                err,
                Error::BadValue {
                    side: Side::Q,
                    row: 1,
                    col: 123,
                    ..
                }
            ),
            "{err}"
        );
    }
    // Two bad values in one block (a NaN, then a negative 77 columns earlier): the error
    // names the first in column order.
    let mut two = q.clone();
    two[cols + 200] = f32::NAN;
    two[cols + 123] = -0.5;
    let err = e.err(&Request::new(Divergence::Kl), &two, &q, rows, cols);
    assert!(
        matches!(
            err,
            Error::BadValue {
                side: Side::P,
                kind: BadKind::Negative,
                row: 1,
                col: 123
            }
        ),
        "{err}"
    );
    // Short rows, many of them: the lane-per-row path must hand the bad group back.
    let (rows, cols) = (40, 16);
    let mut p = vec![1.0 / cols as f32; rows * cols];
    p[33 * cols + 5] = f32::NAN;
    let err = e.err(&Request::new(Divergence::Kl), &p, &p.clone(), rows, cols);
    assert!(
        matches!(
            err,
            Error::BadValue {
                row: 33,
                col: 5,
                ..
            }
        ),
        "{err}"
    );
    let q = vec![1.0 / cols as f32; rows * cols];
    let got = e.ok(
        &Request::new(Divergence::Kl).nan(NanPolicy::Propagate),
        &p,
        &q,
        rows,
        cols,
    );
    assert!(got[33].is_nan() && got.iter().filter(|v| v.is_nan()).count() == 1);
    // A long row split across threads (and chunks).
    let cols = 200_000;
    let mut p = vec![1.0 / cols as f32; cols];
    p[150_001] = f32::NAN;
    let err = e.err(&Request::new(Divergence::Kl), &p, &p.clone(), 1, cols);
    assert!(
        matches!(
            err,
            Error::BadValue {
                row: 0,
                col: 150_001,
                ..
            }
        ),
        "{err}"
    );
}

pub fn negative_probabilities_and_infinities_are_errors(e: &TestEngine) {
    let mut p = vec![0.25f32; 8];
    p[6] = -0.25;
    p[7] = 0.75;
    let err = e.err(&Request::new(Divergence::Kl), &p, &[0.125f32; 8], 1, 8);
    assert!(
        matches!(
            err,
            Error::BadValue {
                kind: BadKind::Negative,
                col: 6,
                ..
            }
        ),
        "{err}"
    );
    let mut p = vec![0.125f32; 8];
    p[3] = f32::INFINITY;
    let err = e.err(&Request::new(Divergence::Kl), &p, &[0.125f32; 8], 1, 8);
    assert!(
        matches!(
            err,
            Error::BadValue {
                kind: BadKind::Infinite,
                col: 3,
                ..
            }
        ),
        "{err}"
    );
    let req = Request::new(Divergence::Kl).input(InputForm::Logits);
    let err = e.err(&req, &[0.0f32, 1.0], &[0.0, f32::INFINITY], 1, 2);
    assert!(
        matches!(
            err,
            Error::BadValue {
                side: Side::Q,
                kind: BadKind::Infinite,
                col: 1,
                ..
            }
        ),
        "{err}"
    );
}

pub fn empty_and_mismatched_inputs_are_errors(e: &TestEngine) {
    let req = Request::new(Divergence::Kl);
    assert!(matches!(
        e.run::<f32>(&req, &[], &[], 0, 5),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        e.run::<f32>(&req, &[], &[], 5, 0),
        Err(Error::Empty { .. })
    ));
    assert!(matches!(
        e.run(&req, &[0.5f32, 0.5], &[1.0f32], 1, 2),
        Err(Error::ShapeMismatch { .. })
    ));
}

pub fn one_element_rows(e: &TestEngine) {
    assert_eq!(
        e.ok(
            &Request::new(Divergence::Kl),
            &[1.0f32, 1.0],
            &[1.0, 1.0],
            2,
            1
        ),
        vec![0.0, 0.0]
    );
    let req = Request::new(Divergence::Entropy).input(InputForm::Logits);
    assert_eq!(e.ok(&req, &[3.0f32], &[3.0], 1, 1), vec![0.0]);
}

pub fn rows_off_from_one_are_errors_unless_normalised(e: &TestEngine) {
    let p = [0.5f32, 0.4];
    let q = [0.5f32, 0.5];
    let err = e.err(&Request::new(Divergence::Kl), &p, &q, 1, 2);
    assert!(
        matches!(
            err,
            Error::NotNormalized {
                side: Side::P,
                row: 0,
                ..
            }
        ),
        "{err}"
    );
    let req = Request::new(Divergence::Kl).normalization(Normalization::Normalize);
    let want =
        (5.0f64 / 9.0) * ((5.0 / 9.0) / 0.5f64).ln() + (4.0 / 9.0) * ((4.0 / 9.0) / 0.5f64).ln();
    let got = e.ok(&req, &p, &q, 1, 2)[0];
    assert!((got - want).abs() < 1e-7, "{}: {got} vs {want}", e.name());
    // As given: the literal Σ p·ln(p/q), negative here, not clamped.
    let req = Request::new(Divergence::Kl).normalization(Normalization::AsGiven);
    let literal = 0.5f64 * 1f64.ln() + 0.4 * (0.4f64 / 0.5).ln();
    let got = e.ok(&req, &p, &q, 1, 2)[0];
    assert!((got - literal).abs() < 1e-7 && got < 0.0);
    // A custom tolerance accepts it.
    let req = Request::new(Divergence::Kl).normalization(Normalization::Check {
        tolerance: Some(0.2),
    });
    e.ok(&req, &p, &q, 1, 2);
}

pub fn f16_softmax_rows_pass_the_default_tolerance(e: &TestEngine) {
    // A 128k-entry softmax rounded to f16 does not sum to 1 exactly.
    let n = 128_256;
    let mut rng = Rng::new(11);
    let (p, q) = prob_pair(&mut rng, 1, n, 0.1);
    let ph: Vec<f16> = p.iter().map(|&x| f16::from_f64(x)).collect();
    let qh: Vec<f16> = q.iter().map(|&x| f16::from_f64(x)).collect();
    e.ok(&Request::new(Divergence::Kl), &ph, &qh, 1, n);
}

pub fn never_negative_for_normalised_inputs(e: &TestEngine) {
    // p and q rounded separately: literal Σ p ln(p/q) can dip below 0 by rounding.
    let mut rng = Rng::new(12);
    let (p, q) = prob_pair(&mut rng, 50, 64, 1e-7);
    let (p, q) = (to_f32(&p), to_f32(&q));
    for div in [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ] {
        assert!(
            e.ok(&Request::new(div), &p, &q, 50, 64)
                .iter()
                .all(|&v| v >= 0.0),
            "{div:?}"
        );
    }
}

/// The precision defects found by porting other projects' test suites (issue 10): each case,
/// at the bound the engine documents.
pub fn precision_cases_from_other_suites(e: &TestEngine) {
    let js = Request::new(Divergence::JensenShannon);
    // 1. JS with Normalize on f64 keeps f64 precision on f64 engines (f32 on a GPU without
    //    f64).
    let p = [1.0f64, 2.0, 4.0];
    let q = [3.0f64, 1.0, 1.0];
    let want = reference(Div::Js, Form::Probs, &p, &q, true);
    let got = e.ok(&js.normalization(Normalization::Normalize), &p, &q, 1, 3)[0];
    let rel = if e.computes_f64() { 1e-13 } else { 1e-6 };
    assert!(
        close(got, want, rel, 0.0),
        "{}: JS normalize f64 {got:.12} vs {want:.12}",
        e.name()
    );
    // 2. JS on logits offset by +1e4 (f32): the row's log-sum-exp must not round.
    let a: Vec<f32> = [0.36f64, 0.48, 0.16]
        .iter()
        .map(|x| (x.ln() + 1e4) as f32)
        .collect();
    let b = [1e4f32; 3];
    let want = reference(Div::Js, Form::Logits, &to_f64(&a), &to_f64(&b), false);
    let got = e.ok(&js.input(InputForm::Logits), &a, &b, 1, 3)[0];
    assert!(
        close(got, want, 1e-5, 0.0),
        "{}: JS logits +1e4 {got} vs {want}",
        e.name()
    );
    // 3. Cross-entropy and entropy of logits offset by +1e4.
    let mut rng = Rng::new(41);
    let (a, b) = logit_pair(&mut rng, 3, 500, 0.5);
    let (a, b): (Vec<f32>, Vec<f32>) = (
        a.iter().map(|x| (x + 1e4) as f32).collect(),
        b.iter().map(|x| (x + 1e4) as f32).collect(),
    );
    let (ae, be) = (to_f64(&a), to_f64(&b));
    for (div, rdiv) in [
        (Divergence::CrossEntropy, Div::CrossEntropy),
        (Divergence::Entropy, Div::Entropy),
    ] {
        let got = e.ok(&Request::new(div).input(InputForm::Logits), &a, &b, 3, 500);
        for r in 0..3 {
            let want = reference(
                rdiv,
                Form::Logits,
                &ae[r * 500..(r + 1) * 500],
                &be[r * 500..(r + 1) * 500],
                false,
            );
            assert!(
                close(got[r], want, 1e-5, 0.0),
                "{} {div:?} +1e4 row {r}: {} vs {want}",
                e.name(),
                got[r]
            );
        }
    }
    // 4. f64 values below the f32 range are values, not zeros (never +inf from narrowing);
    //    SciPy's rel_entr tiny-q case (gh-20710) the same.
    let kl = Request::new(Divergence::Kl);
    let got = e.ok(&kl, &[1.0f64, 0.0], &[1e-50, 1.0], 1, 2)[0];
    assert!(
        close(got, 50.0 * 10f64.ln(), 1e-12, 0.0),
        "{}: {got}",
        e.name()
    );
    // rel_entr(x, tiny) where x/y overflows (SciPy gh-20710): x·(ln x − ln y), finite.
    let as_given = kl.normalization(Normalization::AsGiven);
    let (x, y) = ([2.0f64, 3.0, 4.0], [f64::MIN_POSITIVE; 3]);
    let want: f64 = x.iter().zip(&y).map(|(a, b)| a * (a.ln() - b.ln())).sum();
    let got = e.ok(&as_given, &x, &y, 1, 3)[0];
    assert!(
        close(got, want, 1e-12, 0.0),
        "{}: {got} vs {want}",
        e.name()
    );
}

/// An opt-in pseudocount ε: both rows read as (x + ε) / Σ(x + ε), on every divergence; zeros
/// in Q then give finite values, and with ε = 0 they stay infinite.
pub fn pseudocount_smooths_both_rows(e: &TestEngine) {
    let mut rng = Rng::new(23);
    for (rows, cols) in SHAPES {
        let (p, mut q) = prob_pair(&mut rng, rows, cols, 1.0);
        // Holes in Q where P has mass: infinite KL without smoothing.
        for v in q.iter_mut().step_by(5) {
            *v = 0.0;
        }
        let (p32, q32) = (to_f32(&p), to_f32(&q));
        for eps in [1e-3, 0.5] {
            let smooth = |v: &[f32]| v.iter().map(|&x| x as f64 + eps).collect::<Vec<f64>>();
            let (pe, qe) = (smooth(&p32), smooth(&q32));
            let what = format!("{} pseudocount {eps} ({rows}×{cols})", e.name());
            check_all_divergences(&what, Form::Probs, &pe, &qe, cols, true, &mut |req| {
                e.run(&req.pseudocount(eps), &p32, &q32, rows, cols)
            });
        }
    }
    let p = [0.5f32, 0.5];
    let q = [1.0f32, 0.0];
    let kl = Request::new(Divergence::Kl);
    assert_eq!(e.ok(&kl, &p, &q, 1, 2)[0], f64::INFINITY, "{}", e.name());
    assert_eq!(e.ok(&kl.pseudocount(0.0), &p, &q, 1, 2)[0], f64::INFINITY);
    // Still an error: a negative value (ε would make it positive), and NaN.
    let neg = [-0.25f32, 1.25];
    match e.err(&kl.pseudocount(1.0), &neg, &q, 1, 2) {
        Error::BadValue {
            side: Side::P,
            row: 0,
            col: 0,
            kind: BadKind::Negative,
            ..
        } => {}
        other => panic!("{}: {other}", e.name()),
    }
    // Requests that cannot mean anything.
    for bad in [
        kl.pseudocount(-1e-3),
        kl.pseudocount(f64::NAN),
        kl.pseudocount(1e-3).input(InputForm::Logits),
    ] {
        assert!(
            matches!(e.err(&bad, &p, &q, 1, 2), Error::InvalidRequest(_)),
            "{}",
            e.name()
        );
    }
}

/// f64 inputs keep f64 accuracy, 2e-12 relative per row, on every engine that computes f64
/// (the CPU's exact path; the GPU's f64 kernels): probabilities as given and normalised on
/// request, logits, log-probabilities, and logits offset by +1e4 (P) and −3e3 (Q), where
/// forming a − b − c in f64 rounds. An engine that narrows f64 to f32 (a GPU without
/// SHADER_F64) is held to the f32 bound on the values it sees. The references are the
/// textbook formulas in f64 (their own rounding is ~1e-15 relative on these rows); offset
/// logits are referred back to their offsets exactly (x ± offset is exact in f64 here, and
/// softmax is shift-invariant).
pub fn f64_inputs_keep_f64_accuracy(e: &TestEngine) {
    let tol = if e.computes_f64() {
        (2e-12, 1e-15)
    } else {
        (1e-5, 1e-12)
    };
    let mut rng = Rng::new(43);
    let run =
        |what: String, form, (p, q): (&[f64], &[f64]), (pe, qe): (&[f64], &[f64]), cols, norm| {
            let rows = p.len() / cols;
            let what = format!("{} f64 {what}", e.name());
            check_all_divergences_within(&what, form, pe, qe, cols, norm, tol, &mut |req| {
                e.run(req, p, q, rows, cols)
            });
        };
    for (rows, cols) in SHAPES {
        let (p, q) = prob_pair(&mut rng, rows, cols, 0.3);
        let (pe, qe) = (e.seen(&p), e.seen(&q));
        run(
            "probs".into(),
            Form::Probs,
            (&p, &q),
            (&pe, &qe),
            cols,
            false,
        );
        let (p3, q3): (Vec<f64>, Vec<f64>) = (
            p.iter().map(|x| 3.0 * x).collect(),
            q.iter().map(|x| 0.7 * x).collect(),
        );
        let (pe, qe) = (e.seen(&p3), e.seen(&q3));
        run(
            "probs normalised".into(),
            Form::Probs,
            (&p3, &q3),
            (&pe, &qe),
            cols,
            true,
        );
        let (a, b) = logit_pair(&mut rng, rows, cols, 0.5);
        let (ae, be) = (e.seen(&a), e.seen(&b));
        run(
            "logits".into(),
            Form::Logits,
            (&a, &b),
            (&ae, &be),
            cols,
            false,
        );
        let (la, lb) = (log_softmax_rows(&a, cols), log_softmax_rows(&b, cols));
        let (lae, lbe) = (e.seen(&la), e.seen(&lb));
        run(
            "log-probs".into(),
            Form::LogProbs,
            (&la, &lb),
            (&lae, &lbe),
            cols,
            false,
        );
        let ao: Vec<f64> = a.iter().map(|x| x + 1e4).collect();
        let bo: Vec<f64> = b.iter().map(|x| x - 3e3).collect();
        let ae: Vec<f64> = e.seen(&ao).iter().map(|x| x - 1e4).collect();
        let be: Vec<f64> = e.seen(&bo).iter().map(|x| x + 3e3).collect();
        run(
            "logits offset".into(),
            Form::Logits,
            (&ao, &bo),
            (&ae, &be),
            cols,
            false,
        );
    }
}

/// KL, reverse KL and symmetric KL from one shared pass (`per_row_each`), with
/// Jensen–Shannon's first pass where it has two, and each member following up its own rows: near-identical logits with a large offset and long rows (rows
/// re-read with their ideal shift), masked logits (the exact path), probabilities far from
/// normalised (rescaled re-reads), a pseudocount, zeros on either side (infinite in one
/// direction only), NaN propagated, and bad values reported as a run alone reports them.
/// Each member must equal its own run (`TestEngine::same_values`) and the f64 reference.
pub fn kl_family_shares_one_pass(e: &TestEngine) {
    let family = [
        Divergence::Kl,
        Divergence::ReverseKl,
        Divergence::SymmetricKl,
        Divergence::JensenShannon,
    ];
    let divs = [Div::Kl, Div::Reverse, Div::Symmetric];
    let mut rng = Rng::new(31);
    let each = |what: &str, req: Request, p: &[f32], q: &[f32], rows: usize, cols: usize| {
        let shared = e
            .run_each(&req, &family, p, q, rows, cols)
            .unwrap_or_else(|err| panic!("{} {what}: {err}", e.name()))
            .values;
        for (div, got) in family.iter().zip(&shared) {
            let alone = e.ok(
                &Request {
                    divergence: *div,
                    ..req
                },
                p,
                q,
                rows,
                cols,
            );
            e.same_values(&format!("{} {what} {div:?}", e.name()), got, &alone);
        }
        shared
    };
    // Logits: near-identical (ψ form, reshifted rows), offset by +1e4, and masked.
    for (rows, cols, sigma, offset, mask) in [
        (4, 32_000, 1e-4, 0.0, false),
        (3, 4097, 0.5, 1e4, false),
        (2, 70_001, 1e-3, 0.0, false),
        (5, 1000, 0.5, 0.0, true),
    ] {
        let (mut a, mut b) = logit_pair(&mut rng, rows, cols, sigma);
        if mask {
            for i in (0..a.len()).step_by(7) {
                a[i] = f64::NEG_INFINITY;
                if i % 2 == 0 {
                    b[i] = f64::NEG_INFINITY;
                }
            }
        }
        let (af, bf): (Vec<f32>, Vec<f32>) = (
            a.iter().map(|x| (x + offset) as f32).collect(),
            b.iter().map(|x| (x + offset) as f32).collect(),
        );
        let req = Request::new(Divergence::Kl).input(InputForm::Logits);
        let what = format!("logits {rows}x{cols} sigma {sigma} offset {offset} mask {mask}");
        let shared = each(&what, req, &af, &bf, rows, cols);
        let (ae, be): (Vec<f64>, Vec<f64>) = (
            af.iter().map(|&x| x as f64 - offset).collect(),
            bf.iter().map(|&x| x as f64 - offset).collect(),
        );
        let rel = if e.is_gpu() { 1e-4 } else { 1e-5 };
        for r in 0..rows {
            let (x, y) = (&ae[r * cols..(r + 1) * cols], &be[r * cols..(r + 1) * cols]);
            let (kl, rev) = (reference_logits_kl(x, y), reference_logits_kl(y, x));
            let rev = if mask { f64::INFINITY } else { rev };
            for (k, want) in [kl, rev, kl + rev].into_iter().enumerate() {
                assert!(
                    close(shared[k][r], want, rel, 1e-15),
                    "{} {what} {:?} row {r}: {} vs {want}",
                    e.name(),
                    divs[k],
                    shared[k][r]
                );
            }
        }
    }
    // Probabilities: rows far from normalised (rescaled re-reads), with a pseudocount, and
    // with zeros in Q where P has mass (KL infinite, reverse finite).
    for (rows, cols) in [(40, 16), (3, 4097)] {
        let (p, mut q) = prob_pair(&mut rng, rows, cols, 0.5);
        for v in q.iter_mut().step_by(11) {
            *v = 0.0;
        }
        let p: Vec<f64> = p.iter().map(|x| 3.0 * x).collect();
        let (p32, q32) = (to_f32(&p), to_f32(&q));
        let norm = Request::new(Divergence::Kl).normalization(Normalization::Normalize);
        for (what, req, eps) in [
            ("normalize", norm, 0.0),
            ("pseudocount", norm.pseudocount(1e-3), 1e-3),
        ] {
            let shared = each(what, req, &p32, &q32, rows, cols);
            let (pe, qe): (Vec<f64>, Vec<f64>) = (
                p32.iter().map(|&x| x as f64 + eps).collect(),
                q32.iter().map(|&x| x as f64 + eps).collect(),
            );
            for r in 0..rows {
                let (x, y) = (&pe[r * cols..(r + 1) * cols], &qe[r * cols..(r + 1) * cols]);
                for (k, &div) in divs.iter().enumerate() {
                    let want = reference(div, Form::Probs, x, y, true);
                    assert!(
                        close(shared[k][r], want, 1e-5, 1e-12),
                        "{} {what} {div:?} row {r}: {} vs {want}",
                        e.name(),
                        shared[k][r]
                    );
                }
            }
        }
    }
    // NaN: propagated per row under `Propagate`, else the error a run alone reports.
    let (p, q, rows, cols) = nan_at_row_1_col_123();
    for input in [InputForm::Probabilities, InputForm::Logits] {
        let req = Request::new(Divergence::Kl).input(input);
        each(
            "NaN propagated",
            req.nan(NanPolicy::Propagate),
            &p,
            &q,
            rows,
            cols,
        );
        let shared = e
            .run_each(&req, &family, &p, &q, rows, cols)
            .map(|r| r.values);
        let alone = e.run(&req, &p, &q, rows, cols);
        match (shared, alone) {
            (Err(s), Err(a)) => assert_eq!(s.to_string(), a.to_string(), "{}", e.name()),
            other => panic!("{}: {input:?} NaN: {other:?}", e.name()),
        }
    }
}

/// A pass over logits gives each row's first argmax and log-sum-exp per side from the same
/// read (`PerRow::tops`): the argmax exactly (the lower column on ties, wherever the row is
/// split into blocks, pieces or GPU chunks), the log-sum-exp within 2e-6 of f64 (the f32
/// sums' relative error with margin; 1e-12 where the engine computes f64 in f64), with
/// masked columns, ties (−0 and +0 among them) and logits offset by +1e4.
pub fn logit_rows_give_their_tops(e: &TestEngine) {
    let mut rng = Rng::new(41);
    let lse = |v: &[f64]| {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let first_max = |v: &[f64]| {
        let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        v.iter().position(|&x| x == m).unwrap() as u64
    };
    for (rows, cols) in [(1, 1), (3, 17), (40, 16), (5, 1000), (3, 4097), (2, 70_001)] {
        let (mut a, mut b) = logit_pair(&mut rng, rows, cols, 1.0);
        for r in 0..rows {
            let row = r * cols;
            // Ties: the row's maximum twice, the first late in the row (another block, piece
            // or chunk on long rows); Q's maximum at column 0 and again at the end.
            if cols > 4 {
                let (i, j) = (cols / 2 + r % 3, cols - 1 - r % 3);
                a[row + i] = 50.0;
                a[row + j] = 50.0;
                b[row] = 40.0;
                b[row + cols - 1] = 40.0;
                a[row + 1] = f64::NEG_INFINITY;
                b[row + 2] = f64::NEG_INFINITY;
                if r < 2 {
                    // Rows 0 and 1: the maximum is −0 then +0, or +0 then −0: equal values,
                    // so the first.
                    for v in &mut a[row..row + cols] {
                        if v.is_finite() {
                            *v = -1.0 - v.abs();
                        }
                    }
                    let (first, second) = if r == 0 { (-0.0, 0.0) } else { (0.0, -0.0) };
                    a[row + i] = first;
                    a[row + j] = second;
                }
            }
        }
        for offset in [0.0, 1e4] {
            let shift = |v: &[f64]| v.iter().map(|x| x + offset).collect::<Vec<f64>>();
            let (a, b) = (shift(&a), shift(&b));
            let req = Request::new(Divergence::Kl).input(InputForm::Logits);
            let check = |what: &str, got: &kldiv::PerRow, (ae, be): (&[f64], &[f64]), tol: f64| {
                assert_eq!(
                    got.tops.len(),
                    rows,
                    "{} {what}: tops for every row",
                    e.name()
                );
                for r in 0..rows {
                    let (x, y) = (&ae[r * cols..(r + 1) * cols], &be[r * cols..(r + 1) * cols]);
                    let t = got.tops[r].unwrap_or_else(|| panic!("{} {what} row {r}", e.name()));
                    let what = format!("{} {what} {rows}x{cols} +{offset} row {r}", e.name());
                    assert_eq!((t.top_a, t.top_b), (first_max(x), first_max(y)), "{what}");
                    assert!(
                        close(t.lse_a, lse(x), 0.0, tol),
                        "{what}: {} vs {}",
                        t.lse_a,
                        lse(x)
                    );
                    assert!(
                        close(t.lse_b, lse(y), 0.0, tol),
                        "{what}: {} vs {}",
                        t.lse_b,
                        lse(y)
                    );
                }
            };
            let (af, bf) = (to_f32(&a), to_f32(&b));
            let got = e
                .run_each(&req, &[Divergence::Kl], &af, &bf, rows, cols)
                .unwrap();
            check("f32", &got, (&to_f64(&af), &to_f64(&bf)), 2e-6);
            let (ah, bh): (Vec<bf16>, Vec<bf16>) = (
                a.iter().map(|&x| bf16::from_f64(x)).collect(),
                b.iter().map(|&x| bf16::from_f64(x)).collect(),
            );
            let got = e
                .run_each(&req, &[Divergence::Kl], &ah, &bh, rows, cols)
                .unwrap();
            let wide = |v: &[bf16]| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
            check("bf16", &got, (&wide(&ah), &wide(&bh)), 2e-6);
            // The shared pass of several divergences gives the same tops.
            let both = [Divergence::ReverseKl, Divergence::Kl];
            let shared = e.run_each(&req, &both, &af, &bf, rows, cols).unwrap();
            check("shared pass", &shared, (&to_f64(&af), &to_f64(&bf)), 2e-6);
            // So does Jensen–Shannon's first pass, alone (its maxima and log-sums).
            let js = [Divergence::JensenShannon];
            let alone = e.run_each(&req, &js, &af, &bf, rows, cols).unwrap();
            check("js alone", &alone, (&to_f64(&af), &to_f64(&bf)), 2e-6);
            let got = e
                .run_each(&req, &[Divergence::Kl], &a, &b, rows, cols)
                .unwrap();
            let tol = if e.computes_f64() {
                1e-12 * (1.0 + offset)
            } else {
                2e-6
            };
            check("f64", &got, (&e.seen(&a), &e.seen(&b)), tol);
        }
    }
    // Probabilities give none.
    let (p, q) = prob_pair(&mut rng, 3, 17, 1.0);
    let got = e.run_each(
        &Request::new(Divergence::Kl),
        &[Divergence::Kl],
        &p,
        &q,
        3,
        17,
    );
    assert!(got.unwrap().tops.is_empty(), "{}", e.name());
}
