//! The application behind the event loops: routes, and each call on a brand-new VM.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use vmm::km::KmFunction;
use vmm::{FinishedCall, Function, Output, RequestHead, Runtime};

use super::conn::Request;
use super::handler::{Admission, Handler};
use super::http::{json_string, Head, Method, Response};
use super::metrics::{ErrorKind, Metrics, Phase, Timing};
use super::provider::{self, ApiRequest, Provider};
use super::registry::{Entry, LoadedFunction, Registry};
use super::routes::{self, Route};
use super::status::{self, Failure};

/// How much of a failed call's stderr goes into its error body (vmm keeps as much).
const STDERR_TAIL: usize = vmm::STDERR_TAIL_BYTES;

pub struct App {
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// Kontain's km, for functions only km can run (None: $SNAPCALL_KM, then $PATH).
    pub km: Option<PathBuf>,
    /// Calls of one function admitted and not yet answered, at most (429 above).
    pub max_concurrency_per_function: usize,
    /// The OpenFaaS provider API on `/system/*` (`--provider`); `None`: those paths are 404.
    pub provider: Option<Provider>,
}

/// An admitted call: the function it was admitted for (looked up once, when its request was
/// complete) and its place in that function's concurrency limit, given back when dropped.
/// `None`: a provider API request that may take seconds (a deploy), sent to a worker too.
pub struct CallPermit {
    entry: Option<Arc<Entry>>,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            entry.metrics.leave();
        }
    }
}

impl App {
    fn call(&self, f: &Entry, req: Request, queued: Duration) -> (Response, Option<FinishedCall>) {
        let Request { head, body } = req;
        let watchdog = match &f.runner {
            LoadedFunction::Native(function) => function.config().watchdog,
            LoadedFunction::Km(km) => km.config().watchdog,
        };
        // OpenFaaS's watchdog and gateway answer with the request's X-Call-Id (a new one when
        // it had none) and when the call started; only functions that ask pay for it.
        let watchdog_headers = watchdog.then(|| watchdog_headers(&head));
        let (mut resp, done) = match &f.runner {
            LoadedFunction::Native(function) => self.call_native(f, function, request_head(head), &body, queued),
            // km gets the body on stdin only: it has no request-head channel.
            LoadedFunction::Km(km) => (self.call_km(f, km, &body, queued), None),
        };
        if let Some(headers) = watchdog_headers {
            resp.headers.extend(headers);
        }
        (resp, done)
    }

    /// One call: take a VM, start (restore) the function in it, run, respond. The VM is
    /// released by the loop through [`Handler::sent`] once the response is on the wire.
    fn call_native(
        &self,
        f: &Entry,
        function: &Function,
        head: RequestHead,
        body: &[u8],
        queued: Duration,
    ) -> (Response, Option<FinishedCall>) {
        let started = Instant::now();
        let mut timing = Timing::default();
        timing.push(Phase::Queue, queued);

        // 1. A VM no other call used: from the pool, or created now if the pool is empty.
        let vm = match self.runtime.take_vm(function) {
            Ok(vm) => vm,
            Err(e) => return (self.failed(f, status::vm_error(&e), &e.to_string(), &[], timing, started), None),
        };
        timing.push(Phase::Vm, started.elapsed());

        // 2. Restore the snapshot (or cold-load the program) and hand it the request.
        let ready = match function.start_request(vm, head, body) {
            Ok(ready) => ready,
            Err(e) => return (self.failed(f, status::start_error(&e), &e.to_string(), &[], timing, started), None),
        };

        // 3. Run to exit, fault or deadline.
        let mut finished = ready.run();
        let t = finished.timings();
        timing.push(Phase::Restore, t.start);
        timing.push(Phase::Run, t.run);

        // 4. Respond.
        let resp = match finished.take_outcome() {
            Ok(Output { stdout, stderr, exit_code }) => match status::exit_status(exit_code) {
                None => {
                    let mut resp = Response::new(200, &function.config().content_type, stdout);
                    let total = queued + started.elapsed();
                    f.metrics.record(total, &timing, None);
                    resp.server_timing = timing.header(total);
                    resp
                }
                Some(failure) => self.failed(f, failure, &format!("exit status {exit_code}"), &stderr, timing, started),
            },
            Err(e) => {
                let failure = status::call_error(&e);
                let mut resp = self.failed(f, failure, &e.to_string(), finished.stderr_tail(), timing, started);
                if failure.kind == ErrorKind::Deadline {
                    resp.headers
                        .push(format!("X-Snapcall-Timeout-Ms: {}", function.config().limits.timeout.as_millis()));
                }
                resp
            }
        };
        // 5. Release happens in `sent`, after the response is written.
        (resp, Some(finished))
    }

