//! Process and system facts: arch_prctl, uname, sysinfo, rlimits, getrandom.

use super::*;

// ---------------------------------------------------------------- process and system facts

pub(super) fn sys_arch_prctl(p: &mut Process, mem: &mut GuestMemory, code: u64, addr: u64) -> Outcome {
    const ARCH_SET_FS: u64 = 0x1002;
    const ARCH_GET_FS: u64 = 0x1003;
    match code {
        ARCH_SET_FS => {
            // A non-canonical base would make the next VM entry fail.
            if addr >= 0x0000_8000_0000_0000 {
                return ret(Err(EPERM));
            }
            p.fs_base = addr;
            Outcome::SetFsBase(addr)
        }
        ARCH_GET_FS => ret(mem.write_user_obj(ptr(addr), p.fs_base).map(|_| 0).map_err(Into::into)),
        _ => ret(Err(EINVAL)),
    }
}

pub(super) fn sys_uname(mem: &mut GuestMemory, buf: UserAddr) -> SysResult {
    let mut u = [0u8; 65 * 6];
    for (i, field) in ["Linux", "snapcall", "6.1.0-snapcall", "#1 SMP", "x86_64", "(none)"].iter().enumerate() {
        u[i * 65..i * 65 + field.len()].copy_from_slice(field.as_bytes());
    }
    mem.write_user(buf, &u)?;
    Ok(0)
}

pub(super) fn sys_sysinfo(p: &mut Process, mem: &mut GuestMemory, buf: UserAddr) -> SysResult {
    let total = p.space.memory_size();
    let free = total.saturating_sub(p.space.used_bytes());
    mem.write_user_obj(buf, Sysinfo { totalram: total, freeram: free, procs: 1, mem_unit: 1, ..Sysinfo::default() })?;
    Ok(0)
}

pub(super) fn sys_sched_getaffinity(mem: &mut GuestMemory, len: u64, mask: UserAddr) -> SysResult {
    if len < 8 {
        return Err(EINVAL);
    }
    mem.write_user_obj(mask, 1u64)?;
    Ok(8)
}

pub(super) fn sys_prlimit(
    p: &mut Process,
    mem: &mut GuestMemory,
    resource: u32,
    _new: u64,
    old: UserAddr,
) -> SysResult {
    const INF: u64 = u64::MAX;
    let (cur, max) = match resource {
        3 => (crate::layout::STACK_RESERVE, INF), // RLIMIT_STACK
        7 => (crate::files::MAX_FDS as u64, crate::files::MAX_FDS as u64), // RLIMIT_NOFILE
        2 | 9 => (p.space.memory_size(), p.space.memory_size()), // RLIMIT_DATA, RLIMIT_AS
        0..=15 => (INF, INF),
        _ => return Err(EINVAL),
    };
    if !old.is_null() {
        mem.write_user_obj(old, Rlimit { rlim_cur: cur, rlim_max: max })?;
    }
    Ok(0)
}

/// getrlimit: prlimit64's read, except that the result pointer is not optional.
pub(super) fn sys_getrlimit(p: &mut Process, mem: &mut GuestMemory, resource: u32, old: UserAddr) -> SysResult {
    sys_prlimit(p, mem, resource, 0, old)?; // EINVAL first, as in Linux
    if old.is_null() {
        return Err(EFAULT);
    }
    Ok(0)
}

pub(super) fn sys_getrandom(mem: &mut GuestMemory, buf: UserAddr, len: u64) -> SysResult {
    let dst = mem.user_slice_mut(buf, len.min(33_554_431))?;
    fill_random(dst)?;
    Ok(dst.len() as u64)
}

/// Fills `dst` with host randomness (getrandom, which does not block once the host's pool
/// is initialised).
pub(crate) fn fill_random(dst: &mut [u8]) -> Result<(), Errno> {
    let mut done = 0;
    while done < dst.len() {
        let rest = &mut dst[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = Errno::last();
            if e == EINTR {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

// ---------------------------------------------------------------- priority

/// getpriority(which, who): the program's nice value, as the syscall gives it (20 - nice).
/// Only the program itself (who 0, or its pid, process group or uid) exists: ESRCH else.
pub(super) fn sys_getpriority(p: &Process, which: u64, who: u64) -> SysResult {
    check_priority_target(which, who)?;
    Ok((20 - p.nice) as u64)
}

/// setpriority(which, who, nice): an unprivileged process may raise its nice value (to at
/// most 19) but not lower it (EACCES, RLIMIT_NICE being 0). Recorded only: the vCPU runs as
/// the host schedules it.
pub(super) fn sys_setpriority(p: &mut Process, which: u64, who: u64, nice: u64) -> SysResult {
    check_priority_target(which, who)?;
    let nice = (nice as i32).clamp(-20, 19);
    if nice < p.nice {
        return Err(EACCES);
    }
    p.nice = nice;
    Ok(0)
}

fn check_priority_target(which: u64, who: u64) -> Result<(), Errno> {
    const PRIO_PROCESS: u64 = 0;
    const PRIO_PGRP: u64 = 1;
    const PRIO_USER: u64 = 2;
    let who = who as u32 as u64;
    let ours = match which {
        PRIO_PROCESS | PRIO_PGRP => who == 0 || who == GUEST_PID,
        PRIO_USER => who == 0 || who == GUEST_UID,
        _ => return Err(EINVAL),
    };
    if ours {
        Ok(())
    } else {
        Err(ESRCH)
    }
}

// ---------------------------------------------------------------- memfd

/// memfd_create(name, flags): an unnamed file in the writable layer (memory, charged to
/// the budget as any file there), opened read-write; MFD_CLOEXEC. Sealing and huge pages
/// are not offered (EINVAL).
pub(super) fn sys_memfd_create(p: &mut Process, mem: &GuestMemory, name: UserAddr, flags: u64) -> SysResult {
    const MFD_CLOEXEC: u64 = 1;
    const MFD_NAME_MAX: usize = 249; // NAME_MAX minus the "memfd:" prefix
    if flags & !MFD_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let raw = mem.read_user_cstr(name, MFD_NAME_MAX + 1)?.ok_or(EINVAL)?;
    let path = format!("/memfd:{} (deleted)", String::from_utf8_lossy(&raw));
    let file = p.overlay.unnamed_file(0o777)?;
    let open = crate::overlay::OpenOverlayFile::new(file, path, libc::O_RDWR);
    p.fds.insert(Fd { kind: FdKind::Overlay(open), cloexec: flags & MFD_CLOEXEC != 0 }, 0)
}
