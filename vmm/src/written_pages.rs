//! Which pages of a range of this process's memory hold bytes written since the range was
//! mapped, from the kernel's `PAGEMAP_SCAN` (Linux 6.7): what `memory_reuse.rs` must put back
//! before a finished VM's memory serves another VM.
//!
//! A page counts as written when it is a private anonymous page, present or swapped out:
//! a copy-on-write break of a file page, or anonymous memory someone wrote. The scan leaves
//! out pages still shared with the file they map (they hold the file's bytes: a private
//! mapping never writes to its file) and the shared zero page (anonymous memory only read).
//! Pages never touched, or given back, are not in the page tables at all and read as the
//! mapping's bytes again. So the scan over-reports only harmlessly (a page written with the
//! bytes it already had, a file page in migration) and never misses a page whose bytes differ
//! from what a new mapping would show.
//!
//! One ioctl walks the host page tables of the range (≈40-70 µs for 64 MiB holding 600 pages
//! here) where reading `/proc/self/pagemap` for it costs one 8-byte entry per page, and tells
//! the zero page apart, which pagemap does only for a privileged reader.

use std::io;
use std::os::fd::AsRawFd;

/// `struct page_region` of `<linux/fs.h>`: one run of pages `[start, end)` with the same
/// categories.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `PAGEMAP_SCAN`, `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as libc::c_ulong) << 16) | ((b'f' as libc::c_ulong) << 8) | 16;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;
const PAGE_IS_PFNZERO: u64 = 1 << 5;

/// Regions one ioctl may return before the walk continues where it stopped.
const REGIONS_PER_SCAN: usize = 64;

/// What a scan found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    /// The written pages, as sorted runs `[start, end)` of host addresses.
    Ranges(Vec<(u64, u64)>),
    /// More than the limit asked for were written (the scan stopped there).
    OverLimit,
}

/// This process's `/proc/self/pagemap`, opened once (a reset scans a few spans per VM).
fn pagemap() -> io::Result<&'static std::fs::File> {
    static PAGEMAP: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(file) = PAGEMAP.get() {
        return Ok(file);
    }
    let file = std::fs::File::open("/proc/self/pagemap")?;
    Ok(PAGEMAP.get_or_init(|| file))
}

