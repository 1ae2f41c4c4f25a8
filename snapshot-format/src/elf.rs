//! ELF64 header, program header and note record encoding (only what a core file needs).

use crate::bytes::round_up;

/// Size of `Elf64_Ehdr`.
pub const EHDR_SIZE: u64 = 64;
/// Size of `Elf64_Phdr`.
pub const PHDR_SIZE: u64 = 56;
/// Size of `Elf64_Nhdr`.
pub const NHDR_SIZE: u64 = 12;
/// Guest page size; PT_LOAD addresses and file offsets are multiples of it.
pub const PAGE_SIZE: u64 = 4096;

/// `ET_CORE`.
pub const ET_CORE: u16 = 4;
/// `EM_X86_64`.
pub const EM_X86_64: u16 = 62;
/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`.
pub const PT_NOTE: u32 = 4;
/// Segment is executable.
pub const PF_X: u32 = 1;
/// Segment is writable.
pub const PF_W: u32 = 2;
/// Segment is readable.
pub const PF_R: u32 = 4;
/// `e_phnum` value meaning "extended numbering" (not supported).
pub const PN_XNUM: u16 = 0xffff;
/// Longest note owner name accepted.
pub const MAX_NAMESZ: u32 = 256;

/// The fields of an ELF header that a core file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ehdr {
    pub ident: [u8; 16],
    pub e_type: u16,
    pub e_machine: u16,
    pub e_version: u32,
    pub e_entry: u64,
    pub e_phoff: u64,
    pub e_ehsize: u16,
    pub e_phentsize: u16,
    pub e_phnum: u16,
}

fn le16(b: &[u8], off: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(off..off + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}
fn le32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}
fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl Ehdr {
    /// Decode from 64 bytes (callers pass exactly [`EHDR_SIZE`] bytes).
    pub(crate) fn decode(b: &[u8; 64]) -> Self {
        let mut ident = [0u8; 16];
        ident.copy_from_slice(&b[..16]);
        Self {
            ident,
            e_type: le16(b, 16),
            e_machine: le16(b, 18),
            e_version: le32(b, 20),
            e_entry: le64(b, 24),
            e_phoff: le64(b, 32),
            e_ehsize: le16(b, 52),
            e_phentsize: le16(b, 54),
            e_phnum: le16(b, 56),
        }
    }

    /// Header of a snapcall core file with `phnum` program headers right after it.
    pub(crate) fn core(phnum: u16, entry: u64) -> Self {
        let mut ident = [0u8; 16];
        ident[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        Self {
            ident,
            e_type: ET_CORE,
            e_machine: EM_X86_64,
            e_version: 1,
            e_entry: entry,
            e_phoff: EHDR_SIZE,
            e_ehsize: EHDR_SIZE as u16,
            e_phentsize: PHDR_SIZE as u16,
            e_phnum: phnum,
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.ident);
        out.extend_from_slice(&self.e_type.to_le_bytes());
        out.extend_from_slice(&self.e_machine.to_le_bytes());
        out.extend_from_slice(&self.e_version.to_le_bytes());
        out.extend_from_slice(&self.e_entry.to_le_bytes());
        out.extend_from_slice(&self.e_phoff.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        out.extend_from_slice(&self.e_ehsize.to_le_bytes());
        out.extend_from_slice(&self.e_phentsize.to_le_bytes());
        out.extend_from_slice(&self.e_phnum.to_le_bytes());
        out.extend_from_slice(&[0u8; 6]); // e_shentsize, e_shnum, e_shstrndx
    }
}

/// `Elf64_Phdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Phdr {
    pub p_type: u32,
    pub p_flags: u32,
    pub p_offset: u64,
    pub p_vaddr: u64,
    pub p_paddr: u64,
    pub p_filesz: u64,
    pub p_memsz: u64,
    pub p_align: u64,
}

impl Phdr {
    /// Decode one program header from a 56-byte slice (shorter slices read as zeros).
    pub(crate) fn decode(b: &[u8]) -> Self {
        Self {
            p_type: le32(b, 0),
            p_flags: le32(b, 4),
            p_offset: le64(b, 8),
            p_vaddr: le64(b, 16),
            p_paddr: le64(b, 24),
            p_filesz: le64(b, 32),
            p_memsz: le64(b, 40),
            p_align: le64(b, 48),
        }
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.p_type.to_le_bytes());
        out.extend_from_slice(&self.p_flags.to_le_bytes());
        for v in [self.p_offset, self.p_vaddr, self.p_paddr, self.p_filesz, self.p_memsz, self.p_align] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// One note record: header, owner name (NUL-padded to a multiple of 4, `n_namesz` counting
/// the padding, as KM does for "CORE"/"KMSP"), descriptor, padding to 4.
///
/// Keeping `n_namesz` a multiple of 4 makes KM's note walker (which does not pad the name)
/// and the standard ELF walker agree.
pub fn encode_note(owner: &str, note_type: u32, desc: &[u8]) -> Vec<u8> {
    let mut name = owner.as_bytes().to_vec();
    if !name.len().is_multiple_of(4) {
        name.resize(name.len().div_ceil(4) * 4, 0);
    }
    let mut out = Vec::with_capacity(12 + name.len() + desc.len() + 3);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&note_type.to_le_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(desc);
    out.resize(out.len().div_ceil(4) * 4, 0);
    out
}

/// Round up to a page, `None` on overflow.
pub(crate) fn page_up(v: u64) -> Option<u64> {
    round_up(v, PAGE_SIZE)
}
