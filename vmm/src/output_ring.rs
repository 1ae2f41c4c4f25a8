//! The output ring: `write(1|2, ...)` without a VM exit.
//!
//! Every exit costs ≈27 µs under kvm-pvm, and a restored function's own output was most of
//! its exits (hellowithdata: its log line, its response, then exit_group). So the syscall
//! entry starts with a fast path ([`crate::layout::FAST_SYSCALL_ENTRY`], source in
//! `stub/fast_write.S`): a `write` to fd 1 or 2 that the monitor has enabled, from a buffer
//! inside user memory, that fits the ring, is copied by the stub into the ring as
//! `u64 fd, u64 count, data padded to 8` and returns `count` to the program at once.
//! Everything else rings the doorbell as before.
//!
//! The monitor drains the ring at every exit, before it looks at the exit, so buffered writes
//! always land before the syscall that follows them, and a call's output is complete when it
//! ends. The program can write the ring and its header too (on kvm-pvm the stub runs at CPL3,
//! so they are user-writable pages): nothing in them is trusted here. Bad entries end the drain
//! (what follows them is dropped, as the program's own doing), and the output cap is enforced
//! on what is drained exactly as on a `write`.

use crate::layout::{GuestAddr, OUTPUT_HEADER_ENABLED, OUTPUT_HEADER_USED, OUTPUT_RING, OUTPUT_RING_SIZE};
use crate::memory::GuestMemory;
use crate::process::{Process, Stop, SyscallRecord};
use crate::syscalls::append_output;

const ENTRY_HEADER: u64 = 16;

/// Tells the stub which of fds 1 and 2 it may buffer: those that are still the response
/// streams (a program may have closed them or put something else there).
pub(crate) fn publish(p: &Process, mem: &mut GuestMemory) {
    let bits = (1..=2u64).filter(|&fd| p.fds.is_response_stream(fd)).fold(0u64, |b, fd| b | (1 << fd));
    // The header page lies in the monitor area of every VM: a failure would be a bug in the
    // layout, and the only effect would be no fast path.
    let _ = mem.write_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED), bits);
}

/// Moves what the stub buffered into the call's output, then empties the ring.
pub(crate) fn drain(p: &mut Process, mem: &mut GuestMemory) -> Result<(), Stop> {
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
        publish(&p, &mut mem);
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED)).unwrap(), 0b110);
        p.fds.close(1).unwrap();
        publish(&p, &mut mem);
        assert_eq!(mem.read_u64(GuestAddr::new(OUTPUT_HEADER_ENABLED)).unwrap(), 0b100);
        // An entry for the closed fd is not delivered.
        put(&mut mem, &[(1, b"lost")]);
        drain(&mut p, &mut mem).unwrap();
        assert_eq!(p.stdout, b"");
    }
}
