//! The OpenFaaS faas-provider REST API on `snapcall serve` (github.com/openfaas/faas-provider):
//! the gateway, faas-cli and OpenFaaS's certifier talk to a provider through it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /system/info` | provider name, orchestration, version (git sha and release baked in at build time) |
//! | `GET /system/functions` | every function served, as `FunctionStatus` |
//! | `POST /system/functions` | deploy (create or replace) a `FunctionDeployment`: 202 once it serves |
//! | `PUT /system/functions` | update an existing function; 404 for an unknown one (faas-cli then POSTs) |
//! | `DELETE /system/functions` | `{"functionName":...}`: 202, or 404 |
//! | `GET /system/function/{name}` | one `FunctionStatus`, or 404 |
//! | `POST /system/scale-function/{name}` | `{"replicas":N}`: VMs kept ready; 0 is the pool's idle release |
//! | `GET /system/namespaces` | the one namespace served |
//! | `GET/POST/PUT/DELETE /system/secrets` | secrets CRUD (values never listed) |
//!
//! A deploy runs on a worker thread, never on an event loop, one at a time: it resolves the
//! image, unpacks it, checks the program and swaps the new bundle in, served cold, in about a
//! second; every 4xx (image missing, dynamic-only program, too big) comes from this part. Its
//! snapshot (seconds: the program runs to its first stdin read, then its working set is
//! recorded) is taken afterwards on the provider's snapshot thread, and the snapshotted version
//! replaces the cold one when ready, unless another deploy came first. Each swap is one step;
//! calls in flight finish on the version they started on (`registry.rs`).

pub mod auth;
pub mod bundle;
pub mod secrets;
pub mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_image::{ImageStore, UnpackLimits};
use serde::de::DeserializeOwned;
use vmm::Runtime;

use super::http::Response;
use super::metrics::Metrics;
use super::registry::{self, Entry, LoadedFunction, Registry};
use auth::BasicAuth;
use bundle::{BundleCaps, DeploymentRecord};
use secrets::SecretStore;
use types::*;

/// The provider name `/system/info` reports.
pub const PROVIDER_NAME: &str = "snapcall";
/// The label OpenFaaS providers put on every function (the certifier checks it).
pub const FUNCTION_LABEL: &str = "faas_function";
/// The minimum-replicas label (OpenFaaS autoscaling).
pub const SCALE_MIN_LABEL: &str = "com.openfaas.scale.min";
/// Largest request body the API reads (a deployment is a few KiB; a secret at most 1 MiB,
/// base64 in JSON).
pub const MAX_API_BODY: usize = 2 << 20;

/// The build this binary is: `build.rs` bakes in the commit.
pub fn version() -> VersionInfo {
    VersionInfo {
        commit_message: env!("SNAPCALL_GIT_SUBJECT").to_string(),
        sha: env!("SNAPCALL_GIT_SHA").to_string(),
        release: env!("SNAPCALL_RELEASE").to_string(),
    }
}

/// What the operator configures (`snapcall serve --provider ...`).
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The one namespace served (OpenFaaS's default: `openfaas-fn`).
    pub namespace: String,
    /// Where images are looked up (`--images`); without it deploys get 501.
    pub images: Option<PathBuf>,
    /// `--basic-auth`: the credentials `/system/*` requires.
    pub auth: Option<BasicAuth>,
    pub unpack: UnpackLimits,
}

/// One API request, as the server hands it over.
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// The path, query removed.
    pub path: &'a str,
    /// The raw query string (without `?`).
    pub query: &'a str,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// A failed API request: its status, a short machine-readable word and a sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub error: &'static str,
    pub detail: String,
}

impl ApiError {
    fn new(status: u16, error: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError { status, error, detail: detail.into() }
    }

