//! In-VM IPC objects: pipes, AF_UNIX socketpairs, eventfds and epoll instances. They live
//! in the monitor, belong to one program and never reach the host.
//!
//! A pipe is one [`Channel`] (a bounded byte queue) with a read [`Endpoint`] and a write
//! one; a socketpair is two channels crossed between two endpoints. An endpoint is an open
//! file description: `dup` shares it (its `Arc`), and when the last fd of it closes, its
//! `Drop` tells the channels that side is gone, so the peer reads end of file or writes
//! EPIPE. Operations never block: "cannot now" is EAGAIN, and the syscall layer turns it
//! into a wait unless the file is non-blocking.
//!
//! Every byte queued is charged to the program's [`MemoryBudget`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::budget::MemoryBudget;
use crate::errno::*;

/// Linux's default pipe capacity (16 pages).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Writes of at most this many bytes to a pipe are atomic (POSIX PIPE_BUF).
pub const PIPE_BUF: usize = 4096;
/// A socket's send buffer (Linux's default net.core.wmem_default).
pub const SOCKET_CAPACITY: usize = 212_992;
/// The largest value an eventfd counter holds.
pub const EVENTFD_MAX: u64 = u64::MAX - 1;

// poll(2) bits; epoll's EPOLLIN... have the same values.
pub const POLLIN: u32 = 0x1;
pub const POLLPRI: u32 = 0x2;
pub const POLLOUT: u32 = 0x4;
pub const POLLERR: u32 = 0x8;
pub const POLLHUP: u32 = 0x10;
pub const POLLNVAL: u32 = 0x20;
pub const POLLRDNORM: u32 = 0x40;
pub const POLLWRNORM: u32 = 0x100;
pub const POLLRDHUP: u32 = 0x2000;
/// What a file that is always ready (a regular file, /dev/null) reports.
pub const ALWAYS_READY: u32 = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM;

/// Locks `m`; a poisoned lock (a panic elsewhere while holding it) still holds valid data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One direction of a pipe or socket: bytes (or whole datagrams) waiting to be read.
#[derive(Debug)]
pub struct Channel {
    /// A stream's bytes.
    bytes: VecDeque<u8>,
    /// A datagram socket's messages (boundaries kept).
    messages: VecDeque<Vec<u8>>,
    datagram: bool,
    queued: usize,
    capacity: usize,
    /// The reading side is closed (or shut down for reading).
    reader_gone: bool,
    /// The writing side is closed (or shut down for writing).
    writer_gone: bool,
    budget: MemoryBudget,
}

type SharedChannel = Arc<Mutex<Channel>>;

impl Channel {
    fn new(capacity: usize, datagram: bool, budget: &MemoryBudget) -> SharedChannel {
        Arc::new(Mutex::new(Channel {
            bytes: VecDeque::new(),
            messages: VecDeque::new(),
            datagram,
            queued: 0,
            capacity,
            reader_gone: false,
            writer_gone: false,
            budget: budget.clone(),
        }))
    }

    fn room(&self) -> usize {
        self.capacity.saturating_sub(self.queued).min(usize::try_from(self.budget.available()).unwrap_or(usize::MAX))
    }

    /// Queues what fits of `src`: EPIPE if nobody can read it, EAGAIN if none fits now.
    fn write(&mut self, src: &[u8]) -> Result<usize, Errno> {
        if self.reader_gone || self.writer_gone {
            return Err(EPIPE);
        }
        let room = self.room();
        let n = if self.datagram {
            if src.len() > self.capacity {
                return Err(EMSGSIZE);
            }
            if src.len() > room {
                return Err(EAGAIN);
            }
            src.len()
        } else if room == 0 || (src.len() <= PIPE_BUF && src.len() > room) {
            // Writes of up to PIPE_BUF bytes are all-or-nothing.
            return Err(EAGAIN);
        } else {
            src.len().min(room)
        };
        self.budget.charge(n as u64).map_err(|_| EAGAIN)?;
        if self.datagram {
            self.messages.push_back(src.to_vec());
        } else {
            self.bytes.extend(&src[..n]);
        }
        self.queued += n;
        Ok(n)
    }

