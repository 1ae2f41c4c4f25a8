//! Every KM (and CORE) note in KM's exact layout: a fixture made by our writer parses back
//! field for field, its bytes sit at the offsets of KM's C structs, and truncated or
//! oversized descriptors are refused.

mod common;

use common::*;
use snapshot_format::km::*;
use snapshot_format::*;

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

const AT: NoteAt = NoteAt { note: "test", index: 0, offset: 0 };

fn reparse(n: &KmNote, desc: &[u8]) -> Result<Option<KmNote>, FormatError> {
    KmNote::parse(n.owner(), n.note_type(), desc, AT, &Limits::default())
}

/// Encode, parse back, then check truncation and trailing bytes are refused.
fn check(n: KmNote, expected_len: usize) -> Vec<u8> {
    let desc = n.encode();
    assert_eq!(desc.len(), expected_len, "{n:?}");
    assert!(reparse(&n, &desc).unwrap().as_ref() == Some(&n), "{:#x} did not read back", n.note_type());
    // Variable-length tails (auxv pairs, FP data) may legally end anywhere on their
    // granule, so cut those only into their fixed part.
    let cuts: Vec<usize> = match n {
        KmNote::Auxv(_) => vec![4, 8],
        KmNote::Vcpu(_) => vec![desc.len() - 95, desc.len()],
        _ => vec![1, 4, desc.len() / 2, desc.len()],
    };
    for cut in cuts {
        if cut <= desc.len() && cut > 0 {
            let r = reparse(&n, &desc[..desc.len() - cut]);
            let Err(e) = r else { panic!("{} truncated by {cut} accepted", n.note_type()) };
            assert!(
                matches!(
                    e,
                    FormatError::NoteTooShort { .. }
                        | FormatError::NoteBadString { .. }
                        | FormatError::NoteBadSize { .. }
                        | FormatError::NoteFieldTooLarge { .. }
                        | FormatError::NoteRecordSize { .. }
                ),
                "{e}"
            );
        }
    }
    let mut long = desc.clone();
    long.extend_from_slice(&[0xee; 4]);
    // Trailing bytes: refused, except where KM's layout makes them part of the note (FP data).
    if !matches!(n, KmNote::Vcpu(_)) {
        assert!(reparse(&n, &long).is_err(), "oversized {:#x} accepted", n.note_type());
    }
    desc
}

fn prstatus() -> PrStatus {
    PrStatus {
        si_signo: 11,
        si_code: 1,
        si_errno: 0,
        cursig: 11,
        sigpend: 2,
        sighold: 4,
        pid: 1,
        ppid: 0,
        pgrp: 1,
        sid: 1,
        utime: (1, 2),
        stime: (3, 4),
        cutime: (5, 6),
        cstime: (7, 8),
        regs: Registers::from_array(std::array::from_fn(|i| 100 + i as u64)),
        fpvalid: 1,
    }
}

#[test]
fn nt_prstatus() {
    let d = check(KmNote::PrStatus(prstatus()), 336);
    assert_eq!(u32_at(&d, 0), 11);
    assert_eq!(u16_at(&d, 12), 11); // pr_cursig
    assert_eq!(u64_at(&d, 16), 2); // pr_sigpend
    assert_eq!(u32_at(&d, 32), 1); // pr_pid
    assert_eq!(u64_at(&d, 48), 1); // pr_utime.tv_sec
    assert_eq!(u64_at(&d, 112), 100); // pr_reg[0] = r15
    assert_eq!(u64_at(&d, 112 + 16 * 8), 116); // pr_reg[16] = rip
    assert_eq!(u64_at(&d, 112 + 21 * 8), 121); // pr_reg[21] = fs_base
    assert_eq!(u32_at(&d, 328), 1); // pr_fpvalid
}

#[test]
fn nt_auxv() {
    let d = check(KmNote::Auxv(vec![(6, 4096), (0, 0)]), 32);
    assert_eq!(u64_at(&d, 8), 4096);
}

