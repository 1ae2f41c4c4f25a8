//! The reader: validates a snapshot file's headers and notes (not its memory) against
//! [`Limits`], and the payload hash on request. Hostile input gives a [`FormatError`],
//! never a panic.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::bytes::{hex, round_up, Cursor};
use crate::elf::{
    Ehdr, Phdr, EHDR_SIZE, EM_X86_64, ET_CORE, MAX_NAMESZ, NHDR_SIZE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PN_XNUM,
    PT_LOAD, PT_NOTE,
};
use crate::error::{FormatError, NoteAt};
use crate::km::{self, KmNote, KM_FILE_HOW_OPEN};
use crate::snapcall::{self, SNAPCALL_OWNER};
use crate::state::{GuestInfo, Limits, LoadSegment, NoteEntry, NoteKind, OpenFile, RawNote, Snapshot, SnapshotState};
use crate::write::{hash_load_header, PAYLOAD_HASH_PREFIX};

/// Something snapshots can be read from: a file or a byte slice.
trait Source {
    fn len(&self) -> u64;
    /// Fill `buf` from `offset`; the caller has checked the range lies within `len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError>;
}

struct FileSource<'a> {
    file: File,
    path: &'a Path,
    len: u64,
}

impl Source for FileSource<'_> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        self.file.read_exact_at(buf, offset).map_err(|source| FormatError::Io {
            op: "read",
            path: self.path.to_owned(),
            source,
        })
    }
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), FormatError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let src = start.checked_add(buf.len()).and_then(|end| self.get(start..end));
        match src {
            Some(s) => {
                buf.copy_from_slice(s);
                Ok(())
            }
            None => Err(FormatError::Truncated {
                what: "read",
                offset,
                end: offset.saturating_add(buf.len() as u64),
                file_len: Source::len(self),
            }),
        }
    }
}

/// Read `len` bytes at `offset` after checking the range lies in the file.
fn read_range<S: Source>(src: &S, what: &'static str, offset: u64, len: u64) -> Result<Vec<u8>, FormatError> {
    let file_len = src.len();
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= file_len => {
            let n = usize::try_from(len).map_err(|_| FormatError::Truncated { what, offset, end, file_len })?;
            let mut buf = vec![0u8; n];
            src.read_at(offset, &mut buf)?;
            Ok(buf)
        }
        _ => Err(FormatError::Truncated { what, offset, end: end.unwrap_or(u64::MAX), file_len }),
    }
}

fn open(path: &Path) -> Result<FileSource<'_>, FormatError> {
    let file = File::open(path).map_err(|source| FormatError::Io { op: "open", path: path.to_owned(), source })?;
    let len = file.metadata().map_err(|source| FormatError::Io { op: "stat", path: path.to_owned(), source })?.len();
    Ok(FileSource { file, path, len })
}

/// Read and validate a snapshot's headers and notes. Memory is not read.
///
/// # Errors
/// Any [`FormatError`]: I/O, a malformed or hostile ELF header, program header or note, a
/// segment outside `[0, limits.max_memory)`, or a size over a limit.
pub fn read_snapshot(path: &Path, limits: &Limits) -> Result<Snapshot, FormatError> {
    parse(&open(path)?, limits)
}

/// [`read_snapshot`] on a file already open (`path` names it in errors): reading and later
/// mapping one open file leaves no window for the path to be swapped in between.
///
/// # Errors
/// As [`read_snapshot`].
pub fn read_snapshot_file(file: &File, path: &Path, limits: &Limits) -> Result<Snapshot, FormatError> {
    parse(&file_source(file, path)?, limits)
}

/// [`verify_payload`] on a file already open (see [`read_snapshot_file`]).
///
/// # Errors
/// As [`verify_payload`].
pub fn verify_payload_file(file: &File, path: &Path, snapshot: &Snapshot) -> Result<(), FormatError> {
    verify(&file_source(file, path)?, snapshot)
}

