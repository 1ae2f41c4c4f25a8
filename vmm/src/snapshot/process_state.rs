//! The process's part of a snapshot, saved and restored side by side: open files, the
//! address space's regions, signal dispositions and the files the program wrote. The vCPU's
//! part is `vcpu_state.rs`; `snapshot.rs` composes both with guest memory.

use std::os::fd::AsRawFd;

use snapshot_format as fmt;

use super::SnapshotError;
use crate::files::{Fd, FdKind, OpenFile, ENTROPY_DEVICE};
use crate::mm::{self, AddressSpace, RegionKind};
use crate::overlay::{Overlay, SavedEntry, SavedKind};
use crate::process::Process;

// ---------------------------------------------------------------- open files

/// The program's open files beyond the standard streams, as a restore reopens them
/// ([`reopen`]). A file snapcall cannot reopen in another VM (a pipe, a socket, a copy of a
/// standard stream) makes the snapshot fail, naming it.
pub(super) fn save_files(p: &Process) -> Result<Vec<fmt::OpenFile>, SnapshotError> {
    let mut files = Vec::new();
    for (fd, f) in p.fds.iter() {
        match (&f.kind, fd) {
            (FdKind::Stdin, 0) | (FdKind::Stdout, 1) | (FdKind::Stderr, 2) => {}
            (FdKind::Device(d), _) => files.push(fmt::OpenFile {
                fd: fd as i32,
                flags: libc::O_RDWR | if f.cloexec { libc::O_CLOEXEC } else { 0 },
                offset: 0,
                mode: 0,
                path: d.path().into(),
            }),
            (FdKind::Entropy, _) => files.push(fmt::OpenFile {
                fd: fd as i32,
                flags: libc::O_RDONLY | if f.cloexec { libc::O_CLOEXEC } else { 0 },
                offset: 0,
                mode: 0,
                path: ENTROPY_DEVICE.into(),
            }),
            (FdKind::File(of), _) => {
                // SAFETY: lseek(SEEK_CUR) on an fd we own only reads its offset.
                let offset = unsafe { libc::lseek(of.host.as_raw_fd(), 0, libc::SEEK_CUR) };
                files.push(fmt::OpenFile {
                    fd: fd as i32,
                    flags: of.flags | if f.cloexec { libc::O_CLOEXEC } else { 0 },
                    offset: offset.max(0) as u64,
                    mode: 0,
                    path: of.path.clone(),
                });
            }
            (FdKind::Stdin | FdKind::Stdout | FdKind::Stderr, _) => {
                return Err(SnapshotError::UnsupportedFd { fd, what: "a copy of a standard stream (a pipe)" })
            }
            (kind, _) => return Err(SnapshotError::UnsupportedFd { fd, what: kind.describe() }),
        }
    }
    Ok(files)
}

/// Reopens a file that was open at snapshot time, at the same fd, offset and flags.
pub(super) fn reopen(p: &mut Process, f: &fmt::OpenFile) -> Result<(), SnapshotError> {
    let err = |errno: i32| SnapshotError::Reopen { fd: f.fd, path: f.path.clone(), errno };
    let fd = u64::try_from(f.fd).map_err(|_| err(libc::EBADF))?;
    let cloexec = f.flags & libc::O_CLOEXEC != 0;
    if f.path == ENTROPY_DEVICE {
        return p.fds.insert_at(fd, Fd { kind: FdKind::Entropy, cloexec }).map_err(|e| err(e.0));
    }
    if let Some(d) = crate::files::Device::at(&f.path) {
        return p.fds.insert_at(fd, Fd { kind: FdKind::Device(d), cloexec }).map_err(|e| err(e.0));
    }
    let passthrough = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_PATH;
    let host = p.rootfs.open_in_root(&f.path, libc::O_RDONLY | (f.flags & passthrough)).map_err(|e| err(e.0))?;
    // SAFETY: lseek on the fd we just opened.
    if unsafe { libc::lseek(host.as_raw_fd(), f.offset as i64, libc::SEEK_SET) } < 0 {
        return Err(err(crate::errno::Errno::last().0));
    }
    let entry =
        Fd { kind: FdKind::File(OpenFile { host, path: f.path.clone(), flags: f.flags & !libc::O_CLOEXEC }), cloexec };
    p.fds.insert_at(fd, entry).map_err(|e| err(e.0))
}

