//! The output ring: `write(1|2, ...)` without a VM exit (and `read(0, ...)` at the end of
//! the request).
//!
//! Every exit costs ≈27 µs under kvm-pvm, and a restored function's own output was most of
//! its exits (hellowithdata: its log line, its response, then exit_group). So the syscall
//! entry starts with a fast path ([`crate::layout::FAST_SYSCALL_ENTRY`], source in
//! `stub/fast_write.S`): a `write` to fd 1 or 2 that the monitor has enabled, from a buffer
//! inside user memory, that fits the ring, is copied by the stub into the ring as
//! `u64 fd, u64 count, data padded to 8` and returns `count` to the program at once.
//! Everything else rings the doorbell as before.
//!
//! The same stub answers `read(0, ...)` with 0 once the monitor has said that fd 0 is the
//! request and has been read to its end: what the monitor would answer, without the exit
//! (≈0.1 ms here on 2026-12-03; a program that reads its input until EOF, as echo-c does,
//! made two exits per call and now makes one). The monitor says so only while it is true,
//! republishing at every exit (fd 0 changes only through syscalls, which exit), never while
//! a snapshot waits for the first read of stdin, and never under `--trace-syscalls`, so that
//! the trace misses nothing. The stub counts these reads in the header for the call's
//! statistics; the count is the program's to scribble on and only ever adds to them.
//!
//! The monitor drains the ring at every exit, before it looks at the exit, so buffered writes
//! always land before the syscall that follows them, and a call's output is complete when it
//! ends. The program can write the ring and its header too (on kvm-pvm the stub runs at CPL3,
//! so they are user-writable pages): nothing in them is trusted here. Bad entries end the drain
//! (what follows them is dropped, as the program's own doing), and the output cap is enforced
//! on what is drained exactly as on a `write`.

use crate::files::FdKind;
use crate::layout::{
    GuestAddr, OUTPUT_HEADER_ENABLED, OUTPUT_HEADER_FAST_READS, OUTPUT_HEADER_USED, OUTPUT_RING, OUTPUT_RING_SIZE,
};
use crate::memory::GuestMemory;
use crate::process::{Process, Stop, SyscallRecord};
use crate::syscalls::append_output;

const ENTRY_HEADER: u64 = 16;

/// Tells the stub which of fds 1 and 2 it may buffer (those that are still the response
/// streams: a program may have closed them or put something else there), and whether it may
/// answer a read of fd 0 with end of input: only with `stdin_may_end` (not while a snapshot
/// waits for the first read), not under a tracer, and only while fd 0 is the request, read
/// to its end.
pub(crate) fn publish(p: &Process, mem: &mut GuestMemory, stdin_may_end: bool) {
    let at_end = stdin_may_end
        && p.trace.is_none()
        && p.stdin_pos >= p.stdin.len()
        && matches!(p.fds.get(0).map(|f| &f.kind), Ok(FdKind::Stdin));
    let writes = (1..=2u64).filter(|&fd| p.fds.is_response_stream(fd)).fold(0u64, |b, fd| b | (1 << fd));
    let bits = writes | u64::from(at_end);
    // The header page lies in the monitor area of every VM: a failure would be a bug in the
    // layout, and the only effect would be no fast path.
    let _ = mem.write_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED), bits);
}

