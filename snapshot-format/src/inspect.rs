//! Human and JSON renderings of a snapshot, and the verdict on who can restore it.

use std::fmt::Write as _;

use serde::{Serialize, Serializer};

use crate::bytes::hex;
use crate::elf::{PF_R, PF_W, PF_X};
use crate::km::KmNote;
use crate::snapcall::{self, SNAPCALL_OWNER};
use crate::state::{NoteKind, Snapshot};

/// Who can restore a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Restorer {
    /// snapcall's own vmm (and, for the KM notes it carries, in principle km too).
    Native,
    /// Only Kontain's `km` monitor.
    KmOnly,
}

/// Why a snapshot needs `km`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum KmOnlyReason {
    /// More than one vCPU (thread) was running.
    MultipleVcpus(usize),
    /// Open sockets (`NT_KM_SOCKET`).
    Sockets(usize),
    /// eventfds (`NT_KM_EVENTFD`).
    EventFds(usize),
    /// epoll fds (`NT_KM_EPOLLFD`).
    EpollFds(usize),
    /// Pipes or other non-plain files (`NT_KM_FILE` with `how != OPEN` or pipe data).
    NonPlainFiles(usize),
    /// dup'ed fd groups (`NT_KM_DUP_DATA` with groups).
    DupGroups(usize),
    /// AIO contexts (`NT_KM_IOCONTEXTS` with contexts).
    IoContexts(usize),
    /// The program runs under KM's dynamic linker (`NT_KM_DYNLINKER[V]`).
    KmDynlinker,
    /// The program uses KM's in-guest runtime: a vCPU was inside a KM hypercall or has a
    /// KM hypercall argument block (`NT_KM_VCPU.hcarg`/`hypercall` non-zero).
    KmRuntime,
    /// SNAPCALL notes the native restore needs are absent (a pure KM snapshot).
    MissingSnapcallNotes(Vec<&'static str>),
}

impl std::fmt::Display for KmOnlyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KmOnlyReason::MultipleVcpus(n) => write!(f, "{n} vCPUs"),
            KmOnlyReason::Sockets(n) => write!(f, "{n} socket(s)"),
            KmOnlyReason::EventFds(n) => write!(f, "{n} eventfd(s)"),
            KmOnlyReason::EpollFds(n) => write!(f, "{n} epoll fd(s)"),
            KmOnlyReason::NonPlainFiles(n) => write!(f, "{n} pipe/non-plain file(s)"),
            KmOnlyReason::DupGroups(n) => write!(f, "{n} dup'ed fd group(s)"),
            KmOnlyReason::IoContexts(n) => write!(f, "{n} AIO context(s)"),
            KmOnlyReason::KmDynlinker => write!(f, "KM dynamic linker"),
            KmOnlyReason::KmRuntime => write!(f, "KM in-guest runtime (hypercall state)"),
            KmOnlyReason::MissingSnapcallNotes(v) => write!(f, "missing {}", v.join(", ")),
        }
    }
}

/// Whether snapcall's vmm can restore a snapshot, and if not why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreVerdict {
    /// Who can restore it.
    pub restorer: Restorer,
    /// Empty when `restorer` is [`Restorer::Native`].
    pub reasons: Vec<KmOnlyReason>,
}

/// SNAPCALL notes the native restore path needs.
const REQUIRED_SNAPCALL: [(u32, &str); 4] = [
    (snapcall::NT_SNAPCALL_SREGS, "NT_SNAPCALL_SREGS"),
    (snapcall::NT_SNAPCALL_MSRS, "NT_SNAPCALL_MSRS"),
    (snapcall::NT_SNAPCALL_PENDING_SYSCALL, "NT_SNAPCALL_PENDING_SYSCALL"),
    (snapcall::NT_SNAPCALL_IDENTITY, "NT_SNAPCALL_IDENTITY"),
];

