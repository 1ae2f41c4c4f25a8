//! Bakes the commit this binary is built from into it, for `/system/info` (OpenFaaS clients
//! show the provider's version and sha) and `snapcall --version`-style reports.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

fn main() {
    // Rebuild when HEAD moves (a commit, a checkout): the reflog changes with both.
    if let Some(path) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        println!("cargo:rerun-if-changed={path}");
    }
    if let Some(path) = git(&["rev-parse", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=SNAPCALL_GIT_SHA");
    // A build from a source tarball has no git: say so rather than invent a sha.
    let sha = std::env::var("SNAPCALL_GIT_SHA")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
    let subject = git(&["log", "-1", "--format=%s"]).unwrap_or_default();
    let release =
        format!("{}{}", std::env::var("CARGO_PKG_VERSION").unwrap_or_default(), if dirty { "-dirty" } else { "" });
    println!("cargo:rustc-env=SNAPCALL_GIT_SHA={sha}");
    println!("cargo:rustc-env=SNAPCALL_GIT_SUBJECT={subject}");
    println!("cargo:rustc-env=SNAPCALL_RELEASE={release}");
}
