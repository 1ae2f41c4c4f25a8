//! The Linux syscalls a static glibc, musl or CPython program makes, implemented against
//! [`Process`] and [`GuestMemory`]. A plain function of (state, memory, number, arguments):
//! no KVM here, so every path is testable without a VM.
//!
//! Every pointer and length comes from the guest and is checked before use: a bad pointer is
//! EFAULT, never a monitor crash. Unknown syscalls return ENOSYS and are counted.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::errno::*;
use crate::files::{join_guest_path, Fd, FdKind, OpenFile, ENTROPY_DEVICE, PATH_MAX};
use crate::memory::{BadAddress, GuestMemory, UserAddr};
use crate::mm::{Fixed, PROT_WRITE};
use crate::process::*;
use crate::request::REQUEST_FILE;

mod abi;
mod block;
mod fs;
mod futex;
mod io;
mod ipc;
mod memory;
mod names;
mod permissions;
mod poll;
mod procfs;
mod signals;
mod system;
mod threads;
mod time;
mod write_fs;

use abi::*;
pub(crate) use block::describe as describe_wait;
pub use block::{finish_alone, Wait, WaitFor};
use fs::*;
use futex::*;
pub(crate) use io::append_output;
use io::*;
use ipc::*;
pub(crate) use memory::MAX_ENTROPY_PAGES;
use memory::*;
pub use names::name;
use poll::*;
use signals::*;
pub(crate) use signals::{
    disposition, expire_itimer, interrupt_waiters, lowest, Disposition, UNBLOCKABLE as UNBLOCKABLE_SIGNALS,
};
pub(crate) use system::fill_random;
use system::*;
pub(crate) use threads::new_thread;
pub use threads::Spawn;
use threads::*;
use time::*;
use write_fs::*;

/// What the run loop does after a syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the program with this rax.
    Return(u64),
    /// Set the FS base (TLS pointer), then resume with rax = 0.
    SetFsBase(u64),
    /// The syscall cannot complete now: it waits (see [`block`]).
    Block(Wait),
    /// End the call.
    Stop(Stop),
    /// sched_yield while other threads exist: the next runnable one runs; the caller gets 0.
    Yield,
    /// clone/clone3 made a thread: the run loop gives it the caller's registers, and the
    /// caller gets its tid.
    Spawn(Spawn),
    /// exit() of a thread while others live (its clear_child_tid is done already).
    ExitThread,
    /// rt_sigreturn: the run loop restores the context saved in the signal frame.
    SigReturn,
}

type SysResult = Result<u64, Errno>;

impl From<BadAddress> for Errno {
    fn from(_: BadAddress) -> Errno {
        EFAULT
    }
}

/// A pointer argument, as the program passed it: only the user-memory accessors take it.
fn ptr(raw: u64) -> UserAddr {
    UserAddr::new(raw)
}

fn ret(r: SysResult) -> Outcome {
    Outcome::Return(block::raw(r))
}

/// x86-64 syscall numbers we name.
pub mod nr {
    pub const READ: u64 = 0;
    #[cfg(test)]
    pub const WRITE: u64 = 1;
    pub const READV: u64 = 19;
    pub const PREAD64: u64 = 17;
}

/// Syscalls refused outright: no processes, no network, no signals to others. EPERM is what
/// a seccomp-sandboxed Linux process gets for them (SECCOMP_RET_ERRNO(EPERM), Docker's
/// default action); each refusal is counted in the call's stats with the reason
/// [`refusal_reason`] gives.
const REFUSED: &[u64] = &[
    57, 58, 59, 322, // fork, vfork, execve, execveat (clone and clone3 make threads only)
    299, 307, // recvmmsg, sendmmsg
    101, // ptrace
];

/// Why syscall `nr` is refused, for the call's stats and logs.
pub fn refusal_reason(nr: u64) -> &'static str {
    match nr {
        57 | 58 | 56 | 435 => "child processes are not supported: the function is one process",
        59 | 322 => "running another program is not supported: the function is this one program",
        101 => "tracing is not supported",
        299 | 307 => "multi-message socket calls are not supported",
        _ => "refused",
    }
}

/// Handles syscall `nr` with `args` for `p`, whose memory is `mem`.
pub fn handle(p: &mut Process, mem: &mut GuestMemory, nr: u64, args: [u64; 6]) -> Outcome {
    p.stats.syscalls += 1;
    let outcome = dispatch(p, mem, nr, args);
    if p.trace.is_some() {
        let result = match &outcome {
            Outcome::Return(v) => Some(*v as i64),
            Outcome::SetFsBase(_) | Outcome::Yield => Some(0),
            Outcome::Spawn(s) => Some(i64::from(s.tid)),
            Outcome::Stop(_) | Outcome::Block(_) | Outcome::ExitThread | Outcome::SigReturn => None,
        };
        p.trace(&SyscallRecord { nr, args, result });
    }
    outcome
}

