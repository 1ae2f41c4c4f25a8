//! pipe, socketpair, eventfd and the socket calls a socketpair answers (send/recv, msg forms,
//! shutdown, names, options). The objects are in [`crate::ipc`]; this is their syscall face.
//!
//! There is no network and no filesystem namespace for sockets. `socket()` of AF_INET or
//! AF_INET6 (or any family but AF_UNIX) is EPERM, what a seccomp-sandboxed Linux process
//! (Docker's and Podman's default profile action, SECCOMP_RET_ERRNO(EPERM)) sees, and Python
//! turns it into PermissionError (EACCES is an LSM's answer, SELinux's, AppArmor's). An
//! AF_UNIX `socket()` gives a socket that stays unconnected: `bind` and `connect` to a name
//! are EPERM the same way, reads and writes ENOTCONN. Code that only makes one to probe
//! (CPython's test.support `skip_unless_bind_unix_socket`, at import of five test_asyncio
//! modules) then goes on, and the probe's bind says what is missing.

use std::sync::Arc;

use super::signals::signal_self;
use super::*;
use crate::ipc::{self, Endpoint, EndpointKind, EventFd, SOCKET_CAPACITY};

const SIGPIPE: u64 = 13;
const MSG_PEEK: u64 = 0x2;
const MSG_TRUNC: u64 = 0x20;
const MSG_DONTWAIT: u64 = 0x40;
const AF_UNIX: u64 = 1;
const SOL_SOCKET: u64 = 1;

/// An fd's file is non-blocking (one that never waits counts as non-blocking).
fn nonblocking(p: &Process, fd: u64) -> bool {
    match p.fds.get(fd).map(|f| &f.kind) {
        Ok(FdKind::Endpoint(e)) => e.nonblocking(),
        Ok(FdKind::EventFd(e)) => e.nonblocking(),
        _ => true,
    }
}

/// A would-block EAGAIN on a blocking fd becomes a wait for `what`; anything else returns.
pub(super) fn or_block(p: &Process, fd: u64, r: SysResult, syscall: &'static str, what: WaitFor) -> Outcome {
    match r {
        Err(EAGAIN) if !nonblocking(p, fd) => Outcome::Block(Wait::forever(syscall, what)),
        r => ret(r),
    }
}

/// A write nobody can read: SIGPIPE (fatal unless ignored), then EPIPE.
pub(super) fn broken_pipe(p: &mut Process) -> Outcome {
    match signal_self(p, SIGPIPE) {
        Outcome::Return(_) => ret(Err(EPIPE)),
        other => other,
    }
}

/// An fd's endpoint, or ENOTSOCK / EBADF.
fn socket(p: &Process, fd: u64) -> Result<Arc<Endpoint>, Errno> {
    match &p.fds.get(fd)?.kind {
        FdKind::Endpoint(e) if e.is_socket() => Ok(e.clone()),
        _ => Err(ENOTSOCK),
    }
}

/// Puts two new fds in the table and their numbers, as two ints, at `out`.
fn install_pair(
    p: &mut Process,
    mem: &mut GuestMemory,
    out: UserAddr,
    a: FdKind,
    b: FdKind,
    cloexec: bool,
) -> SysResult {
    mem.user_slice_mut(out, 8)?; // EFAULT before any fd is made
    let fa = p.fds.insert(Fd { kind: a, cloexec }, 0)?;
    let fb = match p.fds.insert(Fd { kind: b, cloexec }, 0) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = p.fds.close(fa);
            return Err(e);
        }
    };
    mem.write_user_obj(out, [fa as i32, fb as i32])?;
    Ok(0)
}

pub(super) fn sys_pipe2(p: &mut Process, mem: &mut GuestMemory, out: UserAddr, flags: u64) -> SysResult {
    if flags & !((libc::O_CLOEXEC | libc::O_NONBLOCK) as u64) != 0 {
        return Err(EINVAL); // O_DIRECT (packet mode) and O_NOTIFICATION_PIPE are not offered
    }
    let (r, w) = ipc::pipe(&p.budget, flags & libc::O_NONBLOCK as u64 != 0);
    install_pair(p, mem, out, FdKind::Endpoint(r), FdKind::Endpoint(w), flags & libc::O_CLOEXEC as u64 != 0)
}

