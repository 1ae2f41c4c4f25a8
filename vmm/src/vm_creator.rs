//! Creating VMs without KVM's per-VM debugfs directory.
//!
//! `KVM_CREATE_VM` gives every VM a debugfs directory, `/sys/kernel/debug/kvm/<tid>-<fd>`,
//! with about 65 statistics files, and destroying the VM removes them again. For a VM that
//! lives for one call that is pure overhead, and not small: a fifth of the host CPU of an
//! echo-c call here (perf, cpu-clock: `debugfs_create_file_full` under `KVM_CREATE_VM`,
//! `debugfs_remove` under `kvm_destroy_vm`). KVM skips the directory, with a rate-limited
//! warning ("KVM: debugfs: duplicate directory"), when one of that name already exists.
//!
//! So one thread with a file table of its own ([`libc::CLOSE_RANGE_UNSHARE`]) creates the VMs.
//! In that table nothing else is ever opened, so the lowest free descriptor, the one
//! `KVM_CREATE_VM` returns and names the directory after, is always the same number. The
//! first VM made there (the *keeper*, kept for the process's life with no memory and one vCPU
//! that never runs, `KEEPER_VCPU_FD` says why) holds the directory of that name, then moves
//! to another descriptor; every later VM gets the freed number again and collides with the
//! keeper's directory. The new VM's descriptor travels to the caller's (the process's) file
//! table over a socket pair (`SCM_RIGHTS`), a few microseconds, and the creator closes its own.
//!
//! Nothing about the VM changes: KVM ties it to the process's address space (`kvm->mm`),
//! which every thread shares, not to the file table. Set `SNAPCALL_KVM_DEBUGFS=1` to create
//! VMs the plain way (each with its directory, for per-VM statistics). Where the creator
//! cannot start (a kernel before 5.9 without `CLOSE_RANGE_UNSHARE`, a seccomp profile that
//! denies it), VMs are created the plain way too; [`stats`] says which happened. The pool
//! ([`crate::Runtime`]) starts the creator; a process that makes a single VM has no use for it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use kvm_ioctls::{Kvm, VmFd};

/// `KVM_CREATE_VM`, `_IO(KVMIO, 0x01)`, with machine type 0 (what `Kvm::create_vm` asks).
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
/// `KVM_CREATE_VCPU`, `_IO(KVMIO, 0x41)`.
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
/// Where the keeper's descriptor goes in the creator's table: anything above the few
/// descriptors that table holds.
const KEEPER_FD: RawFd = 64;
/// Where the keeper's vCPU goes. KVM counts live vCPUs in static keys (perf: a vCPU's
/// creation increments one under `kvm_create_lapic`, its destruction decrements it), and a
/// count going from 0 to 1 or back patches the kernel's code, with IPIs to every CPU. Under
/// kvm-pvm that made creating a vCPU ≈250 µs instead of ≈60 and destroying a VM ≈100-200 µs
/// dearer whenever no other vCPU was alive (a C loop creating and destroying VMs one at a
/// time): every call of a server without a pool, or the first after the pool went idle. The
/// keeper's one vCPU keeps the counts above zero for the process's life.
const KEEPER_VCPU_FD: RawFd = 65;

/// How VMs were created in this process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreatorStats {
    /// Whether the creator thread is running (false: every VM is created the plain way).
    pub active: bool,
    /// VMs the creator made that share the keeper's directory name (no debugfs of their own).
    pub without_debugfs: u64,
    /// VMs the creator made on another descriptor number, which got a directory after all.
    pub with_debugfs: u64,
}

static WITHOUT_DEBUGFS: AtomicU64 = AtomicU64::new(0);
/// The creator thread's id, which KVM puts in its directory names.
static CREATOR_TID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
static WITH_DEBUGFS: AtomicU64 = AtomicU64::new(0);

/// What VM creation looked like so far in this process.
pub fn stats() -> CreatorStats {
    CreatorStats {
        active: creator().is_some(),
        without_debugfs: WITHOUT_DEBUGFS.load(Ordering::Relaxed),
        with_debugfs: WITH_DEBUGFS.load(Ordering::Relaxed),
    }
}

/// The requesting end of the creator's socket; one request at a time.
struct Creator {
    socket: Mutex<UnixStream>,
}

