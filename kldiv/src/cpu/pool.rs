//! kldiv's worker threads: its own rayon pool, not the global one.
//!
//! - Stacks are sized for the SIMD kernels in unoptimised builds: a user's `cargo test`
//!   (debug profile, kernels compiled in the user's crate) overflowed rayon's default 2 MiB.
//! - If the threads cannot be created (a memory limit), work runs on the calling thread
//!   instead of panicking, as rayon's global pool does when it cannot start.
//!
//! Every parallel loop of the CPU engine goes through [`map`] or [`chunks_mut`].

use std::cell::Cell;
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

/// Threads work is spread over (`RAYON_NUM_THREADS` is honoured); 1 inside [`serial`].
pub fn threads() -> usize {
    if in_serial() {
        return 1;
    }
    pool().map_or(1, |p| p.current_num_threads())
}

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

fn in_serial() -> bool {
    SERIAL.with(Cell::get)
}

/// Runs `f` with every parallel loop it starts ([`map`], [`chunks_mut`]) done on the
/// calling thread: for a task that is already one of many in parallel and whose passes
/// should find its rows in this core's cache (rayon would let idle threads take pieces).
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SERIAL.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(SERIAL.with(|c| c.replace(true)));
    f()
}

/// `f(0), …, f(n − 1)` in order, computed in parallel on kldiv's threads (on the calling
/// thread where they could not be started). Public as `kldiv::cpu::par_map` for callers
/// that must not touch rayon's global pool.
pub fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    use rayon::prelude::*;
    match pool().filter(|_| !in_serial()) {
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
    match pool().filter(|_| !in_serial()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `serial` every loop runs on the calling thread and the engine sees one
    /// thread; outside (and after a panic inside) the pool is used again.
    #[test]
    fn serial_keeps_loops_on_the_calling_thread() {
        let me = std::thread::current().id();
        let on = |n| map(n, |_| std::thread::current().id());
        serial(|| {
            assert_eq!(threads(), 1);
            assert!(on(64).iter().all(|&t| t == me));
            let mut data = vec![0u8; 64];
            let ids = chunks_mut(&mut data, 1, |_, _| std::thread::current().id());
            assert!(ids.iter().all(|&t| t == me));
        });
        let _ = std::panic::catch_unwind(|| serial(|| panic!("inside")));
        assert!(!in_serial(), "restored after a panic");
        assert_eq!(threads(), pool().map_or(1, |p| p.current_num_threads()));
    }
}
