//! snapcall's own notes (owner `"SNAPCALL"`): the state KM has no note for.
//!
//! All fields little-endian; layouts are documented field by field in
//! `docs/snapshot-format.md`.

use crate::bytes::{Cursor, Out};
use crate::error::FormatError;
use crate::state::{
    DescriptorTable, Identity, Limits, OverlayEntry, OverlayKind, PendingSyscall, Region, RegionKind, Segment,
    SpecialRegisters, WorkingSetRange,
};

/// Owner name of snapcall's notes.
pub const SNAPCALL_OWNER: &str = "SNAPCALL";
/// Special registers ([`SpecialRegisters`], 280 bytes).
pub const NT_SNAPCALL_SREGS: u32 = 0x5343_0001;
/// MSRs: count, then (index, value) pairs.
pub const NT_SNAPCALL_MSRS: u32 = 0x5343_0002;
/// XCRs: count, then (index, value) pairs.
pub const NT_SNAPCALL_XCRS: u32 = 0x5343_0003;
/// The raw XSAVE area.
pub const NT_SNAPCALL_XSAVE: u32 = 0x5343_0004;
/// The pending syscall (nr + 6 args).
pub const NT_SNAPCALL_PENDING_SYSCALL: u32 = 0x5343_0005;
/// The monitor's memory region map.
pub const NT_SNAPCALL_REGIONS: u32 = 0x5343_0006;
/// Format version, bundle hash, memory size, program path and payload hash.
pub const NT_SNAPCALL_IDENTITY: u32 = 0x5343_0007;
/// Process state that lives in the monitor, not in guest memory: the working directory.
pub const NT_SNAPCALL_PROCESS: u32 = 0x5343_0008;
/// The working set: the guest pages restored calls read and write.
pub const NT_SNAPCALL_WORKSET: u32 = 0x5343_0009;
/// What the program wrote to its in-VM filesystem before the snapshot point.
pub const NT_SNAPCALL_OVERLAY: u32 = 0x5343_000A;

/// Size of the `NT_SNAPCALL_SREGS` descriptor.
pub const SREGS_SIZE: usize = 8 * SEGMENT_SIZE + 2 * 16 + 7 * 8;
const SEGMENT_SIZE: usize = 24;
const PAIR_SIZE: u64 = 16;
const REGION_SIZE: u64 = 32;
const WORKSET_RANGE_SIZE: u64 = 16;
const IDENTITY_FIXED: usize = 80;

/// Symbolic name of a SNAPCALL note type, `None` if unknown.
pub fn note_type_name(note_type: u32) -> Option<&'static str> {
    Some(match note_type {
        NT_SNAPCALL_SREGS => "NT_SNAPCALL_SREGS",
        NT_SNAPCALL_MSRS => "NT_SNAPCALL_MSRS",
        NT_SNAPCALL_XCRS => "NT_SNAPCALL_XCRS",
        NT_SNAPCALL_XSAVE => "NT_SNAPCALL_XSAVE",
        NT_SNAPCALL_PENDING_SYSCALL => "NT_SNAPCALL_PENDING_SYSCALL",
        NT_SNAPCALL_REGIONS => "NT_SNAPCALL_REGIONS",
        NT_SNAPCALL_IDENTITY => "NT_SNAPCALL_IDENTITY",
        NT_SNAPCALL_PROCESS => "NT_SNAPCALL_PROCESS",
        NT_SNAPCALL_WORKSET => "NT_SNAPCALL_WORKSET",
        NT_SNAPCALL_OVERLAY => "NT_SNAPCALL_OVERLAY",
        _ => return None,
    })
}

fn parse_segment(c: &mut Cursor<'_>) -> Result<Segment, FormatError> {
    let s = Segment {
        base: c.u64("segment.base")?,
        limit: c.u32("segment.limit")?,
        selector: c.u16("segment.selector")?,
        type_: c.u8("segment.type")?,
        present: c.u8("segment.present")?,
        dpl: c.u8("segment.dpl")?,
        db: c.u8("segment.db")?,
        s: c.u8("segment.s")?,
        l: c.u8("segment.l")?,
        g: c.u8("segment.g")?,
        avl: c.u8("segment.avl")?,
    };
    c.pad(2)?;
    Ok(s)
}