static CREATOR: OnceLock<Option<Creator>> = OnceLock::new();

/// Starts the creator, once per process; [`crate::Runtime::new`] does. A process that
/// makes one VM (`snapcall run`) does not: the keeper would cost it a VM more.
pub fn start() {
    CREATOR.get_or_init(|| {
        if std::env::var_os("SNAPCALL_KVM_DEBUGFS").is_some_and(|v| v == "1") {
            return None;
        }
        Creator::start().ok()
    });
}

fn creator() -> Option<&'static Creator> {
    CREATOR.get().and_then(Option::as_ref)
}

/// `KVM_CREATE_VM` through the creator when it was started, else directly on `kvm`.
pub(crate) fn create_vm(kvm: &Kvm) -> Result<VmFd, kvm_ioctls::Error> {
    let Some(creator) = creator() else { return kvm.create_vm() };
    match creator.create() {
        Ok(fd) => {
            // SAFETY: `fd` is a VM descriptor KVM_CREATE_VM just returned, owned by us alone;
            // on an error it is closed when `fd` drops, on success `vm` owns it.
            let vm = unsafe { kvm.create_vmfd_from_rawfd(fd.as_raw_fd()) }?;
            std::mem::forget(fd);
            Ok(vm)
        }
        Err(Failure::Kvm(errno)) => Err(kvm_ioctls::Error::new(errno)),
        // The creator is gone (it cannot be, short of a bug): the plain way still works.
        Err(Failure::Transport) => kvm.create_vm(),
    }
}

enum Failure {
    /// KVM_CREATE_VM itself failed with this errno.
    Kvm(i32),
    /// The socket to the creator failed (it cannot, short of a bug; the caller falls back).
    Transport,
}

