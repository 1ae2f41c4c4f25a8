//! mmap of files (anonymous memory is `mm::AddressSpace`), madvise, and making the page
//! tables follow every change of the address space ([`crate::page_tables`]).

use super::*;
use crate::mm::{page_up, Region};

// ---------------------------------------------------------------- enforcement

/// Makes the page tables of `[start, end)` follow the address space, which just changed
/// there. When they cannot (ENOMEM: see `page_tables.rs` for the bounds), the range's
/// regions go back to `before`, which the tables still describe.
fn follow(p: &mut Process, mem: &mut GuestMemory, start: u64, end: u64, before: Vec<Region>) -> Result<(), Errno> {
    let Some(tables) = p.page_tables.as_mut() else { return Ok(()) };
    tables.update(&p.space, mem, start, end).inspect_err(|_| p.space.put_back(start, end, before))
}

/// The end of `[addr, addr + len)` in whole pages, if it has one.
fn range_end(addr: u64, len: u64) -> Option<u64> {
    page_up(len).and_then(|len| addr.checked_add(len))
}

pub(super) fn sys_mprotect(p: &mut Process, mem: &mut GuestMemory, addr: u64, len: u64, prot: u32) -> SysResult {
    let before = range_end(addr, len).map(|end| p.space.pieces(addr, end)).unwrap_or_default();
    p.space.mprotect(addr, len, prot)?;
    let end = range_end(addr, len).ok_or(ENOMEM)?;
    follow(p, mem, addr, end, before)?;
    Ok(0)
}

pub(super) fn sys_munmap(p: &mut Process, mem: &mut GuestMemory, addr: u64, len: u64) -> SysResult {
    let before = range_end(addr, len).map(|end| p.space.pieces(addr, end)).unwrap_or_default();
    p.space.munmap(addr, len, mem)?;
    let end = range_end(addr, len).ok_or(EINVAL)?;
    follow(p, mem, addr, end, before)?;
    Ok(0)
}

