//! What can go wrong between an image reference and an unpacked rootfs.

use std::path::PathBuf;

/// Who is at fault, for a front end choosing a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The reference names no image in the store (HTTP 404-like).
    NotFound,
    /// The reference itself is malformed (400-like).
    BadReference,
    /// The image is malformed or hostile: bad JSON, digest mismatch, unsafe entry (422-like).
    BadImage,
    /// The image is over a size cap (413-like).
    TooBig,
    /// The image uses something not supported (a zstd layer, no linux/amd64 manifest).
    Unsupported,
    /// The host failed (disk full, permissions): not the image's fault (500-like).
    Host,
}

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image reference {reference:?}: {problem}")]
    BadReference { reference: String, problem: String },
    #[error("image {reference} not found in the image store {store} ({looked})")]
    NotFound { reference: String, store: PathBuf, looked: String },
    #[error("{what}: {problem}")]
    BadImage { what: String, problem: String },
    #[error("{what}: digest mismatch: the descriptor says {expected}, the blob is {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },
    #[error("{what}: over the cap: {problem}")]
    TooBig { what: String, problem: String },
    #[error("{what}: unsupported: {problem}")]
    Unsupported { what: String, problem: String },
    #[error("layer {layer}: entry {entry:?}: {problem}")]
    UnsafeEntry { layer: usize, entry: String, problem: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl OciError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            OciError::BadReference { .. } => ErrorKind::BadReference,
            OciError::NotFound { .. } => ErrorKind::NotFound,
            OciError::BadImage { .. } | OciError::DigestMismatch { .. } | OciError::UnsafeEntry { .. } => {
                ErrorKind::BadImage
            }
            OciError::TooBig { .. } => ErrorKind::TooBig,
            OciError::Unsupported { .. } => ErrorKind::Unsupported,
            OciError::Io { .. } => ErrorKind::Host,
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
        let what = what.into();
        move |source| OciError::Io { what, source }
    }

    pub(crate) fn bad(what: impl Into<String>, problem: impl Into<String>) -> OciError {
        OciError::BadImage { what: what.into(), problem: problem.into() }
    }
}
