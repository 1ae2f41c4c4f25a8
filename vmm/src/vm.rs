//! A pooled, empty VM: KVM VM, one vCPU, one memory slot with the monitor area written, and
//! the vCPU's control state set for 64-bit CPL3 execution. Nothing of any program is in it.
//!
//! Creating one costs ≈0.4 ms on kvm-pvm (see docs/), which is why [`crate::pool`] makes them
//! ahead of time and destroys used ones after the response has gone out.

use kvm_bindings::{kvm_msr_entry, kvm_segment, kvm_userspace_memory_region, kvm_xcrs, Msrs};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd, VmFd};

use crate::ioctl::{ioctl, IoctlError};
use crate::kvm::{self, KvmError};
use crate::layout::*;
use crate::memory::{GuestMemory, MemoryError};

/// Errors creating, preparing or driving a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` could not be used.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// A memory size the monitor cannot lay out.
    #[error("guest memory size {0:#x} is not a multiple of 2 MiB between 32 MiB and 4 GiB")]
    BadMemorySize(u64),
    /// Reserving, mapping or filling guest memory failed.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A KVM ioctl failed, with the kernel's error.
    #[error(transparent)]
    Ioctl(#[from] IoctlError),
    /// A list of MSRs longer than one KVM_GET_MSRS/KVM_SET_MSRS takes (a monitor bug).
    #[error("{ioctl}: {count} MSRs are more than one call takes")]
    TooManyMsrs {
        /// KVM_GET_MSRS or KVM_SET_MSRS.
        ioctl: &'static str,
        /// How many MSRs were asked for.
        count: usize,
    },
    /// KVM_GET_MSRS/KVM_SET_MSRS stopped at an MSR this vCPU does not have.
    #[error("{ioctl} handled {done} of {asked} MSRs: the vCPU refused MSR {refused:#x}")]
    MsrRefused {
        /// KVM_GET_MSRS or KVM_SET_MSRS.
        ioctl: &'static str,
        /// How many it handled.
        done: usize,
        /// How many were asked for.
        asked: usize,
        /// The first MSR it did not handle.
        refused: u32,
    },
    /// The new vCPU's warm-up run ended otherwise than at its port exit.
    #[error("the new vCPU's warm-up run did not exit as expected: {0}")]
    WarmUp(String),
    /// The pool's pre-fault run ended otherwise than at its doorbell.
    #[error("the pre-fault run did not exit as expected: {0}")]
    Prefault(String),
    /// A thread of the VM pool (a filler, the reaper) could not be started.
    #[error("cannot start the {thread} thread: {source}")]
    SpawnThread {
        /// Which thread.
        thread: &'static str,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// The page-table writer's run could not be set up: completing the exit before it gave
    /// this instead.
    #[error("completing the exit before the page-table writer runs gave {0}")]
    TableWriter(String),
    /// Loading a prepared VM's staged registers ahead of its call gave this instead.
    #[error("loading the restored registers ahead of the call gave {0}")]
    LoadRegisters(String),
}

pub const MSR_STAR: u32 = 0xC000_0081;
pub const MSR_LSTAR: u32 = 0xC000_0082;
pub const MSR_CSTAR: u32 = 0xC000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xC000_0084;
pub const MSR_FS_BASE: u32 = 0xC000_0100;
pub const MSR_GS_BASE: u32 = 0xC000_0101;
pub const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const MSR_SYSENTER_CS: u32 = 0x174;

/// MSRs a snapshot saves and a restore sets (the syscall MSRs are the same in every VM, and
/// a restore refuses a snapshot whose values differ: `vcpu_state.rs`).
pub const SAVED_MSRS: [u32; 8] =
    [MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SYSCALL_MASK, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, MSR_SYSENTER_CS];

/// The vCPU of a VM. Running it takes the VM's guest memory by `&mut`, so the borrow checker
/// proves that no slice of guest memory is held across a `KVM_RUN` (while the guest runs, it
/// may write any of it). Everything else a `VcpuFd` does (registers, MSRs) is reached through
/// `Deref`; what needs `&mut` is here, and nothing hands out a `&mut VcpuFd`.
pub(crate) struct Vcpu {
    fd: VcpuFd,
    /// Host address of the memory this vCPU's VM maps: `run` checks it was given that.
    pub(crate) memory_base: u64,
}

impl Vcpu {
    /// `KVM_RUN`: runs the guest until its next exit.
    pub(crate) fn run<'a>(&'a mut self, memory: &mut GuestMemory) -> Result<VcpuExit<'a>, kvm_ioctls::Error> {
        debug_assert_eq!(memory.host_base(), self.memory_base, "a vCPU runs over its own VM's memory");
        self.fd.run()
    }

    /// Sets `kvm_run.immediate_exit` (1: the next `KVM_RUN` returns at once with EINTR).
    /// The registers an exit copied into kvm_run (the page-table writer edits them in place).
    pub(crate) fn sync_regs_mut(&mut self) -> &mut kvm_bindings::kvm_sync_regs {
        self.fd.sync_regs_mut()
    }

    /// Gives the vCPU `regs` at its next `KVM_RUN`, through kvm_run's sync area: no ioctl of
    /// its own. Every vCPU ioctl costs a vcpu_load (under nested kvm-pvm a trapped MSR read,
    /// several µs), so the registers of a run the monitor starts go with that run.
    pub(crate) fn stage_regs(&mut self, regs: &kvm_bindings::kvm_regs) {
        self.fd.sync_regs_mut().regs = *regs;
        self.fd.set_sync_dirty_reg(SyncReg::Register);
    }

    /// Gives the vCPU `sregs` at its next `KVM_RUN`, as [`Self::stage_regs`] does; KVM loads
    /// them before the general registers, as KVM_SET_SREGS must come before KVM_SET_REGS.
    /// The monitor sets special registers no other way (a KVM_SET_SREGS after this would be
    /// undone by the run).
    pub(crate) fn stage_sregs(&mut self, sregs: &kvm_bindings::kvm_sregs) {
        self.fd.sync_regs_mut().sregs = *sregs;
        self.fd.set_sync_dirty_reg(SyncReg::SystemRegister);
    }

    /// KVM_SET_REGS now. Registers staged for the next run are dropped: this write is the
    /// later one and must win.
    pub(crate) fn set_regs(&mut self, regs: &kvm_bindings::kvm_regs) -> Result<(), kvm_ioctls::Error> {
        self.fd.get_kvm_run().kvm_dirty_regs &= !kvm_bindings::KVM_SYNC_X86_REGS as u64;
        self.fd.set_regs(regs)
    }

    pub(crate) fn set_kvm_immediate_exit(&mut self, value: u8) {
        self.fd.set_kvm_immediate_exit(value)
    }

    /// The vCPU's `kvm_run` page (the exit's details; the deadline's kick flag).
    pub(crate) fn get_kvm_run(&mut self) -> &mut kvm_bindings::kvm_run {
        self.fd.get_kvm_run()
    }
}

