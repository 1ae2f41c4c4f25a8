//! The syscall layer without a VM: a `Process` over a temporary rootfs and plain guest memory.

use super::*;
use crate::files::Rootfs;
use crate::mm::AddressSpace;

const MEM: u64 = 32 << 20;
/// A free scratch page in user memory (the test's "program" lives at 4 MiB).
const SCRATCH: u64 = 0x20_0000;

struct Guest {
    p: Process,
    mem: GuestMemory,
    _root: tempdir::Dir,
}

mod tempdir {
    /// A rootfs directory removed when the test ends.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("snapcall-syscalls-{}-{n}", std::process::id()));
            std::fs::create_dir_all(path.join("data")).unwrap();
            std::fs::write(path.join("data/hello.txt"), b"hello\n").unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn guest() -> Guest {
    let root = tempdir::Dir::new();
    let space = AddressSpace::new(MEM, 4 << 20, 5 << 20).unwrap();
    let mut p = Process::new(space, Rootfs::open(&root.0).unwrap(), "/bin/x".into(), "/".into(), 1 << 20);
    p.deadline = Some(Instant::now() + Duration::from_secs(10));
    Guest { p, mem: GuestMemory::new(MEM).unwrap(), _root: root }
}

impl Guest {
    fn call(&mut self, nr: u64, args: &[u64]) -> Outcome {
        let mut a = [0u64; 6];
        a[..args.len()].copy_from_slice(args);
        handle(&mut self.p, &mut self.mem, nr, a)
    }
    /// The raw return value: a result, or minus an errno. A blocked call completes as the
    /// run loop completes it for a program with one thread.
    fn sys(&mut self, nr: u64, args: &[u64]) -> i64 {
        match self.call(nr, args) {
            Outcome::Return(v) => v as i64,
            Outcome::Block(wait) => match finish_alone(&self.p, wait) {
                Ok(v) => v as i64,
                Err(stop) => panic!("syscall {nr} blocked for ever: {stop:?}"),
            },
            other => panic!("syscall {nr} did not return: {other:?}"),
        }
    }
    fn put(&mut self, addr: u64, bytes: &[u8]) {
        self.mem.write_user(UserAddr::new(addr), bytes).unwrap();
    }
    fn put_timespec(&mut self, addr: u64, d: Duration) {
        let mut b = (d.as_secs() as i64).to_le_bytes().to_vec();
        b.extend_from_slice(&i64::from(d.subsec_nanos()).to_le_bytes());
        self.put(addr, &b);
    }
}

fn err(e: Errno) -> i64 {
    -i64::from(e.0)
}

/// `clock`'s reading now, as a duration since its epoch.
fn clock_now(clock: i32) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

// ---------------------------------------------------------------- futex

const FUTEX: u64 = 202;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_PRIVATE: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;
const WORD: u64 = SCRATCH;
const TIMEOUT: u64 = SCRATCH + 64;

/// Runs `f` and returns its result and how long it took.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// The wait a syscall blocked in.
fn blocked(o: Outcome) -> Wait {
    match o {
        Outcome::Block(b) => b,
        other => panic!("expected the thread to block, got {other:?}"),
    }
}

#[test]
fn a_futex_wait_with_a_relative_timeout_blocks_until_then_and_times_out() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    g.put_timespec(TIMEOUT, Duration::from_millis(60));
    let before = Instant::now();
    let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT | FUTEX_PRIVATE, 7, TIMEOUT]));
    let until = b.until.expect("a timeout");
    assert!(until >= before + Duration::from_millis(60) && until <= Instant::now() + Duration::from_millis(60));
    assert_eq!(b.timeout_result as i64, err(ETIMEDOUT));
    assert_eq!(b.what, WaitFor::Futex { addr: WORD, bitset: u32::MAX });
    let b = crate::threads::Blocked { wait: b, nr: FUTEX };
    assert!(!b.restartable(), "a timed wait ends with EINTR after any handler");
}

#[test]
fn a_futex_wait_bitset_blocks_until_its_absolute_monotonic_or_realtime_timeout() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    for (flag, clock) in [(0, libc::CLOCK_MONOTONIC), (FUTEX_CLOCK_REALTIME, libc::CLOCK_REALTIME)] {
        g.put_timespec(TIMEOUT, clock_now(clock) + Duration::from_millis(60));
        let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT_BITSET | flag, 7, TIMEOUT, 0, u64::from(u32::MAX)]));
        let left = b.until.unwrap().saturating_duration_since(Instant::now());
        assert!(left > Duration::from_millis(30) && left <= Duration::from_millis(60), "clock {clock}: {left:?}");
        // A time already past times out at once.
        g.put_timespec(TIMEOUT, clock_now(clock) - Duration::from_secs(1));
        let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT_BITSET | flag, 7, TIMEOUT, 0, 1]));
        assert!(b.until.unwrap() <= Instant::now(), "clock {clock}");
        assert_eq!(b.what, WaitFor::Futex { addr: WORD, bitset: 1 });
    }
}

/// Adds a second thread to `g` (as the run loop does for a clone) and returns its tid.
fn second_thread(g: &mut Guest) -> i32 {
    let flags = 0x100 | 0x200 | 0x400 | 0x800 | 0x1_0000 | 0x20_0000; // VM FS FILES SIGHAND THREAD CHILD_CLEARTID
    let Outcome::Spawn(spawn) = g.call(56, &[flags, 0x30_0000, 0, SCRATCH + 512, 0]) else { panic!("no spawn") };
    let saved = crate::threads::Saved {
        cpu: crate::threads::CpuContext { regs: Default::default(), xsave: Box::default() },
        fs_base: 0,
        sigmask: 0,
        sigaltstack: [0; 24],
    };
    g.p.threads.add(crate::threads::Parked { thread: new_thread(&spawn), saved });
    spawn.tid
}

/// The run loop's part of a block: park the current thread and run the next runnable one.
fn block_and_switch(g: &mut Guest, wait: Wait) {
    g.p.threads.block_current(crate::threads::Blocked { wait, nr: FUTEX });
    let next = g.p.threads.next_runnable().expect("a runnable thread");
    let saved = crate::threads::Saved {
        cpu: crate::threads::CpuContext { regs: Default::default(), xsave: Box::default() },
        fs_base: 0,
        sigmask: g.p.sigmask,
        sigaltstack: [0; 24],
    };
    g.p.threads.switch_to(next, saved);
}

#[test]
fn a_futex_wake_from_another_thread_ends_the_wait_with_zero() {
    let mut g = guest();
    let tid = second_thread(&mut g);
    assert_eq!(tid, 101);
    g.put(WORD, &7u32.to_le_bytes());
    let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT | FUTEX_PRIVATE, 7, 0]));
    assert!(b.until.is_none(), "no timeout: with another thread it waits");
    assert!(crate::threads::Blocked { wait: b.clone(), nr: FUTEX }.restartable());
    block_and_switch(&mut g, b);
    assert_eq!(g.sys(186, &[]), 101, "gettid in the second thread");
    assert_eq!(g.sys(FUTEX, &[WORD + 4, FUTEX_WAKE, 1]), 0, "nobody waits on another word");
    assert_eq!(g.sys(FUTEX, &[WORD, FUTEX_WAKE | FUTEX_PRIVATE, 1]), 1);
    assert_eq!(g.sys(FUTEX, &[WORD, FUTEX_WAKE, 1]), 0, "woken already");
    let main = g.p.threads.parked().next().unwrap();
    assert_eq!(
        (main.thread.tid, main.thread.state.clone(), main.thread.resume_rax),
        (100, crate::threads::RunState::Runnable, 0)
    );
}

#[test]
fn a_cmp_requeue_checks_the_word_then_moves_waiters() {
    let mut g = guest();
    second_thread(&mut g);
    g.put(WORD, &7u32.to_le_bytes());
    let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT, 7, 0]));
    block_and_switch(&mut g, b);
    const CMP_REQUEUE: u64 = 4;
    assert_eq!(g.sys(FUTEX, &[WORD, CMP_REQUEUE, 0, 1, WORD + 8, 8]), err(EAGAIN), "the word is 7, not 8");
    assert_eq!(g.sys(FUTEX, &[WORD, CMP_REQUEUE, 0, 1, WORD + 9, 7]), err(EINVAL), "unaligned second word");
    assert_eq!(g.sys(FUTEX, &[WORD, CMP_REQUEUE, 0, u64::MAX, WORD + 8, 7]), err(EINVAL), "negative count");
    assert_eq!(g.sys(FUTEX, &[WORD, CMP_REQUEUE, 0, 1, WORD + 8, 7]), 1, "moved");
    assert_eq!(g.sys(FUTEX, &[WORD, FUTEX_WAKE, 1]), 0);
    assert_eq!(g.sys(FUTEX, &[WORD + 8, FUTEX_WAKE, 1]), 1);
}

#[test]
fn a_thread_exit_clears_its_tid_word_and_wakes_the_joiner() {
    let mut g = guest();
    let tid = second_thread(&mut g);
    let tid_word = SCRATCH + 512;
    g.put(tid_word, &(tid as u32).to_le_bytes());
    // The main thread joins: waits while the word holds the tid.
    let b = blocked(g.call(FUTEX, &[tid_word, FUTEX_WAIT, tid as u64, 0]));
    block_and_switch(&mut g, b);
    assert_eq!(g.call(60, &[3]), Outcome::ExitThread);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(tid_word)).unwrap() as u32, 0);
    let main = g.p.threads.parked().next().unwrap();
    assert_eq!(main.thread.state, crate::threads::RunState::Runnable);
    // The last thread's exit ends the call.
    let next = g.p.threads.next_runnable().unwrap();
    g.p.threads.replace_current(next);
    assert_eq!(g.call(60, &[3]), Outcome::Stop(Stop::Exit(3)));
}

