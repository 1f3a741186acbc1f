//! Criterion benches of the GPU engine on W1–W4 (rows scaled by `KLDIV_BENCH_SCALE`,
//! default 64: lavapipe runs at about one CPU thread's speed). "end_to_end" includes the
//! upload; "resident" reads inputs already in GPU buffers (kernel and readback only).
//! Skips when no adapter is present.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kldiv::gpu::GpuEngine;
use kldiv::workloads;
use kldiv::{Divergence, Request};

fn scale() -> usize {
    std::env::var("KLDIV_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn gpu(c: &mut Criterion) {
    let gpu = match GpuEngine::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("skipping GPU benches: {e}");
            return;
        }
    };
    let mut g = c.benchmark_group("gpu");
    g.sample_size(10);
    for w in workloads::ALL {
        let w = w.scaled(scale());
        let (p, q) = workloads::generate(&w, 42);
        let req = Request::new(Divergence::Kl).input(w.input);
        g.throughput(Throughput::Elements(w.elements() as u64));
        g.bench_with_input(BenchmarkId::new("end_to_end", w.name), &w, |b, w| {
            b.iter(|| gpu.per_row(&req, &p, &q, w.rows, w.cols).expect("computes"))
        });
        let (pb, qb) = (gpu.upload(&p), gpu.upload(&q));
        g.bench_with_input(BenchmarkId::new("resident", w.name), &w, |b, w| {
            b.iter(|| {
                gpu.per_row_resident::<f32>(&req, &pb, &qb, w.rows, w.cols)
                    .expect("computes")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, gpu);
criterion_main!(benches);
