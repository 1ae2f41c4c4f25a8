//! The program's page tables, built from its region map ([`AddressSpace`]) so that the CPU
//! enforces each page's protection: W^X at 4 KiB granularity.
//!
//! User memory is identity mapped. A 2 MiB window whose pages all have one protection is one
//! large-page directory entry, and so is a window of read-only pages some of which execute
//! (see [`large_entry_access`]); a window with other mixed protections gets a 4 KiB page
//! table from a bounded pool in the monitor area ([`TABLE_POOL_START`]..[`TABLE_POOL_END`]). A page's
//! entry follows its region's protection:
//!
//! | region protection          | entry                                  |
//! |----------------------------|----------------------------------------|
//! | PROT_NONE                  | absent                                 |
//! | PROT_READ                  | present, read-only, NX                 |
//! | PROT_READ\|PROT_WRITE      | present, writable, NX                  |
//! | PROT_READ\|PROT_EXEC       | present, read-only, executable         |
//! | all three                  | present, writable, executable          |
//! | no region (gaps, brk heap) | present, writable, NX                  |
//!
//! (x86 cannot express write-only or execute-only pages: they are readable, as on Linux.)
//! The stack guard page is always absent, and the first window (the monitor area) keeps its
//! own table (`vm.rs`).
//!
//! Two ways to write the tables, because KVM must see every change:
//! - **Building** ([`build`]): at a cold start and when a restore is prepared (in the pool,
//!   ahead of the call) the monitor writes a whole new hierarchy into pool pages no page walk
//!   has touched yet, then points CR3 at its root ([`load_root`]).
//! - **Changing live tables** ([`PageTables::update`], after mmap/munmap/mprotect/mremap):
//!   KVM's shadow MMU (kvm-pvm, or any host without TDP) caches what it read from a guest
//!   page table and learns of changes only from *guest* writes, which it traps; a write by the
//!   monitor through its own mapping goes unseen, even across a CR3 reload (tried: a directory
//!   entry cleared that way left the page readable). So the monitor writes the new entries and
//!   then has the guest write them once more: [`enter_table_writer`] points the vCPU at a
//!   CPL0 stub ([`table_writer_stub`]) that stores each (address, value) of the work list,
//!   reloads CR3 (the TLB flush, also on VT-x/AMD-V with EPT/NPT) and returns to the program
//!   through the syscall stub's return path. One ioctl per syscall that changed entries (the
//!   exit's completion; registers go through kvm_run's sync area), none when nothing changed.
//!   Pool pages no walk has reached yet are written by the monitor only.
//!
//! Bounds: the pool holds [`POOL_PAGES`] pages (after the root, PDPT and directories, one
//! table per mixed window) and one change may queue at most [`MAX_GUEST_WRITES`] guest writes.
//! A change that needs more (a hostile checkerboard of protections over a large range) fails
//! with ENOMEM and leaves the region map and tables as they were: Linux's mprotect does the
//! same when a split would pass `vm.max_map_count`. An approximation was the alternative, but
//! granting more than asked breaks W^X and granting less faults a program that did nothing
//! wrong; a clear ENOMEM lets the program decide.

use crate::errno::{Errno, ENOMEM};
use crate::layout::*;
use crate::memory::{GuestMemory, MemoryError};
use crate::mm::{AddressSpace, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::vm::{Machine, VmError};

const PRESENT: u64 = 1;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
/// Accessed and dirty from the start, so neither the CPU nor KVM sets them on first use.
const ACCESSED_DIRTY: u64 = (1 << 5) | (1 << 6);
const HUGE: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// An entry pointing at a lower-level table: rights are decided at the leaf.
const TABLE_LINK: u64 = PRESENT | WRITABLE | USER;
const ENTRIES: usize = 512;
const GIB: u64 = 1 << 30;

/// Pages in the table pool.
pub const POOL_PAGES: usize = ((TABLE_POOL_END - TABLE_POOL_START) / PAGE_SIZE) as usize;
/// Most guest writes one change may queue (what the writer's work list holds).
pub const MAX_GUEST_WRITES: usize = ((TABLE_WRITES_END - TABLE_WRITES) / 16 - 1) as usize;
/// A live table with more changed entries than this is replaced by a fresh pool page, when
/// one is left: one guest write (the directory entry) instead of many.
const REPLACE_ABOVE: usize = 8;
/// Access of memory no region covers: the brk heap and the gaps between regions.
const UNMAPPED_ACCESS: u32 = PROT_READ | PROT_WRITE;

/// Why the tables for a region map cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum PageTableError {
    #[error("the region map mixes protections in {mixed} windows of 2 MiB; the page-table pool holds {pool} tables")]
    PoolExhausted { mixed: usize, pool: usize },
}

