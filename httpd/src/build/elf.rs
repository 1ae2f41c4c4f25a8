//! What `snapcall build` checks of a C function's program before it goes into a bundle: an
//! x86-64 ELF executable, and static. A dynamic one (`PT_INTERP`, or `PT_DYNAMIC` naming
//! shared libraries it needs) is refused with the interpreter and libraries it asks for;
//! snapcall has no dynamic loader. A static PIE has `PT_DYNAMIC` (its own relocations) and
//! needs no library, so it passes. The vmm's loader checks the rest when the bundle is loaded.

const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_LOAD: u32 = 1;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const EM_X86_64: u16 = 62;

/// Why a program is not one snapcall can run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfProblem {
    #[error("is not an ELF file")]
    NotElf,
    #[error("is not a 64-bit x86-64 ELF (machine {machine})")]
    WrongArchitecture { machine: u16 },
    #[error("is malformed: {0}")]
    Malformed(&'static str),
    #[error("is dynamically linked (interpreter {interpreter}{}); snapcall has no dynamic loader",
        if needed.is_empty() { String::new() } else { format!(", needs {}", needed.join(", ")) })]
    Dynamic { interpreter: String, needed: Vec<String> },
    #[error("needs shared libraries ({}); snapcall has no dynamic loader", needed.join(", "))]
    NeedsLibraries { needed: Vec<String> },
}

struct Phdr {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The NUL-terminated string at `at` in `b`.
fn c_string(b: &[u8], at: usize) -> Option<String> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// Checks that `bytes` is a static x86-64 ELF.
pub fn check_static(bytes: &[u8]) -> Result<(), ElfProblem> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(ElfProblem::NotElf);
    }
    let machine = u16_at(bytes, 18).ok_or(ElfProblem::Malformed("short header"))?;
    if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) || machine != EM_X86_64 {
        return Err(ElfProblem::WrongArchitecture { machine });
    }
    let bad = ElfProblem::Malformed;
    let phoff = u64_at(bytes, 32).ok_or(bad("short header"))? as usize;
    let phentsize = u16_at(bytes, 54).ok_or(bad("short header"))? as usize;
    let phnum = u16_at(bytes, 56).ok_or(bad("short header"))? as usize;
    if phentsize < 56 {
        return Err(bad("program header entries too small"));
    }
    let mut phdrs = Vec::with_capacity(phnum);
    for i in 0..phnum {
        let at = phoff.checked_add(i * phentsize).ok_or(bad("program headers out of the file"))?;
        let field = |off| u64_at(bytes, at + off).ok_or(bad("program headers out of the file"));
        phdrs.push(Phdr {
            kind: u32_at(bytes, at).ok_or(bad("program headers out of the file"))?,
            offset: field(8)?,
            vaddr: field(16)?,
            filesz: field(32)?,
        });
    }
    let needed = needed_libraries(bytes, &phdrs);
    if let Some(interp) = phdrs.iter().find(|p| p.kind == PT_INTERP) {
        let interpreter = c_string(bytes, interp.offset as usize).unwrap_or_else(|| "?".into());
        return Err(ElfProblem::Dynamic { interpreter, needed });
    }
    if !needed.is_empty() {
        return Err(ElfProblem::NeedsLibraries { needed });
    }
    Ok(())
}

/// The `DT_NEEDED` names of the dynamic section, if any (best effort: a malformed dynamic
/// section names nothing, and the loader refuses the program later anyway).
fn needed_libraries(bytes: &[u8], phdrs: &[Phdr]) -> Vec<String> {
    let Some(dynamic) = phdrs.iter().find(|p| p.kind == PT_DYNAMIC) else { return Vec::new() };
    let mut offsets = Vec::new();
    let mut strtab = None;
    let start = dynamic.offset as usize;
    for i in 0..(dynamic.filesz as usize / 16).min(4096) {
        let (Some(tag), Some(val)) = (u64_at(bytes, start + i * 16), u64_at(bytes, start + i * 16 + 8)) else { break };
        match tag {
            DT_NULL => break,
            DT_NEEDED => offsets.push(val),
            DT_STRTAB => strtab = Some(val),
            _ => {}
        }
    }
    // DT_STRTAB is an address: find the file offset through the PT_LOAD that maps it.
    let Some(strtab) = strtab.and_then(|addr| {
        phdrs
            .iter()
            .find(|p| p.kind == PT_LOAD && addr >= p.vaddr && addr - p.vaddr < p.filesz)
            .map(|p| addr - p.vaddr + p.offset)
    }) else {
        return offsets.iter().map(|_| "?".to_owned()).collect();
    };
    offsets.iter().map(|&o| c_string(bytes, (strtab + o) as usize).unwrap_or_else(|| "?".into())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_system_program_is_refused_with_its_libraries() {
        let bytes = std::fs::read("/bin/true").unwrap();
        match check_static(&bytes) {
            Err(ElfProblem::Dynamic { interpreter, needed }) => {
                assert!(interpreter.contains("ld-linux"), "{interpreter}");
                assert!(needed.iter().any(|n| n.starts_with("libc.so")), "{needed:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_elf_and_truncated() {
        assert_eq!(check_static(b"#!/bin/sh\n"), Err(ElfProblem::NotElf));
        let bytes = std::fs::read("/bin/true").unwrap();
        assert!(check_static(&bytes[..40]).is_err());
    }
}
