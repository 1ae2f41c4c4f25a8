//! Kontain KM's snapshot notes (owner `"KMSP"`) and the Linux `"CORE"` notes KM writes, in
//! exactly KM's layout (`km/km_coredump.h` at kontainapp/km 74886fd4: C structs with natural
//! alignment, little-endian).
//!
//! Each note has a typed value in [`KmNote`]; [`KmNote::parse`] reads a descriptor and
//! [`KmNote::encode`] writes one back byte for byte as KM would.

use serde::Serialize;

use crate::bytes::{Cursor, Out};

mod codec;
use crate::error::{FormatError, NoteAt};
use crate::state::{Limits, Registers};
use codec::*;

/// Owner name of Linux core notes.
pub const CORE_OWNER: &str = "CORE";
/// Owner name of KM's notes ("KM Snapshot Protocol").
pub const KM_OWNER: &str = "KMSP";

/// `NT_PRSTATUS`: `struct elf_prstatus`.
pub const NT_PRSTATUS: u32 = 1;
/// `NT_AUXV`: the auxiliary vector.
pub const NT_AUXV: u32 = 6;
/// `NT_FILE`: file-backed mappings.
pub const NT_FILE: u32 = 0x4649_4c45;
/// KM monitor state (`km_nt_monitor_t`), "KMMN".
pub const NT_KM_MONITOR: u32 = 0x4b4d_4d4e;
/// KM per-vCPU state (`km_nt_vcpu_t` + FP data), "KMPR".
pub const NT_KM_VCPU: u32 = 0x4b4d_5052;
/// KM guest program (`km_nt_guest_t`), "KMGT".
pub const NT_KM_GUEST: u32 = 0x4b4d_4754;
/// KM dynamic linker (`km_nt_guest_t`), "KMDL".
pub const NT_KM_DYNLINKER: u32 = 0x4b4d_444c;
/// KM guest program, versioned (`km_nt_guestv_t`), "KMGV".
pub const NT_KM_GUESTV: u32 = 0x4b4d_4756;
/// KM dynamic linker, versioned (`km_nt_guestv_t`), "KMDV".
pub const NT_KM_DYNLINKERV: u32 = 0x4b4d_4456;
/// KM dup'ed fd groups (`km_nt_dup_t`), "KMDU".
pub const NT_KM_DUP_DATA: u32 = 0x4b4d_4455;
/// KM open file (`km_nt_file_t` + name + pipe data), "KMFD".
pub const NT_KM_FILE: u32 = 0x4b4d_4644;
/// KM eventfd (`km_nt_file_t`), "KMEV".
pub const NT_KM_EVENTFD: u32 = 0x4b4d_4556;
/// KM socket (`km_nt_socket_t` + address + data), "KMSK".
pub const NT_KM_SOCKET: u32 = 0x4b4d_534b;
/// KM epoll fd (`km_nt_epollfd_t` + events), "KMEP".
pub const NT_KM_EPOLLFD: u32 = 0x4b4d_4550;
/// KM signal handler (`km_nt_sighand_t`), "KMSH".
pub const NT_KM_SIGHAND: u32 = 0x4b4d_5348;
/// KM AIO contexts (`km_nt_iocontexts_t`), "KMCX".
pub const NT_KM_IOCONTEXTS: u32 = 0x4b4d_4358;

/// `km_nt_monitor_t.monitor_type` for KVM.
pub const KM_MONITOR_TYPE_KVM: u32 = 0;
/// `km_nt_monitor_t.monitor_type` for KKM.
pub const KM_MONITOR_TYPE_KKM: u32 = 1;
/// `km_nt_vcpu_t.fp_format`: no FP data.
pub const KM_FPDATA_NONE: u32 = 0;
/// `km_nt_vcpu_t.fp_format`: `struct kvm_fpu` (416 bytes).
pub const KM_FPDATA_KVM_FPU: u32 = 1;
/// `km_nt_vcpu_t.fp_format`: `struct kvm_xsave` (4096 bytes).
pub const KM_FPDATA_KVM_XSAVE: u32 = 2;
/// `km_nt_vcpu_t.fp_format`: KKM xsave frame.
pub const KM_FPDATA_KKM_XSAVE: u32 = 3;
/// `km_nt_guestv_t.version` KM writes.
pub const KM_GUESTV_VERSION: u32 = 1;
/// Size of `struct kvm_xsave`.
pub const KVM_XSAVE_SIZE: usize = 4096;

