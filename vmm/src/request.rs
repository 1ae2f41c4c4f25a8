//! The HTTP request head a call was made with, and the per-call file that hands it to the
//! program.
//!
//! A function's environment is frozen at its snapshot, so what changes per call cannot be
//! in it. The body is the program's stdin; the rest of the request (method, the path after
//! the function's name, query string, headers) is the read-only file [`REQUEST_FILE`], which
//! the monitor makes for the call when the program first opens it (a program that never
//! opens it costs nothing). Its format (documented in docs/functions.md) is one field per
//! line, `\n`-terminated, in this order:
//!
//! ```text
//! method GET
//! path /sub/path
//! query a=1&b=two
//! header content-type: text/plain
//! header x-trace: abc
//! ```
//!
//! `method`, `path` and `query` always come, once each (`query` may be empty: `query ` then
//! ends the line); then one `header` line per header as the client sent it, names in lower
//! case, in the client's order, repeats kept. No value can hold a line break: the HTTP parser
//! refuses CR and LF inside a request line or header, and [`RequestHead::to_file`] replaces
//! any that a library user smuggled in with a space.

/// Where the program finds its request head ([`RequestHead::to_file`]).
pub const REQUEST_FILE: &str = "/run/snapcall/request";

/// The request a call answers, without its body. httpd fills it once per request (moving the
/// parsed values in, no copy); the monitor writes it into [`REQUEST_FILE`] only if the
/// program opens that file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// As the client sent it (`GET`, `POST`, `PATCH`, ...).
    pub method: String,
    /// The path after the function's name, always starting with `/` (`/` when there is none),
    /// percent-encoding as sent: `/function/NAME/a/b` gives `/a/b`.
    pub path: String,
    /// The query string without the `?` (empty when there is none), as sent.
    pub query: String,
    /// Every header in the client's order, `(name in lower case, value trimmed)`.
    pub headers: Vec<(String, String)>,
}

impl Default for RequestHead {
    /// What a call made without HTTP (`snapcall run`, the library API) reports: `POST /`.
    fn default() -> Self {
        RequestHead { method: "POST".into(), path: "/".into(), query: String::new(), headers: Vec::new() }
    }
}

impl RequestHead {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The contents of [`REQUEST_FILE`] for this request (format in the module docs).
    pub fn to_file(&self) -> Vec<u8> {
        let size = 32
            + self.method.len()
            + self.path.len()
            + self.query.len()
            + self.headers.iter().map(|(n, v)| n.len() + v.len() + 10).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        line(&mut out, "method ", &self.method, "");
        line(&mut out, "path ", &self.path, "");
        line(&mut out, "query ", &self.query, "");
        for (name, value) in &self.headers {
            line(&mut out, "header ", name, ": ");
            push_clean(&mut out, value);
            out.push(b'\n');
        }
        out
    }
}

impl RequestHead {
    /// The request as the OpenFaaS watchdog puts it into a function's environment
    /// (`Http_Method`, `Http_Path`, `Http_Query` when there is one, and `Http_<Header_Name>` for
    /// every header, its canonical name's `-` as `_`, the first value kept), for functions
    /// that start cold per call (see [`crate::BundleConfig::watchdog`]). NUL bytes, which no
    /// environment entry can hold, are dropped.
    pub fn watchdog_env(&self) -> Vec<String> {
        let clean = |s: &str| s.replace('\0', "");
        let mut env = Vec::with_capacity(self.headers.len() + 3);
        env.push(format!("Http_Method={}", clean(&self.method)));
        env.push(format!("Http_Path={}", clean(&self.path)));
        if !self.query.is_empty() {
            env.push(format!("Http_Query={}", clean(&self.query)));
        }
        for (name, value) in &self.headers {
            let key = format!("Http_{}", canonical(name).replace('-', "_"));
            if env.iter().any(|e| e.split('=').next() == Some(key.as_str())) {
                continue;
            }
            env.push(format!("{key}={}", clean(value)));
        }
        env
    }
}

/// Go's canonical header name: `content-type` is `Content-Type`.
fn canonical(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .filter(|&c| c != '=' && c != '\0')
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// `key` + `value` (+ `sep`, no newline if `sep` is non-empty), line breaks replaced.
fn line(out: &mut Vec<u8>, key: &str, value: &str, sep: &str) {
    out.extend_from_slice(key.as_bytes());
    push_clean(out, value);
    if sep.is_empty() {
        out.push(b'\n');
    } else {
        out.extend_from_slice(sep.as_bytes());
    }
}

fn push_clean(out: &mut Vec<u8>, value: &str) {
    out.extend(value.bytes().map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_format_is_one_field_per_line() {
        let head = RequestHead {
            method: "PATCH".into(),
            path: "/a/b".into(),
            query: "x=1&y=%20".into(),
            headers: vec![("content-type".into(), "text/plain".into()), ("x-a".into(), "1".into())],
        };
        assert_eq!(
            String::from_utf8(head.to_file()).unwrap(),
            "method PATCH\npath /a/b\nquery x=1&y=%20\nheader content-type: text/plain\nheader x-a: 1\n"
        );
        assert_eq!(head.header("Content-Type"), Some("text/plain"));
        assert_eq!(head.header("accept"), None);
    }

    #[test]
    fn watchdog_env_is_what_the_openfaas_watchdog_sets() {
        let head = RequestHead {
            method: "PUT".into(),
            path: "/sub".into(),
            query: "testing=1".into(),
            headers: vec![
                ("content-type".into(), "text/plain".into()),
                ("x-call-id".into(), "abc".into()),
                ("x-call-id".into(), "second".into()),
                ("we=ird\0".into(), "v\0w".into()),
            ],
        };
        assert_eq!(
            head.watchdog_env(),
            [
                "Http_Method=PUT",
                "Http_Path=/sub",
                "Http_Query=testing=1",
                "Http_Content_Type=text/plain",
                "Http_X_Call_Id=abc",
                "Http_Weird=vw"
            ]
        );
        assert!(!RequestHead::default().watchdog_env().iter().any(|e| e.starts_with("Http_Query")));
    }

    #[test]
    fn default_is_post_slash_and_line_breaks_cannot_forge_fields() {
        assert_eq!(String::from_utf8(RequestHead::default().to_file()).unwrap(), "method POST\npath /\nquery \n");
        let forged = RequestHead {
            query: "a\nheader x-admin: yes".into(),
            headers: vec![("x\r\nmethod".into(), "v\nw".into())],
            ..RequestHead::default()
        };
        let text = String::from_utf8(forged.to_file()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains("query a header x-admin: yes\n"), "{text}");
    }
}
