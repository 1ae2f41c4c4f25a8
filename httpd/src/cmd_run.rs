//! `snapcall run` (being written).

use std::process::ExitCode;

/// Command-line arguments of `snapcall run`.
#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("snapcall run: not implemented yet");
    ExitCode::FAILURE
}
