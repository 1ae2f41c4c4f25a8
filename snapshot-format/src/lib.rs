//! KM-compatible ELF-core snapshot files (placeholder until the crate lands).
