//! Inputs are memory-mapped. If another process truncates a file while kldiv reads it, the
//! kernel raises SIGBUS on the next access to the missing pages; instead of dying with
//! "Bus error", the command line names the file and exits with status 2.
//!
//! The handler only reads a fixed table of (address range, message) written before any
//! mapping is read, and calls `write(2)` and `_exit(2)`: both async-signal-safe.

#[cfg(unix)]
mod imp {
    use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

    const SLOTS: usize = 8;
    static START: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static MSG: [AtomicPtr<u8>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];
    static MSG_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static USED: AtomicUsize = AtomicUsize::new(0);
    static GENERIC: &[u8] =
        b"kldiv: an input file was truncated while it was being read (bus error)\n";

    extern "C" fn on_sigbus(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        let mut msg: (*const u8, usize) = (GENERIC.as_ptr(), GENERIC.len());
        for i in 0..USED.load(Ordering::Acquire).min(SLOTS) {
            let s = START[i].load(Ordering::Acquire);
            let l = LEN[i].load(Ordering::Acquire);
            if addr >= s && addr < s + l {
                msg = (
                    MSG[i].load(Ordering::Acquire),
                    MSG_LEN[i].load(Ordering::Acquire),
                );
            }
        }
        // SAFETY: write(2) and _exit(2) are async-signal-safe; the message is 'static.
        unsafe {
            libc::write(2, msg.0.cast(), msg.1);
            libc::_exit(2);
        }
    }

    /// Report SIGBUS inside `[start, start + len)` as a truncation of `label`.
    pub fn watch(start: usize, len: usize, label: &str) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            // SAFETY: installing a handler with a zeroed, then filled, sigaction.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_sigbus as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
            }
        });
        let i = USED.load(Ordering::Acquire);
        if i >= SLOTS {
            return;
        }
        let text = format!(
            "kldiv: {label}: the file was truncated or replaced while it was being read; \
             inputs must not change during a run\n"
        );
        let leaked: &'static mut [u8] = Box::leak(text.into_bytes().into_boxed_slice());
        MSG_LEN[i].store(leaked.len(), Ordering::Release);
        MSG[i].store(leaked.as_mut_ptr(), Ordering::Release);
        START[i].store(start, Ordering::Release);
        LEN[i].store(len, Ordering::Release);
        USED.store(i + 1, Ordering::Release);
    }
}

#[cfg(unix)]
pub use imp::watch;

#[cfg(not(unix))]
pub fn watch(_: usize, _: usize, _: &str) {}