/// The protection a page gets, as x86 can express it: [`PROT_WRITE`] and [`PROT_EXEC`] imply
/// [`PROT_READ`]; 0 is no access.
pub fn normalise(prot: u32) -> u32 {
    let prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC);
    if prot == 0 {
        0
    } else {
        prot | PROT_READ
    }
}

/// The protection the page at `addr` (in user memory) gets from `space`.
pub fn page_access(space: &AddressSpace, addr: u64) -> u32 {
    let page = addr & !(PAGE_SIZE - 1);
    if page == stack_guard(space.memory_size()) {
        return 0;
    }
    space.regions_overlapping(page, page + PAGE_SIZE).next().map_or(UNMAPPED_ACCESS, |r| normalise(r.prot))
}

/// Whether the program's tables map the 2 MiB window at `window` with one large entry (else
/// with a 4 KiB table: its pages' protections are mixed).
pub fn maps_window_whole(space: &AddressSpace, window: u64) -> bool {
    window >= LARGE_PAGE && large_entry_access(&window_access(space, window)).is_some()
}

/// The protection of each page of the window at `window`.
fn window_access(space: &AddressSpace, window: u64) -> [u32; ENTRIES] {
    let mut pages = [UNMAPPED_ACCESS; ENTRIES];
    let end = window + LARGE_PAGE;
    for r in space.regions_overlapping(window, end) {
        let (from, to) = (r.start.max(window), r.end.min(end));
        let access = normalise(r.prot);
        for slot in &mut pages[((from - window) / PAGE_SIZE) as usize..((to - window) / PAGE_SIZE) as usize] {
            *slot = access;
        }
    }
    let guard = stack_guard(space.memory_size());
    if (window..end).contains(&guard) {
        pages[((guard - window) / PAGE_SIZE) as usize] = 0;
    }
    pages
}

/// The leaf entry mapping `addr` with `access` (a 2 MiB entry when `huge`).
fn leaf(addr: u64, access: u32, huge: bool) -> u64 {
    if access == 0 {
        return 0;
    }
    let mut entry = addr | PRESENT | USER | ACCESSED_DIRTY;
    if access & PROT_WRITE != 0 {
        entry |= WRITABLE;
    }
    if access & PROT_EXEC == 0 {
        entry |= NX;
    }
    if huge {
        entry |= HUGE;
    }
    entry
}

/// The window's 512 leaf entries.
fn table_for(window: u64, access: &[u32; ENTRIES]) -> Box<[u64; ENTRIES]> {
    let mut table = Box::new([0u64; ENTRIES]);
    for (i, (entry, &a)) in table.iter_mut().zip(access).enumerate() {
        *entry = leaf(window + i as u64 * PAGE_SIZE, a, false);
    }
    table
}

/// The one protection a 2 MiB entry may give the whole window, if there is one: the pages'
/// own protection when they all share it, or, when every page is present and none is
/// writable, read with execute if any page executes. The second case is a static program's
/// first and last text windows, where the ELF header or rodata shares 2 MiB with code:
/// one large entry there lets KVM map the window with one fault instead of one per page
/// (≈175 fewer faults per CPython VM, ≈1.2 ms of the pool's CPU under kvm-pvm). W^X holds:
/// nothing writable executes and nothing executable is writable; what is given up is NX on
/// read-only pages that share a window with code.
fn large_entry_access(access: &[u32; ENTRIES]) -> Option<u32> {
    if access.iter().all(|&a| a == access[0]) {
        return Some(access[0]);
    }
    let read_only = access.iter().all(|&a| a & PROT_READ != 0 && a & PROT_WRITE == 0);
    read_only.then(|| PROT_READ | access.iter().fold(0, |exec, &a| exec | (a & PROT_EXEC)))
}

/// Which pool pages hold tables, and which a page walk may have read (KVM may then hold a
/// shadow of them, so changes to them must be guest writes).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pool {
    in_use: [u64; POOL_PAGES.div_ceil(64)],
    walked: [u64; POOL_PAGES.div_ceil(64)],
}

impl Pool {
    fn new() -> Self {
        Pool { in_use: [0; POOL_PAGES.div_ceil(64)], walked: [0; POOL_PAGES.div_ceil(64)] }
    }

    fn bit(set: &[u64], i: usize) -> bool {
        set[i / 64] & (1 << (i % 64)) != 0
    }