#[test]
fn clone_makes_threads_only_and_only_up_to_the_limit() {
    let mut g = guest();
    const THREAD: u64 = 0x100 | 0x200 | 0x400 | 0x800 | 0x1_0000;
    assert_eq!(g.sys(56, &[17, 0, 0, 0, 0]), err(EPERM), "fork");
    assert_eq!(g.sys(56, &[0x100 | 0x1_0000, 0, 0, 0, 0]), err(EINVAL), "CLONE_THREAD without CLONE_SIGHAND");
    assert_eq!(g.sys(56, &[0x1_0000 | 0x800, 0, 0, 0, 0]), err(EINVAL), "CLONE_SIGHAND without CLONE_VM");
    assert_eq!(g.sys(56, &[0x100 | 0x800 | 0x1_0000, 0, 0, 0, 0]), err(EINVAL), "its own fd table");
    assert_eq!(g.sys(56, &[THREAD | 0x2000_0000, 0, 0, 0, 0]), err(EINVAL), "CLONE_NEWPID");
    assert_eq!(g.sys(56, &[THREAD | 0x8_0000, 0, 0, 0, 1 << 47]), err(EPERM), "non-canonical TLS");
    // clone3: the struct's size and fields are checked first.
    let args = SCRATCH + 1024;
    g.put(args, &[0u8; 128]);
    assert_eq!(g.sys(435, &[args, 63]), err(EINVAL), "smaller than the first version");
    assert_eq!(g.sys(435, &[args, 8192]), err(E2BIG));
    assert_eq!(g.sys(435, &[args, 64]), err(EPERM), "all zero: a fork");
    g.put(args, &THREAD.to_le_bytes());
    g.put(args + 40, &0x40_0000u64.to_le_bytes()); // stack without a size
    assert_eq!(g.sys(435, &[args, 88]), err(EINVAL));
    g.put(args + 48, &0x1_0000u64.to_le_bytes());
    g.put(args + 100, &[1]);
    assert_eq!(g.sys(435, &[args, 128]), err(E2BIG), "a non-zero field we do not know");
    let parent_tid = SCRATCH + 2048;
    g.put(args, &(THREAD | 0x10_0000).to_le_bytes()); // CLONE_PARENT_SETTID
    g.put(args + 24, &parent_tid.to_le_bytes());
    match g.call(435, &[args, 88]) {
        Outcome::Spawn(s) => {
            assert_eq!(s.stack, 0x41_0000, "stack + stack_size");
            assert_eq!(s.tls, None);
            assert_eq!(g.mem.read_user_u64(UserAddr::new(parent_tid)).unwrap() as u32, s.tid as u32);
        }
        other => panic!("{other:?}"),
    }
    for _ in 1..crate::threads::MAX_THREADS {
        second_thread(&mut g);
    }
    assert_eq!(g.sys(56, &[THREAD, 0, 0, 0, 0]), err(EAGAIN), "{} threads", crate::threads::MAX_THREADS);
}

#[test]
fn thread_bookkeeping_calls_answer_for_the_calling_thread() {
    let mut g = guest();
    assert_eq!(g.sys(218, &[SCRATCH]), 100, "set_tid_address returns the tid");
    assert_eq!(g.p.threads.current.clear_child_tid, SCRATCH);
    assert_eq!(g.sys(273, &[SCRATCH + 64, 24]), 0);
    assert_eq!(g.sys(273, &[SCRATCH + 64, 23]), err(EINVAL));
    assert_eq!(g.sys(274, &[0, SCRATCH + 128, SCRATCH + 136]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(SCRATCH + 128)).unwrap(), SCRATCH + 64);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(SCRATCH + 136)).unwrap(), 24);
    assert_eq!(g.sys(274, &[999, SCRATCH + 128, SCRATCH + 136]), err(ESRCH));
    assert_eq!(g.sys(24, &[]), 0, "sched_yield alone");
    second_thread(&mut g);
    assert_eq!(g.call(24, &[]), Outcome::Yield);
    assert_eq!(g.sys(200, &[101, 0]), 0, "tkill reaches the second thread");
}

#[test]
fn a_futex_wait_nothing_can_wake_ends_the_call() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    match g.call(FUTEX, &[WORD, FUTEX_WAIT | FUTEX_PRIVATE, 7, 0]) {
        Outcome::Block(wait) => match finish_alone(&g.p, wait) {
            Err(Stop::Unsupported(why)) => assert!(why.contains("nothing can ever wake it"), "{why}"),
            other => panic!("expected the call to end, got {other:?}"),
        },
        other => panic!("expected the call to end, got {other:?}"),
    }
}

#[test]
fn futex_arguments_are_checked_in_linuxs_order() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    g.put_timespec(TIMEOUT, Duration::from_millis(1));
    let wait = |g: &mut Guest, op: u64, uaddr: u64, val: u64, timeout: u64, val3: u64| {
        g.sys(FUTEX, &[uaddr, op, val, timeout, 0, val3])
    };
    assert_eq!(wait(&mut g, FUTEX_WAIT, WORD, 8, TIMEOUT, 0), err(EAGAIN), "the word differs");
    assert_eq!(wait(&mut g, FUTEX_WAIT, WORD, 8, 0, 0), err(EAGAIN), "differs, no timeout");
    assert_eq!(wait(&mut g, FUTEX_WAIT, WORD + 1, 7, TIMEOUT, 0), err(EINVAL), "unaligned");
    assert_eq!(wait(&mut g, FUTEX_WAIT, 0x1000, 7, TIMEOUT, 0), err(EFAULT), "monitor page");
    assert_eq!(wait(&mut g, FUTEX_WAIT, WORD, 8, 0x1000, 0), err(EFAULT), "bad timeout pointer first");
    assert_eq!(wait(&mut g, FUTEX_WAIT_BITSET, WORD, 7, TIMEOUT, 0), err(EINVAL), "empty bitset");
    assert_eq!(wait(&mut g, FUTEX_WAIT | FUTEX_CLOCK_REALTIME, WORD, 7, TIMEOUT, 0), err(ENOSYS));
    assert_eq!(wait(&mut g, FUTEX_WAKE | FUTEX_CLOCK_REALTIME, WORD, 1, 0, 0), err(ENOSYS));
    assert_eq!(wait(&mut g, FUTEX_WAKE, WORD, 1, 0, 0), 0, "nobody to wake");
    assert_eq!(wait(&mut g, 0x200 | FUTEX_WAIT, WORD, 7, TIMEOUT, 0), err(ENOSYS), "unknown op bits");
    g.put(TIMEOUT + 8, &1_000_000_000i64.to_le_bytes());
    assert_eq!(wait(&mut g, FUTEX_WAIT, WORD, 8, TIMEOUT, 0), err(EINVAL), "tv_nsec out of range");
}

// ---------------------------------------------------------------- paths

const EMPTY: u64 = SCRATCH + 0x100;
const DATA: u64 = SCRATCH + 0x200;
const BUF: u64 = SCRATCH + 0x1000;
const AT_FDCWD: u64 = -100i64 as u64;
const AT_EMPTY_PATH: u64 = 0x1000;

#[test]
fn an_empty_path_names_nothing_unless_at_empty_path_says_it_names_the_fd() {
    let mut g = guest();
    g.put(EMPTY, b"\0");
    g.put(DATA, b"/data\0");
    assert_eq!(g.sys(2, &[EMPTY, 0]), err(ENOENT), "open");
    assert_eq!(g.sys(257, &[AT_FDCWD, EMPTY, 0]), err(ENOENT), "openat");
    assert_eq!(g.sys(4, &[EMPTY, BUF]), err(ENOENT), "stat");
    assert_eq!(g.sys(6, &[EMPTY, BUF]), err(ENOENT), "lstat");
    assert_eq!(g.sys(262, &[AT_FDCWD, EMPTY, BUF, 0]), err(ENOENT), "newfstatat without AT_EMPTY_PATH");
    assert_eq!(g.sys(21, &[EMPTY, 4]), err(ENOENT), "access");
    assert_eq!(g.sys(269, &[AT_FDCWD, EMPTY, 4]), err(ENOENT), "faccessat");
    assert_eq!(g.sys(439, &[AT_FDCWD, EMPTY, 4, 0]), err(ENOENT), "faccessat2 without AT_EMPTY_PATH");
    assert_eq!(g.sys(89, &[EMPTY, BUF, 100]), err(ENOENT), "readlink");
    assert_eq!(g.sys(267, &[AT_FDCWD, EMPTY, BUF, 100]), err(ENOENT), "readlinkat on the cwd");
    assert_eq!(g.sys(80, &[EMPTY]), err(ENOENT), "chdir");
    assert_eq!(g.p.cwd, "/");

    let dir = g.sys(2, &[DATA, libc::O_DIRECTORY as u64]);
    assert!(dir >= 3, "open /data: {dir}");
    let dir = dir as u64;
    assert_eq!(g.sys(257, &[dir, EMPTY, 0]), err(ENOENT), "openat(fd, \"\")");
    assert_eq!(g.sys(267, &[dir, EMPTY, BUF, 100]), err(ENOENT), "readlinkat of a directory fd");
    // AT_EMPTY_PATH: the call is about the fd (or the cwd) itself.
    assert_eq!(g.sys(262, &[dir, EMPTY, BUF, AT_EMPTY_PATH]), 0);
    let mode = u32::from_le_bytes(g.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap());
    assert_eq!(mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(g.sys(262, &[AT_FDCWD, EMPTY, BUF, AT_EMPTY_PATH]), 0, "fstatat(AT_FDCWD, \"\") is the cwd");
    assert_eq!(g.sys(439, &[dir, EMPTY, 4, AT_EMPTY_PATH]), 0, "faccessat2(fd, \"\", R_OK)");
    assert_eq!(g.sys(439, &[dir, EMPTY, 2, AT_EMPTY_PATH]), 0, "faccessat2(fd, \"\", W_OK): writable");
    assert_eq!(g.sys(439, &[77, EMPTY, 4, AT_EMPTY_PATH]), err(EBADF));
    assert_eq!(g.sys(262, &[77, EMPTY, BUF, AT_EMPTY_PATH]), err(EBADF));
    // A bad pointer is EFAULT whatever the flags.
    assert_eq!(g.sys(262, &[dir, 0x1000, BUF, AT_EMPTY_PATH]), err(EFAULT));
    assert_eq!(g.sys(439, &[dir, 0, 4, AT_EMPTY_PATH]), err(EFAULT));
}

// ---------------------------------------------------------------- signals

#[test]
fn tkill_and_tgkill_reach_only_the_programs_own_thread() {
    let mut g = guest();
    let tid = g.sys(186, &[]) as u64; // gettid
    let (tkill, tgkill) = (200, 234);
    assert_eq!(g.sys(tkill, &[tid, 0]), 0, "signal 0 to itself: it exists");
    assert_eq!(g.sys(tgkill, &[tid, tid, 0]), 0);
    assert_eq!(g.sys(tkill, &[tid + 1, 0]), err(ESRCH));
    assert_eq!(g.sys(tkill, &[12345, 9]), err(ESRCH), "SIGKILL to another thread does not end the call");
    assert_eq!(g.sys(tgkill, &[tid, tid + 1, 9]), err(ESRCH));
    assert_eq!(g.sys(tgkill, &[tid + 1, tid, 9]), err(ESRCH), "our tid in another thread group");
    assert_eq!(g.sys(tkill, &[0, 0]), err(EINVAL));
    assert_eq!(g.sys(tkill, &[u64::MAX, 0]), err(EINVAL), "tid -1");
    assert_eq!(g.sys(tgkill, &[0, tid, 0]), err(EINVAL));
    assert_eq!(g.sys(tkill, &[tid, 65]), err(EINVAL));
    assert_eq!(g.sys(tkill, &[12345, 65]), err(ESRCH), "ESRCH before EINVAL, as Linux");
    assert_eq!(g.call(tgkill, &[tid, tid, 6]), Outcome::Stop(Stop::Signal(6)), "abort()");
    assert_eq!(g.call(tkill, &[tid, 15]), Outcome::Stop(Stop::Signal(15)));
    assert_eq!(g.sys(62, &[12345, 9]), err(ESRCH), "kill of another process");
    assert_eq!(g.sys(62, &[u64::from(u32::MAX), 0]), 0, "kill(-1) as a 32-bit pid_t includes the program");
}

/// Installs `handler` for `sig` (with SA_RESTORER, as glibc does).
fn set_handler(g: &mut Guest, sig: u64, handler: u64, flags: u64) {
    let act = SCRATCH + 3072;
    let words = [handler, flags | 0x0400_0000, 0x40_0000, 0];
    g.put(act, &words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>());
    assert_eq!(g.sys(13, &[sig, act, 0, 8]), 0);
}

#[test]
fn a_signal_with_a_handler_is_made_pending_for_the_run_loop_to_deliver() {
    let mut g = guest();
    set_handler(&mut g, 10, 0x40_1000, 0);
    assert_eq!(g.sys(62, &[100, 10]), 0, "kill(self, SIGUSR1)");
    assert_eq!(g.p.pending_signals, 1 << 9);
    assert!(g.p.signal_ready());
    assert_eq!(g.sys(234, &[100, 100, 10]), 0, "tgkill");
    assert_eq!(g.p.threads.current.pending, 1 << 9, "a thread's own");
    // Blocked: pending, but not ready; rt_sigpending shows it.
    g.put(SCRATCH, &(1u64 << 9).to_le_bytes());
    assert_eq!(g.sys(14, &[0, SCRATCH, 0, 8]), 0, "block SIGUSR1");
    assert!(!g.p.signal_ready());
    assert_eq!(g.sys(127, &[SCRATCH + 8, 8]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(SCRATCH + 8)).unwrap(), 1 << 9);
    // SIGKILL and SIGSTOP cannot be blocked.
    g.put(SCRATCH, &u64::MAX.to_le_bytes());
    assert_eq!(g.sys(14, &[2, SCRATCH, 0, 8]), 0);
    assert_eq!(g.p.sigmask & (1 << 8 | 1 << 18), 0);
    // A blocked signal whose default is fatal waits; an unblocked one ends the call.
    assert_eq!(g.sys(62, &[100, 15]), 0);
    assert_eq!(g.p.pending_signals & (1 << 14), 1 << 14);
    assert_eq!(g.call(62, &[100, 9]), Outcome::Stop(Stop::Signal(9)));
    // Setting SIG_IGN discards what is pending.
    set_handler(&mut g, 10, SIG_IGN, 0);
    assert_eq!(g.p.pending_signals & (1 << 9), 0);
    assert_eq!(g.p.threads.current.pending, 0);
}

#[test]
fn sigtimedwait_takes_a_pending_signal_or_blocks_until_its_timeout() {
    let mut g = guest();
    set_handler(&mut g, 12, 0x40_1000, 0);
    g.put(SCRATCH, &(1u64 << 11).to_le_bytes());
    assert_eq!(g.sys(14, &[0, SCRATCH, 0, 8]), 0);
    g.put_timespec(TIMEOUT, Duration::ZERO);
    assert_eq!(g.sys(128, &[SCRATCH, 0, TIMEOUT, 8]), err(EAGAIN), "nothing pending, zero timeout");
    assert_eq!(g.sys(62, &[0, 12]), 0);
    let info = SCRATCH + 256;
    assert_eq!(g.sys(128, &[SCRATCH, info, 0, 8]), 12);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(info)).unwrap() as u32, 12, "si_signo");
    assert_eq!(g.p.pending_signals, 0, "taken");
    g.put_timespec(TIMEOUT, Duration::from_millis(50));
    let b = blocked(g.call(128, &[SCRATCH, info, TIMEOUT, 8]));
    assert_eq!(b.timeout_result as i64, err(EAGAIN));
    assert_eq!(b.what, WaitFor::SignalIn { set: 1 << 11, info: UserAddr::new(info) });
}

