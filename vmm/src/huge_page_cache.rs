//! Used 2 MiB huge pages, kept for the next VM's huge windows so that it does not pay for
//! zeroing new ones.
//!
//! A huge window (`working_set.rs`) is a 2 MiB range of guest memory the pool fills with a
//! private copy of the snapshot's bytes. Filled from a new huge page, it costs the host a
//! 2 MiB zeroing (the kernel's, at the first write) before the 2 MiB copy: on kvm-pvm a
//! CPython VM's two windows spent ≈25 % of the pool's time per VM in `clear_page`. A
//! destroyed VM's windows are whole huge pages nobody needs any more, so the pool keeps a
//! few: when a VM is dropped its windows are moved (page tables, not bytes: `mremap`) into
//! this cache, and the next restore moves one into its own window and **overwrites every
//! byte of it** from the snapshot before the VM can run.
//!
//! Why no call can see another call's bytes through it: a cached page is reachable only
//! from this cache's arena, which no VM's memory slot covers; it enters a VM only through
//! [`crate::memory::GuestMemory::copy_into_huge_page`], which writes all 2 MiB (the
//! snapshot's bytes, zeros where the snapshot has none) before returning, and a VM whose
//! restore fails is destroyed, never run. The pages held are bounded ([`CAPACITY`]) and
//! dropped when the pool goes idle, so an idle server still holds no guest memory.
//!
//! Pages move with `MREMAP_DONTUNMAP` both ways, so neither side is ever left unmapped for
//! another thread's mmap to land in: the source keeps an empty mapping (a VM's memory, about
//! to be unmapped whole; or the cache slot, ready for the next page).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::layout::LARGE_PAGE;

/// Most pages the cache holds (16 MiB): enough for the reaper to stay a few VMs ahead of the
/// pool, few enough that the memory it holds stays small beside the VMs themselves.
pub const CAPACITY: usize = 8;

/// A bounded cache of used huge pages (see the module docs). Shared by one runtime's VMs.
pub struct HugePageCache {
    slots: Mutex<Slots>,
    reused: AtomicU64,
}

struct Slots {
    /// The slots (made on first use).
    arena: Option<Arena>,
    /// Which slots hold a page.
    full: [bool; CAPACITY],
}

/// `CAPACITY` huge pages of address space, 2 MiB-aligned: one slot per kept page. Never
/// touched itself (pages only move in and out), so it holds no memory but what it keeps.
struct Arena {
    base: NonNull<u8>,
}

const ARENA_LEN: usize = CAPACITY * LARGE_PAGE as usize;

// SAFETY: the arena is address space this cache owns; every access goes through the mutex.
unsafe impl Send for Slots {}

impl Arena {
    fn reserve() -> Option<Arena> {
        crate::memory::map_huge_aligned(ARENA_LEN).ok().map(|base| Arena { base })
    }

    fn slot(&self, i: usize) -> *mut u8 {
        // SAFETY: i < CAPACITY, so the slot lies inside the mapping of ARENA_LEN bytes.
        unsafe { self.base.as_ptr().add(i * LARGE_PAGE as usize) }
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: our own mapping of ARENA_LEN bytes; the pages in it go with it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), ARENA_LEN) };
    }
}

/// Moves the 2 MiB at `from` to `to` (both 2 MiB-aligned), leaving `from` mapped but empty.
///
/// # Safety
/// Both ranges must be private anonymous memory the caller owns, with no borrow of either
/// alive; what `to` held is unmapped.
unsafe fn move_huge_page(from: *mut u8, to: *mut u8) -> bool {
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED | libc::MREMAP_DONTUNMAP;
    // SAFETY: as the caller promised; the result is checked.
    let moved = unsafe { libc::mremap(from.cast(), LARGE_PAGE as usize, LARGE_PAGE as usize, flags, to) };
    moved != libc::MAP_FAILED
}

