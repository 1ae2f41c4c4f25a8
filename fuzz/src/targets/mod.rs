//! The fuzz targets. Each is a [`crate::Target`]; [`by_name`] builds one for the CLI and tests.

pub mod config;
pub mod http;
pub mod snapshot;
pub mod syscalls;

/// Every target's name.
pub const ALL: &[&str] = &["http", "snapshot", "config", "syscalls"];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Box<dyn crate::Target>> {
    Some(match name {
        "http" => Box::new(http::Http),
        "snapshot" => Box::new(snapshot::SnapshotTarget),
        "config" => Box::new(config::Config::new()),
        "syscalls" => Box::new(syscalls::Syscalls::new()),
        _ => return None,
    })
}
