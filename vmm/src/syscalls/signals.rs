//! Signals: dispositions, masks, sending (kill, tgkill, alarm), waiting for them (pause,
//! rt_sigsuspend, rt_sigtimedwait) and ITIMER_REAL. A signal is made pending here; the run
//! loop delivers it (`signal_delivery.rs`) when the thread next returns to the program.

use super::*;

pub(super) fn sys_rt_sigaction(
    p: &mut Process,
    mem: &mut GuestMemory,
    sig: u64,
    act: UserAddr,
    old: UserAddr,
    size: u64,
) -> SysResult {
    if !(1..=64).contains(&sig) || size != 8 {
        return Err(EINVAL);
    }
    let slot = (sig - 1) as usize;
    let current = p.sigactions[slot];
    if !act.is_null() {
        if sig == 9 || sig == 19 {
            return Err(EINVAL);
        }
        let a: KernelSigaction = mem.read_user_obj(act)?;
        p.sigactions[slot] =
            SigAction { handler: a.handler, flags: a.flags, restorer: a.restorer, mask: a.mask & !UNBLOCKABLE };
        // A signal set to be ignored is discarded, also when it is pending.
        if disposition(p, sig as i32) == Disposition::Ignore {
            let bit = Process::sig_bit(sig as i32);
            p.pending_signals &= !bit;
            p.threads.current.pending &= !bit;
            for t in p.threads.parked_mut() {
                t.thread.pending &= !bit;
            }
        }
    }
    if !old.is_null() {
        let SigAction { handler, flags, restorer, mask } = current;
        mem.write_user_obj(old, KernelSigaction { handler, flags, restorer, mask })?;
    }
    Ok(0)
}

pub(super) fn sys_rt_sigprocmask(
    p: &mut Process,
    mem: &mut GuestMemory,
    how: u64,
    set: UserAddr,
    old: UserAddr,
    size: u64,
) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let current = p.sigmask;
    if !set.is_null() {
        let s = mem.read_user_u64(set)?;
        p.sigmask = match how {
            0 => current | s,
            1 => current & !s,
            2 => s,
            _ => return Err(EINVAL),
        } & !UNBLOCKABLE;
    }
    if !old.is_null() {
        mem.write_user_obj(old, current)?;
    }
    Ok(0)
}

pub(super) fn sys_sigaltstack(p: &mut Process, mem: &mut GuestMemory, ss: UserAddr, old: UserAddr) -> SysResult {
    let current = p.sigaltstack;
    if !ss.is_null() {
        p.sigaltstack = mem.read_user_array::<24>(ss)?;
    }
    if !old.is_null() {
        mem.write_user(old, &current)?;
    }
    Ok(0)
}

/// SIGKILL and SIGSTOP can be neither blocked nor caught.
pub(crate) const UNBLOCKABLE: u64 = (1 << (9 - 1)) | (1 << (19 - 1));
pub(crate) const SIGALRM: i32 = 14;
/// si_code values: sent by kill, by tkill/tgkill, by the kernel (a timer).
pub(crate) const SI_USER: i32 = 0;
pub(crate) const SI_TKILL: i32 = -6;
pub(crate) const SI_KERNEL: i32 = 0x80;

/// What a signal does when it is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Discarded (SIG_IGN, or a signal whose default is to be ignored).
    Ignore,
    /// Ends the call: "killed by signal N".
    Terminate,
    /// Runs the program's handler.
    Handler(SigAction),
}

pub(crate) fn disposition(p: &Process, sig: i32) -> Disposition {
    let action = p.sigactions[((sig - 1) & 63) as usize];
    match action.handler {
        _ if sig == 9 || sig == 19 => Disposition::Terminate,
        SIG_IGN => Disposition::Ignore,
        // Default actions of SIGCHLD, SIGCONT, SIGURG and SIGWINCH are to ignore.
        SIG_DFL if matches!(sig, 17 | 18 | 23 | 28) => Disposition::Ignore,
        // Stopping (SIGTSTP...) would stop the call for good: as fatal as the rest.
        SIG_DFL => Disposition::Terminate,
        _ => Disposition::Handler(action),
    }
}

/// Who a signal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The process (kill, alarm): any thread that does not block it takes it.
    Process,
    /// One thread (tkill, tgkill).
    Thread(crate::threads::Tid),
}

