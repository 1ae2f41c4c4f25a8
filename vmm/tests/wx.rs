//! W^X against the real KVM: the page tables enforce every page's protection (each ELF
//! segment's own, then mmap/mprotect's), cold and after a restore. The guest is
//! `guest-functions/c/tests/wx.c`, which runs the scenario its request names.

mod common;
use common::*;
use vmm::{CallError, Function, StartMode};

/// The fault address the guest announced on stderr ("addr 0x...") just before the access.
fn announced(f: &Function, scenario: &str) -> (CallError, u64) {
    let finished = call(f, scenario.as_bytes());
    let tail = String::from_utf8_lossy(finished.stderr_tail()).into_owned();
    let addr = tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("addr 0x"))
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .unwrap_or_else(|| panic!("{scenario}: no address announced: {tail:?}"));
    match finished.into_parts().0 {
        Ok(out) => panic!("{scenario}: expected a fault, exited {} with {:?}", out.exit_code, out),
        Err(e) => (e, addr),
    }
}

/// The cold function and one restored from a snapshot taken in a copy of its bundle.
fn cold_and_restored(name: &str, test: &str) -> (Function, Function, std::path::PathBuf) {
    let cold = load(name, StartMode::Cold);
    let dir = std::env::temp_dir().join(format!("snapcall-wx-{}-{name}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::process::Command::new("cp").arg("-a").arg(bundle(name)).arg(&dir).status().unwrap().success());
    let snap_fn = Function::load(&dir, StartMode::Cold).unwrap();
    snap_fn.take_snapshot(&dir.join(vmm::snapshot::SNAPSHOT_FILE)).unwrap();
    let restored = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    (cold, restored, dir)
}

const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 2;
const PF_USER: u64 = 4;
const PF_FETCH: u64 = 16;

fn expect_write_fault(f: &Function, scenario: &str) {
    match announced(f, scenario) {
        (CallError::WriteToReadOnly { addr, error_code, .. }, at) => {
            assert_eq!(addr, at, "{scenario}: cr2");
            assert_eq!(error_code & (PF_PRESENT | PF_WRITE | PF_USER | PF_FETCH), PF_PRESENT | PF_WRITE | PF_USER);
            let message = CallError::WriteToReadOnly { addr, error_code, rip: 0 }.to_string();
            assert!(message.starts_with(&format!("write to read-only memory at {at:#x}")), "{message}");
        }
        (other, _) => panic!("{scenario}: expected a write to read-only memory, got {other}"),
    }
}

fn expect_exec_fault(f: &Function, scenario: &str) {
    match announced(f, scenario) {
        (CallError::ExecuteNonExecutable { addr, rip, error_code }, at) => {
            assert_eq!((addr, rip), (at, at), "{scenario}: cr2 and rip are the jump target");
            assert_eq!(error_code & (PF_PRESENT | PF_WRITE | PF_USER | PF_FETCH), PF_PRESENT | PF_USER | PF_FETCH);
        }
        (other, _) => panic!("{scenario}: expected an execute of non-executable memory, got {other}"),
    }
}

#[test]
fn code_and_read_only_data_are_not_writable_cold_and_restored() {
    let (cold, restored, dir) = cold_and_restored("wx", "ro");
    for f in [&cold, &restored] {
        expect_write_fault(f, "write-text");
        expect_write_fault(f, "write-rodata");
        let out = output(f, b"write-data");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "data 8 bss 1\ndone\n");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stack_heap_and_mmap_memory_do_not_execute_cold_and_restored() {
    let (cold, restored, dir) = cold_and_restored("wx", "nx");
    for f in [&cold, &restored] {
        for scenario in ["exec-stack", "exec-heap", "exec-mmap"] {
            expect_exec_fault(f, scenario);
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn mprotect_takes_effect_at_once_for_the_running_program() {
    let (cold, restored, dir) = cold_and_restored("wx", "mprotect");
    for f in [&cold, &restored] {
        expect_write_fault(f, "mprotect-ro");
        let finished = call(f, b"mprotect-ro");
        assert!(String::from_utf8_lossy(finished.stderr_tail()).contains("read 9\n"), "read-only still reads");
        let _ = finished.into_parts().0;
        // r-x runs the code written there; rw again writes it and no longer runs it.
        expect_exec_fault(f, "mprotect-exec");
        let finished = call(f, b"mprotect-exec");
        let tail = String::from_utf8_lossy(finished.stderr_tail()).into_owned();
        assert!(tail.contains("returned 42\nwrote\n"), "{tail}");
        // Its mmap of an rw page changed no entry; each mprotect did, and a cold start's
        // glibc also mprotects RELRO read-only before main.
        let relro = if f.has_snapshot() { 0 } else { 1 };
        assert_eq!(finished.stats().page_table_updates, 2 + relro);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn prot_none_pages_are_absent() {
    let f = load("wx", StartMode::Cold);
    for scenario in ["prot-none", "mmap-none"] {
        match announced(&f, scenario) {
            (CallError::GuestFault { vector: 14, cr2, error_code, .. }, at) => {
                assert_eq!(cr2, at);
                assert_eq!(error_code & PF_PRESENT, 0, "{scenario}: not present");
            }
            (other, _) => panic!("{scenario}: expected a #PF, got {other}"),
        }
    }
}

#[test]
fn a_page_checkerboard_keeps_every_pages_own_protection() {
    let f = load("wx", StartMode::Cold);
    let finished = call(&f, b"page-checkerboard");
    let tail = String::from_utf8_lossy(finished.stderr_tail()).into_owned();
    match finished.into_parts().0 {
        Err(CallError::WriteToReadOnly { addr, .. }) => {
            assert!(tail.contains(&format!("addr {addr:#x}")), "{tail}");
        }
        other => panic!("expected a write to read-only memory, got {other:?}"),
    }
}

/// The numbers after `key` in the guest's report line starting with `key`.
fn counts(report: &str, key: &str) -> Vec<u64> {
    let line = report.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("no {key:?} in {report}"));
    line.split_whitespace().filter_map(|w| w.parse().ok()).collect()
}

#[test]
fn a_checkerboard_over_960_mib_spends_the_table_pool_into_enomem_and_nothing_breaks() {
    let f = load("wx-1g", StartMode::Cold);
    let finished = call(&f, b"window-checkerboard");
    let report = String::from_utf8_lossy(finished.stderr_tail()).into_owned();
    let err = finished.into_parts().0.expect_err("the last write is to read-only memory");
    assert!(matches!(err, CallError::WriteToReadOnly { .. }), "{err}: {report}");
    // 480 windows; the pool holds 448 pages, of which the root, PDPT, one directory and the
    // program's own mixed windows (image, vDSO, stack guard) are taken.
    let pool = vmm::PAGE_TABLE_POOL_PAGES as u64;
    let [ok, enomem, other] = counts(&report, "mprotect ok")[..] else { panic!("{report}") };
    assert_eq!((ok + enomem, other), (480, 0), "{report}");
    assert!(ok > pool - 16 && ok < pool, "{ok} of {pool}: {report}");
    assert!(report.contains("read all, sum ") && report.contains("retry ok\n"), "{report}");
    let [ok, enomem, other] = counts(&report, "munmap ok")[..] else { panic!("{report}") };
    assert_eq!((ok + enomem, other), (480, 0), "{report}");
    assert!(ok > pool - 16 && enomem > 0, "{report}");
}

#[test]
fn the_region_map_records_each_segments_own_protection_and_relro() {
    use snapshot_format as fmt;
    let (_, restored, dir) = cold_and_restored("wx", "regions");
    let state = &restored.snapshot().unwrap().snapshot().state;
    let image: Vec<(u64, u64, u32)> = state
        .regions
        .iter()
        .filter(|r| r.kind == fmt::RegionKind::Image)
        .map(|r| (r.start, r.start + r.len, r.prot))
        .collect();
    let (r, w, x) = (1, 2, 4);
    // glibc's static start-up: the ELF header page r--, text r-x, rodata r--, then the data
    // segment, whose RELRO part its start-up made read-only (mprotect), the rest rw-.
    let prots: Vec<u32> = image.iter().map(|&(_, _, p)| p).collect();
    assert_eq!(prots, [r, r | x, r, r, r | w], "{image:x?}");
    let text = image[1];
    let main_like = image.iter().all(|&(s, e, _)| s < e && s % 4096 == 0 && e % 4096 == 0);
    assert!(main_like && text.0 >= 0x40_0000, "{image:x?}");
    assert_eq!(state.identity.as_ref().unwrap().format_version, fmt::FORMAT_VERSION);
    let vdso = state.regions.iter().find(|r| r.kind == fmt::RegionKind::Vdso).unwrap();
    assert_eq!(vdso.prot, r | x, "the vDSO stays executable");
    let stack = state.regions.iter().find(|r| r.kind == fmt::RegionKind::Stack).unwrap();
    assert_eq!(stack.prot, r | w, "the stack is not executable");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Rewrites the snapshot in `dir` as the version-1 writer did: format version 1 and the whole
/// image one `r-x` region.
fn as_version_1(dir: &std::path::Path) {
    use snapshot_format as fmt;
    let path = dir.join(vmm::snapshot::SNAPSHOT_FILE);
    let snap = fmt::read_snapshot(&path, &fmt::Limits::for_memory(64 << 20)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let mut state = snap.state.clone();
    state.identity.as_mut().unwrap().format_version = 1;
    let image: Vec<_> = state.regions.iter().filter(|r| r.kind == fmt::RegionKind::Image).cloned().collect();
    let (start, end) = (image[0].start, image.iter().map(|r| r.start + r.len).max().unwrap());
    state.regions.retain(|r| r.kind != fmt::RegionKind::Image);
    state.regions.push(fmt::Region { start, len: end - start, prot: 1 | 4, kind: fmt::RegionKind::Image, path: None });
    state.regions.sort_by_key(|r| r.start);
    let memory: Vec<fmt::MemorySegment> = snap
        .segments
        .iter()
        .map(|s| fmt::MemorySegment {
            guest_addr: s.guest_addr,
            data: &bytes[s.file_offset as usize..(s.file_offset + s.file_size) as usize],
            prot: s.prot,
        })
        .collect();
    fmt::write_snapshot(&path, &state, &memory).unwrap();
}

#[test]
fn a_version_1_snapshot_still_restores_with_its_image_writable() {
    let (_, _, dir) = cold_and_restored("wx", "v1");
    as_version_1(&dir);
    let restored = Function::load(&dir, StartMode::Snapshot).unwrap();
    assert!(restored.has_snapshot());
    // Its data segment was recorded r-x: trusted, every write to .data would fault.
    let out = output(&restored, b"write-data");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "data 8 bss 1\ndone\n");
    // What it recorded exactly is enforced all the same: the stack does not execute.
    expect_exec_fault(&restored, "exec-stack");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn threads_changing_protections_in_turn_each_see_their_own_at_once() {
    let (cold, restored, dir) = cold_and_restored("wx", "threads");
    for f in [&cold, &restored] {
        let out = output(f, b"threads");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "threads wrong 0 0\ndone\n");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
