//! The Linux syscalls a static glibc, musl or CPython program makes, implemented against
//! [`Process`] and [`GuestMemory`]. A plain function of (state, memory, number, arguments):
//! no KVM here, so every path is testable without a VM.
//!
//! Every pointer and length comes from the guest and is checked before use: a bad pointer is
//! EFAULT, never a monitor crash. Unknown syscalls return ENOSYS and are counted.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::errno::*;
use crate::files::{join_guest_path, Fd, FdKind, OpenFile, PATH_MAX};
use crate::memory::{BadAddress, GuestMemory};
use crate::mm::{Fixed, PROT_WRITE};
use crate::process::*;

/// What the run loop does after a syscall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Resume the program with this rax.
    Return(u64),
    /// Set the FS base (TLS pointer), then resume with rax = 0.
    SetFsBase(u64),
    /// End the call.
    Stop(Stop),
}

type SysResult = Result<u64, Errno>;

impl From<BadAddress> for Errno {
    fn from(_: BadAddress) -> Errno {
        EFAULT
    }
}

fn ret(r: SysResult) -> Outcome {
    Outcome::Return(match r {
        Ok(v) => v,
        Err(Errno(e)) => (-i64::from(e)) as u64,
    })
}

/// x86-64 syscall numbers we name.
pub mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const READV: u64 = 19;
    pub const PREAD64: u64 = 17;
    pub const EXIT: u64 = 60;
    pub const EXIT_GROUP: u64 = 231;
    pub const CLOCK_GETTIME: u64 = 228;
    pub const ARCH_PRCTL: u64 = 158;
}

/// Syscalls refused outright: no processes, no network, no signals to others.
const REFUSED: &[u64] = &[
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, // sockets
    56, 57, 58, 59, 322, 435, // clone, fork, vfork, execve, execveat, clone3
    101, // ptrace
];
/// Syscalls that would modify the filesystem, which is read-only.
const WRITES_FS: &[u64] = &[76, 82, 83, 84, 85, 86, 87, 88, 90, 92, 94, 133, 258, 259, 260, 263, 264, 265, 266, 268, 316];

/// Handles syscall `nr` with `args` for `p`, whose memory is `mem`.
pub fn handle(p: &mut Process, mem: &mut GuestMemory, nr: u64, args: [u64; 6]) -> Outcome {
    p.stats.syscalls += 1;
    let outcome = dispatch(p, mem, nr, args);
    if let Some(trace) = p.trace.as_mut() {
        let result = match &outcome {
            Outcome::Return(v) => Some(*v as i64),
            Outcome::SetFsBase(_) => Some(0),
            Outcome::Stop(_) => None,
        };
        trace(&SyscallRecord { nr, args, result });
    }
    outcome
}

