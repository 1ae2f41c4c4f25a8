//! A C function's rootfs: its program at `/bin/NAME`, compiled static from its sources (glibc
//! `gcc -static`, a glibc static PIE, or `musl-gcc -static`) or copied from a prebuilt ELF,
//! and refused if it is not a static x86-64 executable.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use super::manifest::{CSection, Libc, Manifest, MANIFEST_FILE};
use super::{elf, io, run, BuildError, Options, ProcessSpec, Progress};

/// snapcall's flags, before the manifest's `cflags`.
const CFLAGS: &[&str] = &["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-g0"];

pub fn build_rootfs(
    dir: &Path,
    manifest: &Manifest,
    name: &str,
    opts: &Options,
    progress: &dyn Progress,
) -> Result<(ProcessSpec, bool), BuildError> {
    let section = manifest.c.clone().unwrap_or_default();
    let bin_dir = opts.out.join("rootfs/bin");
    fs::create_dir_all(&bin_dir).map_err(io(&bin_dir, "cannot create"))?;
    let bin = bin_dir.join(name);
    let changed = match &section.program {
        Some(program) => copy_prebuilt(&dir.join(program), &bin, progress)?,
        None => compile(dir, &section, &bin, opts.force, progress)?,
    };
    let process = ProcessSpec { args: vec![format!("/bin/{name}")], env: vec!["PATH=/bin".into(), "HOME=/".into()] };
    Ok((process, changed))
}

fn check(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    elf::check_static(bytes).map_err(|problem| BuildError::Program { path: path.to_path_buf(), problem })
}

/// Copies the program in; true if it changed.
fn copy_prebuilt(program: &Path, bin: &Path, progress: &dyn Progress) -> Result<bool, BuildError> {
    let bytes = fs::read(program).map_err(io(program, "cannot read the prebuilt program (\"c\": {\"program\"})"))?;
    check(program, &bytes)?;
    let written = super::write_if_changed(bin, &bytes)?;
    fs::set_permissions(bin, fs::Permissions::from_mode(0o755)).map_err(io(bin, "cannot make it executable"))?;
    progress.step(&format!(
        "program {}: static x86-64, {} bytes, {}",
        program.display(),
        bytes.len(),
        if written { "copied" } else { "unchanged" }
    ));
    Ok(written)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The sources, and what else a change of means recompiling: headers beside them, the manifest.
fn inputs(dir: &Path, section: &CSection) -> Result<(Vec<PathBuf>, Vec<PathBuf>), BuildError> {
    let sources: Vec<PathBuf> = match &section.sources {
        Some(list) => list.iter().map(|s| dir.join(s)).collect(),
        None if dir.join("handler.c").is_file() => vec![dir.join("handler.c")],
        None => return Err(BuildError::NoSources { what: dir.display().to_string() }),
    };
    if sources.is_empty() {
        return Err(BuildError::NoSources { what: dir.join(MANIFEST_FILE).display().to_string() });
    }
    let mut deps = sources.clone();
    deps.push(dir.join(MANIFEST_FILE));
    for src in &sources {
        fs::metadata(src).map_err(io(src, "cannot read the source file"))?;
        let parent = src.parent().unwrap_or(Path::new("."));
        if let Ok(entries) = fs::read_dir(parent) {
            deps.extend(entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "h")));
        }
    }
    Ok((sources, deps))
}

/// Compiles the program unless it is newer than its inputs; true if it was compiled.
fn compile(
    dir: &Path,
    section: &CSection,
    bin: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<bool, BuildError> {
    let (sources, deps) = inputs(dir, section)?;
    let libc = section.libc.unwrap_or(Libc::Glibc);
    let kind = match (libc, section.pie) {
        (Libc::Glibc, false) => "glibc, static",
        (Libc::Glibc, true) => "glibc, static PIE",
        (Libc::Musl, _) => "musl, static",
    };
    let names: Vec<String> = sources.iter().map(|s| s.display().to_string()).collect();
    let built = mtime(bin);
    if !force && built.is_some() && deps.iter().all(|d| mtime(d).is_some_and(|t| Some(t) <= built)) {
        progress.step(&format!("compile ({kind}) {}: up to date", names.join(" ")));
        return Ok(false);
    }
    let (cc, link): (String, &[&str]) = match (libc, section.pie) {
        (Libc::Glibc, false) => {
            (std::env::var("CC").unwrap_or_else(|_| "gcc".into()), &["-static", "-no-pie", "-fno-pie"])
        }
        (Libc::Glibc, true) => (std::env::var("CC").unwrap_or_else(|_| "gcc".into()), &["-static-pie", "-fPIE"]),
        (Libc::Musl, _) => (std::env::var("MUSL_CC").unwrap_or_else(|_| "musl-gcc".into()), &["-static"]),
    };
    let tmp = bin.with_extension("tmp");
    let mut cmd = Command::new(&cc);
    cmd.args(CFLAGS).args(link).arg("-o").arg(&tmp).args(&sources).args(&section.cflags);
    run(&mut cmd, "install gcc (and musl-tools for musl): scripts/install-deps.sh")?;
    run(Command::new("strip").arg("--strip-all").arg(&tmp), "install binutils")?;
    let bytes = fs::read(&tmp).map_err(io(&tmp, "cannot read the compiled program"))?;
    check(&tmp, &bytes)?;
    fs::rename(&tmp, bin).map_err(io(bin, "cannot move the program into place"))?;
    progress.step(&format!("compile ({kind}) {}: {} bytes", names.join(" "), bytes.len()));
    Ok(true)
}
