//! Signal masking around thread creation.
//!
//! ONNX Runtime starts worker threads when an environment or session is
//! created.  New threads inherit the creating thread's signal mask, so blocking
//! every signal for the duration guarantees that signals meant for the host
//! process (Postgres' SIGINT, SIGTERM, SIGUSR1 latch wakeups, ...) are always
//! delivered to the thread that installed the handlers, never to a worker.

/// Runs `f` with all blockable signals blocked in the calling thread, then
/// restores the previous mask, also when `f` panics.
pub fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(libc::sigset_t);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restoring a mask obtained from pthread_sigmask.
            unsafe {
                libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
            }
        }
    }
    // SAFETY: plain libc calls on stack-allocated, initialised sigsets.
    let _restore = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        Restore(old)
    };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(sig: libc::c_int) -> bool {
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, sig) == 1
        }
    }

    #[test]
    fn blocks_inside_and_restores_after() {
        assert!(!blocked(libc::SIGINT));
        let (inside, in_thread) = with_signals_blocked(|| {
            let t = std::thread::spawn(|| blocked(libc::SIGINT)).join().unwrap();
            (blocked(libc::SIGINT), t)
        });
        assert!(inside, "SIGINT blocked inside");
        assert!(in_thread, "threads started inside inherit the mask");
        assert!(!blocked(libc::SIGINT), "mask restored");
    }
}