// ---------------------------------------------------------------- the address space

/// The address space's regions (the heap as one `Brk` region), sorted by start. A restore
/// checks and rebuilds them when the snapshot is opened (`SnapshotImage::open`).
pub(super) fn save_regions(space: &AddressSpace) -> Vec<fmt::Region> {
    let mut regions = Vec::new();
    for r in space.regions() {
        let kind = match r.kind {
            RegionKind::Image => fmt::RegionKind::Image,
            RegionKind::Mmap => fmt::RegionKind::Mmap,
            RegionKind::Stack => fmt::RegionKind::Stack,
            RegionKind::Vdso => fmt::RegionKind::Vdso,
            RegionKind::Entropy => fmt::RegionKind::Entropy,
        };
        regions.push(fmt::Region { start: r.start, len: r.end - r.start, prot: r.prot, kind, path: None });
    }
    let heap_end = mm::page_up(space.brk()).unwrap_or(space.brk());
    if heap_end > space.brk_start() {
        regions.push(fmt::Region {
            start: space.brk_start(),
            len: heap_end - space.brk_start(),
            prot: mm::PROT_READ | mm::PROT_WRITE,
            kind: fmt::RegionKind::Brk,
            path: None,
        });
        regions.sort_by_key(|r| r.start);
    }
    regions
}

/// The address space a restore starts every call from, checked once when the snapshot is
/// opened.
pub(super) struct RestoredRegions {
    pub(super) space: AddressSpace,
    /// Where the vDSO's time page is, refreshed at every restore.
    pub(super) vdso_base: Option<u64>,
    /// Mappings of the entropy device (start, length), refilled in every VM.
    pub(super) entropy: Vec<(u64, u64)>,
}

/// The address space of [`save_regions`]' regions in `state`, for guest memory of
/// `memory_size` bytes; `Err` says what does not fit. `legacy_image_prot`: the snapshot
/// predates exact protections, so an image recorded r-x stays writable too, as it ran.
pub(super) fn restore_regions(
    state: &fmt::SnapshotState,
    memory_size: u64,
    legacy_image_prot: bool,
) -> Result<RestoredRegions, String> {
    let mut regions = Vec::new();
    let mut brk_start = state.brk;
    let mut vdso_base = None;
    let mut entropy = Vec::new();
    for r in &state.regions {
        let end = r.start.checked_add(r.len).ok_or_else(|| "region overflows".to_string())?;
        let kind = match r.kind {
            fmt::RegionKind::Image => RegionKind::Image,
            fmt::RegionKind::Mmap | fmt::RegionKind::Other => RegionKind::Mmap,
            fmt::RegionKind::Vdso => {
                vdso_base = Some(r.start);
                RegionKind::Vdso
            }
            fmt::RegionKind::Stack => RegionKind::Stack,
            fmt::RegionKind::Entropy => {
                entropy.push((r.start, r.len));
                RegionKind::Entropy
            }
            fmt::RegionKind::Brk => {
                brk_start = r.start;
                continue;
            }
        };
        let prot = match kind {
            RegionKind::Image if legacy_image_prot && r.prot == mm::PROT_READ | mm::PROT_EXEC => {
                mm::PROT_READ | mm::PROT_WRITE | mm::PROT_EXEC
            }
            _ => r.prot,
        };
        regions.push(mm::Region { start: r.start, end, prot, kind });
    }
    if entropy.iter().map(|&(_, len)| len).sum::<u64>() > crate::syscalls::MAX_ENTROPY_PAGES * crate::layout::PAGE_SIZE
    {
        return Err("more entropy-device pages than a process may map".into());
    }
    let space = AddressSpace::from_parts(memory_size, brk_start, state.brk, regions)
        .map_err(|_| "the region map overlaps or leaves user memory".to_string())?;
    Ok(RestoredRegions { space, vdso_base, entropy })
}

