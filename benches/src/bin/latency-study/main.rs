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
//! Between 3 and 4 it also measures host memory per VM the pool holds ready (`memory.rs`).
//!
//! `--load` runs the load sweep instead (`load.rs`): latency and CPU per call against an
//! offered rate, open loop, written to load.md, load.csv and load.svg.
//!
//! Every call is checked (status 200, the echoed body). Every loop is bounded by a sample
//! count and a time cap, and a watchdog ends the run if nothing progresses for two minutes.

mod http;
mod load;
mod machine;
mod memory;
mod modes;
mod native;
mod progress;
mod report;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmm::probe::ExitKind;
use vmm::{Function, StartMode};

use progress::Progress;

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
            Group::Floor => "Each step of making a VM, timed alone with the ioctls `EmptyVm::create` uses, made as the server makes them (by the VM creator, its keeper's vCPU alive); exits timed per `KVM_RUN`.",
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
        Phases {
            vm: f64::NAN,
            load: f64::NAN,
            run: f64::NAN,
            release: f64::NAN,
            queue: f64::NAN,
            server_total: f64::NAN,
            exits: f64::NAN,
        }
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
            Sizes {
                floor_steps: 40,
                floor_exits: 1000,
                fast: 100,
                c_cold: 40,
                py_per_call: 12,
                py_cold: 4,
                py_snap: 40,
                curl: 12,
                cap: Duration::from_secs(3),
            }
        } else {
            Sizes {
                floor_steps: 500,
                floor_exits: 5000,
                fast: 1000,
                c_cold: 500,
                py_per_call: 200,
                py_cold: 100,
                py_snap: 500,
                curl: 200,
                cap: Duration::from_secs(75),
            }
        }
    }
    /// Units the progress bar counts: each call weighs its rough cost in ms ([`cost`]).
    fn total(&self) -> u64 {
        let n = |x: usize| x as u64;
        let floor = n(self.floor_steps) * 3 + n(self.floor_exits / 100) * ExitKind::ALL.len() as u64;
        let native = n(self.fast) * 3 * cost::FAST + n(self.py_per_call) * cost::PY_PROCESS;
        let calls = n(self.c_cold) * cost::C_COLD
            + n(self.fast) * cost::FAST
            + n(self.py_cold) * cost::PY_COLD
            + n(self.py_snap) * cost::PY_SNAP;
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
    /// Host memory per VM held ready, per snapshot function.
    memory: Vec<memory::PerVm>,
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
    fn measure(
        &mut self,
        name: &str,
        group: Group,
        n: usize,
        cost: u64,
        mut call: impl FnMut() -> CallResult,
    ) -> Option<usize> {
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
        let mut s = Series {
            name: name.to_string(),
            group,
            totals: Vec::with_capacity(n),
            phases: Vec::new(),
            inline_vms: None,
        };
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
    load: bool,
    out: PathBuf,
}

fn parse_args() -> Args {
    let mut quick = false;
    let mut load = false;
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("target").join("study");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--load" => load = true,
            "--out" => out = PathBuf::from(it.next().unwrap_or_else(|| usage("--out needs a directory"))),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    Args { quick, load, out }
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("latency-study: {err}");
    }
    eprintln!("usage: cargo run --release -p benches --bin latency-study -- [--quick] [--load] [--out DIR]\n\n  --quick    fewer calls per mode (under a minute)\n  --load     the load sweep instead: latency and CPU per call against an offered rate (load.md, load.csv, load.svg)\n  --out DIR  where results.md, samples.csv, summary.csv and latency.svg go (default target/study)");
    std::process::exit(if err.is_empty() { 0 } else { 2 });
}

