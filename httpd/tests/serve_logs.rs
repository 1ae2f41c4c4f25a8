//! Logs: every call's stderr, successful or not, in a bounded ring per function, read back
//! at `/system/logs` in OpenFaaS's message shape (tail, since, instance, follow); the access
//! log has a line per request.

mod serve_support;

use std::time::Duration;

use serve_support::{functions_dir, Client, Server};

fn messages(c: &mut Client, query: &str) -> (u16, Vec<serde_json::Value>) {
    let r = c.request("GET", &format!("/system/logs?{query}"), &[], b"");
    let lines = r.text().lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    (r.status, lines)
}

fn text(m: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(m["text"].as_str().expect("text")).expect("text is the call's JSON line")
}

#[test]
fn every_calls_stderr_is_in_the_ring_in_openfaas_shape() {
    let access = std::env::temp_dir().join(format!("snapcall-access-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&access);
    let srv =
        Server::start(&functions_dir(&["request-echo", "exit-code"]), &["--access-log", access.to_str().unwrap()]);
    let mut c = srv.connect();
    let r = c.request("POST", "/function/request-echo", &[("X-Call-Id", "my-call-1")], b"1234567");
    assert_eq!((r.status, r.header("X-Call-Id")), (200, Some("my-call-1")));
    let r = c.request("POST", "/function/request-echo", &[], b"12");
    let made_id = r.header("X-Call-Id").expect("a call id").to_owned();
    assert_eq!(c.request("POST", "/function/exit-code", &[], b"x").status, 502);

    let (status, msgs) = messages(&mut c, "name=request-echo");
    assert_eq!((status, msgs.len()), (200, 2));
    assert_eq!(msgs[0]["name"], "request-echo");
    assert_eq!(msgs[0]["namespace"], "openfaas-fn");
    assert_eq!(msgs[0]["instance"], "my-call-1");
    assert!(msgs[0]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    let first = text(&msgs[0]);
    assert_eq!((first["status"].as_u64(), first["stderr"].as_str()), (Some(200), Some("request-echo: 7 bytes\n")));
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d > 0.0));
    assert_eq!(text(&msgs[1])["call_id"].as_str(), Some(made_id.as_str()));
    // A failed call's stderr is there too, with its status.
    let (_, failed) = messages(&mut c, "name=exit-code");
    let line = text(&failed[0]);
    assert_eq!(line["status"], 502);
    assert!(line["stderr"].as_str().unwrap().contains("bye"), "{line}");

    // tail, instance, since, the namespace; errors.
    assert_eq!(messages(&mut c, "name=request-echo&tail=1").1[0]["instance"].as_str(), Some(made_id.as_str()));
    assert_eq!(messages(&mut c, "name=request-echo.openfaas-fn&instance=my-call-1").1[0]["instance"], "my-call-1");
    assert_eq!(messages(&mut c, "name=request-echo&namespace=openfaas-fn&instance=my-call-1").1.len(), 1);
    assert_eq!(messages(&mut c, "name=request-echo&since=2999-01-01T00:00:00Z").1.len(), 0);
    assert_eq!(messages(&mut c, "name=request-echo&since=2000-01-01T00%3A00%3A00%2B01%3A00").1.len(), 2);
    assert_eq!(c.request("GET", "/system/logs?name=nope", &[], b"").status, 404);
    assert_eq!(c.request("GET", "/system/logs", &[], b"").status, 400);
    assert_eq!(c.request("GET", "/system/logs?name=request-echo&since=soon", &[], b"").status, 400);
    assert_eq!(c.request("POST", "/system/logs?name=request-echo", &[], b"").status, 405);

    // The access log: a line per request, calls and the rest.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&access).unwrap();
    assert!(log.lines().any(|l| l.contains(" POST /function/request-echo 200 ")), "{log}");
    assert!(log.lines().any(|l| l.contains(" POST /function/exit-code 502 ")), "{log}");
    assert!(log.lines().any(|l| l.contains(" GET /system/logs 404 ")), "{log}");
    let _ = std::fs::remove_file(&access);
}

#[test]
fn rings_are_bounded_and_follow_waits_for_the_next_call() {
    let srv = Server::start(&functions_dir(&["request-echo"]), &["--log-ring-bytes", "4096", "--access-log", "off"]);
    let mut c = srv.connect();
    for i in 0..40 {
        assert_eq!(c.request("POST", "/function/request-echo", &[], format!("call {i}").as_bytes()).status, 200);
    }
    let (_, msgs) = messages(&mut c, "name=request-echo&tail=0");
    let kept: usize = msgs.iter().map(|m| m["text"].as_str().unwrap().len()).sum();
    assert!(kept <= 4096 && msgs.len() < 40 && msgs.len() > 3, "{} lines, {kept} bytes", msgs.len());
    let r = c.request("GET", "/system/logs?name=request-echo&tail=1", &[], b"");
    let seq: u64 = r.header("X-Snapcall-Log-Seq").expect("the last line's number").parse().unwrap();
    assert!(text(&serde_json::from_str(r.text().trim()).unwrap())["stderr"] == "request-echo: 7 bytes\n");

    // follow: nothing after `seq` yet, so the answer waits for the next call's line.
    let addr = srv.addr;
    let follower = std::thread::spawn(move || {
        let mut f = Client::connect(addr);
        let r = f.request("GET", &format!("/system/logs?name=request-echo&follow=true&after={seq}"), &[], b"");
        (r.status, r.text())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(!follower.is_finished(), "follow answered before there was anything new");
    assert_eq!(c.request("POST", "/function/request-echo", &[("X-Call-Id", "late-one")], b"z").status, 200);
    let (status, body) = follower.join().unwrap();
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(m["instance"], "late-one");
    // /healthz is answered while a follower waits (it waits on a worker, not a loop).
    assert_eq!(c.request("GET", "/healthz", &[], b"").status, 200);
}
