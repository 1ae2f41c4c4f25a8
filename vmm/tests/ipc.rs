//! Pipes, socketpairs, eventfds, poll/select/epoll in a real VM (guest-functions/c/tests/ipc.c):
//! the objects live in the monitor; a wait nothing can end ends the call clearly; queued
//! bytes are bounded by the program's memory size.

mod common;
use common::*;
use vmm::{CallError, StartMode};

const BASICS: &str = "pipe: 0
write 5: 5
read: 5
poll empty 100ms: 0, waited >= 100ms: 1
read non-blocking: -1 EAGAIN
poll after close: 1 revents 0x10
read at eof: 0
eventfd read: 8
eventfd value: 6
eventfd read again: -1 EAGAIN
socketpair: 0
epoll_ctl add: 0
epoll_wait empty 50ms: 0, waited >= 50ms: 1
epoll_wait: 1 data 42 events 0x1
recv: 4 ping
select writable: 1 1
recv after shutdown: 0
epoll_ctl itself: -1 EINVAL
socket(AF_INET): -1 EPERM
done
";

#[test]
fn pipes_sockets_eventfds_and_readiness_work_cold_and_restored() {
    for mode in [StartMode::Cold, StartMode::Snapshot] {
        let f = load("ipc", mode);
        let out = output(&f, b"basics");
        assert_eq!(String::from_utf8_lossy(&out.stdout), BASICS, "{mode:?}");
        assert_eq!(out.exit_code, 0);
    }
}

#[test]
fn a_read_nothing_can_ever_satisfy_ends_the_call_with_a_clear_error() {
    let f = load("ipc", StartMode::Cold);
    match error(&f, b"read-forever") {
        CallError::Unsupported(why) => assert_eq!(
            why,
            "read waits for data on fd 3, which only the program itself could write with no timeout: \
             the program has one thread, so nothing can ever wake it"
        ),
        other => panic!("expected the call to end as unsupported, got {other:?}"),
    }
}

#[test]
fn filling_every_socket_stops_at_the_programs_memory_size() {
    let f = load("ipc", StartMode::Cold);
    let out = output(&f, b"fill-sockets");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "socketpairs: 510, then EMFILE\nqueued within the memory size: 1, queued > half of it: 1\ndone\n"
    );
}