#[test]
fn nt_file() {
    let n = KmNote::MappedFiles(MappedFiles {
        page_size: 4096,
        files: vec![
            MappedFile { start: 0x40_0000, end: 0x40_2000, file_ofs: 0, path: "/bin/fn".into() },
            MappedFile { start: 0x7000_0000, end: 0x7000_1000, file_ofs: 3, path: "/lib/x.so".into() },
        ],
    });
    let d = check(n, 16 + 2 * 24 + 8 + 10);
    assert_eq!(u64_at(&d, 0), 2);
    assert_eq!(u64_at(&d, 8), 4096);
    assert_eq!(u64_at(&d, 16 + 24 + 16), 3);
    assert_eq!(&d[64..72], b"/bin/fn\0");
}

#[test]
fn nt_km_monitor() {
    let n = KmNote::Monitor(KmMonitor {
        monitor_type: KM_MONITOR_TYPE_KKM,
        brk: 0x60_0000,
        tbrk: 0x7fff_0000_0000,
        label: Some("lbl".into()),
        description: Some("a description".into()),
    });
    let d = check(n, 32 + 4 + 14);
    assert_eq!(u32_at(&d, 0), 1);
    assert_eq!(u32_at(&d, 4), 4); // label_length counts the NUL
    assert_eq!(u32_at(&d, 8), 14);
    assert_eq!(u64_at(&d, 16), 0x60_0000);
    assert_eq!(u64_at(&d, 24), 0x7fff_0000_0000);
    assert_eq!(&d[32..36], b"lbl\0");
    check(KmNote::Monitor(KmMonitor::default()), 32);
}

#[test]
fn nt_km_vcpu() {
    let n = KmNote::Vcpu(KmVcpu {
        vcpu_id: 3,
        stack_top: 0x10,
        guest_thr: 0x20,
        set_child_tid: 0x30,
        clear_child_tid: 0x40,
        sigaltstack_sp: 0x50,
        sigaltstack_flags: 2,
        sigaltstack_size: 0x60,
        mapself_base: 0x70,
        mapself_size: 0x80,
        hcarg: 0x90,
        hypercall: 7,
        restart: 1,
        fp_format: KM_FPDATA_KVM_XSAVE,
        fp_data: vec![0xaa; KVM_XSAVE_SIZE],
    });
    let d = check(n, 96 + 4096);
    assert_eq!(u32_at(&d, 0), 3);
    assert_eq!(u64_at(&d, 8), 0x10);
    assert_eq!(u64_at(&d, 40), 0x50);
    assert_eq!(u32_at(&d, 48), 2);
    assert_eq!(u64_at(&d, 56), 0x60);
    assert_eq!(u64_at(&d, 80), 0x90);
    assert_eq!(u16_at(&d, 88), 7);
    assert_eq!(u16_at(&d, 90), 1);
    assert_eq!(u32_at(&d, 92), 2);
    assert_eq!(d[96], 0xaa);
    check(KmNote::Vcpu(KmVcpu { fp_format: KM_FPDATA_KVM_FPU, fp_data: vec![1; 416], ..Default::default() }), 96 + 416);
}

fn payload(version: Option<u32>) -> KmPayload {
    KmPayload {
        version,
        load_adjust: 0x40_0000,
        dlopen: if version.is_some() { 0x1234 } else { 0 },
        ehdr: guest_ehdr(2),
        phdrs: (0..112).map(|i| i as u8).collect(),
        path: "/opt/kontain/runtime/libc.so".into(),
    }
}

#[test]
fn nt_km_guest_and_guestv() {
    let d = check(KmNote::Guest(payload(None)), 72 + 112 + 29);
    assert_eq!(u64_at(&d, 0), 0x40_0000);
    assert_eq!(&d[8..12], b"\x7fELF");
    assert_eq!(d[72], 0);
    assert_eq!(KmNote::Guest(payload(None)).note_type(), NT_KM_GUEST);

    let n = KmNote::Guest(payload(Some(KM_GUESTV_VERSION)));
    assert_eq!(n.note_type(), NT_KM_GUESTV);
    let d = check(n, 88 + 112 + 29);
    assert_eq!(u32_at(&d, 0), 1);
    assert_eq!(u64_at(&d, 8), 0x40_0000);
    assert_eq!(u64_at(&d, 16), 0x1234);
    assert_eq!(&d[24..28], b"\x7fELF");
    assert_eq!(d[88 + 5], 5);
}

