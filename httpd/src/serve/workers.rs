//! `--workers N`: worker threads that run the calls the event loops hand over, the
//! alternative to inline calls that the threading measurement in docs/httpd.md compares.
//! A loop pushes a [`Job`] with its [`Mailbox`]; a worker runs it and leaves the answer in
//! the mailbox, then writes the loop's eventfd so the loop picks it up.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::event_loop::{Handler, Job};
use super::http::{Head, Response};

/// Worker threads that run calls handed over by the loops (`--workers N`), the alternative
/// to running them inline that the threading measurement in docs/httpd.md compares.
pub struct Workers<H: Handler> {
    queue: Mutex<VecDeque<(Job, Arc<Mailbox<H>>)>>,
    more: Condvar,
    stop: AtomicBool,
}

/// A loop's link to the workers: where it sends calls, and where they come back.
pub(super) type Offload<H> = (Arc<Workers<H>>, Arc<Mailbox<H>>);

/// Where workers leave a loop's finished calls; writing `wake` makes the loop look.
pub struct Mailbox<H: Handler> {
    pub(super) results: Mutex<Vec<Finished<H>>>,
    pub(super) wake: OwnedFd,
}

pub(super) struct Finished<H: Handler> {
    pub(super) slot: usize,
    pub(super) gen: u32,
    pub(super) head: Head,
    pub(super) admitted: bool,
    pub(super) resp: Response,
    pub(super) done: Option<H::Done>,
}

impl<H: Handler> Default for Workers<H> {
    fn default() -> Self {
        Workers { queue: Mutex::new(VecDeque::new()), more: Condvar::new(), stop: AtomicBool::new(false) }
    }
}

impl<H: Handler> Workers<H> {
    /// Body of one worker thread: runs calls until [`Workers::stop`].
    pub fn work(&self, handler: &H) {
        loop {
            let (job, mailbox) = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(item) = q.pop_front() {
                        break item;
                    }
                    if self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    q = self.more.wait(q).unwrap_or_else(|e| e.into_inner());
                }
            };
            let head = job.req.head.clone();
            let (resp, done) = handler.handle(job.req, job.at.elapsed());
            let f = Finished { slot: job.slot, gen: job.gen, head, admitted: job.admitted, resp, done };
            mailbox.results.lock().unwrap_or_else(|e| e.into_inner()).push(f);
            let one = 1u64;
            // SAFETY: 8-byte write of a local to the loop's eventfd, which the mailbox owns.
            unsafe { libc::write(mailbox.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Makes the workers return once the queue is empty.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _guard = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.more.notify_all();
    }

    pub(super) fn push(&self, job: Job, mailbox: Arc<Mailbox<H>>) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push_back((job, mailbox));
        self.more.notify_one();
    }
}
