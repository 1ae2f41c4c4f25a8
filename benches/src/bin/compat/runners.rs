//! Running the compat runner on one module: in a snapcall VM (`snapcall run --cold`) or
//! natively (the same interpreter from the bundle's rootfs, chrooted into a throwaway overlay
//! of it), each bounded by a timeout, and re-run without the test a run died in.

use std::fs::File;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::records::{self, Outcome, Reported, TestRecord};

/// Why a run could not even start or be read.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{file}: {problem}")]
    Config { file: PathBuf, problem: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// The runner's request (its stdin): see compat_runner.py.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub module: String,
    pub exclude: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    pub mark: bool,
    /// Natively: the uid/gid the runner becomes before the tests (the VM's identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Request {
    pub fn module(module: &str) -> Request {
        Request { module: module.to_string(), exclude: Vec::new(), only: None, mark: false, uid: None }
    }
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The program exited with this status.
    Exited(i32),
    /// `snapcall run` reported that the call failed (deadline, fault, signal...): its message.
    CallFailed(String),
    /// The host killed it after the timeout.
    TimedOut(Duration),
    /// Natively: killed by a signal.
    Signalled(i32),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Exited(c) => write!(f, "exited with status {c}"),
            End::CallFailed(m) => write!(f, "{m}"),
            End::TimedOut(d) => write!(f, "timed out after {} s", d.as_secs()),
            End::Signalled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// One run's raw output.
#[derive(Debug, Clone)]
pub struct RawRun {
    pub stdout: String,
    pub stderr: String,
    pub end: End,
    pub wall: Duration,
}

/// Where a module runs.
pub trait Runner {
    /// "native" or "vm".
    fn name(&self) -> &'static str;
    /// Runs the compat runner once with `request`.
    fn run_once(&self, request: &Request, trace: bool) -> Result<RawRun, RunError>;
}

/// A child process with stdin from a file and stdout/stderr into files (no pipe to drain),
/// killed with its whole process group after `timeout`.
fn run_bounded(mut cmd: Command, stdin: &[u8], scratch: &Path, timeout: Duration) -> Result<RawRun, RunError> {
    let in_path = scratch.join("request.json");
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    File::create(&in_path)
        .and_then(|mut f| f.write_all(stdin))
        .map_err(io(format!("writing {}", in_path.display())))?;
    let open = |p: &Path| File::create(p).map_err(io(format!("creating {}", p.display())));
    cmd.stdin(File::open(&in_path).map_err(io("reopening the request"))?)
        .stdout(Stdio::from(open(&out_path)?))
        .stderr(Stdio::from(open(&err_path)?))
        .process_group(0);
    // SAFETY: the closure runs in the child between fork and exec and calls only signal(2),
    // which is async-signal-safe; it touches no memory of the parent.
    unsafe { cmd.pre_exec(default_signals) };
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(io(format!("starting {:?}", cmd.get_program())))?;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().map_err(io("waiting for the run"))? {
            break (status, false);
        }
        if started.elapsed() >= timeout {
            let pgid = child.id() as i32;
            // SAFETY: kill(2) on the process group this function created (process_group(0)
            // made the child its leader); no memory is involved.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break (child.wait().map_err(io("reaping the run"))?, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = started.elapsed();
    let read = |p: &Path| {
        std::fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(io(format!("reading {}", p.display())))
    };
    Ok(RawRun {
        stdout: read(&out_path)?,
        stderr: read(&err_path)?,
        end: if timed_out {
            End::TimedOut(timeout)
        } else if let Some(sig) = status.signal() {
            End::Signalled(sig)
        } else {
            End::Exited(status.code().unwrap_or(-1))
        },
        wall,
    })
}

/// Every signal back to its default action. exec keeps ignored signals ignored, and a tool
/// started in the background by a shell has SIGINT and SIGQUIT ignored: natively Python then
/// keeps SIG_IGN instead of raising KeyboardInterrupt, and tests that interrupt themselves
/// (`_thread.interrupt_main`, `raise_signal(SIGINT)`) spin until they fill the memory.
fn default_signals() -> std::io::Result<()> {
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: resetting a disposition to SIG_DFL; no handler, no memory involved.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    Ok(())
}

/// A fresh scratch directory under `parent`, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(parent: &Path, name: &str) -> Result<Scratch, RunError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        Ok(Scratch(dir))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `snapcall run --cold BUNDLE`, one VM per run.
pub struct Vm {
    pub snapcall: PathBuf,
    pub bundle: PathBuf,
    pub scratch: PathBuf,
    pub timeout: Duration,
}

impl Runner for Vm {
    fn name(&self) -> &'static str {
        "vm"
    }

    fn run_once(&self, request: &Request, trace: bool) -> Result<RawRun, RunError> {
        let scratch = Scratch::new(&self.scratch, "vm")?;
        let mut cmd = Command::new(&self.snapcall);
        cmd.arg("run").arg("--cold");
        if trace {
            cmd.arg("--trace-syscalls");
        }
        cmd.arg(&self.bundle);
        let body = serde_json::to_vec(request).expect("a Request always serializes");
        // The bundle's own deadline ends the call first; this only guards against a stuck monitor.
        let mut raw = run_bounded(cmd, &body, scratch.path(), self.timeout + Duration::from_secs(60))?;
        if let End::Exited(125) = raw.end {
            if let Some(msg) = raw.stderr.lines().find_map(|l| l.strip_prefix("snapcall run: ")) {
                raw.end = End::CallFailed(msg.to_string());
            }
        }
        Ok(raw)
    }
}

/// The bundle's interpreter run natively: in a private mount namespace, chrooted into an
/// overlay of the bundle's rootfs (writes go to a throwaway upper directory, as the VM's go to
/// its in-memory overlay), with an empty tmpfs /tmp and the host's /dev and /proc, with the
/// bundle's args, env and cwd, as the unprivileged uid/gid the VM gives its guest (the cwd
/// is made theirs), with its address space capped.
pub struct Native {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    /// The process's RLIMIT_AS: 4 times the bundle's memory cap, since glibc reserves address
    /// space (64 MiB per malloc arena, 8 MiB per thread stack) that a VM's memory cap does not
    /// count until it is touched.
    pub address_space_bytes: u64,
    pub scratch: PathBuf,
    pub timeout: Duration,
}

impl Native {
    /// Reads args, env and cwd from the bundle's config.json.
    pub fn from_bundle(bundle: &Path, scratch: PathBuf, timeout: Duration) -> Result<Native, RunError> {
        let config = vmm::BundleConfig::load(bundle)
            .map_err(|e| RunError::Config { file: bundle.join("config.json"), problem: e.to_string() })?;
        Ok(Native {
            rootfs: config.rootfs,
            args: config.args,
            env: config.env,
            cwd: config.cwd,
            address_space_bytes: 4 * config.limits.memory_bytes,
            scratch,
            timeout,
        })
    }
}

/// Mounts the overlay, /tmp, /dev and /proc, gives the cwd to the guest's uid, caps the
/// address space (a test that runs away natively takes the host's memory otherwise), then execs the rest of its arguments. $1 rootfs, $2 scratch dir, $3 cwd
/// inside the rootfs, $4 uid, $5 address-space cap in KiB.
const NATIVE_SETUP: &str = r#"set -e
m="$2/merged"
mkdir -p "$2/upper" "$2/work" "$m"
mount -t overlay overlay -o "lowerdir=$1,upperdir=$2/upper,workdir=$2/work" "$m"
mkdir -p "$m/tmp" "$m/dev" "$m/proc"
mount -t tmpfs -o size=1g,mode=1777 tmpfs "$m/tmp"
mount --rbind /dev "$m/dev"
mount -t proc proc "$m/proc"
mkdir -p "$m$3"
chown "$4:$4" "$m$3"
ulimit -v "$5"
shift 5
exec "$@""#;

impl Runner for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn run_once(&self, request: &Request, _trace: bool) -> Result<RawRun, RunError> {
        let scratch = Scratch::new(&self.scratch, "native")?;
        let merged = scratch.path().join("merged");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", NATIVE_SETUP, "sh"])
            .arg(&self.rootfs)
            .arg(scratch.path())
            .arg(&self.cwd)
            .arg(GUEST_UID.to_string())
            .arg((self.address_space_bytes >> 10).to_string())
            .arg("env")
            .arg("-i")
            .args(&self.env)
            .arg("unshare")
            .arg(format!("--root={}", merged.display()))
            .arg(format!("--wd={}", self.cwd))
            .args(&self.args);
        let request = Request { uid: Some(GUEST_UID), ..request.clone() };
        let body = serde_json::to_vec(&request).expect("a Request always serializes");
        run_bounded(cmd, &body, scratch.path(), self.timeout)
    }
}