impl Creator {
    fn start() -> io::Result<Creator> {
        let (ours, theirs) = UnixStream::pair()?;
        // The creator's end by number: the thread takes it into its own table, and this
        // (shared) table's copy is closed once the thread is set up, either way.
        let theirs = std::os::fd::IntoRawFd::into_raw_fd(theirs);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new().name("snapcall-vmmaker".into()).spawn(move || {
            match CreatorThread::set_up(theirs) {
                Ok(thread) => {
                    let _ = ready_tx.send(Ok(()));
                    // SAFETY: `theirs` is open in this thread's private table and owned by
                    // nothing else there.
                    thread.serve(unsafe { OwnedFd::from_raw_fd(theirs) });
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let ready = match spawned {
            Ok(_) => ready_rx.recv().unwrap_or_else(|_| Err(io::Error::other("the VM creator thread ended early"))),
            Err(e) => Err(e),
        };
        // SAFETY: `theirs` is still open in the process's table, and only this copy refers
        // to it there.
        drop(unsafe { OwnedFd::from_raw_fd(theirs) });
        ready?;
        Ok(Creator { socket: Mutex::new(ours) })
    }

    /// One VM descriptor, now in this process's file table.
    fn create(&self) -> Result<OwnedFd, Failure> {
        let socket = self.socket.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fd = socket.as_raw_fd();
        // SAFETY: a one-byte write from a live buffer to our socket.
        if unsafe { libc::write(fd, [0u8].as_ptr().cast(), 1) } != 1 {
            return Err(Failure::Transport);
        }
        let (errno, received) = receive_fd(fd).map_err(|_| Failure::Transport)?;
        match (errno, received) {
            (0, Some(vm)) => Ok(vm),
            (0, None) => Err(Failure::Transport),
            (errno, _) => Err(Failure::Kvm(errno)),
        }
    }
}

/// The creator's own state, in its own file table.
struct CreatorThread {
    kvm: OwnedFd,
    /// The descriptor number every VM gets, named like the keeper's directory.
    expected_fd: RawFd,
    _keeper: OwnedFd,
    _keeper_vcpu: Option<OwnedFd>,
}

/// `fd` moved to the lowest free number at or above `at`, so that the low numbers stay free.
fn move_up(fd: OwnedFd, at: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC of a descriptor we own; the copy is ours on success.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, at) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` was just returned by fcntl and is owned by nothing else; `fd` closes.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

impl CreatorThread {
    /// Runs on the creator thread: a private file table holding only stdio, `socket` and a
    /// fresh `/dev/kvm`, then the keeper.
    fn set_up(socket: RawFd) -> io::Result<CreatorThread> {
        crate::pool::block_signals();
        // SAFETY: gettid has no arguments and cannot fail.
        CREATOR_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        let close_range = |first: u32, last: u32, flags: libc::c_uint| {
            // SAFETY: close_range on this thread's file table; with CLOSE_RANGE_UNSHARE the
            // table is first made private, so the process's descriptors stay open.
            if unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        let socket = u32::try_from(socket).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        close_range(socket + 1, u32::MAX, libc::CLOSE_RANGE_UNSHARE)?;
        if socket > 3 {
            close_range(3, socket - 1, 0)?;
        }
        // SAFETY: a NUL-terminated path; the descriptor is ours on success.
        let kvm = unsafe { libc::open(c"/dev/kvm".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if kvm < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `kvm` was just opened and is owned by nothing else.
        let kvm = unsafe { OwnedFd::from_raw_fd(kvm) };
        let first = create_raw(&kvm).map_err(io::Error::from_raw_os_error)?;
        let expected_fd = first.as_raw_fd();
        let keeper = move_up(first, KEEPER_FD)?;
        // A vCPU that never runs, so that no vCPU's creation or destruction is the first or
        // the last one alive (see `KEEPER_VCPU_FD`). Without it VMs still work, only dearer.
        // SAFETY: KVM_CREATE_VCPU takes the vCPU id by value and returns a new descriptor.
        let vcpu = unsafe { libc::ioctl(keeper.as_raw_fd(), KVM_CREATE_VCPU, 0 as libc::c_ulong) };
        // Out of the low numbers, or closed if it cannot move (it would take the VMs' number).
        let keeper_vcpu = (vcpu >= 0)
            // SAFETY: on success the descriptor is new and owned by nothing else.
            .then(|| unsafe { OwnedFd::from_raw_fd(vcpu) })
            .and_then(|v| move_up(v, KEEPER_VCPU_FD).ok());
        Ok(CreatorThread { kvm, expected_fd, _keeper: keeper, _keeper_vcpu: keeper_vcpu })
    }

    /// Answers each request byte with a new VM's descriptor (or KVM's errno), until the
    /// other end closes.
    fn serve(self, socket: OwnedFd) {
        let fd = socket.as_raw_fd();
        loop {
            let mut byte = 0u8;
            // SAFETY: a one-byte read into a live local.
            let n = unsafe { libc::read(fd, (&raw mut byte).cast(), 1) };
            if n == 0 {
                return;
            }
            if n < 0 {
                if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return;
            }
            let result = create_raw(&self.kvm);
            if let Ok(vm) = &result {
                let counter = if vm.as_raw_fd() == self.expected_fd { &WITHOUT_DEBUGFS } else { &WITH_DEBUGFS };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            let (errno, vm) = match &result {
                Ok(vm) => (0, Some(vm.as_raw_fd())),
                Err(errno) => (*errno, None),
            };
            if send_fd(fd, errno, vm).is_err() {
                return;
            }
            // `result` drops here: the creator's copy closes, the number is free again.
        }
    }
}

/// KVM_CREATE_VM on `kvm`, retried on EINTR.
fn create_raw(kvm: &OwnedFd) -> Result<OwnedFd, i32> {
    loop {
        // SAFETY: KVM_CREATE_VM takes the machine type by value and returns a new descriptor.
        let fd = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0 as libc::c_ulong) };
        if fd >= 0 {
            // SAFETY: the new descriptor is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return Err(errno);
        }
    }
}

/// Room for one descriptor's control message.
#[repr(C, align(8))]
struct ControlBuffer([u8; 32]);

/// Sends `errno` and, when given, `fd` (SCM_RIGHTS) on `socket`.
fn send_fd(socket: RawFd, errno: i32, fd: Option<RawFd>) -> io::Result<()> {
    let mut data = errno.to_ne_bytes();
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut control = ControlBuffer([0; 32]);
    // SAFETY: an all-zero msghdr is valid; its pointers are filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure size computations.
        let (space, len) = unsafe { (libc::CMSG_SPACE(4), libc::CMSG_LEN(4)) };
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = space as usize;
        // SAFETY: `control` is aligned and holds CMSG_SPACE(4) bytes, so the first header and
        // its 4 data bytes lie inside it.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = len as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
        if n == data.len() as isize {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(if n < 0 { e } else { io::Error::other("short send to the VM creator's peer") });
    }
}

/// Receives what [`send_fd`] sent: the errno, and the descriptor if one came.
fn receive_fd(socket: RawFd) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut data = [0u8; 4];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut control = ControlBuffer([0; 32]);
    // SAFETY: an all-zero msghdr is valid; its pointers are filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len();
    let n = loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control`; the CMSG macros walk
    // only headers inside it, and an SCM_RIGHTS header carries whole descriptors.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<RawFd>());
                received = Some(OwnedFd::from_raw_fd(fd));
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if n != data.len() as isize {
        return Err(io::Error::other("short answer from the VM creator"));
    }
    Ok((i32::from_ne_bytes(data), received))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Directories under KVM's debugfs named after the creator thread (`<tid>-<fd>`), or
    /// None when debugfs is not mounted here.
    fn creator_directories() -> Option<usize> {
        let prefix = format!("{}-", CREATOR_TID.load(Ordering::Relaxed));
        let entries = std::fs::read_dir("/sys/kernel/debug/kvm").ok()?;
        Some(entries.filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().starts_with(&prefix)).count())
    }

    #[test]
    fn vms_from_the_creator_share_the_keepers_directory_and_work() {
        let kvm = &crate::kvm::system().expect("/dev/kvm").kvm;
        start();
        assert!(stats().active, "the creator thread did not start");
        let vms: Vec<VmFd> = (0..5).map(|_| create_vm(kvm).expect("KVM_CREATE_VM")).collect();
        // Each is a working VM in this process's table: it takes a vCPU.
        for vm in &vms {
            vm.create_vcpu(0).expect("a vCPU on a VM from the creator");
        }
        let s = stats();
        assert!(s.without_debugfs >= 5 && s.with_debugfs == 0, "{s:?}");
        match creator_directories() {
            // The keeper's directory only, however many VMs the creator made.
            Some(n) => assert_eq!(n, 1, "directories named after the creator thread"),
            None => eprintln!("debugfs is not mounted here: the directories are not counted"),
        }
    }

    #[test]
    fn the_keeper_holds_a_vcpu_for_the_processs_life() {
        start();
        assert!(stats().active, "the creator thread did not start");
        let tid = CREATOR_TID.load(Ordering::Relaxed);
        let link = |fd: RawFd| std::fs::read_link(format!("/proc/self/task/{tid}/fd/{fd}")).ok();
        let vcpu = link(KEEPER_VCPU_FD).expect("no descriptor at KEEPER_VCPU_FD in the creator's table");
        assert!(vcpu.to_string_lossy().starts_with("anon_inode:kvm-vcpu"), "{vcpu:?}");
        let vm = link(KEEPER_FD).expect("no keeper VM");
        assert!(vm.to_string_lossy().starts_with("anon_inode:kvm-vm"), "{vm:?}");
        // VMs made afterwards still get the keeper's number (the vCPU did not take it).
        let kvm = &crate::kvm::system().expect("/dev/kvm").kvm;
        let before = stats().without_debugfs;
        drop(create_vm(kvm).expect("KVM_CREATE_VM"));
        assert!(stats().without_debugfs > before, "{:?}", stats());
    }

    #[test]
    fn a_descriptor_that_cannot_move_up_is_an_error_not_a_copy() {
        let file = std::fs::File::open("/dev/null").unwrap();
        // No descriptor number can be at or above i32::MAX: F_DUPFD refuses (EINVAL).
        let err = move_up(OwnedFd::from(file), RawFd::MAX).expect_err("moved past every limit");
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    }

    #[test]
    fn a_descriptor_and_an_errno_cross_the_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        send_fd(a.as_raw_fd(), 0, Some(file.as_raw_fd())).unwrap();
        let (errno, fd) = receive_fd(b.as_raw_fd()).unwrap();
        assert_eq!(errno, 0);
        let fd = fd.expect("a descriptor");
        assert_ne!(fd.as_raw_fd(), file.as_raw_fd());
        send_fd(a.as_raw_fd(), libc::EMFILE, None).unwrap();
        let (errno, fd) = receive_fd(b.as_raw_fd()).unwrap();
        assert_eq!((errno, fd.is_none()), (libc::EMFILE, true));
    }
}
