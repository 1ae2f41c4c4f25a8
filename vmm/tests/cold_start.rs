//! Issue 2 against the real KVM: unmodified static programs run cold in fresh VMs.

mod common;
use common::*;
use vmm::{CallError, StartMode};

#[test]
fn echo_round_trips_byte_exact_for_glibc_musl_and_static_pie() {
    for name in ["echo-c", "echo-c-musl", "echo-c-pie"] {
        let f = load(name, StartMode::Cold);
        for size in [0usize, 1, 4097, 8 << 20] {
            let request = bytes(size, size as u64 + 7);
            let out = output(&f, &request);
            assert_eq!(out.exit_code, 0, "{name} {size}");
            assert!(out.stdout == request, "{name}: {size}-byte echo differs (got {} bytes)", out.stdout.len());
        }
    }
}

#[test]
fn hello_reports_the_request_length() {
    let f = load("hello-c", StartMode::Cold);
    assert_eq!(output(&f, b"hello world!").stdout, b"Hello from C! You sent 12 bytes.\n");
    assert_eq!(output(&f, b"").stdout, b"Hello from C! You sent 0 bytes.\n");
}

#[test]
fn exit_status_and_stderr_come_back() {
    let out = output(&load("exit-code", StartMode::Cold), b"x");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stderr, b"bye");
}

fn fault(name: &str) -> (u8, u64, u64) {
    match error(&load(name, StartMode::Cold), b"") {
        CallError::GuestFault { vector, rip, cr2, .. } => (vector, rip, cr2),
        other => panic!("{name}: expected a guest fault, got {other}"),
    }
}

#[test]
fn crashing_guests_end_with_a_fault_naming_vector_and_rip() {
    let (v, rip, cr2) = fault("null-deref");
    assert_eq!((v, cr2), (14, 0));
    assert!(rip >= 0x40_0000, "rip {rip:#x} is in the program");
    let (v, rip, _) = fault("ud2");
    assert_eq!(v, 6);
    assert!(rip >= 0x40_0000);
    let (v, rip, _) = fault("div-zero");
    assert_eq!(v, 0);
    assert!(rip >= 0x40_0000);
    let msg = error(&load("null-deref", StartMode::Cold), b"").to_string();
    assert!(msg.contains("#PF") && msg.contains("rip 0x4"), "{msg}");
}

