//! `snapcall validate BUNDLE`: every problem that would stop the bundle from being served (or
//! make it behave other than its author meant), each with what to change. Exit 1 if any.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vmm::{BundleConfig, Function, FunctionError, StartMode};

/// Command-line arguments of `snapcall validate`.
#[derive(clap::Args)]
pub struct Args {
    /// The bundle directory (config.json + rootfs).
    bundle: PathBuf,
}

/// The annotations snapcall reads; any other `snapcall.*` key is most likely a typo.
const KNOWN: &[&str] = &[
    "snapcall.memory_mib",
    "snapcall.timeout_ms",
    "snapcall.max_output_bytes",
    "snapcall.content_type",
    "snapcall.response",
    "snapcall.runner",
    "snapcall.warmup_request",
    "snapcall.python.module",
    "snapcall.python.handler",
    "snapcall.watchdog",
    "snapcall.max_concurrency",
];

/// One problem and what to change.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

fn problem(what: impl Into<String>, fix: impl Into<String>) -> Problem {
    Problem { what: what.into(), fix: fix.into() }
}

pub fn main(args: Args) -> ExitCode {
    let problems = check(&args.bundle);
    if problems.is_empty() {
        println!("{}: ok", args.bundle.display());
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        println!("{}: problem: {}\n    fix: {}", args.bundle.display(), p.what, p.fix);
    }
    println!("{}: {} problem(s)", args.bundle.display(), problems.len());
    ExitCode::from(1)
}

/// Every problem of the bundle at `dir`.
pub fn check(dir: &Path) -> Vec<Problem> {
    let mut out = Vec::new();
    let config = match BundleConfig::load(dir) {
        Ok(c) => c,
        Err(e) => {
            out.push(problem(e.to_string(), "edit config.json (docs/functions.md lists its fields and annotations)"));
            return out;
        }
    };
    for (key, _) in &config.annotations {
        if key.starts_with("snapcall.") && !KNOWN.contains(&key.as_str()) {
            out.push(problem(
                format!("unknown annotation {key}"),
                format!("use one of {} (a typo is silently ignored by serve)", KNOWN.join(", ")),
            ));
        }
    }
    if config.limits.timeout > std::time::Duration::from_secs(60) {
        out.push(problem(
            format!(
                "snapcall.timeout_ms is {} but snapcall serve caps calls at 60000 by default",
                config.limits.timeout.as_millis()
            ),
            "lower snapcall.timeout_ms, or run serve with --max-timeout-ms",
        ));
    }
    if let Some(module) = config.annotation("snapcall.python.module") {
        let file = config.rootfs.join("function").join(format!("{}.py", module.replace('.', "/")));
        if !file.is_file() {
            out.push(problem(
                format!("snapcall.python.module is {module} but {} does not exist", file.display()),
                "put the handler's module in rootfs/function/, or fix the annotation",
            ));
        }
    }
    match Function::load(dir, StartMode::Cold) {
        Ok(_) => {}
        Err(e) => out.push(program_problem(&e)),
    }
    if dir.join("snapshot.kmsnap").is_file() {
        if let Err(e) = Function::load(dir, StartMode::Snapshot) {
            if matches!(e, FunctionError::Snapshot { .. }) {
                out.push(problem(
                    e.to_string(),
                    format!(
                        "take it again: snapcall snapshot {} (serve also retakes a stale snapshot at start)",
                        dir.display()
                    ),
                ));
            }
        }
    }
    out
}

fn program_problem(e: &FunctionError) -> Problem {
    let text = e.to_string();
    let fix = match e {
        FunctionError::Load { source: vmm::LoadError::Dynamic { .. }, .. } => {
            "link it statically: gcc -static (glibc) or musl-gcc -static; snapcall has no dynamic loader"
        }
        FunctionError::Load {
            source: vmm::LoadError::WrongArchitecture { .. } | vmm::LoadError::NotElf { .. },
            ..
        } => "process.args[0] must be a static x86-64 Linux ELF executable",
        FunctionError::Load { .. } => "rebuild the program as a static x86-64 executable, or raise snapcall.memory_mib",
        FunctionError::Program { .. } | FunctionError::ProgramChanged { .. } => {
            "process.args[0] must name a file inside rootfs/ (absolute path as the program sees it)"
        }
        FunctionError::Rootfs { .. } => "root.path must name a directory inside the bundle",
        _ => "see the message",
    };
    problem(text, fix)
}
