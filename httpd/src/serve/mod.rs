//! `snapcall serve`: io_uring HTTP/1.1 front end.
//!
//! - `http`: request heads, chunked decoding, response bytes (pure).
//! - `conn`: one connection's protocol state machine (pure).
//! - `handler`: what the loops ask of the application (admission, calls).
//! - `event_loop`: io_uring loop: accept, recv, send, timeouts, local answers.
//! - `routes`: paths and methods.
//! - `metrics`: Prometheus counters/histograms and `Server-Timing`.
//! - `app`: the [`event_loop::Handler`] that runs calls on the vmm crate.
//! - `cgi`: a function's own response head (status, headers), when its bundle declares one.
//! - `logs`: every call's stderr in a bounded ring per function; `system_logs`: `/system/logs`.
//! - `access_log`: one line per answered request, off the loop's thread.
//! - `status`: the one mapping from vmm errors to HTTP statuses.
//! - `registry`: bundle discovery at start and on SIGHUP.
//! - `workers`: the worker threads calls run on (never on a loop thread, by default).
//! - `provider`: the OpenFaaS faas-provider API (`/system/*`) and deploys from OCI images.
//!
//! This file wires them: listeners, threads, signals.

pub mod access_log;
pub mod app;
pub use httpd::cgi;
pub mod conn;
pub mod event_loop;
pub mod functions_api;
pub mod handler;
pub mod logs;
pub use httpd::http;
#[cfg(test)]
mod loop_tests;
pub mod metrics;
pub mod provider;
pub mod registry;
pub mod routes;
pub mod status;
pub mod system_logs;
pub mod workers;

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use event_loop::{EventLoop, Handler, LoopConfig, Shared};
use metrics::Metrics;
use workers::Workers;

/// Opens a non-blocking-free (io_uring drives it) TCP listener with `SO_REUSEPORT`.
fn listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: setsockopt with a correctly sized int option on our socket.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: an all-zero sockaddr_storage is a valid value; it is filled below.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len as libc::socklen_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: listen(2) on our bound socket.
    if unsafe { libc::listen(fd, 4096) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// The port a bound socket got (for `--listen 127.0.0.1:0`).
fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: zeroed sockaddr_storage is valid; getsockname fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: pointers to live locals of the right sizes.
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // sin_port and sin6_port sit at the same offset, right after the family.
    // SAFETY: storage is aligned for and larger than sockaddr_in.
    let sin = unsafe { &*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
    Ok(u16::from_be(sin.sin_port))
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2); checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise the local set.
    unsafe {
        let mut set: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// The signals the server handles itself.
const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in every thread it starts
/// afterwards), for `serve` to take them with `sigtimedwait`; ignores SIGPIPE. Call it before
/// starting any thread, the vmm runtime's included: a process-directed signal goes to any
/// thread that does not block it, and its default action kills the process. (A SIGHUP that
/// came while the main thread was busy reloading once killed the server through vmm's reaper
/// thread.)
pub fn block_signals() -> libc::sigset_t {
    let set = signal_set(&HANDLED);
    // SAFETY: `set` is initialised; ignoring SIGPIPE is process-wide and intended (sends
    // use MSG_NOSIGNAL anyway).
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    set
}

/// Where calls run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallThreads {
    /// On worker threads: `threads` at start, more (up to `--max-inflight`) while every
    /// worker is busy and calls wait (see `workers.rs`). The loops only do I/O and answer
    /// `/healthz` and `/metrics`, so a spinning call stalls nobody else.
    Workers { threads: usize },
    /// On the loop thread that read the request (`--inline-calls`, kept for measurement): a
    /// long call delays every other request of its loop, `/healthz` included.
    Inline,
}

/// Server settings beyond the loops' own.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub calls: CallThreads,
    pub loops: LoopConfig,
}

/// Runs the server until SIGTERM/SIGINT and the drain finish. `on_hup` runs on SIGHUP (on
/// this thread, so the loops keep serving meanwhile). Threads started before this call must
/// have been started after [`block_signals`].
pub fn serve<H: Handler>(
    cfg: ServerConfig,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    mut on_hup: impl FnMut(),
) -> io::Result<()> {
    let set = block_signals();

    let first = listener(cfg.listen)?;
    let port = local_port(&first)?;
    let mut addr = cfg.listen;
    addr.set_port(port);
    let mut listeners = vec![first];
    for _ in 1..cfg.threads.max(1) {
        listeners.push(listener(addr)?);
    }
    let shared = Arc::new(Shared::default());
    let workers = match cfg.calls {
        CallThreads::Workers { threads } => Some(Workers::start(handler.clone(), threads, cfg.loops.max_inflight)?),
        CallThreads::Inline => None,
    };
    let mut wakes = Vec::new();
    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let wake = eventfd()?;
        // SAFETY: dup of our own eventfd; checked below.
        let dup = unsafe { libc::dup(wake.as_raw_fd()) };
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh fd from dup, owned by nobody else.
        wakes.push(unsafe { OwnedFd::from_raw_fd(dup) });
        let (h, m, sh, lc, w) = (handler.clone(), metrics.clone(), shared.clone(), cfg.loops.clone(), workers.clone());
        // Built on its own thread: a loop and its ring never cross threads.
        let t = std::thread::Builder::new()
            .name(format!("loop-{i}"))
            .spawn(move || EventLoop::new(l, wake, h, m, sh, lc, w)?.run())?;
        threads.push(t);
    }
    let mode = match cfg.calls {
        CallThreads::Workers { threads } => format!("calls on {threads}+ worker threads"),
        CallThreads::Inline => "calls inline".to_owned(),
    };
    eprintln!("snapcall serve: listening on http://{addr} ({} event loops, {mode})", threads.len());

    let wake_all = |wakes: &[OwnedFd]| {
        shared.shutdown.store(true, Ordering::SeqCst);
        let one: u64 = 1;
        for w in wakes {
            // SAFETY: 8-byte write of a local to an eventfd we own.
            unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    };
    let tick = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
    loop {
        if threads.iter().any(|t| t.is_finished()) {
            // A loop died (or all finished): stop the others too.
            wake_all(&wakes);
            break;
        }
        // SAFETY: `set` and `tick` are initialised locals; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
        match sig {
            libc::SIGHUP => on_hup(),
            libc::SIGTERM | libc::SIGINT => {
                eprintln!("snapcall serve: shutting down, finishing requests in flight");
                wake_all(&wakes);
                break;
            }
            _ => {}
        }
    }
    let mut result = Ok(());
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(io::Error::other("event loop panicked")),
        }
    }
    // The loops waited for every call they handed out, so the queue is empty.
    if let Some(w) = &workers {
        if w.stop().is_err() {
            result = Err(io::Error::other("worker panicked"));
        }
    }
    result
}

/// Default timeouts and limits (overridable on the command line).
pub fn default_loop_config() -> LoopConfig {
    LoopConfig {
        limits: conn::ReadLimits { max_head: 16 * 1024, max_body: 16 * 1024 * 1024 },
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(30),
        linger: Duration::from_secs(2),
        shutdown_grace: Duration::from_secs(30),
        max_connections: 10_000,
        max_inflight: 256,
    }
}
