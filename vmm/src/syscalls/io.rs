//! read, write and their vector and positioned forms; lseek.

use super::*;

// ---------------------------------------------------------------- reading and writing

pub(super) fn sys_read(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr, count: u64) -> SysResult {
    let count = count.min(0x7fff_f000);
    match &p.fds.get(fd)?.kind {
        FdKind::Stdin => {
            let n = read_request_at(p, mem, p.stdin_pos, buf, count)?;
            p.stdin_pos += n;
            Ok(n as u64)
        }
        FdKind::Stdout | FdKind::Stderr => Err(EBADF),
        FdKind::Entropy => {
            let dst = mem.user_slice_mut(buf, count)?;
            fill_random(dst)?;
            Ok(dst.len() as u64)
        }
        FdKind::File(f) => {
            let dst = mem.user_slice_mut(buf, count)?;
            // SAFETY: `dst` is a checked, exclusively borrowed range of guest memory.
            let n = unsafe { libc::read(f.host.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
            if n < 0 {
                Err(Errno::last())
            } else {
                Ok(n as u64)
            }
        }
        // EAGAIN here is "nothing yet": the caller waits unless the file is non-blocking.
        FdKind::Endpoint(e) => {
            let dst = mem.user_slice_mut(buf, count)?;
            Ok(e.read(dst, false)?.0 as u64)
        }
        FdKind::EventFd(e) => read_eventfd(&e.clone(), mem, buf, count),
        FdKind::Epoll(_) => Err(EINVAL),
        FdKind::Overlay(f) => {
            let dst = mem.user_slice_mut(buf, count)?;
            Ok(f.read(dst)? as u64)
        }
        FdKind::Dir(_) => Err(EISDIR),
        FdKind::Device(d) => read_device(*d, mem, buf, count),
    }
}

/// A read of /dev/null (end of file), /dev/zero and /dev/full (zeros), /dev/urandom.
fn read_device(d: crate::files::Device, mem: &mut GuestMemory, buf: UserAddr, count: u64) -> SysResult {
    use crate::files::Device;
    match d {
        Device::Null => Ok(0),
        Device::Zero | Device::Full => {
            let dst = mem.user_slice_mut(buf, count)?;
            dst.fill(0);
            Ok(dst.len() as u64)
        }
        Device::Random => {
            let dst = mem.user_slice_mut(buf, count)?;
            fill_random(dst)?;
            Ok(dst.len() as u64)
        }
    }
}

/// read(2): a pipe, socket or eventfd with nothing to read waits unless non-blocking.
pub(super) fn read(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr, count: u64) -> Outcome {
    let r = sys_read(p, mem, fd, buf, count);
    or_block(p, fd, r, "read", WaitFor::Readable { fd })
}

pub(super) fn readv(p: &mut Process, mem: &mut GuestMemory, fd: u64, iov: UserAddr, count: u64) -> Outcome {
    let r = sys_readv(p, mem, fd, iov, count);
    or_block(p, fd, r, "readv", WaitFor::Readable { fd })
}

pub(super) fn sys_pread(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    buf: UserAddr,
    count: u64,
    off: u64,
) -> SysResult {
    let count = count.min(0x7fff_f000);
    match &p.fds.get(fd)?.kind {
        FdKind::Stdin => {
            if (off as i64) < 0 {
                return Err(EINVAL);
            }
            // An offset past the end (or past usize) reads nothing, as at end of file.
            let at = usize::try_from(off).unwrap_or(usize::MAX);
            Ok(read_request_at(p, mem, at, buf, count)? as u64)
        }
        FdKind::File(f) => {
            let off = libc::off_t::try_from(off).map_err(|_| EINVAL)?;
            let dst = mem.user_slice_mut(buf, count)?;
            // SAFETY: `dst` is a checked, exclusively borrowed range of guest memory.
            let n = unsafe { libc::pread(f.host.as_raw_fd(), dst.as_mut_ptr().cast(), dst.len(), off) };
            if n < 0 {
                Err(Errno::last())
            } else {
                Ok(n as u64)
            }
        }
        FdKind::Overlay(f) => {
            if (off as i64) < 0 {
                return Err(EINVAL);
            }
            if !f.readable() {
                return Err(EBADF);
            }
            let dst = mem.user_slice_mut(buf, count)?;
            Ok(f.file().read_at(off, dst) as u64)
        }
        FdKind::Dir(_) => Err(EISDIR),
        FdKind::Device(d) => read_device(*d, mem, buf, count),
        _ => Err(ESPIPE),
    }
}

/// pwrite64: a file of the writable layer at `off` (O_APPEND files append, as on Linux).
pub(super) fn sys_pwrite(
    p: &mut Process,
    mem: &mut GuestMemory,
    fd: u64,
    buf: UserAddr,
    count: u64,
    off: u64,
) -> SysResult {
    match &p.fds.get(fd)?.kind {
        FdKind::Overlay(f) => {
            if (off as i64) < 0 {
                return Err(EINVAL);
            }
            if !f.writable() {
                return Err(EBADF);
            }
            let data = mem.user_slice(buf, count.min(0x7fff_f000))?;
            let mut file = f.file();
            let at = if f.flags & libc::O_APPEND != 0 { file.len() } else { off };
            Ok(file.write_at(at, data)? as u64)
        }
        FdKind::Device(d) => write_device(*d, count),
        FdKind::File(_) | FdKind::Stdin => Err(EBADF),
        FdKind::Dir(_) => Err(EISDIR),
        _ => Err(ESPIPE),
    }
}

/// A write to a device: accepted whole, or ENOSPC for /dev/full.
fn write_device(d: crate::files::Device, count: u64) -> SysResult {
    match d {
        crate::files::Device::Full => Err(ENOSPC),
        _ => Ok(count.min(0x7fff_f000)),
    }
}

/// Copies up to `count` bytes of the request (fd 0) from offset `at` to the guest's `buf`.
fn read_request_at(p: &Process, mem: &mut GuestMemory, at: usize, buf: UserAddr, count: u64) -> Result<usize, Errno> {
    let rest = p.stdin.get(at..).unwrap_or(&[]);
    let n = rest.len().min(usize::try_from(count).unwrap_or(usize::MAX));
    mem.write_user(buf, &rest[..n])?;
    Ok(n)
}

/// Reads the iovec array at `iov` (at most IOV_MAX entries) as (base, len) pairs.
pub(super) fn read_iovecs(mem: &GuestMemory, iov: UserAddr, count: u64) -> Result<Vec<(UserAddr, u64)>, Errno> {
    if count > 1024 {
        return Err(EINVAL);
    }
    let size = std::mem::size_of::<Iovec>() as u64;
    (0..count)
        .map(|i| {
            let v: Iovec = mem.read_user_obj(iov.add(i * size))?;
            Ok((UserAddr::new(v.iov_base), v.iov_len))
        })
        .collect()
}

pub(super) fn sys_readv(p: &mut Process, mem: &mut GuestMemory, fd: u64, iov: UserAddr, count: u64) -> SysResult {
    let mut total = 0;
    for (base, len) in read_iovecs(mem, iov, count)? {
        let n = match sys_read(p, mem, fd, base, len) {
            Ok(n) => n,
            // What was read is returned (a pipe emptied by the first buffers ends the read).
            Err(_) if total > 0 => break,
            Err(e) => return Err(e),
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

/// lseek's arithmetic on a file of `len` bytes read up to `pos` (the request on fd 0).
fn seek_in(len: i64, pos: i64, off: i64, whence: u64) -> Result<i64, Errno> {
    let new = match whence as i32 {
        libc::SEEK_SET => Some(off),
        libc::SEEK_CUR => pos.checked_add(off),
        libc::SEEK_END => len.checked_add(off),
        // The request has no holes: data runs from 0 to len, one hole at len.
        libc::SEEK_DATA if (0..len).contains(&off) => Some(off),
        libc::SEEK_HOLE if (0..len).contains(&off) => Some(len),
        libc::SEEK_DATA | libc::SEEK_HOLE => return Err(if off < 0 { EINVAL } else { ENXIO }),
        _ => return Err(EINVAL),
    };
    match new {
        Some(n) if n >= 0 => Ok(n),
        Some(_) => Err(EINVAL),
        None => Err(EOVERFLOW),
    }
}

pub(crate) fn append_output(p: &mut Process, fd: u64, data: &[u8]) -> Result<(), Stop> {
    let used = p.stdout.len() + p.stderr.len();
    if used + data.len() > p.max_output {
        return Err(Stop::OutputLimit { limit: p.max_output });
    }
    let is_stdout = matches!(p.fds.get(fd).map(|f| &f.kind), Ok(FdKind::Stdout));
    if is_stdout {
        p.stdout.extend_from_slice(data)
    } else {
        p.stderr.extend_from_slice(data)
    }
    Ok(())
}

pub(super) fn write(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr, count: u64) -> Outcome {
    match p.fds.get(fd).map(|f| &f.kind) {
        Ok(FdKind::Stdout | FdKind::Stderr) => {}
        Ok(FdKind::Endpoint(e)) => {
            let e = e.clone();
            return match mem.user_slice(buf, count) {
                Ok(data) => write_endpoint(p, fd, &e, data, false),
                Err(_) => ret(Err(EFAULT)),
            };
        }
        Ok(FdKind::EventFd(e)) => {
            let r = write_eventfd(&e.clone(), mem, buf, count);
            return or_block(p, fd, r, "write", WaitFor::Writable { fd, written: 0 });
        }
        Ok(FdKind::Epoll(_)) => return ret(Err(EINVAL)),
        Ok(FdKind::Overlay(f)) => {
            let f = f.clone();
            return ret(mem
                .user_slice(buf, count.min(0x7fff_f000))
                .map_err(Errno::from)
                .and_then(|data| Ok(f.write(data)? as u64)));
        }
        Ok(FdKind::Device(d)) => {
            let d = *d;
            return ret(mem.user_slice(buf, count).map_err(Errno::from).and_then(|_| write_device(d, count)));
        }
        Ok(FdKind::Dir(_)) => return ret(Err(EISDIR)),
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

pub(super) fn writev(p: &mut Process, mem: &mut GuestMemory, fd: u64, iov: UserAddr, count: u64) -> Outcome {
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
            // A pipe filled by the first buffers: what went is the result (with what this
            // buffer's write queued before it blocked).
            Outcome::Block(w) if total > 0 => {
                if let WaitFor::Writable { written, .. } = w.what {
                    total += written;
                }
                break;
            }
            other => return other,
        }
    }
    Outcome::Return(total)
}

pub(super) fn sys_lseek(p: &mut Process, fd: u64, off: u64, whence: u64) -> SysResult {
    match &p.fds.get(fd)?.kind {
        FdKind::Stdin => {
            let pos = seek_in(p.stdin.len() as i64, p.stdin_pos as i64, off as i64, whence)?;
            p.stdin_pos = usize::try_from(pos).map_err(|_| EINVAL)?;
            Ok(pos as u64)
        }
        FdKind::File(f) => {
            let whence = i32::try_from(whence).map_err(|_| EINVAL)?;
            // SAFETY: lseek on an fd we own; the result is checked.
            let r = unsafe { libc::lseek(f.host.as_raw_fd(), off as i64, whence) };
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(r as u64)
            }
        }
        FdKind::Overlay(f) => {
            let mut pos = f.pos();
            let len = f.file().len() as i64;
            let new = seek_in(len, *pos as i64, off as i64, whence)?;
            *pos = new as u64;
            Ok(new as u64)
        }
        FdKind::Dir(d) => {
            // Only a rewind or a return to a position telldir gave.
            if whence as i32 != libc::SEEK_SET || (off as i64) < 0 {
                return Err(EINVAL);
            }
            let d = d.clone();
            let mut listing = d.listing();
            if off == 0 {
                listing.0 = p.overlay.list(&p.rootfs, &d.path)?;
            }
            listing.1 = (off as usize).min(listing.0.len() + 2);
            Ok(off)
        }
        FdKind::Device(_) => Ok(0),
        _ => Err(ESPIPE),
    }
}

/// pwritev/preadv would go here; writev to a file of the writable layer goes through write.
pub(super) fn sys_ftruncate(p: &mut Process, fd: u64, len: u64) -> SysResult {
    match &p.fds.get(fd)?.kind {
        FdKind::Overlay(f) if f.writable() => {
            if (len as i64) < 0 {
                return Err(EINVAL);
            }
            let mut file = f.file();
            file.resize(len)?;
            let now = crate::overlay::Time::now();
            file.meta.mtime = now;
            file.meta.ctime = now;
            Ok(0)
        }
        FdKind::Overlay(_) | FdKind::File(_) | FdKind::Stdin => Err(EINVAL),
        FdKind::Dir(_) => Err(EISDIR),
        _ => Err(EINVAL),
    }
}
