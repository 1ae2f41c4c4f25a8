//! One call: a VM with a program loaded or restored into it ([`ReadyCall`]) runs until the
//! program exits, faults, or runs out of time or output ([`FinishedCall`]), whose
//! [`FinishedCall::into_parts`] gives the outcome and the [`UsedVm`], which can only be
//! destroyed. A `ReadyCall` is consumed by `run`, so a VM can never run two calls.

use std::time::{Duration, Instant};

use kvm_bindings::kvm_regs;

use crate::deadline::Deadline;
use crate::exits::{classify, explain_internal_error, Event, InternalError};
use crate::layout::*;
use crate::process::{Process, Stop};
use crate::scheduler::{Clock, UserContext};
use crate::syscalls::{self, Outcome};
use crate::vm::{self, Machine, UsedVm, VmError, MSR_FS_BASE};

/// Why a call did not produce an exit status.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The program raised a CPU exception (at CPL3, or in a monitor stub).
    #[error(
        "guest fault: {name} (vector {vector}) at rip {rip:#x}, error code {error_code:#x}, cr2 {cr2:#x}, cpl {cpl}"
    )]
    GuestFault {
        /// The exception vector.
        vector: u8,
        /// Its name (`#PF page fault`).
        name: &'static str,
        /// Where it was raised.
        rip: u64,
        /// The error code the CPU pushed (0 if none).
        error_code: u64,
        /// For a page fault, the address that faulted (else 0).
        cr2: u64,
        /// The privilege level it was raised at.
        cpl: u8,
    },
    /// The program ran into the guard page below its stack.
    #[error("stack overflow: the program ran down through its 8 MiB stack into the guard page at {guard:#x} (rip {rip:#x}, address {addr:#x})")]
    StackOverflow {
        /// Where the program was.
        rip: u64,
        /// The address it touched.
        addr: u64,
        /// The guard page's address.
        guard: u64,
    },
    /// A #PF on a present page the program may read but not write (`error_code` as pushed).
    #[error("write to read-only memory at {addr:#x} (rip {rip:#x}, #PF error code {error_code:#x})")]
    WriteToReadOnly {
        /// Where the program was.
        rip: u64,
        /// The address it wrote.
        addr: u64,
        /// The #PF error code.
        error_code: u64,
    },
    /// A #PF fetching an instruction from a present page without execute permission.
    #[error("execute of non-executable memory at {addr:#x} (#PF error code {error_code:#x})")]
    ExecuteNonExecutable {
        /// Where the program jumped from.
        rip: u64,
        /// The address fetched.
        addr: u64,
        /// The #PF error code.
        error_code: u64,
    },
    /// The call's wall-clock deadline passed.
    #[error("deadline of {0:?} passed")]
    Deadline(Duration),
    /// stdout + stderr went over the function's cap.
    #[error("output went over the cap of {limit} bytes")]
    OutputLimit {
        /// The cap in bytes.
        limit: usize,
    },
    /// The program sent itself a fatal signal (`abort()`).
    #[error("killed by signal {0}")]
    Signal(i32),
    /// A signal handler's frame could not be written to the program's stack: the kernel
    /// kills such a program with SIGSEGV.
    #[error("killed by signal 11: {0}")]
    SignalFrame(#[from] crate::signal_delivery::FrameError),
    /// The program asked for something snapcall does not do (a wait nothing can end).
    #[error("unsupported by snapcall: {0}")]
    Unsupported(String),
    /// The program touched a guest-physical address outside its memory.
    #[error("guest touched guest-physical address {addr:#x}, outside its memory")]
    OutsideMemory {
        /// The guest-physical address.
        addr: u64,
    },
    /// The vCPU shut down (a fault while delivering a fault).
    #[error("guest triple-faulted (KVM shutdown exit)")]
    TripleFault,
    /// KVM could not emulate or deliver something.
    #[error("KVM internal error at rip {rip:#x}, cpl {cpl}: {what} (suberror {suberror})")]
    KvmInternal {
        /// KVM's suberror code.
        suberror: u32,
        /// What that code means.
        what: &'static str,
        /// Where the vCPU stood.
        rip: u64,
        /// At which privilege level.
        cpl: u8,
    },
    /// A VM exit the monitor has no meaning for.
    #[error("unexpected VM exit: {0}")]
    UnexpectedExit(String),
    /// Capture only: the program exited before it read its request.
    #[error("the program did not read its request before exiting with status {0}, so there is nothing to snapshot")]
    NoStdinRead(i32),
    /// Driving the VM failed (an ioctl, guest memory).
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The deadline timer could not be armed.
    #[error("could not arm the deadline timer: {0}")]
    Timer(std::io::Error),
}

