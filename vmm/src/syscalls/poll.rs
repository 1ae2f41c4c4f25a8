//! Readiness: poll, ppoll, select, pselect6 and epoll. Each looks at every fd it is asked
//! about; if something is ready (or the timeout is zero) it returns at once, otherwise it
//! blocks ([`WaitFor::Ready`]) until its timeout and then returns 0 with every result
//! cleared, as Linux does when the time runs out.
//!
//! With other threads, a blocked call is run again whenever another thread may have made
//! one of its fds ready, and once more at its timeout ([`crate::threads::Threads::end_turn`],
//! `expire_timeouts`). Such a re-run keeps the first call's deadline ([`Deadline`]), and
//! select leaves its fd sets as the program wrote them until it returns: they are its input
//! too, and a re-run reads them again.
//!
//! epoll is level-triggered; EPOLLET is accepted and reported as level-triggered (a program
//! written for edge triggering reads until EAGAIN, so it sees the same data), EPOLLONESHOT
//! disarms a watch after one report until EPOLL_CTL_MOD. A watch ends when the file it was
//! added for closes, as in Linux. Regular files and the request stream cannot be watched
//! (EPERM, as Linux says for files without poll), nor can another epoll instance (EINVAL:
//! nesting is not offered).

use std::sync::Arc;

use super::time::read_duration;
use super::*;
use crate::files::MAX_FDS;
use crate::ipc::*;

/// What `kind` would report to poll now.
pub(super) fn readiness(p: &Process, kind: &FdKind) -> u32 {
    match kind {
        FdKind::Stdin | FdKind::File(_) | FdKind::Entropy | FdKind::Overlay(_) | FdKind::Dir(_) | FdKind::Device(_) => {
            ALWAYS_READY
        }
        FdKind::Stdout | FdKind::Stderr => POLLOUT | POLLWRNORM,
        FdKind::Endpoint(e) => e.readiness(),
        FdKind::EventFd(e) => e.readiness(),
        FdKind::Epoll(ep) => {
            if ready_watches(p, ep, 1, false).is_empty() {
                0
            } else {
                POLLIN | POLLRDNORM
            }
        }
    }
}

/// Up to `max` ready watches of `ep` as (events, data); `consume` disarms one-shot watches
/// it reports. Watches whose file has closed are dropped.
fn ready_watches(p: &Process, ep: &Arc<Epoll>, max: usize, consume: bool) -> Vec<(u32, u64)> {
    let mut ready = Vec::new();
    let mut closed = Vec::new();
    {
        let mut watches = ep.watches();
        for (&fd, watch) in watches.iter_mut() {
            if ready.len() >= max {
                break;
            }
            let kind = match p.fds.get(fd) {
                Ok(f) if f.kind.identity() == watch.file => &f.kind,
                _ => {
                    closed.push(fd);
                    continue;
                }
            };
            if watch.disarmed {
                continue;
            }
            let events = readiness(p, kind) & (watch.events | POLLERR | POLLHUP);
            if events != 0 {
                ready.push((events, watch.data));
                if consume && watch.events & EPOLLONESHOT != 0 {
                    watch.disarmed = true;
                }
            }
        }
    }
    for fd in closed {
        let _ = ep.remove(fd);
    }
    ready
}

/// When a readiness call's wait ends: its timeout from now, or, for the scheduler's re-run
/// of a blocked call, the deadline that call had (a relative timeout must not start again).
struct Deadline {
    until: Option<Instant>,
    /// The deadline has passed (or the timeout is zero): return what is ready, even nothing.
    passed: bool,
}

impl Deadline {
    fn of(p: &mut Process, timeout: Option<Duration>) -> Deadline {
        let now = Instant::now();
        let until = match p.threads.take_rerun() {
            Some(rerun) => rerun.until,
            None if timeout == Some(Duration::ZERO) => return Deadline { until: Some(now), passed: true },
            None => timeout.and_then(|t| now.checked_add(t)),
        };
        Deadline { until, passed: until.is_some_and(|u| u <= now) }
    }
}

/// Returns `n` ready fds, or, with none and time left, waits until `deadline`.
fn wait_or_return(n: u64, deadline: &Deadline, syscall: &'static str) -> Outcome {
    if n > 0 || deadline.passed {
        Outcome::Return(n)
    } else {
        Outcome::Block(Wait { what: WaitFor::Ready, until: deadline.until, timeout_result: 0, syscall })
    }
}

