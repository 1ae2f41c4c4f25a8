//! Loads a static x86-64 Linux ELF program (ET_EXEC, or static-pie ET_DYN) into guest memory
//! and builds the initial stack (argc, argv, envp, auxv) the Linux ABI defines, so glibc's
//! and musl's static start-up (TLS setup, IRELATIVE relocations) runs unmodified.

use crate::layout::{GuestAddr, PAGE_SIZE, PIE_LOAD_BASE, STACK_RESERVE, USER_START};
use crate::memory::{GuestMemory, MemoryError};

/// Why a program could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The program is not an ELF file.
    #[error("{path}: not an ELF file")]
    NotElf {
        /// The program's path inside the rootfs.
        path: String,
    },
    /// Not a 64-bit little-endian x86-64 ELF.
    #[error("{path}: not a 64-bit little-endian x86-64 executable")]
    WrongArchitecture {
        /// The program's path inside the rootfs.
        path: String,
    },
    /// Dynamically linked: snapcall has no dynamic loader.
    #[error("{path}: is dynamically linked (has PT_INTERP); snapcall runs static programs only")]
    Dynamic {
        /// The program's path inside the rootfs.
        path: String,
    },
    /// Neither ET_EXEC nor static-pie ET_DYN.
    #[error("{path}: ELF type {kind} is not an executable (need ET_EXEC or static-pie ET_DYN)")]
    NotExecutable {
        /// The program's path inside the rootfs.
        path: String,
        /// The ELF type.
        kind: u16,
    },
    /// Headers or segments that contradict themselves or the file.
    #[error("{path}: malformed ELF: {what}")]
    Malformed {
        /// The program's path inside the rootfs.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A segment lies outside user memory.
    #[error("{path}: segment at {addr:#x}+{size:#x} does not fit in user memory of {memory:#x} bytes")]
    DoesNotFit {
        /// The program's path inside the rootfs.
        path: String,
        /// The segment's address.
        addr: u64,
        /// Its size in memory.
        size: u64,
        /// Guest memory size.
        memory: u64,
    },
    /// argv + envp + auxv do not fit in the initial stack.
    #[error("initial stack does not fit: arguments and environment are too large")]
    StackTooLarge,
    /// The image reaches into what the stack or the vDSO needs.
    #[error("{path}: the program's image leaves no room for {what} in guest memory")]
    NoRoom {
        /// The program's path inside the rootfs.
        path: String,
        /// What has no room.
        what: &'static str,
    },
    /// No randomness for AT_RANDOM.
    #[error("no random bytes for AT_RANDOM: getrandom failed: {0}")]
    Random(std::io::Error),
    /// Writing guest memory failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The image's protections did not fit the page-table pool.
    #[error("page tables: {0}")]
    PageTables(crate::page_tables::PageTableError),
}

/// One PT_LOAD segment, relocated to its guest address.
#[derive(Debug, Clone)]
pub struct Segment {
    pub addr: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub mem_size: u64,
    /// Its `p_flags` (PF_R/PF_W/PF_X), which the page tables enforce.
    pub flags: u32,
}