impl std::ops::Deref for Vcpu {
    type Target = VcpuFd;
    fn deref(&self) -> &VcpuFd {
        &self.fd
    }
}

/// What every VM state owns: the KVM VM, its vCPU and the memory behind its slot. The states
/// ([`EmptyVm`], [`PreparedVm`], a running [`crate::ReadyCall`], [`UsedVm`]) wrap it, so each
/// can only do what its state allows.
///
/// Field order is drop order: the vCPU, then the VM, then the memory behind its slot.
pub(crate) struct Machine {
    pub(crate) vcpu: Vcpu,
    /// Held so the VM lives exactly as long as its vCPU and memory (and read by the probes).
    #[cfg_attr(not(feature = "probe"), allow(dead_code))]
    pub(crate) vm: VmFd,
    pub(crate) memory: GuestMemory,
    /// Guest TSC minus host TSC (0 under kvm-pvm; per VM on VT-x/AMD-V), for the time page.
    pub(crate) tsc_offset: crate::tsc::TscOffset,
    /// The special registers of CPL0 in this VM (as set up here), for entering the page-table
    /// writer and loading a program's page-table root ([`crate::page_tables`]).
    pub(crate) cpl0_sregs: kvm_bindings::kvm_sregs,
    /// Whether the vCPU has had its first KVM_RUN, the slow one (the warm-up's, or a
    /// pre-fault run's).
    pub(crate) warm: bool,
}

/// A VM no call has used and nothing is loaded into: ready for a cold start, or to have a
/// snapshot restored into it ([`PreparedVm`]).
pub struct EmptyVm {
    pub(crate) machine: Machine,
}

/// A VM with a snapshot already restored into it (by the pool, ahead of any call) and never
/// run: only the call's request and a fresh clock are missing. It knows which snapshot image
/// it holds, so it can only be started by that image's function.
pub struct PreparedVm {
    pub(crate) machine: Machine,
    /// The [`crate::snapshot::SnapshotImage`] restored into it.
    pub(crate) image: u64,
    /// Where the restore spent its time, for the pool's report.
    pub(crate) phases: crate::pool::FillPhases,
}

/// A VM no call has used: what [`crate::Runtime::take_vm`] gives and
/// [`crate::Function::start`] takes.
pub enum FreshVm {
    /// Nothing loaded yet.
    Empty(EmptyVm),
    /// A snapshot restored ahead.
    Prepared(PreparedVm),
}

/// The VM a call ran in. It can only be destroyed: dropped here, or handed to
/// [`crate::Runtime::release`] to be destroyed off the call's path (or, under the opt-in
/// recycling experiment, emptied into a shell there: `recycle.rs`).
pub struct UsedVm {
    pub(crate) machine: Machine,
}

