//! The one way a syscall says "I cannot complete now": [`Outcome::Block`] with a [`Wait`]
//! naming what it waits for and until when.
//!
//! Every blocking point goes through here: sleeps, futex waits, a read of an empty pipe or
//! socket, a write to a full one, an eventfd read at zero, poll/select/epoll_wait with
//! nothing ready. A handler never sleeps itself: it returns the `Wait`, and the run loop
//! decides. With the program's one thread nothing but time can change what it waits for, so
//! [`finish_alone`] resolves a wait: sleep until the earlier of its timeout and the call's
//! deadline, then complete with the wait's timeout result (poll: 0, futex: ETIMEDOUT, a sleep:
//! 0). A wait with no timeout could never end: the call ends with a clear error.
//!
//! A scheduler of several guest threads switches to another thread at exactly these points,
//! and re-runs the blocked syscall (same number and arguments) when something it waits for
//! may have changed; so a handler must leave no half-done effect behind a `Block` that a
//! re-run would repeat wrongly (it may pre-clear result buffers, as poll clears `revents`).

use super::*;

/// What a blocked syscall waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// Only time (nanosleep, clock_nanosleep).
    Time,
    /// A FUTEX_WAKE on this word whose bitset meets `bitset` (ends the wait with 0; the
    /// syscall is not re-run, since the word may still hold the value it waited on).
    Futex { addr: u64, bitset: u32 },
    /// Data (or end of file) to read on this fd.
    Readable { fd: u64 },
    /// Room to write on this fd. `written` bytes of this write are queued already: a
    /// blocking write to a pipe or stream socket goes on until all of it is, as in Linux,
    /// and a signal that interrupts it makes it return what it wrote.
    Writable { fd: u64, written: u64 },
    /// Any of the fds of a poll, select or epoll_wait becoming ready.
    Ready,
    /// A signal whose handler runs (pause, rt_sigsuspend): ends with EINTR.
    Signal,
    /// A signal in `set` (rt_sigtimedwait), taken instead of handled: ends with its number,
    /// its siginfo written to `info`.
    SignalIn { set: u64, info: crate::memory::UserAddr },
}

impl WaitFor {
    /// Whether the wait ends by running the syscall again once something it waits for may
    /// have changed (another thread ran): an fd's readiness. Time, futex and signal waits
    /// are ended by the scheduler with their result instead.
    pub fn rerun(&self) -> bool {
        matches!(self, WaitFor::Readable { .. } | WaitFor::Writable { .. } | WaitFor::Ready)
    }
}

/// A syscall that cannot complete now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    pub what: WaitFor,
    /// When it gives up, if ever.
    pub until: Option<Instant>,
    /// The syscall's result (rax) if it gives up at `until`.
    pub timeout_result: u64,
    /// The syscall, for the error a wait that can never end gives ("read of fd 4 (a pipe)").
    pub syscall: &'static str,
}

impl Wait {
    /// A wait on `what` for at most `timeout` (None: for ever), returning `on_timeout`.
    pub fn new(syscall: &'static str, what: WaitFor, timeout: Option<Duration>, on_timeout: SysResult) -> Wait {
        Wait {
            what,
            // A timeout too far away to represent is no timeout.
            until: timeout.and_then(|t| Instant::now().checked_add(t)),
            timeout_result: raw(on_timeout),
            syscall,
        }
    }

    /// A wait that can only end when something else happens (no timeout).
    pub fn forever(syscall: &'static str, what: WaitFor) -> Wait {
        Wait::new(syscall, what, None, Ok(0))
    }
}

/// Resolves `wait` for a program with one thread, where nothing but time can end it: sleep
/// to the earlier of its timeout and the call's deadline (the run loop ends the call once
/// the deadline has passed), then give its timeout result (rax).
pub fn finish_alone(p: &Process, wait: Wait) -> Result<u64, Stop> {
    let Some(until) = wait.until else {
        return Err(Stop::Unsupported(format!(
            "{} waits for {} with no timeout: the program has one thread, so nothing can ever wake it",
            wait.syscall,
            describe(&wait.what)
        )));
    };
    let until = match p.deadline {
        Some(deadline) => until.min(deadline),
        None => until,
    };
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    Ok(wait.timeout_result)
}

/// What a wait waits for, in words (for the error when nothing can end it).
pub(crate) fn describe(what: &WaitFor) -> String {
    match what {
        WaitFor::Time => "time".into(),
        WaitFor::Futex { addr, .. } => format!("a wake of the futex at {addr:#x}"),
        WaitFor::Signal => "a signal".into(),
        WaitFor::SignalIn { set, .. } => format!("a signal in {set:#x}"),
        WaitFor::Readable { fd } => format!("data on fd {fd}, which only the program itself could write"),
        WaitFor::Writable { fd, .. } => format!("room on fd {fd}, which only the program itself could make by reading"),
        WaitFor::Ready => "one of its fds to become ready".into(),
    }
}

/// A result as the raw rax value (minus the errno on failure).
pub(super) fn raw(r: SysResult) -> u64 {
    match r {
        Ok(v) => v,
        Err(Errno(e)) => (-i64::from(e)) as u64,
    }
}
