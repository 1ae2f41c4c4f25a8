//! The worker threads calls run on, so that no call ever runs on an event loop thread: a loop
//! keeps accepting, reading, answering `/healthz` and `/metrics`, and handing out other calls
//! however long one call spins.
//!
//! A loop pushes a [`Job`] with its [`Mailbox`]; a worker runs it and leaves the answer in the
//! mailbox, then writes the loop's eventfd so the loop picks it up.
//!
//! Concurrency is `concurrency` calls *making progress*: a worker takes a job only while fewer
//! than that many calls have been running for less than [`STUCK`]. Calls on 2 cores do not get
//! faster by running more at once (docs/httpd.md, Threading), and more at once made the VM
//! reaper fall behind (1000+ used VMs alive, then calls hitting their deadlines). A call running
//! longer than [`STUCK`] (one spinning to its deadline) stops counting: the loops' sweep then
//! wakes a parked worker, or starts one, up to `max_threads`, so other calls go on. Threads are
//! never ended (their number is bounded by the in-flight limit), only parked.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::Request;
use super::handler::Handler;
use super::http::{Head, Response};

/// A call running longer than this no longer counts against the pool's concurrency.
pub const STUCK: Duration = Duration::from_millis(500);

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
    /// When each call now running started.
    running: Vec<Instant>,
    /// Worker threads started.
    threads: usize,
    /// Workers parked, waiting for a job they may take.
    idle: usize,
    stop: bool,
}

impl<H: Handler> State<H> {
    /// Calls running for less than [`STUCK`].
    fn progressing(&self, now: Instant) -> usize {
        self.running.iter().filter(|t| now.saturating_duration_since(**t) < STUCK).count()
    }
}

/// The worker threads, shared by all loops.
pub struct Workers<H: Handler> {
    handler: Arc<H>,
    state: Mutex<State<H>>,
    more: Condvar,
    /// Calls making progress at once, at most.
    concurrency: usize,
    max_threads: usize,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl<H: Handler> Workers<H> {
    /// Starts `threads` workers (at least one), which is also the number of calls making
    /// progress at once; the pool may grow to `max_threads` while calls are stuck.
    pub fn start(handler: Arc<H>, threads: usize, max_threads: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        let workers = Arc::new(Workers {
            handler,
            state: Mutex::new(State { queue: VecDeque::new(), running: Vec::new(), threads: 0, idle: 0, stop: false }),
            more: Condvar::new(),
            concurrency: threads,
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
            let (job, mailbox, started) = {
                let mut st = self.lock();
                loop {
                    if st.queue.is_empty() && st.stop {
                        return;
                    }
                    let now = Instant::now();
                    if !st.queue.is_empty() && st.progressing(now) < self.concurrency {
                        if let Some((job, mailbox)) = st.queue.pop_front() {
                            st.running.push(now);
                            break (job, mailbox, now);
                        }
                    }
                    st.idle += 1;
                    st = self.more.wait(st).unwrap_or_else(|e| e.into_inner());
                    st.idle -= 1;
                }
            };
            let finished = self.run(job);
            {
                let mut st = self.lock();
                if let Some(i) = st.running.iter().position(|t| *t == started) {
                    st.running.swap_remove(i);
                }
            }
            mailbox.results.lock().unwrap_or_else(|e| e.into_inner()).push(finished);
            let one = 1u64;
            // SAFETY: 8-byte write of a local to the loop's eventfd, which the mailbox owns.
            unsafe { libc::write(mailbox.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Runs one call. A panic in the handler becomes a 500 for this call, not a lost
    /// connection and a dead worker.
    fn run(&self, job: Job<H::Permit>) -> Finished<H> {
        let (slot, gen, head) = (job.slot, job.gen, job.req.head.for_response());
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

    /// Called from the loops' sweep: when calls wait and some of the running ones are stuck
    /// (running longer than [`STUCK`]), wakes a parked worker to take one, or starts a worker.
    pub(super) fn replace_stuck(self: &Arc<Self>, now: Instant) {
        {
            let mut st = self.lock();
            if st.queue.is_empty() || st.stop || st.progressing(now) >= self.concurrency {
                return;
            }
            if st.idle > 0 {
                drop(st);
                self.more.notify_one();
                return;
            }
            if st.threads >= self.max_threads {
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
