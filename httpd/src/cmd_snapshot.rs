//! `snapcall snapshot` (being written).

use std::process::ExitCode;

/// Command-line arguments of `snapcall snapshot`.
#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("snapcall snapshot: not implemented yet");
    ExitCode::FAILURE
}