impl From<EmptyVm> for FreshVm {
    fn from(vm: EmptyVm) -> FreshVm {
        FreshVm::Empty(vm)
    }
}

impl From<PreparedVm> for FreshVm {
    fn from(vm: PreparedVm) -> FreshVm {
        FreshVm::Prepared(vm)
    }
}

impl FreshVm {
    /// Size of this VM's guest memory.
    pub fn memory_size(&self) -> u64 {
        self.machine().memory.size()
    }
    pub(crate) fn machine(&self) -> &Machine {
        match self {
            FreshVm::Empty(vm) => &vm.machine,
            FreshVm::Prepared(vm) => &vm.machine,
        }
    }
    pub(crate) fn into_machine(self) -> Machine {
        match self {
            FreshVm::Empty(vm) => vm.machine,
            FreshVm::Prepared(vm) => vm.machine,
        }
    }
}

impl PreparedVm {
    /// Size of this VM's guest memory.
    pub fn memory_size(&self) -> u64 {
        self.machine.memory.size()
    }

    /// Has KVM load the registers the restore staged now, not at the call's first run (one
    /// KVM_RUN with immediate_exit, which runs no guest code): the pool does this after
    /// restoring ahead, so loading them (and the MMU reset a new CR3 brings) stays off the
    /// call's path, as when they were set by ioctl. An inline restore leaves them staged:
    /// there the call's first run loading them saves an ioctl.
    pub(crate) fn load_registers_ahead(&mut self) -> Result<(), VmError> {
        let started = std::time::Instant::now();
        let loaded = self.machine.complete_exit().map_err(VmError::LoadRegisters);
        self.phases.vcpu += started.elapsed();
        loaded
    }
}

impl EmptyVm {
    /// Creates a VM with `memory_size` bytes of guest memory (the function's memory cap),
    /// its vCPU past its slow first KVM_RUN ([`Machine::warm_up`]).
    pub fn create(memory_size: u64) -> Result<EmptyVm, VmError> {
        let mut vm = Self::create_unwarmed(memory_size)?;
        vm.machine.warm_up()?;
        Ok(vm)
    }

    /// [`Self::create`] without the warm-up run, for a VM the pool restores a snapshot into
    /// at once: the restore's pre-fault run is the vCPU's first, so a warm-up before it would
    /// cost a KVM_RUN and its completion (two vCPU ioctls) for nothing. The restore warms the
    /// vCPU up itself if it has no pre-fault run (`Machine::warm`).
    pub(crate) fn create_unwarmed(memory_size: u64) -> Result<EmptyVm, VmError> {
        check_memory_size(memory_size)?;
        Self::create_unwarmed_in(GuestMemory::new(memory_size)?)
    }

