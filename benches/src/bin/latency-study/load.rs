//! The load sweep (`latency-study --load`): latency and CPU per call against an offered
//! rate, open loop, for the C and Python snapshots behind `snapcall serve` (as shipped, and
//! with the recycled-VM-shell experiment), fork+exec of the same C binary, and the warm
//! Python server.
//!
//! Open loop: call `i` is due at `start + i / rate`, whatever happened to the calls before
//! it, and its latency is counted from when it was due, not from when a connection was free
//! to send it. So a server that falls behind shows it as growing latency (queueing) instead
//! of quietly slowing the client down (what a closed-loop client such as wrk measures).
//! Calls are sent by [`CONNECTIONS`] client threads, each with one keep-alive connection.
//! Before each sweep one serial point: one connection, a call due every 2 ms (the pacing at
//! which the p99 targets of issue 10 are set), after [`WARM_UP_SECS`] of untimed serial calls.
//! The knee of a curve is the first rate at which the server no longer keeps up: fewer than
//! 95 % of the offered calls answered in time, or a p99 over ten times the lowest rate's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{http, native, progress::Progress, C_FN, PY_FN, REQUEST};

/// Client threads (each one connection, one call in flight).
const CONNECTIONS: usize = 32;
/// The serial point before each sweep: one connection, a call due every 2 ms.
const SERIAL_RATE: f64 = 500.0;

/// One rate of one mode.
pub struct Point {
    /// Client connections (1: the serial, paced point).
    pub conns: usize,
    pub offered: f64,
    pub achieved: f64,
    pub p50: f64,
    pub p99: f64,
    pub errors: u64,
    /// p99 of the server's own time per call (Server-Timing `total`, from the request read to
    /// the response queued), ms; NaN for modes without it. Against `p99` it tells a slow call
    /// from time spent outside it (the client, the loop's wake-up, the network stack).
    pub server_p99: f64,
    /// Host CPU per call (the server process, or the forked children), ms.
    pub cpu_ms: f64,
}

pub struct Curve {
    pub name: String,
    pub points: Vec<Point>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// CPU time (user + system) of process `pid`, seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / hz
}

/// CPU time of this process's reaped children, seconds.
fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is valid for getrusage to overwrite.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage into a valid struct.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Runs `call` open loop at `rate` per second for `secs`, on [`CONNECTIONS`] threads that
/// each get their own state from `connect`. Returns (latencies ms sorted, errors, wall secs).
fn open_loop<S>(
    conns: usize,
    rate: f64,
    secs: f64,
    connect: impl Fn() -> Result<S, String> + Sync,
    call: impl Fn(&mut S) -> Result<(), String> + Sync,
) -> (Vec<f64>, u64, f64) {
    let total = (rate * secs).round() as u64;
    let next = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let latencies = Mutex::new(Vec::with_capacity(total as usize));
    let start = Instant::now() + Duration::from_millis(50);
    let give_up = start + Duration::from_secs_f64(secs + 10.0);
    std::thread::scope(|s| {
        for _ in 0..conns {
            s.spawn(|| {
                let Ok(mut state) = connect() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > give_up {
                        break;
                    }
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    match call(&mut state) {
                        Ok(()) => mine.push(due.elapsed().as_secs_f64() * 1e3),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            // A broken connection is replaced, so one error does not end a thread.
                            match connect() {
                                Ok(fresh) => state = fresh,
                                Err(_) => break,
                            }
                        }
                    }
                }
                latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(mine);
            });
        }
    });
    let wall = start.elapsed().as_secs_f64();
    let mut l = latencies.into_inner().unwrap_or_else(|e| e.into_inner());
    l.sort_by(f64::total_cmp);
    (l, errors.load(Ordering::Relaxed), wall)
}

/// Untimed serial calls before a curve's first point, the same for every mode: the first
/// calls after a server starts wait for its pool's first VMs and fault its memory in (about
/// 20 calls of 3000 were 2-14 ms, enough to set the serial point's p99 alone). A cold start
/// is the full study's subject (`modes.rs`), not the sweep's.
const WARM_UP_SECS: f64 = 1.0;

