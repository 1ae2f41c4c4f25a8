//! Verify a snapshot once per file version, not once per process.
//!
//! Opening a snapshot checks its payload hash (SHA-256 over every segment and note) and that
//! it belongs to its bundle (SHA-256 over config.json and the program): for CPython that is
//! 30 MB hashed, most of a one-shot `snapcall run`. Once both checks have passed, this cache
//! records the *stamps* of the three files: device, inode, size, modification and change
//! times. A later open whose three files carry the same stamps skips both hashes. Any write
//! to a file changes its mtime and ctime, and replacing it (rename over, copy) changes its
//! inode and ctime; ctime cannot be set back by a program (only by changing the system
//! clock), so a swapped or rewritten file is always verified again. What this does not catch
//! is the disk itself corrupting blocks under an unchanged inode (the file system's
//! checksums are the defence there); docs/security.md says so.
//!
//! The cache lives in `$SNAPCALL_CACHE_DIR`, else `$XDG_CACHE_HOME/snapcall`, else
//! `$HOME/.cache/snapcall`: one small text file per snapshot path. It is used only when the
//! directory belongs to this user and nobody else may write to it; an entry that does not
//! parse is a miss.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp([i64; 7]);

impl Stamp {
    pub(crate) fn of_file(file: &File) -> std::io::Result<Stamp> {
        Ok(Self::of(&file.metadata()?))
    }

    pub(crate) fn of_path(path: &Path) -> std::io::Result<Stamp> {
        Ok(Self::of(&std::fs::metadata(path)?))
    }

    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp([m.dev() as i64, m.ino() as i64, m.size() as i64, m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()])
    }
}

/// The cache directory, if there is a usable one.
pub(crate) struct VerifiedCache {
    dir: PathBuf,
}

impl VerifiedCache {
    /// The cache directory (created 0700 if missing), or `None` when there is none or it is
    /// not this user's alone.
    pub(crate) fn open() -> Option<VerifiedCache> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = env("SNAPCALL_CACHE_DIR")
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("snapcall")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/snapcall")))?;
        if !dir.exists() {
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
        }
        let m = std::fs::metadata(&dir).ok()?;
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        (m.is_dir() && m.uid() == euid && m.mode() & 0o022 == 0).then_some(VerifiedCache { dir })
    }

    fn entry(&self, snapshot: &Path) -> PathBuf {
        let key = snapshot.canonicalize().unwrap_or_else(|_| snapshot.to_path_buf());
        let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    /// Whether `snapshot` was verified with exactly these stamps (snapshot, config.json,
    /// program).
    pub(crate) fn is_verified(&self, snapshot: &Path, stamps: &[Stamp; 3]) -> bool {
        std::fs::read_to_string(self.entry(snapshot)).is_ok_and(|text| text.trim() == encode(stamps))
    }

    /// Records that `snapshot` passed both checks with these stamps. Best effort: a cache
    /// that cannot be written only means the next open verifies again.
    pub(crate) fn record(&self, snapshot: &Path, stamps: &[Stamp; 3]) {
        let entry = self.entry(snapshot);
        let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, encode(stamps) + "\n").is_ok() && std::fs::rename(&tmp, &entry).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

fn encode(stamps: &[Stamp; 3]) -> String {
    stamps.iter().flat_map(|s| s.0).map(|n| n.to_string()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_or_replaced_file_is_a_miss() {
        let dir = std::env::temp_dir().join(format!("snapcall-verified-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let cache = VerifiedCache { dir: dir.join("cache") };
        std::fs::create_dir(&cache.dir).unwrap();
        let snap = dir.join("snapshot.kmsnap");
        let other = dir.join("config.json");
        std::fs::write(&snap, b"one").unwrap();
        std::fs::write(&other, b"{}").unwrap();
        let stamps =
            |p: &Path| [Stamp::of_path(p).unwrap(), Stamp::of_path(&other).unwrap(), Stamp::of_path(&other).unwrap()];
        assert!(!cache.is_verified(&snap, &stamps(&snap)));
        cache.record(&snap, &stamps(&snap));
        assert!(cache.is_verified(&snap, &stamps(&snap)));
        // Same size, same content even: a rewrite changes ctime.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&snap, b"one").unwrap();
        assert!(!cache.is_verified(&snap, &stamps(&snap)));
        cache.record(&snap, &stamps(&snap));
        // Replaced by another file under the same name: another inode.
        let swapped = dir.join("swap");
        std::fs::write(&swapped, b"one").unwrap();
        std::fs::rename(&swapped, &snap).unwrap();
        assert!(!cache.is_verified(&snap, &stamps(&snap)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
