//! kldiv's CPU engine beside the fastest peers, in one run, on the same data:
//! rayon over SimSIMD's and NumKong's `kullbackleibler` (one call per row, every thread),
//! with each one's largest per-row relative error against Σ p·ln(p/q) in f64.
//!
//!     cargo run --release -p kldiv-peers -- [--shapes W1,W2,W3] [--dtype f32|bf16] [--reps 7]
//!
//! Rounds alternate between the engines (each round times each once), so a noisy host
//! weighs on all of them alike; the median of the rounds is printed, with the memory-read
//! limit measured just before each workload (`CpuEngine::read_limit`, as `kldiv bench`).

use kldiv::{workloads, CpuEngine, Divergence, InputForm, Request};
use rayon::prelude::*;
use std::time::Instant;

struct Args {
    shapes: Vec<String>,
    bf16: bool,
    reps: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        shapes: vec!["W1".into(), "W2".into(), "W3".into()],
        bf16: false,
        reps: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--shapes" => a.shapes = value()?.split(',').map(str::to_owned).collect(),
            "--dtype" => {
                a.bf16 = match value()?.as_str() {
                    "f32" => false,
                    "bf16" => true,
                    d => return Err(format!("--dtype {d}: f32 or bf16")),
                }
            }
            "--reps" => a.reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

/// One engine's per-row KL of the whole matrix.
type Engine<'a> = Box<dyn Fn() -> Vec<f64> + 'a>;

fn main() {
    let a = args().unwrap_or_else(|e| {
        eprintln!("kldiv-peers: {e}");
        std::process::exit(2)
    });
    let cpu = CpuEngine::new();
    println!(
        "threads {} (kldiv {}), SIMD {}, dtype {}, median of {} alternating rounds",
        rayon::current_num_threads(),
        cpu.threads(),
        cpu.simd_name(),
        if a.bf16 { "bf16" } else { "f32" },
        a.reps
    );
    for name in &a.shapes {
        let Some(w) = workloads::ALL.iter().find(|w| w.name == name.as_str()) else {
            eprintln!("kldiv-peers: no workload {name}");
            std::process::exit(2)
        };
        if w.input != InputForm::Probabilities {
            eprintln!("kldiv-peers: {name}: the peers take probabilities only");
            continue;
        }
        let (p, q) = workloads::generate(w, 1);
        let (rows, cols) = (w.rows, w.cols);
        // The values every engine reads (bf16 rounded once), and the f64 reference of them.
        let (pb, qb): (Vec<kldiv::bf16>, Vec<kldiv::bf16>) = (
            p.iter().map(|&x| kldiv::bf16::from_f32(x)).collect(),
            q.iter().map(|&x| kldiv::bf16::from_f32(x)).collect(),
        );
        let (pw, qw): (Vec<f32>, Vec<f32>) = if a.bf16 {
            (
                pb.iter().map(|x| x.to_f32()).collect(),
                qb.iter().map(|x| x.to_f32()).collect(),
            )
        } else {
            (p, q)
        };
        let reference: Vec<f64> = pw
            .par_chunks(cols)
            .zip(qw.par_chunks(cols))
            .map(|(p, q)| literal_kl(p, q))
            .collect();
        let req = Request::new(Divergence::Kl);
        // Each peer reads the same values in its own bf16 type (the same bits).
        let bits = |v: &[kldiv::bf16]| v.iter().map(|x| x.to_bits()).collect::<Vec<u16>>();
        let (ps, qs) = if a.bf16 {
            (bits(&pb), bits(&qb))
        } else {
            (vec![], vec![])
        };
        let ss: [Vec<simsimd::bf16>; 2] =
            [&ps, &qs].map(|v| v.iter().map(|&b| simsimd::bf16(b)).collect());
        let nk: [Vec<numkong::bf16>; 2] =
            [&ps, &qs].map(|v| v.iter().map(|&b| numkong::bf16(b)).collect());
        let engines = if a.bf16 {
            engines(
                &cpu,
                &req,
                (&pb, &qb),
                (&ss[0], &ss[1]),
                (&nk[0], &nk[1]),
                (rows, cols),
            )
        } else {
            engines(&cpu, &req, (&pw, &qw), (&pw, &qw), (&pw, &qw), (rows, cols))
        };
        let elem = if a.bf16 { 2 } else { 4 };
        let limit = cpu
            .read_limit((rows * cols * 4).clamp(256 << 20, 1 << 30), 3)
            .best_gbs;
        let mut times = vec![vec![]; engines.len()];
        let mut errors = vec![0f64; engines.len()];
        for round in 0..a.reps {
            for (k, (_, run)) in engines.iter().enumerate() {
                let t = Instant::now();
                let v = std::hint::black_box(run());
                times[k].push(t.elapsed().as_secs_f64());
                if round == 0 {
                    errors[k] = max_relative_error(&v, &reference);
                }
            }
        }
        println!(
            "{name} {rows}×{cols}: read limit {limit:.1} GB/s ({} bytes per element pair); \
             errors over the {} rows with Σ p·ln(p/q) > 0",
            2 * elem,
            rows - non_positive(&reference)
        );
        let kldiv_t = median(&times[0]);
        for (k, (label, _)) in engines.iter().enumerate() {
            let t = median(&times[k]);
            let gelem = (rows * cols) as f64 / t / 1e9;
            let gbs = gelem * (2 * elem) as f64;
            println!(
                "  {label:16} {gelem:6.3} Gelem/s {gbs:6.1} GB/s ({:3.0}% of limit)  \
                 kldiv ÷ this {:5.2}×  max row rel. error {:.1e}",
                100.0 * gbs / limit,
                t / kldiv_t,
                errors[k]
            );
        }
    }
}

/// kldiv's engine and rayon over each peer, on `k` (kldiv's element type), `ss` (SimSIMD's)
/// and `nk` (NumKong's): the same values in each one's type.
fn engines<'a, K: kldiv::Element, A, B>(
    cpu: &'a CpuEngine,
    req: &'a Request,
    k: (&'a [K], &'a [K]),
    ss: (&'a [A], &'a [A]),
    nk: (&'a [B], &'a [B]),
    (rows, cols): (usize, usize),
) -> Vec<(&'static str, Engine<'a>)>
where
    A: simsimd::ProbabilitySimilarity + Sync,
    B: numkong::KullbackLeibler + Sync,
    B::Output: Into<f64>,
{
    vec![
        (
            "kldiv cpu",
            Box::new(move || kldiv_rows(cpu.per_row(req, k.0, k.1, rows, cols))),
        ),
        (
            "rayon + SimSIMD",
            Box::new(move || per_row(ss.0, ss.1, cols, A::kullbackleibler)),
        ),
        (
            "rayon + NumKong",
            Box::new(move || {
                per_row(nk.0, nk.1, cols, |p, q| {
                    B::kullbackleibler(p, q).map(Into::into)
                })
            }),
        ),
    ]
}