/// What the program printed and how it exited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Everything the program wrote to fd 1.
    pub stdout: Vec<u8>,
    /// Everything it wrote to fd 2.
    pub stderr: Vec<u8>,
    /// Its exit status (`exit_group`'s argument).
    pub exit_code: i32,
}

/// Wall-clock time of each phase of one call.
#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimings {
    /// Taking a VM from the pool (or creating one when the pool is empty).
    pub vm: Duration,
    /// Starting the program in the VM: [`crate::Function::start`], which loads it (cold)
    /// or restores its snapshot.
    pub start: Duration,
    /// Running until exit.
    pub run: Duration,
}

/// Counts for one call.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// VM exits (KVM_RUN returns), including the final one.
    pub exits: u64,
    /// Syscalls the program made.
    pub syscalls: u64,
    /// Syscalls answered ENOSYS, by number (at most `MAX_UNKNOWN_SYSCALL_NUMBERS` numbers).
    pub unknown_syscalls: std::collections::BTreeMap<u64, u64>,
    /// Syscalls refused on purpose (fork, vfork, execve, ptrace...), by number; see
    /// [`CallStats::refusals`] for why.
    pub refused_syscalls: std::collections::BTreeMap<u64, u64>,
    /// Unknown syscalls not in `unknown_syscalls` because it was full.
    pub unknown_syscalls_dropped: u64,
    /// Syscalls `--trace-syscalls` did not see because the call had traced its maximum.
    pub traced_syscalls_dropped: u64,
    /// Whether the call started from a snapshot.
    pub restored: bool,
    /// Host page faults taken by the calling thread while the guest ran: each first touch
    /// of a guest page that the host had not mapped yet (minor faults, getrusage).
    pub host_page_faults: u64,
    /// Syscalls after which the guest rewrote live page-table entries (an mprotect, or an
    /// mmap/munmap/mremap that changed a protection; `page_tables.rs`): each cost one ioctl
    /// and a run of the CPL0 table writer.
    pub page_table_updates: u64,
}

impl CallStats {
    /// One line per refused syscall: "fork refused 2 times (EPERM): child processes are not
    /// supported: the function is one process".
    pub fn refusals(&self) -> Vec<String> {
        self.refused_syscalls
            .iter()
            .map(|(&nr, &n)| {
                let times = if n == 1 { "once".to_string() } else { format!("{n} times") };
                format!("{} refused {times} (EPERM): {}", syscalls::name(nr), syscalls::refusal_reason(nr))
            })
            .collect()
    }
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    // SAFETY: an all-zero rusage is valid; getrusage fills it for this thread.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_minflt as u64
}

/// A VM with a program in it, ready to run exactly once.
pub struct ReadyCall {
    pub(crate) vm: Machine,
    pub(crate) process: Process,
    pub(crate) timeout: Duration,
    pub(crate) timings: PhaseTimings,
    pub(crate) stats: CallStats,
}

/// How much of a failed call's stderr [`FinishedCall::stderr_tail`] keeps: the last 4 KiB.
pub const STDERR_TAIL_BYTES: usize = 4096;

/// A call that has ended: its outcome, and the used VM waiting to be destroyed.
pub struct FinishedCall {
    vm: UsedVm,
    outcome: Result<Output, CallError>,
    /// A failed call's last [`STDERR_TAIL_BYTES`] of stderr (empty when it exited).
    stderr_tail: Vec<u8>,
    /// A failed call's stdout up to its failure (empty when it exited).
    failed_stdout: Vec<u8>,
    timings: PhaseTimings,
    stats: CallStats,
}

