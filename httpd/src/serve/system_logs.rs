//! `GET /system/logs?name=NAME[&tail=N][&since=RFC3339][&instance=CALL_ID][&follow=true]`:
//! a function's log lines ([`super::logs`]) as NDJSON in the shape of OpenFaaS's
//! faas-provider `logs.Message`:
//!
//! ```text
//! {"name":"echo-c","namespace":"openfaas-fn","instance":"<call id>","timestamp":"<RFC 3339>","text":"<the call's JSON line>"}
//! ```
//!
//! Every call runs in its own VM, so the call is the instance. Its text is one of two views
//! (`format=`, else by the function):
//!
//! - `json` (plain bundles): one message per call, its JSON line ([`super::logs`]): status,
//!   duration, bytes, stderr; what `snapcall logs` reads (it asks for it).
//! - `watchdog` (functions deployed through the provider, `snapcall.watchdog: true`): the
//!   lines OpenFaaS's classic watchdog writes to its container's log, one message each:
//!   `Forking fprocess.`, the call's stderr line by line, `Wrote N Bytes - Duration: S
//!   seconds - Status: S`. OpenFaaS's tools read a function's log as such lines (the
//!   certifier's `Test_FunctionLogs` looks for the first and the last).
//!
//! `tail` <= 0 means every message kept, else the last `tail` messages; `since` keeps calls
//! answered at or after it. With
//! `follow=true` and nothing to send yet, the answer waits (on a worker thread, never on an
//! event loop) up to [`FOLLOW_WAIT`] for the next line: a long poll. `snapcall logs --follow`
//! repeats it with `after=<last seq>`; a streaming (chunked, never-ending) answer is not
//! implemented, so OpenFaaS's `faas-cli logs` gets one batch per request.

use std::time::{Duration, Instant, SystemTime};

use super::http::{json_string, Response};
use super::logs::Logs;
use super::routes::NAMESPACE;
use httpd::date;

/// Longest a `follow` request waits for a new line before answering with none.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(25);

/// A parsed, checked `/system/logs` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub name: String,
    pub tail: Option<usize>,
    pub since: Option<std::time::SystemTime>,
    pub instance: Option<String>,
    pub follow: bool,
    /// Lines after this sequence number only (`snapcall logs --follow` passes the last seen).
    pub after: Option<u64>,
    /// The view asked for; `None`: each call's function's own.
    pub format: Option<LogFormat>,
}

/// How a call's line reads (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Watchdog,
}

impl LogQuery {
    /// Parses the query string; the error says which parameter is wrong.
    pub fn parse(query: &str) -> Result<LogQuery, String> {
        let mut q = LogQuery {
            name: String::new(),
            tail: None,
            since: None,
            instance: None,
            follow: false,
            after: None,
            format: None,
        };
        for (key, value) in params(query) {
            match key.as_str() {
                // `NAME.openfaas-fn` is NAME, as on the function routes.
                "name" => {
                    q.name = match value.strip_suffix(NAMESPACE).and_then(|n| n.strip_suffix('.')) {
                        Some(plain) if !plain.is_empty() => plain.to_owned(),
                        _ => value,
                    }
                }
                "namespace" if value.is_empty() || value == NAMESPACE => {}
                "namespace" => return Err(format!("namespace {value:?} is not served here (only {NAMESPACE})")),
                "tail" => {
                    let n: i64 = value.parse().map_err(|_| format!("tail must be a whole number, not {value:?}"))?;
                    q.tail = usize::try_from(n).ok().filter(|&n| n > 0);
                }
                "since" => {
                    q.since = Some(date::parse_rfc3339(&value).ok_or_else(|| {
                        format!("since must be an RFC 3339 time like 2026-01-02T15:04:05Z, not {value:?}")
                    })?)
                }
                "instance" => q.instance = Some(value).filter(|v| !v.is_empty()),
                "follow" => {
                    q.follow = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" | "" => false,
                        _ => return Err(format!("follow must be true or false, not {value:?}")),
                    }
                }
                "format" => {
                    q.format = match value.as_str() {
                        "json" => Some(LogFormat::Json),
                        "watchdog" => Some(LogFormat::Watchdog),
                        "" => None,
                        _ => return Err(format!("format must be json or watchdog, not {value:?}")),
                    }
                }
                "after" => {
                    q.after = Some(value.parse().map_err(|_| format!("after must be a line number, not {value:?}"))?)
                }
                _ => {}
            }
        }
        if q.name.is_empty() {
            return Err("name is required: /system/logs?name=FUNCTION".into());
        }
        Ok(q)
    }
}

