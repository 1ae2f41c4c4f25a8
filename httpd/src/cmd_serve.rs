//! `snapcall serve` (being written).

use std::process::ExitCode;

/// Command-line arguments of `snapcall serve`.
#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("snapcall serve: not implemented yet");
    ExitCode::FAILURE
}
