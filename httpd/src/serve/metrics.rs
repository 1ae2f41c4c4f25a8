//! Counters and latency histograms, rendered in the Prometheus text format (version 0.0.4),
//! and the W3C `Server-Timing` header of each call.
//!
//! Everything on the request path is a relaxed atomic add: no locks, no allocation. The
//! per-function entry is looked up once per bundle load, not per call.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implied.
pub const BUCKETS: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A cumulative-on-render latency histogram.
#[derive(Default)]
pub struct Histogram {
    /// Non-cumulative counts; the last slot is `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// The phases of one call, in the order they happen. Each is a `Server-Timing` metric and a
/// histogram label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// From the end of the request to the start of the call (waiting behind other calls on
    /// the same event loop).
    Queue,
    /// Taking an empty VM from the pool (or creating one when the pool is empty).
    Vm,
    /// Restoring the snapshot (or cold-loading the program) into the VM, request handed over.
    Restore,
    /// Running the guest until exit, fault or deadline.
    Run,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Queue, Phase::Vm, Phase::Restore, Phase::Run];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Queue => "queue",
            Phase::Vm => "vm",
            Phase::Restore => "restore",
            Phase::Run => "run",
        }
    }
}

/// Why a call did not return 200. Chosen by the status mapping in `status.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The function exited non-zero: 502.
    Exit,
    /// The guest faulted (bad syscall, exception, memory limit): 502.
    Fault,
    /// The guest wrote more than its output cap: 502.
    OutputLimit,
    /// The call ran past its deadline: 504.
    Deadline,
    /// The host could not provide or restore a VM: 500.
    Host,
    /// Too many calls in flight: 503.
    Overloaded,
    /// Too many calls of this function in flight (`--max-concurrency-per-function`): 429.
    Concurrency,
    /// The method is not allowed on a function route: 405.
    Method,
    /// The function's own response head (`snapcall.response: cgi`) was refused: 502.
    ResponseHead,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Exit,
        ErrorKind::Fault,
        ErrorKind::OutputLimit,
        ErrorKind::Deadline,
        ErrorKind::Host,
        ErrorKind::Overloaded,
        ErrorKind::Concurrency,
        ErrorKind::Method,
        ErrorKind::ResponseHead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Exit => "exit",
            ErrorKind::Fault => "fault",
            ErrorKind::OutputLimit => "output_limit",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Host => "host",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::Concurrency => "concurrency",
            ErrorKind::Method => "method",
            ErrorKind::ResponseHead => "response_head",
        }
    }

    fn index(self) -> usize {
        ErrorKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Metrics of one function (kept across reloads of its bundle).
#[derive(Default)]
pub struct FnMetrics {
    calls: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    latency: Histogram,
    phases: [Histogram; Phase::ALL.len()],
    /// Calls admitted and not yet answered (the per-function concurrency limit counts these).
    in_flight: AtomicUsize,
}

impl FnMetrics {
    /// Records one finished call: its total latency, its phases and, if it failed, why.
    pub fn record(&self, total: Duration, timing: &Timing, error: Option<ErrorKind>) {
        self.calls.fetch_add(1, Relaxed);
        self.latency.observe(total);
        for (phase, d) in &timing.phases {
            self.phases[Phase::ALL.iter().position(|p| p == phase).unwrap_or(0)].observe(*d);
        }
        if let Some(kind) = error {
            self.errors[kind.index()].fetch_add(1, Relaxed);
        }
    }

    /// Counts one more call in flight, unless `limit` are already: then false, nothing counted.
    pub fn try_enter(&self, limit: usize) -> bool {
        self.in_flight.fetch_update(AcqRel, Relaxed, |n| (n < limit).then_some(n + 1)).is_ok()
    }

    /// One call admitted by [`FnMetrics::try_enter`] is answered.
    pub fn leave(&self) {
        self.in_flight.fetch_sub(1, AcqRel);
    }

    /// Calls answered so far, refused ones included (OpenFaaS's `invocationCount`).
    pub fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }

    /// Calls admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Relaxed)
    }

    /// Failed calls by kind (every kind, zeros included).
    pub fn errors(&self) -> Vec<(&'static str, u64)> {
        ErrorKind::ALL.iter().map(|k| (k.name(), self.errors[k.index()].load(Relaxed))).collect()
    }

    /// Records a request refused before any VM was involved.
    pub fn record_refusal(&self, kind: ErrorKind) {
        self.calls.fetch_add(1, Relaxed);
        self.errors[kind.index()].fetch_add(1, Relaxed);
    }
}

