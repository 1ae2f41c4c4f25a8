//! The x86-64 Linux structs the syscalls read from and write to the program, as plain
//! `#[repr(C)]` Rust structs that [`GuestMemory::read_user_obj`] and
//! [`GuestMemory::write_user_obj`] copy whole, instead of hand-packed byte offsets.
//!
//! Each is [`ByteValued`] (vm-memory's plain-old-data marker): any bytes are a valid value,
//! and it has no implicit padding (padding the ABI has is a named field, zeroed), so copying
//! it to the guest never leaks uninitialised host bytes. A const assertion pins each size to
//! the kernel's.

use vm_memory::ByteValued;

/// Marks `$t` plain old data, with its size pinned to the kernel's `$size` bytes.
macro_rules! plain_data {
    ($($t:ty = $size:expr),* $(,)?) => {$(
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        // SAFETY: `$t` is `#[repr(C)]` (or transparent over such a libc struct), made of
        // integers only, with every padding byte a named field: any bytes are a valid value
        // and none of its bytes is uninitialised.
        unsafe impl ByteValued for $t {}
    )*};
}

plain_data! {
    Stat = 144,
    Statfs = 120,
    Sysinfo = 112,
    Timespec = 16,
    Timeval = 16,
    Itimerval = 32,
    FileTimes<Timespec> = 32,
    FileTimes<Timeval> = 32,
    Rlimit = 16,
    Iovec = 16,
    KernelSigaction = 32,
    PollFd = 8,
    EpollEvent = 12,
    Msghdr = 56,
}

/// `struct stat` (x86-64 has no implicit padding in it: `__pad0` and `__unused` are fields).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct Stat(pub(crate) libc::stat);

/// `struct statfs`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Statfs {
    pub f_type: i64,
    pub f_bsize: i64,
    pub f_blocks: u64,
    pub f_bfree: u64,
    pub f_bavail: u64,
    pub f_files: u64,
    pub f_ffree: u64,
    pub f_fsid: [i32; 2],
    pub f_namelen: i64,
    pub f_frsize: i64,
    pub f_flags: i64,
    pub f_spare: [i64; 4],
}

/// `struct sysinfo`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Sysinfo {
    pub uptime: i64,
    pub loads: [u64; 3],
    pub totalram: u64,
    pub freeram: u64,
    pub sharedram: u64,
    pub bufferram: u64,
    pub totalswap: u64,
    pub freeswap: u64,
    pub procs: u16,
    pub pad: u16,
    /// The C compiler's alignment padding before `totalhigh`, named so it is zeroed.
    pub pad2: u32,
    pub totalhigh: u64,
    pub freehigh: u64,
    pub mem_unit: u32,
    pub f: [u8; 4],
}

/// `struct timespec`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

/// `struct timeval`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Timeval {
    pub tv_sec: i64,
    pub tv_usec: i64,
}

/// utimensat's `struct timespec[2]` and utimes' `struct timeval[2]`: access, modification.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FileTimes<T> {
    pub atime: T,
    pub mtime: T,
}

/// `struct itimerval`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Itimerval {
    pub it_interval: Timeval,
    pub it_value: Timeval,
}

/// `struct rlimit` (prlimit64's `struct rlimit64` is the same on x86-64).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Rlimit {
    pub rlim_cur: u64,
    pub rlim_max: u64,
}

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Iovec {
    pub iov_base: u64,
    pub iov_len: u64,
}

/// The kernel's `struct sigaction` as rt_sigaction takes it (not glibc's: the mask is one
/// 64-bit word, after the restorer).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct KernelSigaction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `struct pollfd`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct PollFd {
    pub fd: i32,
    pub events: i16,
    pub revents: i16,
}

/// `struct epoll_event`, packed on x86-64 (12 bytes).
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
pub(crate) struct EpollEvent {
    pub events: u32,
    pub data: u64,
}

/// `struct msghdr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Msghdr {
    pub msg_name: u64,
    pub msg_namelen: u32,
    /// Alignment padding before `msg_iov`, named so it is zeroed.
    pub pad: u32,
    pub msg_iov: u64,
    pub msg_iovlen: u64,
    pub msg_control: u64,
    pub msg_controllen: u64,
    pub msg_flags: i32,
    /// Tail padding, named so it is zeroed.
    pub pad2: u32,
}

impl Timeval {
    /// `d` as a timeval (microseconds, rounded down).
    pub(crate) fn from_duration(d: std::time::Duration) -> Timeval {
        Timeval { tv_sec: d.as_secs() as i64, tv_usec: i64::from(d.subsec_micros()) }
    }
}
