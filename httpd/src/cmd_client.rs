//! The commands that talk to a running `snapcall serve`: `invoke` (one call), `logs` (a
//! function's log lines, `--follow` to keep reading), `list` and `describe` (what is served,
//! from `/system/snapcall/functions`). A plain HTTP/1.1 client over one
//! TCP connection per request: the server is local or trusted, and this keeps the binary
//! free of an HTTP client dependency.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

/// Where the server is (`SNAPCALL_URL`, default the serve default).
#[derive(clap::Args, Clone)]
pub struct ServerArg {
    /// The server's address, host:port or http://host:port.
    #[arg(long, env = "SNAPCALL_URL", default_value = "127.0.0.1:8080")]
    server: String,
}

impl ServerArg {
    fn addr(&self) -> &str {
        self.server.trim_start_matches("http://").trim_end_matches('/')
    }
}

/// Arguments of `snapcall invoke`.
#[derive(clap::Args)]
pub struct InvokeArgs {
    /// The function's name (NAME or NAME.openfaas-fn), optionally with a sub-path: NAME/a/b.
    name: String,
    /// The request body: text, or @FILE to send a file's bytes (@- for stdin). None: empty.
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// A request header, `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// The method (default POST with a body, GET without).
    #[arg(short = 'X', long)]
    method: Option<String>,
    /// The query string (without `?`); spaces and other bytes a URL cannot hold are
    /// percent-encoded, the rest (`=`, `&`, `%XX`) sent as given.
    #[arg(long)]
    query: Option<String>,
    /// Print the status line and headers before the body (to stderr).
    #[arg(short = 'i', long)]
    include: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Arguments of `snapcall logs`.
#[derive(clap::Args)]
pub struct LogsArgs {
    /// The function's name.
    name: String,
    /// Only the last N calls.
    #[arg(long)]
    tail: Option<u64>,
    /// Only calls since this RFC 3339 time (2026-01-02T15:04:05Z).
    #[arg(long)]
    since: Option<String>,
    /// Keep reading: print each new call's line as it comes, until interrupted.
    #[arg(short, long)]
    follow: bool,
    /// Print the raw NDJSON messages (OpenFaaS's shape) instead of one line per call.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// A response as the client reads it.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Bytes that may go on a request line or in a header (no CR, LF or other controls).
fn clean(what: &str, s: &str) -> Result<(), String> {
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!("{what} may not hold control characters (CR, LF, ...): {s:?}"));
    }
    Ok(())
}

fn request(
    server: &ServerArg,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    clean("the method", method)?;
    clean("the path", target)?;
    let addr = server.addr();
    let mut stream = TcpStream::connect(addr)
        .map_err(|e| format!("cannot connect to {addr}: {e} (is snapcall serve running? --server / SNAPCALL_URL)"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        clean("a header", k)?;
        clean("a header", v)?;
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("reading the answer from {addr}: {e}"))?;
    let end =
        raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| format!("{addr} sent no complete HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status =
        head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| format!("{addr}: bad status line {head:?}"))?;
    let mut reply = Reply { status, head, body: raw[end + 4..].to_vec() };
    if let Some(len) = reply.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        reply.body.truncate(len);
    }
    Ok(reply)
}

/// `q` with the bytes a request target cannot carry (space, controls, `#`, non-ASCII)
/// percent-encoded; what the user encoded already is left alone.
fn encode_query(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    for b in q.bytes() {
        if b.is_ascii_graphic() && b != b'#' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fail(cmd: &str, message: &str) -> ExitCode {
    eprintln!("snapcall {cmd}: {message}");
    ExitCode::FAILURE
}

fn body_of(data: Option<&str>) -> Result<Vec<u8>, String> {
    match data {
        None => Ok(Vec::new()),
        Some("@-") => {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map_err(|e| format!("reading stdin: {e}"))?;
            Ok(b)
        }
        Some(d) => match d.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|e| format!("-d @{path}: {e}")),
            None => Ok(d.as_bytes().to_vec()),
        },
    }
}

