//! Every fuzz target for a CI-sized budget (3 s each unless `SNAPCALL_FUZZ_SECS` /
//! `SNAPCALL_FUZZ_ITERS` say otherwise): the seeds in `fuzz/corpus/` (past findings among
//! them) are replayed first, then mutations. A failure prints the saved input's path.

use fuzz::{fuzz, targets, Budget};

fn run(name: &str) {
    let mut target = targets::by_name(name).unwrap();
    let report = fuzz(target.as_mut(), Budget::from_env());
    eprintln!("{report}");
    assert!(report.failures.is_empty(), "{report}");
    assert!(report.runs >= report.seeds as u64, "the seeds were not all replayed: {report}");
}

#[test]
fn http_parser() {
    run("http");
}

#[test]
fn snapshot_parser() {
    run("snapshot");
}

#[test]
fn bundle_config() {
    run("config");
}

#[test]
fn syscalls_against_a_real_vm() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("no /dev/kvm: skipped");
        return;
    }
    run("syscalls");
}
