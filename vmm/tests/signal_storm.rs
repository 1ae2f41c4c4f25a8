//! A storm of signals with a handler (the deadline kick, SIGRTMIN+3, sent from outside) at
//! every thread of the process while calls run: each call must still see its whole request
//! and produce its whole output. KVM_RUN returns EINTR at any point; the monitor must treat
//! that as "run on", never as a failure or a lost or repeated syscall.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm::{Runtime, RuntimeConfig, StartMode};

fn storm(stop: Arc<AtomicBool>, sent: Arc<AtomicU64>) -> std::thread::JoinHandle<()> {
    let pid = std::process::id() as i32;
    std::thread::spawn(move || {
        let kick = libc::SIGRTMIN() + 3;
        while !stop.load(Ordering::Relaxed) {
            let tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
                .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
                .unwrap_or_default();
            for _ in 0..10 {
                for &tid in &tids {
                    // SAFETY: tgkill to threads of this process with a signal whose handler
                    // (the vmm's kick) is installed by the first call before the storm starts.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, kick) };
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    })
}

fn under_storm(mode: &str, mut one_call: impl FnMut(&[u8]) -> Vec<u8>) {
    // The first call installs the kick handler (its default action would end the process).
    assert_eq!(one_call(b"warm"), b"warm");
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let t = storm(stop.clone(), sent.clone());
    let start = Instant::now();
    let mut calls = 0;
    let mut bad = Vec::new();
    while start.elapsed() < Duration::from_secs(3) {
        let req = format!("request {calls} {}", "x".repeat(calls % 100));
        let out = one_call(req.as_bytes());
        if out != req.as_bytes() {
            bad.push((req, String::from_utf8_lossy(&out).into_owned()));
        }
        calls += 1;
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!("{mode}: {calls} calls under {sent} signals, {} wrong", bad.len());
    assert!(sent > 10_000, "the storm was too weak: {sent}");
    assert!(
        bad.is_empty(),
        "{mode}: {} of {calls} calls answered wrongly, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
}

#[test]
fn a_signal_storm_loses_no_request_or_output_cold_copy_on_write_or_pooled() {
    let cold = load("echo-c", StartMode::Cold);
    under_storm("cold", |req| output(&cold, req).stdout);

    let dir = bundle("echo-c");
    let snap = std::env::temp_dir().join(format!("signal-storm-{}.kmsnap", std::process::id()));
    let copy = std::env::temp_dir().join(format!("signal-storm-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    assert!(std::process::Command::new("cp").arg("-a").arg(&dir).arg(&copy).status().unwrap().success());
    cold.take_snapshot(&snap).expect("snapshot");
    std::fs::rename(&snap, copy.join("snapshot.kmsnap")).unwrap();
    let restored = vmm::Function::load(&copy, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    under_storm("copy-on-write", |req| output(&restored, req).stdout);

    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    runtime.keep_ready(&restored);
    under_storm("pooled", |req| {
        let vm = runtime.take_vm(&restored).expect("take_vm");
        let (outcome, used_vm) = restored.start(vm, req).expect("start").run().into_parts();
        runtime.release(used_vm);
        let out = outcome.unwrap_or_else(|e| panic!("call failed: {e}"));
        out.stdout
    });
    let _ = std::fs::remove_dir_all(&copy);
}
