//! The run loop's part in threads and signals: switching threads on the vCPU, entering the
//! program (with a signal handler's frame first when a signal is due) and taking faults
//! to a handler. The decisions themselves (who waits for what, who runs next, which signal
//! goes where) are plain data in `threads.rs`, `syscalls/signals.rs` and
//! `signal_delivery.rs`; this is what needs KVM.
//!
//! How a thread goes on the vCPU: every general register from its saved context, then rip,
//! rsp and rflags through the syscall stub's `iretq` return path (`write_user_return`
//! sanitises rflags and always uses the user CS/SS, so no saved or guest-written context
//! can reach CPL0), its XSAVE image (KVM_SET_XSAVE) and FS base (MSR). A switch therefore
//! costs four ioctls on top of the exit that caused it, which is why the loop switches only
//! when the current thread blocks, yields, exits or used up its [`TIME_SLICE`].

use std::time::Instant;

use kvm_bindings::kvm_regs;

use crate::call::{write_user_return, CallError, ReadyCall, SyscallEntry};
use crate::deadline::Deadline;
use crate::layout::{
    GuestAddr, KERNEL_STACK_TOP, SYSCALL_FRAME_ADDR, SYSCALL_RESULT_ADDR, SYSCALL_RETURN_PATH, USER_START,
};
use crate::process::{Process, SigAction, SIG_DFL};
use crate::signal_delivery::{self, Delivery, Fault, SA_NODEFER, SA_RESETHAND};
use crate::syscalls::{self, Disposition, Outcome};
use crate::threads::{Blocked, CpuContext, Parked, RunState, Saved, TIME_SLICE};
use crate::vm::{self, MSR_FS_BASE};

/// How long a kick that found the vCPU inside a monitor stub waits before it looks again.
const STUB_GRACE: std::time::Duration = std::time::Duration::from_micros(500);

/// The current thread's user context as the run loop holds it.
#[derive(Clone, Copy)]
pub(crate) struct UserContext {
    /// Every general register, rip, rsp and rflags as the program is to get them back.
    pub regs: kvm_regs,
    /// The vCPU stopped at the doorbell of this thread's syscall and still holds these
    /// general registers: resuming needs only the return frame (the fast path).
    pub at_syscall: bool,
}

impl UserContext {
    /// The context of a thread returning `rax` from syscall `call`, whose registers at the
    /// doorbell were `regs`.
    pub fn after_syscall(call: &SyscallEntry, regs: &kvm_regs, rax: u64) -> UserContext {
        UserContext {
            regs: kvm_regs { rip: call.return_rip, rsp: call.user_rsp, rflags: call.rflags, rax, ..*regs },
            at_syscall: true,
        }
    }
}

/// The call's time limits, for the helpers that sleep or re-arm the kick timer.
pub(crate) struct Clock<'a> {
    pub timer: &'a Deadline,
    pub deadline_at: Instant,
    pub timeout: std::time::Duration,
}

