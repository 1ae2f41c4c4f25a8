//! Guest threads, scheduled by the monitor on the VM's one vCPU.
//!
//! Plain data, no KVM: the thread table, who waits for what, futex queues and the choice of
//! the next thread, so all of it is testable without a VM. The run loop (`scheduler.rs`)
//! moves registers between the vCPU and [`Saved`] when it switches.
//!
//! One thread is on the vCPU at a time (`current`); every other thread is *parked* with its
//! registers, FPU state, FS base, signal mask and alternate stack saved. The current thread's
//! mask, alternate stack and FS base stay in [`crate::process::Process`], where the syscall
//! layer has always kept them.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_regs, kvm_xsave};

use crate::errno::{Errno, EAGAIN};
use crate::process::GUEST_PID;
use crate::syscalls::{Wait, WaitFor};

/// A thread id as the program sees it (pid_t). The main thread's is the pid.
pub type Tid = i32;

/// Most threads a call may have at once (the main thread included); clone beyond it is
/// EAGAIN, as Linux gives at RLIMIT_NPROC. 64 covers CPython's and glibc's pools
/// (`ThreadPoolExecutor` defaults to at most 32 workers) with room to spare, while keeping
/// what a hostile program can make the monitor hold small: a parked thread costs it one
/// [`Saved`] (≈4.4 KiB, most of it the XSAVE image), so at most ≈280 KiB per call, and the
/// O(threads) scans below stay trivially cheap. Each thread's stack is the program's own
/// memory, under the function's memory cap (glibc's default 8 MiB stacks are reserved in
/// it: a 1 GiB guest runs out of room for them near 57 CPython threads, before this limit).
pub const MAX_THREADS: usize = 64;

/// How long a thread runs before the monitor switches to another runnable one. A switch
/// costs a VM exit (≈26 µs under kvm-pvm) plus the register and XSAVE ioctls, so 5 ms keeps
/// switching under ~1-2 % of the CPU, while a thread waiting for a spinning one gets the
/// vCPU within a few ms. 5 ms is also CPython's GIL switch interval: a thread that wants the
/// GIL waits on a 5 ms timed condvar, so a shorter slice would only switch to a thread that
/// goes straight back to waiting.
pub const TIME_SLICE: Duration = Duration::from_millis(5);

/// A thread blocked in a syscall (`Outcome::Block`): what it waits for, and the syscall's
/// number (to run it again: an fd wait once another thread ran, or any restartable wait
/// after an SA_RESTART handler).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub wait: Wait,
    pub nr: u64,
}

impl Blocked {
    /// Whether a handler with SA_RESTART makes the syscall start again (otherwise EINTR):
    /// an untimed futex wait, and reads and writes of pipes and sockets, as in Linux.
    pub fn restartable(&self) -> bool {
        match self.wait.what {
            WaitFor::Futex { .. } => self.wait.until.is_none(),
            WaitFor::Readable { .. } | WaitFor::Writable { .. } => true,
            WaitFor::Time | WaitFor::Ready | WaitFor::Signal | WaitFor::SignalIn { .. } => false,
        }
    }
}

/// Whether a thread can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Runnable; when it next runs, its syscall returns `rax`.
    Runnable,
    Blocked(Blocked),
    /// Called exit() and waits for the run loop to take it off the vCPU.
    Exited,
}

/// What the monitor knows of a thread besides its registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub tid: Tid,
    /// set_tid_address / CLONE_CHILD_CLEARTID: zeroed and futex-woken when the thread exits.
    pub clear_child_tid: u64,
    /// set_robust_list's head (recorded; see docs/vmm.md).
    pub robust_list: u64,
    /// Signals sent to this thread (tgkill) and not yet delivered, one bit per signal.
    pub pending: u64,
    pub state: RunState,
    /// rax when it resumes from the syscall it is parked in.
    pub resume_rax: u64,
    /// Set when a signal ended its wait: the syscall (this number) starts again after the
    /// handler (SA_RESTART).
    pub restart: Option<u64>,
    /// Set when the scheduler made it run its fd wait's syscall again (see
    /// [`Threads::end_turn`]): the wait it re-runs, which the re-run continues. Its
    /// deadline stays (a relative timeout argument, poll's milliseconds or select's
    /// timeval, would otherwise start again at every re-run, and a select polled by a busy
    /// writer would never time out), and a write goes on after the bytes it wrote.
    pub rerun: Option<Wait>,
    /// The mask to put back after the handler that ended an rt_sigsuspend.
    pub saved_mask: Option<u64>,
    /// The signal an rt_sigtimedwait took, and where its siginfo goes (written when the
    /// thread resumes).
    pub taken_signal: Option<(i32, crate::memory::UserAddr)>,
    /// Order of blocking, so futex waiters wake first-come first-served.
    blocked_seq: u64,
}

