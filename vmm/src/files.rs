//! The program's file descriptors and its read-only view of the bundle's rootfs.
//!
//! fds 0, 1 and 2 are the request and the response streams, held in memory. Every other fd
//! is a host fd opened read-only with `openat2(rootfs, path, RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so `..` and symlinks, absolute or relative, resolve inside the
//! rootfs and nothing on the host outside it is reachable.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::errno::*;
use crate::ipc::{Endpoint, Epoll, EventFd};
use crate::overlay::{OpenDir, OpenOverlayFile};

/// Most fds a program may hold open at once (its RLIMIT_NOFILE).
pub const MAX_FDS: usize = 1024;
/// Longest path the program may pass (PATH_MAX).
pub const PATH_MAX: usize = 4096;

/// The monitor's entropy device: `read()` returns fresh host randomness; `mmap()` maps a page
/// the monitor refills with fresh randomness at every restore, so a program snapshotted
/// after mapping it reads per-call entropy from memory, with no syscall (no VM exit).
pub const ENTROPY_DEVICE: &str = "/dev/snapcall-entropy";

/// What one fd refers to.
#[derive(Debug)]
pub enum FdKind {
    Stdin,
    Stdout,
    Stderr,
    /// A file or directory of the rootfs.
    File(OpenFile),
    /// [`ENTROPY_DEVICE`].
    Entropy,
    /// A pipe end or a socket of a socketpair.
    Endpoint(Arc<Endpoint>),
    EventFd(Arc<EventFd>),
    Epoll(Arc<Epoll>),
    /// A regular file of the writable layer ([`crate::overlay`]).
    Overlay(Arc<OpenOverlayFile>),
    /// A directory whose listing merges the writable layer with the rootfs.
    Dir(Arc<OpenDir>),
    /// /dev/null, /dev/zero, /dev/full, /dev/random or /dev/urandom.
    Device(Device),
}

/// The character devices a process expects in /dev (all in the monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// Reads end of file; writes vanish.
    Null,
    /// Reads zeros; writes vanish.
    Zero,
    /// Reads zeros; writes fail with ENOSPC.
    Full,
    /// /dev/random and /dev/urandom: reads host randomness; writes are accepted and ignored.
    Random,
}

impl Device {
    /// The device at `path`, if it is one.
    pub fn at(path: &str) -> Option<Device> {
        match path {
            "/dev/null" => Some(Device::Null),
            "/dev/zero" => Some(Device::Zero),
            "/dev/full" => Some(Device::Full),
            "/dev/random" | "/dev/urandom" => Some(Device::Random),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Device::Null => "/dev/null",
            Device::Zero => "/dev/zero",
            Device::Full => "/dev/full",
            Device::Random => "/dev/urandom",
        }
    }

    /// Linux's device numbers (major 1), for stat.
    pub fn rdev(self) -> (u32, u32) {
        match self {
            Device::Null => (1, 3),
            Device::Zero => (1, 5),
            Device::Full => (1, 7),
            Device::Random => (1, 9),
        }
    }
}

impl FdKind {
    /// What it is, for errors ("fd 5 is a pipe").
    pub fn describe(&self) -> &'static str {
        match self {
            FdKind::Stdin => "the request stream",
            FdKind::Stdout | FdKind::Stderr => "a response stream",
            FdKind::File(_) => "a file of the rootfs",
            FdKind::Entropy => "the entropy device",
            FdKind::Endpoint(e) if e.is_socket() => "a socket",
            FdKind::Endpoint(_) => "a pipe",
            FdKind::EventFd(_) => "an eventfd",
            FdKind::Epoll(_) => "an epoll instance",
            FdKind::Overlay(_) => "a file written in the VM",
            FdKind::Dir(_) => "a directory changed in the VM",
            FdKind::Device(_) => "a device",
        }
    }

    /// Which open file this is: the same for every fd `dup` made of it, different for
    /// every other open file (epoll ends a registration when its file closes).
    pub fn identity(&self) -> usize {
        match self {
            FdKind::Stdin => 1,
            FdKind::Stdout => 2,
            FdKind::Stderr => 3,
            FdKind::Entropy => 4,
            // A host fd number is unique while it is open (a dup has its own, so dups of a
            // rootfs file count as different files here; epoll refuses them anyway).
            FdKind::File(f) => 0x1_0000 + f.host.as_raw_fd() as usize,
            FdKind::Endpoint(e) => Arc::as_ptr(e) as usize,
            FdKind::EventFd(e) => Arc::as_ptr(e) as usize,
            FdKind::Epoll(e) => Arc::as_ptr(e) as usize,
            FdKind::Overlay(f) => Arc::as_ptr(f) as usize,
            FdKind::Dir(d) => Arc::as_ptr(d) as usize,
            FdKind::Device(d) => 5 + *d as usize,
        }
    }
}

