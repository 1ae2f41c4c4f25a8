//! A `FunctionDeployment` and its image made into a bundle directory (`config.json` +
//! `rootfs/`, docs/architecture.md), the same layout `serve` reads from `--functions`:
//!
//! | deployment | bundle |
//! |---|---|
//! | `image` | its layers unpacked into `rootfs/` (`oci-image`) |
//! | `envProcess` (split on spaces, as the watchdog does), else the image's Entrypoint + Cmd | `process.args`, `args[0]` looked up on the image's `PATH` inside the rootfs |
//! | the image's `Env`, then `envVars` over it, then `fprocess` | `process.env` |
//! | the image's `WorkingDir` | `process.cwd` |
//! | `limits.memory` (a Kubernetes quantity) | `snapcall.memory_mib`: the guest's memory, so the cap on all it maps (at least the vmm's 32 MiB) |
//! | `envVars.exec_timeout` (of-watchdog: Go duration or seconds) | `snapcall.timeout_ms` |
//! | `envVars.content_type` (the watchdogs' setting) | `snapcall.content_type` |
//! | `envVars.max_inflight` (of-watchdog: calls in flight at most, 0 = no limit) | `snapcall.max_concurrency`: 429 over it |
//! | `secrets` | `rootfs/var/openfaas/secrets/NAME`, mode 0444 (the guest's rootfs is read-only) |
//! | the image's `snapcall.*` labels | the same annotations (e.g. `snapcall.response: cgi`) |
//!
//! The deployment itself is kept beside, in `openfaas-deployment.json`, so it comes back
//! field for field, and survives a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_image::{Image, Linking, UnpackLimits, UnpackReport};
use serde::{Deserialize, Serialize};

use super::types::FunctionDeployment;

/// Where a bundle keeps the deployment it was made from.
pub const DEPLOYMENT_FILE: &str = "openfaas-deployment.json";
/// Where OpenFaaS functions find their secrets.
pub const SECRETS_DIR: &str = "var/openfaas/secrets";
/// The vmm's smallest guest (`snapcall.memory_mib` minimum).
pub const MIN_MEMORY_MIB: u64 = 32;

/// Why a deployment cannot become a bundle. Each maps to one status (`status()`).
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Image(#[from] oci_image::OciError),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error(
        "{program} is dynamically linked (it asks for a program interpreter): snapcall runs static x86-64 \
         programs only; link it statically (e.g. musl, CGO_ENABLED=0)"
    )]
    Dynamic { program: String },
    #[error("limits.memory {asked} is {mib} MiB, over this server's --max-memory-mib {cap}")]
    TooMuchMemory { asked: String, mib: u64, cap: u64 },
    #[error("secret {0:?} does not exist in this namespace (create it with POST /system/secrets first)")]
    NoSecret(String),
    #[error("writing the bundle {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl BundleError {
    /// The sentence the API answers with: the error, and for an image over a cap which of
    /// the server's settings it is.
    pub fn detail(&self) -> String {
        match self {
            BundleError::Image(e) if e.kind() == oci_image::ErrorKind::TooBig => format!(
                "{e} (the unpacked bytes are this server's --max-image-mib; entries, layers, blob and \
                 archive sizes have fixed caps, docs/provider.md)"
            ),
            e => e.to_string(),
        }
    }

    pub fn status(&self) -> u16 {
        use oci_image::ErrorKind;
        match self {
            BundleError::Image(e) => match e.kind() {
                ErrorKind::NotFound => 404,
                ErrorKind::BadReference => 400,
                ErrorKind::BadImage | ErrorKind::Unsupported => 422,
                ErrorKind::TooBig => 413,
                ErrorKind::Host => 500,
            },
            BundleError::Invalid { .. } | BundleError::NoSecret(_) => 400,
            BundleError::Dynamic { .. } => 422,
            BundleError::TooMuchMemory { .. } => 413,
            BundleError::Write { .. } => 500,
        }
    }
}

