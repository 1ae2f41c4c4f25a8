//! The guest vDSO: `clock_gettime`, `gettimeofday`, `time`, `clock_getres` and `getcpu` run at
//! CPL3 from a *time page* the monitor writes, so reading the clock never exits the VM (an exit
//! costs ≈26-60 µs on kvm-pvm; CPython reads the clock 13-16 times per request).
//!
//! The image ([`VDSO_IMAGE`]) is built from `guest-functions/vdso/` by its `build.sh` and
//! committed as `vmm/src/vdso/vdso.so`; a test rebuilds it and compares the bytes. It exports
//! `__vdso_clock_gettime`, `__vdso_gettimeofday`, `__vdso_time`, `__vdso_clock_getres`,
//! `__vdso_getcpu` (and the unprefixed aliases) under version `LINUX_2.6`, as Linux's x86-64
//! vDSO does, which is what static glibc and musl look up through `AT_SYSINFO_EHDR`.
//!
//! ## Guest layout ([`install`])
//! ```text
//! base            time page (TimePage, written by the monitor; read-only use by the guest)
//! base + 4096     vDSO ELF image, as is (linked at 0, file offset == vaddr, no relocations)
//! ```
//! The vDSO finds the time page RIP-relatively at `-4096` from its own start (like Linux's
//! vvar), so `base` may be any page-aligned user address.
//!
//! ## Time
//! `ns = base_ns + ((guest_tsc - tsc_base) * mult) >> shift`, with `realtime_ns` and
//! `monotonic_ns` the host's `CLOCK_REALTIME` / `CLOCK_MONOTONIC` at the instant the guest TSC
//! read `tsc_base`. The page must be rewritten whenever the guest's TSC relation to the host
//! changes: at every cold start and every restore (a snapshot's page is from another VM and
//! another time). [`refresh`] does it in one call from a vCPU.
//!
//! ## The guest's TSC
//! Which TSC the page's `tsc_base` is on, and how fast it ticks, is [`crate::tsc`]'s business:
//! [`TimePage::compute`] takes the guest TSC at a host instant, so it is right wherever that
//! pair comes from. Numbers: docs/vdso.md.

use crate::layout::{GuestAddr, PAGE_SIZE, STACK_RESERVE};
use crate::memory::{GuestMemory, MemoryError};
use crate::tsc::{clock_ns, host_tsc, tsc_hz, TscOffset};

/// The vDSO ELF image (built by `guest-functions/vdso/build.sh`).
pub const VDSO_IMAGE: &[u8] = include_bytes!("vdso/vdso.so");

/// Bytes of guest memory [`install`] uses: the time page, then the image rounded up to pages.
pub const VDSO_REGION_SIZE: u64 = PAGE_SIZE + (VDSO_IMAGE.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;

/// Where the vDSO region (time page, then the image) sits: just below the stack, at an
/// address fixed by the memory size, so a restore finds it where the snapshot left it.
pub fn base_for(memory_size: u64) -> u64 {
    memory_size - STACK_RESERVE - VDSO_REGION_SIZE
}

/// Offset of the vDSO image (the `AT_SYSINFO_EHDR` value) from the region's base.
pub const IMAGE_OFFSET: u64 = PAGE_SIZE;

/// Bytes of the time page the vDSO reads (the rest of the page stays zero).
pub const TIME_PAGE_BYTES: usize = 56;

/// Layout version in the page; the vDSO takes the syscall for any other.
pub const TIME_PAGE_VERSION: u32 = 1;

/// `flags` bit: the page may be used.
pub const TP_VALID: u32 = 1;

/// Fixed-point shift of `mult`: 40 bits of fraction make the rounding error at most
/// 2^-41 ns per tick (≈ 5 ns per hour at 3 GHz), and `mult` stays below 2^44 for any TSC of
/// 100 MHz or more, so `delta * mult` (a 128-bit product in the vDSO) cannot overflow.
pub const MULT_SHIFT: u32 = 40;

/// Offsets of the time page's fields (little-endian). `struct time_page` in vdso.c.
pub mod offsets {
    pub const SEQ: u64 = 0;
    pub const FLAGS: u64 = 4;
    pub const TSC_BASE: u64 = 8;
    pub const MULT: u64 = 16;
    pub const SHIFT: u64 = 24;
    pub const VERSION: u64 = 28;
    pub const REALTIME_NS: u64 = 32;
    pub const MONOTONIC_NS: u64 = 40;
    pub const TSC_HZ: u64 = 48;
}

/// The host's clocks and the guest's TSC at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// What `rdtsc` in the guest would have returned at that instant.
    pub guest_tsc: u64,
    /// Host CLOCK_REALTIME, ns since the epoch.
    pub realtime_ns: u64,
    /// Host CLOCK_MONOTONIC, ns.
    pub monotonic_ns: u64,
}