impl FinishedCall {
    /// The program's output and exit status, or why there is none.
    pub fn outcome(&self) -> &Result<Output, CallError> {
        &self.outcome
    }
    /// When the call failed (fault, deadline, signal, output cap, ...): the last
    /// [`STDERR_TAIL_BYTES`] the program wrote to stderr before it, usually the program's own
    /// account of what went wrong. Empty when the program exited (its whole stderr is in
    /// [`Output::stderr`]) or wrote nothing to stderr.
    pub fn stderr_tail(&self) -> &[u8] {
        &self.stderr_tail
    }
    /// When the call failed: everything the program wrote to stdout before it (a partial
    /// response, which `snapcall run` still prints; e.g. the results a test runner reported
    /// before the test that crashed). Empty when the program exited (its stdout is in
    /// [`Output::stdout`]).
    pub fn failed_stdout(&self) -> &[u8] {
        &self.failed_stdout
    }
    /// How long each phase of the call took.
    pub fn timings(&self) -> PhaseTimings {
        self.timings
    }
    /// What the call did: exits, syscalls, page faults.
    pub fn stats(&self) -> &CallStats {
        &self.stats
    }
    /// The outcome (to send without copying) and the used VM (to destroy: dropped here, or
    /// handed to [`crate::Runtime::release`] after the response is out).
    pub fn into_parts(self) -> (Result<Output, CallError>, UsedVm) {
        (self.outcome, self.vm)
    }
}

/// A syscall as the program made it: number, arguments, and where to return.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyscallEntry {
    pub nr: u64,
    pub args: [u64; 6],
    /// rcx: the instruction after `syscall`.
    pub return_rip: u64,
    /// r11: rflags at the `syscall`.
    pub rflags: u64,
    pub user_rsp: u64,
}

impl SyscallEntry {
    fn from_regs(regs: &kvm_regs, user_rsp: u64) -> Self {
        SyscallEntry {
            nr: regs.rax,
            args: [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9],
            return_rip: regs.rcx,
            rflags: regs.r11,
            user_rsp,
        }
    }
}

/// Where the run loop stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunUntil {
    /// The program's exit (a call).
    Exit,
    /// Its first read of fd 0, not made (a snapshot's capture).
    StdinRead,
}

/// A program stopped at its first read of stdin, the read not made: what a snapshot saves.
pub(crate) struct AtStdinRead {
    pub(crate) vm: Machine,
    pub(crate) process: Process,
    /// The pending read.
    pub(crate) read: SyscallEntry,
}

/// How the run loop ended without error.
pub(crate) enum LoopEnd {
    Exited(i32),
    /// Stopped at the first read of fd 0 (snapshot capture): the pending syscall.
    StdinRead(SyscallEntry),
}

impl ReadyCall {
    /// Hands the program a request on stdin (before `run`).
    pub fn set_stdin(&mut self, request: &[u8]) {
        self.process.stdin.clear();
        self.process.stdin.extend_from_slice(request);
        self.process.stdin_pos = 0;
    }

    /// Sends every syscall to `trace` as it completes.
    pub fn trace_syscalls(&mut self, trace: crate::process::SyscallTracer) {
        self.process.trace = Some(trace);
    }

