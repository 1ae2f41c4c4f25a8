//! The program's address space as the monitor sees it: the image, the brk heap, mmap regions
//! and the stack, all inside user memory, each region with its protection. It decides what
//! brk/mmap/munmap/mremap/mprotect return, keeps every allocation under the memory cap, and
//! zeroes memory that is given back; [`crate::page_tables`] makes the CPU enforce the
//! protections it records.

use std::collections::BTreeMap;

use crate::errno::{Errno, EEXIST, EFAULT, EINVAL, ENOMEM};
use crate::layout::{GuestAddr, LARGE_PAGE, PAGE_SIZE, STACK_RESERVE, USER_START};
use crate::memory::GuestMemory;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

/// What a region of the address space holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Image,
    Mmap,
    Stack,
    /// The vDSO and its time page (see [`crate::vdso`]).
    Vdso,
    /// A mapping of the entropy device ([`crate::files::ENTROPY_DEVICE`]): refilled with fresh
    /// randomness at every restore.
    Entropy,
}

/// One mapped range `[start, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub kind: RegionKind,
}

/// Page-rounds `len` up, or `None` on overflow.
pub fn page_up(len: u64) -> Option<u64> {
    len.checked_add(PAGE_SIZE - 1).map(|v| v & !(PAGE_SIZE - 1))
}

/// The address space of one program.
#[derive(Clone, Debug)]
pub struct AddressSpace {
    memory_size: u64,
    brk_start: u64,
    brk: u64,
    regions: BTreeMap<u64, Region>,
}

impl AddressSpace {
    /// A fresh address space with the program image at `[image_start, image_end)` and the
    /// stack at the top of `memory_size` bytes of guest memory.
    pub fn new(memory_size: u64, image_start: u64, image_end: u64) -> Result<Self, Errno> {
        let stack_start = memory_size.checked_sub(STACK_RESERVE).ok_or(ENOMEM)?;
        let image_end = page_up(image_end).ok_or(ENOMEM)?;
        if image_start < USER_START || image_end > stack_start || image_start >= image_end {
            return Err(ENOMEM);
        }
        let mut space = AddressSpace { memory_size, brk_start: image_end, brk: image_end, regions: BTreeMap::new() };
        space.insert(Region {
            start: image_start,
            end: image_end,
            prot: PROT_READ | PROT_EXEC,
            kind: RegionKind::Image,
        });
        space.insert(Region {
            start: stack_start,
            end: memory_size,
            prot: PROT_READ | PROT_WRITE,
            kind: RegionKind::Stack,
        });
        Ok(space)
    }

    /// A fresh address space whose image is `segments`: (start, end, prot) of each PT_LOAD
    /// segment, page-rounded, in the order the ELF lists them. Where two segments share a
    /// page, the later one's protection wins, as when Linux maps them one after the other.
    pub fn with_image(memory_size: u64, segments: &[(u64, u64, u32)]) -> Result<Self, Errno> {
        let image_start = segments.iter().map(|s| s.0).min().ok_or(ENOMEM)?;
        let image_end = segments.iter().map(|s| s.1).max().ok_or(ENOMEM)?;
        let mut space = Self::new(memory_size, image_start, image_end)?;
        space.remove_range(image_start, page_up(image_end).ok_or(ENOMEM)?);
        for &(start, end, prot) in segments {
            let end = page_up(end).ok_or(ENOMEM)?;
            let start = start & !(PAGE_SIZE - 1);
            space.remove_range(start, end);
            space.insert(Region { start, end, prot, kind: RegionKind::Image });
        }
        Ok(space)
    }

    /// Rebuilds an address space from a snapshot's region map.
    pub fn from_parts(memory_size: u64, brk_start: u64, brk: u64, regions: Vec<Region>) -> Result<Self, Errno> {
        let mut space = AddressSpace { memory_size, brk_start, brk, regions: BTreeMap::new() };
        if brk_start < USER_START || brk < brk_start || brk > memory_size {
            return Err(EINVAL);
        }
        for r in regions {
            if r.start % PAGE_SIZE != 0
                || r.end % PAGE_SIZE != 0
                || r.start >= r.end
                || r.start < USER_START
                || r.end > memory_size
                || space.overlaps(r.start, r.end)
            {
                return Err(EINVAL);
            }
            space.insert(r);
        }
        Ok(space)
    }