    /// Takes a free page, one no walk has read if there is one: its address and whether it
    /// was unwalked. It counts as walked from now on (the tables it joins are live).
    fn take(&mut self) -> Option<(u64, bool)> {
        let free = |i: &usize| !Self::bit(&self.in_use, *i);
        let i = (0..POOL_PAGES)
            .filter(free)
            .find(|&i| !Self::bit(&self.walked, i))
            .or_else(|| (0..POOL_PAGES).find(free))?;
        let unwalked = !Self::bit(&self.walked, i);
        self.in_use[i / 64] |= 1 << (i % 64);
        self.walked[i / 64] |= 1 << (i % 64);
        Some((TABLE_POOL_START + i as u64 * PAGE_SIZE, unwalked))
    }

    fn has_unwalked(&self) -> bool {
        (0..POOL_PAGES).any(|i| !Self::bit(&self.in_use, i) && !Self::bit(&self.walked, i))
    }

    fn give_back(&mut self, page: u64) {
        let i = ((page - TABLE_POOL_START) / PAGE_SIZE) as usize;
        self.in_use[i / 64] &= !(1 << (i % 64));
    }

    #[cfg(test)]
    fn free(&self) -> usize {
        (0..POOL_PAGES).filter(|&i| !Self::bit(&self.in_use, i)).count()
    }
}

/// The live page tables of one VM: where they are and what is left of the pool.
#[derive(Clone, Debug)]
pub struct PageTables {
    root: u64,
    /// The page directory of each GiB of guest memory.
    directories: Vec<u64>,
    pool: Pool,
    /// Entries the guest must write again before it runs on ([`enter_table_writer`]).
    pending: Vec<(u64, u64)>,
}

/// Tables built for a region map, not yet in any VM: [`Self::write_to`] puts them there.
#[derive(Clone, Debug)]
pub struct BuiltTables {
    pub tables: PageTables,
    pages: Vec<(u64, Box<[u64; ENTRIES]>)>,
}

/// Builds the complete tables for `space` (see the module docs).
pub fn build(space: &AddressSpace) -> Result<BuiltTables, PageTableError> {
    let size = space.memory_size();
    let mut pool = Pool::new();
    let mut pages = Vec::new();
    let gigabytes = size.div_ceil(GIB) as usize;
    let windows = (size / LARGE_PAGE) as usize;
    let take = |pool: &mut Pool| {
        pool.take().map(|(page, _)| page).ok_or(PageTableError::PoolExhausted {
            mixed: (1..windows as u64)
                .filter(|&w| large_entry_access(&window_access(space, w * LARGE_PAGE)).is_none())
                .count(),
            pool: POOL_PAGES - 2 - gigabytes,
        })
    };
    let root = take(&mut pool)?;
    let pdpt = take(&mut pool)?;
    let mut directories = Vec::with_capacity(gigabytes);
    let mut root_table = Box::new([0u64; ENTRIES]);
    root_table[0] = pdpt | TABLE_LINK;
    let mut pdpt_table = Box::new([0u64; ENTRIES]);
    for g in 0..gigabytes {
        let pd = take(&mut pool)?;
        pdpt_table[g] = pd | TABLE_LINK;
        directories.push(pd);
    }
    let mut pd_tables = vec![Box::new([0u64; ENTRIES]); gigabytes];
    pd_tables[0][0] = LOW_PT_ADDR | TABLE_LINK;
    for w in 1..windows {
        let window = w as u64 * LARGE_PAGE;
        let access = window_access(space, window);
        let entry = match large_entry_access(&access) {
            Some(a) => leaf(window, a, true),
            None => {
                let pt = take(&mut pool)?;
                pages.push((pt, table_for(window, &access)));
                pt | TABLE_LINK
            }
        };
        pd_tables[w / ENTRIES][w % ENTRIES] = entry;
    }
    pages.push((root, root_table));
    pages.push((pdpt, pdpt_table));
    pages.extend(directories.iter().copied().zip(pd_tables));
    Ok(BuiltTables { tables: PageTables { root, directories, pool, pending: Vec::new() }, pages })
}

impl BuiltTables {
    /// Writes the tables into `mem`, whose VM must never have walked them (a VM from
    /// [`crate::vm::EmptyVm::create`] has walked none of the pool).
    pub fn write_to(&self, mem: &mut GuestMemory) -> Result<(), MemoryError> {
        for (page, table) in &self.pages {
            mem.write_u64s(GuestAddr::new(*page), &table[..])?;
        }
        Ok(())
    }
}

/// What one change will write, checked against the bounds before anything is written.
struct Plan {
    pool: Pool,
    pages: Vec<(u64, Box<[u64; ENTRIES]>)>,
    entries: Vec<(u64, u64)>,
    guest: Vec<(u64, u64)>,
}

