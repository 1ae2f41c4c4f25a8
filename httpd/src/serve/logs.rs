//! Function logs: every call's stderr (successful calls too), one JSON line per call, in a
//! bounded ring per function; read back by `GET /system/logs` ([`super::system_logs`]).
//!
//! A call's line, as JSON, is `{"call_id":..,"time":..,"function":..,"status":200,
//! "duration_ms":1.234,"bytes":11,"stderr":".."}` (`bytes`: the response body's length). A
//! ring holds at most [`LogConfig::ring_bytes`] of lines, counted as that JSON (the oldest go
//! first); one call's stderr is cut to its last [`LogConfig::max_stderr_bytes`], so a
//! program printing without end costs the host a bounded amount of memory whatever it does.
//! The line keeps the call's fields, not the text: `/system/logs` renders it as that JSON
//! or as the lines an OpenFaaS watchdog would have logged ([`LogLine::watchdog_lines`]).

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::http::json_string;

/// How much each ring keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Most bytes of lines one function's ring holds (`--log-ring-bytes`).
    pub ring_bytes: usize,
    /// Most bytes of one call's stderr kept (its tail).
    pub max_stderr_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { ring_bytes: 1 << 20, max_stderr_bytes: 64 << 10 }
    }
}

/// One call's line.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Increases by one per line of a ring: `follow` waits for a number past the last seen.
    pub seq: u64,
    pub call_id: String,
    /// When the call was answered.
    pub time: SystemTime,
    pub status: u16,
    pub duration: Duration,
    /// The response body's length.
    pub written: usize,
    /// The tail of the call's stderr (invalid UTF-8 replaced).
    pub stderr: String,
    /// Whether the function asked for watchdog behaviours (`snapcall.watchdog`): its calls
    /// are shown as a watchdog logs them unless the reader asks otherwise.
    pub watchdog: bool,
    /// The length of [`LogLine::json`], which the ring's bound counts.
    size: usize,
}

impl LogLine {
    /// The call as one JSON object (no newline); `function` is its ring's (a line does not
    /// keep the name: every line of a ring has the same).
    pub fn json(&self, function: &str) -> String {
        let mut json = String::with_capacity(160 + self.stderr.len());
        let _ = write!(
            json,
            "{{\"call_id\":{},\"time\":\"{}\",\"function\":{},\"status\":{},\"duration_ms\":{:.3},\"bytes\":{},\"stderr\":{}}}",
            json_string(&self.call_id),
            httpd::date::rfc3339_nanos(self.time),
            json_string(function),
            self.status,
            self.duration.as_secs_f64() * 1e3,
            self.written,
            json_string(&self.stderr),
        );
        json
    }

    /// The call as the lines OpenFaaS's classic watchdog logs for it, each with its time:
    /// `Forking fprocess.` when it started, every line of its stderr, and
    /// `Wrote N Bytes - Duration: S seconds` (then ` - Status: S`) when it was answered.
    /// OpenFaaS tools (faas-cli logs, the certifier) read a function's log as these lines.
    pub fn watchdog_lines(&self) -> Vec<(SystemTime, String)> {
        let started = self.time.checked_sub(self.duration).unwrap_or(self.time);
        let mut out = vec![(started, "Forking fprocess.".to_owned())];
        out.extend(self.stderr.lines().map(|l| (self.time, l.to_owned())));
        out.push((
            self.time,
            format!(
                "Wrote {} Bytes - Duration: {:.6} seconds - Status: {}",
                self.written,
                self.duration.as_secs_f64(),
                self.status
            ),
        ));
        out
    }
}

/// One function's ring.
#[derive(Default)]
pub struct LogRing {
    lines: Mutex<Ring>,
    grew: Condvar,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
    next_seq: u64,
}

/// What one call leaves in its function's ring.
pub struct CallRecord<'a> {
    pub call_id: &'a str,
    pub function: &'a str,
    pub status: u16,
    pub duration: Duration,
    /// The response body's length.
    pub written: usize,
    pub stderr: &'a [u8],
    /// The function's `snapcall.watchdog`.
    pub watchdog: bool,
}

