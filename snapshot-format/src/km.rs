//! Kontain KM's snapshot notes (owner `"KMSP"`) and the Linux `"CORE"` notes KM writes, in
//! exactly KM's layout (`km/km_coredump.h` at kontainapp/km 74886fd4: C structs with natural
//! alignment, little-endian).
//!
//! Each note has a typed value in [`KmNote`]; [`KmNote::parse`] reads a descriptor and
//! [`KmNote::encode`] writes one back byte for byte as KM would.

use serde::Serialize;

use crate::bytes::{Cursor, Out};
use crate::error::{FormatError, NoteAt};
use crate::state::{Limits, Registers};

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
const MONITOR_SIZE: usize = 32;
const VCPU_SIZE: usize = 96;
const GUEST_SIZE: usize = 72;
const GUESTV_SIZE: usize = 88;
const FILE_SIZE: usize = 40;
const SOCKET_SIZE: usize = 44;
const EPOLLFD_SIZE: usize = 16;
const EVENT_SIZE: usize = 16;
const SIGHAND_SIZE: usize = 32;
const IOCONTEXTS_SIZE: usize = 16;
const IOCONTEXT_SIZE: usize = 16;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

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

fn check_size(c: &Cursor<'_>, found: u32, expected: usize) -> Result<(), FormatError> {
    if found as usize != expected {
        return Err(FormatError::NoteRecordSize {
            at: c.at(),
            found: found.into(),
            expected: expected as u64,
        });
    }
    Ok(())
}

/// `e_phnum` of a 64-byte ELF header.
fn ehdr_phnum(ehdr: &[u8]) -> u16 {
    match ehdr.get(56..58) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn parse_prstatus(c: &mut Cursor<'_>) -> Result<PrStatus, FormatError> {
    let si_signo = c.i32("pr_info.si_signo")?;
    let si_code = c.i32("pr_info.si_code")?;
    let si_errno = c.i32("pr_info.si_errno")?;
    let cursig = c.i16("pr_cursig")?;
    c.pad(2)?;
    let sigpend = c.u64("pr_sigpend")?;
    let sighold = c.u64("pr_sighold")?;
    let pid = c.i32("pr_pid")?;
    let ppid = c.i32("pr_ppid")?;
    let pgrp = c.i32("pr_pgrp")?;
    let sid = c.i32("pr_sid")?;
    let mut times = [(0i64, 0i64); 4];
    for t in &mut times {
        *t = (c.i64("pr_time.tv_sec")?, c.i64("pr_time.tv_usec")?);
    }
    let mut regs = [0u64; Registers::COUNT];
    for r in &mut regs {
        *r = c.u64("pr_reg")?;
    }
    let fpvalid = c.i32("pr_fpvalid")?;
    c.pad(4)?;
    let [utime, stime, cutime, cstime] = times;
    Ok(PrStatus {
        si_signo,
        si_code,
        si_errno,
        cursig,
        sigpend,
        sighold,
        pid,
        ppid,
        pgrp,
        sid,
        utime,
        stime,
        cutime,
        cstime,
        regs: Registers::from_array(regs),
        fpvalid,
    })
}

fn encode_prstatus(o: &mut Out, p: &PrStatus) {
    o.i32(p.si_signo);
    o.i32(p.si_code);
    o.i32(p.si_errno);
    o.i16(p.cursig);
    o.zeros(2);
    o.u64(p.sigpend);
    o.u64(p.sighold);
    o.i32(p.pid);
    o.i32(p.ppid);
    o.i32(p.pgrp);
    o.i32(p.sid);
    for t in [p.utime, p.stime, p.cutime, p.cstime] {
        o.i64(t.0);
        o.i64(t.1);
    }
    for r in p.regs.to_array() {
        o.u64(r);
    }
    o.i32(p.fpvalid);
    o.zeros(4);
}

fn parse_mapped_files(c: &mut Cursor<'_>, limits: &Limits) -> Result<MappedFiles, FormatError> {
    let count = c.u64("count")?;
    let page_size = c.u64("page_size")?;
    let n = c.count(count, 24, limits.max_list_entries, "count")?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.u64("start")?;
        let end = c.u64("end")?;
        let file_ofs = c.u64("file_ofs")?;
        files.push(MappedFile {
            start,
            end,
            file_ofs,
            path: String::new(),
        });
    }
    for f in &mut files {
        f.path = c.cstr(limits.max_string_bytes, "file name")?;
    }
    Ok(MappedFiles { page_size, files })
}

fn encode_mapped_files(o: &mut Out, m: &MappedFiles) {
    o.u64(m.files.len() as u64);
    o.u64(m.page_size);
    for f in &m.files {
        o.u64(f.start);
        o.u64(f.end);
        o.u64(f.file_ofs);
    }
    for f in &m.files {
        o.cstr(&f.path);
    }
}