/// A parsed program, ready to be copied into any number of VMs.
#[derive(Debug)]
pub struct Program {
    /// Path of the program inside the rootfs.
    pub path: String,
    pub bytes: Vec<u8>,
    pub segments: Vec<Segment>,
    pub entry: u64,
    pub phdr_addr: u64,
    pub phnum: u64,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

const PT_LOAD: u32 = 1;
const PT_INTERP: u32 = 3;
const PT_PHDR: u32 = 6;

impl Program {
    /// Parses `bytes` (the program file at `path` inside the rootfs) for a guest of
    /// `memory_size` bytes.
    pub fn parse(path: &str, bytes: Vec<u8>, memory_size: u64) -> Result<Program, LoadError> {
        let p = || path.to_string();
        let bad = |what: &str| LoadError::Malformed { path: p(), what: what.to_string() };
        if bytes.get(..4) != Some(b"\x7fELF") {
            return Err(LoadError::NotElf { path: p() });
        }
        if bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) || u16_at(&bytes, 18) != Some(62) {
            return Err(LoadError::WrongArchitecture { path: p() });
        }
        let kind = u16_at(&bytes, 16).ok_or_else(|| bad("short header"))?;
        let base = match kind {
            2 => 0,
            3 => PIE_LOAD_BASE,
            _ => return Err(LoadError::NotExecutable { path: p(), kind }),
        };
        let entry = u64_at(&bytes, 24).ok_or_else(|| bad("short header"))?;
        let phoff = u64_at(&bytes, 32).ok_or_else(|| bad("short header"))?;
        let phentsize = u16_at(&bytes, 54).ok_or_else(|| bad("short header"))?;
        let phnum = u16_at(&bytes, 56).ok_or_else(|| bad("short header"))?;
        if phentsize != 56 || phnum == 0 || phnum > 256 {
            return Err(bad("bad program header table"));
        }
        let mut segments = Vec::new();
        let mut phdr_addr = None;
        for i in 0..u64::from(phnum) {
            let off = usize::try_from(phoff.checked_add(i * 56).ok_or_else(|| bad("phoff overflow"))?)
                .map_err(|_| bad("phoff"))?;
            let field = |o: usize| u64_at(&bytes, off + o).ok_or_else(|| bad("program header past end of file"));
            let ptype = u32_at(&bytes, off).ok_or_else(|| bad("program header past end of file"))?;
            let flags = u32_at(&bytes, off + 4).ok_or_else(|| bad("program header past end of file"))?;
            let (offset, vaddr, filesz, memsz) = (field(8)?, field(16)?, field(32)?, field(40)?);
            match ptype {
                PT_INTERP => return Err(LoadError::Dynamic { path: p() }),
                PT_PHDR => phdr_addr = vaddr.checked_add(base),
                PT_LOAD => {
                    let in_file = offset.checked_add(filesz).is_some_and(|end| end <= bytes.len() as u64);
                    if !in_file || filesz > memsz {
                        return Err(bad(&format!("PT_LOAD {i} lies outside the file")));
                    }
                    let addr = vaddr.checked_add(base).ok_or_else(|| bad("vaddr overflow"))?;
                    let end = addr.saturating_add(memsz);
                    if addr < USER_START || end > memory_size.saturating_sub(STACK_RESERVE) {
                        return Err(LoadError::DoesNotFit { path: p(), addr, size: memsz, memory: memory_size });
                    }
                    if phdr_addr.is_none() && offset <= phoff && phoff < offset + filesz {
                        phdr_addr = Some(addr + (phoff - offset));
                    }
                    segments.push(Segment { addr, file_offset: offset, file_size: filesz, mem_size: memsz, flags });
                }
                _ => {}
            }
        }
        if segments.is_empty() {
            return Err(bad("no PT_LOAD"));
        }
        Ok(Program {
            path: path.to_string(),
            bytes,
            segments,
            entry: entry.checked_add(base).ok_or_else(|| bad("entry overflow"))?,
            phdr_addr: phdr_addr.unwrap_or(0),
            phnum: u64::from(phnum),
        })
    }

    /// Each PT_LOAD segment's page-rounded span and its own protection (from its p_flags),
    /// in the order the ELF lists them: the image part of the region map.
    pub fn image_segments(&self) -> Vec<(u64, u64, u32)> {
        const PF_X: u32 = 1;
        const PF_W: u32 = 2;
        const PF_R: u32 = 4;
        let prot = |flags: u32| {
            let mut p = 0;
            if flags & PF_R != 0 {
                p |= crate::mm::PROT_READ;
            }
            if flags & PF_W != 0 {
                p |= crate::mm::PROT_WRITE;
            }
            if flags & PF_X != 0 {
                p |= crate::mm::PROT_EXEC;
            }
            p
        };
        self.segments
            .iter()
            .filter(|s| s.mem_size > 0)
            .map(|s| (s.addr & !(PAGE_SIZE - 1), s.addr + s.mem_size, prot(s.flags)))
            .collect()
    }

    /// Copies the PT_LOAD segments into guest memory (the rest of each segment stays zero).
    pub fn copy_into(&self, mem: &mut GuestMemory) -> Result<(), LoadError> {
        for s in &self.segments {
            let start = s.file_offset as usize;
            let data = self
                .bytes
                .get(start..start + s.file_size as usize)
                .ok_or_else(|| LoadError::Malformed { path: self.path.clone(), what: "segment outside file".into() })?;
            mem.write(GuestAddr::new(s.addr), data)?;
        }
        Ok(())
    }
}

