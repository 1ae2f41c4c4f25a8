//! The compat measure (issue 12, docs/compat.md): CPython 3.11's own regression tests
//! (Debian's libpython3.11-testsuite), each module run in a snapcall VM and natively with the
//! same static interpreter and rootfs, compared per test id.
//!
//! ```text
//! cargo run -p benches --bin compat -- [MODULE...] [--ci] [--min-percent P] [--update-doc]
//! ```
//!
//! 1. builds what it needs: the guest bundles (`guest-functions/build.sh`), the compat bundle
//!    (`guest-functions/python/build-compat.sh`: the Python rootfs + the testsuite + the
//!    runner) and `snapcall` itself;
//! 2. per module: a native run (chrooted into an overlay of the bundle's rootfs, cached
//!    while the bundle is unchanged) and a cold `snapcall run` of the bundle; a run that dies
//!    inside a test is repeated without it;
//! 3. re-runs each module's lost tests in a VM under `--trace-syscalls` to name the first
//!    syscall the VM refused in each;
//! 4. prints the table, the ranked first causes and every lost test (also written to
//!    target/compat/report.md); `--update-doc` puts the table and causes in docs/compat.md.
//!
//! Needs root (the native runs mount an overlay in a private mount namespace) and /dev/kvm.

mod compare;
mod records;
mod report;
mod runners;
mod trace;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Serialize};

use compare::{ModuleResult, Totals};
use records::{Reported, TestRecord};
use runners::{ModuleRun, Native, Request, RunError, Runner, Vm};

/// The modules of issue 12's measure.
const FULL_SET: [&str; 30] = [
    "test_json",
    "test_re",
    "test_datetime",
    "test_decimal",
    "test_statistics",
    "test_hashlib",
    "test_base64",
    "test_struct",
    "test_pickle",
    "test_csv",
    "test_io",
    "test_os",
    "test_pathlib",
    "test_tempfile",
    "test_glob",
    "test_argparse",
    "test_threading",
    "test_queue",
    "test_asyncio",
    "test_select",
    "test_signal",
    "test_mmap",
    "test_time",
    "test_random",
    "test_functools",
    "test_enum",
    "test_email",
    "test_xml_etree",
    "test_uuid",
    "test_contextlib",
];

/// The CI subset: modules that take seconds each and exercise the interpreter broadly, and
/// the writable filesystem with its permissions (test_argparse, test_csv).
const CI_SET: [&str; 8] = [
    "test_json",
    "test_re",
    "test_datetime",
    "test_struct",
    "test_functools",
    "test_contextlib",
    "test_argparse",
    "test_csv",
];

/// Issue 12's target, and the CI subset's threshold.
const TARGET_PERCENT: f64 = 97.0;

const DOC_BEGIN: &str = "<!-- compat-results:begin -->";
const DOC_END: &str = "<!-- compat-results:end -->";

#[derive(Parser)]
#[command(about = "CPython's regression tests natively and in snapcall VMs, compared per test")]
struct Args {
    /// Modules under Lib/test to run (default: issue 12's 30 modules).
    modules: Vec<String>,
    /// The CI subset (a few fast modules) with the 97 % threshold, no syscall tracing.
    #[arg(long)]
    ci: bool,
    /// Exit 1 when fewer than this percentage of the natively passing tests pass in the VM.
    #[arg(long)]
    min_percent: Option<f64>,
    /// Skip the traced re-run that names the refused syscall behind each lost test.
    #[arg(long)]
    no_trace: bool,
    /// Run natively again even when a cached native result of the same bundle exists.
    #[arg(long)]
    fresh_native: bool,
    /// Write the table and the ranked causes into docs/compat.md.
    #[arg(long)]
    update_doc: bool,
    /// Native runs are killed after this many seconds (the VM's deadline is the bundle's).
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// The snapcall binary (default: build it with cargo next to this one).
    #[arg(long)]
    snapcall: Option<PathBuf>,
    /// Do not run the bundle build scripts.
    #[arg(long)]
    no_build: bool,
}

