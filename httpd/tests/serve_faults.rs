//! Fault injection against the real `snapcall serve`: the snapshot file truncated, rewritten
//! or replaced while calls run; the disk full while a snapshot is written; VM creation failing
//! with EMFILE (RLIMIT_NOFILE) and ENOMEM (RLIMIT_AS); a storm of signals with a handler
//! (EINTR everywhere). In every case the server keeps serving what it can, each failed call
//! is a clear HTTP error, and it recovers when the fault goes away.

mod serve_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serve_support::{functions_dir, Client, Resp, Server};

/// A call that must be answered 200 with its own body echoed.
fn echo(srv: &Server, c: &mut Client, body: &str) {
    let r = srv.call(c, "POST", "/echo-c", body.as_bytes());
    assert_eq!((r.status, r.text()), (200, body.to_owned()), "log:\n{}", srv.log.lock().unwrap());
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGHUP, and wait until the rescan it starts has finished (its summary line is logged).
fn reload(srv: &Server) {
    let done = |srv: &Server| srv.log.lock().unwrap().matches("snapcall serve: functions:").count();
    let before = done(srv);
    srv.signal(libc::SIGHUP);
    wait_for("the reload to finish", Duration::from_secs(30), || done(srv) > before);
}

/// Files in `dir` whose name mentions the snapshot (the file itself and any temporary).
fn snapshot_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("kmsnap"))
        .collect();
    v.sort();
    v
}

/// A change made to a bundle's snapshot file under a running server.
type Fault = Box<dyn Fn(&Path)>;

/// What deploy tools do: a new file renamed over the old one, or the file deleted. The old
/// inode stays open and mapped, so these are safe on every restore path.
fn replacing_faults(other: Vec<u8>) -> Vec<(&'static str, Fault)> {
    vec![
        (
            "replaced by another function's snapshot",
            Box::new(move |p| {
                let tmp = p.with_extension("replace");
                std::fs::write(&tmp, &other).unwrap();
                std::fs::rename(&tmp, p).unwrap();
            }),
        ),
        ("deleted", Box::new(|p| std::fs::remove_file(p).unwrap())),
    ]
}

/// The same inode truncated or rewritten in place.
fn in_place_faults(len: usize) -> Vec<(&'static str, Fault)> {
    vec![
        ("truncated to 0", Box::new(|p| std::fs::File::options().write(true).open(p).unwrap().set_len(0).unwrap())),
        (
            "truncated to 4 KiB",
            Box::new(|p| std::fs::File::options().write(true).open(p).unwrap().set_len(4096).unwrap()),
        ),
        (
            "rewritten in place with garbage",
            Box::new(move |p| {
                let mut f = std::fs::File::options().write(true).open(p).unwrap();
                f.set_len(len as u64).unwrap();
                f.write_all(&vec![0xA5u8; len]).unwrap();
            }),
        ),
    ]
}

/// Applies each fault to `echo-c/snapshot.kmsnap` under a running server: every call still
/// answers 200 with its body, hello-c too; then (the file deleted by the last fault) a SIGHUP
/// makes the registry notice and write a fresh, valid snapshot, and a garbage file is refused
/// on reload (payload hash) and replaced the same way.
fn snapshot_file_faults(pool: &str, in_place: bool) {
    let dir = functions_dir(&["echo-c", "hello-c"]);
    let srv = Server::start(&dir, &["--pool-size", pool, "--threads", "1"]);
    let snap = dir.join("echo-c/snapshot.kmsnap");
    let good = std::fs::read(&snap).expect("the server took echo-c's snapshot at start");
    let other = std::fs::read(dir.join("hello-c/snapshot.kmsnap")).unwrap();
    let mut c = srv.connect();
    echo(&srv, &mut c, "before");

    let mut faults = if in_place { in_place_faults(good.len()) } else { Vec::new() };
    faults.extend(replacing_faults(other));
    for (what, fault) in &faults {
        fault(&snap);
        for i in 0..15 {
            echo(&srv, &mut c, &format!("{what} {i}"));
        }
        assert_eq!(srv.call(&mut c, "POST", "/hello-c", b"").status, 200, "hello-c after echo-c's snapshot was {what}");
    }
    assert_eq!(srv.metric("snapcall_call_errors_total{function=\"echo-c\",kind=\"host\"}"), 0.0);

    // The file is gone; a reload notices the changed bundle and writes a fresh, valid snapshot.
    reload(&srv);
    assert!(snap.is_file(), "no fresh snapshot after SIGHUP");
    echo(&srv, &mut c, "after reload");
    // A garbage file is refused on reload (payload hash) and replaced too.
    let tmp = snap.with_extension("garbage");
    std::fs::write(&tmp, b"\x7fELF garbage").unwrap();
    std::fs::rename(&tmp, &snap).unwrap();
    reload(&srv);
    assert!(std::fs::metadata(&snap).is_ok_and(|m| m.len() > 4096), "the garbage snapshot was kept");
    echo(&srv, &mut c, "after the garbage was replaced");
    let log = srv.log.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("took a fresh snapshot"), "{log}");
    assert_eq!(snapshot_files(&dir.join("echo-c")), ["snapshot.kmsnap"], "temporary files left behind");
}

