//! The application behind the event loops: routes, and each call on a brand-new VM.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use vmm::km::KmFunction;
use vmm::{BundleConfig, Function, Output, RequestHead, ResponseFormat, Runtime, UsedVm};

use super::access_log::AccessLog;
use super::cgi;
use super::conn::Request;
use super::functions_api;
use super::handler::{Admission, Handler};
use super::http::{json_string, Head, Method, Response};
use super::logs::{CallRecord, Logs};
use super::metrics::{ErrorKind, Metrics, Phase, Timing};
use super::provider::{self, ApiRequest, Provider};
use super::registry::{Entry, LoadedFunction, Registry};
use super::routes::{self, Route};
use super::status::{self, Failure};
use super::system_logs;

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
    /// Every call's stderr, per function (`/system/logs`).
    pub logs: Logs,
    /// One line per answered request, unless `--access-log off`.
    pub access_log: Option<AccessLog>,
    /// `/system/logs?follow=true` requests waiting on a worker now.
    pub follower_count: Arc<AtomicUsize>,
}

/// Most `/system/logs?follow=true` requests waiting at once (each holds a worker thread).
const MAX_FOLLOWERS: usize = 16;

/// What runs on a worker thread: an admitted call, with the function it was admitted for
/// (looked up once, when its request was complete) and its place in that function's
/// concurrency limit, given back when dropped; a provider API request that may take
/// seconds (a deploy); or a `/system/logs?follow=true` that may wait.
pub enum CallPermit {
    Call(Arc<Entry>),
    Api,
    /// The slot is held (not read) until the answer is made.
    FollowLogs {
        _slot: FollowerSlot,
    },
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        if let CallPermit::Call(entry) = self {
            entry.metrics.leave();
        }
    }
}

/// A place among the [`MAX_FOLLOWERS`].
pub struct FollowerSlot(Arc<AtomicUsize>);

