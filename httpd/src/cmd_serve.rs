//! `snapcall serve`: serve every bundle in a directory over HTTP/1.1 (see docs/httpd.md).

use std::process::ExitCode;

#[path = "serve/mod.rs"]
#[allow(dead_code)]
mod serve;

/// Command-line arguments of `snapcall serve`.
#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("snapcall serve: not implemented yet");
    ExitCode::FAILURE
}