/// Moves what the stub buffered into the call's output, then empties the ring.
pub(crate) fn drain(p: &mut Process, mem: &mut GuestMemory) -> Result<(), Stop> {
    // Reads at the end of the request the stub answered (a count the program can scribble
    // on: bounded, and only statistics).
    let reads = mem.read_u64(GuestAddr::new(OUTPUT_HEADER_FAST_READS)).unwrap_or(0);
    if reads != 0 {
        let _ = mem.write_u64(GuestAddr::new(OUTPUT_HEADER_FAST_READS), 0);
        p.stats.syscalls = p.stats.syscalls.saturating_add(reads.min(u64::from(u32::MAX)));
    }
    let used = mem.read_u64(GuestAddr::new(OUTPUT_HEADER_USED)).unwrap_or(0).min(OUTPUT_RING_SIZE);
    if used == 0 {
        return Ok(());
    }
    let _ = mem.write_u64(GuestAddr::new(OUTPUT_HEADER_USED), 0);
    let Ok(ring) = mem.slice(GuestAddr::new(OUTPUT_RING), used) else { return Ok(()) };
    let mut at = 0u64;
    while at + ENTRY_HEADER <= used {
        let word = |i: u64| {
            let i = i as usize;
            u64::from_le_bytes(ring[i..i + 8].try_into().unwrap_or([0; 8]))
        };
        let (fd, count) = (word(at), word(at + 8));
        let data_start = at + ENTRY_HEADER;
        if !(1..=2).contains(&fd) || count > used - data_start || !p.fds.is_response_stream(fd) {
            break; // not what the stub writes: the program scribbled on the ring
        }
        let data = &ring[data_start as usize..(data_start + count) as usize];
        p.stats.syscalls += 1;
        let appended = append_output(p, fd, data);
        if p.trace.is_some() {
            let args = [fd, OUTPUT_RING + data_start, count, 0, 0, 0];
            p.trace(&SyscallRecord { nr: 1, args, result: appended.as_ref().ok().map(|_| count as i64) });
        }
        appended?;
        at = data_start + count.next_multiple_of(8);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::Rootfs;
    use crate::mm::AddressSpace;

    fn process() -> Process {
        let root = std::env::temp_dir();
        let space = AddressSpace::new(32 << 20, 4 << 20, 5 << 20).unwrap();
        Process::new(space, Rootfs::open(&root).unwrap(), "/bin/x".into(), "/".into(), 1 << 20)
    }

    fn put(mem: &mut GuestMemory, entries: &[(u64, &[u8])]) {
        let mut at = OUTPUT_RING;
        for (fd, data) in entries {
            mem.write_u64(GuestAddr::new(at), *fd).unwrap();
            mem.write_u64(GuestAddr::new(at + 8), data.len() as u64).unwrap();
            mem.write(GuestAddr::new(at + 16), data).unwrap();
            at += 16 + (data.len() as u64).next_multiple_of(8);
        }
        mem.write_u64(GuestAddr::new(OUTPUT_HEADER_USED), at - OUTPUT_RING).unwrap();
    }

    #[test]
    fn entries_go_to_their_stream_in_order_and_the_ring_empties() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let mut p = process();
        put(&mut mem, &[(1, b"hello "), (2, b"log\n"), (1, b"world"), (1, b"")]);
        drain(&mut p, &mut mem).unwrap();
        assert_eq!((p.stdout.as_slice(), p.stderr.as_slice()), (&b"hello world"[..], &b"log\n"[..]));
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_USED)).unwrap(), 0);
        assert_eq!(p.stats.syscalls, 4);
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stdout, b"hello world");
    }

    #[test]
    fn a_scribbled_ring_is_cut_at_the_first_bad_entry_and_never_overreads() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let mut p = process();
        put(&mut mem, &[(1, b"ok"), (7, b"bad fd"), (1, b"after")]);
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stdout, b"ok");
        // A count past the end of what is used, and a `used` past the ring.
        put(&mut mem, &[(2, b"x")]);
        mem.write_u64(GuestAddr::new(OUTPUT_RING + 8), u64::MAX).unwrap();
        drain(&mut p, &mut mem).unwrap();
        mem.write_u64(GuestAddr::new(OUTPUT_HEADER_USED), u64::MAX).unwrap();
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stderr, b"");
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_USED)).unwrap(), 0);
    }

    #[test]
    fn the_output_cap_applies_to_buffered_writes() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let mut p = process();
        p.max_output = 4;
        put(&mut mem, &[(1, b"abc"), (1, b"def")]);
        assert_eq!(drain(&mut p, &mut mem), Err(Stop::OutputLimit { limit: 4 }));
    }

    #[test]
    fn the_embedded_stub_is_what_fast_write_s_assembles_to() {
        let have =
            |tool: &str| std::process::Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
        if !(have("as") && have("ld") && have("objcopy")) {
            eprintln!("skipped: no binutils to reassemble the stub with");
            return;
        }
        let out = std::env::temp_dir().join(format!("snapcall-fast-write-{}.bin", std::process::id()));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/src/stub/build.sh");
        assert!(std::process::Command::new(script).arg(&out).status().unwrap().success());
        let rebuilt = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).ok();
        assert!(rebuilt == crate::layout::FAST_WRITE_STUB, "stub/fast_write.bin is stale: run stub/build.sh");
    }

    #[test]
    fn only_fds_that_are_still_the_streams_are_enabled() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let mut p = process();
        p.stdin = b"unread".to_vec();
        publish(&p, &mut mem, true);
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED)).unwrap(), 0b110);
        p.fds.close(1).unwrap();
        publish(&p, &mut mem, true);
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED)).unwrap(), 0b100);
        // An entry for the closed fd is not delivered.
        put(&mut mem, &[(1, b"lost")]);
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stdout, b"");
    }

    /// Bit 0 (reads of fd 0 may end here) only while fd 0 is the request and read to its end,
    /// and never while a snapshot waits for the first read or a tracer watches.
    #[test]
    fn reads_end_in_the_stub_only_at_the_end_of_the_request_on_fd_0() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let enabled = |mem: &GuestMemory| mem.read_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED)).unwrap() & 1;
        let mut p = process();
        p.stdin = b"body".to_vec();
        publish(&p, &mut mem, true);
        assert_eq!(enabled(&mem), 0);
        p.stdin_pos = 4;
        publish(&p, &mut mem, true);
        assert_eq!(enabled(&mem), 1);
        publish(&p, &mut mem, false);
        assert_eq!(enabled(&mem), 0);
        // fd 0 closed, or something else put there.
        p.fds.close(0).unwrap();
        publish(&p, &mut mem, true);
        assert_eq!(enabled(&mem), 0);
        let mut traced = process();
        traced.trace = Some(Box::new(|_: &SyscallRecord| {}));
        publish(&traced, &mut mem, true);
        assert_eq!(enabled(&mem), 0);
    }

    #[test]
    fn reads_the_stub_answered_count_as_syscalls_and_a_scribbled_count_stays_bounded() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let mut p = process();
        mem.write_u64(GuestAddr::new(OUTPUT_HEADER_FAST_READS), 3).unwrap();
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stats.syscalls, 3);
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_FAST_READS)).unwrap(), 0);
        mem.write_u64(GuestAddr::new(OUTPUT_HEADER_FAST_READS), u64::MAX).unwrap();
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stats.syscalls, 3 + u64::from(u32::MAX));
    }
}
