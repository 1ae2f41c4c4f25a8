//! The working set: which guest pages a restored call touches, recorded once when the
//! snapshot is taken, so that the pool can make exactly those present in each VM ahead.
//!
//! Recording runs a few calls from the snapshot just written, each in a fresh VM whose user
//! memory is empty and registered with userfaultfd (`userfault.rs`): every first touch, by
//! the guest through KVM or by the monitor on its behalf, is reported and served with the
//! snapshot's bytes for that page, write-protected, so that the page's first write is
//! reported too. That is exact for what those calls did
//! and costs nothing at call time. (Measured alternatives: the host's page map after a
//! copy-on-write call counts 4-16× too many reads, because the kernel maps up to 64 KiB
//! around each file read fault; KVM's dirty log sees only writes; guest access bits would
//! need 4 KiB guest page tables.)
//! A call that touches something else still works: those pages just fault when touched.

use std::collections::BTreeMap;
use std::path::Path;

use snapshot_format::WorkingSetRange;

use crate::layout::{GuestAddr, LARGE_PAGE, PAGE_SIZE, PREFAULT_WRITE, USER_START};
use crate::snapshot::{RestoreMemory, SnapshotError, SnapshotImage, SnapshotSubject};
use crate::userfault::Userfault;
use crate::vm::EmptyVm;

/// Requests the recording calls get: the bundle's warm-up request (or a short one), a small
/// JSON object (what most functions are sent: a JSON handler that rejects the probe string
/// takes its error path, and a real call then faulted ≈20 pages the recording never saw), and
/// an empty one, so the handler's usual path and the end-of-input path are covered.
fn recording_requests(subject: &SnapshotSubject) -> [Vec<u8>; 3] {
    let warm = subject.warmup_request.unwrap_or(b"snapcall working-set probe").to_vec();
    [warm, br#"{"snapcall": "working-set probe"}"#.to_vec(), Vec::new()]
}

/// Runs recording calls from the snapshot at `path` and returns the pages they touched.
/// A call's own failure (the function rejects the probe request) is no error here: the
/// pages it touched are still what a call touches.
pub(crate) fn record(subject: &SnapshotSubject, path: &Path) -> Result<Vec<WorkingSetRange>, SnapshotError> {
    record_with(subject, path, true)
}

/// [`record`], with userfaultfd when `userfault` is set and the host allows it, else from
/// the host's page map.
fn record_with(subject: &SnapshotSubject, path: &Path, userfault: bool) -> Result<Vec<WorkingSetRange>, SnapshotError> {
    let image = SnapshotImage::open(subject, path)?;
    let mut pages: BTreeMap<u64, bool> = BTreeMap::new();
    for request in recording_requests(subject) {
        let vm = EmptyVm::create(image.memory_size())?;
        let (base, size) = (vm.machine.memory.host_base(), vm.machine.memory.size());
        let shared = image.shared_pages()?;
        let fill = move |host_addr: u64, page: &mut [u8]| shared.read(host_addr - base, page);
        let server = if userfault { Userfault::new(base + USER_START, size - USER_START, fill).ok() } else { None };
        let touched = match server {
            Some(server) => {
                let vm = image.prepare(vm, RestoreMemory::OnDemand)?;
                drop(bounded(image.finish(subject.spec, vm, &request)?).run());
                server.finish().into_iter().map(|t| (t.host_addr - base, t.write)).collect()
            }
            // No userfaultfd here (unprivileged): what the host mapped after a plain
            // copy-on-write restore, which over-counts reads by the kernel's fault-around (up
            // to 64 KiB around each read).
            None => {
                let vm = image.prepare(vm, RestoreMemory::CopyOnWrite)?;
                let (_, used) = bounded(image.finish(subject.spec, vm, &request)?).run().into_parts();
                used.machine.memory.resident_pages(GuestAddr::new(USER_START), GuestAddr::new(size))?
            }
        };
        for (addr, written) in touched {
            *pages.entry(addr).or_default() |= written;
        }
    }
    Ok(ranges(pages))
}

/// Longest a recording call may run: a function that spins (or takes its whole deadline,
/// which a bundle may set to an hour) must not hold up taking its snapshot, and what it
/// touched until then is still its working set.
const RECORDING_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

fn bounded(mut call: crate::call::ReadyCall) -> crate::call::ReadyCall {
    call.timeout = call.timeout.min(RECORDING_DEADLINE);
    call
}

/// Coalesces (page address, written) pairs, ascending, into ranges of like pages.
fn ranges(pages: BTreeMap<u64, bool>) -> Vec<WorkingSetRange> {
    let mut out: Vec<WorkingSetRange> = Vec::new();
    for (addr, written) in pages {
        match out.last_mut() {
            Some(r)
                if r.written == written && r.start + u64::from(r.pages) * PAGE_SIZE == addr && r.pages < u32::MAX =>
            {
                r.pages += 1
            }
            _ => out.push(WorkingSetRange { start: addr, pages: 1, written }),
        }
    }
    out
}

/// Under TDP (EPT/NPT), a 2 MiB window holding at least this many working-set pages is
/// copied into a huge page rather than mapped 4 KiB at a time: there every first touch of a
/// 4 KiB page is a fault of its own, and one touch of a huge page maps all of it. 100 was
/// measured under kvm-pvm before the pool pre-faulted by prefetch groups (hellowithdata-py:
/// one window of 105 pages paid for its copy, 95 no longer did); on VT-x/AMD-V, where a fault
/// is cheaper, it may be higher. `SNAPCALL_HUGE_WINDOW_PAGES` overrides it, for measuring.
pub const HUGE_WINDOW_PAGES: usize = 100;

/// Under shadow paging, a 2 MiB window that the program's tables map with one entry is
/// copied into a huge page when its working set touches at least this many 8-page prefetch
/// groups ([`PREFETCH_GROUP`]) and calls write it (or the shared copy is not in huge pages,
/// which would map an unwritten window whole for free: [`place`]). There KVM maps a window
/// 4 KiB at a time unless both the guest's entry and the host's page are 2 MiB, and with the
/// groups written ahead (`prefetch_groups`) each touched group costs one fault: ≈35-40 µs here (kvm-pvm,
/// 2026-12-03), against ≈0.2 ms to copy the window into a reused huge page. 16 groups save
/// about 0.6 ms of pool CPU per VM, three times the copy, which is what it takes to be worth
/// 2 MiB more of host memory per VM. A window with mixed protections (4 KiB guest entries)
/// never qualifies: a huge host page under it still maps one group per fault.
/// `SNAPCALL_HUGE_WINDOW_GROUPS` overrides it, for measuring. See docs/vmm.md.
pub const HUGE_WINDOW_GROUPS: usize = 16;

/// Which windows of a working set [`place`] copies into private huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HugeRule {
    /// Shadow paging: windows the program's tables map whole, with at least this many
    /// touched prefetch groups ([`HUGE_WINDOW_GROUPS`]).
    Groups(usize),
    /// TDP: windows with at least this many working-set pages ([`HUGE_WINDOW_PAGES`]).
    Pages(usize),
}