/// A rootfs file the program opened.
#[derive(Debug)]
pub struct OpenFile {
    pub host: OwnedFd,
    /// Its path as the program sees it (absolute, inside the rootfs).
    pub path: String,
    /// The open flags the program passed (for F_GETFL and snapshots).
    pub flags: i32,
}

/// One slot of the fd table.
#[derive(Debug)]
pub struct Fd {
    pub kind: FdKind,
    pub cloexec: bool,
}

/// The fd table.
#[derive(Debug)]
pub struct FdTable {
    slots: Vec<Option<Fd>>,
}

impl Default for FdTable {
    fn default() -> Self {
        Self::new()
    }
}

impl FdTable {
    /// A table with 0, 1 and 2 open.
    pub fn new() -> Self {
        let std = |kind| Some(Fd { kind, cloexec: false });
        FdTable { slots: vec![std(FdKind::Stdin), std(FdKind::Stdout), std(FdKind::Stderr)] }
    }

    pub fn get(&self, fd: u64) -> Result<&Fd, Errno> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get(i)).and_then(Option::as_ref).ok_or(EBADF)
    }

    pub fn get_mut(&mut self, fd: u64) -> Result<&mut Fd, Errno> {
        usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)).and_then(Option::as_mut).ok_or(EBADF)
    }

    /// Puts `entry` in the lowest free slot at or above `min`.
    pub fn insert(&mut self, entry: Fd, min: usize) -> Result<u64, Errno> {
        if min >= MAX_FDS {
            return Err(EINVAL);
        }
        let free = (min..self.slots.len()).find(|&i| self.slots[i].is_none());
        let index = match free {
            Some(i) => i,
            None if self.slots.len().max(min) < MAX_FDS => {
                let i = self.slots.len().max(min);
                self.slots.resize_with(i + 1, || None);
                i
            }
            None => return Err(EMFILE),
        };
        self.slots[index] = Some(entry);
        Ok(index as u64)
    }

    /// Puts `entry` at exactly `fd`, closing what was there (dup2/dup3).
    pub fn insert_at(&mut self, fd: u64, entry: Fd) -> Result<(), Errno> {
        let i = usize::try_from(fd).ok().filter(|&i| i < MAX_FDS).ok_or(EBADF)?;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(entry);
        Ok(())
    }

    /// Whether `fd` is one of the response streams (stdout or stderr, wherever it now sits).
    pub fn is_response_stream(&self, fd: u64) -> bool {
        matches!(self.get(fd).map(|f| &f.kind), Ok(FdKind::Stdout | FdKind::Stderr))
    }

    pub fn close(&mut self, fd: u64) -> Result<(), Errno> {
        let slot = usize::try_from(fd).ok().and_then(|i| self.slots.get_mut(i)).ok_or(EBADF)?;
        slot.take().map(drop).ok_or(EBADF)
    }

    /// A second fd for the same open file (sharing its offset, as dup does on Linux).
    pub fn duplicate(&self, fd: u64, cloexec: bool) -> Result<Fd, Errno> {
        let kind = match &self.get(fd)?.kind {
            FdKind::Stdin => FdKind::Stdin,
            FdKind::Stdout => FdKind::Stdout,
            FdKind::Stderr => FdKind::Stderr,
            FdKind::Entropy => FdKind::Entropy,
            FdKind::Endpoint(e) => FdKind::Endpoint(e.clone()),
            FdKind::EventFd(e) => FdKind::EventFd(e.clone()),
            FdKind::Epoll(e) => FdKind::Epoll(e.clone()),
            FdKind::Overlay(f) => FdKind::Overlay(f.clone()),
            FdKind::Dir(d) => FdKind::Dir(d.clone()),
            FdKind::Device(d) => FdKind::Device(*d),
            FdKind::File(f) => {
                // SAFETY: F_DUPFD_CLOEXEC on an fd we own; the result is checked.
                let new = unsafe { libc::fcntl(f.host.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
                if new < 0 {
                    return Err(Errno::last());
                }
                // SAFETY: `new` is a freshly duplicated fd nobody else owns.
                let host = unsafe { OwnedFd::from_raw_fd(new) };
                FdKind::File(OpenFile { host, path: f.path.clone(), flags: f.flags })
            }
        };
        Ok(Fd { kind, cloexec })
    }

    /// Open fds in order, for snapshots and tests.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Fd)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|f| (i as u64, f)))
    }

    /// How many fds are open (for tests).
    #[cfg(test)]
    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Tries of one openat2 that the kernel refuses with EAGAIN (a racing rename: see
/// `Rootfs::open_path`).
const OPENAT2_ATTEMPTS: u32 = 16;

/// The bundle's rootfs, opened once per function and shared by all its calls.
#[derive(Debug, Clone)]
pub struct Rootfs {
    dir: Arc<OwnedFd>,
}

impl Rootfs {
    /// Opens `path` (a directory on the host) as a rootfs.
    pub fn open(path: &std::path::Path) -> std::io::Result<Rootfs> {
        use std::os::unix::ffi::OsStrExt;
        let c =
            CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `c` is a valid NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(Rootfs { dir: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }) })
    }

    /// Opens a guest path (absolute, or relative to the rootfs root) confined to the rootfs.
    /// `host_flags` are the host open flags (O_RDONLY, O_PATH, O_DIRECTORY, O_NOFOLLOW...).
    ///
    /// Only regular files and directories are ever opened for reading: a FIFO would block
    /// the monitor's thread in open(2) until some writer appeared, and a device node would
    /// hand the guest a host device (`/dev/kmsg`, a disk). So a real open first takes an
    /// `O_PATH` handle (which opens nothing), checks the file's type, and only then reopens
    /// that very inode through `/proc/self/fd`; anything else is EACCES, as on a `nodev`
    /// mount. `O_PATH` opens (stat, access, chdir) may name any file type.
    pub fn open_in_root(&self, guest_path: &str, host_flags: i32) -> Result<OwnedFd, Errno> {
        if host_flags & libc::O_PATH != 0 {
            return self.open_path(guest_path, host_flags);
        }
        let handle =
            self.open_path(guest_path, libc::O_PATH | (host_flags & (libc::O_NOFOLLOW | libc::O_DIRECTORY)))?;
        // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on an O_PATH fd we own, into a properly sized struct.
        if unsafe { libc::fstat(handle.as_raw_fd(), &mut st) } < 0 {
            return Err(Errno::last());
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => {}
            // A symlink is only left unresolved under O_NOFOLLOW, where Linux says ELOOP.
            libc::S_IFLNK => return Err(ELOOP),
            _ => return Err(EACCES),
        }
        let reopen = CString::new(format!("/proc/self/fd/{}", handle.as_raw_fd())).map_err(|_| EINVAL)?;
        // O_NOFOLLOW would refuse the /proc link itself; the handle already honoured it.
        let flags = (host_flags & !libc::O_NOFOLLOW) | libc::O_CLOEXEC | libc::O_NOCTTY;
        // SAFETY: open of a NUL-terminated /proc path naming our own O_PATH fd; checked.
        let fd = unsafe { libc::open(reopen.as_ptr(), flags) };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel gave us a new fd that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `openat2(rootfs, guest_path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` with `host_flags`.
    fn open_path(&self, guest_path: &str, host_flags: i32) -> Result<OwnedFd, Errno> {
        let c = CString::new(guest_path).map_err(|_| EINVAL)?;
        // SAFETY: open_how is plain old data; all-zero is valid (mode 0, no flags).
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        // openat2 refuses O_NOCTTY together with O_PATH, so add it only to real opens.
        let noctty = if host_flags & libc::O_PATH == 0 { libc::O_NOCTTY } else { 0 };
        how.flags = (host_flags | libc::O_CLOEXEC | noctty) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        // EAGAIN means a rename or mount anywhere on the host raced a `..` of the walk, so the
        // kernel could not prove it stayed inside the root; openat2(2) says to retry. (Under a
        // host renaming files in a loop, ≈4 % of `..` opens failed once; a bound keeps a host
        // that never stops from spinning the monitor, and the guest then sees EAGAIN.)
        let mut attempts = 0;
        let fd = loop {
            // SAFETY: openat2 with a valid dirfd we own, a NUL-terminated path and a correctly
            // sized open_how; the result is checked.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.dir.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            attempts += 1;
            match (fd, Errno::last()) {
                (fd, _) if fd >= 0 => break fd,
                (_, EAGAIN) if attempts < OPENAT2_ATTEMPTS => continue,
                (_, errno) => return Err(errno),
            }
        };
        // SAFETY: the kernel gave us a new fd that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// A read-only in-memory file holding `bytes`, for files the monitor makes per call (the
/// request head, [`crate::request::REQUEST_FILE`]): a sealed memfd, so every syscall on a
/// rootfs file (read, pread, lseek, fstat, mmap, dup) works on it unchanged, and neither
/// the program nor the monitor can change it after it is made.
pub fn sealed_memory_file(name: &std::ffi::CStr, bytes: &[u8]) -> Result<OwnedFd, Errno> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut &file, bytes).map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on our own memfd; lseek back to the start for the program's first read.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 || unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } < 0 {
        return Err(Errno::last());
    }
    Ok(OwnedFd::from(file))
}

