//! Clocks and sleeps (the vDSO answers most clock reads without an exit).

use super::*;

// ---------------------------------------------------------------- time

pub(super) fn put_timespec(mem: &mut GuestMemory, addr: UserAddr, secs: i64, nanos: i64) -> SysResult {
    mem.write_user_obj(addr, Timespec { tv_sec: secs, tv_nsec: nanos })?;
    Ok(0)
}

pub(super) fn host_clock(clock: u64) -> Result<libc::timespec, Errno> {
    let id = match clock {
        0 | 5 | 8 => clock as i32, // REALTIME, REALTIME_COARSE, REALTIME_ALARM
        1 | 4 | 6 | 7 | 9 => 1,    // MONOTONIC and friends
        2 | 3 => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(EINVAL),
    };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a known clock id into a local struct.
    unsafe { libc::clock_gettime(if id == 8 { 0 } else { id }, &mut ts) };
    Ok(ts)
}

/// A clock id, or a CPU-time clock of a process or thread (negative ids, what
/// `clock_getcpuclockid` and `pthread_getcpuclockid` make: `~pid << 3 | per_thread << 2 |
/// which`). The program's own, or one of its threads': the VM's CPU time (the vCPU thread's;
/// CPU time is not kept per guest thread). Another process's: EINVAL, as Linux says for
/// one that does not exist.
fn clock(p: &Process, clock: u64) -> Result<libc::timespec, Errno> {
    let id = clock as i32;
    if id >= 0 {
        return host_clock(clock);
    }
    let (which, per_thread, pid) = (id & 3, id & 4 != 0, !(id >> 3));
    let ours = if per_thread { pid == 0 || p.threads.exists(pid) } else { pid == 0 || pid as u64 == GUEST_PID };
    if which == 3 || !ours {
        return Err(EINVAL);
    }
    host_clock(libc::CLOCK_THREAD_CPUTIME_ID as u64)
}

pub(super) fn sys_clock_gettime(p: &Process, mem: &mut GuestMemory, id: u64, tp: UserAddr) -> SysResult {
    let ts = clock(p, id)?;
    put_timespec(mem, tp, ts.tv_sec, ts.tv_nsec)
}

/// clock_settime: the program may not set the system's time (no CAP_SYS_TIME): EPERM for
/// CLOCK_REALTIME, EINVAL for a clock nobody can set.
pub(super) fn sys_clock_settime(mem: &GuestMemory, id: u64, tp: UserAddr) -> SysResult {
    read_duration(mem, tp)?;
    match id {
        0 => Err(EPERM),
        _ => Err(EINVAL),
    }
}

pub(super) fn sys_clock_getres(p: &Process, mem: &mut GuestMemory, id: u64, tp: UserAddr) -> SysResult {
    clock(p, id)?;
    if !tp.is_null() {
        put_timespec(mem, tp, 0, 1)
    } else {
        Ok(0)
    }
}

pub(super) fn sys_gettimeofday(mem: &mut GuestMemory, tv: UserAddr) -> SysResult {
    if !tv.is_null() {
        let ts = host_clock(0)?;
        mem.write_user_obj(tv, Timeval { tv_sec: ts.tv_sec, tv_usec: ts.tv_nsec / 1000 })?;
    }
    Ok(0)
}

pub(super) fn sys_time(mem: &mut GuestMemory, tloc: UserAddr) -> SysResult {
    let secs = host_clock(0)?.tv_sec;
    if !tloc.is_null() {
        mem.write_user_obj(tloc, secs)?;
    }
    Ok(secs as u64)
}

pub(super) fn read_duration(mem: &GuestMemory, addr: UserAddr) -> Result<Duration, Errno> {
    let Timespec { tv_sec: secs, tv_nsec: nanos } = mem.read_user_obj(addr)?;
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(EINVAL);
    }
    Ok(Duration::new(secs as u64, nanos as u32))
}

/// nanosleep: waits out `req` (the run loop sleeps, never past the call's deadline).
pub(super) fn sys_nanosleep(mem: &mut GuestMemory, req: UserAddr, _rem: UserAddr) -> Outcome {
    match read_duration(mem, req) {
        Ok(d) => Outcome::Block(Wait::new("nanosleep", WaitFor::Time, Some(d), Ok(0))),
        Err(e) => ret(Err(e)),
    }
}

/// How long until `clock` reads `at` (zero if it already has): an absolute timeout.
pub(super) fn time_until(clock: u64, at: Duration) -> Result<Duration, Errno> {
    let now = host_clock(clock)?;
    Ok(at.saturating_sub(Duration::new(now.tv_sec.max(0) as u64, now.tv_nsec.clamp(0, 999_999_999) as u32)))
}

pub(super) fn sys_clock_nanosleep(
    mem: &mut GuestMemory,
    clock: u64,
    flags: u64,
    req: UserAddr,
    _rem: UserAddr,
) -> Outcome {
    const TIMER_ABSTIME: u64 = 1;
    let d = read_duration(mem, req).and_then(|d| if flags & TIMER_ABSTIME != 0 { time_until(clock, d) } else { Ok(d) });
    match d {
        Ok(d) => Outcome::Block(Wait::new("clock_nanosleep", WaitFor::Time, Some(d), Ok(0))),
        Err(e) => ret(Err(e)),
    }
}