impl Thread {
    pub fn new(tid: Tid) -> Thread {
        Thread {
            tid,
            clear_child_tid: 0,
            robust_list: 0,
            pending: 0,
            state: RunState::Runnable,
            resume_rax: 0,
            restart: None,
            rerun: None,
            saved_mask: None,
            taken_signal: None,
            blocked_seq: 0,
        }
    }

    /// Makes a blocked thread runnable; its syscall returns `rax`.
    pub fn wake(&mut self, rax: u64) {
        self.state = RunState::Runnable;
        self.resume_rax = rax;
    }

    /// A thread blocked on an fd runs its syscall again (which continues its wait: see
    /// [`Threads::take_rerun`]).
    fn rerun_again(&mut self) {
        if let RunState::Blocked(b) = std::mem::replace(&mut self.state, RunState::Runnable) {
            self.restart = Some(b.nr);
            self.rerun = Some(b.wait);
        }
    }

    pub fn blocked(&self) -> Option<&Blocked> {
        match &self.state {
            RunState::Blocked(b) => Some(b),
            RunState::Runnable | RunState::Exited => None,
        }
    }
}

/// A parked thread's CPU: general registers (rip, rsp and rflags as the program's, rax
/// overwritten by [`Thread::resume_rax`] when it resumes) and the XSAVE image.
pub struct CpuContext {
    pub regs: kvm_regs,
    pub xsave: Box<kvm_xsave>,
}

/// Everything of a parked thread that lives in the vCPU or the process while it runs.
pub struct Saved {
    pub cpu: CpuContext,
    pub fs_base: u64,
    pub sigmask: u64,
    pub sigaltstack: [u8; 24],
}

/// A thread that is not on the vCPU.
pub struct Parked {
    pub thread: Thread,
    pub saved: Saved,
}

/// The thread table of one call.
pub struct Threads {
    /// The thread on the vCPU.
    pub current: Thread,
    /// Every other thread, in round-robin order (the next to run is the first runnable).
    parked: VecDeque<Parked>,
    next_tid: Tid,
    next_seq: u64,
    /// When the current thread's time slice ends (set while other threads exist).
    pub slice_end: Option<Instant>,
    /// Syscalls the current thread made in this turn on the vCPU.
    turn_syscalls: u32,
    /// The current thread's syscall changed what others may wait for even though it blocks
    /// (a write that queued part of its bytes): see [`Threads::end_turn`].
    turn_changed: bool,
}

impl Default for Threads {
    fn default() -> Self {
        Threads::new()
    }
}

impl Threads {
    /// One thread, the main one, whose tid is the pid.
    pub fn new() -> Threads {
        Threads {
            current: Thread::new(GUEST_PID as Tid),
            parked: VecDeque::new(),
            next_tid: GUEST_PID as Tid + 1,
            next_seq: 0,
            slice_end: None,
            turn_syscalls: 0,
            turn_changed: false,
        }
    }

    /// Threads alive, the current one included.
    pub fn count(&self) -> usize {
        1 + self.parked.len()
    }

    /// Whether a thread other than the current one exists.
    pub fn others_exist(&self) -> bool {
        !self.parked.is_empty()
    }

    pub fn parked(&self) -> impl Iterator<Item = &Parked> {
        self.parked.iter()
    }

    pub fn parked_mut(&mut self) -> impl Iterator<Item = &mut Parked> {
        self.parked.iter_mut()
    }

    /// Whether `tid` is a live thread.
    pub fn exists(&self, tid: Tid) -> bool {
        self.current.tid == tid || self.parked.iter().any(|p| p.thread.tid == tid)
    }

    /// The live thread `tid`.
    pub fn get_mut(&mut self, tid: Tid) -> Option<&mut Thread> {
        if self.current.tid == tid {
            return Some(&mut self.current);
        }
        self.parked.iter_mut().map(|p| &mut p.thread).find(|t| t.tid == tid)
    }