/// Joins a guest path onto a base directory (both as the program sees them). The result is
/// only ever resolved by [`Rootfs::open_in_root`], so `..` needs no lexical handling here.
pub fn join_guest_path(base: &str, path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else if base.ends_with('/') {
        format!("{base}{path}")
    } else {
        format!("{base}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_fill_the_lowest_free_slot_and_cap_at_max() {
        let mut t = FdTable::new();
        t.close(1).unwrap();
        assert_eq!(t.insert(t.duplicate(0, false).unwrap(), 0), Ok(1));
        assert_eq!(t.insert(t.duplicate(0, false).unwrap(), 10), Ok(10));
        assert_eq!(t.close(7), Err(EBADF));
        assert_eq!(t.get(u64::MAX).err(), Some(EBADF));
        while t.open_count() < MAX_FDS {
            t.insert(t.duplicate(0, false).unwrap(), 0).unwrap();
        }
        assert_eq!(t.insert(t.duplicate(0, false).unwrap(), 0), Err(EMFILE));
    }

    #[test]
    fn sealed_memory_files_read_back_and_refuse_writes() {
        let fd = sealed_memory_file(c"test", b"method GET\n").unwrap();
        let content = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(content, b"method GET\n");
        // SAFETY: write of a local buffer to our own memfd, which the seal must refuse.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!((n, Errno::last()), (-1, EPERM));
    }

    #[test]
    fn rootfs_confines_dotdot_and_absolute_symlinks() {
        let dir = std::env::temp_dir().join(format!("snapcall-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), b"inside\n").unwrap();
        let _ = std::os::unix::fs::symlink("/etc/passwd", dir.join("escape"));
        let root = Rootfs::open(&dir).unwrap();
        for p in ["/../../etc/passwd", "../../../etc/passwd", "/escape"] {
            let fd = root.open_in_root(p, libc::O_RDONLY).unwrap();
            let content = std::fs::read(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
            assert_eq!(content, b"inside\n", "{p} resolved inside the rootfs");
        }
        assert_eq!(root.open_in_root("/proc/self/root/etc/hostname", libc::O_RDONLY).err(), Some(ENOENT));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// openat2 with RESOLVE_IN_ROOT fails with EAGAIN when any rename on the host races a
    /// `..` in the path (the kernel cannot prove the walk stayed inside); a guest's open must
    /// not fail for that. Renames run on another thread while `..` paths are opened.
    #[test]
    fn dotdot_opens_survive_concurrent_host_renames() {
        let dir = std::env::temp_dir().join(format!("snapcall-rename-race-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("root/etc")).unwrap();
        std::fs::create_dir_all(dir.join("churn")).unwrap();
        std::fs::write(dir.join("root/etc/passwd"), b"inside\n").unwrap();
        let root = Rootfs::open(&dir.join("root")).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (stop, churn) = (stop.clone(), dir.join("churn"));
            std::fs::write(churn.join("a"), b"").unwrap();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::rename(churn.join("a"), churn.join("b"));
                    let _ = std::fs::rename(churn.join("b"), churn.join("a"));
                }
            })
        };
        let failures =
            (0..20_000).filter(|_| root.open_in_root("/etc/../etc/../etc/passwd", libc::O_RDONLY).is_err()).count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(failures, 0, "opens failed while the host renamed files");
    }

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("snapcall-rootfs-special-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        let c = |p: &str| CString::new(dir.join(p).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo/mknod of paths in our own temporary directory.
        unsafe {
            assert_eq!(libc::mkfifo(c("fifo").as_ptr(), 0o666), 0);
            // /dev/null's numbers (1, 3); tests run as root, as the README's test command does.
            assert_eq!(libc::mknod(c("dev/null").as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)), 0);
        }
        let _ = std::os::unix::fs::symlink("/dev/null", dir.join("link-to-dev"));
        let root = Rootfs::open(&dir).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let opener = root.clone();
        std::thread::spawn(move || {
            let results: Vec<_> = ["/fifo", "/dev/null", "/link-to-dev", "/file", "/dev"]
                .iter()
                .map(|p| opener.open_in_root(p, libc::O_RDONLY).err())
                .collect();
            let _ = tx.send(results);
        });
        // A FIFO's open would block until a writer came: a hang is the failure.
        let results = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("open_in_root blocked");
        assert_eq!(results, [Some(EACCES), Some(EACCES), Some(EACCES), None, None]);
        assert_eq!(root.open_in_root("/file", libc::O_RDONLY | libc::O_NOFOLLOW).err(), None);
        assert_eq!(root.open_in_root("/link-to-dev", libc::O_RDONLY | libc::O_NOFOLLOW).err(), Some(ELOOP));
        // stat-like opens see every type.
        assert!(root.open_in_root("/fifo", libc::O_PATH).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