/// Sends `sig` (1..=64) with si_code `code`: discarded if ignored, the end of the call if
/// fatal and not blocked, pending otherwise (a blocked thread it can interrupt is woken).
pub(crate) fn send(p: &mut Process, target: Target, sig: i32, code: i32) -> Result<(), Stop> {
    let bit = Process::sig_bit(sig);
    let mask = match target {
        Target::Thread(tid) if tid != p.threads.current.tid => {
            p.threads.parked().find(|t| t.thread.tid == tid).map_or(p.sigmask, |t| t.saved.sigmask)
        }
        _ => p.sigmask,
    };
    match disposition(p, sig) {
        Disposition::Ignore => return Ok(()),
        Disposition::Terminate if bit & UNBLOCKABLE != 0 || mask & bit == 0 => return Err(Stop::Signal(sig)),
        _ => {}
    }
    p.signal_codes[(sig - 1) as usize] = code;
    match target {
        Target::Process => p.pending_signals |= bit,
        Target::Thread(tid) => {
            if let Some(t) = p.threads.get_mut(tid) {
                t.pending |= bit;
            }
        }
    }
    interrupt_waiters(p);
    Ok(())
}

/// The lowest signal in `set`.
pub(crate) fn lowest(set: u64) -> i32 {
    set.trailing_zeros() as i32 + 1
}

/// Wakes blocked threads that a pending signal is for: a rt_sigtimedwait for it takes it;
/// any other wait it does not block ends with EINTR (or starts again after an SA_RESTART
/// handler), so that the handler runs when the thread resumes. A signal for the process
/// wakes one thread, and none if the running thread can take it.
pub(crate) fn interrupt_waiters(p: &mut Process) {
    let process = p.pending_signals;
    let current_takes = p.threads.current.state == crate::threads::RunState::Runnable;
    let current_mask = p.sigmask;
    let actions = p.sigactions;
    // Thread-directed signals of parked threads.
    for t in p.threads.parked_mut() {
        let pending = t.thread.pending;
        if pending != 0 && t.thread.blocked().is_some() {
            interrupt(&mut t.thread, t.saved.sigmask, pending, &actions);
        }
    }
    if p.threads.current.blocked().is_some() && p.threads.current.pending != 0 {
        let pending = p.threads.current.pending;
        interrupt(&mut p.threads.current, current_mask, pending, &actions);
    }
    // Process-directed ones: one thread each.
    let mut left = process;
    while left != 0 {
        let sig = lowest(left);
        let bit = Process::sig_bit(sig);
        left &= !bit;
        if current_takes && current_mask & bit == 0 {
            continue;
        }
        let takes = |t: &crate::threads::Thread, mask: u64| match t.blocked() {
            Some(b) => match b.wait.what {
                WaitFor::SignalIn { set, .. } if set & bit != 0 => true,
                _ => mask & bit == 0,
            },
            None => false,
        };
        if takes(&p.threads.current, current_mask) {
            if interrupt(&mut p.threads.current, current_mask, bit, &actions) {
                p.pending_signals &= !bit;
            }
        } else if let Some(t) = p.threads.parked_mut().find(|t| takes(&t.thread, t.saved.sigmask)) {
            if interrupt(&mut t.thread, t.saved.sigmask, bit, &actions) {
                p.pending_signals &= !bit;
            }
        }
    }
}

/// Wakes blocked thread `t` (mask `mask`) for one of the signals in `pending`; true if a
/// rt_sigtimedwait took it (so it is no longer pending anywhere).
fn interrupt(t: &mut crate::threads::Thread, mask: u64, pending: u64, actions: &[SigAction; 64]) -> bool {
    let Some(b) = t.blocked().cloned() else { return false };
    if let WaitFor::SignalIn { set, info } = b.wait.what {
        if pending & set != 0 {
            let sig = lowest(pending & set);
            t.pending &= !Process::sig_bit(sig);
            t.taken_signal = Some((sig, info));
            t.wake(sig as u64);
            return true;
        }
    }
    let deliverable = pending & !mask;
    if deliverable == 0 {
        return false;
    }
    let sig = lowest(deliverable);
    if let WaitFor::Writable { written: written @ 1.., .. } = b.wait.what {
        t.wake(written); // a write interrupted after it queued some bytes returns those
        return false;
    }
    let restart = b.restartable() && actions[(sig - 1) as usize].flags & SA_RESTART != 0;
    t.wake(super::block::raw(Err(EINTR)));
    t.restart = restart.then_some(b.nr);
    false
}

pub(crate) const SA_RESTART: u64 = 0x1000_0000;