pub fn invoke(args: InvokeArgs) -> ExitCode {
    let body = match body_of(args.data.as_deref()) {
        Ok(b) => b,
        Err(e) => return fail("invoke", &e),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        match h.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => headers.push((k.trim().to_owned(), v.trim().to_owned())),
            _ => return fail("invoke", &format!("-H wants `Name: value`, not {h:?}")),
        }
    }
    let method = args.method.clone().unwrap_or_else(|| if args.data.is_some() { "POST" } else { "GET" }.into());
    let mut target = format!("/function/{}", args.name.trim_start_matches('/'));
    if let Some(q) = &args.query {
        target.push('?');
        target.push_str(&encode_query(q.trim_start_matches('?')));
    }
    match request(&args.server, &method, &target, &headers, &body, Duration::from_secs(3600)) {
        Ok(reply) => {
            if args.include {
                eprintln!("{}", reply.head);
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&reply.body).and_then(|_| out.flush());
            if (200..300).contains(&reply.status) {
                ExitCode::SUCCESS
            } else {
                eprintln!("snapcall invoke: {} answered {}", args.name, reply.head.lines().next().unwrap_or(""));
                ExitCode::from(1)
            }
        }
        Err(e) => fail("invoke", &e),
    }
}

pub fn logs(args: LogsArgs) -> ExitCode {
    // format=json: one message per call, its JSON line (a deployed function's calls would
    // otherwise read as watchdog lines, system_logs.rs).
    let mut query = format!("name={}&format=json", args.name);
    if let Some(n) = args.tail {
        query.push_str(&format!("&tail={n}"));
    }
    if let Some(s) = &args.since {
        query.push_str(&format!("&since={}", s.replace('+', "%2B")));
    }
    let mut after: Option<u64> = None;
    loop {
        let q = match (args.follow, after) {
            (true, Some(seq)) => format!("name={}&format=json&follow=true&after={seq}", args.name),
            _ => query.clone(),
        };
        let reply = match request(&args.server, "GET", &format!("/system/logs?{q}"), &[], b"", Duration::from_secs(60))
        {
            Ok(r) => r,
            Err(e) => return fail("logs", &e),
        };
        if reply.status != 200 {
            return fail(
                "logs",
                &format!(
                    "{}: {}",
                    reply.head.lines().next().unwrap_or(""),
                    String::from_utf8_lossy(&reply.body).trim()
                ),
            );
        }
        for line in String::from_utf8_lossy(&reply.body).lines() {
            println!("{}", if args.json { line.to_owned() } else { human(line) });
        }
        if let Some(seq) = reply.header("x-snapcall-log-seq").and_then(|s| s.parse().ok()) {
            after = Some(seq);
        } else if after.is_none() {
            // No line yet: follow from the very first.
            after = None;
        }
        if !args.follow {
            return ExitCode::SUCCESS;
        }
        if after.is_none() {
            // Nothing logged yet: ask again shortly (a follow with no line to start from).
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `TIME CALL_ID STATUS DURATIONms` and then the call's stderr, indented.
fn human(message: &str) -> String {
    let Ok(m) = serde_json::from_str::<serde_json::Value>(message) else { return message.to_owned() };
    let Some(call) = m["text"].as_str().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()) else {
        return message.to_owned();
    };
    let mut out = format!(
        "{} {} {} {:.3}ms",
        call["time"].as_str().unwrap_or("-"),
        call["call_id"].as_str().unwrap_or("-"),
        call["status"],
        call["duration_ms"].as_f64().unwrap_or(0.0)
    );
    for l in call["stderr"].as_str().unwrap_or("").lines() {
        out.push_str("\n    ");
        out.push_str(l);
    }
    out
}

/// Arguments of `snapcall list`.
#[derive(clap::Args)]
pub struct ListArgs {
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// Arguments of `snapcall describe`.
#[derive(clap::Args)]
pub struct DescribeArgs {
    /// The function's name.
    name: String,
    /// Print the server's JSON instead of one field per line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// `GET /system/snapcall/functions[/NAME]` as JSON.
fn functions_json(cmd: &str, server: &ServerArg, name: Option<&str>) -> Result<serde_json::Value, ExitCode> {
    let target = match name {
        Some(n) => format!("/system/snapcall/functions/{n}"),
        None => "/system/snapcall/functions".to_owned(),
    };
    let reply = request(server, "GET", &target, &[], b"", Duration::from_secs(60)).map_err(|e| fail(cmd, &e))?;
    if reply.status != 200 {
        return Err(fail(
            cmd,
            &format!("{}: {}", reply.head.lines().next().unwrap_or(""), String::from_utf8_lossy(&reply.body).trim()),
        ));
    }
    serde_json::from_slice(&reply.body).map_err(|e| fail(cmd, &format!("the server's answer is not JSON: {e}")))
}

/// `yes`/`no` for a JSON boolean.
fn yes_no(v: &serde_json::Value) -> &'static str {
    if v.as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn errors_total(f: &serde_json::Value) -> u64 {
    f["calls"]["errors"].as_object().map(|m| m.values().filter_map(|v| v.as_u64()).sum()).unwrap_or(0)
}

/// `-` for a JSON null.
fn or_dash(v: &serde_json::Value) -> String {
    if v.is_null() {
        "-".into()
    } else {
        v.to_string()
    }
}

pub fn list(args: ListArgs) -> ExitCode {
    let all = match functions_json("list", &args.server, None) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if args.json {
        println!("{all}");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<7} {:>7} {:>8} {:>9} {:>5} {:>6} {:>6} {:>7} {:>7}",
        "NAME", "RUNNER", "MEMORY", "TIMEOUT", "SNAPSHOT", "READY", "HITS", "MISSES", "CALLS", "ERRORS"
    );
    for f in all.as_array().into_iter().flatten() {
        let snapshot = match (f["snapshot"]["present"].as_bool(), f["snapshot"]["verified"].as_bool()) {
            (_, Some(true)) => "verified",
            (Some(true), _) => "unused",
            _ => "none",
        };
        println!(
            "{:<24} {:<7} {:>5}Mi {:>6}ms {:>9} {:>5} {:>6} {:>6} {:>7} {:>7}",
            f["name"].as_str().unwrap_or("?"),
            f["runner"].as_str().unwrap_or("?"),
            f["limits"]["memory_mib"].to_string(),
            f["limits"]["timeout_ms"].to_string(),
            snapshot,
            or_dash(&f["pool"]["ready"]),
            or_dash(&f["pool"]["hits"]),
            or_dash(&f["pool"]["misses"]),
            f["calls"]["total"].to_string(),
            errors_total(f)
        );
    }
    ExitCode::SUCCESS
}

pub fn describe(args: DescribeArgs) -> ExitCode {
    let f = match functions_json("describe", &args.server, Some(&args.name)) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if args.json {
        println!("{f}");
        return ExitCode::SUCCESS;
    }
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
    let routes: Vec<String> = f["routes"].as_array().into_iter().flatten().map(text).collect();
    println!("name:         {}", text(&f["name"]));
    println!("routes:       {}", routes.join("  "));
    println!("runner:       {}", text(&f["runner"]));
    println!("bundle:       {}", text(&f["bundle"]));
    println!("program:      {}", text(&f["program"]));
    println!(
        "limits:       memory {} MiB, timeout {} ms, output {} bytes",
        f["limits"]["memory_mib"], f["limits"]["timeout_ms"], f["limits"]["max_output_bytes"]
    );
    println!("response:     {} ({})", text(&f["response"]), text(&f["content_type"]));
    println!(
        "snapshot:     present {}, verified {}{}",
        yes_no(&f["snapshot"]["present"]),
        yes_no(&f["snapshot"]["verified"]),
        f["snapshot"]["bytes"].as_u64().map(|b| format!(", {} KiB", b / 1024)).unwrap_or_default()
    );
    let p = &f["pool"];
    if p.is_null() {
        println!("pool:         none (every call creates its VM)");
    } else {
        println!(
            "pool:         {} ready of {}, {} hits ({} waited for the VM being made), {} misses{}",
            p["ready"],
            p["target"],
            p["hits"],
            or_dash(&p["waited"]),
            p["misses"],
            if p["idle"].as_bool() == Some(true) { ", idle" } else { "" }
        );
    }
    let errors: Vec<String> = f["calls"]["errors"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "calls:        {} total, {} in flight, errors: {}",
        f["calls"]["total"],
        f["calls"]["in_flight"],
        if errors.is_empty() { "none".to_owned() } else { errors.join(", ") }
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_encoded_where_they_must_be() {
        assert_eq!(super::encode_query("a=1&b=x%20y"), "a=1&b=x%20y");
        assert_eq!(super::encode_query("title=Big News#1 é"), "title=Big%20News%231%20%C3%A9");
    }
}
