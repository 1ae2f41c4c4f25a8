//! Probes for the latency study (issue 6): the physical floor under every call, measured
//! through the same objects and ioctls the monitor uses, one step at a time.
//!
//! Nothing here is on the call path. [`create_steps`] repeats the steps of
//! [`EmptyVm::create`] in its order and times each; [`ExitProbe`] runs a two-instruction loop
//! in a real [`EmptyVm`] so that each `KVM_RUN` returns after exactly one exit of a chosen
//! kind. The study (`benches/src/bin/latency-study`) and the criterion benches call these.
//!
//! Under kvm-pvm, code at CPL0 is emulated instruction by instruction (≈1.2 µs each, measured
//! for the stubs in [`crate::layout`]), so the CPL0 loops here are kept to two instructions
//! and touch no SSE register (an SSE instruction at CPL0 kills a PVM guest).

use std::time::{Duration, Instant};

use kvm_bindings::kvm_regs;
use kvm_ioctls::VcpuExit;

use crate::exits::{classify, Event};
use crate::ioctl::{ioctl, IoctlError};
use crate::layout::{GuestAddr, KERNEL_STACK_TOP, LARGE_PAGE, PAGE_SIZE, SYSCALL_RETURN_PATH, USER_START};
use crate::memory::{GuestMemory, MemoryError};
use crate::vm::{EmptyVm, VmError};

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Creating or driving the probe's VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Writing the probe's code or page tables failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A KVM ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] IoctlError),
    /// The probe's guest exited otherwise than it was written to.
    #[error("probe guest: expected {expected}, got {got}")]
    UnexpectedExit {
        /// The exit the probe waits for.
        expected: &'static str,
        /// The exit it got.
        got: String,
    },
    /// The VM's memory leaves no room for the MMIO page below 1 GiB.
    #[error("guest memory of {0:#x} bytes leaves no room below 1 GiB for the probe's MMIO page")]
    MemoryTooLarge(u64),
    /// The vCPU's page tables are not the identity map.
    #[error("the vCPU's page tables are not the identity map the probe expects ({0})")]
    PageTables(&'static str),
}

/// Wall time of each step of [`EmptyVm::create`] and of the teardown, in the same order.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateSteps {
    /// `KVM_CREATE_VM`.
    pub create_vm: Duration,
    /// Reserving guest memory (`mmap`) and `KVM_SET_USER_MEMORY_REGION`.
    pub set_memory: Duration,
    /// `KVM_CREATE_VCPU` (includes mapping its `kvm_run` page).
    pub create_vcpu: Duration,
    /// `KVM_SET_CPUID2` with the process-wide supported CPUID.
    pub set_cpuid: Duration,
    /// Closing the vCPU and VM fds and unmapping guest memory.
    pub destroy: Duration,
}

/// Runs the first four steps of [`EmptyVm::create`] with the same ioctls and arguments,
/// timing each, then tears the VM down. (Writing the monitor area and setting the control
/// registers, MSRs and XCR0 are the rest of `EmptyVm::create`; time it whole for those.)
/// The VM comes from the VM creator when the process started one
/// ([`crate::vm_creator::start`], as the pool does), as `EmptyVm::create`'s do.
pub fn create_steps(memory_size: u64) -> Result<CreateSteps, ProbeError> {
    let sys = crate::kvm::system().map_err(VmError::from)?;
    let t0 = Instant::now();
    let vm = crate::vm_creator::create_vm(&sys.kvm).map_err(ioctl("KVM_CREATE_VM"))?;
    let t1 = Instant::now();
    let memory = GuestMemory::new(memory_size)?;
    // SAFETY: `memory` is dropped only after the VM fd below.
    unsafe { crate::vm::attach_memory(&vm, &memory) }?;
    let t2 = Instant::now();
    let vcpu = vm.create_vcpu(0).map_err(ioctl("KVM_CREATE_VCPU"))?;
    let t3 = Instant::now();
    vcpu.set_cpuid2(&sys.cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    let t4 = Instant::now();
    drop(vcpu);
    drop(vm);
    drop(memory);
    let t5 = Instant::now();
    Ok(CreateSteps {
        create_vm: t1 - t0,
        set_memory: t2 - t1,
        create_vcpu: t3 - t2,
        set_cpuid: t4 - t3,
        destroy: t5 - t4,
    })
}

/// The first `KVM_RUN` of a brand-new vCPU and, for comparison, its second.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirstRun {
    /// The first `KVM_RUN`.
    pub first: Duration,
    /// The second.
    pub second: Duration,
}

