//! `snapcall serve` over real HTTP on loopback: routes, HTTP/1.1 features, every error status.

mod serve_support;

use std::time::Duration;

use serve_support::{curl, encode, functions_dir, has_current_date, Client, Server};

const FUNCTIONS: &[&str] = &["echo-c", "hello-c", "exit-code", "null-deref", "infinite-loop", "big-output"];

fn server(extra: &[&str]) -> Server {
    Server::start(&functions_dir(FUNCTIONS), extra)
}

#[test]
fn curl_routes_content_type_and_server_timing() {
    let srv = server(&[]);
    for path in ["/function/echo-c", "/echo-c"] {
        let (ok, out) = curl(&["--data-binary", "hello curl", &srv.url(path)]);
        assert!(ok);
        assert_eq!(out, "hello curl");
    }
    // GET with no body: the function reads an empty stdin.
    let (ok, out) = curl(&["-o", "/dev/null", "-w", "%{http_code}", &srv.url("/echo-c")]);
    assert!(ok);
    assert_eq!(out, "200");
    let (_, out) = curl(&["-i", "--data-binary", "abc", &srv.url("/function/hello-c")]);
    assert!(out.contains("Content-Type: text/plain"), "{out}");
    assert!(out.ends_with("Hello from C! You sent 3 bytes.\n"), "{out}");
    let timing = out.lines().find(|l| l.starts_with("Server-Timing: ")).expect("Server-Timing header");
    for phase in ["queue;dur=", "vm;dur=", "restore;dur=", "run;dur=", "total;dur="] {
        assert!(timing.contains(phase), "{timing}");
    }
    let (_, out) = curl(&["-i", "--data-binary", "x", &srv.url("/echo-c")]);
    assert!(out.contains("Content-Type: application/octet-stream"), "{out}");

    let (ok, out) = curl(&[&srv.url("/healthz")]);
    assert!(ok);
    assert_eq!(out, "ok\n");
    let (_, metrics) = curl(&[&srv.url("/metrics")]);
    for needle in [
        "snapcall_calls_total{function=\"echo-c\"} 4",
        "snapcall_call_duration_seconds_bucket{function=\"hello-c\",le=\"+Inf\"} 1",
        "snapcall_call_phase_duration_seconds_count{function=\"echo-c\",phase=\"restore\"} 4",
        "snapcall_pool_ready_vms ",
        "snapcall_vms_created_total ",
        "snapcall_vms_destroyed_total ",
        "snapcall_pool_fill_cpu_seconds_total ",
        "snapcall_pool_reap_cpu_seconds_total ",
        "snapcall_pool_fill_phase_seconds_total{phase=\"prefault\"} ",
        "snapcall_pool_fill_phase_vms_total ",
        "snapcall_call_errors_total{function=\"echo-c\",kind=\"deadline\"} 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle}");
    }
}