    /// One call through km: a fresh km process with the request on stdin, under the same
    /// deadline, output cap, statuses and Server-Timing (its whole life is the `run` phase).
    fn call_km(&self, f: &Entry, km: &KmFunction, request: &[u8], queued: Duration) -> Response {
        let started = Instant::now();
        let mut timing = Timing::default();
        timing.push(Phase::Queue, queued);
        let outcome = km.locate_km(self.km.as_deref()).and_then(|exe| km.call(&exe, request));
        timing.push(Phase::Run, started.elapsed());
        match outcome {
            Ok(Output { stdout, stderr, exit_code }) => match status::exit_status(exit_code) {
                None => {
                    let mut resp = Response::new(200, &km.config().content_type, stdout);
                    let total = queued + started.elapsed();
                    f.metrics.record(total, &timing, None);
                    resp.server_timing = timing.header(total);
                    resp
                }
                Some(failure) => self.failed(f, failure, &format!("exit status {exit_code}"), &stderr, timing, started),
            },
            Err(e) => self.failed(f, status::km_error(&e), &e.to_string(), &[], timing, started),
        }
    }

    fn failed(
        &self,
        f: &Entry,
        failure: Failure,
        detail: &str,
        stderr: &[u8],
        timing: Timing,
        started: Instant,
    ) -> Response {
        let queued = timing.phases.first().map(|p| p.1).unwrap_or_default();
        let total = queued + started.elapsed();
        f.metrics.record(total, &timing, Some(failure.kind));
        let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL)..];
        let body = format!(
            "{{\"error\":{},\"function\":{},\"detail\":{},\"stderr_tail\":{}}}\n",
            json_string(failure.reason),
            json_string(f.name()),
            json_string(detail),
            json_string(&String::from_utf8_lossy(tail)),
        );
        let mut resp = Response::new(failure.status, "application/json", body.into_bytes());
        resp.server_timing = timing.header(total);
        if failure.status == 503 {
            resp.headers.push("Retry-After: 1".into());
        }
        resp
    }

    fn pool_gauges(&self, out: &mut String) {
        let p = self.runtime.pool_stats();
        let _ = writeln!(
            out,
            "# HELP snapcall_pool_ready_vms Empty VMs ready in the pool.\n# TYPE snapcall_pool_ready_vms gauge"
        );
        let _ = writeln!(out, "snapcall_pool_ready_vms {}", p.ready);
        let _ = writeln!(out, "# HELP snapcall_vms_created_total VMs created (pool and inline).\n# TYPE snapcall_vms_created_total counter");
        let _ = writeln!(out, "snapcall_vms_created_total {}", p.created);
        let _ = writeln!(out, "# HELP snapcall_vms_created_inline_total VMs created on a call's path because the pool was empty.\n# TYPE snapcall_vms_created_inline_total counter");
        let _ = writeln!(out, "snapcall_vms_created_inline_total {}", p.created_inline);
        let _ = writeln!(
            out,
            "# HELP snapcall_vms_destroyed_total VMs destroyed.\n# TYPE snapcall_vms_destroyed_total counter"
        );
        let _ = writeln!(out, "snapcall_vms_destroyed_total {}", p.destroyed);
        let _ = writeln!(out, "# HELP snapcall_vms_evicted_total Ready VMs destroyed because their function went idle.\n# TYPE snapcall_vms_evicted_total counter");
        let _ = writeln!(out, "snapcall_vms_evicted_total {}", p.evicted);
        let _ = writeln!(out, "# HELP snapcall_pool_fill_cpu_seconds_total CPU time the pool spent making VMs ahead (create, restore, pre-fault).\n# TYPE snapcall_pool_fill_cpu_seconds_total counter");
        let _ = writeln!(out, "snapcall_pool_fill_cpu_seconds_total {:.6}", p.fill_cpu.as_secs_f64());
        let _ = writeln!(out, "# HELP snapcall_pool_reap_cpu_seconds_total CPU time spent destroying used VMs after their responses.\n# TYPE snapcall_pool_reap_cpu_seconds_total counter");
        let _ = writeln!(out, "snapcall_pool_reap_cpu_seconds_total {:.6}", p.reap_cpu.as_secs_f64());
        type Sample = fn(&vmm::FunctionPoolStats) -> String;
        let per_function: [(&str, &str, &str, Sample); 4] = [
            ("snapcall_pool_function_ready_vms", "gauge", "VMs ready in the pool for this function.", |f| {
                f.ready.to_string()
            }),
            ("snapcall_pool_function_hits_total", "counter", "Calls of this function that found a VM ready.", |f| {
                f.hits.to_string()
            }),
            (
                "snapcall_pool_function_misses_total",
                "counter",
                "Calls of this function that created their VM inline.",
                |f| f.misses.to_string(),
            ),
            (
                "snapcall_pool_function_fill_cpu_seconds_total",
                "counter",
                "CPU time the pool spent making this function's VMs ahead.",
                |f| format!("{:.6}", f.fill_cpu.as_secs_f64()),
            ),
        ];
        for (name, kind, help, value) in per_function {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for f in &p.functions {
                let _ = writeln!(out, "{name}{{function=\"{}\"}} {}", f.name, value(f));
            }
        }
        let _ = writeln!(out, "# HELP snapcall_functions Functions being served.\n# TYPE snapcall_functions gauge");
        let _ = writeln!(out, "snapcall_functions {}", self.registry.len());
    }
}

