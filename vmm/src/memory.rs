//! Guest memory: one anonymous host mapping backing the VM's single memory slot, and the only
//! way the monitor reads or writes it. Every access is bounds-checked; accesses on behalf of
//! the program (syscall buffers) are additionally confined to user memory.

use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use vm_memory::{ByteValued, Bytes, VolatileSlice};

use crate::huge_page_cache::HugePageCache;
use crate::layout::{GuestAddr, LARGE_PAGE, PAGE_SIZE, USER_START};

/// Errors of guest memory management.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host would not reserve the guest's memory.
    #[error("guest memory of {size} bytes could not be reserved: {source}")]
    Reserve {
        /// Bytes asked for.
        size: u64,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// An access outside guest memory.
    #[error("guest range {addr}+{len:#x} is outside guest memory ({size:#x} bytes)")]
    OutOfRange {
        /// Start of the access.
        addr: GuestAddr,
        /// Its length.
        len: u64,
        /// Guest memory size.
        size: u64,
    },
    /// Mapping or copying a file into guest memory failed.
    #[error("could not map file range at {addr}+{len:#x}: {source}")]
    MapFile {
        /// Guest address of the range.
        addr: GuestAddr,
        /// Its length.
        len: u64,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// Giving guest pages back to the host failed.
    #[error("could not discard guest range {addr}+{len:#x}: {source}")]
    Discard {
        /// Guest address of the range.
        addr: GuestAddr,
        /// Its length.
        len: u64,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// A reset needed bytes the snapshot's copy does not have (the memory is then dropped).
    #[error("guest range {addr}+{len:#x} lies outside the snapshot's copy")]
    OutsideSource {
        /// Guest address of the range.
        addr: GuestAddr,
        /// Its length.
        len: u64,
    },
    /// Making guest pages present failed.
    #[error("could not populate guest range {addr}+{len:#x}: {source}")]
    Populate {
        /// Guest address of the range.
        addr: GuestAddr,
        /// Its length.
        len: u64,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// The host's page map could not be read.
    #[error("reading /proc/self/pagemap: {source}")]
    Pagemap {
        /// What failed underneath.
        source: std::io::Error,
    },
}

/// The data extents (not the holes) of `file[offset, offset+len)`, as (offset, len) pairs.
pub fn file_data_extents(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let end = offset.checked_add(len).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut extents = Vec::new();
    let mut pos = offset;
    while pos < end {
        // SAFETY: lseek on a file we hold; SEEK_DATA/SEEK_HOLE only query extents (the file
        // offset they move is not used: all reads are positioned).
        let data = unsafe { libc::lseek(file.as_raw_fd(), pos as i64, libc::SEEK_DATA) };
        if data < 0 || data as u64 >= end {
            break;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(file.as_raw_fd(), data, libc::SEEK_HOLE) };
        let (data, hole) = (data as u64, if hole < 0 { end } else { (hole as u64).min(end) });
        extents.push((data, hole - data));
        pos = hole;
    }
    Ok(extents)
}

/// A sealed memfd of `len` bytes holding `file`'s data extents `(guest address, file offset,
/// length)`, each at offset `place(guest address)` (holes stay holes): an in-memory image
/// that every VM can map copy-on-write and that nobody, the file's owner included, can
/// change or shrink. It is filled through a mapping advised for huge pages, so where the
/// host lets shmem use them (`/sys/kernel/mm/transparent_hugepage/shmem_enabled` is
/// `advise`, `within_size` or `always`) it is held in 2 MiB pages that VMs can map whole;
/// the `bool` says whether it was.
pub fn sealed_copy(
    file: &std::fs::File,
    len: u64,
    extents: &[(u64, u64, u64)],
    place: impl Fn(u64) -> u64,
) -> std::io::Result<(std::fs::File, bool)> {
    use std::os::unix::fs::FileExt;
    // SAFETY: memfd_create with a NUL-terminated name and valid flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"snapcall-snapshot".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let copy = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    copy.set_len(len)?;
    let map_len = usize::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: a new shared mapping of the memfd we own, of its whole length; checked.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: advice on the mapping just made; it changes no contents.
    unsafe { libc::madvise(ptr, map_len, libc::MADV_HUGEPAGE) };
    let filled = (|| {
        for &(addr, offset, extent_len) in extents {
            let at = usize::try_from(place(addr)).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
            let n = usize::try_from(extent_len).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
            if at.checked_add(n).is_none_or(|end| end > map_len) {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            // SAFETY: [at, at+n) lies inside our mapping of `map_len` bytes (checked above),
            // which nothing else references while we fill it.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<u8>().add(at), n) };
            file.read_exact_at(dst, offset)?;
        }
        Ok(shmem_pmd_mapped(ptr as u64))
    })();
    // SAFETY: unmapping the mapping made above; no reference into it outlives this point.
    unsafe { libc::munmap(ptr, map_len) };
    let huge = filled?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on the memfd we own; nothing maps it shared-writable.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((copy, huge))
}

/// The bytes of a sealed copy ([`sealed_copy`]), through one read-only shared mapping of
/// it: what the pool copies into a VM's private pages (its huge windows, and the pages a
/// finished call wrote) comes from here by `memcpy` (a huge window's by streaming stores,
/// [`copy_streaming`]), which costs about two thirds of a `pread` of the same bytes (2 MiB on
/// kvm-pvm: 158 against 231-251 µs), the kernel's per-page lookups gone. The copy is sealed against writes, growing and shrinking, so the
/// bytes never change and no access can fault past its end.
pub struct SealedView {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the view is read-only and its bytes immutable (the file is sealed against writes:
// checked in `new`), so any thread may read them; nothing in it is tied to a thread.
unsafe impl Send for SealedView {}
// SAFETY: as above: shared access is reads of bytes that never change.
unsafe impl Sync for SealedView {}

impl SealedView {
    /// Maps `file`, which must be sealed against writes and shrinking (the `EPERM` error
    /// otherwise: a view of bytes that may change or vanish would not be a `&[u8]`).
    pub fn new(file: &std::fs::File) -> std::io::Result<SealedView> {
        // SAFETY: F_GET_SEALS on a descriptor we hold; it only reads the seals.
        let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
        let needed = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK;
        if seals < 0 || seals & needed != needed {
            return Err(std::io::Error::from_raw_os_error(libc::EPERM));
        }
        let len =
            usize::try_from(file.metadata()?.len()).map_err(|_| std::io::Error::from_raw_os_error(libc::EFBIG))?;
        if len == 0 {
            return Ok(SealedView { ptr: NonNull::dangling(), len });
        }
        // SAFETY: a new read-only shared mapping of the whole file, checked below; the
        // kernel picks the address (2 MiB-aligned for shmem, so huge pages map whole).
        let ptr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(SealedView { ptr, len })
    }

    /// The copy's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` readable bytes at `ptr` (the mapping, or a dangling pointer for an
        // empty file) that live as long as `self` and never change (sealed).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SealedView {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping `new` made; no borrow of it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// Whether the mapping starting at `addr` has shmem huge pages mapped (smaps'
/// `ShmemPmdMapped`). smaps is read only as far as that mapping: the kernel makes each
/// mapping's entry as it is read, walking its page tables, and the mappings after it (a
/// VM's guest memory among them) are what made a one-shot `snapcall run` spend ≈7 % of its
/// time here when the whole file was read.
fn shmem_pmd_mapped(addr: u64) -> bool {
    use std::io::BufRead;
    let Ok(smaps) = std::fs::File::open("/proc/self/smaps") else { return false };
    let header = format!("{addr:x}-");
    std::io::BufReader::new(smaps)
        .lines()
        .map_while(Result::ok)
        .skip_while(|l| !l.starts_with(&header))
        .skip(1)
        .take_while(|l| l.split(':').next().is_some_and(|k| k.chars().all(|c| c.is_ascii_alphabetic() || c == '_')))
        .find_map(|l| l.strip_prefix("ShmemPmdMapped:").map(str::to_owned))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .is_some_and(|kib| kib > 0)
}

/// An address the program handed the monitor: a syscall argument, or a pointer read from
/// its memory (an iovec's base, a `msghdr`'s buffers). Nothing is known about it until a
/// user-memory accessor of [`GuestMemory`] checks that it lies in user memory, and only
/// those accessors take one: the monitor's own ([`GuestMemory::slice`], `write`, `read_obj`)
/// take a [`GuestAddr`], so a program's pointer cannot reach the monitor area through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserAddr(u64);

impl UserAddr {
    /// The program's address `raw`, unchecked.
    pub const fn new(raw: u64) -> UserAddr {
        UserAddr(raw)
    }
    /// Its value (to hand back to the program, or to keep).
    pub const fn raw(self) -> u64 {
        self.0
    }
    /// NULL, which many syscalls take as "no buffer".
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }
    /// `self + offset`, saturating: an address past the end of the address space fails every
    /// check, as it would fault on Linux.
    pub const fn add(self, offset: u64) -> UserAddr {
        UserAddr(self.0.saturating_add(offset))
    }
}

impl std::fmt::Display for UserAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A guest pointer the program handed us was bad (maps to EFAULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadAddress {
    /// Where the access started.
    pub addr: UserAddr,
    /// Its length.
    pub len: u64,
}

/// The host memory that backs guest physical memory `[0, size)`.
///
/// Reserved with `MAP_NORESERVE`, so untouched guest pages cost nothing. The vCPU of the VM
/// that owns this memory runs only through `Vcpu::run(&mut GuestMemory)` (vm.rs), which
/// borrows this memory exclusively for the `KVM_RUN`: no slice handed out here can be alive
/// while the guest runs, so handing out `&mut [u8]` between runs is sound, and the compiler
/// checks it.
pub struct GuestMemory {
    base: NonNull<u8>,
    size: u64,
    /// Guest ranges `[start, end)` mapped from a file (copy-on-write), sorted: discarding
    /// there needs a new anonymous mapping (MADV_DONTNEED would bring the file back).
    file_backed: Vec<(u64, u64)>,
    /// Anonymous mappings `discard` has put over file-backed ranges so far (see
    /// [`MAX_DISCARD_REMAPS`]).
    discard_remaps: u32,
    /// Huge windows [`Self::copy_into_huge_page`] filled that are still one untouched host
    /// mapping (no discard or remap since): what `drop` gives to `huge_pages`.
    private_huge: Vec<u64>,
    /// Where this VM's huge windows come from and go back to (the pool's; none for VMs made
    /// outside a runtime).
    huge_pages: Option<std::sync::Arc<HugePageCache>>,
    /// The snapshot image whose restore laid this memory out (its spans mapped from the
    /// image's sealed copy, its huge windows anonymous), while that layout stands: any remap
    /// ends it. What `memory_reuse.rs` needs to know before reusing the memory.
    laid_out_for: Option<u64>,
}

/// Most host mappings a guest's munmaps may split its memory into. Each `discard` over a
/// file-backed range replaces it with a fresh anonymous mapping, a new VMA; a guest that
/// unmaps every other page would otherwise make one per page until the host process hits
/// `vm.max_map_count` and its next allocation aborts it. Past this budget a discard zeroes
/// the pages in place instead (they stay private copies, inside the guest's memory cap).
pub const MAX_DISCARD_REMAPS: u32 = 64;

// SAFETY: GuestMemory owns its mapping exclusively; moving it to another thread moves that
// ownership (the pool creates VMs on one thread and runs them on another).
unsafe impl Send for GuestMemory {}

impl GuestMemory {
    /// Reserves `size` bytes (a multiple of the page size) of zeroed, lazily backed memory,
    /// at a 2 MiB-aligned host address, so that each 2 MiB guest window can be one host huge
    /// page (a huge window, a shared huge page of the snapshot, a reused one). Linux aligns
    /// large anonymous mappings itself since 6.7; on older kernels the mapping is made 2 MiB
    /// longer and trimmed to an aligned start.
    pub fn new(size: u64) -> Result<Self, MemoryError> {
        let reserve_err = |source| MemoryError::Reserve { size, source };
        let len = usize::try_from(size).map_err(|_| reserve_err(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        let base = map_huge_aligned(len).map_err(reserve_err)?;
        Ok(GuestMemory {
            base,
            size,
            file_backed: Vec::new(),
            discard_remaps: 0,
            private_huge: Vec::new(),
            huge_pages: None,
            laid_out_for: None,
        })
    }

    /// Takes this VM's huge windows from `cache` and gives them back to it when dropped.
    pub(crate) fn use_huge_page_cache(&mut self, cache: std::sync::Arc<HugePageCache>) {
        self.huge_pages = Some(cache);
    }

    /// The huge-page cache this memory uses, if any (a recycled shell's new memory keeps it).
    pub(crate) fn huge_page_cache(&self) -> Option<std::sync::Arc<HugePageCache>> {
        self.huge_pages.clone()
    }

    /// Records that a restore of snapshot image `image` laid this memory out (see
    /// `laid_out_for`).
    pub(crate) fn mark_laid_out(&mut self, image: u64) {
        self.laid_out_for = Some(image);
    }

    /// The snapshot image whose layout this memory still has, if any.
    pub(crate) fn laid_out_for(&self) -> Option<u64> {
        self.laid_out_for
    }

    /// Size of guest memory in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Host address of guest address 0 (for KVM_SET_USER_MEMORY_REGION).
    pub fn host_base(&self) -> u64 {
        self.base.as_ptr() as u64
    }

    fn check(&self, addr: GuestAddr, len: u64) -> Result<usize, MemoryError> {
        match addr.raw().checked_add(len) {
            Some(end) if end <= self.size => Ok(addr.raw() as usize),
            _ => Err(MemoryError::OutOfRange { addr, len, size: self.size }),
        }
    }

    /// The bytes `[addr, addr+len)` of guest memory (monitor use: any address in range).
    pub fn slice(&self, addr: GuestAddr, len: u64) -> Result<&[u8], MemoryError> {
        let off = self.check(addr, len)?;
        // SAFETY: `check` proved [off, off+len) lies inside our mapping of `size` bytes; the
        // vCPU cannot run while the returned borrow of `self` lives (`Vcpu::run` needs
        // `&mut self`, see type docs).
        Ok(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len as usize) })
    }

    /// Mutable bytes `[addr, addr+len)` of guest memory (monitor use).
    pub fn slice_mut(&mut self, addr: GuestAddr, len: u64) -> Result<&mut [u8], MemoryError> {
        let off = self.check(addr, len)?;
        // SAFETY: as in `slice`, and `&mut self` makes the borrow exclusive.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len as usize) })
    }

    /// Writes `data` at `addr` (monitor use).
    pub fn write(&mut self, addr: GuestAddr, data: &[u8]) -> Result<(), MemoryError> {
        self.slice_mut(addr, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    /// Writes `words` as consecutive little-endian u64s from `addr` (monitor use: page tables,
    /// descriptor tables), without building a byte copy first.
    pub fn write_u64s(&mut self, addr: GuestAddr, words: &[u64]) -> Result<(), MemoryError> {
        let dst = self.slice_mut(addr, words.len() as u64 * 8)?;
        for (d, w) in dst.chunks_exact_mut(8).zip(words) {
            d.copy_from_slice(&w.to_le_bytes());
        }
        Ok(())
    }

    /// Writes a little-endian u64 at `addr` (monitor use).
    pub fn write_u64(&mut self, addr: GuestAddr, value: u64) -> Result<(), MemoryError> {
        self.write_obj(addr, value)
    }

    /// Reads a little-endian u64 at `addr` (monitor use).
    pub fn read_u64(&self, addr: GuestAddr) -> Result<u64, MemoryError> {
        self.read_obj(addr)
    }

    /// Reads a plain value (a `#[repr(C)]` struct of the Linux ABI, an integer) at `addr`
    /// (monitor use).
    pub fn read_obj<T: ByteValued>(&self, addr: GuestAddr) -> Result<T, MemoryError> {
        let len = std::mem::size_of::<T>() as u64;
        let off = self.check(addr, len)?;
        // SAFETY: `check` proved [off, off+len) lies inside our mapping, which lives as long
        // as the borrow of `self` the slice carries; the slice is only read here, and no
        // `&mut` into guest memory can exist while `self` is borrowed shared (nor can the
        // vCPU run: `Vcpu::run` needs `&mut GuestMemory`).
        let slice = unsafe { VolatileSlice::new(self.base.as_ptr().add(off), len as usize) };
        slice.read_obj(0).map_err(|_| MemoryError::OutOfRange { addr, len, size: self.size })
    }

    /// Writes a plain value at `addr` (monitor use).
    pub fn write_obj<T: ByteValued>(&mut self, addr: GuestAddr, value: T) -> Result<(), MemoryError> {
        let len = std::mem::size_of::<T>() as u64;
        let size = self.size;
        VolatileSlice::from(self.slice_mut(addr, len)?).write_obj(value, 0).map_err(|_| MemoryError::OutOfRange {
            addr,
            len,
            size,
        })
    }

    /// Where the program's `[addr, addr+len)` is, if it lies wholly in user memory: the one
    /// way a [`UserAddr`] becomes a [`GuestAddr`].
    pub fn check_user(&self, addr: UserAddr, len: u64) -> Result<GuestAddr, BadAddress> {
        let bad = BadAddress { addr, len };
        let end = addr.raw().checked_add(len).ok_or(bad)?;
        if addr.raw() < USER_START || end > self.size {
            return Err(bad);
        }
        Ok(GuestAddr::new(addr.raw()))
    }

    /// Program-supplied buffer `[addr, addr+len)`, which must lie in user memory.
    pub fn user_slice(&self, addr: UserAddr, len: u64) -> Result<&[u8], BadAddress> {
        if len == 0 {
            return Ok(&[]);
        }
        let at = self.check_user(addr, len)?;
        self.slice(at, len).map_err(|_| BadAddress { addr, len })
    }

    /// Mutable program-supplied buffer, which must lie in user memory.
    pub fn user_slice_mut(&mut self, addr: UserAddr, len: u64) -> Result<&mut [u8], BadAddress> {
        if len == 0 {
            return Ok(&mut []);
        }
        let at = self.check_user(addr, len)?;
        self.slice_mut(at, len).map_err(|_| BadAddress { addr, len })
    }

    /// Copies `data` into user memory at `addr`.
    pub fn write_user(&mut self, addr: UserAddr, data: &[u8]) -> Result<(), BadAddress> {
        self.user_slice_mut(addr, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    /// Reads a plain value (a `#[repr(C)]` struct of the Linux ABI, an integer) from user
    /// memory.
    pub fn read_user_obj<T: ByteValued>(&self, addr: UserAddr) -> Result<T, BadAddress> {
        let len = std::mem::size_of::<T>() as u64;
        let at = self.check_user(addr, len)?;
        self.read_obj(at).map_err(|_| BadAddress { addr, len })
    }

    /// Writes a plain value into user memory.
    pub fn write_user_obj<T: ByteValued>(&mut self, addr: UserAddr, value: T) -> Result<(), BadAddress> {
        let len = std::mem::size_of::<T>() as u64;
        let at = self.check_user(addr, len)?;
        self.write_obj(at, value).map_err(|_| BadAddress { addr, len })
    }

    /// Reads `N` bytes from user memory.
    pub fn read_user_array<const N: usize>(&self, addr: UserAddr) -> Result<[u8; N], BadAddress> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.user_slice(addr, N as u64)?);
        Ok(out)
    }

    /// Reads a u64 from user memory.
    pub fn read_user_u64(&self, addr: UserAddr) -> Result<u64, BadAddress> {
        self.read_user_obj(addr)
    }

    /// Reads a NUL-terminated string of at most `max` bytes (without the NUL) from user memory.
    /// `Ok(None)` means no NUL within `max` bytes (the caller answers ENAMETOOLONG).
    pub fn read_user_cstr(&self, addr: UserAddr, max: usize) -> Result<Option<Vec<u8>>, BadAddress> {
        self.check_user(addr, 1)?;
        let available = (self.size - addr.raw()).min(max as u64 + 1);
        let bytes = self.user_slice(addr, available)?;
        match bytes.iter().position(|&b| b == 0) {
            Some(n) => Ok(Some(bytes[..n].to_vec())),
            None if available <= max as u64 => Err(BadAddress { addr, len: available + 1 }),
            None => Ok(None),
        }
    }

    /// Makes `[addr, addr+len)` read as zero again and gives whole pages back to the host
    /// where that costs no new host mapping.
    ///
    /// Anonymous memory is dropped with `MADV_DONTNEED` (it then reads as zero, and the VMA
    /// is untouched). A file-backed (snapshot) range gets a fresh anonymous mapping over it,
    /// at most [`MAX_DISCARD_REMAPS`] times per VM; after that its pages are zeroed in place.
    /// Either way the number of host mappings a guest can cause stays bounded.
    pub fn discard(&mut self, addr: GuestAddr, len: u64) -> Result<(), MemoryError> {
        self.check(addr, len)?;
        let start = addr.raw();
        let end = addr.raw() + len;
        let page_start = start.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let page_end = end / PAGE_SIZE * PAGE_SIZE;
        if page_start >= page_end {
            self.slice_mut(addr, len)?.fill(0);
            return Ok(());
        }
        self.slice_mut(addr, page_start - start)?.fill(0);
        self.slice_mut(GuestAddr::new(page_end), end - page_end)?.fill(0);
        for (at, piece_end, is_file) in self.pieces(page_start, page_end) {
            let piece = GuestAddr::new(at);
            if !is_file {
                self.drop_anonymous(piece, piece_end - at)?;
            } else if self.discard_remaps < MAX_DISCARD_REMAPS {
                self.remap_anonymous(piece, piece_end - at)?;
                self.discard_remaps += 1;
                subtract_range(&mut self.file_backed, at, piece_end);
            } else {
                self.slice_mut(piece, piece_end - at)?.fill(0);
            }
        }
        Ok(())
    }

    /// `[start, end)` cut where it goes in or out of a file-backed range: `(start, end,
    /// file-backed)` pieces, in order.
    fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut pieces = Vec::new();
        let mut at = start;
        while at < end {
            let file = self.file_backed.iter().find(|&&(s, e)| e > at && s < end).copied();
            let (piece_end, is_file) = match file {
                Some((s, e)) if s <= at => (e.min(end), true),
                Some((s, _)) => (s, false),
                None => (end, false),
            };
            pieces.push((at, piece_end, is_file));
            at = piece_end;
        }
        pieces
    }

    /// Gives every page of this memory outside the 2 MiB windows `keep` back the bytes it had
    /// when the layout was new, wherever something wrote to it since: in the file-backed spans
    /// the mapped file's bytes, copied from `source` (the bytes of the file they map: guest
    /// address `a` at `source[a - source_start]`), elsewhere zeros. The pages stay this memory's, in place: no
    /// mapping changes, so no other thread's TLB needs flushing. Finds the pages with one
    /// `PAGEMAP_SCAN` per span (`written_pages.rs`); `Ok(false)`, with nothing changed, when
    /// more than `limit` were written.
    pub(crate) fn reset_written_pages(
        &mut self,
        keep: &[u64],
        source: &[u8],
        source_start: u64,
        limit: u64,
    ) -> Result<bool, MemoryError> {
        use crate::written_pages::{scan, Written};
        let base = self.host_base();
        let mut left = limit;
        let mut written = Vec::new();
        for (start, end) in crate::layout::outside_windows(0, self.size, keep) {
            match scan(base + start, base + end, left).map_err(|source| MemoryError::Pagemap { source })? {
                Written::OverLimit => return Ok(false),
                Written::Ranges(ranges) => {
                    for (s, e) in ranges {
                        left -= (e - s) / PAGE_SIZE;
                        written.push((s - base, e - base));
                    }
                }
            }
        }
        for (start, end) in written {
            for (at, piece_end, is_file) in self.pieces(start, end) {
                let (addr, len) = (GuestAddr::new(at), piece_end - at);
                let page = self.slice_mut(addr, len)?;
                if is_file {
                    // A page outside the source leaves the memory unfit; the caller drops it.
                    let bytes = usize::try_from(at - source_start)
                        .ok()
                        .and_then(|from| source.get(from..from.checked_add(page.len())?))
                        .ok_or(MemoryError::OutsideSource { addr, len })?;
                    page.copy_from_slice(bytes);
                } else {
                    page.fill(0);
                }
            }
        }
        Ok(true)
    }

    /// Host mappings `discard` has made so far (for tests).
    #[cfg(test)]
    pub fn discard_remaps(&self) -> u32 {
        self.discard_remaps
    }

    /// `MADV_DONTNEED` over anonymous guest memory: the pages go back to the host and read
    /// as zero on the next touch.
    fn drop_anonymous(&mut self, addr: GuestAddr, len: u64) -> Result<(), MemoryError> {
        let off = self.check(addr, len)?;
        self.forget_huge_windows(addr.raw(), addr.raw() + len);
        // SAFETY: advice on a page-aligned range inside our own private anonymous mapping;
        // it only replaces the pages' contents with zeros (KVM's MMU notifier drops its view).
        if unsafe { libc::madvise(self.base.as_ptr().add(off).cast(), len as usize, libc::MADV_DONTNEED) } != 0 {
            return Err(MemoryError::Discard { addr, len, source: std::io::Error::last_os_error() });
        }
        Ok(())
    }

    /// A fresh anonymous mapping over `[addr, addr+len)` (page-aligned): zero pages, with
    /// whatever file mapping was there dropped.
    fn remap_anonymous(&mut self, addr: GuestAddr, len: u64) -> Result<(), MemoryError> {
        let off = self.check(addr, len)?;
        self.forget_huge_windows(addr.raw(), addr.raw() + len);
        self.laid_out_for = None;
        // SAFETY: [off, off+len) is a page-aligned range inside our own mapping; MAP_FIXED
        // replaces only those pages of it. KVM's MMU notifier drops its view of the old pages.
        let ptr = unsafe {
            libc::mmap(
                self.base.as_ptr().add(off).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::Discard { addr, len, source: std::io::Error::last_os_error() });
        }
        Ok(())
    }

    /// Maps `len` bytes of `file` at `file_offset` copy-on-write (MAP_PRIVATE) at guest `addr`.
    /// Untouched pages cost nothing and are shared through the page cache; written pages are
    /// private to this guest. `addr`, `len` and `file_offset` must be page-aligned.
    pub fn map_file_private(
        &mut self,
        addr: GuestAddr,
        len: u64,
        file: &impl AsRawFd,
        file_offset: u64,
    ) -> Result<(), MemoryError> {
        let off = self.check(addr, len)?;
        let misaligned = !addr.raw().is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || !file_offset.is_multiple_of(PAGE_SIZE);
        let offset = libc::off_t::try_from(file_offset).ok().filter(|_| !misaligned);
        let Some(offset) = offset else {
            return Err(MemoryError::MapFile { addr, len, source: std::io::Error::from_raw_os_error(libc::EINVAL) });
        };
        if len == 0 {
            return Ok(());
        }
        self.forget_huge_windows(addr.raw(), addr.raw() + len);
        self.laid_out_for = None;
        // SAFETY: the target range is page-aligned and inside our own mapping (checked above);
        // MAP_FIXED replaces only those pages. The file mapping is private, so guest writes
        // never reach the file.
        let ptr = unsafe {
            libc::mmap(
                self.base.as_ptr().add(off).cast(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MemoryError::MapFile { addr, len, source: std::io::Error::last_os_error() });
        }
        let pos = self.file_backed.partition_point(|&(s, _)| s < addr.raw());
        self.file_backed.insert(pos, (addr.raw(), addr.raw() + len));
        Ok(())
    }

    /// Populates the host page tables behind `[addr, addr+len)` (page-aligned) ahead of the
    /// guest's touches: with `write`, each page becomes this VM's private copy now (a
    /// copy-on-write break, or a zero page of anonymous memory); without, file-backed pages
    /// are mapped shared and read-only. (MADV_POPULATE_READ/WRITE, Linux 5.14.)
    pub fn populate(&mut self, addr: GuestAddr, len: u64, write: bool) -> Result<(), MemoryError> {
        const MADV_POPULATE_READ: i32 = 22;
        const MADV_POPULATE_WRITE: i32 = 23;
        let off = self.check(addr, len)?;
        let advice = if write { MADV_POPULATE_WRITE } else { MADV_POPULATE_READ };
        // SAFETY: advice on a range inside our own mapping; populating changes no contents
        // (a write-populate breaks copy-on-write, which a guest write would do anyway).
        if unsafe { libc::madvise(self.base.as_ptr().add(off).cast(), len as usize, advice) } != 0 {
            return Err(MemoryError::Populate { addr, len, source: std::io::Error::last_os_error() });
        }
        Ok(())
    }

    /// The pages of `[from, to)` (page-aligned) that the host has mapped, from
    /// `/proc/self/pagemap`, each with whether it is a private copy of this VM's (written,
    /// or anonymous) rather than a page shared with the file or memfd it maps.
    pub(crate) fn resident_pages(&self, from: GuestAddr, to: GuestAddr) -> Result<Vec<(u64, bool)>, MemoryError> {
        use std::os::unix::fs::FileExt;
        const PRESENT: u64 = 1 << 63;
        const FILE_OR_SHARED: u64 = 1 << 61;
        let len = to.raw().saturating_sub(from.raw());
        let off = self.check(from, len)?;
        let pages = (len / PAGE_SIZE) as usize;
        let io = |source| MemoryError::Pagemap { source };
        let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(io)?;
        let mut raw = vec![0u8; pages * 8];
        let first = (self.host_base() + off as u64) / PAGE_SIZE;
        pagemap.read_exact_at(&mut raw, first * 8).map_err(io)?;
        let mut out = Vec::new();
        for (i, entry) in raw.chunks_exact(8).enumerate() {
            let entry = u64::from_le_bytes(entry.try_into().unwrap_or([0; 8]));
            if entry & PRESENT != 0 {
                out.push((from.raw() + i as u64 * PAGE_SIZE, entry & FILE_OR_SHARED == 0));
            }
        }
        Ok(out)
    }

    /// Makes the 2 MiB window at `window` private anonymous memory backed by a huge page that
    /// holds `source`'s bytes (laid out by guest address: `source[0]` is guest address
    /// `source_start`; a [`SealedView`]'s, say) and zeros where the window lies outside it:
    /// a whole window the guest then maps with one fault (see `working_set.rs` for when that
    /// beats 4 KiB pages). The page is a used one from the huge-page cache when it has one
    /// (no zeroing), else a new one; either way **every byte** of the window is written here.
    pub fn copy_into_huge_page(
        &mut self,
        window: GuestAddr,
        source: &[u8],
        source_start: u64,
    ) -> Result<(), MemoryError> {
        let source_len = source.len() as u64;
        let off = self.check(window, LARGE_PAGE)?;
        let (start, end) = (window.raw(), window.raw() + LARGE_PAGE);
        let host = self.base.as_ptr().wrapping_add(off);
        let aligned = (host as u64).is_multiple_of(LARGE_PAGE) && start.is_multiple_of(LARGE_PAGE);
        // Memory reused from a finished VM (`memory_reuse.rs`) still has this window's huge
        // page, with that VM's bytes: it is overwritten where it is.
        let in_place = aligned && self.private_huge.contains(&start);
        if in_place {
            if let Some(cache) = &self.huge_pages {
                cache.count_reused_in_place();
            }
        }
        // SAFETY: the window is 2 MiB of our own mapping, no borrow of it is alive (`&mut
        // self`), and every byte of it is overwritten below before this returns.
        let reused =
            in_place || (aligned && self.huge_pages.as_ref().is_some_and(|cache| unsafe { cache.take_into(host) }));
        // Only a window that is file-backed needs a fresh mapping (an mmap, which KVM's MMU
        // notifier makes cost more the more VMs are alive); anonymous memory just gets the
        // advice. (A cached page arrives as its own mapping, advised already.)
        if self.file_backed.iter().any(|&(s, e)| s < end && e > start) {
            if !reused {
                self.remap_anonymous(window, LARGE_PAGE)?;
            }
            subtract_range(&mut self.file_backed, start, end);
        }
        if !reused {
            self.advise_huge_pages(window, LARGE_PAGE)?;
        }
        let (from, to) = (start.max(source_start), end.min(source_start.saturating_add(source_len)));
        let dst = self.slice_mut(window, LARGE_PAGE)?;
        if from < to {
            let (head, rest) = dst.split_at_mut((from - start) as usize);
            let (copied, tail) = rest.split_at_mut((to - from) as usize);
            head.fill(0);
            tail.fill(0);
            // In range: [from, to) lies inside the source's span (the bounds above).
            let at = (from - source_start) as usize;
            copy_streaming(copied, &source[at..at + copied.len()]);
        } else {
            dst.fill(0);
        }
        if aligned && !in_place {
            self.private_huge.push(start);
        }
        Ok(())
    }

    /// Drops the huge windows overlapping `[start, end)` from those `drop` gives back: their
    /// host mapping is about to change (a discard may split the huge page).
    fn forget_huge_windows(&mut self, start: u64, end: u64) {
        self.private_huge.retain(|&w| w + LARGE_PAGE <= start || w >= end);
    }

    /// Asks for transparent huge pages behind `[addr, addr+len)` (page-aligned). With them
    /// the shadow/EPT MMU can map guest memory 2 MiB at a time (measured on kvm-pvm: a
    /// CPython snapshot call ran 3-4x faster from THP-backed copies than from 4 KiB
    /// copy-on-write file pages).
    pub fn advise_huge_pages(&mut self, addr: GuestAddr, len: u64) -> Result<(), MemoryError> {
        let off = self.check(addr, len)?;
        // SAFETY: advice on a range inside our own mapping; it changes no contents.
        unsafe { libc::madvise(self.base.as_ptr().add(off).cast(), len as usize, libc::MADV_HUGEPAGE) };
        Ok(())
    }

    /// Copies `len` bytes within guest memory from `src` to `dst` (ranges may overlap).
    pub fn copy_within(&mut self, src: GuestAddr, dst: GuestAddr, len: u64) -> Result<(), MemoryError> {
        let s = self.check(src, len)?;
        let d = self.check(dst, len)?;
        // SAFETY: both ranges were checked to lie inside the mapping; `copy` handles overlap.
        unsafe { std::ptr::copy(self.base.as_ptr().add(s), self.base.as_ptr().add(d), len as usize) };
        Ok(())
    }
}

/// Copies `src` into `dst` (same length) with non-temporal stores where both are 16-byte
/// aligned: a huge window's 2 MiB goes to memory without first reading the destination's old
/// lines into the cache (which a plain `memcpy` of this size does) and without evicting what
/// the pool and the calls have cached; the guest reads only a few of those pages, later.
/// Anything unaligned (never a window, which is page-aligned) takes `copy_from_slice`.
fn copy_streaming(dst: &mut [u8], src: &[u8]) {
    assert_eq!(dst.len(), src.len(), "copy_streaming: lengths differ");
    const CHUNK: usize = 64;
    let aligned = (dst.as_ptr() as usize).is_multiple_of(16);
    if !aligned || dst.len() < CHUNK {
        dst.copy_from_slice(src);
        return;
    }
    let whole = dst.len() / CHUNK * CHUNK;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
        let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
        for at in (0..whole).step_by(CHUNK) {
            // SAFETY: [at, at+64) lies inside both slices (at + 64 <= whole <= len); the loads
            // are unaligned loads, the stores go to 16-byte aligned addresses (dst is 16-byte
            // aligned and `at + i` a multiple of 16). SSE2 is part of x86-64's baseline.
            unsafe {
                for i in (0..CHUNK).step_by(16) {
                    let v = _mm_loadu_si128(s.add(at + i).cast::<__m128i>());
                    _mm_stream_si128(d.add(at + i).cast::<__m128i>(), v);
                }
            }
        }
        // SAFETY: a store fence, so the streamed bytes are ordered before whatever follows
        // (the VM that runs on them is started later by this or another thread).
        unsafe { _mm_sfence() };
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst[..whole].copy_from_slice(&src[..whole]);
    dst[whole..].copy_from_slice(&src[whole..]);
}

/// Removes `[start, end)` from a sorted list of disjoint ranges.
fn subtract_range(ranges: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(s, e) in ranges.iter() {
        if e <= start || s >= end {
            out.push((s, e));
            continue;
        }
        if s < start {
            out.push((s, start));
        }
        if e > end {
            out.push((end, e));
        }
    }
    *ranges = out;
}

/// A new private anonymous mapping of `len` bytes (lazily backed, zeroed) at a 2 MiB-aligned
/// address. Linux aligns large anonymous mappings itself since 6.7; on older kernels the
/// mapping is made 2 MiB longer and trimmed to an aligned start.
pub(crate) fn map_huge_aligned(len: usize) -> std::io::Result<NonNull<u8>> {
    let map = |len: usize| {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; no existing
        // memory is affected. Checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        NonNull::new(ptr.cast::<u8>()).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))
    };
    let huge = LARGE_PAGE as usize;
    let ptr = map(len)?;
    if (ptr.as_ptr() as usize).is_multiple_of(huge) {
        return Ok(ptr);
    }
    // SAFETY: the mapping just made, of `len` bytes; nothing refers to it.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
    let raw = map(len.checked_add(huge).ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?)?;
    let head = (raw.as_ptr() as usize).wrapping_neg() % huge;
    // SAFETY: the head [raw, raw+head) and the tail after raw+head+len are parts of the
    // mapping just made that nothing refers to; what stays is [raw+head, raw+head+len).
    unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        libc::munmap(raw.as_ptr().add(head + len).cast(), huge - head);
        Ok(NonNull::new_unchecked(raw.as_ptr().add(head)))
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // Whole huge windows go to the cache (while it has room) instead of back to the host.
        // Memory is dropped after its VM (`Machine`'s field order), so no slot maps them now.
        if let Some(cache) = self.huge_pages.take() {
            for window in std::mem::take(&mut self.private_huge) {
                // SAFETY: 2 MiB of our own mapping (`copy_into_huge_page` checked it), of a VM
                // that is gone; no borrow outlives `self`. It stays mapped, empty, until the
                // munmap below.
                if !unsafe { cache.put(self.base.as_ptr().wrapping_add(window as usize)) } {
                    break;
                }
            }
        }
        // SAFETY: we own this mapping of exactly `size` bytes and no borrow of it outlives
        // `self`. Failure would only leak address space, so the result is ignored.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_access_is_confined_to_user_memory() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        assert!(mem.user_slice(UserAddr::new(0), 1).is_err(), "NULL page is not user memory");
        assert!(mem.user_slice(UserAddr::new(USER_START - 1), 2).is_err(), "straddles the monitor area");
        assert!(mem.user_slice(UserAddr::new((32 << 20) - 1), 2).is_err(), "runs past the end");
        assert!(mem.user_slice(UserAddr::new(u64::MAX), 2).is_err(), "overflow");
        mem.write_user(UserAddr::new(USER_START), b"hi\0").unwrap();
        assert_eq!(mem.read_user_cstr(UserAddr::new(USER_START), 10).unwrap().unwrap(), b"hi");
        assert_eq!(mem.read_user_cstr(UserAddr::new(USER_START), 1).unwrap(), None);
    }

    #[test]
    fn words_are_written_little_endian_and_never_past_the_end() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        mem.write_u64s(GuestAddr::new(0x1000), &[0x0102_0304_0506_0708, u64::MAX]).unwrap();
        assert_eq!(mem.read_u64(GuestAddr::new(0x1000)).unwrap(), 0x0102_0304_0506_0708);
        assert_eq!(mem.slice(GuestAddr::new(0x1000), 2).unwrap(), [0x08, 0x07]);
        assert_eq!(mem.read_u64(GuestAddr::new(0x1008)).unwrap(), u64::MAX);
        assert!(mem.write_u64s(GuestAddr::new((32 << 20) - 8), &[1, 2]).is_err());
        assert_eq!(mem.read_u64(GuestAddr::new((32 << 20) - 8)).unwrap(), 0, "nothing written on error");
    }

    #[test]
    fn unterminated_string_at_the_end_of_memory_is_a_fault() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let end = 32 << 20;
        mem.write_user(UserAddr::new(end - 2), b"ab").unwrap();
        assert!(mem.read_user_cstr(UserAddr::new(end - 2), 4096).is_err());
    }

    /// Host mappings (lines of /proc/self/maps) that overlap `mem`.
    fn host_mappings_of(mem: &GuestMemory) -> usize {
        let (lo, hi) = (mem.host_base(), mem.host_base() + mem.size());
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (range, _) = l.split_once(' ')?;
                let (a, b) = range.split_once('-')?;
                Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?))
            })
            .filter(|&(a, b)| a < hi && b > lo)
            .count()
    }

    #[test]
    fn unmapping_every_other_page_makes_a_bounded_number_of_host_mappings() {
        let mut mem = GuestMemory::new(64 << 20).unwrap();
        let file_len = 16 << 20;
        let path = std::env::temp_dir().join(format!("snapcall-discard-{}", std::process::id()));
        std::fs::write(&path, vec![0xAB; file_len]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let file_at = 4 << 20;
        mem.map_file_private(GuestAddr::new(file_at), file_len as u64, &file, 0).unwrap();
        mem.advise_huge_pages(GuestAddr::new(USER_START), (64 << 20) - USER_START).unwrap();
        let anon_at = 32 << 20;
        mem.slice_mut(GuestAddr::new(anon_at), 16 << 20).unwrap().fill(0xCD);
        let before = host_mappings_of(&mem);
        for page in (0..(file_len as u64 / PAGE_SIZE)).step_by(2) {
            mem.discard(GuestAddr::new(file_at + page * PAGE_SIZE), PAGE_SIZE).unwrap();
            mem.discard(GuestAddr::new(anon_at + page * PAGE_SIZE), PAGE_SIZE).unwrap();
        }
        let after = host_mappings_of(&mem);
        assert!(after <= before + 2 * MAX_DISCARD_REMAPS as usize + 2, "{before} -> {after} host mappings");
        assert_eq!(mem.discard_remaps(), MAX_DISCARD_REMAPS);
        for (at, fill) in [(file_at, 0xAB), (anon_at, 0xCD)] {
            let s = mem.slice(GuestAddr::new(at), 16 << 20).unwrap();
            for (i, page) in s.chunks(PAGE_SIZE as usize).enumerate() {
                let want = if i % 2 == 0 { 0 } else { fill };
                assert!(page.iter().all(|&b| b == want), "page {i} at {at:#x}");
            }
        }
        drop(file);
        std::fs::remove_file(path).unwrap();
    }

    /// A huge window filled from a used page (the cache's) holds the source's bytes where the
    /// source covers it and zeros elsewhere: nothing of the page's earlier contents survives.
    #[test]
    fn a_reused_huge_page_is_overwritten_whole() {
        let cache = std::sync::Arc::new(HugePageCache::new());
        // A used page full of "secrets", kept by the cache when its memory goes.
        let mut old = GuestMemory::new(4 * LARGE_PAGE).unwrap();
        old.use_huge_page_cache(cache.clone());
        let window = GuestAddr::new(LARGE_PAGE);
        old.copy_into_huge_page(window, &[], 0).unwrap();
        old.slice_mut(window, LARGE_PAGE).unwrap().fill(0xAA);
        drop(old);
        assert_eq!(cache.held(), 1, "the used window was kept");
        // A source laid out by guest address that starts 1 MiB into the window and ends
        // 512 KiB past it: the window's first 1 MiB lies outside it.
        let start = LARGE_PAGE + (1 << 20);
        let bytes: Vec<u8> = (0..(3u64 << 19)).map(|i| (i % 251) as u8 + 1).collect();
        let mut new = GuestMemory::new(4 * LARGE_PAGE).unwrap();
        new.use_huge_page_cache(cache.clone());
        new.copy_into_huge_page(window, &bytes, start).unwrap();
        assert_eq!(cache.reused(), 1, "the test must fill the window from the used page");
        let got = new.slice(window, LARGE_PAGE).unwrap();
        assert!(got[..1 << 20].iter().all(|&b| b == 0), "outside the source: zeros");
        assert_eq!(&got[1 << 20..], &bytes[..1 << 20], "inside it: its bytes");
        // A window the source does not reach at all is zeros.
        let far = GuestAddr::new(3 * LARGE_PAGE);
        new.copy_into_huge_page(far, &bytes, start).unwrap();
        assert!(new.slice(far, LARGE_PAGE).unwrap().iter().all(|&b| b == 0));
    }

    /// Memory laid out for a snapshot (file-backed spans around one huge window), as the
    /// restore lays it out from a sealed copy and its view.
    fn laid_out(source: &(std::fs::File, SealedView), cache: &std::sync::Arc<HugePageCache>) -> GuestMemory {
        let (file, view) = source;
        let mut mem = GuestMemory::new(8 * LARGE_PAGE).unwrap();
        mem.use_huge_page_cache(cache.clone());
        let (start, len) = (2 * LARGE_PAGE, 3 * LARGE_PAGE);
        assert_eq!(view.bytes().len() as u64, len);
        mem.map_file_private(GuestAddr::new(start), LARGE_PAGE, file, 0).unwrap();
        mem.map_file_private(GuestAddr::new(start + 2 * LARGE_PAGE), LARGE_PAGE, file, 2 * LARGE_PAGE).unwrap();
        mem.copy_into_huge_page(GuestAddr::new(start + LARGE_PAGE), view.bytes(), start).unwrap();
        mem.mark_laid_out(7);
        mem
    }

    /// A finished VM's memory, reset, reads byte for byte as memory newly laid out for the
    /// same snapshot, wherever its call wrote: the monitor area, the file-backed spans, the
    /// anonymous memory past them, and the huge window (overwritten whole by the restore).
    #[test]
    fn memory_reset_in_place_reads_as_a_new_layout() {
        let bytes: Vec<u8> = (0..3 * LARGE_PAGE).map(|i| (i % 253) as u8 + 1).collect();
        let source = sealed_with(&bytes);
        let cache = std::sync::Arc::new(HugePageCache::new());
        let window = GuestAddr::new(3 * LARGE_PAGE);
        let mut used = laid_out(&source, &cache);
        let secret =
            |mem: &mut GuestMemory, at: u64, len: u64| mem.slice_mut(GuestAddr::new(at), len).unwrap().fill(0xEE);
        secret(&mut used, 0x1000, 8);
        secret(&mut used, 2 * LARGE_PAGE + 3 * PAGE_SIZE + 17, 100);
        secret(&mut used, 4 * LARGE_PAGE + 5 * PAGE_SIZE, 3 * PAGE_SIZE);
        secret(&mut used, 6 * LARGE_PAGE + 11, 1);
        secret(&mut used, window.raw(), LARGE_PAGE);
        // Read, not written: stays shared with the file.
        assert_eq!(
            used.slice(GuestAddr::new(2 * LARGE_PAGE + 40 * PAGE_SIZE), 1).unwrap()[0],
            bytes[40 * PAGE_SIZE as usize]
        );
        assert!(used.reset_written_pages(&[window.raw()], source.1.bytes(), 2 * LARGE_PAGE, 64).unwrap());
        assert_eq!(used.laid_out_for(), Some(7), "a reset keeps the layout");
        // The restore then fills the window in the huge page it has (no cache page taken).
        used.copy_into_huge_page(window, source.1.bytes(), 2 * LARGE_PAGE).unwrap();
        assert_eq!((cache.reused(), cache.held()), (1, 0), "the window was overwritten in place");
        let fresh = laid_out(&source, &cache);
        let size = used.size();
        let (a, b) = (used.slice(GuestAddr::new(0), size).unwrap(), fresh.slice(GuestAddr::new(0), size).unwrap());
        assert!(a == b, "first difference at {:#x}", a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(0));
    }

    /// Memory a call wrote more of than the limit is left as it is (the caller unmaps it).
    #[test]
    fn memory_written_past_the_limit_is_not_reset() {
        let source = sealed_with(&vec![1u8; 3 * LARGE_PAGE as usize]);
        let cache = std::sync::Arc::new(HugePageCache::new());
        let mut used = laid_out(&source, &cache);
        let far = GuestAddr::new(6 * LARGE_PAGE);
        used.slice_mut(far, 10 * PAGE_SIZE).unwrap().fill(0xEE);
        assert!(!used.reset_written_pages(&[3 * LARGE_PAGE], source.1.bytes(), 2 * LARGE_PAGE, 5).unwrap());
        assert!(used.slice(far, 10 * PAGE_SIZE).unwrap().iter().all(|&b| b == 0xEE), "nothing was reset");
        // Any remap ends the layout: such memory is never reused.
        used.discard(GuestAddr::new(2 * LARGE_PAGE), PAGE_SIZE).unwrap();
        assert_eq!(used.laid_out_for(), None);
    }

    /// `bytes` in a sealed copy, as a snapshot's are, and the view of it.
    fn sealed_with(bytes: &[u8]) -> (std::fs::File, SealedView) {
        let len = bytes.len() as u64;
        let (copy, _huge) = sealed_copy(&tempfile_with(bytes), len, &[(0, 0, len)], |a| a).unwrap();
        let view = SealedView::new(&copy).unwrap();
        assert_eq!(view.bytes(), bytes);
        (copy, view)
    }

    /// Only a copy sealed against writes and shrinking has a view: bytes that could change
    /// or vanish under it would not be a `&[u8]`.
    #[test]
    fn a_view_needs_a_sealed_file() {
        let err = SealedView::new(&tempfile_with(&[1, 2, 3])).err().map(|e| e.raw_os_error());
        assert_eq!(err, Some(Some(libc::EPERM)));
    }

    fn tempfile_with(bytes: &[u8]) -> std::fs::File {
        use std::io::Write;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("snapcall-huge-{}-{n}", std::process::id()));
        let mut f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn discard_zeroes_partial_and_whole_pages() {
        let mut mem = GuestMemory::new(32 << 20).unwrap();
        let a = GuestAddr::new(USER_START);
        mem.slice_mut(a, 3 * PAGE_SIZE).unwrap().fill(7);
        mem.discard(GuestAddr::new(USER_START + 100), 2 * PAGE_SIZE).unwrap();
        let s = mem.slice(a, 3 * PAGE_SIZE).unwrap();
        assert!(s[..100].iter().all(|&b| b == 7));
        assert!(s[100..100 + 2 * PAGE_SIZE as usize].iter().all(|&b| b == 0));
        assert!(s[100 + 2 * PAGE_SIZE as usize..].iter().all(|&b| b == 7));
    }

    #[test]
    fn a_streaming_copy_equals_a_plain_copy_at_any_alignment_and_length() {
        let src: Vec<u8> = (0..8192 + 200).map(|i| (i * 7 % 253) as u8).collect();
        // A 16-byte aligned buffer (u128), so both the aligned (streaming) and unaligned paths run.
        let mut backing = vec![0u128; (8192 + 400) / 16];
        // SAFETY: u128 has no invalid bit patterns and u8 no alignment; same allocation.
        let buf = unsafe { std::slice::from_raw_parts_mut(backing.as_mut_ptr().cast::<u8>(), backing.len() * 16) };
        for dst_off in [0usize, 1, 8, 16, 48] {
            for len in [0usize, 1, 63, 64, 65, 4096, 8192 + 17] {
                for src_off in [0usize, 3] {
                    buf.fill(0xAA);
                    copy_streaming(&mut buf[dst_off..dst_off + len], &src[src_off..src_off + len]);
                    assert_eq!(&buf[dst_off..dst_off + len], &src[src_off..src_off + len], "off {dst_off} len {len}");
                    assert!(buf[..dst_off].iter().all(|&b| b == 0xAA), "wrote before the start");
                    assert!(buf[dst_off + len..].iter().all(|&b| b == 0xAA), "wrote past the end");
                }
            }
        }
    }
}

#[cfg(test)]
mod sealed_copy_tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_copy_holds_the_extents_where_placed_and_cannot_be_written() {
        let path = std::env::temp_dir().join(format!("snapcall-sealed-{}", std::process::id()));
        let data: Vec<u8> = (0..3 * PAGE_SIZE as usize).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        // Two extents of the file, placed 4 MiB and 6 MiB into the copy.
        let extents = [(0x40_0000, 0, PAGE_SIZE), (0x60_0000, PAGE_SIZE, 2 * PAGE_SIZE)];
        let (copy, huge) = sealed_copy(&file, 8 << 20, &extents, |a| a).unwrap();
        let mut got = vec![0u8; PAGE_SIZE as usize];
        copy.read_exact_at(&mut got, 0x40_0000).unwrap();
        assert_eq!(got, data[..PAGE_SIZE as usize]);
        let mut got = vec![0u8; 2 * PAGE_SIZE as usize];
        copy.read_exact_at(&mut got, 0x60_0000).unwrap();
        assert_eq!(got, data[PAGE_SIZE as usize..]);
        copy.read_exact_at(&mut got[..16], 0x10_0000).unwrap();
        assert!(got[..16].iter().all(|&b| b == 0), "holes read as zeros");
        assert_eq!(copy.write_at(b"x", 0).map_err(|e| e.raw_os_error()), Err(Some(libc::EPERM)), "sealed");
        assert_eq!(copy.set_len(1).map_err(|e| e.raw_os_error()), Err(Some(libc::EPERM)), "sealed");
        let shmem = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap_or_default();
        if shmem.contains("[never]") || shmem.contains("[deny]") {
            assert!(!huge, "no shmem huge pages on this host, yet the copy claims them");
        }
        std::fs::remove_file(path).unwrap();
    }
}