fn dispatch(p: &mut Process, mem: &mut GuestMemory, nr: u64, a: [u64; 6]) -> Outcome {
    match nr {
        0 => ret(sys_read(p, mem, a[0], a[1], a[2])),
        1 => write(p, mem, a[0], a[1], a[2]),
        2 => ret(sys_openat(p, mem, AT_FDCWD, a[0], a[1])),
        3 => ret(p.fds.close(a[0]).map(|_| 0)),
        4 => ret(sys_stat_path(p, mem, AT_FDCWD, a[0], a[1], 0)),
        5 => ret(sys_fstat(p, mem, a[0], a[1])),
        6 => ret(sys_stat_path(p, mem, AT_FDCWD, a[0], a[1], AT_SYMLINK_NOFOLLOW)),
        8 => ret(sys_lseek(p, a[0], a[1], a[2])),
        9 => ret(sys_mmap(p, mem, a)),
        10 => ret(p.space.mprotect(a[0], a[1], a[2] as u32).map(|_| 0)),
        11 => ret(p.space.munmap(a[0], a[1], mem).map(|_| 0)),
        12 => Outcome::Return(p.space.brk_to(a[0], mem)),
        13 => ret(sys_rt_sigaction(p, mem, a[0], a[1], a[2], a[3])),
        14 => ret(sys_rt_sigprocmask(p, mem, a[0], a[1], a[2], a[3])),
        16 => ret(p.fds.get(a[0]).and(Err(ENOTTY))),
        17 => ret(sys_pread(p, mem, a[0], a[1], a[2], a[3])),
        19 => ret(sys_readv(p, mem, a[0], a[1], a[2])),
        20 => writev(p, mem, a[0], a[1], a[2]),
        21 => ret(sys_access(p, mem, AT_FDCWD, a[0], a[1])),
        24 => Outcome::Return(0), // sched_yield
        25 => ret(p.space.mremap(a[0], a[1], a[2], a[3] & 1 != 0 && a[3] & !1 == 0, mem)),
        28 => ret(sys_madvise(p, mem, a[0], a[1], a[2])),
        32 => ret(p.fds.duplicate(a[0], false).and_then(|f| p.fds.insert(f, 0))),
        33 => ret(sys_dup3(p, a[0], a[1], 0, true)),
        35 => ret(sys_nanosleep(p, mem, a[0], a[1])),
        39 | 186 => Outcome::Return(GUEST_PID),
        60 | 231 => Outcome::Stop(Stop::Exit((a[0] & 0xFF) as i32)),
        61 => ret(Err(ECHILD)),
        62 => sys_kill(p, a[0], a[1]),
        63 => ret(sys_uname(mem, a[0])),
        72 => ret(sys_fcntl(p, a[0], a[1], a[2])),
        73..=75 => ret(p.fds.get(a[0]).map(|_| 0)),
        79 => ret(sys_getcwd(p, mem, a[0], a[1])),
        80 => ret(sys_chdir(p, mem, a[0])),
        89 => ret(sys_readlink(p, mem, AT_FDCWD, a[0], a[1], a[2])),
        95 => Outcome::Return(std::mem::replace(&mut p.umask, a[0] as u32 & 0o777) as u64),
        96 => ret(sys_gettimeofday(mem, a[0])),
        97 => ret(sys_prlimit(p, mem, a[0] as u32, 0, a[1])),
        99 => ret(sys_sysinfo(p, mem, a[0])),
        102 | 104 | 107 | 108 => Outcome::Return(GUEST_UID),
        110 => Outcome::Return(GUEST_PPID),
        111 | 121 | 124 => Outcome::Return(GUEST_PID), // getpgrp, getpgid, getsid
        131 => ret(sys_sigaltstack(p, mem, a[0], a[1])),
        158 => sys_arch_prctl(p, mem, a[0], a[1]),
        200 => sys_kill(p, GUEST_PID, a[1]),
        201 => ret(sys_time(mem, a[0])),
        202 => ret(sys_futex(mem, a[0], a[1], a[2], a[3])),
        204 => ret(sys_sched_getaffinity(mem, a[1], a[2])),
        217 => ret(sys_getdents64(p, mem, a[0], a[1], a[2])),
        218 => Outcome::Return(GUEST_PID), // set_tid_address returns the tid
        228 => ret(sys_clock_gettime(mem, a[0], a[1])),
        229 => ret(sys_clock_getres(mem, a[0], a[1])),
        230 => ret(sys_clock_nanosleep(p, mem, a[0], a[1], a[2], a[3])),
        234 => sys_kill(p, a[0], a[2]), // tgkill(tgid, tid, sig)
        257 => ret(sys_openat(p, mem, a[0], a[1], a[2])),
        262 => ret(sys_stat_path(p, mem, a[0], a[1], a[2], a[3])),
        267 => ret(sys_readlink(p, mem, a[0], a[1], a[2], a[3])),
        269 | 439 => ret(sys_access(p, mem, a[0], a[1], a[2])),
        273 => Outcome::Return(0), // set_robust_list
        292 => ret(sys_dup3(p, a[0], a[1], a[2], false)),
        302 => ret(sys_prlimit(p, mem, a[1] as u32, a[2], a[3])),
        318 => ret(sys_getrandom(mem, a[0], a[1])),
        334 => ret(Err(ENOSYS)), // rseq: glibc carries on without it
        n if REFUSED.contains(&n) => ret(Err(EPERM)),
        n if WRITES_FS.contains(&n) => ret(Err(EROFS)),
        n => {
            *p.stats.unknown.entry(n).or_insert(0) += 1;
            ret(Err(ENOSYS))
        }
    }
}

