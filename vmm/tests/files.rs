//! The writable in-VM filesystem through a real VM (guest-functions/c/tests/files.c): what
//! the program wrote before its snapshot point is in every restored call, what a call
//! writes is gone at the next one, the rootfs on the host never changes, and writes stop
//! at the memory cap.

mod common;
use common::*;
use vmm::StartMode;

const CHECK: &str = "/tmp/state.txt: 28 bytes: written before the snapshot
init.txt: 11 bytes: in the cwd
/tmp/state.txt: 47 bytes: written before the snapshot
appended by a call
ls /tmp: made-at-init state.txt
mkstemp: 1
write: 5
rename: 0
/tmp/renamed: 5 bytes: temp
unlink: 0
stat after unlink: -1 ENOENT
mkdir: 0
rmdir: 0
rmdir non-empty: -1 ENOTEMPTY
/data/note.txt: 18 bytes: changed in the VM
ls /data: note.txt
statfs: 0
statfs type 0x1021994, room <= memory: 1
write /dev/null: 1
status starts: Name:\tfile
done
";

#[test]
fn files_written_before_the_snapshot_are_in_every_call_and_a_calls_writes_are_its_own() {
    for mode in [StartMode::Cold, StartMode::Snapshot] {
        let f = load("files", mode);
        for call in 0..3 {
            let out = output(&f, b"check");
            assert_eq!(String::from_utf8_lossy(&out.stdout), CHECK, "{mode:?}, call {call}");
        }
    }
    let host = bundle("files").join("rootfs/data/note.txt");
    assert_eq!(std::fs::read(host).unwrap(), b"from the rootfs\n", "the rootfs on the host is never written");
    assert!(!bundle("files").join("rootfs/init.txt").exists());
}

#[test]
fn writing_past_the_memory_cap_is_enospc_and_deleting_gives_the_room_back() {
    let f = load("files", StartMode::Cold);
    let out = output(&f, b"fill");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "filled until ENOSPC, within the memory size: 1, more than half of it: 1\nunlink: 0\nwrite after unlink: 1048576\ndone\n"
    );
}
