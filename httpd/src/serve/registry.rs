//! The functions being served: one bundle per subdirectory of `--functions`, found at start
//! and again on SIGHUP.
//!
//! A rescan loads new and changed bundles on the signal-handling thread, then swaps the whole
//! table in one step; the event loops keep serving from the old table meanwhile, and a call
//! in progress keeps its `Arc<Entry>` until it ends. A bundle whose new version fails to load
//! keeps being served in its old version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use vmm::km::{needs_km, KmFunction};
use vmm::{BundleConfig, Function, FunctionError, Runtime, StartMode};

use super::metrics::{FnMetrics, Metrics};
use super::routes;

/// One loaded function.
pub struct Entry {
    pub runner: LoadedFunction,
    pub metrics: Arc<FnMetrics>,
    /// The bundle's own limit on calls in flight ([`MAX_CONCURRENCY`]), under the server's.
    pub max_concurrency: Option<usize>,
    fingerprint: Fingerprint,
    /// Set when a deploy replaced this version: its old bundle directory, removed once the
    /// last call holding this entry is done (calls in flight finish on the old version).
    retired_dir: Mutex<Option<PathBuf>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(dir) = self.retired_dir.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            // Off the thread that dropped it (maybe a call's worker): a rootfs takes a while.
            let _ = std::thread::Builder::new().name("retire-bundle".into()).spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("snapcall serve: cannot remove the retired bundle {}: {e}", dir.display());
                }
            });
        }
    }
}

/// A loaded function, by the runner its calls need ([`vmm::Runner`], from its bundle).
pub enum LoadedFunction {
    /// snapcall's vmm: a brand-new VM per call.
    Native(Function),
    /// Kontain's km, one process per call (the bundle or its snapshot needs km).
    Km(KmFunction),
}

impl LoadedFunction {
    pub fn config(&self) -> &BundleConfig {
        match self {
            LoadedFunction::Native(f) => f.config(),
            LoadedFunction::Km(f) => f.config(),
        }
    }
}

/// The annotation limiting one function's calls in flight (of-watchdog's `max_inflight`,
/// which the provider maps onto it): over it, 429, as over `--max-concurrency-per-function`.
pub const MAX_CONCURRENCY: &str = "snapcall.max_concurrency";

/// The bundle's [`MAX_CONCURRENCY`], if it sets one; the error says what it must be.
pub fn max_concurrency(config: &BundleConfig) -> Result<Option<usize>, String> {
    let Some(v) = config.annotation(MAX_CONCURRENCY) else { return Ok(None) };
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(format!("annotation {MAX_CONCURRENCY} must be a whole number of calls, at least 1, not {v:?}")),
    }
}

impl Entry {
    /// This version is no longer served: the pool stops keeping VMs for it, and `dir` (its
    /// moved-aside bundle) goes when the last call holding it ends.
    fn retire(&self, runtime: &Runtime, dir: Option<PathBuf>) {
        if let LoadedFunction::Native(function) = &self.runner {
            runtime.forget(function);
        }
        *self.retired_dir.lock().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    pub fn name(&self) -> &str {
        match &self.runner {
            LoadedFunction::Native(f) => f.name(),
            LoadedFunction::Km(f) => f.name(),
        }
    }
}

/// What a bundle looked like when it was loaded: sizes and modification times of its
/// config, snapshot and every rootfs file. Any difference means "changed".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fingerprint {
    config: (u64, u128),
    snapshot: Option<(u64, u128)>,
    rootfs_files: u64,
    rootfs_bytes: u64,
    rootfs_newest: u128,
}

fn meta(path: &Path) -> Option<(u64, u128)> {
    let m = std::fs::metadata(path).ok()?;
    let mtime = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?.as_nanos();
    Some((m.len(), mtime))
}

fn walk(dir: &Path, fp: &mut Fingerprint, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let Ok(m) = e.path().symlink_metadata() else { continue };
        fp.rootfs_files += 1;
        fp.rootfs_bytes += m.len();
        if let Ok(t) = m.modified() {
            fp.rootfs_newest = fp.rootfs_newest.max(t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        }
        if m.is_dir() && depth < 64 {
            walk(&e.path(), fp, depth + 1);
        }
    }
}

fn fingerprint(bundle: &Path) -> Fingerprint {
    let mut fp = Fingerprint {
        config: meta(&bundle.join("config.json")).unwrap_or_default(),
        snapshot: meta(&bundle.join("snapshot.kmsnap")),
        ..Fingerprint::default()
    };
    walk(&bundle.join("rootfs"), &mut fp, 0);
    fp
}