/// Statuses counted in `snapcall_http_responses_total`.
const STATUSES: [u16; 14] = [200, 400, 404, 405, 408, 413, 429, 431, 500, 501, 502, 503, 504, 0];

/// Server-wide counters and the per-function table.
#[derive(Default)]
pub struct Metrics {
    functions: Mutex<BTreeMap<String, Arc<FnMetrics>>>,
    responses: [AtomicU64; STATUSES.len()],
    pub connections_accepted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_open: AtomicU64,
    pub timeouts_header: AtomicU64,
    pub timeouts_body: AtomicU64,
    pub timeouts_idle: AtomicU64,
    pub timeouts_send: AtomicU64,
}

impl Metrics {
    /// The metrics entry of function `name`, created on first use.
    pub fn function(&self, name: &str) -> Arc<FnMetrics> {
        let mut map = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned()).or_default().clone()
    }

    pub fn count_response(&self, status: u16) {
        let slot = STATUSES.iter().position(|s| *s == status).unwrap_or(STATUSES.len() - 1);
        self.responses[slot].fetch_add(1, Relaxed);
    }

    /// Renders everything; `extra` appends gauges owned by others (the VM pool).
    pub fn render(&self, extra: &dyn Fn(&mut String)) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let functions: Vec<(String, Arc<FnMetrics>)> = {
            let map = self.functions.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        out.push_str("# HELP snapcall_calls_total Calls per function, any outcome.\n");
        out.push_str("# TYPE snapcall_calls_total counter\n");
        for (name, m) in &functions {
            let _ = writeln!(out, "snapcall_calls_total{{function=\"{name}\"}} {}", m.calls.load(Relaxed));
        }
        out.push_str("# HELP snapcall_calls_in_flight Calls admitted and not yet answered, per function.\n");
        out.push_str("# TYPE snapcall_calls_in_flight gauge\n");
        for (name, m) in &functions {
            let _ = writeln!(out, "snapcall_calls_in_flight{{function=\"{name}\"}} {}", m.in_flight.load(Relaxed));
        }
        out.push_str("# HELP snapcall_call_errors_total Failed calls per function and kind.\n");
        out.push_str("# TYPE snapcall_call_errors_total counter\n");
        for (name, m) in &functions {
            for kind in ErrorKind::ALL {
                let n = m.errors[kind.index()].load(Relaxed);
                let _ = writeln!(out, "snapcall_call_errors_total{{function=\"{name}\",kind=\"{}\"}} {n}", kind.name());
            }
        }
        out.push_str(
            "# HELP snapcall_call_duration_seconds End-to-end call latency (request read to response queued).\n",
        );
        out.push_str("# TYPE snapcall_call_duration_seconds histogram\n");
        for (name, m) in &functions {
            m.latency.render(&mut out, "snapcall_call_duration_seconds", &format!("function=\"{name}\""));
        }
        out.push_str("# HELP snapcall_call_phase_duration_seconds Duration of each phase of a call.\n");
        out.push_str("# TYPE snapcall_call_phase_duration_seconds histogram\n");
        for (name, m) in &functions {
            for (i, phase) in Phase::ALL.iter().enumerate() {
                let labels = format!("function=\"{name}\",phase=\"{}\"", phase.name());
                m.phases[i].render(&mut out, "snapcall_call_phase_duration_seconds", &labels);
            }
        }
        out.push_str("# HELP snapcall_http_responses_total HTTP responses by status (0: other).\n");
        out.push_str("# TYPE snapcall_http_responses_total counter\n");
        for (i, status) in STATUSES.iter().enumerate() {
            let _ =
                writeln!(out, "snapcall_http_responses_total{{code=\"{status}\"}} {}", self.responses[i].load(Relaxed));
        }
        let counters = [
            ("snapcall_connections_accepted_total", "Connections accepted.", &self.connections_accepted),
            (
                "snapcall_connections_refused_total",
                "Connections refused at the connection limit.",
                &self.connections_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
        }
        let name = "snapcall_connections_open";
        let _ = writeln!(
            out,
            "# HELP {name} Open client connections.\n# TYPE {name} gauge\n{name} {}",
            self.connections_open.load(Relaxed)
        );
        let name = "snapcall_timeouts_total";
        let _ = writeln!(out, "# HELP {name} Connections cut off by a read or write timeout.\n# TYPE {name} counter");
        for (kind, v) in [
            ("header", &self.timeouts_header),
            ("body", &self.timeouts_body),
            ("idle", &self.timeouts_idle),
            ("send", &self.timeouts_send),
        ] {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", v.load(Relaxed));
        }
        extra(&mut out);
        out
    }
}