    fn response(&self) -> Response {
        Response::json_error(self.status, self.error, &self.detail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider state {path}: {source}")]
    State { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Secrets(#[from] secrets::SecretError),
}

pub struct Provider {
    shared: Arc<Shared>,
    /// Deploys whose snapshot the snapshot thread is to take.
    snapshots: Mutex<mpsc::Sender<SnapshotJob>>,
}

/// A deployed version to snapshot: the name and the deploy's generation.
struct SnapshotJob {
    name: String,
    generation: u64,
}

/// What the API handlers and the snapshot thread share.
struct Shared {
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    cfg: ProviderConfig,
    images: Option<ImageStore>,
    secrets: SecretStore,
    /// `<functions>/.snapcall`: staging, retired bundles, archive scratch, secrets.
    state: PathBuf,
    caps: BundleCaps,
    /// The deployment of every function deployed through the API, by name, with the
    /// generation of the deploy that made it (a snapshot is installed only for its own).
    records: RwLock<BTreeMap<String, (DeploymentRecord, u64)>>,
    /// Replicas asked for with scale-function (or the min-scale label), by name.
    replicas: Mutex<BTreeMap<String, u64>>,
    /// One deploy or delete at a time (each may take seconds, and they share directories).
    changing: Mutex<()>,
    seq: AtomicU64,
}

/// Whether a request must run on a worker thread: it may take seconds (a deploy unpacks and
/// snapshots; a delete waits for a deploy in progress).
pub fn runs_long(method: &str, path: &str) -> bool {
    path == "/system/functions" && matches!(method, "POST" | "PUT" | "DELETE")
}

/// Whether `path` is the provider's (`/system/logs` is the logs API's, not here).
pub fn owns(path: &str) -> bool {
    (path == "/system" || path.starts_with("/system/")) && path != "/system/logs"
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A query parameter's value, percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.len() > MAX_API_BODY {
        return Err(ApiError::new(413, "too_big", format!("{what}: over {MAX_API_BODY} bytes")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, "bad_request", format!("{what}: {e}")))
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    body.push(b'\n');
    Response::new(status, "application/json", body)
}

fn accepted(what: &str) -> Response {
    Response::new(202, "text/plain; charset=utf-8", format!("{what}\n").into_bytes())
}

/// A function name OpenFaaS accepts (a DNS label) that is also a route here.
fn valid_function_name(name: &str) -> bool {
    super::routes::valid_name(name)
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

impl Provider {
    /// Opens the provider's state under the functions directory, reads back the deployments
    /// of bundles deployed before (their `openfaas-deployment.json`) and starts the snapshot
    /// thread.
    pub fn new(
        cfg: ProviderConfig,
        registry: Arc<Registry>,
        runtime: Arc<Runtime>,
        metrics: Arc<Metrics>,
    ) -> Result<Provider, ProviderError> {
        let state = registry.dir().join(".snapcall");
        for sub in ["staging", "retired", "scratch"] {
            let dir = state.join(sub);
            // Leftovers of a server that stopped mid-deploy.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|source| ProviderError::State { path: dir.clone(), source })?;
        }
        let secrets = SecretStore::open(state.join("secrets").join(&cfg.namespace))?;
        let mut records = BTreeMap::new();
        for name in registry.entries().keys() {
            if let Some(r) = bundle::read_record(&registry.dir().join(name)) {
                records.insert(name.clone(), (r, 0));
            }
        }
        let caps = BundleCaps { max_memory_mib: registry.caps().max_memory_bytes >> 20, unpack: cfg.unpack };
        let shared = Arc::new(Shared {
            images: cfg.images.clone().map(ImageStore::new),
            registry,
            runtime,
            metrics,
            cfg,
            secrets,
            state,
            caps,
            records: RwLock::new(records),
            replicas: Mutex::new(BTreeMap::new()),
            changing: Mutex::new(()),
            seq: AtomicU64::new(1),
        });
        let (tx, rx) = mpsc::channel::<SnapshotJob>();
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("snapcall-deploy-snapshot".into())
            .spawn(move || {
                // Ends when the provider (the sender) is dropped.
                for job in rx {
                    worker.snapshot(job);
                }
            })
            .map_err(|source| ProviderError::State { path: PathBuf::from("(snapshot thread)"), source })?;
        Ok(Provider { shared, snapshots: Mutex::new(tx) })
    }

    /// The 401 for a request without the `--basic-auth` credentials; `None` when it may pass
    /// (or no auth is configured). The logs API (`/system/logs`) asks it too.
    pub fn refuse_unauthorized(&self, authorization: Option<&str>) -> Option<Response> {
        let auth = self.shared.cfg.auth.as_ref()?;
        if auth.allows(authorization) {
            return None;
        }
        let mut resp = Response::json_error(401, "unauthorized", "this API needs basic auth (--basic-auth)");
        resp.headers.push(format!("WWW-Authenticate: Basic realm=\"{}\"", auth::REALM));
        Some(resp)
    }

    /// Answers one `/system/*` request (`owns(path)`).
    pub fn handle(&self, req: &ApiRequest) -> Response {
        let p = &self.shared;
        if let Some(refused) = self.refuse_unauthorized(req.authorization) {
            return refused;
        }
        let deployed = match (req.path, req.method) {
            ("/system/functions", "POST") => Some(p.deploy(req, false)),
            ("/system/functions", "PUT") => Some(p.deploy(req, true)),
            _ => None,
        };
        let result = match deployed {
            Some(Ok((resp, job))) => {
                if let Some(job) = job {
                    let _ = self.snapshots.lock().unwrap_or_else(|e| e.into_inner()).send(job);
                }
                Ok(resp)
            }
            Some(Err(e)) => Err(e),
            None => p.route(req),
        };
        match result {
            Ok(resp) => resp,
            Err(e) => e.response(),
        }
    }
}

impl Shared {
    fn route(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        let method_not_allowed = |allow: &str| {
            let mut r = Response::json_error(405, "method_not_allowed", &format!("allowed: {allow}"));
            r.headers.push(format!("Allow: {allow}"));
            Ok(r)
        };
        if let Some(name) = req.path.strip_prefix("/system/function/") {
            return match req.method {
                "GET" => {
                    self.check_namespace(query_param(req.query, "namespace").as_deref())?;
                    let entry = self.registry.get(name).ok_or_else(|| not_found(name))?;
                    Ok(json(200, &self.status(name, &entry)))
                }
                _ => method_not_allowed("GET"),
            };
        }
        if let Some(name) = req.path.strip_prefix("/system/scale-function/") {
            return match req.method {
                "POST" => self.scale(name, req),
                _ => method_not_allowed("POST"),
            };
        }
        match (req.path, req.method) {
            ("/system/info", "GET") => Ok(json(
                200,
                &SystemInfo {
                    provider: ProviderInfo {
                        provider: PROVIDER_NAME.into(),
                        version: version(),
                        orchestration: PROVIDER_NAME.into(),
                    },
                    version: version(),
                    arch: std::env::consts::ARCH.into(),
                },
            )),
            ("/system/info", _) => method_not_allowed("GET"),
            ("/system/namespaces", "GET") => Ok(json(200, &[&self.cfg.namespace])),
            ("/system/namespaces", _) => method_not_allowed("GET"),
            ("/system/functions", "GET") => {
                self.check_namespace(query_param(req.query, "namespace").as_deref())?;
                let list: Vec<FunctionStatus> =
                    self.registry.entries().iter().map(|(name, e)| self.status(name, e)).collect();
                Ok(json(200, &list))
            }
            ("/system/functions", "DELETE") => self.delete(req),
            ("/system/functions", _) => method_not_allowed("GET, POST, PUT, DELETE"),
            ("/system/secrets", method) => self.secrets(method, req),
            _ => Err(ApiError::new(404, "not_found", format!("no provider API at {}", req.path))),
        }
    }

    fn check_namespace(&self, ns: Option<&str>) -> Result<(), ApiError> {
        match ns {
            None | Some("") => Ok(()),
            Some(ns) if ns == self.cfg.namespace => Ok(()),
            Some(ns) => Err(ApiError::new(
                400,
                "bad_namespace",
                format!(
                    "namespace {ns:?} is not served here: this provider serves one namespace, {:?}",
                    self.cfg.namespace
                ),
            )),
        }
    }

    /// A function's status: its deployment field for field, and its real state.
    fn status(&self, name: &str, entry: &Entry) -> FunctionStatus {
        let records = self.records.read().unwrap_or_else(|e| e.into_inner());
        let mut st = match records.get(name) {
            Some((r, _)) => {
                let mut st = FunctionStatus::of(&r.deployment);
                st.created_at = httpd::date::rfc3339(r.created_at);
                st
            }
            // A bundle from --functions, not deployed through the API.
            None => {
                let args = entry.runner.config().args.join(" ");
                FunctionStatus {
                    name: name.into(),
                    spec: FunctionSpec { env_process: args, ..FunctionSpec::default() },
                    ..FunctionStatus::default()
                }
            }
        };
        drop(records);
        st.name = name.into();
        st.spec.namespace = self.cfg.namespace.clone();
        st.spec.labels.get_or_insert_with(BTreeMap::new).insert(FUNCTION_LABEL.into(), name.into());
        st.invocation_count = entry.metrics.calls() as f64;
        (st.replicas, st.available_replicas) = match &entry.runner {
            LoadedFunction::Native(f) => match self.runtime.function_stats(f) {
                Some(s) if s.idle => (0, 0),
                Some(s) => (s.target as u64, s.ready.min(s.target) as u64),
                // The pool is off (--pool-size 0): every call makes its VM.
                None => (0, 0),
            },
            // km runs a process per call; there is nothing kept ready.
            LoadedFunction::Km(_) => (0, 0),
        };
        st
    }

    fn scale(&self, name: &str, req: &ApiRequest) -> Result<Response, ApiError> {
        self.check_namespace(query_param(req.query, "namespace").as_deref())?;
        let r: ScaleServiceRequest = parse_body(req.body, "scale request")?;
        self.check_namespace(Some(&r.namespace))?;
        let entry = self.registry.get(name).ok_or_else(|| not_found(name))?;
        let replicas = usize::try_from(r.replicas).unwrap_or(usize::MAX).min(MAX_REPLICAS);
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).insert(name.into(), replicas as u64);
        if let LoadedFunction::Native(f) = &entry.runner {
            self.runtime.scale(f, replicas);
        }
        Ok(accepted(&format!("scaled {name} to {replicas}")))
    }

    fn secrets(&self, method: &str, req: &ApiRequest) -> Result<Response, ApiError> {
        self.check_namespace(query_param(req.query, "namespace").as_deref())?;
        let err = |e: secrets::SecretError| ApiError::new(e.status(), "secret", e.to_string());
        match method {
            "GET" => {
                let list: Vec<Secret> = self
                    .secrets
                    .names()
                    .map_err(err)?
                    .into_iter()
                    .map(|name| Secret { name, namespace: self.cfg.namespace.clone(), ..Secret::default() })
                    .collect();
                Ok(json(200, &list))
            }
            "POST" | "PUT" => {
                let s: Secret = parse_body(req.body, "secret")?;
                self.check_namespace(Some(&s.namespace))?;
                let value = if s.value.is_empty() { s.raw_value.clone() } else { s.value.clone().into_bytes() };
                self.secrets.put(&s.name, &value, method == "POST").map_err(err)?;
                Ok(accepted(&format!("secret {} {}", s.name, if method == "POST" { "created" } else { "updated" })))
            }
            "DELETE" => {
                let s: Secret = parse_body(req.body, "secret")?;
                self.check_namespace(Some(&s.namespace))?;
                self.secrets.remove(&s.name).map_err(err)?;
                Ok(accepted(&format!("secret {} removed", s.name)))
            }
            _ => {
                let mut r = Response::json_error(405, "method_not_allowed", "allowed: GET, POST, PUT, DELETE");
                r.headers.push("Allow: GET, POST, PUT, DELETE".into());
                Ok(r)
            }
        }
    }

    /// Deploys (or, `update`, replaces) a function; returns once it serves.
    fn deploy(&self, req: &ApiRequest, update: bool) -> Result<(Response, Option<SnapshotJob>), ApiError> {
        let mut d: FunctionDeployment = parse_body(req.body, "deployment")?;
        self.check_namespace(Some(&d.spec.namespace))?;
        let name = d.service.clone();
        if !valid_function_name(&name) || name == "healthz" || name == "metrics" || name == "system" {
            return Err(ApiError::new(
                400,
                "bad_request",
                format!(
                    "service {name:?}: a function name is 1-63 of [a-z0-9-] (a DNS label), and not a built-in route"
                ),
            ));
        }
        if d.spec.image.is_empty() {
            return Err(ApiError::new(400, "bad_request", "image is required"));
        }
        let Some(images) = &self.images else {
            return Err(ApiError::new(
                501,
                "no_image_store",
                "this server was started without --images: it cannot turn images into functions",
            ));
        };
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let exists = self.registry.get(&name).is_some();
        if update && !exists {
            return Err(not_found(&name));
        }
        if exists {
            self.check_owned(&name)?;
        }
        let secrets = self.secrets.values(d.spec.secrets.as_deref().unwrap_or_default()).map_err(|e| match e {
            secrets::SecretError::Missing(s) => {
                ApiError::new(400, "bad_request", bundle::BundleError::NoSecret(s).to_string())
            }
            e => ApiError::new(e.status(), "secret", e.to_string()),
        })?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let staging = self.state.join("staging").join(format!("{name}-{n}"));
        let scratch = self.state.join("scratch").join(format!("{name}-{n}"));
        let cleanup = |dirs: &[&Path]| {
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        };
        let image = match images.resolve(&d.spec.image, &scratch) {
            Ok(i) => i,
            Err(e) => {
                cleanup(&[&scratch]);
                let e = bundle::BundleError::from(e);
                return Err(ApiError::new(e.status(), "image", e.detail()));
            }
        };
        if d.spec.namespace.is_empty() {
            d.spec.namespace = self.cfg.namespace.clone();
        }
        let built = bundle::build(&d, &image, &secrets, &staging, self.caps, now_secs());
        cleanup(&[&scratch]);
        if let Err(e) = built {
            cleanup(&[&staging]);
            return Err(ApiError::new(e.status(), "image", e.detail()));
        }
        // The vmm must accept the program (a cold load parses it) before anything is swapped.
        if let Err(e) = registry::load_runner(&staging, vmm::StartMode::Cold, self.registry.caps()) {
            cleanup(&[&staging]);
            return Err(ApiError::new(422, "not_runnable", format!("{name}: {e}")));
        }
        let live = self.registry.dir().join(&name);
        let retired = match swap_in(&staging, &live, &self.state.join("retired").join(format!("{name}-{n}"))) {
            Ok(r) => r,
            Err(e) => {
                cleanup(&[&staging]);
                return Err(ApiError::new(500, "host", format!("{name}: cannot move the bundle into place: {e}")));
            }
        };
        // Served cold at once; the snapshot thread replaces it with its snapshot when taken.
        let runner = match registry::load_runner(&live, vmm::StartMode::Cold, self.registry.caps()) {
            Ok(r) => r,
            Err(e) => {
                // The program parsed in staging; this is the host failing, not the image.
                return Err(ApiError::new(500, "host", format!("{name}: the new bundle did not load: {e}")));
            }
        };
        let min = d.spec.labels.as_ref().and_then(|l| l.get(SCALE_MIN_LABEL)).and_then(|v| v.parse::<u64>().ok());
        if let Some(min) = min {
            self.replicas.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), min);
        }
        let record = DeploymentRecord { deployment: d, created_at: now_secs(), image_digest: image.manifest_digest };
        self.records.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), (record, n));
        self.registry.install(&name, runner, &self.runtime, &self.metrics, retired);
        self.apply_replicas(&name);
        eprintln!(
            "snapcall serve: {name}: deployed from {} ({})",
            image.reference,
            if exists { "replaced" } else { "new" }
        );
        let job = (self.registry.mode() == vmm::StartMode::Snapshot)
            .then(|| SnapshotJob { name: name.clone(), generation: n });
        Ok((accepted(&format!("deployed {name}")), job))
    }

