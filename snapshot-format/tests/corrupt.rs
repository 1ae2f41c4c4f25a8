//! Hostile input: every malformed file is refused with its own typed error, never a panic.

mod common;

use common::*;
use snapshot_format::snapcall::*;
use snapshot_format::*;

/// A valid file: PT_NOTE (phdr 0), image (phdr 1, 3 pages at 0x400000), stack (phdr 2).
fn valid() -> Vec<u8> {
    let (image, stack) = memory_pages();
    encode_snapshot(&full_state(), &memory(&image, &stack)).unwrap()
}

fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn ph(i: usize) -> usize {
    64 + 56 * i
}
const P_TYPE: usize = 0;
const P_FLAGS: usize = 4;
const P_OFFSET: usize = 8;
const P_VADDR: usize = 16;
const P_FILESZ: usize = 32;
const P_MEMSZ: usize = 40;

fn parse(b: &[u8]) -> Result<Snapshot, FormatError> {
    parse_snapshot(b, &limits())
}

fn mutate(f: impl FnOnce(&mut Vec<u8>)) -> FormatError {
    let mut b = valid();
    f(&mut b);
    parse(&b).expect_err("corrupt file was accepted")
}

/// File offset of the first note of the given type.
fn note_offset(b: &[u8], owner: &str, t: u32) -> usize {
    let s = parse(b).unwrap();
    s.notes.iter().find(|n| n.owner == owner && n.note_type == t).unwrap().offset as usize
}

#[test]
fn valid_file_parses() {
    parse(&valid()).unwrap();
}

#[test]
fn truncated_anywhere_in_headers_or_notes_is_refused() {
    let b = valid();
    let snap = parse(&b).unwrap();
    let notes_end = snap.segments[0].file_offset as usize;
    for len in [0, 1, 4, 16, 63, 64, 100, 64 + 56 * 3 - 1, 64 + 56 * 3 + 10, notes_end - 1] {
        let e = parse(&b[..len]).unwrap_err();
        assert!(matches!(e, FormatError::Truncated { .. } | FormatError::SegmentOutOfFile { .. }), "len {len}: {e}");
    }
}

#[test]
fn truncated_memory_is_refused() {
    let b = valid();
    let e = parse(&b[..b.len() - 1]).unwrap_err();
    assert!(matches!(e, FormatError::SegmentOutOfFile { index: 2, .. }), "{e}");
}

#[test]
fn bad_magic() {
    let e = mutate(|b| b[1] = b'X');
    assert!(matches!(e, FormatError::BadMagic(_)), "{e}");
}

#[test]
fn wrong_class() {
    let e = mutate(|b| b[4] = 1);
    assert!(matches!(e, FormatError::WrongClass(1)), "{e}");
}

#[test]
fn wrong_endianness() {
    let e = mutate(|b| b[5] = 2);
    assert!(matches!(e, FormatError::WrongEndian(2)), "{e}");
}

#[test]
fn wrong_elf_version() {
    let e = mutate(|b| put32(b, 20, 2));
    assert!(matches!(e, FormatError::WrongElfVersion(2)), "{e}");
}

#[test]
fn wrong_type() {
    let e = mutate(|b| put16(b, 16, 2)); // ET_EXEC
    assert!(matches!(e, FormatError::WrongType(2)), "{e}");
}

#[test]
fn wrong_machine() {
    let e = mutate(|b| put16(b, 18, 183)); // EM_AARCH64
    assert!(matches!(e, FormatError::WrongMachine(183)), "{e}");
}

#[test]
fn wrong_header_sizes() {
    let e = mutate(|b| put16(b, 54, 32)); // ELF32 phentsize
    assert!(matches!(e, FormatError::WrongHeaderSizes { phentsize: 32, .. }), "{e}");
}

#[test]
fn zero_or_extended_phnum() {
    let e = mutate(|b| put16(b, 56, 0));
    assert!(matches!(e, FormatError::BadPhnum(0)), "{e}");
    let e = mutate(|b| put16(b, 56, 0xffff));
    assert!(matches!(e, FormatError::BadPhnum(0xffff)), "{e}");
}

#[test]
fn too_many_segments() {
    let b = valid();
    let e = parse_snapshot(&b, &Limits { max_segments: 2, ..limits() }).unwrap_err();
    assert!(matches!(e, FormatError::TooManySegments { count: 3, max: 2 }), "{e}");
}

#[test]
fn absurd_phnum_past_end_of_file() {
    let e = mutate(|b| put16(b, 56, 60000));
    assert!(matches!(e, FormatError::Truncated { what: "program headers", .. }), "{e}");
}

