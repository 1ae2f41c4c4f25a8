//! Event-loop tests over real loopback sockets, with a test-only handler that echoes the
//! body (so the HTTP layer is tested without KVM). The product handler is `app::App`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::Request;
use super::event_loop::{EventLoop, LoopConfig, Shared};
use super::handler::{Admission, Handler};
use super::http::{Head, Method, Response};
use super::metrics::Metrics;
use super::workers::{Workers, STUCK};

/// How long a `/slow` call takes: long enough to be in flight while a test acts (they wait
/// 100 ms before they do), and far enough under [`STUCK`] that a host stalling a test for a
/// few hundred milliseconds does not make it count as stuck (300 ms once did, in CI).
const SLOW_CALL: Duration = Duration::from_millis(180);
const _: () = assert!(SLOW_CALL.as_millis() * 2 < STUCK.as_millis());

struct Echo {
    sent: AtomicUsize,
    /// `/block` calls wait until this is true.
    open: Mutex<bool>,
    opened: Condvar,
    /// `/slow` calls running now, and the most that ever ran at once.
    slow_now: AtomicUsize,
    slow_peak: AtomicUsize,
}

impl Echo {
    fn release_blocked(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Handler for Echo {
    type Done = ();
    type Permit = ();
    fn accept_head(&self, head: &Head) -> bool {
        ["/echo", "/slow", "/block", "/panic"].iter().any(|p| head.path.starts_with(p))
    }
    fn admit(&self, head: &Head) -> Admission<()> {
        if self.accept_head(head) {
            Admission::Call(())
        } else {
            Admission::Local
        }
    }
    fn handle(&self, req: Request, permit: Option<()>, _queued: Duration) -> (Response, Option<()>) {
        if permit.is_none() {
            let status = if req.head.path == "/healthz" { 200 } else { 404 };
            return (Response::new(status, "text/plain", b"local".to_vec()), None);
        }
        if req.head.path.starts_with("/slow") {
            let now = self.slow_now.fetch_add(1, Ordering::SeqCst) + 1;
            self.slow_peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(SLOW_CALL);
            self.slow_now.fetch_sub(1, Ordering::SeqCst);
        }
        if req.head.path.starts_with("/block") {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
        if req.head.path.starts_with("/panic") {
            panic!("test handler panics on purpose");
        }
        let mut r = Response::new(200, "application/octet-stream", req.body);
        r.server_timing = "run;dur=0.001".into();
        (r, Some(()))
    }
    fn refused(&self, _head: &Head) -> Response {
        Response::new(404, "text/plain", b"nope".to_vec())
    }
    fn overloaded(&self, _head: &Head) -> Response {
        let mut r = Response::new(503, "text/plain", Vec::new());
        r.headers.push("Retry-After: 1".into());
        r
    }
    fn sent(&self, _done: ()) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }
}

struct TestServer {
    addr: SocketAddr,
    wake: OwnedFd,
    shared: Arc<Shared>,
    handler: Arc<Echo>,
    workers: Option<Arc<Workers<Echo>>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    fn start(tweak: impl FnOnce(&mut LoopConfig)) -> TestServer {
        Self::start_with(tweak, 0)
    }

    /// With `workers` > 0, calls run on worker threads (that many at start) instead of inline.
    fn start_with(tweak: impl FnOnce(&mut LoopConfig), workers: usize) -> TestServer {
        let mut cfg = super::default_loop_config();
        cfg.limits.max_body = 1024;
        cfg.header_timeout = Duration::from_millis(300);
        cfg.body_timeout = Duration::from_millis(300);
        cfg.idle_timeout = Duration::from_millis(1000);
        tweak(&mut cfg);
        let l = super::listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = super::local_port(&l).unwrap();
        let wake = super::eventfd().unwrap();
        // SAFETY: dup of our own eventfd.
        let dup = unsafe { std::os::fd::FromRawFd::from_raw_fd(libc::dup(wake.as_raw_fd())) };
        let shared = Arc::new(Shared::default());
        let handler = Arc::new(Echo {
            sent: AtomicUsize::new(0),
            open: Mutex::new(false),
            opened: Condvar::new(),
            slow_now: AtomicUsize::new(0),
            slow_peak: AtomicUsize::new(0),
        });
        let (h, sh) = (handler.clone(), shared.clone());
        let metrics = Arc::new(Metrics::default());
        let pool = (workers > 0).then(|| Workers::start(handler.clone(), workers, cfg.max_inflight).unwrap());
        let (stopper, loop_pool) = (pool.clone(), pool.clone());
        let thread = std::thread::spawn(move || {
            let r = EventLoop::new(l, dup, h, metrics, sh, cfg, loop_pool)?.run();
            if let Some(w) = stopper {
                w.stop().expect("workers stop");
            }
            r
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        TestServer { addr, wake, shared, handler, workers: pool, thread: Some(thread) }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn stop(mut self) -> std::io::Result<()> {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        let one = 1u64;
        // SAFETY: 8-byte write to our eventfd.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Reads one response (Content-Length framed); returns (status, head, body).
fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head[9..12].parse().unwrap();
            let len: usize =
                head.lines().find_map(|l| l.strip_prefix("Content-Length: ")).map(|v| v.parse().unwrap()).unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                return (status, head, body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed early; have {:?}", String::from_utf8_lossy(buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

#[test]
fn keep_alive_pipelining_chunked_and_continue() {
    let srv = TestServer::start(|_| {});
    let mut s = srv.connect();
    let mut buf = Vec::new();
    // Three pipelined requests in one write, the middle one chunked.
    s.write_all(
        b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
          POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n\
          GET /missing HTTP/1.1\r\n\r\n",
    )
    .unwrap();
    let (st, head, body) = read_response(&mut s, &mut buf);
    assert_eq!((st, body.as_slice()), (200, &b"abc"[..]));
    assert!(head.contains("Server-Timing: run;dur=0.001"));
    let (st, _, body) = read_response(&mut s, &mut buf);
    assert_eq!((st, body.as_slice()), (200, &b"xyz"[..]));
    assert_eq!(read_response(&mut s, &mut buf).0, 404);
    // 100-continue: the interim response comes before the body is sent.
    s.write_all(b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"ok").unwrap();
    assert_eq!(read_response(&mut s, &mut buf).2, b"ok");
    // Over the body limit: 413, then the server closes.
    s.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n").unwrap();
    let (st, head, _) = read_response(&mut s, &mut buf);
    assert_eq!(st, 413);
    assert!(head.contains("Connection: close"));
    assert!(is_closed(&mut s));
    srv.stop().unwrap();
}

#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    let srv = TestServer::start(|_| {});
    let mut slow = srv.connect();
    slow.write_all(b"POST /echo HTTP/1.1\r\nX-Slow: ").unwrap();
    let mut half_body = srv.connect();
    half_body.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    let mut gone = srv.connect();
    gone.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc").unwrap();
    drop(gone);
    let start = Instant::now();
    let mut good = srv.connect();
    let mut buf = Vec::new();
    while start.elapsed() < Duration::from_millis(800) {
        // Keeps trickling one byte now and then: the header deadline is absolute.
        let _ = slow.write_all(b"a");
        good.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").unwrap();
        assert_eq!(read_response(&mut good, &mut buf).2, b"x");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut sbuf = Vec::new();
    assert_eq!(read_response(&mut slow, &mut sbuf).0, 408);
    assert!(is_closed(&mut slow));
    let mut hbuf = Vec::new();
    assert_eq!(read_response(&mut half_body, &mut hbuf).0, 408);
    srv.stop().unwrap();
}

#[test]
fn idle_connections_are_closed() {
    let srv = TestServer::start(|c| c.idle_timeout = Duration::from_millis(200));
    let mut s = srv.connect();
    let t = Instant::now();
    assert!(is_closed(&mut s));
    assert!(t.elapsed() < Duration::from_secs(2));
    srv.stop().unwrap();
}

#[test]
fn bad_requests_get_400_and_close() {
    let srv = TestServer::start(|_| {});
    let mut s = srv.connect();
    s.write_all(b"BLAH\x01 / HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let (st, head, body) = read_response(&mut s, &mut buf);
    assert_eq!(st, 400);
    assert!(head.contains("Server-Timing:"));
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
    assert!(is_closed(&mut s));
    srv.stop().unwrap();
}

#[test]
fn connection_and_inflight_limits() {
    let srv = TestServer::start(|c| {
        c.max_connections = 2;
        c.max_inflight = 1;
    });
    let mut a = srv.connect();
    let mut b = srv.connect();
    // Wait until both are registered, then a third is refused with 503.
    let mut buf = Vec::new();
    a.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut a, &mut buf);
    b.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut b, &mut buf);
    let mut c = srv.connect();
    let (st, head, _) = read_response(&mut c, &mut buf);
    assert_eq!(st, 503);
    assert!(head.contains("Retry-After"));
    // Two calls arriving in one batch with room for one: the second is refused.
    a.write_all(b"POST /slow HTTP/1.1\r\nContent-Length: 1\r\n\r\nx").unwrap();
    b.write_all(b"POST /slow HTTP/1.1\r\nContent-Length: 1\r\n\r\ny").unwrap();
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let mut statuses = [read_response(&mut a, &mut ba).0, read_response(&mut b, &mut bb).0];
    statuses.sort();
    // Both may also be admitted one after the other if they land in different batches.
    assert!(statuses == [200, 503] || statuses == [200, 200], "{statuses:?}");
    srv.stop().unwrap();
}

#[test]
fn shutdown_finishes_the_call_in_flight() {
    let srv = TestServer::start(|_| {});
    let mut idle = srv.connect();
    let mut busy = srv.connect();
    let mut buf = Vec::new();
    idle.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    read_response(&mut idle, &mut buf);
    busy.write_all(b"POST /slow HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let handler = srv.handler.clone();
    let stopper = std::thread::spawn(move || srv.stop());
    let (st, head, body) = read_response(&mut busy, &mut buf);
    assert_eq!((st, body.as_slice()), (200, &b"hi"[..]));
    // The response was serialised before the loop saw the signal, so it may lack
    // `Connection: close`; either way both connections are closed after it.
    let _ = head;
    assert!(is_closed(&mut busy));
    assert!(is_closed(&mut idle));
    stopper.join().unwrap().unwrap();
    assert_eq!(handler.sent.load(Ordering::Relaxed), 1);
    let _ = Method::Get;
}

#[test]
fn worker_mode_pipelines_in_order_and_drains() {
    let srv = TestServer::start_with(|_| {}, 2);
    let mut s = srv.connect();
    let mut buf = Vec::new();
    let mut wire = Vec::new();
    for i in 0..10 {
        wire.extend_from_slice(format!("POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n{i:02}").as_bytes());
    }
    s.write_all(&wire).unwrap();
    for i in 0..10 {
        assert_eq!(read_response(&mut s, &mut buf).2, format!("{i:02}").into_bytes());
    }
    // A slow call in flight on a worker when the drain starts is still answered.
    s.write_all(b"POST /slow HTTP/1.1\r\nContent-Length: 2\r\n\r\nzz").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let handler = srv.handler.clone();
    let stopper = std::thread::spawn(move || srv.stop());
    assert_eq!(read_response(&mut s, &mut buf).2, b"zz");
    assert!(is_closed(&mut s));
    stopper.join().unwrap().unwrap();
    assert_eq!(handler.sent.load(Ordering::Relaxed), 11);
}

/// Nothing is readable on `s` right now (its response has not been sent).
fn nothing_yet(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 16];
    let r = s.read(&mut b);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

#[test]
fn a_blocked_call_stalls_neither_healthz_nor_other_calls() {
    // One worker at start, taken by a call that does not end until the test says so.
    let srv = TestServer::start_with(|_| {}, 1);
    let mut blocked = srv.connect();
    blocked.write_all(b"POST /block HTTP/1.1\r\nContent-Length: 1\r\n\r\nb").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // The loop answers /healthz itself; it never runs a call.
    let mut health = srv.connect();
    let mut buf = Vec::new();
    health.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let (st, _, body) = read_response(&mut health, &mut buf);
    assert_eq!((st, body.as_slice()), (200, &b"local"[..]));
    // Another call: the only worker is busy, so the pool grows and it is answered.
    let mut other = srv.connect();
    other.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok").unwrap();
    let (st, _, body) = read_response(&mut other, &mut buf);
    assert_eq!((st, body.as_slice()), (200, &b"ok"[..]));
    assert!(nothing_yet(&mut blocked), "the blocked call answered before it was released");
    assert_eq!(srv.workers.as_ref().unwrap().threads(), 2);
    // A panicking call is a 500 for that call, and its worker goes on.
    other.write_all(b"POST /panic HTTP/1.1\r\nContent-Length: 1\r\n\r\np").unwrap();
    assert_eq!(read_response(&mut other, &mut buf).0, 500);
    other.write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok").unwrap();
    assert_eq!(read_response(&mut other, &mut buf).2, b"ok");
    srv.handler.release_blocked();
    let mut bbuf = Vec::new();
    assert_eq!(read_response(&mut blocked, &mut bbuf).2, b"b");
    srv.stop().unwrap();
}

#[test]
fn calls_that_make_progress_do_not_grow_the_pool() {
    // Three slow calls at once on a pool of one: each is well under the 500 ms after which a
    // call counts as stuck, so they run one after the other on the one worker (more threads
    // running VMs at once only contend; see workers.rs).
    let srv = TestServer::start_with(|_| {}, 1);
    let mut conns: Vec<TcpStream> = (0..3).map(|_| srv.connect()).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        c.write_all(format!("POST /slow HTTP/1.1\r\nContent-Length: 1\r\n\r\n{i}").as_bytes()).unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut buf = Vec::new();
        assert_eq!(read_response(c, &mut buf).2, i.to_string().into_bytes());
    }
    assert_eq!(srv.handler.slow_peak.load(Ordering::SeqCst), 1);
    assert_eq!(srv.workers.as_ref().unwrap().threads(), 1);
    srv.stop().unwrap();
}
