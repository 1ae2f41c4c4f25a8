//! Guest threads on the VM's one vCPU (guest `threads`, glibc pthreads): locks, condvars,
//! joins, preemption of a spinning thread, FPU state across switches, exits, the thread
//! limit, and a snapshot refused while threads live.

mod common;

use common::*;
use vmm::{CallError, StartMode};

fn run(scenario: &str) -> vmm::Output {
    output(&load("threads", StartMode::Cold), scenario.as_bytes())
}

fn stdout(o: &vmm::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts the call printed exactly `want`, showing its stderr when it did not.
fn assert_stdout(o: &vmm::Output, want: &str) {
    assert_eq!(stdout(o), want, "stderr: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn pthread_mutexes_condvars_and_joins_work_across_threads() {
    let o = run("pthreads");
    assert_stdout(&o, "counter 80000, joined values 1004, main tls 7\nconsumer sum 5050 of 5050\n");
    assert_eq!(o.exit_code, 0);
}

#[test]
fn a_thread_that_spins_without_syscalls_is_preempted() {
    assert_eq!(stdout(&run("spin")), "the main thread ran again while a thread spun: yes\n");
}

/// A thread switch at the return of a syscall that changed page tables (the other thread's
/// mprotect): the page-table writer runs on the way back, and the thread that runs next must
/// get its own registers, not those of the thread whose syscall it was.
#[test]
fn registers_survive_a_switch_where_page_tables_changed() {
    assert_stdout(&run("mapping-switch"), "rounds with changed registers: 0 of 20000\n");
}

#[test]
fn sse_registers_survive_preemption_in_every_thread() {
    assert_eq!(stdout(&run("fpu")), "fpu mismatches across switches: 0\n");
}

#[test]
fn thread_exits_join_values_and_the_last_threads_status() {
    let o = run("exits");
    assert_stdout(&o, "pthread_exit value 42\ndetached thread ran\nthe last thread exits with 7\n");
    assert_eq!(o.exit_code, 7, "the main thread left first; the last one's exit is the call's");
}

#[test]
fn threads_beyond_the_limit_are_eagain_and_the_rest_still_join() {
    let limit = vmm::MAX_THREADS - 1;
    assert_eq!(stdout(&run("too-many")), format!("created {limit} threads besides main, then EAGAIN\nall joined\n"));
}

#[test]
fn a_read_of_an_empty_pipe_waits_for_the_thread_that_writes_it() {
    assert_eq!(
        stdout(&run("pipe")),
        "read 5 bytes: hello\npoll: 1 ready, POLLIN 1\nwriter blocked on a full pipe until the reader drained it: 200000 bytes\n"
    );
}

#[test]
fn sched_yield_hands_the_vcpu_to_the_other_thread() {
    assert_eq!(stdout(&run("yield")), "turns taken through sched_yield: 50\n");
}

#[test]
fn a_deadlock_ends_the_call_at_once_naming_what_each_thread_waits_for() {
    let f = load("threads", StartMode::Cold);
    let finished = call(&f, b"deadlock");
    match finished.outcome() {
        Err(CallError::Unsupported(why)) => {
            assert!(why.starts_with("every thread waits for something nothing can bring"), "{why}");
            for tid in [100, 101] {
                assert!(why.contains(&format!("thread {tid} in futex waiting for a wake of the futex at 0x")), "{why}");
            }
        }
        other => panic!("expected a deadlock, got {other:?}"),
    }
    assert!(finished.timings().run < f.config().limits.timeout / 2, "it must not wait for the deadline");
}

#[test]
fn a_snapshot_with_live_threads_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("threads-snapshot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    let src = std::env::temp_dir().join(format!("threads-before-read-{}.c", std::process::id()));
    std::fs::write(
        &src,
        r#"#include <pthread.h>
#include <unistd.h>
static void *idle(void *a) { for (;;) pause(); }
int main(void) { pthread_t t; char b[8]; pthread_create(&t, 0, idle, 0); read(0, b, 8); return 0; }
"#,
    )
    .unwrap();
    let bin = dir.join("rootfs/bin/early-thread");
    let cc = std::process::Command::new("gcc").args(["-O2", "-static", "-o"]).arg(&bin).arg(&src).status().unwrap();
    assert!(cc.success());
    let config = std::fs::read_to_string(bundle("threads").join("config.json"))
        .unwrap()
        .replace("/bin/threads", "/bin/early-thread");
    std::fs::write(dir.join("config.json"), config).unwrap();
    let f = vmm::Function::load(&dir, StartMode::Cold).unwrap();
    let out = dir.join(vmm::snapshot::SNAPSHOT_FILE);
    let Err(err) = f.take_snapshot(&out) else { panic!("the snapshot must be refused") };
    let text = err.to_string();
    assert!(!out.exists(), "no snapshot file is left behind");
    assert!(text.contains("2 threads at its first read of stdin") && text.contains("keeps only one"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&src);
}

/// Several calls with threads at once, each preempted and kicked while the host is busy:
/// the kick timer of one call must neither starve its own guest (a kick that found the vCPU
/// inside a monitor stub once re-armed at once, forever) nor lose a switch.
#[test]
fn threaded_calls_side_by_side_on_a_busy_host_all_finish() {
    let workers: Vec<_> = ["pthreads", "yield", "exits", "fpu"]
        .into_iter()
        .map(|scenario| {
            std::thread::spawn(move || {
                let mut f = load("threads", StartMode::Cold);
                f.cap_timeout(std::time::Duration::from_secs(5));
                for round in 0..3 {
                    let finished = call(&f, scenario.as_bytes());
                    if let Err(e) = finished.outcome() {
                        panic!("{scenario} round {round}: {e}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
