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

/// One call in a fresh VM, with the VM destroyed inline.
pub fn call(function: &Function, request: &[u8]) -> FinishedCall {
    let vm = EmptyVm::create(function.memory_size()).expect("create VM");
    let ready = function.start(vm, request).expect("start");
    let mut finished = ready.run();
    finished.destroy_vm();
    finished
}

pub fn output(function: &Function, request: &[u8]) -> Output {
    let mut f = call(function, request);
    match f.take_outcome() {
        Ok(o) => o,
        Err(e) => panic!("{}: call failed: {e}", function.name()),
    }
}

pub fn error(function: &Function, request: &[u8]) -> CallError {
    let mut f = call(function, request);
    match f.take_outcome() {
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