fn warm_up<S>(connect: impl Fn() -> Result<S, String> + Sync, call: impl Fn(&mut S) -> Result<(), String> + Sync) {
    open_loop(1, SERIAL_RATE, WARM_UP_SECS, connect, call);
}

fn point(conns: usize, rate: f64, secs: f64, (lat, errors, wall): (Vec<f64>, u64, f64), cpu_secs: f64) -> Point {
    let n = lat.len() as f64;
    Point {
        server_p99: f64::NAN,
        conns,
        offered: rate,
        achieved: n / wall.max(secs),
        p50: percentile(&lat, 0.5),
        p99: percentile(&lat, 0.99),
        errors,
        cpu_ms: if n > 0.0 { cpu_secs / n * 1e3 } else { f64::NAN },
    }
}

fn http_curve(
    name: &str,
    addr: SocketAddr,
    pid: u32,
    path: &str,
    rates: &[f64],
    secs: f64,
    progress: &Progress,
) -> Curve {
    let mut points = Vec::new();
    let connect = || http::Client::connect(addr);
    let server_totals = Mutex::new(Vec::new());
    let call = |c: &mut http::Client| match c.post(path, "application/json", REQUEST) {
        Ok(r) if r.status == 200 => {
            let total = r
                .server_timing
                .as_deref()
                .map(http::parse_server_timing)
                .and_then(|phases| phases.into_iter().find(|(name, _)| name == "total").map(|(_, ms)| ms));
            if let Some(ms) = total {
                server_totals.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
            }
            Ok(())
        }
        Ok(r) => Err(format!("status {}", r.status)),
        Err(e) => Err(e),
    };
    progress.set_label(&format!("{name}: warming up"));
    warm_up(connect, call);
    // First one connection, calls 2 ms apart (serial, paced), then the sweep.
    for (conns, rate) in std::iter::once((1, SERIAL_RATE)).chain(rates.iter().map(|&r| (CONNECTIONS, r))) {
        progress.set_label(&format!("{name} at {rate} calls/s on {conns} connection(s)"));
        let before = process_cpu(pid);
        server_totals.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let run = open_loop(conns, rate, secs, connect, call);
        let mut server = std::mem::take(&mut *server_totals.lock().unwrap_or_else(|e| e.into_inner()));
        server.sort_by(f64::total_cmp);
        points.push(Point {
            server_p99: percentile(&server, 0.99),
            ..point(conns, rate, secs, run, process_cpu(pid) - before)
        });
        progress.tick(1);
        std::thread::sleep(Duration::from_millis(500)); // let the pool refill between rates
    }
    Curve { name: name.into(), points }
}

/// Points a sweep measures (for the progress bar): six modes, the serial point and five rates.
pub const POINTS: u64 = 6 * 6;

