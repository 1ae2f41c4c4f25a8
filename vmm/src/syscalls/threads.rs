//! Threads: clone/clone3 with CLONE_THREAD, exit of one thread, gettid's friends,
//! sched_yield. The run loop (`scheduler.rs`) does the part that needs the vCPU: it gives a
//! new thread its parent's registers and switches between threads.

use super::*;
use crate::threads::Thread;

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x1_0000;
const CLONE_SYSVSEM: u64 = 0x4_0000;
const CLONE_SETTLS: u64 = 0x8_0000;
const CLONE_PARENT_SETTID: u64 = 0x10_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
const CLONE_DETACHED: u64 = 0x40_0000;
const CLONE_UNTRACED: u64 = 0x80_0000;
const CLONE_CHILD_SETTID: u64 = 0x100_0000;
const CLONE_IO: u64 = 0x8000_0000;
/// The low byte of clone's flags: the signal sent to the parent when a child process ends
/// (ignored for threads, as Linux ignores it).
const CSIGNAL: u64 = 0xFF;
/// Every flag a thread may have here: one address space, fd table, cwd and signal
/// handlers are all the monitor has.
const THREAD_FLAGS: u64 = CLONE_VM
    | CLONE_FS
    | CLONE_FILES
    | CLONE_SIGHAND
    | CLONE_THREAD
    | CLONE_SYSVSEM
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_DETACHED
    | CLONE_UNTRACED
    | CLONE_CHILD_SETTID
    | CLONE_IO;
/// struct clone_args: the first version's size, and the size of the fields we know.
const CLONE_ARGS_SIZE_VER0: u64 = 64;
const CLONE_ARGS_KNOWN: u64 = 88;

/// A thread clone made, for the run loop to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawn {
    pub tid: crate::threads::Tid,
    /// Its stack pointer (0: the parent's, as Linux does for a zero stack).
    pub stack: u64,
    /// Its FS base (CLONE_SETTLS), or None for the parent's.
    pub tls: Option<u64>,
    /// CLONE_CHILD_CLEARTID's address (0: none).
    pub clear_child_tid: u64,
}

/// What both clone flavours ask for, decoded.
struct CloneRequest {
    flags: u64,
    stack: u64,
    parent_tid: UserAddr,
    child_tid: UserAddr,
    tls: u64,
}

/// clone(flags, stack, parent_tid, child_tid, tls) (the x86-64 argument order).
pub(super) fn sys_clone(
    p: &mut Process,
    mem: &mut GuestMemory,
    flags: u64,
    stack: u64,
    parent_tid: UserAddr,
    child_tid: UserAddr,
    tls: u64,
) -> Outcome {
    let flags = flags & 0xFFFF_FFFF & !CSIGNAL; // clone's flags are an unsigned long, but only 32 bits are flags
    spawn(p, mem, CloneRequest { flags, stack, parent_tid, child_tid, tls })
}

/// clone3(args, size): struct clone_args { flags, pidfd, child_tid, parent_tid, exit_signal,
/// stack, stack_size, tls, set_tid, set_tid_size, cgroup }.
pub(super) fn sys_clone3(p: &mut Process, mem: &mut GuestMemory, args: UserAddr, size: u64) -> Outcome {
    if size < CLONE_ARGS_SIZE_VER0 {
        return ret(Err(EINVAL));
    }
    if size > PAGE_SIZE_BYTES {
        return ret(Err(E2BIG));
    }
    let known = size.min(CLONE_ARGS_KNOWN);
    let field = |i: u64| if 8 * i < known { mem.read_user_u64(args.add(8 * i)) } else { Ok(0) };
    let fields: Result<Vec<u64>, _> = (0..11).map(field).collect();
    let Ok(f) = fields else { return ret(Err(EFAULT)) };
    // A larger struct from a newer libc: its unknown tail must be zero (Linux: E2BIG).
    if size > CLONE_ARGS_KNOWN {
        match mem.user_slice(args.add(CLONE_ARGS_KNOWN), size - CLONE_ARGS_KNOWN) {
            Ok(tail) if tail.iter().all(|&b| b == 0) => {}
            Ok(_) => return ret(Err(E2BIG)),
            Err(_) => return ret(Err(EFAULT)),
        }
    }
    let (flags, pidfd, child_tid, parent_tid, exit_signal) = (f[0], f[1], f[2], f[3], f[4]);
    let (stack, stack_size, tls, set_tid, set_tid_size, cgroup) = (f[5], f[6], f[7], f[8], f[9], f[10]);
    let _ = (pidfd, cgroup);
    if exit_signal & !CSIGNAL != 0 || (stack == 0) != (stack_size == 0) || (set_tid == 0) != (set_tid_size == 0) {
        return ret(Err(EINVAL));
    }
    if set_tid_size != 0 {
        return ret(Err(EPERM)); // choosing tids needs CAP_SYS_ADMIN
    }
    let Some(top) = stack.checked_add(stack_size) else { return ret(Err(EINVAL)) };
    let (parent_tid, child_tid) = (UserAddr::new(parent_tid), UserAddr::new(child_tid));
    spawn(p, mem, CloneRequest { flags, stack: top, parent_tid, child_tid, tls })
}