const AT_FDCWD: u64 = (-100i64) as u64;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_EMPTY_PATH: u64 = 0x1000;

// ---------------------------------------------------------------- reading and writing

fn sys_read(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: u64, count: u64) -> SysResult {
    let count = count.min(0x7fff_f000);
    match &p.fds.get(fd)?.kind {
        FdKind::Stdin => {
            let rest = p.stdin.get(p.stdin_pos..).unwrap_or(&[]);
            let n = rest.len().min(count as usize);
            mem.write_user(buf, &rest[..n])?;
            p.stdin_pos += n;
            Ok(n as u64)
        }
        FdKind::Stdout | FdKind::Stderr => Err(EBADF),
        FdKind::File(f) => {
            let dst = mem.user_slice_mut(buf, count)?;
            // SAFETY: `dst` is a checked, exclusively borrowed range of guest memory.
            let n = unsafe { libc::read(f.host.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            if n < 0 { Err(Errno::last()) } else { Ok(n as u64) }
        }
    }
}

fn sys_pread(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: u64, count: u64, off: u64) -> SysResult {
    let count = count.min(0x7fff_f000);
    match &p.fds.get(fd)?.kind {
        FdKind::File(f) => {
            let off = libc::off_t::try_from(off).map_err(|_| EINVAL)?;
            let dst = mem.user_slice_mut(buf, count)?;
            // SAFETY: `dst` is a checked, exclusively borrowed range of guest memory.
            let n = unsafe { libc::pread(f.host.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len(), off) };
            if n < 0 { Err(Errno::last()) } else { Ok(n as u64) }
        }
        _ => Err(ESPIPE),
    }
}

/// Reads the iovec array at `iov` (at most IOV_MAX entries) as (base, len) pairs.
fn read_iovecs(mem: &GuestMemory, iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > 1024 {
        return Err(EINVAL);
    }
    let bytes = mem.user_slice(iov, count * 16)?;
    Ok(bytes
        .chunks_exact(16)
        .map(|c| {
            let word = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap_or([0; 8]));
            (word(0), word(8))
        })
        .collect())
}

fn sys_readv(p: &mut Process, mem: &mut GuestMemory, fd: u64, iov: u64, count: u64) -> SysResult {
    let mut total = 0;
    for (base, len) in read_iovecs(mem, iov, count)? {
        let n = sys_read(p, mem, fd, base, len)?;
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

fn append_output(p: &mut Process, fd: u64, data: &[u8]) -> Result<(), Stop> {
    let used = p.stdout.len() + p.stderr.len();
    if used + data.len() > p.max_output {
        return Err(Stop::OutputLimit { limit: p.max_output });
    }
    let is_stdout = matches!(p.fds.get(fd).map(|f| &f.kind), Ok(FdKind::Stdout));
    if is_stdout { p.stdout.extend_from_slice(data) } else { p.stderr.extend_from_slice(data) }
    Ok(())
}

fn write(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: u64, count: u64) -> Outcome {
    match p.fds.get(fd).map(|f| &f.kind) {
        Ok(FdKind::Stdout | FdKind::Stderr) => {}
        Ok(_) => return ret(Err(EBADF)),
        Err(e) => return ret(Err(e)),
    }
    let data = match mem.user_slice(buf, count) {
        Ok(d) => d,
        Err(_) => return ret(Err(EFAULT)),
    };
    match append_output(p, fd, data) {
        Ok(()) => Outcome::Return(count),
        Err(stop) => Outcome::Stop(stop),
    }
}

fn writev(p: &mut Process, mem: &mut GuestMemory, fd: u64, iov: u64, count: u64) -> Outcome {
    let iovecs = match read_iovecs(mem, iov, count) {
        Ok(v) => v,
        Err(e) => return ret(Err(e)),
    };
    let mut total = 0u64;
    for (base, len) in iovecs {
        match write(p, mem, fd, base, len) {
            Outcome::Return(n) if (n as i64) >= 0 => total += n,
            Outcome::Return(err) if total == 0 => return Outcome::Return(err),
            Outcome::Return(_) => break,
            other => return other,
        }
    }
    Outcome::Return(total)
}

fn sys_lseek(p: &mut Process, fd: u64, off: u64, whence: u64) -> SysResult {
    match &p.fds.get(fd)?.kind {
        FdKind::File(f) => {
            let whence = i32::try_from(whence).map_err(|_| EINVAL)?;
            // SAFETY: lseek on an fd we own; the result is checked.
            let r = unsafe { libc::lseek(f.host.as_raw_fd(), off as i64, whence) };
            if r < 0 { Err(Errno::last()) } else { Ok(r as u64) }
        }
        _ => Err(ESPIPE),
    }
}

// ---------------------------------------------------------------- files and paths

/// Reads a path argument and makes it absolute (as the program sees it) against `dirfd`.
fn guest_path(p: &Process, mem: &GuestMemory, dirfd: u64, path: u64) -> Result<String, Errno> {
    let raw = mem.read_user_cstr(path, PATH_MAX)?.ok_or(ENAMETOOLONG)?;
    let path = String::from_utf8(raw).map_err(|_| ENOENT)?;
    if path.starts_with('/') {
        return Ok(path);
    }
    let base = if dirfd == AT_FDCWD || dirfd as u32 as i32 == -100 {
        p.cwd.clone()
    } else {
        match &p.fds.get(dirfd)?.kind {
            FdKind::File(f) => f.path.clone(),
            _ => return Err(ENOTDIR),
        }
    };
    Ok(join_guest_path(&base, &path))
}

fn sys_openat(p: &mut Process, mem: &mut GuestMemory, dirfd: u64, path: u64, flags: u64) -> SysResult {
    let flags = flags as i32;
    let path = guest_path(p, mem, dirfd, path)?;
    let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE; // O_TMPFILE includes O_DIRECTORY
    if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0 || tmpfile {
        return Err(EROFS);
    }
    let passthrough = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH;
    let host = p.rootfs.open_in_root(&path, libc::O_RDONLY | (flags & passthrough))?;
    let cloexec = flags & libc::O_CLOEXEC != 0;
    p.fds.insert(Fd { kind: FdKind::File(OpenFile { host, path, flags }), cloexec }, 0)
}

/// Writes a host `struct stat` into the guest, with the ownership the program should see.
fn put_stat(mem: &mut GuestMemory, buf: u64, mut st: libc::stat) -> SysResult {
    st.st_uid = GUEST_UID as u32;
    st.st_gid = GUEST_UID as u32;
    // SAFETY: `libc::stat` is plain old data; viewing it as bytes for the copy is sound.
    let bytes = unsafe {
        std::slice::from_raw_parts((&st as *const libc::stat).cast::<u8>(), std::mem::size_of::<libc::stat>())
    };
    mem.write_user(buf, bytes)?;
    Ok(0)
}

fn host_fstat(fd: &impl AsRawFd) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd we own, writing into a properly sized struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

fn stream_stat() -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFIFO | 0o600;
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

fn sys_fstat(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: u64) -> SysResult {
    let st = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => host_fstat(&f.host)?,
        _ => stream_stat(),
    };
    put_stat(mem, buf, st)
}

fn sys_stat_path(p: &mut Process, mem: &mut GuestMemory, dirfd: u64, path: u64, buf: u64, flags: u64) -> SysResult {
    if flags & AT_EMPTY_PATH != 0 && mem.read_user_cstr(path, 1)?.is_some_and(|s| s.is_empty()) {
        return sys_fstat(p, mem, dirfd, buf);
    }
    let path = guest_path(p, mem, dirfd, path)?;
    let nofollow = if flags & AT_SYMLINK_NOFOLLOW != 0 { libc::O_NOFOLLOW } else { 0 };
    let fd = p.rootfs.open_in_root(&path, libc::O_PATH | nofollow)?;
    put_stat(mem, buf, host_fstat(&fd)?)
}

fn sys_access(p: &mut Process, mem: &mut GuestMemory, dirfd: u64, path: u64, mode: u64) -> SysResult {
    let path = guest_path(p, mem, dirfd, path)?;
    p.rootfs.open_in_root(&path, libc::O_PATH)?;
    if mode & libc::W_OK as u64 != 0 { Err(EROFS) } else { Ok(0) }
}

fn sys_readlink(p: &mut Process, mem: &mut GuestMemory, dirfd: u64, path: u64, buf: u64, size: u64) -> SysResult {
    let path = guest_path(p, mem, dirfd, path)?;
    if size == 0 || size > i32::MAX as u64 {
        return Err(EINVAL);
    }
    let target: Vec<u8> = if path == "/proc/self/exe" {
        p.exe_path.as_bytes().to_vec()
    } else {
        let fd = p.rootfs.open_in_root(&path, libc::O_PATH | libc::O_NOFOLLOW)?;
        let mut out = vec![0u8; PATH_MAX];
        // SAFETY: readlinkat on an O_PATH fd we own with an empty path, into a buffer of
        // PATH_MAX bytes; the result is checked.
        let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) };
        if n < 0 {
            return Err(Errno::last());
        }
        out.truncate(n as usize);
        out
    };
    let n = target.len().min(size as usize);
    mem.write_user(buf, &target[..n])?;
    Ok(n as u64)
}