/// Times the first and second `KVM_RUN` of a new vCPU running a two-instruction CPL0 loop
/// (`out 0x80, al; jmp`). [`EmptyVm::create`] already takes vCPU 0's first run (its warm-up, so
/// the pool pays for it), so the probe adds vCPU 1 to a fresh VM, gives it vCPU 0's CPUID and
/// control registers, and times that vCPU's runs: what the warm-up saves every call.
pub fn first_kvm_run(memory_size: u64) -> Result<FirstRun, ProbeError> {
    let sys = crate::kvm::system().map_err(VmError::from)?;
    let mut vm = EmptyVm::create(memory_size)?;
    vm.machine.memory.write(GuestAddr::new(CODE_PIO), &[0xE6, 0x80, 0xEB, 0xFC])?;
    let vcpu = vm.machine.vm.create_vcpu(1).map_err(ioctl("KVM_CREATE_VCPU"))?;
    vcpu.set_cpuid2(&sys.cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    let sregs = vm.machine.vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    let regs = kvm_regs { rip: CODE_PIO, rsp: KERNEL_STACK_TOP, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
    let mut vcpu = vcpu;
    let mut run = || -> Result<Duration, ProbeError> {
        let started = Instant::now();
        match vcpu.run().map_err(ioctl("KVM_RUN"))? {
            VcpuExit::IoOut(0x80, _) => Ok(started.elapsed()),
            other => {
                Err(ProbeError::UnexpectedExit { expected: "out 0x80 from a new vCPU", got: format!("{other:?}") })
            }
        }
    };
    let first = run()?;
    let second = run()?;
    Ok(FirstRun { first, second })
}

/// Which exit each `KVM_RUN` of an [`ExitProbe`] ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// CPL3 `mov [rbx], al; jmp` with rbx outside the memory slot: an MMIO exit straight
    /// from user mode, no CPL0 code involved. The bare hypervisor round trip.
    Cpl3Mmio,
    /// The same loop at CPL0 (emulated instruction by instruction under kvm-pvm).
    Cpl0Mmio,
    /// CPL0 `out 0x80, al; jmp`: a port-I/O exit from CPL0.
    Cpl0Pio,
    /// CPL3 `syscall; jmp` through the monitor's real syscall stub and return path, with the
    /// monitor's own exit classification and return-frame write: one guest syscall's
    /// fixed cost (without the syscall's own work).
    Syscall,
}

impl ExitKind {
    /// Every kind, in report order.
    pub const ALL: [ExitKind; 4] = [ExitKind::Cpl3Mmio, ExitKind::Cpl0Mmio, ExitKind::Cpl0Pio, ExitKind::Syscall];

    /// The kind's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Cpl3Mmio => "exit from CPL3 (MMIO)",
            ExitKind::Cpl0Mmio => "exit from CPL0 (MMIO)",
            ExitKind::Cpl0Pio => "exit from CPL0 (port I/O)",
            ExitKind::Syscall => "guest syscall round trip",
        }
    }
}

/// A fresh [`EmptyVm`] with a two-instruction loop in user memory; every [`ExitProbe::run_once`]
/// is one `KVM_RUN` that returns after exactly one exit of the chosen [`ExitKind`].
pub struct ExitProbe {
    vm: EmptyVm,
    kind: ExitKind,
    mmio_gpa: u64,
    code: u64,
    user_rsp: u64,
}