    /// Runs the program to its end.
    pub fn run(mut self) -> FinishedCall {
        let start = Instant::now();
        let faults = thread_minor_faults();
        let end = self.run_loop(RunUntil::Exit);
        self.stats.host_page_faults = thread_minor_faults().saturating_sub(faults);
        let outcome = match end {
            Ok(LoopEnd::Exited(code)) => Ok(Output {
                stdout: std::mem::take(&mut self.process.stdout),
                stderr: std::mem::take(&mut self.process.stderr),
                exit_code: code,
            }),
            Ok(LoopEnd::StdinRead(_)) => Err(CallError::UnexpectedExit("stopped at a stdin read".into())),
            Err(e) => Err(e),
        };
        let (stderr_tail, failed_stdout) = match &outcome {
            Ok(_) => (Vec::new(), Vec::new()),
            Err(_) => {
                (tail(&self.process.stderr, STDERR_TAIL_BYTES).to_vec(), std::mem::take(&mut self.process.stdout))
            }
        };
        self.stats.syscalls = self.process.stats.syscalls;
        self.stats.unknown_syscalls = std::mem::take(&mut self.process.stats.unknown);
        self.stats.unknown_syscalls_dropped = self.process.stats.unknown_dropped;
        self.stats.refused_syscalls = std::mem::take(&mut self.process.stats.refused);
        self.stats.traced_syscalls_dropped = self.process.stats.trace_dropped;
        let ReadyCall { vm, process, mut timings, stats, .. } = self;
        // The process's host-side state (files, overlay, pipes, threads) goes with the call,
        // and the run phase counts it: the phases then add up to the call (≈10 µs of a
        // 0.17 ms echo-c call was this drop, after the clock had stopped).
        drop(process);
        timings.run = start.elapsed();
        FinishedCall { vm: UsedVm { machine: vm }, outcome, stderr_tail, failed_stdout, timings, stats }
    }

    /// Runs the program cold up to its first read of stdin (the moment it waits for its
    /// request) and stops there, the read not made: what a snapshot captures.
    pub(crate) fn run_until_stdin_read(mut self) -> Result<AtStdinRead, CallError> {
        match self.run_loop(RunUntil::StdinRead)? {
            LoopEnd::StdinRead(read) => Ok(AtStdinRead { vm: self.vm, process: self.process, read }),
            LoopEnd::Exited(code) => Err(CallError::NoStdinRead(code)),
        }
    }

    /// What the program wrote to stderr so far (for error reports).
    pub fn stderr(&self) -> &[u8] {
        &self.process.stderr
    }

