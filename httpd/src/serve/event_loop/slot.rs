//! One connection's slot in a loop's slab, and the tags that tie io_uring completions to it.
//!
//! Each submitted operation carries `slot << 32 | generation << 8 | op` as its user data, so a
//! completion for a slot that was closed and reused is recognised and dropped.

use std::os::fd::RawFd;
use std::time::Instant;

use super::super::conn::Conn;

pub(super) const OP_ACCEPT: u64 = 1;
pub(super) const OP_RECV: u64 = 2;
pub(super) const OP_SEND: u64 = 3;
pub(super) const OP_WAKE: u64 = 4;
pub(super) const NO_SLOT: u64 = 0xffff_ffff;

pub(super) fn tag(slot: usize, gen: u32, op: u64) -> u64 {
    ((slot as u64) << 32) | (u64::from(gen & 0x00ff_ffff) << 8) | op
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    None,
    Idle,
    Header,
    Body,
    Send,
    Linger,
    Grace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Reading requests and writing responses.
    Open,
    /// Final response sent and write side shut: reading and dropping until EOF or deadline.
    Lingering,
    /// Being torn down: waiting for pending operations to complete.
    Closing,
}

pub(super) struct Slot<D> {
    pub(super) fd: RawFd,
    pub(super) gen: u32,
    pub(super) conn: Conn,
    pub(super) rx: Box<[u8]>,
    pub(super) recv_pending: bool,
    /// Bytes handed to the kernel (`out[out_off..]` still to go).
    pub(super) out: Vec<u8>,
    pub(super) out_off: usize,
    /// Bytes queued behind `out`.
    pub(super) next: Vec<u8>,
    pub(super) send_pending: bool,
    pub(super) done_out: Vec<D>,
    pub(super) done_next: Vec<D>,
    pub(super) phase: Phase,
    /// Close (gracefully) once everything queued is sent.
    pub(super) close_after_send: bool,
    /// The client closed its side.
    pub(super) peer_closed: bool,
    /// A request of this connection waits in (or runs from) the run queue.
    pub(super) queued: bool,
    pub(super) deadline: Instant,
    pub(super) deadline_kind: Deadline,
}