fn encode_segment(o: &mut Out, s: &Segment) {
    o.u64(s.base);
    o.u32(s.limit);
    o.u16(s.selector);
    for b in [s.type_, s.present, s.dpl, s.db, s.s, s.l, s.g, s.avl] {
        o.u8(b);
    }
    o.zeros(2);
}

fn parse_dtable(c: &mut Cursor<'_>) -> Result<DescriptorTable, FormatError> {
    let base = c.u64("dtable.base")?;
    let limit = c.u16("dtable.limit")?;
    c.pad(6)?;
    Ok(DescriptorTable { base, limit })
}

pub(crate) fn parse_sregs(c: &mut Cursor<'_>) -> Result<SpecialRegisters, FormatError> {
    let mut segs = [Segment::default(); 8];
    for s in &mut segs {
        *s = parse_segment(c)?;
    }
    let [cs, ds, es, fs, gs, ss, tr, ldt] = segs;
    let gdt = parse_dtable(c)?;
    let idt = parse_dtable(c)?;
    Ok(SpecialRegisters {
        cs,
        ds,
        es,
        fs,
        gs,
        ss,
        tr,
        ldt,
        gdt,
        idt,
        cr0: c.u64("cr0")?,
        cr2: c.u64("cr2")?,
        cr3: c.u64("cr3")?,
        cr4: c.u64("cr4")?,
        cr8: c.u64("cr8")?,
        efer: c.u64("efer")?,
        apic_base: c.u64("apic_base")?,
    })
}

pub(crate) fn encode_sregs(s: &SpecialRegisters) -> Vec<u8> {
    let mut o = Out::default();
    for seg in [&s.cs, &s.ds, &s.es, &s.fs, &s.gs, &s.ss, &s.tr, &s.ldt] {
        encode_segment(&mut o, seg);
    }
    for t in [&s.gdt, &s.idt] {
        o.u64(t.base);
        o.u16(t.limit);
        o.zeros(6);
    }
    for v in [s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base] {
        o.u64(v);
    }
    debug_assert_eq!(o.len(), SREGS_SIZE);
    o.buf
}

/// MSR / XCR list: `u32 count, u32 0`, then `count * {u32 index, u32 0, u64 value}`.
pub(crate) fn parse_pairs(c: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<(u32, u64)>, FormatError> {
    let count = c.u32("count")?;
    c.pad(4)?;
    let n = c.count(count.into(), PAIR_SIZE, limits.max_list_entries, "count")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let index = c.u32("index")?;
        c.pad(4)?;
        v.push((index, c.u64("value")?));
    }
    Ok(v)
}

pub(crate) fn encode_pairs(v: &[(u32, u64)]) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(v.len() as u32);
    o.zeros(4);
    for &(i, val) in v {
        o.u32(i);
        o.zeros(4);
        o.u64(val);
    }
    o.buf
}

pub(crate) fn parse_pending(c: &mut Cursor<'_>) -> Result<PendingSyscall, FormatError> {
    let nr = c.u64("nr")?;
    let mut args = [0u64; 6];
    for a in &mut args {
        *a = c.u64("arg")?;
    }
    Ok(PendingSyscall { nr, args })
}

pub(crate) fn encode_pending(p: &PendingSyscall) -> Vec<u8> {
    let mut o = Out::default();
    o.u64(p.nr);
    for a in p.args {
        o.u64(a);
    }
    o.buf
}

