//! CPython's tempfile, pathlib, shutil, os.pipe, selectors and asyncio in a VM: a writable
//! /tmp and cwd, files written at import time present in every restored call, in-VM pipes and
//! socketpairs driven by epoll, and the network refused as PermissionError.

mod common;

use common::*;
use vmm::snapshot::SNAPSHOT_FILE;
use vmm::{Function, StartMode};

const SOURCE: &str = r#"import asyncio, os, pathlib, selectors, shutil, socket, tempfile

# At import, before the snapshot point: in every call restored from it.
with open("/tmp/at-import.txt", "w") as f:
    f.write("written at import")

def handler(event, context):
    out = {}
    out["at_import"] = pathlib.Path("/tmp/at-import.txt").read_text()
    with open("/tmp/at-import.txt", "a") as f:
        f.write(" and by a call")  # the next call must not see this
    out["tempdir"] = tempfile.gettempdir()
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d)
        (p / "a.txt").write_text("alpha")
        (p / "sub").mkdir()
        shutil.copy(p / "a.txt", p / "sub" / "b.txt")
        os.rename(p / "sub" / "b.txt", p / "sub" / "c.txt")
        out["glob"] = sorted(str(x.relative_to(p)) for x in p.rglob("*"))
        out["copied"] = (p / "sub" / "c.txt").read_text()
        shutil.rmtree(p / "sub")
        out["after_rmtree"] = sorted(os.listdir(d))
    out["tempdir_removed"] = not os.path.exists(d)
    with tempfile.NamedTemporaryFile("w+") as t:
        t.write("named")
        t.flush()
        t.seek(0)
        out["named"] = t.read()
    pathlib.Path("cwd-file").write_text("in the cwd")
    out["cwd_file"] = open("cwd-file").read()
    st = os.statvfs("/tmp")
    out["statvfs_room"] = st.f_bavail > 0 and st.f_bsize == 4096

    r, w = os.pipe()
    os.write(w, b"through a pipe")
    out["pipe"] = os.read(r, 100).decode()
    os.set_blocking(r, False)
    try:
        os.read(r, 1)
        out["pipe_empty"] = "read"
    except BlockingIOError:
        out["pipe_empty"] = "EAGAIN"

    a, b = socket.socketpair()
    sel = selectors.DefaultSelector()
    sel.register(b, selectors.EVENT_READ, "b")
    out["selector"] = type(sel).__name__
    out["idle"] = sel.select(timeout=0.01)
    a.send(b"ping")
    out["ready"] = [key.data for key, _ in sel.select(timeout=1)]
    out["recv"] = b.recv(10).decode()
    sel.close()

    async def main():
        loop = asyncio.get_running_loop()
        x, y = socket.socketpair()
        x.setblocking(False)
        y.setblocking(False)
        await loop.sock_sendall(x, b"async hello")
        data = await asyncio.wait_for(loop.sock_recv(y, 100), 1)
        await asyncio.sleep(0.01)
        x.close()
        y.close()
        return data.decode()
    out["asyncio"] = asyncio.run(main())

    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        out["inet"] = "made"
    except PermissionError as e:
        out["inet"] = "PermissionError errno %d" % e.errno
    return out
"#;

