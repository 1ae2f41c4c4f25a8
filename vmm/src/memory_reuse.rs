//! A finished VM's host memory, reset and given to the next VM of the same snapshot.
//!
//! Without reuse, each VM the pool makes for a snapshot maps the snapshot's sealed copy into
//! new host memory, and the pages its working set writes are allocated (and zeroed) anew,
//! copied, and freed again with the VM: on kvm-pvm the munmap of a CPython VM's memory was
//! ≈37 % of the reaper's time per VM (a quarter of it TLB-shootdown IPIs), and populating the
//! working set again ≈17 % of the pool's. Yet the next VM of that snapshot needs exactly the
//! same layout with exactly the same bytes.
//!
//! So when a VM of a snapshot the pool serves is destroyed, the reaper keeps its memory: the
//! KVM VM and vCPU are destroyed as always ([`crate::vm::Machine::into_memory`]), and the
//! pages the call wrote are found (`written_pages.rs`, one `PAGEMAP_SCAN` walk) and given back
//! the bytes they had when the layout was new
//! ([`crate::snapshot::SnapshotImage::reset_used_memory`]). The next VM the pool makes for
//! that snapshot is a new KVM VM around that memory
//! ([`crate::vm::EmptyVm::create_unwarmed_in`]), and the restore skips the mappings it
//! already has.
//!
//! **Why no call can see what an earlier one left.** Every call still runs in a KVM VM no
//! other call ran in: VM, vCPU, memory slot, and every translation KVM built are new. And the
//! memory reads, byte for byte, as a newly laid-out one would before the restore writes into
//! it:
//!
//! - outside the snapshot's huge windows, a page the call never wrote still maps the sealed
//!   copy (or is still absent, reading as zeros); a page it wrote is a private copy, which the
//!   scan reports (it misses no private page, present or swapped out), and which is
//!   overwritten with the sealed copy's bytes, or zeros outside the snapshot's span;
//! - each huge window is overwritten whole by the restore, as a window from the huge-page
//!   cache is (`huge_page_cache.rs`);
//! - memory whose layout changed (a guest munmap replaced a mapping, a file was mapped into
//!   it) is not reused, nor memory of another snapshot image, nor memory where the call wrote
//!   more than [`crate::working_set::Placement::reset_limit`] pages: it is unmapped, as
//!   without reuse.
//!
//! What is kept is bounded ([`CAPACITY`] memories, each no more than a VM in flight holds),
//! and dropped when the pool goes idle or the function is replaced, so an idle server still
//! holds no guest memory. `snapcall serve --no-memory-reuse` turns it off, to compare.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::memory::GuestMemory;

/// Most memories kept at once: enough for the reaper to stay ahead of the pool and of calls
/// that create their VM inline (wrk, 8 connections, hellowithdata-py: with 4, 60 % of VMs
/// got a kept memory, the rest were dropped in bursts; with 8, all), few enough that what is
/// kept stays about what the VMs in flight hold.
pub const CAPACITY: usize = 8;

/// Reset memories of destroyed VMs, by the snapshot image they are laid out for.
#[derive(Default)]
pub(crate) struct ReusableMemory {
    kept: Mutex<Vec<(u64, GuestMemory)>>,
    reused: AtomicU64,
}

impl ReusableMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, GuestMemory)>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether another memory would be kept (the caller then resets one).
    pub(crate) fn has_room(&self) -> bool {
        self.lock().len() < CAPACITY
    }

    /// Keeps `memory`, reset for image `image`; gives it back when there is no room.
    pub(crate) fn put(&self, image: u64, memory: GuestMemory) -> Result<(), GuestMemory> {
        let mut kept = self.lock();
        if kept.len() >= CAPACITY {
            return Err(memory);
        }
        kept.push((image, memory));
        Ok(())
    }

    /// A kept memory laid out for `image`, if any.
    pub(crate) fn take(&self, image: u64) -> Option<GuestMemory> {
        let mut kept = self.lock();
        let i = kept.iter().position(|(id, _)| *id == image)?;
        let (_, memory) = kept.swap_remove(i);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(memory)
    }

    /// Takes every memory kept for `image` (its function went idle or was replaced), for the
    /// caller to drop outside its locks (unmapping a CPython VM's memory takes ≈0.1 ms).
    pub(crate) fn take_all(&self, image: u64) -> Vec<GuestMemory> {
        let mut kept = self.lock();
        let (gone, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut *kept).into_iter().partition(|(id, _)| *id == image);
        *kept = stay;
        gone.into_iter().map(|(_, memory)| memory).collect()
    }

    /// Memories kept now.
    pub(crate) fn held(&self) -> usize {
        self.lock().len()
    }

    /// Memories given to a new VM so far.
    pub(crate) fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_are_kept_per_image_up_to_the_capacity_and_taken_back() {
        let kept = ReusableMemory::default();
        let memory = || GuestMemory::new(8 << 20).unwrap();
        for _ in 0..CAPACITY - 1 {
            assert!(kept.put(1, memory()).is_ok());
        }
        assert!(kept.put(2, memory()).is_ok());
        assert!(!kept.has_room());
        assert!(kept.put(2, memory()).is_err(), "over the capacity");
        assert!(kept.take(3).is_none(), "no memory of another image");
        assert!(kept.take(2).is_some());
        assert!(kept.take(2).is_none());
        assert_eq!((kept.held(), kept.reused()), (CAPACITY - 1, 1));
        assert_eq!(kept.take_all(1).len(), CAPACITY - 1);
        assert!(kept.take_all(1).is_empty());
        assert_eq!(kept.held(), 0);
    }
}
