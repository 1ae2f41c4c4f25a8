//! Paths, opens, stat, directories, fds. Reads go to the rootfs (confined to it) unless the
//! writable layer ([`crate::overlay`]) has something on the path; writes go to that layer.

use std::sync::Arc;

use super::permissions::{self, MAY_EXEC, MAY_READ, MAY_WRITE};
use super::*;
use crate::files::Device;
use crate::overlay::{self, Found, Node, OpenDir, OpenOverlayFile};

// ---------------------------------------------------------------- files and paths

/// Reads a path argument and makes it absolute (as the program sees it) against `dirfd`.
/// An empty path names nothing (ENOENT), as in Linux: the syscalls that take AT_EMPTY_PATH
/// check for it with [`is_empty_path`] first.
pub(super) fn guest_path(p: &Process, mem: &GuestMemory, dirfd: u64, path: UserAddr) -> Result<String, Errno> {
    let raw = mem.read_user_cstr(path, PATH_MAX)?.ok_or(ENAMETOOLONG)?;
    let path = String::from_utf8(raw).map_err(|_| ENOENT)?;
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.starts_with('/') {
        return Ok(path);
    }
    let base = if dirfd == AT_FDCWD || dirfd as u32 as i32 == -100 {
        p.cwd.clone()
    } else {
        match &p.fds.get(dirfd)?.kind {
            FdKind::File(f) => f.path.clone(),
            FdKind::Dir(d) => d.path.clone(),
            _ => return Err(ENOTDIR),
        }
    };
    Ok(join_guest_path(&base, &path))
}

/// Whether the path argument is "" (a bad pointer is EFAULT, as reading the path would be).
pub(super) fn is_empty_path(mem: &GuestMemory, path: UserAddr) -> Result<bool, Errno> {
    Ok(mem.read_user_cstr(path, 1)?.is_some_and(|s| s.is_empty()))
}

/// The fd an AT_EMPTY_PATH call with an empty path operates on must exist (the cwd always does).
fn check_empty_path_dirfd(p: &Process, dirfd: u64) -> Result<(), Errno> {
    if dirfd == AT_FDCWD || dirfd as u32 as i32 == -100 {
        Ok(())
    } else {
        p.fds.get(dirfd).map(|_| ())
    }
}

pub(super) fn sys_openat(
    p: &mut Process,
    mem: &mut GuestMemory,
    dirfd: u64,
    path: UserAddr,
    flags: u64,
    mode: u64,
) -> SysResult {
    let flags = flags as i32;
    let mut path = guest_path(p, mem, dirfd, path)?;
    if path == "/proc/self/exe" {
        path = p.exe_path.clone();
    }
    let cloexec = flags & libc::O_CLOEXEC != 0;
    let tmpfile = flags & libc::O_TMPFILE == libc::O_TMPFILE; // O_TMPFILE includes O_DIRECTORY
    let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0 || tmpfile;
    if path == ENTROPY_DEVICE {
        if flags & libc::O_DIRECTORY != 0 {
            return Err(ENOTDIR);
        }
        if writes {
            return Err(EROFS); // the monitor's device, read-only
        }
        return p.fds.insert(Fd { kind: FdKind::Entropy, cloexec }, 0);
    }
    if path == REQUEST_FILE {
        if writes {
            return Err(EROFS); // /run/snapcall is the monitor's, a read-only mount
        }
        return open_request_file(p, flags, cloexec);
    }
    let norm = overlay::normalize(&path)?;
    if let Some(dev) = Device::at(&norm) {
        if flags & libc::O_DIRECTORY != 0 {
            return Err(ENOTDIR);
        }
        return p.fds.insert(Fd { kind: FdKind::Device(dev), cloexec }, 0);
    }
    if let Some(bytes) = super::procfs::file(p, &norm) {
        if writes {
            return Err(EACCES);
        }
        let host = crate::files::sealed_memory_file(c"snapcall-proc", &bytes)?;
        let file = OpenFile { host, path: norm, flags: flags & !libc::O_CLOEXEC };
        return p.fds.insert(Fd { kind: FdKind::File(file), cloexec }, 0);
    }
    if !writes && !p.overlay.touches(&norm) {
        let passthrough = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH;
        let host = p.rootfs.open_in_root(&path, libc::O_RDONLY | (flags & passthrough))?;
        return p.fds.insert(Fd { kind: FdKind::File(OpenFile { host, path, flags }), cloexec }, 0);
    }
    let kind = open_in_layer(p, &norm, flags, mode as u32 & !p.umask & 0o7777, tmpfile)?;
    p.fds.insert(Fd { kind, cloexec }, 0)
}

