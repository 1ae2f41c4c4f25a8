//! Shared measurement code for snapcall's criterion benches and the latency study.
//!
//! [`phase_breakdown`] runs calls one by one through the same public vmm API the server uses
//! and records, per call, the wall time of each phase, the VM exits and the host page faults
//! (minor faults of this thread, which include the guest's first touches of its pages).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vmm::{EmptyVm, Function, StartMode};

/// A bundle built by `guest-functions/build.sh`.
pub fn bundle(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target");
    for dir in ["functions", "test-functions"] {
        let p = root.join(dir).join(name);
        if p.join("config.json").exists() {
            return p;
        }
    }
    panic!("bundle {name} is missing: run guest-functions/build.sh first");
}

/// Loads a bundle; with `snapshot`, takes a fresh snapshot first (into the bundle).
pub fn function(name: &str, snapshot: bool) -> Function {
    let dir = bundle(name);
    if snapshot {
        let cold = Function::load(&dir, StartMode::Cold).expect("load");
        cold.take_snapshot(&dir.join(vmm::snapshot::SNAPSHOT_FILE)).expect("snapshot");
        let f = Function::load(&dir, StartMode::Snapshot).expect("load snapshot");
        assert!(f.has_snapshot());
        f
    } else {
        Function::load(&dir, StartMode::Cold).expect("load")
    }
}

/// Minor page faults of the calling thread so far.
pub fn thread_minor_faults() -> u64 {
    // SAFETY: getrusage into a zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_minflt as u64
}

/// One call's measurements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub create_vm: Duration,
    pub load: Duration,
    pub run: Duration,
    pub destroy_vm: Duration,
    pub total: Duration,
    pub exits: u64,
    pub page_faults: u64,
}

/// Runs `n` calls of `function` with `request`, each in a VM created and destroyed inline.
pub fn phase_breakdown(function: &Function, request: &[u8], n: usize) -> Vec<Sample> {
    (0..n)
        .map(|_| {
            let faults = thread_minor_faults();
            let t0 = Instant::now();
            let vm = EmptyVm::create(function.memory_size()).expect("create VM");
            let t1 = Instant::now();
            let ready = function.start(vm, request).expect("start");
            let t2 = Instant::now();
            let finished = ready.run();
            let t3 = Instant::now();
            assert!(finished.outcome().is_ok(), "{}: {:?}", function.name(), finished.outcome());
            let exits = finished.stats().exits;
            drop(finished);
            let t4 = Instant::now();
            Sample {
                create_vm: t1 - t0,
                load: t2 - t1,
                run: t3 - t2,
                destroy_vm: t4 - t3,
                total: t4 - t0,
                exits,
                page_faults: thread_minor_faults() - faults,
            }
        })
        .collect()
}

/// Median of `f` over `samples`.
pub fn median<T: Ord + Copy>(samples: &[Sample], f: impl Fn(&Sample) -> T) -> T {
    let mut v: Vec<T> = samples.iter().map(f).collect();
    v.sort();
    v[v.len() / 2]
}

/// A markdown table row of medians: phases in µs, exits, page faults.
pub fn breakdown_row(label: &str, samples: &[Sample]) -> String {
    let us = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1e6);
    format!(
        "| {label} | {} | {} | {} | {} | {} | {} | {} |",
        us(median(samples, |s| s.create_vm)),
        us(median(samples, |s| s.load)),
        us(median(samples, |s| s.run)),
        us(median(samples, |s| s.destroy_vm)),
        us(median(samples, |s| s.total)),
        median(samples, |s| s.exits),
        median(samples, |s| s.page_faults),
    )
}

/// The header matching [`breakdown_row`].
pub const BREAKDOWN_HEADER: &str = "| mode | create VM µs | load/restore µs | run µs | destroy VM µs | total µs | VM exits | host page faults |\n|---|---|---|---|---|---|---|---|";
