//! The latency-floor study (issue 6): one command that measures the per-call latency of every
//! way to run a function on this machine, side by side, and writes the table, CSV and plot.
//!
//! ```text
//! cargo run --release -p benches --bin latency-study -- [--quick] [--out DIR]
//! ```
//!
//! Sections, in the order they run (docs/phases.md explains each phase):
//! 1. the physical floor: the steps of creating a VM, its first `KVM_RUN`, one exit from CPL3
//!    and from CPL0, a guest syscall round trip, destroying it (`vmm::probe`);
//! 2. native baselines: fork+exec+wait and posix_spawn of echo-c; the bundle's CPython started
//!    per call; a warm persistent Python HTTP server (the seed's warm Kubeless pod);
//! 3. snapcall in-process (`vmm` library calls), with and without the VM pool;
//! 4. snapcall over HTTP keep-alive (`snapcall serve` as a child on 127.0.0.1);
//! 5. the seed's method: serial `curl` processes.
//!
//! Every call is checked (status 200, the echoed body). Every loop is bounded by a sample
//! count and a time cap, and a watchdog ends the run if nothing progresses for two minutes.

mod http;
mod machine;
mod native;
mod progress;
mod report;
mod stats;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmm::probe::{self, ExitKind, ExitProbe};
use vmm::{Function, Runtime, RuntimeConfig, StartMode};

use progress::Progress;
use stats::{ms, summarize};

/// The request every function gets: the seed's `curl --data`.
const REQUEST: &[u8] = br#"{"Another": "Echo"}"#;
const C_FN: &str = "echo-c";
const PY_FN: &str = "hellowithdata-py";
/// Guest memory of the floor probes: echo-c's size.
const PROBE_MEMORY: u64 = 64 << 20;
/// VMs the pool keeps per size in the "pool" modes (snapcall serve's default).
const POOL: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Floor,
    Native,
    Library,
    Http,
    Curl,
}

impl Group {
    pub const ALL: [Group; 5] = [Group::Floor, Group::Native, Group::Library, Group::Http, Group::Curl];
    pub fn key(self) -> &'static str {
        match self {
            Group::Floor => "floor",
            Group::Native => "native",
            Group::Library => "library",
            Group::Http => "http",
            Group::Curl => "curl",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Group::Floor => "Physical floor (vmm::probe, 64 MiB VM)",
            Group::Native => "Native baselines",
            Group::Library => "snapcall in-process (vmm library call)",
            Group::Http => "snapcall over HTTP keep-alive (and the warm Python server)",
            Group::Curl => "The seed's method: one curl process per call",
        }
    }
    pub fn about(self) -> &'static str {
        match self {
            Group::Floor => "Each step of making a VM, timed alone with the ioctls `EmptyVm::create` uses; exits timed per `KVM_RUN`.",
            Group::Native => "Same static echo-c binary and the same CPython + handler the guests run, started as host processes; the warm server keeps CPython alive.",
            Group::Library => "take_vm → start (restore or cold load) → run → release, timed around the whole call in this process.",
            Group::Http => "One keep-alive connection from a Rust client in this process; the server is a child process on 127.0.0.1.",
            Group::Curl => "Wall time of each `curl` process, spawn to exit, as the seed's `time curl` measured it.",
        }
    }
    pub fn color(self) -> &'static str {
        match self {
            Group::Floor => "#6a3d9a",
            Group::Native => "#33a02c",
            Group::Library => "#1f78b4",
            Group::Http => "#e31a1c",
            Group::Curl => "#ff7f00",
        }
    }
}

/// Phases of one call, ms; NaN where a mode has no such phase.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub vm: f64,
    pub load: f64,
    pub run: f64,
    pub release: f64,
    pub queue: f64,
    pub server_total: f64,
    pub exits: f64,
}

impl Phases {
    pub fn none() -> Phases {
        Phases { vm: f64::NAN, load: f64::NAN, run: f64::NAN, release: f64::NAN, queue: f64::NAN, server_total: f64::NAN, exits: f64::NAN }
    }
}

/// One mode's samples.
pub struct Series {
    pub name: String,
    pub group: Group,
    /// Per-call totals, ms.
    pub totals: Vec<f64>,
    /// Per-call phases (same order), for modes that have them.
    pub phases: Vec<Phases>,
    /// "k of n" calls that found the pool empty, for pool modes.
    pub inline_vms: Option<String>,
}

