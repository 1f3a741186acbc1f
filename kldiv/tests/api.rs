//! The library's array entry points: reductions, units, memory layouts, shape checks.
//! (Per-row semantics on every engine: `every_engine.rs`.)

mod common;
use kldiv::{Divergence, Error, Reduction, Request, Unit};

#[test]
fn shapes_are_checked_on_views() {
    let req = Request::new(Divergence::Kl);
    let p = ndarray::Array2::<f32>::from_elem((2, 3), 1.0 / 3.0);
    let q = ndarray::Array2::<f32>::from_elem((3, 2), 0.5);
    assert!(matches!(
        kldiv::compute(&req, p.view(), q.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let s = kldiv::scheduler::Scheduler::with_mode(kldiv::scheduler::DeviceMode::Cpu);
    assert!(matches!(
        s.compute(&req, p.view(), q.view()),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn reductions_and_units() {
    let mut rng = common::Rng::new(13);
    let (p, q) = common::prob_pair(&mut rng, 10, 50, 0.3);
    let (p, q) = (common::to_f32(&p), common::to_f32(&q));
    let per_row = kldiv::compute_slices(&Request::new(Divergence::Kl), &p, &q, 10, 50).unwrap();
    let rows = per_row.per_row().unwrap().to_vec();
    let sum: f64 = rows.iter().sum();
    let get = |r: Request| {
        kldiv::compute_slices(&r, &p, &q, 10, 50)
            .unwrap()
            .scalar()
            .unwrap()
    };
    assert!((get(Request::new(Divergence::Kl).reduction(Reduction::Sum)) - sum).abs() < 1e-12);
    assert!(
        (get(Request::new(Divergence::Kl).reduction(Reduction::MeanOverRows)) - sum / 10.0).abs()
            < 1e-12
    );
    let bits = kldiv::compute_slices(
        &Request::new(Divergence::Kl).unit(Unit::Bits),
        &p,
        &q,
        10,
        50,
    )
    .unwrap();
    for (b, n) in bits.per_row().unwrap().iter().zip(&rows) {
        assert!((b * std::f64::consts::LN_2 - n).abs() < 1e-12);
    }
}

#[test]
fn non_contiguous_views_are_accepted() {
    let mut rng = common::Rng::new(14);
    let (p, q) = common::prob_pair(&mut rng, 6, 40, 0.3);
    let (p, q) = (common::to_f32(&p), common::to_f32(&q));
    let pa = ndarray::Array2::from_shape_vec((6, 40), p.clone()).unwrap();
    let qa = ndarray::Array2::from_shape_vec((6, 40), q.clone()).unwrap();
    // Fortran-order copies of the same data: a transposed view of the transpose.
    let pt = pa.t().to_owned();
    let qt = qa.t().to_owned();
    let req = Request::new(Divergence::Kl);
    let a = kldiv::compute(&req, pa.view(), qa.view()).unwrap();
    let b = kldiv::compute(&req, pt.t(), qt.t()).unwrap();
    assert_eq!(a, b);
    // Every other row: a strided view.
    let c = kldiv::compute(
        &req,
        pa.slice(ndarray::s![..;2, ..]),
        qa.slice(ndarray::s![..;2, ..]),
    )
    .unwrap();
    let a = a.per_row().unwrap();
    assert_eq!(c.per_row().unwrap(), &[a[0], a[2], a[4]]);
}