/// Runs the sweep and returns the curves.
pub fn sweep(functions: &Path, logs: &Path, snapcall: &Path, quick: bool, progress: &'static Progress) -> Vec<Curve> {
    let rates: &[f64] = &[100.0, 200.0, 400.0, 800.0, 1600.0];
    let secs = if quick { 2.0 } else { 6.0 };
    let mut curves = Vec::new();

    // The server as shipped (a fresh VM per call), then the recycled-shell experiment
    // (docs/vmm.md, "What freshness costs"): the same server keeping each used VM's KVM
    // objects for a later call, its memory replaced and vCPU reset.
    for (extra, label, log) in [
        (None, "snapcall serve", "load-serve.log"),
        (Some("--experimental-recycle-vm-shells"), "recycled shell, experiment", "load-serve-recycled.log"),
    ] {
        let mut cmd = Command::new(snapcall);
        cmd.arg("serve").arg("--functions").arg(functions).args(["--listen", "127.0.0.1:0"]).args(extra);
        match http::ServerChild::start(cmd, &logs.join(log), "listening on", progress) {
            Ok(server) => {
                std::thread::sleep(Duration::from_millis(300));
                for (fname, lang) in [(C_FN, "C"), (PY_FN, "Python")] {
                    let name = format!("{lang} snapshot ({label})");
                    let path = format!("/{fname}");
                    curves.push(http_curve(&name, server.addr, server.pid(), &path, rates, secs, progress));
                }
            }
            Err(e) => eprintln!("latency-study --load: snapcall serve {}: {e}", extra.unwrap_or("")),
        }
    }

    let echo = functions.join(C_FN).join("rootfs/bin/echo-c");
    let mut points = Vec::new();
    // One prepared argv/envp per client thread (it holds raw pointers for exec).
    let connect = || Ok(native::Program::new(&echo, &["echo-c".into()], &["PATH=/bin".into(), "HOME=/".into()]));
    let call = |prog: &mut native::Program| match prog.call(native::Spawn::ForkExec, REQUEST) {
        Ok(out) if out == REQUEST => Ok(()),
        Ok(_) => Err("wrong output".into()),
        Err(e) => Err(e),
    };
    progress.set_label("fork+exec+wait: warming up");
    warm_up(connect, call);
    for (conns, rate) in std::iter::once((1, SERIAL_RATE)).chain(rates.iter().map(|&r| (CONNECTIONS, r))) {
        progress.set_label(&format!("fork+exec+wait at {rate} calls/s on {conns} thread(s)"));
        let before = children_cpu();
        let run = open_loop(conns, rate, secs, connect, call);
        points.push(point(conns, rate, secs, run, children_cpu() - before));
        progress.tick(1);
    }
    curves.push(Curve { name: "fork+exec+wait echo-c (no HTTP)".into(), points });

    let rootfs = functions.join(PY_FN).join("rootfs");
    let mut cmd = Command::new(rootfs.join("usr/bin/python3"));
    cmd.env_clear()
        .envs(crate::modes::python_env(&rootfs).iter().filter_map(|kv| kv.split_once('=')))
        .args(["-S", "-B", concat!(env!("CARGO_MANIFEST_DIR"), "/py/warm_server.py"), "--threaded"])
        .arg("--runtime-dir")
        .arg(rootfs.join("runtime"))
        .arg("--function-dir")
        .arg(rootfs.join("function"))
        .args(["--module", "hellowithdata", "--handler", "handler"]);
    match http::ServerChild::start(cmd, &logs.join("load-warm-python.log"), "listening on", progress) {
        Ok(server) => {
            let name = "warm Python server (threaded)";
            curves.push(http_curve(name, server.addr, server.pid(), "/hellowithdata", rates, secs, progress));
        }
        Err(e) => eprintln!("latency-study --load: warm Python server: {e}"),
    }
    curves
}

/// The first offered rate a curve does not keep up with (see the module docs).
pub fn knee(c: &Curve) -> Option<f64> {
    let sweep: Vec<&Point> = c.points.iter().filter(|p| p.conns > 1).collect();
    let base = sweep.first()?.p99;
    sweep.into_iter().find(|p| p.achieved < 0.95 * p.offered || p.p99 > 10.0 * base || p.errors > 0).map(|p| p.offered)
}

/// The Markdown table.
pub fn table(curves: &[Curve]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| mode | connections | offered calls/s | achieved | p50 ms | p99 ms | server's p99 ms | errors | host CPU per call ms |"
    );
    let _ = writeln!(o, "|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for c in curves {
        for p in &c.points {
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.3} | {} | {} | {:.3} |",
                c.name,
                p.conns,
                p.offered,
                p.achieved,
                p.p50,
                p.p99,
                if p.server_p99.is_nan() { "—".to_string() } else { format!("{:.3}", p.server_p99) },
                p.errors,
                p.cpu_ms
            );
        }
    }
    let _ = writeln!(o);
    for c in curves {
        let knee = knee(c).map_or("none up to the highest rate".to_string(), |r| format!("{r:.0} calls/s"));
        let _ = writeln!(o, "- knee of {}: {knee}", c.name);
    }
    o
}