impl PageTables {
    /// The root table (CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Whether the guest has entries to write before it runs on.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Pool pages not holding a table.
    #[cfg(test)]
    pub fn free_tables(&self) -> usize {
        self.pool.free()
    }

    /// Makes the tables of `[start, end)` follow `space` again after it changed there.
    /// ENOMEM, with nothing written, when that needs more tables than the pool has left or
    /// more guest writes than one change may queue.
    pub fn update(&mut self, space: &AddressSpace, mem: &mut GuestMemory, start: u64, end: u64) -> Result<(), Errno> {
        let first = start.max(USER_START) / LARGE_PAGE;
        let last = end.min(space.memory_size()).div_ceil(LARGE_PAGE);
        let mut plan = Plan { pool: self.pool.clone(), pages: Vec::new(), entries: Vec::new(), guest: Vec::new() };
        for w in first..last {
            self.plan_window(&mut plan, space, mem, w * LARGE_PAGE)?;
            if self.pending.len() + plan.guest.len() > MAX_GUEST_WRITES {
                return Err(ENOMEM);
            }
        }
        for (page, table) in &plan.pages {
            let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
            mem.write(GuestAddr::new(*page), &bytes).map_err(|_| ENOMEM)?;
        }
        for &(addr, value) in &plan.entries {
            mem.write_u64(GuestAddr::new(addr), value).map_err(|_| ENOMEM)?;
        }
        self.pool = plan.pool;
        self.pending.extend(plan.guest);
        Ok(())
    }

    fn plan_window(&self, plan: &mut Plan, space: &AddressSpace, mem: &GuestMemory, window: u64) -> Result<(), Errno> {
        let read = |addr: u64| mem.read_u64(GuestAddr::new(addr)).map_err(|_| ENOMEM);
        let directory = *self.directories.get((window / GIB) as usize).ok_or(ENOMEM)?;
        let pde_addr = directory + (window / LARGE_PAGE % ENTRIES as u64) * 8;
        let pde = read(pde_addr)?;
        let current_table = (pde & PRESENT != 0 && pde & HUGE == 0).then_some(pde & ADDRESS_MASK);
        let access = window_access(space, window);
        let set_pde = |plan: &mut Plan, value: u64| {
            if value != pde {
                plan.entries.push((pde_addr, value));
                plan.guest.push((pde_addr, value));
            }
        };
        if let Some(a) = large_entry_access(&access) {
            if let Some(table) = current_table {
                plan.pool.give_back(table);
            }
            set_pde(plan, leaf(window, a, true));
            return Ok(());
        }
        let wanted = table_for(window, &access);
        if let Some(table) = current_table {
            let changed: Vec<usize> =
                (0..ENTRIES).filter(|&i| read(table + i as u64 * 8).map_or(true, |e| e != wanted[i])).collect();
            if changed.len() <= REPLACE_ABOVE || !plan.pool.has_unwalked() {
                for i in changed {
                    let addr = table + i as u64 * 8;
                    plan.entries.push((addr, wanted[i]));
                    plan.guest.push((addr, wanted[i]));
                }
                return Ok(());
            }
            plan.pool.give_back(table);
        }
        let (table, unwalked) = plan.pool.take().ok_or(ENOMEM)?;
        if !unwalked {
            // KVM may still shadow this page from its last use: the guest rewrites what differs.
            for (i, &e) in wanted.iter().enumerate() {
                let addr = table + i as u64 * 8;
                if read(addr)? != e {
                    plan.guest.push((addr, e));
                }
            }
        }
        plan.pages.push((table, wanted));
        set_pde(plan, table | TABLE_LINK);
        Ok(())
    }
}

/// Points the vCPU's CR3 at `root` for its next run (staged, no ioctl of its own), before the
/// VM first runs with it.
pub(crate) fn load_root(vm: &mut Machine, root: u64) {
    let mut sregs = vm.cpl0_sregs;
    sregs.cr3 = root;
    vm.vcpu.stage_sregs(&sregs);
}