const PAGE_SIZE_BYTES: u64 = 4096;

fn spawn(p: &mut Process, mem: &mut GuestMemory, r: CloneRequest) -> Outcome {
    if r.flags & CLONE_THREAD == 0 {
        p.stats.count_refused(56); // a new process: there is only this one
        return ret(Err(EPERM));
    }
    // Linux's own rules: a thread shares the signal handlers, which need the address space.
    if r.flags & CLONE_SIGHAND == 0 || r.flags & CLONE_VM == 0 {
        return ret(Err(EINVAL));
    }
    // The monitor has one fd table, cwd and umask: a thread that wanted its own is refused.
    if r.flags & !THREAD_FLAGS != 0 || r.flags & (CLONE_FS | CLONE_FILES) != CLONE_FS | CLONE_FILES {
        return ret(Err(EINVAL));
    }
    let tls = if r.flags & CLONE_SETTLS != 0 {
        // A non-canonical FS base would make the next VM entry fail (as arch_prctl checks).
        if r.tls >= 0x0000_8000_0000_0000 {
            return ret(Err(EPERM));
        }
        Some(r.tls)
    } else {
        None
    };
    let tid = match p.threads.new_tid() {
        Ok(t) => t,
        Err(e) => return ret(Err(e)),
    };
    // Linux ignores a bad address here too: the thread is made either way.
    if r.flags & CLONE_PARENT_SETTID != 0 {
        let _ = mem.write_user_obj(r.parent_tid, tid);
    }
    if r.flags & CLONE_CHILD_SETTID != 0 {
        let _ = mem.write_user_obj(r.child_tid, tid);
    }
    let clear_child_tid = if r.flags & CLONE_CHILD_CLEARTID != 0 { r.child_tid.raw() } else { 0 };
    Outcome::Spawn(Spawn { tid, stack: r.stack, tls, clear_child_tid })
}

/// A new thread's table entry.
pub(crate) fn new_thread(spawn: &Spawn) -> Thread {
    let mut t = Thread::new(spawn.tid);
    t.clear_child_tid = spawn.clear_child_tid;
    t
}

/// exit(code): ends the calling thread; the last thread's exit ends the call with `code`.
/// An exiting thread's clear_child_tid word is zeroed and one waiter on it woken: that is
/// what pthread_join waits for.
pub(super) fn sys_exit_thread(p: &mut Process, mem: &mut GuestMemory, code: u64) -> Outcome {
    if !p.threads.others_exist() {
        return Outcome::Stop(Stop::Exit((code & 0xFF) as i32));
    }
    let addr = p.threads.current.clear_child_tid;
    if addr != 0 && mem.write_user_obj(UserAddr::new(addr), 0u32).is_ok() {
        p.threads.futex_wake(addr, 1, u32::MAX);
    }
    p.threads.current.state = crate::threads::RunState::Exited;
    Outcome::ExitThread
}

pub(super) fn sys_set_tid_address(p: &mut Process, addr: u64) -> Outcome {
    p.threads.current.clear_child_tid = addr;
    Outcome::Return(p.threads.current.tid as u64)
}

/// struct robust_list_head is three words.
const ROBUST_LIST_HEAD_SIZE: u64 = 24;

pub(super) fn sys_set_robust_list(p: &mut Process, head: u64, len: u64) -> SysResult {
    if len != ROBUST_LIST_HEAD_SIZE {
        return Err(EINVAL);
    }
    p.threads.current.robust_list = head;
    Ok(0)
}

pub(super) fn sys_get_robust_list(
    p: &mut Process,
    mem: &mut GuestMemory,
    tid: u64,
    head: UserAddr,
    len: UserAddr,
) -> SysResult {
    let tid = tid as i32;
    let list = if tid == 0 {
        p.threads.current.robust_list
    } else {
        match p.threads.get_mut(tid) {
            Some(t) => t.robust_list,
            None => return Err(ESRCH),
        }
    };
    mem.write_user_obj(head, list)?;
    mem.write_user_obj(len, ROBUST_LIST_HEAD_SIZE)?;
    Ok(0)
}

pub(super) fn sys_sched_yield(p: &Process) -> Outcome {
    if p.threads.others_exist() {
        Outcome::Yield
    } else {
        Outcome::Return(0)
    }
}