fn sys_getcwd(p: &mut Process, mem: &mut GuestMemory, buf: u64, size: u64) -> SysResult {
    let mut cwd = p.cwd.clone().into_bytes();
    cwd.push(0);
    if (size as usize) < cwd.len() {
        return Err(ERANGE);
    }
    mem.write_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

fn sys_chdir(p: &mut Process, mem: &mut GuestMemory, path: u64) -> SysResult {
    let path = guest_path(p, mem, AT_FDCWD, path)?;
    p.rootfs.open_in_root(&path, libc::O_PATH | libc::O_DIRECTORY)?;
    p.cwd = path;
    Ok(0)
}

fn sys_getdents64(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: u64, count: u64) -> SysResult {
    let FdKind::File(f) = &p.fds.get(fd)?.kind else { return Err(ENOTDIR) };
    let dst = mem.user_slice_mut(buf, count.min(1 << 20))?;
    // SAFETY: getdents64 on an fd we own into a checked range of guest memory; the record
    // format the kernel writes is the one the program expects.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, f.host.as_raw_fd(), dst.as_mut_ptr(), dst.len()) };
    if n < 0 { Err(Errno::last()) } else { Ok(n as u64) }
}

fn sys_dup3(p: &mut Process, old: u64, new: u64, flags: u64, is_dup2: bool) -> SysResult {
    p.fds.get(old)?;
    if old == new {
        return if is_dup2 { Ok(new) } else { Err(EINVAL) };
    }
    if flags & !(libc::O_CLOEXEC as u64) != 0 {
        return Err(EINVAL);
    }
    let entry = p.fds.duplicate(old, flags != 0)?;
    p.fds.insert_at(new, entry)?;
    Ok(new)
}

fn sys_fcntl(p: &mut Process, fd: u64, cmd: u64, arg: u64) -> SysResult {
    let entry = p.fds.get_mut(fd)?;
    match cmd as i32 {
        libc::F_GETFD => Ok(u64::from(entry.cloexec)),
        libc::F_SETFD => {
            entry.cloexec = arg & 1 != 0;
            Ok(0)
        }
        libc::F_GETFL => Ok(match &entry.kind {
            FdKind::Stdin => libc::O_RDONLY as u64,
            FdKind::Stdout | FdKind::Stderr => libc::O_WRONLY as u64,
            FdKind::File(f) => (f.flags & !libc::O_CLOEXEC) as u64,
        }),
        libc::F_SETFL => Ok(0),
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let cloexec = cmd as i32 == libc::F_DUPFD_CLOEXEC;
            let dup = p.fds.duplicate(fd, cloexec)?;
            p.fds.insert(dup, usize::try_from(arg).map_err(|_| EINVAL)?)
        }
        _ => Err(EINVAL),
    }
}

