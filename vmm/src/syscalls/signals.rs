//! Signal dispositions and masks (recorded, never delivered) and kill to self.

use super::*;

// ---------------------------------------------------------------- signals (recorded only)

pub(super) fn sys_rt_sigaction(
    p: &mut Process,
    mem: &mut GuestMemory,
    sig: u64,
    act: u64,
    old: u64,
    size: u64,
) -> SysResult {
    if !(1..=64).contains(&sig) || size != 8 {
        return Err(EINVAL);
    }
    let slot = (sig - 1) as usize;
    let current = p.sigactions[slot];
    if act != 0 {
        if sig == 9 || sig == 19 {
            return Err(EINVAL);
        }
        let w = |i: u64| mem.read_user_u64(act + 8 * i);
        p.sigactions[slot] = SigAction { handler: w(0)?, flags: w(1)?, restorer: w(2)?, mask: w(3)? };
    }
    if old != 0 {
        let bytes: Vec<u8> = [current.handler, current.flags, current.restorer, current.mask]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        mem.write_user(old, &bytes)?;
    }
    Ok(0)
}

pub(super) fn sys_rt_sigprocmask(
    p: &mut Process,
    mem: &mut GuestMemory,
    how: u64,
    set: u64,
    old: u64,
    size: u64,
) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let current = p.sigmask;
    if set != 0 {
        let s = mem.read_user_u64(set)?;
        p.sigmask = match how {
            0 => current | s,
            1 => current & !s,
            2 => s,
            _ => return Err(EINVAL),
        };
    }
    if old != 0 {
        mem.write_user(old, &current.to_le_bytes())?;
    }
    Ok(0)
}

pub(super) fn sys_sigaltstack(p: &mut Process, mem: &mut GuestMemory, ss: u64, old: u64) -> SysResult {
    let current = p.sigaltstack;
    if ss != 0 {
        p.sigaltstack = mem.read_user_array::<24>(ss)?;
    }
    if old != 0 {
        mem.write_user(old, &current)?;
    }
    Ok(0)
}

/// The program's pid, and its one thread's tid, as the pid_t the kernel compares.
const SELF: i32 = GUEST_PID as i32;

/// kill(pid, sig): only the program itself exists (pid 0, its group, and -1, every process
/// it may signal, include it).
pub(super) fn sys_kill(p: &mut Process, pid: u64, sig: u64) -> Outcome {
    let pid = pid as i32; // pid_t
    if pid != SELF && pid != 0 && pid != -1 {
        return ret(Err(ESRCH));
    }
    signal_self(p, sig)
}

/// tkill(tid, sig) and tgkill(tgid, tid, sig) (`tgid` None for tkill): the program's one
/// thread has the tid gettid returns, which is its pid.
pub(super) fn sys_tgkill(p: &mut Process, tgid: Option<u64>, tid: u64, sig: u64) -> Outcome {
    let (tid, tgid) = (tid as i32, tgid.map_or(SELF, |t| t as i32)); // pid_t
    if tid <= 0 || tgid <= 0 {
        return ret(Err(EINVAL));
    }
    if tid != SELF || tgid != SELF {
        return ret(Err(ESRCH));
    }
    signal_self(p, sig)
}

/// A signal to the program itself: ignored, fatal (ends the call), or caught by a handler we
/// cannot run.
pub(super) fn signal_self(p: &mut Process, sig: u64) -> Outcome {
    let sig = sig as i32; // int
    if sig == 0 {
        return Outcome::Return(0);
    }
    if !(1..=64).contains(&sig) {
        return ret(Err(EINVAL));
    }
    let action = p.sigactions[(sig - 1) as usize];
    match action.handler {
        SIG_IGN if sig != 9 => Outcome::Return(0),
        SIG_DFL | SIG_IGN => {
            // Default actions of SIGCHLD, SIGCONT, SIGURG and SIGWINCH are to ignore.
            if matches!(sig, 17 | 18 | 23 | 28) {
                Outcome::Return(0)
            } else {
                Outcome::Stop(Stop::Signal(sig))
            }
        }
        _ => Outcome::Stop(Stop::Unsupported(format!("signal {sig} has a handler, and snapcall delivers no signals"))),
    }
}