fn file_source<'a>(file: &File, path: &'a Path) -> Result<FileSource<'a>, FormatError> {
    let io = |op: &'static str| move |source| FormatError::Io { op, path: path.to_owned(), source };
    let file = file.try_clone().map_err(io("dup"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    Ok(FileSource { file, path, len })
}

/// [`read_snapshot`] on a snapshot held in memory (tests, fuzzing, `inspect` of a pipe).
///
/// # Errors
/// As [`read_snapshot`].
pub fn parse_snapshot(bytes: &[u8], limits: &Limits) -> Result<Snapshot, FormatError> {
    parse(&bytes, limits)
}

/// Check the payload hash recorded in the identity note against the file's contents: every
/// PT_LOAD's header fields and file bytes and every other note's bytes.
///
/// # Errors
/// [`FormatError::NoPayloadHash`] when the snapshot has no identity note,
/// [`FormatError::PayloadHashMismatch`] when the contents differ, I/O errors.
pub fn verify_payload(path: &Path, snapshot: &Snapshot) -> Result<(), FormatError> {
    verify(&open(path)?, snapshot)
}

/// [`verify_payload`] on a snapshot held in memory.
///
/// # Errors
/// As [`verify_payload`].
pub fn verify_payload_bytes(bytes: &[u8], snapshot: &Snapshot) -> Result<(), FormatError> {
    verify(&bytes, snapshot)
}

fn verify<S: Source>(src: &S, snapshot: &Snapshot) -> Result<(), FormatError> {
    let expected = snapshot.payload_hash.ok_or(FormatError::NoPayloadHash)?;
    let mut h = Sha256::new();
    h.update(PAYLOAD_HASH_PREFIX);
    const CHUNK: u64 = 1 << 20;
    for s in &snapshot.segments {
        hash_load_header(&mut h, s.guest_addr, s.mem_size, s.file_size, s.prot);
        let mut done = 0u64;
        while done < s.file_size {
            let n = (s.file_size - done).min(CHUNK);
            let off = s.file_offset.saturating_add(done);
            h.update(read_range(src, "PT_LOAD data", off, n)?);
            done += n;
        }
    }
    for n in &snapshot.notes {
        if n.owner == SNAPCALL_OWNER && n.note_type == snapcall::NT_SNAPCALL_IDENTITY {
            continue;
        }
        h.update(read_range(src, "note", n.offset, n.record_len)?);
    }
    let actual: [u8; 32] = h.finalize().into();
    if actual != expected {
        return Err(FormatError::PayloadHashMismatch { expected: hex(&expected), actual: hex(&actual) });
    }
    Ok(())
}

fn check_ehdr(e: &Ehdr, limits: &Limits) -> Result<(), FormatError> {
    let magic = [e.ident[0], e.ident[1], e.ident[2], e.ident[3]];
    if magic != [0x7f, b'E', b'L', b'F'] {
        return Err(FormatError::BadMagic(magic));
    }
    if e.ident[4] != 2 {
        return Err(FormatError::WrongClass(e.ident[4]));
    }
    if e.ident[5] != 1 {
        return Err(FormatError::WrongEndian(e.ident[5]));
    }
    if e.ident[6] != 1 {
        return Err(FormatError::WrongElfVersion(e.ident[6].into()));
    }
    if e.e_type != ET_CORE {
        return Err(FormatError::WrongType(e.e_type));
    }
    if e.e_machine != EM_X86_64 {
        return Err(FormatError::WrongMachine(e.e_machine));
    }
    if e.e_version != 1 {
        return Err(FormatError::WrongElfVersion(e.e_version));
    }
    if u64::from(e.e_ehsize) != EHDR_SIZE || u64::from(e.e_phentsize) != PHDR_SIZE {
        return Err(FormatError::WrongHeaderSizes { ehsize: e.e_ehsize, phentsize: e.e_phentsize });
    }
    if e.e_phnum == 0 || e.e_phnum == PN_XNUM {
        return Err(FormatError::BadPhnum(e.e_phnum));
    }
    if u64::from(e.e_phnum) > limits.max_segments {
        return Err(FormatError::TooManySegments { count: e.e_phnum.into(), max: limits.max_segments });
    }
    if e.e_phoff < EHDR_SIZE || !e.e_phoff.is_multiple_of(8) {
        return Err(FormatError::BadPhoff(e.e_phoff));
    }
    Ok(())
}

/// Validate one PT_LOAD (alone; overlaps are checked afterwards).
fn check_load(index: usize, p: &Phdr, file_len: u64, limits: &Limits) -> Result<LoadSegment, FormatError> {
    if !p.p_vaddr.is_multiple_of(PAGE_SIZE) {
        return Err(FormatError::MisalignedSegmentAddress { index, vaddr: p.p_vaddr });
    }
    if !p.p_offset.is_multiple_of(PAGE_SIZE) {
        return Err(FormatError::MisalignedSegmentOffset { index, offset: p.p_offset });
    }
    if p.p_memsz == 0 {
        return Err(FormatError::EmptySegment { index });
    }
    if p.p_filesz > p.p_memsz {
        return Err(FormatError::FileSizeExceedsMemSize { index, filesz: p.p_filesz, memsz: p.p_memsz });
    }
    if p.p_flags & !(PF_R | PF_W | PF_X) != 0 {
        return Err(FormatError::BadSegmentFlags { index, flags: p.p_flags });
    }
    // The vmm maps whole pages, so the page-rounded end must lie in guest memory.
    let end = p.p_vaddr.checked_add(p.p_memsz).and_then(|e| round_up(e, PAGE_SIZE));
    if end.is_none_or(|e| e > limits.max_memory) {
        return Err(FormatError::SegmentOutsideMemory {
            index,
            vaddr: p.p_vaddr,
            memsz: p.p_memsz,
            max_memory: limits.max_memory,
        });
    }
    if p.p_offset.checked_add(p.p_filesz).is_none_or(|e| e > file_len) {
        return Err(FormatError::SegmentOutOfFile { index, offset: p.p_offset, filesz: p.p_filesz, file_len });
    }
    Ok(LoadSegment {
        guest_addr: p.p_vaddr,
        mem_size: p.p_memsz,
        file_offset: p.p_offset,
        file_size: p.p_filesz,
        prot: p.p_flags,
    })
}

/// One note record located in the PT_NOTE segment.
struct Record<'a> {
    owner: String,
    note_type: u32,
    desc: &'a [u8],
    offset: u64,
    record_len: u64,
}