// ---------------------------------------------------------------- signals

/// The program's signal dispositions other than SIG_DFL, as KM keeps them (`NT_KM_SIGHAND`):
/// CPython ignores SIGPIPE and handles SIGINT from its start, before any snapshot. KM's note
/// has 32 bits of `sa_mask`, so a handler's mask of real-time signals is not kept.
pub(super) fn signal_handlers(actions: &[crate::process::SigAction; 64]) -> Vec<fmt::KmNote> {
    (1..=64u32)
        .zip(actions.iter())
        .filter(|(_, a)| a.handler != crate::process::SIG_DFL)
        .map(|(signo, a)| {
            fmt::KmNote::SigHand(fmt::km::KmSigHand {
                signo,
                handler: a.handler,
                flags: a.flags as u32,
                mask: a.mask as u32,
                restorer: a.restorer,
            })
        })
        .collect()
}

/// Puts the dispositions a snapshot kept back (a signal number out of range, or SIGKILL or
/// SIGSTOP, which have none, is skipped).
pub(super) fn restore_signal_handlers(process: &mut Process, notes: &[fmt::KmNote]) {
    for note in notes {
        let fmt::KmNote::SigHand(h) = note else { continue };
        if (1..=64).contains(&h.signo) && h.signo != 9 && h.signo != 19 {
            process.sigactions[(h.signo - 1) as usize] = crate::process::SigAction {
                handler: h.handler,
                flags: u64::from(h.flags),
                restorer: h.restorer,
                mask: u64::from(h.mask),
            };
        }
    }
}

// ---------------------------------------------------------------- written files

/// What the program wrote to its filesystem, as the snapshot keeps it (None: nothing).
pub(super) fn saved_overlay(overlay: &Overlay) -> Result<Option<Vec<fmt::OverlayEntry>>, SnapshotError> {
    if overlay.is_pristine() {
        return Ok(None);
    }
    let limits = fmt::Limits::default();
    let mut total = 0u64;
    let mut out = Vec::new();
    for e in overlay.entries() {
        let (kind, data) = match e.kind {
            SavedKind::File(bytes) => (fmt::OverlayKind::File, bytes.to_vec()),
            SavedKind::Dir { opaque } => (fmt::OverlayKind::Dir { opaque }, Vec::new()),
            SavedKind::Symlink(target) => (fmt::OverlayKind::Symlink, target.into_bytes()),
            SavedKind::Whiteout => (fmt::OverlayKind::Whiteout, Vec::new()),
        };
        total += data.len() as u64 + e.path.len() as u64 + 48;
        if data.len() as u64 > limits.max_data_bytes || total > limits.max_note_bytes / 2 {
            return Err(SnapshotError::OverlayTooLarge(format!(
                "{} makes them {} bytes; at most {} per file and {} in all",
                e.path,
                total,
                limits.max_data_bytes,
                limits.max_note_bytes / 2
            )));
        }
        out.push(fmt::OverlayEntry {
            path: e.path,
            kind,
            mode: e.mode,
            mtime_secs: e.mtime.secs,
            mtime_nanos: e.mtime.nanos,
            data,
        });
    }
    Ok(Some(out))
}

/// The snapshot's written files in the form every restored call starts from.
pub(super) fn overlay_entries(saved: &[fmt::OverlayEntry]) -> Vec<SavedEntry> {
    saved
        .iter()
        .map(|e| SavedEntry {
            path: e.path.clone(),
            kind: match e.kind {
                fmt::OverlayKind::File => SavedKind::File(std::sync::Arc::new(e.data.clone())),
                fmt::OverlayKind::Dir { opaque } => SavedKind::Dir { opaque },
                fmt::OverlayKind::Symlink => SavedKind::Symlink(String::from_utf8_lossy(&e.data).into_owned()),
                fmt::OverlayKind::Whiteout => SavedKind::Whiteout,
            },
            mode: e.mode,
            mtime: crate::overlay::Time { secs: e.mtime_secs, nanos: e.mtime_nanos },
        })
        .collect()
}
