//! The plain data types of a snapshot: what the vmm saves and restores.

use serde::Serialize;

use crate::km::KmNote;

/// General-purpose registers, in Linux `user_regs_struct` order (the `pr_reg` array of
/// `NT_PRSTATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// The syscall number at syscall entry (the kernel's `orig_rax`).
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl Registers {
    /// Number of registers in `user_regs_struct`.
    pub const COUNT: usize = 27;

    /// The registers as the `pr_reg` array.
    pub fn to_array(&self) -> [u64; Self::COUNT] {
        [
            self.r15,
            self.r14,
            self.r13,
            self.r12,
            self.rbp,
            self.rbx,
            self.r11,
            self.r10,
            self.r9,
            self.r8,
            self.rax,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.orig_rax,
            self.rip,
            self.cs,
            self.eflags,
            self.rsp,
            self.ss,
            self.fs_base,
            self.gs_base,
            self.ds,
            self.es,
            self.fs,
            self.gs,
        ]
    }

    /// Registers from a `pr_reg` array.
    pub fn from_array(a: [u64; Self::COUNT]) -> Self {
        let [r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs] =
            a;
        Self {
            r15,
            r14,
            r13,
            r12,
            rbp,
            rbx,
            r11,
            r10,
            r9,
            r8,
            rax,
            rcx,
            rdx,
            rsi,
            rdi,
            orig_rax,
            rip,
            cs,
            eflags,
            rsp,
            ss,
            fs_base,
            gs_base,
            ds,
            es,
            fs,
            gs,
        }
    }
}

/// One x86 segment register as KVM describes it (hidden part included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    /// Descriptor type field (4 bits).
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    /// Descriptor type: 1 = code/data, 0 = system.
    pub s: u8,
    /// 64-bit code segment.
    pub l: u8,
    /// Granularity.
    pub g: u8,
    pub avl: u8,
}

/// GDT or IDT register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DescriptorTable {
    /// Linear base address.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

/// Segment, descriptor-table, control registers and EFER/APIC base (KVM's `kvm_sregs`
/// without the interrupt bitmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct SpecialRegisters {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: DescriptorTable,
    pub idt: DescriptorTable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// The system call the guest was inside when the snapshot was taken: the vmm completes it
/// after restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PendingSyscall {
    /// Syscall number (`rax` at entry).
    pub nr: u64,
    /// Arguments: rdi, rsi, rdx, r10, r8, r9.
    pub args: [u64; 6],
}

/// What a region of the monitor's memory map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// The program image (ELF PT_LOAD segments).
    Image,
    /// The brk heap.
    Brk,
    /// An mmap'ed region.
    Mmap,
    /// The stack.
    Stack,
    /// The vDSO.
    Vdso,
    /// Anything else.
    Other,
    /// A mapping of snapcall's entropy device, refilled with fresh randomness at restore.
    Entropy,
}

impl RegionKind {
    /// The on-disk code of this kind.
    pub fn code(self) -> u32 {
        match self {
            RegionKind::Image => 0,
            RegionKind::Brk => 1,
            RegionKind::Mmap => 2,
            RegionKind::Stack => 3,
            RegionKind::Vdso => 4,
            RegionKind::Other => 5,
            RegionKind::Entropy => 6,
        }
    }

    /// The kind for an on-disk code, `None` if unknown.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => RegionKind::Image,
            1 => RegionKind::Brk,
            2 => RegionKind::Mmap,
            3 => RegionKind::Stack,
            4 => RegionKind::Vdso,
            5 => RegionKind::Other,
            6 => RegionKind::Entropy,
            _ => return None,
        })
    }
}

/// One entry of the monitor's guest memory map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    /// Guest start address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// `PROT_READ | PROT_WRITE | PROT_EXEC` bits.
    pub prot: u32,
    /// What the region holds.
    pub kind: RegionKind,
    /// The file backing it, if any (path inside the bundle's rootfs).
    pub path: Option<String>,
}

/// An open file descriptor of the guest (a plain file, written as a KM `NT_KM_FILE` note
/// with `how = KM_FILE_HOW_OPEN`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct OpenFile {
    /// Guest fd number.
    pub fd: i32,
    /// `open(2)` flags.
    pub flags: i32,
    /// File offset (`lseek` position; `u64::MAX` when not seekable).
    pub offset: u64,
    /// `st_mode` (file type and permission bits), as KM records it.
    pub mode: u32,
    /// Path the file was opened with.
    pub path: String,
}

/// Which bundle and build of the format produced a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Identity {
    /// Format version, [`FORMAT_VERSION`](crate::FORMAT_VERSION) when written by this crate.
    pub format_version: u32,
    /// SHA-256 (or any 32-byte digest) of the bundle's content, chosen by the caller.
    #[serde(serialize_with = "crate::inspect::ser_hex")]
    pub bundle_hash: [u8; 32],
    /// Guest memory size the snapshot was taken with.
    pub memory_size: u64,
    /// Program path inside the rootfs.
    pub program_path: String,
}