// ---------------------------------------------------------------- memory

fn sys_mmap(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> SysResult {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2] as u32, a[3] as i32, a[4], a[5]);
    let kind = flags & libc::MAP_TYPE;
    if kind != libc::MAP_PRIVATE && kind != libc::MAP_SHARED {
        return Err(EINVAL);
    }
    let fixed = if flags & libc::MAP_FIXED_NOREPLACE != 0 {
        Fixed::NoReplace
    } else if flags & libc::MAP_FIXED != 0 {
        Fixed::Replace
    } else {
        Fixed::Hint
    };
    if flags & libc::MAP_ANONYMOUS != 0 {
        return p.space.mmap(addr, len, prot, fixed, mem);
    }
    // A read-only view of a rootfs file: copied in (the files are small and read-only).
    if off % 4096 != 0 {
        return Err(EINVAL);
    }
    let host_fd = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => f.host.as_raw_fd(),
        _ => return Err(EACCES),
    };
    if kind == libc::MAP_SHARED && prot & PROT_WRITE != 0 {
        return Err(EACCES);
    }
    let start = p.space.mmap(addr, len, prot, fixed, mem)?;
    let dst = mem.user_slice_mut(start, len)?;
    let mut done = 0usize;
    while done < dst.len() {
        let rest = &mut dst[done..];
        // SAFETY: pread into a checked range of guest memory from an fd we own.
        let n = unsafe { libc::pread(host_fd, rest.as_mut_ptr().cast(), rest.len(), (off + done as u64) as i64) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    Ok(start)
}

fn sys_madvise(p: &mut Process, mem: &mut GuestMemory, addr: u64, len: u64, advice: u64) -> SysResult {
    const MADV_DONTNEED: u64 = 4;
    const MADV_FREE: u64 = 8;
    if !addr.is_multiple_of(4096) {
        return Err(EINVAL);
    }
    if advice == MADV_DONTNEED || advice == MADV_FREE {
        let len = crate::mm::page_up(len).ok_or(EINVAL)?;
        mem.user_slice(addr, len)?;
        mem.discard(crate::layout::GuestAddr(addr), len).map_err(|_| ENOMEM)?;
    }
    let _ = p;
    Ok(0)
}

// ---------------------------------------------------------------- signals (recorded only)

fn sys_rt_sigaction(p: &mut Process, mem: &mut GuestMemory, sig: u64, act: u64, old: u64, size: u64) -> SysResult {
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
        let bytes: Vec<u8> =
            [current.handler, current.flags, current.restorer, current.mask].iter().flat_map(|v| v.to_le_bytes()).collect();
        mem.write_user(old, &bytes)?;
    }
    Ok(0)
}