pub(crate) fn parse_auxv(
    c: &mut Cursor<'_>,
    limits: &Limits,
) -> Result<Vec<(u64, u64)>, FormatError> {
    if !c.remaining().is_multiple_of(16) {
        return Err(FormatError::NoteBadSize {
            at: c.at(),
            expected: (c.remaining() as u64 / 16) * 16,
            actual: c.remaining() as u64,
        });
    }
    let n = c.count(
        c.remaining() as u64 / 16,
        16,
        limits.max_list_entries,
        "auxv entries",
    )?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((c.u64("a_type")?, c.u64("a_val")?));
    }
    Ok(v)
}

fn encode_auxv(o: &mut Out, v: &[(u64, u64)]) {
    for &(t, val) in v {
        o.u64(t);
        o.u64(val);
    }
}

/// A `length` field that counts a NUL-terminated string: 0 means absent.
fn parse_counted_str(
    c: &mut Cursor<'_>,
    len: u32,
    limits: &Limits,
    field: &'static str,
) -> Result<Option<String>, FormatError> {
    if len == 0 {
        return Ok(None);
    }
    let at = c.at();
    let b = c.bytes_capped(len.into(), limits.max_string_bytes + 1, field)?;
    match b.split_last() {
        Some((0, s)) if !s.contains(&0) => std::str::from_utf8(s)
            .map(|s| Some(s.to_owned()))
            .map_err(|_| FormatError::NoteBadString { at, field }),
        _ => Err(FormatError::NoteBadString { at, field }),
    }
}