/// Decide who can restore `snap`: see [`KmOnlyReason`] for what forces `km`.
pub fn restore_verdict(snap: &Snapshot) -> RestoreVerdict {
    let km = || {
        snap.notes.iter().filter_map(|n| match &n.kind {
            NoteKind::Km(k) => Some(k),
            _ => None,
        })
    };
    let count = |f: &dyn Fn(&KmNote) -> bool| km().filter(|k| f(k)).count();
    let mut reasons = Vec::new();
    let vcpus = count(&|k| matches!(k, KmNote::PrStatus(_))).max(count(&|k| matches!(k, KmNote::Vcpu(_))));
    if vcpus > 1 {
        reasons.push(KmOnlyReason::MultipleVcpus(vcpus));
    }
    type Check = (usize, fn(usize) -> KmOnlyReason);
    // Installed signal handlers (NT_KM_SIGHAND) are not a reason: the vmm restores them.
    let checks: [Check; 3] = [
        (count(&|k| matches!(k, KmNote::Socket(_))), KmOnlyReason::Sockets),
        (count(&|k| matches!(k, KmNote::EventFd(_))), KmOnlyReason::EventFds),
        (count(&|k| matches!(k, KmNote::EpollFd(_))), KmOnlyReason::EpollFds),
    ];
    for (n, r) in checks {
        if n > 0 {
            reasons.push(r(n));
        }
    }
    let non_plain = snap.state.km_notes.iter().filter(|k| matches!(k, KmNote::File(_))).count();
    if non_plain > 0 {
        reasons.push(KmOnlyReason::NonPlainFiles(non_plain));
    }
    let dups: usize = km().map(|k| if let KmNote::DupData(d) = k { d.groups.len() } else { 0 }).sum();
    if dups > 0 {
        reasons.push(KmOnlyReason::DupGroups(dups));
    }
    let iocs: usize = km().map(|k| if let KmNote::IoContexts(i) = k { i.contexts.len() } else { 0 }).sum();
    if iocs > 0 {
        reasons.push(KmOnlyReason::IoContexts(iocs));
    }
    if km().any(|k| matches!(k, KmNote::Dynlinker(_))) {
        reasons.push(KmOnlyReason::KmDynlinker);
    }
    if km().any(|k| matches!(k, KmNote::Vcpu(v) if v.hcarg != 0 || v.hypercall != 0)) {
        reasons.push(KmOnlyReason::KmRuntime);
    }
    let missing: Vec<&'static str> = REQUIRED_SNAPCALL
        .iter()
        .filter(|(t, _)| !snap.notes.iter().any(|n| n.owner == SNAPCALL_OWNER && n.note_type == *t))
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        reasons.push(KmOnlyReason::MissingSnapcallNotes(missing));
    }
    let restorer = if reasons.is_empty() { Restorer::Native } else { Restorer::KmOnly };
    RestoreVerdict { restorer, reasons }
}

fn prot_str(p: u32) -> String {
    let mut s = String::with_capacity(3);
    s.push(if p & PF_R != 0 { 'r' } else { '-' });
    s.push(if p & PF_W != 0 { 'w' } else { '-' });
    s.push(if p & PF_X != 0 { 'x' } else { '-' });
    s
}

/// One line describing a KM note.
fn km_summary(k: &KmNote) -> String {
    match k {
        KmNote::PrStatus(p) => format!("pid {} rip {:#x} rsp {:#x}", p.pid, p.regs.rip, p.regs.rsp),
        KmNote::MappedFiles(m) => format!("{} mapping(s), page size {}", m.files.len(), m.page_size),
        KmNote::Auxv(v) => format!("{} entries", v.len()),
        KmNote::Monitor(m) => format!(
            "type {} brk {:#x} tbrk {:#x} label {:?} description {:?}",
            m.monitor_type, m.brk, m.tbrk, m.label, m.description
        ),
        KmNote::Vcpu(v) => format!(
            "vcpu {} guest_thr {:#x} stack_top {:#x} hcarg {:#x} hypercall {} fp_format {} ({} bytes)",
            v.vcpu_id,
            v.guest_thr,
            v.stack_top,
            v.hcarg,
            v.hypercall,
            v.fp_format,
            v.fp_data.len()
        ),
        KmNote::Guest(g) | KmNote::Dynlinker(g) => format!(
            "{} version {:?} load_adjust {:#x} dlopen {:#x} {} phdr bytes",
            g.path,
            g.version,
            g.load_adjust,
            g.dlopen,
            g.phdrs.len()
        ),
        KmNote::DupData(d) => format!("{} group(s): {:?}", d.groups.len(), d.groups),
        KmNote::File(f) => format!(
            "fd {} how {} flags {:#o} mode {:#o} data {:#x} {} ({} pipe bytes)",
            f.fd,
            f.how,
            f.flags,
            f.mode,
            f.data,
            f.path,
            f.pipe_data.len()
        ),
        KmNote::EventFd(e) => format!("fd {} flags {:#o} count {}", e.fd, e.flags, e.count),
        KmNote::Socket(s) => format!(
            "fd {} how {} state {} domain {} type {} protocol {} other {} addr {} data {} bytes",
            s.fd,
            s.how,
            s.state,
            s.domain,
            s.type_,
            s.protocol,
            s.other,
            hex(&s.addr),
            s.data.len()
        ),
        KmNote::EpollFd(e) => format!("fd {} flags {:#o} {} event(s)", e.fd, e.flags, e.events.len()),
        KmNote::SigHand(s) => format!(
            "signal {} handler {:#x} flags {:#x} mask {:#x} restorer {:#x}",
            s.signo, s.handler, s.flags, s.mask, s.restorer
        ),
        KmNote::IoContexts(i) => format!("{} context(s), next {:#x}", i.contexts.len(), i.next_context),
    }
}

