//! Syscall argument decoding against a real VM: the guest `fuzz-syscalls`
//! (`guest-functions/c/tests/fuzz-syscalls.c`) reads 64-byte records (nr, how each argument
//! is formed, six raw values) from its request and issues each as a raw `syscall`. One run is
//! one call in a brand-new VM with a batch of records (`SNAPCALL_FUZZ_BATCH`, default 2048).
//!
//! Invariants: the monitor never panics; every call ends with an exit or a guest-caused
//! [`CallError`] (fault, signal, deadline, output cap, unsupported, outside memory, triple
//! fault), never a host-side error; every VM is destroyed and no file descriptor is left
//! behind. Executions are the syscalls the monitor handled (`CallStats::syscalls`).

use std::path::PathBuf;
use std::time::Duration;

use vmm::{CallError, EmptyVm, Function, StartMode};

use crate::{signature, Mutator, Outcome, Rng, Target};

/// Syscalls the monitor implements that leave the guest's own loop standing.
const SAFE: &[u64] = &[
    0, 1, 2, 3, 4, 5, 6, 8, 13, 14, 16, 17, 19, 20, 21, 24, 28, 32, 33, 39, 63, 72, 73, 74, 75, 79, 89, 95, 96, 97, 99,
    102, 104, 107, 108, 110, 111, 121, 124, 131, 186, 201, 204, 217, 218, 228, 229, 257, 262, 267, 269, 273, 292, 302,
    318, 334, 439, 80, 61,
];
/// Memory management: the interesting bookkeeping, and what can pull the guest's own memory away.
const MEMORY: &[u64] = &[9, 10, 11, 12, 25, 28];
/// Sleepers, exits and signals: they end or stall the batch, so they are rare.
const RARE: &[u64] = &[35, 230, 202, 60, 231, 62, 200, 234, 158, 15];
/// Refused or filesystem-writing syscalls (EPERM / EROFS) and a few unknown ones.
const REFUSED: &[u64] = &[56, 57, 58, 59, 41, 42, 43, 49, 50, 101, 82, 83, 84, 86, 87, 88, 90, 76, 77, 133, 165, 319];

/// Raw values worth trying: fds, lengths, flags, and addresses of every interesting region.
const RAW: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    8,
    10,
    63,
    64,
    1023,
    1024,
    4095,
    4096,
    65536,
    1 << 20,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 47,
    1 << 62,
    u64::MAX,
    u64::MAX - 4095,
    -100i64 as u64, // AT_FDCWD
    -1i64 as u64,
    -2i64 as u64,
    0x7fff_ffff,
    0x1000,
    0x9000,
    0xA000,
    0xB000,
    0xD000,
    0x10000,
    0x21000,
    0x22000,
    0x20_0000,
    0x40_0000,
    (64 << 20) - 4096,
    64 << 20,
    (64 << 20) - (8 << 20),
    0xffff_8000_0000_0000,
    0x0000_7fff_ffff_f000,
];

/// Host-side errors: the fuzzer must never see one.
fn guest_caused(e: &CallError) -> bool {
    match e {
        CallError::GuestFault { .. }
        | CallError::StackOverflow { .. }
        | CallError::WriteToReadOnly { .. }
        | CallError::ExecuteNonExecutable { .. }
        | CallError::Deadline(_)
        | CallError::OutputLimit { .. }
        | CallError::Signal(_)
        | CallError::SignalFrame(_)
        | CallError::Unsupported(_)
        | CallError::OutsideMemory { .. }
        | CallError::TripleFault => true,
        CallError::KvmInternal { .. }
        | CallError::UnexpectedExit(_)
        | CallError::NoStdinRead(_)
        | CallError::Vm(_)
        | CallError::Timer(_) => false,
    }
}

fn kvm_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().contains("kvm")))
                .count()
        })
        .unwrap_or(0)
}

pub struct Syscalls {
    function: Function,
    batch: usize,
    last_syscalls: u64,
    /// (all fds, KVM fds) after the first call.
    fds_at_start: Option<(usize, usize)>,
}