fn sys_rt_sigprocmask(p: &mut Process, mem: &mut GuestMemory, how: u64, set: u64, old: u64, size: u64) -> SysResult {
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

fn sys_sigaltstack(p: &mut Process, mem: &mut GuestMemory, ss: u64, old: u64) -> SysResult {
    let current = p.sigaltstack;
    if ss != 0 {
        p.sigaltstack = mem.read_user_array::<24>(ss)?;
    }
    if old != 0 {
        mem.write_user(old, &current)?;
    }
    Ok(0)
}

/// kill/tkill/tgkill: only the program itself exists. A fatal signal ends the call.
fn sys_kill(p: &mut Process, pid: u64, sig: u64) -> Outcome {
    if pid != GUEST_PID && pid as i64 != 0 && pid as i64 != -1 {
        return ret(Err(ESRCH));
    }
    if sig == 0 {
        return Outcome::Return(0);
    }
    if sig > 64 {
        return ret(Err(EINVAL));
    }
    let action = p.sigactions[(sig - 1) as usize];
    match action.handler {
        SIG_IGN if sig != 9 => Outcome::Return(0),
        SIG_DFL | SIG_IGN => {
            // Default actions of SIGCHLD, SIGCONT, SIGURG and SIGWINCH are to ignore.
            if matches!(sig, 17 | 18 | 23 | 28) { Outcome::Return(0) } else { Outcome::Stop(Stop::Signal(sig as i32)) }
        }
        _ => Outcome::Stop(Stop::Unsupported(format!("signal {sig} has a handler, and snapcall delivers no signals"))),
    }
}

// ---------------------------------------------------------------- time

fn put_timespec(mem: &mut GuestMemory, addr: u64, secs: i64, nanos: i64) -> SysResult {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&secs.to_le_bytes());
    b[8..].copy_from_slice(&nanos.to_le_bytes());
    mem.write_user(addr, &b)?;
    Ok(0)
}

