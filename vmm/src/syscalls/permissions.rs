//! File permissions as Linux checks them for an unprivileged process that owns the file.
//!
//! The program sees every file as its own (`put_stat` reports its uid and gid), and it is
//! not root: it has no CAP_DAC_OVERRIDE, so a file's owner bits decide. A file it made
//! read-only (`chmod 0400`) cannot be opened for writing (EACCES), a directory without write
//! and search permission cannot have entries made or removed in it, and `access` answers
//! from the same bits. Without these checks the VM looked like root to programs that probe
//! for it (CPython's test.support `can_dac_override` skips its read-only-file tests then).
//!
//! Only the paths that already go to the writable layer check: an open for reading of a
//! rootfs path the layer does not touch goes straight to the host as before (the rootfs is
//! readable; its files' owner bits all include read), so reading programs pay nothing.

use super::fs::path_stat;
use super::*;
use crate::overlay;

/// Read permission (`R_OK`).
pub(super) const MAY_READ: u32 = 4;
/// Write permission (`W_OK`).
pub(super) const MAY_WRITE: u32 = 2;
/// Execute, or for a directory search, permission (`X_OK`).
pub(super) const MAY_EXEC: u32 = 1;

/// EACCES unless the owner bits of `mode` grant every permission in `want`.
pub(super) fn check_mode(mode: u32, want: u32) -> Result<(), Errno> {
    let owner = (mode >> 6) & 7;
    if owner & want == want {
        Ok(())
    } else {
        Err(EACCES)
    }
}

/// EACCES unless the entry at `path` grants `want`; its own errno (ENOENT...) if it has none.
pub(super) fn check_path(p: &Process, path: &str, want: u32, follow: bool) -> Result<(), Errno> {
    check_mode(path_stat(p, path, follow)?.st_mode, want)
}

/// Making or removing an entry at `path` needs write and search permission on its
/// directory. A parent that is missing or no directory is left to the call itself, which
/// answers ENOENT or ENOTDIR as Linux does.
pub(super) fn check_parent(p: &Process, path: &str) -> Result<(), Errno> {
    match path_stat(p, overlay::parent(path), true) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => check_mode(st.st_mode, MAY_WRITE | MAY_EXEC),
        _ => Ok(()),
    }
}

/// Making an entry at `path` (mkdir, symlink, link): EEXIST if there is one, as Linux
/// answers before it checks the directory's permissions, then [`check_parent`].
pub(super) fn check_new_entry(p: &Process, path: &str) -> Result<(), Errno> {
    if path_stat(p, path, false).is_ok() {
        return Err(EEXIST);
    }
    check_parent(p, path)
}

/// Removing (or renaming) the entry at `path`: its own errno if there is none (ENOENT),
/// then [`check_parent`].
pub(super) fn check_old_entry(p: &Process, path: &str) -> Result<(), Errno> {
    path_stat(p, path, false)?;
    check_parent(p, path)
}

/// The permissions an open with `flags` needs on an existing file.
pub(super) fn open_wants(flags: i32) -> u32 {
    let read = match flags & libc::O_ACCMODE {
        libc::O_RDONLY | libc::O_RDWR => MAY_READ,
        _ => 0,
    };
    let write = if matches!(flags & libc::O_ACCMODE, libc::O_WRONLY | libc::O_RDWR) || flags & libc::O_TRUNC != 0 {
        MAY_WRITE
    } else {
        0
    };
    if flags & libc::O_PATH != 0 {
        0 // an O_PATH fd reads and writes nothing
    } else {
        read | write
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_bits_decide() {
        assert_eq!(check_mode(0o644, MAY_READ | MAY_WRITE), Ok(()));
        assert_eq!(check_mode(0o400, MAY_WRITE), Err(EACCES));
        assert_eq!(check_mode(0o077, MAY_READ), Err(EACCES), "group and other bits do not count for the owner");
        assert_eq!(check_mode(0o500, MAY_WRITE | MAY_EXEC), Err(EACCES));
        assert_eq!(check_mode(0o000, 0), Ok(()), "F_OK needs nothing");
    }

    #[test]
    fn an_open_needs_what_its_access_mode_and_o_trunc_say() {
        assert_eq!(open_wants(libc::O_RDONLY), MAY_READ);
        assert_eq!(open_wants(libc::O_WRONLY), MAY_WRITE);
        assert_eq!(open_wants(libc::O_RDWR | libc::O_APPEND), MAY_READ | MAY_WRITE);
        assert_eq!(open_wants(libc::O_RDONLY | libc::O_TRUNC), MAY_READ | MAY_WRITE);
        assert_eq!(open_wants(libc::O_PATH), 0);
    }
}
