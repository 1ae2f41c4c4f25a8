//! One io_uring event loop: accepts on its own `SO_REUSEPORT` listener, reads and writes its
//! connections, enforces the read/idle/send timeouts, and passes complete requests to a
//! [`Handler`]: calls go to the worker threads (`workers.rs`), the rest is answered here.
//!
//! Every connection is a slot in a slab (`event_loop/slot.rs`); `event_loop/lifecycle.rs` has
//! its deadlines, lingering, closing and the drain. Each submitted operation carries
//! `slot << 32 | generation << 8 | op` as its user data, so a completion for a slot that was
//! closed and reused is recognised and dropped. A slot's buffers are never touched while the
//! kernel may write into or read from them: `recv_pending`/`send_pending` guard them and a
//! slot is freed only when both are false.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring};

use super::conn::{Conn, Event, ReadLimits};
use super::handler::Admission;
pub use super::handler::Handler;
use super::http::{self, Head, Method, Persistence, Response};
use super::metrics::Metrics;
use super::workers::{Job, Mailbox, Offload, Workers};

mod lifecycle;
mod slot;
use slot::{tag, Deadline, Phase, Slot, NO_SLOT, OP_ACCEPT, OP_RECV, OP_SEND, OP_WAKE};

/// Timeouts and limits of the event loops.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub limits: ReadLimits,
    /// From the first byte of a request to the end of its head.
    pub header_timeout: Duration,
    /// From the end of the head to the end of the body.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in progress.
    pub idle_timeout: Duration,
    /// A response that makes no progress (client not reading).
    pub send_timeout: Duration,
    /// After a `Connection: close` response: how long unread request bytes are drained.
    pub linger: Duration,
    /// After SIGTERM: how long open requests may take before their connections are cut.
    pub shutdown_grace: Duration,
    /// Open connections, all loops together.
    pub max_connections: usize,
    /// Calls admitted but not answered, all loops together.
    pub max_inflight: usize,
}

/// State shared by all loops.
#[derive(Default)]
pub struct Shared {
    pub connections: AtomicUsize,
    pub inflight: AtomicUsize,
    pub shutdown: AtomicBool,
}

const RECV_BUF: usize = 16 * 1024;
/// Output queued for one connection beyond which no further pipelined request is parsed.
const MAX_BACKLOG: usize = 256 * 1024;
/// How often deadlines are checked.
const TICK: Duration = Duration::from_millis(50);

/// One event loop. Build with [`EventLoop::new`], then [`EventLoop::run`] on its own thread.
pub struct EventLoop<H: Handler> {
    ring: IoUring,
    listener: Option<OwnedFd>,
    wake: OwnedFd,
    wake_buf: Box<u64>,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    cfg: LoopConfig,
    slots: Vec<Option<Slot<H::Done>>>,
    free: Vec<usize>,
    next_gen: u32,
    live: usize,
    runq: VecDeque<Job<H::Permit>>,
    draining: Option<Instant>,
    /// `Some` unless `--inline-calls`: calls go to these threads instead of running here.
    workers: Option<Offload<H>>,
    /// Calls handed to workers and not yet back.
    outstanding: usize,
    /// Accepting stopped on EMFILE and the like; the next sweep re-arms it.
    accept_paused: bool,
}