    /// [`Self::create_unwarmed`] around `memory`: new, or a finished VM's reset for another
    /// restore of the same snapshot (`memory_reuse.rs`). The VM, its vCPU and the monitor area
    /// are new either way.
    pub(crate) fn create_unwarmed_in(mut memory: GuestMemory) -> Result<EmptyVm, VmError> {
        check_memory_size(memory.size())?;
        let sys = kvm::system()?;
        let vm = retry_eintr(|| crate::vm_creator::create_vm(&sys.kvm)).map_err(ioctl("KVM_CREATE_VM"))?;
        // SAFETY: `memory` lives in this VM's Machine, which drops it after the VM fd (field
        // order).
        unsafe { attach_memory(&vm, &memory) }?;
        let mut fd = retry_eintr(|| vm.create_vcpu(0)).map_err(ioctl("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(&sys.cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
        sys.note_tsc_khz(&fd);
        write_monitor_area(&mut memory)?;
        // Exits copy the general registers into kvm_run, so a syscall's arguments cost no ioctl.
        fd.set_sync_valid_reg(SyncReg::Register);
        let mut vcpu = Vcpu { fd, memory_base: memory.host_base() };
        let cpl0_sregs = set_long_mode_at_stub(&mut vcpu, sys)?;
        let tsc_offset = crate::tsc::TscOffset::measure(&vcpu)?;
        let machine = Machine { vcpu, vm, memory, tsc_offset, cpl0_sregs, warm: false };
        Ok(EmptyVm { machine })
    }

    /// Size of this VM's guest memory.
    pub fn memory_size(&self) -> u64 {
        self.machine.memory.size()
    }
}

/// A VM's memory is whole 2 MiB windows, between the smallest and largest sizes supported.
fn check_memory_size(size: u64) -> Result<(), VmError> {
    if !size.is_multiple_of(LARGE_PAGE) || !(MIN_MEMORY..=MAX_MEMORY).contains(&size) {
        return Err(VmError::BadMemorySize(size));
    }
    Ok(())
}

impl Machine {
    /// Destroys the VM and its vCPU and keeps the memory that was behind its slot, to be reset
    /// and reused (`memory_reuse.rs`). Once this returns no KVM VM maps the memory: closing
    /// the last descriptors of a VM frees its memory slots and every translation it built.
    pub(crate) fn into_memory(self) -> GuestMemory {
        let Machine { vcpu, vm, memory, .. } = self;
        drop(vcpu);
        drop(vm);
        memory
    }

    /// The first KVM_RUN of a new vCPU is slow (≈90 µs on kvm-pvm: the hypervisor sets the
    /// vCPU up), so do it here, where the pool pays for it: run a CPL0 stub that exits at
    /// once, then complete that exit (KVM_RUN with immediate_exit) so registers can be set.
    pub(crate) fn warm_up(&mut self) -> Result<(), VmError> {
        let regs =
            kvm_bindings::kvm_regs { rip: WARM_UP_STUB, rsp: KERNEL_STACK_TOP, rflags: 0x2, ..Default::default() };
        self.vcpu.stage_regs(&regs);
        loop {
            match self.vcpu.run(&mut self.memory) {
                Ok(VcpuExit::IoOut(port, _)) if port == WARM_UP_PORT => break,
                Ok(other) => {
                    return Err(VmError::WarmUp(format!("{other:?}")));
                }
                // A signal for this thread (any handler's, not ours: no deadline is armed
                // here) interrupted the run before the stub's exit: run on. A storm of them
                // once failed VM creation with "KVM_RUN failed: errno 4".
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) => return Err(ioctl("KVM_RUN")(e).into()),
            }
        }
        self.complete_exit().map_err(|got| VmError::WarmUp(format!("completing the warm-up exit gave {got}")))?;
        self.warm = true;
        Ok(())
    }

    /// Lets KVM finish the port or MMIO exit the vCPU stopped at (it does so only on the next
    /// KVM_RUN) without running guest code: KVM_RUN with immediate_exit. Must come before
    /// anyone sets registers. Registers staged for the next run are loaded by it too (KVM
    /// loads them before it completes the exit), so stage after it, unless loading them is
    /// the point ([`PreparedVm::load_registers_ahead`]). On failure, what that KVM_RUN gave
    /// instead.
    pub(crate) fn complete_exit(&mut self) -> Result<(), String> {
        self.vcpu.set_kvm_immediate_exit(1);
        let completed = match self.vcpu.run(&mut self.memory) {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            other => Err(format!("{other:?}")),
        };
        self.vcpu.set_kvm_immediate_exit(0);
        completed
    }
}

/// Repeats an ioctl that a signal interrupted (KVM_CREATE_VM returns EINTR when the thread
/// has a signal pending, e.g. from an io_uring completion on a server's loop thread).
fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, kvm_ioctls::Error>) -> Result<T, kvm_ioctls::Error> {
    loop {
        match f() {
            Err(e) if e.errno() == libc::EINTR => continue,
            other => return other,
        }
    }
}

/// Makes `memory` the VM's guest-physical `[0, size)` (memory slot 0).
///
/// # Safety
/// `memory` must stay mapped until `vm` is closed: KVM keeps its host address.
pub(crate) unsafe fn attach_memory(vm: &VmFd, memory: &GuestMemory) -> Result<(), VmError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: memory.size(),
        userspace_addr: memory.host_base(),
    };
    // SAFETY: the region describes `memory`, a live mapping of exactly `memory.size()` bytes,
    // which the caller keeps mapped for the VM's life.
    unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    Ok(())
}

/// Removes memory slot 0, which KVM answers by zapping every guest-physical translation it
/// built from it (all shadow pages under kvm-pvm, the EPT/NPT entries on VT-x/AMD-V) and
/// flushing the vCPUs' TLBs. Afterwards KVM holds no reference to the slot's host memory.
pub(crate) fn detach_memory(vm: &VmFd) -> Result<(), VmError> {
    let region =
        kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0, userspace_addr: 0 };
    // SAFETY: a zero-sized region deletes the slot; no host memory is handed to KVM.
    unsafe { vm.set_user_memory_region(region) }.map_err(ioctl("KVM_SET_USER_MEMORY_REGION (delete)"))?;
    Ok(())
}

