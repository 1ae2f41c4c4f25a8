//! Snapshots: capture a function transparently at its first read of stdin, and restore that
//! state into a brand-new VM per call.
//!
//! Capture runs the program cold until it makes its first `read(0, ...)` (the moment it waits
//! for its request) and saves memory, registers, FPU/XSAVE state, MSRs, XCRs, the address
//! space map, open files and the pending read, in KM's ELF-core layout (`snapshot-format`).
//!
//! Restore maps a sealed in-memory copy of the snapshot copy-on-write over a fresh VM's
//! memory and makes the snapshot's recorded working set present (`working_set.rs`): pages no
//! call writes are shared by every VM, each page a call writes is private to that call. The
//! pending read is then completed with the request and the program resumes as if it had just
//! received it.

use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use snapshot_format as fmt;

use crate::call::{write_user_return, AtStdinRead, CallError, CallStats, PhaseTimings, ReadyCall};
use crate::function::FunctionError;
use crate::layout::*;
use crate::loader::Program;
use crate::mm::{self, AddressSpace};
use crate::overlay::{Overlay, SavedEntry};
use crate::process::{Process, ProcessSpec};
use crate::syscalls::{self, Outcome};
use crate::vm::{EmptyVm, FreshVm, PreparedVm, VmError};

mod process_state;

/// File name of a bundle's snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.kmsnap";