#[test]
fn binary_bodies_keep_alive_pipelining_chunked_and_continue() {
    let srv = server(&[]);
    let mut c = srv.connect();
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let r = c.request("POST", "/echo-c", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    // Five pipelined requests in one write, answered in order on the same connection.
    let mut wire = Vec::new();
    for i in 0..5 {
        wire.extend(encode("POST", "/function/echo-c", &[], format!("req-{i}").as_bytes()));
    }
    c.send_raw(&wire);
    for i in 0..5 {
        let r = c.read_response().unwrap();
        assert_eq!((r.status, r.text()), (200, format!("req-{i}")));
    }
    // Chunked request body, split across writes.
    c.send_raw(b"POST /echo-c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send_raw(b"6;ext=1\r\n world\r\n0\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    // Expect: 100-continue: interim response, then the body, then the answer.
    c.send_raw(b"POST /echo-c HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 100);
    c.send_raw(b"ping");
    assert_eq!(c.read_response().unwrap().text(), "ping");
    // curl: chunked upload and 100-continue with a 2 MB body.
    let file = srv.dir.join("upload.bin");
    std::fs::write(&file, vec![b'z'; 2_000_000]).unwrap();
    let (ok, out) = curl(&["-H", "Transfer-Encoding: chunked", "--data-binary", "chunky", &srv.url("/echo-c")]);
    assert!(ok && out == "chunky", "{out}");
    let upload = format!("@{}", file.display());
    let (ok, out) = curl(&["-H", "Expect: 100-continue", "--data-binary", &upload, &srv.url("/echo-c")]);
    assert!(ok && out.len() == 2_000_000 && out.bytes().all(|b| b == b'z'));
    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut c10 = srv.connect();
    c10.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(c10.read_response().unwrap().status, 200);
    assert!(c10.closed());
}

/// What ApacheBench's `ab -k` does: HTTP/1.0 with `Connection: Keep-Alive`, several requests
/// on one connection. It waits for the close unless the response says `Connection: keep-alive`.
#[test]
fn http10_keep_alive_like_ab_and_a_date_on_every_response() {
    let srv = server(&[]);
    let ab_request = |body: &str| {
        format!(
            "POST /function/echo-c HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: 127.0.0.1\r\nUser-Agent: \
             ApacheBench/2.3\r\nAccept: */*\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut c = srv.connect();
    for i in 0..3 {
        let body = format!("ab-{i}");
        c.send_raw(ab_request(&body).as_bytes());
        let r = c.read_response().expect("an answer on the kept-alive HTTP/1.0 connection");
        assert_eq!((r.status, r.text()), (200, body));
        assert_eq!(r.header("Connection").map(str::to_ascii_lowercase).as_deref(), Some("keep-alive"));
        assert!(has_current_date(&r, 5), "{:?}", r.headers);
    }
    // An error response on the same connection: still kept alive, still dated.
    c.send_raw(b"GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response().unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Connection").map(str::to_ascii_lowercase).as_deref(), Some("keep-alive"));
    assert!(has_current_date(&r, 5), "{:?}", r.headers);

    // HTTP/1.0 without keep-alive, and HTTP/1.1 with `Connection: close`: answered with
    // `Connection: close`, then closed.
    for req in [&b"GET /healthz HTTP/1.0\r\n\r\n"[..], b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"] {
        let mut c = srv.connect();
        c.send_raw(req);
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), Some("close"));
        assert!(has_current_date(&r, 5), "{:?}", r.headers);
        assert!(c.closed());
    }
    // HTTP/1.1 keep-alive: the default, nothing said, connection reused.
    let mut c = srv.connect();
    for _ in 0..2 {
        let r = c.request("GET", "/healthz", &[], b"");
        assert_eq!((r.status, r.header("Connection")), (200, None));
        assert!(has_current_date(&r, 5), "{:?}", r.headers);
    }
}

#[test]
fn every_error_status() {
    let srv = server(&["--max-body-bytes", "1000", "--threads", "2", "--max-inflight", "1"]);
    let mut c = srv.connect();

    // 404: unknown function, both route shapes; the connection stays usable.
    let r = c.request("POST", "/function/nope", &[], b"x");
    assert_eq!(r.status, 404);
    assert!(r.header("Server-Timing").is_some());
    assert_eq!(c.request("GET", "/nope", &[], b"").status, 404);
    assert_eq!(c.request("GET", "/a/b/c", &[], b"").status, 404);
    // 405 with Allow (functions take every method; the built-in routes do not).
    let r = c.request("POST", "/metrics", &[], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    assert!(r.header("Server-Timing").is_some());
    // 502: non-zero exit, with the stderr tail in a JSON body.
    let r = c.request("POST", "/exit-code", &[], b"x");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert!(r.text().contains("\"error\":\"exit\"") && r.text().contains("bye"), "{}", r.text());
    assert!(r.header("Server-Timing").unwrap().contains("run;dur="));
    // 502: guest fault.
    let r = c.request("POST", "/null-deref", &[], b"x");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("guest_fault"), "{}", r.text());
    // 502: output over the cap.
    let r = c.request("POST", "/big-output", &[], b"x");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("output_limit"), "{}", r.text());
    // 504: deadline (infinite-loop has a 1 s timeout).
    let r = c.request("POST", "/infinite-loop", &[], b"x");
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.header("Server-Timing").unwrap().contains("run;dur="));
    // 413: body over --max-body-bytes, by Content-Length and by chunks.
    let mut big = srv.connect();
    let r = big.request("POST", "/echo-c", &[], &[b'a'; 1001]);
    assert_eq!(r.status, 413);
    assert!(r.header("Server-Timing").is_some());
    assert!(big.closed());
    let mut big = srv.connect();
    big.send_raw(b"POST /echo-c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n");
    big.send_raw(&[b'a'; 1001]);
    assert_eq!(big.read_response().unwrap().status, 413);
    // 400: malformed.
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"POST /echo-c HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
    ] {
        let mut m = srv.connect();
        m.send_raw(bad);
        let r = m.read_response().unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        assert!(r.header("Server-Timing").is_some());
        assert!(m.closed());
    }
    // The first connection survived all of the above.
    assert_eq!(c.request("POST", "/echo-c", &[], b"still here").text(), "still here");

    // 503: with --max-inflight 1, calls arriving while one runs on the other loop are
    // refused. Which loop a connection lands on is the kernel's SO_REUSEPORT hash, so use
    // many connections: each either gets 503 (other loop) or waits and gets 200.
    let mut slow = srv.connect();
    slow.send_raw(&encode("POST", "/infinite-loop", &[], b"x"));
    std::thread::sleep(Duration::from_millis(200));
    let mut others: Vec<Client> = (0..12).map(|_| srv.connect()).collect();
    for o in others.iter_mut() {
        o.send_raw(&encode("POST", "/echo-c", &[], b"y"));
    }
    let mut statuses = Vec::new();
    for o in others.iter_mut() {
        let r = o.read_response().unwrap();
        if r.status == 503 {
            assert_eq!(r.header("Retry-After"), Some("1"));
        }
        assert!(r.header("Server-Timing").is_some());
        statuses.push(r.status);
    }
    assert_eq!(slow.read_response().unwrap().status, 504);
    assert!(statuses.iter().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    assert!(statuses.contains(&503), "{statuses:?}");

    let kinds = [("exit", 1.0), ("fault", 1.0), ("output_limit", 1.0), ("deadline", 0.0)];
    for (kind, at_least) in kinds {
        let f = match kind {
            "exit" => "exit-code",
            "fault" => "null-deref",
            "output_limit" => "big-output",
            _ => "infinite-loop",
        };
        let v = srv.metric(&format!("snapcall_call_errors_total{{function=\"{f}\",kind=\"{kind}\"}}"));
        assert!(v >= at_least, "{kind}: {v}");
    }
    assert!(srv.metric("snapcall_call_errors_total{function=\"infinite-loop\",kind=\"deadline\"}") >= 2.0);
    assert!(srv.metric("snapcall_http_responses_total{code=\"503\"}") >= 1.0);
}