impl Identity {
    /// An identity with the current [`FORMAT_VERSION`](crate::FORMAT_VERSION).
    pub fn new(bundle_hash: [u8; 32], memory_size: u64, program_path: impl Into<String>) -> Self {
        Self { format_version: crate::FORMAT_VERSION, bundle_hash, memory_size, program_path: program_path.into() }
    }
}

/// The guest program's ELF headers and path (KM's `NT_KM_GUESTV` note).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct GuestInfo {
    /// The program's 64-byte ELF header (empty when unknown; then no note is written).
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub ehdr: Vec<u8>,
    /// The program's program header table, `e_phnum * 56` bytes.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub phdrs: Vec<u8>,
    /// Path of the program.
    pub path: String,
    /// Difference between where the program was loaded and its link address (static-pie).
    pub load_adjust: u64,
}

/// A note this crate does not interpret, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RawNote {
    /// Owner name without trailing NULs.
    pub owner: String,
    /// `n_type`.
    pub note_type: u32,
    /// The descriptor bytes.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub desc: Vec<u8>,
}

/// One entry of the program's in-VM filesystem layer (SNAPCALL `NT_SNAPCALL_OVERLAY`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayEntry {
    /// Absolute path as the program sees it.
    pub path: String,
    /// File, directory, symlink or whiteout.
    pub kind: OverlayKind,
    /// Permission bits.
    pub mode: u32,
    /// Last modification: seconds since the epoch.
    pub mtime_secs: i64,
    /// Last modification: nanoseconds within the second.
    pub mtime_nanos: i64,
    /// A file's contents or a symlink's target; empty otherwise.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub data: Vec<u8>,
}

/// What an [`OverlayEntry`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OverlayKind {
    /// A regular file (contents in `data`).
    File,
    /// A directory; an opaque one hides the rootfs below it.
    Dir {
        /// Whether the rootfs's entries at and below its path are hidden.
        opaque: bool,
    },
    /// A symbolic link (target in `data`).
    Symlink,
    /// A removed rootfs entry.
    Whiteout,
}

/// A run of 4 KiB guest pages that restored calls touch: read only, or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WorkingSetRange {
    /// First page's guest address (4 KiB aligned).
    pub start: u64,
    /// Number of 4 KiB pages.
    pub pages: u32,
    /// Whether calls write these pages (else they only read them).
    pub written: bool,
}

/// Everything in a snapshot except guest memory.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SnapshotState {
    /// General registers (first `NT_PRSTATUS`).
    pub regs: Registers,
    /// Special registers (SNAPCALL `NT_SNAPCALL_SREGS`); `None` in a KM snapshot.
    pub sregs: Option<SpecialRegisters>,
    /// MSRs as (index, value) (SNAPCALL `NT_SNAPCALL_MSRS`).
    pub msrs: Vec<(u32, u64)>,
    /// Extended control registers as (index, value) (SNAPCALL `NT_SNAPCALL_XCRS`).
    pub xcrs: Vec<(u32, u64)>,
    /// The XSAVE area (SNAPCALL `NT_SNAPCALL_XSAVE`, else the FP data of KM's first
    /// `NT_KM_VCPU` when that is in KVM XSAVE format).
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub xsave: Vec<u8>,
    /// Auxiliary vector as (type, value) pairs (`NT_AUXV`).
    pub auxv: Vec<(u64, u64)>,
    /// Current program break (`NT_KM_MONITOR.brk`).
    pub brk: u64,
    /// Lowest address of the top-down mmap area (`NT_KM_MONITOR.tbrk`).
    pub mmap_top: u64,
    /// The program's headers and path (`NT_KM_GUESTV` / `NT_KM_GUEST`).
    pub guest: GuestInfo,
    /// Open plain files (`NT_KM_FILE` with `how = OPEN`, no pipe data).
    pub files: Vec<OpenFile>,
    /// The syscall in progress (SNAPCALL `NT_SNAPCALL_PENDING_SYSCALL`).
    pub pending_syscall: Option<PendingSyscall>,
    /// The monitor's memory map (SNAPCALL `NT_SNAPCALL_REGIONS`).
    pub regions: Vec<Region>,
    /// The working directory (SNAPCALL `NT_SNAPCALL_PROCESS`); `None` when not recorded
    /// (a KM snapshot, or one written before the note existed): the bundle's cwd applies.
    pub cwd: Option<String>,
    /// The pages restored calls touch (SNAPCALL `NT_SNAPCALL_WORKSET`), recorded by running
    /// warm-up calls after capture; `None` when not recorded (a KM snapshot, or an older one).
    pub working_set: Option<Vec<WorkingSetRange>>,
    /// What the program wrote to its in-VM filesystem before the snapshot point (SNAPCALL
    /// `NT_SNAPCALL_OVERLAY`); `None` when it wrote nothing (or the snapshot is older).
    pub overlay: Option<Vec<OverlayEntry>>,
    /// Identity and format version (SNAPCALL `NT_SNAPCALL_IDENTITY`); `None` in a KM snapshot.
    pub identity: Option<Identity>,
    /// KM notes not folded into the fields above (further vCPUs, sockets, pipes, signal
    /// handlers, ...), in file order. Written back verbatim.
    pub km_notes: Vec<KmNote>,
    /// Notes nobody here understands, kept and written back verbatim.
    pub unknown_notes: Vec<RawNote>,
}