    pub fn memory_size(&self) -> u64 {
        self.memory_size
    }
    pub fn brk_start(&self) -> u64 {
        self.brk_start
    }
    pub fn brk(&self) -> u64 {
        self.brk
    }
    /// The lowest address of the stack region (the top of the mmap area).
    pub fn mmap_top(&self) -> u64 {
        self.memory_size - STACK_RESERVE
    }
    /// All regions in address order.
    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }
    /// Bytes the program holds (regions plus brk heap), for sysinfo.
    pub fn used_bytes(&self) -> u64 {
        self.regions.values().map(|r| r.end - r.start).sum::<u64>() + (self.brk - self.brk_start)
    }

    /// The regions that overlap `[start, end)`, in address order (not clipped).
    pub fn regions_overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Region> {
        let first = self.regions.range(..=start).next_back().filter(|(_, r)| r.end > start).map(|(&k, _)| k);
        self.regions.range(first.unwrap_or(start)..end).map(|(_, r)| r).filter(move |r| r.end > start)
    }

    /// The regions of `[start, end)`, clipped to it: what [`Self::put_back`] restores when a
    /// change to the range cannot be made to take effect.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<Region> {
        self.regions_overlapping(start, end)
            .map(|r| Region { start: r.start.max(start), end: r.end.min(end), ..r.clone() })
            .collect()
    }

    /// Makes `[start, end)` hold exactly `pieces` (from [`Self::pieces`] of the same range).
    pub fn put_back(&mut self, start: u64, end: u64, pieces: Vec<Region>) {
        self.remove_range(start, end);
        for r in pieces {
            self.insert(r);
        }
    }

    /// Marks the region that starts at `start` as being of `kind`.
    pub fn set_kind(&mut self, start: u64, kind: RegionKind) {
        if let Some(r) = self.regions.get_mut(&start) {
            r.kind = kind;
        }
    }

    fn insert(&mut self, r: Region) {
        self.regions.insert(r.start, r);
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.regions.range(..end).next_back().is_some_and(|(_, r)| r.end > start)
    }

    fn brk_overlaps(&self, start: u64, end: u64) -> bool {
        let heap_end = page_up(self.brk).unwrap_or(u64::MAX);
        start < heap_end && end > self.brk_start
    }

    /// Removes `[start, end)` from the region map, splitting regions that straddle it.
    fn remove_range(&mut self, start: u64, end: u64) {
        let touched: Vec<u64> =
            self.regions.range(..end).rev().take_while(|(_, r)| r.end > start).map(|(&k, _)| k).collect();
        for key in touched {
            let Some(r) = self.regions.remove(&key) else { continue };
            if r.start < start {
                self.insert(Region { end: start, ..r.clone() });
            }
            if r.end > end {
                self.insert(Region { start: end, ..r });
            }
        }
    }

    /// The highest free, page-aligned gap of `len` bytes below the stack and above the heap,
    /// below the vDSO's 2 MiB window if there is one there: the vDSO is `r-x`, so anything
    /// else in its window would make W^X map the whole window 4 KiB at a time, and the pool
    /// would fault in each of its working-set pages instead of mapping it with one fault
    /// (CPython's first arenas: ≈50 faults per VM). Only when nothing fits below it does an
    /// mmap share the vDSO's window.
    fn find_gap(&self, len: u64) -> Option<u64> {
        let vdso_window =
            self.regions.values().find(|r| r.kind == RegionKind::Vdso).map(|r| r.start / LARGE_PAGE * LARGE_PAGE);
        vdso_window
            .and_then(|ceiling| self.find_gap_below(ceiling, len))
            .or_else(|| self.find_gap_below(self.mmap_top(), len))
    }

    /// A free gap of `len` bytes in the vDSO's own 2 MiB window, for a mapping of the entropy
    /// device (pages every restore refills): the vDSO already makes that window mixed, mapped
    /// 4 KiB at a time, so the mapping costs nothing there, where beside the program's
    /// read-write arenas it would make their window mixed too. `None` without a vDSO or when
    /// the window is full.
    pub fn gap_beside_vdso(&self, len: u64) -> Option<u64> {
        let vdso = self.regions.values().find(|r| r.kind == RegionKind::Vdso)?;
        let window = vdso.start / LARGE_PAGE * LARGE_PAGE;
        self.find_gap_below(vdso.start, page_up(len)?).filter(|&at| at >= window)
    }

    /// The highest free, page-aligned gap of `len` bytes below `ceiling` and above the heap.
    fn find_gap_below(&self, ceiling: u64, len: u64) -> Option<u64> {
        let floor = page_up(self.brk)?;
        let mut top = ceiling.min(self.mmap_top());
        for r in self.regions.range(..top).rev().map(|(_, r)| r) {
            if r.end <= top && top - r.end >= len && top - len >= floor {
                return Some(top - len);
            }
            top = top.min(r.start);
            if top < floor {
                return None;
            }
        }
        (top >= floor && top - floor >= len).then(|| top - len)
    }

    /// Reserves `[start, start+len)` for the monitor's own use (the vDSO): it must be free.
    pub fn reserve(&mut self, start: u64, len: u64, prot: u32, kind: RegionKind) -> Result<(), Errno> {
        let end = start.checked_add(len).ok_or(ENOMEM)?;
        if !start.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || start < page_up(self.brk).unwrap_or(u64::MAX)
            || end > self.memory_size
            || self.overlaps(start, end)
        {
            return Err(EINVAL);
        }
        self.insert(Region { start, end, prot, kind });
        Ok(())
    }

    /// `brk(2)`: grows or shrinks the heap; on failure returns the current break, as Linux does.
    pub fn brk_to(&mut self, new: u64, mem: &mut GuestMemory) -> u64 {
        if new < self.brk_start {
            return self.brk;
        }
        let (Some(old_end), Some(new_end)) = (page_up(self.brk), page_up(new)) else { return self.brk };
        if new_end > old_end {
            if new_end > self.mmap_top() || self.overlaps(old_end, new_end) {
                return self.brk;
            }
        } else if new_end < old_end && mem.discard(GuestAddr::new(new_end), old_end - new_end).is_err() {
            return self.brk;
        }
        self.brk = new;
        new
    }

    /// `mmap(2)` of anonymous memory (file contents, if any, are copied in by the caller).
    pub fn mmap(&mut self, addr: u64, len: u64, prot: u32, fixed: Fixed, mem: &mut GuestMemory) -> Result<u64, Errno> {
        if len == 0 {
            return Err(EINVAL);
        }
        let len = page_up(len).ok_or(ENOMEM)?;
        let start = match fixed {
            Fixed::Replace | Fixed::NoReplace => {
                if !addr.is_multiple_of(PAGE_SIZE) {
                    return Err(EINVAL);
                }
                let end = addr.checked_add(len).ok_or(ENOMEM)?;
                if addr < USER_START || end > self.memory_size {
                    return Err(ENOMEM);
                }
                if fixed == Fixed::NoReplace && (self.overlaps(addr, end) || self.brk_overlaps(addr, end)) {
                    return Err(EEXIST);
                }
                self.remove_range(addr, end);
                mem.discard(GuestAddr::new(addr), len).map_err(|_| ENOMEM)?;
                addr
            }
            Fixed::Hint => {
                let hint_ok = addr.is_multiple_of(PAGE_SIZE)
                    && addr >= page_up(self.brk).unwrap_or(u64::MAX)
                    && addr.checked_add(len).is_some_and(|end| end <= self.mmap_top() && !self.overlaps(addr, end));
                if hint_ok {
                    addr
                } else {
                    self.find_gap(len).ok_or(ENOMEM)?
                }
            }
        };
        self.insert(Region { start, end: start + len, prot, kind: RegionKind::Mmap });
        Ok(start)
    }

    /// `munmap(2)`: forgets the range and zeroes it, so a later mapping reads zeros.
    pub fn munmap(&mut self, addr: u64, len: u64, mem: &mut GuestMemory) -> Result<(), Errno> {
        let len = page_up(len).ok_or(EINVAL)?;
        let end = addr.checked_add(len).ok_or(EINVAL)?;
        if !addr.is_multiple_of(PAGE_SIZE) || len == 0 || addr < USER_START || end > self.memory_size {
            return Err(EINVAL);
        }
        self.remove_range(addr, end);
        mem.discard(GuestAddr::new(addr), len).map_err(|_| ENOMEM)
    }

    /// `mremap(2)` with flags 0 or MREMAP_MAYMOVE.
    pub fn mremap(
        &mut self,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
        mem: &mut GuestMemory,
    ) -> Result<u64, Errno> {
        let old_len = page_up(old_len).ok_or(EINVAL)?;
        let new_len = page_up(new_len).ok_or(EINVAL)?;
        if !old.is_multiple_of(PAGE_SIZE) || new_len == 0 || old_len == 0 {
            return Err(EINVAL);
        }
        let old_end = old.checked_add(old_len).ok_or(EFAULT)?;
        let region = match self.regions.range(..=old).next_back() {
            Some((_, r)) if r.end >= old_end && r.kind == RegionKind::Mmap => r.clone(),
            _ => return Err(EFAULT),
        };
        if new_len == old_len {
            return Ok(old); // nothing to do (Linux too, once the range is known to be mapped)
        }
        if new_len < old_len {
            self.munmap(old + new_len, old_len - new_len, mem)?;
            return Ok(old);
        }
        let grown_end = old.checked_add(new_len).ok_or(ENOMEM)?;
        let tail_free = region.end == old_end && grown_end <= self.mmap_top() && !self.overlaps(old_end, grown_end);
        if tail_free {
            self.regions.remove(&region.start);
            self.insert(Region { end: grown_end, ..region });
            return Ok(old);
        }
        if !may_move {
            return Err(ENOMEM);
        }
        let new = self.find_gap(new_len).ok_or(ENOMEM)?;
        self.insert(Region { start: new, end: new + new_len, prot: region.prot, kind: RegionKind::Mmap });
        mem.copy_within(GuestAddr::new(old), GuestAddr::new(new), old_len).map_err(|_| EFAULT)?;
        self.munmap(old, old_len, mem)?;
        Ok(new)
    }

    /// `mprotect(2)`: records the new protection of every mapped piece of the range (the
    /// syscall layer then has [`crate::page_tables`] enforce it).
    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u32) -> Result<(), Errno> {
        let len = page_up(len).ok_or(ENOMEM)?;
        let end = addr.checked_add(len).ok_or(ENOMEM)?;
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(EINVAL);
        }
        if addr < USER_START || end > self.memory_size {
            return Err(ENOMEM);
        }
        let pieces: Vec<Region> =
            self.regions.range(..end).rev().take_while(|(_, r)| r.end > addr).map(|(_, r)| r.clone()).collect();
        for r in pieces {
            self.remove_range(r.start.max(addr), r.end.min(end));
            self.insert(Region { start: r.start.max(addr), end: r.end.min(end), prot, kind: r.kind });
        }
        Ok(())
    }
}

