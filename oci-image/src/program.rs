//! The program a bundle runs, found inside an unpacked rootfs: `env` on the image's `PATH`
//! becomes `/bin/env`, and it must be a static x86-64 ELF (snapcall has no dynamic loader
//! to run, and the vmm loads `args[0]` itself). Every lookup resolves inside the rootfs.

use std::io::Read;
use std::path::Path;

use crate::error::OciError;
use crate::unpack::{open_in_root_path, RootDir};

/// The PATH used when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How an ELF file wants to be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linking {
    /// No `PT_INTERP`: the vmm can load it.
    Static,
    /// Asks for a dynamic loader (`PT_INTERP`).
    Dynamic,
}

/// The absolute path inside `rootfs` of `program`: as given if it contains a `/` (relative to
/// `cwd`), else the first `PATH` directory holding a regular file of that name.
pub fn find_program(rootfs: &Path, program: &str, path_env: Option<&str>, cwd: &str) -> Result<String, OciError> {
    let root = RootDir::open(rootfs).map_err(OciError::io(format!("rootfs {}", rootfs.display())))?;
    let candidates: Vec<String> = if program.contains('/') {
        let p = if program.starts_with('/') { program.to_string() } else { format!("{cwd}/{program}") };
        vec![lexical(&p)]
    } else {
        path_env
            .unwrap_or(DEFAULT_PATH)
            .split(':')
            .filter(|d| d.starts_with('/'))
            .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
            .collect()
    };
    for c in &candidates {
        if let Ok(f) = open_in_root_path(&root, Path::new(c.trim_start_matches('/'))) {
            if f.metadata().map(|m| m.is_file()).unwrap_or(false) {
                return Ok(c.clone());
            }
        }
    }
    Err(OciError::BadImage {
        what: format!("program {program:?}"),
        problem: format!("not found in the image (looked at {})", candidates.join(", ")),
    })
}

/// `path` with `.` and empty components dropped and `..` applied (never above `/`).
fn lexical(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Reads the ELF header and program headers of `path` inside `rootfs`.
pub fn elf_linking(rootfs: &Path, path: &str) -> Result<Linking, OciError> {
    let what = format!("program {path}");
    let root = RootDir::open(rootfs).map_err(OciError::io(format!("rootfs {}", rootfs.display())))?;
    let f = open_in_root_path(&root, Path::new(path.trim_start_matches('/'))).map_err(OciError::io(what.clone()))?;
    // Program headers live near the start; 64 KiB is plenty and bounds the read.
    let mut head = Vec::new();
    f.take(64 << 10).read_to_end(&mut head).map_err(OciError::io(what.clone()))?;
    let not = |p: &str| OciError::BadImage { what: what.clone(), problem: p.into() };
    if head.len() < 64 || &head[..4] != b"\x7fELF" {
        if head.starts_with(b"#!") {
            return Err(not(
                "is a script (#!): snapcall runs static x86-64 ELF programs, and the image's interpreter would be one",
            ));
        }
        return Err(not("is not an ELF program"));
    }
    if head[4] != 2 || head[5] != 1 || u16::from_le_bytes([head[18], head[19]]) != 62 {
        return Err(not("is not a 64-bit little-endian x86-64 ELF"));
    }
    let u64_at = |o: usize| head.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return Err(not("has a truncated ELF header"));
    };
    for i in 0..phnum as usize {
        let off = (phoff as usize).saturating_add(i.saturating_mul(phentsize as usize));
        let Some(kind) = head.get(off..off + 4) else {
            return Err(not("has program headers beyond its first 64 KiB"));
        };
        if u32::from_le_bytes([kind[0], kind[1], kind[2], kind[3]]) == 3 {
            return Ok(Linking::Dynamic);
        }
    }
    Ok(Linking::Static)
}
