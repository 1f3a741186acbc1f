//! Shapes that once overflowed a rayon worker's 2 MiB stack in debug builds (the SIMD
//! kernels' frames are large without optimisation). CI runs this file in the debug profile
//! (`cargo test --no-default-features --test debug_build`); it also runs in release.

mod common;
use common::*;
use kldiv::{Divergence, InputForm, Request};
use ndarray::ArrayView2;

fn run(input: InputForm, rows: usize, cols: usize) {
    let mut rng = Rng::new(rows as u64 * 31 + cols as u64);
    let (p, q) = match input {
        InputForm::Probabilities => prob_pair(&mut rng, rows, cols, 0.3),
        _ => logit_pair(&mut rng, rows, cols, 0.3),
    };
    let (p, q) = (to_f32(&p), to_f32(&q));
    let pv = ArrayView2::from_shape((rows, cols), &p).unwrap();
    let qv = ArrayView2::from_shape((rows, cols), &q).unwrap();
    for div in [Divergence::Kl, Divergence::JensenShannon] {
        let req = Request::new(div)
            .input(input)
            .normalization(kldiv::Normalization::Normalize);
        let out = kldiv::compute(&req, pv, qv).unwrap();
        assert_eq!(out.per_row().unwrap().len(), rows);
    }
}

#[test]
fn multi_row_inputs_run_in_debug_builds() {
    run(InputForm::Probabilities, 1000, 512);
    run(InputForm::Probabilities, 32, 16);
    run(InputForm::Logits, 2, 128);
    run(InputForm::Logits, 8, 4096);
    run(InputForm::Logits, 1000, 512);
    run(InputForm::Probabilities, 3, 100_000);
}
