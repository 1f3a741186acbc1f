//! kldiv's worker threads: its own rayon pool, not the global one.
//!
//! - Stacks are sized for the SIMD kernels in unoptimised builds: a user's `cargo test`
//!   (debug profile, kernels compiled in the user's crate) overflowed rayon's default 2 MiB.
//! - If the threads cannot be created (a memory limit), work runs on the calling thread
//!   instead of panicking, as rayon's global pool does when it cannot start.
//!
//! Every parallel loop of the CPU engine goes through [`map`] or [`chunks_mut`].

use std::sync::OnceLock;

/// Stack of each worker: the largest kernel frame of a debug build is ~1 MiB on AVX-512;
/// only the pages a thread touches are committed.
const STACK_BYTES: usize = 16 << 20;

fn pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("kldiv-{i}"))
            .stack_size(STACK_BYTES)
            .build()
            .ok()
    })
    .as_ref()
}

/// Threads work is spread over (`RAYON_NUM_THREADS` is honoured).
pub fn threads() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

/// `f(0), …, f(n − 1)` in order, computed in parallel on kldiv's threads (on the calling
/// thread where they could not be started). Public as `kldiv::cpu::par_map` for callers
/// that must not touch rayon's global pool.
pub fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    match pool() {
        Some(p) => p.install(|| (0..n).into_par_iter().map(&f).collect()),
        None => (0..n).map(f).collect(),
    }
}

/// `f(k, chunk)` for each `chunk`-sized piece of `data` (the last may be shorter), in
/// parallel; the results in order.
pub fn chunks_mut<T: Send, R: Send>(
    data: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> Vec<R> {
    use rayon::prelude::*;
    let chunk = chunk.max(1);
    match pool() {
        Some(p) => p.install(|| {
            data.par_chunks_mut(chunk)
                .enumerate()
                .map(|(k, c)| f(k, c))
                .collect()
        }),
        None => data
            .chunks_mut(chunk)
            .enumerate()
            .map(|(k, c)| f(k, c))
            .collect(),
    }
}
