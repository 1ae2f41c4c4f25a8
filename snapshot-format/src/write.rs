//! The writer: [`SnapshotState`] + guest memory → a sparse ELF core file in KM's layout.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::elf::{
    encode_note, page_up, Ehdr, Phdr, EHDR_SIZE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PT_LOAD, PT_NOTE,
};
use crate::error::{FormatError, NoteAt};
use crate::km::{self, KmFile, KmMonitor, KmNote, KmPayload, KmVcpu, PrStatus, KM_FILE_HOW_OPEN};
use crate::snapcall::{self, SNAPCALL_OWNER};
use crate::state::{GuestInfo, Limits, MemorySegment, SnapshotState};

/// Domain-separation prefix of the payload hash.
pub(crate) const PAYLOAD_HASH_PREFIX: &[u8] = b"snapcall-payload-v1\0";

/// Label KM's monitor note carries in files written here.
pub const MONITOR_LABEL: &str = "snapcall";

/// One encoded note record and whether it is the identity note.
struct Record {
    bytes: Vec<u8>,
}

/// The file, laid out: header bytes (ELF header, program headers, notes) and where each
/// memory segment goes.
pub(crate) struct Layout<'a> {
    pub(crate) header: Vec<u8>,
    pub(crate) loads: Vec<(u64, &'a [u8])>,
    pub(crate) file_len: u64,
}

fn unrepresentable(what: &'static str, reason: impl Into<String>) -> FormatError {
    FormatError::Unrepresentable { what, reason: reason.into() }
}

fn check_memory(memory: &[MemorySegment<'_>]) -> Result<(), FormatError> {
    let mut ranges = Vec::with_capacity(memory.len());
    for (index, m) in memory.iter().enumerate() {
        let len = m.data.len() as u64;
        if !m.guest_addr.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(FormatError::UnalignedMemorySegment { index, guest_addr: m.guest_addr, len });
        }
        if len == 0 {
            return Err(FormatError::BadMemorySegment { index, reason: "empty" });
        }
        if m.prot & !(PF_R | PF_W | PF_X) != 0 {
            return Err(FormatError::BadMemorySegment { index, reason: "prot has bits other than PF_R|PF_W|PF_X" });
        }
        let end = m
            .guest_addr
            .checked_add(len)
            .ok_or(FormatError::BadMemorySegment { index, reason: "address range overflows" })?;
        ranges.push((m.guest_addr, end, index));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if let [a, b] = w {
            if b.0 < a.1 {
                return Err(FormatError::BadMemorySegment { index: b.2, reason: "overlaps another segment" });
            }
        }
    }
    Ok(())
}

/// The KM notes synthesised from the plain fields of `state`, in KM's order.
fn km_core_notes(state: &SnapshotState) -> Result<Vec<KmNote>, FormatError> {
    let mut notes = vec![
        KmNote::PrStatus(PrStatus { pid: 1, regs: state.regs, ..PrStatus::default() }),
        KmNote::Auxv(state.auxv.clone()),
    ];
    let (fp_format, fp_data) = if state.xsave.is_empty() {
        (km::KM_FPDATA_NONE, Vec::new())
    } else {
        let mut d = state.xsave.clone();
        d.resize(km::KVM_XSAVE_SIZE, 0);
        (km::KM_FPDATA_KVM_XSAVE, d)
    };
    notes.push(KmNote::Vcpu(KmVcpu { guest_thr: state.regs.fs_base, fp_format, fp_data, ..KmVcpu::default() }));
    // Also when `guest` is empty but km_notes carries a guest note: the reader folds the
    // first guest note into `guest`, so an explicit one must come first to round-trip.
    let km_guest_follows = state.km_notes.iter().any(|n| matches!(n, KmNote::Guest(_)));
    if state.guest != Default::default() || km_guest_follows {
        // An empty GuestInfo is written as an all-zero header, which reads back as empty.
        let empty = GuestInfo { ehdr: vec![0; 64], ..GuestInfo::default() };
        let g = if state.guest == GuestInfo::default() { &empty } else { &state.guest };
        let phnum = g.ehdr.get(56..58).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
        if g.ehdr.len() != 64 || g.phdrs.len() != usize::from(phnum) * 56 {
            return Err(unrepresentable(
                "guest info",
                format!(
                    "ehdr is {} bytes (want 64), phdrs {} bytes (want e_phnum*56 = {})",
                    g.ehdr.len(),
                    g.phdrs.len(),
                    usize::from(phnum) * 56
                ),
            ));
        }
        notes.push(KmNote::Guest(KmPayload {
            version: Some(km::KM_GUESTV_VERSION),
            load_adjust: g.load_adjust,
            dlopen: 0,
            ehdr: g.ehdr.clone(),
            phdrs: g.phdrs.clone(),
            path: g.path.clone(),
        }));
    }
    for f in &state.files {
        notes.push(KmNote::File(KmFile {
            fd: f.fd as u32,
            how: KM_FILE_HOW_OPEN,
            flags: f.flags as u32,
            mode: f.mode,
            pipesize: 0,
            data: f.offset,
            path: f.path.clone(),
            pipe_data: Vec::new(),
        }));
    }
    notes.push(KmNote::Monitor(KmMonitor {
        monitor_type: km::KM_MONITOR_TYPE_KVM,
        brk: state.brk,
        tbrk: state.mmap_top,
        label: Some(MONITOR_LABEL.to_owned()),
        description: None,
    }));
    Ok(notes)
}

