//! futex: waits block the calling thread (the run loop runs another thread, or sleeps out
//! the timeout, never past the call's deadline), wakes and requeues act on the call's thread
//! table (`threads.rs`). Private and shared futexes are the same here: one address space.

use super::time::{read_duration, time_until};
use super::*;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
/// FUTEX_WAIT_BITSET's absolute timeout is on CLOCK_REALTIME, not CLOCK_MONOTONIC (Linux
/// refuses the flag with other operations here: ENOSYS).
const FUTEX_CLOCK_REALTIME: u64 = 256;
const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;

/// futex(uaddr, op, val, timeout or val2, uaddr2, val3), in the order Linux checks its
/// arguments: the timeout first, then the bitset, the word's alignment and address, and its
/// value. Private and shared futexes are the same here: there is one address space.
pub(super) fn sys_futex(p: &mut Process, mem: &mut GuestMemory, args: [u64; 6]) -> Outcome {
    let [uaddr, op, val, timeout, uaddr2, val3] = args;
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = op & FUTEX_CLOCK_REALTIME != 0;
    match cmd {
        FUTEX_WAKE | FUTEX_WAKE_BITSET | FUTEX_REQUEUE | FUTEX_CMP_REQUEUE if realtime => ret(Err(ENOSYS)),
        FUTEX_WAKE => ret(wake(p, uaddr, val, u32::MAX)),
        FUTEX_WAKE_BITSET => ret(wake(p, uaddr, val, val3 as u32)),
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            let expected = (cmd == FUTEX_CMP_REQUEUE).then_some(val3 as u32);
            ret(requeue(p, mem, ptr(uaddr), val, timeout, ptr(uaddr2), expected))
        }
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 as u32 };
            match wait(mem, ptr(uaddr), cmd, realtime, val as u32, ptr(timeout), bitset) {
                Ok(d) => Outcome::Block(Wait::new("futex", WaitFor::Futex { addr: uaddr, bitset }, d, Err(ETIMEDOUT))),
                Err(e) => ret(Err(e)),
            }
        }
        _ => ret(Err(ENOSYS)),
    }
}

fn check_word(uaddr: u64) -> Result<(), Errno> {
    if !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    Ok(())
}

fn wake(p: &mut Process, uaddr: u64, n: u64, bitset: u32) -> SysResult {
    if bitset == 0 {
        return Err(EINVAL);
    }
    check_word(uaddr)?;
    let n = (n as i32).max(1) as u32; // an int; Linux wakes one waiter for a count of 0 or less
    let woken = p.threads.futex_wake(uaddr, n, bitset);
    // A thread is ready to run now: the run loop re-arms its kick for the time slice.
    p.timer_changed |= woken > 0;
    Ok(u64::from(woken))
}

/// FUTEX_REQUEUE and FUTEX_CMP_REQUEUE (`expected`: the value uaddr must hold).
fn requeue(
    p: &mut Process,
    mem: &GuestMemory,
    uaddr: UserAddr,
    wake: u64,
    requeue: u64,
    uaddr2: UserAddr,
    expected: Option<u32>,
) -> SysResult {
    let (wake, requeue) = (wake as i32, requeue as i32);
    if wake < 0 || requeue < 0 {
        return Err(EINVAL);
    }
    check_word(uaddr.raw())?;
    check_word(uaddr2.raw())?;
    if let Some(expected) = expected {
        if mem.read_user_obj::<u32>(uaddr)? != expected {
            return Err(EAGAIN);
        }
    }
    let moved = p.threads.futex_requeue(uaddr.raw(), wake as u32, uaddr2.raw(), requeue as u32);
    p.timer_changed |= moved > 0;
    Ok(u64::from(moved))
}

/// Checks a wait's arguments and word: how long it would sleep (`None`: forever), or why it
/// returns at once.
fn wait(
    mem: &GuestMemory,
    uaddr: UserAddr,
    cmd: u64,
    realtime: bool,
    expected: u32,
    timeout: UserAddr,
    bitset: u32,
) -> Result<Option<Duration>, Errno> {
    let sleep_for = if timeout.is_null() {
        None
    } else {
        let t = read_duration(mem, timeout)?;
        Some(if cmd == FUTEX_WAIT {
            t // relative
        } else {
            time_until(if realtime { CLOCK_REALTIME } else { CLOCK_MONOTONIC }, t)?
        })
    };
    if realtime && cmd == FUTEX_WAIT {
        return Err(ENOSYS); // FUTEX_CLOCK_REALTIME is for absolute timeouts only
    }
    if bitset == 0 || !uaddr.raw().is_multiple_of(4) {
        return Err(EINVAL);
    }
    if mem.read_user_obj::<u32>(uaddr)? != expected {
        return Err(EAGAIN);
    }
    Ok(sleep_for)
}