/// An open that writes, or of a path the writable layer has something on.
fn open_in_layer(p: &mut Process, path: &str, flags: i32, mode: u32, tmpfile: bool) -> Result<FdKind, Errno> {
    let accmode = flags & libc::O_ACCMODE;
    let write_access = matches!(accmode, libc::O_WRONLY | libc::O_RDWR);
    if accmode == libc::O_ACCMODE {
        return Err(EINVAL);
    }
    let (excl, creat) = (flags & libc::O_EXCL != 0, flags & libc::O_CREAT != 0);
    let follow = flags & libc::O_NOFOLLOW == 0 && !(creat && excl);
    let (resolved, found) = p.overlay.resolve(&p.rootfs, path, follow)?;
    let file_flags = flags & !libc::O_CLOEXEC;
    if tmpfile {
        if !write_access {
            return Err(EINVAL);
        }
        if !p.overlay.is_dir(&p.rootfs, &resolved, &found) {
            return Err(if matches!(found, Found::Nothing) { ENOENT } else { ENOTDIR });
        }
        permissions::check_path(p, &resolved, MAY_WRITE | MAY_EXEC, true)?;
        let file = p.overlay.unnamed_file(mode)?;
        return Ok(FdKind::Overlay(OpenOverlayFile::new(file, resolved, file_flags & !libc::O_DIRECTORY)));
    }
    if matches!(found, Found::Nothing) {
        if !creat {
            return Err(ENOENT);
        }
        if flags & libc::O_DIRECTORY != 0 {
            return Err(EINVAL);
        }
        permissions::check_parent(p, &resolved)?;
        let file = p.overlay.create_file(&p.rootfs, &resolved, mode)?;
        return Ok(FdKind::Overlay(OpenOverlayFile::new(file, resolved, file_flags)));
    }
    if creat && excl {
        return Err(EEXIST);
    }
    if let Found::Node(Node::Symlink { .. }) = found {
        return Err(ELOOP); // O_NOFOLLOW on a symlink
    }
    // A rootfs file opened only for reading is read as the passthrough path reads it.
    let wants = permissions::open_wants(flags);
    if wants != 0 && !(matches!(found, Found::Lower) && wants == MAY_READ) {
        permissions::check_path(p, &resolved, wants, true)?;
    }
    if p.overlay.is_dir(&p.rootfs, &resolved, &found) {
        if write_access || flags & libc::O_TRUNC != 0 {
            return Err(EISDIR);
        }
        return open_dir(p, &resolved, &found, flags);
    }
    if flags & libc::O_DIRECTORY != 0 {
        return Err(ENOTDIR);
    }
    let lower_read = matches!(found, Found::Lower) && !write_access && flags & libc::O_TRUNC == 0;
    if lower_read {
        let host = p.rootfs.open_in_root(&resolved, libc::O_RDONLY | (flags & (libc::O_NOFOLLOW | libc::O_PATH)))?;
        return Ok(FdKind::File(OpenFile { host, path: resolved, flags: file_flags }));
    }
    let file = p.overlay.file_for_write(&p.rootfs, &resolved, &found)?;
    if flags & libc::O_TRUNC != 0 {
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        f.resize(0)?;
        let now = overlay::Time::now();
        f.meta.mtime = now;
        f.meta.ctime = now;
    }
    Ok(FdKind::Overlay(OpenOverlayFile::new(file, resolved, file_flags)))
}

/// A directory open: a merged listing where the writable layer has entries in it, else the
/// rootfs's own directory.
fn open_dir(p: &Process, path: &str, found: &Found, flags: i32) -> Result<FdKind, Errno> {
    let merged = matches!(found, Found::Node(_)) || p.overlay.touches(path);
    if merged {
        let entries = p.overlay.list(&p.rootfs, path)?;
        return Ok(FdKind::Dir(OpenDir::new(path.to_string(), flags & !libc::O_CLOEXEC, entries)));
    }
    let host = p.rootfs.open_in_root(path, libc::O_RDONLY | libc::O_DIRECTORY | (flags & libc::O_PATH))?;
    Ok(FdKind::File(OpenFile { host, path: path.to_string(), flags: flags & !libc::O_CLOEXEC }))
}