pub(super) fn sys_socketpair(
    p: &mut Process,
    mem: &mut GuestMemory,
    domain: u64,
    sock_type: u64,
    protocol: u64,
    out: UserAddr,
) -> SysResult {
    let (nonblock, cloexec) = (libc::SOCK_NONBLOCK as u64, libc::SOCK_CLOEXEC as u64);
    let base = (sock_type & !(nonblock | cloexec)) as i32;
    match domain {
        AF_UNIX => {}
        2 | 10 => return Err(EPERM), // AF_INET, AF_INET6: no network, as for socket()
        _ => return Err(EAFNOSUPPORT),
    }
    if !matches!(base, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) {
        return Err(EINVAL);
    }
    if protocol != 0 && protocol != AF_UNIX {
        return Err(EPROTONOSUPPORT);
    }
    let (a, b) = ipc::socketpair(&p.budget, base, sock_type & nonblock != 0);
    install_pair(p, mem, out, FdKind::Endpoint(a), FdKind::Endpoint(b), sock_type & cloexec != 0)
}

pub(super) fn sys_eventfd2(p: &mut Process, initval: u64, flags: u64) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    let (nonblock, cloexec) = (libc::O_NONBLOCK as u64, libc::O_CLOEXEC as u64);
    if flags & !(EFD_SEMAPHORE | nonblock | cloexec) != 0 {
        return Err(EINVAL);
    }
    let e = EventFd::new(u64::from(initval as u32), flags & EFD_SEMAPHORE != 0, flags & nonblock != 0);
    p.fds.insert(Fd { kind: FdKind::EventFd(e), cloexec: flags & cloexec != 0 }, 0)
}

/// read(2) of an eventfd: the 8-byte counter.
pub(super) fn read_eventfd(e: &EventFd, mem: &mut GuestMemory, buf: UserAddr, count: u64) -> SysResult {
    if count < 8 {
        return Err(EINVAL);
    }
    mem.user_slice_mut(buf, 8)?;
    let value = e.read()?;
    mem.write_user_obj(buf, value)?;
    Ok(8)
}

/// write(2) to an eventfd: adds an 8-byte value.
pub(super) fn write_eventfd(e: &EventFd, mem: &GuestMemory, buf: UserAddr, count: u64) -> SysResult {
    if count < 8 {
        return Err(EINVAL);
    }
    e.write(mem.read_user_u64(buf)?)?;
    Ok(8)
}

/// write(2), send(2): queues `data` on `e`. A non-blocking write queues what fits (EAGAIN
/// if nothing does); a blocking one, as Linux's pipe_write and unix_stream_sendmsg, waits
/// until all of it is queued, the scheduler running it again as room comes; a signal that
/// interrupts it after some bytes makes it return those (`Wait::timeout_result`).
pub(super) fn write_endpoint(p: &mut Process, fd: u64, e: &Endpoint, data: &[u8], nosignal: bool) -> Outcome {
    // The re-run of this write after it blocked: the bytes it queued are not queued again.
    let done = match p.threads.take_rerun() {
        Some(Wait { what: WaitFor::Writable { fd: f, written }, .. }) if f == fd => (written as usize).min(data.len()),
        _ => 0,
    };
    let blocked = |written: usize| {
        let what = WaitFor::Writable { fd, written: written as u64 };
        let partial = if written > 0 { Ok(written as u64) } else { Err(EAGAIN) };
        Outcome::Block(Wait { what, until: None, timeout_result: super::block::raw(partial), syscall: "write" })
    };
    match e.write(&data[done..]) {
        Err(EPIPE) if done > 0 => ret(Ok(done as u64)),
        Err(EPIPE) if nosignal => ret(Err(EPIPE)),
        Err(EPIPE) => broken_pipe(p),
        Ok(n) if done + n < data.len() && !e.nonblocking() => {
            if n > 0 {
                p.threads.note_change(); // a reader may go on now (datagrams go whole)
            }
            blocked(done + n)
        }
        Ok(n) => ret(Ok((done + n) as u64)),
        Err(EAGAIN) if !e.nonblocking() => blocked(done),
        Err(_) if done > 0 => ret(Ok(done as u64)),
        Err(err) => ret(Err(err)),
    }
}

/// A send's or recv's bytes gathered in the monitor: at most what one socket buffer holds
/// (a longer send stores no more than that anyway).
const MAX_TRANSFER: u64 = SOCKET_CAPACITY as u64 + 1;

pub(super) fn sys_sendto(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    buf: UserAddr,
    len: u64,
    flags: u64,
) -> Outcome {
    let e = match socket(p, fd) {
        Ok(e) => e,
        Err(err) => return ret(Err(err)),
    };
    let data = match mem.user_slice(buf, len.min(MAX_TRANSFER)) {
        Ok(d) => d.to_vec(),
        Err(_) => return ret(Err(EFAULT)),
    };
    send(p, fd, &e, &data, flags)
}

fn send(p: &mut Process, fd: u64, e: &Endpoint, data: &[u8], flags: u64) -> Outcome {
    const MSG_NOSIGNAL: u64 = 0x4000;
    let dontwait = flags & MSG_DONTWAIT != 0;
    match write_endpoint(p, fd, e, data, flags & MSG_NOSIGNAL != 0) {
        // What fit, or EAGAIN.
        Outcome::Block(wait) if dontwait => Outcome::Return(wait.timeout_result),
        other => other,
    }
}

