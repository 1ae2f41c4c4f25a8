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
        self.mem.write_user(addr, bytes).unwrap();
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

#[test]
fn a_futex_wait_with_a_relative_timeout_sleeps_it_out_then_times_out() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    g.put_timespec(TIMEOUT, Duration::from_millis(60));
    let (r, took) = timed(|| g.sys(FUTEX, &[WORD, FUTEX_WAIT | FUTEX_PRIVATE, 7, TIMEOUT]));
    assert_eq!(r, err(ETIMEDOUT));
    assert!(took >= Duration::from_millis(60), "returned after {took:?}");
}

#[test]
fn a_futex_wait_bitset_sleeps_until_its_absolute_monotonic_or_realtime_timeout() {
    let mut g = guest();
    g.put(WORD, &7u32.to_le_bytes());
    for (flag, clock) in [(0, libc::CLOCK_MONOTONIC), (FUTEX_CLOCK_REALTIME, libc::CLOCK_REALTIME)] {
        g.put_timespec(TIMEOUT, clock_now(clock) + Duration::from_millis(60));
        let (r, took) = timed(|| g.sys(FUTEX, &[WORD, FUTEX_WAIT_BITSET | flag, 7, TIMEOUT, 0, u64::from(u32::MAX)]));
        assert_eq!(r, err(ETIMEDOUT), "clock {clock}");
        assert!(took >= Duration::from_millis(50), "clock {clock}: returned after {took:?}");
        // A time already past times out at once.
        g.put_timespec(TIMEOUT, clock_now(clock) - Duration::from_secs(1));
        let (r, took) = timed(|| g.sys(FUTEX, &[WORD, FUTEX_WAIT_BITSET | flag, 7, TIMEOUT, 0, 1]));
        assert_eq!(r, err(ETIMEDOUT));
        assert!(took < Duration::from_millis(50), "clock {clock}: a past time slept {took:?}");
    }
}

#[test]
fn a_futex_wait_never_sleeps_past_the_calls_deadline() {
    let mut g = guest();
    g.p.deadline = Some(Instant::now() + Duration::from_millis(80));
    g.put(WORD, &7u32.to_le_bytes());
    g.put_timespec(TIMEOUT, Duration::from_secs(3600));
    let (r, took) = timed(|| g.sys(FUTEX, &[WORD, FUTEX_WAIT, 7, TIMEOUT]));
    // The run loop sees the deadline passed and ends the call with CallError::Deadline.
    assert_eq!(r, err(ETIMEDOUT));
    assert!(took >= Duration::from_millis(70) && took < Duration::from_secs(2), "slept {took:?}");
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
    let mode = u32::from_le_bytes(g.mem.read_user_array::<4>(BUF + 24).unwrap());
    assert_eq!(mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(g.sys(262, &[AT_FDCWD, EMPTY, BUF, AT_EMPTY_PATH]), 0, "fstatat(AT_FDCWD, \"\") is the cwd");
    assert_eq!(g.sys(439, &[dir, EMPTY, 4, AT_EMPTY_PATH]), 0, "faccessat2(fd, \"\", R_OK)");
    assert_eq!(g.sys(439, &[dir, EMPTY, 2, AT_EMPTY_PATH]), err(EROFS), "faccessat2(fd, \"\", W_OK)");
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
    assert_eq!(g.mem.user_slice(at as u64, 6).unwrap(), b"hello\n");
    let at = mmap(&mut g, 4096, 1 << 62);
    assert!(at > 0, "{at}");
    assert!(g.mem.user_slice(at as u64, 4096).unwrap().iter().all(|&b| b == 0));
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
fn every_socket_call_is_refused_like_the_rest_of_networking() {
    let mut g = guest();
    // socket .. setsockopt, accept4, recvmmsg, sendmmsg
    for nr in (41..=55).chain([288, 299, 307]) {
        assert_eq!(g.sys(nr, &[0, 0, 0]), err(EPERM), "syscall {nr}");
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
    assert_eq!(g.mem.read_user_u64(BUF).unwrap(), crate::files::MAX_FDS as u64);
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
    assert_eq!(g.mem.user_slice(BUF, expected.len() as u64).unwrap(), expected);
    assert_eq!(g.sys(nr::READ, &[fd as u64, BUF, 4096]), 0, "end of file");
    assert_eq!(g.sys(nr::PREAD64, &[fd as u64, BUF, 6, 7]), 6);
    assert_eq!(g.mem.user_slice(BUF, 6).unwrap(), b"PUT\npa");
    assert_eq!(g.sys(nr::WRITE, &[fd as u64, BUF, 1]), err(EBADF));
    assert_eq!(g.sys(3, &[fd as u64]), 0, "close");
}
