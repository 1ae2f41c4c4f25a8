//! The pool: VMs made ahead (restored ahead for snapshot functions) behave exactly like
//! inline ones, and a call waits for the pool only for a VM it is already making.

mod common;
use common::*;
use vmm::snapshot::SNAPSHOT_FILE;
use vmm::{Function, Runtime, RuntimeConfig, StartMode};

fn snapshotted_copy(name: &str) -> (std::path::PathBuf, Function) {
    // Unique per call: tests running at once may copy the same bundle.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dst = std::env::temp_dir().join(format!("snapcall-pool-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    assert!(std::process::Command::new("cp").arg("-a").arg(bundle(name)).arg(&dst).status().unwrap().success());
    let cold = Function::load(&dst, StartMode::Cold).unwrap();
    cold.take_snapshot(&dst.join(SNAPSHOT_FILE)).unwrap();
    (dst.clone(), Function::load(&dst, StartMode::Snapshot).unwrap())
}

fn pooled_call(runtime: &Runtime, f: &Function, request: &[u8]) -> vmm::Output {
    let vm = runtime.take_vm(f).unwrap();
    let (outcome, used_vm) = f.start(vm, request).unwrap().run().into_parts();
    runtime.release(used_vm);
    outcome.unwrap()
}

#[test]
fn vms_restored_ahead_give_every_call_a_fresh_copy() {
    let (dir, f) = snapshotted_copy("counter");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 2, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    assert!(runtime.pool_stats().ready >= 2);
    for i in 0..40 {
        assert_eq!(pooled_call(&runtime, &f, b"x").stdout, b"counter=1\n", "call {i}");
        if i % 4 == 0 {
            runtime.wait_until_full(); // alternate pooled and inline VMs
        }
    }
    let stats = runtime.pool_stats();
    assert!(stats.created >= 40, "{stats:?}");
    // The pool's background work is accounted for.
    assert!(stats.fill_cpu > std::time::Duration::ZERO, "{stats:?}");
    // And timed phase by phase, over exactly the VMs restored ahead.
    let phases = stats.fill_phases;
    assert!(phases.vms >= 2 && phases.vms <= stats.created - stats.created_inline, "{stats:?}");
    let [create, memory, prefault, vcpu] = phases.per_vm();
    let zero = std::time::Duration::ZERO;
    assert!(create > zero && memory > zero && prefault > zero && vcpu > zero, "{phases:?}");
    assert_eq!(phases.since(&phases).vms, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cold_functions_get_empty_vms_and_the_pool_can_be_off() {
    let f = load("echo-c", StartMode::Cold);
    for pool_size in [0, 3] {
        let runtime = Runtime::new(RuntimeConfig { pool_size, ..Default::default() }).unwrap();
        runtime.keep_ready(&f);
        for i in 0..20u64 {
            let request = bytes(500, i);
            assert_eq!(pooled_call(&runtime, &f, &request).stdout, request);
        }
        let stats = runtime.pool_stats();
        if pool_size == 0 {
            assert_eq!(stats.created_inline, 20, "no pool: every VM inline");
            assert_eq!(stats.destroyed, 20, "and destroyed inline");
        }
    }
}

#[test]
fn a_forgotten_function_releases_its_ready_vms() {
    let (dir, f) = snapshotted_copy("echo-c");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 2, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    runtime.forget(&f);
    assert_eq!(runtime.pool_stats().ready, 0);
    // Calls still work, inline.
    assert_eq!(pooled_call(&runtime, &f, b"after").stdout, b"after");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_idle_function_gives_its_ready_vms_back_and_refills_on_its_next_call() {
    let (dir, f) = snapshotted_copy("hello-c");
    let config =
        RuntimeConfig { pool_size: 2, idle_timeout: std::time::Duration::from_millis(400), ..Default::default() };
    let runtime = Runtime::new(config).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    assert_eq!(runtime.pool_stats().ready, 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stats = runtime.pool_stats();
    assert_eq!((stats.ready, stats.evicted), (0, 2), "idle: nothing held ({stats:?})");
    // The next call still works (inline), and brings the pool back.
    assert_eq!(pooled_call(&runtime, &f, b"back").stdout, b"Hello from C! You sent 4 bytes.\n");
    let started = std::time::Instant::now();
    while runtime.pool_stats().ready < 2 && started.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(runtime.pool_stats().ready, 2, "refilled after a call");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_pool_counts_hits_and_misses_per_function_and_parallel_fillers_do_not_overshoot() {
    let (dir, f) = snapshotted_copy("echo-c");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 3, fill_threads: 2, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    // Two fillers racing for one function still stop at its target.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stats = runtime.pool_stats();
    assert_eq!(stats.ready, 3, "{stats:?}");
    assert_eq!(stats.created, 3, "{stats:?}");
    let vms: Vec<_> = (0..5).map(|_| runtime.take_vm(&f).unwrap()).collect();
    let stats = runtime.pool_stats();
    let mine = stats.functions.iter().find(|s| s.name == f.name()).expect("per-function stats");
    assert_eq!(mine.hits + mine.misses, 5, "{mine:?}");
    // Three were ready; the other two are hits or misses depending on how fast the two
    // fillers refill, but each take is counted once.
    assert!(mine.hits >= 3, "five takes from a full pool of three: {mine:?}");
    assert!(mine.fill_cpu > std::time::Duration::ZERO && mine.fill_cpu <= stats.fill_cpu, "{mine:?} {stats:?}");
    for vm in vms {
        let finished = f.start(vm, b"x").unwrap().run();
        runtime.release(finished.into_parts().1);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A call that finds the list empty while the filler is making a VM for it waits for that VM
/// instead of creating a second one beside it; a VM in the making serves one waiting call.
#[test]
fn a_call_waits_for_the_vm_the_pool_is_making_rather_than_make_its_own() {
    // CPython: a restore ahead takes milliseconds, so the take below lands while it runs.
    let (dir, f) = snapshotted_copy("hellowithdata-py");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 1, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    let mut vms = Vec::new();
    for _ in 0..20 {
        // The one ready VM goes; the filler starts the next one.
        vms.push(runtime.take_vm(&f).unwrap());
        let started = std::time::Instant::now();
        let s = loop {
            let s = runtime.function_stats(&f).unwrap();
            if s.making == 1 || s.ready == 1 || started.elapsed().as_secs() >= 10 {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        };
        assert!(s.making == 1 || s.ready == 1, "the pool did not start a refill: {s:?}");
        // Ready by now, or in the making: waited for (a miss only if the wait timed out,
        // when the restore ahead took longer than MAX_WAIT_FOR_FILLER beside other tests).
        vms.push(runtime.take_vm(&f).unwrap());
        if runtime.function_stats(&f).unwrap().waited > 0 {
            break;
        }
        runtime.wait_until_full();
    }
    let s = runtime.function_stats(&f).unwrap();
    assert!(s.waited > 0, "no take ever waited for the VM in the making: {s:?}");
    assert_eq!(s.hits + s.misses, vms.len() as u64, "{s:?}");
    assert_eq!(runtime.pool_stats().created_inline, s.misses);
    // What a waiting call got is a VM restored ahead like any other.
    for vm in vms {
        let (outcome, used) = f.start(vm, br#"{"name": "w"}"#).unwrap().run().into_parts();
        runtime.release(used);
        let got: serde_json::Value = serde_json::from_slice(&outcome.unwrap().stdout).unwrap();
        assert_eq!(got, serde_json::json!({"name": "w"}));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn used_vms_never_pile_up_behind_the_reaper() {
    let f = load("echo-c", StartMode::Cold);
    let runtime = Runtime::new(RuntimeConfig { pool_size: 1, ..Default::default() }).unwrap();
    let mut finished: Vec<_> = (0..40).map(|_| f.start(runtime.take_vm(&f).unwrap(), b"x").unwrap().run()).collect();
    // Forty used VMs released back to back, far faster than one reaper thread destroys them.
    while let Some(call) = finished.pop() {
        runtime.release(call.into_parts().1);
        let s = runtime.pool_stats();
        let waiting = (s.created - s.destroyed) as usize - finished.len() - s.ready;
        // At most REAPER_BACKLOG queued, plus one being destroyed and one the pool is making.
        assert!(waiting <= vmm::REAPER_BACKLOG + 2, "{waiting} used VMs not yet destroyed: {s:?}");
    }
}

/// Polls the function's pool counters until `done` holds (10 s at most).
fn wait_for(runtime: &Runtime, f: &Function, done: impl Fn(&vmm::FunctionPoolStats) -> bool) -> vmm::FunctionPoolStats {
    let started = std::time::Instant::now();
    loop {
        let s = runtime.function_stats(f).expect("the function asked for VMs");
        if done(&s) || started.elapsed() > std::time::Duration::from_secs(10) {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn scaling_sets_a_functions_ready_vms_and_zero_is_the_idle_release() {
    let (dir, f) = snapshotted_copy("echo-c");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 3, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    let s = wait_for(&runtime, &f, |s| s.ready == 3);
    assert_eq!((s.ready, s.target, s.idle), (3, 3, false), "{s:?}");
    // Down to zero: its VMs are destroyed as if it had gone idle, and none are made.
    runtime.scale(&f, 0);
    let s = wait_for(&runtime, &f, |s| s.ready == 0);
    assert_eq!((s.ready, s.idle), (0, true), "{s:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(runtime.function_stats(&f).unwrap().ready, 0, "an idle function is not refilled");
    // A call still works (inline) and wakes it up: refilled to the runtime's pool size.
    assert_eq!(pooled_call(&runtime, &f, b"from zero").stdout, b"from zero");
    let s = wait_for(&runtime, &f, |s| s.ready == 3);
    assert_eq!((s.ready, s.idle), (3, false), "{s:?}");
    // A per-function target above and below the pool size.
    runtime.scale(&f, 5);
    let s = wait_for(&runtime, &f, |s| s.ready == 5);
    assert_eq!((s.ready, s.target), (5, 5), "{s:?}");
    runtime.scale(&f, 1);
    // A lower target does not destroy ready VMs; calls use them up and the pool stops at 1.
    for _ in 0..5 {
        pooled_call(&runtime, &f, b"x");
    }
    let s = wait_for(&runtime, &f, |s| s.ready == 1);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let s2 = runtime.function_stats(&f).unwrap();
    assert_eq!((s.ready, s2.ready, s2.target), (1, 1, 1), "{s2:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `leftover` looks for what an earlier call left (in fresh mmap memory, the heap's new top,
/// deep stack, xmm15, snapshot data in and outside a huge window) and leaves a secret there.
/// In fresh VMs with new memory, in fresh VMs around a finished VM's memory reset (the
/// default, `memory_reuse.rs`) and in recycled shells (the experiment, `recycle.rs`) alike,
/// every call must find nothing; where memory reuse or shells are on, they must really have
/// been used.
#[test]
fn no_call_finds_what_an_earlier_call_left_in_fresh_vms_reused_memory_or_recycled_shells() {
    let (dir, f) = snapshotted_copy("leftover");
    for (recycle, reuse) in [(false, false), (false, true), (true, false)] {
        let config =
            RuntimeConfig { pool_size: 2, recycle_vm_shells: recycle, reuse_memory: reuse, ..Default::default() };
        let runtime = Runtime::new(config).unwrap();
        runtime.keep_ready(&f);
        runtime.wait_until_full();
        for i in 0..40 {
            let out = pooled_call(&runtime, &f, b"x");
            let mode = format!("recycled shells: {recycle}, memory reuse: {reuse}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "clean\n", "call {i}, {mode}");
            if i % 3 == 0 {
                // Let the reaper turn used VMs into shells (or reset their memory) and the
                // pool restore into them.
                std::thread::sleep(std::time::Duration::from_millis(20));
                runtime.wait_until_full();
            }
        }
        let stats = runtime.pool_stats();
        if recycle {
            assert!(stats.recycled >= 20, "the shells were not used: {stats:?}");
            assert!(stats.created < 20, "{stats:?}");
        } else {
            assert_eq!(stats.recycled, 0, "{stats:?}");
            assert!(stats.created >= 40, "every call got a new VM: {stats:?}");
        }
        if reuse {
            assert!(stats.memory_reused >= 20, "no memory was reused: {stats:?}");
            assert!(stats.memory_held <= vmm::MEMORY_REUSE_CAPACITY, "{stats:?}");
        } else {
            assert_eq!((stats.memory_reused, stats.memory_held), (0, 0), "{stats:?}");
        }
        // The 2 MiB window every call writes whole was filled in earlier VMs' huge pages.
        assert!(stats.huge_pages_reused >= 20, "no huge page was reused: {stats:?}");
        assert!(stats.huge_pages_held <= vmm::HUGE_PAGE_CACHE_CAPACITY, "{stats:?}");
        // Released (as going idle does), the pool holds no VM, no huge page, no memory.
        runtime.scale(&f, 0);
        let held = |s: &vmm::PoolStats| (s.ready, s.huge_pages_held, s.memory_held);
        let started = std::time::Instant::now();
        while held(&runtime.pool_stats()) != (0, 0, 0) && started.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let stats = runtime.pool_stats();
        assert_eq!(held(&stats), (0, 0, 0), "idle, yet holding: {stats:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A call that finds the pool empty creates its VM inline, around a kept memory when the
/// reaper has one (under load the filler cannot use them all): those calls too must find
/// nothing. Six calls at once against a pool of two and one filler: two hits, at most one
/// waiting for the VM being made, the others inline.
#[test]
fn calls_that_find_the_pool_empty_get_reset_memory_and_still_find_nothing() {
    let (dir, f) = snapshotted_copy("leftover");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 2, ..Default::default() }).unwrap();
    runtime.keep_ready(&f);
    runtime.wait_until_full();
    for round in 0..15 {
        let start = std::sync::Barrier::new(6);
        let outputs: Vec<String> = std::thread::scope(|s| {
            let calls: Vec<_> = (0..6)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let vm = runtime.take_vm(&f).unwrap();
                        let (outcome, used_vm) = f.start(vm, b"x").unwrap().run().into_parts();
                        runtime.release(used_vm);
                        String::from_utf8_lossy(&outcome.unwrap().stdout).into_owned()
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for (i, out) in outputs.iter().enumerate() {
            assert_eq!(out, "clean\n", "round {round}, call {i}");
        }
        // Let the reaper reset the memories and the filler restore two of them.
        std::thread::sleep(std::time::Duration::from_millis(30));
        runtime.wait_until_full();
    }
    let stats = runtime.pool_stats();
    assert!(stats.created_inline >= 15, "{stats:?}");
    // The filler reuses at most one memory per VM it makes: more reused means inline VMs did.
    assert!(stats.memory_reused > stats.created - stats.created_inline, "no inline VM reused memory: {stats:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A VM taken for one function, restored ahead or made inline around a kept memory (which
/// still maps that function's snapshot), cannot start another function: that would show it
/// the first one's snapshot. A VM made inline around new memory can.
#[test]
fn a_vm_around_one_functions_kept_memory_cannot_start_another_function() {
    let (dir_a, counter) = snapshotted_copy("counter");
    let (dir_b, leftover) = snapshotted_copy("leftover");
    let runtime = Runtime::new(RuntimeConfig { pool_size: 1, ..Default::default() }).unwrap();
    runtime.keep_ready(&counter);
    let mut refused_inline = 0;
    for round in 0..10 {
        runtime.wait_until_full();
        // Three calls in flight and all released: the reaper keeps the three memories and
        // the filler takes one to refill. With two still kept, the VM made inline below gets
        // one even if the filler takes another for the refill the pool's VM triggers.
        let vms = [
            runtime.take_vm(&counter).unwrap(),
            runtime.take_vm(&counter).unwrap(),
            runtime.take_vm(&counter).unwrap(),
        ];
        for vm in vms {
            let (outcome, used_vm) = counter.start(vm, b"x").unwrap().run().into_parts();
            runtime.release(used_vm);
            assert_eq!(outcome.unwrap().stdout, b"counter=1\n", "round {round}");
        }
        // The reaper (at the background priority while its queue is short) files them in
        // its own time; the filler may have taken one already.
        let started = std::time::Instant::now();
        while (runtime.pool_stats().memory_held < 2 || runtime.pool_stats().ready == 0)
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        for vm in [runtime.take_vm(&counter).unwrap(), runtime.take_vm(&counter).unwrap()] {
            let empty = matches!(vm, vmm::FreshVm::Empty(_));
            match leftover.start(vm, b"x") {
                Err(vmm::StartError::PreparedForAnother { .. }) => refused_inline += usize::from(empty),
                Err(e) => panic!("round {round}: {e}"),
                Ok(call) => {
                    assert!(empty, "round {round}: a VM restored for counter started leftover");
                    let (outcome, used_vm) = call.run().into_parts();
                    runtime.release(used_vm);
                    assert_eq!(String::from_utf8_lossy(&outcome.unwrap().stdout), "clean\n");
                }
            }
        }
    }
    assert!(refused_inline > 0, "no inline VM around kept memory was made: {:?}", runtime.pool_stats());
    std::fs::remove_dir_all(dir_a).unwrap();
    std::fs::remove_dir_all(dir_b).unwrap();
}

/// A recycled shell (the experiment) must behave exactly as a fresh VM: each of these
/// functions (threads, signals, files, IPC, FPU state, an exit status, leftovers), called
/// a few times in each, gives the same outcome, and the shells are really used.
#[test]
fn recycled_shells_give_every_function_the_outcome_fresh_vms_give() {
    let functions = ["threads", "signals", "files", "ipc", "fpu-state", "exit-code", "counter", "leftover"];
    let copies: Vec<_> = functions.iter().map(|name| snapshotted_copy(name)).collect();
    let outcomes = |recycle: bool| -> Vec<String> {
        let runtime =
            Runtime::new(RuntimeConfig { pool_size: 1, recycle_vm_shells: recycle, ..Default::default() }).unwrap();
        let mut seen = Vec::new();
        for round in 0..3 {
            for (name, (_, f)) in functions.iter().zip(&copies) {
                runtime.keep_ready(f);
                let vm = runtime.take_vm(f).unwrap();
                let (outcome, used_vm) = f.start(vm, b"same request").unwrap().run().into_parts();
                runtime.release(used_vm);
                seen.push(match outcome {
                    Ok(out) => format!(
                        "{name} {round}: exit {} stdout {:?}",
                        out.exit_code,
                        String::from_utf8_lossy(&out.stdout)
                    ),
                    Err(e) => format!("{name} {round}: {}", e.to_string().split(" at rip").next().unwrap_or_default()),
                });
                // Let the reaper make the shell before the next call looks for one.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        if recycle {
            assert!(runtime.pool_stats().recycled > 0, "{:?}", runtime.pool_stats());
        }
        seen
    };
    let fresh = outcomes(false);
    let recycled = outcomes(true);
    for (f, r) in fresh.iter().zip(&recycled) {
        assert_eq!(f, r);
    }
    for (dir, _) in copies {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
