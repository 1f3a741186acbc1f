//! Criterion benches of the CPU engine on WORKLOADS.md's W1–W4 (rows scaled down by
//! `KLDIV_BENCH_SCALE`, default 8, to keep a run short on 2 cores). Throughput is reported in
//! elements of one input matrix per second. `kldiv bench` prints the same workloads with
//! GB/s and the fraction of the machine's memory-read limit.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kldiv::workloads;
use kldiv::{CpuEngine, Divergence, Request, SimdLevel};

fn scale() -> usize {
    std::env::var("KLDIV_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

fn cpu(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10);
    for w in workloads::ALL {
        let w = w.scaled(scale());
        let (p, q) = workloads::generate(&w, 42);
        let req = Request::new(Divergence::Kl).input(w.input);
        g.throughput(Throughput::Elements(w.elements() as u64));
        for (name, level) in [("simd", SimdLevel::Auto), ("scalar", SimdLevel::Scalar)] {
            let e = CpuEngine::with_level(level).expect("level exists");
            g.bench_with_input(BenchmarkId::new(name, w.name), &w, |b, w| {
                b.iter(|| e.per_row(&req, &p, &q, w.rows, w.cols).expect("computes"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, cpu);
criterion_main!(benches);