/// kldiv's per-row values, or the end of the run with its error (the data is generated here,
/// so an error is a defect to report, not an input to skip).
fn kldiv_rows(r: kldiv::Result<Vec<f64>>) -> Vec<f64> {
    r.unwrap_or_else(|e| {
        eprintln!("kldiv-peers: kldiv failed: {e}");
        std::process::exit(1)
    })
}

/// `kl` of each row pair over rayon's threads (NaN where it declines the row).
fn per_row<T: Sync>(
    p: &[T],
    q: &[T],
    cols: usize,
    kl: impl Fn(&[T], &[T]) -> Option<f64> + Sync,
) -> Vec<f64> {
    p.par_chunks(cols)
        .zip(q.par_chunks(cols))
        .map(|(p, q)| kl(p, q).unwrap_or(f64::NAN))
        .collect()
}

/// Σ p·ln(p/q) in f64, with 0·ln(0/q) = 0.
fn literal_kl(p: &[f32], q: &[f32]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(&x, _)| x > 0.0)
        .map(|(&x, &y)| {
            let (x, y) = (x as f64, y as f64);
            x * (x / y).ln()
        })
        .sum()
}

/// The largest |got − want| / want over rows whose reference is positive. Rows of W1–W3
/// rounded to bf16 are no longer normalised, and Σ p·ln(p/q) can be ≤ 0 for a few of them;
/// kldiv clamps those at 0 (its documented rule for rows within the sum tolerance), the
/// peers do not: they are left out (and counted, see [`non_positive`]).
fn max_relative_error(got: &[f64], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .filter(|(_, &w)| w > 0.0)
        .map(|(g, w)| {
            let e = (g - w).abs() / w;
            if e.is_nan() {
                f64::INFINITY
            } else {
                e
            }
        })
        .fold(0.0, f64::max)
}

/// Rows whose f64 reference is ≤ 0.
fn non_positive(want: &[f64]) -> usize {
    want.iter().filter(|&&w| w <= 0.0).count()
}

fn median(t: &[f64]) -> f64 {
    let mut t = t.to_vec();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}
