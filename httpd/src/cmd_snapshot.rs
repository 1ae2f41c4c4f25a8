//! `snapcall snapshot BUNDLE [-o FILE]`: run the function until it first reads stdin and
//! write its snapshot (default `BUNDLE/snapshot.kmsnap`). The program needs no change.

use std::path::PathBuf;
use std::process::ExitCode;

use vmm::{Function, StartMode};

/// Command-line arguments of `snapcall snapshot`.
#[derive(clap::Args)]
pub struct Args {
    /// The function's bundle directory.
    bundle: PathBuf,
    /// Where to write the snapshot (default: BUNDLE/snapshot.kmsnap).
    #[arg(short, long)]
    output: Option<PathBuf>,
}

pub fn main(args: Args) -> ExitCode {
    let out = args.output.clone().unwrap_or_else(|| args.bundle.join(vmm::snapshot::SNAPSHOT_FILE));
    let result = Function::load(&args.bundle, StartMode::Cold)
        .map_err(|e| e.to_string())
        .and_then(|f| f.take_snapshot(&out).map_err(|e| format!("{}: {e}", f.name())));
    match result {
        Ok(report) => {
            eprintln!(
                "snapcall snapshot: wrote {} ({} regions, {} KiB of guest memory, {} syscalls before the first stdin read)",
                report.path.display(),
                report.regions,
                report.memory_bytes / 1024,
                report.syscalls
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("snapcall snapshot: {message}");
            ExitCode::FAILURE
        }
    }
}
