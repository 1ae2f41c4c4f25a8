//! A printing subcommand piped into something that stops reading (`| head`) ends as Unix
//! tools do, by SIGPIPE, not with a Rust panic.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

#[test]
fn completions_into_a_closed_pipe_end_by_sigpipe_without_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapcall"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start snapcall completions");
    // Close the reading end at once: the script is thousands of lines, written line by line,
    // so the command writes into the closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.signal() == Some(libc::SIGPIPE) || out.status.success(), "{:?}: {stderr}", out.status);
}