#[test]
fn alarm_and_setitimer_arm_one_real_timer() {
    let mut g = guest();
    assert_eq!(g.sys(37, &[5]), 0, "no alarm before");
    assert!(g.p.itimer_real.is_some() && g.p.timer_changed);
    assert_eq!(g.sys(37, &[0]), 5, "the seconds left, rounded");
    assert!(g.p.itimer_real.is_none());
    // setitimer: 10 ms interval, 30 ms value.
    let tv = [0u64, 10_000, 0, 30_000];
    g.put(SCRATCH, &tv.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>());
    assert_eq!(g.sys(38, &[0, SCRATCH, 0]), 0);
    assert_eq!(g.sys(36, &[0, SCRATCH + 64]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(SCRATCH + 64 + 8)).unwrap(), 10_000, "interval");
    let left = g.mem.read_user_u64(UserAddr::new(SCRATCH + 64 + 24)).unwrap();
    assert!(left > 0 && left <= 30_000, "{left}");
    assert_eq!(g.sys(38, &[1, SCRATCH, 0]), err(EINVAL), "ITIMER_VIRTUAL is not kept");
    g.put(SCRATCH + 8, &1_000_000u64.to_le_bytes());
    assert_eq!(g.sys(38, &[0, SCRATCH, 0]), err(EINVAL), "usec out of range");
    // Expiry: SIGALRM (default: fatal) ends the call; with a handler it is pending and the
    // timer goes on every interval.
    let later = Instant::now() + Duration::from_millis(40);
    assert_eq!(expire_itimer(&mut g.p, later), Err(Stop::Signal(14)));
    set_handler(&mut g, 14, 0x40_1000, 0);
    assert_eq!(expire_itimer(&mut g.p, later + Duration::from_millis(20)), Ok(()));
    assert_eq!(g.p.pending_signals, 1 << 13);
    assert_eq!(g.p.signal_codes[13], 0x80, "SI_KERNEL");
    let next = g.p.itimer_real.unwrap().next;
    assert!(next > later + Duration::from_millis(20));
}

#[test]
fn sigsuspend_takes_a_signal_that_came_while_it_was_blocked() {
    let mut g = guest();
    set_handler(&mut g, 14, 0x40_1000, 0);
    g.put(SCRATCH, &(1u64 << 13).to_le_bytes());
    assert_eq!(g.sys(14, &[0, SCRATCH, 0, 8]), 0, "block SIGALRM");
    // The alarm fired (one-shot) before the program got to rt_sigsuspend.
    g.p.itimer_real = Some(RealTimer { next: Instant::now(), interval: Duration::ZERO });
    assert_eq!(expire_itimer(&mut g.p, Instant::now()), Ok(()));
    assert!(g.p.itimer_real.is_none() && !g.p.signal_ready());
    g.put(SCRATCH, &0u64.to_le_bytes());
    let b = blocked(g.call(130, &[SCRATCH, 8]));
    assert_eq!(b.what, WaitFor::Signal, "it waits (and the scheduler ends the wait at once)");
    assert!(g.p.signal_ready() && !g.p.alone());
    assert_eq!(g.p.threads.current.saved_mask, Some(1 << 13), "the old mask comes back after the handler");
    // With nothing pending and nothing to send one, it would wait for ever.
    let mut g = guest();
    g.put(SCRATCH, &0u64.to_le_bytes());
    assert!(matches!(g.call(130, &[SCRATCH, 8]), Outcome::Stop(Stop::Unsupported(_))));
}

#[test]
fn a_signal_wakes_a_blocked_thread_with_eintr_or_restarts_it() {
    let mut g = guest();
    second_thread(&mut g);
    set_handler(&mut g, 10, 0x40_1000, 0x1000_0000); // SA_RESTART
    set_handler(&mut g, 12, 0x40_1000, 0);
    g.put(WORD, &7u32.to_le_bytes());
    let b = blocked(g.call(FUTEX, &[WORD, FUTEX_WAIT, 7, 0]));
    block_and_switch(&mut g, b);
    assert_eq!(g.sys(234, &[100, 100, 10]), 0, "SIGUSR1 to the waiting main thread");
    let main = &g.p.threads.parked().next().unwrap().thread;
    assert_eq!(main.state, crate::threads::RunState::Runnable);
    assert_eq!(main.restart, Some(FUTEX), "SA_RESTART: the wait starts again after the handler");
    assert_eq!(main.resume_rax as i64, err(EINTR));
    // Now a pause in the second thread, woken by a process signal without SA_RESTART.
    let b = blocked(g.call(34, &[]));
    let next = g.p.threads.next_runnable().unwrap();
    g.p.threads.block_current(crate::threads::Blocked { wait: b, nr: 34 });
    let saved = crate::threads::Saved {
        cpu: crate::threads::CpuContext { regs: Default::default(), xsave: Box::default() },
        fs_base: 0,
        sigmask: 0,
        sigaltstack: [0; 24],
    };
    g.p.threads.switch_to(next, saved);
    // The main thread takes SIGUSR1 itself (it runs), so the paused one stays asleep...
    assert_eq!(g.sys(62, &[0, 10]), 0);
    let t101 = &g.p.threads.parked().next().unwrap().thread;
    assert!(t101.blocked().is_some());
    // ...unless the main thread blocks it.
    g.put(SCRATCH, &(1u64 << 11).to_le_bytes());
    assert_eq!(g.sys(14, &[0, SCRATCH, 0, 8]), 0);
    assert_eq!(g.sys(62, &[0, 12]), 0);
    let t101 = &g.p.threads.parked().next().unwrap().thread;
    assert_eq!(
        (t101.state.clone(), t101.resume_rax as i64, t101.restart),
        (crate::threads::RunState::Runnable, err(EINTR), None)
    );
}

// ---------------------------------------------------------------- mmap of a file

#[test]
fn a_file_mapping_whose_end_does_not_fit_an_off_t_is_eoverflow() {
    let mut g = guest();
    g.put(DATA, b"/data/hello.txt\0");
    let fd = g.sys(2, &[DATA, 0]);
    assert!(fd >= 3);
    let mmap = |g: &mut Guest, len: u64, off: u64| {
        g.sys(9, &[0, len, libc::PROT_READ as u64, libc::MAP_PRIVATE as u64, fd as u64, off])
    };
    for (off, len) in [(1u64 << 63, 4096), (!4095, 4096), ((1 << 63) - 4096, 4096 + 1), ((1 << 63) - 8192, 8192)] {
        assert_eq!(mmap(&mut g, len, off), err(EOVERFLOW), "offset {off:#x} length {len:#x}");
    }
    assert_eq!(mmap(&mut g, 4096, 4095), err(EINVAL), "unaligned offset");
    assert_eq!(mmap(&mut g, u64::MAX, 0), err(ENOMEM));
    assert_eq!(mmap(&mut g, (1 << 62) + 4096, 1 << 62), err(ENOMEM), "no room comes first, as in Linux");
    // Offsets within an off_t map (past the end of the file: zeros, as the monitor copies).
    let at = mmap(&mut g, 4096, 0);
    assert!(at > 0);
    assert_eq!(g.mem.user_slice(UserAddr::new(at as u64), 6).unwrap(), b"hello\n");
    let at = mmap(&mut g, 4096, 1 << 62);
    assert!(at > 0, "{at}");
    assert!(g.mem.user_slice(UserAddr::new(at as u64), 4096).unwrap().iter().all(|&b| b == 0));
    let at = mmap(&mut g, 4096, (1 << 63) - 8192);
    assert!(at > 0, "the last page an off_t reaches: {at}");
}