/// [`REQUEST_FILE`]: this call's request head, made now (a call that never opens it pays
/// nothing). Before the first request (while a snapshot is taken) there is none: ENOENT.
fn open_request_file(p: &mut Process, flags: i32, cloexec: bool) -> SysResult {
    if flags & libc::O_DIRECTORY != 0 {
        return Err(ENOTDIR);
    }
    let head = p.request_head.as_ref().ok_or(ENOENT)?;
    let host = crate::files::sealed_memory_file(c"snapcall-request", &head.to_file())?;
    let file = OpenFile { host, path: REQUEST_FILE.into(), flags: flags & !libc::O_CLOEXEC };
    p.fds.insert(Fd { kind: FdKind::File(file), cloexec }, 0)
}

/// Writes a host `struct stat` into the guest, with the ownership the program should see.
pub(super) fn put_stat(mem: &mut GuestMemory, buf: UserAddr, mut st: libc::stat) -> SysResult {
    st.st_uid = GUEST_UID as u32;
    st.st_gid = GUEST_UID as u32;
    mem.write_user_obj(buf, Stat(st))?;
    Ok(0)
}

pub(super) fn host_fstat(fd: &impl AsRawFd) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd we own, writing into a properly sized struct.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(Errno::last());
    }
    Ok(st)
}

/// fd 0: a read-only regular file holding the whole request (it is all here before the
/// program runs), so `fstat` gives its size and a short read means end of file, as with
/// `program < request`.
pub(super) fn request_stat(len: usize) -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFREG | 0o400;
    st.st_size = len as i64;
    st.st_blocks = len.div_ceil(512) as i64;
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

/// The entropy device: a read-only character device, like /dev/urandom.
pub(super) fn entropy_stat() -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFCHR | 0o444;
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

/// fds 1 and 2: the response streams.
pub(super) fn stream_stat() -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFIFO | 0o600;
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

/// A pipe, socket, eventfd or epoll instance: no size, a block size of a page.
fn ipc_stat(mode: u32) -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = mode;
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

pub(super) fn sys_fstat(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr) -> SysResult {
    let st = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => host_fstat(&f.host)?,
        FdKind::Stdin => request_stat(p.stdin.len()),
        FdKind::Stdout | FdKind::Stderr => stream_stat(),
        FdKind::Entropy => entropy_stat(),
        FdKind::Endpoint(e) if e.is_socket() => ipc_stat(libc::S_IFSOCK | 0o777),
        FdKind::Endpoint(_) => ipc_stat(libc::S_IFIFO | 0o600),
        // eventfd and epoll are anonymous inodes: mode 0600 and no file type.
        FdKind::EventFd(_) | FdKind::Epoll(_) => ipc_stat(0o600),
        FdKind::Overlay(f) => file_stat(&f.file()),
        FdKind::Dir(d) => path_stat(p, &d.path.clone(), true)?,
        FdKind::Device(d) => device_stat(*d),
    };
    put_stat(mem, buf, st)
}

/// stat of a file of the writable layer.
fn file_stat(f: &overlay::FileNode) -> libc::stat {
    let mut st = layer_stat(libc::S_IFREG | f.meta.mode, &f.meta);
    st.st_size = f.len() as i64;
    st.st_blocks = f.len().div_ceil(512) as i64;
    st.st_nlink = u64::from(f.nlink);
    st
}

fn layer_stat(mode: u32, meta: &overlay::Meta) -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = mode;
    st.st_ino = meta.ino;
    st.st_dev = overlay::OVERLAY_DEV;
    st.st_nlink = 1;
    st.st_blksize = 4096;
    (st.st_atime, st.st_atime_nsec) = (meta.atime.secs, meta.atime.nanos);
    (st.st_mtime, st.st_mtime_nsec) = (meta.mtime.secs, meta.mtime.nanos);
    (st.st_ctime, st.st_ctime_nsec) = (meta.ctime.secs, meta.ctime.nanos);
    st
}

fn device_stat(d: Device) -> libc::stat {
    // SAFETY: an all-zero `stat` is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    st.st_mode = libc::S_IFCHR | 0o666;
    st.st_rdev = libc::makedev(d.rdev().0, d.rdev().1);
    st.st_blksize = 4096;
    st.st_nlink = 1;
    st
}