/// What a bundle records about its deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRecord {
    pub deployment: FunctionDeployment,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The manifest digest the image reference resolved to.
    pub image_digest: String,
}

/// The operator's caps a deployment is held to.
#[derive(Debug, Clone, Copy)]
pub struct BundleCaps {
    pub max_memory_mib: u64,
    pub unpack: UnpackLimits,
}

/// Parses a Kubernetes quantity (`128Mi`, `1Gi`, `500M`, `1e9`, `0.5Gi`) into bytes.
pub fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let scale: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let bytes = (n * scale).ceil();
    (bytes <= u64::MAX as f64).then_some(bytes as u64)
}

/// Parses the watchdogs' timeouts: a Go duration (`10s`, `1m30s`, `500ms`) or whole seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(Duration::try_from_secs_f64(n * unit).ok()?)?;
    }
    Some(total)
}

/// The process a deployment runs: `envProcess` split on whitespace, else the image's
/// Entrypoint followed by its Cmd.
fn command(d: &FunctionDeployment, image: &Image) -> Result<Vec<String>, BundleError> {
    let args: Vec<String> = if !d.spec.env_process.trim().is_empty() {
        d.spec.env_process.split_whitespace().map(str::to_string).collect()
    } else {
        image.config.entrypoint.iter().chain(&image.config.cmd).cloned().collect()
    };
    if args.is_empty() {
        return Err(BundleError::Invalid {
            field: "envProcess",
            problem: "is empty and the image has no Entrypoint or Cmd: nothing to run".into(),
        });
    }
    Ok(args)
}