    /// A tid for a new thread, or EAGAIN at [`MAX_THREADS`]. Tids are never reused in a call.
    pub fn new_tid(&mut self) -> Result<Tid, Errno> {
        if self.count() >= MAX_THREADS || self.next_tid == Tid::MAX {
            return Err(EAGAIN);
        }
        let tid = self.next_tid;
        self.next_tid += 1;
        Ok(tid)
    }

    /// Adds a new runnable thread behind every other (it runs when its turn comes).
    pub fn add(&mut self, parked: Parked) {
        self.parked.push_back(parked);
    }

    /// Blocks the current thread (it stays on the vCPU until the run loop parks it).
    pub fn block_current(&mut self, blocked: Blocked) {
        self.current.state = RunState::Blocked(blocked);
        self.current.blocked_seq = self.next_seq;
        self.next_seq += 1;
    }

    /// FUTEX_WAKE: wakes up to `n` threads waiting on `addr` whose bitset meets `bitset`,
    /// oldest wait first; their waits return 0. Returns how many woke.
    pub fn futex_wake(&mut self, addr: u64, n: u32, bitset: u32) -> u32 {
        let mut waiters: Vec<(u64, usize)> = self
            .parked
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.thread.blocked().map(|b| &b.wait.what), Some(WaitFor::Futex { addr: a, bitset: b }) if *a == addr && b & bitset != 0))
            .map(|(i, p)| (p.thread.blocked_seq, i))
            .collect();
        waiters.sort_unstable();
        let mut woken = 0;
        for (_, i) in waiters.into_iter().take(n as usize) {
            self.parked[i].thread.wake(0);
            woken += 1;
        }
        woken
    }

    /// FUTEX_REQUEUE: wakes up to `wake` waiters on `addr`, then moves up to `requeue` of the
    /// rest to wait on `addr2` instead. Returns woken + moved.
    pub fn futex_requeue(&mut self, addr: u64, wake: u32, addr2: u64, requeue: u32) -> u32 {
        let woken = self.futex_wake(addr, wake, u32::MAX);
        let mut waiters: Vec<(u64, usize)> = self
            .parked
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.thread.blocked().map(|b| &b.wait.what), Some(WaitFor::Futex { addr: a, .. }) if *a == addr))
            .map(|(i, p)| (p.thread.blocked_seq, i))
            .collect();
        waiters.sort_unstable();
        let mut moved = 0;
        for (_, i) in waiters.into_iter().take(requeue as usize) {
            if let RunState::Blocked(b) = &mut self.parked[i].thread.state {
                b.wait.what = WaitFor::Futex { addr: addr2, bitset: u32::MAX };
                moved += 1;
            }
        }
        woken + moved
    }

    /// Wakes every thread whose timeout has passed at `now`: with its timeout result, or,
    /// for an fd wait, by running its syscall once more, since an fd may have become ready
    /// since it last looked (Linux's poll reports what is ready when it returns, also at its
    /// timeout). That re-run keeps the passed deadline, so if nothing is ready it returns its
    /// timeout result at once ([`Threads::take_rerun`]).
    pub fn expire_timeouts(&mut self, now: Instant) {
        for t in self.parked.iter_mut().map(|p| &mut p.thread).chain(std::iter::once(&mut self.current)) {
            let Some(b) = t.blocked() else { continue };
            if b.wait.until.is_none_or(|u| u > now) {
                continue;
            }
            if b.wait.what.rerun() {
                t.rerun_again();
            } else {
                let rax = b.wait.timeout_result;
                t.wake(rax);
            }
        }
    }

    /// For a syscall that can block on an fd: the wait it continues if it is the re-run the
    /// scheduler asked for (the first syscall of the thread's turn), whose deadline it keeps
    /// (poll, select, epoll_wait) or whose written bytes it does not write again (write,
    /// send). None for any other syscall.
    pub fn take_rerun(&mut self) -> Option<Wait> {
        self.current.rerun.take().filter(|_| self.turn_syscalls == 1)
    }

    /// The earliest timeout of any blocked thread.
    pub fn earliest_timeout(&self) -> Option<Instant> {
        self.parked
            .iter()
            .map(|p| &p.thread)
            .chain(std::iter::once(&self.current))
            .filter_map(|t| t.blocked().and_then(|b| b.wait.until))
            .min()
    }

    /// The current thread's syscall blocks, but after it changed something another thread
    /// may wait for (a blocking write that queued part of its bytes): its turn counts as
    /// one that may have made an fd ready.
    pub fn note_change(&mut self) {
        self.turn_changed = true;
    }

    /// Counts a syscall of the current thread's turn (see [`Threads::end_turn`]).
    pub fn count_syscall(&mut self) {
        self.turn_syscalls += 1;
    }

    /// The current thread's turn ends: if it made a syscall besides the one it may block in,
    /// it may have made an fd ready, so every thread blocked on an fd runs its syscall again
    /// (most block again at once). A thread that blocked straight after being woken changed
    /// nothing (unless it said so: [`Threads::note_change`]), so two threads blocked on each
    /// other's pipes do not wake each other for ever.
    pub fn end_turn(&mut self) {
        if self.turn_syscalls > 1 || self.turn_changed {
            for t in self.parked.iter_mut().map(|p| &mut p.thread) {
                if t.blocked().is_some_and(|b| b.wait.what.rerun()) {
                    t.rerun_again();
                }
            }
        }
        // A re-run's wait is for the first syscall of the thread's next turn only.
        self.current.rerun = None;
        self.turn_syscalls = 0;
        self.turn_changed = false;
    }

    /// Index of the first runnable parked thread in round-robin order.
    pub fn next_runnable(&self) -> Option<usize> {
        self.parked.iter().position(|p| p.thread.state == RunState::Runnable)
    }

    /// Puts the current thread (with `saved`, its registers) at the back of the queue and
    /// makes parked thread `index` current; returns that thread's saved state to load.
    pub fn switch_to(&mut self, index: usize, saved: Saved) -> Saved {
        let next = self.parked.remove(index).expect("index from next_runnable");
        let previous = std::mem::replace(&mut self.current, next.thread);
        self.parked.push_back(Parked { thread: previous, saved });
        next.saved
    }

    /// Ends the current thread and makes parked thread `index` current; returns its saved
    /// state to load. The caller has done the exit's futex wake.
    pub fn replace_current(&mut self, index: usize) -> Saved {
        let next = self.parked.remove(index).expect("index from next_runnable");
        self.current = next.thread;
        next.saved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(tid: Tid) -> Parked {
        Parked {
            thread: Thread::new(tid),
            saved: Saved {
                cpu: CpuContext { regs: kvm_regs::default(), xsave: Box::default() },
                fs_base: 0,
                sigmask: 0,
                sigaltstack: [0; 24],
            },
        }
    }

    fn saved() -> Saved {
        parked(0).saved
    }

    /// Main thread plus `n` more, all runnable.
    fn table(n: usize) -> Threads {
        let mut t = Threads::new();
        for _ in 0..n {
            let tid = t.new_tid().unwrap();
            t.add(parked(tid));
        }
        t
    }

    fn blocked(what: WaitFor, until: Option<Instant>, rax: u64) -> Blocked {
        Blocked { wait: Wait { what, until, timeout_result: rax, syscall: "test" }, nr: 7 }
    }

    fn futex_wait(t: &mut Threads, addr: u64, bitset: u32) {
        t.block_current(blocked(WaitFor::Futex { addr, bitset }, None, 0));
        let next = t.next_runnable().expect("someone to run");
        t.switch_to(next, saved());
    }

    #[test]
    fn tids_start_after_the_pid_and_stop_at_the_limit() {
        let mut t = Threads::new();
        assert_eq!(t.current.tid, 100);
        assert_eq!(t.new_tid(), Ok(101));
        let mut t = table(MAX_THREADS - 1);
        assert_eq!(t.count(), MAX_THREADS);
        assert_eq!(t.new_tid(), Err(EAGAIN));
    }

    #[test]
    fn round_robin_runs_every_runnable_thread_in_turn() {
        let mut t = table(2);
        let mut order = vec![t.current.tid];
        for _ in 0..5 {
            let i = t.next_runnable().unwrap();
            t.switch_to(i, saved());
            order.push(t.current.tid);
        }
        assert_eq!(order, [100, 101, 102, 100, 101, 102]);
    }

    #[test]
    fn futex_wake_wakes_the_oldest_waiters_on_that_word_with_a_matching_bitset() {
        let mut t = table(3);
        futex_wait(&mut t, 0x1000, u32::MAX); // 100 waits
        futex_wait(&mut t, 0x2000, u32::MAX); // 101 waits elsewhere
        futex_wait(&mut t, 0x1000, 0b10); // 102 waits with bitset 2
        assert_eq!(t.current.tid, 103);
        assert_eq!(t.futex_wake(0x1000, 1, 0b01), 1, "only 100's bitset meets 1");
        assert_eq!(t.futex_wake(0x1000, 1, 0b01), 0);
        assert_eq!(t.futex_wake(0x1000, 5, u32::MAX), 1);
        let states: Vec<_> = t.parked().map(|p| (p.thread.tid, p.thread.state == RunState::Runnable)).collect();
        assert_eq!(states, [(100, true), (101, false), (102, true)]);
        assert_eq!(t.parked().find(|p| p.thread.tid == 100).unwrap().thread.resume_rax, 0);
    }

    #[test]
    fn futex_wake_order_is_first_come_first_served() {
        let mut t = table(2);
        futex_wait(&mut t, 0x1000, u32::MAX); // 100
        futex_wait(&mut t, 0x1000, u32::MAX); // 101
        assert_eq!(t.futex_wake(0x1000, 1, u32::MAX), 1);
        let woken: Vec<_> = t.parked().filter(|p| p.thread.state == RunState::Runnable).map(|p| p.thread.tid).collect();
        assert_eq!(woken, [100]);
    }

    #[test]
    fn futex_requeue_wakes_some_and_moves_the_rest_to_the_second_word() {
        let mut t = table(3);
        for _ in 0..3 {
            futex_wait(&mut t, 0x1000, u32::MAX); // 100, 101, 102
        }
        assert_eq!(t.futex_requeue(0x1000, 1, 0x3000, 1), 2);
        assert_eq!(t.futex_wake(0x1000, 10, u32::MAX), 1, "one was left on the first word");
        assert_eq!(t.futex_wake(0x3000, 10, u32::MAX), 1, "the moved one waits on the second word");
        let mut t = table(3);
        for _ in 0..3 {
            futex_wait(&mut t, 0x1000, u32::MAX);
        }
        assert_eq!(t.futex_requeue(0x1000, 0, 0x3000, 2), 2);
        assert_eq!(t.futex_wake(0x3000, 10, u32::MAX), 2);
        assert_eq!(t.futex_wake(0x1000, 10, u32::MAX), 1);
    }

    #[test]
    fn timeouts_wake_with_their_result_and_the_earliest_is_known() {
        let mut t = table(1);
        let now = Instant::now();
        t.block_current(blocked(WaitFor::Time, Some(now + Duration::from_millis(5)), 7));
        t.switch_to(0, saved());
        t.block_current(blocked(WaitFor::Futex { addr: 8, bitset: 1 }, Some(now + Duration::from_millis(2)), 9));
        assert_eq!(t.earliest_timeout(), Some(now + Duration::from_millis(2)));
        assert_eq!(t.next_runnable(), None, "everyone is blocked");
        t.expire_timeouts(now + Duration::from_millis(3));
        assert_eq!((&t.current.state, t.current.resume_rax), (&RunState::Runnable, 9));
        assert_eq!(t.next_runnable(), None);
        t.expire_timeouts(now + Duration::from_millis(5));
        assert_eq!(t.next_runnable(), Some(0));
        assert_eq!(t.earliest_timeout(), None);
    }

    #[test]
    fn fd_waiters_run_their_syscall_again_only_after_a_turn_that_did_something() {
        let mut t = table(1);
        t.count_syscall();
        t.block_current(blocked(WaitFor::Readable { fd: 3 }, None, 0)); // 100 reads a pipe
        t.end_turn();
        t.switch_to(0, saved());
        // 101 blocks at once on the other end: it changed nothing, 100 stays asleep.
        t.count_syscall();
        t.block_current(blocked(WaitFor::Writable { fd: 4, written: 0 }, None, 0));
        t.end_turn();
        assert_eq!(t.next_runnable(), None, "a deadlock, not a ping-pong");
        // A turn with another syscall before the block (a write, say) wakes the fd waiter.
        t.current.state = RunState::Runnable;
        t.count_syscall();
        t.count_syscall();
        t.block_current(blocked(WaitFor::Time, None, 0));
        t.end_turn();
        let p = t.parked().next().unwrap();
        assert_eq!((&p.thread.state, p.thread.restart), (&RunState::Runnable, Some(7)));
    }

    #[test]
    fn an_exiting_thread_leaves_the_table() {
        let mut t = table(2);
        let i = t.next_runnable().unwrap();
        t.replace_current(i);
        assert_eq!((t.current.tid, t.count()), (101, 2));
        assert!(!t.exists(100) && t.exists(102));
    }
}
