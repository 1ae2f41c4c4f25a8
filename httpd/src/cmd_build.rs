//! `snapcall build DIR [-o BUNDLE]`: a function directory (`function.json` + source) made into
//! a bundle with its snapshot, one progress line per step (the work is in `build/`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "build/mod.rs"]
pub mod build;

/// Command-line arguments of `snapcall build`.
#[derive(clap::Args)]
pub struct Args {
    /// The function directory (function.json, handler.py or handler.c, ...).
    dir: PathBuf,
    /// The bundle to write; its directory name is the function's name
    /// (default: functions/NAME, NAME the function directory's name).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Do not take the snapshot (snapcall serve takes it at start).
    #[arg(long)]
    no_snapshot: bool,
    /// Rebuild every step, changed inputs or not.
    #[arg(long)]
    force: bool,
    /// The Python runtime: a rootfs template holding usr/bin/python3 and its stdlib, as
    /// guest-functions/build.sh makes it (default: target/cache/python-build/rootfs beside
    /// this snapcall binary's target directory).
    #[arg(long, env = "SNAPCALL_PYTHON_RUNTIME")]
    python_runtime: Option<PathBuf>,
}

struct Stderr;

impl build::Progress for Stderr {
    fn step(&self, line: &str) {
        eprintln!("snapcall build: {line}");
    }
}

/// `<dir of this binary>/../cache/python-build/rootfs`: where guest-functions/build.sh puts
/// the runtime when snapcall runs from the repository's `target/debug` or `target/release`.
fn default_python_runtime() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let target = exe.as_deref().and_then(Path::parent).and_then(Path::parent);
    target
        .map(|t| t.join("cache/python-build/rootfs"))
        .unwrap_or_else(|| PathBuf::from("target/cache/python-build/rootfs"))
}

pub fn main(args: Args) -> ExitCode {
    let dir_name = std::fs::canonicalize(&args.dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let opts = build::Options {
        out: args.output.clone().unwrap_or_else(|| PathBuf::from("functions").join(&dir_name)),
        snapshot: !args.no_snapshot,
        python_runtime: args.python_runtime.clone().unwrap_or_else(default_python_runtime),
        force: args.force,
    };
    match build::build(&args.dir, &opts, &Stderr) {
        Ok(built) => {
            eprintln!(
                "snapcall build: done: {}{} (serve it: snapcall serve --functions {})",
                built.bundle.display(),
                if built.snapshot.is_some() { " with its snapshot" } else { "" },
                built.bundle.parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty()).unwrap_or(".".into())
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("snapcall build: error: {e}");
            ExitCode::FAILURE
        }
    }
}
