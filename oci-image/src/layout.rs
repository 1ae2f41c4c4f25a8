//! One OCI image layout directory: `oci-layout`, `index.json`, `blobs/<alg>/<hex>`
//! (image-spec `image-layout.md`). JSON blobs are read whole (at most [`MAX_JSON`]) and their
//! size and sha256 digest checked against their descriptor before they are parsed; layers are
//! verified by [`crate::unpack`] before they are read.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::OciError;
use crate::reference::{check_digest, ImageRef};

/// Largest index, manifest or config blob read (they are a few KiB in practice).
pub const MAX_JSON: u64 = 4 << 20;
/// Most layers an image may have (Docker's own limit is 127).
pub const MAX_LAYERS: usize = 128;
/// Nested indexes followed at most (an index of indexes of ...).
const MAX_INDEX_DEPTH: usize = 4;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MT_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MT_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// A content descriptor (image-spec `descriptor.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootfsDiffs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RootfsDiffs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What the image's config says about running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Empty: `/`.
    pub working_dir: String,
    pub user: String,
    /// The image's labels (`snapcall.*` ones say how snapcall runs it, e.g. `snapcall.response`).
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub os: String,
}

/// An image resolved in a layout: its config and its layers, bottom first.
#[derive(Debug, Clone)]
pub struct Image {
    /// The layout directory holding its blobs.
    pub layout: PathBuf,
    /// The reference it was resolved from, normalised.
    pub reference: String,
    /// `sha256:...` of its manifest.
    pub manifest_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<Descriptor>,
    /// The uncompressed digest of each layer, from the config (empty if the config has none).
    pub diff_ids: Vec<String>,
}

