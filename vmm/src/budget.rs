//! The host memory the monitor holds on the program's behalf: pipe and socket buffers,
//! epoll registrations, files written to the in-VM filesystem. The guest makes it grow, so it
//! is counted against the function's memory cap: a program can make the monitor hold at most
//! as much again as its own memory, whatever it does.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One program's budget (cloned handles share it).
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<Counter>,
}

#[derive(Debug)]
struct Counter {
    limit: u64,
    used: AtomicU64,
}

/// A charge that would go over the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{wanted} more bytes of monitor memory would exceed the program's budget of {limit} ({used} in use)")]
pub struct OverBudget {
    pub wanted: u64,
    pub used: u64,
    pub limit: u64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: u64) -> MemoryBudget {
        MemoryBudget { inner: Arc::new(Counter { limit, used: AtomicU64::new(0) }) }
    }

    /// Takes `bytes` from the budget, or refuses if that would exceed it.
    pub fn charge(&self, bytes: u64) -> Result<(), OverBudget> {
        let c = &self.inner;
        c.used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= c.limit)
            })
            .map(|_| ())
            .map_err(|used| OverBudget { wanted: bytes, used, limit: c.limit })
    }

    /// Gives back `bytes` charged earlier.
    pub fn release(&self, bytes: u64) {
        let _ =
            self.inner.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| Some(used.saturating_sub(bytes)));
    }

    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes that could still be charged.
    pub fn available(&self) -> u64 {
        self.limit().saturating_sub(self.used())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_limit_and_releases_give_room_back() {
        let b = MemoryBudget::new(100);
        assert_eq!(b.charge(60), Ok(()));
        assert_eq!(b.charge(41), Err(OverBudget { wanted: 41, used: 60, limit: 100 }));
        assert_eq!(b.charge(u64::MAX), Err(OverBudget { wanted: u64::MAX, used: 60, limit: 100 }));
        assert_eq!(b.clone().charge(40), Ok(()), "clones share the budget");
        assert_eq!(b.available(), 0);
        b.release(30);
        b.release(1000);
        assert_eq!(b.used(), 0, "releasing more than was charged saturates");
    }
}
