//! The response in full: a function that declares `snapcall.response: cgi` sets its status
//! and headers with a CGI head (RFC 3875 §6); a hostile head is a clear 502, never a broken
//! HTTP response. `cgi-echo` echoes its request body, so each test's body is the head.

mod serve_support;

use serve_support::{functions_dir, Server};

#[test]
fn status_content_type_and_headers_from_the_head() {
    let srv = Server::start(&functions_dir(&["cgi-echo", "echo-c"]), &[]);
    let mut c = srv.connect();
    let r = c.request(
        "POST",
        "/function/cgi-echo",
        &[],
        b"Status: 201 Created\r\nContent-Type: application/json\r\nX-Id: 7\r\n\r\n{\"id\":7}",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header("X-Id"), Some("7"));
    assert_eq!(r.text(), "{\"id\":7}");
    assert!(r.header("Server-Timing").is_some() && r.header("Date").is_some());
    // No Status: 200 and the bundle's content type; a redirect; a status with no body.
    let r = c.request("POST", "/function/cgi-echo", &[], b"X-A: 1\n\nplain");
    assert_eq!(
        (r.status, r.header("Content-Type"), r.text().as_str()),
        (200, Some("text/plain; charset=utf-8"), "plain")
    );
    let r = c.request("POST", "/function/cgi-echo", &[], b"Status: 302\nLocation: /elsewhere\n\n");
    assert_eq!((r.status, r.header("Location")), (302, Some("/elsewhere")));
    c.send_raw(&serve_support::encode("POST", "/function/cgi-echo", &[], b"Status: 204\n\n"));
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = std::io::Read::read(&mut c.stream, &mut buf).unwrap();
        assert!(n > 0, "closed");
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    assert!(head.starts_with("HTTP/1.1 204 No Content\r\n") && !head.contains("Content-Length"), "{head}");
    // A bundle without the annotation keeps today's behaviour: a head-like body is a body.
    let r = c.request("POST", "/function/echo-c", &[], b"Status: 500\n\n");
    assert_eq!((r.status, r.text().as_str()), (200, "Status: 500\n\n"));
}

#[test]
fn hostile_heads_are_a_clear_502_and_the_connection_stays_sound() {
    let srv = Server::start(&functions_dir(&["cgi-echo"]), &[]);
    let mut c = srv.connect();
    let mut huge = b"X-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend_from_slice(b"\n\nbody");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"no head here".to_vec(), "no blank line"),
        (huge, "no blank line"),
        (b"X-A: 1\rSet-Cookie: stolen=1\n\n".to_vec(), "control character"),
        (b"X-A: 1\nHTTP/1.1 200 OK\n\n".to_vec(), "is not `Name: value`"),
        (b"X A: 1\n\n".to_vec(), "not an HTTP token"),
        (b"Content-Length: 0\n\nHTTP/1.1 200 OK\r\nX-Smuggled: 1\r\n\r\n".to_vec(), "set by snapcall"),
        (b"Transfer-Encoding: chunked\n\n".to_vec(), "set by snapcall"),
        (b"Connection: close\n\n".to_vec(), "set by snapcall"),
        (b"Status: 101\n\n".to_vec(), "from 200 to 599"),
        (((0..100).map(|i| format!("X-{i}: v\n")).collect::<String>() + "\n").into_bytes(), "more than 64"),
    ];
    for (body, why) in cases {
        let r = c.request("POST", "/function/cgi-echo", &[], &body);
        assert_eq!(r.status, 502, "{why}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert!(r.text().contains("\"error\":\"bad_response_head\"") && r.text().contains(why), "{why}: {}", r.text());
        assert!(r.header("X-Smuggled").is_none() && r.header("Set-Cookie").is_none());
    }
    // Still one response per request on the same connection.
    let r = c.request("POST", "/function/cgi-echo", &[], b"Status: 200\n\nok");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(srv.metric("snapcall_call_errors_total{function=\"cgi-echo\",kind=\"response_head\"}") >= 9.0);
}