/// One guest memory range handed to [`write_snapshot`](crate::write_snapshot).
#[derive(Debug, Clone, Copy)]
pub struct MemorySegment<'a> {
    /// Guest physical (= virtual) address, 4 KiB aligned.
    pub guest_addr: u64,
    /// The bytes; length a multiple of 4 KiB. All-zero pages become file holes.
    pub data: &'a [u8],
    /// `PF_R | PF_W | PF_X`.
    pub prot: u32,
}

/// One PT_LOAD of a snapshot file: the vmm maps `[file_offset, file_offset + file_size)` of
/// the file `MAP_PRIVATE` at `guest_addr`; the rest up to `mem_size` is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadSegment {
    /// Guest address, 4 KiB aligned.
    pub guest_addr: u64,
    /// Size in guest memory.
    pub mem_size: u64,
    /// File offset, 4 KiB aligned.
    pub file_offset: u64,
    /// Bytes present in the file (`<= mem_size`).
    pub file_size: u64,
    /// `PF_R | PF_W | PF_X`.
    pub prot: u32,
}

/// Which kind of note a [`NoteEntry`] is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // see KmNote
pub enum NoteKind {
    /// A KM (or CORE) note, fully parsed.
    Km(KmNote),
    /// One of our own SNAPCALL notes (its content is in [`SnapshotState`]).
    Snapcall,
    /// Not understood; kept in [`SnapshotState::unknown_notes`].
    Unknown,
}

/// One note of the PT_NOTE segment as found in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteEntry {
    /// Owner name (`"CORE"`, `"KMSP"`, `"SNAPCALL"`, ...).
    pub owner: String,
    /// `n_type`.
    pub note_type: u32,
    /// Symbolic name of the type, `"?"` if unknown.
    pub type_name: &'static str,
    /// File offset of the note header.
    pub offset: u64,
    /// File bytes of the whole record (header, name, descriptor, padding).
    pub record_len: u64,
    /// `n_descsz`.
    pub desc_len: u64,
    /// The parsed content.
    pub kind: NoteKind,
}

/// A parsed snapshot file: headers and notes, not memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Everything but memory.
    pub state: SnapshotState,
    /// The PT_LOADs, in program header order.
    pub segments: Vec<LoadSegment>,
    /// Length of the file in bytes.
    pub file_len: u64,
    /// Every note in file order (including those folded into `state`).
    pub notes: Vec<NoteEntry>,
    /// SHA-256 of the payload recorded in the identity note, if any.
    #[serde(serialize_with = "crate::inspect::ser_opt_hex")]
    pub payload_hash: Option<[u8; 32]>,
}

/// Caps applied by the reader to everything it takes from the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Every PT_LOAD must lie in `[0, max_memory)` of guest memory.
    pub max_memory: u64,
    /// Largest PT_NOTE segment accepted.
    pub max_note_bytes: u64,
    /// Largest number of program headers accepted.
    pub max_segments: u64,
    /// Largest number of notes accepted.
    pub max_notes: usize,
    /// Largest XSAVE / FP area accepted.
    pub max_xsave_bytes: u64,
    /// Longest path or label accepted (bytes, without the NUL).
    pub max_string_bytes: u64,
    /// Longest list (MSRs, regions, auxv pairs, dup groups, events ...) accepted.
    pub max_list_entries: u64,
    /// Largest pipe/socket/address payload inside a KM note.
    pub max_data_bytes: u64,
}

impl Limits {
    /// Limits for a snapcall guest of `memory_size` bytes.
    pub fn for_memory(memory_size: u64) -> Self {
        Self { max_memory: memory_size, ..Self::default() }
    }
}

impl Default for Limits {
    /// Permissive limits fit for inspecting any snapshot, KM's included: guest memory is
    /// the whole 47-bit user address space.
    fn default() -> Self {
        Self {
            max_memory: 1 << 47,
            max_note_bytes: 64 << 20,
            max_segments: 65_534,
            max_notes: 65_536,
            max_xsave_bytes: 64 << 10,
            max_string_bytes: 4096,
            max_list_entries: 65_536,
            max_data_bytes: 16 << 20,
        }
    }
}
