//! The guest's "operating system" state: its address space, fds, rootfs, cwd, signal
//! dispositions, the request it reads and the response it writes. Plain data: the syscall
//! layer works on it without KVM, which is how its tests run.

use std::time::Instant;

use crate::budget::MemoryBudget;
use crate::files::{FdTable, Rootfs};
use crate::mm::AddressSpace;
use crate::overlay::Overlay;
use crate::threads::Threads;

/// Identity the program sees (it is never real: there are no other processes or users).
pub const GUEST_PID: u64 = 100;
pub const GUEST_PPID: u64 = 1;
/// The uid (and gid) the guest program runs as.
pub const GUEST_UID: u64 = 1000;

/// Why a syscall ended the call instead of returning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// exit or exit_group with this status.
    Exit(i32),
    /// The program's stdout+stderr went over the cap.
    OutputLimit { limit: usize },
    /// The program sent itself a fatal signal (abort() does).
    Signal(i32),
    /// The program asked for something that can never complete here (e.g. a futex wait that
    /// no other thread could wake).
    Unsupported(String),
}

/// One syscall, for `--trace-syscalls`.
#[derive(Debug, Clone)]
pub struct SyscallRecord {
    /// The syscall number.
    pub nr: u64,
    /// Its six argument registers.
    pub args: [u64; 6],
    /// The raw return value (negative errno as a two's-complement u64), or None if it stopped
    /// or blocked (a blocked syscall's result is not known when it is traced).
    pub result: Option<i64>,
}

/// Receives every syscall as it completes (`--trace-syscalls`).
pub type SyscallTracer = Box<dyn FnMut(&SyscallRecord) + Send>;

/// Most distinct unknown syscall numbers counted per call: a program calling every number
/// there is must not grow the monitor's memory. Later numbers only add to `unknown_dropped`.
pub const MAX_UNKNOWN_SYSCALL_NUMBERS: usize = 64;
/// Most syscalls handed to the tracer per call (a tracer may keep them all); the rest are
/// counted in `trace_dropped`.
pub const MAX_TRACED_SYSCALLS: u64 = 100_000;

/// Counts of what the program did, per call. Bounded whatever the program does.
#[derive(Debug, Clone, Default)]
pub struct SyscallStats {
    pub syscalls: u64,
    /// Syscalls answered with ENOSYS because we do not implement them, by number (at most
    /// [`MAX_UNKNOWN_SYSCALL_NUMBERS`] numbers).
    pub unknown: std::collections::BTreeMap<u64, u64>,
    /// Unknown syscalls whose number found `unknown` full.
    pub unknown_dropped: u64,
    /// Syscalls refused on purpose (fork, execve, ptrace...: EPERM), by number; a fixed,
    /// short list of numbers, so bounded.
    pub refused: std::collections::BTreeMap<u64, u64>,
    /// Syscalls not handed to the tracer because it had [`MAX_TRACED_SYSCALLS`] already.
    pub trace_dropped: u64,
    traced: u64,
}

impl SyscallStats {
    /// Counts one refused syscall `nr`.
    pub fn count_refused(&mut self, nr: u64) {
        *self.refused.entry(nr).or_insert(0) += 1;
    }

    /// Counts one unknown syscall `nr`.
    pub fn count_unknown(&mut self, nr: u64) {
        if let Some(n) = self.unknown.get_mut(&nr) {
            *n += 1;
        } else if self.unknown.len() < MAX_UNKNOWN_SYSCALL_NUMBERS {
            self.unknown.insert(nr, 1);
        } else {
            self.unknown_dropped += 1;
        }
    }
}

/// An `rt_sigaction` as the program set it (`signal_delivery.rs` acts on it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;

/// ITIMER_REAL, armed: SIGALRM at `next`, then every `interval` (zero: once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealTimer {
    pub next: Instant,
    pub interval: std::time::Duration,
}

