//! What a VM exit means for the call: a plain function from KVM's exit to an [`Event`], fed
//! synthetic exits by its tests.

use kvm_ioctls::VcpuExit;

use crate::layout::{DOORBELL_GPA, EXCEPTION_PORT_BASE, IDT_VECTORS};

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
    /// KVM could not go on (e.g. an SSE instruction at CPL0 under kvm-pvm).
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
}