    /// The loop: KVM_RUN, act on the exit, repeat.
    fn run_loop(&mut self, until: RunUntil) -> Result<LoopEnd, CallError> {
        let deadline_at = Instant::now() + self.timeout;
        self.process.deadline = Some(deadline_at);
        // A snapshot's capture waits for the first read of stdin: that one must exit.
        let stdin_may_end = until == RunUntil::Exit;
        let immediate_exit: *mut u8 = &mut self.vm.vcpu.get_kvm_run().immediate_exit;
        // SAFETY: `immediate_exit` points into this vCPU's kvm_run mapping, which lives as
        // long as `self.vm`; the Deadline is dropped at the end of this function, on this
        // thread, before `self.vm` can go away.
        let deadline = unsafe { Deadline::arm(immediate_exit, self.timeout) }.map_err(CallError::Timer)?;
        let clock = Clock { timer: &deadline, deadline_at, timeout: self.timeout };
        crate::output_ring::publish(&self.process, &mut self.vm.memory, stdin_may_end);
        loop {
            self.stats.exits += 1;
            let ran = self.vm.vcpu.run(&mut self.vm.memory);
            // What the program wrote without exiting comes before whatever this exit is. But
            // not at an EINTR, unless the call ends there: a signal stops the vCPU at any
            // instruction, also inside the fast-write stub after it claimed ring space and
            // before it filled it, and a drain then dropped that entry and un-claimed it (the
            // output of 2-3% of calls vanished under a signal storm, vmm/tests/signal_storm.rs).
            // Every other exit is the program's own instruction, never one inside the stub.
            let interrupted = matches!(&ran, Err(e) if e.errno() == libc::EINTR);
            if !interrupted || Instant::now() >= deadline_at {
                crate::output_ring::drain(&mut self.process, &mut self.vm.memory).map_err(stop_error)?;
            }
            let event = match ran {
                Ok(exit) => classify(&exit),
                Err(e) if e.errno() == libc::EINTR => {
                    if Instant::now() >= deadline_at {
                        return Err(CallError::Deadline(self.timeout));
                    }
                    self.vm.vcpu.set_kvm_immediate_exit(0);
                    // Threads and alarms use the same kick for time slices and timeouts.
                    if self.process.threads.others_exist() || self.process.itimer_real.is_some() {
                        self.on_kick(&clock)?;
                    }
                    continue;
                }
                Err(e) => return Err(VmError::from(crate::ioctl::ioctl("KVM_RUN")(e)).into()),
            };
            let entry = match event {
                Event::Syscall => {
                    let regs = self.vm.vcpu.sync_regs().regs;
                    Some((SyscallEntry::from_regs(&regs, regs.rsp), regs))
                }
                _ => None,
            };
            if let Some((call, regs)) = entry {
                if until == RunUntil::StdinRead && is_stdin_read(call.nr, &call.args) {
                    if self.process.threads.others_exist() {
                        return Err(CallError::Unsupported(format!(
                            "the program has {} threads at its first read of stdin, and a snapshot keeps only one: \
                             start threads after that read (or let them exit before it)",
                            self.process.threads.count()
                        )));
                    }
                    return Ok(LoopEnd::StdinRead(call));
                }
                self.process.threads.count_syscall();
                let result = match syscalls::handle(&mut self.process, &mut self.vm.memory, call.nr, call.args) {
                    Outcome::Return(v) => v,
                    // One guest thread and no alarm: only the wait's timeout (or the deadline)
                    // can end it.
                    Outcome::Block(wait) if self.process.alone() => {
                        syscalls::finish_alone(&self.process, wait).map_err(stop_error)?
                    }
                    Outcome::SetFsBase(base) => {
                        vm::set_msrs(&self.vm.vcpu, &[(MSR_FS_BASE, base)])?;
                        0
                    }
                    Outcome::Stop(Stop::Exit(code)) => return Ok(LoopEnd::Exited(code)),
                    Outcome::Stop(stop) => return Err(stop_error(stop)),
                    threads_or_signals => {
                        self.thread_outcome(&call, &regs, threads_or_signals, &clock)?;
                        crate::output_ring::publish(&self.process, &mut self.vm.memory, stdin_may_end);
                        continue;
                    }
                };
                let now = Instant::now();
                if now >= deadline_at {
                    return Err(CallError::Deadline(self.timeout));
                }
                if self.process.timer_changed {
                    self.rearm(&clock);
                }
                let p = &self.process;
                if p.signal_ready() || p.itimer_real.is_some_and(|t| t.next <= now) || self.slice_over(now) {
                    // A signal to run a handler for, or another thread's turn.
                    self.process.threads.current.resume_rax = result;
                    let ctx = UserContext::after_syscall(&call, &regs, result);
                    self.schedule(Some(ctx), self.slice_over(now), &clock)?;
                } else {
                    write_user_return(&mut self.vm.memory, call.return_rip, call.user_rsp, call.rflags, result)?;
                }
                crate::output_ring::publish(&self.process, &mut self.vm.memory, stdin_may_end);
                // The syscall changed page-table entries (mmap, munmap, mprotect, mremap): the
                // guest rewrites them on its way back, so KVM and the TLB see them.
                if let Some(tables) = self.process.page_tables.as_mut().filter(|t| t.has_pending()) {
                    crate::page_tables::enter_table_writer(&mut self.vm, tables, self.process.fs_base)?;
                    self.stats.page_table_updates += 1;
                }
                continue;
            }
            match event {
                Event::Syscall => unreachable!("handled above"),
                Event::Exception(vector) => {
                    if let Some(handled) = self.fault_to_handler(vector) {
                        handled?;
                        continue;
                    }
                    return Err(self.guest_fault(vector));
                }
                Event::OutsideMemory { addr } => return Err(CallError::OutsideMemory { addr }),
                Event::Shutdown => return Err(CallError::TripleFault),
                Event::InternalError => return Err(self.internal_error()),
                Event::Unexpected(what) => return Err(CallError::UnexpectedExit(what)),
            }
        }
    }

