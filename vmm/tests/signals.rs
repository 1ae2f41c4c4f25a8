//! Signal handlers run by the monitor (guest `signals`): signals the program sends itself,
//! alarms, synchronous faults, masks and waits, and hostile handlers that scribble on their
//! frames or raise signals without end.

mod common;

use common::*;
use vmm::{CallError, StartMode};

fn stdout_of(scenario: &str) -> String {
    let o = output(&load("signals", StartMode::Cold), scenario.as_bytes());
    assert_eq!(o.exit_code, 0, "{scenario}: stderr {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn error_of(scenario: &str) -> CallError {
    error(&load("signals", StartMode::Cold), scenario.as_bytes())
}

#[test]
fn kill_raise_and_tgkill_to_itself_run_a_siginfo_handler() {
    assert_eq!(
        stdout_of("kill"),
        "kill: handler saw 10, code 0 (SI_USER), pid ours\n\
         raise: handler saw 10, code -6 (SI_TKILL)\n\
         tgkill: handler ran 3 times\n"
    );
}

#[test]
fn masks_keep_signals_pending_and_handlers_run_with_sa_mask_and_their_own_signal_blocked() {
    assert_eq!(
        stdout_of("mask"),
        "blocked: ran 0, pending 1\n\
         unblocked: ran 1\n\
         inside the handler: SIGUSR1 blocked 1, sa_mask's SIGUSR2 blocked 1\n\
         with SA_NODEFER: SIGUSR1 blocked 0\n\
         after the handlers: SIGUSR1 blocked 0\n\
         SIG_IGN: still here\n"
    );
}

#[test]
fn sa_resethand_runs_the_handler_once_then_the_default_kills() {
    let f = load("signals", StartMode::Cold);
    let finished = call(&f, b"resethand");
    assert!(matches!(finished.outcome(), Err(CallError::Signal(10))));
}

#[test]
fn a_signal_without_a_handler_still_ends_the_call_as_killed_by_it() {
    assert!(matches!(error_of("default"), CallError::Signal(15)));
}

#[test]
fn itimer_real_interrupts_pause_and_a_spinning_program() {
    assert_eq!(
        stdout_of("alarm"),
        "pause: -1 EINTR, handler saw 14 code 128\n\
         periodic: at least 5 ticks while spinning\n\
         alarm(0) after alarm(100): 100 left\n"
    );
}

#[test]
fn a_sigsegv_handler_can_siglongjmp_out_or_fix_the_context_and_return() {
    assert_eq!(
        stdout_of("segv"),
        "NULL write: signal 11, si_addr 0x10, code 1 (SEGV_MAPERR)\n\
         fixed and returned: read 42 after 1 handler run(s)\n"
    );
}

#[test]
fn division_by_zero_and_ud2_reach_their_handlers() {
    assert_eq!(stdout_of("fpe"), "division by zero: signal 8, code 1 (FPE_INTDIV)\n");
    assert_eq!(stdout_of("ill"), "ud2: signal 4, code 2 (ILL_ILLOPN)\n");
}

#[test]
fn a_stack_overflow_is_caught_on_the_alternate_signal_stack() {
    assert_eq!(stdout_of("overflow"), "stack overflow caught on the alternate stack: signal 11\n");
}

#[test]
fn a_handler_that_clobbers_sse_registers_leaves_the_interrupted_codes_alone() {
    assert_eq!(stdout_of("fpu-kept"), "handler ran 1, xmm0 after it: 1234.5\n");
}

#[test]
fn sigsuspend_and_sigtimedwait_wait_for_signals() {
    assert_eq!(stdout_of("sigsuspend"), "sigsuspend: -1 EINTR, handler saw 14, SIGALRM blocked again 1\n");
    assert_eq!(
        stdout_of("sigtimedwait"),
        "sigwaitinfo: 10 (si_signo 10), handler ran 0\nsigtimedwait with nothing sent: -1 EAGAIN\n"
    );
}

#[test]
fn sa_restart_keeps_a_blocked_thread_waiting_and_without_it_the_wait_is_eintr() {
    assert_eq!(
        stdout_of("restart"),
        "after an SA_RESTART handler: handler ran 1, waiter still waiting 1\n\
         sem_wait returned 0\n\
         after a handler without SA_RESTART: sem_wait -1 EINTR\n"
    );
}

#[test]
fn tgkill_to_another_thread_runs_the_handler_in_that_thread() {
    assert_eq!(stdout_of("thread-target"), "tgkill ran the handler in the target thread: yes\n");
}

#[test]
fn a_frame_with_a_kernel_rip_ends_the_call_as_a_bad_frame() {
    match error_of("frame-rip") {
        CallError::SignalFrame(e) => assert!(e.to_string().contains("outside user space"), "{e}"),
        other => panic!("expected a bad signal frame, got {other:?}"),
    }
}

#[test]
fn a_frame_with_kernel_cs_and_every_flag_returns_to_cpl3_with_user_flags_only() {
    assert_eq!(stdout_of("frame-flags"), "after sigreturn: cpl 3, iopl 0, IF 1, TF 0\n");
}

#[test]
fn a_scribbled_xsave_image_is_refused_by_kvm_and_ends_the_call() {
    match error_of("frame-fpu") {
        CallError::SignalFrame(e) => assert!(e.to_string().contains("FPU state"), "{e}"),
        other => panic!("expected a bad signal frame, got {other:?}"),
    }
}

#[test]
fn a_handler_raising_itself_forever_ends_when_its_frames_fill_the_stack() {
    let f = load("signals", StartMode::Cold);
    let finished = call(&f, b"nested-storm");
    match finished.outcome() {
        Err(CallError::SignalFrame(e)) => assert!(e.to_string().contains("does not fit"), "{e}"),
        other => panic!("expected the frames to run out of stack, got {other:?}"),
    }
    assert!(finished.timings().run < f.config().limits.timeout / 2);
}

#[test]
fn a_storm_of_signals_to_itself_is_handled_one_by_one() {
    assert_eq!(stdout_of("kill-storm"), "kill storm: 5000 handled\n");
}
