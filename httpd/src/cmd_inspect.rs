//! `snapcall inspect SNAPSHOT [--json]`: print a snapcall or KM snapshot — segments,
//! registers, open files, every note — and whether snapcall's vmm or only `km` can restore it.

use std::path::PathBuf;
use std::process::ExitCode;

use snapshot_format::{read_snapshot, render_json, render_text, verify_payload, FormatError, Limits};

/// Command-line arguments of `snapcall inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Snapshot file (snapcall's `snapshot.kmsnap` or a KM snapshot).
    pub snapshot: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not check the payload hash (which reads the whole file).
    #[arg(long)]
    pub no_verify: bool,
}

/// Result of the payload-hash check, as printed.
fn payload_status(args: &Args, snap: &snapshot_format::Snapshot) -> (String, bool) {
    if args.no_verify {
        return ("skipped".to_owned(), true);
    }
    match verify_payload(&args.snapshot, snap) {
        Ok(()) => ("ok".to_owned(), true),
        Err(FormatError::NoPayloadHash) => ("absent (no SNAPCALL identity note)".to_owned(), true),
        Err(e) => (format!("FAILED: {e}"), false),
    }
}

/// Run `snapcall inspect`: exit 0 when the file parses (and its payload hash, if any,
/// matches), 1 otherwise.
pub fn main(args: Args) -> ExitCode {
    // Permissive limits: inspect must show KM snapshots too, whose guests live anywhere in
    // the 47-bit address space.
    let snap = match read_snapshot(&args.snapshot, &Limits::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("snapcall inspect: {}: {e}", args.snapshot.display());
            return ExitCode::FAILURE;
        }
    };
    let (payload, ok) = payload_status(&args, &snap);
    if args.json {
        let mut v = render_json(&snap);
        if let Some(m) = v.as_object_mut() {
            m.insert("payload_verified".to_owned(), payload.into());
        }
        match serde_json::to_string_pretty(&v) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("snapcall inspect: cannot render JSON: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", render_text(&snap));
        println!("\npayload hash: {payload}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