/// Regions: `u32 count, u32 0`, then per region `u64 start, u64 len, u32 prot, u32 kind,
/// u32 has_path, u32 path_len`, then `path_len` bytes of path, zero-padded to 8.
pub(crate) fn parse_regions(c: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<Region>, FormatError> {
    let count = c.u32("count")?;
    c.pad(4)?;
    let n = c.count(count.into(), REGION_SIZE, limits.max_list_entries, "count")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.u64("region.start")?;
        let len = c.u64("region.len")?;
        let prot = c.u32("region.prot")?;
        let kind_code = c.u32("region.kind")?;
        let kind = RegionKind::from_code(kind_code).ok_or(FormatError::NoteBadValue {
            at: c.at(),
            field: "region.kind",
            value: kind_code.into(),
        })?;
        let has_path = c.u32("region.has_path")?;
        let path_len = c.u32("region.path_len")?;
        let path = match has_path {
            0 if path_len == 0 => None,
            1 => Some(c.str_len(path_len.into(), limits.max_string_bytes, "region.path")?),
            _ => {
                return Err(FormatError::NoteBadValue { at: c.at(), field: "region.has_path", value: has_path.into() })
            }
        };
        c.align(8, "region.path padding")?;
        v.push(Region { start, len, prot, kind, path });
    }
    Ok(v)
}

pub(crate) fn encode_regions(v: &[Region]) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(v.len() as u32);
    o.zeros(4);
    for r in v {
        o.u64(r.start);
        o.u64(r.len);
        o.u32(r.prot);
        o.u32(r.kind.code());
        o.u32(u32::from(r.path.is_some()));
        let p = r.path.as_deref().unwrap_or("");
        o.u32(p.len() as u32);
        o.bytes(p.as_bytes());
        o.align(8);
    }
    o.buf
}

/// Process: `u32 cwd_len, u32 0`, then `cwd_len` bytes of the working directory (a path
/// inside the rootfs).
pub(crate) fn parse_process(c: &mut Cursor<'_>, limits: &Limits) -> Result<String, FormatError> {
    let cwd_len = c.u32("cwd_len")?;
    let _reserved = c.u32("reserved")?;
    c.str_len(cwd_len.into(), limits.max_string_bytes, "cwd")
}

pub(crate) fn encode_process(cwd: &str) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(cwd.len() as u32);
    o.u32(0);
    o.bytes(cwd.as_bytes());
    o.buf
}

/// Working set: `u32 count, u32 0`, then per range `u64 start, u32 pages, u32 flags` (bit 0:
/// written); starts 4 KiB aligned, ranges ascending and disjoint, other flag bits zero.
pub(crate) fn parse_working_set(c: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<WorkingSetRange>, FormatError> {
    let count = c.u32("count")?;
    c.pad(4)?;
    let n = c.count(count.into(), WORKSET_RANGE_SIZE, limits.max_list_entries, "count")?;
    let mut v: Vec<WorkingSetRange> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = c.at();
        let start = c.u64("workset.start")?;
        let pages = c.u32("workset.pages")?;
        let flags = c.u32("workset.flags")?;
        if start % 4096 != 0 {
            return Err(FormatError::NoteBadValue { at, field: "workset.start", value: start });
        }
        if flags & !1 != 0 {
            return Err(FormatError::NoteBadValue { at, field: "workset.flags", value: flags.into() });
        }
        let after_previous =
            v.last().is_none_or(|p| p.start.checked_add(u64::from(p.pages) * 4096).is_some_and(|end| end <= start));
        if pages == 0 || !after_previous || start.checked_add(u64::from(pages) * 4096).is_none() {
            return Err(FormatError::NoteBadValue { at, field: "workset.pages", value: pages.into() });
        }
        v.push(WorkingSetRange { start, pages, written: flags & 1 != 0 });
    }
    Ok(v)
}

pub(crate) fn encode_working_set(v: &[WorkingSetRange]) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(v.len() as u32);
    o.zeros(4);
    for r in v {
        o.u64(r.start);
        o.u32(r.pages);
        o.u32(u32::from(r.written));
    }
    o.buf
}