impl HugeRule {
    /// This host's rule (its paging mode, and the overrides), read once per process.
    pub(crate) fn for_this_host() -> HugeRule {
        static RULE: std::sync::OnceLock<HugeRule> = std::sync::OnceLock::new();
        *RULE.get_or_init(|| {
            let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
            if crate::kvm::shadow_paging() {
                HugeRule::Groups(var("SNAPCALL_HUGE_WINDOW_GROUPS").unwrap_or(HUGE_WINDOW_GROUPS))
            } else {
                HugeRule::Pages(var("SNAPCALL_HUGE_WINDOW_PAGES").unwrap_or(HUGE_WINDOW_PAGES))
            }
        })
    }
}

/// How the pool lays a snapshot's working set into a VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Placement {
    /// 2 MiB windows whose data is copied into a private huge page.
    pub huge_windows: Vec<u64>,
    /// How the host maps the working set outside those windows ahead (MADV_POPULATE_*), in
    /// order: each written range exactly, copied now, then the read pages.
    pub populate: Vec<Populate>,
    /// Pre-fault table entries: every working-set page outside the huge windows (with
    /// [`PREFAULT_WRITE`] on written ones), and one per huge window.
    pub prefault: Vec<u64>,
}

/// Pages outside the huge windows always worth resetting in a finished VM's memory (4 MiB),
/// whatever the working set: the monitor area, the stack, a small heap.
const RESET_BASE_PAGES: u64 = 1024;

impl Placement {
    /// Most pages written outside the huge windows for which resetting a finished VM's
    /// memory in place beats a new mapping (`memory_reuse.rs`): a few times what the
    /// recorded calls wrote, plus [`RESET_BASE_PAGES`]. A call that wrote more (a memory
    /// bomb, a one-off large buffer) has its memory given back instead, so memory kept for
    /// reuse stays about what a VM in flight holds.
    pub fn reset_limit(&self) -> u64 {
        let written: u64 = self.populate.iter().filter(|p| p.write).map(|p| p.len / PAGE_SIZE).sum();
        4 * written + RESET_BASE_PAGES
    }
}

