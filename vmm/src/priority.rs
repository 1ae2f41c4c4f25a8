//! The pool's background threads (fillers and reaper) step aside for calls while their work
//! can wait.
//!
//! A filler topping up a list that still holds a ready VM, or a reaper with a short queue, is
//! not on any call's path; yet at the normal priority it shares a core with the call and with
//! the client on a small machine, and a call that wakes beside it waits for its time slice. So
//! such a thread runs at a higher nice value ([`DEFAULT_BACKGROUND_NICE`]) and returns to the
//! normal one when its work is urgent: a list is empty, a call waits for the VM being made
//! ([`BackgroundThreads::hurry`]), or the reaper's queue grows. Measured on 2 cores (kvm-pvm,
//! 2026-12-04, docs/vmm.md): serial CPython calls 2 ms apart had their p99 go from 1.49 to
//! 0.90 ms (medians of 8 alternating rounds) and wrk throughput did not move.
//!
//! Returning to the normal priority lowers the nice value, which Linux allows only with
//! CAP_SYS_NICE or an RLIMIT_NICE of at least 20. Without either, the threads never leave the
//! normal priority, since they could not come back ([`can_return_to_normal`]).
//! Linux keeps a nice value per thread, which is what `setpriority(PRIO_PROCESS, tid)` sets.

use std::sync::{Mutex, OnceLock};

/// The nice value of the pool's threads while their work can wait (`snapcall serve --pool-nice`).
pub const DEFAULT_BACKGROUND_NICE: i32 = 10;

/// The normal priority, which urgent work runs at.
const NORMAL: i32 = 0;

/// The kernel's id of the calling thread.
fn this_thread() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Sets a thread's nice value; false if the kernel refused.
fn set_nice(thread: libc::pid_t, nice: i32) -> bool {
    // SAFETY: setpriority with plain integers; an unknown or exited thread id is an error
    // (ESRCH), not undefined behaviour.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, nice) == 0 }
}

#[cfg(test)]
/// A thread's nice value, as the kernel reports it.
pub fn nice_of(thread: libc::pid_t) -> Option<i32> {
    // getpriority's result can be -1 legitimately: errno tells an error apart.
    // SAFETY: errno is this thread's; getpriority takes plain integers.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread as libc::id_t);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

/// Whether a thread of this process that raised its nice value may lower it back to the
/// normal one. Found out once, on a throwaway thread, so no thread of ours is left behind.
pub fn can_return_to_normal() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        std::thread::Builder::new()
            .name("snapcall-nice-probe".into())
            .spawn(|| {
                let me = this_thread();
                set_nice(me, DEFAULT_BACKGROUND_NICE) && set_nice(me, NORMAL)
            })
            .ok()
            .and_then(|probe| probe.join().ok())
            .unwrap_or(false)
    })
}

/// The background threads of one runtime, and the nice value they take while their work can
/// wait (0 when they stay at the normal priority).
#[derive(Debug)]
pub struct BackgroundThreads {
    nice: i32,
    /// The fillers' thread ids, for [`BackgroundThreads::hurry`].
    fillers: Mutex<Vec<libc::pid_t>>,
}

impl BackgroundThreads {
    /// `nice` as asked for (clamped to 0..=19), or 0 where the threads could not come back.
    pub fn new(nice: i32) -> BackgroundThreads {
        let nice = nice.clamp(NORMAL, 19);
        let nice = if nice != NORMAL && can_return_to_normal() { nice } else { NORMAL };
        BackgroundThreads { nice, fillers: Mutex::new(Vec::new()) }
    }

    /// The nice value in effect while work can wait.
    pub fn nice(&self) -> i32 {
        self.nice
    }

    /// Called by each filler thread once, as it starts.
    pub fn register_filler(&self) {
        self.fillers.lock().unwrap_or_else(|e| e.into_inner()).push(this_thread());
    }

    /// Sets the calling thread's priority for the work it is about to do.
    pub fn work(&self, urgent: bool) {
        if self.nice != NORMAL {
            set_nice(this_thread(), if urgent { NORMAL } else { self.nice });
        }
    }

    /// A call now waits for a VM a filler is making: the fillers go back to the normal
    /// priority (each sets its own again when it picks its next VM).
    pub fn hurry(&self) {
        if self.nice != NORMAL {
            for &filler in self.fillers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                set_nice(filler, NORMAL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_that_can_wait_runs_niced_and_urgent_work_does_not() {
        let threads = BackgroundThreads::new(7);
        if !can_return_to_normal() {
            assert_eq!(threads.nice(), 0, "a thread that could not come back never leaves");
            return;
        }
        assert_eq!(threads.nice(), 7);
        std::thread::scope(|s| {
            s.spawn(|| {
                threads.register_filler();
                let me = this_thread();
                threads.work(false);
                assert_eq!(nice_of(me), Some(7));
                threads.work(true);
                assert_eq!(nice_of(me), Some(0));
                threads.work(false);
                threads.hurry();
                assert_eq!(nice_of(me), Some(0), "hurry brings a registered filler back");
            });
        });
    }

    #[test]
    fn nice_values_are_clamped_and_zero_is_off() {
        assert_eq!(BackgroundThreads::new(0).nice(), 0);
        assert_eq!(BackgroundThreads::new(-5).nice(), 0, "never above the normal priority");
        if can_return_to_normal() {
            assert_eq!(BackgroundThreads::new(40).nice(), 19);
        }
        // Off: the thread's priority is left alone.
        std::thread::scope(|s| {
            s.spawn(|| {
                let off = BackgroundThreads::new(0);
                off.work(false);
                assert_eq!(nice_of(this_thread()), Some(0));
            });
        });
    }
}
