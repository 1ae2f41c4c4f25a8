//! A guest cannot make the monitor pay one host mapping per guest page: a program that
//! unmaps every other page of memory restored from its snapshot (copy-on-write inline, or
//! restored ahead by the pool) leaves the host's mapping count nearly where it was.

mod common;
use common::*;
use vmm::snapshot::SNAPSHOT_FILE;
use vmm::{EmptyVm, Function, Runtime, RuntimeConfig, StartMode};

/// Lines of /proc/self/maps: this process's host mappings.
fn host_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

const EXPECTED: &[u8] = b"unmapped 4096 pages, 0 failed, checksum 524288\n";

#[test]
fn unmapping_every_other_restored_page_makes_few_host_mappings() {
    let dir = std::env::temp_dir().join(format!("snapcall-mappings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(bundle("munmap-checkerboard"))
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let cold = Function::load(&dir, StartMode::Cold).unwrap();
    cold.take_snapshot(&dir.join(SNAPSHOT_FILE)).unwrap();
    let f = Function::load(&dir, StartMode::Snapshot).unwrap();

    // Inline: the snapshot mapped copy-on-write from its file.
    let vm = EmptyVm::create(f.memory_size()).unwrap();
    let before = host_mappings();
    let (outcome, used_vm) = f.start(vm, b"go").unwrap().run().into_parts();
    let grown = host_mappings().saturating_sub(before);
    assert_eq!(outcome.unwrap().stdout, EXPECTED);
    // 4096 discarded pages: one mapping each would be +4096 (and +65530 ends the process).
    assert!(grown < 500, "one copy-on-write call grew the host's mappings by {grown}");
    drop(used_vm);

    // Restored ahead by the pool, into huge-page-advised anonymous memory.
    let runtime = Runtime::new(RuntimeConfig { pool_size: 1, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    let vm = runtime.take_vm(&f).unwrap();
    let before = host_mappings();
    let (outcome, used_vm) = f.start(vm, b"go").unwrap().run().into_parts();
    let grown = host_mappings().saturating_sub(before);
    assert_eq!(outcome.unwrap().stdout, EXPECTED);
    assert!(grown < 500, "one restored-ahead call grew the host's mappings by {grown}");
    runtime.release(used_vm);
    std::fs::remove_dir_all(dir).unwrap();
}