/// Has the guest make the writes `tables` has pending: the vCPU, stopped at the syscall
/// stub's doorbell, will run [`table_writer_stub`] at CPL0 when it next enters the guest,
/// which then returns to the program as the stub would have (the return frame must already
/// be written). `fs_base` is the program's TLS pointer (the special registers hold it; the GS
/// base is the one [`Machine::cpl0_sregs`] has). See the module docs for why the guest must
/// do these writes.
pub(crate) fn enter_table_writer(vm: &mut Machine, tables: &mut PageTables, fs_base: u64) -> Result<(), VmError> {
    let count = tables.pending.len() as u64;
    let mut list = Vec::with_capacity(16 + tables.pending.len() * 16);
    list.extend_from_slice(&count.to_le_bytes());
    list.extend_from_slice(&[0; 8]);
    for (addr, value) in tables.pending.drain(..) {
        list.extend_from_slice(&addr.to_le_bytes());
        list.extend_from_slice(&value.to_le_bytes());
    }
    if count == 0 {
        return Ok(());
    }
    vm.memory.write(GuestAddr::new(TABLE_WRITES), &list)?;
    // KVM finishes the doorbell's MMIO exit only on the next KVM_RUN; registers may be set
    // after that. It is the one ioctl here: the registers go through kvm_run's sync area.
    vm.complete_exit().map_err(VmError::TableWriter)?;
    let mut sregs = vm.cpl0_sregs;
    sregs.cr3 = tables.root;
    sregs.fs.base = fs_base;
    // The vCPU's registers (kvm_run holds them: the completion above refreshed them, so they
    // are the incoming thread's after a switch set those by ioctl; vmm/tests/threads.rs,
    // `registers_survive_a_switch_where_page_tables_changed`) but for where the writer runs.
    let regs = kvm_bindings::kvm_regs {
        rip: TABLE_WRITER_ADDR,
        rsp: KERNEL_STACK_TOP,
        rflags: RFLAGS_FIXED & !0x200,
        ..vm.vcpu.sync_regs_mut().regs
    };
    vm.vcpu.stage_sregs(&sregs);
    vm.vcpu.stage_regs(&regs);
    Ok(())
}