/// Which clock the page answers (the vDSO's mapping of clock ids; the tests' oracle).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageClock {
    /// CLOCK_REALTIME, CLOCK_REALTIME_COARSE.
    Realtime,
    /// CLOCK_MONOTONIC, _RAW, _COARSE, CLOCK_BOOTTIME.
    Monotonic,
}

/// The content of the time page (everything but the seqlock counter, which [`TimePage::write_to`]
/// manages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimePage {
    /// When false the vDSO answers every call with the real syscall.
    pub valid: bool,
    pub tsc_base: u64,
    /// ns per TSC tick << `shift`.
    pub mult: u64,
    pub shift: u32,
    pub realtime_ns: u64,
    pub monotonic_ns: u64,
    pub tsc_hz: u64,
}

impl TimePage {
    /// A page that sends every clock read to the syscall (what a zeroed page also means).
    pub fn invalid() -> TimePage {
        TimePage::default()
    }

    /// The page for a guest whose TSC read `at.guest_tsc` when the host clocks read
    /// `at.realtime_ns` / `at.monotonic_ns`, ticking at `tsc_hz`. A frequency outside
    /// 100 MHz..100 GHz gives an invalid page (the vDSO then takes the syscall).
    pub fn compute(at: ClockSample, tsc_hz: u64) -> TimePage {
        if !(100_000_000..=100_000_000_000).contains(&tsc_hz) {
            return TimePage::invalid();
        }
        let mult = ((1_000_000_000u128 << MULT_SHIFT) + u128::from(tsc_hz) / 2) / u128::from(tsc_hz);
        TimePage {
            valid: true,
            tsc_base: at.guest_tsc,
            mult: mult as u64,
            shift: MULT_SHIFT,
            realtime_ns: at.realtime_ns,
            monotonic_ns: at.monotonic_ns,
            tsc_hz,
        }
    }

    /// What the vDSO computes for `clock` when the guest TSC reads `guest_tsc` (the same
    /// arithmetic as vdso.c); `None` where the vDSO would take the syscall: page not valid, or
    /// the TSC more than `tsc_hz / 1024` ticks (≈ 1 ms) before `tsc_base`, which means the
    /// page was computed for another VM's TSC. Within that margin the answer is the base.
    #[cfg(test)]
    pub fn ns_at(&self, guest_tsc: u64, clock: PageClock) -> Option<u64> {
        if !self.valid || self.shift > 63 {
            return None;
        }
        let mut delta = guest_tsc.wrapping_sub(self.tsc_base) as i64;
        if delta < 0 {
            // Slightly before the base (≈ 1 ms): the base; further: not this VM's page.
            if delta.unsigned_abs() > self.tsc_hz >> 10 {
                return None;
            }
            delta = 0;
        }
        let base = match clock {
            PageClock::Realtime => self.realtime_ns,
            PageClock::Monotonic => self.monotonic_ns,
        };
        let ns = base.wrapping_add(((delta as u128 * u128::from(self.mult)) >> self.shift) as u64);
        (ns as i64 >= 0).then_some(ns)
    }

    /// The page's bytes with seqlock counter `seq`.
    pub fn to_bytes(self, seq: u32) -> [u8; TIME_PAGE_BYTES] {
        let mut b = [0u8; TIME_PAGE_BYTES];
        let mut put = |off: u64, v: &[u8]| b[off as usize..off as usize + v.len()].copy_from_slice(v);
        put(offsets::SEQ, &seq.to_le_bytes());
        put(offsets::FLAGS, &(if self.valid { TP_VALID } else { 0 }).to_le_bytes());
        put(offsets::TSC_BASE, &self.tsc_base.to_le_bytes());
        put(offsets::MULT, &self.mult.to_le_bytes());
        put(offsets::SHIFT, &self.shift.to_le_bytes());
        put(offsets::VERSION, &TIME_PAGE_VERSION.to_le_bytes());
        put(offsets::REALTIME_NS, &self.realtime_ns.to_le_bytes());
        put(offsets::MONOTONIC_NS, &self.monotonic_ns.to_le_bytes());
        put(offsets::TSC_HZ, &self.tsc_hz.to_le_bytes());
        b
    }