    /// The replicas asked for `name` (scale-function or its min-scale label), applied to the
    /// version served now.
    fn apply_replicas(&self, name: &str) {
        let Some(n) = self.replicas.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied() else { return };
        if let Some(entry) = self.registry.get(name) {
            if let LoadedFunction::Native(f) = &entry.runner {
                self.runtime.scale(f, usize::try_from(n).unwrap_or(usize::MAX).min(MAX_REPLICAS));
            }
        }
    }

    /// A bundle the operator put into `--functions` is the operator's: the API neither
    /// replaces nor deletes it (409), only what it deployed itself.
    fn check_owned(&self, name: &str) -> Result<(), ApiError> {
        if self.records.read().unwrap_or_else(|e| e.into_inner()).contains_key(name) {
            return Ok(());
        }
        Err(ApiError::new(
            409,
            "not_deployed_here",
            format!(
                "{name} is a bundle in --functions, not deployed through this API: change or remove its \
                 directory and send SIGHUP"
            ),
        ))
    }

    /// Whether `generation` is the deploy `name` is served from now.
    fn is_current(&self, name: &str, generation: u64) -> bool {
        self.records.read().unwrap_or_else(|e| e.into_inner()).get(name).is_some_and(|(_, g)| *g == generation)
    }

    /// On the snapshot thread: snapshots a deployed version (the bundle in place, which only
    /// gains its `snapshot.kmsnap`) and serves it from the snapshot, if no deploy or delete
    /// replaced it meanwhile. A program that never reads stdin stays cold.
    fn snapshot(&self, job: SnapshotJob) {
        let SnapshotJob { name, generation } = job;
        if !self.is_current(&name, generation) {
            return;
        }
        let live = self.registry.dir().join(&name);
        match registry::load_runner(&live, vmm::StartMode::Snapshot, self.registry.caps()) {
            Ok(runner @ LoadedFunction::Native(_)) => {
                let LoadedFunction::Native(f) = &runner else { return };
                if !f.has_snapshot() {
                    return; // logged by the loader: it starts cold per call
                }
                let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
                if !self.is_current(&name, generation) {
                    return;
                }
                self.registry.install(&name, runner, &self.runtime, &self.metrics, None);
                self.apply_replicas(&name);
                eprintln!("snapcall serve: {name}: now served from its snapshot");
            }
            Ok(LoadedFunction::Km(_)) => {}
            Err(e) => eprintln!("snapcall serve: {name}: snapshot not taken ({e}): calls start cold"),
        }
    }