/// The program's pid, as the pid_t the kernel compares.
const SELF: i32 = GUEST_PID as i32;

/// kill(pid, sig): only the program itself exists (pid 0, its group, and -1, every process
/// it may signal, include it).
pub(super) fn sys_kill(p: &mut Process, pid: u64, sig: u64) -> Outcome {
    let pid = pid as i32; // pid_t
    if pid != SELF && pid != 0 && pid != -1 {
        return ret(Err(ESRCH));
    }
    signal(p, Target::Process, sig, SI_USER)
}

/// tkill(tid, sig) and tgkill(tgid, tid, sig) (`tgid` None for tkill): to one of the
/// program's threads.
pub(super) fn sys_tgkill(p: &mut Process, tgid: Option<u64>, tid: u64, sig: u64) -> Outcome {
    let (tid, tgid) = (tid as i32, tgid.map_or(SELF, |t| t as i32)); // pid_t
    if tid <= 0 || tgid <= 0 {
        return ret(Err(EINVAL));
    }
    if !p.threads.exists(tid) || tgid != SELF {
        return ret(Err(ESRCH));
    }
    signal(p, Target::Thread(tid), sig, SI_TKILL)
}

/// A signal the kernel sends the calling thread for what it just did (SIGPIPE): ignored,
/// fatal (ends the call), or pending for its handler; Return(0) unless it ends the call.
pub(super) fn signal_self(p: &mut Process, sig: u64) -> Outcome {
    let tid = p.threads.current.tid;
    signal(p, Target::Thread(tid), sig, SI_USER)
}

fn signal(p: &mut Process, target: Target, sig: u64, code: i32) -> Outcome {
    let sig = sig as i32; // int
    if sig == 0 {
        return Outcome::Return(0);
    }
    if !(1..=64).contains(&sig) {
        return ret(Err(EINVAL));
    }
    match send(p, target, sig, code) {
        Ok(()) => Outcome::Return(0),
        Err(stop) => Outcome::Stop(stop),
    }
}

/// rt_sigpending(set, size): what is pending for the calling thread (all of it blocked, or
/// it would have been delivered).
pub(super) fn sys_rt_sigpending(p: &mut Process, mem: &mut GuestMemory, set: UserAddr, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    mem.write_user_obj(set, p.pending_signals | p.threads.current.pending)?;
    Ok(0)
}

/// pause(): waits for a signal whose handler runs (then EINTR).
pub(super) fn sys_pause(p: &mut Process) -> Outcome {
    wait_for_signal(p, "pause")
}

/// rt_sigsuspend(mask, size): waits under `mask` for a handler to run, then EINTR with the
/// old mask back.
pub(super) fn sys_rt_sigsuspend(p: &mut Process, mem: &mut GuestMemory, mask: UserAddr, size: u64) -> Outcome {
    if size != 8 {
        return ret(Err(EINVAL));
    }
    let new = match mem.read_user_u64(mask) {
        Ok(m) => m & !UNBLOCKABLE,
        Err(e) => return ret(Err(e.into())),
    };
    let old = std::mem::replace(&mut p.sigmask, new);
    // The handler that ends the wait runs under `new`; its rt_sigreturn puts `old` back.
    p.threads.current.saved_mask = Some(old);
    wait_for_signal(p, "rt_sigsuspend")
}

fn wait_for_signal(p: &Process, syscall: &'static str) -> Outcome {
    if p.alone() {
        // Nothing could ever send it one, and none it can take is pending.
        return Outcome::Stop(Stop::Unsupported(format!(
            "{syscall} waits for a signal: the program has one thread and no alarm, so none can ever come"
        )));
    }
    Outcome::Block(Wait::forever(syscall, WaitFor::Signal))
}