/// Where in user memory each loop is written (the VM is empty: no program is there).
const CODE_MMIO: u64 = USER_START;
const CODE_PIO: u64 = USER_START + 0x100;
const CODE_SYSCALL: u64 = USER_START + 0x200;

impl ExitProbe {
    /// Creates the VM (the real [`EmptyVm::create`]) and puts the loop for `kind` in it.
    pub fn new(memory_size: u64, kind: ExitKind) -> Result<ExitProbe, ProbeError> {
        let mut vm = EmptyVm::create(memory_size)?;
        // The MMIO target: the first 2 MiB beyond the slot, mapped user-writable in the
        // vCPU's own page tables (found through CR3, not through layout constants).
        if memory_size > (1 << 30) - LARGE_PAGE {
            return Err(ProbeError::MemoryTooLarge(memory_size));
        }
        let mmio_gpa = memory_size;
        let sregs = vm.machine.vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
        let table = |entry: u64| entry & 0x000F_FFFF_FFFF_F000;
        let pml4e = vm.machine.memory.read_u64(GuestAddr::new(table(sregs.cr3)))?;
        let pdpte = vm.machine.memory.read_u64(GuestAddr::new(table(pml4e)))?;
        if pml4e & 1 == 0 || pdpte & 1 == 0 || pdpte & (1 << 7) != 0 {
            return Err(ProbeError::PageTables("no page directory for the first GiB"));
        }
        let pde = GuestAddr::new(table(pdpte) + (mmio_gpa / LARGE_PAGE) * 8);
        vm.machine.memory.write_u64(pde, mmio_gpa | 1 | 2 | 4 | (1 << 7))?; // present, writable, user, 2 MiB

        // mov [rbx], al; jmp $-2        out 0x80, al; jmp $-2        syscall; jmp $-2
        vm.machine.memory.write(GuestAddr::new(CODE_MMIO), &[0x88, 0x03, 0xEB, 0xFC])?;
        vm.machine.memory.write(GuestAddr::new(CODE_PIO), &[0xE6, 0x80, 0xEB, 0xFC])?;
        vm.machine.memory.write(GuestAddr::new(CODE_SYSCALL), &[0x0F, 0x05, 0xEB, 0xFC])?;
        let user_rsp = USER_START + LARGE_PAGE - PAGE_SIZE;

        let (code, rip) = match kind {
            // Enter CPL3 as a cold start does: the stub's return path `iretq`s to the frame.
            ExitKind::Cpl3Mmio => (CODE_MMIO, SYSCALL_RETURN_PATH),
            ExitKind::Syscall => (CODE_SYSCALL, SYSCALL_RETURN_PATH),
            // A new EmptyVm's vCPU is at CPL0 already: just point rip at the loop.
            ExitKind::Cpl0Mmio => (CODE_MMIO, CODE_MMIO),
            ExitKind::Cpl0Pio => (CODE_PIO, CODE_PIO),
        };
        if rip == SYSCALL_RETURN_PATH {
            crate::call::write_user_return(&mut vm.machine.memory, code, user_rsp, 0, 0)?;
        }
        let regs = kvm_regs { rip, rsp: KERNEL_STACK_TOP, rflags: 0x2, rbx: mmio_gpa, ..Default::default() };
        vm.machine.vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?;
        Ok(ExitProbe { vm, kind, mmio_gpa, code, user_rsp })
    }