#[test]
fn bad_phoff() {
    let e = mutate(|b| put64(b, 32, 65));
    assert!(matches!(e, FormatError::BadPhoff(65)), "{e}");
    let e = mutate(|b| put64(b, 32, 0));
    assert!(matches!(e, FormatError::BadPhoff(0)), "{e}");
    let e = mutate(|b| put64(b, 32, u64::MAX - 7));
    assert!(matches!(e, FormatError::Truncated { .. }), "{e}");
}

#[test]
fn unexpected_segment_type() {
    let e = mutate(|b| put32(b, ph(1) + P_TYPE, 2)); // PT_DYNAMIC
    assert!(matches!(e, FormatError::UnexpectedSegmentType { index: 1, p_type: 2 }), "{e}");
}

#[test]
fn missing_note_segment() {
    let e = mutate(|b| {
        put64(b, 32, 64 + 56); // phdrs start at the image's
        put16(b, 56, 2);
    });
    assert!(matches!(e, FormatError::MissingNoteSegment), "{e}");
}

#[test]
fn duplicate_note_segment() {
    let e = mutate(|b| {
        let note: Vec<u8> = b[ph(0)..ph(1)].to_vec();
        b[ph(2)..ph(3)].copy_from_slice(&note);
    });
    assert!(matches!(e, FormatError::DuplicateNoteSegment { first: 0, second: 2 }), "{e}");
}

#[test]
fn note_segment_over_limit() {
    let e = parse_snapshot(&valid(), &Limits { max_note_bytes: 1024, ..limits() }).unwrap_err();
    assert!(matches!(e, FormatError::NoteSegmentTooLarge { index: 0, max: 1024, .. }), "{e}");
}

#[test]
fn misaligned_note_segment() {
    let e = mutate(|b| {
        let off = get64(b, ph(0) + P_OFFSET);
        put64(b, ph(0) + P_OFFSET, off + 2);
    });
    assert!(matches!(e, FormatError::MisalignedNoteSegment { index: 0, .. }), "{e}");
}

#[test]
fn misaligned_segment_address() {
    let e = mutate(|b| put64(b, ph(1) + P_VADDR, 0x40_0010));
    assert!(matches!(e, FormatError::MisalignedSegmentAddress { index: 1, vaddr: 0x40_0010 }), "{e}");
}

#[test]
fn misaligned_segment_offset() {
    let e = mutate(|b| {
        let off = get64(b, ph(1) + P_OFFSET);
        put64(b, ph(1) + P_OFFSET, off + 8);
    });
    assert!(matches!(e, FormatError::MisalignedSegmentOffset { index: 1, .. }), "{e}");
}

#[test]
fn empty_segment() {
    let e = mutate(|b| {
        put64(b, ph(1) + P_FILESZ, 0);
        put64(b, ph(1) + P_MEMSZ, 0);
    });
    assert!(matches!(e, FormatError::EmptySegment { index: 1 }), "{e}");
}

#[test]
fn filesz_larger_than_memsz() {
    let e = mutate(|b| put64(b, ph(1) + P_MEMSZ, 0x1000));
    assert!(matches!(e, FormatError::FileSizeExceedsMemSize { index: 1, .. }), "{e}");
}

#[test]
fn bad_segment_flags() {
    let e = mutate(|b| put32(b, ph(2) + P_FLAGS, 0x10));
    assert!(matches!(e, FormatError::BadSegmentFlags { index: 2, flags: 0x10 }), "{e}");
}

#[test]
fn segment_outside_guest_memory() {
    let e = mutate(|b| put64(b, ph(2) + P_VADDR, 256 << 20)); // starts at max_memory
    assert!(matches!(e, FormatError::SegmentOutsideMemory { index: 2, .. }), "{e}");
    let e = mutate(|b| put64(b, ph(1) + P_VADDR, (256 << 20) - 0x1000)); // 3 pages, 2 beyond
    assert!(matches!(e, FormatError::SegmentOutsideMemory { index: 1, .. }), "{e}");
}

#[test]
fn segment_address_overflow() {
    let e = mutate(|b| {
        put64(b, ph(1) + P_VADDR, !0xfff_u64);
        put64(b, ph(1) + P_MEMSZ, 0x10_0000);
    });
    assert!(matches!(e, FormatError::SegmentOutsideMemory { index: 1, .. }), "{e}");
    let e = parse_snapshot(
        &{
            let mut b = valid();
            put64(&mut b, ph(1) + P_VADDR, !0xfff_u64);
            put64(&mut b, ph(1) + P_MEMSZ, u64::MAX);
            b
        },
        &Limits { max_memory: u64::MAX, ..limits() },
    )
    .unwrap_err();
    assert!(matches!(e, FormatError::SegmentOutsideMemory { index: 1, .. }), "{e}");
}

