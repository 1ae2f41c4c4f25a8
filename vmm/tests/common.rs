//! Shared helpers for the real-KVM tests: bundles come from `guest-functions/build.sh`.
#![allow(dead_code)]

use std::path::PathBuf;

use vmm::{CallError, EmptyVm, FinishedCall, Function, Output, StartMode};

/// `target/functions/<name>` or `target/test-functions/<name>`.
pub fn bundle(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    for dir in ["functions", "test-functions"] {
        let p = root.join(dir).join(name);
        if p.join("config.json").exists() {
            return p;
        }
    }
    panic!("bundle {name} is missing: run guest-functions/build.sh first (the README's test command does)");
}

pub fn load(name: &str, mode: StartMode) -> Function {
    Function::load(&bundle(name), mode).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// One call in a fresh VM (destroyed inline when the result is dropped).
pub fn call(function: &Function, request: &[u8]) -> FinishedCall {
    let vm = EmptyVm::create(function.memory_size()).expect("create VM");
    let ready = function.start(vm, request).expect("start");
    ready.run()
}

pub fn output(function: &Function, request: &[u8]) -> Output {
    match call(function, request).into_parts().0 {
        Ok(o) => o,
        Err(e) => panic!("{}: call failed: {e}", function.name()),
    }
}

/// Loads the bundle at `dir` cold, calls it once with `{}`, removes `dir`, and returns the
/// JSON the call printed (with the text, for assertion messages). The call must exit 0.
pub fn cold_json_call(dir: &std::path::Path) -> (serde_json::Value, String) {
    let f = Function::load(dir, StartMode::Cold).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()));
    let out = output(&f, b"{}");
    let _ = std::fs::remove_dir_all(dir);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.exit_code, 0, "{text} {}", String::from_utf8_lossy(&out.stderr));
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (value, text)
}

pub fn error(function: &Function, request: &[u8]) -> CallError {
    match call(function, request).into_parts().0 {
        Ok(o) => panic!(
            "{}: expected an error, got exit {} stdout {:?}",
            function.name(),
            o.exit_code,
            String::from_utf8_lossy(&o.stdout)
        ),
        Err(e) => e,
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A copy of the py-time bundle named `tag` (unique per test), with its handler replaced by
/// `source` and no snapshot.
pub fn python_bundle(tag: &str, source: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("snapcall-py-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let copied = std::process::Command::new("cp").arg("-a").arg(bundle("py-time")).arg(&dst).status();
    assert!(copied.is_ok_and(|s| s.success()), "copying py-time");
    let _ = std::fs::remove_file(dst.join(vmm::snapshot::SNAPSHOT_FILE));
    let _ = std::fs::remove_dir_all(dst.join("rootfs/function/__pycache__"));
    std::fs::write(dst.join("rootfs/function/py_time.py"), source).unwrap();
    dst
}
