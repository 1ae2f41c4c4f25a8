//! The worker threads calls run on, so that no call ever runs on an event loop thread: a loop
//! keeps accepting, reading, answering `/healthz` and `/metrics`, and handing out other calls
//! however long one call spins.
//!
//! A loop pushes a [`Job`] with its [`Mailbox`]; a worker runs it and leaves the answer in the
//! mailbox, then writes the loop's eventfd so the loop picks it up. The pool starts with
//! `threads` workers; when every worker is busy and the oldest waiting call has waited longer
//! than [`STALL`] (a call that spins until its deadline holds its worker), the loops' deadline
//! sweep adds one more, up to `max_threads` (the in-flight limit, so an admitted call never
//! waits for a thread for long). Added threads stay: the pool keeps its peak size.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::Request;
use super::handler::Handler;
use super::http::{Head, Response};

/// How long the oldest waiting call may wait while every worker is busy before one is added.
pub const STALL: Duration = Duration::from_millis(100);

/// A complete request waiting to run, and where its answer goes.
pub(super) struct Job<P> {
    pub(super) slot: usize,
    pub(super) gen: u32,
    pub(super) req: Request,
    /// When the request became complete.
    pub(super) at: Instant,
    /// `Some` for an admitted call (counted in the in-flight limit).
    pub(super) permit: Option<P>,
}

/// A loop's link to the workers: where it sends calls, and where they come back.
pub(super) type Offload<H> = (Arc<Workers<H>>, Arc<Mailbox<H>>);

/// Where workers leave a loop's finished calls; writing `wake` makes the loop look.
pub struct Mailbox<H: Handler> {
    pub(super) results: Mutex<Vec<Finished<H>>>,
    pub(super) wake: OwnedFd,
}

/// A call a worker finished: always an admitted call.
pub(super) struct Finished<H: Handler> {
    pub(super) slot: usize,
    pub(super) gen: u32,
    pub(super) head: Head,
    pub(super) resp: Response,
    pub(super) done: Option<H::Done>,
}

type Queued<H> = (Job<<H as Handler>::Permit>, Arc<Mailbox<H>>);

struct State<H: Handler> {
    queue: VecDeque<Queued<H>>,
    /// Worker threads started.
    threads: usize,
    /// Workers waiting for a job.
    idle: usize,
    stop: bool,
}

/// The worker threads, shared by all loops.
pub struct Workers<H: Handler> {
    handler: Arc<H>,
    state: Mutex<State<H>>,
    more: Condvar,
    max_threads: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl<H: Handler> Workers<H> {
    /// Starts `threads` workers (at least one); the pool may grow to `max_threads`.
    pub fn start(handler: Arc<H>, threads: usize, max_threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        let workers = Arc::new(Workers {
            handler,
            state: Mutex::new(State { queue: VecDeque::new(), threads: 0, idle: 0, stop: false }),
            more: Condvar::new(),
            max_threads: max_threads.max(threads),
            handles: Mutex::new(Vec::new()),
        });
        for _ in 0..threads {
            workers.lock().threads += 1;
            workers.spawn()?;
        }
        Ok(workers)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<H>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts one worker; the caller has already counted it in `threads`.
    fn spawn(self: &Arc<Self>) -> std::io::Result<()> {
        let me = self.clone();
        let n = self.lock().threads;
        match std::thread::Builder::new().name(format!("worker-{n}")).spawn(move || me.work()) {
            Ok(handle) => {
                self.handles.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
                Ok(())
            }
            Err(e) => {
                self.lock().threads -= 1;
                Err(e)
            }
        }
    }

    /// Body of one worker thread: runs calls until [`Workers::stop`].
    fn work(&self) {
        loop {
            let (job, mailbox) = {
                let mut st = self.lock();
                loop {
                    if let Some(item) = st.queue.pop_front() {
                        break item;
                    }
                    if st.stop {
                        return;
                    }
                    st.idle += 1;
                    st = self.more.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.idle -= 1;
                }
            };
            let finished = self.run(job);
            mailbox.results.lock().unwrap_or_else(|e| e.into_inner()).push(finished);
            let one = 1u64;
            // SAFETY: 8-byte write of a local to the loop's eventfd, which the mailbox owns.
            unsafe { libc::write(mailbox.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Runs one call. A panic in the handler becomes a 500 for this call, not a lost
    /// connection and a dead worker.
    fn run(&self, job: Job<H::Permit>) -> Finished<H> {
        let (slot, gen, head) = (job.slot, job.gen, job.req.head.clone());
        let queued = job.at.elapsed();
        let handler = &self.handler;
        let (resp, done) = catch_unwind(AssertUnwindSafe(|| handler.handle(job.req, job.permit, queued)))
            .unwrap_or_else(|_| (Response::json_error(500, "internal_error", "the call panicked in the server"), None));
        Finished { slot, gen, head, resp, done }
    }

    /// Queues a call for the workers.
    pub(super) fn push(&self, job: Job<H::Permit>, mailbox: Arc<Mailbox<H>>) {
        self.lock().queue.push_back((job, mailbox));
        self.more.notify_one();
    }

    /// Called from the loops' sweep: adds a worker if every worker is busy and the oldest
    /// waiting call has waited longer than [`STALL`] (busy workers are running calls that take
    /// long, possibly spinning to their deadline).
    pub(super) fn grow_if_stalled(self: &Arc<Self>, now: Instant) {
        {
            let mut st = self.lock();
            let stalled = st.queue.front().is_some_and(|(job, _)| now.saturating_duration_since(job.at) > STALL);
            if !stalled || st.idle > 0 || st.threads >= self.max_threads || st.stop {
                return;
            }
            st.threads += 1;
        }
        if let Err(e) = self.spawn() {
            eprintln!("snapcall serve: cannot start another worker thread: {e}");
        }
    }

    /// Worker threads started so far.
    #[cfg(test)]
    pub fn threads(&self) -> usize {
        self.lock().threads
    }

    /// Makes the workers return once the queue is empty, and waits for them.
    pub fn stop(&self) -> std::thread::Result<()> {
        self.lock().stop = true;
        self.more.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let mut result = Ok(());
        for h in handles {
            if let Err(e) = h.join() {
                result = Err(e);
            }
        }
        result
    }
}
