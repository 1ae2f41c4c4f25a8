//! HTTP/1.1 request heads, body framing (Content-Length and chunked) and response writing.
//!
//! Pure byte-in/byte-out code: no sockets, no clocks. The connection state machine
//! (`conn.rs`) drives it; the unit tests below feed it bytes.

use std::fmt::Write as _;

/// Most headers one request may carry.
const MAX_HEADERS: usize = 64;

/// Request methods the router tells apart. Anything else is kept for the 405 path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other(String),
}

impl Method {
    /// The method as it appeared on the request line.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Other(m) => m,
        }
    }

    fn parse(s: &str) -> Method {
        match s {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            other => Method::Other(other.to_owned()),
        }
    }
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// `Content-Length: n` with n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request line and the headers snapcall acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    /// The request target, query string removed.
    pub path: String,
    /// The query string, without its `?` (empty if none). What a function sees of the
    /// request beyond its path and body: moved into its `vmm::RequestHead`, not copied.
    pub query: String,
    /// Every header as `(lower-case name, trimmed value)`, in the client's order.
    pub headers: Vec<(String, String)>,
    /// HTTP/1.1 (true) or HTTP/1.0 (false).
    pub http11: bool,
    /// Whether the client allows the connection to be reused after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    pub framing: Framing,
}

