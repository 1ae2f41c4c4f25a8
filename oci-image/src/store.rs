//! The local image store: a directory where image references are looked up, in this order:
//!
//! 1. `STORE/index.json`: the store itself is one OCI layout holding many images, each
//!    manifest annotated `org.opencontainers.image.ref.name` with the full normalised
//!    reference (`skopeo copy docker://alpine oci:STORE:docker.io/library/alpine:latest`);
//! 2. `STORE/<registry>/<repository>/`: one layout per repository, tags as `ref.name`
//!    (`skopeo copy ... oci:STORE/docker.io/functions/alpine:latest`, `umoci init/new`);
//! 3. `STORE/<registry>/<repository>.tar`: an OCI archive (`oci-archive:` in skopeo): its
//!    layout is extracted (only `oci-layout`, `index.json` and `blobs/sha256/<hex>`, capped)
//!    into a scratch directory the caller owns, then read as in 2.
//!
//! References are checked by [`ImageRef::parse`] before they become paths, so none can
//! name anything outside the store.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::OciError;
use crate::layout::{self, Image};
use crate::reference::ImageRef;

/// Largest OCI archive accepted (its blobs are extracted before use).
pub const MAX_ARCHIVE_BYTES: u64 = 2 << 30;
/// Most members of an OCI archive.
const MAX_ARCHIVE_MEMBERS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn new(root: impl Into<PathBuf>) -> ImageStore {
        ImageStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves `reference`; an archive is extracted under `scratch` (created if missing).
    pub fn resolve(&self, reference: &str, scratch: &Path) -> Result<Image, OciError> {
        let r = ImageRef::parse(reference)?;
        let full = r.normalized();
        let mut names = vec![full.clone(), reference.to_string()];
        let mut looked = Vec::new();
        if layout::is_layout(&self.root) {
            looked.push(format!("{}/index.json for {full}", self.root.display()));
            if let Some(image) = layout::resolve(&self.root, &r, &names)? {
                return Ok(image);
            }
        }
        if let Some(tag) = &r.tag {
            names.push(tag.clone());
        }
        let repo_dir = self.root.join(&r.registry).join(&r.repository);
        looked.push(format!("layout {}", repo_dir.display()));
        if layout::is_layout(&repo_dir) {
            if let Some(image) = layout::resolve(&repo_dir, &r, &names)? {
                return Ok(image);
            }
        }
        let archive = repo_dir
            .with_file_name(format!("{}.tar", repo_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()));
        looked.push(format!("archive {}", archive.display()));
        if archive.is_file() {
            std::fs::create_dir_all(scratch).map_err(OciError::io(format!("scratch {}", scratch.display())))?;
            extract_archive(&archive, scratch)?;
            if let Some(image) = layout::resolve(scratch, &r, &names)? {
                return Ok(image);
            }
        }
        Err(OciError::NotFound { reference: reference.into(), store: self.root.clone(), looked: looked.join(", ") })
    }
}

/// The member name of an archive, if it is one of the layout's files.
fn layout_member(name: &str) -> Option<PathBuf> {
    let name = name.strip_prefix("./").unwrap_or(name);
    match name {
        "oci-layout" | "index.json" => return Some(PathBuf::from(name)),
        _ => {}
    }
    let hex = name.strip_prefix("blobs/sha256/")?;
    let ok = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then(|| PathBuf::from(name))
}