/// Rough cost of one call in ms, so the progress bar moves with time, not with call counts.
mod cost {
    pub const FAST: u64 = 1;
    pub const C_COLD: u64 = 3;
    pub const PY_SNAP: u64 = 5;
    pub const PY_COLD: u64 = 150;
    pub const PY_PROCESS: u64 = 90;
    pub const CURL: u64 = 15;
}

/// Sample counts per kind of mode.
struct Sizes {
    floor_steps: usize,
    floor_exits: usize,
    fast: usize,
    c_cold: usize,
    py_per_call: usize,
    /// Python cold calls in-process and over keep-alive (curl always makes `curl` calls).
    py_cold: usize,
    py_snap: usize,
    curl: usize,
    /// Longest any one mode may take.
    cap: Duration,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes { floor_steps: 40, floor_exits: 1000, fast: 100, c_cold: 40, py_per_call: 12, py_cold: 4, py_snap: 40, curl: 12, cap: Duration::from_secs(3) }
        } else {
            Sizes { floor_steps: 500, floor_exits: 5000, fast: 1000, c_cold: 500, py_per_call: 200, py_cold: 100, py_snap: 500, curl: 200, cap: Duration::from_secs(75) }
        }
    }
    /// Units the progress bar counts: each call weighs its rough cost in ms ([`cost`]).
    fn total(&self) -> u64 {
        let n = |x: usize| x as u64;
        let floor = n(self.floor_steps) * 3 + n(self.floor_exits / 100) * ExitKind::ALL.len() as u64;
        let native = n(self.fast) * 3 * cost::FAST + n(self.py_per_call) * cost::PY_PROCESS;
        let calls = n(self.c_cold) * cost::C_COLD + n(self.fast) * cost::FAST + n(self.py_cold) * cost::PY_COLD + n(self.py_snap) * cost::PY_SNAP;
        let curl = n(self.curl) * (cost::CURL * 4 + cost::PY_COLD / 2);
        floor + native + 4 * calls + curl // library and HTTP, each with and without the pool
    }
}

/// Pause between calls, so the pool's filler and reaper threads (and the previous child's
/// teardown) are not still running on the machine's cores when the next call starts: the
/// study measures the latency of one call, not throughput. Applied to every mode alike.
const GAP: Duration = Duration::from_millis(5);

