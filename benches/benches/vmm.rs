//! Cold start vs snapshot restore, side by side in one run (issues 2, 3 and 4).
//!
//! `cargo bench -p benches --bench vmm` prints a per-phase breakdown (medians of 200 calls:
//! create VM, load or restore, run, destroy, VM exits, host page faults) and then lets
//! criterion time each whole call and the call without VM creation/destruction (what the
//! server's pool leaves on the critical path).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use benches::*;
use vmm::{EmptyVm, Runtime, RuntimeConfig};

const CASES: &[(&str, &[u8])] =
    &[("echo-c", b"hello, world"), ("hello-c", b"hello, world"), ("hellowithdata-py", br#"{"Another": "Echo"}"#)];

fn breakdown() {
    println!("\n{BREAKDOWN_HEADER}");
    for &(name, request) in CASES {
        for snapshot in [false, true] {
            let f = function(name, snapshot);
            let n = if name.ends_with("-py") && !snapshot { 30 } else { 200 };
            let samples = phase_breakdown(&f, request, n);
            let mode = if snapshot { "snapshot" } else { "cold" };
            println!("{}", breakdown_row(&format!("{name} {mode}"), &samples));
        }
    }
    println!();
}

fn calls(c: &mut Criterion) {
    breakdown();
    for &(name, request) in CASES {
        let mut group = c.benchmark_group(name);
        if name.ends_with("-py") {
            group.sample_size(20);
        }
        for snapshot in [false, true] {
            let f = function(name, snapshot);
            let mode = if snapshot { "snapshot" } else { "cold" };
            group.bench_function(format!("{mode}/whole call"), |b| {
                b.iter(|| {
                    let vm = EmptyVm::create(f.memory_size()).unwrap();
                    let done = f.start(vm, request).unwrap().run();
                    assert!(done.outcome().is_ok());
                    drop(done);
                })
            });
            if snapshot {
                // What the server's pool leaves on the call path: the snapshot was restored
                // into the VM ahead (huge-page copy, vCPU state, first KVM_RUN).
                let runtime = Runtime::new(RuntimeConfig { pool_size: 2, ..Default::default() }).unwrap();
                runtime.keep_ready(&f);
                group.bench_function(format!("{mode}/start+run (VM restored ahead by the pool)"), |b| {
                    b.iter_batched(
                        || {
                            runtime.wait_until_full();
                            runtime.take_vm(&f).unwrap()
                        },
                        |vm| {
                            let done = f.start(vm, request).unwrap().run();
                            assert!(done.outcome().is_ok());
                            done
                        },
                        BatchSize::PerIteration,
                    )
                });
            }
            group.bench_function(format!("{mode}/start+run (empty VM)"), |b| {
                b.iter_batched(
                    || EmptyVm::create(f.memory_size()).unwrap(),
                    |vm| {
                        let done = f.start(vm, request).unwrap().run();
                        assert!(done.outcome().is_ok());
                        done
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(3));
    targets = calls
}
criterion_main!(benches);