    /// Takes (or with `peek`, copies) up to `dst.len()` bytes, or one datagram (truncated to
    /// `dst`; the rest of it is dropped). Ok((0, _)) is end of file; EAGAIN: nothing yet.
    /// The second value is the datagram's whole length (MSG_TRUNC).
    fn read(&mut self, dst: &mut [u8], peek: bool) -> Result<(usize, usize), Errno> {
        if dst.is_empty() && !self.datagram {
            return Ok((0, 0)); // a read of nothing returns at once, data or not
        }
        if self.queued == 0 {
            return if self.writer_gone || self.reader_gone { Ok((0, 0)) } else { Err(EAGAIN) };
        }
        let (n, whole, taken) = if self.datagram {
            let Some(msg) = self.messages.front() else { return Err(EAGAIN) };
            let n = msg.len().min(dst.len());
            dst[..n].copy_from_slice(&msg[..n]);
            let whole = msg.len();
            if !peek {
                self.messages.pop_front();
            }
            (n, whole, whole)
        } else {
            let n = self.bytes.len().min(dst.len());
            let (a, b) = self.bytes.as_slices();
            let from_a = n.min(a.len());
            dst[..from_a].copy_from_slice(&a[..from_a]);
            dst[from_a..n].copy_from_slice(&b[..n - from_a]);
            if !peek {
                self.bytes.drain(..n);
            }
            (n, n, n)
        };
        if !peek {
            self.queued -= taken;
            self.budget.release(taken as u64);
        }
        Ok((n, whole))
    }

    /// Bytes a read could take now (FIONREAD: a datagram socket gives its next message's).
    fn pending(&self) -> usize {
        if self.datagram {
            self.messages.front().map_or(0, Vec::len)
        } else {
            self.queued
        }
    }

    /// Drops everything queued (its reader has gone: nobody will ever read it).
    fn discard(&mut self) {
        self.budget.release(self.queued as u64);
        self.bytes = VecDeque::new();
        self.messages = VecDeque::new();
        self.queued = 0;
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.discard();
    }
}

/// What an endpoint is, for fstat, F_GETFL and ENOTSOCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    PipeRead,
    PipeWrite,
    /// An AF_UNIX socket of a socketpair, with its SOCK_* type.
    Socket {
        sock_type: i32,
    },
}

/// An open pipe end or socket (what `dup` shares).
#[derive(Debug)]
pub struct Endpoint {
    pub kind: EndpointKind,
    rx: Option<SharedChannel>,
    tx: Option<SharedChannel>,
    nonblock: AtomicBool,
}

impl Endpoint {
    fn new(kind: EndpointKind, rx: Option<SharedChannel>, tx: Option<SharedChannel>, nonblock: bool) -> Arc<Endpoint> {
        Arc::new(Endpoint { kind, rx, tx, nonblock: AtomicBool::new(nonblock) })
    }

    pub fn is_socket(&self) -> bool {
        matches!(self.kind, EndpointKind::Socket { .. })
    }

    pub fn nonblocking(&self) -> bool {
        self.nonblock.load(Ordering::Relaxed)
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.nonblock.store(on, Ordering::Relaxed);
    }

    /// A socket from socket(2), never connected (it has no peer and no name).
    pub fn is_unconnected(&self) -> bool {
        self.is_socket() && self.rx.is_none() && self.tx.is_none()
    }

    /// Writes what fits of `src` (EBADF on a read end, ENOTCONN on an unconnected socket,
    /// EPIPE when nobody can read it).
    pub fn write(&self, src: &[u8]) -> Result<usize, Errno> {
        if self.is_unconnected() {
            return Err(ENOTCONN);
        }
        let tx = self.tx.as_ref().ok_or(EBADF)?;
        lock(tx).write(src)
    }

    /// Reads into `dst` (EBADF on a write end): (bytes read, datagram length).
    pub fn read(&self, dst: &mut [u8], peek: bool) -> Result<(usize, usize), Errno> {
        if self.is_unconnected() {
            return Err(ENOTCONN);
        }
        let rx = self.rx.as_ref().ok_or(EBADF)?;
        lock(rx).read(dst, peek)
    }

    /// FIONREAD.
    pub fn pending(&self) -> usize {
        self.rx.as_ref().map_or(0, |rx| lock(rx).pending())
    }

