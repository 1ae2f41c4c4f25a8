//! Issue 4 against the real KVM: the static CPython guest, its runtime, and the vDSO clock.

mod common;
use common::*;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vmm::snapshot::SNAPSHOT_FILE;
use vmm::{EmptyVm, Function, StartMode};

fn snapshotted(name: &str, tag: &str) -> (std::path::PathBuf, Function) {
    let dst = std::env::temp_dir().join(format!("snapcall-py-{}-{name}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    assert!(std::process::Command::new("cp").arg("-a").arg(bundle(name)).arg(&dst).status().unwrap().success());
    let _ = std::fs::remove_file(dst.join(SNAPSHOT_FILE));
    let cold = Function::load(&dst, StartMode::Cold).unwrap();
    cold.take_snapshot(&dst.join(SNAPSHOT_FILE)).unwrap();
    let f = Function::load(&dst, StartMode::Snapshot).unwrap();
    assert!(f.has_snapshot());
    (dst, f)
}

fn bodies() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"not json at all".to_vec(),
        br#"{"Another": "Echo"}"#.to_vec(),
        "{\"grüße\": \"日本語 ✓\", \"emoji\": \"🦀\"}".as_bytes().to_vec(),
        "plain UTF-8 text: ünïcödé".as_bytes().to_vec(),
        b"[1, 2, 3]".to_vec(),
        b"42".to_vec(),
        b"{\"unterminated\": ".to_vec(),
    ];
    let big: String = (0..(1 << 20) / 16).map(|i| format!("{:015}", i) + ",").collect();
    v.push(format!("{{\"big\": \"{big}\"}}").into_bytes());
    for i in 0..91 {
        v.push(
            format!("{{\"n\": {i}, \"s\": \"{}\", \"nested\": {{\"list\": [{i}, \"x\"]}}}}", "y".repeat(i * 7))
                .into_bytes(),
        );
    }
    v
}

#[test]
fn hellowithdata_returns_the_posted_data_for_a_hundred_bodies() {
    let (dir, f) = snapshotted("hellowithdata-py", "bodies");
    let bodies = bodies();
    assert_eq!(bodies.len(), 100);
    for body in &bodies {
        let out = output(&f, body);
        assert_eq!(out.exit_code, 0, "stderr: {}", String::from_utf8_lossy(&out.stderr));
        match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(sent) => {
                let got: serde_json::Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)));
                assert_eq!(got, sent);
            }
            Err(_) => assert_eq!(out.stdout, *body, "text comes back as text"),
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn hello_py_works_cold_and_from_a_snapshot() {
    let cold = output(&load("hello-py", StartMode::Cold), b"world");
    let (dir, f) = snapshotted("hello-py", "modes");
    let restored = output(&f, b"world");
    assert_eq!(cold.exit_code, 0);
    assert!(!cold.stdout.is_empty());
    assert_eq!(cold.stdout, restored.stdout);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_handler_exception_exits_non_zero_with_the_traceback() {
    let (dir, f) = snapshotted("py-raise", "raise");
    for function in [&load("py-raise", StartMode::Cold), &f] {
        let out = output(function, b"boom");
        assert_ne!(out.exit_code, 0);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("Traceback") && stderr.contains("ValueError"), "{stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn module_state_from_one_call_is_not_seen_by_the_next() {
    let (dir, f) = snapshotted("py-state", "state");
    for _ in 0..10 {
        assert_eq!(output(&f, b"x").stdout, b"1");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Runs one call recording every syscall number.
fn traced(f: &Function, request: &[u8]) -> (vmm::Output, Vec<u64>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut ready = f.start(EmptyVm::create(f.memory_size()).unwrap(), request).unwrap();
    ready.trace_syscalls(Box::new(move |r| sink.lock().unwrap().push(r.nr)));
    let out = ready.run().into_parts().0.unwrap();
    let nrs = seen.lock().unwrap().clone();
    (out, nrs)
}

#[test]
fn time_is_right_in_a_guest_restored_a_minute_after_its_snapshot_and_costs_no_exit() {
    let (dir, f) = snapshotted("py-time", "clock");
    std::thread::sleep(Duration::from_secs(61));
    let mut randoms = Vec::new();
    for _ in 0..3 {
        let before = now_secs();
        let (out, nrs) = traced(&f, b"");
        let after = now_secs();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = v["time"].as_f64().unwrap();
        assert!(t >= before - 0.05 && t <= after + 0.05, "guest {t} vs host [{before}, {after}]");
        for clock_syscall in [228u64, 96, 201] {
            assert!(!nrs.contains(&clock_syscall), "syscall {clock_syscall} left the guest: {nrs:?}");
        }
        // The reseed's entropy comes from the page snapcall refills per restore, not getrandom.
        assert!(!nrs.contains(&318), "getrandom left the guest: {nrs:?}");
        randoms.push(v["random"].as_f64().unwrap());
    }
    randoms.dedup();
    assert_eq!(randoms.len(), 3, "restored instances must not share a random sequence");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_stdlib_modules_work_in_the_guest_cold_and_restored() {
    let expected = serde_json::json!({
        "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "md5": "900150983cd24fb0d6963f7d28e17f72",
        "blake2b": "d8bb14d833d59559",
        "decimal": "3.3",
        "date": "2020-02-29",
        "b64": "YWJj",
        "hex": "01ff",
        "crc32": 891568578,
        "re": "a<1>b<22>",
        "struct": "02010000",
        "sqrt": 4.0,
        "seeded": 655,
        "json": {"x": [1, 2]},
    });
    let (dir, restored) = snapshotted("py-imports", "imports");
    for f in [&load("py-imports", StartMode::Cold), &restored] {
        let out = output(f, b"");
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, expected);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_warm_up_request_runs_through_the_handler_before_the_snapshot() {
    let dst = std::env::temp_dir().join(format!("snapcall-py-{}-warmup", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    assert!(std::process::Command::new("cp").arg("-a").arg(bundle("py-state")).arg(&dst).status().unwrap().success());
    let _ = std::fs::remove_file(dst.join(SNAPSHOT_FILE));
    let path = dst.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["annotations"]["snapcall.warmup_request"] = serde_json::json!("{\"warm\": true}");
    std::fs::write(&path, config.to_string()).unwrap();
    let cold = Function::load(&dst, StartMode::Cold).unwrap();
    assert_eq!(output(&cold, b"x").stdout, b"1", "a cold call does not warm up");
    cold.take_snapshot(&dst.join(SNAPSHOT_FILE)).unwrap();
    let f = Function::load(&dst, StartMode::Snapshot).unwrap();
    for _ in 0..3 {
        assert_eq!(output(&f, b"x").stdout, b"2", "the warm-up call's state is in the snapshot, and only its");
    }
    std::fs::remove_dir_all(dst).unwrap();
}

#[test]
fn the_guest_finds_its_user_group_and_time_zones_cold_and_restored() {
    let expected = serde_json::json!({
        "user": "snapcall",
        "home": "/",
        "root": 0,
        "group": "snapcall",
        "paris_summer": "2024-07-01T14:00:00+02:00",
        "new_york_winter": "2024-01-15T07:00:00-05:00",
        "tokyo": 32400.0,
        "zones_over_400": true,
    });
    let (dir, restored) = snapshotted("py-system", "system");
    for f in [&load("py-system", StartMode::Cold), &restored] {
        let out = output(f, b"");
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got, expected);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