/// One MADV_POPULATE_WRITE (`write`: the pages are copied for this VM now, as the call's
/// first write would copy them) or MADV_POPULATE_READ (the snapshot's shared pages mapped
/// read-only) of `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Populate {
    pub start: u64,
    pub len: u64,
    pub write: bool,
}

/// Read ranges this close together (in the same 2 MiB window) are populated by one call:
/// mapping the shared pages between them read-only costs little (the kernel maps up to 16 per
/// fault anyway), a syscall per range more. CPython's working set outside its huge windows:
/// 146 read ranges, 32 calls (covering 728 pages instead of 300).
const READ_POPULATE_GAP: u64 = 16 * PAGE_SIZE;

/// The populate calls for the working-set pages outside the huge windows (`small`: page ->
/// written). Written ranges are exact: a write-populate copies every page it covers. Read
/// pages within [`READ_POPULATE_GAP`] of each other in one window share a read-populate,
/// which leaves written pages it spans as they are (already this VM's copies, populated first).
fn populate_calls(small: &BTreeMap<u64, bool>) -> Vec<Populate> {
    let written = ranges(small.iter().filter(|(_, &w)| w).map(|(&p, &w)| (p, w)).collect());
    let mut calls: Vec<Populate> =
        written.iter().map(|r| Populate { start: r.start, len: u64::from(r.pages) * PAGE_SIZE, write: true }).collect();
    let reads_from = calls.len();
    for (&page, _) in small.iter().filter(|(_, &w)| !w) {
        match calls[reads_from..].last_mut() {
            Some(c) if c.start / LARGE_PAGE == page / LARGE_PAGE && page - (c.start + c.len) <= READ_POPULATE_GAP => {
                c.len = page + PAGE_SIZE - c.start
            }
            _ => calls.push(Populate { start: page, len: PAGE_SIZE, write: false }),
        }
    }
    calls
}

/// Splits `ranges` into huge windows (those `rule` picks; `maps_whole` says whether the
/// program's tables map a window with one entry) and 4 KiB pages. With `shared_huge` (the
/// shared copy is held in 2 MiB pages, which a window nobody writes maps whole, shared, for
/// free), only windows that calls write qualify.
pub(crate) fn place(
    ranges: &[WorkingSetRange],
    rule: HugeRule,
    shared_huge: bool,
    maps_whole: impl Fn(u64) -> bool,
) -> Placement {
    // Per window: pages, touched groups, whether any is written, and its first page (the one
    // a huge window's pre-fault touches: a page calls touch, so never one the guest cannot
    // map, such as the stack guard).
    #[derive(Default)]
    struct Window {
        pages: usize,
        groups: std::collections::BTreeSet<u64>,
        written: bool,
        first: u64,
    }
    let mut per_window: BTreeMap<u64, Window> = BTreeMap::new();
    for r in ranges {
        for page in pages(std::slice::from_ref(r)) {
            let w = per_window
                .entry(page / LARGE_PAGE * LARGE_PAGE)
                .or_insert(Window { first: page, ..Default::default() });
            w.pages += 1;
            w.groups.insert(page / PREFETCH_GROUP);
            w.written |= r.written;
            w.first = w.first.min(page);
        }
    }
    let qualifies = |start: u64, w: &Window| match rule {
        HugeRule::Groups(groups) => w.groups.len() >= groups && maps_whole(start),
        HugeRule::Pages(pages) => w.pages >= pages,
    };
    let chosen: Vec<(u64, u64)> = per_window
        .iter()
        .filter(|&(&start, w)| qualifies(start, w) && (w.written || !shared_huge))
        .map(|(&start, w)| (start, w.first))
        .collect();
    let huge_windows: Vec<u64> = chosen.iter().map(|&(w, _)| w).collect();
    let is_huge = |page: u64| huge_windows.binary_search(&(page / LARGE_PAGE * LARGE_PAGE)).is_ok();
    let mut small = BTreeMap::new();
    let mut prefault: Vec<u64> = chosen.iter().map(|&(_, first)| first | PREFAULT_WRITE).collect();
    for r in ranges {
        for page in pages(std::slice::from_ref(r)).filter(|&p| !is_huge(p)) {
            small.insert(page, r.written);
            prefault.push(page | if r.written { PREFAULT_WRITE } else { 0 });
        }
    }
    prefault.sort_unstable();
    Placement { huge_windows, populate: populate_calls(&small), prefault }
}

