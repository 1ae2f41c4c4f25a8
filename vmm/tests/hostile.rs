//! Hostile guests against the real KVM: each test names one class of attack and asserts its
//! exact outcome (the errno the program sees, or the exact `CallError`). The guest is
//! `guest-functions/c/tests/hostile.c`, which runs the scenario its request names.

mod common;
use common::*;
use std::time::{Duration, Instant};

use vmm::{CallError, Function, StartMode, DOORBELL_ADDR, MAX_UNKNOWN_SYSCALL_NUMBERS};

fn hostile() -> Function {
    load("hostile", StartMode::Cold)
}

fn stdout_of(f: &Function, scenario: &str) -> String {
    let out = output(f, scenario.as_bytes());
    assert_eq!(out.exit_code, 0, "{scenario}: stderr {:?}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_pointer_taking_syscall_refuses_every_bad_pointer_with_efault() {
    let f = hostile();
    let calls = [
        "read(file, p, 8)",
        "pread64(0, p, 8, 0)",
        "write(1, p, 8)",
        "readv(file, p, 1)",
        "writev(1, p, 1)",
        "readv(file, {p, 8}, 1)",
        "writev(1, {p, 8}, 1)",
        "open(p)",
        "openat(AT_FDCWD, p)",
        "stat(p, buf)",
        "stat(self, p)",
        "lstat(self, p)",
        "fstat(1, p)",
        "newfstatat(AT_FDCWD, p, buf, 0)",
        "newfstatat(AT_FDCWD, self, p, 0)",
        "access(p)",
        "faccessat2(AT_FDCWD, p)",
        "readlink(p, buf, 64)",
        "readlink(/proc/self/exe, p, 64)",
        "getcwd(p, 64)",
        "chdir(p)",
        "uname(p)",
        "gettimeofday(p, NULL)",
        "time(p)",
        "sysinfo(p)",
        "clock_gettime(REALTIME, p)",
        "clock_getres(REALTIME, p)",
        "nanosleep(p, NULL)",
        "clock_nanosleep(MONOTONIC, 0, p, NULL)",
        "rt_sigaction(SIGUSR1, p, NULL)",
        "rt_sigaction(SIGUSR1, NULL, p)",
        "rt_sigprocmask(SIG_BLOCK, p, NULL)",
        "rt_sigprocmask(SIG_BLOCK, NULL, p)",
        "sigaltstack(NULL, p)",
        "arch_prctl(ARCH_GET_FS, p)",
        "futex(p, FUTEX_WAIT, 7, NULL)",
        "futex(&word, FUTEX_WAIT, 8, p)",
        "sched_getaffinity(0, 128, p)",
        "getdents64(dir, p, 4096)",
        "getrlimit(RLIMIT_NOFILE, p)",
        "prlimit64(0, RLIMIT_NOFILE, NULL, p)",
        "getrandom(p, 8, 0)",
        "pipe2(p, 0)",
        "poll(p, 1, 0)",
        "select(1, p, NULL, NULL, &zero)",
        "epoll_ctl(ep, ADD, pipe, p)",
        "epoll_wait(ep, p, 1, 0)",
        "socketpair(AF_UNIX, STREAM, 0, p)",
        "sendmsg(sock, p, 0)",
        "recvmsg(sock, p, MSG_DONTWAIT)",
    ];
    // NULL (page 0), a monitor page, the first byte past memory, a range that runs off its
    // end (a path there has no NUL before it), and the top of the address space.
    let pointers = ["NULL", "0x1000", "end", "end-1", "u64::MAX"];
    // Where Linux gives something else than EFAULT, so do we:
    let expected_result = |call: &str, pointer: &str| match (call, pointer) {
        // NULL means "none" for these.
        (
            "gettimeofday(p, NULL)"
            | "time(p)"
            | "clock_getres(REALTIME, p)"
            | "rt_sigaction(SIGUSR1, p, NULL)"
            | "rt_sigaction(SIGUSR1, NULL, p)"
            | "rt_sigprocmask(SIG_BLOCK, p, NULL)"
            | "rt_sigprocmask(SIG_BLOCK, NULL, p)"
            | "sigaltstack(NULL, p)"
            | "prlimit64(0, RLIMIT_NOFILE, NULL, p)"
            | "select(1, p, NULL, NULL, &zero)",
            "NULL",
        ) => "ok",
        // A futex word must be aligned, which Linux checks before it reads the word.
        ("futex(p, FUTEX_WAIT, 7, NULL)", "end-1" | "u64::MAX") => "EINVAL",
        // No timeout, and the word differs: EAGAIN.
        ("futex(&word, FUTEX_WAIT, 8, p)", "NULL") => "EAGAIN",
        _ => "EFAULT",
    };
    let mut expected = format!("memory end: {:#x}\n", f.memory_size());
    for call in calls {
        for pointer in pointers {
            expected += &format!("{call}({pointer}): {}\n", expected_result(call, pointer));
        }
    }
    expected += "cwd still: /\ndone\n";
    assert_eq!(stdout_of(&f, "pointers"), expected);
}

#[test]
fn process_creation_exec_the_network_and_ptrace_are_refused() {
    let out = output(&load("forbidden", StartMode::Cold), b"");
    let calls = [
        ("fork", "EPERM"),
        ("vfork", "EPERM"),
        ("clone(SIGCHLD)", "EPERM"),
        // A thread is allowed, but only one that shares the fd table and cwd too.
        ("clone(CLONE_VM|CLONE_THREAD)", "EINVAL"),
        ("clone3", "EPERM"),
        ("execve(/bin/sh)", "EPERM"),
        ("execveat(/bin/sh)", "EPERM"),
        ("socket(AF_INET)", "EPERM"),
        ("socket(AF_INET6)", "EPERM"),
        ("bind(AF_UNIX socket)", "EPERM"),
        ("connect(AF_UNIX socket)", "EPERM"),
        ("socketpair(AF_INET)", "EPERM"),
        // fd 0 is the request, not a socket.
        ("connect(0)", "ENOTSOCK"),
        ("accept4(0)", "ENOTSOCK"),
        ("sendmmsg(0)", "EPERM"),
        ("recvmmsg(0)", "EPERM"),
        ("ptrace(PTRACE_TRACEME)", "EPERM"),
        ("ptrace(PTRACE_ATTACH, 1)", "EPERM"),
    ];
    let expected: String = calls.iter().map(|(c, e)| format!("{c}: -1 {e}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert_eq!(out.exit_code, 0);
    // The call's stats say what was refused and why.
    let finished = call(&load("forbidden", StartMode::Cold), b"");
    let refusals = finished.stats().refusals();
    for line in [
        "fork refused once (EPERM): child processes are not supported: the function is one process",
        "vfork refused once (EPERM): child processes are not supported: the function is one process",
        "execve refused once (EPERM): running another program is not supported: the function is this one program",
        "ptrace refused 2 times (EPERM): tracing is not supported",
    ] {
        assert!(refusals.iter().any(|r| r == line), "{line:?} not in {refusals:?}");
    }
    assert!(
        refusals.iter().any(|r| r.starts_with("clone refused 2 times") || r.starts_with("clone refused once")),
        "{refusals:?}"
    );
}

#[test]
fn privileged_instructions_end_the_call_with_a_general_protection_fault_at_cpl3() {
    let f = hostile();
    for insn in ["hlt", "cli", "sti", "wrmsr", "rdmsr", "in", "out", "mov-cr3", "lgdt"] {
        let e = error(&f, insn.as_bytes());
        let CallError::GuestFault { vector, rip, error_code, cr2, cpl, .. } = e else {
            panic!("{insn}: expected a guest fault, got {e}")
        };
        assert_eq!((vector, error_code, cr2, cpl), (13, 0, 0, 3), "{insn}");
        assert!((0x40_0000..0x60_0000).contains(&rip), "{insn}: rip {rip:#x} is in the program");
        assert_eq!(
            e.to_string(),
            format!("guest fault: #GP general protection (vector 13) at rip {rip:#x}, error code 0x0, cr2 0x0, cpl 3")
        );
    }
}

#[test]
fn executing_the_doorbell_page_is_reported_as_an_instruction_fetch_there() {
    let e = error(&hostile(), b"exec-doorbell");
    assert!(
        matches!(
            e,
            CallError::GuestFault { vector: 14, rip: DOORBELL_ADDR, error_code: 0x15, cr2: DOORBELL_ADDR, cpl: 3, .. }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "guest fault: #PF instruction fetch from the doorbell page (a monitor page with no memory behind it) \
             (vector 14) at rip {DOORBELL_ADDR:#x}, error code 0x15, cr2 {DOORBELL_ADDR:#x}, cpl 3"
        )
    );
}

#[test]
fn an_fd_bomb_stops_at_emfile_and_closing_makes_room_again() {
    let max = vmm::MAX_FDS;
    let expected = format!(
        "opened {} (fds 3..{}), then EMFILE\nafter closing 103: open gives 103\nand then EMFILE\n\
         after closing all: open gives 3, reads 4 \"ELF\"\ndone\n",
        max - 3,
        max - 1
    );
    assert_eq!(stdout_of(&hostile(), "fd-bomb"), expected);
}

#[test]
fn an_output_flood_ends_at_the_cap_by_any_path() {
    let f = hostile();
    assert_eq!(f.config().limits.max_output_bytes, 1 << 20, "the bundle's cap");
    // Small writes go through the output ring (stdout and stderr), big vectors through writev.
    for scenario in ["flood-ring", "flood-stderr", "flood-writev"] {
        match error(&f, scenario.as_bytes()) {
            CallError::OutputLimit { limit } => assert_eq!(limit, 1 << 20, "{scenario}"),
            other => panic!("{scenario}: expected the output cap, got {other}"),
        }
    }
}

#[test]
fn a_futex_wait_sleeps_out_its_relative_or_absolute_timeout() {
    let started = Instant::now();
    let text = stdout_of(&hostile(), "futex-timeout");
    assert_eq!(
        text,
        "FUTEX_WAIT 300ms: ETIMEDOUT, slept >= 300ms: 1\n\
         FUTEX_WAIT_BITSET MONOTONIC +200ms: ETIMEDOUT, woke after the time: 1\n\
         FUTEX_WAIT_BITSET REALTIME +200ms: ETIMEDOUT, woke after the time: 1\n\
         FUTEX_WAIT on a changed word: EAGAIN\ndone\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(700), "the host slept too: {:?}", started.elapsed());
}

#[test]
fn a_futex_wait_nothing_can_wake_ends_the_call_at_once() {
    let f = hostile();
    let finished = call(&f, b"futex-forever");
    match finished.outcome().as_ref().err() {
        Some(CallError::Unsupported(why)) => {
            assert!(
                why.starts_with("futex waits for a wake of the futex at 0x")
                    && why.ends_with("with no timeout: the program has one thread, so nothing can ever wake it"),
                "{why}"
            )
        }
        other => panic!("expected the call to end as unsupported, got {other:?}"),
    }
    let ran = finished.timings().run;
    assert!(ran < f.config().limits.timeout / 2, "ran {ran:?}: it must not wait for the deadline");
}

#[test]
fn a_futex_timeout_past_the_deadline_ends_the_call_at_the_deadline() {
    let f = load("hostile-short-deadline", StartMode::Cold);
    let timeout = f.config().limits.timeout;
    let finished = call(&f, b"futex-past-deadline");
    match finished.outcome() {
        Err(CallError::Deadline(d)) => assert_eq!(*d, timeout),
        other => panic!("expected the deadline, got {other:?}"),
    }
    let ran = finished.timings().run;
    assert!(ran >= timeout && ran < timeout * 2, "ran {ran:?} for a {timeout:?} deadline");
}

#[test]
fn thousands_of_distinct_unknown_syscalls_keep_bounded_bookkeeping() {
    let f = hostile();
    let finished = call(&f, b"unknown-syscalls");
    let stats = finished.stats().clone();
    let out = finished.into_parts().0.unwrap_or_else(|e| panic!("{e}"));
    let total = 29_000 + 2_000;
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{total} unknown syscalls, {total} ENOSYS\ndone\n"));
    assert_eq!(stats.unknown_syscalls.len(), MAX_UNKNOWN_SYSCALL_NUMBERS);
    assert_eq!(stats.unknown_syscalls.values().sum::<u64>() + stats.unknown_syscalls_dropped, total);
    assert_eq!(stats.unknown_syscalls.get(&1000), Some(&1), "the first numbers are the ones kept");
}

#[test]
fn python_lock_acquire_with_a_timeout_waits_that_long() {
    let dir = common::python_bundle(
        "hostile-lock",
        "import threading, time\n\
         def handler(event, context):\n    \
             lock = threading.Lock()\n    \
             lock.acquire()\n    \
             t = time.monotonic()\n    \
             got = lock.acquire(timeout=0.5)\n    \
             return {'got': got, 'waited_ms': int((time.monotonic() - t) * 1000)}\n",
    );
    let (v, text) = cold_json_call(&dir);
    assert_eq!(v["got"], false, "{text}");
    let waited = v["waited_ms"].as_u64().unwrap_or(0);
    assert!((500..2000).contains(&waited), "waited {waited} ms: {text}");
}

#[test]
fn running_down_the_whole_stack_is_reported_as_a_stack_overflow_cold_and_restored() {
    let cold = load("deep-recursion", StartMode::Cold);
    let dir = std::env::temp_dir().join(format!("snapcall-hostile-{}-deep-recursion", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(bundle("deep-recursion"))
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let snap_fn = Function::load(&dir, StartMode::Cold).unwrap();
    snap_fn.take_snapshot(&dir.join(vmm::snapshot::SNAPSHOT_FILE)).unwrap();
    let restored = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    for f in [&cold, &restored] {
        match error(f, b"go") {
            CallError::StackOverflow { addr, guard, .. } => {
                assert_eq!(guard, f.memory_size() - (8 << 20), "the guard is the stack reserve's lowest page");
                assert!((guard..guard + 4096).contains(&addr), "{addr:#x}");
            }
            other => panic!("expected a stack overflow, got {other}"),
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}
