//! Image references (`[registry/]repository[:tag][@digest]`), normalised as Docker does:
//! `alpine` is `docker.io/library/alpine:latest`, `functions/alpine` is
//! `docker.io/functions/alpine:latest`. The normalised parts become directory names in the
//! image store, so every component is checked against the distribution grammar here (no
//! `..`, no empty component, no absolute path).

use crate::error::OciError;

pub const DEFAULT_REGISTRY: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const MAX_REFERENCE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `ghcr.io`, `localhost:5000`.
    pub registry: String,
    /// `library/alpine`, `functions/alpine`.
    pub repository: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(reference: &str) -> Result<ImageRef, OciError> {
        let bad = |problem: &str| OciError::BadReference { reference: reference.into(), problem: problem.into() };
        if reference.is_empty() {
            return Err(bad("is empty"));
        }
        if reference.len() > MAX_REFERENCE {
            return Err(bad(&format!("longer than {MAX_REFERENCE} bytes")));
        }
        let (name, digest) = match reference.split_once('@') {
            Some((n, d)) => {
                check_digest(d).map_err(|p| bad(&p))?;
                (n, Some(d.to_string()))
            }
            None => (reference, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a registry may have a port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], Some(name[last_slash + i + 1..].to_string())),
            None => (name, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && !t.starts_with(['.', '-'])
                && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok {
                return Err(bad("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
            }
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let first = parts[0];
        let registry = if parts.len() > 1 && (first.contains(['.', ':']) || first == "localhost") {
            parts.remove(0);
            let ok = first.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
                && !first.starts_with(['.', '-', ':'])
                && !first.contains("..");
            if !ok {
                return Err(bad("the registry must be a host name with an optional port"));
            }
            first.to_ascii_lowercase()
        } else {
            DEFAULT_REGISTRY.to_string()
        };
        if parts.iter().any(|p| !valid_path_component(p)) {
            return Err(bad(
                "each repository component must be lower-case [a-z0-9] separated by '.', '_', '__' or '-' \
                 (no empty component, no '..')",
            ));
        }
        if registry == DEFAULT_REGISTRY && parts.len() == 1 {
            parts.insert(0, "library");
        }
        let tag = if tag.is_none() && digest.is_none() { Some(DEFAULT_TAG.to_string()) } else { tag };
        Ok(ImageRef { registry, repository: parts.join("/"), tag, digest })
    }

    /// `registry/repository[:tag][@digest]`, the form the store's annotations are matched on.
    pub fn normalized(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// A repository path component: `[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*`.
fn valid_path_component(p: &str) -> bool {
    let b = p.as_bytes();
    if b.is_empty() || b.len() > 128 {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `sha256:` and 64 lower-case hex digits (the only algorithm the store verifies).
pub(crate) fn check_digest(d: &str) -> Result<(), String> {
    match d.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
        Some(_) => Err(format!("digest {d:?} is not sha256: and 64 lower-case hex digits")),
        None => Err(format!("digest {d:?}: only sha256 digests are supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_as_docker_does() {
        for (given, want) in [
            ("alpine", "docker.io/library/alpine:latest"),
            ("functions/alpine:latest", "docker.io/functions/alpine:latest"),
            ("docker.io/functions/alpine:latest", "docker.io/functions/alpine:latest"),
            ("theaxer/redirector", "docker.io/theaxer/redirector:latest"),
            ("localhost:5000/a/b:v1.2", "localhost:5000/a/b:v1.2"),
            ("ghcr.io/openfaas/figlet:0.13.0", "ghcr.io/openfaas/figlet:0.13.0"),
            ("my-reg.example/x__y/z-q", "my-reg.example/x__y/z-q:latest"),
        ] {
            assert_eq!(ImageRef::parse(given).unwrap().normalized(), want, "{given}");
        }
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("alpine@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
    }

    #[test]
    fn refuses_what_could_escape_the_store_or_is_malformed() {
        for bad in [
            "",
            "../etc",
            "a/../../b",
            "/abs/path",
            "a//b",
            "Upper",
            "a/.hidden",
            "a:",
            "a:../x",
            "a@sha256:xyz",
            "a@md5:00",
            "..:5000/a",
            "a b",
            "a/b\0c",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(ImageRef::parse(&"a".repeat(600)).is_err());
    }
}