fn main() {
    let args = parse_args();
    let sizes = Sizes::new(args.quick);
    std::fs::create_dir_all(&args.out).unwrap_or_else(|e| fatal(&format!("{}: {e}", args.out.display())));
    let out = args.out.canonicalize().unwrap_or(args.out.clone());
    let machine = machine::Machine::probe();
    let command =
        format!("cargo run --release -p benches --bin latency-study --{}", if args.quick { " --quick" } else { "" });
    eprintln!(
        "latency-study: {} on {} ({} cores, {}, {}), writing to {}",
        if args.quick { "quick run" } else { "full run" },
        machine.cpu,
        machine.cores,
        machine.kernel,
        machine.kvm,
        out.display()
    );

    // Private copies of the bundles with fresh snapshots: a concurrent rebuild of the shared
    // bundles cannot change what is measured halfway through.
    let functions = out.join("functions");
    let _ = std::fs::remove_dir_all(&functions);
    for name in [C_FN, PY_FN] {
        copy_tree(&benches::bundle(name), &functions.join(name))
            .unwrap_or_else(|e| fatal(&format!("copying bundle {name}: {e}")));
        let dir = functions.join(name);
        let cold = Function::load(&dir, StartMode::Cold).unwrap_or_else(|e| fatal(&format!("{name}: {e}")));
        cold.take_snapshot(&dir.join(vmm::snapshot::SNAPSHOT_FILE))
            .unwrap_or_else(|e| fatal(&format!("{name}: snapshot: {e}")));
    }
    let snapcall = snapcall_binary();
    let logs = out.join("logs");
    let _ = std::fs::create_dir_all(&logs);

    if args.load {
        let started = Instant::now();
        let curves = load::sweep(&functions, &logs, &snapcall, args.quick, Progress::new(load::POINTS));
        let table = load::table(&curves);
        let md = format!(
            "# Load sweep\n\n`{command} --load` on {} ({} cores, {}, {}), {:.0} s.\n\n{table}\n![latency against offered rate](load.svg)\n",
            machine.cpu,
            machine.cores,
            machine.kernel,
            machine.kvm,
            started.elapsed().as_secs_f64()
        );
        let write = |name: &str, text: &str| {
            std::fs::write(out.join(name), text).unwrap_or_else(|e| fatal(&format!("{name}: {e}")));
        };
        write("load.md", &md);
        write("load.csv", &load::csv(&curves));
        write("load.svg", &load::svg(&curves, "Latency against offered rate, open loop (2-core kvm-pvm host)"));
        println!("{md}");
        return;
    }
    let started = Instant::now();
    let progress = Progress::new(sizes.total());
    let mut study =
        Study { progress, sizes, series: Vec::new(), problems: Vec::new(), sections: Vec::new(), memory: Vec::new() };

    let mut sections = Vec::new();
    let t = Instant::now();
    modes::floor(&mut study);
    sections.push(("physical floor", t.elapsed()));
    let t = Instant::now();
    modes::native_baselines(&mut study, &functions, &logs);
    sections.push(("native baselines (and curl to the warm server)", t.elapsed()));
    let t = Instant::now();
    modes::library(&mut study, &functions);
    sections.push(("snapcall in-process", t.elapsed()));
    let t = Instant::now();
    // Issue 10's bars: C ≤ 256 KiB, Python ≤ 4 MiB.
    for (name, limit_kib) in [(C_FN, 256.0), (PY_FN, 4096.0)] {
        match memory::per_ready_vm(&functions.join(name), limit_kib) {
            Ok(m) => study.memory.push(m),
            Err(e) => study.problems.push(format!("memory per ready VM of {name}: {e}")),
        }
    }
    sections.push(("host memory per ready VM", t.elapsed()));
    let t = Instant::now();
    modes::over_http(&mut study, &functions, &logs, &snapcall);
    sections.push(("snapcall over HTTP (and curl)", t.elapsed()));
    study.sections = sections;
    progress.finish();
    let elapsed = started.elapsed();
    // Report group by group, in the order of Group::ALL (stable: run order within a group).
    study.series.sort_by_key(|s| Group::ALL.iter().position(|g| *g == s.group));

    let report = report::write_report(&study, &machine, &command, elapsed, &out);
    println!("{report}");
    eprintln!(
        "latency-study: wrote {}/results.md, samples.csv, summary.csv, latency.svg in {:.0} s",
        out.display(),
        elapsed.as_secs_f64()
    );
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
