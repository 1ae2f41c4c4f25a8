//! Issue 3 against the real KVM: snapshot at the first stdin read, restore per call.

mod common;
use common::*;
use std::path::{Path, PathBuf};

use vmm::snapshot::{SnapshotError, SNAPSHOT_FILE};
use vmm::{Function, FunctionError, LoadError, StartError, StartMode};

/// Copies a bundle to a private directory (so tests can change and corrupt it freely).
fn private_bundle(name: &str, tag: &str) -> PathBuf {
    let src = bundle(name);
    let dst = std::env::temp_dir().join(format!("snapcall-test-{}-{name}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let status = std::process::Command::new("cp").arg("-a").arg(&src).arg(&dst).status().unwrap();
    assert!(status.success());
    let _ = std::fs::remove_file(dst.join(SNAPSHOT_FILE));
    dst
}

fn snapshotted(name: &str, tag: &str) -> (PathBuf, Function) {
    let dir = private_bundle(name, tag);
    let cold = Function::load(&dir, StartMode::Cold).unwrap();
    cold.take_snapshot(&dir.join(SNAPSHOT_FILE)).unwrap();
    let f = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(f.has_snapshot());
    (dir, f)
}

#[test]
fn a_thousand_echo_calls_through_the_snapshot_are_byte_exact() {
    let (dir, f) = snapshotted("echo-c", "1000");
    for i in 0..1000u64 {
        let request = bytes((i as usize * 37) % 9000, i);
        let finished = call(&f, &request);
        assert!(finished.stats().restored);
        let out = finished.outcome().as_ref().expect("call");
        assert_eq!(out.stdout, request, "call {i}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// echo-c reads its request to the end: the read that finds the end is answered in the VM
/// (the fast path of `output_ring.rs`), so the call's only exit is exit_group, and the read
/// still counts as a syscall. Traced, the read exits, so the trace shows it.
#[test]
fn the_read_that_finds_the_end_of_the_request_takes_no_exit() {
    let (dir, f) = snapshotted("echo-c", "eof");
    for request in [&b"to the end"[..], b""] {
        let finished = call(&f, request);
        let stats = finished.stats().clone();
        assert_eq!(finished.outcome().as_ref().expect("call").stdout, request);
        assert_eq!(stats.exits, 1, "{stats:?}");
        // The pending read, the write (if any), the read at the end, exit_group.
        assert_eq!(stats.syscalls, if request.is_empty() { 2 } else { 4 }, "{stats:?}");
    }
    let vm = vmm::EmptyVm::create(f.memory_size()).unwrap();
    let mut ready = f.start(vm, b"traced").unwrap();
    let reads = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = reads.clone();
    ready.trace_syscalls(Box::new(move |r| {
        if r.nr == 0 {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }));
    let finished = ready.run();
    assert_eq!(finished.outcome().as_ref().expect("traced call").stdout, b"traced");
    assert_eq!(reads.load(std::sync::atomic::Ordering::Relaxed), 1, "the read at the end, traced");
    assert_eq!(finished.stats().exits, 2);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn glibc_musl_and_static_pie_builds_snapshot_and_restore() {
    for name in ["echo-c", "echo-c-musl", "echo-c-pie", "hello-c"] {
        let (dir, f) = snapshotted(name, "builds");
        let out = output(&f, b"restored!");
        if name == "hello-c" {
            assert_eq!(out.stdout, b"Hello from C! You sent 9 bytes.\n");
        } else {
            assert_eq!(out.stdout, b"restored!", "{name}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn no_call_sees_another_calls_writes() {
    let (dir, f) = snapshotted("counter", "isolation");
    for _ in 0..50 {
        assert_eq!(output(&f, b"tick").stdout, b"counter=1\n", "every call starts from the snapshot's counter");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn one_snapshot_restores_in_two_threads_at_once() {
    let (dir, f) = snapshotted("echo-c", "threads");
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let f = &f;
            s.spawn(move || {
                for i in 0..200 {
                    let request = bytes(100 + i, t * 1000 + i as u64);
                    assert_eq!(output(f, &request).stdout, request);
                }
            });
        }
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn open_files_and_the_working_directory_survive_the_snapshot() {
    let (dir, f) = snapshotted("open-file", "files");
    for _ in 0..3 {
        assert_eq!(output(&f, b"go").stdout, b"fd=3 rest=klmnopqrstuvwxyz\n cwd=/data relative=abc\n");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_entropy_page_is_fresh_in_every_restored_call() {
    let (dir, f) = snapshotted("entropy", "fresh");
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let out = String::from_utf8(output(&f, b"go").stdout).unwrap();
        assert!(
            out.ends_with(
                " write=-1 EBADF mmap(offset)=EINVAL open(O_WRONLY)=-1 EROFS mmap(15 more)=OK mmap(1 more)=ENOMEM\n"
            ),
            "{out}"
        );
        let mapped = out.split_whitespace().next().unwrap().to_owned();
        let read = out.split_whitespace().nth(1).unwrap().to_owned();
        assert!(seen.insert(mapped.clone()) && seen.insert(read.clone()), "bytes repeated: {out}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn load_err(dir: &Path) -> String {
    match Function::load(dir, StartMode::Snapshot) {
        Ok(_) => panic!("{} was accepted", dir.display()),
        Err(e @ FunctionError::Snapshot { .. }) => e.to_string(),
        Err(other) => panic!("wrong error: {other}"),
    }
}

#[test]
fn a_stale_snapshot_is_refused() {
    let (dir, _f) = snapshotted("echo-c", "stale");
    // Same program, different configuration: the environment changed.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), config.replace("HOME=/", "HOME=/x")).unwrap();
    let msg = load_err(&dir);
    assert!(msg.contains("stale"), "{msg}");
    // A different program under the same name.
    std::fs::write(dir.join("config.json"), config).unwrap();
    let prog = dir.join("rootfs/bin/echo-c");
    let mut bytes = std::fs::read(&prog).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&prog, bytes).unwrap();
    assert!(load_err(&dir).contains("stale"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn corrupt_snapshots_are_refused_without_panicking() {
    let (dir, _f) = snapshotted("echo-c", "corrupt");
    let path = dir.join(SNAPSHOT_FILE);
    let good = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated header", good[..40].to_vec()),
        ("truncated memory", good[..good.len() / 2].to_vec()),
        ("wrong class", {
            let mut b = good.clone();
            b[4] = 1;
            b
        }),
        ("wrong machine", {
            let mut b = good.clone();
            b[18] = 3;
            b
        }),
        ("flipped memory byte", {
            let mut b = good.clone();
            let i = b.len() - 100;
            b[i] ^= 1;
            b
        }),
        ("flipped note byte", {
            let mut b = good.clone();
            b[0x300] ^= 0x55;
            b
        }),
        ("absurd phnum", {
            let mut b = good.clone();
            b[56] = 0xFF;
            b[57] = 0xFF;
            b
        }),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let msg = load_err(&dir);
        assert!(!msg.is_empty(), "{what}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_program_that_never_reads_stdin_cannot_be_snapshotted() {
    let dir = private_bundle("null-deref", "nostdin");
    let f = Function::load(&dir, StartMode::Cold).unwrap();
    match f.take_snapshot(&dir.join(SNAPSHOT_FILE)) {
        Err(SnapshotError::Run(e)) => assert!(e.to_string().contains("fault"), "{e}"),
        other => panic!("expected a run error, got {other:?}"),
    }
    assert!(!dir.join(SNAPSHOT_FILE).exists(), "nothing half-written");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_program_that_cannot_start_keeps_its_start_error_as_the_snapshots_cause() {
    let dir = private_bundle("echo-c", "nostart");
    // An environment larger than half the 8 MiB stack reserve: the cold start cannot build
    // the initial stack.
    let config_path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["process"]["env"] = serde_json::json!([format!("BIG={}", "x".repeat(5 << 20))]);
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let f = Function::load(&dir, StartMode::Cold).unwrap();
    match f.take_snapshot(&dir.join(SNAPSHOT_FILE)) {
        Err(e @ SnapshotError::Start(_)) => {
            let cause = std::error::Error::source(&e).expect("the StartError is the source");
            let SnapshotError::Start(start) = &e else { unreachable!() };
            assert_eq!(cause.to_string(), start.to_string());
            assert!(
                matches!(**start, StartError::Load { source: LoadError::StackTooLarge, .. }),
                "expected the stack error as the cause, got {start:?}"
            );
        }
        other => panic!("expected a start error, got {other:?}"),
    }
    assert!(!dir.join(SNAPSHOT_FILE).exists(), "nothing half-written");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn fpu_and_sse_state_survive_the_snapshot() {
    let (dir, f) = snapshotted("fpu-state", "xsave");
    let cold = output(&load("fpu-state", StartMode::Cold), b"x").stdout;
    let restored = output(&f, b"x").stdout;
    assert!(String::from_utf8_lossy(&cold).starts_with("rounding=towardzero"), "{}", String::from_utf8_lossy(&cold));
    assert_eq!(restored, cold, "MXCSR (XSAVE state) restored exactly");
    std::fs::remove_dir_all(dir).unwrap();
}