/// `km_file_how_t`: regular `open(2)`.
pub const KM_FILE_HOW_OPEN: u32 = 0;
/// `km_file_how_t`: read end of a pipe.
pub const KM_FILE_HOW_PIPE_0: u32 = 1;
/// `km_file_how_t`: write end of a pipe.
pub const KM_FILE_HOW_PIPE_1: u32 = 2;

/// `sizeof(struct elf_prstatus)` on x86-64.
pub const PRSTATUS_SIZE: usize = 336;

/// `struct elf_prstatus` (Linux x86-64, 336 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct PrStatus {
    pub si_signo: i32,
    pub si_code: i32,
    pub si_errno: i32,
    pub cursig: i16,
    pub sigpend: u64,
    pub sighold: u64,
    /// KM stores the vCPU's thread id (vcpu_id + 1) here.
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    pub sid: i32,
    /// (tv_sec, tv_usec)
    pub utime: (i64, i64),
    pub stime: (i64, i64),
    pub cutime: (i64, i64),
    pub cstime: (i64, i64),
    pub regs: Registers,
    pub fpvalid: i32,
}

/// One `NT_FILE` mapping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MappedFile {
    /// Start address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// Offset in the file, in units of [`MappedFiles::page_size`].
    pub file_ofs: u64,
    /// File name.
    pub path: String,
}

/// `NT_FILE`: count, page size, `count` (start, end, offset) triples, then `count` names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MappedFiles {
    /// Unit of `file_ofs`.
    pub page_size: u64,
    /// The mappings.
    pub files: Vec<MappedFile>,
}

/// `km_nt_monitor_t` followed by the label and description strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmMonitor {
    /// [`KM_MONITOR_TYPE_KVM`] or [`KM_MONITOR_TYPE_KKM`].
    pub monitor_type: u32,
    /// Program break.
    pub brk: u64,
    /// Bottom of the top-down mmap area.
    pub tbrk: u64,
    /// Snapshot label (`label_length` 0 when `None`).
    pub label: Option<String>,
    /// Snapshot description.
    pub description: Option<String>,
}

/// `km_nt_vcpu_t` followed by floating point data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct KmVcpu {
    pub vcpu_id: u32,
    pub stack_top: u64,
    /// Guest thread pointer (the pthread, = fs base).
    pub guest_thr: u64,
    pub set_child_tid: u64,
    pub clear_child_tid: u64,
    pub sigaltstack_sp: u64,
    pub sigaltstack_flags: u32,
    pub sigaltstack_size: u64,
    pub mapself_base: u64,
    pub mapself_size: u64,
    /// Guest address of this vCPU's KM hypercall argument block.
    pub hcarg: u64,
    /// Hypercall in progress.
    pub hypercall: u16,
    pub restart: u16,
    /// One of the `KM_FPDATA_*` values.
    pub fp_format: u32,
    /// FP state in `fp_format`.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub fp_data: Vec<u8>,
}

/// `km_nt_guest_t` / `km_nt_guestv_t` followed by the program headers and file name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmPayload {
    /// `Some(version)` for the versioned notes (`NT_KM_GUESTV`, `NT_KM_DYNLINKERV`).
    pub version: Option<u32>,
    /// Load bias.
    pub load_adjust: u64,
    /// Guest address of the dlopen list (versioned notes only; 0 otherwise).
    pub dlopen: u64,
    /// The 64-byte ELF header.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub ehdr: Vec<u8>,
    /// `ehdr.e_phnum` program headers.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub phdrs: Vec<u8>,
    /// File name.
    pub path: String,
}

