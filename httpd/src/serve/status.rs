//! The one mapping from vmm outcomes to HTTP statuses. Every match lists every variant, with
//! no `_` arm, so a new vmm error does not compile until it is classified here.

use vmm::km::KmError;
use vmm::{CallError, StartError, VmError};

use super::metrics::ErrorKind;

/// How a failed call is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub kind: ErrorKind,
    /// Short machine-readable reason for the JSON body.
    pub reason: &'static str,
}

const fn failure(status: u16, kind: ErrorKind, reason: &'static str) -> Failure {
    Failure { status, kind, reason }
}

/// The program ran to its end and exited non-zero.
pub fn exit_status(code: i32) -> Option<Failure> {
    (code != 0).then_some(failure(502, ErrorKind::Exit, "exit"))
}

/// The program exited 0 but its own response head (`snapcall.response: cgi`) was refused.
pub fn response_head_error() -> Failure {
    failure(502, ErrorKind::ResponseHead, "bad_response_head")
}

/// The call started but did not produce an exit status.
pub fn call_error(e: &CallError) -> Failure {
    match e {
        CallError::Deadline(_) => failure(504, ErrorKind::Deadline, "deadline"),
        CallError::OutputLimit { .. } => failure(502, ErrorKind::OutputLimit, "output_limit"),
        // The guest did something that ends it: its fault, a bad gateway.
        CallError::GuestFault { .. } => failure(502, ErrorKind::Fault, "guest_fault"),
        CallError::StackOverflow { .. } => failure(502, ErrorKind::Fault, "stack_overflow"),
        CallError::WriteToReadOnly { .. } => failure(502, ErrorKind::Fault, "write_to_read_only"),
        CallError::ExecuteNonExecutable { .. } => failure(502, ErrorKind::Fault, "execute_non_executable"),
        CallError::Signal(_) => failure(502, ErrorKind::Fault, "signal"),
        CallError::SignalFrame(_) => failure(502, ErrorKind::Fault, "signal_frame"),
        CallError::Unsupported(_) => failure(502, ErrorKind::Fault, "unsupported"),
        CallError::OutsideMemory { .. } => failure(502, ErrorKind::Fault, "outside_memory"),
        CallError::TripleFault => failure(502, ErrorKind::Fault, "triple_fault"),
        CallError::NoStdinRead(_) => failure(502, ErrorKind::Fault, "no_stdin_read"),
        // The host failed the guest: our error.
        CallError::KvmInternal { .. } => failure(500, ErrorKind::Host, "kvm_internal"),
        CallError::UnexpectedExit(_) => failure(500, ErrorKind::Host, "unexpected_exit"),
        CallError::Vm(vm) => vm_error(vm),
        CallError::Timer(_) => failure(500, ErrorKind::Host, "timer"),
    }
}

/// Restoring (or cold-loading) the program into the VM failed.
pub fn start_error(e: &StartError) -> Failure {
    match e {
        StartError::WrongVmSize { .. } => failure(500, ErrorKind::Host, "wrong_vm_size"),
        StartError::Load { .. } => failure(500, ErrorKind::Host, "load"),
        StartError::Restore { .. } => failure(500, ErrorKind::Host, "restore"),
        StartError::Program(_) => failure(500, ErrorKind::Host, "program"),
        StartError::PreparedForAnother { .. } => failure(500, ErrorKind::Host, "wrong_vm"),
        StartError::Vm { source, .. } => vm_error(source),
    }
}

/// A call run by Kontain's km did not produce an exit status.
pub fn km_error(e: &KmError) -> Failure {
    match e {
        KmError::Deadline { .. } => failure(504, ErrorKind::Deadline, "deadline"),
        KmError::OutputLimit { .. } => failure(502, ErrorKind::OutputLimit, "output_limit"),
        KmError::Signal { .. } => failure(502, ErrorKind::Fault, "km_signal"),
        // The function needs km and this host has none: a configuration error, ours.
        KmError::Missing { .. } => failure(500, ErrorKind::Host, "km_missing"),
        KmError::Spawn { .. } => failure(500, ErrorKind::Host, "km_spawn"),
        KmError::Io { .. } => failure(500, ErrorKind::Host, "km_io"),
        KmError::Bundle(_) => failure(500, ErrorKind::Host, "bundle"),
    }
}

/// No VM could be had or driven. Creating one fails when the host is out of memory or KVM
/// resources: a retry later may succeed, hence 503 for those.
pub fn vm_error(e: &VmError) -> Failure {
    match e {
        VmError::Kvm(_) => failure(500, ErrorKind::Host, "kvm"),
        VmError::BadMemorySize(_) => failure(500, ErrorKind::Host, "memory_size"),
        VmError::Memory(_) => failure(503, ErrorKind::Host, "vm_memory"),
        VmError::Ioctl(_) => failure(500, ErrorKind::Host, "vm_ioctl"),
        VmError::TooManyMsrs { .. } | VmError::MsrRefused { .. } => failure(500, ErrorKind::Host, "vm_msrs"),
        // Only Runtime::new starts threads; no call ever sees this.
        VmError::SpawnThread { .. } => failure(503, ErrorKind::Host, "vm_thread"),
        VmError::WarmUp(_) => failure(500, ErrorKind::Host, "vm_warm_up"),
        VmError::Prefault(_) => failure(500, ErrorKind::Host, "vm_prefault"),
        VmError::TableWriter(_) => failure(500, ErrorKind::Host, "vm_table_writer"),
        // Only the pool loads registers ahead; a VM that fails it is dropped there.
        VmError::LoadRegisters(_) => failure(500, ErrorKind::Host, "vm_load_registers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn statuses() {
        assert_eq!(exit_status(0), None);
        assert_eq!(exit_status(3).unwrap().status, 502);
        assert_eq!(call_error(&CallError::Deadline(Duration::from_secs(1))).status, 504);
        assert_eq!(call_error(&CallError::OutputLimit { limit: 1 }).status, 502);
        assert_eq!(call_error(&CallError::TripleFault).kind, ErrorKind::Fault);
        assert_eq!(call_error(&CallError::UnexpectedExit("x".into())).status, 500);
    }
}
