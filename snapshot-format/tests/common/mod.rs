//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use snapshot_format::km::*;
use snapshot_format::*;

/// A 64-byte ELF header of a static x86-64 executable with `phnum` program headers.
pub fn guest_ehdr(phnum: u16) -> Vec<u8> {
    let mut e = vec![0u8; 64];
    e[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&0x40_1000u64.to_le_bytes());
    e[32..40].copy_from_slice(&64u64.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&phnum.to_le_bytes());
    e
}

pub fn seg(base: u64, sel: u16) -> Segment {
    Segment { base, limit: 0xffff_ffff, selector: sel, type_: 11, present: 1, dpl: 3, db: 0, s: 1, l: 1, g: 1, avl: 0 }
}

/// A state with every field set.
pub fn full_state() -> SnapshotState {
    let mut regs = Registers::from_array(std::array::from_fn(|i| 0x1000 + i as u64));
    regs.rip = 0x40_1234;
    SnapshotState {
        regs,
        sregs: Some(SpecialRegisters {
            cs: seg(0, 0x33),
            ds: seg(0, 0x2b),
            es: seg(0, 0x2b),
            fs: seg(0x7000_0000, 0),
            gs: seg(0, 0),
            ss: seg(0, 0x2b),
            tr: Segment { base: 0x3000, limit: 0x67, selector: 0x40, type_: 11, present: 1, ..Default::default() },
            ldt: Segment { type_: 2, ..Default::default() },
            gdt: DescriptorTable { base: 0x1000, limit: 0x7f },
            idt: DescriptorTable { base: 0x2000, limit: 0xfff },
            cr0: 0x8005_0033,
            cr2: 0xdead_0000,
            cr3: 0x10_0000,
            cr4: 0x6_06a0,
            cr8: 0,
            efer: 0xd01,
            apic_base: 0xfee0_0900,
        }),
        msrs: vec![(0xc000_0081, 0x23_0010_0000_0000), (0xc000_0100, 0x7000_0000), (0x10, 12345)],
        xcrs: vec![(0, 7)],
        xsave: (0..4096u32).map(|i| (i * 7) as u8).collect(),
        auxv: vec![(6, 4096), (25, 0x7fff_0000), (0, 0)],
        cwd: Some("/srv/app".into()),
        overlay: Some(vec![
            snapshot_format::OverlayEntry {
                path: "/tmp".into(),
                kind: snapshot_format::OverlayKind::Dir { opaque: true },
                mode: 0o1777,
                mtime_secs: 1_700_000_000,
                mtime_nanos: 5,
                data: vec![],
            },
            snapshot_format::OverlayEntry {
                path: "/tmp/state".into(),
                kind: snapshot_format::OverlayKind::File,
                mode: 0o600,
                mtime_secs: 1_700_000_001,
                mtime_nanos: 999_999_999,
                data: b"three bytes and more".to_vec(),
            },
            snapshot_format::OverlayEntry {
                path: "/tmp/link".into(),
                kind: snapshot_format::OverlayKind::Symlink,
                mode: 0o777,
                mtime_secs: 0,
                mtime_nanos: 0,
                data: b"state".to_vec(),
            },
            snapshot_format::OverlayEntry {
                path: "/etc/gone".into(),
                kind: snapshot_format::OverlayKind::Whiteout,
                mode: 0,
                mtime_secs: 0,
                mtime_nanos: 0,
                data: vec![],
            },
        ]),
        working_set: Some(vec![
            WorkingSetRange { start: 0x40_0000, pages: 3, written: false },
            WorkingSetRange { start: 0x40_3000, pages: 1, written: true },
            WorkingSetRange { start: 0x7fff_f000, pages: 1, written: true },
        ]),
        brk: 0x60_0000,
        mmap_top: 0xf00_0000,
        guest: GuestInfo {
            ehdr: guest_ehdr(2),
            phdrs: (0..112).map(|i| i as u8).collect(),
            path: "/bin/fn".into(),
            load_adjust: 0,
        },
        files: vec![
            OpenFile { fd: 0, flags: 0, offset: 0, mode: 0o20666, path: "/dev/stdin".into() },
            OpenFile { fd: 3, flags: 0o2000000, offset: 42, mode: 0o100644, path: "/etc/passwd".into() },
        ],
        pending_syscall: Some(PendingSyscall { nr: 0, args: [0, 0x7fff_1000, 65536, 0, 0, 0] }),
        regions: vec![
            Region { start: 0x40_0000, len: 0x2000, prot: 5, kind: RegionKind::Image, path: Some("/bin/fn".into()) },
            Region { start: 0x60_0000, len: 0x1000, prot: 3, kind: RegionKind::Brk, path: None },
            Region { start: 0xf00_0000, len: 0x1000, prot: 3, kind: RegionKind::Mmap, path: Some(String::new()) },
            Region { start: 0xfff_f000, len: 0x1000, prot: 3, kind: RegionKind::Stack, path: None },
            Region { start: 0xfff_0000, len: 0x1000, prot: 5, kind: RegionKind::Vdso, path: None },
            Region { start: 0x1000, len: 0x1000, prot: 0, kind: RegionKind::Other, path: None },
        ],
        identity: Some(Identity::new([0xab; 32], 256 << 20, "/bin/fn")),
        km_notes: vec![KmNote::SigHand(KmSigHand {
            signo: 2,
            handler: 0x40_2000,
            flags: 0x0400_0000,
            mask: 0,
            restorer: 0x40_3000,
        })],
        unknown_notes: vec![RawNote { owner: "LINUX".into(), note_type: 0x202, desc: vec![1, 2, 3, 4, 5] }],
    }
}

/// Memory: a code page, a zero page (hole), a data page; a separate stack page.
pub fn memory_pages() -> (Vec<u8>, Vec<u8>) {
    let mut image = vec![0u8; 3 * 4096];
    image[..4096].fill(0x90);
    image[2 * 4096..].iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    let stack = vec![0x55u8; 4096];
    (image, stack)
}

pub fn memory<'a>(image: &'a [u8], stack: &'a [u8]) -> Vec<MemorySegment<'a>> {
    vec![
        MemorySegment { guest_addr: 0x40_0000, data: image, prot: PF_R | PF_X },
        MemorySegment { guest_addr: 0xfff_f000, data: stack, prot: PF_R | PF_W },
    ]
}

pub fn limits() -> Limits {
    Limits::for_memory(256 << 20)
}

/// A fresh scratch directory under the target dir (or /tmp).
pub fn scratch(name: &str) -> std::path::PathBuf {
    let base = std::env::var_os("CARGO_TARGET_TMPDIR").map(Into::into).unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("snapfmt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
