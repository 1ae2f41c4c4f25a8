//! CPython's threading, signal and faulthandler modules in a VM: threads scheduled by the
//! monitor, handlers it runs, and a fatal fault that faulthandler reports before the call
//! ends as killed by the signal.

mod common;

use common::*;
use vmm::{CallError, Function, StartMode};

#[test]
fn python_threads_queues_signal_handlers_and_alarms_work() {
    let dir = common::python_bundle(
        "pythreads-threads",
        r#"import os, queue, signal, threading, time

def handler(event, context):
    q = queue.Queue()
    def worker(n):
        for i in range(n):
            q.put(i)
    threads = [threading.Thread(target=worker, args=(1000,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = 0
    while not q.empty():
        total += q.get()
    # A thread that spins in pure Python: the GIL must still change hands.
    stop = threading.Event()
    spins = [0]
    def spinner():
        while not stop.is_set():
            spins[0] += 1
    s = threading.Thread(target=spinner)
    s.start()
    time.sleep(0.05)
    stop.set()
    s.join()
    got = []
    signal.signal(signal.SIGUSR1, lambda sig, frame: got.append(sig))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.signal(signal.SIGALRM, lambda sig, frame: got.append(sig))
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    t0 = time.monotonic()
    time.sleep(0.2)  # the alarm interrupts it; PEP 475 sleeps out the rest
    slept = time.monotonic() - t0
    try:
        signal.raise_signal(signal.SIGINT)
        interrupted = False
    except KeyboardInterrupt:
        interrupted = True
    return {"total": total, "spun": spins[0] > 0, "signals": got, "slept_enough": slept >= 0.19,
            "keyboard_interrupt": interrupted, "threads": threading.active_count()}
"#,
    );
    let (v, text) = cold_json_call(&dir);
    assert_eq!(v["total"], 4 * 999 * 1000 / 2, "{text}");
    assert_eq!(v["spun"], true, "{text}");
    assert_eq!(v["signals"], serde_json::json!([10, 14]), "{text}");
    assert_eq!(v["slept_enough"], true, "{text}");
    assert_eq!(v["keyboard_interrupt"], true, "{text}");
    assert_eq!(v["threads"], 1, "{text}");
}

#[test]
fn faulthandler_reports_a_segfault_before_the_call_ends_as_killed_by_sigsegv() {
    let dir = common::python_bundle(
        "pythreads-faulthandler",
        "import faulthandler\n\
         def handler(event, context):\n    \
             faulthandler.enable()\n    \
             faulthandler._sigsegv()\n",
    );
    let f = Function::load(&dir, StartMode::Cold).unwrap();
    let finished = call(&f, b"{}");
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = finished.outcome();
    assert!(matches!(outcome, Err(CallError::Signal(11))), "{outcome:?}");
    let tail = String::from_utf8_lossy(finished.stderr_tail()).into_owned();
    assert!(tail.contains("Fatal Python error: Segmentation fault"), "{tail}");
    assert!(tail.contains("in handler"), "the traceback names the frame: {tail}");
}

#[test]
fn the_dispositions_cpython_set_before_its_snapshot_hold_in_every_restored_call() {
    // CPython ignores SIGPIPE and handles SIGINT from its start, long before the first read
    // of stdin where the snapshot is taken.
    let dir = common::python_bundle(
        "pythreads-dispositions",
        r#"import os, signal

def handler(event, context):
    try:
        signal.raise_signal(signal.SIGINT)
        keyboard_interrupt = False
    except KeyboardInterrupt:
        keyboard_interrupt = True
    r, w = os.pipe()
    os.close(r)
    try:
        os.write(w, b"x")
        broken_pipe = False
    except BrokenPipeError:
        broken_pipe = True
    return {"keyboard_interrupt": keyboard_interrupt, "broken_pipe": broken_pipe}
"#,
    );
    let cold = Function::load(&dir, StartMode::Cold).unwrap();
    cold.take_snapshot(&dir.join(vmm::snapshot::SNAPSHOT_FILE)).unwrap();
    let restored = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    for (mode, f) in [("cold", &cold), ("restored", &restored)] {
        let out = output(f, b"{}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            text.trim(),
            r#"{"keyboard_interrupt": true, "broken_pipe": true}"#,
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
