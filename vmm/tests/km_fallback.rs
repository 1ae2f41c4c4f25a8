//! The km fallback's process plumbing, exercised with a small STAND-IN for Kontain's km (a
//! shell script written by this test). No test here claims to have run real KM.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use vmm::km::{needs_km, KmError, KmFunction};
use vmm::BundleConfig;

/// A bundle that asks for km, whose environment tells the stand-in how to behave.
fn km_bundle(tag: &str, mode: &str, timeout_ms: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("snapcall-km-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    std::fs::write(dir.join("rootfs/bin/fn"), b"not really a program: the stand-in never runs it").unwrap();
    let config = format!(
        r#"{{"process":{{"args":["/bin/fn","--flag"],"env":["STANDIN_MODE={mode}"]}},"root":{{"path":"rootfs"}},
            "annotations":{{"snapcall.runner":"km","snapcall.timeout_ms":"{timeout_ms}","snapcall.max_output_bytes":"100000"}}}}"#
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    dir
}

/// The stand-in km: a shell script that acts out a mode. Written once per test process and put in
/// place by a rename, so no test ever executes a half-written script while another writes it.
fn stand_in_km() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(write_stand_in_km).clone()
}

fn write_stand_in_km() -> PathBuf {
    let path = std::env::temp_dir().join(format!("km-stand-in-{}", std::process::id()));
    let partial = path.with_extension("partial");
    let script = r#"#!/bin/sh
# STAND-IN for Kontain's km, used only by snapcall's tests of the km fallback plumbing.
case "$STANDIN_MODE" in
  echo)   printf 'argv:%s\n' "$*"; cat ;;
  stderr) cat >/dev/null; echo oops >&2; exit 7 ;;
  hang)   cat >/dev/null; sleep 30 ;;
  flood)  cat >/dev/null; while :; do printf 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'; done ;;
  signal) kill -9 $$ ;;
esac
"#;
    std::fs::write(&partial, script).unwrap();
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path
}

fn load(dir: &Path) -> KmFunction {
    let why = needs_km(&BundleConfig::load(dir).unwrap()).expect("the annotation asks for km");
    assert!(why.contains("snapcall.runner=km"), "{why}");
    KmFunction::load(dir, why).unwrap()
}

#[test]
fn request_in_response_out_with_the_program_and_its_args() {
    let dir = km_bundle("echo", "echo", 5000);
    let f = load(&dir);
    let km = stand_in_km();
    let body: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    let out = f.call(&km, &body).unwrap();
    assert_eq!(out.exit_code, 0);
    let head = format!("argv:{} --flag\n", dir.join("rootfs/bin/fn").display());
    assert_eq!(&out.stdout[..head.len()], head.as_bytes());
    assert_eq!(&out.stdout[head.len()..], &body[..]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn exit_status_and_stderr_come_back() {
    let dir = km_bundle("stderr", "stderr", 5000);
    let out = load(&dir).call(&stand_in_km(), b"x").unwrap();
    assert_eq!((out.exit_code, out.stderr.as_slice()), (7, &b"oops\n"[..]));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_deadline_kills_km() {
    let dir = km_bundle("hang", "hang", 300);
    let started = Instant::now();
    match load(&dir).call(&stand_in_km(), b"x") {
        Err(KmError::Deadline { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_output_cap_kills_km() {
    let dir = km_bundle("flood", "flood", 5000);
    match load(&dir).call(&stand_in_km(), b"x") {
        Err(KmError::OutputLimit { limit, .. }) => assert_eq!(limit, 100_000),
        other => panic!("expected the output cap, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_killed_km_is_reported() {
    let dir = km_bundle("signal", "signal", 5000);
    assert!(matches!(load(&dir).call(&stand_in_km(), b""), Err(KmError::Signal { signal: 9, .. })));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_km_says_so() {
    let dir = km_bundle("missing", "echo", 5000);
    let f = load(&dir);
    let err = f.locate_km(Some(Path::new("/nonexistent/km"))).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, KmError::Missing { .. }));
    assert!(
        msg.contains("needs Kontain's km") && msg.contains("/nonexistent/km") && msg.contains("snapcall.runner=km"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn native_bundles_do_not_need_km() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/functions/echo-c");
    assert_eq!(needs_km(&BundleConfig::load(&dir).unwrap()), None);
}

#[test]
fn a_km_only_snapshot_sends_the_bundle_to_km() {
    use snapshot_format as fmt;
    let dir = km_bundle("kmonly", "echo", 5000);
    // Native runner in config.json, but a snapshot with two vCPUs (two NT_PRSTATUS notes),
    // which only km can restore.
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap().replace("\"snapcall.runner\":\"km\",", "");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let thread = |pid| fmt::KmNote::PrStatus(fmt::km::PrStatus { pid, ..Default::default() });
    let state = fmt::SnapshotState { km_notes: vec![thread(1), thread(2)], ..Default::default() };
    let page = [1u8; 4096];
    let memory = [fmt::MemorySegment { guest_addr: 0x40_0000, data: &page, prot: fmt::PF_R }];
    fmt::write_snapshot(&dir.join("snapshot.kmsnap"), &state, &memory).unwrap();
    let why = needs_km(&BundleConfig::load(&dir).unwrap()).expect("km only");
    assert!(why.contains("snapshot needs km"), "{why}");
    let f = KmFunction::load(&dir, why).unwrap();
    let out = f.call(&stand_in_km(), b"resume").unwrap();
    let head = format!("argv:{}\n", dir.join("snapshot.kmsnap").display());
    assert_eq!(out.stdout, [head.as_bytes(), b"resume"].concat(), "km is handed the snapshot");
    std::fs::remove_dir_all(dir).unwrap();
}