// ---------------------------------------------------------------- bookkeeping

#[test]
fn unknown_syscall_numbers_are_counted_up_to_a_cap_and_the_rest_only_tallied() {
    let mut g = guest();
    let numbers: Vec<u64> = (1000..3000).chain([u64::MAX, 1 << 63, 0xdead_beef]).collect();
    for &nr in &numbers {
        assert_eq!(g.sys(nr, &[]), err(ENOSYS));
    }
    assert_eq!(g.sys(1000, &[]), err(ENOSYS), "a number already counted");
    let stats = &g.p.stats;
    assert_eq!(stats.unknown.len(), MAX_UNKNOWN_SYSCALL_NUMBERS);
    assert_eq!(stats.unknown.get(&1000), Some(&2));
    assert_eq!(stats.unknown_dropped, (numbers.len() - MAX_UNKNOWN_SYSCALL_NUMBERS) as u64);
    assert_eq!(stats.syscalls, numbers.len() as u64 + 1);
}

#[test]
fn the_tracer_sees_a_bounded_number_of_syscalls_and_the_rest_are_counted() {
    let mut g = guest();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = seen.clone();
    g.p.trace = Some(Box::new(move |_| {
        sink.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }));
    for _ in 0..MAX_TRACED_SYSCALLS + 10 {
        g.sys(39, &[]); // getpid
    }
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), MAX_TRACED_SYSCALLS);
    assert_eq!(g.p.stats.trace_dropped, 10);
}

// ---------------------------------------------------------------- refusals and required pointers

#[test]
fn sockets_other_than_a_socketpair_are_refused_and_socket_calls_need_a_socket() {
    let mut g = guest();
    for family in [libc::AF_INET, libc::AF_INET6, libc::AF_NETLINK] {
        assert_eq!(g.sys(41, &[family as u64, libc::SOCK_STREAM as u64, 0]), err(EPERM), "socket({family})");
    }
    // An AF_UNIX socket is made, and stays unconnected: no name to bind or connect to.
    let s = g.sys(41, &[libc::AF_UNIX as u64, (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64, 0]) as u64;
    assert!((s as i64) >= 0, "socket(AF_UNIX)");
    g.path(SCRATCH + 0x900, "/tmp/sock");
    assert_eq!(g.sys(49, &[s, SCRATCH + 0x900, 12]), err(EPERM), "bind");
    assert_eq!(g.sys(42, &[s, SCRATCH + 0x900, 12]), err(EPERM), "connect");
    assert_eq!(g.sys(1, &[s, BUF, 1]), err(ENOTCONN), "write");
    assert_eq!(g.sys(0, &[s, BUF, 1]), err(ENOTCONN), "read");
    assert_eq!(g.sys(3, &[s]), 0);
    assert_eq!(g.sys(41, &[libc::AF_UNIX as u64, libc::SOCK_RAW as u64, 0]), err(EINVAL));
    assert_eq!(g.sys(53, &[libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, BUF]), err(EPERM));
    assert_eq!(g.sys(53, &[99, libc::SOCK_STREAM as u64, 0, BUF]), err(EAFNOSUPPORT));
    // connect .. getsockopt on fd 0 (not a socket) and on a closed fd.
    for nr in (42..=55).filter(|&n| n != 41 && n != 53).chain([288]) {
        assert_eq!(g.sys(nr, &[0, BUF, 16, 0, 0, 0]), err(ENOTSOCK), "syscall {nr} on fd 0");
        assert_eq!(g.sys(nr, &[77, BUF, 16, 0, 0, 0]), err(EBADF), "syscall {nr} on a closed fd");
    }
    assert!(g.p.stats.unknown.is_empty());
}

#[test]
fn getrlimit_needs_its_result_pointer_where_prlimit64_does_not() {
    let mut g = guest();
    const RLIMIT_NOFILE: u64 = 7;
    assert_eq!(g.sys(97, &[RLIMIT_NOFILE, 0]), err(EFAULT), "getrlimit(NOFILE, NULL)");
    assert_eq!(g.sys(97, &[99, 0]), err(EINVAL), "a bad resource first, as Linux");
    assert_eq!(g.sys(97, &[RLIMIT_NOFILE, BUF]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF)).unwrap(), crate::files::MAX_FDS as u64);
    assert_eq!(g.sys(302, &[0, RLIMIT_NOFILE, 0, 0]), 0, "prlimit64 with nothing to read or set");
}

// ---------------------------------------------------------------- blocking

#[test]
fn a_sleep_blocks_through_the_one_wait_mechanism_and_never_past_the_deadline() {
    let mut g = guest();
    g.put_timespec(TIMEOUT, Duration::from_millis(30));
    let before = Instant::now();
    match g.call(35, &[TIMEOUT, 0]) {
        Outcome::Block(wait) => {
            assert_eq!(wait.what, WaitFor::Time);
            assert_eq!(wait.timeout_result, 0);
            let until = wait.until.expect("a sleep has a timeout");
            assert!(until >= before + Duration::from_millis(30) && until <= Instant::now() + Duration::from_millis(30));
        }
        other => panic!("nanosleep did not block: {other:?}"),
    }
    g.put_timespec(TIMEOUT, Duration::from_secs(3600));
    g.p.deadline = Some(Instant::now() + Duration::from_millis(50));
    let (r, took) = timed(|| g.sys(230, &[libc::CLOCK_MONOTONIC as u64, 0, TIMEOUT, 0]));
    assert_eq!(r, 0);
    assert!(took < Duration::from_secs(5), "slept {took:?} past the deadline");
    assert_eq!(g.sys(35, &[0x1000, 0]), err(EFAULT), "a bad pointer fails at once");
}

// ---------------------------------------------------------------- the request file

#[test]
fn request_file_holds_this_calls_head_read_only() {
    const PATH: u64 = SCRATCH;
    let mut g = guest();
    g.put(PATH, b"/run/snapcall/request\0");
    // No request yet (a snapshot is being taken): no file.
    assert_eq!(g.sys(257, &[AT_FDCWD, PATH, 0]), err(ENOENT));
    g.p.request_head = Some(crate::request::RequestHead {
        method: "PUT".into(),
        path: "/x".into(),
        query: "a=1".into(),
        headers: vec![("x-k".into(), "v".into())],
    });
    assert_eq!(g.sys(257, &[AT_FDCWD, PATH, libc::O_DIRECTORY as u64]), err(ENOTDIR));
    assert_eq!(g.sys(257, &[AT_FDCWD, PATH, libc::O_RDWR as u64]), err(EROFS));
    let fd = g.sys(257, &[AT_FDCWD, PATH, libc::O_RDONLY as u64]);
    assert!(fd >= 3, "{fd}");
    let expected = b"method PUT\npath /x\nquery a=1\nheader x-k: v\n";
    assert_eq!(g.sys(nr::READ, &[fd as u64, BUF, 4096]), expected.len() as i64);
    assert_eq!(g.mem.user_slice(UserAddr::new(BUF), expected.len() as u64).unwrap(), expected);
    assert_eq!(g.sys(nr::READ, &[fd as u64, BUF, 4096]), 0, "end of file");
    assert_eq!(g.sys(nr::PREAD64, &[fd as u64, BUF, 6, 7]), 6);
    assert_eq!(g.mem.user_slice(UserAddr::new(BUF), 6).unwrap(), b"PUT\npa");
    assert_eq!(g.sys(nr::WRITE, &[fd as u64, BUF, 1]), err(EBADF));
    assert_eq!(g.sys(3, &[fd as u64]), 0, "close");
}

// ---------------------------------------------------------------- pipes, sockets, eventfd, poll

const PAIR: u64 = SCRATCH + 0x300;

impl Guest {
    /// Makes a pipe (pipe2 with `flags`): (read fd, write fd).
    fn pipe(&mut self, flags: u64) -> (u64, u64) {
        assert_eq!(self.sys(293, &[PAIR, flags]), 0);
        self.pair()
    }
    fn pair(&self) -> (u64, u64) {
        let b = self.mem.user_slice(UserAddr::new(PAIR), 8).unwrap();
        (
            u64::from(u32::from_le_bytes(b[..4].try_into().unwrap())),
            u64::from(u32::from_le_bytes(b[4..].try_into().unwrap())),
        )
    }
    fn write_bytes(&mut self, fd: u64, bytes: &[u8]) -> i64 {
        self.put(DATA, bytes);
        self.sys(1, &[fd, DATA, bytes.len() as u64])
    }
    fn read_bytes(&mut self, fd: u64, max: u64) -> Result<Vec<u8>, i64> {
        let n = self.sys(0, &[fd, BUF, max]);
        if n < 0 {
            return Err(n);
        }
        Ok(self.mem.user_slice(UserAddr::new(BUF), n as u64).unwrap().to_vec())
    }
    /// The wait a syscall blocked on (panics if it did not block).
    fn blocks(&mut self, nr: u64, args: &[u64]) -> Wait {
        match self.call(nr, args) {
            Outcome::Block(w) => w,
            other => panic!("syscall {nr} did not block: {other:?}"),
        }
    }
}

#[test]
fn a_pipe_carries_bytes_and_reads_end_of_file_once_its_writer_closes() {
    let mut g = guest();
    let (r, w) = g.pipe(0);
    assert_eq!((r, w), (3, 4));
    assert_eq!(g.write_bytes(w, b"hello"), 5);
    assert_eq!(g.read_bytes(r, 100), Ok(b"hello".to_vec()));
    assert_eq!(g.write_bytes(r, b"x"), err(EBADF), "the read end");
    assert_eq!(g.read_bytes(w, 1), Err(err(EBADF)), "the write end");
    assert_eq!(g.sys(8, &[r, 0, 0]), err(ESPIPE), "lseek");
    assert_eq!(g.sys(17, &[r, BUF, 1, 0]), err(ESPIPE), "pread");
    assert_eq!(g.read_bytes(r, 0), Ok(vec![]), "a read of nothing returns at once");
    let dup = g.sys(32, &[w]) as u64;
    assert_eq!(g.sys(3, &[w]), 0);
    assert!(matches!(g.call(0, &[r, BUF, 10]), Outcome::Block(_)), "a dup of the writer is still open");
    assert_eq!(g.sys(3, &[dup]), 0);
    assert_eq!(g.read_bytes(r, 10), Ok(vec![]), "end of file");
    assert_eq!(g.sys(5, &[r, BUF]), 0);
    let mode = u32::from_le_bytes(g.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap());
    assert_eq!(mode & libc::S_IFMT, libc::S_IFIFO);
}