impl Drop for FollowerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    fn call(&self, f: &Entry, req: Request, queued: Duration) -> (Response, Option<UsedVm>) {
        let Request { head, body } = req;
        let watchdog = f.runner.config().watchdog;
        let started = Instant::now();
        // Every answer names its call (the request's X-Call-Id, as OpenFaaS's gateway and
        // watchdog echo it, or a new one): the key of its line in the function's log.
        let call_id = self.logs.call_id(head.header("x-call-id"));
        let start_time = watchdog.then(watchdog_start_time);
        let (mut resp, stderr, done) = match &f.runner {
            LoadedFunction::Native(function) => self.call_native(f, function, request_head(head), &body, queued),
            // km gets the body on stdin only: it has no request-head channel.
            LoadedFunction::Km(km) => {
                let (resp, stderr) = self.call_km(f, km, &body, queued);
                (resp, stderr, None)
            }
        };
        let record = CallRecord {
            call_id: &call_id,
            function: f.name(),
            status: resp.status,
            duration: queued + started.elapsed(),
            written: resp.body.len(),
            stderr: &stderr,
            watchdog,
        };
        self.logs.ring(f.name()).push(&self.logs.config, &record);
        resp.headers.push(format!("X-Call-Id: {call_id}"));
        resp.headers.extend(start_time);
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
    ) -> (Response, Vec<u8>, Option<UsedVm>) {
        let started = Instant::now();
        let mut timing = Timing::default();
        timing.push(Phase::Queue, queued);

        // 1. A VM no other call used: from the pool, or created now if the pool is empty.
        let vm = match self.runtime.take_vm(function) {
            Ok(vm) => vm,
            Err(e) => {
                return (self.failed(f, status::vm_error(&e), &e.to_string(), &[], timing, started), Vec::new(), None)
            }
        };
        timing.push(Phase::Vm, started.elapsed());

        // 2. Restore the snapshot (or cold-load the program) and hand it the request.
        let ready = match function.start_request(vm, head, body) {
            Ok(ready) => ready,
            Err(e) => {
                let resp = self.failed(f, status::start_error(&e), &e.to_string(), &[], timing, started);
                return (resp, Vec::new(), None);
            }
        };

        // 3. Run to exit, fault or deadline.
        let finished = ready.run();
        let t = finished.timings();
        timing.push(Phase::Restore, t.start);
        timing.push(Phase::Run, t.run);
        // Empty (no copy) when the program exited; its last 4 KiB of stderr when it failed.
        let stderr_tail = finished.stderr_tail().to_vec();
        let (outcome, used_vm) = finished.into_parts();

        // 4. Respond (the stderr goes to the function's log).
        match outcome {
            Ok(Output { stdout, stderr, exit_code }) => {
                let resp = match status::exit_status(exit_code) {
                    None => self.succeeded(f, function.config(), stdout, &stderr, timing, started),
                    Some(failure) => {
                        self.failed(f, failure, &format!("exit status {exit_code}"), &stderr, timing, started)
                    }
                };
                // 5. Release happens in `sent`, after the response is written.
                (resp, stderr, Some(used_vm))
            }
            Err(e) => {
                let failure = status::call_error(&e);
                let mut resp = self.failed(f, failure, &e.to_string(), &stderr_tail, timing, started);
                if failure.kind == ErrorKind::Deadline {
                    resp.headers
                        .push(format!("X-Snapcall-Timeout-Ms: {}", function.config().limits.timeout.as_millis()));
                }
                (resp, stderr_tail, Some(used_vm))
            }
        }
    }

    /// One call through km: a fresh km process with the request on stdin, under the same
    /// deadline, output cap, statuses and Server-Timing (its whole life is the `run` phase).
    fn call_km(&self, f: &Entry, km: &KmFunction, request: &[u8], queued: Duration) -> (Response, Vec<u8>) {
        let started = Instant::now();
        let mut timing = Timing::default();
        timing.push(Phase::Queue, queued);
        let outcome = km.locate_km(self.km.as_deref()).and_then(|exe| km.call(&exe, request));
        timing.push(Phase::Run, started.elapsed());
        match outcome {
            Ok(Output { stdout, stderr, exit_code }) => {
                let resp = match status::exit_status(exit_code) {
                    None => self.succeeded(f, km.config(), stdout, &stderr, timing, started),
                    Some(failure) => {
                        self.failed(f, failure, &format!("exit status {exit_code}"), &stderr, timing, started)
                    }
                };
                (resp, stderr)
            }
            Err(e) => (self.failed(f, status::km_error(&e), &e.to_string(), &[], timing, started), Vec::new()),
        }
    }

    /// The answer to a call that exited 0: its stdout as the body, under the bundle's
    /// content type, or, when the bundle declares `snapcall.response: cgi`, under the status
    /// and headers of the head the program wrote first (a refused head is a 502).
    fn succeeded(
        &self,
        f: &Entry,
        config: &BundleConfig,
        mut stdout: Vec<u8>,
        stderr: &[u8],
        timing: Timing,
        started: Instant,
    ) -> Response {
        let mut resp = match config.response {
            ResponseFormat::Body => Response::new(200, &config.content_type, stdout),
            ResponseFormat::Cgi => match cgi::parse(&stdout) {
                Ok(head) => {
                    stdout.drain(..head.body_start);
                    let content_type = head.content_type.as_deref().unwrap_or(&config.content_type);
                    let mut resp = Response::new(head.status, content_type, stdout);
                    resp.headers = head.headers;
                    resp
                }
                Err(e) => {
                    return self.failed(f, status::response_head_error(), &e.to_string(), stderr, timing, started)
                }
            },
        };
        let queued = timing.phases.first().map(|p| p.1).unwrap_or_default();
        let total = queued + started.elapsed();
        f.metrics.record(total, &timing, None);
        resp.server_timing = timing.header(total);
        resp
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
        let _ = writeln!(out, "# HELP snapcall_vms_recycled_total Used VMs made recycled shells (the --experimental-recycle-vm-shells experiment; 0 without it).\n# TYPE snapcall_vms_recycled_total counter");
        let _ = writeln!(out, "snapcall_vms_recycled_total {}", p.recycled);
        let _ = writeln!(out, "# HELP snapcall_huge_pages_reused_total Huge windows filled from a destroyed VM's huge page, overwritten whole, instead of a new one that must be zeroed first.\n# TYPE snapcall_huge_pages_reused_total counter");
        let _ = writeln!(out, "snapcall_huge_pages_reused_total {}", p.huge_pages_reused);
        let _ = writeln!(out, "# HELP snapcall_huge_pages_held Destroyed VMs' huge pages held for reuse now (bounded; none once the pool is idle).\n# TYPE snapcall_huge_pages_held gauge");
        let _ = writeln!(out, "snapcall_huge_pages_held {}", p.huge_pages_held);
        let _ = writeln!(out, "# HELP snapcall_memory_reused_total New VMs made around a destroyed VM's host memory, reset byte for byte to the snapshot's layout, instead of new memory.\n# TYPE snapcall_memory_reused_total counter");
        let _ = writeln!(out, "snapcall_memory_reused_total {}", p.memory_reused);
        let _ = writeln!(out, "# HELP snapcall_memory_held Destroyed VMs' memories held for reuse now (bounded; none once the pool is idle).\n# TYPE snapcall_memory_held gauge");
        let _ = writeln!(out, "snapcall_memory_held {}", p.memory_held);
        let c = vmm::vm_creator::stats();
        let _ = writeln!(out, "# HELP snapcall_vms_without_debugfs_total VMs created with no KVM debugfs directory of their own (vmm::vm_creator).\n# TYPE snapcall_vms_without_debugfs_total counter");
        let _ = writeln!(out, "snapcall_vms_without_debugfs_total {}", c.without_debugfs);
        let _ = writeln!(out, "# HELP snapcall_pool_fill_cpu_seconds_total CPU time the pool spent making VMs ahead (create, restore, pre-fault).\n# TYPE snapcall_pool_fill_cpu_seconds_total counter");
        let _ = writeln!(out, "snapcall_pool_fill_cpu_seconds_total {:.6}", p.fill_cpu.as_secs_f64());
        let _ = writeln!(out, "# HELP snapcall_pool_reap_cpu_seconds_total CPU time spent destroying used VMs after their responses.\n# TYPE snapcall_pool_reap_cpu_seconds_total counter");
        let _ = writeln!(out, "snapcall_pool_reap_cpu_seconds_total {:.6}", p.reap_cpu.as_secs_f64());
        let f = &p.fill_phases;
        let _ = writeln!(out, "# HELP snapcall_pool_fill_phase_seconds_total Wall time the pool spent making VMs ahead for snapshots, by phase (create: KVM VM and vCPU; memory: page tables, mappings, huge-window copies; prefault: the pre-fault run; vcpu: registers, FPU, MSRs).\n# TYPE snapcall_pool_fill_phase_seconds_total counter");
        for (phase, spent) in [("create", f.create), ("memory", f.memory), ("prefault", f.prefault), ("vcpu", f.vcpu)] {
            let _ =
                writeln!(out, "snapcall_pool_fill_phase_seconds_total{{phase=\"{phase}\"}} {:.6}", spent.as_secs_f64());
        }
        let _ = writeln!(out, "# HELP snapcall_pool_fill_phase_vms_total VMs made ahead for snapshots that the phase times are summed over.\n# TYPE snapcall_pool_fill_phase_vms_total counter");
        let _ = writeln!(out, "snapcall_pool_fill_phase_vms_total {}", f.vms);
        type Sample = fn(&vmm::FunctionPoolStats) -> String;
        let per_function: [(&str, &str, &str, Sample); 5] = [
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
                "snapcall_pool_function_waits_total",
                "counter",
                "Calls of this function that found no VM ready and waited for the one the pool was making (counted in hits too).",
                |f| f.waited.to_string(),
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
        if let Some(log) = &self.access_log {
            let _ = writeln!(out, "# HELP snapcall_access_log_dropped_total Access-log lines dropped because the writer was behind.\n# TYPE snapcall_access_log_dropped_total counter");
            let _ = writeln!(out, "snapcall_access_log_dropped_total {}", log.dropped());
        }
        let _ = writeln!(out, "# HELP snapcall_functions Functions being served.\n# TYPE snapcall_functions gauge");
        let _ = writeln!(out, "snapcall_functions {}", self.registry.len());
    }
}

