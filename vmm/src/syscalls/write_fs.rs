//! The syscalls that change the filesystem: mkdir, rmdir, unlink, rename, link, symlink,
//! chmod, chown, utimensat, truncate, mknod, fallocate; and statfs, which reports the
//! writable layer's room. All of it happens in the writable layer ([`crate::overlay`]); the
//! rootfs on the host is never written.

use super::permissions::{check_new_entry, check_old_entry, check_parent, check_path, MAY_WRITE};
use super::*;
use crate::overlay::{self, Meta, Time};

const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const RENAME_NOREPLACE: u64 = 1;
const RENAME_EXCHANGE: u64 = 2;
const RENAME_WHITEOUT: u64 = 4;

/// A path argument, made absolute and normalised.
fn path_arg(p: &Process, mem: &GuestMemory, dirfd: u64, path: UserAddr) -> Result<String, Errno> {
    overlay::normalize(&guest_path(p, mem, dirfd, path)?)
}

/// The monitor's own files (/dev, /proc/self, the request file) cannot be changed.
fn check_changeable(p: &Process, path: &str) -> Result<(), Errno> {
    let special = crate::files::Device::at(path).is_some()
        || path == ENTROPY_DEVICE
        || path == crate::request::REQUEST_FILE
        || super::procfs::file(p, path).is_some();
    if special {
        Err(EPERM)
    } else {
        Ok(())
    }
}

pub(super) fn sys_mkdirat(p: &mut Process, mem: &GuestMemory, dirfd: u64, path: UserAddr, mode: u64) -> SysResult {
    let path = path_arg(p, mem, dirfd, path)?;
    let mode = mode as u32 & !p.umask & 0o7777;
    check_new_entry(p, &path)?;
    p.overlay.mkdir(&p.rootfs, &path, mode)?;
    Ok(0)
}

pub(super) fn sys_unlinkat(p: &mut Process, mem: &GuestMemory, dirfd: u64, path: UserAddr, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let raw = guest_path(p, mem, dirfd, path)?;
    let path = overlay::normalize(&raw)?;
    check_changeable(p, &path)?;
    check_old_entry(p, &path)?;
    if flags & AT_REMOVEDIR != 0 {
        if raw.ends_with("/.") || raw == "." {
            return Err(EINVAL);
        }
        p.overlay.rmdir(&p.rootfs, &path)?;
    } else {
        p.overlay.unlink(&p.rootfs, &path)?;
    }
    Ok(0)
}

pub(super) fn sys_renameat2(
    p: &mut Process,
    mem: &GuestMemory,
    olddir: u64,
    old: UserAddr,
    newdir: u64,
    new: UserAddr,
    flags: u64,
) -> SysResult {
    if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT) != 0
        || flags & (RENAME_NOREPLACE | RENAME_EXCHANGE) == RENAME_NOREPLACE | RENAME_EXCHANGE
    {
        return Err(EINVAL);
    }
    let old = path_arg(p, mem, olddir, old)?;
    let new = path_arg(p, mem, newdir, new)?;
    check_changeable(p, &old)?;
    check_changeable(p, &new)?;
    if flags & (RENAME_EXCHANGE | RENAME_WHITEOUT) != 0 {
        return Err(EINVAL); // not offered: nothing here needs an atomic swap or a whiteout device
    }
    check_old_entry(p, &old)?;
    check_parent(p, &new)?;
    p.overlay.rename(&p.rootfs, &old, &new, flags & RENAME_NOREPLACE != 0)?;
    Ok(0)
}