    /// One `KVM_RUN` to the next exit, and what the monitor does on it (for
    /// [`ExitKind::Syscall`]: classify, read the synced registers, rewrite the return frame).
    /// The first call on a new probe is the VM's first `KVM_RUN`.
    pub fn run_once(&mut self) -> Result<Duration, ProbeError> {
        let started = Instant::now();
        let machine = &mut self.vm.machine;
        let exit = machine.vcpu.run(&mut machine.memory).map_err(ioctl("KVM_RUN"))?;
        let ok = match (self.kind, &exit) {
            (ExitKind::Cpl3Mmio | ExitKind::Cpl0Mmio, VcpuExit::MmioWrite(addr, _)) => *addr == self.mmio_gpa,
            (ExitKind::Cpl0Pio, VcpuExit::IoOut(0x80, _)) => true,
            (ExitKind::Syscall, exit) => {
                // The same test the run loop makes (the stub's exit changes with the design:
                // a doorbell MMIO write, or a #PF through the IDT on older kvm-pvm layouts).
                matches!(classify(exit), Event::Syscall | Event::Exception(14))
            }
            _ => false,
        };
        if !ok {
            let got = format!("{exit:?}");
            return Err(ProbeError::UnexpectedExit { expected: self.kind.name(), got });
        }
        if self.kind == ExitKind::Syscall {
            let regs = self.vm.machine.vcpu.sync_regs().regs;
            std::hint::black_box(regs.rax);
            crate::call::write_user_return(&mut self.vm.machine.memory, self.code, self.user_rsp, regs.r11, 0)?;
        }
        Ok(started.elapsed())
    }

    /// The probe's VM (to time its destruction).
    pub fn into_vm(self) -> EmptyVm {
        self.vm
    }
}

/// Median wall time of each vCPU ioctl a restore in the pool issues, on a warm vCPU of a
/// fresh [`EmptyVm`] (`rounds` of each): what one ioctl more or fewer per VM is worth. Under
/// nested kvm-pvm every vCPU ioctl loads the vCPU (host MSR reads that trap to the outer
/// hypervisor), so even one that runs no guest code is not free.
#[derive(Debug, Clone, Copy, Default)]
pub struct VcpuIoctlPrices {
    /// `KVM_RUN` with `immediate_exit` set (no guest code runs), nothing staged.
    pub immediate_run: Duration,
    /// The same with general and special registers staged in kvm_run's sync area.
    pub immediate_run_staged: Duration,
    /// `KVM_SET_REGS`.
    pub set_regs: Duration,
    /// `KVM_SET_XSAVE` of the vCPU's own state.
    pub set_xsave: Duration,
    /// `KVM_SET_MSRS` of one MSR (`KERNEL_GS_BASE`).
    pub set_msrs: Duration,
}

/// Measures [`VcpuIoctlPrices`] (see there).
pub fn vcpu_ioctl_prices(memory_size: u64, rounds: usize) -> Result<VcpuIoctlPrices, ProbeError> {
    const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
    let mut vm = EmptyVm::create(memory_size)?;
    let machine = &mut vm.machine;
    let regs = machine.vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?;
    let sregs = machine.vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
    let xsave = machine.vcpu.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?;
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    };
    let mut time = |f: &mut dyn FnMut(&mut crate::vm::Machine) -> Result<(), ProbeError>| {
        let mut v = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let started = Instant::now();
            f(machine)?;
            v.push(started.elapsed());
        }
        Ok::<_, ProbeError>(median(v))
    };
    let immediate = |m: &mut crate::vm::Machine| {
        m.complete_exit().map_err(|got| ProbeError::UnexpectedExit { expected: "an immediate exit", got })
    };
    Ok(VcpuIoctlPrices {
        immediate_run: time(&mut |m| immediate(m))?,
        immediate_run_staged: time(&mut |m| {
            m.vcpu.stage_sregs(&sregs);
            m.vcpu.stage_regs(&regs);
            immediate(m)
        })?,
        set_regs: time(&mut |m| Ok(m.vcpu.set_regs(&regs).map_err(ioctl("KVM_SET_REGS"))?))?,
        // SAFETY: a kvm_xsave this vCPU gave, so of the size it takes.
        set_xsave: time(&mut |m| Ok(unsafe { m.vcpu.set_xsave(&xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?))?,
        set_msrs: time(&mut |m| Ok(crate::vm::set_msrs(&m.vcpu, &[(MSR_KERNEL_GS_BASE, 0)])?))?,
    })
}