#[test]
fn a_read_of_an_empty_pipe_waits_and_with_one_thread_ends_the_call_clearly() {
    let mut g = guest();
    let (r, w) = g.pipe(0);
    let wait = g.blocks(0, &[r, BUF, 10]);
    assert_eq!(wait.what, WaitFor::Readable { fd: r });
    assert_eq!(wait.until, None);
    match finish_alone(&g.p, wait) {
        Err(Stop::Unsupported(why)) => {
            assert!(why.contains("read waits for data on fd 3") && why.contains("nothing can ever wake it"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // Non-blocking, from pipe2 or set later: EAGAIN.
    let (r2, _w2) = g.pipe(libc::O_NONBLOCK as u64);
    assert_eq!(g.read_bytes(r2, 10), Err(err(EAGAIN)));
    assert_eq!(g.sys(72, &[r2, libc::F_GETFL as u64]), (libc::O_RDONLY | libc::O_NONBLOCK) as i64);
    assert_eq!(g.sys(72, &[r, libc::F_SETFL as u64, libc::O_NONBLOCK as u64]), 0);
    assert_eq!(g.read_bytes(r, 10), Err(err(EAGAIN)));
    g.put(SCRATCH, &0i32.to_le_bytes());
    assert_eq!(g.sys(16, &[r, 0x5421, SCRATCH]), 0, "FIONBIO off");
    assert!(matches!(g.call(0, &[r, BUF, 10]), Outcome::Block(_)));
    g.write_bytes(w, b"abc");
    assert_eq!(g.sys(16, &[r, 0x541B, SCRATCH]), 0, "FIONREAD");
    assert_eq!(g.mem.read_user_array::<4>(UserAddr::new(SCRATCH)).unwrap(), 3u32.to_le_bytes());
    assert_eq!(g.sys(16, &[0, 0x5401, SCRATCH]), err(ENOTTY), "TCGETS on the request");
}

#[test]
fn a_full_pipe_blocks_its_writer_and_a_closed_reader_raises_sigpipe() {
    let mut g = guest();
    let (r, w) = g.pipe(0);
    let before = g.p.budget.used();
    let chunk = vec![1u8; 16 * 1024];
    g.put(DATA, &chunk);
    for _ in 0..4 {
        assert_eq!(g.sys(1, &[w, DATA, chunk.len() as u64]), chunk.len() as i64);
    }
    assert_eq!(g.blocks(1, &[w, DATA, 1]).what, WaitFor::Writable { fd: w, written: 0 });
    assert_eq!(g.p.budget.used() - before, 64 * 1024, "queued bytes count against the memory budget");
    assert_eq!(g.sys(3, &[r]), 0);
    assert_eq!(g.p.budget.used(), before, "nobody can read them: released");
    assert_eq!(g.call(1, &[w, DATA, 1]), Outcome::Stop(Stop::Signal(13)), "SIGPIPE's default kills");
    g.p.sigactions[12].handler = SIG_IGN;
    assert_eq!(g.sys(1, &[w, DATA, 1]), err(EPIPE));
    assert_eq!(g.sys(1, &[w, 0x1000, 1]), err(EFAULT), "a bad buffer");
}

#[test]
fn pipes_cannot_hold_more_than_the_memory_budget_or_take_more_fds_than_the_limit() {
    let mut g = guest();
    g.p.budget = crate::budget::MemoryBudget::new(100_000);
    let chunk = vec![1u8; 60_000];
    g.put(DATA, &chunk);
    let (_r1, w1) = g.pipe(libc::O_NONBLOCK as u64);
    let (_r2, w2) = g.pipe(libc::O_NONBLOCK as u64);
    assert_eq!(g.sys(1, &[w1, DATA, 60_000]), 60_000);
    assert_eq!(g.sys(1, &[w2, DATA, 60_000]), 40_000, "the budget's rest");
    assert_eq!(g.sys(1, &[w2, DATA, 1]), err(EAGAIN));
    // fd exhaustion: pipe2 fails whole, leaving no half pair behind.
    while g.p.fds.open_count() < crate::files::MAX_FDS - 1 {
        g.sys(32, &[0]);
    }
    assert_eq!(g.sys(293, &[PAIR, 0]), err(EMFILE));
    assert_eq!(g.p.fds.open_count(), crate::files::MAX_FDS - 1);
    assert_eq!(g.sys(293, &[0x1000, 0]), err(EFAULT));
    assert_eq!(g.sys(293, &[PAIR, 0o40000]), err(EINVAL), "O_DIRECT");
}

#[test]
fn poll_reports_readiness_waits_out_its_timeout_and_flags_bad_fds() {
    let mut g = guest();
    let (r, w) = g.pipe(0);
    let pollfd = |fd: i32, events: u16| {
        let mut b = fd.to_le_bytes().to_vec();
        b.extend_from_slice(&events.to_le_bytes());
        b.extend_from_slice(&0xffffu16.to_le_bytes());
        b
    };
    let revents =
        |g: &Guest, i: u64| u16::from_le_bytes(g.mem.read_user_array::<2>(UserAddr::new(BUF + 8 * i + 6)).unwrap());
    let mut set = pollfd(r as i32, 1);
    set.extend(pollfd(w as i32, 4));
    set.extend(pollfd(77, 1));
    set.extend(pollfd(-1, 1));
    g.put(BUF, &set);
    assert_eq!(g.sys(7, &[BUF, 4, 0]), 2, "the writer and the bad fd");
    assert_eq!((revents(&g, 0), revents(&g, 1), revents(&g, 2), revents(&g, 3)), (0, 4, 0x20, 0));
    // Only the reader, nothing written: a timeout waits it out, -1 waits for ever.
    g.put(BUF, &pollfd(r as i32, 1));
    let wait = g.blocks(7, &[BUF, 1, 30]);
    assert!(wait.until.is_some() && wait.what == WaitFor::Ready);
    let (n, took) = timed(|| g.sys(7, &[BUF, 1, 30]));
    assert_eq!(n, 0);
    assert!(took >= Duration::from_millis(30));
    assert_eq!(g.blocks(7, &[BUF, 1, u64::MAX]).until, None);
    g.write_bytes(w, b"x");
    assert_eq!(g.sys(7, &[BUF, 1, u64::MAX]), 1);
    assert_eq!(revents(&g, 0), 1);
    g.sys(3, &[w]);
    g.read_bytes(r, 1).unwrap();
    g.put(BUF, &pollfd(r as i32, 1)); // the read landed on it
    assert_eq!(g.sys(7, &[BUF, 1, 0]), 1);
    assert_eq!(revents(&g, 0), 0x10, "POLLHUP though not asked for");
    // ppoll: a timespec, a signal mask of 8 bytes.
    g.put_timespec(TIMEOUT, Duration::ZERO);
    assert_eq!(g.sys(271, &[BUF, 1, TIMEOUT, SCRATCH, 8]), 1);
    assert_eq!(g.sys(271, &[BUF, 1, TIMEOUT, SCRATCH, 4]), err(EINVAL));
    assert_eq!(g.sys(7, &[BUF, 1 << 20, 0]), err(EINVAL), "more fds than RLIMIT_NOFILE");
    assert_eq!(g.sys(7, &[0x1000, 1, 0]), err(EFAULT));
}

#[test]
fn select_sets_only_the_ready_bits_and_refuses_closed_fds() {
    let mut g = guest();
    let (r, w) = g.pipe(0);
    let set = |fds: &[u64]| fds.iter().fold(0u64, |acc, fd| acc | 1 << fd).to_le_bytes();
    let (rs, ws) = (SCRATCH + 0x400, SCRATCH + 0x500);
    g.put(rs, &set(&[r]));
    g.put(ws, &set(&[w]));
    g.put(TIMEOUT, &[0u8; 16]);
    assert_eq!(g.sys(23, &[w + 1, rs, ws, 0, TIMEOUT]), 1);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(rs)).unwrap(), 0, "nothing to read");
    assert_eq!(g.mem.read_user_u64(UserAddr::new(ws)).unwrap(), 1 << w);
    g.write_bytes(w, b"x");
    g.put(rs, &set(&[r]));
    assert_eq!(g.sys(270, &[w + 1, rs, 0, 0, 0, 0]), 1, "pselect6, no timeout, ready now");
    assert_eq!(g.mem.read_user_u64(UserAddr::new(rs)).unwrap(), 1 << r);
    g.put(rs, &set(&[r, 40]));
    assert_eq!(g.sys(23, &[41, rs, 0, 0, TIMEOUT]), err(EBADF));
    g.put(TIMEOUT + 8, &1_000_000i64.to_le_bytes());
    assert_eq!(g.sys(23, &[1, 0, 0, 0, TIMEOUT]), err(EINVAL), "tv_usec out of range");
    assert_eq!(g.sys(23, &[u64::MAX, 0, 0, 0, 0]), err(EINVAL), "nfds < 0");
}

#[test]
fn epoll_reports_ready_watches_and_forgets_closed_files() {
    let mut g = guest();
    let ep = g.sys(291, &[libc::EPOLL_CLOEXEC as u64]) as u64;
    let (r, w) = g.pipe(0);
    let event = |g: &mut Guest, events: u32, data: u64| {
        let mut b = events.to_le_bytes().to_vec();
        b.extend_from_slice(&data.to_le_bytes());
        g.put(SCRATCH, &b);
    };
    event(&mut g, 1, 0xfeed);
    assert_eq!(g.sys(233, &[ep, 1, r, SCRATCH]), 0);
    assert_eq!(g.sys(233, &[ep, 1, r, SCRATCH]), err(EEXIST));
    assert_eq!(g.sys(233, &[ep, 1, ep, SCRATCH]), err(EINVAL), "epoll on itself");
    let ep2 = g.sys(213, &[1]) as u64;
    assert_eq!(g.sys(233, &[ep, 1, ep2, SCRATCH]), err(EINVAL), "no nesting");
    assert_eq!(g.sys(233, &[ep, 1, 0, SCRATCH]), err(EPERM), "the request is a regular file");
    assert_eq!(g.sys(233, &[r, 1, w, SCRATCH]), err(EINVAL), "not an epoll fd");
    assert_eq!(g.sys(233, &[ep, 3, w, SCRATCH]), err(ENOENT), "MOD of an unwatched fd");
    assert_eq!(g.sys(233, &[ep, 1, r, 0x1000]), err(EFAULT));
    assert_eq!(g.sys(213, &[0]), err(EINVAL), "epoll_create(0)");

    assert_eq!(g.sys(232, &[ep, BUF, 8, 0]), 0, "nothing yet");
    assert_eq!(g.blocks(232, &[ep, BUF, 8, u64::MAX]).until, None);
    g.write_bytes(w, b"x");
    assert_eq!(g.sys(232, &[ep, BUF, 8, u64::MAX]), 1);
    assert_eq!(
        g.mem.user_slice(UserAddr::new(BUF), 12).unwrap(),
        [&1u32.to_le_bytes()[..], &0xfeedu64.to_le_bytes()].concat()
    );
    assert_eq!(g.sys(7, &[0, 0, 0]), 0);
    // The epoll fd itself polls readable.
    let mut pfd = (ep as i32).to_le_bytes().to_vec();
    pfd.extend_from_slice(&[1, 0, 0, 0]);
    g.put(SCRATCH + 0x40, &pfd);
    assert_eq!(g.sys(7, &[SCRATCH + 0x40, 1, 0]), 1);
    // EPOLLONESHOT: one report, then nothing until MOD.
    event(&mut g, 1 | crate::ipc::EPOLLONESHOT, 7);
    assert_eq!(g.sys(233, &[ep, 3, r, SCRATCH]), 0);
    assert_eq!(g.sys(232, &[ep, BUF, 8, 0]), 1);
    assert_eq!(g.sys(232, &[ep, BUF, 8, 0]), 0);
    assert_eq!(g.sys(233, &[ep, 3, r, SCRATCH]), 0);
    assert_eq!(g.sys(232, &[ep, BUF, 8, 0]), 1);
    // Closing the file ends its watch, even when the fd number comes back as another file.
    let used = g.p.budget.used();
    g.sys(3, &[r]);
    let (r2, _w2) = g.pipe(0);
    assert_eq!(r2, r);
    g.sys(3, &[w]);
    assert_eq!(g.sys(232, &[ep, BUF, 8, 0]), 0, "the new file was never added");
    assert!(g.p.budget.used() < used, "the watch's bookkeeping is released");
    assert_eq!(g.sys(232, &[ep, BUF, 0, 0]), err(EINVAL), "maxevents 0");
    assert_eq!(g.sys(232, &[ep, 0x1000, 1, 0]), err(EFAULT));
    assert_eq!(g.sys(232, &[r, BUF, 1, 0]), err(EINVAL), "not an epoll fd");
    assert_eq!(g.sys(281, &[ep, BUF, 1, 0, SCRATCH, 16]), err(EINVAL), "epoll_pwait's mask size");
    assert_eq!(g.sys(0, &[ep, BUF, 8]), err(EINVAL), "read of an epoll fd");
}

#[test]
fn an_eventfd_counts_blocks_at_zero_and_needs_eight_bytes() {
    let mut g = guest();
    let e = g.sys(290, &[2, 0]) as u64;
    assert_eq!(g.sys(0, &[e, BUF, 4]), err(EINVAL));
    assert_eq!(g.sys(0, &[e, BUF, 8]), 8);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF)).unwrap(), 2);
    assert_eq!(g.blocks(0, &[e, BUF, 8]).what, WaitFor::Readable { fd: e });
    g.put(DATA, &u64::MAX.to_le_bytes());
    assert_eq!(g.sys(1, &[e, DATA, 8]), err(EINVAL));
    g.put(DATA, &(u64::MAX - 1).to_le_bytes());
    assert_eq!(g.sys(1, &[e, DATA, 8]), 8);
    g.put(DATA, &1u64.to_le_bytes());
    assert_eq!(g.blocks(1, &[e, DATA, 8]).what, WaitFor::Writable { fd: e, written: 0 }, "the counter is full");
    let sem = g.sys(290, &[3, 1 | libc::O_NONBLOCK as u64]) as u64;
    for _ in 0..3 {
        assert_eq!(g.sys(0, &[sem, BUF, 8]), 8);
        assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF)).unwrap(), 1);
    }
    assert_eq!(g.sys(0, &[sem, BUF, 8]), err(EAGAIN));
    assert_eq!(g.sys(290, &[0, 8]), err(EINVAL), "unknown flag");
}