fn parse_monitor(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmMonitor, FormatError> {
    let monitor_type = c.u32("monitor_type")?;
    let label_length = c.u32("label_length")?;
    let description_length = c.u32("description_length")?;
    c.pad(4)?;
    let brk = c.u64("brk")?;
    let tbrk = c.u64("tbrk")?;
    let label = parse_counted_str(c, label_length, limits, "label")?;
    let description = parse_counted_str(c, description_length, limits, "description")?;
    Ok(KmMonitor {
        monitor_type,
        brk,
        tbrk,
        label,
        description,
    })
}

fn counted_len(s: &Option<String>) -> u32 {
    s.as_ref().map_or(0, |s| s.len() as u32 + 1)
}

fn encode_monitor(o: &mut Out, m: &KmMonitor) {
    o.u32(m.monitor_type);
    o.u32(counted_len(&m.label));
    o.u32(counted_len(&m.description));
    o.zeros(4);
    o.u64(m.brk);
    o.u64(m.tbrk);
    for s in [&m.label, &m.description].into_iter().flatten() {
        o.cstr(s);
    }
}

fn parse_vcpu(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmVcpu, FormatError> {
    let vcpu_id = c.u32("vcpu_id")?;
    c.pad(4)?;
    let stack_top = c.u64("stack_top")?;
    let guest_thr = c.u64("guest_thr")?;
    let set_child_tid = c.u64("set_child_tid")?;
    let clear_child_tid = c.u64("clear_child_tid")?;
    let sigaltstack_sp = c.u64("sigaltstack_sp")?;
    let sigaltstack_flags = c.u32("sigaltstack_flags")?;
    c.pad(4)?;
    let sigaltstack_size = c.u64("sigaltstack_size")?;
    let mapself_base = c.u64("mapself_base")?;
    let mapself_size = c.u64("mapself_size")?;
    let hcarg = c.u64("hcarg")?;
    let hypercall = c.u16("hypercall")?;
    let restart = c.u16("restart")?;
    let fp_format = c.u32("fp_format")?;
    let fp_data = c
        .bytes_capped(c.remaining() as u64, limits.max_xsave_bytes, "fp data")?
        .to_vec();
    Ok(KmVcpu {
        vcpu_id,
        stack_top,
        guest_thr,
        set_child_tid,
        clear_child_tid,
        sigaltstack_sp,
        sigaltstack_flags,
        sigaltstack_size,
        mapself_base,
        mapself_size,
        hcarg,
        hypercall,
        restart,
        fp_format,
        fp_data,
    })
}

fn encode_vcpu(o: &mut Out, v: &KmVcpu) {
    o.u32(v.vcpu_id);
    o.zeros(4);
    o.u64(v.stack_top);
    o.u64(v.guest_thr);
    o.u64(v.set_child_tid);
    o.u64(v.clear_child_tid);
    o.u64(v.sigaltstack_sp);
    o.u32(v.sigaltstack_flags);
    o.zeros(4);
    o.u64(v.sigaltstack_size);
    o.u64(v.mapself_base);
    o.u64(v.mapself_size);
    o.u64(v.hcarg);
    o.u16(v.hypercall);
    o.u16(v.restart);
    o.u32(v.fp_format);
    o.bytes(&v.fp_data);
}

fn parse_payload(
    c: &mut Cursor<'_>,
    versioned: bool,
    limits: &Limits,
) -> Result<KmPayload, FormatError> {
    let (version, load_adjust, dlopen) = if versioned {
        let version = c.u32("version")?;
        c.pad(4)?;
        (Some(version), c.u64("load_adjust")?, c.u64("dlopen")?)
    } else {
        (None, c.u64("load_adjust")?, 0)
    };
    let ehdr = c.bytes(EHDR_SIZE, "ehdr")?.to_vec();
    let phnum = ehdr_phnum(&ehdr);
    let phdrs = c
        .bytes_capped(
            u64::from(phnum) * PHDR_SIZE as u64,
            limits.max_list_entries * PHDR_SIZE as u64,
            "phdrs",
        )?
        .to_vec();
    let path = c.cstr(limits.max_string_bytes, "file name")?;
    Ok(KmPayload {
        version,
        load_adjust,
        dlopen,
        ehdr,
        phdrs,
        path,
    })
}

fn encode_payload(o: &mut Out, p: &KmPayload) {
    if let Some(v) = p.version {
        o.u32(v);
        o.zeros(4);
        o.u64(p.load_adjust);
        o.u64(p.dlopen);
    } else {
        o.u64(p.load_adjust);
    }
    let mut ehdr = p.ehdr.clone();
    ehdr.resize(EHDR_SIZE, 0);
    o.bytes(&ehdr);
    o.bytes(&p.phdrs);
    o.cstr(&p.path);
}

fn parse_dup(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmDupData, FormatError> {
    let ngroups = c.u32("size")?;
    let n = c.count(ngroups.into(), 4, limits.max_list_entries, "size")?;
    let mut groups = Vec::with_capacity(n);
    for _ in 0..n {
        let size = c.u32("group size")?;
        let m = c.count(size.into(), 4, limits.max_list_entries, "group size")?;
        let mut fds = Vec::with_capacity(m);
        for _ in 0..m {
            fds.push(c.u32("fd")?);
        }
        groups.push(fds);
    }
    Ok(KmDupData { groups })
}

fn encode_dup(o: &mut Out, d: &KmDupData) {
    o.u32(d.groups.len() as u32);
    for g in &d.groups {
        o.u32(g.len() as u32);
        for &fd in g {
            o.u32(fd);
        }
    }
}

fn parse_file(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmFile, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, FILE_SIZE)?;
    let fd = c.u32("fd")?;
    let how = c.u32("how")?;
    let flags = c.u32("flags")?;
    let mode = c.u32("mode")?;
    let pipesize = c.u32("pipesize")?;
    let data = c.u64("data")?;
    let datalength = c.u32("datalength")?;
    c.pad(4)?;
    let path = c.cstr(limits.max_string_bytes, "file name")?;
    c.align(4, "file name padding")?;
    let pipe_data = c
        .bytes_capped(datalength.into(), limits.max_data_bytes, "datalength")?
        .to_vec();
    c.align(4, "pipe data padding")?;
    Ok(KmFile {
        fd,
        how,
        flags,
        mode,
        pipesize,
        data,
        path,
        pipe_data,
    })
}

fn encode_file(o: &mut Out, f: &KmFile) {
    o.u32(FILE_SIZE as u32);
    o.u32(f.fd);
    o.u32(f.how);
    o.u32(f.flags);
    o.u32(f.mode);
    o.u32(f.pipesize);
    o.u64(f.data);
    o.u32(f.pipe_data.len() as u32);
    o.zeros(4);
    o.cstr(&f.path);
    o.align(4);
    o.bytes(&f.pipe_data);
    o.align(4);
}

fn parse_eventfd(c: &mut Cursor<'_>) -> Result<KmEventFd, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, FILE_SIZE)?;
    let fd = c.u32("fd")?;
    let _how = c.u32("how")?;
    let flags = c.u32("flags")?;
    let _mode = c.u32("mode")?;
    let _pipesize = c.u32("pipesize")?;
    let count = c.u64("data")?;
    let _datalength = c.u32("datalength")?;
    c.pad(4)?;
    Ok(KmEventFd { fd, flags, count })
}

fn encode_eventfd(o: &mut Out, e: &KmEventFd) {
    o.u32(FILE_SIZE as u32);
    o.u32(e.fd);
    o.u32(0);
    o.u32(e.flags);
    o.u32(0);
    o.u32(0);
    o.u64(e.count);
    o.u32(0);
    o.zeros(4);
}

fn parse_socket(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmSocket, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, SOCKET_SIZE)?;
    let fd = c.u32("fd")?;
    let how = c.u32("how")?;
    let state = c.u32("state")?;
    let backlog = c.u32("backlog")?;
    let domain = c.u32("domain")?;
    let type_ = c.u32("type")?;
    let protocol = c.u32("protocol")?;
    let other = c.u32("other")?;
    let addrlen = c.u32("addrlen")?;
    let datalength = c.u32("datalength")?;
    let addr = c
        .bytes_capped(addrlen.into(), limits.max_data_bytes, "addrlen")?
        .to_vec();
    c.align(4, "address padding")?;
    let data = c
        .bytes_capped(datalength.into(), limits.max_data_bytes, "datalength")?
        .to_vec();
    c.align(4, "data padding")?;
    Ok(KmSocket {
        fd,
        how,
        state,
        backlog,
        domain,
        type_,
        protocol,
        other,
        addr,
        data,
    })
}

fn encode_socket(o: &mut Out, s: &KmSocket) {
    o.u32(SOCKET_SIZE as u32);
    for v in [
        s.fd, s.how, s.state, s.backlog, s.domain, s.type_, s.protocol, s.other,
    ] {
        o.u32(v);
    }
    o.u32(s.addr.len() as u32);
    o.u32(s.data.len() as u32);
    o.bytes(&s.addr);
    o.align(4);
    o.bytes(&s.data);
    o.align(4);
}

fn parse_epollfd(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmEpollFd, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, EPOLLFD_SIZE)?;
    let fd = c.u32("fd")?;
    let flags = c.u32("flags")?;
    let nevent = c.u32("nevent")?;
    let n = c.count(
        nevent.into(),
        EVENT_SIZE as u64,
        limits.max_list_entries,
        "nevent",
    )?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(KmEpollEvent {
            fd: c.u32("event fd")?,
            events: c.u32("event")?,
            data: c.u64("data")?,
        });
    }
    Ok(KmEpollFd { fd, flags, events })
}

