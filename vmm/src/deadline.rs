//! Per-call wall-clock deadlines for a vCPU that may never exit on its own (an endless loop).
//!
//! Each thread that runs vCPUs owns one POSIX timer that sends it a signal. The handler sets
//! `immediate_exit` in the running vCPU's `kvm_run`, so KVM_RUN returns EINTR even if the
//! signal lands just before the thread re-enters the guest. The timer repeats every 10 ms
//! after the deadline, so a kick can never be lost.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    /// `&mut kvm_run.immediate_exit` of the vCPU this thread is running, or null.
    static KICK_TARGET: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
    static TIMER: Cell<Option<libc::timer_t>> = const { Cell::new(None) };
}

fn kick_signal() -> i32 {
    libc::SIGRTMIN() + 3
}

extern "C" fn on_kick(_: libc::c_int) {
    let target = KICK_TARGET.with(Cell::get);
    if !target.is_null() {
        // SAFETY: the pointer was set by `Deadline::arm` on this thread to the immediate_exit
        // byte of a kvm_run mapping that stays alive until `Deadline` is dropped, which also
        // clears the pointer; a volatile byte store is async-signal-safe.
        unsafe { target.write_volatile(1) };
    }
}

fn install_handler() -> std::io::Result<()> {
    static INSTALLED: std::sync::OnceLock<Result<(), i32>> = std::sync::OnceLock::new();
    let r = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; we fill in the handler and flags. SA_RESTART
        // keeps a late kick from failing the thread's other syscalls (KVM_RUN still returns
        // EINTR, which is what we want).
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_kick as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: installs a handler that only does an async-signal-safe store.
        let rc = unsafe { libc::sigaction(kick_signal(), &sa, std::ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    r.map_err(std::io::Error::from_raw_os_error)
}

fn thread_timer() -> std::io::Result<libc::timer_t> {
    if let Some(t) = TIMER.with(Cell::get) {
        return Ok(t);
    }
    install_handler()?;
    // SAFETY: zeroed sigevent is valid; we target this thread with our kick signal.
    let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
    sev.sigev_notify = libc::SIGEV_THREAD_ID;
    sev.sigev_signo = kick_signal();
    // SAFETY: gettid has no preconditions.
    sev.sigev_notify_thread_id = unsafe { libc::gettid() };
    let mut timer: libc::timer_t = std::ptr::null_mut();
    // SAFETY: valid sigevent and out-pointer; the result is checked.
    if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    TIMER.with(|t| t.set(Some(timer)));
    Ok(timer)
}

fn set_timer(timer: libc::timer_t, first: Duration, every: Duration) {
    let ts = |d: Duration| libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 };
    let spec = libc::itimerspec { it_value: ts(first), it_interval: ts(every) };
    // SAFETY: `timer` belongs to this thread; a valid itimerspec. Errors cannot occur for a
    // valid timer and spec.
    unsafe { libc::timer_settime(timer, 0, &spec, std::ptr::null_mut()) };
}

/// An armed deadline; dropping it disarms the timer and forgets the vCPU.
pub struct Deadline {
    timer: libc::timer_t,
}

impl Deadline {
    /// Arms a kick of `immediate_exit` after `timeout`.
    ///
    /// # Safety
    /// `immediate_exit` must point into a live `kvm_run` mapping that outlives the returned
    /// `Deadline`, and the `Deadline` must be dropped on this thread.
    pub unsafe fn arm(immediate_exit: *mut u8, timeout: Duration) -> std::io::Result<Deadline> {
        let timer = thread_timer()?;
        KICK_TARGET.with(|k| k.set(immediate_exit));
        set_timer(timer, timeout.max(Duration::from_nanos(1)), Duration::from_millis(10));
        Ok(Deadline { timer })
    }
}

impl Deadline {
    /// Moves the next kick to `after` from now (the scheduler's time slice, a thread's
    /// timeout or an alarm, whichever comes first, and never later than the deadline),
    /// repeating every 10 ms after it as before.
    pub fn kick_in(&self, after: Duration) {
        set_timer(self.timer, after.max(Duration::from_nanos(1)), Duration::from_millis(10));
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        set_timer(self.timer, Duration::ZERO, Duration::ZERO);
        KICK_TARGET.with(|k| k.set(std::ptr::null_mut()));
    }
}