/// `X-Call-Id` (the request's, else a fresh random UUID) and `X-Start-Time` (Unix time in
/// nanoseconds, as the OpenFaaS gateway sets it).
fn watchdog_headers(head: &Head) -> [String; 2] {
    let id = head
        .headers
        .iter()
        .find(|(k, _)| k == "x-call-id")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty() && v.len() <= 256)
        .unwrap_or_else(random_uuid);
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    [format!("X-Call-Id: {id}"), format!("X-Start-Time: {start}")]
}

/// A version 4 UUID from the kernel's randomness.
fn random_uuid() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into the local buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 16 {
        // No randomness (it never fails for 16 bytes once the pool is up): a time-based id.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        b = t.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn method_str(m: &Method) -> &str {
    match m {
        Method::Other(m) => m,
        known => known.as_str(),
    }
}

impl App {
    /// A `/system/*` request: the provider API's, on a worker when it may take seconds.
    fn api(&self, req: &Request, started: Instant) -> Response {
        let Some(p) = &self.provider.as_ref().filter(|_| provider::owns(&req.head.path)) else {
            return not_found(&req.head.path, started);
        };
        let authorization = req.head.headers.iter().find(|(k, _)| k == "authorization").map(|(_, v)| v.as_str());
        let api = ApiRequest {
            method: method_str(&req.head.method),
            path: &req.head.path,
            query: &req.head.query,
            authorization,
            body: &req.body,
        };
        let mut resp = p.handle(&api);
        resp.server_timing = Timing::default().header(started.elapsed());
        resp
    }
}

/// What the function sees of its request beyond the body: the parsed head's values moved
/// over (the one copy of the head was made by the parser), the path after the function name.
fn request_head(head: Head) -> RequestHead {
    let path = match routes::route(&head.path) {
        Route::Function { path, .. } => path.to_owned(),
        _ => "/".to_owned(),
    };
    let method = match head.method {
        Method::Other(m) => m,
        known => known.as_str().to_owned(),
    };
    RequestHead { method, path, query: head.query, headers: head.headers }
}

fn simple(status: u16, content_type: &str, body: impl Into<Vec<u8>>, started: Instant) -> Response {
    let mut resp = Response::new(status, content_type, body.into());
    resp.server_timing = Timing::default().header(started.elapsed());
    resp
}