#[test]
fn nt_km_dynlinker_and_dynlinkerv() {
    let n = KmNote::Dynlinker(payload(None));
    assert_eq!(n.note_type(), NT_KM_DYNLINKER);
    check(n, 72 + 112 + 29);
    let n = KmNote::Dynlinker(payload(Some(1)));
    assert_eq!(n.note_type(), NT_KM_DYNLINKERV);
    check(n, 88 + 112 + 29);
}

#[test]
fn nt_km_dup_data() {
    let n = KmNote::DupData(KmDupData { groups: vec![vec![1, 5], vec![3, 4, 9]] });
    let d = check(n, 4 + 4 + 8 + 4 + 12);
    assert_eq!(u32_at(&d, 0), 2);
    assert_eq!(u32_at(&d, 4), 2);
    assert_eq!(u32_at(&d, 12), 5);
    assert_eq!(u32_at(&d, 16), 3);
    check(KmNote::DupData(KmDupData::default()), 4);
}

#[test]
fn nt_km_file() {
    let n = KmNote::File(KmFile {
        fd: 4,
        how: KM_FILE_HOW_PIPE_0,
        flags: 0o4000,
        mode: 0o10600,
        pipesize: 65536,
        data: 5,
        path: "pipe".into(),
        pipe_data: b"hello".to_vec(),
    });
    // name "pipe\0" padded to 8, data 5 padded to 8
    let d = check(n, 40 + 8 + 8);
    assert_eq!(u32_at(&d, 0), 40);
    assert_eq!(u32_at(&d, 4), 4);
    assert_eq!(u32_at(&d, 8), 1);
    assert_eq!(u32_at(&d, 12), 0o4000);
    assert_eq!(u32_at(&d, 16), 0o10600);
    assert_eq!(u32_at(&d, 20), 65536);
    assert_eq!(u64_at(&d, 24), 5);
    assert_eq!(u32_at(&d, 32), 5);
    assert_eq!(&d[40..45], b"pipe\0");
    assert_eq!(&d[48..53], b"hello");
    // KM checks the record's own size field.
    let mut bad = d.clone();
    bad[0] = 48;
    assert!(matches!(
        KmNote::parse("KMSP", NT_KM_FILE, &bad, AT, &Limits::default()),
        Err(FormatError::NoteRecordSize { found: 48, expected: 40, .. })
    ));
}

#[test]
fn nt_km_eventfd() {
    let d = check(KmNote::EventFd(KmEventFd { fd: 7, flags: 0o2004000, count: 3 }), 40);
    assert_eq!(u32_at(&d, 0), 40);
    assert_eq!(u32_at(&d, 4), 7);
    assert_eq!(u32_at(&d, 12), 0o2004000);
    assert_eq!(u64_at(&d, 24), 3);
}

#[test]
fn nt_km_socket() {
    let n = KmNote::Socket(KmSocket {
        fd: 5,
        how: 4,
        state: 2,
        backlog: 128,
        domain: 2,
        type_: 1,
        protocol: 6,
        other: 0,
        addr: vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        data: vec![1, 2, 3],
    });
    let d = check(n, 44 + 16 + 4);
    assert_eq!(u32_at(&d, 0), 44);
    assert_eq!(u32_at(&d, 12), 2); // state
    assert_eq!(u32_at(&d, 16), 128); // backlog
    assert_eq!(u32_at(&d, 28), 6); // protocol
    assert_eq!(u32_at(&d, 36), 16); // addrlen
    assert_eq!(u32_at(&d, 40), 3); // datalength
    assert_eq!(d[44 + 3], 0x90);
    assert_eq!(d[60], 1);
}

#[test]
fn nt_km_epollfd() {
    let n = KmNote::EpollFd(KmEpollFd {
        fd: 6,
        flags: 0o2000000,
        events: vec![KmEpollEvent { fd: 5, events: 1, data: 0xdead }, KmEpollEvent { fd: 7, events: 4, data: 9 }],
    });
    let d = check(n, 16 + 32);
    assert_eq!(u32_at(&d, 0), 16);
    assert_eq!(u32_at(&d, 12), 2);
    assert_eq!(u32_at(&d, 16), 5);
    assert_eq!(u64_at(&d, 24), 0xdead);
}