/// `X-Start-Time` (Unix time in nanoseconds, as the OpenFaaS gateway sets it), for
/// functions that ask for watchdog behaviours.
fn watchdog_start_time() -> String {
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("X-Start-Time: {start}")
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

impl App {
    /// `/system/logs` (system_logs.rs), answered from the rings.
    fn system_logs(&self, req: &Request, started: Instant) -> Response {
        // Under --basic-auth the logs API takes the same credentials as the rest of /system.
        let authorization = req.head.header("authorization");
        let mut resp = match self.provider.as_ref().and_then(|p| p.refuse_unauthorized(authorization)) {
            Some(refused) => refused,
            None => system_logs::answer(&self.logs, &req.head.query, |name| self.registry.get(name).is_some()),
        };
        resp.server_timing = Timing::default().header(started.elapsed());
        resp
    }

    /// `/system/snapcall/functions[/NAME]` (functions_api.rs), for `snapcall list`/`describe`.
    fn functions_api(&self, req: &Request, started: Instant) -> Response {
        let authorization = req.head.header("authorization");
        let mut resp = match self.provider.as_ref().and_then(|p| p.refuse_unauthorized(authorization)) {
            Some(refused) => refused,
            None => match functions_api::parse(&req.head.path) {
                Ok(name) => functions_api::answer(&self.registry, &self.runtime, name),
                Err(()) => return not_found(&req.head.path, started),
            },
        };
        resp.server_timing = Timing::default().header(started.elapsed());
        resp
    }

    /// A `/system/logs?follow=true` goes to a worker (it may wait), if one of the
    /// [`MAX_FOLLOWERS`] places is free.
    fn admit_follower(&self) -> Admission<CallPermit> {
        let count = Arc::clone(&self.follower_count);
        if count.fetch_add(1, Ordering::Relaxed) >= MAX_FOLLOWERS {
            count.fetch_sub(1, Ordering::Relaxed);
            let detail = format!("{MAX_FOLLOWERS} log followers are waiting already; retry later");
            let mut resp = Response::json_error(429, "too_many_requests", &detail);
            resp.headers.push("Retry-After: 1".into());
            return Admission::Refused(resp);
        }
        Admission::Call(CallPermit::FollowLogs { _slot: FollowerSlot(count) })
    }
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
    type Done = UsedVm;
    type Permit = CallPermit;

    fn accept_head(&self, head: &Head) -> bool {
        let route = routes::route(&head.path);
        if routes::disallowed(route, &head.method).is_some() {
            return false;
        }
        match route {
            Route::Health | Route::Metrics | Route::SystemLogs | Route::SnapcallFunctions => true,
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
                    Admission::Call(CallPermit::Api)
                }
                _ => Admission::Local,
            };
        }
        if route == Route::SystemLogs && system_logs::blocks(&head.query) {
            return self.admit_follower();
        }
        let Route::Function { name, .. } = route else { return Admission::Local };
        if routes::disallowed(route, &head.method).is_some() {
            return Admission::Local;
        }
        let Some(entry) = self.registry.get(name) else { return Admission::Local };
        let (limit, whose) = match entry.max_concurrency {
            Some(own) if own < self.max_concurrency_per_function => (own, "its own limit (snapcall.max_concurrency)"),
            _ => {
                (self.max_concurrency_per_function, "this server's limit per function (--max-concurrency-per-function)")
            }
        };
        if !entry.metrics.try_enter(limit) {
            entry.metrics.record_refusal(ErrorKind::Concurrency);
            let detail = format!("{limit} calls of {name} are in flight, {whose}; retry later");
            let mut resp = Response::json_error(429, "too_many_requests", &detail);
            resp.headers.push("Retry-After: 1".into());
            resp.server_timing = Timing::default().header(Duration::ZERO);
            return Admission::Refused(resp);
        }
        Admission::Call(CallPermit::Call(entry))
    }

    fn handle(&self, req: Request, permit: Option<CallPermit>, queued: Duration) -> (Response, Option<UsedVm>) {
        match &permit {
            Some(CallPermit::Call(entry)) => return self.call(entry, req, queued),
            Some(CallPermit::FollowLogs { .. }) => return (self.system_logs(&req, Instant::now()), None),
            Some(CallPermit::Api) | None => {}
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
            Route::SystemLogs => (self.system_logs(&req, started), None),
            Route::SnapcallFunctions => (self.functions_api(&req, started), None),
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

    fn answered(&self, head: &Head, resp: &Response) {
        if let Some(log) = &self.access_log {
            log.record(head, resp);
        }
    }

    fn sent(&self, done: UsedVm) {
        self.runtime.release(done);
    }
}