impl HugePageCache {
    /// An empty cache (its address space is reserved at the first page put in).
    pub fn new() -> HugePageCache {
        HugePageCache { slots: Mutex::new(Slots { arena: None, full: [false; CAPACITY] }), reused: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the huge page at `from` (2 MiB-aligned) if there is room; `false` if not.
    ///
    /// # Safety
    /// `from` must be 2 MiB of private anonymous memory of a VM that is gone (no memory slot
    /// maps it, no borrow of it is alive); it is left mapped but empty.
    pub(crate) unsafe fn put(&self, from: *mut u8) -> bool {
        let mut slots = self.lock();
        if slots.arena.is_none() {
            slots.arena = Arena::reserve();
        }
        let Some(i) = slots.full.iter().position(|&full| !full) else { return false };
        let Some(arena) = &slots.arena else { return false };
        // SAFETY: the caller's promise for `from`; the slot is ours and holds no page.
        let moved = unsafe { move_huge_page(from, arena.slot(i)) };
        slots.full[i] = moved;
        moved
    }

    /// Moves a kept page to `to` (2 MiB-aligned), replacing what was mapped there; `false` if
    /// the cache is empty. The page holds an earlier VM's bytes.
    ///
    /// # Safety
    /// `to` must be 2 MiB of private anonymous memory the caller owns, and the caller must
    /// overwrite every byte of it before any guest can read it.
    pub(crate) unsafe fn take_into(&self, to: *mut u8) -> bool {
        let mut slots = self.lock();
        let Some(i) = slots.full.iter().position(|&full| full) else { return false };
        let Some(arena) = &slots.arena else { return false };
        // SAFETY: the slot holds a page of ours; the caller's promise for `to`.
        let moved = unsafe { move_huge_page(arena.slot(i), to) };
        if moved {
            slots.full[i] = false;
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        moved
    }

    /// Counts a huge window overwritten in the huge page it already had, in memory reused
    /// whole from a finished VM (`memory_reuse.rs`): also a used page, also no zeroing.
    pub(crate) fn count_reused_in_place(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives every kept page back to the host (the pool went idle).
    pub fn clear(&self) {
        let mut slots = self.lock();
        let Some(arena) = &slots.arena else { return };
        for i in 0..CAPACITY {
            // SAFETY: the slot is our own private anonymous memory; dropping its pages loses
            // nothing anyone needs.
            unsafe { libc::madvise(arena.slot(i).cast(), LARGE_PAGE as usize, libc::MADV_DONTNEED) };
        }
        slots.full = [false; CAPACITY];
    }

    /// Pages held now.
    pub fn held(&self) -> usize {
        self.lock().full.iter().filter(|&&full| full).count()
    }

    /// Used huge pages a VM's huge window was filled in so far (from this cache, or in
    /// place in reused memory).
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

impl Default for HugePageCache {
    fn default() -> Self {
        HugePageCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::GuestAddr;
    use crate::memory::GuestMemory;

    /// `n` huge pages of private anonymous memory (2 MiB-aligned: `map_huge_aligned`).
    struct Aligned(GuestMemory);

    impl Aligned {
        fn new(n: usize) -> Aligned {
            let memory = GuestMemory::new(n as u64 * LARGE_PAGE).unwrap();
            assert!(memory.host_base().is_multiple_of(LARGE_PAGE));
            Aligned(memory)
        }

        fn page(&mut self, i: usize) -> &mut [u8] {
            self.0.slice_mut(GuestAddr::new(i as u64 * LARGE_PAGE), LARGE_PAGE).unwrap()
        }
    }

    #[test]
    fn pages_move_whole_leave_their_source_empty_and_the_cache_stays_bounded() {
        let cache = HugePageCache::new();
        let mut from = Aligned::new(CAPACITY + 1);
        for i in 0..=CAPACITY {
            from.page(i).fill(i as u8 + 1);
        }
        for i in 0..CAPACITY {
            // SAFETY: our own private anonymous memory, no borrow alive.
            assert!(unsafe { cache.put(from.page(i).as_mut_ptr()) }, "page {i} kept");
            assert!(from.page(i).iter().all(|&b| b == 0), "the source is left mapped and empty");
        }
        // SAFETY: as above.
        assert!(!unsafe { cache.put(from.page(CAPACITY).as_mut_ptr()) }, "past the capacity nothing is kept");
        assert_eq!(from.page(CAPACITY)[0], CAPACITY as u8 + 1, "a page not kept stays where it was");
        assert_eq!(cache.held(), CAPACITY);

        let mut to = Aligned::new(2);
        // SAFETY: our own memory; the test reads what arrived instead of overwriting it.
        assert!(unsafe { cache.take_into(to.page(0).as_mut_ptr()) });
        let got = to.page(0)[0];
        assert!((1..=CAPACITY as u8).contains(&got) && to.page(0).iter().all(|&b| b == got), "a whole page arrived");
        assert_eq!((cache.held(), cache.reused()), (CAPACITY - 1, 1));

        cache.clear();
        assert_eq!(cache.held(), 0);
        // SAFETY: as above.
        assert!(!unsafe { cache.take_into(to.page(1).as_mut_ptr()) }, "a cleared cache gives nothing");
        assert!(to.page(1).iter().all(|&b| b == 0));
    }
}