/// `km_nt_dup_t`: groups of fds that share one open file description.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmDupData {
    /// The groups.
    pub groups: Vec<Vec<u32>>,
}

/// `km_nt_file_t` followed by the file name and any data buffered in a pipe.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmFile {
    /// Guest fd.
    pub fd: u32,
    /// `km_file_how_t` (`KM_FILE_HOW_*`).
    pub how: u32,
    /// `open(2)` flags.
    pub flags: u32,
    /// `st_mode`.
    pub mode: u32,
    /// Pipe buffer size (read end of a pipe).
    pub pipesize: u32,
    /// lseek position for files and directories; the other fd for pipes.
    pub data: u64,
    /// File name.
    pub path: String,
    /// Bytes that were buffered in the pipe.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub pipe_data: Vec<u8>,
}

/// An eventfd: a `km_nt_file_t` with `data` = the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KmEventFd {
    /// Guest fd.
    pub fd: u32,
    /// Flags.
    pub flags: u32,
    /// eventfd counter.
    pub count: u64,
}

/// `km_nt_socket_t` followed by the protocol address and buffered data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct KmSocket {
    pub fd: u32,
    /// 0 socketpair, 1 socket, 2 accept (KM's `KM_NT_SKHOW_*`; KM actually stores its
    /// `km_file_how_t` here).
    pub how: u32,
    /// `KM_NT_SKSTATE_*`.
    pub state: u32,
    pub backlog: u32,
    pub domain: u32,
    pub type_: u32,
    pub protocol: u32,
    /// The other fd of a socketpair.
    pub other: u32,
    /// The bound/peer address.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub addr: Vec<u8>,
    /// Data queued on the read side of a socketpair.
    #[serde(serialize_with = "crate::inspect::ser_bytes")]
    pub data: Vec<u8>,
}

/// `km_nt_event_t`: one fd watched by an epoll fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KmEpollEvent {
    /// Watched fd.
    pub fd: u32,
    /// `epoll_event.events`.
    pub events: u32,
    /// `epoll_event.data`.
    pub data: u64,
}

/// `km_nt_epollfd_t` followed by its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmEpollFd {
    /// The epoll fd.
    pub fd: u32,
    /// Its flags.
    pub flags: u32,
    /// Watched fds.
    pub events: Vec<KmEpollEvent>,
}

/// `km_nt_sighand_t`: one installed (non-`SIG_DFL`) signal action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[allow(missing_docs)]
pub struct KmSigHand {
    pub signo: u32,
    pub handler: u64,
    pub flags: u32,
    pub mask: u32,
    pub restorer: u64,
}

/// `km_nt_iocontext_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct KmIoContext {
    /// Max events of the context.
    pub nr_events: u32,
    /// Context id as the payload knows it.
    pub context: u64,
}

/// `km_nt_iocontexts_t`: AIO contexts created with `io_setup`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct KmIoContexts {
    /// Next payload context id to hand out.
    pub next_context: u64,
    /// The contexts.
    pub contexts: Vec<KmIoContext>,
}

/// A KM or CORE note, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "note", content = "value")]
// Notes are parsed once per inspect/restore; boxing PrStatus would only complicate matching.
#[allow(clippy::large_enum_variant)]
pub enum KmNote {
    /// `CORE` `NT_PRSTATUS`.
    PrStatus(PrStatus),
    /// `CORE` `NT_FILE`.
    MappedFiles(MappedFiles),
    /// `CORE` `NT_AUXV`.
    Auxv(Vec<(u64, u64)>),
    /// `NT_KM_MONITOR`.
    Monitor(KmMonitor),
    /// `NT_KM_VCPU`.
    Vcpu(KmVcpu),
    /// `NT_KM_GUEST` (version `None`) or `NT_KM_GUESTV`.
    Guest(KmPayload),
    /// `NT_KM_DYNLINKER` (version `None`) or `NT_KM_DYNLINKERV`.
    Dynlinker(KmPayload),
    /// `NT_KM_DUP_DATA`.
    DupData(KmDupData),
    /// `NT_KM_FILE`.
    File(KmFile),
    /// `NT_KM_EVENTFD`.
    EventFd(KmEventFd),
    /// `NT_KM_SOCKET`.
    Socket(KmSocket),
    /// `NT_KM_EPOLLFD`.
    EpollFd(KmEpollFd),
    /// `NT_KM_SIGHAND`.
    SigHand(KmSigHand),
    /// `NT_KM_IOCONTEXTS`.
    IoContexts(KmIoContexts),
}