    /// Parses a page (seqlock counter, content). A page whose flags or version the vDSO would
    /// refuse comes back with `valid == false`.
    #[cfg(test)]
    pub fn from_bytes(b: &[u8; TIME_PAGE_BYTES]) -> (u32, TimePage) {
        let u32_at = |off: u64| u32::from_le_bytes(b[off as usize..off as usize + 4].try_into().unwrap_or_default());
        let u64_at = |off: u64| u64::from_le_bytes(b[off as usize..off as usize + 8].try_into().unwrap_or_default());
        let page = TimePage {
            valid: u32_at(offsets::FLAGS) == TP_VALID && u32_at(offsets::VERSION) == TIME_PAGE_VERSION,
            tsc_base: u64_at(offsets::TSC_BASE),
            mult: u64_at(offsets::MULT),
            shift: u32_at(offsets::SHIFT),
            realtime_ns: u64_at(offsets::REALTIME_NS),
            monotonic_ns: u64_at(offsets::MONOTONIC_NS),
            tsc_hz: u64_at(offsets::TSC_HZ),
        };
        (u32_at(offsets::SEQ), page)
    }

    /// Reads the page at `addr`.
    #[cfg(test)]
    pub fn read_from(mem: &GuestMemory, addr: GuestAddr) -> Result<(u32, TimePage), MemoryError> {
        let mut b = [0u8; TIME_PAGE_BYTES];
        b.copy_from_slice(mem.slice(addr, TIME_PAGE_BYTES as u64)?);
        Ok(TimePage::from_bytes(&b))
    }

    /// Writes the page at `addr` (page-aligned) under its seqlock: the counter goes odd, the
    /// content is written, the counter goes even again. `&mut GuestMemory` already means the
    /// vCPU is not running; the protocol keeps a reader right if a writer ever runs beside it.
    pub fn write_to(&self, mem: &mut GuestMemory, addr: GuestAddr) -> Result<(), MemoryError> {
        let seq_addr = GuestAddr::new(addr.raw() + offsets::SEQ);
        let old = u32::from_le_bytes(mem.slice(seq_addr, 4)?.try_into().unwrap_or_default());
        let odd = old.wrapping_add(1) | 1;
        mem.write(seq_addr, &odd.to_le_bytes())?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        let bytes = self.to_bytes(0);
        mem.write(GuestAddr::new(addr.raw() + 4), &bytes[4..])?;
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        mem.write(seq_addr, &odd.wrapping_add(1).to_le_bytes())
    }
}

/// Writes the time page at `base` and the vDSO image at `base + 4096` (the region of
/// [`VDSO_REGION_SIZE`] bytes must be page-aligned user memory that nothing else uses, and
/// readable + executable for the program), and returns the image's address: the value of
/// `AT_SYSINFO_EHDR` for the auxv. A region that is not page-aligned or does not fit in guest
/// memory is [`MemoryError::OutOfRange`], and nothing is written.
///
/// The integrator's part (see docs/vdso.md): reserve the region in the address space so mmap
/// never hands it out, put `(AT_SYSINFO_EHDR, returned value)` in the auxv at cold start, and
/// call [`refresh`] (or `page.write_to(mem, base)`) at every cold start *and every restore*.
pub fn install(mem: &mut GuestMemory, base: GuestAddr, page: &TimePage) -> Result<u64, MemoryError> {
    if !base.raw().is_multiple_of(PAGE_SIZE) {
        return Err(MemoryError::OutOfRange { addr: base, len: VDSO_REGION_SIZE, size: mem.size() });
    }
    // Bounds-check the whole region first so a failure writes nothing.
    mem.slice(base, VDSO_REGION_SIZE)?;
    let image = GuestAddr::new(base.raw() + IMAGE_OFFSET);
    mem.write(image, VDSO_IMAGE)?;
    let tail = VDSO_REGION_SIZE - IMAGE_OFFSET - VDSO_IMAGE.len() as u64;
    mem.slice_mut(GuestAddr::new(image.raw() + VDSO_IMAGE.len() as u64), tail)?.fill(0);
    mem.slice_mut(base, PAGE_SIZE)?.fill(0);
    page.write_to(mem, base)?;
    Ok(image.raw())
}