/// Whether a request for this query may block (and so must run on a worker).
pub fn blocks(query: &str) -> bool {
    LogQuery::parse(query).is_ok_and(|q| q.follow)
}

/// The answer to `/system/logs?query`. `served` says whether a function of that name is served.
pub fn answer(logs: &Logs, query: &str, served: impl Fn(&str) -> bool) -> Response {
    let q = match LogQuery::parse(query) {
        Ok(q) => q,
        Err(why) => return Response::json_error(400, "bad_request", &why),
    };
    let ring = match logs.existing(&q.name) {
        Some(ring) => ring,
        None if served(&q.name) => logs.ring(&q.name),
        None => return Response::json_error(404, "not_found", &format!("no function named {}", q.name)),
    };
    // `tail` counts messages; each call makes at least one, so its last `tail` calls hold them.
    let mut lines = ring.read(q.after, q.since, q.tail);
    if q.follow && lines.is_empty() {
        let after = q.after.or_else(|| ring.read(None, None, Some(1)).first().map(|l| l.seq));
        ring.wait_for_more(after, Instant::now() + FOLLOW_WAIT);
        lines = ring.read(after, q.since, q.tail);
    }
    let mut messages: Vec<(&str, SystemTime, String)> = Vec::new();
    for line in lines.iter().filter(|l| q.instance.as_ref().is_none_or(|i| *i == l.call_id)) {
        let watchdog = q.format.map_or(line.watchdog, |f| f == LogFormat::Watchdog);
        if watchdog {
            messages.extend(line.watchdog_lines().into_iter().map(|(t, text)| (line.call_id.as_str(), t, text)));
        } else {
            messages.push((&line.call_id, line.time, line.json(&q.name)));
        }
    }
    if let Some(n) = q.tail {
        messages.drain(..messages.len().saturating_sub(n));
    }
    let mut body = String::new();
    for (instance, time, text) in &messages {
        body.push_str(&format!(
            "{{\"name\":{},\"namespace\":\"{NAMESPACE}\",\"instance\":{},\"timestamp\":\"{}\",\"text\":{}}}\n",
            json_string(&q.name),
            json_string(instance),
            date::rfc3339_nanos(*time),
            json_string(text),
        ));
    }
    let mut resp = Response::new(200, "application/x-ndjson", body.into_bytes());
    if let Some(last) = lines.last() {
        // Where `snapcall logs --follow` picks up.
        resp.headers.push(format!("X-Snapcall-Log-Seq: {}", last.seq));
    }
    resp
}

