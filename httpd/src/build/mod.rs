//! `snapcall build`: a function directory (a `function.json` manifest and its source) made into
//! the bundle `snapcall serve` reads (`config.json` + `rootfs/`), then its snapshot taken.
//!
//! One path for every function: `guest-functions/build.sh` builds the repository's demo and
//! test bundles through it too. The steps, each reported by one progress line:
//!
//! 1. read and check the manifest ([`manifest`]);
//! 2. make the rootfs: Python ([`python`]): the static CPython and its stdlib (hard-linked from
//!    the runtime `guest-functions/python/build-python.sh` builds), the snapcall runtime, the
//!    function's modules and its pure-Python requirements; C ([`c`]): the program, compiled
//!    static or prebuilt, refused when dynamic ([`elf`]);
//! 3. write `config.json` (only when its content changes, so a served bundle is not reloaded
//!    for nothing);
//! 4. check the bundle loads as serve would load it;
//! 5. take the snapshot (skipped when the one there still matches the bundle).
//!
//! Each step is incremental: an unchanged input is not rebuilt.

pub mod c;
pub mod elf;
pub mod manifest;
pub mod python;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use vmm::{Function, StartMode};

use manifest::{Lang, Manifest, ManifestError};

/// What `snapcall build` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The bundle directory to write; its name is the function's name.
    pub out: PathBuf,
    /// Take the snapshot (serve would take it at start otherwise).
    pub snapshot: bool,
    /// The Python runtime's rootfs template (`usr/bin/python3` + its stdlib).
    pub python_runtime: PathBuf,
    /// Rebuild every step even if its inputs did not change.
    pub force: bool,
}

