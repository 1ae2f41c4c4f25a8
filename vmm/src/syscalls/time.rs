//! Clocks and sleeps (the vDSO answers most clock reads without an exit).

use super::*;

// ---------------------------------------------------------------- time

pub(super) fn put_timespec(mem: &mut GuestMemory, addr: u64, secs: i64, nanos: i64) -> SysResult {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&secs.to_le_bytes());
    b[8..].copy_from_slice(&nanos.to_le_bytes());
    mem.write_user(addr, &b)?;
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

pub(super) fn sys_clock_gettime(mem: &mut GuestMemory, clock: u64, tp: u64) -> SysResult {
    let ts = host_clock(clock)?;
    put_timespec(mem, tp, ts.tv_sec, ts.tv_nsec)
}

pub(super) fn sys_clock_getres(mem: &mut GuestMemory, clock: u64, tp: u64) -> SysResult {
    host_clock(clock)?;
    if tp != 0 {
        put_timespec(mem, tp, 0, 1)
    } else {
        Ok(0)
    }
}

pub(super) fn sys_gettimeofday(mem: &mut GuestMemory, tv: u64) -> SysResult {
    if tv != 0 {
        let ts = host_clock(0)?;
        put_timespec(mem, tv, ts.tv_sec, ts.tv_nsec / 1000)?;
    }
    Ok(0)
}

pub(super) fn sys_time(mem: &mut GuestMemory, tloc: u64) -> SysResult {
    let secs = host_clock(0)?.tv_sec;
    if tloc != 0 {
        mem.write_user(tloc, &secs.to_le_bytes())?;
    }
    Ok(secs as u64)
}

pub(super) fn read_duration(mem: &GuestMemory, addr: u64) -> Result<Duration, Errno> {
    let secs = mem.read_user_u64(addr)? as i64;
    let nanos = mem.read_user_u64(addr.checked_add(8).ok_or(EFAULT)?)? as i64;
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(EINVAL);
    }
    Ok(Duration::new(secs as u64, nanos as u32))
}

/// nanosleep: waits out `req` (the run loop sleeps, never past the call's deadline).
pub(super) fn sys_nanosleep(mem: &mut GuestMemory, req: u64, _rem: u64) -> Outcome {
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

pub(super) fn sys_clock_nanosleep(mem: &mut GuestMemory, clock: u64, flags: u64, req: u64, _rem: u64) -> Outcome {
    const TIMER_ABSTIME: u64 = 1;
    let d = read_duration(mem, req).and_then(|d| if flags & TIMER_ABSTIME != 0 { time_until(clock, d) } else { Ok(d) });
    match d {
        Ok(d) => Outcome::Block(Wait::new("clock_nanosleep", WaitFor::Time, Some(d), Ok(0))),
        Err(e) => ret(Err(e)),
    }
}
