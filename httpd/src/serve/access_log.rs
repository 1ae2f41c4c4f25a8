//! The access log: one line per answered request, written by a thread of its own so a slow
//! disk or a full pipe never delays a response (`--access-log stderr|off|PATH`).
//!
//! `2026-12-01T11:20:00.123456789Z POST /function/echo-c 200 5 1.234ms`: time, method,
//! path (no query: it may carry secrets), status, body bytes, total server time.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::http::{Head, Response};

/// Bytes of lines waiting for the writer at most; past it lines are dropped and counted, never
/// waited for.
const QUEUE_BYTES: usize = 1 << 20;

/// How often the writer wakes to write what was queued. A line is not handed over with a
/// wake-up: waking another thread per request (a futex wake, an IPI to its core) cost ≈3 % of
/// an echo-c call's host CPU under load, about as much as the rest of the access log.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

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

/// What the loops and the writer share.
struct Queue {
    lines: Mutex<Vec<u8>>,
    /// Rung only to stop the writer (which otherwise wakes every [`FLUSH_EVERY`]).
    stop: Condvar,
    stopping: AtomicBool,
}

/// The loops' end of the log; dropping it writes what is queued and stops the writer.
pub struct AccessLog {
    queue: Arc<Queue>,
    writer: Option<std::thread::JoinHandle<()>>,
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
        let queue = Arc::new(Queue {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            stop: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let shared = queue.clone();
        let writer = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            let mut spare = Vec::with_capacity(64 * 1024);
            loop {
                let mut lines = shared.lines.lock().unwrap_or_else(|e| e.into_inner());
                if !shared.stopping.load(Ordering::Relaxed) {
                    lines = shared.stop.wait_timeout(lines, FLUSH_EVERY).unwrap_or_else(|e| e.into_inner()).0;
                }
                // Read before taking the lines: stopping set while this batch is written (a
                // slow reader) must not end the writer before what was queued meanwhile.
                let last = shared.stopping.load(Ordering::Relaxed);
                // Everything queued goes out in one write, outside the lock.
                std::mem::swap(&mut *lines, &mut spare);
                drop(lines);
                if !spare.is_empty() {
                    let _ = out.write_all(&spare).and_then(|_| out.flush());
                    spare.clear();
                }
                if last {
                    return;
                }
            }
        })?;
        Ok(Some(AccessLog { queue, writer: Some(writer), dropped: AtomicU64::new(0) }))
    }

    /// Queues the line for one answered request (the writer picks it up within [`FLUSH_EVERY`]).
    pub fn record(&self, head: &Head, resp: &Response) {
        let line = format_line(std::time::SystemTime::now(), head, resp);
        let mut lines = self.queue.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() + line.len() > QUEUE_BYTES {
            drop(lines);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        lines.extend_from_slice(line.as_bytes());
    }

    /// Lines dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.queue.stopping.store(true, Ordering::Relaxed);
        self.queue.stop.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
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

    fn head(method: Method, path: &str) -> Head {
        Head {
            method,
            path: path.into(),
            query: String::new(),
            headers: Vec::new(),
            http11: true,
            keep_alive: true,
            expect_continue: false,
            framing: Framing::None,
        }
    }

    #[test]
    fn line_format() {
        let head = head(Method::Post, "/function/echo-c");
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

    #[test]
    fn lines_reach_the_file_within_a_flush_and_all_of_them_on_drop() {
        let path = std::env::temp_dir().join(format!("snapcall-access-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::start(&Destination::File(path.clone())).unwrap().unwrap();
        let head = head(Method::Get, "/healthz");
        let resp = Response::new(200, "text/plain", b"ok".to_vec());
        log.record(&head, &resp);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&path).unwrap_or_default().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..999 {
            log.record(&head, &resp);
        }
        drop(log);
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(written.lines().filter(|l| l.ends_with(" GET /healthz 200 2 -")).count(), 1000, "{written}");
        std::fs::remove_file(&path).unwrap();
    }

    /// A writer stuck on a full pipe: lines queue up to [`QUEUE_BYTES`], the rest are dropped
    /// and counted (never waited for), and once the pipe drains every line not dropped
    /// arrives.
    #[test]
    fn a_stuck_writer_makes_lines_drop_and_count_never_wait() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("snapcall-access-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path; checked.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // The read end first (non-blocking, so the open returns), then nobody reads.
        let mut reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap();
        let log = AccessLog::start(&Destination::File(path.clone())).unwrap().unwrap();
        let head = head(Method::Get, "/healthz");
        let resp = Response::new(200, "text/plain", b"ok".to_vec());
        // More than the pipe holds, and time for the writer to take it: it is then stuck in
        // that write while the lines below queue up behind it (so stopping finds both).
        let mut recorded = 0u64;
        while recorded < 4000 {
            log.record(&head, &resp);
            recorded += 1;
        }
        std::thread::sleep(FLUSH_EVERY * 3);
        while log.dropped() == 0 && recorded < 1_000_000 {
            log.record(&head, &resp);
            recorded += 1;
        }
        let dropped = log.dropped();
        assert!(dropped > 0, "a writer stuck on a full pipe never made a line drop");
        // Drain the pipe while the log stops: it writes what it kept, then closes.
        let drain = std::thread::spawn(move || {
            let (mut text, mut buf) = (Vec::new(), [0u8; 65536]);
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => return text,
                    Ok(n) => text.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(e) => panic!("reading the fifo: {e}"),
                }
            }
        });
        drop(log);
        let text = drain.join().unwrap();
        let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count() as u64;
        assert_eq!(lines, recorded - dropped, "{recorded} recorded, {dropped} dropped");
        std::fs::remove_file(&path).unwrap();
    }
}
