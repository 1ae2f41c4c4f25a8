//! The vCPU's part of a snapshot, saved and restored side by side: general registers,
//! special registers, MSRs, XCRs and the XSAVE area, each with one converter used both ways.
//!
//! A capture stops the program in the syscall stub at its first read of stdin
//! ([`crate::call::AtStdinRead`]); [`save`] records the registers as the program will see
//! them when that read returns. [`VcpuState::from_snapshot`] decodes and checks them once,
//! when the snapshot is opened, and [`VcpuState::restore`] sets them on every VM prepared for
//! it, the vCPU entering the program through the stub's return path (whose `iretq` frame and
//! rax the restore's `finish` writes with the read's result).
//!
//! MSRs: every one of [`SAVED_MSRS`] is saved and restored. The syscall MSRs among them
//! (STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS) are the monitor's, the same in every VM: a
//! snapshot whose values differ from the ones this monitor sets is refused when it is opened,
//! so a snapshot file can never choose where `syscall` enters.

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, kvm_sregs, kvm_xsave};
use kvm_ioctls::VcpuFd;
use snapshot_format as fmt;

use crate::call::SyscallEntry;
use crate::ioctl::ioctl;
use crate::layout::{KERNEL_STACK_TOP, SYSCALL_RETURN_PATH, USER_CS, USER_DS};
use crate::vm::{self, Machine, VmError, MSR_FS_BASE, MSR_GS_BASE, SAVED_MSRS};

/// The vCPU's state as a snapshot file holds it.
pub(crate) struct SavedVcpu {
    pub(crate) regs: fmt::Registers,
    pub(crate) sregs: fmt::SpecialRegisters,
    pub(crate) msrs: Vec<(u32, u64)>,
    pub(crate) xcrs: Vec<(u32, u64)>,
    pub(crate) xsave: Vec<u8>,
}

/// Saves the vCPU of a program stopped at the syscall `entry`: its registers as it will see
/// them when the syscall returns.
pub(crate) fn save(vcpu: &VcpuFd, entry: &SyscallEntry) -> Result<SavedVcpu, VmError> {
    let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let msrs = vm::get_msrs(vcpu, &SAVED_MSRS)?;
    let xcrs = vcpu.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?;
    let xsave = vcpu.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?;
    let mut regs = regs_to_format(&vcpu.sync_regs().regs);
    // `syscall` put the return address in rcx and rflags in r11; the stub's rip, rsp and
    // rflags are the monitor's, the program's are the entry's.
    regs.rip = entry.return_rip;
    regs.rcx = entry.return_rip;
    regs.eflags = entry.rflags;
    regs.r11 = entry.rflags;
    regs.rsp = entry.user_rsp;
    regs.rax = entry.nr;
    regs.orig_rax = entry.nr;
    regs.cs = u64::from(USER_CS);
    regs.ss = u64::from(USER_DS);
    regs.fs_base = msr(&msrs, MSR_FS_BASE);
    regs.gs_base = msr(&msrs, MSR_GS_BASE);
    Ok(SavedVcpu {
        regs,
        sregs: sregs_to_format(&sregs),
        msrs,
        xcrs: xcrs.xcrs[..xcrs.nr_xcrs as usize].iter().map(|x| (x.xcr, x.value)).collect(),
        xsave: xsave.region.iter().flat_map(|w| w.to_le_bytes()).collect(),
    })
}

/// What a restore sets on the vCPU, decoded and checked once when the snapshot is opened.
pub(crate) struct VcpuState {
    sregs: Option<fmt::SpecialRegisters>,
    /// The general registers, entering the stub's return path (rip, rsp, rflags and rax are
    /// the monitor's: the program's are in the `iretq` frame the restore writes).
    regs: kvm_regs,
    xsave: Box<kvm_xsave>,
    /// The TLS bases (from the saved general registers), which go in the segments' bases.
    fs_base: u64,
    gs_base: u64,
    /// The saved MSRs a new VM does not already have: a restore sets these, usually none.
    msrs: Vec<(u32, u64)>,
    xcr0: u64,
}