fn bundle_with(tag: &str) -> std::path::PathBuf {
    let dst = std::env::temp_dir().join(format!("snapcall-pyfiles-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let copied = std::process::Command::new("cp").arg("-a").arg(bundle("py-time")).arg(&dst).status();
    assert!(copied.is_ok_and(|s| s.success()), "copying py-time");
    let _ = std::fs::remove_file(dst.join(SNAPSHOT_FILE));
    let _ = std::fs::remove_dir_all(dst.join("rootfs/function/__pycache__"));
    std::fs::write(dst.join("rootfs/function/py_time.py"), SOURCE).unwrap();
    dst
}

#[test]
fn tempfile_pathlib_shutil_pipes_selectors_and_asyncio_work_cold_and_restored() {
    let dir = bundle_with("all");
    let cold = Function::load(&dir, StartMode::Cold).unwrap();
    cold.take_snapshot(&dir.join(SNAPSHOT_FILE)).unwrap();
    let restored = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    let expected = serde_json::json!({
        "at_import": "written at import",
        "tempdir": "/tmp",
        "glob": ["a.txt", "sub", "sub/c.txt"],
        "copied": "alpha",
        "after_rmtree": ["a.txt"],
        "tempdir_removed": true,
        "named": "named",
        "cwd_file": "in the cwd",
        "statvfs_room": true,
        "pipe": "through a pipe",
        "pipe_empty": "EAGAIN",
        "selector": "EpollSelector",
        "idle": [],
        "ready": ["b"],
        "recv": "ping",
        "asyncio": "async hello",
        "inet": "PermissionError errno 1",
    });
    for (name, f) in [("cold", &cold), ("restored", &restored), ("restored again", &restored)] {
        let out = output(f, b"{}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.exit_code, 0, "{name}: {text} {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        assert_eq!(got, expected, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// select and poll waiting while another thread runs: the scheduler runs a blocked call again
/// after each turn of another thread. select's fd sets are its input too, so they must be
/// as the program wrote them at that re-run (they were cleared when the call blocked, so the
/// re-run watched nothing and slept out its whole timeout: CPython's test_io lost its
/// interrupted-write tests to it); and a re-run keeps the first call's deadline (a thread
/// busy with syscalls and short sleeps re-ran a 0.2 s select for as long as it kept busy).
#[test]
fn select_and_poll_beside_other_threads_see_late_data_and_time_out_on_time() {
    let dir = common::python_bundle(
        "pyselect-threads",
        r#"import os, select, threading, time

def handler(event, context):
    out = {}
    r, w = os.pipe()
    def late_writer():
        time.sleep(0.05)
        os.write(w, b"x")
    t = threading.Thread(target=late_writer)
    t.start()
    t0 = time.monotonic()
    out["select_ready"] = select.select([r], [], [], 5.0)[0] == [r]
    out["select_quick"] = time.monotonic() - t0 < 2.0
    t.join()
    os.read(r, 1)
    t = threading.Thread(target=late_writer)
    t.start()
    p = select.poll()
    p.register(r, select.POLLIN)
    out["poll_ready"] = p.poll(5000) == [(r, select.POLLIN)]
    t.join()
    os.read(r, 1)
    stop = threading.Event()
    def busy():
        end = time.monotonic() + 3.0
        while not stop.is_set() and time.monotonic() < end:
            os.getppid()  # a syscall, then a block: its turn ends and a blocked call runs again
            time.sleep(0.002)
    b = threading.Thread(target=busy)
    b.start()
    t0 = time.monotonic()
    out["select_timed_out"] = select.select([r], [], [], 0.2) == ([], [], [])
    out["select_on_time"] = time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    out["poll_timed_out"] = p.poll(200) == []
    out["poll_on_time"] = time.monotonic() - t0 < 1.5
    stop.set()
    b.join()
    return out
"#,
    );
    let (got, _) = cold_json_call(&dir);
    let want = serde_json::json!({
        "select_ready": true, "select_quick": true, "poll_ready": true,
        "select_timed_out": true, "select_on_time": true, "poll_timed_out": true, "poll_on_time": true,
    });
    assert_eq!(got, want);
}

/// A blocking write to a pipe goes on until all of it is queued, as Linux's does (it
/// returned the 64 KiB that fit, so code that trusts a blocking write saw a short one), and
/// a signal that interrupts it after some bytes makes it return those.
#[test]
fn a_blocking_pipe_write_waits_for_room_until_all_is_written_or_a_signal_comes() {
    let dir = common::python_bundle(
        "pypipe-write",
        r#"import os, signal, threading, time

def handler(event, context):
    out = {}
    data = b"x" * (1 << 20)
    r, w = os.pipe()
    got = []
    def reader():
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            got.append(len(b))
    t = threading.Thread(target=reader)
    t.start()
    out["written"] = os.write(w, data)
    os.close(w)
    t.join()
    out["read"] = sum(got)
    os.close(r)
    r, w = os.pipe()
    caught = []
    signal.signal(signal.SIGALRM, lambda sig, frame: caught.append(sig))
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    t0 = time.monotonic()
    out["interrupted_write"] = os.write(w, data)
    out["blocked_until_the_alarm"] = time.monotonic() - t0 >= 0.09
    out["caught"] = caught
    return out
"#,
    );
    let (got, _) = cold_json_call(&dir);
    let want = serde_json::json!({
        "written": 1 << 20, "read": 1 << 20,
        "interrupted_write": 65536, "blocked_until_the_alarm": true, "caught": [14],
    });
    assert_eq!(got, want);
}