    /// shutdown(2): SHUT_RD (0), SHUT_WR (1) or SHUT_RDWR (2).
    pub fn shutdown(&self, how: i32) -> Result<(), Errno> {
        let (rd, wr) = match how {
            0 => (true, false),
            1 => (false, true),
            2 => (true, true),
            _ => return Err(EINVAL),
        };
        if rd {
            if let Some(rx) = &self.rx {
                lock(rx).reader_gone = true;
            }
        }
        if wr {
            if let Some(tx) = &self.tx {
                lock(tx).writer_gone = true;
            }
        }
        Ok(())
    }

    /// poll(2) readiness, as Linux's pipe_poll and unix_poll give it.
    pub fn readiness(&self) -> u32 {
        let mut ready = 0;
        match self.kind {
            EndpointKind::PipeRead => {
                if let Some(rx) = &self.rx {
                    let c = lock(rx);
                    if c.queued > 0 {
                        ready |= POLLIN | POLLRDNORM;
                    }
                    if c.writer_gone {
                        ready |= POLLHUP;
                    }
                }
            }
            EndpointKind::PipeWrite => {
                if let Some(tx) = &self.tx {
                    let c = lock(tx);
                    if c.room() >= PIPE_BUF.min(c.capacity) {
                        ready |= POLLOUT | POLLWRNORM;
                    }
                    if c.reader_gone {
                        ready |= POLLERR;
                    }
                }
            }
            EndpointKind::Socket { .. } => {
                let (mut rcv_shut, mut snd_shut) = (false, false);
                if let Some(rx) = &self.rx {
                    let c = lock(rx);
                    rcv_shut = c.writer_gone || c.reader_gone;
                    if c.queued > 0 || rcv_shut {
                        ready |= POLLIN | POLLRDNORM;
                    }
                }
                if let Some(tx) = &self.tx {
                    let c = lock(tx);
                    snd_shut = c.writer_gone || c.reader_gone;
                    // Writable when there is room, or when a write would fail at once.
                    if snd_shut || c.room() > 0 {
                        ready |= POLLOUT | POLLWRNORM;
                    }
                }
                if rcv_shut {
                    ready |= POLLRDHUP;
                }
                if rcv_shut && snd_shut {
                    ready |= POLLHUP;
                }
            }
        }
        ready
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(rx) = &self.rx {
            let mut c = lock(rx);
            c.reader_gone = true;
            c.discard();
        }
        if let Some(tx) = &self.tx {
            lock(tx).writer_gone = true;
        }
    }
}

/// A new pipe: (read end, write end).
pub fn pipe(budget: &MemoryBudget, nonblock: bool) -> (Arc<Endpoint>, Arc<Endpoint>) {
    let c = Channel::new(PIPE_CAPACITY, false, budget);
    (
        Endpoint::new(EndpointKind::PipeRead, Some(c.clone()), None, nonblock),
        Endpoint::new(EndpointKind::PipeWrite, None, Some(c), nonblock),
    )
}

/// A new connected pair of AF_UNIX sockets of `sock_type` (SOCK_STREAM, SOCK_DGRAM or
/// SOCK_SEQPACKET: the last two keep message boundaries).
pub fn socketpair(budget: &MemoryBudget, sock_type: i32, nonblock: bool) -> (Arc<Endpoint>, Arc<Endpoint>) {
    let datagram = sock_type != libc::SOCK_STREAM;
    let (a_to_b, b_to_a) =
        (Channel::new(SOCKET_CAPACITY, datagram, budget), Channel::new(SOCKET_CAPACITY, datagram, budget));
    let kind = EndpointKind::Socket { sock_type };
    (
        Endpoint::new(kind, Some(b_to_a.clone()), Some(a_to_b.clone()), nonblock),
        Endpoint::new(kind, Some(a_to_b), Some(b_to_a), nonblock),
    )
}

/// A new AF_UNIX socket from socket(2): unconnected, and it stays so (binding and connecting
/// to a name are not offered).
pub fn unconnected_socket(sock_type: i32, nonblock: bool) -> Arc<Endpoint> {
    Endpoint::new(EndpointKind::Socket { sock_type }, None, None, nonblock)
}

/// An eventfd(2): a 64-bit counter.
#[derive(Debug)]
pub struct EventFd {
    count: Mutex<u64>,
    semaphore: bool,
    nonblock: AtomicBool,
}

impl EventFd {
    pub fn new(initial: u64, semaphore: bool, nonblock: bool) -> Arc<EventFd> {
        Arc::new(EventFd { count: Mutex::new(initial), semaphore, nonblock: AtomicBool::new(nonblock) })
    }

