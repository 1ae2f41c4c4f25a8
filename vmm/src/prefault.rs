//! Pre-faulting a VM the pool restored ahead, so the call that gets it does not pay for it.
//!
//! A brand-new VM has no guest-physical mappings yet: KVM builds each one on the guest's first
//! touch (an EPT/NPT entry on VT-x/AMD-V, a shadow page-table entry under kvm-pvm), and under
//! nested kvm-pvm every such fault is a trip through two hypervisors. A restored call touches
//! a few dozen (C) to a few hundred (CPython) 4 KiB pages, so those first touches were a large
//! part of its run phase.
//!
//! The pool therefore runs a tiny loop in the VM before any call does: at CPL3, natively, it
//! reads one byte in every page of the snapshot's recorded working set (`working_set.rs`),
//! then rings the doorbell ([`crate::layout::prefault_stub`]). Only then does the restore set
//! the program's registers.
//! Nothing of the program runs and no guest state the program can see changes: the reads
//! only make KVM map the memory the restore has already written. (On a host kernel with
//! `KVM_PRE_FAULT_MEMORY` and TDP the same could be done without running the guest; running
//! it is what works everywhere, including shadow paging.)

use kvm_bindings::kvm_regs;
use kvm_ioctls::VcpuExit;

use crate::call::write_user_return;
use crate::ioctl::ioctl;
use crate::layout::{
    GuestAddr, DOORBELL_GPA, KERNEL_STACK_TOP, PREFAULT_STUB, PREFAULT_TABLE, PREFAULT_TABLE_ENTRIES,
    SYSCALL_RETURN_PATH,
};
use crate::vm::{Machine, VmError};

impl Machine {
    /// Reads one byte at each of `addresses` from CPL3 inside the VM (see the module docs).
    /// Must run before the program's state is set: it uses the vCPU's registers.
    pub(crate) fn prefault(&mut self, addresses: &[u64]) -> Result<(), VmError> {
        for chunk in addresses.chunks(PREFAULT_TABLE_ENTRIES) {
            self.memory.write_u64s(GuestAddr::new(PREFAULT_TABLE), chunk)?;
            // Enter the loop through the syscall stub's return path (`iretq` to CPL3), which
            // works from the CPL0 a new vCPU starts at and from the CPL3 the loop ends at.
            write_user_return(&mut self.memory, PREFAULT_STUB, 0, 0, 0)?;
            let regs = kvm_regs {
                rip: SYSCALL_RETURN_PATH,
                rsp: KERNEL_STACK_TOP,
                rflags: 0x2,
                rsi: PREFAULT_TABLE,
                rcx: chunk.len() as u64,
                ..Default::default()
            };
            self.vcpu.stage_regs(&regs);
            loop {
                let exit = self.vcpu.run(&mut self.memory);
                self.warm = true;
                match exit {
                    Ok(VcpuExit::MmioWrite(addr, _)) if addr == DOORBELL_GPA => break,
                    Ok(other) => return Err(VmError::Prefault(format!("{other:?}"))),
                    Err(e) if e.errno() == libc::EINTR => continue,
                    Err(e) => return Err(ioctl("KVM_RUN")(e).into()),
                }
            }
        }
        let completed =
            self.complete_exit().map_err(|got| VmError::Prefault(format!("completing the last exit gave {got}")));
        // The table is the monitor's; leave no trace of it in the guest.
        self.memory.write(GuestAddr::new(PREFAULT_TABLE), &[0; PREFAULT_TABLE_ENTRIES * 8])?;
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::USER_START;
    use crate::vm::EmptyVm;

    #[test]
    fn several_passes_leave_guest_memory_as_it_was_and_the_table_cleared() {
        let mut vm = EmptyVm::create(32 << 20).expect("KVM is needed for this test").machine;
        // One touch per 4 KiB page of user memory (but the stack guard, which the guest cannot
        // map): more than one table's worth.
        let guard = crate::layout::stack_guard(32 << 20);
        let addresses: Vec<u64> = (USER_START..32 << 20).step_by(4096).filter(|&a| a != guard).collect();
        assert!(addresses.len() > 2 * PREFAULT_TABLE_ENTRIES);
        let pattern: Vec<u8> = (0..(30u64 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        vm.memory.write(GuestAddr::new(USER_START), &pattern).unwrap();

        vm.prefault(&addresses).unwrap();
        // Entries flagged for writing write back what they read.
        let written: Vec<u64> = addresses.iter().map(|a| a | crate::layout::PREFAULT_WRITE).collect();
        vm.prefault(&written).unwrap();

        assert!(vm.memory.slice(GuestAddr::new(USER_START), 30 << 20).unwrap() == pattern.as_slice());
        let table = vm.memory.slice(GuestAddr::new(PREFAULT_TABLE), PREFAULT_TABLE_ENTRIES as u64 * 8).unwrap();
        assert!(table.iter().all(|&b| b == 0));
        // The vCPU is usable afterwards: a second run works the same.
        vm.prefault(&addresses[..3]).unwrap();
    }

    #[test]
    fn an_address_outside_guest_memory_ends_in_an_error() {
        let mut vm = EmptyVm::create(32 << 20).expect("KVM is needed for this test").machine;
        match vm.prefault(&[USER_START, 64 << 20]) {
            Err(VmError::Prefault(what)) => assert!(what.contains("IoOut"), "{what}"),
            other => panic!("expected a pre-fault error, got {other:?}"),
        }
    }
}
