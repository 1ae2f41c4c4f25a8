//! A minimal safe wrapper over userfaultfd(2), for recording which guest pages a call
//! touches and which it writes: every first touch of a registered range (by the guest
//! through KVM, or by the monitor) stops the toucher until a server thread fills the page,
//! and the page is filled write-protected, so its first write stops the writer once more
//! until the thread lifts the protection. Only the working-set recorder uses it, never a
//! call's path. (Comparing contents afterwards would miss what CPython does all the time:
//! a reference count raised and lowered again leaves a written page looking unwritten.)
//!
//! Kernel faults (KVM's get_user_pages) are only reported to a privileged process
//! (CAP_SYS_PTRACE) or when `vm.unprivileged_userfaultfd` is 1; elsewhere [`Userfault::new`]
//! fails and the recorder falls back to a coarser method.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: u64 = 0xc018_aa3f;
const UFFDIO_REGISTER: u64 = 0xc020_aa00;
const UFFDIO_COPY: u64 = 0xc028_aa03;
const UFFDIO_WRITEPROTECT: u64 = 0xc018_aa06;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_COPY_MODE_WP: u64 = 2;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFD_PAGEFAULT_FLAG_WP: u64 = 2;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioWriteprotect {
    start: u64,
    len: u64,
    mode: u64,
}

/// `struct uffd_msg` (32 bytes); only the page-fault member is read.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct UffdMsg {
    event: u8,
    _reserved: [u8; 7],
    flags: u64,
    address: u64,
    _feature: u64,
}

/// A first touch of a page (`write: false`), or its first write (`write: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Touch {
    pub host_addr: u64,
    pub write: bool,
}

/// A userfaultfd with one registered range, served by a thread until dropped.
pub(crate) struct Userfault {
    stop: Arc<AtomicBool>,
    touches: Arc<Mutex<Vec<Touch>>>,
    server: Option<std::thread::JoinHandle<()>>,
}

fn ioctl<T>(fd: &OwnedFd, request: u64, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: a userfaultfd ioctl whose argument struct matches `request`'s size and layout
    // (the #[repr(C)] structs above mirror <linux/userfaultfd.h>); the result is checked.
    if unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Userfault {
    /// Registers `[start, start+len)` of this process's memory (page-aligned, anonymous and
    /// with nothing present yet) and serves its first touches on a thread: `fill(host_addr,
    /// page)` writes the page's contents (it starts zeroed) before the toucher resumes.
    pub(crate) fn new(
        start: u64,
        len: u64,
        fill: impl Fn(u64, &mut [u8]) + Send + 'static,
    ) -> std::io::Result<Userfault> {
        // SAFETY: userfaultfd(2) takes only flags; the result is checked.
        let raw = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel gave us a new fd that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
        ioctl(&fd, UFFDIO_API, &mut UffdioApi { api: UFFD_API, features: 0, ioctls: 0 })?;
        let mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
        ioctl(&fd, UFFDIO_REGISTER, &mut UffdioRegister { start, len, mode, ioctls: 0 })?;
        let stop = Arc::new(AtomicBool::new(false));
        let touches = Arc::new(Mutex::new(Vec::new()));
        let (sstop, stouches) = (stop.clone(), touches.clone());
        // The thread owns the fd: it closes it when it stops.
        let server = std::thread::Builder::new()
            .name("snapcall-userfault".into())
            .spawn(move || serve(&fd, &sstop, &stouches, fill))?;
        Ok(Userfault { stop, touches, server: Some(server) })
    }

    /// Stops serving and returns every first touch and first write, in the order they came.
    pub(crate) fn finish(mut self) -> Vec<Touch> {
        self.stop_server();
        std::mem::take(&mut *self.touches.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn stop_server(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.server.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Userfault {
    fn drop(&mut self) {
        self.stop_server();
    }
}

/// The server loop: wait for fault messages (polling, so `stop` is noticed); fill a missing
/// page with `fill` and copy it in write-protected, or lift a page's protection at its
/// first write; either wakes the toucher.
fn serve(fd: &OwnedFd, stop: &AtomicBool, touches: &Mutex<Vec<Touch>>, fill: impl Fn(u64, &mut [u8])) {
    let mut page = vec![0u8; PAGE as usize];
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one valid pollfd, 10 ms timeout.
        if unsafe { libc::poll(&mut pfd, 1, 10) } <= 0 {
            continue;
        }
        let mut msg = UffdMsg::default();
        // SAFETY: read of at most one 32-byte uffd_msg into a value of exactly that size.
        let n =
            unsafe { libc::read(fd.as_raw_fd(), (&mut msg as *mut UffdMsg).cast(), std::mem::size_of::<UffdMsg>()) };
        if n != std::mem::size_of::<UffdMsg>() as isize || msg.event != UFFD_EVENT_PAGEFAULT {
            continue;
        }
        let host_addr = msg.address & !(PAGE - 1);
        let write = msg.flags & UFFD_PAGEFAULT_FLAG_WP != 0;
        if write {
            let mut unprotect = UffdioWriteprotect { start: host_addr, len: PAGE, mode: 0 };
            let _ = ioctl(fd, UFFDIO_WRITEPROTECT, &mut unprotect);
        } else {
            page.fill(0);
            fill(host_addr, &mut page);
            let src = page.as_ptr() as u64;
            let mut copy = UffdioCopy { dst: host_addr, src, len: PAGE, mode: UFFDIO_COPY_MODE_WP, copy: 0 };
            // EEXIST: another fault on the same page was already served; nothing to do.
            let _ = ioctl(fd, UFFDIO_COPY, &mut copy);
        }
        touches.lock().unwrap_or_else(|e| e.into_inner()).push(Touch { host_addr, write });
    }
}