/// Host clocks and host TSC now, turned into a [`ClockSample`] for a guest whose TSC is the
/// host's plus `offset`. Best of three, so the clocks are read within ≈ 100 ns of the TSC.
pub fn sample_now(offset: TscOffset) -> ClockSample {
    let mut best: Option<(u64, ClockSample)> = None;
    for _ in 0..3 {
        let t0 = host_tsc();
        let realtime_ns = clock_ns(libc::CLOCK_REALTIME);
        let monotonic_ns = clock_ns(libc::CLOCK_MONOTONIC);
        let t1 = host_tsc();
        let width = t1.wrapping_sub(t0);
        let mid = t0.wrapping_add(width / 2);
        let s = ClockSample { guest_tsc: mid.wrapping_add(offset.0 as u64), realtime_ns, monotonic_ns };
        if best.is_none_or(|(w, _)| width < w) {
            best = Some((width, s));
        }
    }
    best.map(|(_, s)| s).expect("three samples")
}

/// Writes a fresh time page for `vcpu`'s guest at `base`, measuring the TSC offset first (the
/// tests' reference for [`refresh_with_offset`]). ≈ 5 µs on kvm-pvm, nearly all of it the one vCPU ioctl of [`TscOffset::measure`];
/// [`refresh_with_offset`] skips it.
#[cfg(test)]
pub fn refresh(
    vcpu: &kvm_ioctls::VcpuFd,
    mem: &mut GuestMemory,
    base: GuestAddr,
) -> Result<TimePage, crate::vm::VmError> {
    let offset = TscOffset::measure(vcpu)?;
    let page = TimePage::compute(sample_now(offset), tsc_hz());
    page.write_to(mem, base)?;
    Ok(page)
}

/// [`refresh`] with an offset measured earlier: the offset is constant for a vCPU's life
/// (stable host TSC), so the pool can measure it when it creates the VM, off the call path,
/// and a restore then costs only host clock reads and the page write (< 1 µs).
pub fn refresh_with_offset(offset: TscOffset, mem: &mut GuestMemory, base: GuestAddr) -> Result<TimePage, MemoryError> {
    let page = TimePage::compute(sample_now(offset), tsc_hz());
    page.write_to(mem, base)?;
    Ok(page)
}

/// Offset in [`VDSO_IMAGE`] of the dynamic symbol `name` (version `LINUX_2.6` is the only one
/// the image defines), found through PT_DYNAMIC like a dynamic linker would (the tests call
/// the image's functions through it).
#[cfg(test)]
pub fn symbol(name: &str) -> Option<u64> {
    let img = VDSO_IMAGE;
    let u16_at = |o: usize| Some(u16::from_le_bytes(img.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(img.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(img.get(o..o + 8)?.try_into().ok()?));
    let phoff = u64_at(32)? as usize;
    let phnum = u16_at(56)? as usize;
    let dynamic = (0..phnum).map(|i| phoff + i * 56).find(|&ph| u32_at(ph) == Some(2))?;
    let (dyn_off, dyn_size) = (u64_at(dynamic + 8)? as usize, u64_at(dynamic + 32)? as usize);
    let (mut symtab, mut strtab, mut hash) = (None, None, None);
    for d in (dyn_off..dyn_off + dyn_size).step_by(16) {
        match u64_at(d)? {
            4 => hash = u64_at(d + 8),
            5 => strtab = u64_at(d + 8),
            6 => symtab = u64_at(d + 8),
            _ => {}
        }
    }
    let (symtab, strtab) = (symtab? as usize, strtab? as usize);
    let nsyms = u32_at(hash? as usize + 4)? as usize;
    (0..nsyms).map(|i| symtab + i * 24).find_map(|sym| {
        let name_off = strtab + u32_at(sym)? as usize;
        let end = name_off + img.get(name_off..)?.iter().position(|&b| b == 0)?;
        (&img[name_off..end] == name.as_bytes()).then(|| u64_at(sym + 8)).flatten()
    })
}

#[cfg(test)]
mod tests;