/// Encode a KM note and check it reads back as itself (catches values KM's layout cannot
/// hold, e.g. a NUL inside a path or phdrs that disagree with `e_phnum`).
fn km_record(note: &KmNote, index: usize) -> Result<Record, FormatError> {
    let desc = note.encode();
    if desc.len() > u32::MAX as usize {
        return Err(unrepresentable("KM note", "descriptor larger than 4 GiB"));
    }
    let at = NoteAt { note: "km note", index, offset: 0 };
    let limits = Limits {
        max_xsave_bytes: u64::MAX,
        max_string_bytes: u64::MAX >> 1,
        max_list_entries: u64::MAX >> 8,
        max_data_bytes: u64::MAX,
        ..Limits::default()
    };
    match KmNote::parse(note.owner(), note.note_type(), &desc, at, &limits) {
        Ok(Some(back)) if back == *note => Ok(Record { bytes: encode_note(note.owner(), note.note_type(), &desc) }),
        Ok(_) => Err(unrepresentable(
            "KM note",
            format!("note #{index} ({:#x}) does not read back as written", note.note_type()),
        )),
        Err(e) => Err(unrepresentable("KM note", format!("note #{index}: {e}"))),
    }
}

fn check_str(what: &'static str, s: &str) -> Result<(), FormatError> {
    if s.contains('\0') || s.len() > u32::MAX as usize {
        return Err(unrepresentable(what, "contains NUL or is too long"));
    }
    Ok(())
}