fn dispatch(p: &mut Process, mem: &mut GuestMemory, nr: u64, a: [u64; 6]) -> Outcome {
    match nr {
        0 => read(p, mem, a[0], ptr(a[1]), a[2]),
        1 => write(p, mem, a[0], ptr(a[1]), a[2]),
        2 => ret(sys_openat(p, mem, AT_FDCWD, ptr(a[0]), a[1], a[2])),
        3 => ret(p.fds.close(a[0]).map(|_| 0)),
        4 => ret(sys_stat_path(p, mem, AT_FDCWD, ptr(a[0]), ptr(a[1]), 0)),
        5 => ret(sys_fstat(p, mem, a[0], ptr(a[1]))),
        6 => ret(sys_stat_path(p, mem, AT_FDCWD, ptr(a[0]), ptr(a[1]), AT_SYMLINK_NOFOLLOW)),
        8 => ret(sys_lseek(p, a[0], a[1], a[2])),
        9 => ret(sys_mmap_enforced(p, mem, a)),
        10 => ret(sys_mprotect(p, mem, a[0], a[1], a[2] as u32)),
        11 => ret(sys_munmap(p, mem, a[0], a[1])),
        12 => Outcome::Return(p.space.brk_to(a[0], mem)),
        13 => ret(sys_rt_sigaction(p, mem, a[0], ptr(a[1]), ptr(a[2]), a[3])),
        14 => ret(sys_rt_sigprocmask(p, mem, a[0], ptr(a[1]), ptr(a[2]), a[3])),
        7 => sys_poll(p, mem, ptr(a[0]), a[1], a[2]),
        15 => Outcome::SigReturn,
        16 => ret(sys_ioctl(p, mem, a[0], a[1], ptr(a[2]))),
        17 => ret(sys_pread(p, mem, a[0], ptr(a[1]), a[2], a[3])),
        18 => ret(sys_pwrite(p, mem, a[0], ptr(a[1]), a[2], a[3])),
        19 => readv(p, mem, a[0], ptr(a[1]), a[2]),
        20 => writev(p, mem, a[0], ptr(a[1]), a[2]),
        21 => ret(sys_access(p, mem, AT_FDCWD, ptr(a[0]), a[1], 0)),
        22 => ret(sys_pipe2(p, mem, ptr(a[0]), 0)),
        23 => sys_select(p, mem, a),
        24 => sys_sched_yield(p),
        26 => ret(sys_msync(p, a[0], a[1], a[2])),
        25 => sys_mremap(p, mem, a[0], a[1], a[2], a[3] & 1 != 0 && a[3] & !1 == 0),
        28 => ret(sys_madvise(p, mem, a[0], a[1], a[2])),
        32 => ret(p.fds.duplicate(a[0], false).and_then(|f| p.fds.insert(f, 0))),
        33 => ret(sys_dup3(p, a[0], a[1], 0, true)),
        34 => sys_pause(p),
        35 => sys_nanosleep(mem, ptr(a[0]), ptr(a[1])),
        36 => ret(sys_getitimer(p, mem, a[0], ptr(a[1]))),
        37 => ret(sys_alarm(p, a[0])),
        38 => ret(sys_setitimer(p, mem, a[0], ptr(a[1]), ptr(a[2]))),
        39 => Outcome::Return(GUEST_PID),
        186 => Outcome::Return(p.threads.current.tid as u64),
        41 => ret(sys_socket(p, a[0], a[1], a[2])), // no network, and no named sockets (ipc.rs)
        42 => ret(sys_bind_or_connect(p, a[0], true)),
        49 => ret(sys_bind_or_connect(p, a[0], false)),
        43 | 50 | 288 => ret(sys_connected_socket_op(p, a[0], false)),
        44 => sys_sendto(p, mem, a[0], ptr(a[1]), a[2], a[3]),
        45 => sys_recvfrom(p, mem, a[0], ptr(a[1]), a[2], a[3], ptr(a[4]), ptr(a[5])),
        46 => sys_sendmsg(p, mem, a[0], ptr(a[1]), a[2]),
        47 => sys_recvmsg(p, mem, a[0], ptr(a[1]), a[2]),
        48 => ret(sys_shutdown(p, a[0], a[1])),
        51 | 52 => ret(sys_getsockname(p, mem, a[0], ptr(a[1]), ptr(a[2]))),
        53 => ret(sys_socketpair(p, mem, a[0], a[1], a[2], ptr(a[3]))),
        54 => ret(sys_setsockopt(p, mem, a[0], a[1], ptr(a[3]), a[4])),
        55 => ret(sys_getsockopt(p, mem, a[0], a[1], a[2], ptr(a[3]), ptr(a[4]))),
        56 => sys_clone(p, mem, a[0], a[1], ptr(a[2]), ptr(a[3]), a[4]),
        435 => sys_clone3(p, mem, ptr(a[0]), a[1]),
        60 => sys_exit_thread(p, mem, a[0]),
        231 => Outcome::Stop(Stop::Exit((a[0] & 0xFF) as i32)),
        61 => ret(Err(ECHILD)),
        62 => sys_kill(p, a[0], a[1]),
        63 => ret(sys_uname(mem, ptr(a[0]))),
        72 => ret(sys_fcntl(p, a[0], a[1], a[2])),
        73 => ret(p.fds.get(a[0]).map(|_| 0)), // flock: one process, nobody to exclude
        74 | 75 => ret(sys_fsync(p, a[0])),
        76 => ret(sys_truncate(p, mem, ptr(a[0]), a[1])),
        77 => ret(sys_ftruncate(p, a[0], a[1])),
        79 => ret(sys_getcwd(p, mem, ptr(a[0]), a[1])),
        80 => ret(sys_chdir(p, mem, ptr(a[0]))),
        81 => ret(sys_fchdir(p, a[0])),
        82 => ret(sys_renameat2(p, mem, AT_FDCWD, ptr(a[0]), AT_FDCWD, ptr(a[1]), 0)),
        83 => ret(sys_mkdirat(p, mem, AT_FDCWD, ptr(a[0]), a[1])),
        84 => ret(sys_unlinkat(p, mem, AT_FDCWD, ptr(a[0]), 0x200)),
        85 => {
            ret(sys_openat(p, mem, AT_FDCWD, ptr(a[0]), (libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) as u64, a[1]))
        }
        86 => ret(sys_linkat(p, mem, AT_FDCWD, ptr(a[0]), AT_FDCWD, ptr(a[1]), 0)),
        87 => ret(sys_unlinkat(p, mem, AT_FDCWD, ptr(a[0]), 0)),
        88 => ret(sys_symlinkat(p, mem, ptr(a[0]), AT_FDCWD, ptr(a[1]))),
        89 => ret(sys_readlink(p, mem, AT_FDCWD, ptr(a[0]), ptr(a[1]), a[2])),
        90 => ret(sys_fchmodat(p, mem, AT_FDCWD, ptr(a[0]), a[1])),
        91 => ret(sys_fchmod(p, a[0], a[1])),
        92 | 94 => ret(sys_chown_path(p, mem, AT_FDCWD, ptr(a[0]), a[1], a[2])),
        93 => ret(sys_fchown(p, a[0], a[1], a[2])),
        95 => Outcome::Return(std::mem::replace(&mut p.umask, a[0] as u32 & 0o777) as u64),
        96 => ret(sys_gettimeofday(mem, ptr(a[0]))),
        97 => ret(sys_getrlimit(p, mem, a[0] as u32, ptr(a[1]))),
        99 => ret(sys_sysinfo(p, mem, ptr(a[0]))),
        102 | 104 | 107 | 108 => Outcome::Return(GUEST_UID),
        110 => Outcome::Return(GUEST_PPID),
        111 | 121 | 124 => Outcome::Return(GUEST_PID), // getpgrp, getpgid, getsid
        127 => ret(sys_rt_sigpending(p, mem, ptr(a[0]), a[1])),
        128 => sys_rt_sigtimedwait(p, mem, ptr(a[0]), ptr(a[1]), ptr(a[2]), a[3]),
        130 => sys_rt_sigsuspend(p, mem, ptr(a[0]), a[1]),
        132 => ret(sys_utime(p, mem, ptr(a[0]), ptr(a[1]))),
        133 => ret(sys_mknodat(p, mem, AT_FDCWD, ptr(a[0]), a[1])),
        137 => ret(sys_statfs(p, mem, ptr(a[0]), ptr(a[1]))),
        138 => ret(sys_fstatfs(p, mem, a[0], ptr(a[1]))),
        162 => Outcome::Return(0), // sync: no disk
        131 => ret(sys_sigaltstack(p, mem, ptr(a[0]), ptr(a[1]))),
        158 => sys_arch_prctl(p, mem, a[0], a[1]),
        200 => sys_tgkill(p, None, a[0], a[1]),
        201 => ret(sys_time(mem, ptr(a[0]))),
        202 => sys_futex(p, mem, a),
        204 => ret(sys_sched_getaffinity(mem, a[1], ptr(a[2]))),
        213 => ret(if a[0] as i32 <= 0 { Err(EINVAL) } else { sys_epoll_create1(p, 0) }),
        217 => ret(sys_getdents64(p, mem, a[0], ptr(a[1]), a[2])),
        218 => sys_set_tid_address(p, a[0]),
        227 => ret(sys_clock_settime(mem, a[0], ptr(a[1]))),
        228 => ret(sys_clock_gettime(p, mem, a[0], ptr(a[1]))),
        229 => ret(sys_clock_getres(p, mem, a[0], ptr(a[1]))),
        164 => ret(Err(EPERM)), // settimeofday: no CAP_SYS_TIME
        140 => ret(sys_getpriority(p, a[0], a[1])),
        141 => ret(sys_setpriority(p, a[0], a[1], a[2])),
        319 => ret(sys_memfd_create(p, mem, ptr(a[0]), a[1])),
        230 => sys_clock_nanosleep(mem, a[0], a[1], ptr(a[2]), ptr(a[3])),
        235 => ret(sys_utimes(p, mem, AT_FDCWD, ptr(a[0]), ptr(a[1]))),
        232 => epoll_wait(p, mem, a[0], ptr(a[1]), a[2], Ok(millis(a[3])), "epoll_wait"),
        233 => ret(sys_epoll_ctl(p, mem, a[0], a[1], a[2], ptr(a[3]))),
        234 => sys_tgkill(p, Some(a[0]), a[1], a[2]),
        257 => ret(sys_openat(p, mem, a[0], ptr(a[1]), a[2], a[3])),
        258 => ret(sys_mkdirat(p, mem, a[0], ptr(a[1]), a[2])),
        259 => ret(sys_mknodat(p, mem, a[0], ptr(a[1]), a[2])),
        260 => ret(sys_chown_path(p, mem, a[0], ptr(a[1]), a[2], a[3])),
        261 => ret(sys_utimes(p, mem, a[0], ptr(a[1]), ptr(a[2]))),
        263 => ret(sys_unlinkat(p, mem, a[0], ptr(a[1]), a[2])),
        264 => ret(sys_renameat2(p, mem, a[0], ptr(a[1]), a[2], ptr(a[3]), 0)),
        265 => ret(sys_linkat(p, mem, a[0], ptr(a[1]), a[2], ptr(a[3]), a[4])),
        266 => ret(sys_symlinkat(p, mem, ptr(a[0]), a[1], ptr(a[2]))),
        268 => ret(sys_fchmodat(p, mem, a[0], ptr(a[1]), a[2])),
        262 => ret(sys_stat_path(p, mem, a[0], ptr(a[1]), ptr(a[2]), a[3])),
        267 => ret(sys_readlink(p, mem, a[0], ptr(a[1]), ptr(a[2]), a[3])),
        269 => ret(sys_access(p, mem, a[0], ptr(a[1]), a[2], 0)),
        439 => ret(sys_access(p, mem, a[0], ptr(a[1]), a[2], a[3])),
        270 => sys_pselect6(p, mem, a),
        271 => sys_ppoll(p, mem, a),
        273 => ret(sys_set_robust_list(p, a[0], a[1])),
        274 => ret(sys_get_robust_list(p, mem, a[0], ptr(a[1]), ptr(a[2]))),
        280 => ret(sys_utimensat(p, mem, a[0], ptr(a[1]), ptr(a[2]), a[3])),
        285 => ret(sys_fallocate(p, a[0], a[1], a[2], a[3])),
        306 => ret(sys_fsync(p, a[0])),
        316 => ret(sys_renameat2(p, mem, a[0], ptr(a[1]), a[2], ptr(a[3]), a[4])),
        281 => sys_epoll_pwait(p, mem, a),
        284 => ret(sys_eventfd2(p, a[0], 0)),
        290 => ret(sys_eventfd2(p, a[0], a[1])),
        291 => ret(sys_epoll_create1(p, a[0])),
        293 => ret(sys_pipe2(p, mem, ptr(a[0]), a[1])),
        441 => sys_epoll_pwait2(p, mem, a),
        292 => ret(sys_dup3(p, a[0], a[1], a[2], false)),
        302 => ret(sys_prlimit(p, mem, a[1] as u32, a[2], ptr(a[3]))),
        318 => ret(sys_getrandom(mem, ptr(a[0]), a[1])),
        334 => ret(Err(ENOSYS)), // rseq: glibc carries on without it
        n if REFUSED.contains(&n) => {
            p.stats.count_refused(n);
            ret(Err(EPERM))
        }
        n => {
            p.stats.count_unknown(n);
            ret(Err(ENOSYS))
        }
    }
}

const AT_FDCWD: u64 = (-100i64) as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;

#[cfg(test)]
mod tests;