/// The written pages (see the module docs) of host memory `[start, end)` (page-aligned, this
/// process's), or [`Written::OverLimit`] once more than `limit` pages are found. An error
/// where the kernel has no `PAGEMAP_SCAN` (before 6.7: `ENOTTY`) or denies it.
pub(crate) fn scan(start: u64, end: u64, limit: u64) -> io::Result<Written> {
    let pagemap = pagemap()?;
    let mut regions = [PageRegion::default(); REGIONS_PER_SCAN];
    let mut found = Vec::new();
    let mut pages = 0u64;
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: REGIONS_PER_SCAN as u64,
            // One more than allowed: finding it is how an over-limit range is told apart.
            max_pages: limit - pages + 1,
            // Not a file page and not the zero page, and present or swapped out.
            category_inverted: PAGE_IS_FILE | PAGE_IS_PFNZERO,
            category_mask: PAGE_IS_FILE | PAGE_IS_PFNZERO,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            // Runs are split only where this differs: present against swapped out.
            return_mask: PAGE_IS_PRESENT,
            ..Default::default()
        };
        // SAFETY: PAGEMAP_SCAN on our own pagemap with a correctly sized argument; the kernel
        // writes at most `vec_len` regions into `regions`, which outlives the call, and
        // `walk_end` into `arg`. It only reads page tables.
        let filled = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
        if filled < 0 {
            return Err(io::Error::last_os_error());
        }
        for r in &regions[..filled as usize] {
            pages += (r.end - r.start) / crate::layout::PAGE_SIZE;
            match found.last_mut() {
                Some((_, last_end)) if *last_end == r.start => *last_end = r.end,
                _ => found.push((r.start, r.end)),
            }
        }
        if pages > limit {
            return Ok(Written::OverLimit);
        }
        // The walk stops early when `regions` is full; it always moves forward.
        if arg.walk_end <= at {
            return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
        }
        at = arg.walk_end;
    }
    Ok(Written::Ranges(found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::PAGE_SIZE;

    /// A private anonymous mapping of `pages` pages for a test, unmapped on drop.
    struct Mapping {
        base: *mut u8,
        len: usize,
    }

    impl Mapping {
        fn anonymous(pages: usize) -> Mapping {
            let len = pages * PAGE_SIZE as usize;
            // SAFETY: a fresh anonymous mapping; checked.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED);
            // No huge pages: the test counts 4 KiB pages.
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(base, len, libc::MADV_NOHUGEPAGE) };
            Mapping { base: base.cast(), len }
        }

        fn page(&self, i: usize) -> *mut u8 {
            self.base.wrapping_add(i * PAGE_SIZE as usize)
        }

        fn range(&self) -> (u64, u64) {
            (self.base as u64, self.base as u64 + self.len as u64)
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: our own mapping.
            unsafe { libc::munmap(self.base.cast(), self.len) };
        }
    }

    #[test]
    fn written_pages_are_found_and_read_or_untouched_ones_are_not() {
        let m = Mapping::anonymous(64);
        // SAFETY: all inside the mapping.
        unsafe {
            m.page(3).write(1);
            m.page(4).add(100).write(2);
            m.page(40).write(3);
            // Read only: the zero page.
            assert_eq!(m.page(20).read_volatile(), 0);
        }
        let (start, end) = m.range();
        let p = |i: usize| m.page(i) as u64;
        assert_eq!(scan(start, end, 64).unwrap(), Written::Ranges(vec![(p(3), p(5)), (p(40), p(41))]));
        assert_eq!(scan(start, end, 3).unwrap(), Written::Ranges(vec![(p(3), p(5)), (p(40), p(41))]));
        assert_eq!(scan(start, end, 2).unwrap(), Written::OverLimit);
        // Given back: not written any more.
        // SAFETY: advice on our own mapping.
        unsafe { libc::madvise(m.page(3).cast(), PAGE_SIZE as usize, libc::MADV_DONTNEED) };
        assert_eq!(scan(start, end, 64).unwrap(), Written::Ranges(vec![(p(4), p(5)), (p(40), p(41))]));
    }

    #[test]
    fn a_file_page_is_written_only_once_copied_on_write() {
        use std::io::Write;
        let mut file = tempfile_in_tmp();
        file.write_all(&[7u8; 4 * PAGE_SIZE as usize]).unwrap();
        let len = 4 * PAGE_SIZE as usize;
        // SAFETY: a private mapping of the file we hold; checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: inside the mapping.
        unsafe {
            assert_eq!(base.read_volatile(), 7, "read: the file's page, shared");
            base.add(2 * PAGE_SIZE as usize).write(8);
        }
        let (start, end) = (base as u64, base as u64 + len as u64);
        let written = scan(start, end, 16).unwrap();
        // SAFETY: our own mapping.
        unsafe { libc::munmap(base.cast(), len) };
        assert_eq!(written, Written::Ranges(vec![(start + 2 * PAGE_SIZE, start + 3 * PAGE_SIZE)]));
    }

    /// Many runs: more than one ioctl's worth of regions, continued where the walk stopped.
    #[test]
    fn more_runs_than_one_scan_returns_are_all_found() {
        let m = Mapping::anonymous(4 * REGIONS_PER_SCAN + 8);
        for i in (0..4 * REGIONS_PER_SCAN).step_by(2) {
            // SAFETY: inside the mapping.
            unsafe { m.page(i).write(1) };
        }
        let (start, end) = m.range();
        let Written::Ranges(runs) = scan(start, end, 10_000).unwrap() else { panic!("over the limit") };
        assert_eq!(runs.len(), 2 * REGIONS_PER_SCAN);
        assert!(runs.iter().enumerate().all(|(k, &(s, e))| s == m.page(2 * k) as u64 && e == s + PAGE_SIZE));
    }

    fn tempfile_in_tmp() -> std::fs::File {
        let path = std::env::temp_dir().join(format!(
            "snapcall-written-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
