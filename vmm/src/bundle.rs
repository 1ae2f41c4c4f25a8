//! Function bundles: an OCI runtime bundle directory (`config.json` + rootfs), as the seed's
//! server used. snapcall's own settings are OCI annotations (docs/architecture.md lists them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// A missing or malformed bundle, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// config.json could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The bundle's config.json.
        file: PathBuf,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// config.json is not JSON.
    #[error("{file}: not valid JSON: {source}")]
    Json {
        /// The bundle's config.json.
        file: PathBuf,
        /// What failed underneath.
        source: serde_json::Error,
    },
    /// A field is missing or has the wrong type or value.
    #[error("{file}: field `{field}` {problem}")]
    Field {
        /// The bundle's config.json.
        file: PathBuf,
        /// The field, as a dotted path (`process.args`).
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// Per-call limits of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Guest memory size: the cap on everything the program maps.
    pub memory_bytes: u64,
    /// Wall-clock deadline of one call.
    pub timeout: Duration,
    /// Cap on stdout + stderr.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 256 << 20, timeout: Duration::from_secs(10), max_output_bytes: 16 << 20 }
    }
}

/// Which runner a function needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// snapcall's own vmm.
    Native,
    /// Kontain's `km` executable, per call.
    Km,
}

/// How the program's stdout becomes the HTTP response (`snapcall.response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseFormat {
    /// stdout is the body; status 200, `snapcall.content_type` (`body`, the default).
    #[default]
    Body,
    /// stdout starts with a CGI-style head (RFC 3875 §6: `Status:`, `Content-Type:`, other
    /// headers, a blank line), then the body (`cgi`). The Python runtime always writes one.
    Cgi,
}

/// Everything `config.json` says about a function.
#[derive(Debug, Clone)]
pub struct BundleConfig {
    /// Bundle directory.
    pub dir: PathBuf,
    /// Function name (the directory's name).
    pub name: String,
    /// `process.args`; `args[0]` is the program inside the rootfs.
    pub args: Vec<String>,
    /// `process.env`: the program's environment, `NAME=value`.
    pub env: Vec<String>,
    /// `process.cwd`: the program's working directory inside the rootfs.
    pub cwd: String,
    /// Host path of the rootfs.
    pub rootfs: PathBuf,
    /// Per-call limits (`snapcall.memory_mib`, `snapcall.timeout_ms`, ...).
    pub limits: Limits,
    /// The response's Content-Type (`snapcall.content_type`).
    pub content_type: String,
    /// How the program's stdout becomes the response (plain body, or a CGI head first).
    pub response: ResponseFormat,
    /// Which runner its calls need (`snapcall.runner`).
    pub runner: Runner,
    /// A sample request the program handles once before its snapshot is taken
    /// (`snapcall.warmup_request`, hex), so the caches it fills are in the snapshot.
    pub warmup_request: Option<Vec<u8>>,
    /// `snapcall.watchdog: "true"`: OpenFaaS watchdog behaviours, for functions deployed from
    /// images (`snapcall serve --provider`). A call that starts cold gets the request in
    /// `Http_*` environment variables ([`crate::RequestHead::watchdog_env`]); the server adds
    /// `X-Call-Id` and `X-Start-Time` to its responses. Off by default: a plain bundle pays
    /// nothing for it.
    pub watchdog: bool,
    /// All annotations, for runtimes that read their own (e.g. Python's module/handler).
    pub annotations: Vec<(String, String)>,
    /// config.json as it was read, for the bundle's hash (a snapshot's identity): the hash
    /// is of what this configuration was parsed from, and the file is not read again.
    pub(crate) source: std::sync::Arc<[u8]>,
}