/// Symbolic name of a CORE/KMSP note type, `None` if it is not one.
pub fn note_type_name(owner: &str, note_type: u32) -> Option<&'static str> {
    Some(match (owner, note_type) {
        (CORE_OWNER, NT_PRSTATUS) => "NT_PRSTATUS",
        (CORE_OWNER, NT_AUXV) => "NT_AUXV",
        (CORE_OWNER, NT_FILE) => "NT_FILE",
        (KM_OWNER, NT_KM_MONITOR) => "NT_KM_MONITOR",
        (KM_OWNER, NT_KM_VCPU) => "NT_KM_VCPU",
        (KM_OWNER, NT_KM_GUEST) => "NT_KM_GUEST",
        (KM_OWNER, NT_KM_GUESTV) => "NT_KM_GUESTV",
        (KM_OWNER, NT_KM_DYNLINKER) => "NT_KM_DYNLINKER",
        (KM_OWNER, NT_KM_DYNLINKERV) => "NT_KM_DYNLINKERV",
        (KM_OWNER, NT_KM_DUP_DATA) => "NT_KM_DUP_DATA",
        (KM_OWNER, NT_KM_FILE) => "NT_KM_FILE",
        (KM_OWNER, NT_KM_EVENTFD) => "NT_KM_EVENTFD",
        (KM_OWNER, NT_KM_SOCKET) => "NT_KM_SOCKET",
        (KM_OWNER, NT_KM_EPOLLFD) => "NT_KM_EPOLLFD",
        (KM_OWNER, NT_KM_SIGHAND) => "NT_KM_SIGHAND",
        (KM_OWNER, NT_KM_IOCONTEXTS) => "NT_KM_IOCONTEXTS",
        _ => return None,
    })
}

impl KmNote {
    /// Parse a note descriptor if `(owner, note_type)` is a CORE or KMSP note this crate
    /// knows; `Ok(None)` otherwise.
    ///
    /// # Errors
    /// The descriptor is too short, too long, or a field is out of range or over `limits`.
    pub fn parse(
        owner: &str,
        note_type: u32,
        desc: &[u8],
        at: NoteAt,
        limits: &Limits,
    ) -> Result<Option<KmNote>, FormatError> {
        let mut cur = Cursor::new(desc, at);
        let c = &mut cur;
        let note = match (owner, note_type) {
            (CORE_OWNER, NT_PRSTATUS) => KmNote::PrStatus(parse_prstatus(c)?),
            (CORE_OWNER, NT_AUXV) => KmNote::Auxv(parse_auxv(c, limits)?),
            (CORE_OWNER, NT_FILE) => KmNote::MappedFiles(parse_mapped_files(c, limits)?),
            (KM_OWNER, NT_KM_MONITOR) => KmNote::Monitor(parse_monitor(c, limits)?),
            (KM_OWNER, NT_KM_VCPU) => KmNote::Vcpu(parse_vcpu(c, limits)?),
            (KM_OWNER, NT_KM_GUEST) => KmNote::Guest(parse_payload(c, false, limits)?),
            (KM_OWNER, NT_KM_GUESTV) => KmNote::Guest(parse_payload(c, true, limits)?),
            (KM_OWNER, NT_KM_DYNLINKER) => KmNote::Dynlinker(parse_payload(c, false, limits)?),
            (KM_OWNER, NT_KM_DYNLINKERV) => KmNote::Dynlinker(parse_payload(c, true, limits)?),
            (KM_OWNER, NT_KM_DUP_DATA) => KmNote::DupData(parse_dup(c, limits)?),
            (KM_OWNER, NT_KM_FILE) => KmNote::File(parse_file(c, limits)?),
            (KM_OWNER, NT_KM_EVENTFD) => KmNote::EventFd(parse_eventfd(c)?),
            (KM_OWNER, NT_KM_SOCKET) => KmNote::Socket(parse_socket(c, limits)?),
            (KM_OWNER, NT_KM_EPOLLFD) => KmNote::EpollFd(parse_epollfd(c, limits)?),
            (KM_OWNER, NT_KM_SIGHAND) => KmNote::SigHand(parse_sighand(c)?),
            (KM_OWNER, NT_KM_IOCONTEXTS) => KmNote::IoContexts(parse_iocontexts(c, limits)?),
            _ => return Ok(None),
        };
        cur.finish()?;
        Ok(Some(note))
    }

