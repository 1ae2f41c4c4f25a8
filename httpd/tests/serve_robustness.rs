//! `snapcall serve` against misbehaving clients and SIGTERM: a slowloris client and a client
//! that disconnects mid-body do not disturb others; SIGTERM lets calls in flight finish.

mod serve_support;

use std::io::Write;
use std::time::{Duration, Instant};

use serve_support::{encode, functions_dir, Client, Server};

#[test]
fn slowloris_and_mid_body_disconnects_do_not_disturb_others() {
    let srv = Server::start(
        &functions_dir(&["echo-c"]),
        &["--header-timeout-ms", "1500", "--body-timeout-ms", "1500", "--threads", "1"],
    );
    // Slowloris: a head that never ends, one byte at a time.
    let mut slow_head = srv.connect();
    slow_head.send_raw(b"POST /echo-c HTTP/1.1\r\nX-Slow: ");
    // A body that never completes.
    let mut slow_body = srv.connect();
    slow_body.send_raw(b"POST /echo-c HTTP/1.1\r\nContent-Length: 1000\r\n\r\nabc");
    // Clients that vanish mid-body, many times over.
    for _ in 0..50 {
        let mut gone = srv.connect();
        gone.send_raw(b"POST /echo-c HTTP/1.1\r\nContent-Length: 100000\r\n\r\npartial");
    }

    // Meanwhile a well-behaved client on the same (single) event loop is served promptly.
    let mut good = srv.connect();
    let start = Instant::now();
    let mut i = 0;
    let mut worst = Duration::ZERO;
    while start.elapsed() < Duration::from_millis(2500) {
        let _ = slow_head.stream.write_all(b"a");
        let t = Instant::now();
        let body = format!("good-{i}");
        let r = good.request("POST", "/echo-c", &[], body.as_bytes());
        worst = worst.max(t.elapsed());
        assert_eq!((r.status, r.body), (200, body.into_bytes()));
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    // Well under the slow clients' 1.5 s deadlines: the good client never waited for them
    // (the bound is loose because other tests share the two cores).
    assert!(worst < Duration::from_millis(1000), "a good call took {worst:?}");
    assert!(i >= 20, "only {i} good calls in 2.5 s");

    // Both slow clients got 408 and were cut off within their deadlines.
    let r = slow_head.read_response().expect("408 for the slow head");
    assert_eq!(r.status, 408);
    assert!(slow_head.closed());
    let r = slow_body.read_response().expect("408 for the slow body");
    assert_eq!(r.status, 408);
    assert!(slow_body.closed());
    assert!(srv.metric("snapcall_timeouts_total{kind=\"header\"}") >= 1.0);
    assert!(srv.metric("snapcall_timeouts_total{kind=\"body\"}") >= 1.0);
    // Nothing was left open: only the metric client remains besides `good`.
    let t = Instant::now();
    while srv.metric("snapcall_connections_open") > 2.0 {
        assert!(t.elapsed() < Duration::from_secs(5), "connections leaked");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.metric("snapcall_call_errors_total{function=\"echo-c\",kind=\"host\"}"), 0.0);
}

#[test]
fn connection_limit_answers_503() {
    let srv = Server::start(&functions_dir(&["echo-c"]), &["--max-connections", "3"]);
    let mut held: Vec<Client> = (0..3).map(|_| srv.connect()).collect();
    for c in held.iter_mut() {
        assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    }
    let mut extra = srv.connect();
    let r = extra.read_response().expect("503 over the connection limit");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(r.header("Server-Timing").is_some());
    assert!(serve_support::has_current_date(&r, 5), "{:?}", r.headers);
    drop(held);
    let t = Instant::now();
    loop {
        let mut c = srv.connect();
        c.send_raw(&encode("POST", "/echo-c", &[], b"again"));
        if let Some(r) = c.read_response().filter(|r| r.status == 200) {
            assert_eq!(r.text(), "again");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "slots not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_calls_in_flight_then_exits_zero() {
    let mut srv = Server::start(&functions_dir(&["echo-c", "infinite-loop"]), &["--threads", "2"]);
    let mut idle = srv.connect();
    assert_eq!(idle.request("GET", "/healthz", &[], b"").status, 200);
    // A call that takes its full 1 s deadline, in flight when SIGTERM arrives.
    let mut busy = srv.connect();
    busy.send_raw(&encode("POST", "/infinite-loop", &[], b"x"));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    srv.signal(libc::SIGTERM);
    let r = busy.read_response().expect("the call in flight is answered");
    assert_eq!(r.status, 504);
    assert!(busy.closed());
    assert!(idle.closed());
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0), "{}", srv.log.lock().unwrap());
    assert!(t.elapsed() < Duration::from_secs(5));
    // New connections are refused once it is gone.
    assert!(std::net::TcpStream::connect(srv.addr).is_err());
}

#[test]
fn sigterm_with_pipelined_echo_calls_answers_all_of_them() {
    let mut srv = Server::start(&functions_dir(&["echo-c"]), &[]);
    let mut c = srv.connect();
    let mut wire = Vec::new();
    for i in 0..20 {
        wire.extend(encode("POST", "/echo-c", &[], format!("p{i}").as_bytes()));
    }
    c.send_raw(&wire);
    // Wait for the first answer, so the server has received the pipeline before the signal:
    // requests still unread in the socket are not in flight and may rightly go unanswered
    // (signalling at once made this test race on a loaded machine).
    let first = c.read_response().expect("the first pipelined call is answered");
    assert_eq!((first.status, first.text()), (200, "p0".to_string()));
    srv.signal(libc::SIGTERM);
    // Every request already received is answered (in order) or the connection is closed
    // between responses: never a torn response.
    let mut answered = 1;
    while let Some(r) = c.read_response() {
        assert_eq!((r.status, r.text()), (200, format!("p{answered}")));
        answered += 1;
    }
    assert!(answered >= 1);
    assert_eq!(srv.wait_exit(Duration::from_secs(10)), Some(0));
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_fds_does_not_spin_and_recovers() {
    let srv = Server::start(&functions_dir(&["echo-c"]), &["--pool-size", "0"]);
    let mut c = srv.connect();
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
    // Leave room for a few connections only.
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit reading our own child's limit into a local.
    assert_eq!(unsafe { libc::prlimit(srv.pid(), libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) }, 0);
    let limit = libc::rlimit { rlim_cur: srv.fd_count() as u64 + 4, rlim_max: old.rlim_max };
    // SAFETY: prlimit on our own child with a valid rlimit; old value not wanted.
    assert_eq!(unsafe { libc::prlimit(srv.pid(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) }, 0);
    let crowd: Vec<std::net::TcpStream> = (0..30).map(|_| std::net::TcpStream::connect(srv.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(srv.pid());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(srv.pid()) - before;
    assert!(spent < 30, "server spun at EMFILE: {spent} ticks in 1 s");
    // Fds back: the waiting connections are accepted and served.
    drop(crowd);
    let limit = old;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::prlimit(srv.pid(), libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut()) }, 0);
    let t = Instant::now();
    loop {
        let mut c = srv.connect();
        c.send_raw(&encode("POST", "/echo-c", &[], b"back"));
        if let Some(r) = c.read_response().filter(|r| r.status == 200) {
            assert_eq!(r.text(), "back");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "not serving after fds came back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGHUP, SIGINT and SIGTERM are blocked in every thread of the server (vmm's pool and
/// reaper threads included), so they reach only the thread that waits for them. A SIGHUP that
/// landed on vmm's reaper thread once killed the server (its default action).
#[test]
fn handled_signals_are_blocked_in_every_thread() {
    let srv = Server::start(&functions_dir(&["echo-c"]), &[]);
    let wanted: u64 = (1 << (libc::SIGHUP - 1)) | (1 << (libc::SIGINT - 1)) | (1 << (libc::SIGTERM - 1));
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", srv.pid())).unwrap() {
        let task = task.unwrap().path();
        if task.file_name().unwrap().to_str() == Some(&srv.pid().to_string()) {
            continue; // the main thread: it takes them in sigtimedwait, which unblocks them meanwhile
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = status.lines().find_map(|l| l.strip_prefix("Name:")).unwrap_or("?").trim().to_owned();
        let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim();
        let blocked = u64::from_str_radix(blocked, 16).unwrap();
        assert_eq!(blocked & wanted, wanted, "thread {name} does not block SIGHUP/SIGINT/SIGTERM");
        threads += 1;
    }
    assert!(threads >= 3, "expected loop, pool and reaper threads, saw {threads}");
    // And a burst of SIGHUPs while the main thread is busy reloading does no harm.
    for _ in 0..20 {
        srv.signal(libc::SIGHUP);
    }
    let mut c = srv.connect();
    assert_eq!(srv.call(&mut c, "POST", "/echo-c", b"alive").text(), "alive");
}

/// Nothing is readable on `c` right now: its response has not been sent.
fn nothing_yet(c: &mut Client) -> bool {
    use std::io::Read;
    c.stream.set_nonblocking(true).unwrap();
    let r = c.stream.read(&mut [0u8; 16]);
    c.stream.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A call spinning until its deadline (which its bundle sets to an hour) holds a worker
/// thread, not the event loop: /healthz and another function are answered meanwhile, a second
/// call of the same function is refused at the per-function limit, and the deadline in force
/// is the server's cap, not the bundle's hour.
#[test]
fn a_spinning_call_stalls_neither_healthz_nor_other_functions() {
    let dir = functions_dir(&["echo-c", "infinite-loop"]);
    let config = dir.join("infinite-loop/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let hour = text.replace("\"snapcall.timeout_ms\": \"1000\"", "\"snapcall.timeout_ms\": \"3600000\"");
    assert_ne!(text, hour, "infinite-loop's config.json changed shape");
    std::fs::write(&config, hour).unwrap();
    // One loop and one worker at start: the spinning call takes that worker.
    let args = ["--threads", "1", "--workers", "1", "--max-timeout-ms", "5000", "--max-concurrency-per-function", "1"];
    let srv = Server::start(&dir, &args);
    assert!(srv
        .log
        .lock()
        .unwrap()
        .contains("infinite-loop: snapcall.timeout_ms 3600000 lowered to this server's --max-timeout-ms 5000"));

    let mut busy = srv.connect();
    busy.send_raw(&encode("POST", "/infinite-loop", &[], b"spin"));
    std::thread::sleep(Duration::from_millis(200));

    let r = srv.connect().request("POST", "/infinite-loop", &[], b"again");
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(r.text().contains("too_many_requests") && r.text().contains("--max-concurrency-per-function"));
    let mut c = srv.connect();
    let r = c.request("GET", "/healthz", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    let r = c.request("POST", "/function/echo-c", &[], b"meanwhile");
    assert_eq!((r.status, r.text().as_str()), (200, "meanwhile"));
    assert!(nothing_yet(&mut busy), "the spinning call ended before the others were answered");

    let r = busy.read_response().expect("the spinning call's answer");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("X-Snapcall-Timeout-Ms"), Some("5000"));
    assert_eq!(srv.metric("snapcall_call_errors_total{function=\"infinite-loop\",kind=\"concurrency\"}"), 1.0);
    assert_eq!(srv.metric("snapcall_calls_in_flight{function=\"infinite-loop\"}"), 0.0);
    // Its slot is free again.
    let r = srv.connect().request("POST", "/infinite-loop", &[], b"once more");
    assert_eq!(r.status, 504);
}

/// A bundle asking for more guest memory than --max-memory-mib is not loaded, and says why.
#[test]
fn a_bundle_over_the_memory_cap_is_refused_at_load() {
    let srv = Server::start(&functions_dir(&["echo-c", "hello-c"]), &["--max-memory-mib", "32"]);
    let log = srv.log.lock().unwrap().clone();
    assert!(
        log.contains("echo-c: not loaded: its config.json asks for 64 MiB of guest memory (snapcall.memory_mib), over this server's --max-memory-mib 32"),
        "{log}"
    );
    let mut c = srv.connect();
    assert_eq!(c.request("POST", "/echo-c", &[], b"x").status, 404);
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
}