/// Writes page tables, GDT, TSS, IDT and the CPL0 stubs into the monitor area.
///
/// These first page tables map all user memory read-write-execute (the stack guard absent):
/// only the warm-up and the monitor's own probes run on them. No program does: a cold start
/// and a restore both give the program its own tables, built from its region map, before it
/// runs ([`crate::page_tables`]).
pub(crate) fn write_monitor_area(mem: &mut GuestMemory) -> Result<(), MemoryError> {
    const PRESENT: u64 = 1;
    const WRITABLE: u64 = 1 << 1;
    const USER: u64 = 1 << 2;
    const HUGE: u64 = 1 << 7;
    // Accessed and dirty from the start: the CPU (or, with shadow paging, KVM) need not set
    // them on a page's first read and again on its first write, and a read is enough to map
    // a page writable (which the pool's pre-fault relies on).
    const ACCESSED_DIRTY: u64 = (1 << 5) | (1 << 6);
    // Identity map [0, size) with 2 MiB pages; the first one is supervisor-only.
    mem.write_u64(GuestAddr::new(PML4_ADDR), PDPT_ADDR | PRESENT | WRITABLE | USER)?;
    let gigabytes = mem.size().div_ceil(1 << 30);
    for g in 0..gigabytes {
        let pd = PD_ADDR + g * PAGE_SIZE;
        mem.write_u64(GuestAddr::new(PDPT_ADDR + g * 8), pd | PRESENT | WRITABLE | USER)?;
    }
    let entries: Vec<u64> = std::iter::once(LOW_PT_ADDR | PRESENT | WRITABLE | USER)
        .chain(
            (1..mem.size() / LARGE_PAGE).map(|i| (i * LARGE_PAGE) | PRESENT | WRITABLE | HUGE | USER | ACCESSED_DIRTY),
        )
        .collect();
    mem.write_u64s(GuestAddr::new(PD_ADDR), &entries)?;
    // The stack's lowest window in 4 KiB pages, its first one absent: the stack guard.
    let guard = stack_guard(mem.size());
    let mut window = [0u64; 512];
    for (i, e) in window.iter_mut().enumerate().skip(1) {
        *e = (guard + i as u64 * PAGE_SIZE) | PRESENT | WRITABLE | USER | ACCESSED_DIRTY;
    }
    mem.write_u64s(GuestAddr::new(STACK_GUARD_PT_ADDR), &window)?;
    mem.write_u64(GuestAddr::new(PD_ADDR + guard / LARGE_PAGE * 8), STACK_GUARD_PT_ADDR | PRESENT | WRITABLE | USER)?;
    // The first 2 MiB in 4 KiB pages: page 0 absent (NULL faults), monitor structures
    // supervisor-only, the stub and syscall pages user-readable (see `syscall_stub`), the
    // doorbell pointing outside guest memory, everything else absent.
    let mut low = [0u64; 512];
    for page in (PML4_ADDR..=LOW_PT_ADDR).step_by(PAGE_SIZE as usize) {
        low[(page / PAGE_SIZE) as usize] = page | PRESENT | WRITABLE;
    }
    for page in (KERNEL_STACK_BOTTOM..KERNEL_STACK_TOP).step_by(PAGE_SIZE as usize) {
        low[(page / PAGE_SIZE) as usize] = page | PRESENT | WRITABLE;
    }
    low[(STUB_ADDR / PAGE_SIZE) as usize] = STUB_ADDR | PRESENT | USER;
    low[(SYSCALL_PAGE / PAGE_SIZE) as usize] = SYSCALL_PAGE | PRESENT | USER;
    low[(DOORBELL_ADDR / PAGE_SIZE) as usize] = DOORBELL_GPA | PRESENT | WRITABLE | USER;
    // The output ring and its header: written by the fast-write stub, which runs at CPL3
    // under kvm-pvm (see output_ring.rs); the monitor trusts nothing in them.
    for page in (OUTPUT_HEADER..OUTPUT_RING + OUTPUT_RING_SIZE).step_by(PAGE_SIZE as usize) {
        low[(page / PAGE_SIZE) as usize] = page | PRESENT | WRITABLE | USER;
    }
    // The page-table writer, its work list and the table pool: supervisor-only (the writer
    // runs at CPL0 and writes the pool's tables through these entries).
    low[(TABLE_WRITER_ADDR / PAGE_SIZE) as usize] = TABLE_WRITER_ADDR | PRESENT;
    for page in (TABLE_WRITES..TABLE_POOL_END).step_by(PAGE_SIZE as usize) {
        low[(page / PAGE_SIZE) as usize] = page | PRESENT | WRITABLE;
    }
    // Accessed and dirty set in every present entry, as in the others: without them KVM's
    // shadow MMU maps a page read-only on its first read and takes a second fault on its
    // first write, to set the dirty bit (the output header took two faults per call).
    for e in low.iter_mut().filter(|e| **e & PRESENT != 0) {
        *e |= ACCESSED_DIRTY;
    }
    mem.write_u64s(GuestAddr::new(LOW_PT_ADDR), &low)?;

    // GDT: 64-bit code/data descriptors; base and limit are ignored in long mode.
    let code = |dpl: u64| 0x0020_9A00_0000_0000u64 | (dpl << 45) | 0x00A0_0000_0000_FFFF;
    let data = |dpl: u64| 0x0000_9200_0000_0000u64 | (dpl << 45) | 0x00C0_0000_0000_FFFF;
    let mut gdt = [0u64; GDT_ENTRIES];
    gdt[(KERNEL_CS >> 3) as usize] = code(0);
    gdt[(KERNEL_DS >> 3) as usize] = data(0);
    gdt[(USER_DS >> 3) as usize] = data(3);
    gdt[(USER_CS >> 3) as usize] = code(3);
    let (tss_lo, tss_hi) = tss_descriptor(TSS_ADDR, 0x67);
    gdt[(TSS_SELECTOR >> 3) as usize] = tss_lo;
    gdt[(TSS_SELECTOR >> 3) as usize + 1] = tss_hi;
    mem.write_u64s(GuestAddr::new(GDT_ADDR), &gdt)?;

    // TSS: RSP0 for exceptions from CPL3; the I/O bitmap offset points past the limit, so
    // every port access from CPL3 raises #GP (only the CPL0 stubs may exit to us).
    let mut tss = [0u8; 0x68];
    tss[4..12].copy_from_slice(&KERNEL_STACK_TOP.to_le_bytes());
    tss[0x66..0x68].copy_from_slice(&0x68u16.to_le_bytes());
    mem.write(GuestAddr::new(TSS_ADDR), &tss)?;

    // IDT: one interrupt gate (DPL0, so `int n` from CPL3 is a #GP) per exception vector.
    let mut idt = Vec::with_capacity(IDT_VECTORS as usize * 16);
    for v in 0..IDT_VECTORS {
        let handler = EXCEPTION_STUBS + v * EXCEPTION_STUB_SIZE;
        idt.extend_from_slice(&(handler as u16).to_le_bytes());
        idt.extend_from_slice(&KERNEL_CS.to_le_bytes());
        idt.extend_from_slice(&[0, 0x8E]); // no IST; present, DPL0, 64-bit interrupt gate
        idt.extend_from_slice(&((handler >> 16) as u16).to_le_bytes());
        idt.extend_from_slice(&((handler >> 32) as u32).to_le_bytes());
        idt.extend_from_slice(&[0; 4]);
    }
    mem.write(GuestAddr::new(IDT_ADDR), &idt)?;

    mem.write(GuestAddr::new(SYSCALL_ENTRY), &syscall_stub())?;
    mem.write(GuestAddr::new(WARM_UP_STUB), &warm_up_stub())?;
    mem.write(GuestAddr::new(PREFAULT_STUB), &prefault_stub())?;
    mem.write(GuestAddr::new(FAST_SYSCALL_ENTRY), FAST_WRITE_STUB)?;
    mem.write(GuestAddr::new(TABLE_WRITER_ADDR), &crate::page_tables::table_writer_stub())?;
    mem.write_u64(GuestAddr::new(OUTPUT_HEADER_MEM_END), mem.size())?;
    for v in 0..IDT_VECTORS {
        mem.write(GuestAddr::new(EXCEPTION_STUBS + v * EXCEPTION_STUB_SIZE), &exception_stub(v as u8))?;
    }
    Ok(())
}