#[test]
fn nt_km_sighand() {
    let n = KmNote::SigHand(KmSigHand {
        signo: 15,
        handler: 0x40_1000,
        flags: 0x0400_0004,
        mask: 0x4000,
        restorer: 0x40_2000,
    });
    let d = check(n, 32);
    assert_eq!(u32_at(&d, 0), 32);
    assert_eq!(u32_at(&d, 4), 15);
    assert_eq!(u64_at(&d, 8), 0x40_1000);
    assert_eq!(u32_at(&d, 16), 0x0400_0004);
    assert_eq!(u32_at(&d, 20), 0x4000);
    assert_eq!(u64_at(&d, 24), 0x40_2000);
}

#[test]
fn nt_km_iocontexts() {
    let n = KmNote::IoContexts(KmIoContexts {
        next_context: 0x1000,
        contexts: vec![KmIoContext { nr_events: 128, context: 0xfff }],
    });
    let d = check(n, 32);
    assert_eq!(u32_at(&d, 0), 32);
    assert_eq!(u32_at(&d, 4), 1);
    assert_eq!(u64_at(&d, 8), 0x1000);
    assert_eq!(u32_at(&d, 16), 128);
    assert_eq!(u64_at(&d, 24), 0xfff);
}

#[test]
fn unknown_km_type_is_not_an_error() {
    assert_eq!(KmNote::parse("KMSP", 0x4b4d_0000, &[1, 2, 3], AT, &Limits::default()).unwrap(), None);
    assert_eq!(KmNote::parse("GNU", 1, &[], AT, &Limits::default()).unwrap(), None);
}

#[test]
fn oversized_counts_are_refused_before_allocating() {
    let mut d = KmNote::EpollFd(KmEpollFd::default()).encode();
    d[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        KmNote::parse("KMSP", NT_KM_EPOLLFD, &d, AT, &Limits::default()),
        Err(FormatError::NoteFieldTooLarge { field: "nevent", .. })
    ));
    let mut d = KmNote::File(KmFile { path: "x".into(), ..Default::default() }).encode();
    d[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        KmNote::parse("KMSP", NT_KM_FILE, &d, AT, &Limits::default()),
        Err(FormatError::NoteFieldTooLarge { field: "datalength", .. })
    ));
    let long_name = KmNote::File(KmFile { path: "a".repeat(5000), ..Default::default() }).encode();
    assert!(matches!(
        KmNote::parse("KMSP", NT_KM_FILE, &long_name, AT, &Limits::default()),
        Err(FormatError::NoteBadString { .. })
    ));
}

