//! `snapcall`: run, snapshot, serve and inspect functions that each get a brand-new KVM VM per call.
//!
//! Each subcommand lives in its own module; this file only parses the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd_build;
mod cmd_client;
mod cmd_inspect;
mod cmd_new;
mod cmd_run;
mod cmd_serve;
mod cmd_snapshot;
mod cmd_validate;

#[derive(Parser)]
#[command(name = "snapcall", version, about = "Every function call in its own brand-new KVM VM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new function directory: `snapcall new --lang python|c NAME [DIR]`.
    New(cmd_new::Args),
    /// Build a function directory (function.json + source) into a bundle and take its snapshot.
    Build(cmd_build::Args),
    /// Run one call of a function bundle: stdin is the request, stdout the response.
    Run(cmd_run::Args),
    /// Run a bundle until it first reads stdin and write its snapshot.
    Snapshot(cmd_snapshot::Args),
    /// Serve every bundle in a directory over HTTP/1.1.
    Serve(Box<cmd_serve::Args>),
    /// Print a snapcall or KM snapshot in human (or JSON) form.
    Inspect(cmd_inspect::Args),
    /// List every problem of a bundle (config, limits, program, snapshot), each with its fix.
    Validate(cmd_validate::Args),
    /// Call a function on a running server: `snapcall invoke NAME -d DATA|@FILE [-H K:V]`.
    Invoke(cmd_client::InvokeArgs),
    /// Print a function's log lines from a running server (`--follow` to keep reading).
    Logs(cmd_client::LogsArgs),
    /// List the functions a running server serves: limits, snapshot, pool and call counters.
    List(cmd_client::ListArgs),
    /// Describe one served function: routes, limits, snapshot, pool and call counters.
    Describe(cmd_client::DescribeArgs),
    /// Print a shell completion script: `snapcall completions bash > /etc/bash_completion.d/snapcall`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A printing command piped into `head` ends quietly when the pipe closes, as other Unix
    // tools do, instead of panicking in println!. `serve`, `run` and `invoke` keep Rust's
    // ignored SIGPIPE: they write to sockets or pass a response on, and report EPIPE.
    if matches!(
        cli.command,
        Command::Inspect(_) | Command::Validate(_) | Command::Logs(_) | Command::Completions { .. }
    ) {
        // SAFETY: restoring SIGPIPE's default disposition before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::New(args) => cmd_new::main(args),
        Command::Build(args) => cmd_build::main(args),
        Command::Run(args) => cmd_run::main(args),
        Command::Snapshot(args) => cmd_snapshot::main(args),
        Command::Serve(args) => cmd_serve::main(*args),
        Command::Inspect(args) => cmd_inspect::main(args),
        Command::Validate(args) => cmd_validate::main(args),
        Command::Invoke(args) => cmd_client::invoke(args),
        Command::Logs(args) => cmd_client::logs(args),
        Command::List(args) => cmd_client::list(args),
        Command::Describe(args) => cmd_client::describe(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "snapcall",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