/// The process environment: the image's, then the deployment's variables over it.
fn environment(d: &FunctionDeployment, image: &Image) -> Result<Vec<String>, BundleError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for kv in &image.config.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in d.spec.env_vars.iter().flatten() {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(BundleError::Invalid {
                field: "envVars",
                problem: format!("{k:?}: a name must be non-empty without '=' or NUL, a value without NUL"),
            });
        }
        set(k, v);
    }
    if !d.spec.env_process.is_empty() {
        set("fprocess", &d.spec.env_process);
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Builds the bundle for `d` from `image` in `dir` (which must not exist yet).
pub fn build(
    d: &FunctionDeployment,
    image: &Image,
    secrets: &BTreeMap<String, Vec<u8>>,
    dir: &Path,
    caps: BundleCaps,
    created_at: u64,
) -> Result<UnpackReport, BundleError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Write { path, source }
    };
    // Cheap checks first: nothing is unpacked for a deployment that cannot run.
    // An image built for snapcall may say how it runs (`snapcall.response: cgi`); what the
    // deployment sets (memory, timeout) is added over it.
    let mut annotations: BTreeMap<String, String> = image
        .config
        .labels
        .iter()
        .filter(|(k, _)| k.starts_with("snapcall."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(limits) = &d.spec.limits {
        if !limits.memory.is_empty() {
            let bytes = parse_quantity(&limits.memory).ok_or_else(|| BundleError::Invalid {
                field: "limits.memory",
                problem: format!("{:?} is not a quantity (e.g. 128Mi, 1Gi)", limits.memory),
            })?;
            let mib = bytes.div_ceil(1 << 20).max(MIN_MEMORY_MIB);
            if mib > caps.max_memory_mib {
                return Err(BundleError::TooMuchMemory { asked: limits.memory.clone(), mib, cap: caps.max_memory_mib });
            }
            annotations.insert("snapcall.memory_mib".to_string(), mib.to_string());
        }
    }
    let vars = d.spec.env_vars.clone().unwrap_or_default();
    if let Some(t) = vars.get("exec_timeout") {
        let timeout = parse_duration(t).filter(|t| !t.is_zero()).ok_or_else(|| BundleError::Invalid {
            field: "envVars.exec_timeout",
            problem: format!("{t:?} is not a duration (10s, 1m30s) or a number of seconds"),
        })?;
        annotations.insert("snapcall.timeout_ms".to_string(), timeout.as_millis().clamp(1, 3_600_000).to_string());
    }
    // of-watchdog's max_inflight: 0 (its default) is no limit.
    if let Some(n) = vars.get("max_inflight") {
        let n: usize = n.trim().parse().map_err(|_| BundleError::Invalid {
            field: "envVars.max_inflight",
            problem: format!("{n:?} is not a whole number of calls"),
        })?;
        if n > 0 {
            annotations.insert(super::super::registry::MAX_CONCURRENCY.to_string(), n.to_string());
        }
    }
    if let Some(ct) = vars.get("content_type").filter(|c| !c.is_empty()) {
        if ct.bytes().any(|b| b.is_ascii_control()) {
            return Err(BundleError::Invalid {
                field: "envVars.content_type",
                problem: "has control characters".into(),
            });
        }
        annotations.insert("snapcall.content_type".to_string(), ct.clone());
    }
    for name in d.spec.secrets.iter().flatten() {
        if !secrets.contains_key(name) {
            return Err(BundleError::NoSecret(name.clone()));
        }
    }
    // OpenFaaS behaviours: Http_* variables per call when it starts cold, X-Call-Id.
    annotations.insert("snapcall.watchdog".to_string(), "true".to_string());
    let mut args = command(d, image)?;
    let env = environment(d, image)?;

    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(write_err(&rootfs))?;
    let report = oci_image::unpack_image(image, &rootfs, caps.unpack)?;
    let cwd = if image.config.working_dir.is_empty() { "/".to_string() } else { image.config.working_dir.clone() };
    let path_env = env.iter().find_map(|kv| kv.strip_prefix("PATH="));
    let program = oci_image::find_program(&rootfs, &args[0], path_env, &cwd)?;
    if oci_image::elf_linking(&rootfs, &program)? == Linking::Dynamic {
        return Err(BundleError::Dynamic { program });
    }
    args[0] = program;
    for name in d.spec.secrets.iter().flatten() {
        let rel = Path::new(SECRETS_DIR).join(name);
        oci_image::write_file_in_root(&rootfs, &rel, &secrets[name], 0o444).map_err(write_err(&rootfs.join(&rel)))?;
    }
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": { "args": args, "env": env, "cwd": cwd },
        "root": { "path": "rootfs", "readonly": true },
        "annotations": annotations,
    });
    let config_path = dir.join("config.json");
    let text = serde_json::to_vec_pretty(&config).map_err(|e| write_err(&config_path)(std::io::Error::other(e)))?;
    std::fs::write(&config_path, text).map_err(write_err(&config_path))?;
    let record = DeploymentRecord { deployment: d.clone(), created_at, image_digest: image.manifest_digest.clone() };
    let record_path = dir.join(DEPLOYMENT_FILE);
    let text = serde_json::to_vec_pretty(&record).map_err(|e| write_err(&record_path)(std::io::Error::other(e)))?;
    std::fs::write(&record_path, text).map_err(write_err(&record_path))?;
    Ok(report)
}

/// The deployment a bundle was made from, if it was.
pub fn read_record(bundle: &Path) -> Option<DeploymentRecord> {
    let text = std::fs::read(bundle.join(DEPLOYMENT_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_durations() {
        assert_eq!(parse_quantity("5Mi"), Some(5 << 20));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("128M"), Some(128_000_000));
        assert_eq!(parse_quantity("0.5Gi"), Some(512 << 20));
        assert_eq!(parse_quantity("1e9"), Some(1_000_000_000));
        assert_eq!(parse_quantity("1000"), Some(1000));
        for bad in ["", "Mi", "5Xi", "-1Mi", "lots", "1e999"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        for bad in ["", "s", "10x", "ten seconds", "-1s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