impl<H: Handler> EventLoop<H> {
    /// `wake` is an eventfd; writing to it after setting `shared.shutdown` starts the drain.
    /// With `workers`, calls run on those threads instead of inline.
    pub fn new(
        listener: OwnedFd,
        wake: OwnedFd,
        handler: Arc<H>,
        metrics: Arc<Metrics>,
        shared: Arc<Shared>,
        cfg: LoopConfig,
        workers: Option<Arc<Workers<H>>>,
    ) -> io::Result<Self> {
        let workers = match workers {
            None => None,
            Some(w) => {
                // SAFETY: dup of the eventfd we own; checked below.
                let dup = unsafe { libc::dup(wake.as_raw_fd()) };
                if dup < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a fresh fd from dup, owned by nobody else.
                let wake = unsafe { OwnedFd::from_raw_fd(dup) };
                Some((w, Arc::new(Mailbox { results: Mutex::new(Vec::new()), wake })))
            }
        };
        // DEFER_TASKRUN: completions are posted only when this thread waits in
        // io_uring_enter. Without it, io_uring flags the loop thread with TIF_NOTIFY_SIGNAL
        // whenever a socket completes, which makes `signal_pending()` true in the kernel:
        // KVM_CREATE_VM (mm_take_all_locks) then failed with EINTR in ~6% of calls under
        // 8 connections of load, and KVM_RUN was interrupted for nothing.
        let ring = IoUring::builder().setup_cqsize(8192).setup_single_issuer().setup_defer_taskrun().build(1024)?;
        Ok(EventLoop {
            ring,
            listener: Some(listener),
            wake,
            wake_buf: Box::new(0),
            handler,
            metrics,
            shared,
            cfg,
            slots: Vec::new(),
            free: Vec::new(),
            next_gen: 1,
            live: 0,
            runq: VecDeque::new(),
            draining: None,
            workers,
            outstanding: 0,
            accept_paused: false,
        })
    }

