//! Guest memory layout: where the monitor area, the program and the stack live.
//!
//! Guest virtual addresses equal guest physical addresses (identity paging). The first 2 MiB
//! are the *monitor area*: page tables, GDT, TSS, IDT, the CPL0 stubs and the kernel stack.
//! It is mapped supervisor-only, so the program (at CPL3) faults on any touch of it, including
//! a NULL dereference. Everything from [`USER_START`] to the end of guest memory is user memory.
//! docs/architecture.md draws the same map.

/// An address of guest memory the monitor chose (guest virtual == guest physical here): the
/// monitor area, a segment it loads, a page it maps. Only the monitor's accessors of
/// [`crate::memory::GuestMemory`] take one, and they check every access against the memory's
/// size. An address the program handed over is a [`crate::memory::UserAddr`] instead, which
/// becomes a `GuestAddr` only through the user-memory check; the field is private so that
/// no code turns one into the other by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestAddr(vm_memory::GuestAddress);

impl GuestAddr {
    /// The monitor's address `raw`.
    pub const fn new(raw: u64) -> GuestAddr {
        GuestAddr(vm_memory::GuestAddress(raw))
    }
    /// Its value.
    pub const fn raw(self) -> u64 {
        self.0 .0
    }
    /// `self + offset`, or `None` past the end of the address space.
    pub fn checked_add(self, offset: u64) -> Option<GuestAddr> {
        self.raw().checked_add(offset).map(GuestAddr::new)
    }
}

impl From<GuestAddr> for vm_memory::GuestAddress {
    fn from(addr: GuestAddr) -> vm_memory::GuestAddress {
        addr.0
    }
}

impl std::fmt::Display for GuestAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.raw())
    }
}

pub const PAGE_SIZE: u64 = 4096;
/// Size of one large page in the identity map.
pub const LARGE_PAGE: u64 = 2 << 20;

/// First address the program may touch.
pub const USER_START: u64 = LARGE_PAGE;
/// Load address of a static-pie (ET_DYN) program.
pub const PIE_LOAD_BASE: u64 = 0x40_0000;

/// Guest memory sizes we accept (the per-function memory cap).
pub const MIN_MEMORY: u64 = 32 << 20;
pub const MAX_MEMORY: u64 = 4 << 30;
/// Bytes reserved for the main thread's stack at the top of guest memory.
pub const STACK_RESERVE: u64 = 8 << 20;