/// Why the measure could not be taken.
#[derive(Debug, thiserror::Error)]
enum CompatError {
    #[error("{0} failed; see its output above")]
    Build(String),
    #[error("running {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("{file}: {source}")]
    File { file: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Setup(String),
}

fn repo() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    dir.canonicalize().unwrap_or(dir)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compat: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<bool, CompatError> {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CompatError::Setup(
            "needs root: the native runs mount an overlay of the rootfs in a private mount namespace".into(),
        ));
    }
    let modules: Vec<String> = if !args.modules.is_empty() {
        args.modules.clone()
    } else if args.ci {
        CI_SET.iter().map(|s| s.to_string()).collect()
    } else {
        FULL_SET.iter().map(|s| s.to_string()).collect()
    };
    let min_percent = args.min_percent.or(args.ci.then_some(TARGET_PERCENT));
    let trace = !args.no_trace && !args.ci;
    let target = repo().join("target");
    if !args.no_build {
        build(&target)?;
    }
    let snapcall = match &args.snapcall {
        Some(p) => p.clone(),
        None => build_snapcall()?,
    };
    let bundle = target.join("compat").join("cpython-tests");
    let scratch = std::env::temp_dir().join("snapcall-compat");
    std::fs::create_dir_all(&scratch).map_err(|source| CompatError::File { file: scratch.clone(), source })?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let native = Native::from_bundle(&bundle, scratch.clone(), timeout)?;
    let vm_timeout = vmm::BundleConfig::load(&bundle).map(|c| c.limits.timeout).unwrap_or(timeout);
    let vm = Vm { snapcall, bundle: bundle.clone(), scratch, timeout: vm_timeout };
    let cache = NativeCache::new(&bundle, target.join("compat").join("native-cache"), args.fresh_native);

    let mut results = Vec::new();
    for module in &modules {
        let native_run = match cache.get(module) {
            Some(r) => r,
            None => {
                let r = runners::run_module(&native, module)?;
                cache.put(module, &r);
                r
            }
        };
        let vm_run = runners::run_module(&vm, module)?;
        let mut result = compare::compare(module, &native_run, &vm_run);
        if trace && !result.lost.is_empty() {
            attribute_refusals(&vm, &mut result)?;
        }
        eprintln!(
            "compat: {module}: native {:.0} s, vm {:.0} s: {} pass natively, {} in the VM, {} lost, {} child, {} net",
            native_run.wall.as_secs_f64(),
            vm_run.wall.as_secs_f64(),
            result.native_pass,
            result.vm_pass,
            result.lost.len(),
            result.child.len(),
            result.net.len()
        );
        results.push(result);
    }

    let totals = Totals::of(&results);
    let full = format!(
        "## Table\n\n{}\n## First causes of the lost tests\n\n{}\n## Every lost and set-apart test\n\n{}",
        report::table(&results),
        report::causes(&results, usize::MAX),
        report::details(&results)
    );
    println!("{full}");
    let report_file = target.join("compat").join("report.md");
    std::fs::write(&report_file, &full).map_err(|source| CompatError::File { file: report_file.clone(), source })?;
    eprintln!("compat: report written to {}", report_file.display());
    if args.update_doc {
        update_doc(&results)?;
    }
    if totals.counted() == 0 {
        eprintln!("compat: no test passed natively: nothing was measured");
        return Ok(false);
    }
    if let Some(min) = min_percent {
        if totals.percent() < min {
            eprintln!(
                "compat: {:.1} % of the natively passing tests pass in the VM, below the threshold {min} %",
                totals.percent()
            );
            return Ok(false);
        }
        eprintln!("compat: {:.1} % >= {min} %", totals.percent());
    }
    Ok(true)
}

/// The guest bundles and the compat bundle (both scripts are incremental).
fn build(target: &Path) -> Result<(), CompatError> {
    for script in ["guest-functions/build.sh", "guest-functions/python/build-compat.sh"] {
        let status = Command::new("bash")
            .arg(repo().join(script))
            .arg("--out")
            .arg(target)
            .status()
            .map_err(|source| CompatError::Spawn { what: script.into(), source })?;
        if !status.success() {
            return Err(CompatError::Build(script.into()));
        }
    }
    Ok(())
}

/// `cargo build -p httpd --bin snapcall` in this binary's profile; the binary's path.
fn build_snapcall() -> Result<PathBuf, CompatError> {
    let exe = std::env::current_exe().map_err(|source| CompatError::Spawn { what: "current_exe".into(), source })?;
    let dir = exe.parent().ok_or_else(|| CompatError::Setup("this binary has no directory".into()))?;
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "-p", "httpd", "--bin", "snapcall"]).current_dir(repo());
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().map_err(|source| CompatError::Spawn { what: "cargo build".into(), source })?;
    if !status.success() {
        return Err(CompatError::Build("cargo build -p httpd".into()));
    }
    Ok(dir.join("snapcall"))
}