fn encode_epollfd(o: &mut Out, e: &KmEpollFd) {
    o.u32(EPOLLFD_SIZE as u32);
    o.u32(e.fd);
    o.u32(e.flags);
    o.u32(e.events.len() as u32);
    for ev in &e.events {
        o.u32(ev.fd);
        o.u32(ev.events);
        o.u64(ev.data);
    }
}

fn parse_sighand(c: &mut Cursor<'_>) -> Result<KmSigHand, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, SIGHAND_SIZE)?;
    let signo = c.u32("signo")?;
    let handler = c.u64("handler")?;
    let flags = c.u32("flags")?;
    let mask = c.u32("mask")?;
    let restorer = c.u64("restorer")?;
    Ok(KmSigHand {
        signo,
        handler,
        flags,
        mask,
        restorer,
    })
}

fn encode_sighand(o: &mut Out, s: &KmSigHand) {
    o.u32(SIGHAND_SIZE as u32);
    o.u32(s.signo);
    o.u64(s.handler);
    o.u32(s.flags);
    o.u32(s.mask);
    o.u64(s.restorer);
}

fn parse_iocontexts(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmIoContexts, FormatError> {
    let size = c.u32("size")?;
    let nr = c.u32("nr_contexts")?;
    let next_context = c.u64("piocontext")?;
    let n = c.count(
        nr.into(),
        IOCONTEXT_SIZE as u64,
        limits.max_list_entries,
        "nr_contexts",
    )?;
    check_size(c, size, IOCONTEXTS_SIZE + n * IOCONTEXT_SIZE)?;
    let mut contexts = Vec::with_capacity(n);
    for _ in 0..n {
        let nr_events = c.u32("nr_events")?;
        c.pad(4)?;
        contexts.push(KmIoContext {
            nr_events,
            context: c.u64("iocontext")?,
        });
    }
    Ok(KmIoContexts {
        next_context,
        contexts,
    })
}

fn encode_iocontexts(o: &mut Out, i: &KmIoContexts) {
    o.u32((IOCONTEXTS_SIZE + i.contexts.len() * IOCONTEXT_SIZE) as u32);
    o.u32(i.contexts.len() as u32);
    o.u64(i.next_context);
    for ctx in &i.contexts {
        o.u32(ctx.nr_events);
        o.zeros(4);
        o.u64(ctx.context);
    }
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
const _: () =
    assert!(MONITOR_SIZE == 32 && VCPU_SIZE == 96 && GUEST_SIZE == 72 && GUESTV_SIZE == 88);