// ---- monitor area (all below USER_START) ----
pub const PML4_ADDR: u64 = 0x1000;
pub const PDPT_ADDR: u64 = 0x2000;
/// Page directories, one per GiB of guest memory (up to 4).
pub const PD_ADDR: u64 = 0x3000;
pub const GDT_ADDR: u64 = 0x7000;
pub const TSS_ADDR: u64 = 0x8000;
pub const IDT_ADDR: u64 = 0x9000;
/// Code: the syscall entry stub, then one 16-byte stub per exception vector. Mapped
/// user-executable (read-only) as well, see [`syscall_stub`].
pub const STUB_ADDR: u64 = 0xA000;
pub const SYSCALL_ENTRY: u64 = STUB_ADDR;
/// The syscall stub after its doorbell write: `mov rsp, frame; mov rax, [result]; iretq`.
/// A new or restored vCPU starts here, at CPL0, to enter the program.
pub const SYSCALL_RETURN_PATH: u64 = SYSCALL_ENTRY + 7;
/// A CPL0 stub a new vCPU runs once, in the pool, to take its slow first KVM_RUN.
pub const WARM_UP_STUB: u64 = STUB_ADDR + 0x80;
/// The pre-fault loop (CPL3), see [`prefault_stub`].
pub const PREFAULT_STUB: u64 = STUB_ADDR + 0x90;
pub const EXCEPTION_STUBS: u64 = STUB_ADDR + 0x100;
/// Flag in a pre-fault table entry: write the byte back (see [`prefault_stub`]).
pub const PREFAULT_WRITE: u64 = 1;
pub const EXCEPTION_STUB_SIZE: u64 = 16;
/// Where LSTAR points: the fast path for `write(1|2, ...)` into the output ring
/// ([`crate::output_ring`]), which jumps to [`SYSCALL_ENTRY`] for everything else.
pub const FAST_SYSCALL_ENTRY: u64 = STUB_ADDR + 0x400;
/// The syscall page (user-readable, not writable): the value the stub loads into rax, then
/// the `iretq` frame (rip, cs, rflags, rsp, ss) the monitor writes before every resume.
pub const SYSCALL_PAGE: u64 = 0xB000;
pub const SYSCALL_RESULT_ADDR: u64 = SYSCALL_PAGE;
pub const SYSCALL_FRAME_ADDR: u64 = SYSCALL_PAGE + 8;
/// The pre-fault loop's table of guest addresses to touch (user-readable, like the page).
pub const PREFAULT_TABLE: u64 = SYSCALL_PAGE + 0x100;
/// How many addresses the table holds; more take several passes.
pub const PREFAULT_TABLE_ENTRIES: usize = ((PAGE_SIZE - 0x100) / 8) as usize;
// The table lies after the iret frame (5 words) and ends with the page.
const _: () = assert!(PREFAULT_TABLE >= SYSCALL_FRAME_ADDR + 40);
const _: () = assert!(PREFAULT_TABLE + PREFAULT_TABLE_ENTRIES as u64 * 8 == SYSCALL_PAGE + PAGE_SIZE);
/// The output ring's header page (user-writable: the stub writes it at CPL3 under kvm-pvm).
/// u64 fields; the addresses are also in `stub/fast_write.S`.
pub const OUTPUT_HEADER: u64 = 0x2_0000;
/// Bit `fd` set: the stub may buffer writes to fd 1 / fd 2; bit 0: it may answer a read of
/// fd 0 with end of input.
pub const OUTPUT_HEADER_ENABLED: u64 = OUTPUT_HEADER;
/// Bytes of the ring in use.
pub const OUTPUT_HEADER_USED: u64 = OUTPUT_HEADER + 8;
/// End of guest memory (the stub's bound for the program's buffer).
pub const OUTPUT_HEADER_MEM_END: u64 = OUTPUT_HEADER + 16;
/// Reads of fd 0 the stub answered since the monitor last took the count.
pub const OUTPUT_HEADER_FAST_READS: u64 = OUTPUT_HEADER + 40;
/// The ring: entries `u64 fd, u64 count, data padded to 8`.
pub const OUTPUT_RING: u64 = 0x2_1000;
pub const OUTPUT_RING_SIZE: u64 = 0x1_0000;
const _: () = assert!(OUTPUT_HEADER >= KERNEL_STACK_TOP && OUTPUT_RING + OUTPUT_RING_SIZE <= USER_START);
// The header opens an 8-page group of KVM's shadow-MMU prefetch and the ring follows it, so
// the pool's pre-fault of both takes one fault: the prefetch walks a group from its start and
// stops at the first page the guest does not map (at 0x21000 the header's group began with
// the unmapped 0x20000, and the ring's first page cost a fault of its own).
const _: () = assert!(OUTPUT_HEADER.is_multiple_of(8 * PAGE_SIZE) && OUTPUT_RING == OUTPUT_HEADER + PAGE_SIZE);

/// The page table of the stack's lowest 2 MiB window, whose first page is the stack guard
/// (read by the CPU's page walk only: no guest virtual address maps it).
pub const STACK_GUARD_PT_ADDR: u64 = 0x3_2000;
const _: () = assert!(STACK_GUARD_PT_ADDR >= OUTPUT_RING + OUTPUT_RING_SIZE && STACK_GUARD_PT_ADDR < USER_START);

/// The page-table writer (CPL0 code, supervisor-only): the guest itself rewrites entries of
/// live page tables, so KVM notices ([`crate::page_tables`]).
pub const TABLE_WRITER_ADDR: u64 = 0x3_3000;
/// The writer's work list (supervisor-only): a count, then (entry address, value) pairs.
pub const TABLE_WRITES: u64 = 0x3_4000;
pub const TABLE_WRITES_END: u64 = 0x4_0000;
/// The pool the program's page tables come from (supervisor-only; up to the end of the
/// monitor area): its root, PDPT, page directories and 4 KiB page tables.
pub const TABLE_POOL_START: u64 = 0x4_0000;
pub const TABLE_POOL_END: u64 = USER_START;
const _: () = assert!(TABLE_WRITER_ADDR > STACK_GUARD_PT_ADDR && TABLE_WRITES > TABLE_WRITER_ADDR);
const _: () = assert!(TABLE_WRITES_END <= TABLE_POOL_START && TABLE_POOL_START < TABLE_POOL_END);

/// The stack guard: the lowest page of the stack reserve is never mapped, so a program that
/// runs down through its whole stack faults there ("stack overflow") instead of writing on
/// into whatever lies below (the vDSO, then the mmap area).
pub fn stack_guard(memory_size: u64) -> u64 {
    memory_size - STACK_RESERVE
}

/// The fast path's machine code, linked at [`FAST_SYSCALL_ENTRY`] (`stub/fast_write.S`,
/// assembled by `stub/build.sh`; a test checks the two agree when binutils are installed).
pub const FAST_WRITE_STUB: &[u8] = include_bytes!("stub/fast_write.bin");
const _: () = assert!(FAST_SYSCALL_ENTRY + FAST_WRITE_STUB.len() as u64 <= STUB_ADDR + PAGE_SIZE);