struct Study {
    progress: &'static Progress,
    sizes: Sizes,
    series: Vec<Series>,
    problems: Vec<String>,
    /// Wall time of each section of the run.
    sections: Vec<(&'static str, Duration)>,
}

/// Unrecorded calls before each mode's samples (page cache, branch predictors, the pool).
fn warmup_calls(n: usize) -> usize {
    (n / 20).clamp(1, 20)
}

type CallResult = Result<(f64, Option<Phases>), String>;

fn ms_of(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Study {
    /// Runs `call` `warmup` times unrecorded, then up to `n` times (or until the time cap),
    /// `GAP` apart, recording each total and phases.
    fn measure(&mut self, name: &str, group: Group, n: usize, cost: u64, mut call: impl FnMut() -> CallResult) -> Option<usize> {
        self.progress.set_label(name);
        let warmup = warmup_calls(n);
        for _ in 0..warmup {
            if let Err(e) = call() {
                self.problems.push(format!("{name}: {e}"));
                self.progress.tick(n as u64 * cost);
                return None;
            }
            std::thread::sleep(GAP);
        }
        let started = Instant::now();
        let mut s = Series { name: name.to_string(), group, totals: Vec::with_capacity(n), phases: Vec::new(), inline_vms: None };
        for i in 0..n {
            if started.elapsed() > self.sizes.cap {
                self.problems.push(format!("{name}: stopped at the time cap after {i} of {n} calls"));
                self.progress.tick((n - i) as u64 * cost);
                break;
            }
            match call() {
                Ok((total, phases)) => {
                    s.totals.push(total);
                    if let Some(p) = phases {
                        s.phases.push(p);
                    }
                }
                Err(e) => {
                    self.problems.push(format!("{name}: call {i}: {e}"));
                    self.progress.tick((n - i) as u64 * cost);
                    break;
                }
            }
            self.progress.tick(cost);
            std::thread::sleep(GAP);
        }
        let count = s.totals.len();
        self.series.push(s);
        Some(count)
    }
}

struct Args {
    quick: bool,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut quick = false;
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("study");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(it.next().unwrap_or_else(|| usage("--out needs a directory"))),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    Args { quick, out }
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("latency-study: {err}");
    }
    eprintln!("usage: cargo run --release -p benches --bin latency-study -- [--quick] [--out DIR]\n\n  --quick    fewer calls per mode (under a minute)\n  --out DIR  where results.md, samples.csv, summary.csv and latency.svg go (default target/study)");
    std::process::exit(if err.is_empty() { 0 } else { 2 });
}

fn main() {
    let args = parse_args();
    let sizes = Sizes::new(args.quick);
    std::fs::create_dir_all(&args.out).unwrap_or_else(|e| fatal(&format!("{}: {e}", args.out.display())));
    let out = args.out.canonicalize().unwrap_or(args.out.clone());
    let machine = machine::Machine::probe();
    let command = format!("cargo run --release -p benches --bin latency-study --{}", if args.quick { " --quick" } else { "" });
    eprintln!("latency-study: {} on {} ({} cores, {}, {}), writing to {}", if args.quick { "quick run" } else { "full run" }, machine.cpu, machine.cores, machine.kernel, machine.kvm, out.display());

    // Private copies of the bundles with fresh snapshots: a concurrent rebuild of the shared
    // bundles cannot change what is measured halfway through.
    let functions = out.join("functions");
    let _ = std::fs::remove_dir_all(&functions);
    for name in [C_FN, PY_FN] {
        copy_tree(&benches::bundle(name), &functions.join(name)).unwrap_or_else(|e| fatal(&format!("copying bundle {name}: {e}")));
        let dir = functions.join(name);
        let cold = Function::load(&dir, StartMode::Cold).unwrap_or_else(|e| fatal(&format!("{name}: {e}")));
        vmm::snapshot::take_snapshot(&cold, &dir.join(vmm::snapshot::SNAPSHOT_FILE)).unwrap_or_else(|e| fatal(&format!("{name}: snapshot: {e}")));
    }
    let snapcall = snapcall_binary();
    let logs = out.join("logs");
    let _ = std::fs::create_dir_all(&logs);

    let started = Instant::now();
    let progress = Progress::new(sizes.total());
    let mut study = Study { progress, sizes, series: Vec::new(), problems: Vec::new(), sections: Vec::new() };

    let mut sections = Vec::new();
    let t = Instant::now();
    floor(&mut study);
    sections.push(("physical floor", t.elapsed()));
    let t = Instant::now();
    native_baselines(&mut study, &functions, &logs);
    sections.push(("native baselines (and curl to the warm server)", t.elapsed()));
    let t = Instant::now();
    library(&mut study, &functions);
    sections.push(("snapcall in-process", t.elapsed()));
    let t = Instant::now();
    over_http(&mut study, &functions, &logs, &snapcall);
    sections.push(("snapcall over HTTP (and curl)", t.elapsed()));
    study.sections = sections;
    progress.finish();
    let elapsed = started.elapsed();
    // Report group by group, in the order of Group::ALL (stable: run order within a group).
    study.series.sort_by_key(|s| Group::ALL.iter().position(|g| *g == s.group));

    let report = write_report(&study, &machine, &command, elapsed, &out);
    println!("{report}");
    eprintln!("latency-study: wrote {}/results.md, samples.csv, summary.csv, latency.svg in {:.0} s", out.display(), elapsed.as_secs_f64());
}

fn fatal(msg: &str) -> ! {
    eprintln!("\nlatency-study: {msg}");
    std::process::exit(1);
}

/// Copies a directory tree, keeping symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let meta = std::fs::symlink_metadata(&src)?;
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if meta.is_dir() {
            copy_tree(&src, &dst)?;
        } else if e.file_name() != vmm::snapshot::SNAPSHOT_FILE {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// The `snapcall` binary of this checkout, built now (cargo makes this a no-op when fresh)
/// into the same target directory as this study.
fn snapcall_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SNAPCALL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| fatal(&format!("current_exe: {e}")));
    let dir = exe.parent().unwrap_or(Path::new(".")).to_path_buf();
    let target_dir = dir.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("latency-study: building snapcall (cargo build --release -p httpd)");
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "httpd", "--bin", "snapcall"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .status();
    let bin = dir.join("snapcall");
    match status {
        Ok(s) if s.success() && bin.exists() => bin,
        _ if bin.exists() => {
            eprintln!("latency-study: building snapcall failed; using the existing {}", bin.display());
            bin
        }
        _ => fatal("cannot build snapcall (set SNAPCALL_BIN to use a prebuilt one)"),
    }
}