#[test]
fn a_socketpair_talks_both_ways_as_asyncio_uses_it() {
    let mut g = guest();
    let ty = (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64;
    assert_eq!(g.sys(53, &[1, ty, 0, PAIR]), 0);
    let (a, b) = g.pair();
    assert_eq!(g.sys(72, &[a, libc::F_GETFD as u64]), 1, "SOCK_CLOEXEC");
    g.put(DATA, b"ping");
    assert_eq!(g.sys(44, &[a, DATA, 4, 0, 0, 0]), 4, "send");
    assert_eq!(g.sys(45, &[b, BUF, 100, 2, 0, 0]), 4, "recv MSG_PEEK");
    assert_eq!(g.sys(45, &[b, BUF, 100, 0, 0, 0]), 4);
    assert_eq!(g.sys(45, &[b, BUF, 100, 0x40, 0, 0]), err(EAGAIN), "MSG_DONTWAIT");
    assert!(matches!(g.call(45, &[b, BUF, 100, 0, 0, 0]), Outcome::Block(_)));
    // sendmsg / recvmsg with two iovecs each.
    let iov = SCRATCH + 0x600;
    let iovecs = [DATA, 2, DATA + 2, 2].iter().flat_map(|v: &u64| v.to_le_bytes()).collect::<Vec<u8>>();
    g.put(iov, &iovecs);
    let msg = SCRATCH + 0x700;
    let mut hdr = vec![0u8; 56];
    hdr[16..24].copy_from_slice(&iov.to_le_bytes());
    hdr[24..32].copy_from_slice(&2u64.to_le_bytes());
    g.put(msg, &hdr);
    assert_eq!(g.sys(46, &[b, msg, 0]), 4);
    let riov = [BUF, 1, BUF + 100, 10].iter().flat_map(|v: &u64| v.to_le_bytes()).collect::<Vec<u8>>();
    g.put(iov, &riov);
    assert_eq!(g.sys(47, &[a, msg, 0]), 4);
    assert_eq!(g.mem.user_slice(UserAddr::new(BUF), 1).unwrap(), b"p");
    assert_eq!(g.mem.user_slice(UserAddr::new(BUF + 100), 3).unwrap(), b"ing");
    hdr[40..48].copy_from_slice(&16u64.to_le_bytes());
    g.put(msg, &hdr);
    assert_eq!(g.sys(46, &[b, msg, 0]), err(EOPNOTSUPP), "SCM_RIGHTS is not offered");
    // Names and options.
    g.put(SCRATCH, &16u32.to_le_bytes());
    assert_eq!(g.sys(51, &[a, BUF, SCRATCH]), 0);
    assert_eq!(g.mem.read_user_array::<4>(UserAddr::new(SCRATCH)).unwrap(), 2u32.to_le_bytes());
    assert_eq!(g.mem.read_user_array::<2>(UserAddr::new(BUF)).unwrap(), 1u16.to_le_bytes(), "AF_UNIX");
    g.put(SCRATCH, &4u32.to_le_bytes());
    assert_eq!(g.sys(55, &[a, 1, libc::SO_TYPE as u64, BUF, SCRATCH]), 0);
    assert_eq!(g.mem.read_user_array::<4>(UserAddr::new(BUF)).unwrap(), 1i32.to_le_bytes(), "SOCK_STREAM");
    assert_eq!(g.sys(55, &[a, 1, 9999, BUF, SCRATCH]), err(ENOPROTOOPT));
    assert_eq!(g.sys(55, &[a, 6, 1, BUF, SCRATCH]), err(EOPNOTSUPP), "SOL_TCP");
    assert_eq!(g.sys(54, &[a, 1, libc::SO_SNDBUF as u64, BUF, 4]), 0);
    assert_eq!(g.sys(42, &[a, BUF, 16]), err(Errno(libc::EISCONN)));
    // shutdown(SHUT_WR): the peer reads end of file; writing is EPIPE (no SIGPIPE with MSG_NOSIGNAL).
    assert_eq!(g.sys(48, &[a, 1]), 0);
    assert_eq!(g.sys(45, &[b, BUF, 100, 0, 0, 0]), 0);
    assert_eq!(g.sys(44, &[a, DATA, 1, 0x4000, 0, 0]), err(EPIPE));
    assert_eq!(g.sys(48, &[a, 7]), err(EINVAL));
    // Datagrams keep their boundaries.
    assert_eq!(g.sys(53, &[1, libc::SOCK_DGRAM as u64, 0, PAIR]), 0);
    let (c, d) = g.pair();
    g.put(DATA, b"onetwo");
    g.sys(1, &[c, DATA, 3]);
    g.sys(1, &[c, DATA + 3, 3]);
    assert_eq!(g.read_bytes(d, 100), Ok(b"one".to_vec()));
    assert_eq!(g.sys(45, &[d, BUF, 1, 0x20, 0, 0]), 3, "MSG_TRUNC gives the datagram's length");
    assert_eq!(g.sys(5, &[d, BUF]), 0);
    let mode = u32::from_le_bytes(g.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap());
    assert_eq!(mode & libc::S_IFMT, libc::S_IFSOCK);
}

// ---------------------------------------------------------------- the writable filesystem

impl Guest {
    /// Puts a NUL-terminated path at `addr`.
    fn path(&mut self, addr: u64, path: &str) -> u64 {
        let mut b = path.as_bytes().to_vec();
        b.push(0);
        self.put(addr, &b);
        addr
    }
    fn open(&mut self, path: &str, flags: i32, mode: u64) -> i64 {
        let at = self.path(SCRATCH + 0x800, path);
        self.sys(257, &[AT_FDCWD, at, flags as u64, mode])
    }
    /// The names getdents64 lists for `path`, without "." and "..".
    fn list(&mut self, path: &str) -> Vec<String> {
        let fd = self.open(path, libc::O_RDONLY | libc::O_DIRECTORY, 0);
        assert!(fd >= 0, "open {path}: {fd}");
        let mut names = Vec::new();
        loop {
            let n = self.sys(217, &[fd as u64, BUF, 4096]);
            assert!(n >= 0, "getdents64 {path}: {n}");
            if n == 0 {
                break;
            }
            let b = self.mem.user_slice(UserAddr::new(BUF), n as u64).unwrap().to_vec();
            let mut at = 0;
            while at < b.len() {
                let reclen = u16::from_le_bytes([b[at + 16], b[at + 17]]) as usize;
                let name: Vec<u8> = b[at + 19..at + reclen].iter().take_while(|&&c| c != 0).copied().collect();
                let name = String::from_utf8(name).unwrap();
                if name != "." && name != ".." {
                    names.push(name);
                }
                at += reclen;
            }
        }
        self.sys(3, &[fd as u64]);
        names.sort();
        names
    }
    fn stat_mode_size(&mut self, path: &str) -> Result<(u32, i64), i64> {
        let at = self.path(SCRATCH + 0x800, path);
        let r = self.sys(4, &[at, BUF]);
        if r < 0 {
            return Err(r);
        }
        let mode = u32::from_le_bytes(self.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap());
        let size = self.mem.read_user_u64(UserAddr::new(BUF + 48)).unwrap() as i64;
        Ok((mode, size))
    }
}

const CREAT: i32 = libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC;

#[test]
fn tmp_is_empty_and_writable_and_files_written_there_read_back() {
    let mut g = guest();
    assert_eq!(g.list("/tmp"), Vec::<String>::new());
    let fd = g.open("/tmp/a.txt", CREAT, 0o644) as u64;
    assert_eq!(g.write_bytes(fd, b"hello, "), 7);
    assert_eq!(g.write_bytes(fd, b"world"), 5);
    assert_eq!(g.read_bytes(fd, 10), Err(err(EBADF)), "opened write-only");
    g.put(DATA, b"HE");
    assert_eq!(g.sys(18, &[fd, DATA, 2, 0]), 2, "pwrite");
    assert_eq!(g.sys(77, &[fd, 5]), 0, "ftruncate");
    assert_eq!(g.sys(74, &[fd]), 0, "fsync");
    g.sys(3, &[fd]);
    assert_eq!(g.stat_mode_size("/tmp/a.txt"), Ok((libc::S_IFREG | 0o644, 5)));
    let fd = g.open("/tmp/a.txt", libc::O_RDONLY, 0) as u64;
    assert_eq!(g.read_bytes(fd, 100), Ok(b"HEllo".to_vec()));
    assert_eq!(g.sys(8, &[fd, 1, libc::SEEK_SET as u64]), 1);
    assert_eq!(g.read_bytes(fd, 2), Ok(b"El".to_vec()));
    assert_eq!(g.sys(17, &[fd, BUF, 10, 3]), 2, "pread");
    assert_eq!(g.write_bytes(fd, b"x"), err(EBADF), "opened read-only");
    // O_APPEND, O_EXCL, umask.
    let fd = g.open("/tmp/a.txt", libc::O_WRONLY | libc::O_APPEND, 0) as u64;
    g.write_bytes(fd, b"!");
    assert_eq!(g.stat_mode_size("/tmp/a.txt").unwrap().1, 6);
    assert_eq!(g.open("/tmp/a.txt", libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o600), err(EEXIST));
    assert_eq!(g.open("/tmp/nodir/x", CREAT, 0o600), err(ENOENT));
    assert_eq!(g.open("/tmp/a.txt/x", CREAT, 0o600), err(ENOTDIR));
    assert_eq!(g.open("/tmp", libc::O_WRONLY, 0), err(EISDIR));
    g.p.umask = 0o077;
    g.open("/tmp/b", CREAT, 0o666);
    assert_eq!(g.stat_mode_size("/tmp/b").unwrap().0, libc::S_IFREG | 0o600);
    assert_eq!(g.list("/tmp"), ["a.txt", "b"]);
    assert_eq!(g.stat_mode_size("/tmp").unwrap().0 & 0o7777, 0o1777);
}

#[test]
fn rootfs_files_are_copied_up_on_write_and_the_host_never_changes() {
    let mut g = guest();
    let host = g._root.0.join("data/hello.txt");
    let fd = g.open("/data/hello.txt", libc::O_RDWR, 0) as u64;
    assert_eq!(g.read_bytes(fd, 3), Ok(b"hel".to_vec()));
    assert_eq!(g.write_bytes(fd, b"P"), 1);
    g.sys(3, &[fd]);
    let fd = g.open("/data/hello.txt", libc::O_RDONLY, 0) as u64;
    assert_eq!(g.read_bytes(fd, 100), Ok(b"helPo\n".to_vec()));
    assert_eq!(std::fs::read(&host).unwrap(), b"hello\n", "the rootfs on the host is untouched");
    // The cwd is writable: relative creates land in the overlay next to rootfs files.
    g.path(SCRATCH + 0x900, "/data");
    assert_eq!(g.sys(80, &[SCRATCH + 0x900]), 0);
    assert!(g.open("new.txt", CREAT, 0o644) >= 0);
    assert_eq!(g.list("/data"), ["hello.txt", "new.txt"]);
    assert_eq!(g.list("."), ["hello.txt", "new.txt"]);
    assert!(!g._root.0.join("data/new.txt").exists());
    // Removing a rootfs file hides it; the host keeps it.
    let at = g.path(SCRATCH + 0x900, "/data/hello.txt");
    assert_eq!(g.sys(87, &[at]), 0);
    assert_eq!(g.stat_mode_size("/data/hello.txt"), Err(err(ENOENT)));
    assert_eq!(g.list("/data"), ["new.txt"]);
    assert!(host.exists());
    assert_eq!(g.sys(87, &[at]), err(ENOENT));
    let at = g.path(SCRATCH + 0x900, "/data");
    assert_eq!(g.sys(84, &[at]), err(ENOTEMPTY));
    assert_eq!(g.sys(21, &[at, libc::W_OK as u64]), 0, "access(W_OK): writable");
}

#[test]
fn directories_renames_links_and_attributes_work_as_tempfile_and_shutil_use_them() {
    let mut g = guest();
    let (a, b) = (SCRATCH + 0x900, SCRATCH + 0xa00);
    g.path(a, "/tmp/d");
    assert_eq!(g.sys(83, &[a, 0o700]), 0, "mkdir");
    assert_eq!(g.sys(83, &[a, 0o700]), err(EEXIST));
    let fd = g.open("/tmp/d/f", CREAT, 0o600) as u64;
    g.write_bytes(fd, b"content");
    g.path(b, "/tmp/e");
    assert_eq!(g.sys(82, &[a, b]), 0, "rename a directory of the overlay");
    assert_eq!(g.write_bytes(fd, b"+"), 1, "an open file survives its rename");
    assert_eq!(g.stat_mode_size("/tmp/e/f").unwrap().1, 8);
    assert_eq!(g.stat_mode_size("/tmp/d"), Err(err(ENOENT)));
    // symlink, readlink, lstat; link.
    g.path(a, "e/f");
    g.path(b, "/tmp/link");
    assert_eq!(g.sys(88, &[a, b]), 0);
    assert_eq!(g.sys(89, &[b, BUF, 100]), 3);
    assert_eq!(g.mem.user_slice(UserAddr::new(BUF), 3).unwrap(), b"e/f");
    assert_eq!(g.stat_mode_size("/tmp/link").unwrap(), (libc::S_IFREG | 0o600, 8), "stat follows");
    assert_eq!(g.sys(6, &[b, BUF]), 0);
    assert_eq!(
        u32::from_le_bytes(g.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap()) & libc::S_IFMT,
        libc::S_IFLNK
    );
    g.path(a, "/tmp/e/f");
    g.path(b, "/tmp/hard");
    assert_eq!(g.sys(86, &[a, b]), 0, "link");
    assert_eq!(g.sys(4, &[b, BUF]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF + 16)).unwrap(), 2, "st_nlink");
    // chmod, utimensat, chown to self only.
    assert_eq!(g.sys(90, &[a, 0o640]), 0);
    assert_eq!(g.stat_mode_size("/tmp/hard").unwrap().0, libc::S_IFREG | 0o640, "one file, two names");
    let times = [100i64, 5, 200, 7].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    g.put(TIMEOUT, &times);
    assert_eq!(g.sys(280, &[AT_FDCWD, a, TIMEOUT, 0]), 0);
    assert_eq!(g.sys(4, &[a, BUF]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF + 88)).unwrap(), 200, "st_mtime");
    assert_eq!(g.sys(92, &[a, GUEST_UID, GUEST_UID]), 0);
    assert_eq!(g.sys(92, &[a, 0, 0]), err(EPERM), "chown to root");
    // rmdir needs an empty directory; unlinkat(AT_REMOVEDIR).
    g.path(b, "/tmp/e");
    assert_eq!(g.sys(84, &[b]), err(ENOTEMPTY));
    assert_eq!(g.sys(87, &[a]), 0);
    assert_eq!(g.sys(84, &[b]), 0);
    assert_eq!(g.list("/tmp"), ["hard", "link"]);
    assert_eq!(g.stat_mode_size("/tmp/link"), Err(err(ENOENT)), "a dangling symlink");
    // renameat2(RENAME_NOREPLACE), rename of a rootfs directory.
    g.path(a, "/tmp/hard");
    g.path(b, "/tmp/link");
    assert_eq!(g.sys(316, &[AT_FDCWD, a, AT_FDCWD, b, 1]), err(EEXIST));
    g.path(a, "/data");
    g.path(b, "/tmp/data");
    assert_eq!(g.sys(82, &[a, b]), err(EXDEV), "as overlayfs says for a lower directory");
    // statfs of the in-memory filesystem.
    assert_eq!(g.sys(137, &[b, BUF]), err(ENOENT));
    assert_eq!(g.sys(137, &[a, BUF]), 0);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF)).unwrap(), 0x0102_1994, "TMPFS_MAGIC");
    assert_eq!(g.sys(138, &[0, BUF]), 0);
    assert_eq!(g.sys(138, &[77, BUF]), err(EBADF));
}