#[test]
fn segment_beyond_end_of_file() {
    let e = mutate(|b| {
        put64(b, ph(2) + P_FILESZ, 1 << 40);
        put64(b, ph(2) + P_MEMSZ, 1 << 40);
    });
    assert!(
        matches!(
            e,
            FormatError::SegmentOutOfFile { index: 2, .. } | FormatError::SegmentOutsideMemory { index: 2, .. }
        ),
        "{e}"
    );
    let e = mutate(|b| put64(b, ph(2) + P_OFFSET, !0xfff_u64)); // offset + filesz overflows
    assert!(matches!(e, FormatError::SegmentOutOfFile { index: 2, .. }), "{e}");
}

#[test]
fn segment_overlapping_headers_or_notes() {
    let e = mutate(|b| put64(b, ph(1) + P_OFFSET, 0));
    assert!(matches!(e, FormatError::SegmentOverlapsHeaders { index: 1, offset: 0, .. }), "{e}");
}

#[test]
fn overlapping_segments() {
    let e = mutate(|b| put64(b, ph(2) + P_VADDR, 0x40_2000));
    assert!(matches!(e, FormatError::OverlappingSegments { first: 1, second: 2, addr: 0x40_2000 }), "{e}");
}

#[test]
fn note_header_cut_short() {
    let b = valid();
    let snap = parse(&b).unwrap();
    // End the PT_NOTE 5 bytes into the second note's header.
    let cut = snap.notes[1].offset + 5 - get64(&b, ph(0) + P_OFFSET);
    let e = mutate(|b| put64(b, ph(0) + P_FILESZ, cut));
    assert!(matches!(e, FormatError::NoteHeaderTruncated { index: 1, .. }), "{e}");
}

#[test]
fn note_descriptor_past_segment_end() {
    let e = mutate(|b| {
        let off = get64(b, ph(0) + P_OFFSET) as usize;
        put32(b, off + 4, u32::MAX); // first note's descsz
    });
    assert!(matches!(e, FormatError::NoteOutOfBounds { index: 0, descsz: u32::MAX, .. }), "{e}");
}

#[test]
fn note_name_too_long() {
    let e = mutate(|b| {
        let off = get64(b, ph(0) + P_OFFSET) as usize;
        put32(b, off, 100_000);
    });
    assert!(matches!(e, FormatError::NoteNameTooLong { index: 0, namesz: 100_000, .. }), "{e}");
}

#[test]
fn too_many_notes() {
    let e = parse_snapshot(&valid(), &Limits { max_notes: 3, ..limits() }).unwrap_err();
    assert!(matches!(e, FormatError::TooManyNotes { max: 3 }), "{e}");
}

#[test]
fn note_with_wrong_descriptor_size() {
    // The writer copies unknown notes verbatim, so it can plant a malformed NT_PRSTATUS.
    for (len, short) in [(300usize, true), (340, false)] {
        let mut s = full_state();
        s.unknown_notes.push(RawNote { owner: "CORE".into(), note_type: 1, desc: vec![0; len] });
        let e = parse(&encode_snapshot(&s, &[]).unwrap()).unwrap_err();
        if short {
            assert!(matches!(e, FormatError::NoteTooShort { at: NoteAt { note: "NT_PRSTATUS", .. }, .. }), "{e}");
        } else {
            assert!(matches!(e, FormatError::NoteBadSize { expected: 336, actual: 340, .. }), "{e}");
        }
    }
}

#[test]
fn missing_prstatus() {
    let e = mutate(|b| {
        let off = note_offset(b, "CORE", 1);
        put32(b, off + 8, 99);
    });
    assert!(matches!(e, FormatError::MissingNote("NT_PRSTATUS")), "{e}");
}

#[test]
fn duplicate_snapcall_note() {
    let mut s = full_state();
    s.unknown_notes.push(RawNote {
        owner: SNAPCALL_OWNER.into(),
        note_type: NT_SNAPCALL_PENDING_SYSCALL,
        desc: vec![0; 56],
    });
    let b = encode_snapshot(&s, &[]).unwrap();
    let e = parse(&b).unwrap_err();
    assert!(matches!(e, FormatError::DuplicateNote { note: "NT_SNAPCALL_PENDING_SYSCALL", .. }), "{e}");
}

#[test]
fn unsupported_format_version() {
    let mut s = full_state();
    s.identity.as_mut().unwrap().format_version = FORMAT_VERSION + 1;
    let e = parse(&encode_snapshot(&s, &[]).unwrap()).unwrap_err();
    assert!(matches!(e, FormatError::UnsupportedVersion { .. }), "{e}");
}

