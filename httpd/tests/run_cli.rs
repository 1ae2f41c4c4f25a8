//! `snapcall run` on real bundles: what a failed call prints.

mod serve_support;

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `snapcall run BUNDLE` with `request` on stdin: (exit code, stdout, stderr).
fn run(bundle: &std::path::Path, request: &[u8]) -> (Option<i32>, Vec<u8>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_snapcall"))
        .arg("run")
        .arg(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start snapcall run");
    child.stdin.take().unwrap().write_all(request).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_failed_call_prints_its_stdout_so_far_the_error_then_the_tail_of_the_programs_stderr() {
    let (_, tests) = serve_support::bundles();
    let bundle = tests.join("stderr-then-fail");
    for (request, error) in [("fault", "guest fault: #PF"), ("spin", "deadline of")] {
        let (code, stdout, stderr) = run(&bundle, request.as_bytes());
        assert_eq!(code, Some(125), "{stderr}");
        assert_eq!(
            String::from_utf8_lossy(&stdout),
            format!("stdout before {request}\n"),
            "what it wrote before failing"
        );
        let error_at = stderr.find(error).unwrap_or_else(|| panic!("no error in {stderr:?}"));
        let tail_at = stderr.find("the program's stderr (last 4096 bytes):\n").expect("a delimited tail");
        let last = format!("last words before {request}\n");
        assert!(error_at < tail_at && stderr[tail_at..].contains(&last), "{stderr}");
        assert!(stderr.contains("stderr line 399\n") && !stderr.contains("stderr line 000\n"), "bounded");
        assert!(stderr.ends_with(&format!("{last}snapcall run: end of the program's stderr\n")), "{stderr}");
    }
}