/// The operator's caps on what a bundle's config.json may ask for (`--max-timeout-ms`,
/// `--max-memory-mib`).
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// A longer `snapcall.timeout_ms` is lowered to this (the call just ends sooner).
    pub max_timeout: Duration,
    /// A larger `snapcall.memory_mib` is refused at load: the guest's memory size is part of
    /// its snapshot and its program's layout, so it cannot be lowered behind its back.
    pub max_memory_bytes: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { max_timeout: Duration::MAX, max_memory_bytes: u64::MAX }
    }
}

/// Loads a bundle for the runner it needs: km when its annotation or its snapshot asks for
/// km (`vmm::km::needs_km`), else the native vmm. The caps are applied before anything is
/// loaded or snapshotted.
pub fn load_runner(dir: &Path, mode: StartMode, caps: Caps) -> Result<LoadedFunction, String> {
    let config = BundleConfig::load(dir).map_err(|e| e.to_string())?;
    max_concurrency(&config)?;
    let (memory, timeout) = (config.limits.memory_bytes, config.limits.timeout);
    if memory > caps.max_memory_bytes {
        return Err(format!(
            "its config.json asks for {} MiB of guest memory (snapcall.memory_mib), over this server's \
             --max-memory-mib {}",
            memory >> 20,
            caps.max_memory_bytes >> 20
        ));
    }
    if timeout > caps.max_timeout {
        eprintln!(
            "snapcall serve: {}: snapcall.timeout_ms {} lowered to this server's --max-timeout-ms {}",
            config.name,
            timeout.as_millis(),
            caps.max_timeout.as_millis()
        );
    }
    if let Some(why) = needs_km(&config) {
        eprintln!("snapcall serve: {}: runs under km: {why}", config.name);
        let mut f = KmFunction::load(dir, why).map_err(|e| e.to_string())?;
        f.cap_timeout(caps.max_timeout);
        return Ok(LoadedFunction::Km(f));
    }
    let mut f = load(dir, mode).map_err(|e| e.to_string())?;
    f.cap_timeout(caps.max_timeout);
    Ok(LoadedFunction::Native(f))
}