fn tss_descriptor(base: u64, limit: u64) -> (u64, u64) {
    let lo = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, DPL0, available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    (lo, base >> 32)
}

fn segment(selector: u16, code: bool, dpl: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_: if code { 0xB } else { 0x3 },
        present: 1,
        dpl,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Puts the vCPU in 64-bit mode at CPL0, where the syscall stub's return path runs before it
/// `iretq`s to the program at CPL3, with paging, SSE and XSAVE enabled and the syscall MSRs
/// pointing at the stub. Registers (rip, rsp) are set later by a cold start or a restore.
/// Returns the special registers it gives the vCPU (the CPL0 state): staged for the vCPU's
/// next run, not set by an ioctl of their own ([`Vcpu::stage_sregs`]).
pub(crate) fn set_long_mode_at_stub(vcpu: &mut Vcpu, sys: &kvm::KvmSystem) -> Result<kvm_bindings::kvm_sregs, VmError> {
    let sregs = sys.cpl0_sregs(|| vcpu.get_sregs().map(cpl0_sregs).map_err(ioctl("KVM_GET_SREGS")))?;
    vcpu.stage_sregs(&sregs);
    let program = [(MSR_FS_BASE, 0), (MSR_GS_BASE, 0), (MSR_KERNEL_GS_BASE, 0)];
    let entries: Vec<(u32, u64)> = monitor_msrs().into_iter().chain(program).collect();
    set_msrs(vcpu, &entries)?;
    set_xcr0(vcpu, sys.xcr0)?;
    Ok(sregs)
}

/// The CPL0 special registers of every VM, from a new vCPU's own (`fresh`): what is not set
/// here (the APIC base, CR2, CR8, no pending interrupt) keeps a new vCPU's value. The same in
/// every VM of the process, so [`kvm::KvmSystem::cpl0_sregs`] computes them once.
fn cpl0_sregs(fresh: kvm_bindings::kvm_sregs) -> kvm_bindings::kvm_sregs {
    let mut sregs = fresh;
    // The vCPU starts at CPL0 in the syscall stub's return path and enters the program with
    // `iretq`. Under kvm-pvm, a vCPU whose state is *set* to CPL3 does not switch to CPL0 on
    // `syscall` (measured: it jumps to LSTAR still at CPL3); entering CPL3 through iretq, as
    // a kernel does, keeps the hypervisor's notion of the mode right. Real KVM is fine either way.
    sregs.cs = segment(KERNEL_CS, true, 0);
    sregs.ss = segment(KERNEL_DS, false, 0);
    sregs.ds = segment(USER_DS, false, 3);
    sregs.es = segment(USER_DS, false, 3);
    sregs.fs = segment(USER_DS, false, 3);
    sregs.gs = segment(USER_DS, false, 3);
    sregs.tr = kvm_segment {
        base: TSS_ADDR,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xB, // busy 64-bit TSS
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.ldt = kvm_segment { unusable: 1, ..Default::default() };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT_ENTRIES * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = (IDT_VECTORS * 16 - 1) as u16;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    sregs.cr2 = 0;
    sregs.interrupt_bitmap = [0; 4];
    sregs
}

/// The MSRs that are the monitor's, the same in every VM: where `syscall` enters and with
/// which segments and flags. A snapshot holding other values is refused (`vcpu_state.rs`).
pub(crate) fn monitor_msrs() -> [(u32, u64); 5] {
    // syscall loads CS=STAR[47:32] and SS=STAR[47:32]+8; STAR[63:48] is Linux's sysret base.
    let star = ((u64::from(USER_DS) - 8) << 48) | (u64::from(KERNEL_CS) << 32);
    // FMASK clears TF, DF, IF, IOPL, AC and NT on entry, as Linux does.
    let fmask = 0x100 | 0x400 | 0x200 | 0x3000 | 0x4_0000 | 0x4000;
    [
        (MSR_STAR, star),
        (MSR_LSTAR, FAST_SYSCALL_ENTRY),
        (MSR_CSTAR, 0),
        (MSR_SYSCALL_MASK, fmask),
        (MSR_SYSENTER_CS, 0), // sysenter from CPL3 then raises #GP
    ]
}

/// KVM_SET_MSRS for `(index, value)` pairs; fails unless every MSR was set.
pub(crate) fn set_msrs(vcpu: &VcpuFd, entries: &[(u32, u64)]) -> Result<(), VmError> {
    const IOCTL: &str = "KVM_SET_MSRS";
    let list: Vec<kvm_msr_entry> =
        entries.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    let msrs = Msrs::from_entries(&list).map_err(|_| VmError::TooManyMsrs { ioctl: IOCTL, count: list.len() })?;
    let done = vcpu.set_msrs(&msrs).map_err(ioctl(IOCTL))?;
    if done != entries.len() {
        return Err(VmError::MsrRefused { ioctl: IOCTL, done, asked: entries.len(), refused: entries[done].0 });
    }
    Ok(())
}

/// KVM_GET_MSRS for `indices`: their `(index, value)` pairs, in order; fails unless every
/// MSR was read.
pub(crate) fn get_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, VmError> {
    const IOCTL: &str = "KVM_GET_MSRS";
    let list: Vec<kvm_msr_entry> = indices.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
    let mut msrs = Msrs::from_entries(&list).map_err(|_| VmError::TooManyMsrs { ioctl: IOCTL, count: list.len() })?;
    let done = vcpu.get_msrs(&mut msrs).map_err(ioctl(IOCTL))?;
    if done != indices.len() {
        return Err(VmError::MsrRefused { ioctl: IOCTL, done, asked: indices.len(), refused: indices[done] });
    }
    Ok(msrs.as_slice().iter().map(|e| (e.index, e.data)).collect())
}

pub(crate) fn set_xcr0(vcpu: &VcpuFd, xcr0: u64) -> Result<(), VmError> {
    let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = xcr0;
    vcpu.set_xcrs(&xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the warm-up stub (`out WARM_UP_PORT, al`) once more, with whatever registers the
    /// vCPU has been given, and returns the registers at its exit.
    fn run_warm_up_stub(vm: &mut Machine) -> kvm_bindings::kvm_regs {
        loop {
            match vm.vcpu.run(&mut vm.memory) {
                Ok(VcpuExit::IoOut(port, _)) if port == WARM_UP_PORT => break,
                Err(e) if e.errno() == libc::EINTR => continue,
                other => panic!("expected the warm-up port exit, got {other:?}"),
            }
        }
        let regs = vm.vcpu.sync_regs().regs;
        vm.complete_exit().expect("complete the port exit");
        regs
    }

    #[test]
    fn staged_registers_are_what_the_next_run_starts_with_and_a_later_ioctl_wins() {
        let mut vm = EmptyVm::create(MIN_MEMORY).expect("create VM").machine;
        let at_stub =
            kvm_bindings::kvm_regs { rip: WARM_UP_STUB, rsp: KERNEL_STACK_TOP, rflags: 0x2, ..Default::default() };
        // The stub touches no general register but rip: what it exits with is what it got.
        vm.vcpu.stage_regs(&kvm_bindings::kvm_regs { rbx: 0x1234, r15: 7, ..at_stub });
        let regs = run_warm_up_stub(&mut vm);
        assert_eq!((regs.rbx, regs.r15), (0x1234, 7));
        // Consumed by that run: the next one starts from the registers the vCPU has.
        vm.vcpu.stage_regs(&kvm_bindings::kvm_regs { rbx: 1, ..at_stub });
        vm.vcpu.set_regs(&kvm_bindings::kvm_regs { rbx: 2, ..at_stub }).expect("KVM_SET_REGS");
        assert_eq!(run_warm_up_stub(&mut vm).rbx, 2, "the ioctl came later and must win");
        // Staged special registers too: the stub runs on page tables at another root only
        // if CR3 was loaded (here the same tables, so the run must still succeed).
        let mut sregs = vm.cpl0_sregs;
        sregs.cr3 = PML4_ADDR;
        vm.vcpu.stage_sregs(&sregs);
        vm.vcpu.stage_regs(&kvm_bindings::kvm_regs { rbx: 3, ..at_stub });
        assert_eq!(run_warm_up_stub(&mut vm).rbx, 3);
        let now = vm.vcpu.get_sregs().expect("KVM_GET_SREGS");
        assert_eq!((now.cr3, now.cs.selector, now.efer), (PML4_ADDR, sregs.cs.selector, sregs.efer));
        // A run with immediate_exit loads staged registers without running the guest (how the
        // pool loads a prepared VM's ahead of its call).
        vm.vcpu.stage_regs(&kvm_bindings::kvm_regs { rbx: 4, ..at_stub });
        vm.complete_exit().expect("an immediate exit");
        assert_eq!(vm.vcpu.get_regs().expect("KVM_GET_REGS").rbx, 4);
        assert_eq!(vm.vcpu.get_kvm_run().kvm_dirty_regs, 0, "nothing left staged for the call's run");
    }

    #[test]
    fn every_vm_starts_with_the_same_cpl0_special_registers_as_the_vcpu_reports() {
        let first = EmptyVm::create(MIN_MEMORY).expect("create VM").machine;
        let second = EmptyVm::create(MIN_MEMORY).expect("create VM").machine;
        let reported = second.vcpu.get_sregs().expect("KVM_GET_SREGS");
        for (vm, what) in [(&first, "first"), (&second, "second")] {
            let s = vm.cpl0_sregs;
            assert_eq!(
                (s.cs.selector, s.cs.dpl, s.ss.selector, s.cr0, s.cr3, s.cr4, s.efer, s.tr.base, s.gdt.base),
                (KERNEL_CS, 0, KERNEL_DS, reported.cr0, reported.cr3, reported.cr4, reported.efer, TSS_ADDR, GDT_ADDR),
                "the {what} VM"
            );
            assert_eq!((s.cr2, s.interrupt_bitmap), (0, [0; 4]));
        }
        assert_eq!(reported.cs.selector, KERNEL_CS, "the warm-up ran at CPL0 on the staged registers");
    }

    #[test]
    fn an_msr_the_vcpu_refuses_is_named_not_turned_into_an_errno() {
        let vm = EmptyVm::create(MIN_MEMORY).expect("create VM");
        // 0x4000_00ff: in the hypervisor range, which KVM leaves undefined.
        let missing = 0x4000_00ff;
        match set_msrs(&vm.machine.vcpu, &[(MSR_CSTAR, 0), (missing, 0)]) {
            Err(VmError::MsrRefused { ioctl: "KVM_SET_MSRS", done: 1, asked: 2, refused }) => {
                assert_eq!(refused, missing)
            }
            other => panic!("expected the refused MSR, got {other:?}"),
        }
        match get_msrs(&vm.machine.vcpu, &[MSR_STAR, missing]) {
            Err(VmError::MsrRefused { ioctl: "KVM_GET_MSRS", done: 1, asked: 2, refused }) => {
                assert_eq!(refused, missing)
            }
            other => panic!("expected the refused MSR, got {other:?}"),
        }
        let saved = get_msrs(&vm.machine.vcpu, &SAVED_MSRS).expect("the saved MSRs");
        assert_eq!(saved.iter().map(|&(i, _)| i).collect::<Vec<_>>(), SAVED_MSRS);
        assert_eq!(saved.iter().find(|&&(i, _)| i == MSR_LSTAR).map(|&(_, v)| v), Some(FAST_SYSCALL_ENTRY));
    }
}
