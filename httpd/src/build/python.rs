//! A Python function's rootfs: the static CPython and its pruned stdlib (hard links into the
//! runtime template `guest-functions/python/build-python.sh` assembles), snapcall's runtime
//! (`/runtime/snapcall_runtime.py`, the adapter between a call and `handle(event, context)`),
//! the function's own modules in `/function`, and the pure-Python packages of its
//! `requirements.txt` in `/packages`, all compiled to `.pyc` by the guest interpreter itself.
//!
//! Requirements are installed from wheels only, for CPython 3.11 on x86-64 Linux: `pip
//! download --only-binary=:all:` fetches them with their dependencies (the network is needed
//! here, never at call time), then every wheel must be pure (`*-none-any.whl`) and the
//! installed tree hold no shared object: the static interpreter cannot load extension modules.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::UNIX_EPOCH;

use super::manifest::{Manifest, MANIFEST_FILE};
use super::{io, link_tree, run, swap_rootfs, write_if_changed, BuildError, Options, ProcessSpec, Progress};

/// snapcall's Python runtime, the one file every Python bundle shares besides the interpreter.
pub const RUNTIME_PY: &str = include_str!("../../../guest-functions/python/snapcall_runtime.py");

/// The guest's CPython: what wheels must be built for.
const PYTHON_VERSION: &str = "3.11";

/// Files of a function directory that are not the function's code.
fn is_code(name: &str) -> bool {
    !(name.starts_with('.')
        || name == MANIFEST_FILE
        || name == "requirements.txt"
        || name == "__pycache__"
        || name.ends_with(".pyc")
        || name.to_ascii_lowercase().starts_with("readme"))
}

/// The function's files to copy into `/function`: everything but the manifest, the
/// requirements, READMEs, dot files, and bundles (this build's output among them).
fn code_files(dir: &Path, out: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let out = fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf());
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir, "cannot list the function directory"))? {
        let entry = entry.map_err(io(dir, "cannot list the function directory"))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let canonical = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        let is_bundle = path.join("config.json").is_file() || canonical == out || out.starts_with(&canonical);
        if is_code(&name) && !is_bundle {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Copies `src` (a file, or a directory recursively; symlinks followed) to `dst`.
fn copy_in(src: &Path, dst: &Path) -> Result<(), BuildError> {
    if fs::metadata(src).map_err(io(src, "cannot read"))?.is_dir() {
        fs::create_dir_all(dst).map_err(io(dst, "cannot create"))?;
        for entry in fs::read_dir(src).map_err(io(src, "cannot list"))? {
            let entry = entry.map_err(io(src, "cannot list"))?;
            if entry.file_name().to_str().is_some_and(is_code) {
                copy_in(&entry.path(), &dst.join(entry.file_name()))?;
            }
        }
        return Ok(());
    }
    fs::copy(src, dst).map_err(io(dst, "cannot copy into the bundle"))?;
    Ok(())
}

/// What the rootfs is made from, in one string: equal strings, same rootfs. A file is its
/// path, inode, size and modification time (a directory: its files, recursively).
fn fingerprint(files: &[PathBuf], runtime: &Path, manifest: &Manifest, requirements: &str) -> String {
    fn stamp(out: &mut String, path: &Path, recurse: bool, depth: usize) {
        let Ok(m) = fs::metadata(path) else { return };
        let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        out.push_str(&format!("{} {} {} {}\n", path.display(), m.ino(), m.len(), mtime.as_nanos()));
        if recurse && m.is_dir() && depth < 16 {
            let mut entries: Vec<PathBuf> =
                fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
            entries.sort();
            for e in entries {
                stamp(out, &e, true, depth + 1);
            }
        }
    }
    let mut s = format!(
        "snapcall {}\nruntime {} {}\nmanifest {}\nrequirements {requirements}\n",
        env!("CARGO_PKG_VERSION"),
        RUNTIME_PY.len(),
        fnv(RUNTIME_PY.as_bytes()),
        serde_json::to_string(manifest).unwrap_or_default()
    );
    // The template is replaced as a whole when build-python.sh rebuilds it: its directory and
    // interpreter stand for it.
    stamp(&mut s, runtime, false, 0);
    stamp(&mut s, &runtime.join("usr/bin/python3"), false, 0);
    for f in files {
        stamp(&mut s, f, true, 0);
    }
    s
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn build_rootfs(
    dir: &Path,
    manifest: &Manifest,
    name: &str,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(ProcessSpec, bool), BuildError> {
    let runtime = &opts.python_runtime;
    if !runtime.join("usr/bin/python3").is_file() {
        return Err(BuildError::NoPythonRuntime { path: runtime.clone() });
    }
    let (module, handler) = manifest.python_section();
    let top = module.split('.').next().unwrap_or(&module);
    if !dir.join(format!("{top}.py")).is_file() && !dir.join(top).join("__init__.py").is_file() {
        return Err(BuildError::NoModule { module: module.clone(), top: top.to_owned(), dir: dir.to_path_buf() });
    }
    let requirements = match fs::read_to_string(dir.join("requirements.txt")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BuildError::Io { path: dir.join("requirements.txt"), what: "cannot read", source: e }),
    };
    let wanted: Vec<&str> =
        requirements.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect();
    let files = code_files(dir, &opts.out)?;
    let print = fingerprint(&files, runtime, manifest, &requirements);
    let stamp_path = opts.out.join(".snapcall-build");
    let rootfs = opts.out.join("rootfs");

    let unchanged = !opts.force && rootfs.is_dir() && fs::read_to_string(&stamp_path).is_ok_and(|s| s == print);
    if unchanged {
        progress.step(&format!(
            "rootfs: up to date ({} file(s) of the function, {} requirement(s))",
            files.len(),
            wanted.len()
        ));
    } else {
        let stage = opts.out.join(format!(".rootfs.new-{}", std::process::id()));
        let _ = fs::remove_dir_all(&stage);
        let made = assemble(dir, &stage, runtime, &files, &wanted, opts, progress);
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&stage);
            return Err(e);
        }
        // The stamp goes first: a build stopped between the two rebuilds the next time.
        let _ = fs::remove_file(&stamp_path);
        swap_rootfs(&opts.out, &stage)?;
        write_if_changed(&stamp_path, print.as_bytes())?;
    }

    let mut pythonpath = "/function".to_owned();
    if !wanted.is_empty() {
        pythonpath.push_str(":/packages");
    }
    let args = [
        "/usr/bin/python3",
        "-S",
        "-B",
        "/runtime/snapcall_runtime.py",
        "--module",
        &module,
        "--handler",
        &handler,
        "--function-name",
        name,
        "--timeout-ms",
        &manifest.timeout_ms().to_string(),
        "--memory-mib",
        &manifest.memory_mib().to_string(),
        "--response",
        manifest.response().as_str(),
    ];
    let env = [
        "PATH=/usr/bin",
        "HOME=/",
        "PYTHONHOME=/usr",
        &format!("PYTHONPATH={pythonpath}"),
        "PYTHONUTF8=1",
        "PYTHONCOERCECLOCALE=0",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONNOUSERSITE=1",
    ];
    let process = ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env.iter().map(|s| s.to_string()).collect(),
    };
    Ok((process, !unchanged))
}