/// How `mmap` treats its address argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixed {
    /// A hint: used when free, otherwise anywhere.
    Hint,
    /// MAP_FIXED: replaces whatever was there.
    Replace,
    /// MAP_FIXED_NOREPLACE: fails with EEXIST if anything is there.
    NoReplace,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: u64 = 64 << 20;

    fn space() -> (AddressSpace, GuestMemory) {
        (AddressSpace::new(MEM, 0x40_0000, 0x48_1234).unwrap(), GuestMemory::new(MEM).unwrap())
    }

    #[test]
    fn brk_grows_shrinks_and_refuses_past_the_cap() {
        let (mut s, mut m) = space();
        let b = s.brk();
        assert_eq!(b, 0x48_2000);
        assert_eq!(s.brk_to(b + 0x10000, &mut m), b + 0x10000);
        assert_eq!(s.brk_to(MEM, &mut m), b + 0x10000, "past the mmap area the break stays");
        assert_eq!(s.brk_to(b, &mut m), b);
        assert_eq!(s.brk_to(0, &mut m), b, "brk(0) queries");
    }

    #[test]
    fn mmap_allocates_top_down_and_runs_out_at_the_cap() {
        let (mut s, mut m) = space();
        let a = s.mmap(0, 4096, PROT_READ, Fixed::Hint, &mut m).unwrap();
        assert_eq!(a, s.mmap_top() - 4096);
        let b = s.mmap(0, 8192, PROT_READ, Fixed::Hint, &mut m).unwrap();
        assert_eq!(b, a - 8192);
        let mut n = 0;
        while s.mmap(0, 1 << 20, PROT_READ, Fixed::Hint, &mut m).is_ok() {
            n += 1;
        }
        assert!(n > 40 && n < 64, "{n} MiB fit in 64 MiB");
        assert_eq!(s.mmap(0, 1 << 20, PROT_READ, Fixed::Hint, &mut m), Err(ENOMEM));
        s.munmap(a, 4096, &mut m).unwrap();
        assert_eq!(s.mmap(0, 4096, PROT_READ, Fixed::Hint, &mut m), Ok(a), "a freed hole is reused");
    }

    #[test]
    fn mmap_leaves_the_vdsos_window_to_it_until_nothing_else_fits() {
        let (mut s, mut m) = space();
        let vdso = s.mmap_top() - 2 * PAGE_SIZE;
        s.reserve(vdso, 2 * PAGE_SIZE, PROT_READ | PROT_EXEC, RegionKind::Vdso).unwrap();
        let window = vdso / LARGE_PAGE * LARGE_PAGE;
        let a = s.mmap(0, 4096, PROT_READ | PROT_WRITE, Fixed::Hint, &mut m).unwrap();
        assert_eq!(a, window - 4096, "the first mmap goes below the vDSO's window");
        // Fill everything below the window; then the window's free part is used after all.
        while s.mmap(0, 4096, PROT_READ, Fixed::Hint, &mut m).is_ok_and(|b| b < window) {}
        assert!(
            s.regions().any(|r| r.kind == RegionKind::Mmap && r.start >= window),
            "the window's room was never used"
        );
    }

    #[test]
    fn a_read_only_mapping_can_share_the_vdsos_window_leaving_the_arenas_whole() {
        let (mut s, mut m) = space();
        assert_eq!(s.gap_beside_vdso(4096), None, "no vDSO, no window");
        let vdso = s.mmap_top() - 2 * PAGE_SIZE;
        s.reserve(vdso, 2 * PAGE_SIZE, PROT_READ | PROT_EXEC, RegionKind::Vdso).unwrap();
        let window = vdso / LARGE_PAGE * LARGE_PAGE;
        let at = s.gap_beside_vdso(4096).unwrap();
        assert_eq!(at, vdso - 4096);
        assert_eq!(s.mmap(at, 4096, PROT_READ, Fixed::Hint, &mut m), Ok(at));
        let arena = s.mmap(0, 4096, PROT_READ | PROT_WRITE, Fixed::Hint, &mut m).unwrap();
        assert_eq!(arena, window - 4096, "the next mapping still goes below the window");
        assert_eq!(s.gap_beside_vdso(LARGE_PAGE), None, "more than the window holds");
    }

    #[test]
    fn munmap_zeroes_and_splits() {
        let (mut s, mut m) = space();
        let a = s.mmap(0, 3 * 4096, PROT_READ | PROT_WRITE, Fixed::Hint, &mut m).unwrap();
        m.slice_mut(GuestAddr::new(a), 3 * 4096).unwrap().fill(9);
        s.munmap(a + 4096, 4096, &mut m).unwrap();
        assert_eq!(s.regions().filter(|r| r.kind == RegionKind::Mmap).count(), 2);
        assert_eq!(m.slice(GuestAddr::new(a + 4096), 1).unwrap()[0], 0);
        assert_eq!(m.slice(GuestAddr::new(a), 1).unwrap()[0], 9);
        assert_eq!(s.mmap(a + 4096, 4096, PROT_READ, Fixed::NoReplace, &mut m), Ok(a + 4096));
        assert_eq!(s.mmap(a, 4096, PROT_READ, Fixed::NoReplace, &mut m), Err(EEXIST));
    }

    #[test]
    fn mremap_grows_in_place_or_moves_with_contents() {
        let (mut s, mut m) = space();
        let a = s.mmap(0, 4096, PROT_READ | PROT_WRITE, Fixed::Hint, &mut m).unwrap();
        let _b = s.mmap(0, 4096, PROT_READ, Fixed::Hint, &mut m).unwrap();
        m.slice_mut(GuestAddr::new(a), 4096).unwrap().fill(5);
        assert_eq!(s.mremap(a, 4096, 8192, false, &mut m), Err(ENOMEM));
        let n = s.mremap(a, 4096, 8192, true, &mut m).unwrap();
        assert_ne!(n, a);
        assert!(m.slice(GuestAddr::new(n), 4096).unwrap().iter().all(|&x| x == 5));
        assert_eq!(s.mremap(n, 8192, 4096, false, &mut m), Ok(n));
        assert_eq!(s.mremap(n, 4096, 4096, false, &mut m), Ok(n), "the same size: the same mapping");
        assert_eq!(s.mremap(n, 4000, 4096, true, &mut m), Ok(n), "the same size in pages");
        assert!(m.slice(GuestAddr::new(n), 4096).unwrap().iter().all(|&x| x == 5));
        assert_eq!(s.mremap(0x100_0000, 4096, 4096, true, &mut m), Err(EFAULT), "the same size, unmapped");
        assert_eq!(s.mremap(0x40_0000, 4096, 8192, true, &mut m), Err(EFAULT), "the image is not mremap-able");
    }

    #[test]
    fn fixed_mappings_stay_inside_user_memory() {
        let (mut s, mut m) = space();
        assert_eq!(s.mmap(0, 4096, PROT_READ, Fixed::Replace, &mut m), Err(ENOMEM));
        assert_eq!(s.mmap(MEM, 4096, PROT_READ, Fixed::Replace, &mut m), Err(ENOMEM));
        assert_eq!(s.mmap(u64::MAX - 4095, 4096, PROT_READ, Fixed::Replace, &mut m), Err(ENOMEM));
        assert_eq!(s.mmap(0x1000_0001, 4096, PROT_READ, Fixed::Replace, &mut m), Err(EINVAL));
    }
}
