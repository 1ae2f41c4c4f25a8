//! A connection's life after its requests: the deadlines the sweep enforces, lingering after
//! a final response, closing, freeing the slot, and the drain on SIGTERM.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::super::handler::Handler;
use super::super::http::{self, Persistence, Response};
use super::slot::{Deadline, Phase, Slot};
use super::{EventLoop, LoopConfig};

impl<H: Handler> EventLoop<H> {
    pub(super) fn read_deadline(s: &Slot<H::Done>, cfg: &LoopConfig) -> (Deadline, Duration) {
        if s.conn.in_body() {
            (Deadline::Body, cfg.body_timeout)
        } else {
            (Deadline::Header, cfg.header_timeout)
        }
    }

    pub(super) fn sweep(&mut self, now: Instant) {
        if let Some((workers, _)) = &self.workers {
            workers.replace_stuck(now);
        }
        if self.accept_paused && self.draining.is_none() {
            self.accept_paused = false;
            self.arm_accept();
        }
        if let Some(grace_end) = self.draining {
            if now >= grace_end {
                for idx in 0..self.slots.len() {
                    if self.slots[idx].is_some() {
                        self.begin_close(idx);
                    }
                }
                return;
            }
        }
        for idx in 0..self.slots.len() {
            let Some(s) = self.slots[idx].as_mut() else { continue };
            if s.phase == Phase::Closing || s.deadline_kind == Deadline::None || s.deadline_kind == Deadline::Grace {
                continue;
            }
            if now < s.deadline {
                continue;
            }
            match s.deadline_kind {
                Deadline::Idle => {
                    self.metrics.timeouts_idle.fetch_add(1, Ordering::Relaxed);
                    self.begin_close(idx);
                }
                Deadline::Header | Deadline::Body => {
                    let counter = if s.deadline_kind == Deadline::Header {
                        &self.metrics.timeouts_header
                    } else {
                        &self.metrics.timeouts_body
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    // A slow client gets a 408 (best effort) and is cut off.
                    let reject = http::Reject::Timeout;
                    let mut resp = Response::json_error(reject.status(), reject.code(), reject.reason());
                    resp.server_timing = "total;dur=0.000".to_owned();
                    self.metrics.count_response(resp.status);
                    resp.write_to(&mut s.next, false, Persistence::Close);
                    s.close_after_send = true;
                    s.deadline_kind = Deadline::Send;
                    s.deadline = now + self.cfg.send_timeout.min(Duration::from_secs(1));
                    self.flush(idx);
                }
                Deadline::Send => {
                    self.metrics.timeouts_send.fetch_add(1, Ordering::Relaxed);
                    self.begin_close(idx);
                }
                Deadline::Linger => self.begin_close(idx),
                Deadline::None | Deadline::Grace => {}
            }
            self.settle(idx);
        }
    }

    /// Final response sent: shut our write side and drain what the client still sends, so
    /// closing does not reset the connection under a response it has not read yet.
    pub(super) fn begin_linger(&mut self, idx: usize) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if s.peer_closed {
            self.begin_close(idx);
            return;
        }
        // SAFETY: shutdown on a socket this slot owns.
        unsafe { libc::shutdown(s.fd, libc::SHUT_WR) };
        s.phase = Phase::Lingering;
        s.deadline_kind = Deadline::Linger;
        s.deadline = Instant::now() + self.cfg.linger;
    }

    /// Tears the connection down; the slot is freed once no operation is pending on it.
    pub(super) fn begin_close(&mut self, idx: usize) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if s.phase == Phase::Closing {
            return;
        }
        s.phase = Phase::Closing;
        if s.recv_pending || s.send_pending {
            // Makes the pending recv/send complete now; the slot is freed in `settle`.
            // SAFETY: shutdown on a socket this slot owns.
            unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
        } else {
            self.free_slot(idx);
        }
    }

    pub(super) fn free_slot(&mut self, idx: usize) {
        let Some(s) = self.slots[idx].take() else { return };
        // SAFETY: no operation is pending on `s.fd` (checked by the callers) and the slot,
        // the fd's only owner, is gone.
        unsafe { libc::close(s.fd) };
        for done in s.done_out.into_iter().chain(s.done_next) {
            self.handler.sent(done);
        }
        self.free.push(idx);
        self.live -= 1;
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        self.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// SIGTERM: stop accepting, close idle connections, let the others finish the request
    /// they are in (answered with `Connection: close`) within the grace period.
    pub(super) fn start_drain(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(Instant::now() + self.cfg.shutdown_grace);
        if let Some(l) = self.listener.take() {
            // Ends the multishot accept; new connections to this port are refused.
            // SAFETY: shutdown on the listener we own; it is closed when `l` drops.
            unsafe { libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR) };
        }
        for idx in 0..self.slots.len() {
            if self.slots[idx].is_some() {
                if let Some(s) = self.slots[idx].as_mut().filter(|s| s.phase == Phase::Open) {
                    s.deadline_kind = Deadline::None;
                }
                self.settle(idx);
            }
        }
    }
}