    fn delete(&self, req: &ApiRequest) -> Result<Response, ApiError> {
        self.check_namespace(query_param(req.query, "namespace").as_deref())?;
        let r: DeleteFunctionRequest = parse_body(req.body, "delete request")?;
        self.check_namespace(Some(&r.namespace))?;
        let name = r.function_name;
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if self.registry.get(&name).is_none() || !super::routes::valid_name(&name) {
            return Err(not_found(&name));
        }
        self.check_owned(&name)?;
        let live = self.registry.dir().join(&name);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let retired = self.state.join("retired").join(format!("{name}-{n}"));
        // Moved aside first (so a SIGHUP rescan cannot load it again), removed once no call
        // holds it.
        let retired = match std::fs::rename(&live, &retired) {
            Ok(()) => Some(retired),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ApiError::new(500, "host", format!("{name}: cannot remove {}: {e}", live.display()))),
        };
        self.registry.remove(&name, &self.runtime, retired);
        self.records.write().unwrap_or_else(|e| e.into_inner()).remove(&name);
        self.replicas.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
        eprintln!("snapcall serve: {name}: deleted");
        Ok(accepted(&format!("deleted {name}")))
    }
}

/// The most VMs one function may keep ready (a scale request asking more is lowered).
pub const MAX_REPLICAS: usize = 64;

