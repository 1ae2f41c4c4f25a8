//! Micro phases of a call, so a regression in any one shows up on its own (issue 6):
//! creating and destroying a VM, restoring a snapshot into a ready VM, one exit from CPL3 and
//! from CPL0, and one guest syscall round trip through the monitor's stub.
//!
//! `cargo bench -p benches --bench phases`. HTTP request parsing is not here: `httpd` has no
//! library target, so its parser cannot be linked into a bench (it is exercised end to end by
//! the latency study's HTTP rows instead).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use vmm::probe::{self, ExitKind, ExitProbe};
use vmm::EmptyVm;

const MEMORY: u64 = 64 << 20;

fn vm_lifecycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("vm");
    g.bench_function("create (EmptyVm::create)", |b| {
        b.iter_batched(|| (), |()| EmptyVm::create(MEMORY).unwrap(), BatchSize::PerIteration)
    });
    g.bench_function("destroy (drop an EmptyVm)", |b| {
        b.iter_batched(|| EmptyVm::create(MEMORY).unwrap(), drop, BatchSize::PerIteration)
    });
    g.bench_function("create + destroy, step by step (probe::create_steps)", |b| {
        b.iter(|| probe::create_steps(MEMORY).unwrap())
    });
    g.finish();
}

fn restore(c: &mut Criterion) {
    let mut g = c.benchmark_group("restore");
    for (name, request) in [("echo-c", &b"hello"[..]), ("hellowithdata-py", &br#"{"Another": "Echo"}"#[..])] {
        // The bundle's own snapshot when it is valid; a fresh one only when it is missing or stale.
        let f = match vmm::Function::load(&benches::bundle(name), vmm::StartMode::Snapshot) {
            Ok(f) if f.has_snapshot() => f,
            _ => benches::function(name, true),
        };
        g.bench_function(format!("{name}: start from snapshot into a ready VM"), |b| {
            b.iter_batched(
                || EmptyVm::create(f.memory_size()).unwrap(),
                |vm| f.start(vm, request).unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn exits(c: &mut Criterion) {
    let mut g = c.benchmark_group("exit");
    for kind in ExitKind::ALL {
        let mut p = ExitProbe::new(MEMORY, kind).unwrap();
        p.run_once().unwrap();
        g.bench_function(kind.name(), |b| b.iter(|| p.run_once().unwrap()));
    }
    // EmptyVm::create already takes vCPU 0's first run (its warm-up); probe::first_kvm_run
    // times a fresh vCPU's first and second runs itself, so sum what it measured.
    g.bench_function("first KVM_RUN of a new vCPU", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| probe::first_kvm_run(MEMORY).unwrap().first).sum())
    });
    g.bench_function("a call's first KVM_RUN in a new EmptyVm (after its warm-up)", |b| {
        b.iter_batched(
            || ExitProbe::new(MEMORY, ExitKind::Cpl3Mmio).unwrap(),
            |mut p| {
                p.run_once().unwrap();
                p
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = vm_lifecycle, restore, exits
}
criterion_main!(benches);