/// The CPL0 table writer, at [`TABLE_WRITER_ADDR`]: saves the registers it uses on the kernel
/// stack, stores each (address, value) pair of the list at [`TABLE_WRITES`] (count first,
/// pairs from +16; the count is never 0), reloads CR3, restores the registers and jumps to
/// the syscall stub's return path (`mov rsp, frame; mov rax, [result]; iretq`).
///
/// ```text
///    push rcx; push rsi; push rdi
///    mov rcx, [TABLE_WRITES]; mov esi, TABLE_WRITES + 16
/// 1: mov rdi, [rsi]; mov rax, [rsi + 8]; mov [rdi], rax; add rsi, 16; dec rcx; jnz 1b
///    mov rax, cr3; mov cr3, rax
///    pop rdi; pop rsi; pop rcx; jmp SYSCALL_RETURN_PATH
/// ```
pub fn table_writer_stub() -> Vec<u8> {
    let mut code = vec![0x51, 0x56, 0x57]; // push rcx; push rsi; push rdi
    code.extend_from_slice(&[0x48, 0x8B, 0x0C, 0x25]); // mov rcx, [disp32]
    code.extend_from_slice(&(TABLE_WRITES as u32).to_le_bytes());
    code.push(0xBE); // mov esi, imm32
    code.extend_from_slice(&((TABLE_WRITES + 16) as u32).to_le_bytes());
    code.extend_from_slice(&[
        0x48, 0x8B, 0x3E, // mov rdi, [rsi]
        0x48, 0x8B, 0x46, 0x08, // mov rax, [rsi + 8]
        0x48, 0x89, 0x07, // mov [rdi], rax
        0x48, 0x83, 0xC6, 0x10, // add rsi, 16
        0x48, 0xFF, 0xC9, // dec rcx
        0x75, 0xED, // jnz -19 (back to the loop's first instruction)
        0x0F, 0x20, 0xD8, // mov rax, cr3
        0x0F, 0x22, 0xD8, // mov cr3, rax
        0x5F, 0x5E, 0x59, // pop rdi; pop rsi; pop rcx
        0xE9, // jmp rel32
    ]);
    let next = TABLE_WRITER_ADDR + code.len() as u64 + 4;
    code.extend_from_slice(&((SYSCALL_RETURN_PATH.wrapping_sub(next)) as u32).to_le_bytes());
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::{Fixed, RegionKind};

    const MEM: u64 = 64 << 20;

    /// A program like echo-c: text r-x, rodata r--, data rw-, each page-aligned.
    fn space() -> AddressSpace {
        let segments = [
            (0x40_0000, 0x40_1000, PROT_READ),
            (0x40_1000, 0x49_8000, PROT_READ | PROT_EXEC),
            (0x49_8000, 0x4a_3000, PROT_READ),
            (0x4a_4000, 0x4a_b000, PROT_READ | PROT_WRITE),
        ];
        AddressSpace::with_image(MEM, &segments).unwrap()
    }

    fn entry(mem: &GuestMemory, t: &PageTables, addr: u64) -> u64 {
        let pde = mem.read_u64(GuestAddr::new(t.directories[0] + addr / LARGE_PAGE * 8)).unwrap();
        if pde & HUGE != 0 || pde & PRESENT == 0 {
            return pde;
        }
        mem.read_u64(GuestAddr::new((pde & ADDRESS_MASK) + (addr % LARGE_PAGE) / PAGE_SIZE * 8)).unwrap()
    }

    fn built(space: &AddressSpace) -> (PageTables, GuestMemory) {
        let mut mem = GuestMemory::new(MEM).unwrap();
        let b = build(space).unwrap();
        b.write_to(&mut mem).unwrap();
        (b.tables, mem)
    }

    #[test]
    fn each_segment_gets_its_own_rights_and_uniform_windows_one_large_entry() {
        let s = space();
        let (t, mem) = built(&s);
        let text = entry(&mem, &t, 0x40_2000);
        assert_eq!(text & (PRESENT | WRITABLE | USER | NX | HUGE), PRESENT | USER, "text: r-x 4 KiB");
        assert_eq!(entry(&mem, &t, 0x49_9000) & (WRITABLE | NX), NX, "rodata: r--");
        assert_eq!(entry(&mem, &t, 0x4a_4000) & (WRITABLE | NX), WRITABLE | NX, "data: rw-");
        assert_eq!(entry(&mem, &t, 0x4a_3000) & (WRITABLE | NX), WRITABLE | NX, "a gap: rw-");
        // Window 4 MiB..6 MiB holds the image (mixed); 6..8 MiB holds nothing: one large entry.
        let big = entry(&mem, &t, 0x60_0000);
        assert_eq!(big & (HUGE | WRITABLE | NX | PRESENT), HUGE | WRITABLE | NX | PRESENT);
        assert_eq!(big & ADDRESS_MASK, 0x60_0000);
        // The stack guard is absent, the stack around it rw- and NX.
        let guard = stack_guard(MEM);
        let pde = mem.read_u64(GuestAddr::new(t.directories[0] + guard / LARGE_PAGE * 8)).unwrap();
        let pt = pde & ADDRESS_MASK;
        assert_eq!(mem.read_u64(GuestAddr::new(pt)).unwrap(), 0);
        assert_eq!(mem.read_u64(GuestAddr::new(pt + 8)).unwrap() & (WRITABLE | NX | PRESENT), WRITABLE | NX | PRESENT);
        // The first window is the monitor's own table.
        assert_eq!(mem.read_u64(GuestAddr::new(t.directories[0])).unwrap(), LOW_PT_ADDR | TABLE_LINK);
        // Pool: root, PDPT, one directory, the image's table and the guard's table.
        assert_eq!(t.free_tables(), POOL_PAGES - 5);
    }

    #[test]
    fn read_only_windows_with_code_are_one_large_entry_and_split_exactly_when_written() {
        // CPython's layout: the ELF header r--, text r-x over three windows, rodata r--
        // sharing the third window with the end of the text, then data rw-.
        let segments = [
            (0x40_0000, 0x40_1000, PROT_READ),
            (0x40_1000, 0x80_a000, PROT_READ | PROT_EXEC),
            (0x80_a000, 0xb0_0000, PROT_READ),
            (0xb0_0000, 0xb1_0000, PROT_READ | PROT_WRITE),
        ];
        let mut s = AddressSpace::with_image(MEM, &segments).unwrap();
        let (mut t, mut mem) = built(&s);
        for window in [0x40_0000, 0x60_0000, 0x80_0000] {
            let pde = entry(&mem, &t, window);
            assert_eq!(pde & (PRESENT | HUGE | WRITABLE | NX), PRESENT | HUGE, "window {window:#x}: r-x, 2 MiB");
        }
        // Rodata next to data (writable) keeps 4 KiB entries, each with its own rights.
        assert_eq!(entry(&mem, &t, 0xaf_f000) & (HUGE | WRITABLE | NX), NX, "rodata r--");
        assert_eq!(entry(&mem, &t, 0xb0_0000) & (HUGE | WRITABLE | NX), WRITABLE | NX, "data rw-");
        // A page of the header window made writable: the window splits, and every page gets
        // exactly its own protection again (the header NX, the text executable, the new
        // page writable and NX).
        s.mprotect(0x40_1000, 4096, PROT_READ | PROT_WRITE).unwrap();
        t.update(&s, &mut mem, 0x40_1000, 0x40_2000).unwrap();
        assert_eq!(entry(&mem, &t, 0x40_0000) & (PRESENT | HUGE | WRITABLE | NX), PRESENT | NX);
        assert_eq!(entry(&mem, &t, 0x40_1000) & (PRESENT | HUGE | WRITABLE | NX), PRESENT | WRITABLE | NX);
        assert_eq!(entry(&mem, &t, 0x40_2000) & (PRESENT | HUGE | WRITABLE | NX), PRESENT);
        // A PROT_NONE page is absent, so its window cannot be one entry either.
        s.mprotect(0x80_0000, 4096, 0).unwrap();
        t.update(&s, &mut mem, 0x80_0000, 0x80_1000).unwrap();
        assert_eq!(entry(&mem, &t, 0x80_0000) & PRESENT, 0);
        assert_eq!(entry(&mem, &t, 0x80_b000) & (PRESENT | HUGE | WRITABLE | NX), PRESENT | NX);
    }

    #[test]
    fn page_access_normalises_what_x86_cannot_express() {
        let mut s = space();
        let mut m = GuestMemory::new(MEM).unwrap();
        let a = s.mmap(0, 3 * 4096, PROT_WRITE, Fixed::Hint, &mut m).unwrap();
        s.mprotect(a + 4096, 4096, PROT_EXEC).unwrap();
        s.mprotect(a + 8192, 4096, 0).unwrap();
        assert_eq!(page_access(&s, a), PROT_READ | PROT_WRITE);
        assert_eq!(page_access(&s, a + 4096), PROT_READ | PROT_EXEC);
        assert_eq!(page_access(&s, a + 8192), 0);
        assert_eq!(page_access(&s, stack_guard(MEM)), 0);
        assert_eq!(page_access(&s, s.brk()), PROT_READ | PROT_WRITE);
    }

    #[test]
    fn an_update_rewrites_only_what_changed_and_queues_guest_writes_for_live_tables() {
        let mut s = space();
        let (mut t, mut mem) = built(&s);
        // rw memory in a gap: nothing changes.
        let a = s.mmap(0, 4096, PROT_READ | PROT_WRITE, Fixed::Hint, &mut mem).unwrap();
        t.update(&s, &mut mem, a, a + 4096).unwrap();
        assert!(!t.has_pending(), "an rw mapping needs no new entries");
        // One page read-only: its window becomes mixed, on an unwalked pool page, so only
        // the directory entry is a guest write.
        s.mprotect(a, 4096, PROT_READ).unwrap();
        let free = t.free_tables();
        t.update(&s, &mut mem, a, a + 4096).unwrap();
        assert_eq!(t.pending.len(), 1);
        assert_eq!(t.free_tables(), free - 1);
        assert_eq!(entry(&mem, &t, a) & (PRESENT | WRITABLE | NX), PRESENT | NX);
        // Executable: one entry in a live table.
        t.pending.clear();
        s.mprotect(a, 4096, PROT_READ | PROT_EXEC).unwrap();
        t.update(&s, &mut mem, a, a + 4096).unwrap();
        assert_eq!(t.pending.len(), 1);
        assert_eq!(t.pending[0].1 & (PRESENT | WRITABLE | NX), PRESENT);
        // Back to rw: the window is uniform again, its table goes back to the pool.
        t.pending.clear();
        s.mprotect(a, 4096, PROT_READ | PROT_WRITE).unwrap();
        t.update(&s, &mut mem, a, a + 4096).unwrap();
        assert_eq!(t.free_tables(), free);
        assert_eq!(entry(&mem, &t, a) & HUGE, HUGE);
        // Reused, that (walked) page is rewritten by the guest where it differs.
        t.pending.clear();
        let unwalked_left = (0..POOL_PAGES).filter(|&i| !Pool::bit(&t.pool.walked, i)).count();
        assert!(unwalked_left > 0);
    }

    #[test]
    fn a_checkerboard_over_a_gigabyte_ends_in_enomem_with_nothing_changed() {
        const BIG: u64 = 2 << 30;
        let mut s = AddressSpace::with_image(BIG, &[(0x40_0000, 0x41_0000, PROT_READ | PROT_EXEC)]).unwrap();
        let mut mem = GuestMemory::new(BIG).unwrap();
        let b = build(&s).unwrap();
        b.write_to(&mut mem).unwrap();
        let mut t = b.tables;
        let base = s.mmap(0, 1 << 30, PROT_READ | PROT_WRITE, Fixed::Hint, &mut mem).unwrap();
        let mut refused = None;
        for (n, w) in (base..base + (1 << 30)).step_by(LARGE_PAGE as usize).enumerate() {
            let before = s.pieces(w, w + 4096);
            s.mprotect(w, 4096, PROT_READ).unwrap();
            match t.update(&s, &mut mem, w, w + 4096) {
                Ok(()) => t.pending.clear(),
                Err(e) => {
                    assert_eq!(e, ENOMEM);
                    s.put_back(w, w + 4096, before);
                    refused = Some(n);
                    break;
                }
            }
        }
        let n = refused.expect("the pool is smaller than 512 tables");
        assert_eq!(t.free_tables(), 0);
        assert!(n > 300, "only {n} mixed windows fit");
        // The refused window still has its old, uniform entry, and the region map its old prot.
        let w = base + n as u64 * LARGE_PAGE;
        assert_eq!(page_access(&s, w), PROT_READ | PROT_WRITE);
        // Freeing one window makes room for the next.
        s.mprotect(base, 4096, PROT_READ | PROT_WRITE).unwrap();
        t.update(&s, &mut mem, base, base + 4096).unwrap();
        s.mprotect(w, 4096, PROT_READ).unwrap();
        t.update(&s, &mut mem, w, w + 4096).unwrap();
        // A build of a map with more mixed windows than the pool is refused, not truncated.
        let mut hostile = AddressSpace::with_image(BIG, &[(0x40_0000, 0x41_0000, PROT_READ | PROT_EXEC)]).unwrap();
        let a = hostile.mmap(0, 1 << 30, PROT_READ, Fixed::Hint, &mut mem).unwrap();
        for w in (a..a + (1 << 30)).step_by(LARGE_PAGE as usize) {
            hostile.mprotect(w, 4096, 0).unwrap();
        }
        assert!(matches!(build(&hostile), Err(PageTableError::PoolExhausted { mixed, .. }) if mixed > 512));
    }

    #[test]
    fn one_change_queues_at_most_the_writers_list() {
        const BIG: u64 = 4 << 30;
        let mut s = AddressSpace::with_image(BIG, &[(0x40_0000, 0x41_0000, PROT_READ | PROT_EXEC)]).unwrap();
        let mut mem = GuestMemory::new(BIG).unwrap();
        let b = build(&s).unwrap();
        b.write_to(&mut mem).unwrap();
        let mut t = b.tables;
        // 3 GiB read-only in one call: one guest write per directory entry, within bounds.
        let a = s.mmap(0, 3 << 30, PROT_READ, Fixed::Hint, &mut mem).unwrap();
        t.update(&s, &mut mem, a, a + (3 << 30)).unwrap();
        assert_eq!(t.pending.len(), 1536);
        assert!(t.pending.len() <= MAX_GUEST_WRITES);
        let _ = RegionKind::Mmap;
    }

    /// [`enter_table_writer`] takes the registers to enter the writer with from kvm_run's sync
    /// area after completing the exit; the scheduler may have set another thread's registers
    /// (KVM_SET_REGS) just before. That holds only if the completing run stores them there.
    #[test]
    fn completing_an_exit_leaves_the_registers_just_set_in_the_sync_area() {
        let mut vm = crate::vm::EmptyVm::create(32 << 20).expect("KVM is needed for this test").machine;
        vm.prefault(&[USER_START]).unwrap(); // a real exit first, as the run loop has had
        let regs = kvm_bindings::kvm_regs {
            rip: SYSCALL_RETURN_PATH,
            rsp: KERNEL_STACK_TOP,
            rflags: 0x2,
            rbx: 0x1234,
            r15: 0x5678,
            rdi: 0x9abc,
            ..Default::default()
        };
        vm.vcpu.set_regs(&regs).unwrap();
        vm.complete_exit().unwrap();
        let synced = vm.vcpu.sync_regs().regs;
        assert_eq!((synced.rip, synced.rbx, synced.r15, synced.rdi), (SYSCALL_RETURN_PATH, 0x1234, 0x5678, 0x9abc));
    }

    #[test]
    fn the_table_writer_loops_over_its_body_and_returns_through_the_syscall_stub() {
        let code = table_writer_stub();
        let jnz = code.iter().position(|&b| b == 0x75).unwrap();
        assert_eq!(code[jnz + 1] as i8, -19);
        assert_eq!(&code[jnz - 17..jnz - 14], &[0x48, 0x8B, 0x3E], "the jump lands on mov rdi, [rsi]");
        let rel = i32::from_le_bytes(code[code.len() - 4..].try_into().unwrap());
        assert_eq!((TABLE_WRITER_ADDR + code.len() as u64).wrapping_add(rel as i64 as u64), SYSCALL_RETURN_PATH);
        assert!(code.len() as u64 <= PAGE_SIZE);
        const { assert!(MAX_GUEST_WRITES >= 2048 + 4, "a change of every directory entry fits") };
    }
}