/// auxv keys (Linux include/uapi/linux/auxvec.h).
pub mod auxv {
    pub const AT_NULL: u64 = 0;
    pub const AT_PHDR: u64 = 3;
    pub const AT_PHENT: u64 = 4;
    pub const AT_PHNUM: u64 = 5;
    pub const AT_PAGESZ: u64 = 6;
    pub const AT_BASE: u64 = 7;
    pub const AT_FLAGS: u64 = 8;
    pub const AT_ENTRY: u64 = 9;
    pub const AT_UID: u64 = 11;
    pub const AT_EUID: u64 = 12;
    pub const AT_GID: u64 = 13;
    pub const AT_EGID: u64 = 14;
    pub const AT_PLATFORM: u64 = 15;
    pub const AT_HWCAP: u64 = 16;
    pub const AT_CLKTCK: u64 = 17;
    pub const AT_SECURE: u64 = 23;
    pub const AT_RANDOM: u64 = 25;
    pub const AT_HWCAP2: u64 = 26;
    pub const AT_EXECFN: u64 = 31;
    pub const AT_SYSINFO_EHDR: u64 = 33;
}

/// The initial stack: where it ended up and the auxv written into it.
pub struct InitialStack {
    pub rsp: u64,
    pub auxv: Vec<(u64, u64)>,
}

/// Writes argc/argv/envp/auxv below the top of guest memory and returns the initial rsp.
pub fn build_stack(
    mem: &mut GuestMemory,
    program: &Program,
    args: &[String],
    env: &[String],
    hwcap: u64,
    random: [u8; 16],
    vdso_ehdr: Option<u64>,
) -> Result<InitialStack, LoadError> {
    use auxv::*;
    let top = mem.size();
    let floor = top - STACK_RESERVE / 2;
    let mut sp = top;
    let mut push_bytes = |mem: &mut GuestMemory, data: &[u8]| -> Result<u64, LoadError> {
        sp = sp.checked_sub(data.len() as u64).filter(|&s| s >= floor).ok_or(LoadError::StackTooLarge)?;
        mem.write(GuestAddr::new(sp), data)?;
        Ok(sp)
    };
    let mut cstr = |mem: &mut GuestMemory, s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        push_bytes(mem, &b)
    };
    let execfn = cstr(mem, &program.path)?;
    let platform = cstr(mem, "x86_64")?;
    let mut env_ptrs = Vec::with_capacity(env.len());
    for e in env.iter().rev() {
        env_ptrs.push(cstr(mem, e)?);
    }
    env_ptrs.reverse();
    let mut arg_ptrs = Vec::with_capacity(args.len());
    for a in args.iter().rev() {
        arg_ptrs.push(cstr(mem, a)?);
    }
    arg_ptrs.reverse();
    let random_addr = push_bytes(mem, &random)?;

    let mut auxv = vec![
        (AT_PHDR, program.phdr_addr),
        (AT_PHENT, 56),
        (AT_PHNUM, program.phnum),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, program.entry),
        (AT_UID, crate::process::GUEST_UID),
        (AT_EUID, crate::process::GUEST_UID),
        (AT_GID, crate::process::GUEST_UID),
        (AT_EGID, crate::process::GUEST_UID),
        (AT_SECURE, 0),
        (AT_RANDOM, random_addr),
        (AT_HWCAP, hwcap),
        (AT_HWCAP2, 0),
        (AT_CLKTCK, 100),
        (AT_PLATFORM, platform),
        (AT_EXECFN, execfn),
    ];
    if let Some(ehdr) = vdso_ehdr {
        auxv.push((AT_SYSINFO_EHDR, ehdr));
    }
    auxv.push((AT_NULL, 0));
    let mut words: Vec<u64> = Vec::new();
    words.push(arg_ptrs.len() as u64);
    words.extend(&arg_ptrs);
    words.push(0);
    words.extend(&env_ptrs);
    words.push(0);
    for (k, v) in &auxv {
        words.push(*k);
        words.push(*v);
    }
    let size = words.len() as u64 * 8;
    let rsp = (sp.checked_sub(size).ok_or(LoadError::StackTooLarge)?) & !0xF;
    if rsp < floor {
        return Err(LoadError::StackTooLarge);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    mem.write(GuestAddr::new(rsp), &bytes)?;
    Ok(InitialStack { rsp, auxv })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_static_x86_64_executable() {
        let m = 64 << 20;
        assert!(matches!(Program::parse("/x", b"#!/bin/sh".to_vec(), m), Err(LoadError::NotElf { .. })));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1;
        assert!(matches!(Program::parse("/x", elf.clone(), m), Err(LoadError::WrongArchitecture { .. })));
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 62;
        elf[16] = 1; // ET_REL
        assert!(matches!(Program::parse("/x", elf.clone(), m), Err(LoadError::NotExecutable { .. })));
        elf[16] = 2;
        elf[54] = 56;
        elf[56] = 1;
        elf[32] = 200; // program headers past the end
        assert!(matches!(Program::parse("/x", elf, m), Err(LoadError::Malformed { .. })));
    }
}