/// A poll-style timeout in milliseconds (negative: for ever).
pub(super) fn millis(timeout: u64) -> Option<Duration> {
    let ms = timeout as i32;
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// A timespec timeout pointer (NULL: for ever).
fn timespec_timeout(mem: &GuestMemory, at: UserAddr) -> Result<Option<Duration>, Errno> {
    if at.is_null() {
        Ok(None)
    } else {
        read_duration(mem, at).map(Some)
    }
}

/// A signal mask argument: only its size is checked (no signal is delivered while waiting).
fn check_sigset(mask: u64, size: u64) -> Result<(), Errno> {
    if mask != 0 && size != 8 {
        Err(EINVAL)
    } else {
        Ok(())
    }
}

fn poll(
    p: &mut Process,
    mem: &mut GuestMemory,
    fds: UserAddr,
    nfds: u64,
    timeout: Option<Duration>,
    syscall: &'static str,
) -> Outcome {
    let r = (|| {
        if nfds > MAX_FDS as u64 {
            return Err(EINVAL);
        }
        let size = std::mem::size_of::<PollFd>() as u64;
        let at = |i: u64| fds.add(i * size);
        let mut entries = (0..nfds).map(|i| mem.read_user_obj::<PollFd>(at(i))).collect::<Result<Vec<_>, _>>()?;
        let mut ready = 0;
        for e in &mut entries {
            let events = u32::from(e.events as u16);
            let revents = if e.fd < 0 {
                0
            } else {
                match p.fds.get(e.fd as u64) {
                    Ok(f) => readiness(p, &f.kind) & (events | POLLERR | POLLHUP),
                    Err(_) => POLLNVAL,
                }
            };
            e.revents = revents as u16 as i16;
            ready += u64::from(revents != 0);
        }
        for (i, e) in (0..).zip(entries) {
            mem.write_user_obj(at(i), e)?;
        }
        Ok(ready)
    })();
    match r {
        Ok(n) => wait_or_return(n, &Deadline::of(p, timeout), syscall),
        Err(e) => ret(Err(e)),
    }
}

pub(super) fn sys_poll(p: &mut Process, mem: &mut GuestMemory, fds: UserAddr, nfds: u64, timeout_ms: u64) -> Outcome {
    poll(p, mem, fds, nfds, millis(timeout_ms), "poll")
}

pub(super) fn sys_ppoll(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> Outcome {
    match timespec_timeout(mem, ptr(a[2])).and_then(|t| check_sigset(a[3], a[4]).map(|_| t)) {
        Ok(timeout) => poll(p, mem, ptr(a[0]), a[1], timeout, "ppoll"),
        Err(e) => ret(Err(e)),
    }
}

fn select(
    p: &mut Process,
    mem: &mut GuestMemory,
    nfds: u64,
    sets: [UserAddr; 3],
    timeout: Option<Duration>,
    syscall: &'static str,
) -> Outcome {
    let r = (|| {
        let nfds = nfds as i32;
        if nfds < 0 {
            return Err(EINVAL);
        }
        let n = (nfds as usize).min(MAX_FDS);
        let bytes = n.div_ceil(64) * 8;
        let mut inputs = Vec::new();
        for &set in &sets {
            inputs.push(if set.is_null() { None } else { Some(mem.user_slice(set, bytes as u64)?.to_vec()) });
        }
        let mut outputs = vec![vec![0u8; bytes]; 3];
        let deadline = Deadline::of(p, timeout);
        let wanted = [POLLIN | POLLRDNORM | POLLHUP | POLLERR, POLLOUT | POLLWRNORM | POLLERR, POLLPRI];
        let mut ready = 0;
        for fd in 0..n {
            let (byte, bit) = (fd / 8, 1u8 << (fd % 8));
            let asked: Vec<bool> = inputs.iter().map(|s| s.as_ref().is_some_and(|s| s[byte] & bit != 0)).collect();
            if !asked.contains(&true) {
                continue;
            }
            let state = readiness(p, &p.fds.get(fd as u64)?.kind);
            for i in 0..3 {
                if asked[i] && state & wanted[i] != 0 {
                    outputs[i][byte] |= bit;
                    ready += 1;
                }
            }
        }
        // The sets are cleared only when the call returns (or nothing but its timeout can
        // end it: one thread, no alarm): a re-run after another thread ran reads them again.
        if ready > 0 || deadline.passed || p.alone() {
            for (set, out) in sets.iter().zip(&outputs) {
                if !set.is_null() {
                    mem.write_user(*set, out)?;
                }
            }
        }
        Ok((ready, deadline))
    })();
    match r {
        Ok((n, deadline)) => wait_or_return(n, &deadline, syscall),
        Err(e) => ret(Err(e)),
    }
}

pub(super) fn sys_select(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> Outcome {
    let timeout = if a[4] == 0 {
        Ok(None)
    } else {
        (|| {
            let Timeval { tv_sec: secs, tv_usec: micros } = mem.read_user_obj(ptr(a[4]))?;
            if secs < 0 || !(0..1_000_000).contains(&micros) {
                return Err(EINVAL);
            }
            Ok(Some(Duration::new(secs as u64, micros as u32 * 1000)))
        })()
    };
    match timeout {
        Ok(t) => select(p, mem, a[0], [ptr(a[1]), ptr(a[2]), ptr(a[3])], t, "select"),
        Err(e) => ret(Err(e)),
    }
}

pub(super) fn sys_pselect6(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> Outcome {
    let timeout = timespec_timeout(mem, ptr(a[4])).and_then(|t| {
        if a[5] != 0 {
            // { const sigset_t *ss; size_t ss_len; }
            let [mask, size]: [u64; 2] = mem.read_user_obj(ptr(a[5]))?;
            check_sigset(mask, size)?;
        }
        Ok(t)
    });
    match timeout {
        Ok(t) => select(p, mem, a[0], [ptr(a[1]), ptr(a[2]), ptr(a[3])], t, "pselect6"),
        Err(e) => ret(Err(e)),
    }
}

// ---------------------------------------------------------------- epoll

const EPOLL_CTL_ADD: u64 = 1;
const EPOLL_CTL_DEL: u64 = 2;
const EPOLL_CTL_MOD: u64 = 3;
/// sizeof(struct epoll_event) on x86-64 (packed: u32 events, u64 data).
const EPOLL_EVENT_SIZE: u64 = std::mem::size_of::<EpollEvent>() as u64;

pub(super) fn sys_epoll_create1(p: &mut Process, flags: u64) -> SysResult {
    if flags & !(libc::EPOLL_CLOEXEC as u64) != 0 {
        return Err(EINVAL);
    }
    let ep = Epoll::new(&p.budget);
    p.fds.insert(Fd { kind: FdKind::Epoll(ep), cloexec: flags != 0 }, 0)
}

fn epoll_of(p: &Process, epfd: u64) -> Result<Arc<Epoll>, Errno> {
    match &p.fds.get(epfd)?.kind {
        FdKind::Epoll(ep) => Ok(ep.clone()),
        _ => Err(EINVAL),
    }
}

pub(super) fn sys_epoll_ctl(
    p: &mut Process,
    mem: &GuestMemory,
    epfd: u64,
    op: u64,
    fd: u64,
    event: UserAddr,
) -> SysResult {
    let (events, data) = if op == EPOLL_CTL_DEL {
        (0, 0)
    } else {
        let e: EpollEvent = mem.read_user_obj(event)?;
        (e.events, e.data)
    };
    p.fds.get(epfd)?;
    let target = &p.fds.get(fd)?.kind;
    let ep = epoll_of(p, epfd)?;
    if fd == epfd || matches!(target, FdKind::Epoll(_)) {
        return Err(EINVAL);
    }
    if matches!(
        target,
        FdKind::Stdin | FdKind::File(_) | FdKind::Entropy | FdKind::Overlay(_) | FdKind::Dir(_) | FdKind::Device(_)
    ) {
        return Err(EPERM);
    }
    let file = target.identity();
    match op {
        EPOLL_CTL_ADD => ep.add(fd, Watch { events, data, file, disarmed: false })?,
        EPOLL_CTL_MOD => {
            let mut watches = ep.watches();
            let watch = watches.get_mut(&fd).filter(|w| w.file == file).ok_or(ENOENT)?;
            *watch = Watch { events, data, file, disarmed: false };
        }
        EPOLL_CTL_DEL => {
            if ep.watches().get(&fd).is_some_and(|w| w.file != file) {
                let _ = ep.remove(fd); // the fd number's earlier file closed
                return Err(ENOENT);
            }
            ep.remove(fd)?;
        }
        _ => return Err(EINVAL),
    }
    Ok(0)
}

/// epoll_wait, epoll_pwait and epoll_pwait2 (timeout already read).
pub(super) fn epoll_wait(
    p: &mut Process,
    mem: &mut GuestMemory,
    epfd: u64,
    events: UserAddr,
    max: u64,
    timeout: Result<Option<Duration>, Errno>,
    syscall: &'static str,
) -> Outcome {
    let r = (|| {
        let max = max as i32;
        if max <= 0 || max as u64 > i32::MAX as u64 / EPOLL_EVENT_SIZE {
            return Err(EINVAL);
        }
        mem.user_slice_mut(events, max as u64 * EPOLL_EVENT_SIZE)?;
        let ep = epoll_of(p, epfd)?;
        let timeout = timeout?;
        let ready = ready_watches(p, &ep, max as usize, true);
        for (i, &(events_ready, data)) in (0..).zip(&ready) {
            mem.write_user_obj(events.add(i * EPOLL_EVENT_SIZE), EpollEvent { events: events_ready, data })?;
        }
        Ok((ready.len() as u64, timeout))
    })();
    match r {
        Ok((n, timeout)) => wait_or_return(n, &Deadline::of(p, timeout), syscall),
        Err(e) => ret(Err(e)),
    }
}

pub(super) fn sys_epoll_pwait(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> Outcome {
    let timeout = check_sigset(a[4], a[5]).map(|_| millis(a[3]));
    epoll_wait(p, mem, a[0], ptr(a[1]), a[2], timeout, "epoll_pwait")
}

pub(super) fn sys_epoll_pwait2(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> Outcome {
    let timeout = timespec_timeout(mem, ptr(a[3])).and_then(|t| check_sigset(a[4], a[5]).map(|_| t));
    epoll_wait(p, mem, a[0], ptr(a[1]), a[2], timeout, "epoll_pwait2")
}