    pub fn nonblocking(&self) -> bool {
        self.nonblock.load(Ordering::Relaxed)
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.nonblock.store(on, Ordering::Relaxed);
    }

    /// Takes the counter (or 1 of it, as a semaphore); EAGAIN at zero.
    pub fn read(&self) -> Result<u64, Errno> {
        let mut count = lock(&self.count);
        match *count {
            0 => Err(EAGAIN),
            n if self.semaphore => {
                *count = n - 1;
                Ok(1)
            }
            n => {
                *count = 0;
                Ok(n)
            }
        }
    }

    /// Adds `value`; EINVAL for u64::MAX, EAGAIN if the counter would pass [`EVENTFD_MAX`].
    pub fn write(&self, value: u64) -> Result<(), Errno> {
        if value == u64::MAX {
            return Err(EINVAL);
        }
        let mut count = lock(&self.count);
        match count.checked_add(value).filter(|&n| n <= EVENTFD_MAX) {
            Some(n) => {
                *count = n;
                Ok(())
            }
            None => Err(EAGAIN),
        }
    }

    pub fn readiness(&self) -> u32 {
        let count = *lock(&self.count);
        let mut ready = 0;
        if count > 0 {
            ready |= POLLIN | POLLRDNORM;
        }
        if count < EVENTFD_MAX {
            ready |= POLLOUT | POLLWRNORM;
        }
        ready
    }
}

pub const EPOLLONESHOT: u32 = 1 << 30;
#[allow(dead_code)] // accepted and served level-triggered (syscalls/poll.rs)
pub const EPOLLET: u32 = 1 << 31;
/// Bytes of the budget one epoll registration takes (the monitor's own bookkeeping).
pub const EPOLL_WATCH_COST: u64 = 64;

/// One fd registered with an epoll instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub events: u32,
    pub data: u64,
    /// Which open file the fd named when it was added: a registration ends when that file
    /// is closed, as in Linux, even if the fd number is reused.
    pub file: usize,
    /// An EPOLLONESHOT watch that has fired and waits for EPOLL_CTL_MOD.
    pub disarmed: bool,
}

/// An epoll instance: the fds it watches, by fd number.
#[derive(Debug)]
pub struct Epoll {
    pub watches: Mutex<BTreeMap<u64, Watch>>,
    budget: MemoryBudget,
}

impl Epoll {
    pub fn new(budget: &MemoryBudget) -> Arc<Epoll> {
        Arc::new(Epoll { watches: Mutex::new(BTreeMap::new()), budget: budget.clone() })
    }