/// rt_sigtimedwait(set, info, timeout, size): takes a pending signal in `set` (its number),
/// or waits for one, at most `timeout` (then EAGAIN).
pub(super) fn sys_rt_sigtimedwait(
    p: &mut Process,
    mem: &mut GuestMemory,
    set: UserAddr,
    info: UserAddr,
    timeout: UserAddr,
    size: u64,
) -> Outcome {
    if size != 8 {
        return ret(Err(EINVAL));
    }
    let set = match mem.read_user_u64(set) {
        Ok(s) => s & !UNBLOCKABLE,
        Err(e) => return ret(Err(e.into())),
    };
    let timeout = if timeout.is_null() {
        None
    } else {
        match super::time::read_duration(mem, timeout) {
            Ok(d) => Some(d),
            Err(e) => return ret(Err(e)),
        }
    };
    let thread_set = p.threads.current.pending & set;
    let process_set = p.pending_signals & set;
    if thread_set | process_set != 0 {
        let sig = lowest(if thread_set != 0 { thread_set } else { process_set });
        let bit = Process::sig_bit(sig);
        if thread_set != 0 {
            p.threads.current.pending &= !bit;
        } else {
            p.pending_signals &= !bit;
        }
        if !info.is_null() {
            let bytes = crate::signal_delivery::siginfo(sig, p.signal_codes[(sig - 1) as usize], None);
            if let Err(e) = mem.write_user(info, &bytes) {
                return ret(Err(e.into()));
            }
        }
        return Outcome::Return(sig as u64);
    }
    if timeout.is_some_and(|t| t.is_zero()) {
        return ret(Err(EAGAIN));
    }
    Outcome::Block(Wait::new("rt_sigtimedwait", WaitFor::SignalIn { set, info }, timeout, Err(EAGAIN)))
}

// ---------------------------------------------------------------- ITIMER_REAL

const ITIMER_REAL: u64 = 0;

fn duration_of(t: Timeval) -> Result<Duration, Errno> {
    if t.tv_sec < 0 || !(0..1_000_000).contains(&t.tv_usec) {
        return Err(EINVAL);
    }
    Ok(Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000))
}

/// struct itimerval { it_interval, it_value } of the timer now.
fn itimerval(p: &Process) -> Itimerval {
    match p.itimer_real {
        Some(t) => {
            // An armed timer never reads as zero (that would mean disarmed).
            let left = t.next.saturating_duration_since(Instant::now()).max(Duration::from_micros(1));
            Itimerval { it_interval: Timeval::from_duration(t.interval), it_value: Timeval::from_duration(left) }
        }
        None => Itimerval::default(),
    }
}

/// ITIMER_VIRTUAL and ITIMER_PROF (CPU-time timers) are EINVAL: only the wall clock is kept.
pub(super) fn sys_getitimer(p: &mut Process, mem: &mut GuestMemory, which: u64, curr: UserAddr) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    mem.write_user_obj(curr, itimerval(p))?;
    Ok(0)
}

pub(super) fn sys_setitimer(
    p: &mut Process,
    mem: &mut GuestMemory,
    which: u64,
    new: UserAddr,
    old: UserAddr,
) -> SysResult {
    if which != ITIMER_REAL {
        return Err(EINVAL);
    }
    let (interval, value) = if new.is_null() {
        (Duration::ZERO, Duration::ZERO) // Linux takes a NULL new value as disarming
    } else {
        let t: Itimerval = mem.read_user_obj(new)?;
        (duration_of(t.it_interval)?, duration_of(t.it_value)?)
    };
    if !old.is_null() {
        mem.write_user_obj(old, itimerval(p))?;
    }
    arm_itimer(p, value, interval);
    Ok(0)
}

/// alarm(secs): SIGALRM in `secs` seconds (0: cancel); the seconds the previous alarm had left.
pub(super) fn sys_alarm(p: &mut Process, secs: u64) -> SysResult {
    let secs = secs as u32; // unsigned int
    let left = p.itimer_real.map(|t| t.next.saturating_duration_since(Instant::now()));
    arm_itimer(p, Duration::from_secs(secs.into()), Duration::ZERO);
    // Linux rounds to the nearest second, and an alarm still armed reports at least 1.
    Ok(left.map_or(0, |d| (d + Duration::from_millis(500)).as_secs().max(1)))
}

fn arm_itimer(p: &mut Process, value: Duration, interval: Duration) {
    p.itimer_real = (!value.is_zero()).then(|| RealTimer { next: Instant::now() + value, interval });
    p.timer_changed = true;
}

/// Fires ITIMER_REAL if it is due at `now`: SIGALRM to the process, and the next expiry
/// (missed periods are not made up: one signal, then every interval from now).
pub(crate) fn expire_itimer(p: &mut Process, now: Instant) -> Result<(), Stop> {
    let Some(t) = p.itimer_real else { return Ok(()) };
    if t.next > now {
        return Ok(());
    }
    p.itimer_real = (!t.interval.is_zero()).then(|| RealTimer { next: now + t.interval, interval: t.interval });
    p.timer_changed = true;
    send(p, Target::Process, SIGALRM, SI_KERNEL)
}