/// Loads a bundle. In snapshot mode a valid `snapshot.kmsnap` is used as is; a missing,
/// stale or corrupt one is replaced by a fresh snapshot (written beside, then renamed over
/// it, so a reader never sees half a file). A function that cannot be snapshotted (it never
/// reads stdin, or its bundle is read-only) is served cold, with a warning.
fn load(dir: &Path, mode: StartMode) -> Result<Function, FunctionError> {
    if mode == StartMode::Cold {
        return Function::load(dir, StartMode::Cold);
    }
    let why = match Function::load(dir, StartMode::Snapshot) {
        Ok(f) if f.has_snapshot() => return Ok(f),
        Ok(_) => "no snapshot".to_owned(),
        Err(FunctionError::Snapshot { source, .. }) => format!("snapshot not usable ({source})"),
        Err(e) => return Err(e),
    };
    let cold = Function::load(dir, StartMode::Cold)?;
    let path = dir.join(vmm::snapshot::SNAPSHOT_FILE);
    let tmp = dir.join(format!(".{}.tmp-{}", vmm::snapshot::SNAPSHOT_FILE, std::process::id()));
    let taken = cold
        .take_snapshot(&tmp)
        .map_err(|e| e.to_string())
        .and_then(|_| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
    match taken {
        Ok(()) => {
            eprintln!("snapcall serve: {}: {why}: took a fresh snapshot", cold.name());
            Function::load(dir, StartMode::Snapshot)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("snapcall serve: {}: {why}, and snapshotting failed ({e}): calls start cold", cold.name());
            Ok(cold)
        }
    }
}

/// What a rescan did, for the log.
#[derive(Debug, Default)]
pub struct Summary {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub kept: usize,
    pub failed: Vec<(String, String)>,
}

/// The table of served functions.
pub struct Registry {
    dir: PathBuf,
    mode: StartMode,
    caps: Caps,
    table: RwLock<Arc<BTreeMap<String, Arc<Entry>>>>,
    /// Held by whoever changes the table (a rescan, a deploy, a delete), so no change is lost
    /// to another made from the same old table.
    update: Mutex<()>,
}

impl Registry {
    pub fn new(dir: PathBuf, mode: StartMode, caps: Caps) -> Registry {
        Registry { dir, mode, caps, table: RwLock::new(Arc::new(BTreeMap::new())), update: Mutex::new(()) }
    }

    /// The functions directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn mode(&self) -> StartMode {
        self.mode
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Every function served now, by name.
    pub fn entries(&self) -> Arc<BTreeMap<String, Arc<Entry>>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Serves `runner` as `name` from now on, in one step; the version it replaces (if any)
    /// is returned, and its pool VMs released. `retired` is the replaced version's bundle
    /// directory if it was moved aside: removed once no call holds the old version.
    pub fn install(
        &self,
        name: &str,
        runner: LoadedFunction,
        runtime: &Runtime,
        metrics: &Metrics,
        retired: Option<PathBuf>,
    ) -> Option<Arc<Entry>> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        if let LoadedFunction::Native(function) = &runner {
            runtime.keep_ready(function);
        }
        let entry = Arc::new(Entry {
            max_concurrency: max_concurrency(runner.config()).ok().flatten(),
            runner,
            metrics: metrics.function(name),
            fingerprint: fingerprint(&self.dir.join(name)),
            retired_dir: Mutex::new(None),
        });
        let mut next = (*self.entries()).clone();
        let old = next.insert(name.to_string(), entry);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        if let Some(old) = &old {
            old.retire(runtime, retired);
        }
        old
    }

    /// Stops serving `name`; its bundle directory `retired` (moved aside by the caller) is
    /// removed once no call holds it.
    pub fn remove(&self, name: &str, runtime: &Runtime, retired: Option<PathBuf>) -> Option<Arc<Entry>> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (*self.entries()).clone();
        let old = next.remove(name);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        if let Some(old) = &old {
            old.retire(runtime, retired);
        }
        old
    }

    /// The function called `name`, if served.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.table.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Re-reads the functions directory; loads what is new or changed, drops what is gone.
    pub fn rescan(&self, runtime: &Runtime, metrics: &Metrics) -> std::io::Result<Summary> {
        let _update = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.table.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut next = BTreeMap::new();
        let mut summary = Summary::default();
        let mut dirs: Vec<(String, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let path = e.path();
            let Some(name) = e.file_name().to_str().map(str::to_owned) else { continue };
            if !path.join("config.json").is_file() {
                continue;
            }
            if !routes::valid_name(&name) {
                summary.failed.push((name, "name is not a valid route".into()));
                continue;
            }
            if name == "healthz" || name == "metrics" {
                eprintln!("snapcall serve: bundle {name} is reachable only as /function/{name}");
            }
            dirs.push((name, path));
        }
        for (name, path) in dirs {
            let fp = fingerprint(&path);
            if let Some(entry) = old.get(&name).filter(|e| e.fingerprint == fp) {
                next.insert(name, entry.clone());
                summary.kept += 1;
                continue;
            }
            match load_runner(&path, self.mode, self.caps) {
                Ok(runner) => {
                    if let LoadedFunction::Native(function) = &runner {
                        runtime.keep_ready(function);
                    }
                    // Loading may have written a fresh snapshot: fingerprint what is there now.
                    let fingerprint = fingerprint(&path);
                    let metrics = metrics.function(&name);
                    if old.contains_key(&name) {
                        summary.changed.push(name.clone());
                    } else {
                        summary.added.push(name.clone());
                    }
                    let max_concurrency = max_concurrency(runner.config()).ok().flatten();
                    let entry = Entry { runner, metrics, max_concurrency, fingerprint, retired_dir: Mutex::new(None) };
                    next.insert(name, Arc::new(entry));
                }
                Err(e) => {
                    if let Some(entry) = old.get(&name) {
                        next.insert(name.clone(), entry.clone());
                    }
                    summary.failed.push((name, e.to_string()));
                }
            }
        }
        summary.removed = old.keys().filter(|k| !next.contains_key(*k)).cloned().collect();
        let next = Arc::new(next);
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = next.clone();
        // The pool stops restoring VMs ahead for versions no longer served. A call still
        // running on an old version keeps its entry and gets an inline VM if it needs one.
        for (name, entry) in old.iter() {
            if let (false, LoadedFunction::Native(function)) =
                (next.get(name).is_some_and(|n| Arc::ptr_eq(n, entry)), &entry.runner)
            {
                runtime.forget(function);
            }
        }
        Ok(summary)
    }
}
