//! `snapcall invoke`, `logs`, `run -d` and `completions` against a real server and bundle.

mod serve_support;

use std::process::Command;

use serve_support::{functions_dir, Server};

fn snapcall(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snapcall")).args(args).output().expect("run snapcall");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invoke_and_logs_against_a_running_server() {
    let srv = Server::start(&functions_dir(&["request-echo", "exit-code"]), &["--access-log", "off"]);
    let server = srv.addr.to_string();
    let (ok, out, err) = snapcall(&[
        "invoke",
        "request-echo/items",
        "-d",
        "hello",
        "-H",
        "X-Trace: t9",
        "-X",
        "PUT",
        "--query",
        "a=1",
        "--server",
        &server,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("method PUT\npath /items\nquery a=1\n"), "{out}");
    assert!(out.contains("header x-trace: t9\n") && out.ends_with("body 5: hello"), "{out}");
    let file = std::env::temp_dir().join(format!("snapcall-cli-{}.bin", std::process::id()));
    std::fs::write(&file, b"from a file").unwrap();
    let (ok, out, _) =
        snapcall(&["invoke", "request-echo", "-d", &format!("@{}", file.display()), "--server", &server]);
    assert!(ok && out.ends_with("body 11: from a file"), "{out}");
    // A failed call: exit status 1 and the error body.
    let (ok, out, err) = snapcall(&["invoke", "exit-code", "-d", "x", "--server", &server]);
    assert!(!ok && out.contains("\"error\":\"exit\"") && err.contains("502"), "{out} {err}");
    // Bad input is refused before anything is sent.
    let (ok, _, err) = snapcall(&["invoke", "request-echo", "-H", "no colon", "--server", &server]);
    assert!(!ok && err.contains("Name: value"), "{err}");

    let (ok, out, err) = snapcall(&["logs", "request-echo", "--server", &server]);
    assert!(ok, "{err}");
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.iter().filter(|l| l.contains(" 200 ")).count(), 2, "{out}");
    assert!(out.contains("    request-echo: 5 bytes") && out.contains("    request-echo: 11 bytes"), "{out}");
    let (ok, out, _) = snapcall(&["logs", "request-echo", "--tail", "1", "--json", "--server", &server]);
    let m: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(ok && m["name"] == "request-echo" && m["namespace"] == "openfaas-fn", "{out}");
    let (ok, _, err) = snapcall(&["logs", "nope", "--server", &server]);
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = snapcall(&["invoke", "request-echo", "--server", "127.0.0.1:1"]);
    assert!(!ok && err.contains("cannot connect"), "{err}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn run_takes_data_and_completions_print_a_script() {
    let dir = functions_dir(&["request-echo"]);
    let (ok, out, err) = snapcall(&["run", dir.join("request-echo").to_str().unwrap(), "-d", "abc"]);
    assert!(ok, "{err}");
    // No snapshot here: a cold start has its request head from the first instruction.
    assert!(out.starts_with("before-snapshot: opened\nmethod POST\npath /\n") && out.ends_with("body 3: abc"), "{out}");
    let (ok, out, _) = snapcall(&["completions", "bash"]);
    assert!(ok && out.contains("_snapcall") && out.contains("invoke"), "{}", &out[..out.len().min(200)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_lists_every_problem_with_its_fix() {
    let dir = functions_dir(&["echo-c"]);
    let bundle = dir.join("echo-c");
    // Its own snapshot, whatever the source bundle had (a clean clone's has none).
    let (ok, _, err) = snapcall(&["snapshot", bundle.to_str().unwrap()]);
    assert!(ok, "{err}");
    let (ok, out, _) = snapcall(&["validate", bundle.to_str().unwrap()]);
    assert!(ok && out.trim().ends_with(": ok"), "{out}");
    // A typo in an annotation and a dynamically linked program: every problem is reported.
    let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    std::fs::write(bundle.join("config.json"), config.replace("snapcall.memory_mib", "snapcall.memroy_mib")).unwrap();
    std::fs::copy("/bin/true", bundle.join("rootfs/bin/echo-c")).unwrap();
    let (ok, out, _) = snapcall(&["validate", bundle.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("unknown annotation snapcall.memroy_mib"), "{out}");
    assert!(out.contains("dynamically linked") && out.contains("fix: link it statically"), "{out}");
    // The memory annotation is gone, so the snapshot (taken with 64 MiB) no longer matches.
    assert!(out.contains("snapshot") && out.contains("fix: take it again: snapcall snapshot"), "{out}");
    assert!(out.contains("3 problem(s)"), "{out}");
    // A config.json that is not JSON.
    std::fs::write(bundle.join("config.json"), "{").unwrap();
    let (ok, out, _) = snapcall(&["validate", bundle.to_str().unwrap()]);
    assert!(!ok && out.contains("not valid JSON") && out.contains("fix: edit config.json"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
