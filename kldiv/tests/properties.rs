//! Mathematical properties on random inputs (proptest), through the public API.

use kldiv::{Divergence, InputForm, Normalization, Request};
use proptest::prelude::*;

/// Rows of weights in [0, 1] with some exact zeros, normalised by the engine.
fn weights(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(prop_oneof![1 => Just(0.0f32), 6 => 1e-6f32..1.0], len)
        .prop_filter("some mass", |v| v.iter().any(|&x| x > 0.0))
}

fn pair() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, usize)> {
    (1usize..300).prop_flat_map(|n| (weights(n), weights(n), Just(n)))
}

fn one(div: Divergence, p: &[f32], q: &[f32], n: usize) -> f64 {
    let req = Request::new(div).normalization(Normalization::Normalize);
    kldiv::compute_slices(&req, p, q, 1, n)
        .unwrap()
        .per_row()
        .unwrap()[0]
}

/// Q with no zeros where P has mass, so every KL is finite.
fn covering(p: &[f32], q: &[f32]) -> Vec<f32> {
    p.iter()
        .zip(q)
        .map(|(&a, &b)| if a > 0.0 && b == 0.0 { 0.5 } else { b })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kl_is_non_negative((p, q, n) in pair()) {
        for div in [Divergence::Kl, Divergence::ReverseKl, Divergence::SymmetricKl, Divergence::JensenShannon] {
            let v = one(div, &p, &q, n);
            prop_assert!(v >= 0.0, "{:?} = {}", div, v);
        }
    }

    #[test]
    fn divergence_of_a_row_with_itself_is_zero((p, _q, n) in pair()) {
        for div in [Divergence::Kl, Divergence::ReverseKl, Divergence::SymmetricKl, Divergence::JensenShannon] {
            prop_assert_eq!(one(div, &p, &p, n), 0.0);
        }
    }

    #[test]
    fn reverse_kl_swaps_arguments((p, q, n) in pair()) {
        let a = one(Divergence::ReverseKl, &p, &q, n);
        let b = one(Divergence::Kl, &q, &p, n);
        prop_assert!(a == b || (a - b).abs() <= 1e-6 * a.abs().max(1e-9), "{} vs {}", a, b);
    }

    #[test]
    fn js_is_symmetric_and_at_most_ln2((p, q, n) in pair()) {
        let a = one(Divergence::JensenShannon, &p, &q, n);
        let b = one(Divergence::JensenShannon, &q, &p, n);
        prop_assert!((a - b).abs() <= 1e-6 * a.max(1e-9), "{} vs {}", a, b);
        prop_assert!(a <= std::f64::consts::LN_2);
    }

    #[test]
    fn cross_entropy_is_entropy_plus_kl((p, q, n) in pair()) {
        let q = covering(&p, &q);
        let h = one(Divergence::Entropy, &p, &p, n);
        let kl = one(Divergence::Kl, &p, &q, n);
        let ce = one(Divergence::CrossEntropy, &p, &q, n);
        prop_assert!((ce - (h + kl)).abs() <= 1e-5 * ce.abs() + 1e-6, "{} vs {} + {}", ce, h, kl);
    }

    #[test]
    fn symmetric_kl_is_the_sum_of_both_directions((p, q, n) in pair()) {
        let q = covering(&p, &q);
        let p = covering(&q, &p);
        let s = one(Divergence::SymmetricKl, &p, &q, n);
        let f = one(Divergence::Kl, &p, &q, n) + one(Divergence::Kl, &q, &p, n);
        // Normalising in one pass leaves ~1e-7 absolute noise (see cpu_accuracy.rs).
        prop_assert!((s - f).abs() <= 1e-5 * s + 1e-6, "{} vs {}", s, f);
    }

    #[test]
    fn logits_are_invariant_to_a_constant_per_row(
        a in prop::collection::vec(-20.0f32..20.0, 1..400),
        shift_a in -50.0f32..50.0,
        shift_b in -50.0f32..50.0,
        noise in 0.0f32..2.0,
    ) {
        let n = a.len();
        let b: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + noise * ((i * 7919 % 13) as f32 / 13.0 - 0.5)).collect();
        let a2: Vec<f32> = a.iter().map(|x| x + shift_a).collect();
        let b2: Vec<f32> = b.iter().map(|x| x + shift_b).collect();
        for div in [Divergence::Kl, Divergence::ReverseKl, Divergence::SymmetricKl, Divergence::JensenShannon, Divergence::CrossEntropy] {
            let req = Request::new(div).input(InputForm::Logits);
            let x = kldiv::compute_slices(&req, &a, &b, 1, n).unwrap().per_row().unwrap()[0];
            let y = kldiv::compute_slices(&req, &a2, &b2, 1, n).unwrap().per_row().unwrap()[0];
            // Shifting by up to 50 rounds each f32 logit by up to 4e-6: that, not the
            // algorithm, bounds the agreement.
            prop_assert!((x - y).abs() <= 1e-4 * x.abs() + 2e-5, "{:?}: {} vs {}", div, x, y);
        }
    }
}

#[test]
fn kl_is_asymmetric() {
    let p = [0.9f32, 0.1];
    let q = [0.5f32, 0.5];
    let a = one(Divergence::Kl, &p, &q, 2);
    let b = one(Divergence::Kl, &q, &p, 2);
    assert!((a - b).abs() > 0.1, "{a} vs {b}");
}