/// stat of a path: the writable layer's entry, else the rootfs's.
pub(super) fn path_stat(p: &Process, path: &str, follow: bool) -> Result<libc::stat, Errno> {
    let norm = overlay::normalize(path)?;
    if let Some(d) = Device::at(&norm) {
        return Ok(device_stat(d));
    }
    if let Some(bytes) = super::procfs::file(p, &norm) {
        let mut st = request_stat(bytes.len());
        st.st_mode = libc::S_IFREG | 0o444;
        return Ok(st);
    }
    let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
    if !p.overlay.touches(&norm) {
        return host_fstat(&p.rootfs.open_in_root(path, libc::O_PATH | nofollow)?);
    }
    match p.overlay.resolve(&p.rootfs, &norm, follow)? {
        (_, Found::Nothing) | (_, Found::Node(Node::Whiteout)) => Err(ENOENT),
        (_, Found::Node(Node::File(f))) => Ok(file_stat(&f.lock().unwrap_or_else(|e| e.into_inner()))),
        (_, Found::Node(Node::Dir { meta, .. })) => {
            let mut st = layer_stat(libc::S_IFDIR | meta.mode, &meta);
            st.st_nlink = 2;
            st.st_size = 4096;
            Ok(st)
        }
        (_, Found::Node(Node::Symlink { meta, target })) => {
            let mut st = layer_stat(libc::S_IFLNK | 0o777, &meta);
            st.st_size = target.len() as i64;
            Ok(st)
        }
        (resolved, Found::Lower) => host_fstat(&p.rootfs.open_in_root(&resolved, libc::O_PATH | nofollow)?),
    }
}