/// Makes the rootfs in `stage`.
fn assemble(
    dir: &Path,
    stage: &Path,
    runtime: &Path,
    files: &[PathBuf],
    wanted: &[&str],
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    link_tree(runtime, stage)?;
    progress.step(&format!("runtime {}: CPython {PYTHON_VERSION} and its stdlib (hard links)", runtime.display()));
    let rt = stage.join("runtime");
    fs::create_dir_all(&rt).map_err(io(&rt, "cannot create"))?;
    fs::write(rt.join("snapcall_runtime.py"), RUNTIME_PY).map_err(io(&rt, "cannot write the runtime"))?;
    let function = stage.join("function");
    fs::create_dir_all(&function).map_err(io(&function, "cannot create"))?;
    for f in files {
        copy_in(f, &function.join(f.file_name().unwrap_or_default()))?;
    }
    let names: Vec<String> =
        files.iter().filter_map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    progress.step(&format!("function: {} into /function", names.join(" ")));
    let mut compiled = vec![(rt, "/runtime"), (function, "/function")];
    if !wanted.is_empty() {
        let packages = stage.join("packages");
        install_requirements(dir, &opts.out, &packages, progress)?;
        compiled.push((packages, "/packages"));
    } else {
        progress.step("requirements: none");
    }
    // Compiled by the guest's own interpreter (same magic number), unchecked-hash so the guest
    // never stats a source to validate its .pyc nor tries to write one.
    for (path, guest) in &compiled {
        let mut cmd = Command::new(stage.join("usr/bin/python3"));
        cmd.env_clear()
            .env("PYTHONHOME", stage.join("usr"))
            .env("PYTHONUTF8", "1")
            .args(["-S", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "-d", guest])
            .arg(path);
        run(&mut cmd, "the runtime's python3 must run on this machine").map_err(|e| match e {
            BuildError::Command { output, .. } => BuildError::Syntax { guest, output },
            other => other,
        })?;
    }
    progress.step("compile: .pyc for /runtime, /function and /packages (the guest's interpreter)");
    Ok(())
}