#[test]
fn bad_region_kind() {
    let mut b = valid();
    let off = note_offset(&b, SNAPCALL_OWNER, NT_SNAPCALL_REGIONS);
    let desc = off + 12 + 8;
    put32(&mut b, desc + 8 + 20, 77); // first region's kind
    let e = parse(&b).unwrap_err();
    assert!(matches!(e, FormatError::NoteBadValue { field: "region.kind", value: 77, .. }), "{e}");
}

#[test]
fn cwd_longer_than_its_note() {
    let mut b = valid();
    let off = note_offset(&b, SNAPCALL_OWNER, NT_SNAPCALL_PROCESS);
    put32(&mut b, off + 12 + 8, 1 << 20); // cwd_len
    let e = parse(&b).unwrap_err();
    assert!(e.to_string().contains("cwd"), "{e}");
}

#[test]
fn working_set_ranges_must_be_aligned_ascending_and_flagged_as_known() {
    let off = note_offset(&valid(), SNAPCALL_OWNER, NT_SNAPCALL_WORKSET) + 12 + 8;
    let first = off + 8; // after `u32 count, u32 0`
    let second = first + 16;
    for (what, at, value, field) in [
        ("unaligned start", first, 0x40_0001u64, "workset.start"),
        ("a range before the previous one's end", second, 0x40_1000, "workset.pages"),
    ] {
        let mut b = valid();
        put64(&mut b, at, value);
        let e = parse(&b).unwrap_err();
        assert!(matches!(e, FormatError::NoteBadValue { field: f, .. } if f == field), "{what}: {e}");
    }
    let mut b = valid();
    put32(&mut b, first + 8, 0); // no pages
    assert!(matches!(parse(&b).unwrap_err(), FormatError::NoteBadValue { field: "workset.pages", .. }));
    let mut b = valid();
    put32(&mut b, first + 12, 2); // an unknown flag
    assert!(matches!(parse(&b).unwrap_err(), FormatError::NoteBadValue { field: "workset.flags", .. }));
}

#[test]
fn absurd_list_count() {
    let mut b = valid();
    let off = note_offset(&b, SNAPCALL_OWNER, NT_SNAPCALL_MSRS);
    put32(&mut b, off + 12 + 8, u32::MAX);
    let e = parse(&b).unwrap_err();
    assert!(matches!(e, FormatError::NoteFieldTooLarge { field: "count", .. }), "{e}");
}

#[test]
fn sregs_of_wrong_size() {
    let mut s = SnapshotState::default();
    s.unknown_notes.push(RawNote {
        owner: SNAPCALL_OWNER.into(),
        note_type: NT_SNAPCALL_SREGS,
        desc: vec![0; SREGS_SIZE + 4],
    });
    let e = parse(&encode_snapshot(&s, &[]).unwrap()).unwrap_err();
    assert!(matches!(e, FormatError::NoteBadSize { expected: 280, actual: 284, .. }), "{e}");
}

#[test]
fn non_utf8_path() {
    let mut b = valid();
    let off = note_offset(&b, "KMSP", km::NT_KM_FILE);
    b[off + 12 + 4 + 40 + 1] = 0xff; // inside "/dev/stdin"
    let e = parse(&b).unwrap_err();
    assert!(matches!(e, FormatError::NoteBadString { at: NoteAt { note: "NT_KM_FILE", .. }, .. }), "{e}");
}

#[test]
fn xsave_over_limit() {
    let e = parse_snapshot(&valid(), &Limits { max_xsave_bytes: 1024, ..limits() }).unwrap_err();
    assert!(matches!(e, FormatError::NoteFieldTooLarge { .. }), "{e}");
}

/// Deterministic mutation fuzzing: no input may panic (the cargo-fuzz target does more).
#[test]
fn random_mutations_never_panic() {
    let base = valid();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let header_len = parse(&base).unwrap().segments[0].file_offset as usize;
    for _ in 0..3000 {
        let mut b = base.clone();
        for _ in 0..(next() % 8 + 1) {
            let pos = (next() as usize) % header_len;
            match next() % 3 {
                0 => b[pos] = next() as u8,
                1 => b[pos] ^= 1 << (next() % 8),
                _ => {
                    let v = [0u8, 0xff, 0x7f, 0x80][(next() % 4) as usize];
                    b[pos] = v;
                }
            }
        }
        if next() % 5 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        if let Ok(s) = parse(&b) {
            let _ = verify_payload_bytes(&b, &s);
            let _ = render_text(&s);
            let _ = render_json(&s);
        }
    }
}