fn not_found(path: &str, started: Instant) -> Response {
    let mut resp = Response::json_error(404, "not_found", &format!("no function at {path}"));
    resp.server_timing = Timing::default().header(started.elapsed());
    resp
}

impl Handler for App {
    type Done = FinishedCall;
    type Permit = CallPermit;

    fn accept_head(&self, head: &Head) -> bool {
        let route = routes::route(&head.path);
        if routes::disallowed(route, &head.method).is_some() {
            return false;
        }
        match route {
            Route::Health | Route::Metrics => true,
            Route::System => self.provider.is_some() && provider::owns(&head.path),
            Route::Function { name, .. } => self.registry.get(name).is_some(),
            Route::NotFound => false,
        }
    }

    fn admit(&self, head: &Head) -> Admission<CallPermit> {
        let route = routes::route(&head.path);
        if route == Route::System {
            return match &self.provider {
                Some(_) if provider::runs_long(method_str(&head.method), &head.path) => {
                    Admission::Call(CallPermit { entry: None })
                }
                _ => Admission::Local,
            };
        }
        let Route::Function { name, .. } = route else { return Admission::Local };
        if routes::disallowed(route, &head.method).is_some() {
            return Admission::Local;
        }
        let Some(entry) = self.registry.get(name) else { return Admission::Local };
        if !entry.metrics.try_enter(self.max_concurrency_per_function) {
            entry.metrics.record_refusal(ErrorKind::Concurrency);
            let detail = format!(
                "{} calls of {name} are in flight, this server's limit per function \
                 (--max-concurrency-per-function); retry later",
                self.max_concurrency_per_function
            );
            let mut resp = Response::json_error(429, "too_many_requests", &detail);
            resp.headers.push("Retry-After: 1".into());
            resp.server_timing = Timing::default().header(Duration::ZERO);
            return Admission::Refused(resp);
        }
        Admission::Call(CallPermit { entry: Some(entry) })
    }

    fn handle(&self, req: Request, permit: Option<CallPermit>, queued: Duration) -> (Response, Option<FinishedCall>) {
        if let Some(entry) = permit.as_ref().and_then(|p| p.entry.as_ref()) {
            return self.call(entry, req, queued);
        }
        let started = Instant::now();
        let route = routes::route(&req.head.path);
        if routes::disallowed(route, &req.head.method).is_some() {
            return (self.refused(&req.head), None);
        }
        match route {
            Route::Health => (simple(200, "text/plain", "ok\n", started), None),
            Route::Metrics => {
                let text = self.metrics.render(&|out| self.pool_gauges(out));
                (simple(200, "text/plain; version=0.0.4", text, started), None)
            }
            Route::System => (self.api(&req, started), None),
            Route::NotFound => (not_found(&req.head.path, started), None),
            // A function route without a permit: the function is gone (or never was).
            Route::Function { .. } => (not_found(&req.head.path, started), None),
        }
    }

    fn refused(&self, head: &Head) -> Response {
        let started = Instant::now();
        let route = routes::route(&head.path);
        if let Some(allow) = routes::disallowed(route, &head.method) {
            if let Route::Function { name, .. } = route {
                if let Some(entry) = self.registry.get(name) {
                    entry.metrics.record_refusal(ErrorKind::Method);
                }
            }
            let mut resp = Response::json_error(405, "method_not_allowed", &format!("allowed: {allow}"));
            resp.headers.push(format!("Allow: {allow}"));
            resp.server_timing = Timing::default().header(started.elapsed());
            return resp;
        }
        not_found(&head.path, started)
    }

    fn overloaded(&self, head: &Head) -> Response {
        if let Route::Function { name, .. } = routes::route(&head.path) {
            if let Some(entry) = self.registry.get(name) {
                entry.metrics.record_refusal(ErrorKind::Overloaded);
            }
        }
        let mut resp = Response::json_error(503, "overloaded", "too many calls in flight");
        resp.headers.push("Retry-After: 1".into());
        resp.server_timing = Timing::default().header(Duration::ZERO);
        resp
    }

    fn sent(&self, done: FinishedCall) {
        self.runtime.release(done);
    }
}