#[test]
fn the_owner_bits_decide_access_as_for_an_unprivileged_owner_not_root() {
    let mut g = guest();
    let (a, b) = (SCRATCH + 0x900, SCRATCH + 0xa00);
    let fd = g.open("/tmp/ro", CREAT, 0o600) as u64;
    g.sys(3, &[fd]);
    g.path(a, "/tmp/ro");
    assert_eq!(g.sys(90, &[a, 0o400]), 0, "chmod 0400");
    assert_eq!(g.open("/tmp/ro", libc::O_WRONLY, 0), err(EACCES), "CPython's can_dac_override probe");
    assert_eq!(g.open("/tmp/ro", libc::O_RDONLY | libc::O_TRUNC, 0), err(EACCES));
    assert!(g.open("/tmp/ro", libc::O_RDONLY, 0) >= 0);
    assert_eq!(g.sys(21, &[a, libc::W_OK as u64]), err(EACCES), "access(W_OK)");
    assert_eq!(g.sys(21, &[a, libc::R_OK as u64]), 0);
    assert_eq!(g.sys(21, &[a, libc::X_OK as u64]), err(EACCES), "no x bit");
    assert_eq!(g.sys(21, &[a, 8]), err(EINVAL));
    assert_eq!(g.sys(76, &[a, 0]), err(EACCES), "truncate");
    assert_eq!(g.sys(90, &[a, 0o000]), 0);
    assert_eq!(g.open("/tmp/ro", libc::O_RDONLY, 0), err(EACCES));
    assert!(g.open("/tmp/ro", libc::O_PATH, 0) >= 0, "O_PATH needs no permission");
    // A directory without write permission: no entries made or removed in it.
    g.path(b, "/tmp/d");
    assert_eq!(g.sys(83, &[b, 0o700]), 0);
    let fd = g.open("/tmp/d/f", CREAT, 0o600) as u64;
    g.sys(3, &[fd]);
    assert_eq!(g.sys(90, &[b, 0o500]), 0, "chmod 0500");
    assert_eq!(g.open("/tmp/d/g", CREAT, 0o600), err(EACCES));
    assert!(g.open("/tmp/d/f", libc::O_WRONLY, 0) >= 0, "an existing file stays writable");
    g.path(a, "/tmp/d/sub");
    assert_eq!(g.sys(83, &[a, 0o700]), err(EACCES), "mkdir");
    g.path(a, "/tmp/d/f");
    assert_eq!(g.sys(83, &[a, 0o700]), err(EEXIST), "EEXIST before EACCES, as Linux");
    assert_eq!(g.sys(87, &[a]), err(EACCES), "unlink");
    g.path(a, "/tmp/d/none");
    assert_eq!(g.sys(87, &[a]), err(ENOENT), "ENOENT before EACCES");
    g.path(a, "/tmp/d/f");
    g.path(SCRATCH + 0xb00, "/tmp/moved");
    assert_eq!(g.sys(82, &[a, SCRATCH + 0xb00]), err(EACCES), "rename out of it");
    assert_eq!(g.sys(21, &[b, libc::W_OK as u64]), err(EACCES));
    assert_eq!(g.sys(90, &[b, 0o700]), 0);
    assert_eq!(g.sys(87, &[a]), 0, "writable again");
}