/// A KM-style snapshot with every note type: the whole file parses, KM notes not folded
/// into the plain fields come back in `km_notes` in order, and the verdict is km-only.
#[test]
fn every_km_note_in_one_file() {
    let extra = vec![
        KmNote::PrStatus(PrStatus { pid: 2, ..prstatus() }),
        KmNote::Vcpu(KmVcpu { vcpu_id: 1, hcarg: 0x1000, ..Default::default() }),
        KmNote::MappedFiles(MappedFiles {
            page_size: 4096,
            files: vec![MappedFile { start: 0x40_0000, end: 0x40_1000, file_ofs: 0, path: "/bin/fn".into() }],
        }),
        KmNote::Dynlinker(payload(None)),
        KmNote::DupData(KmDupData { groups: vec![vec![1, 2]] }),
        KmNote::File(KmFile { fd: 4, how: KM_FILE_HOW_PIPE_1, path: "pipe".into(), data: 3, ..Default::default() }),
        KmNote::EventFd(KmEventFd { fd: 5, flags: 0, count: 1 }),
        KmNote::Socket(KmSocket { fd: 6, ..Default::default() }),
        KmNote::EpollFd(KmEpollFd { fd: 7, flags: 0, events: vec![] }),
        KmNote::SigHand(KmSigHand { signo: 2, handler: 1, ..Default::default() }),
        KmNote::IoContexts(KmIoContexts { next_context: 1, contexts: vec![KmIoContext { nr_events: 1, context: 2 }] }),
        KmNote::Guest(payload(None)), // second guest note: KM ignores it, we keep it
        KmNote::Monitor(KmMonitor::default()), // second monitor: kept
    ];
    let state = SnapshotState { km_notes: extra.clone(), ..full_state() };
    let bytes = encode_snapshot(&state, &[]).unwrap();
    let snap = parse_snapshot(&bytes, &limits()).unwrap();
    assert_eq!(snap.state, state);
    assert_eq!(snap.state.km_notes, extra);

    let v = restore_verdict(&snap);
    assert_eq!(v.restorer, Restorer::KmOnly);
    for r in [
        KmOnlyReason::MultipleVcpus(2),
        KmOnlyReason::Sockets(1),
        KmOnlyReason::EventFds(1),
        KmOnlyReason::EpollFds(1),
        KmOnlyReason::NonPlainFiles(1),
        KmOnlyReason::DupGroups(1),
        KmOnlyReason::IoContexts(1),
        KmOnlyReason::KmDynlinker,
        KmOnlyReason::KmRuntime,
    ] {
        assert!(v.reasons.contains(&r), "{r:?} missing from {:?}", v.reasons);
    }
    let text = render_text(&snap);
    assert!(text.contains("restore: km only"), "{text}");
    assert!(text.contains("NT_KM_SOCKET"), "{text}");
}

/// A pure KM snapshot (no SNAPCALL notes): registers, brk, guest, files and the FP area come
/// from KM's notes; the verdict names the missing SNAPCALL notes.
#[test]
fn pure_km_snapshot() {
    use snapshot_format::encode_note;
    let regs = Registers { rip: 0x40_1000, rsp: 0x7fff_0000, fs_base: 0x7000, ..Default::default() };
    let notes = [
        KmNote::PrStatus(PrStatus { pid: 1, regs, ..Default::default() }),
        KmNote::Auxv(vec![(6, 4096), (0, 0)]),
        KmNote::Vcpu(KmVcpu {
            fp_format: KM_FPDATA_KVM_XSAVE,
            fp_data: vec![3; 4096],
            hcarg: 0x7fff_8000,
            ..Default::default()
        }),
        KmNote::Guest(payload(Some(1))),
        KmNote::DupData(KmDupData::default()),
        KmNote::File(KmFile { fd: 1, mode: 0o20620, data: u64::MAX, path: "/dev/pts/0".into(), ..Default::default() }),
        KmNote::Monitor(KmMonitor {
            brk: 0x60_0000,
            tbrk: 0x7fff_f000_0000,
            label: Some("KM".into()),
            ..Default::default()
        }),
    ];
    let mut note_bytes = Vec::new();
    for n in &notes {
        // KM's own record: namesz = strlen(owner) = 4, no NUL.
        let rec = encode_note(n.owner(), n.note_type(), &n.encode());
        assert_eq!(u32::from_le_bytes(rec[..4].try_into().unwrap()), 4);
        note_bytes.extend_from_slice(&rec);
    }
    // ELF header + PT_NOTE + one PT_LOAD, as km_core_write_elf_header/... lay them out.
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&62u16.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&0x40_1000u64.to_le_bytes());
    f.extend_from_slice(&64u64.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&56u16.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&[0; 6]);
    let notes_off = 64 + 2 * 56u64;
    let phdr = |t: u32, flags: u32, off: u64, vaddr: u64, sz: u64| {
        let mut p = Vec::new();
        p.extend_from_slice(&t.to_le_bytes());
        p.extend_from_slice(&flags.to_le_bytes());
        for v in [off, vaddr, 0, sz, if t == 4 { 0 } else { sz }, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    };
    f.extend(phdr(4, 0, notes_off, 0, note_bytes.len() as u64));
    let load_off = (notes_off + note_bytes.len() as u64).div_ceil(4096) * 4096;
    // KM writes p_filesz unrounded (memsz + extra) but writes whole pages.
    f.extend(phdr(1, 5, load_off, 0x40_0000, 0x1234));
    f.extend_from_slice(&note_bytes);
    f.resize(load_off as usize + 0x2000, 0xcc);

    let snap = parse_snapshot(&f, &Limits::default()).unwrap();
    let s = &snap.state;
    assert_eq!(s.regs, regs);
    assert_eq!(s.brk, 0x60_0000);
    assert_eq!(s.mmap_top, 0x7fff_f000_0000);
    assert_eq!(s.xsave, vec![3; 4096]);
    assert_eq!(s.guest.path, "/opt/kontain/runtime/libc.so");
    assert_eq!(s.guest.load_adjust, 0x40_0000);
    assert_eq!(s.files, vec![OpenFile { fd: 1, flags: 0, offset: u64::MAX, mode: 0o20620, path: "/dev/pts/0".into() }]);
    assert_eq!(s.km_notes, vec![KmNote::DupData(KmDupData::default())]);
    assert!(s.sregs.is_none() && s.identity.is_none() && s.pending_syscall.is_none());
    assert_eq!(snap.segments[0].file_size, 0x1234);

    let v = restore_verdict(&snap);
    assert_eq!(v.restorer, Restorer::KmOnly);
    assert!(v.reasons.contains(&KmOnlyReason::KmRuntime));
    assert!(v.reasons.iter().any(|r| matches!(r, KmOnlyReason::MissingSnapcallNotes(m) if m.len() == 4)));
    let json = render_json(&snap);
    assert_eq!(json["verdict"]["restorer"], "km_only");
    assert_eq!(json["state"]["brk"], 0x60_0000);
}