/// `pip download` the requirements as wheels for the guest's CPython, refuse any that is not
/// pure Python, and install them into `packages`.
fn install_requirements(dir: &Path, out: &Path, packages: &Path, progress: &dyn Progress) -> Result<(), BuildError> {
    let python = std::env::var("SNAPCALL_PIP_PYTHON").unwrap_or_else(|_| "python3".into());
    let wheels = out.join(format!(".wheels-{}", std::process::id()));
    let _ = fs::remove_dir_all(&wheels);
    let result = fetch_and_install(&python, dir, &wheels, packages, progress);
    let _ = fs::remove_dir_all(&wheels);
    result
}

/// Downloads the wheels into `wheels`, checks each is pure Python, installs them.
fn fetch_and_install(
    python: &str,
    dir: &Path,
    wheels: &Path,
    packages: &Path,
    progress: &dyn Progress,
) -> Result<(), BuildError> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--only-binary=:all:"])
        .args(["--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi", "cp311"])
        .args(["--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"])
        .arg("--dest")
        .arg(wheels)
        .arg("-r")
        .arg(dir.join("requirements.txt"));
    run(&mut cmd, "snapcall build runs pip with python3 (SNAPCALL_PIP_PYTHON) for requirements.txt").map_err(|e| {
        match e {
            BuildError::Command { output, .. } => BuildError::Pip { output },
            other => other,
        }
    })?;
    let mut found: Vec<PathBuf> = fs::read_dir(wheels)
        .map_err(io(wheels, "cannot list the downloaded wheels"))?
        .flatten()
        .map(|e| e.path())
        .collect();
    found.sort();
    let mut installed = Vec::new();
    for wheel in &found {
        let file = wheel.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let (package, pure) = wheel_tags(&file);
        if !pure {
            return Err(BuildError::CompiledExtension {
                package,
                why: format!("its wheel {file} is built for one Python ABI and platform, and it has no pure one"),
            });
        }
        installed.push(package);
    }
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--no-deps", "--no-index"])
        .args(["--no-compile", "--no-warn-script-location", "--target"])
        .arg(packages)
        .args(&found);
    run(&mut cmd, "snapcall build runs pip with python3 (SNAPCALL_PIP_PYTHON)").map_err(|e| match e {
        BuildError::Command { output, .. } => BuildError::Pip { output },
        other => other,
    })?;
    if let Some(so) = shared_object(packages, 0) {
        let rel = so.strip_prefix(packages).unwrap_or(&so).display().to_string();
        let package = rel.split('/').next().unwrap_or(&rel).to_owned();
        return Err(BuildError::CompiledExtension { package, why: format!("it installs the shared object {rel}") });
    }
    // Scripts pip installs are for a shell the guest does not have.
    let _ = fs::remove_dir_all(packages.join("bin"));
    progress.step(&format!("requirements: {} (pure Python) into /packages", installed.join(", ")));
    Ok(())
}

/// `name version` of a wheel file, and whether it is pure Python (`-none-any`).
fn wheel_tags(file: &str) -> (String, bool) {
    let parts: Vec<&str> = file.trim_end_matches(".whl").split('-').collect();
    let package = match parts.as_slice() {
        [name, version, ..] => format!("{name} {version}"),
        _ => file.to_owned(),
    };
    let pure = parts.len() >= 5 && parts[parts.len() - 2] == "none" && parts[parts.len() - 1] == "any";
    (package, pure)
}

/// The first `.so` (or `.so.N`) file under `dir`.
fn shared_object(dir: &Path, depth: usize) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().is_ok_and(|t| t.is_dir()) && depth < 32 {
            if let Some(found) = shared_object(&path, depth + 1) {
                return Some(found);
            }
        } else if name.ends_with(".so") || name.contains(".so.") {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wheels_are_pure_or_not() {
        assert_eq!(wheel_tags("six-1.17.0-py2.py3-none-any.whl"), ("six 1.17.0".into(), true));
        let (package, pure) = wheel_tags("markupsafe-3.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl");
        assert_eq!((package.as_str(), pure), ("markupsafe 3.0.4", false));
        assert!(!wheel_tags("cffi-1.0-1-cp311-abi3-linux_x86_64.whl").1);
    }

    #[test]
    fn what_is_code() {
        for name in ["handler.py", "lib", "data.json"] {
            assert!(is_code(name), "{name}");
        }
        for name in ["function.json", "requirements.txt", "README.md", ".git", "__pycache__", "x.pyc"] {
            assert!(!is_code(name), "{name}");
        }
    }
}