fn not_found(name: &str) -> ApiError {
    ApiError::new(404, "not_found", format!("no function {name:?}"))
}

/// Puts the bundle `staging` at `live` in one step. If `live` existed, the two are exchanged
/// (`renameat2(RENAME_EXCHANGE)`) and the old bundle is moved on to `retired`, whose path
/// is returned.
fn swap_in(staging: &Path, live: &Path, retired: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    if !live.exists() {
        std::fs::rename(staging, live)?;
        return Ok(None);
    }
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
    };
    let (a, b) = (c(staging)?, c(live)?);
    // SAFETY: two NUL-terminated paths; AT_FDCWD for both; the result is checked.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::rename(staging, retired)?;
    Ok(Some(retired.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_names() {
        assert_eq!(query_param("namespace=openfaas-fn&usage=1", "namespace").as_deref(), Some("openfaas-fn"));
        assert_eq!(query_param("a=1&namespace=a%2Fb+c", "namespace").as_deref(), Some("a/b c"));
        assert_eq!(query_param("namespace", "namespace").as_deref(), Some(""));
        assert_eq!(query_param("x=%zz%4", "x").as_deref(), Some("%zz%4"));
        assert_eq!(query_param("", "namespace"), None);
        assert!(valid_function_name("env-test") && valid_function_name("a1"));
        for bad in ["", "Env", "a_b", "a.b", "-a", "a-", &"a".repeat(64), "../x"] {
            assert!(!valid_function_name(bad), "{bad}");
        }
        assert!(owns("/system/functions") && owns("/system/info") && !owns("/system/logs") && !owns("/systemd"));
        assert!(runs_long("PUT", "/system/functions") && !runs_long("GET", "/system/functions"));
    }
}