#[test]
fn priority_clocks_and_memfd_answer_as_for_an_unprivileged_process() {
    let mut g = guest();
    // getpriority gives 20 - nice; the nice value only goes up (EACCES down), 19 at most.
    assert_eq!(g.sys(140, &[0, 0]), 20);
    assert_eq!(g.sys(141, &[0, GUEST_PID, 1]), 0);
    assert_eq!(g.sys(140, &[0, GUEST_PID]), 19);
    assert_eq!(g.sys(141, &[0, 0, 0]), err(EACCES), "no CAP_SYS_NICE");
    assert_eq!(g.sys(141, &[0, 0, 99]), 0);
    assert_eq!(g.sys(140, &[0, 0]), 1, "clamped to nice 19");
    assert_eq!(g.sys(140, &[0, 4242]), err(ESRCH), "no other process");
    assert_eq!(g.sys(140, &[7, 0]), err(EINVAL));
    // The time is not the program's to set.
    g.put_timespec(TIMEOUT, Duration::from_secs(1));
    assert_eq!(g.sys(227, &[0, TIMEOUT]), err(EPERM), "clock_settime(CLOCK_REALTIME)");
    assert_eq!(g.sys(227, &[1, TIMEOUT]), err(EINVAL), "CLOCK_MONOTONIC cannot be set");
    assert_eq!(g.sys(164, &[TIMEOUT, 0]), err(EPERM), "settimeofday");
    // CPU-time clocks of the program and its threads (pthread_getcpuclockid's ids).
    let thread_clock = |tid: i32| (((!tid) << 3) | 4 | 2) as i64 as u64;
    let process_clock = |pid: i32| (((!pid) << 3) | 2) as i64 as u64;
    let tid = g.p.threads.current.tid;
    assert_eq!(g.sys(228, &[thread_clock(tid), BUF]), 0);
    assert_eq!(g.sys(228, &[process_clock(GUEST_PID as i32), BUF]), 0);
    assert_eq!(g.sys(228, &[process_clock(0), BUF]), 0, "pid 0: the caller");
    assert_eq!(g.sys(228, &[thread_clock(tid + 77), BUF]), err(EINVAL), "no such thread");
    assert_eq!(g.sys(228, &[process_clock(4242), BUF]), err(EINVAL), "no such process");
    assert_eq!(g.sys(229, &[thread_clock(tid), BUF]), 0, "clock_getres");
    // memfd_create: a read-write file of the writable layer.
    g.path(SCRATCH + 0x900, "Hi");
    let fd = g.sys(319, &[SCRATCH + 0x900, 1]) as u64;
    assert!((fd as i64) >= 0);
    assert_eq!(g.write_bytes(fd, b"memfd_create"), 12);
    assert_eq!(g.sys(8, &[fd, 0, libc::SEEK_SET as u64]), 0);
    assert_eq!(g.read_bytes(fd, 100), Ok(b"memfd_create".to_vec()));
    assert_eq!(g.sys(72, &[fd, libc::F_GETFD as u64, 0]), libc::FD_CLOEXEC as i64, "MFD_CLOEXEC");
    assert_eq!(g.sys(319, &[SCRATCH + 0x900, 4]), err(EINVAL), "MFD_HUGETLB is not offered");
}

#[test]
fn o_nonblock_set_on_a_rootfs_file_is_reported_back_by_f_getfl() {
    let mut g = guest();
    let fd = g.open("/data/hello.txt", libc::O_RDONLY, 0) as u64;
    let (getfl, setfl) = (libc::F_GETFL as u64, libc::F_SETFL as u64);
    assert_eq!(g.sys(72, &[fd, getfl, 0]) & libc::O_NONBLOCK as i64, 0);
    assert_eq!(g.sys(72, &[fd, setfl, libc::O_NONBLOCK as u64]), 0);
    assert_eq!(g.sys(72, &[fd, getfl, 0]), (libc::O_RDONLY | libc::O_NONBLOCK) as i64, "os.get_blocking is False");
    assert_eq!(g.sys(72, &[fd, setfl, 0]), 0);
    assert_eq!(g.sys(72, &[fd, getfl, 0]), libc::O_RDONLY as i64);
    assert_eq!(g.read_bytes(fd, 5), Ok(b"hello".to_vec()), "reads as before");
}

#[test]
fn writes_to_tmp_stop_at_the_memory_cap_with_enospc() {
    let mut g = guest();
    g.p.budget = crate::budget::MemoryBudget::new(1 << 20);
    g.p.overlay = crate::overlay::Overlay::new(&g.p.budget);
    let fd = g.open("/tmp/big", CREAT, 0o600) as u64;
    let chunk = vec![7u8; 64 * 1024];
    g.put(DATA, &chunk);
    let mut written = 0i64;
    loop {
        let n = g.sys(1, &[fd, DATA, chunk.len() as u64]);
        if n < 0 {
            assert_eq!(n, err(ENOSPC));
            break;
        }
        written += n;
    }
    assert!(written > 512 * 1024 && written <= 1 << 20, "{written}");
    assert!(g.p.budget.used() <= 1 << 20);
    g.put(DATA, b"x");
    assert_eq!(g.sys(18, &[fd, DATA, 1, 1 << 40]), err(ENOSPC), "no sparse files past the cap");
    assert_eq!(g.sys(18, &[fd, DATA, 1, u64::MAX]), err(EINVAL), "a negative offset");
    assert_eq!(g.sys(77, &[fd, 1 << 40]), err(ENOSPC));
    // Deleting gives the memory back.
    g.sys(3, &[fd]);
    let at = g.path(SCRATCH + 0x900, "/tmp/big");
    assert_eq!(g.sys(87, &[at]), 0);
    assert!(g.p.budget.used() < 4096, "{}", g.p.budget.used());
    assert!(g.open("/tmp/again", CREAT, 0o600) >= 0);
}

#[test]
fn devices_and_proc_self_are_there() {
    let mut g = guest();
    let null = g.open("/dev/null", libc::O_RDWR, 0) as u64;
    assert_eq!(g.write_bytes(null, b"gone"), 4);
    assert_eq!(g.read_bytes(null, 10), Ok(vec![]));
    let zero = g.open("/dev/zero", libc::O_RDONLY, 0) as u64;
    g.put(BUF, &[1u8; 16]);
    assert_eq!(g.read_bytes(zero, 16), Ok(vec![0u8; 16]));
    let full = g.open("/dev/full", libc::O_WRONLY, 0) as u64;
    assert_eq!(g.write_bytes(full, b"x"), err(ENOSPC));
    let random = g.open("/dev/urandom", libc::O_RDONLY, 0) as u64;
    let a = g.read_bytes(random, 32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, g.read_bytes(random, 32).unwrap());
    assert_eq!(g.sys(5, &[null, BUF]), 0);
    let mode = u32::from_le_bytes(g.mem.read_user_array::<4>(UserAddr::new(BUF + 24)).unwrap());
    assert_eq!(mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(g.mem.read_user_u64(UserAddr::new(BUF + 40)).unwrap(), libc::makedev(1, 3), "st_rdev");
    let status = g.open("/proc/self/status", libc::O_RDONLY, 0) as u64;
    let text = String::from_utf8(g.read_bytes(status, 4096).unwrap()).unwrap();
    assert!(
        text.starts_with("Name:\tx\n") && text.contains("\nPid:\t100\n") && text.contains("\nThreads:\t1\n"),
        "{text}"
    );
    let stat = g.open("/proc/self/stat", libc::O_RDONLY, 0) as u64;
    let text = String::from_utf8(g.read_bytes(stat, 4096).unwrap()).unwrap();
    assert!(text.starts_with("100 (x) R 1 "), "{text}");
    assert_eq!(text.split(' ').count(), 52);
    let maps = g.open("/proc/self/maps", libc::O_RDONLY, 0) as u64;
    assert!(String::from_utf8(g.read_bytes(maps, 4096).unwrap()).unwrap().contains("[stack]"));
    assert_eq!(g.open("/proc/self/status", libc::O_WRONLY, 0), err(EACCES));
    let at = g.path(SCRATCH + 0x900, "/dev/null");
    assert_eq!(g.sys(87, &[at]), err(EPERM), "the monitor's files stay");
}

#[test]
fn msync_checks_its_arguments_and_that_the_range_is_mapped() {
    let mut g = guest();
    let at = g.sys(9, &[0, 8192, 3, (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64, u64::MAX, 0]) as u64;
    assert_eq!(g.sys(26, &[at, 8192, 4]), 0, "MS_SYNC");
    assert_eq!(g.sys(26, &[at + 1, 4096, 4]), err(EINVAL), "unaligned");
    assert_eq!(g.sys(26, &[at, 4096, 5]), err(EINVAL), "MS_SYNC | MS_ASYNC");
    assert_eq!(g.sys(26, &[at, 4096, 8]), err(EINVAL), "unknown flag");
    assert_eq!(g.sys(26, &[0x1000_0000_0000, 4096, 1]), err(ENOMEM), "unmapped");
}