/// Why a snapshot could not be taken, opened or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file is not a well-formed snapshot (`snapshot-format`'s checks).
    #[error("{path}: {source}")]
    Format {
        /// The snapshot file.
        path: PathBuf,
        /// What failed underneath.
        source: fmt::FormatError,
    },
    /// The entropy device's pages could not be refilled.
    #[error("cannot refill the entropy page: errno {errno}")]
    Entropy {
        /// The errno the kernel returned.
        errno: i32,
    },
    /// The bundle changed since the snapshot was taken.
    #[error("{path}: stale snapshot: the bundle's config.json or program changed since it was taken (run `snapcall snapshot` again)")]
    Stale {
        /// The snapshot file.
        path: PathBuf,
    },
    /// A well-formed snapshot that does not fit this function.
    #[error("{path}: not a snapcall snapshot of this function: {what}")]
    Mismatch {
        /// The snapshot file.
        path: PathBuf,
        /// What does not fit.
        what: String,
    },
    /// A file could not be opened or stat'ed.
    #[error("{path}: cannot open: {source}")]
    Open {
        /// The path concerned.
        path: PathBuf,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The path concerned.
        path: PathBuf,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// The sealed in-memory copy of the snapshot could not be made.
    #[error("{path}: cannot make the in-memory copy every VM maps: {source}")]
    SharedCopy {
        /// The snapshot file.
        path: PathBuf,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// Capture: the cold start failed.
    #[error("starting the program cold to capture it: {0}")]
    Start(#[source] Box<crate::function::StartError>),
    /// The program could not be read (for the bundle hash or the ELF headers).
    #[error(transparent)]
    Program(Box<crate::function::FunctionError>),
    /// The file changed after it was verified.
    #[error("{path}: the snapshot file was written to after it was verified; load the function again")]
    Changed {
        /// The snapshot file.
        path: PathBuf,
    },
    /// Capture: the program failed before its first read of stdin.
    #[error("running to the first stdin read: {0}")]
    Run(#[from] CallError),
    /// Capture: the program holds an fd a snapshot cannot reopen.
    #[error("fd {fd} is {what}; only files of the rootfs (and fds 0-2) can be snapshotted")]
    UnsupportedFd {
        /// The fd.
        fd: u64,
        /// What it is.
        what: &'static str,
    },
    /// Restore: a file open at capture could not be reopened.
    #[error("reopening {path} as fd {fd}: errno {errno}")]
    Reopen {
        /// The fd.
        fd: i32,
        /// The file's path inside the rootfs.
        path: String,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// Capture: the files the program wrote before its first read are too large to save.
    #[error("the files the program wrote before the snapshot point do not fit in a snapshot: {0}")]
    OverlayTooLarge(String),
    /// Restore: the snapshot's written files do not fit the function's memory.
    #[error("the snapshot's written files do not fit the function's memory (errno {0})")]
    Overlay(i32),
    /// Setting the vCPU's state failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Mapping or filling guest memory failed.
    #[error("restoring memory: {0}")]
    Memory(#[from] crate::memory::MemoryError),
}

impl From<crate::ioctl::IoctlError> for SnapshotError {
    fn from(e: crate::ioctl::IoctlError) -> Self {
        SnapshotError::Vm(e.into())
    }
}

/// What `take_snapshot` wrote.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// Where the snapshot was written.
    pub path: PathBuf,
    /// Bytes of guest memory saved (before zero pages are dropped).
    pub memory_bytes: u64,
    /// Regions of the address space saved.
    pub regions: usize,
    /// Syscalls the program made before its first stdin read.
    pub syscalls: u64,
}

/// The function a snapshot is of, as snapshots see it: what a snapshot is checked against
/// when it is opened, what a capture records, and the process description its calls start
/// from. [`crate::Function`] hands it over; nothing here needs the rest of the function.
pub(crate) struct SnapshotSubject<'a> {
    /// The bundle directory (where `snapshot.kmsnap` and config.json are).
    pub(crate) dir: &'a Path,
    /// Guest memory size.
    pub(crate) memory_size: u64,
    /// config.json as the function was loaded from it.
    pub(crate) config_source: &'a [u8],
    /// Which version of the program file the function was loaded against.
    pub(crate) program_stamp: crate::verified::Stamp,
    /// The program, read on first use (an open of a snapshot verified before never needs it).
    pub(crate) program: Box<dyn Fn() -> Result<&'a Program, FunctionError> + 'a>,
    /// Every call's process description.
    pub(crate) spec: &'a ProcessSpec,
    /// The bundle's sample request, for the working-set recording.
    pub(crate) warmup_request: Option<&'a [u8]>,
}

impl<'a> SnapshotSubject<'a> {
    fn program(&self) -> Result<&'a Program, SnapshotError> {
        (self.program)().map_err(|e| SnapshotError::Program(Box::new(e)))
    }
}

/// The hash that identifies a bundle: its config.json (as the function was loaded from it)
/// and its program.
pub(crate) fn bundle_hash(subject: &SnapshotSubject) -> Result<[u8; 32], SnapshotError> {
    let config = subject.config_source;
    let mut h = Sha256::new();
    h.update((config.len() as u64).to_le_bytes());
    h.update(config);
    h.update(&subject.program()?.bytes);
    Ok(h.finalize().into())
}

/// Writes the snapshot of the program `at` stopped at its first read of stdin to `out`,
/// with its working set (recorded by running calls from the file just written).
pub(crate) fn capture(
    subject: &SnapshotSubject,
    mut at: AtStdinRead,
    out: &Path,
) -> Result<SnapshotReport, SnapshotError> {
    let mut state = capture_state(subject, &at)?;
    // A restore always writes a fresh time page; until it does, the vDSO must fall back to
    // syscalls rather than trust the capture's clock.
    if let Some(r) = state.regions.iter().find(|r| r.kind == fmt::RegionKind::Vdso) {
        crate::vdso::TimePage::invalid().write_to(&mut at.vm.memory, GuestAddr::new(r.start))?;
    }
    let mem = &at.vm.memory;
    let mut segments = Vec::new();
    let mut memory_bytes = 0;
    for r in &state.regions {
        let data = mem.slice(GuestAddr::new(r.start), r.len)?;
        memory_bytes += r.len;
        segments.push(fmt::MemorySegment { guest_addr: r.start, data, prot: elf_prot(r.prot) });
    }
    let write = |state: &fmt::SnapshotState| {
        fmt::write_snapshot(out, state, &segments).map_err(|source| SnapshotError::Format { path: out.into(), source })
    };
    write(&state)?;
    // The pages calls touch can only be learnt by running calls from the file just written;
    // the snapshot is then written again with them (the memory and state are unchanged).
    state.working_set = Some(crate::working_set::record(subject, out)?);
    write(&state)?;
    Ok(SnapshotReport {
        path: out.into(),
        memory_bytes,
        regions: state.regions.len(),
        syscalls: at.process.stats.syscalls,
    })
}

fn elf_prot(prot: u32) -> u32 {
    let mut p = 0;
    if prot & mm::PROT_READ != 0 {
        p |= fmt::PF_R;
    }
    if prot & mm::PROT_WRITE != 0 {
        p |= fmt::PF_W;
    }
    if prot & mm::PROT_EXEC != 0 {
        p |= fmt::PF_X;
    }
    p
}

fn capture_state(subject: &SnapshotSubject, at: &AtStdinRead) -> Result<fmt::SnapshotState, SnapshotError> {
    let (vcpu, entry) = (&at.vm.vcpu, &at.read);
    let saved = crate::vcpu_state::save(vcpu, entry)?;
    let p = &at.process;
    let files = process_state::save_files(p)?;
    let regions = process_state::save_regions(&p.space);
    let program = subject.program()?;
    let phoff =
        u64::from_le_bytes(program.bytes.get(32..40).and_then(|b| b.try_into().ok()).unwrap_or([0; 8])) as usize;
    let phdrs = program.bytes.get(phoff..phoff + program.phnum as usize * 56).unwrap_or(&[]).to_vec();
    Ok(fmt::SnapshotState {
        regs: saved.regs,
        sregs: Some(saved.sregs),
        msrs: saved.msrs,
        xcrs: saved.xcrs,
        xsave: saved.xsave,
        auxv: p.auxv.clone(),
        brk: p.space.brk(),
        mmap_top: p.space.mmap_top(),
        guest: fmt::GuestInfo {
            ehdr: program.bytes.get(..64).unwrap_or(&[]).to_vec(),
            phdrs,
            path: program.path.clone(),
            load_adjust: 0,
        },
        files,
        pending_syscall: Some(fmt::PendingSyscall { nr: entry.nr, args: entry.args }),
        regions,
        cwd: Some(p.cwd.clone()),
        working_set: None,
        overlay: process_state::saved_overlay(&p.overlay)?,
        identity: Some(fmt::Identity::new(bundle_hash(subject)?, subject.memory_size, program.path.clone())),
        km_notes: process_state::signal_handlers(&p.sigactions),
        unknown_notes: Vec::new(),
    })
}

/// How a restore fills guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreMemory {
    /// Map the image's sealed in-memory copy `MAP_PRIVATE` and nothing more: untouched
    /// pages cost nothing and each page the call touches costs a fault. The working-set
    /// recorder's fallback (it reads back which pages the host mapped).
    CopyOnWrite,
    /// Map each segment copy-on-write from the image's sealed in-memory copy (shared by every
    /// VM), then make the recorded working set present: the pages calls write become this
    /// VM's private copies now, the pages they only read are mapped shared, and a loop in the
    /// guest maps all of them into the VM (`prefault.rs`). A VM then costs the host about
    /// what its call writes, and its call faults only on pages outside the recorded set.
    /// What the pool does, off the call path.
    Ahead,
    /// Map nothing: a userfaultfd server fills each page on its first touch (the working-set
    /// recorder, `working_set.rs`).
    OnDemand,
}

static NEXT_IMAGE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A validated snapshot of one function, opened once and restored into any number of VMs.
pub struct SnapshotImage {
    /// Unique per opened image: marks VMs the pool restored this snapshot into.
    id: u64,
    path: PathBuf,
    file: File,
    snapshot: fmt::Snapshot,
    /// The vCPU state a restore sets, decoded and checked once here.
    vcpu: crate::vcpu_state::VcpuState,
    /// The program's address space at the snapshot, validated once here; each call clones it.
    space: AddressSpace,
    pending: fmt::PendingSyscall,
    /// Where the vDSO's time page is, refreshed at every restore.
    vdso_base: Option<u64>,
    /// The snapshot's data (not its holes): (guest address, file offset, length), found once
    /// here so an eager restore only reads.
    data: Vec<(u64, u64, u64)>,
    /// The working set recorded in the snapshot, if it has one.
    working_set: Option<Vec<fmt::WorkingSetRange>>,
    /// The files the program wrote before the snapshot point (empty: none); every call
    /// starts from them, sharing their contents copy-on-write.
    overlay: Vec<SavedEntry>,
    /// The snapshot's data in a sealed memfd laid out by guest address, made at the first
    /// restore: every VM maps it copy-on-write, so pages no call writes exist once in host
    /// memory, and a snapshot file replaced or truncated while serving cannot fault the
    /// monitor.
    shared: std::sync::OnceLock<SharedImage>,
    /// The version of the file that was verified; the shared copy is made only from it.
    stamp: crate::verified::Stamp,
    /// Mappings of the entropy device (start, length), refilled in every VM the snapshot is
    /// restored into, so that no two calls see the same "random" bytes.
    entropy: Vec<(u64, u64)>,
    /// The page tables of `space`, built once here and written into every VM prepared for
    /// this snapshot (each call's process starts from a copy of their bookkeeping).
    tables: crate::page_tables::BuiltTables,
}

impl SnapshotImage {
    /// Opens `BUNDLE/snapshot.kmsnap` if present; `Ok(None)` when there is none. A snapshot
    /// that is corrupt, of another function, or stale is an error, never silently used.
    pub(crate) fn open_for(subject: &SnapshotSubject) -> Result<Option<SnapshotImage>, SnapshotError> {
        let path = subject.dir.join(SNAPSHOT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        Self::open(subject, &path).map(Some)
    }

    /// Opens and validates the snapshot at `path` for `function`.
    pub(crate) fn open(subject: &SnapshotSubject, path: &Path) -> Result<SnapshotImage, SnapshotError> {
        let fmt_err = |source| SnapshotError::Format { path: path.into(), source };
        let mismatch = |what: &str| SnapshotError::Mismatch { path: path.into(), what: what.into() };
        let open_err = |source| SnapshotError::Open { path: path.into(), source };
        // One open file from here on: parsed, verified, and later copied from.
        let file = File::open(path).map_err(open_err)?;
        let config = subject.dir.join("config.json");
        let stamps = [
            crate::verified::Stamp::of_file(&file).map_err(open_err)?,
            crate::verified::Stamp::of_path(&config)
                .map_err(|source| SnapshotError::Open { path: config.clone(), source })?,
            subject.program_stamp,
        ];
        let cache = crate::verified::VerifiedCache::open();
        let verified_before = cache.as_ref().is_some_and(|c| c.is_verified(path, &stamps));
        let limits = fmt::Limits::for_memory(subject.memory_size);
        let snapshot = fmt::read_snapshot_file(&file, path, &limits).map_err(fmt_err)?;
        if !verified_before {
            fmt::verify_payload_file(&file, path, &snapshot).map_err(fmt_err)?;
        }
        let state = &snapshot.state;
        let identity =
            state.identity.as_ref().ok_or_else(|| mismatch("no SNAPCALL identity note (a KM snapshot needs km)"))?;
        if identity.memory_size != subject.memory_size {
            return Err(mismatch(&format!(
                "taken with {} bytes of memory, the bundle now asks for {}",
                identity.memory_size, subject.memory_size
            )));
        }
        if !verified_before && identity.bundle_hash != bundle_hash(subject)? {
            return Err(SnapshotError::Stale { path: path.into() });
        }
        let pending = state.pending_syscall.ok_or_else(|| mismatch("no pending syscall"))?;
        if !matches!(pending.nr, syscalls::nr::READ | syscalls::nr::READV | syscalls::nr::PREAD64)
            || pending.args[0] != 0
        {
            return Err(mismatch("the pending syscall is not a read of stdin"));
        }
        for (i, s) in snapshot.segments.iter().enumerate() {
            let mapped = mm::page_up(s.file_size).and_then(|len| s.file_offset.checked_add(len));
            if s.guest_addr < USER_START || mapped.is_none_or(|end| end > snapshot.file_len.next_multiple_of(PAGE_SIZE))
            {
                return Err(mismatch(&format!(
                    "segment {i} at {:#x} is outside user memory or the file",
                    s.guest_addr
                )));
            }
        }
        let vcpu = crate::vcpu_state::VcpuState::from_snapshot(state).map_err(|what| mismatch(&what))?;
        // Before version 2 the whole image was recorded r-x, its data segments too: such a
        // snapshot keeps the image writable and executable, as it ran when it was taken.
        let legacy_image_prot = identity.format_version < fmt::EXACT_PROTECTIONS_VERSION;
        let restored = process_state::restore_regions(state, subject.memory_size, legacy_image_prot)
            .map_err(|what| mismatch(&what))?;
        let (space, vdso_base, entropy) = (restored.space, restored.vdso_base, restored.entropy);
        let tables = crate::page_tables::build(&space).map_err(|e| mismatch(&e.to_string()))?;
        let mut data = Vec::new();
        for seg in &snapshot.segments {
            let extents = crate::memory::file_data_extents(&file, seg.file_offset, seg.file_size)
                .map_err(|source| SnapshotError::Read { path: path.into(), source })?;
            data.extend(extents.into_iter().map(|(off, len)| (seg.guest_addr + (off - seg.file_offset), off, len)));
        }
        let id = NEXT_IMAGE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if vdso_base
            .is_some_and(|b| b.checked_add(crate::vdso::VDSO_REGION_SIZE).is_none_or(|end| end > subject.memory_size))
        {
            return Err(mismatch("the vDSO region lies outside guest memory"));
        }
        let outside = |r: &&fmt::WorkingSetRange| {
            r.start < USER_START
                || r.start.checked_add(u64::from(r.pages) * PAGE_SIZE).is_none_or(|end| end > subject.memory_size)
        };
        if let Some(r) = state.working_set.iter().flatten().find(outside) {
            return Err(mismatch(&format!("working set range at {:#x} lies outside user memory", r.start)));
        }
        let working_set = state.working_set.clone();
        let overlay = process_state::overlay_entries(state.overlay.as_deref().unwrap_or(&[]));
        if let Err(e) = Overlay::from_entries(&overlay, &crate::budget::MemoryBudget::new(subject.memory_size)) {
            return Err(mismatch(&format!("its written files cannot be restored (errno {})", e.0)));
        }
        // Both checks passed on this version of the three files: later opens may skip them,
        // unless the snapshot changed while it was being read.
        if let (false, Some(cache)) = (verified_before, &cache) {
            if crate::verified::Stamp::of_file(&file).ok() == Some(stamps[0]) {
                cache.record(path, &stamps);
            }
        }
        Ok(SnapshotImage {
            id,
            stamp: stamps[0],
            path: path.into(),
            file,
            snapshot,
            vcpu,
            space,
            pending,
            vdso_base,
            data,
            working_set,
            overlay,
            shared: std::sync::OnceLock::new(),
            entropy,
            tables,
        })
    }

    /// The parsed snapshot (for inspection and reports).
    pub fn snapshot(&self) -> &fmt::Snapshot {
        &self.snapshot
    }

    /// This image's id (what a [`PreparedVm`] records).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Guest memory size the snapshot needs.
    pub fn memory_size(&self) -> u64 {
        self.snapshot.state.identity.as_ref().map_or(0, |i| i.memory_size)
    }

    /// Puts the snapshot's memory and vCPU state into `vm`, which is then ready to enter the
    /// program as soon as the pending read is completed ([`Self::finish`]). The pool does this
    /// ahead of time; [`Self::restore`] does it inline when the VM was not prepared.
    pub(crate) fn prepare(&self, vm: EmptyVm, memory: RestoreMemory) -> Result<PreparedVm, SnapshotError> {
        let mut vm = vm.machine;
        let mut phases = crate::pool::FillPhases::default();
        let mut clock = std::time::Instant::now();
        let mut lap = |phase: &mut std::time::Duration| {
            let now = std::time::Instant::now();
            *phase += now - clock;
            clock = now;
        };
        // 0. The program's page tables, in pool pages this VM has never walked (see
        // page_tables.rs), and CR3 on them before the pre-fault loop runs.
        self.tables.write_to(&mut vm.memory)?;
        crate::page_tables::load_root(&mut vm, self.tables.tables.root());
        // 1. Memory. Guest memory only ever maps the sealed copy, never the file itself, so
        // the file truncated or rewritten under a running server cannot SIGBUS the monitor.
        // Memory reused from a finished VM of this image (`memory_reuse.rs`) has its mappings
        // already, and every byte outside the huge windows reset to what they map.
        let laid_out = memory == RestoreMemory::Ahead && vm.memory.laid_out_for() == Some(self.id);
        if memory != RestoreMemory::OnDemand && !laid_out {
            let image = self.shared_copy()?;
            // Few mappings per VM: every mmap over guest memory makes KVM check the range
            // against every live VM in the process (its MMU notifier), so the copy is mapped
            // once per run of windows, and huge windows are filled in the anonymous memory
            // the VM already has.
            let huge: &[u64] = if memory == RestoreMemory::Ahead { &image.placement.huge_windows } else { &[] };
            for (start, end) in outside_windows(image.start, image.start + image.len, huge) {
                vm.memory.map_file_private(GuestAddr::new(start), end - start, &image.file, start - image.start)?;
                if image.huge && memory == RestoreMemory::Ahead {
                    // Windows no call writes then map the copy's 2 MiB pages whole. (Not for
                    // the recorder's fallback, which reads back which 4 KiB pages were mapped.)
                    vm.memory.advise_huge_pages(GuestAddr::new(start), end - start)?;
                }
            }
        }
        if let (RestoreMemory::Ahead, Some(image)) = (memory, self.shared.get()) {
            for &window in &image.placement.huge_windows {
                vm.memory.copy_into_huge_page(GuestAddr::new(window), image.view.bytes(), image.start)?;
            }
            vm.memory.mark_laid_out(self.id);
            // Written pages first: a write splits a shared 2 MiB page into 4 KiB ones, and
            // the window's reads must then be mapped at that size (`Placement::populate`).
            // Memory reused from a finished VM of this image has them already (its written
            // pages reset in place, its read pages still mapped): populating again would be
            // one madvise per range for nothing (73 per CPython VM). A page a call gave back
            // (MADV_DONTNEED) is faulted in by the pre-fault loop's touch instead.
            if !laid_out {
                for p in &image.placement.populate {
                    vm.memory.populate(GuestAddr::new(p.start), p.len, p.write)?;
                }
            }
            lap(&mut phases.memory);
            // Map what the call will touch into the VM now, not on its first touches.
            vm.prefault(&image.placement.prefault)?;
            lap(&mut phases.prefault);
        }
        // A VM the pool made for this restore has not run yet (`EmptyVm::create_unwarmed`):
        // the pre-fault run was its first. Without one, take the slow first run here, not in
        // the call. (The warm-up stub is mapped in the program's tables as in the monitor's.)
        lap(&mut phases.memory);
        if !vm.warm {
            vm.warm_up()?;
        }
        lap(&mut phases.prefault);
        // Fresh randomness for programs that mapped the entropy device. Every VM is used by
        // exactly one call, so filling it here (in the pool, off the call's path: getrandom
        // of a 4 KiB page takes ≈15 µs) still gives each call bytes no other call saw.
        for &(start, len) in &self.entropy {
            let page = vm.memory.slice_mut(GuestAddr::new(start), len)?;
            crate::syscalls::fill_random(page).map_err(|e| SnapshotError::Entropy { errno: e.0 })?;
        }
        lap(&mut phases.memory);
        // 2. vCPU: special registers (CR3 on this VM's tables), FPU/SSE/AVX state, MSRs,
        // general registers; it will enter the program through the stub's iretq, whose
        // frame and rax `finish` writes.
        self.vcpu.restore(&mut vm, self.tables.tables.root())?;
        lap(&mut phases.vcpu);
        Ok(PreparedVm { machine: vm, image: self.id, phases })
    }

    /// Makes `memory`, a finished VM's (its VM destroyed), fit for another restore of this
    /// image: every page written since the restore laid it out gets the bytes it had then,
    /// except in the huge windows, which the next restore overwrites whole. `false` when it
    /// cannot be reused (laid out for another image or remapped since, more pages written
    /// than it is worth resetting, no `PAGEMAP_SCAN`): drop it, as without reuse.
    pub(crate) fn reset_used_memory(&self, memory: &mut crate::memory::GuestMemory) -> bool {
        let Some(image) = self.shared.get() else { return false };
        if memory.laid_out_for() != Some(self.id) {
            return false;
        }
        let limit = image.placement.reset_limit();
        let (windows, bytes) = (&image.placement.huge_windows, image.view.bytes());
        matches!(memory.reset_written_pages(windows, bytes, image.start, limit), Ok(true))
    }

    /// The snapshot's page contents, readable from any thread (for the working-set recorder,
    /// which fills pages on demand): the sealed copy, made now if it is not yet.
    pub(crate) fn shared_pages(&self) -> Result<SharedPages, SnapshotError> {
        let image = self.shared_copy()?;
        Ok(SharedPages { view: image.view.clone(), start: image.start })
    }

    /// The sealed in-memory copy of the snapshot's data (see `shared`), made on first use.
    fn shared_copy(&self) -> Result<&SharedImage, SnapshotError> {
        if let Some(image) = self.shared.get() {
            return Ok(image);
        }
        let io = |source| SnapshotError::SharedCopy { path: self.path.clone(), source };
        let span = |s: &fmt::LoadSegment| (s.guest_addr, s.guest_addr + mm::page_up(s.file_size).unwrap_or(0));
        // 2 MiB-aligned at both ends, so the copy's huge pages line up with guest windows.
        let start =
            self.snapshot.segments.iter().map(|s| span(s).0).min().unwrap_or(USER_START) / LARGE_PAGE * LARGE_PAGE;
        let end = self.snapshot.segments.iter().map(|s| span(s).1).max().unwrap_or(start).next_multiple_of(LARGE_PAGE);
        // In the copy, guest address `a` is at offset `a - start`.
        let (copy, huge) =
            crate::memory::sealed_copy(&self.file, end - start, &self.data, |addr| addr - start).map_err(io)?;
        // Written to since it was opened and verified? Then the copy may hold anything.
        if crate::verified::Stamp::of_file(&self.file)
            .map_err(|source| SnapshotError::Open { path: self.path.clone(), source })?
            != self.stamp
        {
            return Err(SnapshotError::Changed { path: self.path.clone() });
        }
        let view = std::sync::Arc::new(crate::memory::SealedView::new(&copy).map_err(io)?);
        // Two pool threads may both have made one; either will do.
        let mut placement = match &self.working_set {
            Some(recorded) => {
                crate::working_set::place(recorded, crate::working_set::HugeRule::for_this_host(), huge, |w| {
                    crate::page_tables::maps_window_whole(&self.space, w)
                })
            }
            // No working set (a snapshot from before it was recorded): every window holding
            // data goes huge, as the pool always did before.
            None => crate::working_set::place_by_data(self.data.iter().map(|&(addr, _, len)| (addr, len))),
        };
        // A huge window the program's tables map 4 KiB at a time (mixed protections: the
        // vDSO's window, say) is mapped by KVM 4 KiB at a time too, however large the host
        // page: one touch would map one page, and the call would fault on the rest (44 faults
        // per hellowithdata call). So touch each of its working-set pages; KVM's prefetch maps
        // the rest of each 8-page group from the populated huge page, so that costs about one
        // fault per group.
        if let Some(recorded) = &self.working_set {
            let split: Vec<u64> = placement
                .huge_windows
                .iter()
                .copied()
                .filter(|&w| !crate::page_tables::maps_window_whole(&self.space, w))
                .collect();
            for r in recorded {
                for i in 0..u64::from(r.pages) {
                    let page = r.start + i * PAGE_SIZE;
                    if split.contains(&(page / LARGE_PAGE * LARGE_PAGE)) {
                        placement.prefault.push(page | if r.written { PREFAULT_WRITE } else { 0 });
                    }
                }
            }
        }
        // Under shadow paging, let KVM's prefetch map each touched 8-page group with one fault
        // (`working_set::prefetch_groups`; hellowithdata-py: 119 faults per VM → 57, at
        // ≈600 KiB more private memory). KVM's TDP MMU (EPT/NPT) prefetches nothing, so there
        // it would only cost memory. SNAPCALL_PREFETCH_GROUPS=1 or 0 forces it on or off, for measuring.
        let prefetch = match std::env::var("SNAPCALL_PREFETCH_GROUPS").as_deref() {
            Ok("1") => true,
            Ok("0") => false,
            _ => crate::kvm::shadow_paging(),
        };
        if let Some(recorded) = self.working_set.as_ref().filter(|_| prefetch) {
            let groups = crate::working_set::prefetch_groups(recorded, &placement, huge, |page| {
                crate::page_tables::page_access(&self.space, page) != 0
            });
            // Written pages first (see `Placement::populate`).
            placement.populate.splice(0..0, groups);
        }
        // The loop touches pages at CPL3 through the program's page tables: it reads only
        // pages the program may read and writes back only where it may write (pages calls
        // used after mapping them, absent at the snapshot, are left to the call).
        placement.prefault.retain_mut(|entry| {
            let access = crate::page_tables::page_access(&self.space, *entry);
            if access & mm::PROT_WRITE == 0 {
                *entry &= !PREFAULT_WRITE;
            }
            access != 0
        });
        // The output ring's header and first page, which every call that writes output
        // writes (from CPL3: the fast-write stub), so they are the monitor's own working set.
        // Writing a byte back leaves them as the monitor area set them.
        placement.prefault.extend([OUTPUT_HEADER | PREFAULT_WRITE, OUTPUT_RING | PREFAULT_WRITE]);
        placement.prefault.sort_unstable();
        placement.prefault.dedup();
        Ok(self.shared.get_or_init(|| SharedImage { file: copy, view, start, len: end - start, huge, placement }))
    }

    /// Restores into `vm` (unless the pool already did: a [`FreshVm::Prepared`] of this
    /// image) and completes the pending stdin read with `request`.
    pub(crate) fn restore(&self, spec: &ProcessSpec, vm: FreshVm, request: &[u8]) -> Result<ReadyCall, SnapshotError> {
        let vm = match vm {
            FreshVm::Prepared(vm) => vm,
            // A VM made on the call's path gets the pool's preparation, from the sealed copy
            // (made now if this is the first): guest memory then never maps the snapshot file
            // itself, so truncating the file while serving cannot SIGBUS the monitor
            // (serve_faults.rs), and populating and pre-faulting the working set in bulk costs
            // less than faulting it in page by page during the call (wrk, hellowithdata-py, 8
            // connections: 131/127 calls/s against 113/112, CPU per call 8.1/8.5 ms against
            // 9.1/9.4; echo-c within noise).
            FreshVm::Empty(vm) => self.prepare(vm, RestoreMemory::Ahead)?,
        };
        self.finish(spec, vm, request)
    }

    /// Completes a VM this image was restored into: the process, the pending stdin read with
    /// `request`, the clock.
    pub(crate) fn finish(
        &self,
        spec: &ProcessSpec,
        vm: PreparedVm,
        request: &[u8],
    ) -> Result<ReadyCall, SnapshotError> {
        debug_assert_eq!(vm.image, self.id, "a VM restored ahead is finished by its own image");
        let mut vm = vm.machine;
        // The process: address space, files, the request on stdin.
        let space = self.space.clone();
        // The program may have changed directory before its first read.
        let cwd = self.snapshot.state.cwd.as_deref().unwrap_or(&spec.cwd);
        let mut process = Process::for_call(space, spec, cwd);
        process.auxv = self.snapshot.state.auxv.clone();
        if !self.overlay.is_empty() {
            process.overlay =
                Overlay::from_entries(&self.overlay, &process.budget).map_err(|e| SnapshotError::Overlay(e.0))?;
        }
        process.page_tables = Some(self.tables.tables.clone());
        process.fs_base = self.snapshot.state.regs.fs_base;
        process_state::restore_signal_handlers(&mut process, &self.snapshot.state.km_notes);
        for f in &self.snapshot.state.files {
            process_state::reopen(&mut process, f)?;
        }
        process.stdin.extend_from_slice(request);
        // Complete the pending read as the syscall layer would have, and return its result.
        let p = self.pending;
        let result = match syscalls::handle(&mut process, &mut vm.memory, p.nr, p.args) {
            Outcome::Return(v) => v,
            other => {
                return Err(SnapshotError::Mismatch {
                    path: self.path.clone(),
                    what: format!("pending read gave {other:?}"),
                })
            }
        };
        let r = &self.snapshot.state.regs;
        write_user_return(&mut vm.memory, r.rip, r.rsp, r.eflags, result)?;
        // The clock: the snapshot may be minutes old and this VM's TSC offset its own.
        if let Some(base) = self.vdso_base {
            crate::vdso::refresh_with_offset(vm.tsc_offset, &mut vm.memory, GuestAddr::new(base))?;
        }
        Ok(ReadyCall {
            vm,
            process,
            timeout: spec.timeout,
            timings: PhaseTimings::default(),
            stats: CallStats { restored: true, ..Default::default() },
        })
    }
}

/// The snapshot's data in a sealed memfd, laid out by guest address: offset 0 is guest
/// address `start`, and the `len` bytes cover every segment (gaps between them are holes,
/// which read as zeros), so one mapping puts the whole snapshot into a VM.
pub(crate) struct SharedImage {
    file: File,
    /// The copy's bytes, for what the pool copies rather than maps (`SealedView`).
    view: std::sync::Arc<crate::memory::SealedView>,
    start: u64,
    len: u64,
    /// Whether the copy is held in 2 MiB pages (shmem huge pages allowed on this host).
    huge: bool,
    /// Where the pool puts the working set: which 2 MiB windows become private huge pages,
    /// which 4 KiB pages it populates, what its guest loop touches (`Machine::prefault`).
    placement: crate::working_set::Placement,
}

/// The sealed copy's pages by guest address, readable from any thread.
pub(crate) struct SharedPages {
    view: std::sync::Arc<crate::memory::SealedView>,
    start: u64,
}

impl SharedPages {
    /// Writes the snapshot's bytes for the page at `guest_addr` into `page`, which is left as
    /// it is (zeros) outside the copy's span.
    pub(crate) fn read(&self, guest_addr: u64, page: &mut [u8]) {
        let bytes = guest_addr
            .checked_sub(self.start)
            .and_then(|at| usize::try_from(at).ok())
            .and_then(|at| self.view.bytes().get(at..at.checked_add(page.len())?));
        if let Some(bytes) = bytes {
            page.copy_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VM the pool makes for a restore skips the warm-up run: the pre-fault run is its
    /// vCPU's first, and a restore without one (copy-on-write, no pre-fault table) warms the
    /// vCPU up itself. Either way the call answers as from a warmed VM.
    #[test]
    fn a_restore_into_a_vm_that_never_ran_warms_it_and_answers() {
        use crate::function::{Function, StartMode};
        use crate::vm::EmptyVm;
        let dir = crate::function::private_bundle_copy("echo-c", "unwarmed");
        Function::load(&dir, StartMode::Cold).unwrap().take_snapshot(&dir.join(SNAPSHOT_FILE)).unwrap();
        let function = Function::load(&dir, StartMode::Snapshot).unwrap();
        let image = function.snapshot().expect("a snapshot").clone();
        let expected = {
            let warmed = image.prepare(EmptyVm::create(image.memory_size()).unwrap(), RestoreMemory::Ahead).unwrap();
            let (out, _) = image.finish(&function.spec, warmed, b"same").unwrap().run().into_parts();
            out.expect("a call from a warmed VM").stdout
        };
        assert!(!expected.is_empty());
        for memory in [RestoreMemory::Ahead, RestoreMemory::CopyOnWrite] {
            let vm = EmptyVm::create_unwarmed(image.memory_size()).unwrap();
            assert!(!vm.machine.warm);
            let prepared = image.prepare(vm, memory).unwrap();
            assert!(prepared.machine.warm, "{memory:?}: the restore left the vCPU's first run to the call");
            let (out, _) = image.finish(&function.spec, prepared, b"same").unwrap().run().into_parts();
            assert_eq!(out.expect("a call from an unwarmed VM").stdout, expected, "{memory:?}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
