//! The whole request reaches the function: every method is routed, `/function/NAME[/sub]`
//! and `NAME.openfaas-fn` work, and the head (method, sub-path, query, headers) arrives in
//! `/run/snapcall/request` of a restored snapshot, per call.

mod serve_support;

use serve_support::{curl, functions_dir, Server};

fn server() -> Server {
    Server::start(&functions_dir(&["echo-c", "request-echo"]), &[])
}

#[test]
fn every_method_reaches_the_function() {
    let srv = server();
    let mut c = srv.connect();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        let r = c.request(method, "/function/echo-c", &[], b"body");
        assert_eq!((r.status, r.text().as_str()), (200, "body"), "{method}");
    }
    // HEAD runs the function and sends no body, with the length a GET would have had.
    let (ok, out) = curl(&["-sI", &srv.url("/function/request-echo")]);
    assert!(ok && out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let length = out.lines().find_map(|l| l.strip_prefix("Content-Length: ")).expect("a Content-Length");
    assert_ne!(length.trim(), "0", "{out}");
    // The built-in routes keep their methods.
    let r = c.request("PUT", "/metrics", &[], b"");
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET, HEAD")));
}

#[test]
fn request_head_reaches_a_restored_function() {
    let srv = server();
    let mut c = srv.connect();
    let r = c.request(
        "PATCH",
        "/function/request-echo/items/42?color=red&size=%20L",
        &[("X-Trace", "abc"), ("Content-Type", "text/plain")],
        b"payload",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "before-snapshot: ENOENT\nmethod PATCH\npath /items/42\nquery color=red&size=%20L\n\
         header host: 127.0.0.1\nheader x-trace: abc\nheader content-type: text/plain\n\
         header content-length: 7\nbody 7: payload"
    );
    // The next call on the same connection sees its own head, not the previous one's.
    let r = c.request("GET", "/request-echo", &[], b"");
    assert_eq!(r.text(), "before-snapshot: ENOENT\nmethod GET\npath /\nquery \nheader host: 127.0.0.1\nbody 0: ");
}

#[test]
fn openfaas_namespace_and_sub_paths() {
    let srv = server();
    let mut c = srv.connect();
    let r = c.request("POST", "/function/request-echo.openfaas-fn/a/b?q", &[], b"x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("method POST\npath /a/b\nquery q\n"), "{}", r.text());
    let r = c.request("POST", "/function/echo-c.openfaas-fn", &[], b"ns");
    assert_eq!((r.status, r.text().as_str()), (200, "ns"));
    // Another namespace is not served here.
    let r = c.request("POST", "/function/echo-c.other-ns", &[], b"x");
    assert_eq!(r.status, 404);
    // `/NAME` takes no sub-path (that shape would shadow every other route).
    assert_eq!(c.request("GET", "/echo-c/sub", &[], b"").status, 404);
}

#[test]
fn python_sees_the_request_and_sets_status_and_headers() {
    let srv = Server::start(&functions_dir(&["py-http"]), &[]);
    let mut c = srv.connect();
    let r = c.request("PUT", "/function/py-http/things/9?x=1", &[("X-Trace", "t-1")], b"{\"n\": 2}");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Handler"), Some("py-http"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"method": "PUT", "path": "/things/9", "query": "x=1", "trace": "t-1", "data": {"n": 2}})
    );
    let r = c.request("GET", "/function/py-http/missing", &[], b"");
    assert_eq!((r.status, r.header("X-Reason"), r.text().as_str()), (404, Some("missing"), "no such thing\n"));
    let r = c.request("DELETE", "/function/py-http/things/9", &[], b"");
    assert_eq!((r.status, r.header("Content-Length"), r.body.len()), (204, None, 0));
    // The next call is a fresh copy of the snapshot: none of the last call's head.
    let r = c.request("POST", "/function/py-http", &[], b"x");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((v["method"].as_str(), v["path"].as_str(), v["trace"].is_null()), (Some("POST"), Some("/"), true));
}