#[test]
fn sighup_adds_changes_and_removes_functions() {
    let dir = functions_dir(&["echo-c"]);
    let srv = Server::start(&dir, &[]);
    let mut c = srv.connect();
    assert_eq!(srv.call(&mut c, "POST", "/copy", b"x").status, 404);
    // Add: a real copy of hello-c under a new name.
    let (functions, _) = serve_support::bundles();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(functions.join("hello-c"))
        .arg(dir.join("copy"))
        .status()
        .unwrap();
    assert!(status.success());
    // Without a snapshot: the server takes one before serving it.
    let _ = std::fs::remove_file(dir.join("copy/snapshot.kmsnap"));
    srv.signal(libc::SIGHUP);
    let t = std::time::Instant::now();
    while srv.call(&mut c, "POST", "/copy", b"x").status != 200 {
        assert!(t.elapsed() < Duration::from_secs(30), "new bundle not served: {}", srv.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.join("copy/snapshot.kmsnap").is_file(), "{}", srv.log.lock().unwrap());
    let r = srv.call(&mut c, "POST", "/copy", b"abc");
    assert_eq!(r.text(), "Hello from C! You sent 3 bytes.\n");
    // echo-c kept serving throughout.
    assert_eq!(srv.call(&mut c, "POST", "/echo-c", b"same").text(), "same");
    // Change: a different content type in the copy's config.
    let cfg = dir.join("copy/config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("text/plain; charset=utf-8", "text/x-changed");
    std::fs::write(&cfg, text).unwrap();
    srv.signal(libc::SIGHUP);
    let t = std::time::Instant::now();
    while srv.call(&mut c, "POST", "/copy", b"x").header("Content-Type") != Some("text/x-changed") {
        assert!(t.elapsed() < Duration::from_secs(30), "changed bundle not reloaded");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The old snapshot no longer matched the changed config: a fresh one was taken.
    assert!(srv.log.lock().unwrap().contains("copy: snapshot not usable"), "{}", srv.log.lock().unwrap());
    // Remove.
    std::fs::remove_dir_all(dir.join("copy")).unwrap();
    srv.signal(libc::SIGHUP);
    let t = std::time::Instant::now();
    while srv.call(&mut c, "POST", "/copy", b"x").status != 404 {
        assert!(t.elapsed() < Duration::from_secs(30), "removed bundle still served");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(srv.call(&mut c, "POST", "/echo-c", b"end").text(), "end");
}

/// The seed's Python example (Kubeless' hellowithdata), from its snapshot. Needs the Python
/// bundles (`guest-functions/build.sh` without `--no-python`).
#[test]
fn python_hellowithdata_like_the_seed() {
    let (functions, _) = serve_support::bundles();
    assert!(
        functions.join("hellowithdata-py/config.json").is_file(),
        "target/functions/hellowithdata-py is missing: run guest-functions/build.sh (scripts/test.sh does)"
    );
    // Its snapshot taken here, as the README does, whatever the source bundle had: CPython
    // installs signal handlers before it, and the server must still restore it natively.
    let dir = functions_dir(&["hellowithdata-py"]);
    let snap = std::process::Command::new(env!("CARGO_BIN_EXE_snapcall"))
        .arg("snapshot")
        .arg(dir.join("hellowithdata-py"))
        .output()
        .unwrap();
    assert!(snap.status.success(), "{}", String::from_utf8_lossy(&snap.stderr));
    let srv = Server::start(&dir, &[]);
    let (ok, out) = curl(&[
        "-i",
        "--data",
        r#"{"Another": "Echo"}"#,
        "--header",
        "Content-Type:application/json",
        &srv.url("/function/hellowithdata-py"),
    ]);
    assert!(ok);
    assert!(out.contains("HTTP/1.1 200 OK"), "{out}");
    assert!(out.contains("Content-Type: application/json"), "{out}");
    assert!(out.ends_with(r#"{"Another": "Echo"}"#), "{out}");
    let mut c = srv.connect();
    for i in 0..20 {
        let body = format!(r#"{{"data": {{"n": {i}}}}}"#);
        let r = srv.call(&mut c, "POST", "/hellowithdata-py", body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        // event['data'] is the request body, returned as JSON.
        assert_eq!(r.text(), body);
    }
}

/// A failed call's error body carries the tail of the program's stderr (bounded), after the
/// error itself, for a fault and for a deadline.
#[test]
fn failed_calls_answer_with_the_tail_of_the_programs_stderr() {
    let srv = Server::start(&functions_dir(&["stderr-then-fail"]), &[]);
    let mut c = srv.connect();
    for (request, status, error) in [("fault", 502, "guest_fault"), ("spin", 504, "deadline")] {
        let r = c.request("POST", "/stderr-then-fail", &[], request.as_bytes());
        assert_eq!(r.status, status, "{}", r.text());
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error body");
        assert_eq!(body["error"], error);
        let tail = body["stderr_tail"].as_str().expect("stderr_tail");
        assert_eq!(tail.len(), 4096, "the last 4 KiB of 6.4 KB");
        assert!(tail.ends_with(&format!("last words before {request}\n")), "{tail:?}");
        assert!(tail.contains("stderr line 399\n") && !tail.contains("stderr line 000\n"));
        // After the error message: `detail` comes first in the body.
        let text = r.text();
        assert!(text.find("\"detail\"").unwrap() < text.find("\"stderr_tail\"").unwrap(), "{text}");
    }
}
