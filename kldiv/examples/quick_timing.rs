use kldiv::*;
use std::time::Instant;
fn main() {
    let only = std::env::var("W").ok();
    // DIV=js (or any of the CLI's names) times that divergence; KL otherwise.
    let div = std::env::var("DIV")
        .ok()
        .and_then(|d| Divergence::from_name(&d))
        .unwrap_or(Divergence::Kl);
    for w in workloads::ALL {
        if only.as_deref().is_some_and(|o| o != w.name) {
            continue;
        }
        let w = w.scaled(
            std::env::var("SCALE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(4),
        );
        let (p, q) = workloads::generate(
            &w,
            std::env::var("SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1),
        );
        if std::env::var("BF16").is_ok() {
            let pb: Vec<bf16> = p.iter().map(|&x| bf16::from_f32(x)).collect();
            let qb: Vec<bf16> = q.iter().map(|&x| bf16::from_f32(x)).collect();
            let req = Request::new(div).input(w.input);
            let e = CpuEngine::new();
            let mut best = f64::MAX;
            let reps = std::env::var("REPS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(5);
            for _ in 0..reps {
                let t = Instant::now();
                std::hint::black_box(e.per_row(&req, &pb, &qb, w.rows, w.cols).unwrap());
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "{} bf16 {:.3} Gelem/s",
                w.name,
                w.elements() as f64 / best / 1e9
            );
            continue;
        }
        let req = Request::new(div).input(w.input);
        let levels = if std::env::var("ONLY_AUTO").is_ok() {
            vec![SimdLevel::Auto]
        } else {
            vec![SimdLevel::Auto, SimdLevel::Avx2, SimdLevel::Scalar]
        };
        for level in levels {
            let e = CpuEngine::with_level(level).unwrap();
            let mut best = f64::MAX;
            for _ in 0..std::env::var("REPS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(3)
            {
                let t = Instant::now();
                let r = e.per_row(&req, &p, &q, w.rows, w.cols).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
                if std::env::var("ALL").is_ok() {
                    print!("{:.2} ", t.elapsed().as_secs_f64() * 1e3);
                }
                std::hint::black_box(r);
            }
            println!(
                "{} {:?} {:.3} Gelem/s",
                w.name,
                level,
                w.elements() as f64 / best / 1e9
            );
        }
    }
}