/// Re-runs a module's lost tests in a VM with markers and the syscall trace, and records for
/// each the first syscall the VM refused inside it.
fn attribute_refusals(vm: &Vm, result: &mut ModuleResult) -> Result<(), CompatError> {
    let mut request = Request::module(&result.module);
    // A "#N" id is a second run of the same test under another variant: run the test id.
    let mut only: Vec<String> =
        result.lost.iter().map(|l| l.id.split('#').next().unwrap_or(&l.id).to_string()).collect();
    only.dedup();
    request.only = Some(only);
    request.mark = true;
    let raw = vm.run_once(&request, true)?;
    let reported = records::parse(&raw.stdout);
    let refused = trace::refused_per_test(&raw.stderr);
    for t in &reported.tests {
        if let Some(r) = refused.get(&t.n) {
            for l in result.lost.iter_mut().filter(|l| l.id == t.id) {
                l.refused = Some(r.clone());
            }
        }
    }
    Ok(())
}

/// Native results per module, kept while the bundle (its stamp) is unchanged: natively
/// nothing the team changes alters them, and they cost as much time as the VM runs.
struct NativeCache {
    dir: PathBuf,
    key: Option<String>,
    fresh: bool,
}

#[derive(Serialize, Deserialize)]
struct CachedRun {
    key: String,
    tests: Vec<TestRecord>,
    module_error: Option<String>,
    done: bool,
    failure: Option<String>,
    wall_secs: f64,
}

impl NativeCache {
    fn new(bundle: &Path, dir: PathBuf, fresh: bool) -> NativeCache {
        let stamp = bundle.join("rootfs").join(".snapcall-stamp");
        let key = std::fs::metadata(stamp).and_then(|m| m.modified()).ok().map(|t| format!("{t:?}"));
        NativeCache { dir, key, fresh }
    }

    fn file(&self, module: &str) -> PathBuf {
        self.dir.join(format!("{module}.json"))
    }

    fn get(&self, module: &str) -> Option<ModuleRun> {
        if self.fresh {
            return None;
        }
        let text = std::fs::read(self.file(module)).ok()?;
        let c: CachedRun = serde_json::from_slice(&text).ok()?;
        (Some(&c.key) == self.key.as_ref()).then(|| ModuleRun {
            reported: Reported { tests: c.tests, module_error: c.module_error, done: c.done },
            failure: c.failure,
            wall: Duration::from_secs_f64(c.wall_secs),
        })
    }

    fn put(&self, module: &str, run: &ModuleRun) {
        let Some(key) = self.key.clone() else { return };
        let c = CachedRun {
            key,
            tests: run.reported.tests.clone(),
            module_error: run.reported.module_error.clone(),
            done: run.reported.done,
            failure: run.failure.clone(),
            wall_secs: run.wall.as_secs_f64(),
        };
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(json) = serde_json::to_vec(&c) {
            let _ = std::fs::write(self.file(module), json);
        }
    }
}

/// Replaces the results section of docs/compat.md.
fn update_doc(results: &[ModuleResult]) -> Result<(), CompatError> {
    let file = repo().join("docs").join("compat.md");
    let text = std::fs::read_to_string(&file).map_err(|source| CompatError::File { file: file.clone(), source })?;
    let (Some(b), Some(e)) = (text.find(DOC_BEGIN), text.find(DOC_END)) else {
        return Err(CompatError::Setup(format!("{} lacks the {DOC_BEGIN} / {DOC_END} markers", file.display())));
    };
    let commit = Command::new("git")
        .args(["log", "-1", "--format=%h %cd", "--date=format:%Y-%m-%d %H:%M"])
        .current_dir(repo())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let body = format!(
        "{DOC_BEGIN}\nMeasured at commit {commit} (`cargo run -p benches --bin compat -- --update-doc`).\n\n{}\n### First causes of the lost tests (top 30)\n\n{}{DOC_END}",
        report::table(results),
        report::causes(results, 30)
    );
    let new = format!("{}{}{}", &text[..b], body, &text[e + DOC_END.len()..]);
    std::fs::write(&file, new).map_err(|source| CompatError::File { file, source })
}