/// The uid and gid snapcall's guests run as: the native runs use them too.
const GUEST_UID: u32 = vmm::GUEST_UID as u32;

/// Runs to retry a module whose run died inside a test, without that test.
const MAX_RETRIES: usize = 3;

/// Everything known about one module on one runner.
#[derive(Debug, Clone, Default)]
pub struct ModuleRun {
    pub reported: Reported,
    /// Why the last run was cut short, when it never printed its `done` line.
    pub failure: Option<String>,
    pub wall: Duration,
}

/// Runs `module`, and when a run dies inside a test (a hang, a crash, the call's deadline),
/// runs it again without that test, which is then reported as failed with how the run ended.
pub fn run_module(runner: &dyn Runner, module: &str) -> Result<ModuleRun, RunError> {
    let mut request = Request::module(module);
    let mut died_in: Vec<TestRecord> = Vec::new();
    let mut wall = Duration::ZERO;
    loop {
        let raw = runner.run_once(&request, false)?;
        wall += raw.wall;
        let mut reported = records::parse(&raw.stdout);
        let cut_short = !reported.done;
        let culprit = records::last_started(&raw.stderr).filter(|id| !request.exclude.contains(id));
        if !cut_short || culprit.is_none() || died_in.len() >= MAX_RETRIES {
            reported.tests.extend(died_in);
            let failure = cut_short.then(|| describe_end(&raw));
            return Ok(ModuleRun { reported, failure, wall });
        }
        let id = culprit.expect("checked above");
        died_in.push(TestRecord {
            id: id.clone(),
            outcome: Outcome::Fail,
            cause: format!("the {} run ended in this test: {}", runner.name(), describe_end(&raw)),
            child: false,
            net: false,
            n: 0,
        });
        request.exclude.push(id);
    }
}

/// How a cut-short run ended, with the last line of a Python traceback if there was one.
fn describe_end(raw: &RawRun) -> String {
    let fatal =
        raw.stderr.lines().rev().find(|l| l.starts_with("Fatal Python error") || l.starts_with("Segmentation fault"));
    match fatal {
        Some(f) => format!("{} ({})", raw.end, f.trim()),
        None => raw.end.to_string(),
    }
}