/// A failed call keeps the last `STDERR_TAIL_BYTES` of what the program wrote to stderr:
/// often its own explanation of the failure.
#[test]
fn a_failed_call_keeps_the_tail_of_its_stderr() {
    for mode in [StartMode::Cold, StartMode::Snapshot] {
        let f = load("stderr-then-fail", mode);
        for (request, want_deadline) in [(&b"fault"[..], false), (b"spin", true)] {
            let finished = call(&f, request);
            match finished.outcome() {
                Err(CallError::Deadline(_)) if want_deadline => {}
                Err(CallError::GuestFault { vector: 14, .. }) if !want_deadline => {}
                other => panic!("{mode:?} {request:?}: unexpected outcome {other:?}"),
            }
            let tail = String::from_utf8(finished.stderr_tail().to_vec()).unwrap();
            let last = format!("last words before {}\n", std::str::from_utf8(request).unwrap());
            assert_eq!(tail.len(), vmm::STDERR_TAIL_BYTES, "{mode:?}: bounded, and full: 6.4 KB were written");
            assert!(tail.ends_with(&last), "{mode:?}: {tail:?}");
            assert!(tail.contains("stderr line 399\n") && !tail.contains("stderr line 000"), "{mode:?}");
        }
    }
    // A call that exits has its whole stderr in the output, and no separate tail.
    let finished = call(&load("exit-code", StartMode::Cold), b"");
    assert_eq!(finished.outcome().as_ref().unwrap().stderr, b"bye");
    assert!(finished.stderr_tail().is_empty());
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline() {
    let f = load("infinite-loop", StartMode::Cold);
    let started = std::time::Instant::now();
    match error(&f, b"") {
        CallError::Deadline(d) => assert_eq!(d, f.config().limits.timeout),
        other => panic!("expected the deadline, got {other}"),
    }
    assert!(started.elapsed() < f.config().limits.timeout * 5, "stopped promptly");
}

#[test]
fn output_over_the_cap_ends_the_call() {
    match error(&load("big-output", StartMode::Cold), b"") {
        CallError::OutputLimit { limit } => assert_eq!(limit, 16 << 20),
        other => panic!("expected the output cap, got {other}"),
    }
}

#[test]
fn bad_pointers_get_efault_and_the_monitor_carries_on() {
    let out = output(&load("bad-pointer-write", StartMode::Cold), b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("EFAULT").count(), 2, "{text}");
}

#[test]
fn path_escapes_never_yield_host_content() {
    let out = output(&load("path-escape", StartMode::Cold), b"");
    let text = String::from_utf8_lossy(&out.stdout);
    let passwd = std::fs::read("/etc/passwd").unwrap();
    let host_hex: String = passwd.iter().take(16).map(|b| format!("{b:02x}")).collect();
    assert!(text.lines().count() >= 10, "{text}");
    assert!(!text.contains(&host_hex), "host /etc/passwd leaked: {text}");
    assert!(!text.contains("root:x"), "{text}");
    for line in text.lines() {
        // /proc/self/maps is the monitor's own account of guest memory, never a host file.
        let made_by_the_monitor = line.starts_with("/proc/self/maps: read ");
        assert!(
            made_by_the_monitor || line.contains("ENOENT") || line.contains("ELOOP") || line.contains("EXDEV"),
            "unexpected: {line}"
        );
    }
}

#[test]
fn an_mmap_loop_runs_out_at_the_memory_cap() {
    let f = load("mmap-bomb", StartMode::Cold);
    let out = output(&f, b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("errno=ENOMEM"), "{text}");
    let chunks: u64 = text.trim().trim_start_matches("chunks=").split(' ').next().unwrap().parse().unwrap();
    assert!(chunks < f.memory_size() >> 20, "{chunks} MiB mapped under a {} MiB cap", f.memory_size() >> 20);
}

#[test]
fn processes_and_sockets_are_refused() {
    let out = output(&load("forbidden", StartMode::Cold), b"");
    let text = String::from_utf8_lossy(&out.stdout);
    for call in ["fork", "execve", "socket", "clone"] {
        let line = text.lines().find(|l| l.starts_with(call)).unwrap_or_else(|| panic!("no {call} in {text}"));
        assert!(line.contains("-1 EPERM"), "{line}");
    }
}

#[test]
fn scribbling_on_the_output_ring_only_loses_what_the_program_destroyed() {
    let out = output(&load("ring-scribble", StartMode::Cold), b"x");
    assert_eq!(out.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "abce\nwrite(0x1000): -1 EFAULT\n");
    assert_eq!(out.stderr, b"");
}

#[test]
fn the_syscall_zoo_behaves_like_linux() {
    let out = output(&load("syscall-zoo", StartMode::Cold), b"request!");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let expect = [
        "fstat(0): regular=1 st_size=8",
        "lseek(0, SEEK_END): 8",
        "pread(0, 3, 2): 3 \"que\"",
        "lseek(0, -1, SEEK_SET): -1 EINVAL",
        "read(0) after lseek(1): 7 \"equest!\"",
        "getpid: 100",
        "uname: Linux",
        "getcwd: /",
        "readlink(/proc/self/exe): /bin/syscall-zoo",
        "stat: st_size=6",
        "stat(missing): ENOENT",
        "pread: 3 \"llo\"",
        "readdir(/data): . .. hello.txt",
        "ioctl(0, TCGETS): ENOTTY",
        "mremap: ok content=1 tailzero=1",
        "open(/data/x, O_WRONLY|O_CREAT): ok",
        "write then stat(/data/x): 3 st_size=3",
        "write(77): EBADF",
        "syscall(999): ENOSYS",
        "done: ok",
    ];
    for e in expect {
        assert!(text.contains(e), "missing {e:?} in:\n{text}");
    }
}

#[test]
fn unknown_syscalls_are_counted() {
    let f = call(&load("syscall-zoo", StartMode::Cold), b"");
    assert_eq!(f.stats().unknown_syscalls.get(&999), Some(&1));
}