impl Image {
    /// Sum of the layers' (compressed) sizes as their descriptors state them.
    pub fn compressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// The path of a blob inside a layout, after checking its digest's syntax (so it is
/// `blobs/sha256/<64 hex>` and nothing else).
pub fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf, OciError> {
    check_digest(digest).map_err(|p| OciError::bad(format!("descriptor in {}", layout.display()), p))?;
    let hex = &digest["sha256:".len()..];
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// Reads a small blob whole and checks its size and digest.
fn read_json_blob(layout: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>, OciError> {
    if d.size > MAX_JSON {
        return Err(OciError::TooBig { what: what.into(), problem: format!("{} bytes, over {MAX_JSON}", d.size) });
    }
    let path = blob_path(layout, &d.digest)?;
    let file = std::fs::File::open(&path).map_err(OciError::io(format!("{what}: blob {}", path.display())))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON + 1).read_to_end(&mut bytes).map_err(OciError::io(format!("{what}: {}", path.display())))?;
    if bytes.len() as u64 != d.size {
        return Err(OciError::bad(what, format!("the descriptor says {} bytes, the blob has {}", d.size, bytes.len())));
    }
    let actual = format!("sha256:{:x}", Sha256::digest(&bytes));
    if actual != d.digest {
        return Err(OciError::DigestMismatch { what: what.into(), expected: d.digest.clone(), actual });
    }
    Ok(bytes)
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, OciError> {
    serde_json::from_slice(bytes).map_err(|e| OciError::bad(what, format!("not valid JSON for its type: {e}")))
}

/// Whether `layout` looks like an OCI image layout (has `oci-layout` and `index.json`).
pub fn is_layout(layout: &Path) -> bool {
    layout.join("oci-layout").is_file() && layout.join("index.json").is_file()
}

/// Finds `reference` in the layout at `layout`. `names` are the `ref.name` annotations that
/// count as a match (e.g. `latest` and `docker.io/functions/alpine:latest`); a digest
/// reference matches the manifest digest instead.
pub fn resolve(layout: &Path, reference: &ImageRef, names: &[String]) -> Result<Option<Image>, OciError> {
    let index_path = layout.join("index.json");
    let meta = std::fs::metadata(&index_path).map_err(OciError::io(format!("{}", index_path.display())))?;
    if meta.len() > MAX_JSON {
        return Err(OciError::TooBig {
            what: index_path.display().to_string(),
            problem: format!("over {MAX_JSON} bytes"),
        });
    }
    let text = std::fs::read(&index_path).map_err(OciError::io(format!("{}", index_path.display())))?;
    let index: Index = parse(&text, &index_path.display().to_string())?;
    let chosen = index.manifests.iter().find(|d| match &reference.digest {
        Some(digest) => &d.digest == digest,
        None => d.annotations.get(REF_NAME).is_some_and(|n| names.iter().any(|want| want == n)),
    });
    let Some(desc) = chosen else { return Ok(None) };
    let what = reference.normalized();
    let manifest_desc = pick_manifest(layout, desc.clone(), &what, 0)?;
    let manifest_bytes = read_json_blob(layout, &manifest_desc, &format!("{what}: manifest"))?;
    let manifest: Manifest = parse(&manifest_bytes, &format!("{what}: manifest"))?;
    if let Some(mt) = manifest.media_type.as_deref() {
        if mt != MT_OCI_MANIFEST && mt != MT_DOCKER_MANIFEST {
            return Err(OciError::Unsupported {
                what: format!("{what}: manifest"),
                problem: format!("media type {mt}"),
            });
        }
    }
    if !manifest.config.media_type.is_empty()
        && manifest.config.media_type != MT_OCI_CONFIG
        && manifest.config.media_type != MT_DOCKER_CONFIG
    {
        return Err(OciError::Unsupported {
            what: format!("{what}: config"),
            problem: format!("media type {} (not a container image)", manifest.config.media_type),
        });
    }
    if manifest.layers.len() > MAX_LAYERS {
        return Err(OciError::TooBig {
            what: what.clone(),
            problem: format!("{} layers, over {MAX_LAYERS}", manifest.layers.len()),
        });
    }
    let config_bytes = read_json_blob(layout, &manifest.config, &format!("{what}: config"))?;
    let config: ConfigFile = parse(&config_bytes, &format!("{what}: config"))?;
    let run = config.config.unwrap_or_default();
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != manifest.layers.len() {
        return Err(OciError::bad(
            format!("{what}: config"),
            format!("{} diff_ids for {} layers", diff_ids.len(), manifest.layers.len()),
        ));
    }
    if !config.os.is_empty() && config.os != "linux" {
        return Err(OciError::Unsupported {
            what: what.clone(),
            problem: format!("os {} (snapcall runs linux programs)", config.os),
        });
    }
    if !config.architecture.is_empty() && config.architecture != "amd64" {
        return Err(OciError::Unsupported {
            what: what.clone(),
            problem: format!("architecture {} (snapcall runs x86-64 programs)", config.architecture),
        });
    }
    Ok(Some(Image {
        layout: layout.to_path_buf(),
        reference: what,
        manifest_digest: manifest_desc.digest.clone(),
        config: ImageConfig {
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            user: run.user.unwrap_or_default(),
            labels: run.labels.unwrap_or_default(),
            architecture: config.architecture,
            os: config.os,
        },
        layers: manifest.layers,
        diff_ids,
    }))
}

/// Follows an index (multi-platform image) down to the linux/amd64 manifest.
fn pick_manifest(layout: &Path, desc: Descriptor, what: &str, depth: usize) -> Result<Descriptor, OciError> {
    if desc.media_type != MT_OCI_INDEX && desc.media_type != MT_DOCKER_LIST {
        return Ok(desc);
    }
    if depth >= MAX_INDEX_DEPTH {
        return Err(OciError::bad(what, format!("indexes nested deeper than {MAX_INDEX_DEPTH}")));
    }
    let bytes = read_json_blob(layout, &desc, &format!("{what}: index"))?;
    let index: Index = parse(&bytes, &format!("{what}: index"))?;
    let _ = index.media_type;
    let amd64 = |d: &&Descriptor| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64");
    let only = if index.manifests.len() == 1 { index.manifests.first() } else { None };
    let Some(next) = index.manifests.iter().find(amd64).or(only) else {
        return Err(OciError::Unsupported {
            what: what.into(),
            problem: "no linux/amd64 manifest in its index".into(),
        });
    };
    pick_manifest(layout, next.clone(), what, depth + 1)
}