/// The phases of one call, for the `Server-Timing` header and the phase histograms.
#[derive(Debug, Default, Clone)]
pub struct Timing {
    pub phases: Vec<(Phase, Duration)>,
}

impl Timing {
    pub fn push(&mut self, phase: Phase, d: Duration) {
        self.phases.push((phase, d));
    }

    /// `queue;dur=0.004, vm;dur=0.003, restore;dur=0.020, run;dur=0.090, total;dur=0.121`:
    /// W3C Server-Timing, durations in milliseconds.
    pub fn header(&self, total: Duration) -> String {
        let mut s = String::with_capacity(96);
        for (phase, d) in &self.phases {
            let _ = write!(s, "{};dur={:.3}, ", phase.name(), d.as_secs_f64() * 1e3);
        }
        let _ = write!(s, "total;dur={:.3}", total.as_secs_f64() * 1e3);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_in_milliseconds() {
        let mut t = Timing::default();
        t.push(Phase::Vm, Duration::from_micros(3));
        t.push(Phase::Restore, Duration::from_micros(20_500));
        assert_eq!(t.header(Duration::from_millis(121)), "vm;dur=0.003, restore;dur=20.500, total;dur=121.000");
    }

    #[test]
    fn prometheus_text() {
        let m = Metrics::default();
        let f = m.function("echo");
        let mut t = Timing::default();
        t.push(Phase::Run, Duration::from_micros(300));
        f.record(Duration::from_micros(400), &t, None);
        f.record(Duration::from_secs(20), &t, Some(ErrorKind::Deadline));
        m.count_response(200);
        m.count_response(999);
        let text = m.render(&|out| out.push_str("snapcall_pool_size 4\n"));
        assert!(text.contains("snapcall_calls_total{function=\"echo\"} 2\n"));
        assert!(text.contains("snapcall_call_errors_total{function=\"echo\",kind=\"deadline\"} 1\n"));
        assert!(text.contains("snapcall_call_duration_seconds_bucket{function=\"echo\",le=\"0.0005\"} 1\n"));
        assert!(text.contains("snapcall_call_duration_seconds_bucket{function=\"echo\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("snapcall_call_phase_duration_seconds_count{function=\"echo\",phase=\"run\"} 2\n"));
        assert!(text.contains("snapcall_http_responses_total{code=\"0\"} 1\n"));
        assert!(text.ends_with("snapcall_pool_size 4\n"));
        // Every non-comment line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad line {line}");
        }
    }
}