// ---------------------------------------------------------------- 1. physical floor

fn floor(st: &mut Study) {
    let n = st.sizes.floor_steps;
    st.progress.set_label("floor: VM creation steps");
    let names = ["KVM_CREATE_VM", "set memory (mmap + KVM_SET_USER_MEMORY_REGION)", "KVM_CREATE_VCPU", "KVM_SET_CPUID2", "destroy VM (never run)"];
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            st.problems.push("floor steps: time cap".into());
            break;
        }
        match probe::create_steps(PROBE_MEMORY) {
            Ok(s) => {
                for (c, d) in cols.iter_mut().zip([s.create_vm, s.set_memory, s.create_vcpu, s.set_cpuid, s.destroy]) {
                    c.push(ms_of(d));
                }
            }
            Err(e) => {
                st.problems.push(format!("floor steps: {e}"));
                break;
            }
        }
        st.progress.tick(1);
    }
    for (name, totals) in names.iter().zip(cols) {
        st.series.push(Series { name: name.to_string(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }

    st.progress.set_label("floor: whole VM, first KVM_RUN, destroy");
    let (mut create, mut first, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            break;
        }
        let t0 = Instant::now();
        let mut p = match ExitProbe::new(PROBE_MEMORY, ExitKind::Cpl3Mmio) {
            Ok(p) => p,
            Err(e) => {
                st.problems.push(format!("floor probe VM: {e}"));
                break;
            }
        };
        create.push(ms_of(t0.elapsed()));
        match p.run_once() {
            Ok(d) => first.push(ms_of(d)),
            Err(e) => {
                st.problems.push(format!("floor first KVM_RUN: {e}"));
                break;
            }
        }
        let vm = p.into_vm();
        let t1 = Instant::now();
        drop(vm);
        destroy.push(ms_of(t1.elapsed()));
        st.progress.tick(1);
    }
    for (name, totals) in [
        ("EmptyVm::create (whole)", create),
        ("a call's first KVM_RUN (iretq to CPL3 + 1 exit)", first),
        ("destroy VM (after a run)", destroy),
    ] {
        st.series.push(Series { name: name.into(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }

    st.progress.set_label("floor: first KVM_RUN of a new vCPU");
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            break;
        }
        match probe::first_kvm_run(PROBE_MEMORY) {
            Ok(r) => {
                first.push(ms_of(r.first));
                second.push(ms_of(r.second));
            }
            Err(e) => {
                st.problems.push(format!("floor first KVM_RUN of a new vCPU: {e}"));
                break;
            }
        }
        st.progress.tick(1);
    }
    for (name, totals) in [("first KVM_RUN of a new vCPU (CPL0, 1 exit)", first), ("its second KVM_RUN", second)] {
        st.series.push(Series { name: name.into(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }

    let n = st.sizes.floor_exits;
    for kind in ExitKind::ALL {
        st.progress.set_label(&format!("floor: {}", kind.name()));
        let mut totals = Vec::with_capacity(n);
        match ExitProbe::new(PROBE_MEMORY, kind) {
            Ok(mut p) => {
                let _ = p.run_once(); // the first KVM_RUN is measured above
                let t = Instant::now();
                for _ in 0..n {
                    if t.elapsed() > st.sizes.cap {
                        break;
                    }
                    match p.run_once() {
                        Ok(d) => totals.push(ms_of(d)),
                        Err(e) => {
                            st.problems.push(format!("{}: {e}", kind.name()));
                            break;
                        }
                    }
                    if totals.len() % 100 == 0 {
                        st.progress.tick(1);
                    }
                }
            }
            Err(e) => st.problems.push(format!("{}: {e}", kind.name())),
        }
        st.series.push(Series { name: kind.name().into(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }
}

// ---------------------------------------------------------------- 2. native baselines

fn python_env(rootfs: &Path) -> Vec<String> {
    vec![
        format!("PYTHONHOME={}", rootfs.join("usr").display()),
        format!("PYTHONPATH={}", rootfs.join("function").display()),
        "PYTHONUTF8=1".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        "PYTHONNOUSERSITE=1".into(),
        "HOME=/".into(),
    ]
}

fn check_echo(out: &[u8]) -> Result<(), String> {
    if out == REQUEST {
        Ok(())
    } else {
        Err(format!("unexpected response {:?}", String::from_utf8_lossy(&out[..out.len().min(200)])))
    }
}

fn native_baselines(st: &mut Study, functions: &Path, logs: &Path) {
    let echo = functions.join(C_FN).join("rootfs/bin/echo-c");
    let prog = native::Program::new(&echo, &["echo-c".into()], &["PATH=/bin".into(), "HOME=/".into()]);
    for (name, how) in [("fork+exec+wait echo-c", native::Spawn::ForkExec), ("posix_spawn+wait echo-c", native::Spawn::PosixSpawn)] {
        st.measure(name, Group::Native, st.sizes.fast, cost::FAST, || {
            let t = Instant::now();
            let out = prog.call(how, REQUEST)?;
            let total = ms_of(t.elapsed());
            check_echo(&out)?;
            Ok((total, None))
        });
    }

    let rootfs = functions.join(PY_FN).join("rootfs");
    let python = rootfs.join("usr/bin/python3");
    let py_args: Vec<String> = ["python3", "-S", "-B"]
        .into_iter()
        .map(String::from)
        .chain([rootfs.join("runtime/snapcall_runtime.py").display().to_string()])
        .chain(["--module", "hellowithdata", "--handler", "handler", "--function-name", PY_FN].map(String::from))
        .collect();
    let py = native::Program::new(&python, &py_args, &python_env(&rootfs));
    st.measure("python3 per call (bundle CPython, native)", Group::Native, st.sizes.py_per_call, cost::PY_PROCESS, || {
        let t = Instant::now();
        let out = py.call(native::Spawn::PosixSpawn, REQUEST)?;
        let total = ms_of(t.elapsed());
        check_echo(&out)?;
        Ok((total, None))
    });

    // The warm server: same interpreter, runtime and handler, kept alive between calls.
    let mut cmd = Command::new(&python);
    cmd.env_clear()
        .envs(python_env(&rootfs).iter().filter_map(|kv| kv.split_once('=')))
        .arg("-S")
        .arg("-B")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/warm_server.py"))
        .arg("--runtime-dir")
        .arg(rootfs.join("runtime"))
        .arg("--function-dir")
        .arg(rootfs.join("function"))
        .args(["--module", "hellowithdata", "--handler", "handler"]);
    match http::ServerChild::start(cmd, &logs.join("warm-python-server.log"), "listening on", st.progress) {
        Ok(server) => {
            http_mode(st, &server, "/hellowithdata", "warm Python HTTP server (keep-alive)", st.sizes.fast, cost::FAST, false);
            curl_mode(st, &server, "/hellowithdata", "curl → warm Python server (Kubeless stand-in)", cost::CURL);
        }
        Err(e) => {
            st.problems.push(format!("warm Python server: {e}"));
            st.progress.tick(st.sizes.fast as u64 * cost::FAST + st.sizes.curl as u64 * cost::CURL);
        }
    }
}

// ---------------------------------------------------------------- 3. in-process library calls

fn library(st: &mut Study, functions: &Path) {
    for pool in [0, POOL] {
        let runtime = match Runtime::new(RuntimeConfig { pool_size: pool }) {
            Ok(r) => r,
            Err(e) => {
                st.problems.push(format!("vmm runtime: {e}"));
                continue;
            }
        };
        for (fname, lang) in [(C_FN, "C"), (PY_FN, "Python")] {
            for (mode, start) in [("cold", StartMode::Cold), ("snapshot", StartMode::Snapshot)] {
                let f = match Function::load(&functions.join(fname), start) {
                    Ok(f) => f,
                    Err(e) => {
                        st.problems.push(format!("{fname} {mode}: {e}"));
                        continue;
                    }
                };
                let (n, c) = match (lang, mode) {
                    ("C", "cold") => (st.sizes.c_cold, cost::C_COLD),
                    ("C", _) => (st.sizes.fast, cost::FAST),
                    (_, "cold") => (st.sizes.py_cold, cost::PY_COLD),
                    _ => (st.sizes.py_snap, cost::PY_SNAP),
                };
                runtime.prepare(&f);
                runtime.wait_until_full();
                let inline_before = runtime.pool_stats().created_inline;
                let name = format!("{lang} {mode}, library call, {}", if pool == 0 { "no pool" } else { "pool" });
                let count = st.measure(&name, Group::Library, n, c, || {
                    let t0 = Instant::now();
                    let vm = runtime.take_vm(&f).map_err(|e| e.to_string())?;
                    let t1 = Instant::now();
                    let ready = f.start(vm, REQUEST).map_err(|e| e.to_string())?;
                    let finished = ready.run();
                    let t2 = Instant::now();
                    let timings = finished.timings();
                    let exits = finished.stats().exits as f64;
                    let checked = match finished.outcome() {
                        Ok(o) if o.exit_code == 0 => check_echo(&o.stdout),
                        Ok(o) => Err(format!("exit code {}", o.exit_code)),
                        Err(e) => Err(e.to_string()),
                    };
                    runtime.release(finished);
                    let t3 = Instant::now();
                    checked?;
                    let phases = Phases {
                        vm: ms_of(t1 - t0),
                        load: ms_of(timings.load),
                        run: ms_of(timings.run),
                        release: ms_of(t3 - t2),
                        exits,
                        ..Phases::none()
                    };
                    Ok((ms_of(t3 - t0), Some(phases)))
                });
                if let (Some(count), true) = (count, pool > 0) {
                    let inline = runtime.pool_stats().created_inline - inline_before;
                    if let Some(s) = st.series.last_mut() {
                        // Warm-up calls are included in the count of inline creations.
                        s.inline_vms = Some(format!("{inline} of {} (incl. warm-up)", count + warmup_calls(n)));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- 4. + 5. HTTP and curl

fn http_mode(st: &mut Study, server: &http::ServerChild, path: &str, name: &str, n: usize, cost: u64, snapcall: bool) {
    let mut client = match http::Client::connect(server.addr) {
        Ok(c) => c,
        Err(e) => {
            st.problems.push(format!("{name}: {e}"));
            st.progress.tick(n as u64 * cost);
            return;
        }
    };
    let inline = |s: &http::ServerChild| s.get_text("/metrics").and_then(|m| metric(&m, "snapcall_vms_created_inline_total"));
    let before = if snapcall { inline(server) } else { None };
    let count = st.measure(name, Group::Http, n, cost, || {
        let t = Instant::now();
        let r = client.post(path, "application/json", REQUEST)?;
        let total = ms_of(t.elapsed());
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        check_echo(&r.body)?;
        let phases = r.server_timing.map(|h| {
            let mut p = Phases::none();
            for (k, v) in http::parse_server_timing(&h) {
                match k.as_str() {
                    "queue" => p.queue = v,
                    "vm" => p.vm = v,
                    "restore" => p.load = v,
                    "run" => p.run = v,
                    "total" => p.server_total = v,
                    _ => {}
                }
            }
            p
        });
        Ok((total, phases))
    });
    drop(client);
    let after = if snapcall { inline(server) } else { None };
    if let (Some(b), Some(a), Some(count)) = (before, after, count) {
        if let Some(s) = st.series.last_mut() {
            s.inline_vms = Some(format!("{} of {} (incl. warm-up)", a - b, count + warmup_calls(n)));
        }
    }
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok())).map(|v| v as u64)
}

fn curl_mode(st: &mut Study, server: &http::ServerChild, path: &str, name: &str, cost: u64) {
    let url = format!("http://{}{path}", server.addr);
    let data = String::from_utf8_lossy(REQUEST).to_string();
    st.measure(name, Group::Curl, st.sizes.curl, cost, || {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--header", "Content-Type: application/json", "--data", &data, &url])
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let total = ms_of(t.elapsed());
        if out.stdout != b"200" {
            return Err(format!("curl: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
        }
        Ok((total, None))
    });
}

fn over_http(st: &mut Study, functions: &Path, logs: &Path, snapcall: &Path) {
    for cold in [true, false] {
        for pool in [0, POOL] {
            let mode = if cold { "cold" } else { "snapshot" };
            let mut cmd = Command::new(snapcall);
            cmd.arg("serve").arg("--functions").arg(functions).args(["--listen", "127.0.0.1:0", "--threads", "1"]);
            cmd.arg("--pool-size").arg(pool.to_string());
            if cold {
                cmd.arg("--cold");
            }
            let log = logs.join(format!("serve-{mode}-pool{pool}.log"));
            let (c_n, py_n) = if cold { (st.sizes.c_cold, st.sizes.py_cold) } else { (st.sizes.fast, st.sizes.py_snap) };
            let (c_cost, py_cost) = if cold { (cost::C_COLD, cost::PY_COLD) } else { (cost::FAST, cost::PY_SNAP) };
            let curl_py_cost = if cold { cost::PY_COLD } else { cost::CURL };
            let with_curl = pool > 0;
            let server = match http::ServerChild::start(cmd, &log, "listening on", st.progress) {
                Ok(s) => s,
                Err(e) => {
                    st.problems.push(format!("snapcall serve ({mode}, pool {pool}): {e}"));
                    let curl = if with_curl { st.sizes.curl as u64 * (cost::CURL + curl_py_cost) } else { 0 };
                    st.progress.tick(c_n as u64 * c_cost + py_n as u64 * py_cost + curl);
                    continue;
                }
            };
            std::thread::sleep(Duration::from_millis(200)); // let the pool fill
            let pool_name = if pool == 0 { "no pool" } else { "pool" };
            for (fname, lang, n, c) in [(C_FN, "C", c_n, c_cost), (PY_FN, "Python", py_n, py_cost)] {
                http_mode(st, &server, &format!("/{fname}"), &format!("{lang} {mode}, HTTP keep-alive, {pool_name}"), n, c, true);
            }
            if with_curl {
                for (fname, lang, c) in [(C_FN, "C", cost::CURL), (PY_FN, "Python", curl_py_cost)] {
                    curl_mode(st, &server, &format!("/{fname}"), &format!("curl → snapcall {lang} {mode} (pool)"), c);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- the report

fn find<'a>(st: &'a Study, name: &str) -> Option<&'a Series> {
    st.series.iter().find(|s| s.name == name && !s.totals.is_empty())
}

fn p50(st: &Study, name: &str) -> Option<f64> {
    find(st, name).map(|s| summarize(&s.totals).p50)
}

/// The seed's table (seconds there; milliseconds here), its machine, and our curl columns in
/// the same orientation.
fn seed_table(st: &Study) -> String {
    let seed: [(&str, [f64; 7]); 4] = [
        ("Kubeless", [23.3, 11.166, 18.0, 19.0, 19.0, 19.0, 54.0]),
        ("KM Python", [118.8, 12.354, 112.0, 113.0, 114.5, 118.0, 153.0]),
        ("KM Py Snap", [51.0, 12.953, 40.0, 42.0, 47.0, 53.25, 81.0]),
        ("KM C", [38.0, 7.746, 27.0, 31.25, 40.0, 44.0, 49.0]),
    ];
    let ours = [
        ("warm Python server", "curl → warm Python server (Kubeless stand-in)"),
        ("snapcall Python cold", "curl → snapcall Python cold (pool)"),
        ("snapcall Py snapshot", "curl → snapcall Python snapshot (pool)"),
        ("snapcall C snapshot", "curl → snapcall C snapshot (pool)"),
        ("snapcall C cold", "curl → snapcall C cold (pool)"),
    ];
    let mut cols: Vec<(String, [f64; 9])> = seed.iter().map(|(n, v)| (format!("seed: {n}"), [v[0], v[1], v[2], v[3], v[4], v[5], v[6], f64::NAN, 10.0])).collect();
    for (label, name) in ours {
        if let Some(s) = find(st, name) {
            let d = summarize(&s.totals);
            cols.push((format!("ours: {label}"), [d.mean, d.std, d.min, d.p25, d.p50, d.p75, d.max, d.p99, d.n as f64]));
        }
    }
    let mut o = String::from("| ms |");
    for (n, _) in &cols {
        let _ = write!(o, " {n} |");
    }
    o.push_str("\n|---|");
    o.push_str(&"--:|".repeat(cols.len()));
    o.push('\n');
    for (i, stat) in ["mean", "std", "min", "25%", "50%", "75%", "max", "p99", "n"].iter().enumerate() {
        let _ = write!(o, "| {stat} |");
        for (_, v) in &cols {
            let cell = if i == 8 { format!("{}", v[i] as u64) } else { ms(v[i]) };
            let _ = write!(o, " {cell} |");
        }
        o.push('\n');
    }
    o
}

fn bars(st: &Study) -> String {
    let mut o = String::from("| bar | measured | verdict |\n|---|---|---|\n");
    let fork = p50(st, "fork+exec+wait echo-c");
    let warm = p50(st, "warm Python HTTP server (keep-alive)");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    for (mode, abs, rel_to, rel_name, rel_max) in [
        ("C snapshot, HTTP keep-alive, pool", 0.25, fork, "fork+exec+wait", 0.5),
        ("C snapshot, HTTP keep-alive, no pool", 0.25, fork, "fork+exec+wait", 0.5),
        ("Python snapshot, HTTP keep-alive, pool", 1.0, warm, "warm Python server", 2.0),
        ("Python snapshot, HTTP keep-alive, no pool", 1.0, warm, "warm Python server", 2.0),
    ] {
        match p50(st, mode) {
            Some(v) => {
                let _ = writeln!(o, "| {mode}: p50 ≤ {abs} ms | {} ms | {} |", ms(v), verdict(v <= abs));
                if let Some(r) = rel_to {
                    let _ = writeln!(o, "| {mode}: p50 ≤ {rel_max}× {rel_name} p50 ({} ms) | {:.2}× | {} |", ms(r), v / r, verdict(v / r <= rel_max));
                }
            }
            None => {
                let _ = writeln!(o, "| {mode} | not measured | - |");
            }
        }
    }
    // Phase sums: in-process, the vmm's phase clocks against the study's clock around the call.
    for s in st.series.iter().filter(|s| s.group == Group::Library && !s.phases.is_empty()) {
        let total = stats::mean(&s.totals);
        let sum: f64 = s.phases.iter().map(|p| p.vm + p.load + p.run + p.release).sum::<f64>() / s.phases.len() as f64;
        let off = (sum / total - 1.0) * 100.0;
        let _ = writeln!(o, "| {}: phases sum to the total within 5 % | Σ {} of {} ms ({:+.1} %) | {} |", s.name, ms(sum), ms(total), off, verdict(off.abs() <= 5.0));
    }
    for s in st.series.iter().filter(|s| s.group == Group::Http && !s.phases.is_empty()) {
        let server = stats::mean(&s.phases.iter().map(|p| p.server_total).collect::<Vec<_>>());
        let sum = stats::mean(&s.phases.iter().map(|p| p.queue + p.vm + p.load + p.run).collect::<Vec<_>>());
        let total = stats::mean(&s.totals);
        let off = (sum / total - 1.0) * 100.0;
        let _ = writeln!(
            o,
            "| {}: server phases sum to the client's total within 5 % | Σ {} ms, server total {} ms, client total {} ms ({:+.1} %) | {} |",
            s.name,
            ms(sum),
            ms(server),
            ms(total),
            off,
            verdict(off.abs() <= 5.0)
        );
    }
    o
}

fn write_report(st: &Study, m: &machine::Machine, command: &str, elapsed: Duration, out: &Path) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# snapcall latency study\n\nCommand: `{command}` ({:.0} s). All times in milliseconds. Traffic is 127.0.0.1 only; calls are serial, {} ms apart.\n", elapsed.as_secs_f64(), GAP.as_millis());
    let _ = writeln!(r, "## Machine\n\n{}", m.markdown());
    let _ = writeln!(r, "## Per-call latency, one row per mode\n\n{}", report::stats_tables(&st.series));
    let _ = writeln!(r, "## Phases (means, ms)\n\nIn-process: vm = take_vm, load/restore and run = the vmm's own clocks, release = handing the VM back (no pool: destroying it inline). Over HTTP: the phases come from the server's `Server-Timing` header; client total − server total is HTTP parsing, the loopback and the client.\n\n{}", report::breakdown_table(&st.series));
    let _ = writeln!(r, "## Against the issue's bars (goals, not assertions)\n\n{}", bars(st));
    let _ = writeln!(r, "## Beside the seed's table\n\nThe seed (Kontain FaaS POC): `time curl` × 10 against minikube on an Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz, 32 GB; its seconds converted to ms. Ours: the same `curl --data '{{\"Another\": \"Echo\"}}'`, one process per call, on the machine above.\n\n{}", seed_table(st));
    if !st.problems.is_empty() {
        let _ = writeln!(r, "## Problems during the run\n");
        for p in &st.problems {
            let _ = writeln!(r, "- {p}");
        }
        r.push('\n');
    }
    let _ = writeln!(r, "## Run time per section\n");
    for (name, d) in &st.sections {
        let _ = writeln!(r, "- {name}: {:.1} s", d.as_secs_f64());
    }
    r.push('\n');
    let _ = writeln!(r, "![per-call latency](latency.svg)\n\nRaw samples: samples.csv; per-mode summary: summary.csv.");
    let title = format!("snapcall latency study: {} · {} · {}", m.cpu, m.kvm, m.date);
    for (file, text) in [
        ("results.md", r.clone()),
        ("samples.csv", report::samples_csv(&st.series)),
        ("summary.csv", report::summary_csv(&st.series)),
        ("latency.svg", report::svg(&st.series, &title)),
    ] {
        if let Err(e) = std::fs::write(out.join(file), text) {
            eprintln!("latency-study: writing {file}: {e}");
        }
    }
    r
}
