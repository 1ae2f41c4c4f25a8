//! write → read gives back the same state field for field; the file is what readelf,
//! the vmm's mmap and KM expect.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use snapshot_format::*;

#[test]
fn full_state_round_trips_field_for_field() {
    let dir = scratch("rt-full");
    let path = dir.join("s.kmsnap");
    let state = full_state();
    let (image, stack) = memory_pages();
    write_snapshot(&path, &state, &memory(&image, &stack)).unwrap();
    let snap = read_snapshot(&path, &limits()).unwrap();

    let s = &snap.state;
    assert_eq!(s.regs, state.regs);
    assert_eq!(s.sregs, state.sregs);
    assert_eq!(s.msrs, state.msrs);
    assert_eq!(s.xcrs, state.xcrs);
    assert_eq!(s.xsave, state.xsave);
    assert_eq!(s.auxv, state.auxv);
    assert_eq!(s.brk, state.brk);
    assert_eq!(s.mmap_top, state.mmap_top);
    assert_eq!(s.guest, state.guest);
    assert_eq!(s.files, state.files);
    assert_eq!(s.pending_syscall, state.pending_syscall);
    assert_eq!(s.regions, state.regions);
    assert_eq!(s.identity, state.identity);
    assert_eq!(s.km_notes, state.km_notes);
    assert_eq!(s.unknown_notes, state.unknown_notes);
    assert_eq!(*s, state);
    verify_payload(&path, &snap).unwrap();

    // Segments: page-aligned offsets, contents as written, length = end of last segment.
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(snap.file_len, bytes.len() as u64);
    assert_eq!(snap.segments.len(), 2);
    for (seg, data) in snap.segments.iter().zip([&image, &stack]) {
        assert_eq!(seg.file_offset % 4096, 0);
        assert_eq!(seg.guest_addr % 4096, 0);
        assert_eq!(seg.file_size, data.len() as u64);
        let off = seg.file_offset as usize;
        assert_eq!(&bytes[off..off + data.len()], &data[..]);
    }
    assert_eq!(snap.segments[0].prot, PF_R | PF_X);
    assert_eq!(snap.segments[1].prot, PF_R | PF_W);
    assert_eq!(snapshot_format::encode_snapshot(&state, &memory(&image, &stack)).unwrap(), bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn default_state_round_trips() {
    let state = SnapshotState::default();
    let bytes = encode_snapshot(&state, &[]).unwrap();
    let snap = parse_snapshot(&bytes, &limits()).unwrap();
    assert_eq!(snap.state, state);
    assert!(snap.segments.is_empty());
    assert!(matches!(verify_payload_bytes(&bytes, &snap), Err(FormatError::NoPayloadHash)));
}

#[test]
fn xsave_larger_than_kvm_xsave_round_trips() {
    // KVM_GET_XSAVE2 areas exceed 4096 bytes; the SNAPCALL note keeps all of it.
    let state = SnapshotState { xsave: vec![0x5a; 11008], ..Default::default() };
    let bytes = encode_snapshot(&state, &[]).unwrap();
    assert_eq!(parse_snapshot(&bytes, &limits()).unwrap().state, state);
}

#[test]
fn zero_pages_are_holes() {
    let dir = scratch("rt-sparse");
    let path = dir.join("s.kmsnap");
    let big = {
        let mut v = vec![0u8; 256 * 4096];
        v[0] = 1; // only the first page has data
        v
    };
    let mem = [MemorySegment { guest_addr: 0x20_0000, data: &big, prot: PF_R | PF_W }];
    write_snapshot(&path, &SnapshotState::default(), &mem).unwrap();
    let md = std::fs::metadata(&path).unwrap();
    assert!(md.len() > 256 * 4096);
    // 512-byte blocks actually allocated: far less than the 1 MiB of the segment.
    assert!(md.blocks() * 512 < 64 * 4096, "file is not sparse: {} blocks", md.blocks());
    let bytes = std::fs::read(&path).unwrap();
    let snap = parse_snapshot(&bytes, &limits()).unwrap();
    let off = snap.segments[0].file_offset as usize;
    assert_eq!(&bytes[off..off + big.len()], &big[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn write_is_atomic_and_leaves_no_temp_files() {
    let dir = scratch("rt-atomic");
    let path = dir.join("s.kmsnap");
    std::fs::write(&path, b"old").unwrap();
    // A failing write (unaligned memory) leaves the old file in place.
    let bad = [MemorySegment { guest_addr: 0x1001, data: &[1u8; 4096], prot: PF_R }];
    assert!(matches!(
        write_snapshot(&path, &SnapshotState::default(), &bad),
        Err(FormatError::UnalignedMemorySegment { index: 0, .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    write_snapshot(&path, &full_state(), &[]).unwrap();
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("s.kmsnap")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn writer_refuses_bad_memory() {
    let page = [1u8; 4096];
    let cases: Vec<Vec<MemorySegment>> = vec![
        vec![MemorySegment { guest_addr: 0x1000, data: &page[..100], prot: PF_R }],
        vec![MemorySegment { guest_addr: 0x1000, data: &[], prot: PF_R }],
        vec![MemorySegment { guest_addr: 0x1000, data: &page, prot: 8 }],
        vec![
            MemorySegment { guest_addr: 0x1000, data: &page, prot: PF_R },
            MemorySegment { guest_addr: 0x1000, data: &page, prot: PF_R },
        ],
        vec![MemorySegment { guest_addr: u64::MAX - 0xfff, data: &page, prot: PF_R }],
    ];
    for m in cases {
        let e = encode_snapshot(&SnapshotState::default(), &m).unwrap_err();
        assert!(matches!(e, FormatError::UnalignedMemorySegment { .. } | FormatError::BadMemorySegment { .. }), "{e}");
    }
}

#[test]
fn writer_refuses_unrepresentable_state() {
    let mut s = SnapshotState::default();
    s.guest.ehdr = vec![0; 10];
    assert!(matches!(encode_snapshot(&s, &[]), Err(FormatError::Unrepresentable { .. })));
    let mut s = SnapshotState::default();
    s.files.push(OpenFile { path: "a\0b".into(), ..Default::default() });
    assert!(matches!(encode_snapshot(&s, &[]), Err(FormatError::Unrepresentable { .. })));
}

#[test]
fn payload_hash_detects_corruption() {
    let state = full_state();
    let (image, stack) = memory_pages();
    let bytes = encode_snapshot(&state, &memory(&image, &stack)).unwrap();
    let snap = parse_snapshot(&bytes, &limits()).unwrap();
    verify_payload_bytes(&bytes, &snap).unwrap();

    // A flipped byte in guest memory (which the reader does not parse) ...
    let mut mem_corrupt = bytes.clone();
    let off = snap.segments[1].file_offset as usize + 100;
    mem_corrupt[off] ^= 1;
    let s2 = parse_snapshot(&mem_corrupt, &limits()).unwrap();
    assert!(matches!(verify_payload_bytes(&mem_corrupt, &s2), Err(FormatError::PayloadHashMismatch { .. })));

    // ... and in a note field that still parses (a register) are both caught.
    let mut note_corrupt = bytes.clone();
    let prstatus = &snap.notes[0];
    assert_eq!(prstatus.type_name, "NT_PRSTATUS");
    let reg_off = prstatus.offset as usize + 12 + 4 + 112; // header, "CORE", pr_reg[0]
    note_corrupt[reg_off] ^= 0x80;
    let s3 = parse_snapshot(&note_corrupt, &limits()).unwrap();
    assert_ne!(s3.state.regs, state.regs);
    assert!(matches!(verify_payload_bytes(&note_corrupt, &s3), Err(FormatError::PayloadHashMismatch { .. })));
}

/// KM walks notes with `roundup(12 + namesz + descsz, 4)` and no separate name padding; our
/// names are multiples of 4 so both walks agree. Walk the file KM's way and find every note.
#[test]
fn km_note_walk_agrees() {
    let bytes = encode_snapshot(&full_state(), &[]).unwrap();
    let snap = parse_snapshot(&bytes, &limits()).unwrap();
    let ph = &bytes[64..64 + 56];
    let off = u64::from_le_bytes(ph[8..16].try_into().unwrap()) as usize;
    let len = u64::from_le_bytes(ph[32..40].try_into().unwrap()) as usize;
    let mut cur = off;
    let mut seen = Vec::new();
    while cur < off + len {
        let w = |i: usize| u32::from_le_bytes(bytes[cur + i..cur + i + 4].try_into().unwrap()) as usize;
        seen.push((cur as u64, w(8) as u32));
        cur += (12 + w(0) + w(4)).div_ceil(4) * 4;
    }
    let ours: Vec<_> = snap.notes.iter().map(|n| (n.offset, n.note_type)).collect();
    assert_eq!(seen, ours);
}

#[test]
fn readelf_reads_our_files_without_warnings() {
    let Ok(out) = std::process::Command::new("readelf").arg("--version").output() else {
        eprintln!("readelf not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let dir = scratch("rt-readelf");
    let path = dir.join("s.kmsnap");
    let (image, stack) = memory_pages();
    write_snapshot(&path, &full_state(), &memory(&image, &stack)).unwrap();
    let out = std::process::Command::new("readelf").arg("-a").arg("-W").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "readelf failed: {stderr}");
    assert!(stderr.trim().is_empty(), "readelf warnings: {stderr}");
    assert!(!stdout.to_lowercase().contains("warning"), "readelf warnings: {stdout}");
    assert!(stdout.contains("CORE (Core file)"), "{stdout}");
    assert!(stdout.contains("NT_PRSTATUS"), "{stdout}");
    assert!(stdout.contains("KMSP"), "{stdout}");
    assert!(stdout.contains("SNAPCALL"), "{stdout}");
    assert_eq!(stdout.matches("  LOAD ").count(), 2, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