impl Head {
    /// What answering the request needs of its head (method, path, persistence): the head
    /// without its query and headers, which went to the function.
    pub fn for_response(&self) -> Head {
        Head {
            method: self.method.clone(),
            path: self.path.clone(),
            query: String::new(),
            headers: Vec::new(),
            http11: self.http11,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
            framing: self.framing,
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be accepted; each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Syntax error, conflicting or invalid framing headers: 400.
    Malformed(&'static str),
    /// Request line plus headers larger than the head limit: 431.
    HeadTooLarge,
    /// Body larger than the body limit: 413.
    BodyTooLarge,
    /// A transfer coding other than chunked: 501.
    UnsupportedEncoding,
    /// No complete head (or body) within its timeout: 408.
    Timeout,
}

impl Reject {
    pub fn status(self) -> u16 {
        match self {
            Reject::Malformed(_) => 400,
            Reject::HeadTooLarge => 431,
            Reject::BodyTooLarge => 413,
            Reject::UnsupportedEncoding => 501,
            Reject::Timeout => 408,
        }
    }

    /// The `error` field of the JSON body.
    pub fn code(self) -> &'static str {
        match self {
            Reject::Malformed(_) => "bad_request",
            Reject::HeadTooLarge => "head_too_large",
            Reject::BodyTooLarge => "body_too_large",
            Reject::UnsupportedEncoding => "unsupported_transfer_encoding",
            Reject::Timeout => "timeout",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Reject::Malformed(why) => why,
            Reject::HeadTooLarge => "request head too large",
            Reject::BodyTooLarge => "request body too large",
            Reject::UnsupportedEncoding => "unsupported transfer-encoding",
            Reject::Timeout => "request not received in time",
        }
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` if more bytes are needed, or the head and how many bytes it used.
pub fn parse_head(buf: &[u8], max_head: usize, max_body: u64) -> Result<Option<(Head, usize)>, Reject> {
    // Tolerate the empty lines some clients send between pipelined requests (RFC 9112 §2.2).
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_head { Err(Reject::HeadTooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::HeadTooLarge),
        Err(_) => return Err(Reject::Malformed("malformed request head")),
    };
    if used > max_head {
        return Err(Reject::HeadTooLarge);
    }
    let method = Method::parse(req.method.unwrap_or(""));
    let target = req.path.unwrap_or("/");
    if !target.starts_with('/') {
        return Err(Reject::Malformed("request target must be an absolute path"));
    }
    let target = target.split('#').next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (path, query) = (path.to_owned(), query.to_owned());
    let http11 = req.version == Some(1);
    let mut headers = Vec::with_capacity(req.headers.len());

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| Reject::Malformed("non-ASCII header value"))?;
        let value = value.trim();
        headers.push((h.name.to_ascii_lowercase(), value.to_owned()));
        if h.name.eq_ignore_ascii_case("content-length") {
            // 1*DIGIT only: `+5` or ` 5` parse as numbers in Rust but are not lengths, and a
            // lenient reading is how request smuggling starts.
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::Malformed("invalid content-length"));
            }
            let n: u64 = value.parse().map_err(|_| Reject::Malformed("invalid content-length"))?;
            if content_length.is_some_and(|old| old != n) {
                return Err(Reject::Malformed("conflicting content-length headers"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") && !chunked {
                    chunked = true;
                } else {
                    return Err(Reject::UnsupportedEncoding);
                }
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case("100-continue") {
                expect_continue = http11;
            } else {
                return Err(Reject::Malformed("unsupported expectation"));
            }
        }
    }
    // Both framings at once is the request-smuggling shape: refuse it (RFC 9112 §6.3).
    let framing = match (chunked, content_length) {
        (true, Some(_)) => return Err(Reject::Malformed("both content-length and transfer-encoding")),
        (true, None) if !http11 => return Err(Reject::Malformed("chunked body in HTTP/1.0")),
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::None,
        (false, Some(n)) if n > max_body => return Err(Reject::BodyTooLarge),
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if http11 { !close } else { keep_alive_token && !close };
    Ok(Some((Head { method, path, query, headers, http11, keep_alive, expect_continue, framing }, used)))
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1). Chunk extensions and trailers are
/// read and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size { value: u64, digits: u32 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data { left: u64 },
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLineLf,
    EndLf,
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: ChunkState::Size { value: 0, digits: 0 } }
    }
}

impl ChunkedDecoder {
    /// Consumes bytes from `input`, appending decoded data to `out` (never beyond `max_body`).
    ///
    /// Returns how many input bytes were used and whether the body is complete.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>, max_body: u64) -> Result<(usize, bool), Reject> {
        use ChunkState::*;
        let bad = |why| Err(Reject::Malformed(why));
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                Done => break,
                Data { left } => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { DataCr } else { Data { left } };
                    continue;
                }
                Size { value, digits } => match (b as char).to_digit(16) {
                    Some(d) if digits < 15 => {
                        self.state = Size { value: value * 16 + u64::from(d), digits: digits + 1 }
                    }
                    Some(_) => return bad("chunk size too long"),
                    None if digits == 0 => return bad("missing chunk size"),
                    None if b == b';' || b == b' ' || b == b'\t' => self.state = Extension { value },
                    None if b == b'\r' => self.state = SizeLf { value },
                    None => return bad("invalid chunk size"),
                },
                Extension { value } => {
                    if b == b'\r' {
                        self.state = SizeLf { value };
                    } else if b == b'\n' {
                        return bad("bare LF in chunk extension");
                    }
                }
                SizeLf { value } => {
                    if b != b'\n' {
                        return bad("chunk size line not ended by CRLF");
                    }
                    if out.len() as u64 + value > max_body {
                        return Err(Reject::BodyTooLarge);
                    }
                    self.state = if value == 0 { TrailerStart } else { Data { left: value } };
                }
                DataCr => {
                    if b != b'\r' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return bad("chunk data not followed by CRLF");
                    }
                    self.state = Size { value: 0, digits: 0 };
                }
                TrailerStart => self.state = if b == b'\r' { EndLf } else { TrailerLine },
                TrailerLine => {
                    if b == b'\r' {
                        self.state = TrailerLineLf;
                    }
                }
                TrailerLineLf => {
                    if b != b'\n' {
                        return bad("trailer line not ended by CRLF");
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if b != b'\n' {
                        return bad("chunked body not ended by CRLF");
                    }
                    self.state = Done;
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
        Ok((i, self.state == Done))
    }
}

/// The reason phrase of a status (RFC 9110 §15), for snapcall's own and a function's.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// An HTTP response ready to be serialised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    /// Extra headers, each without CRLF (`Retry-After: 1`).
    pub headers: Vec<String>,
    pub body: Vec<u8>,
    /// Value of the `Server-Timing` header.
    pub server_timing: String,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            body,
            server_timing: String::new(),
        }
    }

    /// A short JSON error body: `{"error":"...","detail":"..."}`.
    pub fn json_error(status: u16, error: &str, detail: &str) -> Response {
        let body = format!("{{\"error\":{},\"detail\":{}}}\n", json_string(error), json_string(detail));
        Response::new(status, "application/json", body.into_bytes())
    }

    /// Serialises the response onto `out`, with a `Date` header. `head_only` drops the body
    /// (HEAD requests); `connection` says what to tell the client about the connection.
    pub fn write_to(&self, out: &mut Vec<u8>, head_only: bool, connection: Persistence) {
        let mut h = String::with_capacity(192 + self.server_timing.len());
        let _ = write!(h, "HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        h.push_str("Date: ");
        // IMF-fixdate is ASCII by construction.
        h.push_str(std::str::from_utf8(&crate::date::now()).unwrap_or_default());
        let _ = write!(h, "\r\nContent-Type: {}\r\n", self.content_type);
        // 204 and 304 have no body and must not announce one (RFC 9110 §8.6).
        if !matches!(self.status, 204 | 304) {
            let _ = write!(h, "Content-Length: {}\r\n", self.body.len());
        }
        if !self.server_timing.is_empty() {
            let _ = write!(h, "Server-Timing: {}\r\n", self.server_timing);
        }
        for extra in &self.headers {
            h.push_str(extra);
            h.push_str("\r\n");
        }
        h.push_str(connection.header());
        h.push_str("\r\n");
        out.extend_from_slice(h.as_bytes());
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

/// What happens to the connection after a response (RFC 9112 §9.3), and so which
/// `Connection` header it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 kept open: persistence is the default, nothing to say.
    KeepAlive,
    /// HTTP/1.0 kept open because the client asked with `Connection: keep-alive`: the
    /// response must say so, or the client waits for the close that never comes.
    KeepAlive10,
    /// Closed after this response: `Connection: close`.
    Close,
}

impl Persistence {
    /// What a response to `head` says, given whether the server closes the connection.
    pub fn of(head: &Head, close: bool) -> Persistence {
        match (close || !head.keep_alive, head.http11) {
            (true, _) => Persistence::Close,
            (false, true) => Persistence::KeepAlive,
            (false, false) => Persistence::KeepAlive10,
        }
    }

    fn header(self) -> &'static str {
        match self {
            Persistence::KeepAlive => "",
            Persistence::KeepAlive10 => "Connection: keep-alive\r\n",
            Persistence::Close => "Connection: close\r\n",
        }
    }
}

const OVER_LIMIT_HEAD: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nDate: ";
const OVER_LIMIT_TAIL: &[u8] =
    b"\r\nRetry-After: 1\r\nServer-Timing: total;dur=0.000\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const OVER_LIMIT_LEN: usize = OVER_LIMIT_HEAD.len() + crate::date::LEN + OVER_LIMIT_TAIL.len();

/// The bare 503 a connection over the connection limit gets before it is closed (built on
/// the stack: that path must not allocate when the server is flooded).
pub fn over_limit() -> [u8; OVER_LIMIT_LEN] {
    let mut out = [0u8; OVER_LIMIT_LEN];
    let (head, rest) = out.split_at_mut(OVER_LIMIT_HEAD.len());
    let (date, tail) = rest.split_at_mut(crate::date::LEN);
    head.copy_from_slice(OVER_LIMIT_HEAD);
    date.copy_from_slice(&crate::date::now());
    tail.copy_from_slice(OVER_LIMIT_TAIL);
    out
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Quotes `s` as a JSON string.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8]) -> Result<Option<(Head, usize)>, Reject> {
        parse_head(bytes, 8192, 1 << 20)
    }

    #[test]
    fn simple_get_keeps_alive() {
        let (h, n) = head(b"GET /function/echo?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest").unwrap().unwrap();
        assert_eq!(n, 44);
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/function/echo");
        assert_eq!(h.query, "x=1");
        assert_eq!(h.headers, [("host".to_owned(), "a".to_owned())]);
        assert!(h.keep_alive && h.http11 && !h.expect_continue);
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn query_headers_and_fragment() {
        let req = b"PATCH /f/a?b=1&c=%20?d#frag HTTP/1.1\r\nX-Trace:  t1 \r\nAccept: */*\r\nx-trace: t2\r\n\r\n";
        let (h, _) = head(req).unwrap().unwrap();
        assert_eq!(h.method.as_str(), "PATCH");
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/f/a", "b=1&c=%20?d"));
        let names: Vec<_> = h.headers.iter().map(|(n, v)| format!("{n}={v}")).collect();
        assert_eq!(names, ["x-trace=t1", "accept=*/*", "x-trace=t2"]);
        assert_eq!(h.header("x-trace"), Some("t1"));
        let (h, _) = head(b"GET /p#x?y HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/p", ""));
        let r = h.for_response();
        assert!(r.headers.is_empty() && r.path == "/p");
    }

    #[test]
    fn partial_head_needs_more() {
        assert_eq!(head(b"POST /echo HTTP/1.1\r\nContent-Le"), Ok(None));
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        let (h, _) = head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(h.keep_alive);
        let (h, _) = head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn framing_rules() {
        let (h, _) = head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(5));
        let (h, _) = head(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let both = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(head(both).unwrap_err().status(), 400);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(head(two).unwrap_err().status(), 400);
        for bad in ["-1", "+5", "5,5", "0x10", "99999999999999999999999"] {
            let req = format!("POST / HTTP/1.1\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(head(req.as_bytes()).unwrap_err().status(), 400, "{bad}");
        }
        let gz = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(head(gz).unwrap_err().status(), 501);
        let big = b"POST / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n";
        assert_eq!(head(big).unwrap_err(), Reject::BodyTooLarge);
    }

    #[test]
    fn garbage_and_oversized_heads() {
        assert_eq!(head(b"\x00\x01 garbage\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(head(b"GET http://x/ HTTP/1.1\r\n\r\n").unwrap_err().status(), 400);
        let long = vec![b'a'; 9000];
        let mut req = b"GET / HTTP/1.1\r\nX: ".to_vec();
        req.extend_from_slice(&long);
        assert_eq!(head(&req).unwrap_err(), Reject::HeadTooLarge);
    }

    #[test]
    fn expect_continue_only_on_http11() {
        let (h, _) = head(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(h.expect_continue);
        let (h, _) = head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(!h.expect_continue);
    }

    #[test]
    fn chunked_whole_and_byte_by_byte() {
        let wire = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let (used, done) = d.decode(wire, &mut out, 1000).unwrap();
        assert!(done);
        assert_eq!(&wire[used..], b"NEXT");
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");

        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut total = 0;
        for b in wire.iter() {
            let (used, done) = d.decode(std::slice::from_ref(b), &mut out, 1000).unwrap();
            total += used;
            if done {
                break;
            }
        }
        assert_eq!(total, wire.len() - 4);
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn chunked_errors() {
        let mut out = Vec::new();
        assert_eq!(ChunkedDecoder::default().decode(b"zz\r\n", &mut out, 10).unwrap_err().status(), 400);
        assert_eq!(ChunkedDecoder::default().decode(b"3\r\nabcX", &mut out, 10).unwrap_err().status(), 400);
        assert_eq!(ChunkedDecoder::default().decode(b"b\r\n", &mut out, 10).unwrap_err(), Reject::BodyTooLarge);
        assert_eq!(
            ChunkedDecoder::default().decode(b"ffffffffffffffffff\r\n", &mut out, 10).unwrap_err().status(),
            400
        );
    }

    /// The response with its `Date` value replaced by `<date>` (checked to be an IMF-fixdate).
    fn written(r: &Response, connection: Persistence) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out, false, connection);
        let text = String::from_utf8(out).unwrap();
        let start = text.find("\r\nDate: ").expect("a Date header") + 8;
        let date = &text[start..start + crate::date::LEN];
        assert!(date.ends_with(" GMT") && date.as_bytes()[3] == b',', "{date}");
        format!("{}<date>{}", &text[..start], &text[start + crate::date::LEN..])
    }

    #[test]
    fn response_bytes() {
        let mut r = Response::new(200, "text/plain", b"hi".to_vec());
        r.server_timing = "run;dur=1.000".into();
        r.headers.push("Retry-After: 1".into());
        assert_eq!(
            written(&r, Persistence::Close),
            "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\
             Server-Timing: run;dur=1.000\r\nRetry-After: 1\r\nConnection: close\r\n\r\nhi"
        );
    }

    #[test]
    fn connection_header_follows_rfc_9112_section_9_3() {
        let parsed = |req: &[u8]| head(req).unwrap().unwrap().0;
        let http10 = parsed(b"GET / HTTP/1.0\r\n\r\n");
        let http10_ka = parsed(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let http11 = parsed(b"GET / HTTP/1.1\r\n\r\n");
        let http11_close = parsed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(Persistence::of(&http10, false), Persistence::Close);
        assert_eq!(Persistence::of(&http10_ka, false), Persistence::KeepAlive10);
        assert_eq!(Persistence::of(&http10_ka, true), Persistence::Close);
        assert_eq!(Persistence::of(&http11, false), Persistence::KeepAlive);
        assert_eq!(Persistence::of(&http11, true), Persistence::Close);
        assert_eq!(Persistence::of(&http11_close, false), Persistence::Close);

        let r = Response::new(200, "text/plain", Vec::new());
        let tail = |p| written(&r, p).split("Content-Length: 0\r\n").nth(1).unwrap().to_owned();
        assert_eq!(tail(Persistence::KeepAlive10), "Connection: keep-alive\r\n\r\n");
        assert_eq!(tail(Persistence::KeepAlive), "\r\n");
        assert_eq!(tail(Persistence::Close), "Connection: close\r\n\r\n");
    }

    #[test]
    fn over_limit_is_a_complete_503_with_a_date() {
        let bytes = over_limit();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\nDate: "), "{text}");
        assert!(text.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{text}");
        let date = &text[OVER_LIMIT_HEAD.len()..OVER_LIMIT_HEAD.len() + crate::date::LEN];
        assert!(date.ends_with(" GMT") && !date.contains('\0'), "{date}");
    }

    #[test]
    fn json_error_escapes() {
        let r = Response::json_error(502, "exit", "line1\n\"q\"\u{1}");
        assert_eq!(r.body, b"{\"error\":\"exit\",\"detail\":\"line1\\n\\\"q\\\"\\u0001\"}\n");
    }
}