    pub fn watches(&self) -> MutexGuard<'_, BTreeMap<u64, Watch>> {
        lock(&self.watches)
    }

    /// EPOLL_CTL_ADD (EEXIST if `fd` is watched; ENOSPC when the budget is spent).
    pub fn add(&self, fd: u64, watch: Watch) -> Result<(), Errno> {
        let mut w = self.watches();
        if w.get(&fd).is_some_and(|old| old.file == watch.file) {
            return Err(EEXIST);
        }
        if w.insert(fd, watch).is_none() && self.budget.charge(EPOLL_WATCH_COST).is_err() {
            w.remove(&fd);
            return Err(ENOSPC);
        }
        Ok(())
    }

    /// Drops the watch of `fd` (ENOENT if there is none).
    pub fn remove(&self, fd: u64) -> Result<Watch, Errno> {
        let watch = self.watches().remove(&fd).ok_or(ENOENT)?;
        self.budget.release(EPOLL_WATCH_COST);
        Ok(watch)
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        let n = self.watches().len() as u64;
        self.budget.release(n * EPOLL_WATCH_COST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_carries_bytes_until_its_writer_closes_then_reads_end_of_file() {
        let budget = MemoryBudget::new(1 << 20);
        let (r, w) = pipe(&budget, false);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf, false), Err(EAGAIN), "empty, a writer exists");
        assert_eq!(w.write(b"hello"), Ok(5));
        assert_eq!(r.readiness() & POLLIN, POLLIN);
        assert_eq!(budget.used(), 5);
        assert_eq!(r.read(&mut buf[..3], false), Ok((3, 3)));
        assert_eq!(&buf[..3], b"hel");
        assert_eq!(w.read(&mut buf, false), Err(EBADF));
        assert_eq!(r.write(b"x"), Err(EBADF));
        drop(w);
        assert_eq!(r.readiness(), POLLIN | POLLRDNORM | POLLHUP);
        assert_eq!(r.read(&mut buf, false), Ok((2, 2)));
        assert_eq!(r.read(&mut buf, false), Ok((0, 0)), "end of file");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_full_pipe_refuses_more_and_small_writes_are_atomic() {
        let budget = MemoryBudget::new(1 << 20);
        let (r, w) = pipe(&budget, false);
        let big = vec![7u8; PIPE_CAPACITY + 100];
        assert_eq!(w.write(&big), Ok(PIPE_CAPACITY), "a big write takes what fits");
        assert_eq!(w.write(b"x"), Err(EAGAIN));
        assert_eq!(w.readiness() & POLLOUT, 0);
        let mut buf = vec![0u8; 10];
        r.read(&mut buf, false).unwrap();
        assert_eq!(w.write(&[1u8; 11]), Err(EAGAIN), "11 <= PIPE_BUF bytes fit only whole");
        assert_eq!(w.write(&[1u8; 10]), Ok(10));
        drop(r);
        assert_eq!(w.write(b"x"), Err(EPIPE));
        assert_eq!(w.readiness() & POLLERR, POLLERR);
        assert_eq!(budget.used(), 0, "what nobody can read is released");
    }

    #[test]
    fn a_pipe_never_queues_past_the_memory_budget() {
        let budget = MemoryBudget::new(10_000);
        let (_r, w) = pipe(&budget, false);
        let (_r2, w2) = pipe(&budget, false);
        assert_eq!(w.write(&[0u8; 8000]), Ok(8000));
        assert_eq!(w2.write(&[0u8; 8000]), Ok(2000), "only the budget's rest");
        assert_eq!(w2.write(&[0u8; 1]), Err(EAGAIN));
    }

    #[test]
    fn socketpairs_are_crossed_and_datagrams_keep_their_boundaries() {
        let budget = MemoryBudget::new(1 << 20);
        let (a, b) = socketpair(&budget, libc::SOCK_STREAM, false);
        let mut buf = [0u8; 16];
        assert_eq!(a.write(b"ping"), Ok(4));
        assert_eq!(b.read(&mut buf, true), Ok((4, 4)), "peek leaves it");
        assert_eq!(b.read(&mut buf, false), Ok((4, 4)));
        assert_eq!(a.read(&mut buf, false), Err(EAGAIN), "nothing came back");
        a.shutdown(1).unwrap();
        assert_eq!(b.read(&mut buf, false), Ok((0, 0)), "the peer shut down writing");
        assert_eq!(b.readiness() & (POLLIN | POLLRDHUP), POLLIN | POLLRDHUP);
        assert_eq!(a.write(b"x"), Err(EPIPE));
        assert_eq!(a.shutdown(3), Err(EINVAL));

        let (a, b) = socketpair(&budget, libc::SOCK_DGRAM, false);
        a.write(b"one").unwrap();
        a.write(b"three").unwrap();
        assert_eq!(b.pending(), 3);
        assert_eq!(b.read(&mut buf[..2], false), Ok((2, 3)), "truncated, the rest dropped");
        assert_eq!(b.read(&mut buf, false), Ok((5, 5)));
        assert_eq!(a.write(&vec![0u8; SOCKET_CAPACITY + 1]), Err(EMSGSIZE));
        drop(b);
        assert_eq!(a.readiness() & POLLHUP, POLLHUP);
    }

    #[test]
    fn an_eventfd_counts_and_a_semaphore_hands_out_ones() {
        let e = EventFd::new(0, false, false);
        assert_eq!(e.read(), Err(EAGAIN));
        e.write(3).unwrap();
        e.write(4).unwrap();
        assert_eq!(e.read(), Ok(7));
        assert_eq!(e.write(u64::MAX), Err(EINVAL));
        e.write(EVENTFD_MAX).unwrap();
        assert_eq!(e.readiness(), POLLIN | POLLRDNORM, "full: not writable");
        assert_eq!(e.write(1), Err(EAGAIN));
        let s = EventFd::new(2, true, false);
        assert_eq!((s.read(), s.read(), s.read()), (Ok(1), Ok(1), Err(EAGAIN)));
    }
}