impl ReadyCall {
    /// Acts on a syscall outcome that concerns threads or signals (anything but Return,
    /// SetFsBase and Stop), then puts a thread back on the vCPU.
    pub(crate) fn thread_outcome(
        &mut self,
        call: &SyscallEntry,
        regs: &kvm_regs,
        outcome: Outcome,
        clock: &Clock,
    ) -> Result<(), CallError> {
        match outcome {
            Outcome::Spawn(spawn) => {
                let xsave = Box::new(self.vm.vcpu.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?);
                let stack = if spawn.stack != 0 { spawn.stack } else { call.user_rsp };
                // The child returns 0 from the same syscall, on its own stack.
                let child = kvm_regs { rip: call.return_rip, rsp: stack, rflags: call.rflags, rax: 0, ..*regs };
                let p = &mut self.process;
                let saved = Saved {
                    cpu: CpuContext { regs: child, xsave },
                    fs_base: spawn.tls.unwrap_or(p.fs_base),
                    sigmask: p.sigmask,
                    sigaltstack: [0; 24], // a new thread has no alternate signal stack
                };
                p.threads.add(Parked { thread: syscalls::new_thread(&spawn), saved });
                if p.threads.slice_end.is_none() {
                    p.threads.slice_end = Some(Instant::now() + TIME_SLICE);
                }
                self.rearm(clock);
                self.enter(UserContext::after_syscall(call, regs, spawn.tid as u64))
            }
            Outcome::Yield => {
                self.process.threads.current.resume_rax = 0;
                self.schedule(Some(UserContext::after_syscall(call, regs, 0)), true, clock)
            }
            Outcome::Block(wait) => {
                self.process.threads.block_current(Blocked { wait, nr: call.nr });
                self.schedule(Some(UserContext::after_syscall(call, regs, 0)), false, clock)
            }
            Outcome::ExitThread => self.schedule(None, true, clock),
            Outcome::SigReturn => {
                let restored = signal_delivery::read_frame(&self.vm.memory, call.user_rsp)?;
                if let Some(xsave) = &restored.xsave {
                    // SAFETY: a whole 4096-byte kvm_xsave; KVM checks the image's header and
                    // MXCSR itself and refuses (EINVAL) what the CPU would fault on.
                    unsafe { self.vm.vcpu.set_xsave(xsave) }
                        .map_err(|e| signal_delivery::FrameError::BadFpuState { errno: e.errno() })?;
                }
                self.process.sigmask = restored.mask;
                self.enter(UserContext { regs: restored.regs, at_syscall: false })
            }
            Outcome::Return(_) | Outcome::SetFsBase(_) | Outcome::Stop(_) => {
                unreachable!("the run loop handles these itself")
            }
        }
    }

    /// Puts the next thread on the vCPU. `current` is the current thread's context if it is
    /// alive (blocked, yielding or preempted; None if it exited); `prefer_other`: let another
    /// runnable thread go first. With nothing runnable, sleeps until the earliest timeout or
    /// alarm; with nothing that could ever wake a thread, ends the call.
    pub(crate) fn schedule(
        &mut self,
        current: Option<UserContext>,
        prefer_other: bool,
        clock: &Clock,
    ) -> Result<(), CallError> {
        // What the current thread did in its turn may let fd waiters go on.
        self.process.threads.end_turn();
        loop {
            let now = Instant::now();
            if now >= clock.deadline_at {
                return Err(CallError::Deadline(clock.timeout));
            }
            let p = &mut self.process;
            syscalls::expire_itimer(p, now).map_err(crate::call::stop_error)?;
            p.threads.expire_timeouts(now);
            syscalls::interrupt_waiters(p);
            let current_runs = p.threads.current.state == RunState::Runnable;
            let next = p.threads.next_runnable();
            if let Some(ctx) = current.filter(|_| current_runs && (next.is_none() || !prefer_other)) {
                let regs = kvm_regs { rax: p.threads.current.resume_rax, ..ctx.regs };
                self.rearm(clock);
                return self.enter(UserContext { regs, ..ctx });
            }
            if let Some(next) = next {
                let saved = match current {
                    Some(ctx) => Some(self.save_current(ctx.regs)?),
                    None => None,
                };
                let threads = &mut self.process.threads;
                let incoming = match saved {
                    Some(saved) => threads.switch_to(next, saved),
                    None => threads.replace_current(next),
                };
                threads.slice_end = threads.others_exist().then(|| Instant::now() + TIME_SLICE);
                let regs = self.load(incoming)?;
                self.rearm(clock);
                return self.enter(UserContext { regs, at_syscall: false });
            }
            // Nothing can run now: sleep until something could.
            let p = &self.process;
            let wake = [p.threads.earliest_timeout(), p.itimer_real.map(|t| t.next)].into_iter().flatten().min();
            let Some(wake) = wake else {
                return Err(CallError::Unsupported(deadlock_report(p)));
            };
            std::thread::sleep(wake.min(clock.deadline_at).saturating_duration_since(Instant::now()));
        }
    }