    /// A KVM internal-error exit, told apart by where the vCPU stood.
    fn internal_error(&mut self) -> CallError {
        // SAFETY: reading the `internal` member of the exit union after an internal-error
        // exit, which is the member KVM filled.
        let suberror = unsafe { self.vm.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
        let rip = self.vm.vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
        let cpl = self.vm.vcpu.get_sregs().map(|s| s.cs.dpl).unwrap_or(0);
        match explain_internal_error(suberror, rip, cpl) {
            InternalError::MonitorPageFetch { page } => CallError::GuestFault {
                vector: 14,
                name: page,
                rip,
                // What a #PF would push for this fetch: present, user, instruction fetch.
                error_code: PF_PRESENT | PF_USER | PF_FETCH,
                cr2: rip,
                cpl,
            },
            InternalError::Kvm { what } => CallError::KvmInternal { suberror, what, rip, cpl },
        }
    }

    fn guest_fault(&mut self, vector: u8) -> CallError {
        let regs = self.vm.vcpu.get_regs().unwrap_or_default();
        let cr2 = self.vm.vcpu.get_sregs().map(|s| s.cr2).unwrap_or(0);
        let mem = &self.vm.memory;
        let word = |i: u64| mem.read_u64(GuestAddr::new(regs.rsp.wrapping_add(8 * i))).unwrap_or(0);
        if std::env::var_os("SNAPCALL_DEBUG_FAULT").is_some() {
            eprintln!("fault regs {:x?} frame {:x?}", regs, (0..6).map(word).collect::<Vec<_>>());
        }
        let (error_code, rip, cs) =
            if exception_has_error_code(vector) { (word(0), word(1), word(2)) } else { (0, word(0), word(1)) };
        let guard = crate::layout::stack_guard(self.vm.memory.size());
        if vector == 14 && (guard..guard + PAGE_SIZE).contains(&cr2) {
            return CallError::StackOverflow { rip, addr: cr2, guard };
        }
        // A present user page the access was not allowed on: its protection said no (a
        // monitor page, below USER_START, is a plain fault).
        let denied = error_code & PF_PRESENT != 0 && error_code & PF_USER != 0 && cr2 >= USER_START;
        if vector == 14 && denied && error_code & PF_FETCH != 0 {
            return CallError::ExecuteNonExecutable { rip, addr: cr2, error_code };
        }
        if vector == 14 && denied && error_code & PF_WRITE != 0 {
            return CallError::WriteToReadOnly { rip, addr: cr2, error_code };
        }
        CallError::GuestFault {
            vector,
            name: exception_name(vector),
            rip,
            error_code,
            cr2: if vector == 14 { cr2 } else { 0 },
            cpl: (cs & 3) as u8,
        }
    }
}

/// Writes the `iretq` frame and rax value the stub's return path (`mov rsp; mov rax; iretq`)
/// uses to enter the program at `rip` with `rsp` and `rflags` (sanitised to user flags).
pub(crate) fn write_user_return(
    mem: &mut crate::memory::GuestMemory,
    rip: u64,
    rsp: u64,
    rflags: u64,
    rax: u64,
) -> Result<(), VmError> {
    let rflags = (rflags & USER_RFLAGS_MASK) | RFLAGS_FIXED;
    let frame = [rip, u64::from(USER_CS), rflags, rsp, u64::from(USER_DS)];
    let mut bytes = [0u8; 40];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(frame) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    mem.write(GuestAddr::new(SYSCALL_FRAME_ADDR), &bytes)?;
    mem.write_u64(GuestAddr::new(SYSCALL_RESULT_ADDR), rax)?;
    Ok(())
}

/// #PF error code bits.
const PF_PRESENT: u64 = 1;
const PF_WRITE: u64 = 1 << 1;
const PF_USER: u64 = 1 << 2;
const PF_FETCH: u64 = 1 << 4;

/// The last `max` bytes of `bytes`.
fn tail(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[bytes.len().saturating_sub(max)..]
}

fn is_stdin_read(nr: u64, args: &[u64; 6]) -> bool {
    matches!(nr, syscalls::nr::READ | syscalls::nr::READV | syscalls::nr::PREAD64) && args[0] == 0
}

pub(crate) fn stop_error(stop: Stop) -> CallError {
    match stop {
        Stop::Exit(code) => CallError::UnexpectedExit(format!("exit {code}")),
        Stop::OutputLimit { limit } => CallError::OutputLimit { limit },
        Stop::Signal(sig) => CallError::Signal(sig),
        Stop::Unsupported(what) => CallError::Unsupported(what),
    }
}