pub(super) fn sys_linkat(
    p: &mut Process,
    mem: &GuestMemory,
    olddir: u64,
    old: UserAddr,
    newdir: u64,
    new: UserAddr,
    flags: u64,
) -> SysResult {
    if flags & !(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    if flags & AT_EMPTY_PATH != 0 && is_empty_path(mem, old)? {
        return Err(ENOENT); // linking an O_TMPFILE file by fd is not offered
    }
    let old = path_arg(p, mem, olddir, old)?;
    let new = path_arg(p, mem, newdir, new)?;
    check_changeable(p, &old)?;
    check_new_entry(p, &new)?;
    p.overlay.link(&p.rootfs, &old, &new, flags & AT_SYMLINK_FOLLOW != 0)?;
    Ok(0)
}

pub(super) fn sys_symlinkat(
    p: &mut Process,
    mem: &GuestMemory,
    target: UserAddr,
    dirfd: u64,
    path: UserAddr,
) -> SysResult {
    let raw = mem.read_user_cstr(target, PATH_MAX)?.ok_or(ENAMETOOLONG)?;
    let target = String::from_utf8(raw).map_err(|_| EINVAL)?;
    if target.is_empty() {
        return Err(ENOENT);
    }
    let path = path_arg(p, mem, dirfd, path)?;
    check_new_entry(p, &path)?;
    p.overlay.symlink(&p.rootfs, &target, &path)?;
    Ok(0)
}

/// mknodat: regular files only (a FIFO or device node would need a kernel behind it).
pub(super) fn sys_mknodat(p: &mut Process, mem: &GuestMemory, dirfd: u64, path: UserAddr, mode: u64) -> SysResult {
    let path = path_arg(p, mem, dirfd, path)?;
    let kind = mode as u32 & libc::S_IFMT;
    if kind != 0 && kind != libc::S_IFREG {
        return Err(EPERM);
    }
    if !matches!(p.overlay.resolve(&p.rootfs, &path, false)?.1, overlay::Found::Nothing) {
        return Err(EEXIST);
    }
    check_parent(p, &path)?;
    p.overlay.create_file(&p.rootfs, &path, mode as u32 & !p.umask & 0o7777)?;
    Ok(0)
}

/// chmod and fchmodat: the permission bits of an entry (copied up if the rootfs has it).
pub(super) fn sys_fchmodat(p: &mut Process, mem: &GuestMemory, dirfd: u64, path: UserAddr, mode: u64) -> SysResult {
    let path = path_arg(p, mem, dirfd, path)?;
    check_changeable(p, &path)?;
    let now = Time::now();
    p.overlay.set_meta(&p.rootfs, &path, true, |m| {
        m.mode = mode as u32 & 0o7777;
        m.ctime = now;
    })?;
    Ok(0)
}

/// The path an fd names, for the f* calls that change attributes.
fn fd_path(p: &Process, fd: u64) -> Result<(String, bool), Errno> {
    match &p.fds.get(fd)?.kind {
        FdKind::File(f) => Ok((f.path.clone(), false)),
        FdKind::Dir(d) => Ok((d.path.clone(), false)),
        FdKind::Overlay(f) => Ok((f.path.clone(), true)),
        _ => Err(EINVAL),
    }
}

/// Applies `f` to the attributes of the file `fd` is open on.
fn with_fd_meta(p: &mut Process, fd: u64, f: impl FnOnce(&mut Meta)) -> SysResult {
    if let FdKind::Overlay(file) = &p.fds.get(fd)?.kind {
        f(&mut file.file().meta); // also when unlinked or renamed since
        return Ok(0);
    }
    let (path, _) = fd_path(p, fd)?;
    check_changeable(p, &path)?;
    p.overlay.set_meta(&p.rootfs, &path, true, f)?;
    Ok(0)
}

pub(super) fn sys_fchmod(p: &mut Process, fd: u64, mode: u64) -> SysResult {
    let now = Time::now();
    with_fd_meta(p, fd, |m| {
        m.mode = mode as u32 & 0o7777;
        m.ctime = now;
    })
}

/// chown, fchown, lchown, fchownat: the program owns every file, and may only give it to
/// itself (-1 keeps the owner), as an unprivileged process may.
pub(super) fn sys_chown_path(
    p: &mut Process,
    mem: &GuestMemory,
    dirfd: u64,
    path: UserAddr,
    uid: u64,
    gid: u64,
) -> SysResult {
    let path = guest_path(p, mem, dirfd, path)?;
    super::fs::path_stat(p, &path, true)?;
    check_owner(uid, gid)
}

pub(super) fn sys_fchown(p: &mut Process, fd: u64, uid: u64, gid: u64) -> SysResult {
    p.fds.get(fd)?;
    check_owner(uid, gid)
}

fn check_owner(uid: u64, gid: u64) -> SysResult {
    let ok = |id: u64| id as u32 == u32::MAX || u64::from(id as u32) == GUEST_UID;
    if ok(uid) && ok(gid) {
        Ok(0)
    } else {
        Err(EPERM)
    }
}

const UTIME_NOW: i64 = (1 << 30) - 1;
const UTIME_OMIT: i64 = (1 << 30) - 2;

/// A timestamp argument: Some(time) to set, None to leave (UTIME_OMIT).
fn time_arg(ts: Option<(i64, i64)>) -> Result<Option<Time>, Errno> {
    match ts {
        None => Ok(Some(Time::now())),
        Some((_, UTIME_OMIT)) => Ok(None),
        Some((_, UTIME_NOW)) => Ok(Some(Time::now())),
        Some((secs, nanos)) if (0..1_000_000_000).contains(&nanos) => Ok(Some(Time { secs, nanos })),
        Some(_) => Err(EINVAL),
    }
}

/// utimensat(dirfd, path, times[2], flags); path NULL means the fd itself (futimens).
pub(super) fn sys_utimensat(
    p: &mut Process,
    mem: &GuestMemory,
    dirfd: u64,
    path: UserAddr,
    times: UserAddr,
    flags: u64,
) -> SysResult {
    if flags & !(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH) != 0 {
        return Err(EINVAL);
    }
    let pair = if times.is_null() {
        (None, None)
    } else {
        let FileTimes::<Timespec> { atime: a, mtime: m } = mem.read_user_obj(times)?;
        (Some((a.tv_sec, a.tv_nsec)), Some((m.tv_sec, m.tv_nsec)))
    };
    set_times(p, mem, dirfd, path, pair, flags)
}

/// utimes(path, timeval[2]) and futimesat: microseconds.
pub(super) fn sys_utimes(p: &mut Process, mem: &GuestMemory, dirfd: u64, path: UserAddr, times: UserAddr) -> SysResult {
    let pair = if times.is_null() {
        (None, None)
    } else {
        let FileTimes::<Timeval> { atime: a, mtime: m } = mem.read_user_obj(times)?;
        if !(0..1_000_000).contains(&a.tv_usec) || !(0..1_000_000).contains(&m.tv_usec) {
            return Err(EINVAL);
        }
        (Some((a.tv_sec, a.tv_usec * 1000)), Some((m.tv_sec, m.tv_usec * 1000)))
    };
    set_times(p, mem, dirfd, path, pair, 0)
}

/// utime(path, utimbuf): whole seconds.
pub(super) fn sys_utime(p: &mut Process, mem: &GuestMemory, path: UserAddr, times: UserAddr) -> SysResult {
    let pair = if times.is_null() {
        (None, None)
    } else {
        // struct utimbuf { time_t actime, modtime; }
        let [a, m]: [i64; 2] = mem.read_user_obj(times)?;
        (Some((a, 0)), Some((m, 0)))
    };
    set_times(p, mem, AT_FDCWD, path, pair, 0)
}

type TimesArg = (Option<(i64, i64)>, Option<(i64, i64)>);

fn set_times(
    p: &mut Process,
    mem: &GuestMemory,
    dirfd: u64,
    path: UserAddr,
    (a, m): TimesArg,
    flags: u64,
) -> SysResult {
    let (atime, mtime) = (time_arg(a)?, time_arg(m)?);
    let now = Time::now();
    let apply = move |meta: &mut Meta| {
        if let Some(t) = atime {
            meta.atime = t;
        }
        if let Some(t) = mtime {
            meta.mtime = t;
        }
        meta.ctime = now;
    };
    if path.is_null() || (flags & AT_EMPTY_PATH != 0 && is_empty_path(mem, path)?) {
        if dirfd == AT_FDCWD || dirfd as u32 as i32 == -100 {
            let cwd = p.cwd.clone();
            return p.overlay.set_meta(&p.rootfs, &cwd, true, apply).map(|_| 0);
        }
        return with_fd_meta(p, dirfd, apply);
    }
    let path = path_arg(p, mem, dirfd, path)?;
    if crate::files::Device::at(&path).is_some() {
        return Ok(0); // touching /dev/null changes nothing anyone can see
    }
    check_changeable(p, &path)?;
    p.overlay.set_meta(&p.rootfs, &path, flags & AT_SYMLINK_NOFOLLOW == 0, apply)?;
    Ok(0)
}

/// truncate(path, len): copies a rootfs file up first.
pub(super) fn sys_truncate(p: &mut Process, mem: &GuestMemory, path: UserAddr, len: u64) -> SysResult {
    if (len as i64) < 0 {
        return Err(EINVAL);
    }
    let path = path_arg(p, mem, AT_FDCWD, path)?;
    check_changeable(p, &path)?;
    let (resolved, found) = p.overlay.resolve(&p.rootfs, &path, true)?;
    if p.overlay.is_dir(&p.rootfs, &resolved, &found) {
        return Err(EISDIR);
    }
    check_path(p, &resolved, MAY_WRITE, true)?;
    let file = p.overlay.file_for_write(&p.rootfs, &resolved, &found)?;
    let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
    f.resize(len)?;
    let now = Time::now();
    f.meta.mtime = now;
    f.meta.ctime = now;
    Ok(0)
}

/// fallocate: mode 0 (allocate, growing the file) and FALLOC_FL_KEEP_SIZE (nothing to do:
/// memory is taken when written); punching holes and the rest are not offered.
pub(super) fn sys_fallocate(p: &mut Process, fd: u64, mode: u64, off: u64, len: u64) -> SysResult {
    const FALLOC_FL_KEEP_SIZE: u64 = 1;
    let FdKind::Overlay(f) = &p.fds.get(fd)?.kind else {
        return Err(match p.fds.get(fd)?.kind {
            FdKind::Endpoint(_) => ESPIPE,
            FdKind::Dir(_) => EISDIR,
            _ => EBADF,
        });
    };
    if (off as i64) < 0 || (len as i64) <= 0 {
        return Err(EINVAL);
    }
    if !f.writable() {
        return Err(EBADF);
    }
    let end = off.checked_add(len).filter(|&e| e <= i64::MAX as u64).ok_or(EFBIG)?;
    match mode {
        0 => {
            let mut file = f.file();
            if end > file.len() {
                file.resize(end)?;
            }
            Ok(0)
        }
        FALLOC_FL_KEEP_SIZE => Ok(0),
        _ => Err(EOPNOTSUPP),
    }
}

/// fsync, fdatasync, syncfs: the fd must be open; there is no disk to flush to.
pub(super) fn sys_fsync(p: &mut Process, fd: u64) -> SysResult {
    match p.fds.get(fd)?.kind {
        FdKind::Endpoint(_) | FdKind::EventFd(_) | FdKind::Epoll(_) => Err(EINVAL),
        _ => Ok(0),
    }
}

/// TMPFS_MAGIC: the filesystem is in memory, like a tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// statfs/fstatfs: one in-memory filesystem whose size is the program's memory budget.
fn put_statfs(p: &Process, mem: &mut GuestMemory, buf: UserAddr) -> SysResult {
    let block = 4096u64;
    let budget = &p.budget;
    let statfs = Statfs {
        f_type: TMPFS_MAGIC,
        f_bsize: block as i64,
        f_blocks: budget.limit() / block,
        f_bfree: budget.available() / block,
        f_bavail: budget.available() / block,
        f_files: budget.limit() / overlay::ENTRY_COST,
        f_ffree: budget.available() / overlay::ENTRY_COST,
        f_namelen: overlay::NAME_MAX as i64,
        f_frsize: block as i64,
        f_flags: 0x400, // ST_RELATIME
        ..Statfs::default()
    };
    mem.write_user_obj(buf, statfs)?;
    Ok(0)
}

pub(super) fn sys_statfs(p: &mut Process, mem: &mut GuestMemory, path: UserAddr, buf: UserAddr) -> SysResult {
    let path = guest_path(p, mem, AT_FDCWD, path)?;
    super::fs::path_stat(p, &path, true)?;
    put_statfs(p, mem, buf)
}

pub(super) fn sys_fstatfs(p: &mut Process, mem: &mut GuestMemory, fd: u64, buf: UserAddr) -> SysResult {
    p.fds.get(fd)?;
    put_statfs(p, mem, buf)
}