pub(super) fn sys_stat_path(
    p: &mut Process,
    mem: &mut GuestMemory,
    dirfd: u64,
    path: UserAddr,
    buf: UserAddr,
    flags: u64,
) -> SysResult {
    if flags & AT_EMPTY_PATH != 0 && is_empty_path(mem, path)? {
        if dirfd == AT_FDCWD || dirfd as u32 as i32 == -100 {
            let st = path_stat(p, &p.cwd.clone(), true)?;
            return put_stat(mem, buf, st);
        }
        return sys_fstat(p, mem, dirfd, buf);
    }
    let path = guest_path(p, mem, dirfd, path)?;
    let st = path_stat(p, &path, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    put_stat(mem, buf, st)
}

/// access, faccessat (`flags` 0) and faccessat2.
pub(super) fn sys_access(
    p: &mut Process,
    mem: &mut GuestMemory,
    dirfd: u64,
    path: UserAddr,
    mode: u64,
    flags: u64,
) -> SysResult {
    if mode & !7 != 0 {
        return Err(EINVAL);
    }
    if flags & AT_EMPTY_PATH != 0 && is_empty_path(mem, path)? {
        return check_empty_path_dirfd(p, dirfd).map(|_| 0);
    }
    let path = guest_path(p, mem, dirfd, path)?;
    // Every file is the program's own, and it is not root: the owner bits answer.
    permissions::check_path(p, &path, mode as u32, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    Ok(0)
}

pub(super) fn sys_readlink(
    p: &mut Process,
    mem: &mut GuestMemory,
    dirfd: u64,
    path: UserAddr,
    buf: UserAddr,
    size: u64,
) -> SysResult {
    // readlinkat(fd, "") reads the link `fd` itself is (opened O_PATH|O_NOFOLLOW), no flag needed.
    let empty_on_fd = is_empty_path(mem, path)? && !(dirfd == AT_FDCWD || dirfd as u32 as i32 == -100);
    let path = if empty_on_fd { None } else { Some(guest_path(p, mem, dirfd, path)?) };
    if size == 0 || size > i32::MAX as u64 {
        return Err(EINVAL);
    }
    let target: Vec<u8> = match path {
        Some(path) if path == "/proc/self/exe" => p.exe_path.as_bytes().to_vec(),
        Some(path) => {
            let norm = overlay::normalize(&path)?;
            if p.overlay.touches(&norm) {
                match p.overlay.resolve(&p.rootfs, &norm, false)? {
                    (_, Found::Node(Node::Symlink { target, .. })) => target.into_bytes(),
                    (_, Found::Nothing) => return Err(ENOENT),
                    (resolved, Found::Lower) => {
                        read_link(&p.rootfs.open_in_root(&resolved, libc::O_PATH | libc::O_NOFOLLOW)?)?
                    }
                    _ => return Err(EINVAL),
                }
            } else {
                read_link(&p.rootfs.open_in_root(&path, libc::O_PATH | libc::O_NOFOLLOW)?)?
            }
        }
        None => match &p.fds.get(dirfd)?.kind {
            FdKind::File(f) => read_link(&f.host)?,
            _ => return Err(ENOENT),
        },
    };
    let n = target.len().min(size as usize);
    mem.write_user(buf, &target[..n])?;
    Ok(n as u64)
}

/// The target of the symlink `fd` is (ENOENT or EINVAL from the host when it is not one).
fn read_link(fd: &impl AsRawFd) -> Result<Vec<u8>, Errno> {
    let mut out = vec![0u8; PATH_MAX];
    // SAFETY: readlinkat on an fd we own with an empty path, into a buffer of PATH_MAX bytes;
    // the result is checked.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), out.as_mut_ptr().cast(), out.len()) };
    if n < 0 {
        return Err(Errno::last());
    }
    out.truncate(n as usize);
    Ok(out)
}

pub(super) fn sys_getcwd(p: &mut Process, mem: &mut GuestMemory, buf: UserAddr, size: u64) -> SysResult {
    let mut cwd = p.cwd.clone().into_bytes();
    cwd.push(0);
    if (size as usize) < cwd.len() {
        return Err(ERANGE);
    }
    mem.write_user(buf, &cwd)?;
    Ok(cwd.len() as u64)
}

pub(super) fn sys_chdir(p: &mut Process, mem: &mut GuestMemory, path: UserAddr) -> SysResult {
    let path = guest_path(p, mem, AT_FDCWD, path)?;
    change_dir(p, &path)
}

pub(super) fn sys_fchdir(p: &mut Process, fd: u64) -> SysResult {
    let path = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => f.path.clone(),
        FdKind::Dir(d) => d.path.clone(),
        _ => return Err(ENOTDIR),
    };
    change_dir(p, &path)
}

fn change_dir(p: &mut Process, path: &str) -> SysResult {
    let norm = overlay::normalize(path)?;
    if p.overlay.touches(&norm) {
        let (resolved, found) = p.overlay.resolve(&p.rootfs, &norm, true)?;
        match found {
            Found::Nothing => return Err(ENOENT),
            f if !p.overlay.is_dir(&p.rootfs, &resolved, &f) => return Err(ENOTDIR),
            _ => p.cwd = resolved,
        }
        return Ok(0);
    }
    p.rootfs.open_in_root(path, libc::O_PATH | libc::O_DIRECTORY)?;
    p.cwd = norm;
    Ok(0)
}

pub(super) fn sys_getdents64(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr, count: u64) -> SysResult {
    let f = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => f,
        FdKind::Dir(d) => return merged_dents(&d.clone(), mem, buf, count),
        _ => return Err(ENOTDIR),
    };
    let dst = mem.user_slice_mut(buf, count.min(1 << 20))?;
    // SAFETY: getdents64 on an fd we own into a checked range of guest memory; the record
    // format the kernel writes is the one the program expects.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, f.host.as_raw_fd(), dst.as_mut_ptr(), dst.len()) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as u64)
    }
}

