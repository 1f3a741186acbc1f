//! How fast this machine can read two f32 streams: the ceiling the kernels are judged by.
//!
//! A single read loop understates it (the first version, Σ a·b auto-vectorised for the
//! baseline target, ran ~12% below what a peer's KL kernel achieved), so several loops run
//! with the engine's own SIMD level and threads, and the best one is the limit.

use super::{pool, CpuEngine};
use pulp::{Simd, WithSimd};
use std::time::Instant;

/// One way of reading both arrays through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadKernel {
    /// Σ a·b, four independent accumulators, in 256 KiB tasks.
    Dot,
    /// Σ a + Σ b (one add per element, no multiply), four accumulators each, 256 KiB tasks.
    Sum,
    /// Σ a + Σ b with one contiguous range per thread (the hardware prefetcher's best case).
    SumPerThread,
    /// Bitwise OR of every word: integer lanes, the cheapest ALU work per byte.
    Or,
}

impl ReadKernel {
    pub const ALL: [ReadKernel; 4] = [
        ReadKernel::Dot,
        ReadKernel::Sum,
        ReadKernel::SumPerThread,
        ReadKernel::Or,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReadKernel::Dot => "dot",
            ReadKernel::Sum => "sum",
            ReadKernel::SumPerThread => "sum-per-thread",
            ReadKernel::Or => "or",
        }
    }
}

/// The read limit measured now: each kernel's GB/s (both arrays' bytes per second, median
/// of `reps`) and the best of them.
#[derive(Debug, Clone)]
pub struct ReadLimit {
    pub per_kernel: Vec<(ReadKernel, f64)>,
    pub best_gbs: f64,
}

const TASK_FLOATS: usize = 1 << 16;

impl CpuEngine {
    /// Reads two arrays of `bytes_each` bytes with every [`ReadKernel`], `reps` times each.
    pub fn read_limit(&self, bytes_each: usize, reps: usize) -> ReadLimit {
        let n = (bytes_each / 4).max(TASK_FLOATS);
        // Distinct, non-zero contents so that no page is shared and no sum is trivial.
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        pool::chunks_mut(&mut a, TASK_FLOATS, |k, c| fill(c, k, 7));
        pool::chunks_mut(&mut b, TASK_FLOATS, |k, c| fill(c, k, 5));
        let mut per_kernel = vec![];
        for kernel in ReadKernel::ALL {
            let mut times = vec![];
            for _ in 0..reps.max(1) {
                let t = Instant::now();
                std::hint::black_box(self.read_once(kernel, &a, &b));
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let gbs = 2.0 * (n * 4) as f64 / times[times.len() / 2] / 1e9;
            per_kernel.push((kernel, gbs));
        }
        let best_gbs = per_kernel.iter().map(|&(_, g)| g).fold(0.0, f64::max);
        ReadLimit {
            per_kernel,
            best_gbs,
        }
    }

    fn read_once(&self, kernel: ReadKernel, a: &[f32], b: &[f32]) -> f32 {
        let task = match kernel {
            ReadKernel::SumPerThread => a.len().div_ceil(pool::threads()),
            _ => TASK_FLOATS * 4,
        };
        let tasks = a.len().div_ceil(task);
        pool::map(tasks, |k| {
            let r = k * task..((k + 1) * task).min(a.len());
            self.level.run(ReadTask {
                kernel,
                a: &a[r.clone()],
                b: &b[r],
            })
        })
        .iter()
        .sum()
    }
}

fn fill(c: &mut [f32], k: usize, m: usize) {
    for (i, x) in c.iter_mut().enumerate() {
        *x = ((k * TASK_FLOATS + i) % m + 1) as f32;
    }
}

struct ReadTask<'a> {
    kernel: ReadKernel,
    a: &'a [f32],
    b: &'a [f32],
}

impl WithSimd for ReadTask<'_> {
    type Output = f32;
    #[inline(always)]
    fn with_simd<S: Simd>(self, s: S) -> f32 {
        let (av, _) = S::as_simd_f32s(self.a);
        let (bv, _) = S::as_simd_f32s(self.b);
        let zero = s.splat_f32s(0.0);
        let mut acc = [zero; 4];
        let mut bits = [s.splat_u32s(0); 4];
        for (x4, y4) in av.chunks_exact(4).zip(bv.chunks_exact(4)) {
            for j in 0..4 {
                let (x, y) = (x4[j], y4[j]);
                match self.kernel {
                    ReadKernel::Dot => acc[j] = s.mul_add_e_f32s(x, y, acc[j]),
                    ReadKernel::Sum | ReadKernel::SumPerThread => {
                        acc[j] = s.add_f32s(acc[j], s.add_f32s(x, y))
                    }
                    ReadKernel::Or => {
                        let xy = s.or_u32s(s.transmute_u32s_f32s(x), s.transmute_u32s_f32s(y));
                        bits[j] = s.or_u32s(bits[j], xy);
                    }
                }
            }
        }
        let acc = s.add_f32s(s.add_f32s(acc[0], acc[1]), s.add_f32s(acc[2], acc[3]));
        let bits = s.or_u32s(s.or_u32s(bits[0], bits[1]), s.or_u32s(bits[2], bits[3]));
        let mut words = [0u32; 16];
        s.partial_store_u32s(&mut words, bits);
        let mut total = s.reduce_sum_f32s(acc) + words.iter().fold(0, |o, w| o | w) as f32;
        // The elements after the last group of four vectors.
        let done = av.len() / 4 * 4 * S::F32_LANES;
        for (&x, &y) in self.a[done..].iter().zip(&self.b[done..]) {
            total += match self.kernel {
                ReadKernel::Dot => x * y,
                ReadKernel::Sum | ReadKernel::SumPerThread => x + y,
                ReadKernel::Or => (x.to_bits() | y.to_bits()) as f32,
            };
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel reads the whole of both arrays: their checksums agree with a scalar one.
    #[test]
    fn each_read_kernel_reads_everything() {
        let e = CpuEngine::new();
        let n = TASK_FLOATS * 9 + 67;
        let a: Vec<f32> = (0..n).map(|i| (i % 3) as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 2) as f32).collect();
        let sum: f64 = a.iter().chain(&b).map(|&x| x as f64).sum();
        let dot: f64 = a.iter().zip(&b).map(|(&x, &y)| (x * y) as f64).sum();
        let got = |k| e.read_once(k, &a, &b) as f64;
        assert!((got(ReadKernel::Dot) - dot).abs() <= 1e-6 * dot);
        assert!((got(ReadKernel::Sum) - sum).abs() <= 1e-6 * sum);
        assert!((got(ReadKernel::SumPerThread) - sum).abs() <= 1e-6 * sum);
        assert!(got(ReadKernel::Or) > 0.0);
        let limit = e.read_limit(1 << 20, 1);
        assert_eq!(limit.per_kernel.len(), ReadKernel::ALL.len());
        assert!(limit.best_gbs > 0.0 && limit.best_gbs.is_finite());
    }
}