impl BundleConfig {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<BundleConfig, BundleError> {
        let file = dir.join("config.json");
        let text = std::fs::read(&file).map_err(|source| BundleError::Read { file: file.clone(), source })?;
        let json: Value =
            serde_json::from_slice(&text).map_err(|source| BundleError::Json { file: file.clone(), source })?;
        let field = |field: &'static str, problem: &str| BundleError::Field {
            file: file.clone(),
            field,
            problem: problem.into(),
        };
        let strings = |v: Option<&Value>, name: &'static str| -> Result<Vec<String>, BundleError> {
            match v {
                None => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).ok_or_else(|| field(name, "must be an array of strings")))
                    .collect(),
                Some(_) => Err(field(name, "must be an array of strings")),
            }
        };
        let process = json.get("process").ok_or_else(|| field("process", "is missing"))?;
        let args = strings(process.get("args"), "process.args")?;
        match args.first() {
            Some(a0) if a0.starts_with('/') => {}
            Some(_) => return Err(field("process.args", "args[0] must be an absolute path inside the rootfs")),
            None => return Err(field("process.args", "must name the program (args[0])")),
        }
        let env = strings(process.get("env"), "process.env")?;
        let cwd = match process.get("cwd") {
            None => "/".to_string(),
            Some(Value::String(s)) if s.starts_with('/') => s.clone(),
            Some(_) => return Err(field("process.cwd", "must be an absolute path")),
        };
        let root = json.get("root").and_then(|r| r.get("path"));
        let rootfs = match root {
            None => dir.join("rootfs"),
            Some(Value::String(s)) => dir.join(s),
            Some(_) => return Err(field("root.path", "must be a string")),
        };
        let rootfs = rootfs_inside(dir, &rootfs).map_err(|problem| field("root.path", &problem))?;
        let mut annotations = Vec::new();
        match json.get("annotations") {
            None => {}
            Some(Value::Object(map)) => {
                for (k, v) in map {
                    let v =
                        v.as_str().ok_or_else(|| field("annotations", &format!("value of {k} must be a string")))?;
                    annotations.push((k.clone(), v.to_string()));
                }
            }
            Some(_) => return Err(field("annotations", "must be an object")),
        }
        let get = |k: &str| annotations.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let number = |k: &'static str, min: u64, max: u64| -> Result<Option<u64>, BundleError> {
            match get(k) {
                None => Ok(None),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                    _ => Err(field(k, &format!("must be a whole number from {min} to {max}, not {v:?}"))),
                },
            }
        };
        let mut limits = Limits::default();
        if let Some(mib) = number("snapcall.memory_mib", 32, 4096)? {
            limits.memory_bytes = (mib.div_ceil(2) * 2) << 20;
        }
        if let Some(ms) = number("snapcall.timeout_ms", 1, 3_600_000)? {
            limits.timeout = Duration::from_millis(ms);
        }
        if let Some(n) = number("snapcall.max_output_bytes", 1, 1 << 30)? {
            limits.max_output_bytes = n as usize;
        }
        let runner = match get("snapcall.runner") {
            None | Some("native") => Runner::Native,
            Some("km") => Runner::Km,
            Some(other) => {
                return Err(field("snapcall.runner", &format!("must be \"native\" or \"km\", not {other:?}")))
            }
        };
        let watchdog = match get("snapcall.watchdog") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(field("snapcall.watchdog", &format!("must be \"true\" or \"false\", not {other:?}")))
            }
        };
        let response = match get("snapcall.response") {
            None | Some("body") => ResponseFormat::Body,
            Some("cgi") => ResponseFormat::Cgi,
            Some(other) => {
                return Err(field("snapcall.response", &format!("must be \"body\" or \"cgi\", not {other:?}")))
            }
        };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| field("(directory name)", "must be valid UTF-8"))?
            .to_string();
        Ok(BundleConfig {
            dir: dir.to_path_buf(),
            name,
            args,
            env,
            cwd,
            rootfs,
            limits,
            content_type: get("snapcall.content_type").unwrap_or("application/octet-stream").to_string(),
            response,
            runner,
            warmup_request: get("snapcall.warmup_request").map(|s| s.as_bytes().to_vec()),
            watchdog,
            annotations,
            source: text.into(),
        })
    }

    /// The value of annotation `key`.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The rootfs directory `rootfs`, resolved (symlinks and `..` included), provided it lies
/// strictly inside the bundle directory `dir`: a bundle may not make the host's `/`, or any
/// directory outside itself, the guest's root.
fn rootfs_inside(dir: &Path, rootfs: &Path) -> Result<PathBuf, String> {
    let bundle = dir.canonicalize().map_err(|e| format!("bundle directory {}: {e}", dir.display()))?;
    let resolved = rootfs.canonicalize().map_err(|e| format!("{}: {e}", rootfs.display()))?;
    if !resolved.is_dir() {
        return Err(format!("{} is not a directory", rootfs.display()));
    }
    if resolved == bundle || !resolved.starts_with(&bundle) {
        return Err(format!(
            "{} resolves to {}, which is not inside the bundle directory {}",
            rootfs.display(),
            resolved.display(),
            bundle.display()
        ));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str) -> (PathBuf, Result<BundleConfig, BundleError>) {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("snapcall-bundle-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs/inner")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("outside-link")).unwrap();
        std::fs::write(dir.join("config.json"), config).unwrap();
        let r = BundleConfig::load(&dir);
        (dir, r)
    }

    #[test]
    fn reads_args_env_cwd_and_annotations() {
        let (dir, r) = bundle(
            r#"{"process":{"args":["/bin/f","x"],"env":["A=1"],"cwd":"/tmp"},"root":{"path":"rootfs"},
               "annotations":{"snapcall.memory_mib":"64","snapcall.timeout_ms":"500","snapcall.content_type":"text/plain"}}"#,
        );
        let c = r.unwrap();
        assert_eq!(c.args, ["/bin/f", "x"]);
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.cwd, "/tmp");
        assert_eq!(c.limits.memory_bytes, 64 << 20);
        assert_eq!(c.limits.timeout, Duration::from_millis(500));
        assert_eq!(c.content_type, "text/plain");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_root_inside_the_bundle_is_accepted_and_resolved() {
        for path in ["rootfs", "rootfs/inner", "./rootfs/../rootfs/inner/.."] {
            let (dir, r) = bundle(&format!(r#"{{"process":{{"args":["/f"]}},"root":{{"path":"{path}"}}}}"#));
            let c = r.unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(c.rootfs.starts_with(dir.canonicalize().unwrap()) && c.rootfs.is_absolute(), "{path}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn errors_name_the_file_and_field() {
        for (config, field) in [
            (r#"{"process":{}}"#, "process.args"),
            (r#"{"process":{"args":["bin/f"]}}"#, "process.args"),
            (r#"{"process":{"args":[1]}}"#, "process.args"),
            (r#"{"process":{"args":["/f"]},"annotations":{"snapcall.memory_mib":"lots"}}"#, "snapcall.memory_mib"),
            (r#"{"process":{"args":["/f"]},"annotations":{"snapcall.memory_mib":"8"}}"#, "snapcall.memory_mib"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"nope"}}"#, "root.path"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"/"}}"#, "root.path"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"../../../../../../.."}}"#, "root.path"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"rootfs/../.."}}"#, "root.path"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"."}}"#, "root.path"),
            (r#"{"process":{"args":["/f"]},"root":{"path":"outside-link"}}"#, "root.path"),
        ] {
            let (dir, r) = bundle(config);
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("config.json") && msg.contains(field), "{msg}");
            std::fs::remove_dir_all(dir).unwrap();
        }
        let (dir, r) = bundle("{not json");
        assert!(matches!(r, Err(BundleError::Json { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