/// Pages in one group of KVM's shadow-MMU prefetch: on a fault it maps, with the faulting
/// page, the other pages of its aligned group of 8, in order, until one is absent from the
/// guest's tables or not mapped writable by the host (it looks them up with
/// `get_user_pages_fast_only(FOLL_WRITE)`).
pub(crate) const PREFETCH_GROUP: u64 = 8 * PAGE_SIZE;

/// Write-populate calls that let that prefetch work for the working set outside huge
/// windows, where the host backs the guest with 4 KiB pages and so KVM maps one page per
/// fault (whether the program's tables map the window whole or not). A snapshot page only
/// read is a shared read-only host page, where the prefetch stops: CPython's first arenas and
/// its mixed relro-beside-data window took one fault per page. So in each group holding two
/// or more working-set pages, the pages from the group's start up to its last working-set
/// page become private, host-writable copies ahead, stopping at the first page the program
/// may not access (`valid`), where the prefetch stops anyway. Pages the placement already
/// writes are left out. The price is host memory: each page so copied is private to the VM.
/// With `shared_huge` (the shared copy in 2 MiB pages), a window no call writes is left
/// alone: the host maps it with one shared huge page, which KVM maps with one fault, and a
/// private copy of one page in it would split that mapping into 4 KiB ones.
pub(crate) fn prefetch_groups(
    ranges: &[WorkingSetRange],
    placement: &Placement,
    shared_huge: bool,
    valid: impl Fn(u64) -> bool,
) -> Vec<Populate> {
    let window = |page: u64| page / LARGE_PAGE * LARGE_PAGE;
    let written_windows: std::collections::BTreeSet<u64> =
        ranges.iter().filter(|r| r.written).flat_map(|r| pages(std::slice::from_ref(r))).map(window).collect();
    let left_alone = |page: u64| {
        placement.huge_windows.binary_search(&window(page)).is_ok()
            || (shared_huge && !written_windows.contains(&window(page)))
    };
    let written = |page: u64| placement.populate.iter().any(|p| p.write && (p.start..p.start + p.len).contains(&page));
    let mut groups: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for page in pages(ranges).filter(|&p| !left_alone(p)) {
        groups.entry(page / PREFETCH_GROUP * PREFETCH_GROUP).or_default().push(page);
    }
    let mut small = BTreeMap::new();
    for (group, touched) in groups {
        let last = touched.iter().copied().max().unwrap_or(group);
        let reach = (group..=last).step_by(PAGE_SIZE as usize).take_while(|&page| valid(page)).last();
        let Some(reach) = reach else { continue };
        if touched.iter().filter(|&&page| page <= reach).count() < 2 {
            continue;
        }
        for page in (group..=reach).step_by(PAGE_SIZE as usize).filter(|&page| !written(page)) {
            small.insert(page, true);
        }
    }
    populate_calls(&small)
}

/// The placement of a snapshot with no recorded working set: every 2 MiB window holding any
/// of the `extents` (guest address, length) of its data is a huge window.
pub(crate) fn place_by_data(extents: impl IntoIterator<Item = (u64, u64)>) -> Placement {
    // Window -> its first data address (what the pre-fault touches).
    let mut windows: BTreeMap<u64, u64> = BTreeMap::new();
    for (addr, len) in extents.into_iter().filter(|&(_, len)| len > 0) {
        let last = addr.saturating_add(len - 1) / LARGE_PAGE;
        for w in addr / LARGE_PAGE..=last {
            let first = addr.max(w * LARGE_PAGE) & !(PAGE_SIZE - 1);
            let e = windows.entry(w * LARGE_PAGE).or_insert(first);
            *e = (*e).min(first);
        }
    }
    let huge_windows: Vec<u64> = windows.keys().copied().collect();
    let prefault = windows.values().map(|&first| first | PREFAULT_WRITE).collect();
    Placement { huge_windows, populate: Vec::new(), prefault }
}

