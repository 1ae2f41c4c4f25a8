//! Byte-level parse/encode of KM's note descriptors: one pair of functions per C struct of
//! `km_coredump.h`, fields in declaration order with natural-alignment padding.

use super::*;
use crate::bytes::{Cursor, Out};

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

fn check_size(c: &Cursor<'_>, found: u32, expected: usize) -> Result<(), FormatError> {
    if found as usize != expected {
        return Err(FormatError::NoteRecordSize { at: c.at(), found: found.into(), expected: expected as u64 });
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

pub(super) fn parse_prstatus(c: &mut Cursor<'_>) -> Result<PrStatus, FormatError> {
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

pub(super) fn encode_prstatus(o: &mut Out, p: &PrStatus) {
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

pub(super) fn parse_mapped_files(c: &mut Cursor<'_>, limits: &Limits) -> Result<MappedFiles, FormatError> {
    let count = c.u64("count")?;
    let page_size = c.u64("page_size")?;
    let n = c.count(count, 24, limits.max_list_entries, "count")?;
    let mut files = Vec::with_capacity(n);
    for _ in 0..n {
        let start = c.u64("start")?;
        let end = c.u64("end")?;
        let file_ofs = c.u64("file_ofs")?;
        files.push(MappedFile { start, end, file_ofs, path: String::new() });
    }
    for f in &mut files {
        f.path = c.cstr(limits.max_string_bytes, "file name")?;
    }
    Ok(MappedFiles { page_size, files })
}

pub(super) fn encode_mapped_files(o: &mut Out, m: &MappedFiles) {
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

pub(super) fn parse_auxv(c: &mut Cursor<'_>, limits: &Limits) -> Result<Vec<(u64, u64)>, FormatError> {
    if !c.remaining().is_multiple_of(16) {
        return Err(FormatError::NoteBadSize {
            at: c.at(),
            expected: (c.remaining() as u64 / 16) * 16,
            actual: c.remaining() as u64,
        });
    }
    let n = c.count(c.remaining() as u64 / 16, 16, limits.max_list_entries, "auxv entries")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push((c.u64("a_type")?, c.u64("a_val")?));
    }
    Ok(v)
}

pub(super) fn encode_auxv(o: &mut Out, v: &[(u64, u64)]) {
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
        Some((0, s)) if !s.contains(&0) => {
            std::str::from_utf8(s).map(|s| Some(s.to_owned())).map_err(|_| FormatError::NoteBadString { at, field })
        }
        _ => Err(FormatError::NoteBadString { at, field }),
    }
}

pub(super) fn parse_monitor(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmMonitor, FormatError> {
    let monitor_type = c.u32("monitor_type")?;
    let label_length = c.u32("label_length")?;
    let description_length = c.u32("description_length")?;
    c.pad(4)?;
    let brk = c.u64("brk")?;
    let tbrk = c.u64("tbrk")?;
    let label = parse_counted_str(c, label_length, limits, "label")?;
    let description = parse_counted_str(c, description_length, limits, "description")?;
    Ok(KmMonitor { monitor_type, brk, tbrk, label, description })
}

fn counted_len(s: &Option<String>) -> u32 {
    s.as_ref().map_or(0, |s| s.len() as u32 + 1)
}

pub(super) fn encode_monitor(o: &mut Out, m: &KmMonitor) {
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

pub(super) fn parse_vcpu(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmVcpu, FormatError> {
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
    let fp_data = c.bytes_capped(c.remaining() as u64, limits.max_xsave_bytes, "fp data")?.to_vec();
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

pub(super) fn encode_vcpu(o: &mut Out, v: &KmVcpu) {
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

pub(super) fn parse_payload(c: &mut Cursor<'_>, versioned: bool, limits: &Limits) -> Result<KmPayload, FormatError> {
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
        .bytes_capped(u64::from(phnum) * PHDR_SIZE as u64, limits.max_list_entries * PHDR_SIZE as u64, "phdrs")?
        .to_vec();
    let path = c.cstr(limits.max_string_bytes, "file name")?;
    Ok(KmPayload { version, load_adjust, dlopen, ehdr, phdrs, path })
}

pub(super) fn encode_payload(o: &mut Out, p: &KmPayload) {
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

pub(super) fn parse_dup(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmDupData, FormatError> {
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

pub(super) fn encode_dup(o: &mut Out, d: &KmDupData) {
    o.u32(d.groups.len() as u32);
    for g in &d.groups {
        o.u32(g.len() as u32);
        for &fd in g {
            o.u32(fd);
        }
    }
}

pub(super) fn parse_file(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmFile, FormatError> {
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
    let pipe_data = c.bytes_capped(datalength.into(), limits.max_data_bytes, "datalength")?.to_vec();
    c.align(4, "pipe data padding")?;
    Ok(KmFile { fd, how, flags, mode, pipesize, data, path, pipe_data })
}

pub(super) fn encode_file(o: &mut Out, f: &KmFile) {
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

pub(super) fn parse_eventfd(c: &mut Cursor<'_>) -> Result<KmEventFd, FormatError> {
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

pub(super) fn encode_eventfd(o: &mut Out, e: &KmEventFd) {
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

pub(super) fn parse_socket(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmSocket, FormatError> {
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
    let addr = c.bytes_capped(addrlen.into(), limits.max_data_bytes, "addrlen")?.to_vec();
    c.align(4, "address padding")?;
    let data = c.bytes_capped(datalength.into(), limits.max_data_bytes, "datalength")?.to_vec();
    c.align(4, "data padding")?;
    Ok(KmSocket { fd, how, state, backlog, domain, type_, protocol, other, addr, data })
}

pub(super) fn encode_socket(o: &mut Out, s: &KmSocket) {
    o.u32(SOCKET_SIZE as u32);
    for v in [s.fd, s.how, s.state, s.backlog, s.domain, s.type_, s.protocol, s.other] {
        o.u32(v);
    }
    o.u32(s.addr.len() as u32);
    o.u32(s.data.len() as u32);
    o.bytes(&s.addr);
    o.align(4);
    o.bytes(&s.data);
    o.align(4);
}

pub(super) fn parse_epollfd(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmEpollFd, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, EPOLLFD_SIZE)?;
    let fd = c.u32("fd")?;
    let flags = c.u32("flags")?;
    let nevent = c.u32("nevent")?;
    let n = c.count(nevent.into(), EVENT_SIZE as u64, limits.max_list_entries, "nevent")?;
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(KmEpollEvent { fd: c.u32("event fd")?, events: c.u32("event")?, data: c.u64("data")? });
    }
    Ok(KmEpollFd { fd, flags, events })
}

pub(super) fn encode_epollfd(o: &mut Out, e: &KmEpollFd) {
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

pub(super) fn parse_sighand(c: &mut Cursor<'_>) -> Result<KmSigHand, FormatError> {
    let size = c.u32("size")?;
    check_size(c, size, SIGHAND_SIZE)?;
    let signo = c.u32("signo")?;
    let handler = c.u64("handler")?;
    let flags = c.u32("flags")?;
    let mask = c.u32("mask")?;
    let restorer = c.u64("restorer")?;
    Ok(KmSigHand { signo, handler, flags, mask, restorer })
}

pub(super) fn encode_sighand(o: &mut Out, s: &KmSigHand) {
    o.u32(SIGHAND_SIZE as u32);
    o.u32(s.signo);
    o.u64(s.handler);
    o.u32(s.flags);
    o.u32(s.mask);
    o.u64(s.restorer);
}

pub(super) fn parse_iocontexts(c: &mut Cursor<'_>, limits: &Limits) -> Result<KmIoContexts, FormatError> {
    let size = c.u32("size")?;
    let nr = c.u32("nr_contexts")?;
    let next_context = c.u64("piocontext")?;
    let n = c.count(nr.into(), IOCONTEXT_SIZE as u64, limits.max_list_entries, "nr_contexts")?;
    check_size(c, size, IOCONTEXTS_SIZE + n * IOCONTEXT_SIZE)?;
    let mut contexts = Vec::with_capacity(n);
    for _ in 0..n {
        let nr_events = c.u32("nr_events")?;
        c.pad(4)?;
        contexts.push(KmIoContext { nr_events, context: c.u64("iocontext")? });
    }
    Ok(KmIoContexts { next_context, contexts })
}

pub(super) fn encode_iocontexts(o: &mut Out, i: &KmIoContexts) {
    o.u32((IOCONTEXTS_SIZE + i.contexts.len() * IOCONTEXT_SIZE) as u32);
    o.u32(i.contexts.len() as u32);
    o.u64(i.next_context);
    for ctx in &i.contexts {
        o.u32(ctx.nr_events);
        o.zeros(4);
        o.u64(ctx.context);
    }
}

// Sizes of KM's C structs, pinned: a change here breaks KM compatibility.
const _: () = assert!(MONITOR_SIZE == 32 && VCPU_SIZE == 96 && GUEST_SIZE == 72 && GUESTV_SIZE == 88);
const _: () = assert!(FILE_SIZE == 40 && SOCKET_SIZE == 44 && EPOLLFD_SIZE == 16 && EVENT_SIZE == 16);
const _: () = assert!(SIGHAND_SIZE == 32 && IOCONTEXTS_SIZE == 16 && IOCONTEXT_SIZE == 16);
