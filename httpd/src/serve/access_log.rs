//! The access log: one line per answered request, written by a thread of its own so a slow
//! disk or a full pipe never delays a response (`--access-log stderr|off|PATH`).
//!
//! `2026-12-01T11:20:00.123456789Z POST /function/echo-c 200 5 1.234ms`: time, method,
//! path (no query: it may carry secrets), status, body bytes, total server time.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

use super::http::{Head, Response};

/// Lines queued for the writer at most; past it lines are dropped and counted, never waited for.
const QUEUE: usize = 8192;

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Off,
    Stderr,
    File(std::path::PathBuf),
}

impl std::str::FromStr for Destination {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "off" => Destination::Off,
            "stderr" | "-" => Destination::Stderr,
            "" => return Err("give off, stderr or a file path".into()),
            path => Destination::File(path.into()),
        })
    }
}

/// The writer's end.
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread; `None` for [`Destination::Off`].
    pub fn start(dest: &Destination) -> std::io::Result<Option<AccessLog>> {
        let mut out: Box<dyn Write + Send> = match dest {
            Destination::Off => return Ok(None),
            Destination::Stderr => Box::new(std::io::stderr()),
            Destination::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut buf = Vec::with_capacity(64 * 1024);
            while let Ok(line) = rx.recv() {
                buf.extend_from_slice(line.as_bytes());
                // Everything already queued goes out in the same write.
                while let Ok(more) = rx.try_recv() {
                    buf.extend_from_slice(more.as_bytes());
                    if buf.len() > 60 * 1024 {
                        break;
                    }
                }
                let _ = out.write_all(&buf).and_then(|_| out.flush());
                buf.clear();
            }
        })?;
        Ok(Some(AccessLog { tx, dropped: AtomicU64::new(0) }))
    }

    /// Queues the line for one answered request.
    pub fn record(&self, head: &Head, resp: &Response) {
        let line = format_line(std::time::SystemTime::now(), head, resp);
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One access-log line (with its newline).
pub fn format_line(now: std::time::SystemTime, head: &Head, resp: &Response) -> String {
    let total = resp
        .server_timing
        .split(',')
        .find_map(|p| p.trim().strip_prefix("total;dur="))
        .map(|ms| format!("{ms}ms"))
        .unwrap_or_else(|| "-".into());
    let method = if head.path.is_empty() { "-" } else { head.method.as_str() };
    let path = if head.path.is_empty() { "-" } else { head.path.as_str() };
    format!("{} {method} {path} {} {} {total}\n", httpd::date::rfc3339_nanos(now), resp.status, resp.body.len())
}

#[cfg(test)]
mod tests {
    use super::super::http::{Framing, Method};
    use super::*;

    #[test]
    fn line_format() {
        let head = Head {
            method: Method::Post,
            path: "/function/echo-c".into(),
            query: String::new(),
            headers: Vec::new(),
            http11: true,
            keep_alive: true,
            expect_continue: false,
            framing: Framing::None,
        };
        let mut resp = Response::new(200, "text/plain", b"hello".to_vec());
        resp.server_timing = "queue;dur=0.010, run;dur=1.000, total;dur=1.234".into();
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_764_588_000);
        assert_eq!(
            format_line(t, &head, &resp),
            "2025-12-01T11:20:00.000000000Z POST /function/echo-c 200 5 1.234ms\n"
        );
        assert_eq!("off".parse::<Destination>(), Ok(Destination::Off));
        assert_eq!("/tmp/x.log".parse::<Destination>(), Ok(Destination::File("/tmp/x.log".into())));
    }
}
