//! What a VM exit means for the call: a plain function from KVM's exit to an [`Event`], fed
//! synthetic exits by its tests.

use kvm_ioctls::VcpuExit;

use crate::layout::{DOORBELL_ADDR, DOORBELL_GPA, EXCEPTION_PORT_BASE, IDT_VECTORS, PAGE_SIZE};

/// A VM exit, as the run loop acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The syscall stub rang the doorbell: arguments are in the synced registers.
    Syscall,
    /// An exception stub exited with this vector.
    Exception(u8),
    /// The guest touched guest-physical memory outside its slot.
    OutsideMemory { addr: u64 },
    /// Triple fault.
    Shutdown,
    /// KVM could not go on ([`explain_internal_error`] says why).
    InternalError,
    /// Anything else is a bug or a hostile guest; the string names it.
    Unexpected(String),
}

/// Classifies one exit.
pub fn classify(exit: &VcpuExit<'_>) -> Event {
    match exit {
        VcpuExit::MmioWrite(addr, _) if *addr == DOORBELL_GPA => Event::Syscall,
        VcpuExit::IoOut(port, _) if (EXCEPTION_PORT_BASE..EXCEPTION_PORT_BASE + IDT_VECTORS as u16).contains(port) => {
            Event::Exception((*port - EXCEPTION_PORT_BASE) as u8)
        }
        VcpuExit::MmioRead(addr, _) | VcpuExit::MmioWrite(addr, _) => Event::OutsideMemory { addr: *addr },
        VcpuExit::Shutdown => Event::Shutdown,
        VcpuExit::InternalError => Event::InternalError,
        VcpuExit::IoOut(port, _) => Event::Unexpected(format!("write to I/O port {port:#x}")),
        VcpuExit::IoIn(port, _) => Event::Unexpected(format!("read of I/O port {port:#x}")),
        VcpuExit::Hlt => Event::Unexpected("hlt".into()),
        VcpuExit::FailEntry(reason, _) => Event::Unexpected(format!("VM entry failed (reason {reason:#x})")),
        other => Event::Unexpected(format!("{other:?}")),
    }
}

/// What a KVM internal-error exit was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalError {
    /// The program jumped into a monitor page whose guest-physical address has no memory
    /// behind it, so there is no instruction to fetch: the guest's fault, named by `page`.
    MonitorPageFetch { page: &'static str },
    /// KVM itself gave up; `what` is its reason.
    Kvm { what: &'static str },
}

/// Explains an internal-error exit with `suberror` taken at `rip` (and `cpl`).
///
/// KVM cannot fetch an instruction from an address with no memory, and reports that as an
/// emulation failure (suberror 1) at the fetch's rip. The only page the program may reach
/// that maps to such an address is the doorbell (user-writable so the syscall stub can ring
/// it, and executable, as the page tables have no NX there), so a rip in it is the program
/// executing the doorbell, not a failure of the host.
pub fn explain_internal_error(suberror: u32, rip: u64, cpl: u8) -> InternalError {
    if rip & !(PAGE_SIZE - 1) == DOORBELL_ADDR {
        return InternalError::MonitorPageFetch {
            page: "#PF instruction fetch from the doorbell page (a monitor page with no memory behind it)",
        };
    }
    let what = match suberror {
        1 if cpl == 0 => "KVM could not emulate the instruction (under kvm-pvm an SSE instruction at CPL0 does this)",
        1 => "KVM could not emulate the instruction",
        2 => "an exception while KVM was delivering one",
        3 => "KVM could not deliver an event to the vCPU",
        4 => "a VM exit KVM did not expect",
        _ => "an internal error KVM has no name for",
    };
    InternalError::Kvm { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_map_to_syscalls_and_exception_vectors() {
        assert_eq!(classify(&VcpuExit::MmioWrite(DOORBELL_GPA, &[0])), Event::Syscall);
        assert_eq!(classify(&VcpuExit::IoOut(EXCEPTION_PORT_BASE + 14, &[0])), Event::Exception(14));
        assert_eq!(classify(&VcpuExit::IoOut(EXCEPTION_PORT_BASE + 31, &[0])), Event::Exception(31));
        assert!(matches!(classify(&VcpuExit::IoOut(EXCEPTION_PORT_BASE + 32, &[0])), Event::Unexpected(_)));
        let mut d = [0u8; 1];
        assert_eq!(classify(&VcpuExit::MmioRead(DOORBELL_GPA, &mut d)), Event::OutsideMemory { addr: DOORBELL_GPA });
        assert!(matches!(classify(&VcpuExit::IoOut(0x3f8, &[0])), Event::Unexpected(_)));
        let mut d = [0u8; 8];
        assert_eq!(classify(&VcpuExit::MmioRead(0x1_0000_0000, &mut d)), Event::OutsideMemory { addr: 0x1_0000_0000 });
        assert_eq!(classify(&VcpuExit::Shutdown), Event::Shutdown);
        assert!(matches!(classify(&VcpuExit::Hlt), Event::Unexpected(_)));
    }

    #[test]
    fn an_internal_error_in_the_doorbell_page_is_the_programs_fetch_not_kvms_failure() {
        for rip in [DOORBELL_ADDR, DOORBELL_ADDR + 0x123, DOORBELL_ADDR + PAGE_SIZE - 1] {
            assert!(matches!(explain_internal_error(1, rip, 3), InternalError::MonitorPageFetch { .. }), "{rip:#x}");
        }
        for rip in [DOORBELL_ADDR - 1, DOORBELL_ADDR + PAGE_SIZE, 0x40_1000] {
            assert!(matches!(explain_internal_error(1, rip, 3), InternalError::Kvm { .. }), "{rip:#x}");
        }
        let InternalError::Kvm { what } = explain_internal_error(1, 0xA010, 0) else { panic!() };
        assert!(what.contains("SSE instruction at CPL0"), "{what}");
        let InternalError::Kvm { what } = explain_internal_error(1, 0x40_1000, 3) else { panic!() };
        assert!(!what.contains("SSE"), "at CPL3 the kvm-pvm SSE case does not apply: {what}");
    }
}