/// Lay out the whole file.
pub(crate) fn layout<'a>(state: &SnapshotState, memory: &[MemorySegment<'a>]) -> Result<Layout<'a>, FormatError> {
    check_memory(memory)?;
    let mut records = Vec::new();
    for (i, n) in km_core_notes(state)?.iter().chain(state.km_notes.iter()).enumerate() {
        records.push(km_record(n, i)?);
    }
    let sc = |t: u32, d: Vec<u8>| Record { bytes: encode_note(SNAPCALL_OWNER, t, &d) };
    if let Some(s) = &state.sregs {
        records.push(sc(snapcall::NT_SNAPCALL_SREGS, snapcall::encode_sregs(s)));
    }
    if state.msrs.len() > u32::MAX as usize
        || state.xcrs.len() > u32::MAX as usize
        || state.regions.len() > u32::MAX as usize
    {
        return Err(unrepresentable("lists", "more than 2^32 entries"));
    }
    records.push(sc(snapcall::NT_SNAPCALL_MSRS, snapcall::encode_pairs(&state.msrs)));
    records.push(sc(snapcall::NT_SNAPCALL_XCRS, snapcall::encode_pairs(&state.xcrs)));
    if state.xsave.len() > u32::MAX as usize {
        return Err(unrepresentable("xsave", "larger than 4 GiB"));
    }
    records.push(sc(snapcall::NT_SNAPCALL_XSAVE, state.xsave.clone()));
    if let Some(p) = &state.pending_syscall {
        records.push(sc(snapcall::NT_SNAPCALL_PENDING_SYSCALL, snapcall::encode_pending(p)));
    }
    for r in &state.regions {
        if let Some(p) = &r.path {
            check_str("region path", p)?;
        }
    }
    records.push(sc(snapcall::NT_SNAPCALL_REGIONS, snapcall::encode_regions(&state.regions)));
    if let Some(cwd) = &state.cwd {
        check_str("cwd", cwd)?;
        records.push(sc(snapcall::NT_SNAPCALL_PROCESS, snapcall::encode_process(cwd)));
    }
    if let Some(ws) = &state.working_set {
        if ws.len() > u32::MAX as usize {
            return Err(unrepresentable("working set", "more than 2^32 ranges"));
        }
        records.push(sc(snapcall::NT_SNAPCALL_WORKSET, snapcall::encode_working_set(ws)));
    }
    if let Some(entries) = &state.overlay {
        for e in entries {
            check_str("overlay path", &e.path)?;
            if e.path.len() > u32::MAX as usize {
                return Err(unrepresentable("overlay entry", "path too long"));
            }
        }
        if entries.len() > u32::MAX as usize {
            return Err(unrepresentable("overlay", "more than 2^32 entries"));
        }
        records.push(sc(snapcall::NT_SNAPCALL_OVERLAY, snapcall::encode_overlay(entries)));
    }
    for u in &state.unknown_notes {
        check_str("unknown note owner", &u.owner)?;
        if u.owner.len() > 255 || u.desc.len() > u32::MAX as usize {
            return Err(unrepresentable("unknown note", "owner or descriptor too long"));
        }
        records.push(Record { bytes: encode_note(&u.owner, u.note_type, &u.desc) });
    }
    let identity_len = match &state.identity {
        Some(id) => {
            check_str("program path", &id.program_path)?;
            encode_note(SNAPCALL_OWNER, snapcall::NT_SNAPCALL_IDENTITY, &snapcall::encode_identity(id, &[0; 32])).len()
                as u64
        }
        None => 0,
    };

    let phnum = memory.len() + 1;
    let phnum16 = u16::try_from(phnum)
        .ok()
        .filter(|&n| n < crate::elf::PN_XNUM)
        .ok_or_else(|| unrepresentable("memory segments", format!("{phnum} program headers do not fit in e_phnum")))?;
    let notes_off = EHDR_SIZE + PHDR_SIZE * phnum as u64;
    let notes_len = records.iter().map(|r| r.bytes.len() as u64).sum::<u64>() + identity_len;
    let overflow = || unrepresentable("file layout", "offsets overflow u64");
    let mut offset = page_up(notes_off + notes_len).ok_or_else(overflow)?;
    let mut loads = Vec::with_capacity(memory.len());
    let mut phdrs =
        vec![Phdr { p_type: PT_NOTE, p_offset: notes_off, p_filesz: notes_len, p_align: 4, ..Phdr::default() }];
    for m in memory {
        let len = m.data.len() as u64;
        phdrs.push(Phdr {
            p_type: PT_LOAD,
            p_flags: m.prot,
            p_offset: offset,
            p_vaddr: m.guest_addr,
            p_paddr: 0,
            p_filesz: len,
            p_memsz: len,
            p_align: PAGE_SIZE,
        });
        loads.push((offset, m.data));
        offset = offset.checked_add(len).ok_or_else(overflow)?;
    }
    let file_len = if memory.is_empty() { notes_off + notes_len } else { offset };

    let mut header = Vec::with_capacity((notes_off + notes_len) as usize);
    let entry = state.guest.ehdr.get(24..32).map_or(0, |b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    });
    Ehdr::core(phnum16, entry).encode(&mut header);
    for p in &phdrs {
        p.encode(&mut header);
    }
    for r in &records {
        header.extend_from_slice(&r.bytes);
    }
    if let Some(id) = &state.identity {
        let mut h = Sha256::new();
        h.update(PAYLOAD_HASH_PREFIX);
        for (p, (_, data)) in phdrs.iter().skip(1).zip(&loads) {
            hash_load_header(&mut h, p.p_vaddr, p.p_memsz, p.p_filesz, p.p_flags);
            h.update(data);
        }
        for r in &records {
            h.update(&r.bytes);
        }
        let hash: [u8; 32] = h.finalize().into();
        header.extend_from_slice(&encode_note(
            SNAPCALL_OWNER,
            snapcall::NT_SNAPCALL_IDENTITY,
            &snapcall::encode_identity(id, &hash),
        ));
    }
    debug_assert_eq!(header.len() as u64, notes_off + notes_len);
    Ok(Layout { header, loads, file_len })
}

