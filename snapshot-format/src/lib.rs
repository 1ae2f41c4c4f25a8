//! KM-compatible ELF-core snapshot files: read, write, validate. Knows nothing of KVM.
//!
//! A snapshot is an ELF64 little-endian x86-64 `ET_CORE` file laid out as Kontain KM's
//! snapshots are: one PT_NOTE with `CORE` and `KMSP` (KM) notes plus our own `SNAPCALL`
//! notes, then one PT_LOAD per guest memory range at page-aligned file offsets, all-zero
//! pages left as holes. The layout is drawn and every note documented in
//! `docs/snapshot-format.md`; how the notes map to KM's in `docs/km-interop.md`.
//!
//! The reader ([`read_snapshot`]) takes hostile input: every length is capped by
//! [`Limits`], every failure is a [`FormatError`] naming the segment or note concerned.
//! It reads headers and notes only; the vmm maps each [`LoadSegment`]'s file range
//! `MAP_PRIVATE` itself, after [`verify_payload`] if it wants the content hash checked.
//!
//! ```
//! use snapshot_format::*;
//! # let dir = std::env::temp_dir().join(format!("snapfmt-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("fn.kmsnap");
//! let page = [0x90u8; 4096];
//! let state = SnapshotState {
//!     regs: Registers { rip: 0x40_1000, rsp: 0x7fff_f000, ..Default::default() },
//!     identity: Some(Identity::new([7; 32], 256 << 20, "/bin/fn")),
//!     ..Default::default()
//! };
//! let memory = [MemorySegment { guest_addr: 0x40_0000, data: &page, prot: PF_R | PF_X }];
//! write_snapshot(&path, &state, &memory)?;
//!
//! let snap = read_snapshot(&path, &Limits::for_memory(256 << 20))?;
//! verify_payload(&path, &snap)?;
//! assert_eq!(snap.state, state);
//! assert_eq!(snap.segments[0].guest_addr, 0x40_0000);
//! assert_eq!(snap.segments[0].file_offset % 4096, 0);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), FormatError>(())
//! ```

#![warn(missing_docs)]

mod bytes;
mod elf;
mod error;
mod inspect;
pub mod km;
mod read;
pub mod snapcall;
mod state;
mod write;

pub use bytes::hex;
pub use elf::{encode_note, EHDR_SIZE, EM_X86_64, ET_CORE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PT_LOAD, PT_NOTE};
pub use error::{FormatError, NoteAt};
pub use inspect::{render_json, render_text, restore_verdict, KmOnlyReason, RestoreVerdict, Restorer};
pub use km::KmNote;
pub use read::{
    parse_snapshot, read_snapshot, read_snapshot_file, verify_payload, verify_payload_bytes, verify_payload_file,
};
pub use state::{
    DescriptorTable, GuestInfo, Identity, Limits, LoadSegment, MemorySegment, NoteEntry, NoteKind, OpenFile,
    OverlayEntry, OverlayKind, PendingSyscall, RawNote, Region, RegionKind, Registers, Segment, Snapshot,
    SnapshotState, SpecialRegisters, WorkingSetRange,
};
pub use write::{encode_snapshot, write_snapshot, MONITOR_LABEL};

/// Version of the SNAPCALL notes written by this crate (the identity note's
/// `format_version`). The reader accepts `1..=FORMAT_VERSION`.
///
/// - 1: the first.
/// - 2: region protections are exact: each image segment has its own (from its PT_LOAD
///   flags, then mprotect), where version 1 recorded the whole image as `r-x`. The notes'
///   layout is unchanged; a reader of version 1 must not trust its image protections.
pub const FORMAT_VERSION: u32 = 2;
/// The first [`FORMAT_VERSION`] whose region protections are exact.
pub const EXACT_PROTECTIONS_VERSION: u32 = 2;