/// getdents64 of a merged listing: linux_dirent64 records (d_off is the next index).
fn merged_dents(d: &Arc<OpenDir>, mem: &mut GuestMemory, buf: UserAddr, count: u64) -> SysResult {
    let mut listing = d.listing();
    let (entries, at) = &mut *listing;
    let count = count.min(1 << 20) as usize;
    mem.user_slice_mut(buf, count as u64)?;
    // "." and ".." first, as Linux lists them.
    let mut out = Vec::new();
    while *at < entries.len() + 2 {
        let (name, ino, kind): (&str, u64, u8) = match *at {
            0 => (".", 1, overlay::DT_DIR),
            1 => ("..", 1, overlay::DT_DIR),
            i => {
                let e = &entries[i - 2];
                (&e.name, e.ino, e.kind)
            }
        };
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        if out.len() + reclen > count {
            break;
        }
        let start = out.len();
        out.extend_from_slice(&ino.to_le_bytes());
        out.extend_from_slice(&(*at as u64 + 1).to_le_bytes());
        out.extend_from_slice(&(reclen as u16).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(name.as_bytes());
        out.resize(start + reclen, 0);
        *at += 1;
    }
    if out.is_empty() && *at < entries.len() + 2 {
        return Err(EINVAL); // the buffer cannot hold the next record
    }
    mem.write_user(buf, &out)?;
    Ok(out.len() as u64)
}

pub(super) fn sys_dup3(p: &mut Process, old: u64, new: u64, flags: u64, is_dup2: bool) -> SysResult {
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

pub(super) fn sys_fcntl(p: &mut Process, fd: u64, cmd: u64, arg: u64) -> SysResult {
    let entry = p.fds.get_mut(fd)?;
    match cmd as i32 {
        libc::F_GETFD => Ok(u64::from(entry.cloexec)),
        libc::F_SETFD => {
            entry.cloexec = arg & 1 != 0;
            Ok(0)
        }
        libc::F_GETFL => Ok(status_flags(&entry.kind) as u64),
        libc::F_SETFL => {
            set_nonblocking(&mut entry.kind, arg & libc::O_NONBLOCK as u64 != 0);
            Ok(0)
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            let cloexec = cmd as i32 == libc::F_DUPFD_CLOEXEC;
            let dup = p.fds.duplicate(fd, cloexec)?;
            p.fds.insert(dup, usize::try_from(arg).map_err(|_| EINVAL)?)
        }
        _ => Err(EINVAL),
    }
}

/// F_GETFL: the access mode and O_NONBLOCK.
fn status_flags(kind: &FdKind) -> i32 {
    let nonblock = |on: bool| if on { libc::O_NONBLOCK } else { 0 };
    match kind {
        FdKind::Stdin | FdKind::Entropy => libc::O_RDONLY,
        FdKind::Stdout | FdKind::Stderr => libc::O_WRONLY,
        FdKind::File(f) => f.flags & !libc::O_CLOEXEC,
        FdKind::Endpoint(e) => {
            let mode = match e.kind {
                crate::ipc::EndpointKind::PipeRead => libc::O_RDONLY,
                crate::ipc::EndpointKind::PipeWrite => libc::O_WRONLY,
                crate::ipc::EndpointKind::Socket { .. } => libc::O_RDWR,
            };
            mode | nonblock(e.nonblocking())
        }
        FdKind::EventFd(e) => libc::O_RDWR | nonblock(e.nonblocking()),
        FdKind::Epoll(_) => libc::O_RDONLY,
        FdKind::Overlay(f) => f.flags & !libc::O_CLOEXEC,
        FdKind::Dir(d) => d.flags & !libc::O_CLOEXEC,
        FdKind::Device(_) => libc::O_RDWR,
    }
}

/// F_SETFL's O_NONBLOCK and FIONBIO: only pipes, sockets and eventfds ever wait; a rootfs
/// file keeps the flag for F_GETFL (`os.get_blocking`), as Linux does for any file (kept
/// by this fd only: a dup of it has its own flags here).
fn set_nonblocking(kind: &mut FdKind, on: bool) {
    match kind {
        FdKind::Endpoint(e) => e.set_nonblocking(on),
        FdKind::EventFd(e) => e.set_nonblocking(on),
        FdKind::File(f) => f.flags = if on { f.flags | libc::O_NONBLOCK } else { f.flags & !libc::O_NONBLOCK },
        _ => {}
    }
}

/// ioctl: FIONBIO and FIONREAD; anything else is not a terminal (ENOTTY), as for a pipe.
pub(super) fn sys_ioctl(p: &mut Process, mem: &mut GuestMemory, fd: u64, request: u64, arg: UserAddr) -> SysResult {
    const FIONREAD: u64 = 0x541B;
    const FIONBIO: u64 = 0x5421;
    p.fds.get(fd)?;
    match request {
        FIONBIO => {
            let on = mem.read_user_obj::<i32>(arg)? != 0;
            set_nonblocking(&mut p.fds.get_mut(fd)?.kind, on);
            Ok(0)
        }
        FIONREAD => {
            let n = bytes_ready(&p.fds.get(fd)?.kind).ok_or(ENOTTY)?;
            mem.write_user_obj(arg, n.min(i32::MAX as usize) as i32)?;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}