/// Split the PT_NOTE bytes into records with the standard ELF rule (name and descriptor
/// each padded to 4); KM's names are 4 bytes, so KM's own walker agrees.
fn split_notes<'a>(buf: &'a [u8], base: u64, limits: &Limits) -> Result<Vec<Record<'a>>, FormatError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let len = buf.len();
    while pos < len {
        let index = out.len();
        let offset = base + pos as u64;
        let hdr = buf.get(pos..pos + NHDR_SIZE as usize);
        let Some(hdr) = hdr else {
            if buf.get(pos..).is_some_and(|t| t.iter().all(|&b| b == 0)) {
                break;
            }
            return Err(FormatError::NoteHeaderTruncated { index, offset });
        };
        if index >= limits.max_notes {
            return Err(FormatError::TooManyNotes { max: limits.max_notes });
        }
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (namesz, descsz, note_type) = (word(0), word(4), word(8));
        if namesz > MAX_NAMESZ {
            return Err(FormatError::NoteNameTooLong { index, offset, namesz });
        }
        let name_start = pos + NHDR_SIZE as usize;
        let desc_start = name_start + (namesz as usize).div_ceil(4) * 4;
        let desc_end = desc_start.checked_add(descsz as usize);
        let (Some(name), Some(desc_end)) = (buf.get(name_start..name_start + namesz as usize), desc_end) else {
            return Err(FormatError::NoteOutOfBounds {
                index,
                offset,
                note_type,
                namesz,
                descsz,
                available: (len - pos) as u64 - NHDR_SIZE,
            });
        };
        let Some(desc) = buf.get(desc_start..desc_end) else {
            return Err(FormatError::NoteOutOfBounds {
                index,
                offset,
                note_type,
                namesz,
                descsz,
                available: (len - pos) as u64 - NHDR_SIZE,
            });
        };
        let owner_bytes = name.split(|&b| b == 0).next().unwrap_or(&[]);
        let owner = String::from_utf8_lossy(owner_bytes).into_owned();
        let next = (desc_end.div_ceil(4) * 4).min(len);
        out.push(Record { owner, note_type, desc, offset, record_len: (next - pos) as u64 });
        pos = next;
    }
    Ok(out)
}

fn type_name(owner: &str, note_type: u32) -> &'static str {
    if owner == SNAPCALL_OWNER {
        snapcall::note_type_name(note_type).unwrap_or("?")
    } else {
        km::note_type_name(owner, note_type).unwrap_or("?")
    }
}