/// Extracts an OCI archive's layout files into `dest` (every other member is ignored).
fn extract_archive(archive: &Path, dest: &Path) -> Result<(), OciError> {
    let what = archive.display().to_string();
    let size = std::fs::metadata(archive).map_err(OciError::io(what.clone()))?.len();
    if size > MAX_ARCHIVE_BYTES {
        return Err(OciError::TooBig { what, problem: format!("{size} bytes, over {MAX_ARCHIVE_BYTES}") });
    }
    let file = std::fs::File::open(archive).map_err(OciError::io(what.clone()))?;
    let mut tar = tar::Archive::new(file.take(MAX_ARCHIVE_BYTES));
    std::fs::create_dir_all(dest.join("blobs/sha256")).map_err(OciError::io(dest.display().to_string()))?;
    let entries = tar.entries().map_err(OciError::io(what.clone()))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ARCHIVE_MEMBERS {
            return Err(OciError::TooBig { what, problem: format!("more than {MAX_ARCHIVE_MEMBERS} members") });
        }
        let mut entry = entry.map_err(|e| OciError::bad(&what, format!("not a valid tar: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = entry.path().map_err(|e| OciError::bad(&what, format!("member name: {e}")))?;
        let Some(rel) = name.to_str().and_then(layout_member) else { continue };
        let out = dest.join(rel);
        // A fresh file: never through a link a previous member could have left.
        let _ = std::fs::remove_file(&out);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&out)
            .map_err(OciError::io(format!("{}", out.display())))?;
        std::io::copy(&mut entry, &mut f).map_err(OciError::io(format!("{what}: {}", out.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::tests::{file, scratch, tar_of, write_image};

    #[test]
    fn finds_per_repository_layouts_store_layouts_and_archives() {
        let store = scratch("store");
        let repo = store.join("docker.io/functions/alpine");
        std::fs::create_dir_all(&repo).unwrap();
        let layer = (tar_of(&[file("bin/x", b"x")]), true);
        write_image(&repo, "latest", std::slice::from_ref(&layer), "{}");
        let s = ImageStore::new(&store);
        let tmp = store.join(".scratch");
        for r in ["functions/alpine", "functions/alpine:latest", "docker.io/functions/alpine:latest"] {
            let image = s.resolve(r, &tmp).unwrap_or_else(|e| panic!("{r}: {e}"));
            assert_eq!(image.reference, "docker.io/functions/alpine:latest");
            assert_eq!(image.layers.len(), 1);
        }
        let e = s.resolve("functions/alpine:other", &tmp).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("functions/alpine:other"), "{e}");
        assert_eq!(s.resolve("notfound", &tmp).unwrap_err().kind(), crate::ErrorKind::NotFound);
        assert_eq!(s.resolve("../../etc", &tmp).unwrap_err().kind(), crate::ErrorKind::BadReference);

        // The same layout as an OCI archive, beside a hostile member that must be ignored.
        let archive_src = scratch("archive-src");
        write_image(&archive_src, "v2", &[layer], "{}");
        let tar_path = store.join("docker.io/theaxer/redirector.tar");
        std::fs::create_dir_all(tar_path.parent().unwrap()).unwrap();
        let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
        b.append_dir_all(".", &archive_src).unwrap();
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../escape.txt");
        h.set_size(1);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        b.finish().unwrap();
        drop(b);
        let image = s.resolve("theaxer/redirector:v2", &store.join(".scratch2")).unwrap();
        assert_eq!(image.reference, "docker.io/theaxer/redirector:v2");
        assert!(!store.join("escape.txt").exists());

        // A store that is itself one layout, holding full references.
        let one = scratch("one-layout");
        write_image(&one, "docker.io/library/busybox:1", &[(tar_of(&[file("f", b"")]), false)], "{}");
        let image = ImageStore::new(&one).resolve("busybox:1", &tmp).unwrap();
        assert_eq!(image.reference, "docker.io/library/busybox:1");
        for d in [store, archive_src, one] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn archive_members_are_only_layout_files() {
        let hex = "a".repeat(64);
        assert!(layout_member("oci-layout").is_some());
        assert!(layout_member("./index.json").is_some());
        assert!(layout_member(&format!("blobs/sha256/{hex}")).is_some());
        for bad in ["../index.json", "/index.json", "blobs/sha256/../../x", "blobs/sha256/abc", "blobs/md5/00", "x"] {
            assert!(layout_member(bad).is_none(), "{bad}");
        }
    }
}