impl Syscalls {
    pub fn new() -> Syscalls {
        let bundle = bundle_dir();
        let function = Function::load(&bundle, StartMode::Cold)
            .unwrap_or_else(|e| panic!("{}: {e} (run guest-functions/build.sh --no-python)", bundle.display()));
        let batch = std::env::var("SNAPCALL_FUZZ_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(2048);
        Syscalls { function, batch: batch.clamp(1, 16384), last_syscalls: 0, fds_at_start: None }
    }
}

impl Default for Syscalls {
    fn default() -> Self {
        Syscalls::new()
    }
}

/// `target/test-functions/fuzz-syscalls`.
pub fn bundle_dir() -> PathBuf {
    crate::root().join("target/test-functions/fuzz-syscalls")
}

fn record(rng: &mut Rng, out: &mut Vec<u8>) {
    let nr = match rng.below(1000) {
        0..=799 => *rng.pick(SAFE),
        800..=929 => *rng.pick(MEMORY),
        930..=979 => *rng.pick(REFUSED),
        980..=997 => rng.below(470) as u64,
        _ => *rng.pick(RARE),
    };
    let mut kinds = 0u64;
    let mut raw = [0u64; 6];
    for (k, r) in raw.iter_mut().enumerate() {
        let kind = match rng.below(100) {
            0..=39 => 0,
            40..=69 => 1,
            70..=81 => 2,
            82..=87 => 3,
            88..=93 => 4,
            _ => 5,
        };
        kinds |= kind << (4 * k);
        *r = match rng.below(4) {
            0 => rng.next_u64(),
            1 => rng.next_u64() & 0xFFFF,
            _ => *rng.pick(RAW),
        };
    }
    // The sleepers with a wild timeout would sleep out the deadline: give them small ones.
    if RARE.contains(&nr) && rng.one_in(2) {
        raw[1] &= 0xFF;
    }
    out.extend_from_slice(&nr.to_le_bytes());
    out.extend_from_slice(&kinds.to_le_bytes());
    for r in raw {
        out.extend_from_slice(&r.to_le_bytes());
    }
}

impl Target for Syscalls {
    fn name(&self) -> &'static str {
        "syscalls"
    }

    fn mutator(&self) -> Mutator {
        Mutator { dictionary: Vec::new(), max_len: 16384 * 64 }
    }

    fn hang_limit(&self) -> Duration {
        // The function's deadline plus room for a loaded machine.
        self.function.config().limits.timeout + Duration::from_secs(20)
    }

    fn executions(&self) -> u64 {
        self.last_syscalls
    }

    fn generate(&mut self, rng: &mut Rng) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.batch * 64);
        for _ in 0..self.batch {
            record(rng, &mut out);
        }
        Some(out)
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        let vm = EmptyVm::create(self.function.memory_size()).map_err(|e| format!("creating the VM: {e}"))?;
        let ready = self.function.start(vm, input).map_err(|e| format!("start: {e}"))?;
        let finished = ready.run();
        self.last_syscalls = finished.stats().syscalls;
        let unknown = finished.stats().unknown_syscalls.len();
        let (outcome, used_vm) = finished.into_parts();
        drop(used_vm);
        // The first call opens the process-wide KVM handles; count from after it.
        if self.fds_at_start.is_none() {
            self.fds_at_start = Some((crate::fd_count(), kvm_fds()));
        }
        match outcome {
            Ok(out) => {
                let done = out.stderr.ends_with(b"\n") && out.stderr.windows(5).any(|w| w == b"done ");
                Ok(signature(&[b"exit", &out.exit_code.to_le_bytes(), &[done as u8, unknown.min(8) as u8]]))
            }
            Err(e) if guest_caused(&e) => {
                let d = format!("{e:?}");
                let variant = d.split([' ', '(', '{']).next().unwrap_or("").to_owned();
                Ok(signature(&[b"err", variant.as_bytes()]))
            }
            Err(e) => Err(format!("a host-side error from a guest's syscalls: {e} ({e:?})")),
        }
    }

    fn leak_check(&mut self) -> Result<(), String> {
        let (now, kvm) = (crate::fd_count(), kvm_fds());
        match self.fds_at_start {
            // The process-wide KVM handles (/dev/kvm, a keep-alive VM and vCPU) stay open.
            Some((start, kvm_start)) if now > start || kvm > kvm_start => Err(format!(
                "{start} fds ({kvm_start} KVM) open after the first call, {now} ({kvm} KVM) after the last"
            )),
            _ => Ok(()),
        }
    }
}
