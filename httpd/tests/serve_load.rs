//! `snapcall serve` under load: 10 000 sequential calls, 8 connections × 2 000 calls, every
//! body checked and zero errors, then open fds and RSS of the server compared with their
//! values after a warm-up (flat = no leak per call). Counts scale with SNAPCALL_SERVE_SCALE.

mod serve_support;

use std::time::{Duration, Instant};

use serve_support::{functions_dir, scaled, Client, Server};

/// Waits until the server is idle: the function gone idle (the server runs with a 1 s pool
/// idle timeout), so no VM is ready or alive and the bounded caches of destroyed VMs' memory
/// and huge pages are empty, whatever moment the load ended at; then the fds and the RSS are
/// what the server itself holds. `probe` is one keep-alive connection used for every sample,
/// so the samples add no connections.
fn settle(srv: &Server, probe: &mut Client) -> (Vec<String>, u64) {
    let t = Instant::now();
    let mut last = (Vec::new(), 0.0, 0.0);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let metrics = probe.request("GET", "/metrics", &[], b"").text();
        let sample = |name: &str| -> f64 {
            metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap()
        };
        let (ready, created, destroyed, held) = (
            sample("snapcall_pool_ready_vms"),
            sample("snapcall_vms_created_total"),
            sample("snapcall_vms_destroyed_total"),
            sample("snapcall_memory_held") + sample("snapcall_huge_pages_held"),
        );
        let fds = fd_targets(srv);
        // Stable for two samples, every VM destroyed, nothing kept for reuse.
        let now = (fds, ready, created);
        if now == last && ready == 0.0 && created == destroyed && held == 0.0 {
            return (now.0, srv.rss_kib());
        }
        last = now;
        assert!(t.elapsed() < Duration::from_secs(30), "server never settled");
    }
}

/// What each open fd of the server points at, sorted (sockets and anon inodes by kind only,
/// so that a closed-and-reopened fd of the same kind compares equal).
fn fd_targets(srv: &Server) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", srv.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| {
            let s = p.display().to_string();
            match s.split_once(":[") {
                Some((kind @ ("socket" | "pipe"), _)) => kind.to_owned(),
                _ => s,
            }
        })
        .collect();
    v.sort();
    v
}

fn sequential(srv: &Server, n: usize, tag: &str) {
    let mut c = srv.connect();
    for i in 0..n {
        let body = format!("{tag}-{i}-{}", "x".repeat(i % 64));
        let r = c.request("POST", "/function/echo-c", &[], body.as_bytes());
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
        assert_eq!(r.body, body.as_bytes(), "call {i}");
    }
}

fn concurrent(srv: &Server, conns: usize, per_conn: usize) {
    let addr = srv.addr;
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = serve_support::Client::connect(addr);
                for i in 0..per_conn {
                    let body = format!("conn{t}-call{i}");
                    let path = if i % 2 == 0 { "/function/echo-c" } else { "/echo-c" };
                    let r = c.request("POST", path, &[], body.as_bytes());
                    assert_eq!(r.status, 200, "conn {t} call {i}: {}", r.text());
                    assert_eq!(r.body, body.as_bytes(), "conn {t} call {i}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

fn assert_no_errors(srv: &Server) {
    for kind in ["exit", "fault", "output_limit", "deadline", "host", "overloaded"] {
        let v = srv.metric(&format!("snapcall_call_errors_total{{function=\"echo-c\",kind=\"{kind}\"}}"));
        assert_eq!(v, 0.0, "{kind} errors");
    }
}

#[test]
fn ten_thousand_sequential_then_eight_by_two_thousand_concurrent_without_leaks() {
    // The probe connection idles while the load runs: keep it past the default 60 s. The
    // function goes idle 1 s after the load, so `settle` compares idle servers.
    let srv = Server::start(&functions_dir(&["echo-c"]), &["--idle-timeout-ms", "3600000", "--pool-idle-secs", "1"]);
    // Warm-up: pool, allocator and page cache reach their steady state.
    sequential(&srv, 500, "warm");
    concurrent(&srv, 8, 100);
    let mut probe = srv.connect();
    let (fds0, rss0) = settle(&srv, &mut probe);

    let n = scaled(10_000);
    let t = Instant::now();
    sequential(&srv, n, "seq");
    let seq = t.elapsed();
    let per_conn = scaled(2_000);
    let t = Instant::now();
    concurrent(&srv, 8, per_conn);
    let conc = t.elapsed();
    eprintln!(
        "sequential: {n} calls in {seq:?} ({:.0}/s); concurrent: 8x{per_conn} in {conc:?} ({:.0}/s)",
        n as f64 / seq.as_secs_f64(),
        (8 * per_conn) as f64 / conc.as_secs_f64()
    );
    assert_no_errors(&srv);
    let total = 500 + 800 + n + 8 * per_conn;
    assert_eq!(srv.metric("snapcall_calls_total{function=\"echo-c\"}") as usize, total);

    let (fds1, rss1) = settle(&srv, &mut probe);
    eprintln!("fds {} -> {}, rss {rss0} KiB -> {rss1} KiB after {} calls", fds0.len(), fds1.len(), n + 8 * per_conn);
    assert_eq!(fds0, fds1, "open fds changed");
    assert!(rss1 <= rss0 + 16 * 1024 && rss1 <= rss0 * 5 / 4 + 1024, "RSS grew: {rss0} KiB -> {rss1} KiB");
}