/// mmap, then the new mapping's protection in the page tables (a failure there undoes it).
pub(super) fn sys_mmap_enforced(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> SysResult {
    let fixed = a[3] as i32 & (libc::MAP_FIXED | libc::MAP_FIXED_NOREPLACE) != 0;
    // A mapping placed by us goes into free space: nothing to put back there.
    let before = match range_end(a[0], a[1]) {
        Some(end) if fixed => p.space.pieces(a[0], end),
        _ => Vec::new(),
    };
    let start = sys_mmap(p, mem, a)?;
    let end = range_end(start, a[1]).ok_or(ENOMEM)?;
    follow(p, mem, start, end, before)?;
    Ok(start)
}

/// mremap. A mapping that is moved or resized keeps its protection; one that is not
/// read-write (the protection of unmapped memory) may need tables the pool no longer has,
/// and as the move cannot be undone then, the call ends with that reason.
pub(super) fn sys_mremap(
    p: &mut Process,
    mem: &mut GuestMemory,
    old: u64,
    old_len: u64,
    new_len: u64,
    may_move: bool,
) -> Outcome {
    let new = match p.space.mremap(old, old_len, new_len, may_move, mem) {
        Ok(new) => new,
        Err(e) => return ret(Err(e)),
    };
    let ranges = [(old, range_end(old, old_len)), (new, range_end(new, new_len))];
    for (start, end) in ranges {
        let Some(end) = end else { continue };
        if let Some(tables) = p.page_tables.as_mut() {
            if tables.update(&p.space, mem, start, end).is_err() {
                return Outcome::Stop(Stop::Unsupported(format!(
                    "mremap of {old:#x} to {new:#x} needs more page tables than the pool has left"
                )));
            }
        }
    }
    Outcome::Return(new)
}

// ---------------------------------------------------------------- memory

pub(super) fn sys_mmap(p: &mut Process, mem: &mut GuestMemory, a: [u64; 6]) -> SysResult {
    let (addr, len, prot, flags, fd, off) = (a[0], a[1], a[2] as u32, a[3] as i32, a[4], a[5]);
    let kind = flags & libc::MAP_TYPE;
    if kind != libc::MAP_PRIVATE && kind != libc::MAP_SHARED {
        return Err(EINVAL);
    }
    let fixed = if flags & libc::MAP_FIXED_NOREPLACE != 0 {
        Fixed::NoReplace
    } else if flags & libc::MAP_FIXED != 0 {
        Fixed::Replace
    } else {
        Fixed::Hint
    };
    if flags & libc::MAP_ANONYMOUS != 0 {
        return p.space.mmap(addr, len, prot, fixed, mem);
    }
    // A read-only view of a rootfs file: copied in (the files are small and read-only).
    if off % 4096 != 0 {
        return Err(EINVAL);
    }
    let host_fd = match &p.fds.get(fd)?.kind {
        FdKind::File(f) => f.host.as_raw_fd(),
        FdKind::Entropy => return mmap_entropy(p, mem, addr, len, prot, fixed, off),
        FdKind::Overlay(f) => {
            // A copy, as for rootfs files: a shared writable mapping could never write back.
            if kind == libc::MAP_SHARED && prot & PROT_WRITE != 0 {
                return Err(ENODEV);
            }
            if !f.readable() {
                return Err(EACCES);
            }
            let f = f.clone();
            check_file_range(off, len, p.space.memory_size())?;
            let start = p.space.mmap(addr, len, prot, fixed, mem)?;
            let dst = mem.user_slice_mut(UserAddr::new(start), len)?;
            f.file().read_at(off, dst);
            return Ok(start);
        }
        FdKind::Device(crate::files::Device::Zero) => return p.space.mmap(addr, len, prot, fixed, mem),
        FdKind::Endpoint(_) | FdKind::EventFd(_) | FdKind::Epoll(_) | FdKind::Dir(_) | FdKind::Device(_) => {
            return Err(ENODEV)
        }
        _ => return Err(EACCES),
    };
    if kind == libc::MAP_SHARED && prot & PROT_WRITE != 0 {
        return Err(EACCES);
    }
    check_file_range(off, len, p.space.memory_size())?;
    let start = p.space.mmap(addr, len, prot, fixed, mem)?;
    let dst = mem.user_slice_mut(UserAddr::new(start), len)?;
    let mut done = 0usize;
    while done < dst.len() {
        let rest = &mut dst[done..];
        // Within i64 (check_file_range), so neither the sum nor the cast can wrap.
        let Some(at) = off.checked_add(done as u64).and_then(|at| i64::try_from(at).ok()) else { break };
        // SAFETY: pread into a checked range of guest memory from an fd we own.
        let n = unsafe { libc::pread(host_fd, rest.as_mut_ptr().cast(), rest.len(), at) };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    Ok(start)
}

/// Linux's limit on a file mapping: the file offset of its end (length in whole pages) must
/// be a valid `off_t`, EOVERFLOW otherwise (an offset of 2^63 or more never is). A length no
/// gap could hold is ENOMEM first, as Linux finds no room before it looks at the file.
fn check_file_range(off: u64, len: u64, memory_size: u64) -> Result<(), Errno> {
    let len = crate::mm::page_up(len).ok_or(ENOMEM)?;
    if len > memory_size {
        return Err(ENOMEM);
    }
    match off.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(EOVERFLOW),
    }
}

/// Most pages of the entropy device a process may have mapped, all mappings together: each
/// is refilled with host randomness in every VM its snapshot is restored into, on the pool's
/// thread, so an unbounded number would let one function spend the pool's time.
pub(crate) const MAX_ENTROPY_PAGES: u64 = 16;

/// A mapping of the entropy device: fresh randomness now, and again at every restore (the
/// region's kind tells the restore to refill it).
fn mmap_entropy(
    p: &mut Process,
    mem: &mut GuestMemory,
    addr: u64,
    len: u64,
    prot: u32,
    fixed: Fixed,
    off: u64,
) -> SysResult {
    if off != 0 {
        return Err(EINVAL);
    }
    let mapped: u64 =
        p.space.regions().filter(|r| r.kind == crate::mm::RegionKind::Entropy).map(|r| r.end - r.start).sum();
    if crate::mm::page_up(len).is_none_or(|len| mapped + len > MAX_ENTROPY_PAGES * 4096) {
        return Err(ENOMEM);
    }
    // Unless the program chose an address, beside the vDSO (`AddressSpace::gap_beside_vdso`):
    // CPython's one read-only entropy page otherwise splits its first arenas' window.
    let addr = match fixed {
        Fixed::Hint if addr == 0 => p.space.gap_beside_vdso(len).unwrap_or(0),
        _ => addr,
    };
    let start = p.space.mmap(addr, len, prot, fixed, mem)?;
    let len = crate::mm::page_up(len).ok_or(EINVAL)?;
    p.space.set_kind(start, crate::mm::RegionKind::Entropy);
    fill_random(mem.user_slice_mut(UserAddr::new(start), len)?)?;
    Ok(start)
}

pub(super) fn sys_madvise(p: &mut Process, mem: &mut GuestMemory, addr: u64, len: u64, advice: u64) -> SysResult {
    const MADV_DONTNEED: u64 = 4;
    const MADV_FREE: u64 = 8;
    if !addr.is_multiple_of(4096) {
        return Err(EINVAL);
    }
    if advice == MADV_DONTNEED || advice == MADV_FREE {
        let len = crate::mm::page_up(len).ok_or(EINVAL)?;
        let at = mem.check_user(ptr(addr), len)?;
        mem.discard(at, len).map_err(|_| ENOMEM)?;
    }
    let _ = p;
    Ok(0)
}

/// msync: nothing to write back (file mappings are copies), but the arguments are checked
/// as Linux checks them and the range must be mapped.
pub(super) fn sys_msync(p: &Process, addr: u64, len: u64, flags: u64) -> SysResult {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 || flags & (MS_ASYNC | MS_SYNC) == MS_ASYNC | MS_SYNC {
        return Err(EINVAL);
    }
    if !addr.is_multiple_of(4096) {
        return Err(EINVAL);
    }
    let end = crate::mm::page_up(len).and_then(|l| addr.checked_add(l)).ok_or(ENOMEM)?;
    let mut at = addr;
    while at < end {
        let region = p.space.regions().find(|r| r.start <= at && at < r.end).ok_or(ENOMEM)?;
        at = region.end;
    }
    Ok(0)
}