pub fn csv(curves: &[Curve]) -> String {
    let mut o = String::from("mode,connections,offered,achieved,p50_ms,p99_ms,server_p99_ms,errors,cpu_ms_per_call\n");
    for c in curves {
        for p in &c.points {
            let _ = writeln!(
                o,
                "{},{},{},{:.1},{:.4},{:.4},{:.4},{},{:.4}",
                c.name, p.conns, p.offered, p.achieved, p.p50, p.p99, p.server_p99, p.errors, p.cpu_ms
            );
        }
    }
    o
}

/// Latency (p50 dashed, p99 solid; log scale) against offered rate (log scale).
pub fn svg(curves: &[Curve], title: &str) -> String {
    let (w, h, left, right, top, bottom) = (940.0, 520.0, 70.0, 300.0, 40.0, 50.0);
    let colors = ["#e31a1c", "#1f78b4", "#fb9a99", "#a6cee3", "#33a02c", "#ff7f00", "#6a3d9a"];
    let all: Vec<&Point> = curves.iter().flat_map(|c| &c.points).filter(|p| p.conns > 1).collect();
    let finite = |v: f64| v.is_finite() && v > 0.0;
    let (rmin, rmax) = all.iter().map(|p| p.offered).fold((f64::MAX, 0f64), |(a, b), r| (a.min(r), b.max(r)));
    let lats: Vec<f64> = all.iter().flat_map(|p| [p.p50, p.p99]).filter(|&v| finite(v)).collect();
    let lmin = lats.iter().copied().fold(f64::MAX, f64::min).max(1e-3);
    let lmax = lats.iter().copied().fold(0.0, f64::max).max(lmin * 10.0);
    let (lx0, lx1, ly0, ly1) =
        (rmin.max(1.0).log10(), rmax.max(2.0).log10(), lmin.log10().floor(), lmax.log10().ceil());
    let x = |r: f64| left + (r.log10() - lx0) / (lx1 - lx0).max(1e-9) * (w - left - right);
    let y = |l: f64| h - bottom - (l.log10() - ly0) / (ly1 - ly0).max(1e-9) * (h - top - bottom);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="24" font-size="15">{title}</text>"#
    );
    for e in (ly0 as i32)..=(ly1 as i32) {
        let v = 10f64.powi(e);
        let (x1, yy, tx, ty) = (w - right, y(v), left - 6.0, y(v) + 4.0);
        let _ = writeln!(
            o,
            r##"<line x1="{left}" x2="{x1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{v} ms</text>"##
        );
    }
    for p in curves.first().map_or(&[][..], |c| &c.points[..]).iter().filter(|p| p.conns > 1) {
        let (xx, y2, ty, r) = (x(p.offered), h - bottom, h - bottom + 18.0, p.offered);
        let _ = writeln!(
            o,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{y2}" stroke="#eee"/><text x="{xx:.1}" y="{ty}" text-anchor="middle">{r}</text>"##
        );
    }
    let _ = writeln!(
        o,
        r#"<text x="{}" y="{}" text-anchor="middle">offered calls/s (open loop)</text>"#,
        (left + w - right) / 2.0,
        h - 10.0
    );
    for (i, c) in curves.iter().enumerate() {
        let color = colors[i % colors.len()];
        for (q, dash) in [(0.99, ""), (0.5, r#" stroke-dasharray="5,4""#)] {
            let pts: Vec<String> = c
                .points
                .iter()
                .filter(|p| p.conns > 1)
                .map(|p| (p.offered, if q > 0.9 { p.p99 } else { p.p50 }))
                .filter(|&(_, l)| finite(l))
                .map(|(r, l)| format!("{:.1},{:.1}", x(r), y(l)))
                .collect();
            let _ = writeln!(
                o,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                pts.join(" ")
            );
        }
        let ly = top + 20.0 + i as f64 * 36.0;
        let (x1, x2, tx, ty, ty2, name) =
            (w - right + 10.0, w - right + 34.0, w - right + 40.0, ly + 4.0, ly + 18.0, &c.name);
        let _ = writeln!(
            o,
            r##"<line x1="{x1}" x2="{x2}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{tx}" y="{ty}">{name}</text><text x="{tx}" y="{ty2}" fill="#666">p99 solid, p50 dashed</text>"##
        );
    }
    o.push_str("</svg>\n");
    o
}
