//! `snapcall inspect` (being written).

use std::process::ExitCode;

/// Command-line arguments of `snapcall inspect`.
#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("snapcall inspect: not implemented yet");
    ExitCode::FAILURE
}
