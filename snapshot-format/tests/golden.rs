//! The golden snapshot: pins the on-disk format byte for byte.
//!
//! DO NOT just update the expected value (regenerate `tests/golden/v1.snapshot`) when this
//! test fails. A difference means files written by an older snapcall (or read by km) are
//! laid out differently from what this build writes. If the change is intended: bump
//! `FORMAT_VERSION`, keep reading the old version, document the change in
//! `docs/snapshot-format.md`, and add a new golden file next to this one
//! (`SNAPFMT_BLESS=1 cargo test -p snapshot-format --test golden` writes a missing one).

use snapshot_format::km::*;
use snapshot_format::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/v1.snapshot");

/// The state in the golden file. Keep it self-contained: shared fixtures may change.
fn golden_state() -> SnapshotState {
    let mut ehdr = vec![0u8; 64];
    ehdr[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    ehdr[16] = 2;
    ehdr[18] = 62;
    ehdr[20] = 1;
    ehdr[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
    ehdr[32] = 64;
    ehdr[52] = 64;
    ehdr[54] = 56;
    ehdr[56] = 1;
    let mut phdr = vec![0u8; 56];
    phdr[0] = 1;
    phdr[4] = 5;
    phdr[16..24].copy_from_slice(&0x40_0000u64.to_le_bytes());
    let seg = |selector: u16, type_: u8, l: u8| Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 3,
        db: 0,
        s: 1,
        l,
        g: 1,
        avl: 0,
    };
    SnapshotState {
        cwd: None,         // the golden file predates NT_SNAPCALL_PROCESS; its bytes stay fixed
        working_set: None, // and NT_SNAPCALL_WORKSET
        overlay: None,     // and NT_SNAPCALL_OVERLAY
        regs: Registers {
            rip: 0x40_1000,
            rsp: 0xfff_fe80,
            rax: 0,
            orig_rax: 0,
            rdi: 0,
            rsi: 0x60_0000,
            rdx: 0x1_0000,
            eflags: 0x202,
            cs: 0x33,
            ss: 0x2b,
            fs_base: 0x60_1000,
            ..Default::default()
        },
        sregs: Some(SpecialRegisters {
            cs: seg(0x33, 11, 1),
            ds: seg(0x2b, 3, 0),
            es: seg(0x2b, 3, 0),
            fs: Segment { base: 0x60_1000, ..seg(0x2b, 3, 0) },
            gs: seg(0x2b, 3, 0),
            ss: seg(0x2b, 3, 0),
            tr: Segment { base: 0x3000, limit: 0x67, selector: 0x40, type_: 11, present: 1, ..Default::default() },
            ldt: Segment { type_: 2, present: 1, ..Default::default() },
            gdt: DescriptorTable { base: 0x2000, limit: 0x4f },
            idt: DescriptorTable { base: 0x4000, limit: 0xfff },
            cr0: 0x8005_0033,
            cr2: 0,
            cr3: 0x1_0000,
            cr4: 0x3_06a0,
            cr8: 0,
            efer: 0xd01,
            apic_base: 0xfee0_0900,
        }),
        msrs: vec![(0xc000_0081, 0x0023_0010_0000_0000), (0xc000_0082, 0x5000), (0xc000_0084, 0x4_0700)],
        xcrs: vec![(0, 0x7)],
        xsave: (0..512u32).map(|i| (i % 251) as u8).collect(),
        auxv: vec![(6, 4096), (9, 0x40_1000), (0, 0)],
        brk: 0x60_2000,
        mmap_top: 0xf00_0000,
        guest: GuestInfo { ehdr, phdrs: phdr, path: "/bin/echo".into(), load_adjust: 0 },
        files: vec![
            OpenFile { fd: 0, flags: 0, offset: u64::MAX, mode: 0o10600, path: "stdin".into() },
            OpenFile { fd: 1, flags: 1, offset: u64::MAX, mode: 0o10600, path: "stdout".into() },
        ],
        pending_syscall: Some(PendingSyscall { nr: 0, args: [0, 0x60_0000, 0x1_0000, 0, 0, 0] }),
        regions: vec![
            Region { start: 0x40_0000, len: 0x2000, prot: 5, kind: RegionKind::Image, path: Some("/bin/echo".into()) },
            Region { start: 0x60_0000, len: 0x2000, prot: 3, kind: RegionKind::Brk, path: None },
            Region { start: 0xfff_f000, len: 0x1000, prot: 3, kind: RegionKind::Stack, path: None },
        ],
        identity: Some(Identity {
            format_version: 1,
            bundle_hash: [0x42; 32],
            memory_size: 256 << 20,
            program_path: "/bin/echo".into(),
        }),
        km_notes: vec![KmNote::SigHand(KmSigHand { signo: 13, handler: 1, flags: 0, mask: 0, restorer: 0 })],
        unknown_notes: vec![],
    }
}

fn golden_memory() -> (Vec<u8>, Vec<u8>) {
    let mut image = vec![0u8; 2 * 4096];
    image[0x1000..0x1010].copy_from_slice(&[0x48, 0x31, 0xc0, 0x0f, 0x05, 0xeb, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut stack = vec![0u8; 4096];
    stack[0xe80..0xe88].copy_from_slice(&1u64.to_le_bytes());
    (image, stack)
}

fn golden_bytes() -> Vec<u8> {
    let (image, stack) = golden_memory();
    let mem = [
        MemorySegment { guest_addr: 0x40_0000, data: &image, prot: PF_R | PF_X },
        MemorySegment { guest_addr: 0xfff_f000, data: &stack, prot: PF_R | PF_W },
    ];
    encode_snapshot(&golden_state(), &mem).unwrap()
}

#[test]
fn writer_reproduces_golden_file_byte_for_byte() {
    let ours = golden_bytes();
    if std::env::var_os("SNAPFMT_BLESS").is_some() && !std::path::Path::new(GOLDEN).exists() {
        std::fs::write(GOLDEN, &ours).unwrap();
    }
    let golden = std::fs::read(GOLDEN).expect("tests/golden/v1.snapshot missing");
    assert_eq!(ours.len(), golden.len(), "golden file length changed: see the comment at the top");
    if let Some(i) = ours.iter().zip(&golden).position(|(a, b)| a != b) {
        panic!(
            "byte {i:#x} differs from the golden file (ours {:#04x}, golden {:#04x}): see the comment at the top",
            ours[i], golden[i]
        );
    }

    // write_snapshot (sparse, via a temp file) produces the same bytes as encode_snapshot.
    let dir = std::env::temp_dir().join(format!("snapfmt-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.kmsnap");
    let (image, stack) = golden_memory();
    let mem = [
        MemorySegment { guest_addr: 0x40_0000, data: &image, prot: PF_R | PF_X },
        MemorySegment { guest_addr: 0xfff_f000, data: &stack, prot: PF_R | PF_W },
    ];
    write_snapshot(&path, &golden_state(), &mem).unwrap();
    assert!(std::fs::read(&path).unwrap() == golden, "write_snapshot differs from golden file");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn reader_parses_golden_file() {
    let path = std::path::Path::new(GOLDEN);
    let snap = read_snapshot(path, &Limits::for_memory(256 << 20)).unwrap();
    assert_eq!(snap.state, golden_state());
    verify_payload(path, &snap).unwrap();
    assert_eq!(
        snap.segments,
        vec![
            LoadSegment {
                guest_addr: 0x40_0000,
                mem_size: 0x2000,
                file_offset: snap.segments[0].file_offset,
                file_size: 0x2000,
                prot: PF_R | PF_X
            },
            LoadSegment {
                guest_addr: 0xfff_f000,
                mem_size: 0x1000,
                file_offset: snap.segments[0].file_offset + 0x2000,
                file_size: 0x1000,
                prot: PF_R | PF_W
            },
        ]
    );
    assert_eq!(snap.segments[0].file_offset % 4096, 0);
    let types: Vec<&str> = snap.notes.iter().map(|n| n.type_name).collect();
    assert_eq!(
        types,
        [
            "NT_PRSTATUS",
            "NT_AUXV",
            "NT_KM_VCPU",
            "NT_KM_GUESTV",
            "NT_KM_FILE",
            "NT_KM_FILE",
            "NT_KM_MONITOR",
            "NT_KM_SIGHAND",
            "NT_SNAPCALL_SREGS",
            "NT_SNAPCALL_MSRS",
            "NT_SNAPCALL_XCRS",
            "NT_SNAPCALL_XSAVE",
            "NT_SNAPCALL_PENDING_SYSCALL",
            "NT_SNAPCALL_REGIONS",
            "NT_SNAPCALL_IDENTITY",
        ]
    );
    // SIG_IGN for SIGPIPE is an installed action, which the vmm restores (NT_KM_SIGHAND).
    assert_eq!(restore_verdict(&snap).reasons, Vec::<KmOnlyReason>::new());
}