impl LogRing {
    /// Appends one call's line, dropping the oldest lines over `cfg.ring_bytes`.
    pub fn push(&self, cfg: &LogConfig, call: &CallRecord<'_>) {
        let stderr = &call.stderr[call.stderr.len().saturating_sub(cfg.max_stderr_bytes)..];
        let mut line = LogLine {
            seq: 0,
            call_id: call.call_id.to_owned(),
            time: SystemTime::now(),
            status: call.status,
            duration: call.duration,
            written: call.written,
            stderr: String::from_utf8_lossy(stderr).into_owned(),
            watchdog: call.watchdog,
            size: 0,
        };
        line.size = line.json(call.function).len();
        let mut ring = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let seq = ring.next_seq;
        ring.next_seq += 1;
        line.seq = seq;
        ring.bytes += line.size;
        ring.lines.push_back(Arc::new(line));
        while ring.bytes > cfg.ring_bytes && ring.lines.len() > 1 {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.size;
            }
        }
        drop(ring);
        self.grew.notify_all();
    }

    /// The lines after `after_seq` (all if `None`) written at or after `since`, the last
    /// `tail` of them (all if `None`).
    pub fn read(&self, after_seq: Option<u64>, since: Option<SystemTime>, tail: Option<usize>) -> Vec<Arc<LogLine>> {
        let ring = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<_> = ring
            .lines
            .iter()
            .filter(|l| after_seq.is_none_or(|s| l.seq > s) && since.is_none_or(|t| l.time >= t))
            .cloned()
            .collect();
        if let Some(n) = tail {
            out.drain(..out.len().saturating_sub(n));
        }
        out
    }

    /// Waits until a line after `after_seq` exists or `until` passes.
    pub fn wait_for_more(&self, after_seq: Option<u64>, until: Instant) {
        let mut ring = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let newest = ring.next_seq.checked_sub(1);
            if newest.is_some() && (after_seq.is_none() || newest > after_seq) {
                return;
            }
            let Some(left) = until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else { return };
            ring = self.grew.wait_timeout(ring, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Bytes of lines held (for tests of the bound).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// Every function's ring, kept across reloads of its bundle (a ring outlives its function
/// only in memory already bounded per name).
#[derive(Default)]
pub struct Logs {
    pub config: LogConfig,
    rings: RwLock<HashMap<String, Arc<LogRing>>>,
    next_call: AtomicU64,
    /// Random per server, so call ids of two runs do not collide.
    nonce: u64,
}

impl Logs {
    pub fn new(config: LogConfig) -> Logs {
        let mut nonce = [0u8; 8];
        // SAFETY: getrandom into a local buffer; on failure the nonce stays zero (ids are
        // then only unique within this run, which is all the ring needs).
        unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), nonce.len(), 0) };
        Logs { config, nonce: u64::from_ne_bytes(nonce), ..Logs::default() }
    }

    /// The ring of `function`, made on first use.
    pub fn ring(&self, function: &str) -> Arc<LogRing> {
        if let Some(r) = self.rings.read().unwrap_or_else(|e| e.into_inner()).get(function) {
            return r.clone();
        }
        let mut map = self.rings.write().unwrap_or_else(|e| e.into_inner());
        map.entry(function.to_owned()).or_default().clone()
    }

    /// The ring of `function` if it has one.
    pub fn existing(&self, function: &str) -> Option<Arc<LogRing>> {
        self.rings.read().unwrap_or_else(|e| e.into_inner()).get(function).cloned()
    }

    /// The call id: the client's `X-Call-Id` when it is a sane token (OpenFaaS's gateway
    /// sends one), else a new version 4 UUID (this server's random key and a counter through
    /// splitmix64: unique per server, no syscall on the call's path).
    pub fn call_id(&self, from_client: Option<&str>) -> String {
        if let Some(id) = from_client.filter(|id| {
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        }) {
            return id.to_owned();
        }
        let n = self.next_call.fetch_add(1, Ordering::Relaxed);
        let hi = splitmix64(self.nonce ^ n);
        let lo = splitmix64(self.nonce.rotate_left(32).wrapping_add(n));
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&hi.to_be_bytes());
        b[8..].copy_from_slice(&lo.to_be_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(id: &'a str, stderr: &'a [u8]) -> CallRecord<'a> {
        CallRecord {
            call_id: id,
            function: "f",
            status: 200,
            duration: Duration::from_micros(1500),
            written: 11,
            stderr,
            watchdog: false,
        }
    }

    #[test]
    fn lines_are_json_with_every_field() {
        let ring = LogRing::default();
        ring.push(&LogConfig::default(), &record("a-1", b"hello \"world\"\n\xff"));
        let lines = ring.read(None, None, None);
        let v: serde_json::Value = serde_json::from_str(&lines[0].json("f")).unwrap();
        assert_eq!(v["call_id"], "a-1");
        assert_eq!(v["function"], "f");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["bytes"], 11);
        assert_eq!(v["stderr"], "hello \"world\"\n\u{fffd}");
        assert!(httpd::date::parse_rfc3339(v["time"].as_str().unwrap()).is_some());
    }

    #[test]
    fn a_watchdog_call_reads_as_the_classic_watchdog_logs_it() {
        let ring = LogRing::default();
        ring.push(&LogConfig::default(), &record("w", b"first\nsecond\n"));
        let line = &ring.read(None, None, None)[0];
        let lines = line.watchdog_lines();
        let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            texts,
            ["Forking fprocess.", "first", "second", "Wrote 11 Bytes - Duration: 0.001500 seconds - Status: 200"]
        );
        assert_eq!(line.time.duration_since(lines[0].0).unwrap(), Duration::from_micros(1500), "forked at its start");
        assert_eq!(lines[3].0, line.time);
    }

    #[test]
    fn the_ring_is_bounded_and_keeps_the_newest() {
        let cfg = LogConfig { ring_bytes: 4096, max_stderr_bytes: 100 };
        let ring = LogRing::default();
        let noise = vec![b'x'; 10_000];
        for i in 0..1000 {
            ring.push(&cfg, &record(&format!("c{i}"), &noise));
        }
        assert!(ring.bytes() <= 4096, "{}", ring.bytes());
        let lines = ring.read(None, None, None);
        assert_eq!(lines.last().unwrap().call_id, "c999");
        assert!(lines.len() > 5 && lines.len() < 40, "{}", lines.len());
        let v: serde_json::Value = serde_json::from_str(&lines[0].json("f")).unwrap();
        assert_eq!(v["stderr"].as_str().unwrap().len(), 100, "one call's stderr is cut to its tail");
        // tail and after_seq.
        let last2 = ring.read(None, None, Some(2));
        assert_eq!(last2.iter().map(|l| l.call_id.as_str()).collect::<Vec<_>>(), ["c998", "c999"]);
        assert!(ring.read(Some(last2[1].seq), None, None).is_empty());
        assert!(ring.read(None, Some(SystemTime::now() + Duration::from_secs(60)), None).is_empty());
    }

    #[test]
    fn waiting_returns_at_a_new_line_or_the_deadline() {
        let ring = Arc::new(LogRing::default());
        let started = Instant::now();
        ring.wait_for_more(None, started + Duration::from_millis(50));
        assert!(started.elapsed() >= Duration::from_millis(50));
        let writer = ring.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.push(&LogConfig::default(), &record("late", b""));
        });
        ring.wait_for_more(None, Instant::now() + Duration::from_secs(30));
        assert_eq!(ring.read(None, None, None).len(), 1);
        t.join().unwrap();
    }

    #[test]
    fn call_ids_take_a_sane_client_id_or_make_one() {
        let logs = Logs::new(LogConfig::default());
        assert_eq!(logs.call_id(Some("abc-123")), "abc-123");
        let made = logs.call_id(Some("bad id\r\nX: y"));
        assert_eq!((made.len(), &made[14..15]), (36, "4"), "a v4 UUID: {made}");
        assert_ne!(logs.call_id(None), logs.call_id(None));
    }
}