#[test]
fn snapshot_file_replaced_or_deleted_while_serving() {
    snapshot_file_faults("4", false);
    snapshot_file_faults("0", false);
}

/// The snapshot file truncated or rewritten in place under a running server, pool off and
/// on. Guest memory only ever maps the sealed in-memory copy of the snapshot, so this cannot
/// SIGBUS the server (it did, "killed by signal 7", while calls made inline mapped the file
/// itself), and a rewrite changes no page a call sees.
#[test]
fn snapshot_file_truncated_or_rewritten_in_place_while_serving() {
    snapshot_file_faults("0", true);
    snapshot_file_faults("4", true);
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = std::env::temp_dir().join(format!("snapcall-tmpfs-{}-{size}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            return None;
        }
        Some(Tmpfs(dir))
    }

    /// Fills what is left of it (ENOSPC) with `name`.
    fn fill(&self, name: &str) {
        let mut f = std::fs::File::create(self.0.join(name)).unwrap();
        let chunk = vec![1u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling the tmpfs: {e}");
                    break;
                }
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn copy_bundle(name: &str, to: &Path) {
    let src = functions_dir(&[name]);
    let ok = Command::new("cp").arg("-a").arg(src.join(name)).arg(to.join(name)).status().unwrap().success();
    assert!(ok);
    let _ = std::fs::remove_dir_all(src);
}

#[test]
fn a_full_disk_while_writing_a_snapshot_leaves_no_partial_file_and_the_function_is_served_cold() {
    let Some(fs) = Tmpfs::mount("4m") else {
        eprintln!("cannot mount a tmpfs (not root?): skipped");
        return;
    };
    let functions = fs.0.join("functions");
    std::fs::create_dir_all(&functions).unwrap();
    copy_bundle("echo-c", &functions);
    let bundle = functions.join("echo-c");
    let _ = std::fs::remove_file(bundle.join("snapshot.kmsnap"));
    fs.fill("filler");

    // `snapcall snapshot` onto the full disk: a clear error, a failing exit, no file.
    let out = Command::new(env!("CARGO_BIN_EXE_snapcall")).arg("snapshot").arg(&bundle).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "snapshot on a full disk succeeded: {stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert_eq!(snapshot_files(&bundle), Vec::<String>::new(), "a partial snapshot was left behind");

    // The server cannot write the snapshot either: it says so and serves the function cold.
    let srv = Server::start(&functions, &["--threads", "1"]);
    let mut c = srv.connect();
    echo(&srv, &mut c, "cold on a full disk");
    let log = srv.log.lock().unwrap().clone();
    assert!(log.contains("snapshotting failed") && log.contains("calls start cold"), "{log}");
    assert_eq!(snapshot_files(&bundle), Vec::<String>::new(), "a partial snapshot was left behind");

    // Space again, the bundle touched, SIGHUP: the snapshot is written and used.
    std::fs::remove_file(fs.0.join("filler")).unwrap();
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).unwrap();
    std::fs::write(&config, [text.as_slice(), b"\n"].concat()).unwrap();
    reload(&srv);
    assert!(bundle.join("snapshot.kmsnap").is_file(), "no snapshot once there is space");
    echo(&srv, &mut c, "restored after the disk had room again");
    assert_eq!(snapshot_files(&bundle), ["snapshot.kmsnap"]);
    drop(srv);
}

fn set_rlimit(pid: i32, resource: libc::__rlimit_resource_t, soft: u64) -> libc::rlimit {
    // SAFETY: zeroed rlimit is valid; prlimit only fills `old` for our own child.
    let mut old: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: see above; the pointer is to a live local.
    let rc = unsafe { libc::prlimit(pid, resource, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit { rlim_cur: soft, rlim_max: old.rlim_max };
    // SAFETY: a valid new value for our own child, no old one wanted.
    let rc = unsafe { libc::prlimit(pid, resource, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

fn restore_rlimit(pid: i32, resource: libc::__rlimit_resource_t, old: libc::rlimit) {
    // SAFETY: prlimit with a valid new value and no old one, on our own child.
    let rc = unsafe { libc::prlimit(pid, resource, &old, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

fn status_kib(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The server's open KVM VM descriptors.
fn kvm_vm_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("kvm-vm"))
        .count()
}

/// A failed call: a 5xx whose JSON body names the failing step.
fn assert_clear_5xx(r: &Resp, reasons: &[&str]) {
    assert!((500..600).contains(&r.status), "expected a 5xx, got {} {}", r.status, r.text());
    let body = r.text();
    assert!(reasons.iter().any(|why| body.contains(&format!("\"error\":\"{why}\""))), "unclear error body: {body}");
    assert!(body.contains("\"detail\":"), "{body}");
}

#[test]
fn vm_creation_failing_with_emfile_or_enomem_is_a_clear_5xx_and_the_server_recovers() {
    // Pool off: every call creates its VM inline, so the failure is the call's own.
    let srv = Server::start(&functions_dir(&["echo-c"]), &["--pool-size", "0", "--threads", "1"]);
    let pid = srv.pid();
    let mut c = srv.connect();
    echo(&srv, &mut c, "warm");

    // EMFILE: no descriptor left (stdin, stdout and stderr are open: nothing below 3 is free)
    // for KVM_CREATE_VM, the vCPU, the guest memory, nor for accepting a connection.
    let old = set_rlimit(pid, libc::RLIMIT_NOFILE, 3);
    for _ in 0..5 {
        let r = srv.call(&mut c, "POST", "/echo-c", b"no fds");
        assert_clear_5xx(&r, &["kvm", "vm_ioctl", "vm_memory", "timer", "restore", "vm_warm_up"]);
        assert!(r.text().contains("Too many open files"), "{}", r.text());
        assert_eq!(srv.call(&mut c, "GET", "/healthz", b"").status, 200);
    }
    // A client that connects meanwhile is still accepted (io_uring's multishot accept took
    // the descriptor limit when it was armed), and its call fails as clearly.
    let mut late = srv.connect();
    late.send_raw(&serve_support::encode("POST", "/echo-c", &[], b"late"));
    let r = late.read_response().expect("the connection that came during EMFILE is answered");
    assert_clear_5xx(&r, &["kvm", "vm_ioctl", "vm_memory", "timer", "restore", "vm_warm_up"]);
    restore_rlimit(pid, libc::RLIMIT_NOFILE, old);
    echo(&srv, &mut late, "late, fds are back");
    echo(&srv, &mut c, "fds are back");

    // ENOMEM: an address-space limit leaves no room for a guest's 64 MiB.
    // (Once the reaper has destroyed the last call's VM, whose memory VmSize still counts.)
    // Only the process-wide keep-alive VM is left then; its memory goes right after its fd.
    wait_for("the last VM destroyed", Duration::from_secs(10), || kvm_vm_fds(pid) <= 1);
    std::thread::sleep(Duration::from_millis(300));
    let vm_kib = status_kib(pid, "VmSize:");
    let old = set_rlimit(pid, libc::RLIMIT_AS, (vm_kib + 16 * 1024) * 1024);
    for _ in 0..5 {
        let r = srv.call(&mut c, "POST", "/echo-c", b"no memory");
        assert_clear_5xx(&r, &["vm_memory"]);
        assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")));
        assert!(r.text().contains("Cannot allocate memory"), "{}", r.text());
        assert_eq!(srv.call(&mut c, "GET", "/healthz", b"").status, 200);
    }
    restore_rlimit(pid, libc::RLIMIT_AS, old);
    echo(&srv, &mut c, "memory is back");
    let log = srv.log.lock().unwrap().clone();
    assert!(!log.contains("panicked"), "{log}");
}

/// A server of echo-c on one loop, one call answered and at least one VM ready in its pool.
fn echo_server_with_its_pool_filled() -> (Server, Client) {
    let srv = Server::start(&functions_dir(&["echo-c"]), &["--threads", "1"]);
    let mut c = srv.connect();
    echo(&srv, &mut c, "warm");
    wait_for("the pool filled", Duration::from_secs(20), || srv.metric("snapcall_pool_ready_vms") >= 1.0);
    (srv, c)
}

#[test]
fn vm_creation_failing_under_the_pool_is_a_clear_5xx_and_the_pool_recovers() {
    let (srv, mut c) = echo_server_with_its_pool_filled();
    let pid = srv.pid();
    let old = set_rlimit(pid, libc::RLIMIT_NOFILE, 3);
    // The ready VMs are served first; once they are gone the calls fail clearly.
    let (mut ok, mut failed) = (0, 0);
    for i in 0..12 {
        let body = format!("pool {i}");
        let r = srv.call(&mut c, "POST", "/echo-c", body.as_bytes());
        if r.status == 200 {
            assert_eq!(r.text(), body);
            ok += 1;
        } else {
            assert_clear_5xx(&r, &["kvm", "vm_ioctl", "vm_memory", "timer", "restore", "vm_warm_up"]);
            failed += 1;
        }
        assert_eq!(srv.call(&mut c, "GET", "/healthz", b"").status, 200);
    }
    assert!(failed > 0, "no call failed with no descriptors left ({ok} succeeded)");
    restore_rlimit(pid, libc::RLIMIT_NOFILE, old);
    for i in 0..10 {
        echo(&srv, &mut c, &format!("recovered {i}"));
    }
    assert!(!srv.log.lock().unwrap().contains("panicked"));
}

/// A transient VM creation failure (EMFILE here) must not turn the pool off for the
/// function: the filler backs off and retries (it used to drop the function's list, so every
/// later call created its VM inline until a reload).
#[test]
fn the_pool_refills_after_a_transient_vm_creation_failure() {
    let (srv, mut c) = echo_server_with_its_pool_filled();
    let pid = srv.pid();
    let old = set_rlimit(pid, libc::RLIMIT_NOFILE, 3);
    for i in 0..8 {
        let _ = srv.call(&mut c, "POST", "/echo-c", format!("drain {i}").as_bytes());
    }
    restore_rlimit(pid, libc::RLIMIT_NOFILE, old);
    for i in 0..5 {
        echo(&srv, &mut c, &format!("recovered {i}"));
    }
    wait_for("the pool refilled", Duration::from_secs(20), || srv.metric("snapcall_pool_ready_vms") >= 1.0);
}

/// The vmm's deadline kick (a real handler, SA_RESTART) and signals whose default is to be
/// ignored, sent many times per millisecond to every thread of the server while calls run.
#[test]
fn an_eintr_storm_does_not_disturb_calls() {
    let srv = Server::start(&functions_dir(&["echo-c", "hello-c"]), &[]);
    let pid = srv.pid();
    let mut c = srv.connect();
    // The first call installs the kick handler (before it, the signal's default would kill
    // the process: signals from the host's operator are not part of the threat model).
    echo(&srv, &mut c, "warm");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let storm = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let kick = libc::SIGRTMIN() + 3;
            while !stop.load(Ordering::Relaxed) {
                let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
                    .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
                    .unwrap_or_default();
                for _ in 0..20 {
                    for &tid in &tids {
                        for sig in [kick, libc::SIGCHLD, libc::SIGURG, libc::SIGWINCH] {
                            // SAFETY: tgkill to threads of our own child with handled or ignored signals.
                            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // SAFETY: kill(2) on our own child: a process-directed kick too.
                    unsafe { libc::kill(pid, kick) };
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let start = Instant::now();
    let mut calls = 0;
    let mut other = srv.connect();
    while start.elapsed() < Duration::from_secs(4) {
        echo(&srv, &mut c, &format!("storm {calls}"));
        let r = srv.call(&mut other, "GET", "/hello-c", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(srv.call(&mut other, "GET", "/healthz", b"").status, 200);
        calls += 1;
    }
    stop.store(true, Ordering::Relaxed);
    storm.join().unwrap();
    let elapsed = start.elapsed();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{calls} call pairs under {sent} signals in {elapsed:?} ({:.0}/ms)",
        sent as f64 / elapsed.as_millis() as f64
    );
    assert!(sent as f64 / elapsed.as_millis() as f64 > 10.0, "the storm was too weak: {sent} signals");
    assert!(calls >= 20, "only {calls} calls in 4 s");
    assert_eq!(srv.metric("snapcall_call_errors_total{function=\"echo-c\",kind=\"host\"}"), 0.0);
    assert_eq!(srv.metric("snapcall_call_errors_total{function=\"echo-c\",kind=\"deadline\"}"), 0.0);
    assert!(!srv.log.lock().unwrap().contains("panicked"));
}