/// Page table for the first 2 MiB (4 KiB pages, so page 0 can be absent and the stub pages
/// user-accessible while the rest stays supervisor-only).
pub const LOW_PT_ADDR: u64 = 0xC000;
/// Virtual address of the doorbell page, whose guest-physical address lies outside the memory
/// slot, so any write to it is an MMIO exit to the monitor.
pub const DOORBELL_ADDR: u64 = 0xD000;
/// Guest-physical address behind [`DOORBELL_ADDR`]: just past the largest guest memory.
pub const DOORBELL_GPA: u64 = MAX_MEMORY;
/// Kernel stack used by exceptions (TSS.RSP0).
pub const KERNEL_STACK_BOTTOM: u64 = 0x1_0000;
pub const KERNEL_STACK_TOP: u64 = 0x2_0000;

// ---- segment selectors (Linux's values, so NT_PRSTATUS looks familiar) ----
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER_DS: u16 = 0x2b;
pub const USER_CS: u16 = 0x33;
pub const TSS_SELECTOR: u16 = 0x40;
/// GDT entries: null, (unused), kernel code, kernel data, (unused), user data, user code,
/// (unused), TSS (two slots).
pub const GDT_ENTRIES: usize = 10;
/// Number of exception vectors with IDT gates.
pub const IDT_VECTORS: u64 = 32;

// ---- I/O ports the exception stubs write to (an exit to the monitor) ----
/// The warm-up stub's port.
pub const WARM_UP_PORT: u16 = 0xBF;
/// Exception stubs write to `EXCEPTION_PORT_BASE + vector`.
pub const EXCEPTION_PORT_BASE: u16 = 0xC0;

// ---- control registers ----
pub const CR0_PE: u64 = 1;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_OSFXSR: u64 = 1 << 9;
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
pub const CR4_OSXSAVE: u64 = 1 << 18;
pub const EFER_SCE: u64 = 1;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// RFLAGS bits a program may carry across a syscall (arithmetic flags, TF, DF, AC, ID).
pub const USER_RFLAGS_MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x4_0000 | 0x20_0000;
/// RFLAGS bit 1 is always set; IF on.
pub const RFLAGS_FIXED: u64 = 0x202;

/// The syscall entry stub (LSTAR points here): `mov [DOORBELL_ADDR], al` (an MMIO exit:
/// the monitor handles the syscall and writes the frame and result), then `mov rsp, frame`,
/// `mov rax, [result]`, `iretq`.
///
/// It is built to run at either privilege level, because kvm-pvm and real KVM differ:
/// - real VT-x/AMD-V: `syscall` lands here at CPL0, as usual;
/// - kvm-pvm: `syscall` from CPL3 jumps to LSTAR *without* leaving CPL3 (measured: rcx, r11
///   and FMASK are applied, the mode is not). So the stub and syscall pages are mapped
///   user-readable, the doorbell write exits straight to us, and the same-privilege `iretq`
///   runs natively.
///
/// The first design (supervisor-only stub, taking the resulting #PF through the IDT into an
/// emulated CPL0 `out`) measured 36 µs per syscall against 27 µs for this one (getppid loop,
/// same run, 3 rounds).
/// `sysretq` is avoided: under kvm-pvm the emulator shuts the VM down on it.
pub fn syscall_stub() -> Vec<u8> {
    let mut code = vec![0x88, 0x04, 0x25]; // mov [disp32], al
    code.extend_from_slice(&(DOORBELL_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0x48, 0xC7, 0xC4]); // mov rsp, imm32 (sign-extended)
    code.extend_from_slice(&(SYSCALL_FRAME_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0x48, 0x8B, 0x04, 0x25]); // mov rax, [disp32]
    code.extend_from_slice(&(SYSCALL_RESULT_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0x48, 0xCF]); // iretq
    code
}

/// The stub for exception `vector` (CPL0, via the IDT): `out EXCEPTION_PORT_BASE+vector, al`,
/// then spin. The monitor reads the CPU-pushed frame from the kernel stack; a fault ends the
/// call, so the stub is never resumed.
pub fn exception_stub(vector: u8) -> [u8; 4] {
    [0xE6, EXCEPTION_PORT_BASE as u8 + vector, 0xEB, 0xFE]
}

/// `out WARM_UP_PORT, al; jmp $`.
pub fn warm_up_stub() -> [u8; 4] {
    [0xE6, WARM_UP_PORT as u8, 0xEB, 0xFE]
}