/// Why a build failed. Each message names the file or package and what to change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{path}: {what}: {source}")]
    Io { path: PathBuf, what: &'static str, source: std::io::Error },
    #[error("the bundle's name {0:?} is not a function name: use letters, digits, '.', '_' and '-' (not first '.')")]
    BadName(String),
    #[error("`{command}` failed ({status}):\n{output}")]
    Command { command: String, status: String, output: String },
    #[error("cannot run {program}: {source} ({hint})")]
    Spawn { program: String, source: std::io::Error, hint: &'static str },
    #[error("{path} {problem}: link it statically (\"c\": {{\"libc\": \"glibc\"}} builds with gcc -static, \"musl\" with musl-gcc -static)")]
    Program { path: PathBuf, problem: elf::ElfProblem },
    #[error("no Python runtime at {path}: build it with `bash guest-functions/build.sh` (it makes the static CPython and its stdlib), or point --python-runtime / SNAPCALL_PYTHON_RUNTIME at one")]
    NoPythonRuntime { path: PathBuf },
    #[error("requirements.txt: {package} needs compiled code ({why}); snapcall's static CPython cannot load extension modules: use a pure-Python package (a py3-none-any wheel) instead")]
    CompiledExtension { package: String, why: String },
    #[error("requirements.txt: pip could not get the packages:\n{output}\n(snapcall installs wheels only, from the package index pip is configured for; a package without a pure-Python wheel cannot be used)")]
    Pip { output: String },
    #[error("{what}: no source files (put handler.c in the function directory, or list them in \"c\": {{\"sources\": [...]}})")]
    NoSources { what: String },
    #[error("the handler's module {module} is neither {top}.py nor {top}/__init__.py in {dir} (set \"python\": {{\"module\"}} in function.json)")]
    NoModule { module: String, top: String, dir: PathBuf },
    #[error("{guest} does not compile (a syntax error?):\n{output}")]
    Syntax { guest: &'static str, output: String },
    #[error("the bundle does not load: {0}")]
    Check(String),
    #[error("taking the snapshot: {0}")]
    Snapshot(String),
}

/// `Io` with the path and what was being done.
pub(crate) fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io { path: path.to_path_buf(), what, source }
}

/// One progress line per step.
pub trait Progress {
    fn step(&self, line: &str);
}

/// Where a built bundle is and what was done.
#[derive(Debug)]
pub struct Built {
    pub bundle: PathBuf,
    pub snapshot: Option<PathBuf>,
}

/// Builds the function in `dir` into `opts.out`.
pub fn build(dir: &Path, opts: &Options, progress: &dyn Progress) -> Result<Built, BuildError> {
    let manifest = Manifest::load(dir)?;
    let name = opts.out.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    if !valid_name(&name) {
        return Err(BuildError::BadName(name));
    }
    progress.step(&format!(
        "manifest {}: {} function {name}, {} MiB, {} ms, response {}",
        dir.join(manifest::MANIFEST_FILE).display(),
        match manifest.lang {
            Lang::Python => "Python",
            Lang::C => "C",
        },
        manifest.memory_mib(),
        manifest.timeout_ms(),
        manifest.response().as_str()
    ));
    fs::create_dir_all(&opts.out).map_err(io(&opts.out, "cannot create the bundle directory"))?;
    let (process, rootfs_changed) = match manifest.lang {
        Lang::Python => python::build_rootfs(dir, &manifest, &name, opts, progress)?,
        Lang::C => c::build_rootfs(dir, &manifest, &name, opts, progress)?,
    };
    let changed = write_config(&opts.out, &process, &manifest.annotations())?;
    progress.step(&format!("config.json {}", if changed { "written" } else { "unchanged" }));
    // A snapshot matches its bundle by config.json and program only; the modules a Python
    // program imported before it are in its memory. A new rootfs needs a new snapshot, and
    // none (under --no-snapshot) is better than a stale one that would still load.
    let path = opts.out.join(vmm::snapshot::SNAPSHOT_FILE);
    if rootfs_changed && path.exists() {
        fs::remove_file(&path).map_err(io(&path, "cannot remove the stale snapshot"))?;
        progress.step(&format!("snapshot {}: removed (the rootfs changed)", path.display()));
    }

    Function::load(&opts.out, StartMode::Cold).map_err(|e| BuildError::Check(e.to_string()))?;
    progress.step("check: the bundle loads (static x86-64 program, limits in range)");

    if !opts.snapshot {
        progress.step("snapshot: skipped (--no-snapshot; serve takes it at start)");
        return Ok(Built { bundle: opts.out.clone(), snapshot: None });
    }
    if !opts.force && matches!(Function::load(&opts.out, StartMode::Snapshot), Ok(f) if f.has_snapshot()) {
        progress.step(&format!("snapshot {}: up to date", path.display()));
        return Ok(Built { bundle: opts.out.clone(), snapshot: Some(path) });
    }
    let function = Function::load(&opts.out, StartMode::Cold).map_err(|e| BuildError::Check(e.to_string()))?;
    let tmp = opts.out.join(format!(".{}.tmp-{}", vmm::snapshot::SNAPSHOT_FILE, std::process::id()));
    let report = function.take_snapshot(&tmp).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        BuildError::Snapshot(e.to_string())
    })?;
    fs::rename(&tmp, &path).map_err(io(&path, "cannot move the snapshot into place"))?;
    progress.step(&format!(
        "snapshot {}: {} KiB of guest memory, {} syscalls before the first read of stdin",
        path.display(),
        report.memory_bytes / 1024,
        report.syscalls
    ));
    Ok(Built { bundle: opts.out.clone(), snapshot: Some(path) })
}

/// Function names are directory names made of `[A-Za-z0-9._-]`, not starting with a dot (the
/// rule serve's routes apply).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// The process a bundle runs: `process.args` and `process.env` of its config.json.
pub struct ProcessSpec {
    pub args: Vec<String>,
    pub env: Vec<String>,
}

/// Writes `config.json` (the OCI runtime-bundle shape serve reads) if its content changed.
fn write_config(out: &Path, process: &ProcessSpec, annotations: &[(String, String)]) -> Result<bool, BuildError> {
    let annotations: serde_json::Map<String, serde_json::Value> =
        annotations.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": process.args,
            "env": process.env,
            "cwd": "/",
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "snapcall",
        "annotations": annotations,
    });
    // A Value of strings, lists and maps always serializes.
    let mut text = serde_json::to_string_pretty(&config).unwrap_or_default();
    text.push('\n');
    write_if_changed(&out.join("config.json"), text.as_bytes())
}

/// Writes `bytes` to `path` unless it holds them already (its mtime then stays). True if written.
pub(crate) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool, BuildError> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io(&tmp, "cannot write"))?;
    fs::rename(&tmp, path).map_err(io(path, "cannot write"))?;
    Ok(true)
}

