//! `function.json`: what a function's author writes beside its source. JSON (serde_json is
//! already snapcall's), unknown fields refused so a typo is an error and not a default.
//!
//! ```json
//! {
//!   "lang": "python",
//!   "memory_mib": 256,
//!   "timeout_ms": 10000,
//!   "content_type": "text/plain; charset=utf-8",
//!   "response": "cgi",
//!   "python": { "module": "handler", "handler": "handle" }
//! }
//! ```
//!
//! Everything but `lang` is optional; docs/functions.md lists the fields and defaults. The
//! limits' ranges are checked where every bundle's are, by loading the config.json written
//! from them ([`vmm::BundleConfig::load`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The manifest's file name inside a function directory.
pub const MANIFEST_FILE: &str = "function.json";

/// A function's manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub lang: Lang,
    /// Guest memory, MiB (`snapcall.memory_mib`; default 256 for Python, 64 for C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Per-call deadline (`snapcall.timeout_ms`; default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Cap on stdout + stderr (`snapcall.max_output_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// `Content-Type` of a successful answer (`snapcall.content_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// `body` (stdout is the body) or `cgi` (a head first: status and headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PythonSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c: Option<CSection>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Python,
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseKind {
    Body,
    Cgi,
}

impl ResponseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseKind::Body => "body",
            ResponseKind::Cgi => "cgi",
        }
    }
}

/// `"python": {...}`: which function of which module handles a call.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PythonSection {
    /// The module (a `.py` file or package in the function directory); default `handler`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The function in it, called as `handle(event, context)`; default `handle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
}

/// `"c": {...}`: how the program is made.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CSection {
    /// Source files, relative to the function directory (or absolute); default `["handler.c"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// `glibc` (`gcc -static`, the default) or `musl` (`musl-gcc -static`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libc: Option<Libc>,
    /// Link as a static PIE (`-static-pie`, glibc only) instead of a fixed-address executable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pie: bool,
    /// Extra compiler flags (after snapcall's `-O2 -Wall -Wextra`), e.g. `["-DDEBUG", "-lm"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cflags: Vec<String>,
    /// A prebuilt static x86-64 ELF instead of sources (relative to the function directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Libc {
    Glibc,
    Musl,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{path}: cannot read it: {source} (a function directory holds a {MANIFEST_FILE}; `snapcall new` makes one)"
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source} (docs/functions.md lists its fields)")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

impl Manifest {
    /// Reads and checks `DIR/function.json`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|source| ManifestError::Read { path: path.clone(), source })?;
        let m: Manifest =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse { path: path.clone(), source })?;
        let invalid = |what: String| Err(ManifestError::Invalid { path: path.clone(), what });
        match m.lang {
            Lang::Python if m.c.is_some() => return invalid("a \"c\" section in a Python function".into()),
            Lang::C if m.python.is_some() => return invalid("a \"python\" section in a C function".into()),
            _ => {}
        }
        let py = m.python_section();
        for (field, value) in [("python.module", &py.0), ("python.handler", &py.1)] {
            if !value.split('.').all(is_identifier) {
                return invalid(format!("{field} {value:?} is not a Python (dotted) name"));
            }
        }
        if let Some(c) = &m.c {
            if c.program.is_some() && c.sources.is_some() {
                return invalid("c.program and c.sources: give one (a prebuilt program or its sources)".into());
            }
            if c.pie && c.libc == Some(Libc::Musl) {
                return invalid("c.pie needs glibc (musl-gcc makes fixed-address static programs)".into());
            }
        }
        Ok(m)
    }

    /// The Python module and handler, defaults filled in.
    pub fn python_section(&self) -> (String, String) {
        let p = self.python.clone().unwrap_or_default();
        (p.module.unwrap_or_else(|| "handler".into()), p.handler.unwrap_or_else(|| "handle".into()))
    }

    pub fn memory_mib(&self) -> u64 {
        self.memory_mib.unwrap_or(match self.lang {
            Lang::Python => 256,
            Lang::C => 64,
        })
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(10_000)
    }

    pub fn response(&self) -> ResponseKind {
        self.response.unwrap_or(ResponseKind::Body)
    }

    /// The bundle annotations these fields become (docs/functions.md's table).
    pub fn annotations(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("snapcall.memory_mib".to_owned(), self.memory_mib().to_string()),
            ("snapcall.timeout_ms".to_owned(), self.timeout_ms().to_string()),
            ("snapcall.response".to_owned(), self.response().as_str().to_owned()),
        ];
        let content_type = self.content_type.clone().unwrap_or_else(|| match self.lang {
            Lang::Python => "text/plain; charset=utf-8".into(),
            Lang::C => "application/octet-stream".into(),
        });
        out.push(("snapcall.content_type".into(), content_type));
        if let Some(n) = self.max_output_bytes {
            out.push(("snapcall.max_output_bytes".into(), n.to_string()));
        }
        if self.lang == Lang::Python {
            let (module, handler) = self.python_section();
            out.push(("snapcall.python.module".into(), module));
            out.push(("snapcall.python.handler".into(), handler));
        }
        out.sort();
        out
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Manifest, ManifestError> {
        let dir = std::env::temp_dir().join(format!("snapcall-manifest-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), text).unwrap();
        let m = Manifest::load(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        m
    }

    #[test]
    fn defaults_and_annotations() {
        let m = load(r#"{"lang": "python"}"#).unwrap();
        assert_eq!(m.python_section(), ("handler".into(), "handle".into()));
        let a = m.annotations();
        assert!(a.contains(&("snapcall.memory_mib".into(), "256".into())), "{a:?}");
        assert!(a.contains(&("snapcall.python.handler".into(), "handle".into())), "{a:?}");
        let m = load(r#"{"lang": "c", "c": {"libc": "musl"}, "response": "cgi"}"#).unwrap();
        assert_eq!(m.memory_mib(), 64);
        assert!(m.annotations().contains(&("snapcall.response".into(), "cgi".into())));
    }

    #[test]
    fn mistakes_are_named() {
        let e = load(r#"{"lang": "python", "memroy_mib": 5}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field `memroy_mib`"), "{e}");
        let e = load(r#"{"lang": "rust"}"#).unwrap_err().to_string();
        assert!(e.contains("unknown variant `rust`"), "{e}");
        let e = load(r#"{"lang": "python", "python": {"module": "my-mod"}}"#).unwrap_err().to_string();
        assert!(e.contains("not a Python (dotted) name"), "{e}");
        let e = load(r#"{"lang": "c", "c": {"program": "a", "sources": ["b.c"]}}"#).unwrap_err().to_string();
        assert!(e.contains("give one"), "{e}");
        let e = load(r#"{"lang": "c", "python": {}}"#).unwrap_err().to_string();
        assert!(e.contains("\"python\" section in a C function"), "{e}");
    }
}