/// The pre-fault loop, entered at CPL3 with `rsi` = a table of guest addresses and `rcx` =
/// their number (> 0): reads one byte at each address, and writes it back unchanged where
/// the address has bit 0 set ([`PREFAULT_WRITE`]), then rings the doorbell.
///
/// ```text
/// 1: mov rax, [rsi]; btr rax, 0; mov dl, [rax]; jnc 2f; mov [rax], dl
/// 2: add rsi, 8; dec rcx; jnz 1b
///    mov [DOORBELL_ADDR], dl; jmp $
/// ```
/// The touches run natively, so KVM builds the VM's guest-physical mappings (the shadow or
/// EPT entries) here, in the pool, instead of on the call's first touch of each page; a
/// write makes KVM map the page writable, which a read of a page only the host wrote may not.
pub fn prefault_stub() -> Vec<u8> {
    let mut code = vec![
        0x48, 0x8B, 0x06, // mov rax, [rsi]
        0x48, 0x0F, 0xBA, 0xF0, 0x00, // btr rax, 0 (CF = the write flag)
        0x8A, 0x10, // mov dl, [rax]
        0x73, 0x02, // jnc +2
        0x88, 0x10, // mov [rax], dl
        0x48, 0x83, 0xC6, 0x08, // add rsi, 8
        0x48, 0xFF, 0xC9, // dec rcx
        0x75, 0xE9, // jnz -23 (back to the first instruction)
        0x88, 0x14, 0x25, // mov [disp32], dl
    ];
    code.extend_from_slice(&(DOORBELL_ADDR as u32).to_le_bytes());
    code.extend_from_slice(&[0xEB, 0xFE]); // jmp $
    code
}

/// Whether the CPU pushes an error code for `vector`.
pub fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// Human name of an exception vector, for error messages.
pub fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "reserved exception",
    }
}

// The monitor area's pieces must not overlap each other or user memory.
const _: () = assert!(KERNEL_STACK_TOP <= USER_START);
const _: () = assert!(SYSCALL_ENTRY + 24 <= WARM_UP_STUB && WARM_UP_STUB + 4 <= EXCEPTION_STUBS);
const _: () = assert!(EXCEPTION_STUBS + IDT_VECTORS * EXCEPTION_STUB_SIZE <= SYSCALL_PAGE);
const _: () = assert!(SYSCALL_FRAME_ADDR + 40 <= SYSCALL_PAGE + PAGE_SIZE);
const _: () = assert!(DOORBELL_ADDR < KERNEL_STACK_BOTTOM && LOW_PT_ADDR < DOORBELL_ADDR);
const _: () = assert!(PD_ADDR + (MAX_MEMORY >> 30) * PAGE_SIZE <= GDT_ADDR);

/// `[start, end)` without the 2 MiB windows in `huge` (sorted): the runs left, in order.
pub(crate) fn outside_windows(start: u64, end: u64, huge: &[u64]) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let mut at = start;
    for &w in huge {
        let (w_start, w_end) = (w.max(start), (w + LARGE_PAGE).min(end));
        if w_start >= w_end {
            continue;
        }
        if at < w_start {
            spans.push((at, w_start));
        }
        at = at.max(w_end);
    }
    if at < end {
        spans.push((at, end));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syscall_stub_fits_before_the_exception_stubs() {
        assert!(syscall_stub().len() as u64 <= EXCEPTION_STUBS - SYSCALL_ENTRY);
    }

    #[test]
    fn the_prefault_stub_fits_between_the_warm_up_and_exception_stubs() {
        assert!(WARM_UP_STUB + warm_up_stub().len() as u64 <= PREFAULT_STUB);
        assert!(PREFAULT_STUB + prefault_stub().len() as u64 <= EXCEPTION_STUBS);
        // The loop body is 23 bytes and the jnz jumps back over all of it; the write-back is
        // skipped by a jnc over exactly its 2 bytes.
        let stub = prefault_stub();
        assert_eq!((stub[21], stub[22] as i8), (0x75, -23));
        assert_eq!((stub[10], stub[11], &stub[12..14]), (0x73, 2, &[0x88u8, 0x10][..]));
    }

    #[test]
    fn syscall_stub_encodes_four_instructions() {
        let s = syscall_stub();
        assert_eq!(&s[..3], &[0x88, 0x04, 0x25]);
        assert_eq!(SYSCALL_ENTRY + 7, SYSCALL_RETURN_PATH);
        assert_eq!(&s[s.len() - 2..], &[0x48, 0xCF]);
        assert_eq!(s.len(), 7 + 7 + 8 + 2);
    }

    #[test]
    fn the_spans_outside_windows_cover_the_rest_exactly() {
        let w = LARGE_PAGE;
        assert_eq!(outside_windows(w, 5 * w, &[]), [(w, 5 * w)]);
        assert_eq!(outside_windows(w, 5 * w, &[w, 3 * w]), [(2 * w, 3 * w), (4 * w, 5 * w)]);
        assert_eq!(outside_windows(w + 4096, 3 * w - 4096, &[w, 2 * w]), Vec::<(u64, u64)>::new());
        assert_eq!(outside_windows(w, 2 * w, &[7 * w]), [(w, 2 * w)]);
    }
}