/// Remembers which notes were already seen, to refuse duplicates of unique notes.
#[derive(Default)]
struct Seen(Vec<(&'static str, usize)>);

impl Seen {
    fn once(&mut self, note: &'static str, index: usize) -> Result<(), FormatError> {
        if let Some(&(_, first)) = self.0.iter().find(|(n, _)| *n == note) {
            return Err(FormatError::DuplicateNote { note, first, second: index });
        }
        self.0.push((note, index));
        Ok(())
    }
    fn has(&self, note: &'static str) -> bool {
        self.0.iter().any(|(n, _)| *n == note)
    }
}

fn parse<S: Source>(src: &S, limits: &Limits) -> Result<Snapshot, FormatError> {
    let file_len = src.len();
    let ehdr_bytes: [u8; 64] = read_range(src, "ELF header", 0, EHDR_SIZE)?
        .try_into()
        .map_err(|_| FormatError::Truncated { what: "ELF header", offset: 0, end: EHDR_SIZE, file_len })?;
    let ehdr = Ehdr::decode(&ehdr_bytes);
    check_ehdr(&ehdr, limits)?;
    let ph_len = u64::from(ehdr.e_phnum) * PHDR_SIZE;
    let ph_bytes = read_range(src, "program headers", ehdr.e_phoff, ph_len)?;
    let ph_end = ehdr.e_phoff + ph_len; // read_range checked this fits in the file

    let mut note_seg: Option<(usize, Phdr)> = None;
    let mut loads = Vec::new();
    for (index, chunk) in ph_bytes.chunks_exact(PHDR_SIZE as usize).enumerate() {
        let p = Phdr::decode(chunk);
        match p.p_type {
            PT_NOTE => {
                if let Some((first, _)) = note_seg {
                    return Err(FormatError::DuplicateNoteSegment { first, second: index });
                }
                if p.p_filesz > limits.max_note_bytes {
                    return Err(FormatError::NoteSegmentTooLarge {
                        index,
                        size: p.p_filesz,
                        max: limits.max_note_bytes,
                    });
                }
                if !p.p_offset.is_multiple_of(4) {
                    return Err(FormatError::MisalignedNoteSegment { index, offset: p.p_offset });
                }
                note_seg = Some((index, p));
            }
            PT_LOAD => loads.push((index, check_load(index, &p, file_len, limits)?)),
            other => return Err(FormatError::UnexpectedSegmentType { index, p_type: other }),
        }
    }
    let (_, note_phdr) = note_seg.ok_or(FormatError::MissingNoteSegment)?;
    let note_bytes = read_range(src, "PT_NOTE segment", note_phdr.p_offset, note_phdr.p_filesz)?;
    let note_range = (note_phdr.p_offset, note_phdr.p_offset + note_phdr.p_filesz);

    // PT_LOAD file bytes must not overlap the headers or the notes.
    for (index, s) in &loads {
        if s.file_size == 0 {
            continue;
        }
        let (start, end) = (s.file_offset, s.file_offset + s.file_size);
        for (a, b) in [(0, ph_end), note_range] {
            if start < b && a < end {
                return Err(FormatError::SegmentOverlapsHeaders { index: *index, offset: start, headers_end: b });
            }
        }
    }
    // No two PT_LOADs may cover the same guest page.
    let mut sorted: Vec<(u64, u64, usize)> =
        loads.iter().map(|(i, s)| (s.guest_addr, s.guest_addr + s.mem_size, *i)).collect();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if let [a, b] = w {
            // Ends were checked to page-round within max_memory.
            if b.0 < round_up(a.1, PAGE_SIZE).unwrap_or(u64::MAX) {
                return Err(FormatError::OverlappingSegments { first: a.2, second: b.2, addr: b.0 });
            }
        }
    }

    let records = split_notes(&note_bytes, note_phdr.p_offset, limits)?;
    let mut state = SnapshotState::default();
    let mut notes = Vec::with_capacity(records.len());
    let mut payload_hash = None;
    let mut seen = Seen::default();
    let mut regs_found = false;
    let mut vcpu_xsave: Option<Vec<u8>> = None;

    for (index, r) in records.iter().enumerate() {
        let name = type_name(&r.owner, r.note_type);
        let at = NoteAt { note: name, index, offset: r.offset };
        let kind = if r.owner == SNAPCALL_OWNER && name != "?" {
            seen.once(name, index)?;
            let mut c = Cursor::new(r.desc, at);
            match r.note_type {
                snapcall::NT_SNAPCALL_SREGS => state.sregs = Some(snapcall::parse_sregs(&mut c)?),
                snapcall::NT_SNAPCALL_MSRS => state.msrs = snapcall::parse_pairs(&mut c, limits)?,
                snapcall::NT_SNAPCALL_XCRS => state.xcrs = snapcall::parse_pairs(&mut c, limits)?,
                snapcall::NT_SNAPCALL_XSAVE => {
                    state.xsave = c.bytes_capped(r.desc.len() as u64, limits.max_xsave_bytes, "xsave")?.to_vec()
                }
                snapcall::NT_SNAPCALL_PENDING_SYSCALL => state.pending_syscall = Some(snapcall::parse_pending(&mut c)?),
                snapcall::NT_SNAPCALL_REGIONS => state.regions = snapcall::parse_regions(&mut c, limits)?,
                snapcall::NT_SNAPCALL_PROCESS => state.cwd = Some(snapcall::parse_process(&mut c, limits)?),
                snapcall::NT_SNAPCALL_WORKSET => state.working_set = Some(snapcall::parse_working_set(&mut c, limits)?),
                snapcall::NT_SNAPCALL_OVERLAY => state.overlay = Some(snapcall::parse_overlay(&mut c, limits)?),
                _ => {
                    let (id, hash) = snapcall::parse_identity(&mut c, limits)?;
                    if id.format_version == 0 || id.format_version > crate::FORMAT_VERSION {
                        return Err(FormatError::UnsupportedVersion {
                            found: id.format_version,
                            supported: crate::FORMAT_VERSION,
                        });
                    }
                    state.identity = Some(id);
                    payload_hash = Some(hash);
                }
            }
            c.finish()?;
            NoteKind::Snapcall
        } else if let Some(note) = KmNote::parse(&r.owner, r.note_type, r.desc, at, limits)? {
            let consumed = match &note {
                KmNote::PrStatus(p) if !regs_found => {
                    regs_found = true;
                    state.regs = p.regs;
                    true
                }
                KmNote::Auxv(v) if !seen.has("NT_AUXV") => {
                    seen.once("NT_AUXV", index)?;
                    state.auxv = v.clone();
                    true
                }
                KmNote::Monitor(m) if !seen.has("NT_KM_MONITOR") => {
                    seen.once("NT_KM_MONITOR", index)?;
                    state.brk = m.brk;
                    state.mmap_top = m.tbrk;
                    true
                }
                KmNote::Vcpu(v) if !seen.has("NT_KM_VCPU") => {
                    seen.once("NT_KM_VCPU", index)?;
                    if v.fp_format == km::KM_FPDATA_KVM_XSAVE {
                        vcpu_xsave = Some(v.fp_data.clone());
                    }
                    true
                }
                KmNote::Guest(g) if !seen.has("guest") => {
                    seen.once("guest", index)?;
                    state.guest = GuestInfo {
                        ehdr: g.ehdr.clone(),
                        phdrs: g.phdrs.clone(),
                        path: g.path.clone(),
                        load_adjust: g.load_adjust,
                    };
                    // The writer's placeholder for "no guest info" (see write.rs).
                    if state.guest.ehdr.iter().all(|&b| b == 0)
                        && state.guest.phdrs.is_empty()
                        && state.guest.path.is_empty()
                        && state.guest.load_adjust == 0
                    {
                        state.guest = GuestInfo::default();
                    }
                    true
                }
                KmNote::File(f) if f.how == KM_FILE_HOW_OPEN && f.pipe_data.is_empty() && f.pipesize == 0 => {
                    state.files.push(OpenFile {
                        fd: f.fd as i32,
                        flags: f.flags as i32,
                        offset: f.data,
                        mode: f.mode,
                        path: f.path.clone(),
                    });
                    true
                }
                _ => false,
            };
            if !consumed {
                state.km_notes.push(note.clone());
            }
            NoteKind::Km(note)
        } else {
            state.unknown_notes.push(RawNote { owner: r.owner.clone(), note_type: r.note_type, desc: r.desc.to_vec() });
            NoteKind::Unknown
        };
        notes.push(NoteEntry {
            owner: r.owner.clone(),
            note_type: r.note_type,
            type_name: name,
            offset: r.offset,
            record_len: r.record_len,
            desc_len: r.desc.len() as u64,
            kind,
        });
    }
    if !regs_found {
        return Err(FormatError::MissingNote("NT_PRSTATUS"));
    }
    if !seen.has("NT_SNAPCALL_XSAVE") {
        if let Some(x) = vcpu_xsave {
            state.xsave = x;
        }
    }
    Ok(Snapshot { state, segments: loads.into_iter().map(|(_, s)| s).collect(), file_len, notes, payload_hash })
}