/// `a=1&b=%20x+y` as decoded pairs (`+` is a space, as in HTML forms).
pub fn params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::super::logs::{CallRecord, LogConfig};
    use super::*;

    #[test]
    fn query_parsing() {
        let q = LogQuery::parse("name=echo-c&tail=5&since=2026-01-02T15%3A04%3A05%2B01%3A00&follow=true").unwrap();
        assert_eq!((q.name.as_str(), q.tail, q.follow), ("echo-c", Some(5), true));
        assert_eq!(q.since, date::parse_rfc3339("2026-01-02T14:04:05Z"));
        assert_eq!(LogQuery::parse("name=f&tail=-1").unwrap().tail, None, "<= 0 is every line");
        assert_eq!(LogQuery::parse("name=f&namespace=openfaas-fn").unwrap().name, "f");
        assert_eq!(LogQuery::parse("name=f.openfaas-fn").unwrap().name, "f");
        for (bad, why) in [
            ("tail=3", "name is required"),
            ("name=f&tail=x", "tail must be"),
            ("name=f&since=yesterday", "since must be"),
            ("name=f&follow=maybe", "follow must be"),
            ("name=f&namespace=other", "not served"),
            ("name=f&format=text", "format must be"),
        ] {
            assert!(LogQuery::parse(bad).unwrap_err().contains(why), "{bad}");
        }
        assert_eq!(
            params("a=%41%zz%4&b=x+y"),
            [("a".to_owned(), "A%zz%4".to_owned()), ("b".to_owned(), "x y".to_owned())]
        );
    }

    #[test]
    fn answers_in_openfaas_message_shape() {
        let logs = Logs::new(LogConfig::default());
        let ring = logs.ring("f");
        for id in ["c1", "c2", "c3"] {
            ring.push(
                &logs.config,
                &CallRecord {
                    call_id: id,
                    function: "f",
                    status: 200,
                    duration: Duration::ZERO,
                    written: 2,
                    stderr: b"hi\n",
                    watchdog: false,
                },
            );
        }
        let resp = answer(&logs, "name=f&tail=2", |_| true);
        assert_eq!((resp.status, resp.content_type.as_str()), (200, "application/x-ndjson"));
        let text = String::from_utf8(resp.body).unwrap();
        let msgs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["name"], "f");
        assert_eq!(msgs[0]["namespace"], "openfaas-fn");
        assert_eq!(msgs[0]["instance"], "c2");
        assert!(date::parse_rfc3339(msgs[0]["timestamp"].as_str().unwrap()).is_some());
        let inner: serde_json::Value = serde_json::from_str(msgs[1]["text"].as_str().unwrap()).unwrap();
        assert_eq!((inner["call_id"].as_str(), inner["stderr"].as_str()), (Some("c3"), Some("hi\n")));
        assert_eq!(answer(&logs, "name=f&instance=c1", |_| true).body.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(answer(&logs, "name=nope", |_| false).status, 404);
        assert_eq!(
            answer(&logs, "name=quiet", |n| n == "quiet").body,
            b"",
            "a served function without calls: no lines"
        );
        assert_eq!(answer(&logs, "tail=1", |_| true).status, 400);
    }

    fn texts(resp: Response) -> Vec<(String, String)> {
        String::from_utf8(resp.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|m| (m["instance"].as_str().unwrap().to_owned(), m["text"].as_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn a_watchdog_functions_calls_read_as_watchdog_lines_unless_json_is_asked() {
        let logs = Logs::new(LogConfig::default());
        let ring = logs.ring("w");
        for id in ["c1", "c2"] {
            let call = CallRecord {
                call_id: id,
                function: "w",
                status: 200,
                duration: Duration::from_millis(2),
                written: 11,
                stderr: b"warn\n",
                watchdog: true,
            };
            ring.push(&logs.config, &call);
        }
        let got = texts(answer(&logs, "name=w", |_| true));
        let wrote = "Wrote 11 Bytes - Duration: 0.002000 seconds - Status: 200";
        let want: Vec<(String, String)> = ["c1", "c2"]
            .iter()
            .flat_map(|id| ["Forking fprocess.", "warn", wrote].map(|t| (id.to_string(), t.to_string())))
            .collect();
        assert_eq!(got, want);
        // tail counts messages; instance keeps one call's.
        assert_eq!(texts(answer(&logs, "name=w&tail=2", |_| true)), want[4..]);
        assert_eq!(texts(answer(&logs, "name=w&instance=c1", |_| true)), want[..3]);
        // format=json: one message per call, its JSON line (what `snapcall logs` reads).
        let json = texts(answer(&logs, "name=w&format=json", |_| true));
        assert_eq!(json.len(), 2);
        let inner: serde_json::Value = serde_json::from_str(&json[1].1).unwrap();
        assert_eq!((inner["call_id"].as_str(), inner["bytes"].as_u64()), (Some("c2"), Some(11)));
        // And a plain bundle's call reads as watchdog lines when asked.
        let call = CallRecord {
            call_id: "p1",
            function: "p",
            status: 200,
            duration: Duration::from_millis(2),
            written: 11,
            stderr: b"",
            watchdog: false,
        };
        logs.ring("p").push(&logs.config, &call);
        assert!(texts(answer(&logs, "name=p", |_| true))[0].1.starts_with('{'));
        let plain = texts(answer(&logs, "name=p&format=watchdog", |_| true));
        assert_eq!(plain.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(), ["Forking fprocess.", wrote]);
    }
}