/// recv into a monitor buffer of at most `len` bytes: (bytes, datagram's whole length).
fn recv(p: &Process, fd: u64, e: &Endpoint, len: u64, flags: u64) -> Result<(Vec<u8>, usize), Outcome> {
    let mut data = vec![0u8; len.min(MAX_TRANSFER) as usize];
    match e.read(&mut data, flags & MSG_PEEK != 0) {
        Ok((n, whole)) => {
            data.truncate(n);
            Ok((data, whole))
        }
        Err(EAGAIN) if flags & MSG_DONTWAIT != 0 => Err(ret(Err(EAGAIN))),
        Err(err) => Err(or_block(p, fd, Err(err), "recv", WaitFor::Readable { fd })),
    }
}

#[allow(clippy::too_many_arguments)] // recvfrom(2) has six arguments besides the process and memory
pub(super) fn sys_recvfrom(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    buf: UserAddr,
    len: u64,
    flags: u64,
    addr: UserAddr,
    addrlen: UserAddr,
) -> Outcome {
    let e = match socket(p, fd) {
        Ok(e) => e,
        Err(err) => return ret(Err(err)),
    };
    if mem.user_slice_mut(buf, len.min(MAX_TRANSFER)).is_err() {
        return ret(Err(EFAULT));
    }
    let (data, whole) = match recv(p, fd, &e, len, flags) {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    let r = mem.write_user(buf, &data).map_err(Errno::from).and_then(|_| {
        // The peer of a socketpair has no name: an address length of 0.
        if !addr.is_null() && !addrlen.is_null() {
            mem.write_user_obj(addrlen, 0u32)?;
        }
        Ok(if flags & MSG_TRUNC != 0 { whole } else { data.len() } as u64)
    });
    ret(r)
}

pub(super) fn sys_sendmsg(p: &mut Process, mem: &mut GuestMemory, fd: u64, msg: UserAddr, flags: u64) -> Outcome {
    let gathered = (|| {
        let e = socket(p, fd)?;
        let h: Msghdr = mem.read_user_obj(msg)?;
        if h.msg_controllen != 0 {
            return Err(EOPNOTSUPP); // no SCM_RIGHTS / SCM_CREDENTIALS: one process, nothing to pass
        }
        let mut data = Vec::new();
        for (base, len) in read_iovecs(mem, UserAddr::new(h.msg_iov), h.msg_iovlen)? {
            let want = len.min(MAX_TRANSFER - data.len() as u64);
            data.extend_from_slice(mem.user_slice(base, want)?);
            if data.len() as u64 >= MAX_TRANSFER {
                break;
            }
        }
        Ok((e, data))
    })();
    match gathered {
        Ok((e, data)) => send(p, fd, &e, &data, flags),
        Err(err) => ret(Err(err)),
    }
}

pub(super) fn sys_recvmsg(p: &mut Process, mem: &mut GuestMemory, fd: u64, msg: UserAddr, flags: u64) -> Outcome {
    let prepared = (|| {
        let e = socket(p, fd)?;
        let h: Msghdr = mem.read_user_obj(msg)?;
        let iovecs = read_iovecs(mem, UserAddr::new(h.msg_iov), h.msg_iovlen)?;
        let mut total = 0u64;
        for &(base, len) in &iovecs {
            mem.user_slice_mut(base, len.min(MAX_TRANSFER))?;
            total = total.saturating_add(len);
        }
        Ok((e, h, iovecs, total))
    })();
    let (e, mut h, iovecs, total) = match prepared {
        Ok(v) => v,
        Err(err) => return ret(Err(err)),
    };
    let (data, whole) = match recv(p, fd, &e, total, flags) {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    let r = (|| {
        let mut at = 0;
        for (base, len) in iovecs {
            let n = (len as usize).min(data.len() - at);
            mem.write_user(base, &data[at..at + n])?;
            at += n;
        }
        let truncated = whole > data.len();
        h.msg_namelen = 0; // the peer has no name
        h.msg_controllen = 0; // no ancillary data
        h.msg_flags = if truncated { MSG_TRUNC as i32 } else { 0 };
        mem.write_user_obj(msg, h)?;
        Ok(if flags & MSG_TRUNC != 0 { whole } else { data.len() } as u64)
    })();
    ret(r)
}

pub(super) fn sys_shutdown(p: &mut Process, fd: u64, how: u64) -> SysResult {
    socket(p, fd)?.shutdown(i32::try_from(how).map_err(|_| EINVAL)?)?;
    Ok(0)
}

/// getsockname, getpeername: a socketpair's sockets are unnamed AF_UNIX sockets.
pub(super) fn sys_getsockname(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    addr: UserAddr,
    addrlen: UserAddr,
) -> SysResult {
    socket(p, fd)?;
    let len: i32 = mem.read_user_obj(addrlen)?;
    if len < 0 {
        return Err(EINVAL);
    }
    let family = (AF_UNIX as u16).to_le_bytes();
    mem.write_user(addr, &family[..(len as usize).min(2)])?;
    mem.write_user_obj(addrlen, 2u32)?;
    Ok(0)
}

pub(super) fn sys_getsockopt(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    level: u64,
    name: u64,
    val: UserAddr,
    lenp: UserAddr,
) -> SysResult {
    let e = socket(p, fd)?;
    if level != SOL_SOCKET {
        return Err(EOPNOTSUPP);
    }
    let sock_type = match e.kind {
        EndpointKind::Socket { sock_type } => sock_type,
        _ => return Err(ENOTSOCK),
    };
    let int = |v: i32| v.to_le_bytes().to_vec();
    let value = match name as i32 {
        libc::SO_TYPE => int(sock_type),
        libc::SO_DOMAIN => int(AF_UNIX as i32),
        libc::SO_SNDBUF | libc::SO_RCVBUF => int(SOCKET_CAPACITY as i32),
        libc::SO_ERROR
        | libc::SO_PROTOCOL
        | libc::SO_ACCEPTCONN
        | libc::SO_REUSEADDR
        | libc::SO_KEEPALIVE
        | libc::SO_PASSCRED
        | libc::SO_BROADCAST
        | libc::SO_LINGER => int(0),
        libc::SO_PEERCRED => {
            let mut cred = (GUEST_PID as u32).to_le_bytes().to_vec();
            cred.extend_from_slice(&(GUEST_UID as u32).to_le_bytes());
            cred.extend_from_slice(&(GUEST_UID as u32).to_le_bytes());
            cred
        }
        _ => return Err(ENOPROTOOPT),
    };
    let len: i32 = mem.read_user_obj(lenp)?;
    if len < 0 {
        return Err(EINVAL);
    }
    let n = (len as usize).min(value.len());
    mem.write_user(val, &value[..n])?;
    mem.write_user_obj(lenp, n as u32)?;
    Ok(0)
}

pub(super) fn sys_setsockopt(
    p: &mut Process,
    mem: &GuestMemory,
    fd: u64,
    level: u64,
    val: UserAddr,
    len: u64,
) -> SysResult {
    socket(p, fd)?;
    if level != SOL_SOCKET {
        return Err(EOPNOTSUPP);
    }
    if (len as i32) < 4 {
        return Err(EINVAL);
    }
    mem.user_slice(val, 4)?;
    Ok(0) // buffer sizes, SO_PASSCRED, SO_REUSEADDR: accepted, nothing to change
}

/// bind, connect, listen, accept on an fd: a socketpair's sockets are connected already and
/// cannot listen; anything else is not a socket.
pub(super) fn sys_connected_socket_op(p: &Process, fd: u64, connect: bool) -> SysResult {
    socket(p, fd)?;
    Err(Errno(if connect { libc::EISCONN } else { libc::EINVAL }))
}

/// socket(2): AF_UNIX of a type socketpair offers makes an unconnected socket; every other
/// family is refused (see the top of this file).
pub(super) fn sys_socket(p: &mut Process, domain: u64, sock_type: u64, protocol: u64) -> SysResult {
    let (nonblock, cloexec) = (libc::SOCK_NONBLOCK as u64, libc::SOCK_CLOEXEC as u64);
    let base = (sock_type & !(nonblock | cloexec)) as i32;
    if domain != AF_UNIX {
        return Err(EPERM);
    }
    if !matches!(base, libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET) {
        return Err(EINVAL);
    }
    if protocol != 0 && protocol != AF_UNIX {
        return Err(EPROTONOSUPPORT);
    }
    let e = ipc::unconnected_socket(base, sock_type & nonblock != 0);
    p.fds.insert(Fd { kind: FdKind::Endpoint(e), cloexec: sock_type & cloexec != 0 }, 0)
}

/// bind(2) and connect(2): an unconnected socket cannot get a name or reach one (EPERM, as
/// socket() of the network); a socketpair's are connected already.
pub(super) fn sys_bind_or_connect(p: &Process, fd: u64, connect: bool) -> SysResult {
    if socket(p, fd)?.is_unconnected() {
        return Err(EPERM);
    }
    sys_connected_socket_op(p, fd, connect)
}

/// FIONREAD: bytes a read would take now.
pub(super) fn bytes_ready(kind: &FdKind) -> Option<usize> {
    match kind {
        FdKind::Endpoint(e) => Some(e.pending()),
        _ => None,
    }
}