fn host_clock(clock: u64) -> Result<libc::timespec, Errno> {
    let id = match clock {
        0 | 5 | 8 => clock as i32,  // REALTIME, REALTIME_COARSE, REALTIME_ALARM
        1 | 4 | 6 | 7 | 9 => 1,     // MONOTONIC and friends
        2 | 3 => libc::CLOCK_THREAD_CPUTIME_ID,
        _ => return Err(EINVAL),
    };
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a known clock id into a local struct.
    unsafe { libc::clock_gettime(if id == 8 { 0 } else { id }, &mut ts) };
    Ok(ts)
}

fn sys_clock_gettime(mem: &mut GuestMemory, clock: u64, tp: u64) -> SysResult {
    let ts = host_clock(clock)?;
    put_timespec(mem, tp, ts.tv_sec, ts.tv_nsec)
}

fn sys_clock_getres(mem: &mut GuestMemory, clock: u64, tp: u64) -> SysResult {
    host_clock(clock)?;
    if tp != 0 { put_timespec(mem, tp, 0, 1) } else { Ok(0) }
}

fn sys_gettimeofday(mem: &mut GuestMemory, tv: u64) -> SysResult {
    if tv != 0 {
        let ts = host_clock(0)?;
        put_timespec(mem, tv, ts.tv_sec, ts.tv_nsec / 1000)?;
    }
    Ok(0)
}

fn sys_time(mem: &mut GuestMemory, tloc: u64) -> SysResult {
    let secs = host_clock(0)?.tv_sec;
    if tloc != 0 {
        mem.write_user(tloc, &secs.to_le_bytes())?;
    }
    Ok(secs as u64)
}

fn read_duration(mem: &GuestMemory, addr: u64) -> Result<Duration, Errno> {
    let secs = mem.read_user_u64(addr)? as i64;
    let nanos = mem.read_user_u64(addr + 8)? as i64;
    if secs < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(EINVAL);
    }
    Ok(Duration::new(secs as u64, nanos as u32))
}

/// Sleeps, but never past the call's deadline (the run loop then ends the call).
fn sleep(p: &Process, d: Duration) {
    let d = match p.deadline {
        Some(deadline) => d.min(deadline.saturating_duration_since(Instant::now())),
        None => d,
    };
    std::thread::sleep(d);
}

fn sys_nanosleep(p: &mut Process, mem: &mut GuestMemory, req: u64, _rem: u64) -> SysResult {
    let d = read_duration(mem, req)?;
    sleep(p, d);
    Ok(0)
}

fn sys_clock_nanosleep(p: &mut Process, mem: &mut GuestMemory, clock: u64, flags: u64, req: u64, _rem: u64) -> SysResult {
    let d = read_duration(mem, req)?;
    let d = if flags & 1 != 0 {
        let now = host_clock(clock)?;
        d.saturating_sub(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
    } else {
        d
    };
    sleep(p, d);
    Ok(0)
}

// ---------------------------------------------------------------- process and system facts

fn sys_arch_prctl(p: &mut Process, mem: &mut GuestMemory, code: u64, addr: u64) -> Outcome {
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
        ARCH_GET_FS => ret(mem.write_user(addr, &p.fs_base.to_le_bytes()).map(|_| 0).map_err(Into::into)),
        _ => ret(Err(EINVAL)),
    }
}

fn sys_uname(mem: &mut GuestMemory, buf: u64) -> SysResult {
    let mut u = [0u8; 65 * 6];
    for (i, field) in ["Linux", "snapcall", "6.1.0-snapcall", "#1 SMP", "x86_64", "(none)"].iter().enumerate() {
        u[i * 65..i * 65 + field.len()].copy_from_slice(field.as_bytes());
    }
    mem.write_user(buf, &u)?;
    Ok(0)
}

