//! A function's own response head: RFC 3875 §6 (CGI) on its stdout, for bundles that declare
//! `snapcall.response: cgi`.
//!
//! ```text
//! Status: 201 Created
//! Content-Type: application/json
//! X-Request-Id: 42
//!
//! {"id": 42}
//! ```
//!
//! Lines end in LF or CRLF; a blank line ends the head, the rest is the body. `Status` (a
//! three-digit code from 200 to 599, reason phrase ignored) and `Content-Type` are optional
//! and default to 200 and the bundle's `snapcall.content_type`. The head is the guest's, so
//! nothing in it is trusted: it is refused (the call answers 502) when it is larger than
//! [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] lines, has no blank line, holds a line that is not
//! `token: value`, a control character (a lone CR: header injection), or a header snapcall
//! owns: the framing and connection headers (`Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-Connection`) and `Date`,
//! `Server-Timing`. Pure bytes in, parts out.

/// Longest head a function may write.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines (`Status` and `Content-Type` included).
pub const MAX_HEADERS: usize = 64;

/// Headers the server sets itself: a function's value would break the framing of the
/// connection (request smuggling, response splitting) or lie about the server.
const OWNED_BY_SERVER: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "date",
    "server-timing",
];

/// A head parsed off the program's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgiResponse {
    pub status: u16,
    /// `None`: the bundle's default.
    pub content_type: Option<String>,
    /// Every other header as `Name: value`, in the program's order.
    pub headers: Vec<String>,
    /// Where the body starts in the output.
    pub body_start: usize,
}

/// Why a program's head was refused; the text says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("no blank line ends the response head within its first {MAX_HEAD_BYTES} bytes (the bundle declares snapcall.response: cgi, so stdout must start with a head)")]
    Unterminated,
    #[error("the response head has more than {MAX_HEADERS} lines")]
    TooManyHeaders,
    #[error("response head line {line} is not `Name: value`")]
    NotAHeader { line: usize },
    #[error("response head line {line}: header name {name:?} is not an HTTP token")]
    BadName { line: usize, name: String },
    #[error("response head line {line} ({name}): the value holds a control character (CR, NUL, ...)")]
    BadValue { line: usize, name: String },
    #[error("response head line {line}: {name} is set by snapcall and may not come from a function")]
    Reserved { line: usize, name: String },
    #[error("response head line {line}: {name} given twice")]
    Repeated { line: usize, name: &'static str },
    #[error("response head line {line}: Status must be a code from 200 to 599, not {value:?}")]
    BadStatus { line: usize, value: String },
    #[error("status {status} has no body, but the function wrote {len} bytes after its head")]
    BodyNotAllowed { status: u16, len: usize },
}

/// Splits `out` (the program's whole stdout) into its head and where its body starts.
pub fn parse(out: &[u8]) -> Result<CgiResponse, HeadError> {
    let window = &out[..out.len().min(MAX_HEAD_BYTES)];
    let (head_len, body_start) = head_end(window).ok_or(HeadError::Unterminated)?;
    let head = &out[..head_len];
    let mut resp = CgiResponse { status: 200, content_type: None, headers: Vec::new(), body_start };
    let mut seen_status = false;
    // An empty head (the output starts with its blank line) has no lines at all.
    let lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).take_while(|_| head_len > 0);
    for (i, raw) in lines.enumerate() {
        let line = i + 1;
        if line > MAX_HEADERS {
            return Err(HeadError::TooManyHeaders);
        }
        let colon = raw.iter().position(|&b| b == b':').ok_or(HeadError::NotAHeader { line })?;
        let (name, value) = (&raw[..colon], &raw[colon + 1..]);
        let name_text = String::from_utf8_lossy(name).into_owned();
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(HeadError::BadName { line, name: name_text });
        }
        let value = trim(value);
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(HeadError::BadValue { line, name: name_text });
        }
        let value = String::from_utf8_lossy(value).into_owned();
        let lower = name_text.to_ascii_lowercase();
        if OWNED_BY_SERVER.contains(&lower.as_str()) {
            return Err(HeadError::Reserved { line, name: name_text });
        }
        match lower.as_str() {
            "status" => {
                if std::mem::replace(&mut seen_status, true) {
                    return Err(HeadError::Repeated { line, name: "Status" });
                }
                resp.status = status_code(&value).ok_or(HeadError::BadStatus { line, value })?;
            }
            "content-type" => {
                if resp.content_type.replace(value).is_some() {
                    return Err(HeadError::Repeated { line, name: "Content-Type" });
                }
            }
            _ => resp.headers.push(format!("{name_text}: {value}")),
        }
    }
    let body_len = out.len() - body_start;
    if matches!(resp.status, 204 | 304) && body_len > 0 {
        return Err(HeadError::BodyNotAllowed { status: resp.status, len: body_len });
    }
    Ok(resp)
}