/// The per-PT_LOAD prefix of the payload hash.
pub(crate) fn hash_load_header(h: &mut Sha256, vaddr: u64, memsz: u64, filesz: u64, flags: u32) {
    h.update(vaddr.to_le_bytes());
    h.update(memsz.to_le_bytes());
    h.update(filesz.to_le_bytes());
    h.update(flags.to_le_bytes());
}

/// The whole snapshot file as bytes (holes filled with zeros): for tests and fuzzing.
///
/// # Errors
/// As [`write_snapshot`], minus I/O.
pub fn encode_snapshot(state: &SnapshotState, memory: &[MemorySegment<'_>]) -> Result<Vec<u8>, FormatError> {
    let l = layout(state, memory)?;
    let len = usize::try_from(l.file_len).map_err(|_| unrepresentable("file", "larger than address space"))?;
    let mut out = l.header;
    out.resize(len, 0);
    for (off, data) in l.loads {
        let off = off as usize;
        if let Some(dst) = out.get_mut(off..off + data.len()) {
            dst.copy_from_slice(data);
        }
    }
    Ok(out)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Write memory to `file` at `offset`, skipping all-zero pages (they stay holes).
fn write_sparse(file: &File, tmp: &Path, offset: u64, data: &[u8]) -> Result<(), FormatError> {
    let io = |source| FormatError::Io { op: "write", path: tmp.to_owned(), source };
    let page = PAGE_SIZE as usize;
    let mut run_start: Option<usize> = None;
    let npages = data.len() / page;
    for i in 0..=npages {
        let nonzero = data.get(i * page..(i + 1) * page).is_some_and(|p| p.iter().any(|&b| b != 0));
        match (nonzero, run_start) {
            (true, None) => run_start = Some(i * page),
            (false, Some(s)) => {
                let run = data.get(s..i * page).unwrap_or(&[]);
                file.write_all_at(run, offset + s as u64).map_err(io)?;
                run_start = None;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Write a snapshot file atomically: a temporary file beside `path`, then `rename`.
///
/// The file is an ELF64 x86-64 `ET_CORE`: one PT_NOTE (CORE, KMSP and SNAPCALL notes; see
/// `docs/snapshot-format.md`), then one PT_LOAD per memory segment at page-aligned file
/// offsets. All-zero pages are not written: the file is sparse. If `state.identity` is set,
/// the identity note records the payload hash that [`verify_payload`](crate::verify_payload)
/// checks.
///
/// # Errors
/// [`FormatError::UnalignedMemorySegment`] / [`FormatError::BadMemorySegment`] for bad
/// memory, [`FormatError::Unrepresentable`] for state the format cannot hold,
/// [`FormatError::Io`] if the file cannot be written or renamed.
pub fn write_snapshot(path: &Path, state: &SnapshotState, memory: &[MemorySegment<'_>]) -> Result<(), FormatError> {
    let l = layout(state, memory)?;
    let tmp = temp_path(path);
    let result = (|| {
        let file = File::create(&tmp).map_err(|source| FormatError::Io { op: "create", path: tmp.clone(), source })?;
        file.write_all_at(&l.header, 0).map_err(|source| FormatError::Io { op: "write", path: tmp.clone(), source })?;
        for &(off, data) in &l.loads {
            write_sparse(&file, &tmp, off, data)?;
        }
        file.set_len(l.file_len).map_err(|source| FormatError::Io { op: "truncate", path: tmp.clone(), source })?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|source| FormatError::Io { op: "rename", path: path.to_owned(), source })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