fn sys_sysinfo(p: &mut Process, mem: &mut GuestMemory, buf: u64) -> SysResult {
    let total = p.space.memory_size();
    let free = total.saturating_sub(p.space.used_bytes());
    let mut s = [0u8; 112];
    s[32..40].copy_from_slice(&total.to_le_bytes()); // totalram
    s[40..48].copy_from_slice(&free.to_le_bytes()); // freeram
    s[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    s[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    mem.write_user(buf, &s)?;
    Ok(0)
}

fn sys_sched_getaffinity(mem: &mut GuestMemory, len: u64, mask: u64) -> SysResult {
    if len < 8 {
        return Err(EINVAL);
    }
    mem.write_user(mask, &1u64.to_le_bytes())?;
    Ok(8)
}

fn sys_prlimit(p: &mut Process, mem: &mut GuestMemory, resource: u32, _new: u64, old: u64) -> SysResult {
    const INF: u64 = u64::MAX;
    let (cur, max) = match resource {
        3 => (crate::layout::STACK_RESERVE, INF),               // RLIMIT_STACK
        7 => (crate::files::MAX_FDS as u64, crate::files::MAX_FDS as u64), // RLIMIT_NOFILE
        2 | 9 => (p.space.memory_size(), p.space.memory_size()), // RLIMIT_DATA, RLIMIT_AS
        0..=15 => (INF, INF),
        _ => return Err(EINVAL),
    };
    if old != 0 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&cur.to_le_bytes());
        b[8..].copy_from_slice(&max.to_le_bytes());
        mem.write_user(old, &b)?;
    }
    Ok(0)
}

fn sys_getrandom(mem: &mut GuestMemory, buf: u64, len: u64) -> SysResult {
    let dst = mem.user_slice_mut(buf, len.min(33_554_431))?;
    let mut filled = 0;
    while filled < dst.len() {
        let rest = &mut dst[filled..];
        // SAFETY: getrandom into a checked range of guest memory.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            return Err(Errno::last());
        }
        filled += n as usize;
    }
    Ok(filled as u64)
}

/// futex with one thread: nobody else can change the word or wake us.
fn sys_futex(mem: &mut GuestMemory, uaddr: u64, op: u64, val: u64, timeout: u64) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    const FUTEX_WAIT_BITSET: u64 = 9;
    const FUTEX_WAKE_BITSET: u64 = 10;
    match op & 0x7f {
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(0),
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let word = u32::from_le_bytes(mem.read_user_array::<4>(uaddr)?);
            if word != val as u32 {
                Err(EAGAIN)
            } else if timeout != 0 {
                Err(ETIMEDOUT)
            } else {
                Err(EINVAL)
            }
        }
        _ => Err(ENOSYS),
    }
}

/// The name of syscall `nr`, for traces.
pub fn name(nr: u64) -> std::borrow::Cow<'static, str> {
    let known = match nr {
        0 => "read", 1 => "write", 2 => "open", 3 => "close", 4 => "stat", 5 => "fstat", 6 => "lstat",
        7 => "poll", 8 => "lseek", 9 => "mmap", 10 => "mprotect", 11 => "munmap", 12 => "brk",
        13 => "rt_sigaction", 14 => "rt_sigprocmask", 16 => "ioctl", 17 => "pread64", 19 => "readv",
        20 => "writev", 21 => "access", 24 => "sched_yield", 25 => "mremap", 28 => "madvise", 32 => "dup",
        33 => "dup2", 35 => "nanosleep", 39 => "getpid", 41 => "socket", 42 => "connect", 49 => "bind",
        56 => "clone", 57 => "fork", 58 => "vfork", 59 => "execve", 60 => "exit", 61 => "wait4",
        62 => "kill", 63 => "uname", 72 => "fcntl", 79 => "getcwd", 80 => "chdir", 89 => "readlink",
        95 => "umask", 96 => "gettimeofday", 97 => "getrlimit", 99 => "sysinfo", 101 => "ptrace",
        102 => "getuid", 104 => "getgid", 107 => "geteuid", 108 => "getegid", 110 => "getppid",
        131 => "sigaltstack", 158 => "arch_prctl", 186 => "gettid", 200 => "tkill", 201 => "time",
        202 => "futex", 204 => "sched_getaffinity", 217 => "getdents64", 218 => "set_tid_address",
        228 => "clock_gettime", 229 => "clock_getres", 230 => "clock_nanosleep", 231 => "exit_group",
        234 => "tgkill", 257 => "openat", 262 => "newfstatat", 267 => "readlinkat", 269 => "faccessat",
        273 => "set_robust_list", 292 => "dup3", 302 => "prlimit64", 318 => "getrandom", 322 => "execveat",
        332 => "statx", 334 => "rseq", 435 => "clone3", 439 => "faccessat2",
        _ => return format!("syscall_{nr}").into(),
    };
    known.into()
}