/// The head's length (without its blank line) and where the body starts, if the blank line
/// is in `buf`. An output starting with a blank line has an empty head.
fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    let mut i = 0;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        let rest = &buf[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((nl, nl + 2));
        }
        if rest.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        i = nl + 1;
    }
    None
}

/// `404` or `404 Not Found` -> 404, for 200..=599 (1xx would need a second response).
fn status_code(value: &str) -> Option<u16> {
    let code = value.split([' ', '\t']).next()?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok().filter(|c| (200..=599).contains(c))
}

/// RFC 9110 §5.6.2 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_type_headers_and_body() {
        let out = b"Status: 201 Created\r\nContent-Type: application/json\r\nX-Id:  42 \r\n\r\n{\"id\":42}";
        let r = parse(out).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.headers, ["X-Id: 42"]);
        assert_eq!(&out[r.body_start..], b"{\"id\":42}");
        // LF-only lines, no Status: 200; a body that itself holds blank lines is left alone.
        let out = b"Location: /x\n\nline\n\nmore";
        let r = parse(out).unwrap();
        assert_eq!((r.status, r.content_type.clone(), r.headers.clone()), (200, None, vec!["Location: /x".to_owned()]));
        assert_eq!(&out[r.body_start..], b"line\n\nmore");
        // An empty head: the defaults, the rest is body.
        let r = parse(b"\nbody").unwrap();
        assert_eq!((r.status, r.body_start), (200, 1));
        let r = parse(b"Status: 404\n\n").unwrap();
        assert_eq!(r.status, 404);
    }

    #[test]
    fn hostile_heads_are_refused_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"no blank line at all", "no blank line"),
            (b"Status: 200\r\nX-A: 1", "no blank line"),
            (b"X-A: 1\r\nInjected\r\n\r\n", "line 2 is not `Name: value`"),
            (b"X-A: 1\rSet-Cookie: evil=1\r\n\r\n", "control character"),
            (b"X-A: a\x00b\n\n", "control character"),
            (b"Bad Name: 1\n\n", "not an HTTP token"),
            (b": 1\n\n", "not an HTTP token"),
            (b"Content-Length: 0\n\nHTTP/1.1 200 OK\r\n", "set by snapcall"),
            (b"transfer-encoding: chunked\n\n", "set by snapcall"),
            (b"Connection: close\n\n", "set by snapcall"),
            (b"Date: yesterday\n\n", "set by snapcall"),
            (b"Status: 200\nStatus: 500\n\n", "Status given twice"),
            (b"Content-Type: a\nContent-Type: b\n\n", "Content-Type given twice"),
            (b"Status: 101 Switching Protocols\n\n", "from 200 to 599"),
            (b"Status: 99999\n\n", "from 200 to 599"),
            (b"Status: OK\n\n", "from 200 to 599"),
            (b"Status: 204\n\nbody", "no body"),
        ];
        for (out, why) in cases {
            let e = parse(out).expect_err(&String::from_utf8_lossy(out)).to_string();
            assert!(e.contains(why), "{:?}: {e}", String::from_utf8_lossy(out));
        }
        let mut huge = b"X-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        huge.extend_from_slice(b"\n\n");
        assert_eq!(parse(&huge), Err(HeadError::Unterminated));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\n")).collect::<String>() + "\n";
        assert_eq!(parse(many.as_bytes()), Err(HeadError::TooManyHeaders));
    }
}