/// The snapshot in human-readable form (what `snapcall inspect` prints).
pub fn render_text(snap: &Snapshot) -> String {
    let mut o = String::new();
    let st = &snap.state;
    let _ = writeln!(
        o,
        "file: {} bytes, {} PT_LOAD segment(s), {} note(s)",
        snap.file_len,
        snap.segments.len(),
        snap.notes.len()
    );
    match &st.identity {
        Some(id) => {
            let _ = writeln!(
                o,
                "identity: format v{} program {} memory {:#x} bundle {} payload {}",
                id.format_version,
                id.program_path,
                id.memory_size,
                hex(&id.bundle_hash),
                snap.payload_hash.map(|h| hex(&h)).unwrap_or_default()
            );
        }
        None => o.push_str("identity: none (not written by snapcall)\n"),
    }
    if let Some(ws) = &st.working_set {
        let pages = |written: bool| ws.iter().filter(|r| r.written == written).map(|r| u64::from(r.pages)).sum::<u64>();
        let _ = writeln!(
            o,
            "working set: {} ranges, {} pages read, {} pages written ({} KiB)",
            ws.len(),
            pages(false),
            pages(true),
            (pages(false) + pages(true)) * 4
        );
        for r in ws {
            let end = r.start + u64::from(r.pages) * 4096;
            let _ = writeln!(o, "  {:#014x}-{end:#014x} {}", r.start, if r.written { "written" } else { "read" });
        }
    }
    if let Some(cwd) = &st.cwd {
        let _ = writeln!(o, "cwd: {cwd}");
    }
    let v = restore_verdict(snap);
    match v.restorer {
        Restorer::Native => o.push_str("restore: native (snapcall vmm)\n"),
        Restorer::KmOnly => {
            let r: Vec<String> = v.reasons.iter().map(ToString::to_string).collect();
            let _ = writeln!(o, "restore: km only: {}", r.join("; "));
        }
    }
    o.push_str(
        "\nsegments:\n  #  guest_addr          mem_size            file_offset         file_size           prot\n",
    );
    for (i, s) in snap.segments.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {i:<2} {:#018x}  {:#018x}  {:#018x}  {:#018x}  {}",
            s.guest_addr,
            s.mem_size,
            s.file_offset,
            s.file_size,
            prot_str(s.prot)
        );
    }
    o.push_str("\nregisters:\n");
    let r = &st.regs;
    let regs = [
        ("rax", r.rax),
        ("rbx", r.rbx),
        ("rcx", r.rcx),
        ("rdx", r.rdx),
        ("rsi", r.rsi),
        ("rdi", r.rdi),
        ("rbp", r.rbp),
        ("rsp", r.rsp),
        ("r8", r.r8),
        ("r9", r.r9),
        ("r10", r.r10),
        ("r11", r.r11),
        ("r12", r.r12),
        ("r13", r.r13),
        ("r14", r.r14),
        ("r15", r.r15),
        ("rip", r.rip),
        ("eflags", r.eflags),
        ("orig_rax", r.orig_rax),
        ("cs", r.cs),
        ("ss", r.ss),
        ("ds", r.ds),
        ("es", r.es),
        ("fs", r.fs),
        ("gs", r.gs),
        ("fs_base", r.fs_base),
        ("gs_base", r.gs_base),
    ];
    for row in regs.chunks(3) {
        let line: Vec<String> = row.iter().map(|(n, v)| format!("{n:>8}={v:#018x}")).collect();
        let _ = writeln!(o, " {}", line.join(" "));
    }
    if let Some(s) = &st.sregs {
        let _ = writeln!(
            o,
            "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} cr8={:#x} efer={:#x} apic_base={:#x}",
            s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base
        );
        let _ = writeln!(o, "  gdt={:#x}/{:#x} idt={:#x}/{:#x}", s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit);
        for (n, g) in [
            ("cs", &s.cs),
            ("ds", &s.ds),
            ("es", &s.es),
            ("fs", &s.fs),
            ("gs", &s.gs),
            ("ss", &s.ss),
            ("tr", &s.tr),
            ("ldt", &s.ldt),
        ] {
            let _ = writeln!(
                o,
                "  {n:<3} sel={:#06x} base={:#x} limit={:#x} type={} p={} dpl={} db={} s={} l={} g={} avl={}",
                g.selector, g.base, g.limit, g.type_, g.present, g.dpl, g.db, g.s, g.l, g.g, g.avl
            );
        }
    } else {
        o.push_str("  (no special registers)\n");
    }
    let _ = writeln!(o, "  {} MSR(s), {} XCR(s), XSAVE {} bytes", st.msrs.len(), st.xcrs.len(), st.xsave.len());
    match &st.pending_syscall {
        Some(p) => {
            let args: Vec<String> = p.args.iter().map(|a| format!("{a:#x}")).collect();
            let _ = writeln!(o, "pending syscall: {} ({})", p.nr, args.join(", "));
        }
        None => o.push_str("pending syscall: none\n"),
    }
    let _ = writeln!(o, "brk {:#x}, mmap top {:#x}, {} auxv entries", st.brk, st.mmap_top, st.auxv.len());
    if !st.guest.path.is_empty() {
        let _ = writeln!(o, "program: {} (load_adjust {:#x})", st.guest.path, st.guest.load_adjust);
    }
    if !st.regions.is_empty() {
        o.push_str("\nregions:\n");
        for g in &st.regions {
            let _ = writeln!(
                o,
                "  {:#018x}-{:#018x} prot {} {:?} {}",
                g.start,
                g.start.saturating_add(g.len),
                g.prot,
                g.kind,
                g.path.as_deref().unwrap_or("")
            );
        }
    }
    o.push_str("\nopen files:\n");
    for f in &st.files {
        let _ =
            writeln!(o, "  fd {:<3} flags {:#o} offset {:#x} mode {:#o} {}", f.fd, f.flags, f.offset, f.mode, f.path);
    }
    o.push_str("\nnotes:\n");
    for n in &snap.notes {
        let detail = match &n.kind {
            NoteKind::Km(k) => km_summary(k),
            NoteKind::Snapcall => String::new(),
            NoteKind::Unknown => "(unknown, kept)".to_owned(),
        };
        let _ = writeln!(
            o,
            "  {:#08x} {:<8} {:#010x} {:<28} {:>6} {}",
            n.offset, n.owner, n.note_type, n.type_name, n.desc_len, detail
        );
    }
    o
}

/// The snapshot as JSON: `{file_len, segments, state, notes, payload_hash, verdict}`.
pub fn render_json(snap: &Snapshot) -> serde_json::Value {
    let mut v = serde_json::to_value(snap).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("verdict".to_owned(), serde_json::to_value(restore_verdict(snap)).unwrap_or(serde_json::Value::Null));
    }
    v
}

/// Serialize a 32-byte hash as hex.
pub(crate) fn ser_hex<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(h))
}

/// Serialize an optional 32-byte hash as hex or null.
pub(crate) fn ser_opt_hex<S: Serializer>(h: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(&hex(h)),
        None => s.serialize_none(),
    }
}

/// Serialize bytes as hex when short, else as `"<N bytes>"`.
pub(crate) fn ser_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if b.len() <= 64 {
        s.serialize_str(&hex(b))
    } else {
        s.serialize_str(&format!("<{} bytes>", b.len()))
    }
}