/// Every page address of `ranges`, ascending.
fn pages(ranges: &[WorkingSetRange]) -> impl Iterator<Item = u64> + '_ {
    ranges.iter().flat_map(|r| (0..u64::from(r.pages)).map(move |i| r.start + i * PAGE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_neighbours_merge_and_unlike_ones_do_not() {
        let p = |a: u64| a * PAGE_SIZE;
        let pages = BTreeMap::from([(p(10), false), (p(11), false), (p(12), true), (p(13), true), (p(20), true)]);
        let r = ranges(pages);
        let want = [(p(10), 2, false), (p(12), 2, true), (p(20), 1, true)];
        assert_eq!(r.iter().map(|r| (r.start, r.pages, r.written)).collect::<Vec<_>>(), want);
        let all_small = place(&r, HugeRule::Pages(usize::MAX), false, |_| true);
        assert_eq!(all_small.prefault, [p(10), p(11), p(12) | 1, p(13) | 1, p(20) | 1]);
        assert!(all_small.huge_windows.is_empty());
        let populate = |start, pages, write| Populate { start, len: pages * PAGE_SIZE, write };
        assert_eq!(all_small.populate, [populate(p(12), 2, true), populate(p(20), 1, true), populate(p(10), 2, false)]);
    }

    /// Each group with two or more touched pages is written ahead up to its last touched page
    /// (but not past a page the program cannot access, nor pages already written); huge
    /// windows, and windows the shared huge copy maps whole, are left as they are.
    #[test]
    fn prefetch_groups_cover_touched_groups_up_to_their_last_touched_page() {
        // Window 0: reads at 3, 17 and 19, a write at 20, a lone read at 41; page 26 touched
        // with 25 invalid before it; window 1: huge (enough pages).
        let p = |a: u64| a * PAGE_SIZE;
        let w = LARGE_PAGE / PAGE_SIZE;
        let mut pages = BTreeMap::from([
            (p(3), false),
            (p(5), false),
            (p(17), false),
            (p(19), false),
            (p(20), true),
            (p(24), false),
            (p(26), false),
            (p(41), false),
        ]);
        pages.extend((0..300).map(|i| (p(w + i), true)));
        let r = ranges(pages);
        let placement = place(&r, HugeRule::Pages(256), false, |_| true);
        assert_eq!(placement.huge_windows, [LARGE_PAGE]);
        let valid = |page: u64| page != p(1) && page != p(25);
        let groups = prefetch_groups(&r, &placement, false, valid);
        let populate = |start, pages| Populate { start: p(start), len: pages * PAGE_SIZE, write: true };
        // Group 0 stops at invalid page 1, before any touched page: nothing; group 16 up to 19,
        // the written 20 left out; group 24 stops at 25 (one touched page before it: nothing);
        // group 40 holds one touched page; the huge window none.
        assert_eq!(groups, [populate(16, 4)]);
        let all = |_: u64| true;
        let groups = prefetch_groups(&r, &placement, false, all);
        assert_eq!(groups, [populate(0, 6), populate(16, 4), populate(24, 3)]);
        // Held in shared huge pages, window 0 (written at 20) still qualifies; without that
        // write it would be mapped whole from the shared copy and is left alone.
        assert_eq!(prefetch_groups(&r, &placement, true, all), groups);
        let unwritten: Vec<WorkingSetRange> =
            r.iter().filter(|r| r.start >= LARGE_PAGE || !r.written).cloned().collect();
        assert_eq!(prefetch_groups(&unwritten, &placement, true, all), []);
    }

    #[test]
    fn near_reads_in_one_window_share_a_populate_and_writes_stay_exact() {
        let p = |a: u64| a * PAGE_SIZE;
        let w = LARGE_PAGE / PAGE_SIZE; // pages per window
        let pages = BTreeMap::from([
            (p(w), false),
            (p(w + 2), true), // between two reads: the read-populate spans it, the write is its own
            (p(w + 4), false),
            (p(w + 4 + 17), false),      // 16 pages after the last: still joins
            (p(w + 4 + 17 + 18), false), // 17 pages after: a call of its own
            (p(2 * w - 1), false),
            (p(2 * w), false), // the next window: never joins across
            (p(2 * w + 1), true),
            (p(2 * w + 2), true),
        ]);
        let populate = |start, pages, write| Populate { start, len: pages * PAGE_SIZE, write };
        assert_eq!(
            populate_calls(&pages),
            [
                populate(p(w + 2), 1, true),
                populate(p(2 * w + 1), 2, true),
                populate(p(w), 4 + 17 + 1, false),
                populate(p(w + 4 + 17 + 18), 1, false),
                populate(p(2 * w - 1), 1, false),
                populate(p(2 * w), 1, false),
            ]
        );
    }

    #[test]
    fn dense_windows_go_huge_and_get_one_touch() {
        let w = LARGE_PAGE;
        let r = vec![
            WorkingSetRange { start: w, pages: 3, written: false },
            WorkingSetRange { start: w + 3 * PAGE_SIZE, pages: 1, written: true },
            WorkingSetRange { start: 3 * w + PAGE_SIZE, pages: 2, written: true },
        ];
        let placed = place(&r, HugeRule::Pages(4), false, |_| true);
        assert_eq!(placed.huge_windows, [w]);
        // A dense window nobody writes stays shared when the shared copy is in huge pages.
        let read_only = [WorkingSetRange { start: w, pages: 8, written: false }];
        assert_eq!(place(&read_only, HugeRule::Pages(4), false, |_| true).huge_windows, [w]);
        assert!(place(&read_only, HugeRule::Pages(4), true, |_| true).huge_windows.is_empty());
        assert_eq!(placed.populate, [Populate { start: 3 * w + PAGE_SIZE, len: 2 * PAGE_SIZE, write: true }]);
        assert_eq!(placed.prefault, [w | 1, (3 * w + PAGE_SIZE) | 1, (3 * w + 2 * PAGE_SIZE) | 1]);
    }

    /// Under shadow paging what counts is touched groups, in windows the program's tables
    /// map whole: 16 groups of one page each qualify, 100 pages in 13 groups do not, nor do
    /// 16 groups in a window of mixed protections.
    #[test]
    fn under_shadow_paging_windows_mapped_whole_with_enough_groups_go_huge() {
        let w = LARGE_PAGE;
        let spread = |window: u64| -> Vec<WorkingSetRange> {
            (0..16).map(|g| WorkingSetRange { start: window + g * PREFETCH_GROUP, pages: 1, written: g == 0 }).collect()
        };
        let dense = |window: u64| vec![WorkingSetRange { start: window, pages: 100, written: true }];
        let mut r = spread(w);
        r.extend(dense(2 * w));
        r.extend(spread(3 * w));
        let mixed = 3 * w;
        let placed = place(&r, HugeRule::Groups(16), true, |window| window != mixed);
        assert_eq!(placed.huge_windows, [w]);
        // One touch for the huge window; every page of the others stays in the table.
        assert_eq!(placed.prefault.iter().filter(|&&e| e / LARGE_PAGE == 1).count(), 1);
        assert_eq!(placed.prefault.len(), 1 + 100 + 16);
        // The same working set by page count: only the dense window.
        assert_eq!(place(&r, HugeRule::Pages(100), true, |_| true).huge_windows, [2 * w]);
    }

    #[test]
    fn without_a_working_set_every_window_with_data_goes_huge() {
        let w = LARGE_PAGE;
        let placed = place_by_data([(w + 4096, 4096), (3 * w - 4096, 8192), (9 * w, 0)]);
        assert_eq!(placed.huge_windows, [w, 2 * w, 3 * w]);
        assert_eq!(placed.prefault, [(w + 4096) | 1, (3 * w - 4096) | 1, (3 * w) | 1]);
    }

    /// Both recording methods on a real snapshot: the page map may over-count reads (the
    /// kernel maps neighbours of a faulting page: up to 16, or a whole 2 MiB folio of the
    /// shared copy), never miss a page, and sees exactly the writes userfaultfd sees.
    #[test]
    fn the_page_map_fallback_records_at_least_what_userfaultfd_records() {
        use crate::function::{Function, StartMode};
        let dir = crate::function::private_bundle_copy("echo-c", "workset");
        let path = dir.join(crate::snapshot::SNAPSHOT_FILE);
        let cold = Function::load(&dir, StartMode::Cold).unwrap();
        cold.take_snapshot(&path).unwrap();
        let exact = record_with(&cold.subject(), &path, true).unwrap();
        let coarse = record_with(&cold.subject(), &path, false).unwrap();
        let set = |r: &[WorkingSetRange], written: bool| -> std::collections::BTreeSet<u64> {
            r.iter().filter(|r| !written || r.written).flat_map(|r| pages(std::slice::from_ref(r))).collect()
        };
        assert!(!exact.is_empty() && set(&exact, true).len() < set(&exact, false).len(), "{exact:?}");
        assert!(set(&coarse, false).is_superset(&set(&exact, false)), "a touched page missing: {coarse:?}");
        assert!(set(&coarse, true).is_superset(&set(&exact, true)), "a written page missing: {coarse:?}");
        // Writes are exact either way: the private copies a copy-on-write restore made.
        assert_eq!(set(&coarse, true), set(&exact, true));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
