//! **Experiment, never the default:** a "recycled VM shell", the KVM VM and vCPU of a finished
//! call kept for another call with all of its memory replaced and all of its vCPU state reset.
//! It exists to measure what freshness itself costs (`RuntimeConfig::recycle_vm_shells`,
//! `snapcall serve --experimental-recycle-vm-shells`, the latency study's recycled rows);
//! docs/vmm.md ("What freshness costs") has the numbers.
//!
//! With it on, the guarantee every other mode gives, *every call runs in a KVM VM no other call
//! ran in*, no longer holds: the VM object, its vCPU object and KVM's per-VM and per-vCPU
//! kernel state outlive the call. What still holds is that **no call sees memory or register
//! state another call left**, because everything a guest can change is either replaced or
//! overwritten before the next call's program runs:
//!
//! | what the guest (CPL3 only) can change | what the shell does with it |
//! |---|---|
//! | guest memory, including its page tables | the memory slot is deleted first (KVM zaps every shadow page or EPT/NPT entry it built and flushes the TLB: KVM keeps no reference to the old pages), the old mapping is unmapped, and a new anonymous mapping with a freshly written monitor area becomes the slot |
//! | general registers, flags | set by the warm-up run and again by the restore |
//! | x87/SSE/AVX state, MXCSR, XCR0 | XCR0 set here; the whole XSAVE area set by the restore |
//! | FS/GS bases, the syscall MSRs | set here (program MSRs to 0) and by the restore (all 8 saved MSRs) |
//! | segment selectors, CR0/CR3/CR4/EFER | the guest cannot change these at CPL3; set here anyway |
//! | a pending exception or interrupt shadow at the call's last exit | cleared (KVM_SET_VCPU_EVENTS), after KVM completed that exit |
//!
//! Only shells of snapshot functions are made, and only the pool's restore ahead takes them:
//! a restore sets the entire vCPU state from the snapshot (a cold start would not set the
//! XSAVE area, so a cold function never gets a shell). What the shell keeps is kernel state
//! the guest cannot reach: KVM's CPUID table (the same for every VM), the TSC offset, the
//! MMU's object caches, the debugfs entry (none, see `vm_creator.rs`). Debug registers are
//! CPL0-only and nothing in the monitor sets them.
//!
//! The shadow-MMU caveat in `page_tables.rs` (KVM learns of page-table changes only from guest
//! writes) is why the slot must be deleted, not just remapped: with the old shadow pages alive,
//! tables the monitor writes into the new memory could be read through stale translations.
//! Deleting the slot makes KVM drop them all (with the default `KVM_X86_QUIRK_SLOT_ZAP_ALL`, every
//! shadow page of the VM becomes obsolete), so the shell has walked nothing, as a new VM.

use crate::memory::GuestMemory;
use crate::vm::{attach_memory, detach_memory, set_long_mode_at_stub, write_monitor_area, EmptyVm, Machine, VmError};

impl Machine {
    /// Turns the machine of a finished call into an empty VM of the same size for a snapshot
    /// restore (see the module docs). On error the machine is dropped: destroyed, as it would
    /// have been without the experiment.
    pub(crate) fn into_recycled_shell(mut self) -> Result<EmptyVm, VmError> {
        // Let KVM finish whatever exit the call ended at (a port or MMIO exit completes on the
        // next KVM_RUN) before any register is set; it ran no guest code (immediate exit).
        let _ = self.complete_exit();
        // 1. Memory: the slot goes first, so KVM forgets every translation into the old pages
        // before they are unmapped (dropped below, when the new memory takes their place).
        detach_memory(&self.vm)?;
        let mut memory = GuestMemory::new(self.memory.size())?;
        if let Some(cache) = self.memory.huge_page_cache() {
            memory.use_huge_page_cache(cache);
        }
        write_monitor_area(&mut memory)?;
        // SAFETY: the new memory is stored in this Machine right below, which drops it after
        // the VM fd (field order), as `EmptyVm::create` does.
        unsafe { attach_memory(&self.vm, &memory) }?;
        self.vcpu.memory_base = memory.host_base();
        self.memory = memory;
        // 2. vCPU: no pending event, long mode at CPL0 on the monitor's tables with the
        // monitor's MSRs and XCR0, then the same warm-up run a new VM gets (it sets the general
        // registers and leaves the vCPU at a completed port exit).
        let events = kvm_bindings::kvm_vcpu_events::default();
        self.vcpu.set_vcpu_events(&events).map_err(crate::ioctl::ioctl("KVM_SET_VCPU_EVENTS"))?;
        self.cpl0_sregs = set_long_mode_at_stub(&mut self.vcpu, crate::kvm::system()?)?;
        self.warm_up()?;
        Ok(EmptyVm { machine: self })
    }
}
