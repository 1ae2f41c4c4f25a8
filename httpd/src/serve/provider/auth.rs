//! Basic auth on `/system/*`, as OpenFaaS's gateway and providers do it: with
//! `--basic-auth` (OpenFaaS: `basic_auth=true`), the user name and password are read at start
//! from the files `basic-auth-user` and `basic-auth-password` under the secrets mount path
//! (`--secret-mount-path`, OpenFaaS's `secret_mount_path`, default `/var/openfaas/secrets`:
//! where Kubernetes mounts the `basic-auth` secret). A request without the right
//! `Authorization: Basic ...` gets 401 with `WWW-Authenticate`; the comparison takes the same
//! time wherever the first difference is.

use std::path::{Path, PathBuf};

use base64::Engine as _;

/// The realm OpenFaaS announces.
pub const REALM: &str = "Restricted";
/// Credential files longer than this are refused (they are a name and a password).
const MAX_CREDENTIAL: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("basic auth: cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("basic auth: {path} is empty or longer than {MAX_CREDENTIAL} bytes")]
    Invalid { path: PathBuf },
}

/// The one user allowed on `/system/*`.
#[derive(Clone)]
pub struct BasicAuth {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth").field("user", &String::from_utf8_lossy(&self.user)).finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Reads `basic-auth-user` and `basic-auth-password` from `mount` (one trailing newline
    /// dropped, as `kubectl create secret --from-file` keeps one).
    pub fn load(mount: &Path) -> Result<BasicAuth, AuthError> {
        let read = |name: &str| -> Result<Vec<u8>, AuthError> {
            let path = mount.join(name);
            let meta = std::fs::metadata(&path).map_err(|source| AuthError::Read { path: path.clone(), source })?;
            if meta.len() > MAX_CREDENTIAL {
                return Err(AuthError::Invalid { path });
            }
            let mut v = std::fs::read(&path).map_err(|source| AuthError::Read { path: path.clone(), source })?;
            if v.last() == Some(&b'\n') {
                v.pop();
            }
            if v.is_empty() {
                return Err(AuthError::Invalid { path });
            }
            Ok(v)
        };
        Ok(BasicAuth { user: read("basic-auth-user")?, password: read("basic-auth-password")? })
    }

    #[cfg(test)]
    pub fn new(user: &str, password: &str) -> BasicAuth {
        BasicAuth { user: user.into(), password: password.into() }
    }

    /// Whether an `Authorization` header value carries these credentials.
    pub fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(value) = authorization else { return false };
        let mut parts = value.trim().splitn(2, ' ');
        let (Some(scheme), Some(encoded)) = (parts.next(), parts.next()) else { return false };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else { return false };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both compared, always: which one differs does not show in the time either.
        let user_ok = constant_time_eq(user, &self.user);
        let password_ok = constant_time_eq(password, &self.password);
        user_ok & password_ok
    }
}

/// Compares in time that depends only on the lengths, not on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // Keep the optimiser from turning the loop into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    #[test]
    fn only_the_right_user_and_password_pass() {
        let auth = BasicAuth::new("admin", "s3cr:et");
        assert!(auth.allows(Some(&header("admin", "s3cr:et"))));
        assert!(auth.allows(Some(&header("admin", "s3cr:et").replace("Basic", "basic"))));
        for bad in [
            None,
            Some("".to_string()),
            Some("Basic".to_string()),
            Some("Bearer abc".to_string()),
            Some("Basic !!!notbase64".to_string()),
            Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("nocolon"))),
            Some(header("admin", "s3cr:e")),
            Some(header("admin", "s3cr:et ")),
            Some(header("Admin", "s3cr:et")),
            Some(header("", "")),
            Some(header("admin", "")),
        ] {
            assert!(!auth.allows(bad.as_deref()), "{bad:?}");
        }
    }

    #[test]
    fn credentials_come_from_the_mount_files() {
        let dir = std::env::temp_dir().join(format!("snapcall-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("basic-auth-user"), "admin\n").unwrap();
        std::fs::write(dir.join("basic-auth-password"), "pw").unwrap();
        let auth = BasicAuth::load(&dir).unwrap();
        assert!(auth.allows(Some(&header("admin", "pw"))));
        assert!(!format!("{auth:?}").contains("pw"), "the password is not printed");
        std::fs::write(dir.join("basic-auth-password"), "").unwrap();
        assert!(matches!(BasicAuth::load(&dir), Err(AuthError::Invalid { .. })));
        std::fs::remove_file(dir.join("basic-auth-password")).unwrap();
        assert!(matches!(BasicAuth::load(&dir), Err(AuthError::Read { .. })));
        std::fs::remove_dir_all(dir).unwrap();
        assert!(constant_time_eq(b"", b"") && !constant_time_eq(b"a", b"") && !constant_time_eq(b"ab", b"ac"));
    }
}