/// Overlay: `u32 count, u32 0`, then per entry `u32 kind, u32 mode, i64 mtime_secs,
/// i64 mtime_nanos, u32 path_len, u32 0, u64 data_len`, `path_len` bytes of absolute path,
/// `data_len` bytes (a file's contents, a symlink's target, none otherwise), padded to 8.
/// Kinds: 0 file, 1 directory, 2 opaque directory, 3 symlink, 4 whiteout.
pub(crate) fn parse_overlay(c: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<OverlayEntry>, FormatError> {
    let count = c.u32("count")?;
    c.pad(4)?;
    let n = c.count(count.into(), 40, limits.max_list_entries, "count")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let at = c.at();
        let kind = c.u32("overlay.kind")?;
        let mode = c.u32("overlay.mode")?;
        let mtime_secs = c.i64("overlay.mtime_secs")?;
        let mtime_nanos = c.i64("overlay.mtime_nanos")?;
        let path_len = c.u32("overlay.path_len")?;
        c.pad(4)?;
        let data_len = c.u64("overlay.data_len")?;
        let path = c.str_len(path_len.into(), limits.max_string_bytes, "overlay.path")?;
        let data = c.bytes_capped(data_len, limits.max_data_bytes, "overlay.data")?.to_vec();
        c.align(8, "overlay.padding")?;
        let kind = match kind {
            0 => OverlayKind::File,
            1 => OverlayKind::Dir { opaque: false },
            2 => OverlayKind::Dir { opaque: true },
            3 => OverlayKind::Symlink,
            4 => OverlayKind::Whiteout,
            other => return Err(FormatError::NoteBadValue { at, field: "overlay.kind", value: other.into() }),
        };
        if !path.starts_with('/') || (!matches!(kind, OverlayKind::File | OverlayKind::Symlink) && !data.is_empty()) {
            return Err(FormatError::NoteBadValue { at, field: "overlay.path_len", value: path_len.into() });
        }
        v.push(OverlayEntry { path, kind, mode, mtime_secs, mtime_nanos, data });
    }
    Ok(v)
}

pub(crate) fn encode_overlay(v: &[OverlayEntry]) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(v.len() as u32);
    o.zeros(4);
    for e in v {
        o.u32(match e.kind {
            OverlayKind::File => 0,
            OverlayKind::Dir { opaque: false } => 1,
            OverlayKind::Dir { opaque: true } => 2,
            OverlayKind::Symlink => 3,
            OverlayKind::Whiteout => 4,
        });
        o.u32(e.mode);
        o.i64(e.mtime_secs);
        o.i64(e.mtime_nanos);
        o.u32(e.path.len() as u32);
        o.zeros(4);
        o.u64(e.data.len() as u64);
        o.bytes(e.path.as_bytes());
        o.bytes(&e.data);
        o.align(8);
    }
    o.buf
}

/// Identity: `u32 format_version, u32 path_len, u64 memory_size, [u8;32] bundle_hash,
/// [u8;32] payload_hash`, then `path_len` bytes of program path.
pub(crate) fn parse_identity(c: &mut Cursor<'_>, limits: &Limits) -> Result<(Identity, [u8; 32]), FormatError> {
    let format_version = c.u32("format_version")?;
    let path_len = c.u32("path_len")?;
    let memory_size = c.u64("memory_size")?;
    let bundle_hash = c.hash("bundle_hash")?;
    let payload_hash = c.hash("payload_hash")?;
    let program_path = c.str_len(path_len.into(), limits.max_string_bytes, "program_path")?;
    Ok((Identity { format_version, bundle_hash, memory_size, program_path }, payload_hash))
}

pub(crate) fn encode_identity(id: &Identity, payload_hash: &[u8; 32]) -> Vec<u8> {
    let mut o = Out::default();
    o.u32(id.format_version);
    o.u32(id.program_path.len() as u32);
    o.u64(id.memory_size);
    o.bytes(&id.bundle_hash);
    o.bytes(payload_hash);
    debug_assert_eq!(o.len(), IDENTITY_FIXED);
    o.bytes(id.program_path.as_bytes());
    o.buf
}