    /// The kick timer at the next moment the loop must look: the deadline, the end of the
    /// time slice (when another thread is ready to run), a thread's timeout or the alarm.
    pub(crate) fn rearm(&mut self, clock: &Clock) {
        let p = &mut self.process;
        p.timer_changed = false;
        // The slice matters only while another thread is waiting to run (a slice that
        // ended while the thread ran alone would otherwise kick at once, again and again).
        let slice = p.threads.slice_end.filter(|_| p.threads.next_runnable().is_some());
        let next = [Some(clock.deadline_at), slice, p.threads.earliest_timeout(), p.itimer_real.map(|t| t.next)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(clock.deadline_at);
        clock.timer.kick_in(next.saturating_duration_since(Instant::now()));
    }

    /// The kick timer interrupted the guest before the deadline: fire timeouts and the
    /// alarm, and switch threads or run a handler if one is due now.
    pub(crate) fn on_kick(&mut self, clock: &Clock) -> Result<(), CallError> {
        let now = Instant::now();
        let p = &mut self.process;
        syscalls::expire_itimer(p, now).map_err(crate::call::stop_error)?;
        p.threads.expire_timeouts(now);
        syscalls::interrupt_waiters(p);
        let slice_over = p.threads.slice_end.is_some_and(|end| now >= end) && p.threads.next_runnable().is_some();
        if !slice_over && !p.signal_ready() {
            self.rearm(clock);
            return Ok(());
        }
        let regs = self.vm.vcpu.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        let Some(regs) = self.user_context(regs) else {
            // Inside a monitor stub (the syscall entry, or the output ring's fast path):
            // nothing to save there. Its syscall exit, or a kick a little later, will do.
            // (Not at once: a kick before KVM_RUN stops it before it runs anything, so
            // kicking "now" again would never let the stub finish.)
            clock.timer.kick_in(STUB_GRACE.min(clock.deadline_at.saturating_duration_since(now)));
            return Ok(());
        };
        self.process.threads.current.resume_rax = regs.rax;
        let ctx = UserContext { regs, at_syscall: false };
        if slice_over {
            self.schedule(Some(ctx), true, clock)
        } else {
            self.rearm(clock);
            self.enter(ctx)
        }
    }

    /// The user context of a vCPU stopped by a kick with registers `regs`: as they are in
    /// the program, or, stopped at the syscall stub's return path (a syscall just handled),
    /// what that return is about to load. None inside a stub's other instructions.
    fn user_context(&self, regs: kvm_regs) -> Option<kvm_regs> {
        if regs.rip >= USER_START {
            return Some(regs);
        }
        if regs.rip != SYSCALL_RETURN_PATH {
            return None;
        }
        // The frame and rax the monitor itself wrote (the syscall page is read-only to the
        // program).
        let mem = &self.vm.memory;
        let word = |at: u64| mem.read_u64(GuestAddr::new(at)).ok();
        let (rip, rflags, rsp) =
            (word(SYSCALL_FRAME_ADDR)?, word(SYSCALL_FRAME_ADDR + 16)?, word(SYSCALL_FRAME_ADDR + 24)?);
        Some(kvm_regs { rip, rflags, rsp, rax: word(SYSCALL_RESULT_ADDR)?, ..regs })
    }

    /// Whether the current thread's time slice is over with another thread ready to run
    /// (asked at syscall exits, where switching costs nothing extra).
    pub(crate) fn slice_over(&self, now: Instant) -> bool {
        let t = &self.process.threads;
        t.slice_end.is_some_and(|end| now >= end) && t.next_runnable().is_some()
    }

    /// Returns the current thread to the program: the end of an SA_RESTART-interrupted wait
    /// starts the syscall again, a signal due now runs its handler first (or ends the call).
    pub(crate) fn enter(&mut self, mut ctx: UserContext) -> Result<(), CallError> {
        let p = &mut self.process;
        if let Some(nr) = p.threads.current.restart.take() {
            // The `syscall` instruction is the two bytes before the return address.
            ctx.regs.rip = ctx.regs.rip.wrapping_sub(2);
            ctx.regs.rax = nr;
        }
        if let Some((sig, info)) = p.threads.current.taken_signal.take() {
            if !info.is_null() {
                let bytes = signal_delivery::siginfo(sig, p.signal_codes[(sig - 1) as usize], None);
                // As Linux, a bad address here is the program's loss, not an error.
                let _ = self.vm.memory.write_user(info, &bytes);
            }
        }
        while let Some(sig) = self.take_deliverable() {
            let p = &self.process;
            let action = match syscalls::disposition(p, sig) {
                Disposition::Ignore => continue,
                Disposition::Terminate => return Err(CallError::Signal(sig)),
                Disposition::Handler(action) => action,
            };
            let info = signal_delivery::siginfo(sig, p.signal_codes[(sig - 1) as usize], None);
            // The handler's syscalls come first; a restarted wait starts its timeout again.
            self.process.threads.current.rerun = None;
            ctx.regs = self.run_handler(&ctx.regs, sig, action, info, None)?;
            ctx.at_syscall = false;
            break; // the next pending signal waits for this handler's first syscall
        }
        if let Some(mask) = self.process.threads.current.saved_mask.take() {
            self.process.sigmask = mask; // an rt_sigsuspend ended without a handler
        }
        if ctx.at_syscall {
            let r = &ctx.regs;
            write_user_return(&mut self.vm.memory, r.rip, r.rsp, r.rflags, r.rax)?;
            return Ok(());
        }
        self.resume_full(&ctx.regs)
    }

    /// A synchronous fault with a handler installed for its signal (and not blocked): runs
    /// the handler. None when the fault ends the call as before (no handler, blocked, at
    /// CPL0, or no room for the frame).
    pub(crate) fn fault_to_handler(&mut self, vector: u8) -> Option<Result<(), CallError>> {
        let regs = self.vm.vcpu.get_regs().ok()?;
        let mem = &self.vm.memory;
        let word = |i: u64| mem.read_u64(crate::layout::GuestAddr::new(regs.rsp.wrapping_add(8 * i))).ok();
        let has_error_code = crate::layout::exception_has_error_code(vector);
        let (error_code, base) = if has_error_code { (word(0)?, 1) } else { (0, 0) };
        let (rip, cs, rflags, rsp) = (word(base)?, word(base + 1)?, word(base + 2)?, word(base + 3)?);
        if cs & 3 != 3 {
            return None;
        }
        let (sig, code) = signal_delivery::fault_signal(vector, error_code)?;
        let p = &self.process;
        let Disposition::Handler(action) = syscalls::disposition(p, sig) else { return None };
        if p.sigmask & Process::sig_bit(sig) != 0 {
            return None; // Linux kills a program that blocks the signal of its own fault
        }
        let cr2 = if vector == 14 { self.vm.vcpu.get_sregs().ok()?.cr2 } else { 0 };
        let addr = match sig {
            11 if vector == 14 => cr2,
            11 => 0,
            _ => rip,
        };
        let info = signal_delivery::siginfo(sig, code, Some(addr));
        let ctx = kvm_regs { rip, rsp, rflags, ..regs };
        let fault = Fault { vector, error_code, cr2 };
        match self.run_handler(&ctx, sig, action, info, Some(fault)) {
            Ok(handler) => Some(self.resume_full(&handler)),
            Err(CallError::SignalFrame(_)) => None, // the fault itself says more
            Err(e) => Some(Err(e)),
        }
    }

    /// Writes the frame for `sig` below `ctx` and sets the handler's mask; returns the
    /// registers the handler starts with.
    fn run_handler(
        &mut self,
        ctx: &kvm_regs,
        sig: i32,
        action: SigAction,
        info: [u8; 128],
        fault: Option<Fault>,
    ) -> Result<kvm_regs, CallError> {
        let xsave = self.vm.vcpu.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?;
        let p = &mut self.process;
        let old_mask = p.threads.current.saved_mask.take().unwrap_or(p.sigmask);
        let delivery = Delivery { sig, action, info, old_mask, fault };
        let guard = crate::layout::stack_guard(self.vm.memory.size());
        let handler = signal_delivery::push_frame(&mut self.vm.memory, ctx, &xsave, &delivery, &p.sigaltstack, guard)?;
        let bit = Process::sig_bit(sig);
        let mut mask = old_mask | action.mask;
        if action.flags & SA_NODEFER == 0 {
            mask |= bit;
        }
        p.sigmask = mask & !syscalls::UNBLOCKABLE_SIGNALS;
        if action.flags & SA_RESETHAND != 0 {
            p.sigactions[(sig - 1) as usize] = SigAction { handler: SIG_DFL, ..SigAction::default() };
        }
        Ok(handler)
    }

    /// Takes the lowest signal the current thread can take now: its own first, then the
    /// process's.
    fn take_deliverable(&mut self) -> Option<i32> {
        let p = &mut self.process;
        let own = p.threads.current.pending & !p.sigmask;
        let process = p.pending_signals & !p.sigmask;
        let from = if own != 0 { own } else { process };
        if from == 0 {
            return None;
        }
        let sig = syscalls::lowest(from);
        let bit = Process::sig_bit(sig);
        if own != 0 {
            p.threads.current.pending &= !bit;
        } else {
            p.pending_signals &= !bit;
        }
        Some(sig)
    }

    /// The current thread's state, to park it.
    fn save_current(&mut self, regs: kvm_regs) -> Result<Saved, CallError> {
        let xsave = Box::new(self.vm.vcpu.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?);
        let p = &self.process;
        Ok(Saved {
            cpu: CpuContext { regs, xsave },
            fs_base: p.fs_base,
            sigmask: p.sigmask,
            sigaltstack: p.sigaltstack,
        })
    }

    /// Loads a parked thread's FPU state, FS base, mask and alternate stack; returns the
    /// registers it resumes with (its syscall's result in rax).
    fn load(&mut self, saved: Saved) -> Result<kvm_regs, CallError> {
        self.complete_exit()?;
        // SAFETY: a whole kvm_xsave that KVM_GET_XSAVE filled on this vCPU.
        unsafe { self.vm.vcpu.set_xsave(&saved.cpu.xsave) }.map_err(kvm("KVM_SET_XSAVE"))?;
        vm::set_msrs(&self.vm.vcpu, &[(MSR_FS_BASE, saved.fs_base)])?;
        let p = &mut self.process;
        p.fs_base = saved.fs_base;
        p.sigmask = saved.sigmask;
        p.sigaltstack = saved.sigaltstack;
        Ok(kvm_regs { rax: p.threads.current.resume_rax, ..saved.cpu.regs })
    }

    /// Enters the program with every general register from `regs`, through the stub's
    /// return path (which sets rip, rsp and a sanitised rflags from the frame).
    fn resume_full(&mut self, regs: &kvm_regs) -> Result<(), CallError> {
        self.complete_exit()?;
        write_user_return(&mut self.vm.memory, regs.rip, regs.rsp, regs.rflags, regs.rax)?;
        let entry = kvm_regs { rip: SYSCALL_RETURN_PATH, rsp: KERNEL_STACK_TOP, rflags: 0x2, ..*regs };
        self.vm.vcpu.set_regs(&entry).map_err(kvm("KVM_SET_REGS"))?;
        Ok(())
    }

    /// KVM finishes the instruction of the last exit on the next KVM_RUN, which would
    /// overwrite registers set before it: finish it now, without running the guest.
    fn complete_exit(&mut self) -> Result<(), CallError> {
        self.vm.complete_exit().map_err(|got| CallError::UnexpectedExit(format!("completing an exit gave {got}")))
    }
}

/// For `map_err`: a failed ioctl of the vCPU as the call's error.
fn kvm(name: &'static str) -> impl Fn(kvm_ioctls::Error) -> CallError {
    move |e| CallError::Vm(crate::vm::VmError::from(crate::ioctl::ioctl(name)(e)))
}

/// Why no thread can ever run again, for the error.
fn deadlock_report(p: &Process) -> String {
    let describe = |tid: i32, state: &RunState| match state {
        RunState::Blocked(b) => {
            Some(format!("{tid} in {} waiting for {}", b.wait.syscall, syscalls::describe_wait(&b.wait.what)))
        }
        RunState::Runnable => Some(format!("{tid} runnable")),
        RunState::Exited => None,
    };
    let threads: Vec<String> = std::iter::once(describe(p.threads.current.tid, &p.threads.current.state))
        .chain(p.threads.parked().map(|t| describe(t.thread.tid, &t.thread.state)))
        .flatten()
        .collect();
    format!(
        "every thread waits for something nothing can bring (thread {}), so none can ever run again",
        threads.join(", thread ")
    )
}