    /// Owner name this note is written under.
    pub fn owner(&self) -> &'static str {
        match self {
            KmNote::PrStatus(_) | KmNote::MappedFiles(_) | KmNote::Auxv(_) => CORE_OWNER,
            _ => KM_OWNER,
        }
    }

    /// `n_type` this note is written with.
    pub fn note_type(&self) -> u32 {
        match self {
            KmNote::PrStatus(_) => NT_PRSTATUS,
            KmNote::MappedFiles(_) => NT_FILE,
            KmNote::Auxv(_) => NT_AUXV,
            KmNote::Monitor(_) => NT_KM_MONITOR,
            KmNote::Vcpu(_) => NT_KM_VCPU,
            KmNote::Guest(p) if p.version.is_some() => NT_KM_GUESTV,
            KmNote::Guest(_) => NT_KM_GUEST,
            KmNote::Dynlinker(p) if p.version.is_some() => NT_KM_DYNLINKERV,
            KmNote::Dynlinker(_) => NT_KM_DYNLINKER,
            KmNote::DupData(_) => NT_KM_DUP_DATA,
            KmNote::File(_) => NT_KM_FILE,
            KmNote::EventFd(_) => NT_KM_EVENTFD,
            KmNote::Socket(_) => NT_KM_SOCKET,
            KmNote::EpollFd(_) => NT_KM_EPOLLFD,
            KmNote::SigHand(_) => NT_KM_SIGHAND,
            KmNote::IoContexts(_) => NT_KM_IOCONTEXTS,
        }
    }

    /// The descriptor bytes exactly as KM writes them (`n_descsz` = their length).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        match self {
            KmNote::PrStatus(p) => encode_prstatus(&mut o, p),
            KmNote::MappedFiles(m) => encode_mapped_files(&mut o, m),
            KmNote::Auxv(v) => encode_auxv(&mut o, v),
            KmNote::Monitor(m) => encode_monitor(&mut o, m),
            KmNote::Vcpu(v) => encode_vcpu(&mut o, v),
            KmNote::Guest(p) | KmNote::Dynlinker(p) => encode_payload(&mut o, p),
            KmNote::DupData(d) => encode_dup(&mut o, d),
            KmNote::File(f) => encode_file(&mut o, f),
            KmNote::EventFd(e) => encode_eventfd(&mut o, e),
            KmNote::Socket(s) => encode_socket(&mut o, s),
            KmNote::EpollFd(e) => encode_epollfd(&mut o, e),
            KmNote::SigHand(s) => encode_sighand(&mut o, s),
            KmNote::IoContexts(i) => encode_iocontexts(&mut o, i),
        }
        debug_assert!(o.len() < u32::MAX as usize);
        o.buf
    }
}

// KM's struct sizes, pinned: a change here breaks KM compatibility.
const _: () = assert!(PRSTATUS_SIZE == 12 + 4 + 16 + 16 + 64 + 27 * 8 + 8);
