//! Linux errno values the syscall layer returns (as negative results to the program).

/// A Linux errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

macro_rules! errnos {
    // A table of Linux's values: some are returned by no syscall yet.
    ($($name:ident = $v:expr),* $(,)?) => { $(#[allow(dead_code)] pub const $name: Errno = Errno($v);)* };
}
errnos!(
    EPERM = 1,
    ENOENT = 2,
    ESRCH = 3,
    EINTR = 4,
    EIO = 5,
    ENXIO = 6,
    EBADF = 9,
    ECHILD = 10,
    EAGAIN = 11,
    ENOMEM = 12,
    EACCES = 13,
    EFAULT = 14,
    EEXIST = 17,
    ENOTDIR = 20,
    EISDIR = 21,
    EINVAL = 22,
    EMFILE = 24,
    ENOTTY = 25,
    ESPIPE = 29,
    EROFS = 30,
    ERANGE = 34,
    ENAMETOOLONG = 36,
    ENOSYS = 38,
    EOVERFLOW = 75,
    ELOOP = 40,
    ETIMEDOUT = 110,
    EXDEV = 18,
    EBUSY = 16,
    EFBIG = 27,
    ENOSPC = 28,
    EMLINK = 31,
    EPIPE = 32,
    ENOTEMPTY = 39,
    ENOTSOCK = 88,
    EMSGSIZE = 90,
    ENOPROTOOPT = 92,
    EPROTONOSUPPORT = 93,
    EOPNOTSUPP = 95,
    EAFNOSUPPORT = 97,
    ENOTCONN = 107,
    EDQUOT = 122,
    E2BIG = 7,
    ENODEV = 19,
);

impl Errno {
    /// The errno of the calling thread's last failed libc call.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    }
}