    /// Runs until shutdown was requested and every connection is closed.
    pub fn run(mut self) -> io::Result<()> {
        self.arm_accept();
        self.arm_wake();
        let mut next_sweep = Instant::now() + TICK;
        let mut cqes: Vec<(u64, i32, u32)> = Vec::with_capacity(256);
        loop {
            if self.draining.is_some() && self.live == 0 && self.runq.is_empty() && self.outstanding == 0 {
                return Ok(());
            }
            let ts = types::Timespec::from(TICK);
            let args = types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            cqes.clear();
            cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())));
            for &(data, res, flags) in &cqes {
                self.complete(data, res, flags);
            }
            self.run_jobs();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + TICK;
            }
        }
    }

    // ---- submission helpers -------------------------------------------------------------

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built in this file points at buffers owned by a slot (or by
            // `self`) that stay alive and untouched until the matching completion arrives:
            // `recv_pending`/`send_pending` keep a slot from being freed or its buffers from
            // being reused, and `wake_buf` lives as long as the ring.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return;
            }
            // Submission queue full: hand what is there to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    panic!("io_uring submit failed: {e}");
                }
            }
        }
    }

    fn arm_accept(&mut self) {
        let Some(l) = &self.listener else { return };
        let entry = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(tag(NO_SLOT as usize, 0, OP_ACCEPT));
        self.push(entry);
    }

    fn arm_wake(&mut self) {
        let ptr: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(types::Fd(self.wake.as_raw_fd()), ptr.cast(), 8).build().user_data(tag(
            NO_SLOT as usize,
            0,
            OP_WAKE,
        ));
        self.push(entry);
    }

    fn arm_recv(&mut self, idx: usize) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if s.recv_pending || s.peer_closed || s.phase == Phase::Closing {
            return;
        }
        if s.phase == Phase::Open && (s.queued || s.conn.busy() || s.close_after_send) {
            // Pipelined bytes wait in the kernel until this request is answered.
            return;
        }
        s.recv_pending = true;
        let entry = opcode::Recv::new(types::Fd(s.fd), s.rx.as_mut_ptr(), s.rx.len() as u32)
            .build()
            .user_data(tag(idx, s.gen, OP_RECV));
        self.push(entry);
    }

    /// Starts sending queued output if nothing is in flight.
    fn flush(&mut self, idx: usize) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if s.send_pending || s.phase == Phase::Closing {
            return;
        }
        if s.out_off >= s.out.len() {
            if s.next.is_empty() {
                return;
            }
            std::mem::swap(&mut s.out, &mut s.next);
            s.next.clear();
            s.out_off = 0;
            std::mem::swap(&mut s.done_out, &mut s.done_next);
        }
        s.send_pending = true;
        let rest = &s.out[s.out_off..];
        let entry = opcode::Send::new(types::Fd(s.fd), rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(tag(idx, s.gen, OP_SEND));
        self.push(entry);
    }

    // ---- completions --------------------------------------------------------------------

    fn complete(&mut self, data: u64, res: i32, flags: u32) {
        let op = data & 0xff;
        let idx = (data >> 32) as usize;
        let gen = ((data >> 8) & 0x00ff_ffff) as u32;
        match op {
            OP_ACCEPT => self.on_accept(res, flags),
            OP_WAKE => self.on_wake(res),
            OP_RECV | OP_SEND => {
                let Some(s) = self.slots.get_mut(idx).and_then(Option::as_mut) else { return };
                if s.gen & 0x00ff_ffff != gen {
                    return;
                }
                if op == OP_RECV {
                    s.recv_pending = false;
                    self.on_recv(idx, res);
                } else {
                    s.send_pending = false;
                    self.on_send(idx, res);
                }
                self.settle(idx);
            }
            _ => {}
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !io_uring::cqueue::more(flags) && self.draining.is_none() {
            if [-libc::EMFILE, -libc::ENFILE, -libc::ENOBUFS, -libc::ENOMEM].contains(&res) {
                // Out of fds or memory: re-arming now would fail again at once, in a loop.
                // Try again from the sweep, when connections may have closed.
                self.accept_paused = true;
            } else {
                self.arm_accept();
            }
        }
        if res < 0 {
            return;
        }
        let fd = res;
        if self.draining.is_some() {
            // SAFETY: `fd` was just returned by accept and is owned by nobody else.
            unsafe { libc::close(fd) };
            return;
        }
        let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
        if open >= self.cfg.max_connections {
            self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            let refusal = http::over_limit();
            // SAFETY: `fd` is a connected socket we own; `refusal` is a live local buffer.
            unsafe {
                libc::send(fd, refusal.as_ptr().cast(), refusal.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
                libc::close(fd);
            }
            return;
        }
        self.metrics.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        let one: libc::c_int = 1;
        // SAFETY: plain setsockopt on a socket we own, with a correctly sized int option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let gen = self.next_gen;
        self.next_gen = self.next_gen.wrapping_add(1).max(1);
        let slot = Slot {
            fd,
            gen,
            conn: Conn::default(),
            rx: vec![0; RECV_BUF].into_boxed_slice(),
            recv_pending: false,
            out: Vec::new(),
            out_off: 0,
            next: Vec::new(),
            send_pending: false,
            done_out: Vec::new(),
            done_next: Vec::new(),
            phase: Phase::Open,
            close_after_send: false,
            peer_closed: false,
            queued: false,
            deadline: Instant::now() + self.cfg.idle_timeout,
            deadline_kind: Deadline::Idle,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.live += 1;
        self.arm_recv(idx);
    }

    fn on_wake(&mut self, res: i32) {
        self.take_results();
        if self.shared.shutdown.load(Ordering::SeqCst) {
            self.start_drain();
        }
        // Keep listening while workers may still report back (or shutdown may come): calls out
        // on workers, and calls just queued by `take_results` that `run_jobs` hands out next.
        let pending = self.outstanding > 0 || !self.runq.is_empty();
        if (res >= 0 || res == -libc::EINTR) && (self.draining.is_none() || pending) {
            self.arm_wake();
        }
    }

    /// Worker mode: answers the calls workers finished.
    fn take_results(&mut self) {
        let Some((_, mailbox)) = &self.workers else { return };
        let results = std::mem::take(&mut *mailbox.results.lock().unwrap_or_else(|e| e.into_inner()));
        for f in results {
            self.outstanding -= 1;
            self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
            let alive = matches!(&self.slots[f.slot], Some(s) if s.gen == f.gen && s.phase == Phase::Open);
            if !alive {
                if let Some(done) = f.done {
                    self.handler.sent(done);
                }
                continue;
            }
            self.finish_job(f.slot, &f.head, f.resp, f.done);
        }
    }

    /// Queues the response of a finished request and moves its connection on.
    fn finish_job(&mut self, slot: usize, head: &Head, resp: Response, done: Option<H::Done>) {
        if let Some(s) = self.slots[slot].as_mut() {
            s.queued = false;
        }
        self.respond(slot, head, resp, done, false);
        self.pump(slot);
        self.settle(slot);
        // Put this response on the wire now rather than after the rest of the queue.
        let _ = self.ring.submit();
    }

    fn on_recv(&mut self, idx: usize, res: i32) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if res < 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                return; // re-armed by settle()
            }
            self.begin_close(idx);
            return;
        }
        if res == 0 {
            s.peer_closed = true;
            if s.phase == Phase::Lingering || (!s.queued && s.next.is_empty() && !s.send_pending) {
                // EOF mid-request (client gave up) or after the last response: nothing to finish.
                self.begin_close(idx);
            } else {
                s.close_after_send = true;
            }
            return;
        }
        if s.phase != Phase::Open {
            return; // lingering: drop what the client still sends
        }
        let n = res as usize;
        let (conn, rx) = (&mut s.conn, &s.rx);
        conn.received(&rx[..n]);
        self.pump(idx);
    }

    fn on_send(&mut self, idx: usize, res: i32) {
        let Some(s) = self.slots[idx].as_mut() else { return };
        if res <= 0 {
            if res == -libc::EAGAIN || res == -libc::EINTR {
                self.flush(idx);
                return;
            }
            self.begin_close(idx);
            return;
        }
        s.out_off += res as usize;
        if s.deadline_kind == Deadline::Send {
            // Progress: the client reads; give it another full send timeout.
            s.deadline = Instant::now() + self.cfg.send_timeout;
        }
        if s.out_off < s.out.len() {
            self.flush(idx);
            return;
        }
        s.out.clear();
        s.out_off = 0;
        for done in s.done_out.drain(..) {
            self.handler.sent(done);
        }
        if !s.next.is_empty() {
            self.flush(idx);
            return;
        }
        if s.close_after_send {
            self.begin_linger(idx);
        } else {
            // Output drained: pipelined requests held back by the backlog can go on.
            self.pump(idx);
        }
    }

    // ---- protocol -----------------------------------------------------------------------

    /// Parses as far as the connection allows and queues what it finds.
    fn pump(&mut self, idx: usize) {
        let limits = self.cfg.limits;
        loop {
            let Some(s) = self.slots[idx].as_mut() else { return };
            if s.phase != Phase::Open || s.queued || s.close_after_send || s.out.len() + s.next.len() > MAX_BACKLOG {
                break;
            }
            let handler = &self.handler;
            let event = s.conn.next_event(limits, &mut |h| handler.accept_head(h));
            match event {
                Event::NeedMore => break,
                Event::SendContinue => s.next.extend_from_slice(http::CONTINUE),
                Event::Request(req) => {
                    let permit = match self.handler.admit(&req.head) {
                        Admission::Local => None,
                        Admission::Refused(resp) => {
                            self.respond(idx, &req.head, resp, None, false);
                            continue;
                        }
                        Admission::Call(permit) => {
                            if self.shared.inflight.fetch_add(1, Ordering::AcqRel) >= self.cfg.max_inflight {
                                self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
                                drop(permit);
                                let resp = self.handler.overloaded(&req.head);
                                self.respond(idx, &req.head, resp, None, false);
                                continue;
                            }
                            Some(permit)
                        }
                    };
                    s.queued = true;
                    let gen = s.gen;
                    self.runq.push_back(Job { slot: idx, gen, req, at: Instant::now(), permit });
                    break;
                }
                Event::Refused(head) => {
                    let resp = self.handler.refused(&head);
                    self.respond(idx, &head, resp, None, true);
                    break;
                }
                Event::Reject(reject) => {
                    let mut resp = Response::json_error(reject.status(), reject.code(), reject.reason());
                    resp.server_timing = "total;dur=0.000".to_owned();
                    let head = Head {
                        method: Method::Get,
                        path: String::new(),
                        query: String::new(),
                        headers: Vec::new(),
                        http11: true,
                        keep_alive: false,
                        expect_continue: false,
                        framing: http::Framing::None,
                    };
                    self.respond(idx, &head, resp, None, true);
                    break;
                }
            }
        }
        self.flush(idx);
    }

    /// Queues a response; `close` forces `Connection: close`.
    fn respond(&mut self, idx: usize, head: &Head, resp: Response, done: Option<H::Done>, close: bool) {
        self.metrics.count_response(resp.status);
        self.handler.answered(head, &resp);
        let draining = self.draining.is_some();
        let Some(s) = self.slots[idx].as_mut() else {
            if let Some(d) = done {
                self.handler.sent(d);
            }
            return;
        };
        let close = close || !head.keep_alive || draining || s.peer_closed;
        resp.write_to(&mut s.next, head.method == Method::Head, Persistence::of(head, close));
        s.done_next.extend(done);
        if close {
            s.close_after_send = true;
        } else {
            s.conn.reset();
        }
    }

    /// Hands queued calls to the workers, and answers the rest (local requests, and calls in
    /// `--inline-calls` mode) here, sending each response before the next.
    fn run_jobs(&mut self) {
        while let Some(job) = self.runq.pop_front() {
            let call = job.permit.is_some();
            let alive = matches!(&self.slots[job.slot], Some(s) if s.gen == job.gen && s.phase == Phase::Open);
            if !alive {
                if call {
                    self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
                }
                continue;
            }
            if let (Some((workers, mailbox)), true) = (&self.workers, call) {
                self.outstanding += 1;
                workers.push(job, mailbox.clone());
                continue;
            }
            let head = job.req.head.for_response();
            let (resp, done) = self.handler.handle(job.req, job.permit, job.at.elapsed());
            if call {
                self.shared.inflight.fetch_sub(1, Ordering::AcqRel);
            }
            self.finish_job(job.slot, &head, resp, done);
        }
    }

    // ---- timeouts and teardown ----------------------------------------------------------

    /// After any event on a slot: re-arm reads, pick the deadline that now applies, and
    /// free the slot if its teardown is complete.
    fn settle(&mut self, idx: usize) {
        let now = Instant::now();
        let cfg = &self.cfg;
        let Some(s) = self.slots[idx].as_mut() else { return };
        if s.phase == Phase::Closing {
            if !s.recv_pending && !s.send_pending {
                self.free_slot(idx);
            }
            return;
        }
        if s.phase == Phase::Open {
            let (kind, after) = if s.send_pending || !s.next.is_empty() {
                (Deadline::Send, cfg.send_timeout)
            } else if s.queued {
                (Deadline::None, Duration::ZERO)
            } else if s.conn.mid_request() {
                if s.conn.busy() {
                    (Deadline::None, Duration::ZERO)
                } else {
                    Self::read_deadline(s, cfg)
                }
            } else if self.draining.is_some() {
                (Deadline::Grace, Duration::ZERO)
            } else {
                (Deadline::Idle, cfg.idle_timeout)
            };
            if kind != s.deadline_kind {
                s.deadline_kind = kind;
                s.deadline = now + after;
            }
            if kind == Deadline::Grace && s.out.is_empty() && s.next.is_empty() {
                // Idle during shutdown: nothing in flight, close now.
                self.begin_close(idx);
                return;
            }
        }
        self.arm_recv(idx);
    }
}