/// Runs a command to completion; a failure carries its output.
pub(crate) fn run(cmd: &mut std::process::Command, hint: &'static str) -> Result<String, BuildError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().map_err(|source| BuildError::Spawn { program: program.clone(), source, hint })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        return Err(BuildError::Command {
            command: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            output: output.trim_end().to_owned(),
        });
    }
    Ok(output)
}

/// Replaces `dst` by a tree of hard links to `src` (a copy where linking fails, e.g. across
/// file systems): directories made, symlinks recreated, files shared on disk. Executable
/// files are copied, never linked: the program's version is its stamp (the vmm's
/// `verified.rs`), which includes the inode's change time, and every new link to a shared
/// inode changes that. A program linked into every bundle would look changed to each bundle
/// whenever another was built (a function loaded meanwhile refused its program, its snapshot
/// verified again), and one bundle's program could not be replaced without the others'.
pub(crate) fn link_tree(src: &Path, dst: &Path) -> Result<(), BuildError> {
    let meta = fs::symlink_metadata(src).map_err(io(src, "cannot read"))?;
    if meta.is_dir() {
        fs::create_dir_all(dst).map_err(io(dst, "cannot create"))?;
        fs::set_permissions(dst, meta.permissions()).map_err(io(dst, "cannot set permissions"))?;
        for entry in fs::read_dir(src).map_err(io(src, "cannot list"))? {
            let entry = entry.map_err(io(src, "cannot list"))?;
            link_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
    } else if meta.file_type().is_symlink() {
        let target = fs::read_link(src).map_err(io(src, "cannot read the link"))?;
        std::os::unix::fs::symlink(target, dst).map_err(io(dst, "cannot create the link"))?;
    } else if meta.permissions().mode() & 0o111 != 0 || fs::hard_link(src, dst).is_err() {
        fs::copy(src, dst).map_err(io(dst, "cannot copy into the bundle"))?;
    }
    Ok(())
}

/// Swaps a freshly made `staged` rootfs in for `out/rootfs`. The one it replaces is kept as
/// `out/.rootfs.previous` until the next build: a server still serving the old version (until
/// its SIGHUP) keeps finding its files.
pub(crate) fn swap_rootfs(out: &Path, staged: &Path) -> Result<(), BuildError> {
    let live = out.join("rootfs");
    let previous = out.join(".rootfs.previous");
    if previous.exists() {
        fs::remove_dir_all(&previous).map_err(io(&previous, "cannot remove the rootfs before last"))?;
    }
    if live.exists() {
        fs::rename(&live, &previous).map_err(io(&live, "cannot move the old rootfs aside"))?;
    }
    fs::rename(staged, &live).map_err(io(&live, "cannot move the new rootfs into place"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// Data files are shared with the runtime; programs are copies of their own, so building
    /// another bundle from the same runtime leaves this bundle's program's stamp alone.
    #[test]
    fn a_linked_tree_shares_data_files_and_copies_programs() {
        let dir = std::env::temp_dir().join(format!("snapcall-link-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (src, dst, other) = (dir.join("runtime"), dir.join("bundle"), dir.join("another"));
        fs::create_dir_all(src.join("usr/bin")).unwrap();
        fs::write(src.join("usr/bin/python3"), b"\x7fELF program").unwrap();
        fs::set_permissions(src.join("usr/bin/python3"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("usr/os.py"), b"import sys").unwrap();
        std::os::unix::fs::symlink("python3", src.join("usr/bin/python3.11")).unwrap();

        link_tree(&src, &dst).unwrap();
        let program = dst.join("usr/bin/python3");
        let before = fs::metadata(&program).unwrap();
        link_tree(&src, &other).unwrap();
        let after = fs::metadata(&program).unwrap();

        assert_ne!(before.ino(), fs::metadata(src.join("usr/bin/python3")).unwrap().ino(), "the program is copied");
        assert_eq!(fs::read(&program).unwrap(), b"\x7fELF program");
        assert_eq!(before.mode() & 0o777, 0o755);
        assert_eq!((before.ctime(), before.ctime_nsec(), before.nlink()), (after.ctime(), after.ctime_nsec(), 1));
        assert_eq!(
            fs::metadata(dst.join("usr/os.py")).unwrap().ino(),
            fs::metadata(src.join("usr/os.py")).unwrap().ino()
        );
        assert_eq!(fs::read_link(dst.join("usr/bin/python3.11")).unwrap(), Path::new("python3"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
