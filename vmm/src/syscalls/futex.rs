//! futex with one thread: nobody else can change the word or wake a waiter. A wait fails at
//! once when the word differs; otherwise it blocks ([`Outcome::Block`]) until its timeout,
//! returning ETIMEDOUT (with one thread, a wait with no timeout ends the call).

use super::time::{read_duration, time_until};
use super::*;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
/// FUTEX_WAIT_BITSET's absolute timeout is on CLOCK_REALTIME, not CLOCK_MONOTONIC (Linux
/// refuses the flag with other operations here: ENOSYS).
const FUTEX_CLOCK_REALTIME: u64 = 256;
const CLOCK_REALTIME: u64 = 0;
const CLOCK_MONOTONIC: u64 = 1;

/// futex(uaddr, op, val, timeout, uaddr2, val3), in the order Linux checks its arguments:
/// the timeout first, then the bitset, the word's alignment and address, and its value.
pub(super) fn sys_futex(mem: &mut GuestMemory, uaddr: u64, op: u64, val: u64, timeout: u64, val3: u64) -> Outcome {
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let realtime = op & FUTEX_CLOCK_REALTIME != 0;
    match cmd {
        FUTEX_WAKE | FUTEX_WAKE_BITSET if realtime => ret(Err(ENOSYS)),
        FUTEX_WAKE => Outcome::Return(0),
        FUTEX_WAKE_BITSET => ret(if val3 as u32 == 0 { Err(EINVAL) } else { Ok(0) }),
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let bitset = if cmd == FUTEX_WAIT { u32::MAX } else { val3 as u32 };
            match wait(mem, uaddr, cmd, realtime, val as u32, timeout, bitset) {
                Ok(d) => Outcome::Block(Wait::new("futex", WaitFor::Futex { addr: uaddr }, d, Err(ETIMEDOUT))),
                Err(e) => ret(Err(e)),
            }
        }
        _ => ret(Err(ENOSYS)),
    }
}

/// Checks a wait's arguments and word: how long it would sleep (`None`: forever), or why it
/// returns at once.
fn wait(
    mem: &GuestMemory,
    uaddr: u64,
    cmd: u64,
    realtime: bool,
    expected: u32,
    timeout: u64,
    bitset: u32,
) -> Result<Option<Duration>, Errno> {
    let sleep_for = if timeout == 0 {
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
    if bitset == 0 || !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    if u32::from_le_bytes(mem.read_user_array::<4>(uaddr)?) != expected {
        return Err(EAGAIN);
    }
    Ok(sleep_for)
}