impl VcpuState {
    /// Decodes the vCPU state of `state`; `Err` says what does not fit this monitor.
    pub(crate) fn from_snapshot(state: &fmt::SnapshotState) -> Result<VcpuState, String> {
        if state.xsave.len() != std::mem::size_of::<kvm_xsave>() {
            return Err(format!("XSAVE area of {} bytes, expected {}", state.xsave.len(), size_of::<kvm_xsave>()));
        }
        let mut xsave = Box::<kvm_xsave>::default();
        for (word, chunk) in xsave.region.iter_mut().zip(state.xsave.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for (index, value) in vm::monitor_msrs() {
            match state.msrs.iter().find(|(i, _)| *i == index) {
                Some(&(_, saved)) if saved != value => {
                    return Err(format!("MSR {index:#x} is {saved:#x}, but this monitor sets {value:#x}"))
                }
                _ => {}
            }
        }
        // A new VM has the monitor's MSRs (checked equal above) and 0 in the others
        // (`vm::set_long_mode_at_stub`); an MSR the snapshot does not hold keeps that value.
        // The TLS bases go with the special registers when the snapshot has them.
        let new_vm = |index: u32| vm::monitor_msrs().iter().find(|(i, _)| *i == index).map_or(0, |(_, v)| *v);
        let msrs = SAVED_MSRS
            .iter()
            .filter_map(|&index| match index {
                MSR_FS_BASE if state.sregs.is_none() => Some((index, state.regs.fs_base)),
                MSR_GS_BASE if state.sregs.is_none() => Some((index, state.regs.gs_base)),
                MSR_FS_BASE | MSR_GS_BASE => None,
                _ => state.msrs.iter().find(|(i, _)| *i == index).copied(),
            })
            .filter(|&(index, value)| matches!(index, MSR_FS_BASE | MSR_GS_BASE) || value != new_vm(index))
            .collect();
        let xcr0 = state.xcrs.iter().find(|(i, _)| *i == 0).map_or(0x3, |(_, v)| *v);
        let regs = kvm_regs {
            rax: 0,
            rip: SYSCALL_RETURN_PATH,
            rsp: KERNEL_STACK_TOP,
            rflags: 0x2,
            ..regs_from_format(&state.regs)
        };
        let (fs_base, gs_base) = (state.regs.fs_base, state.regs.gs_base);
        Ok(VcpuState { sregs: state.sregs, regs, xsave, fs_base, gs_base, msrs, xcr0 })
    }

    /// Sets the saved state on `vm`'s vCPU, with CR3 at `cr3` (the program's page tables in
    /// this VM). The special registers exactly as captured otherwise: in the syscall stub, at
    /// CPL0 on VT-x/AMD-V or at CPL3 under kvm-pvm; either way the stub's return path (where
    /// the vCPU resumes) runs at that level. The special and general registers are staged for
    /// the call's first run ([`crate::vm::Vcpu::stage_regs`]; KVM loads SREGS before REGS, as
    /// it requires), the rest is set now.
    pub(crate) fn restore(&self, vm: &mut Machine, cr3: u64) -> Result<(), VmError> {
        if let Some(saved) = &self.sregs {
            // What the format does not hold (no pending interrupt) is a new vCPU's.
            let mut sregs = sregs_from_format(saved, vm.cpl0_sregs);
            sregs.cr3 = cr3;
            sregs.fs.base = self.fs_base;
            sregs.gs.base = self.gs_base;
            vm.vcpu.stage_sregs(&sregs);
            // The page-table writer enters CPL0 with these bases (the FS base follows the
            // process; the GS base only a restore sets).
            vm.cpl0_sregs.gs.base = sregs.gs.base;
        }
        let sys = crate::kvm::system()?;
        if self.xcr0 != sys.xcr0 {
            vm::set_xcr0(&vm.vcpu, self.xcr0)?;
        }
        // SAFETY: a 4096-byte kvm_xsave; XCR0 enables no feature (AMX) whose state is larger.
        unsafe { vm.vcpu.set_xsave(&self.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
        if !self.msrs.is_empty() {
            vm::set_msrs(&vm.vcpu, &self.msrs)?;
        }
        vm.vcpu.stage_regs(&self.regs);
        Ok(())
    }
}

/// The value of MSR `index` in `msrs` (0 if absent).
fn msr(msrs: &[(u32, u64)], index: u32) -> u64 {
    msrs.iter().find(|(i, _)| *i == index).map_or(0, |(_, v)| *v)
}

/// The general registers `kvm_regs` and the format's `Registers` both have, by name: the one
/// list both converters use, so a register cannot be saved and then forgotten on restore.
macro_rules! general_registers {
    ($apply:ident) => {
        $apply!(r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, rip, rsp)
    };
}

/// The general registers in the format's layout. What KVM keeps elsewhere (the selectors,
/// the TLS bases) is 0 here: [`save`] fills in the program's.
fn regs_to_format(k: &kvm_regs) -> fmt::Registers {
    macro_rules! to_format {
        ($($r:ident),*) => {
            fmt::Registers {
                $($r: k.$r,)*
                eflags: k.rflags,
                orig_rax: k.rax,
                cs: 0,
                ss: 0,
                fs_base: 0,
                gs_base: 0,
                ds: 0,
                es: 0,
                fs: 0,
                gs: 0,
            }
        };
    }
    general_registers!(to_format)
}

fn regs_from_format(f: &fmt::Registers) -> kvm_regs {
    macro_rules! from_format {
        ($($r:ident),*) => {
            kvm_regs { $($r: f.$r,)* rflags: f.eflags }
        };
    }
    general_registers!(from_format)
}

/// The fields of a segment register both layouts have.
macro_rules! segment_fields {
    ($apply:ident) => {
        $apply!(base, limit, selector, type_, present, dpl, db, s, l, g, avl)
    };
}

fn segment_to_format(s: &kvm_segment) -> fmt::Segment {
    macro_rules! to_format {
        ($($f:ident),*) => { fmt::Segment { $($f: s.$f),* } };
    }
    segment_fields!(to_format)
}

fn segment_from_format(s: &fmt::Segment) -> kvm_segment {
    macro_rules! from_format {
        ($($f:ident),*) => {
            kvm_segment { $($f: s.$f,)* unusable: u8::from(s.present == 0), padding: 0 }
        };
    }
    segment_fields!(from_format)
}

/// The special registers both layouts have: segments, then plain values.
macro_rules! special_registers {
    ($apply:ident) => {
        $apply!([cs, ds, es, fs, gs, ss, tr, ldt], [cr0, cr2, cr3, cr4, cr8, efer, apic_base])
    };
}

fn sregs_to_format(s: &kvm_sregs) -> fmt::SpecialRegisters {
    macro_rules! to_format {
        ([$($seg:ident),*], [$($v:ident),*]) => {
            fmt::SpecialRegisters {
                $($seg: segment_to_format(&s.$seg),)*
                $($v: s.$v,)*
                gdt: fmt::DescriptorTable { base: s.gdt.base, limit: s.gdt.limit },
                idt: fmt::DescriptorTable { base: s.idt.base, limit: s.idt.limit },
            }
        };
    }
    special_registers!(to_format)
}

/// The saved special registers over `base`, which supplies what the format does not hold
/// (the interrupt bitmap).
fn sregs_from_format(f: &fmt::SpecialRegisters, base: kvm_sregs) -> kvm_sregs {
    macro_rules! from_format {
        ([$($seg:ident),*], [$($v:ident),*]) => {
            kvm_sregs {
                $($seg: segment_from_format(&f.$seg),)*
                $($v: f.$v,)*
                gdt: kvm_dtable { base: f.gdt.base, limit: f.gdt.limit, ..Default::default() },
                idt: kvm_dtable { base: f.idt.base, limit: f.idt.limit, ..Default::default() },
                ..base
            }
        };
    }
    special_registers!(from_format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_register_converters_are_each_others_inverse() {
        let k = kvm_regs {
            r15: 1,
            r14: 2,
            r13: 3,
            r12: 4,
            rbp: 5,
            rbx: 6,
            r11: 7,
            r10: 8,
            r9: 9,
            r8: 10,
            rax: 11,
            rcx: 12,
            rdx: 13,
            rsi: 14,
            rdi: 15,
            rip: 16,
            rsp: 17,
            rflags: 0x246,
        };
        let back = regs_from_format(&regs_to_format(&k));
        assert_eq!(format!("{back:?}"), format!("{k:?}"));
        let seg = |n: u8| kvm_segment {
            base: u64::from(n) << 12,
            limit: 0xFFFF,
            selector: u16::from(n) * 8,
            type_: 0xB,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let s = kvm_sregs {
            cs: seg(1),
            ds: seg(2),
            es: seg(3),
            fs: seg(4),
            gs: seg(5),
            ss: seg(6),
            tr: seg(7),
            ldt: seg(8),
            gdt: kvm_dtable { base: 0x1000, limit: 0x7F, ..Default::default() },
            idt: kvm_dtable { base: 0x2000, limit: 0xFFF, ..Default::default() },
            cr0: 0x8005_0033,
            cr2: 0xdead,
            cr3: 0x3000,
            cr4: 0x40620,
            cr8: 0,
            efer: 0xD01,
            apic_base: 0xFEE0_0900,
            interrupt_bitmap: [0; 4],
        };
        let back = sregs_from_format(&sregs_to_format(&s), kvm_sregs::default());
        assert_eq!(format!("{back:?}"), format!("{s:?}"));
    }

    #[test]
    fn a_snapshot_that_moves_the_syscall_entry_is_refused() {
        let vm = crate::vm::EmptyVm::create(crate::layout::MIN_MEMORY).expect("create VM");
        let entry = SyscallEntry { nr: 0, args: [0; 6], return_rip: 0x40_1000, rflags: 0x202, user_rsp: 0x7f_0000 };
        let saved = save(&vm.machine.vcpu, &entry).expect("save");
        assert_eq!(saved.msrs.iter().map(|&(i, _)| i).collect::<Vec<_>>(), SAVED_MSRS);
        let mut state = fmt::SnapshotState {
            regs: saved.regs,
            sregs: Some(saved.sregs),
            msrs: saved.msrs,
            xcrs: saved.xcrs,
            xsave: saved.xsave,
            ..Default::default()
        };
        let restored = VcpuState::from_snapshot(&state).expect("this monitor's own state");
        // A new VM has every one of those values already (the TLS bases go in the segments).
        assert_eq!(restored.msrs, [], "nothing left for a restore to set");
        let mut other = state.clone();
        for m in other.msrs.iter_mut().filter(|(i, _)| *i == crate::vm::MSR_KERNEL_GS_BASE) {
            m.1 = 0x1234_5000;
        }
        let restored = VcpuState::from_snapshot(&other).expect("a kernel GS base of its own");
        assert_eq!(restored.msrs, [(crate::vm::MSR_KERNEL_GS_BASE, 0x1234_5000)]);
        let without_sregs = VcpuState::from_snapshot(&fmt::SnapshotState { sregs: None, ..state.clone() }).unwrap();
        let tls: Vec<u32> = without_sregs.msrs.iter().map(|&(i, _)| i).collect();
        assert_eq!(tls, [crate::vm::MSR_FS_BASE, crate::vm::MSR_GS_BASE], "no segments: the TLS bases as MSRs");
        for m in state.msrs.iter_mut().filter(|(i, _)| *i == crate::vm::MSR_LSTAR) {
            m.1 = 0x40_1000;
        }
        let refused = VcpuState::from_snapshot(&state).err().expect("a moved LSTAR is refused");
        assert!(refused.contains("0xc0000082"), "{refused}");
    }
}
