//! Function secrets (`/system/secrets`): one file per secret, mode 0600, under the state
//! directory, so they survive a restart. A deployment naming a secret gets a copy of its
//! value in its rootfs at deploy time (`bundle.rs`); updating a secret takes effect for a
//! function at its next deploy, as with Kubernetes secrets mounted into new pods.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Largest secret value (Kubernetes' limit is 1 MiB).
pub const MAX_SECRET_BYTES: usize = 1 << 20;
/// Most secrets kept.
pub const MAX_SECRETS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret name {0:?} must be 1-253 of [a-z0-9.-], starting and ending with a letter or digit")]
    BadName(String),
    #[error("secret {0:?} already exists (update it with PUT)")]
    Exists(String),
    #[error("secret {0:?} does not exist")]
    Missing(String),
    #[error("secret {name:?} is {len} bytes, over the {MAX_SECRET_BYTES}-byte cap")]
    TooBig { name: String, len: usize },
    #[error("{MAX_SECRETS} secrets exist already")]
    TooMany,
    #[error("secret store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl SecretError {
    pub fn status(&self) -> u16 {
        match self {
            SecretError::BadName(_) => 400,
            SecretError::Exists(_) => 409,
            SecretError::Missing(_) => 404,
            SecretError::TooBig { .. } | SecretError::TooMany => 413,
            SecretError::Io { .. } => 500,
        }
    }
}

/// A DNS-subdomain name, as Kubernetes requires of secrets; also a safe file name.
pub fn valid_secret_name(n: &str) -> bool {
    let b = n.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 253
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter().all(|&c| edge(c) || c == b'-' || c == b'.')
        && !n.contains("..")
}

pub struct SecretStore {
    dir: PathBuf,
    /// Serialises writers; readers read the files.
    lock: Mutex<()>,
}

impl SecretStore {
    pub fn open(dir: PathBuf) -> Result<SecretStore, SecretError> {
        let io = |source| SecretError::Io { path: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io)?;
        Ok(SecretStore { dir, lock: Mutex::new(()) })
    }

    fn path(&self, name: &str) -> Result<PathBuf, SecretError> {
        if !valid_secret_name(name) {
            return Err(SecretError::BadName(name.into()));
        }
        Ok(self.dir.join(name))
    }

    /// The names of every secret, sorted.
    pub fn names(&self) -> Result<Vec<String>, SecretError> {
        let io = |source| SecretError::Io { path: self.dir.clone(), source };
        let mut names = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io)? {
            let e = e.map_err(io)?;
            if let Some(n) = e.file_name().to_str().filter(|n| valid_secret_name(n)) {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The values of `names` (for a deployment), skipping none: a missing one is an error.
    pub fn values(&self, names: &[String]) -> Result<BTreeMap<String, Vec<u8>>, SecretError> {
        let mut out = BTreeMap::new();
        for n in names {
            let path = self.path(n)?;
            match std::fs::read(&path) {
                Ok(v) => {
                    out.insert(n.clone(), v);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SecretError::Missing(n.clone())),
                Err(source) => return Err(SecretError::Io { path, source }),
            }
        }
        Ok(out)
    }

    /// Creates (`create`) or replaces (`!create`) a secret.
    pub fn put(&self, name: &str, value: &[u8], create: bool) -> Result<(), SecretError> {
        let path = self.path(name)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooBig { name: name.into(), len: value.len() });
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let exists = path.exists();
        if create && exists {
            return Err(SecretError::Exists(name.into()));
        }
        if !create && !exists {
            return Err(SecretError::Missing(name.into()));
        }
        if create && self.names()?.len() >= MAX_SECRETS {
            return Err(SecretError::TooMany);
        }
        // Written beside and renamed over: a reader never sees half a value.
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| SecretError::Io { path: tmp.clone(), source };
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
        f.write_all(value).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    pub fn remove(&self, name: &str) -> Result<(), SecretError> {
        let path = self.path(name)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SecretError::Missing(name.into())),
            Err(source) => Err(SecretError::Io { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_update_list_remove() {
        let dir = std::env::temp_dir().join(format!("snapcall-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = SecretStore::open(dir.clone()).unwrap();
        s.put("secret-string", b"v1", true).unwrap();
        assert!(matches!(s.put("secret-string", b"v1", true), Err(SecretError::Exists(_))));
        assert!(matches!(s.put("nope", b"v", false), Err(SecretError::Missing(_))));
        s.put("secret-string", b"v2", false).unwrap();
        s.put("b", &[0, 255, 1], true).unwrap();
        assert_eq!(s.names().unwrap(), ["b", "secret-string"]);
        let v = s.values(&["secret-string".into(), "b".into()]).unwrap();
        assert_eq!((v["secret-string"].as_slice(), v["b"].as_slice()), (&b"v2"[..], &[0u8, 255, 1][..]));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("b")).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(s.values(&["gone".into()]), Err(SecretError::Missing(_))));
        s.remove("b").unwrap();
        assert!(matches!(s.remove("b"), Err(SecretError::Missing(_))));
        for bad in ["", "../x", "a/b", "A", "-a", "a-", ".a", "a..b", "a\0"] {
            assert!(matches!(s.put(bad, b"", true), Err(SecretError::BadName(_))), "{bad:?}");
        }
        assert!(matches!(s.put("big", &vec![0; MAX_SECRET_BYTES + 1], true), Err(SecretError::TooBig { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