#[test]
fn snapcall_written_snapshot_is_native() {
    let snap =
        parse_snapshot(&encode_snapshot(&SnapshotState { km_notes: vec![], ..full_state() }, &[]).unwrap(), &limits())
            .unwrap();
    let v = restore_verdict(&snap);
    assert_eq!(v, RestoreVerdict { restorer: Restorer::Native, reasons: vec![] });
    let json = render_json(&snap);
    assert_eq!(json["verdict"]["restorer"], "native");
    assert_eq!(json["state"]["identity"]["program_path"], "/bin/fn");
    assert_eq!(json["segments"].as_array().unwrap().len(), 0);
    let text = render_text(&snap);
    assert!(text.contains("restore: native"), "{text}");
    assert!(text.contains("/etc/passwd"), "{text}");
}

/// An ELF core with only a PT_NOTE holding `notes`.
fn core_with_notes(notes: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&62u16.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&[0; 8]); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes());
    f.extend_from_slice(&[0; 12]); // e_shoff, e_flags
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&56u16.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    for v in [120u64, 0, 0, notes.len() as u64, 0, 4] {
        f.extend_from_slice(&v.to_le_bytes());
    }
    f.extend_from_slice(notes);
    f
}

/// Linux's own cores name the owner "CORE\0" (n_namesz 5, padded to 8): read those too.
#[test]
fn standard_elf_owner_with_nul_is_accepted() {
    let desc = KmNote::PrStatus(prstatus()).encode();
    let mut rec = Vec::new();
    rec.extend_from_slice(&5u32.to_le_bytes());
    rec.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    rec.extend_from_slice(&NT_PRSTATUS.to_le_bytes());
    rec.extend_from_slice(b"CORE\0\0\0\0");
    rec.extend_from_slice(&desc);
    // and an unknown GNU-style note after it
    rec.extend_from_slice(&4u32.to_le_bytes());
    rec.extend_from_slice(&3u32.to_le_bytes());
    rec.extend_from_slice(&0x4a4au32.to_le_bytes());
    rec.extend_from_slice(b"GNU\0");
    rec.extend_from_slice(&[1, 2, 3, 0]);
    let snap = parse_snapshot(&core_with_notes(&rec), &Limits::default()).unwrap();
    assert_eq!(snap.state.regs, prstatus().regs);
    assert_eq!(snap.state.unknown_notes, vec![RawNote { owner: "GNU".into(), note_type: 0x4a4a, desc: vec![1, 2, 3] }]);
    assert_eq!(snap.notes[1].kind, NoteKind::Unknown);
}
