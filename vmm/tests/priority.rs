//! The pool's threads step aside for calls while their work can wait (vmm/src/priority.rs).
//! A test binary of its own: it reads the nice value of every thread in the process, and
//! another test's pool threads would be among them.

mod common;
use common::*;
use vmm::{Runtime, RuntimeConfig, StartMode};

/// The nice values of this process's threads with this name (/proc/self/task/*/stat).
fn nice_of_threads(name: &str) -> Vec<i32> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else { continue }; // exited
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { continue };
        if comm.trim_end() == name {
            // Fields after the command's closing parenthesis: state is field 3, nice field 19.
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            nices.push(after.split(' ').nth(16).unwrap().parse().unwrap());
        }
    }
    nices
}

#[test]
fn a_full_pool_makes_and_destroys_at_the_background_priority_unless_told_not_to() {
    let f = load("echo-c", StartMode::Cold);
    let call = |runtime: &Runtime| {
        let (outcome, used) = f.start(runtime.take_vm(&f).unwrap(), b"{}").unwrap().run().into_parts();
        outcome.unwrap();
        runtime.release(used);
    };

    // Off: every pool thread stays at the normal priority.
    let plain = Runtime::new(RuntimeConfig { pool_size: 3, background_nice: 0, ..Default::default() }).unwrap();
    assert_eq!(plain.background_nice(), 0);
    plain.keep_ready(&f);
    call(&plain);
    plain.wait_until_full();
    assert!(nice_of_threads("snapcall-pool").iter().all(|&n| n == 0), "{:?}", nice_of_threads("snapcall-pool"));
    assert!(nice_of_threads("snapcall-reaper").iter().all(|&n| n == 0));
    drop(plain);

    // The default: the last VM topped a list that already held two, and the reaper had one
    // VM to destroy, so neither was urgent.
    let runtime = Runtime::new(RuntimeConfig { pool_size: 3, ..Default::default() }).unwrap();
    let nice = runtime.background_nice();
    // 0 only where the process could not lower a nice value back (not root, no CAP_SYS_NICE).
    assert!(nice == vmm::DEFAULT_POOL_NICE || nice == 0, "{nice}");
    runtime.keep_ready(&f);
    call(&runtime);
    runtime.wait_until_full();
    // The reaper sets its priority as it takes a VM: wait until it has destroyed this one.
    let started = std::time::Instant::now();
    while runtime.pool_stats().destroyed < 1 && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(nice_of_threads("snapcall-pool").contains(&nice), "{:?}", nice_of_threads("snapcall-pool"));
    assert!(nice_of_threads("snapcall-reaper").contains(&nice), "{:?}", nice_of_threads("snapcall-reaper"));
    // And calls keep being served as the pool goes from full to empty and back.
    for _ in 0..20 {
        call(&runtime);
    }
    let s = runtime.pool_stats();
    assert!(s.created >= 21, "{s:?}");
}