/// The state the syscall layer keeps for one program.
pub struct Process {
    pub space: AddressSpace,
    pub fds: FdTable,
    /// Host memory the monitor holds for the program (pipe buffers, written files...):
    /// at most the program's own memory size.
    pub budget: MemoryBudget,
    pub rootfs: Rootfs,
    /// What the program wrote to the filesystem (the rootfs itself is never written).
    pub overlay: Overlay,
    pub cwd: String,
    /// The program's path inside the rootfs (readlink /proc/self/exe).
    pub exe_path: String,
    pub stdin: Vec<u8>,
    pub stdin_pos: usize,
    /// The call's request head, for [`crate::request::REQUEST_FILE`]; `None` until the call
    /// has a request (while a snapshot is taken).
    pub request_head: Option<crate::request::RequestHead>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub max_output: usize,
    pub sigactions: [SigAction; 64],
    /// The current thread's signal mask, alternate signal stack and FS base (the other
    /// threads' are parked with them in `threads`).
    pub sigmask: u64,
    pub sigaltstack: [u8; 24],
    pub fs_base: u64,
    /// Every thread but the current one, and the current one's tid and state.
    pub threads: Threads,
    /// Signals sent to the process (kill, alarm) and not yet delivered, one bit per signal.
    pub pending_signals: u64,
    /// The si_code each pending signal was sent with (SI_USER, SI_TKILL, SI_KERNEL).
    pub signal_codes: [i32; 64],
    /// ITIMER_REAL (alarm, setitimer): when it next fires, and its interval.
    pub itimer_real: Option<RealTimer>,
    /// Set by a syscall that moved a wake-up time (setitimer): the run loop re-arms its timer.
    pub timer_changed: bool,
    pub umask: u32,
    /// The nice value (setpriority): recorded, since the vCPU's scheduling is the host's.
    pub nice: i32,
    /// The auxv the program started with (kept for snapshots).
    pub auxv: Vec<(u64, u64)>,
    /// When the call's deadline passes (sleeps are cut short there).
    pub deadline: Option<Instant>,
    pub stats: SyscallStats,
    pub trace: Option<SyscallTracer>,
    /// The VM's page tables, which follow `space` ([`crate::page_tables`]); `None` where the
    /// syscall layer runs without a VM (its tests).
    pub page_tables: Option<crate::page_tables::PageTables>,
}

/// What every call's process of one function starts from, whichever recipe makes it (a cold
/// start or a restore): built once when the function is loaded, handed to both.
#[derive(Clone)]
pub(crate) struct ProcessSpec {
    /// The function's root filesystem, every path the program opens resolved inside it.
    pub rootfs: Rootfs,
    /// The program's path inside the rootfs (`/proc/self/exe`, `AT_EXECFN`).
    pub exe_path: String,
    /// The working directory a cold start begins in.
    pub cwd: String,
    /// stdout + stderr cap, bytes.
    pub max_output: usize,
    /// The call's wall-clock deadline.
    pub timeout: std::time::Duration,
}

impl Process {
    /// Bit of signal `sig` (1..=64) in a mask.
    pub fn sig_bit(sig: i32) -> u64 {
        1u64 << ((sig - 1) & 63)
    }

    /// Whether nothing but time can end a wait: one thread, no alarm that could interrupt it,
    /// and no pending signal it could take now (rt_sigsuspend unblocks one that an alarm
    /// raised before it).
    pub fn alone(&self) -> bool {
        !self.threads.others_exist() && self.itimer_real.is_none() && !self.signal_ready()
    }

    /// Whether the current thread has a signal to take before it returns to the program
    /// (cheap: the run loop asks after every syscall).
    pub fn signal_ready(&self) -> bool {
        (self.pending_signals | self.threads.current.pending) & !self.sigmask != 0
    }

    /// Hands `record` to the tracer, if there is one and it has not had its fill this call.
    pub fn trace(&mut self, record: &SyscallRecord) {
        let Some(trace) = self.trace.as_mut() else { return };
        if self.stats.traced < MAX_TRACED_SYSCALLS {
            self.stats.traced += 1;
            trace(record);
        } else {
            self.stats.trace_dropped += 1;
        }
    }

    /// A process with fds 0/1/2 open, cwd `cwd` and the given address space.
    /// The process of a call of the function `spec` describes, over `space`, in `cwd` (a
    /// restored program may have changed directory before its snapshot).
    pub(crate) fn for_call(space: AddressSpace, spec: &ProcessSpec, cwd: &str) -> Self {
        Process::new(space, spec.rootfs.clone(), spec.exe_path.clone(), cwd.to_string(), spec.max_output)
    }

    pub fn new(space: AddressSpace, rootfs: Rootfs, exe_path: String, cwd: String, max_output: usize) -> Self {
        let budget = MemoryBudget::new(space.memory_size());
        Process {
            overlay: Overlay::new(&budget),
            budget,
            space,
            fds: FdTable::new(),
            rootfs,
            cwd,
            exe_path,
            stdin: Vec::new(),
            stdin_pos: 0,
            request_head: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            max_output,
            sigactions: [SigAction::default(); 64],
            sigmask: 0,
            sigaltstack: [0; 24],
            fs_base: 0,
            threads: Threads::new(),
            pending_signals: 0,
            signal_codes: [0; 64],
            itimer_real: None,
            timer_changed: false,
            umask: 0o022,
            nice: 0,
            auxv: Vec::new(),
            deadline: None,
            stats: SyscallStats::default(),
            trace: None,
            page_tables: None,
        }
    }
}
