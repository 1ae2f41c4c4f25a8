//! Tests of the vDSO: the time math without KVM, and real guests with KVM.
use super::*;
use crate::tsc::*;
use std::time::Duration;

const SEC: u64 = 1_000_000_000;

fn host(clock: PageClock) -> u64 {
    clock_ns(match clock {
        PageClock::Realtime => libc::CLOCK_REALTIME,
        PageClock::Monotonic => libc::CLOCK_MONOTONIC,
    })
}

#[test]
fn region_holds_the_time_page_and_the_image() {
    assert!(VDSO_IMAGE.starts_with(b"\x7fELF"));
    assert!(VDSO_IMAGE.len() as u64 <= VDSO_REGION_SIZE - IMAGE_OFFSET);
    assert!(VDSO_REGION_SIZE.is_multiple_of(PAGE_SIZE));
    assert_eq!(VDSO_REGION_SIZE, 2 * PAGE_SIZE, "the image fits one page today");
    for name in [
        "__vdso_clock_gettime",
        "__vdso_gettimeofday",
        "__vdso_time",
        "__vdso_clock_getres",
        "__vdso_getcpu",
        "clock_gettime",
        "time",
    ] {
        assert!(symbol(name).is_some_and(|o| o < VDSO_IMAGE.len() as u64), "{name} missing");
    }
    assert_eq!(symbol("__vdso_clock_gettime"), symbol("clock_gettime"));
    assert_eq!(symbol("nope"), None);
}

#[test]
fn mult_converts_ticks_to_ns() {
    let at = ClockSample { guest_tsc: 1_000, realtime_ns: 1_700_000_000 * SEC, monotonic_ns: 5 * SEC };
    for hz in [1_000_000_000u64, 2_100_000_000, 2_994_375_000, 3_700_000_000] {
        let p = TimePage::compute(at, hz);
        assert!(p.valid);
        // One hour later, exact to within 2^-41 ns per tick (≤ 10 ns).
        let ticks = hz * 3600;
        let got = p.ns_at(1_000 + ticks, PageClock::Monotonic).unwrap();
        let want = 5 * SEC + 3600 * SEC;
        assert!(got.abs_diff(want) <= 10, "{hz} Hz: {got} vs {want}");
        assert!(u128::from(p.mult) < 1 << 44);
        assert_eq!(p.ns_at(1_000, PageClock::Realtime), Some(1_700_000_000 * SEC));
    }
}

#[test]
fn page_time_stays_within_a_microsecond_of_the_host_over_milliseconds() {
    let hz = tsc_hz();
    if hz == 0 {
        eprintln!("skipped: host TSC is not invariant");
        return;
    }
    let page = TimePage::compute(sample_now(TscOffset(0)), hz);
    let start = std::time::Instant::now();
    let mut worst = 0u64;
    while start.elapsed() < Duration::from_millis(5) {
        for clock in [PageClock::Realtime, PageClock::Monotonic] {
            // The host clock read bracketed by TSC reads; compare at the midpoint.
            let (t0, h, t1) = (host_tsc(), host(clock), host_tsc());
            if t1 - t0 > hz / 1_000_000 {
                continue; // preempted between the reads: this sample says nothing
            }
            let ours = page.ns_at(t0 + (t1 - t0) / 2, clock).unwrap();
            worst = worst.max(ours.abs_diff(h));
        }
    }
    assert!(worst < 1_000, "page time off the host clock by {worst} ns");
}

#[test]
fn invalid_pages_fall_back_to_the_syscall() {
    let at = ClockSample { guest_tsc: 1 << 40, realtime_ns: 1, monotonic_ns: 1 };
    assert_eq!(TimePage::invalid().ns_at(1 << 41, PageClock::Realtime), None);
    assert!(!TimePage::compute(at, 0).valid, "no frequency, no page");
    assert!(!TimePage::compute(at, 1_000).valid, "absurd frequency");
    let p = TimePage::compute(at, 2_000_000_000);
    assert_eq!(p.ns_at((1 << 40) - 1_000, PageClock::Realtime), Some(1), "a hair before the base: the base");
    assert_eq!(p.ns_at((1 << 40) - 4_000_000, PageClock::Realtime), None, "2 ms before the base: another VM's page");
    assert_eq!(p.ns_at(0, PageClock::Realtime), None);
    // A zeroed page (never written) is invalid; so is one of another layout version.
    let (_, zero) = TimePage::from_bytes(&[0; TIME_PAGE_BYTES]);
    assert!(!zero.valid);
    let mut b = p.to_bytes(2);
    assert!(TimePage::from_bytes(&b).1.valid);
    b[offsets::VERSION as usize] = 2;
    assert!(!TimePage::from_bytes(&b).1.valid);
}

#[test]
fn write_to_round_trips_and_leaves_the_seqlock_even_and_advanced() {
    let mut mem = GuestMemory::new(32 << 20).unwrap();
    let addr = GuestAddr::new(crate::layout::USER_START);
    let p = TimePage::compute(ClockSample { guest_tsc: 7, realtime_ns: 8, monotonic_ns: 9 }, 3_000_000_000);
    p.write_to(&mut mem, addr).unwrap();
    assert_eq!(TimePage::read_from(&mem, addr).unwrap(), (2, p));
    p.write_to(&mut mem, addr).unwrap();
    assert_eq!(TimePage::read_from(&mem, addr).unwrap().0, 4);
    // A write that was torn (counter left odd) is recovered by the next one.
    mem.write(addr, &5u32.to_le_bytes()).unwrap();
    p.write_to(&mut mem, addr).unwrap();
    assert_eq!(TimePage::read_from(&mem, addr).unwrap().0, 8);
}

#[test]
fn install_puts_the_image_after_the_page() {
    let mut mem = GuestMemory::new(32 << 20).unwrap();
    let base = GuestAddr::new(16 << 20);
    let p = TimePage::compute(sample_now(TscOffset(0)), 2_000_000_000);
    let ehdr = install(&mut mem, base, &p).unwrap();
    assert_eq!(ehdr, base.raw() + PAGE_SIZE);
    assert_eq!(mem.slice(GuestAddr::new(ehdr), VDSO_IMAGE.len() as u64).unwrap(), VDSO_IMAGE);
    assert_eq!(TimePage::read_from(&mem, base).unwrap().1, p);
    assert!(install(&mut mem, GuestAddr::new((32 << 20) - PAGE_SIZE), &p).is_err(), "past the end");
    assert!(install(&mut mem, GuestAddr::new(base.raw() + 8), &p).is_err(), "unaligned");
}

/// The real vDSO machine code, run on the host: map the region executable, write a page,
/// call the exported functions. On the host the "guest" TSC is the host TSC (offset 0).
struct HostVdso {
    base: *mut u8,
}

impl HostVdso {
    fn map() -> HostVdso {
        // SAFETY: a fresh anonymous mapping; checked for failure.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                VDSO_REGION_SIZE as usize,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: the image fits in the mapping after its first page (checked by a test).
        unsafe { std::ptr::copy_nonoverlapping(VDSO_IMAGE.as_ptr(), base.add(PAGE_SIZE as usize), VDSO_IMAGE.len()) };
        HostVdso { base }
    }
    fn set_page(&self, bytes: &[u8; TIME_PAGE_BYTES]) {
        // SAFETY: the first page of our mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base, bytes.len()) };
    }
    fn func<T: Copy>(&self, name: &str) -> T {
        let off = symbol(name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(std::mem::size_of::<T>(), 8);
        // SAFETY: the address of the exported function inside our executable mapping,
        // reinterpreted as the fn pointer type the caller names (its C signature).
        unsafe { std::mem::transmute_copy(&self.base.add((PAGE_SIZE + off) as usize)) }
    }
    fn clock_gettime(&self, clock: i64) -> (i32, u64) {
        let f: extern "C" fn(i64, *mut libc::timespec) -> i32 = self.func("__vdso_clock_gettime");
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let r = f(clock, &mut ts);
        (r, ts.tv_sec as u64 * SEC + ts.tv_nsec as u64)
    }
}

impl Drop for HostVdso {
    fn drop(&mut self) {
        // SAFETY: our mapping of VDSO_REGION_SIZE bytes.
        unsafe { libc::munmap(self.base.cast(), VDSO_REGION_SIZE as usize) };
    }
}

#[test]
fn the_vdso_code_reads_the_page_and_falls_back_to_the_syscall() {
    let hz = tsc_hz();
    if hz == 0 {
        return;
    }
    let v = HostVdso::map();
    // A page whose realtime is 1000 s off the host's: answers from the page show it.
    let mut at = sample_now(TscOffset(0));
    at.realtime_ns -= 1000 * SEC;
    let page = TimePage::compute(at, hz);
    v.set_page(&page.to_bytes(2));
    let (r, rt) = v.clock_gettime(libc::CLOCK_REALTIME as i64);
    assert_eq!(r, 0);
    let want = host(PageClock::Realtime) - 1000 * SEC;
    assert!(rt.abs_diff(want) < 50_000, "realtime {rt} vs {want}");
    let (r, mono) = v.clock_gettime(libc::CLOCK_MONOTONIC as i64);
    assert_eq!(r, 0);
    assert!(mono.abs_diff(host(PageClock::Monotonic)) < 50_000);
    for coarse in [libc::CLOCK_REALTIME_COARSE, libc::CLOCK_MONOTONIC_RAW, libc::CLOCK_BOOTTIME] {
        assert_eq!(v.clock_gettime(coarse as i64).0, 0);
    }

    let gtod: extern "C" fn(*mut libc::timeval, *mut [i32; 2]) -> i32 = v.func("__vdso_gettimeofday");
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut tz = [7i32, 7];
    assert_eq!(gtod(&mut tv, &mut tz), 0);
    assert_eq!(tz, [0, 0]);
    let us = tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
    assert!(us.abs_diff(want / 1000) < 1_000, "gettimeofday {us}");
    let time: extern "C" fn(*mut i64) -> i64 = v.func("__vdso_time");
    let mut t = 0i64;
    let secs = time(&mut t);
    assert_eq!(secs, t);
    assert!((secs as u64).abs_diff(want / SEC) <= 1);
    let getres: extern "C" fn(i64, *mut libc::timespec) -> i32 = v.func("__vdso_clock_getres");
    let mut res = libc::timespec { tv_sec: 9, tv_nsec: 9 };
    assert_eq!(getres(0, &mut res), 0);
    assert_eq!((res.tv_sec, res.tv_nsec), (0, 1));
    let getcpu: extern "C" fn(*mut u32, *mut u32, *mut u8) -> i32 = v.func("__vdso_getcpu");
    let (mut cpu, mut node) = (9u32, 9u32);
    assert_eq!(getcpu(&mut cpu, &mut node, std::ptr::null_mut()), 0);
    assert_eq!((cpu, node), (0, 0));

    // CPU-time clocks are not on the page: the syscall answers (the host's, here).
    let (r, cpu_ns) = v.clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID as i64);
    assert_eq!(r, 0);
    assert!(cpu_ns < 3600 * SEC);
    // Unknown clocks: the syscall's -EINVAL.
    assert_eq!(v.clock_gettime(12345).0, -libc::EINVAL);

    // Invalid page: the syscall answers with the host's real time (not 1000 s off).
    v.set_page(&TimePage { valid: false, ..page }.to_bytes(4));
    let (r, rt) = v.clock_gettime(libc::CLOCK_REALTIME as i64);
    assert_eq!(r, 0);
    assert!(rt.abs_diff(host(PageClock::Realtime)) < 50_000_000, "fell back to the syscall");
    let mut t = 0i64;
    assert!((time(&mut t) as u64).abs_diff(host(PageClock::Realtime) / SEC) <= 1);
    // Another layout version: syscall too.
    let mut b = page.to_bytes(6);
    b[offsets::VERSION as usize] = 9;
    v.set_page(&b);
    assert!(v.clock_gettime(0).1.abs_diff(host(PageClock::Realtime)) < 50_000_000);
    // A writer that never finishes (odd counter): bounded spinning, then the syscall.
    v.set_page(&page.to_bytes(7));
    assert!(v.clock_gettime(0).1.abs_diff(host(PageClock::Realtime)) < 50_000_000);
    // Even again: the page answers (1000 s off) once more.
    v.set_page(&page.to_bytes(8));
    assert!(v.clock_gettime(0).1.abs_diff(host(PageClock::Realtime) - 1000 * SEC) < 50_000);
}

#[test]
fn the_vdso_reader_retries_while_the_writer_is_mid_update() {
    // A writer thread alternates, under the seqlock and byte by byte, between two pages
    // that tell the same time from different (tsc_base, realtime) pairs 500 s apart. A
    // whole page gives the host's time; a torn one would be ≈ 500 s (or wildly) off.
    let hz = tsc_hz();
    if hz == 0 {
        return;
    }
    let v = HostVdso::map();
    let base = v.base as usize;
    let at = sample_now(TscOffset(0));
    let p0 = TimePage::compute(at, hz);
    let p1 = TimePage::compute(
        // The TSC counts from the host's boot (or the VM's creation), so 500 s of ticks back
        // may be "before zero": the vDSO's arithmetic wraps, and so does this.
        ClockSample { guest_tsc: at.guest_tsc.wrapping_sub(500 * hz), realtime_ns: at.realtime_ns - 500 * SEC, ..at },
        hz,
    );
    v.set_page(&p0.to_bytes(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let seq = base as *mut u32;
            let mut n: u32 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in [p1, p0] {
                    let b = p.to_bytes(0);
                    // SAFETY: the page of a mapping that outlives this thread (joined
                    // below): the seqlock protocol with volatile stores.
                    unsafe {
                        n = n.wrapping_add(1);
                        std::ptr::write_volatile(seq, n);
                        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                        for (i, byte) in b.iter().enumerate().skip(4) {
                            std::ptr::write_volatile((base as *mut u8).add(i), *byte);
                        }
                        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                        n = n.wrapping_add(1);
                        std::ptr::write_volatile(seq, n);
                    }
                }
            }
        })
    };
    let f: extern "C" fn(i64, *mut libc::timespec) -> i32 = v.func("__vdso_clock_gettime");
    let start = std::time::Instant::now();
    let (mut reads, mut bad) = (0u64, Vec::new());
    // Enough reads to overlap many writes, however little CPU a loaded host gives this
    // thread (a time-boxed loop made too few reads on a busy CI host), but never forever.
    while (reads < 2000 || start.elapsed() < Duration::from_millis(50)) && start.elapsed() < Duration::from_secs(20) {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let before = host(PageClock::Realtime);
        let r = f(0, &mut ts);
        let after = host(PageClock::Realtime);
        let got = ts.tv_sec as u64 * SEC + ts.tv_nsec as u64;
        // Either a whole page or the syscall (when the writer was descheduled mid-write
        // for longer than the vDSO spins): between the host's readings around the call,
        // give or take 1 ms, either way.
        if r != 0 || got + 1_000_000 < before || got > after + 1_000_000 {
            bad.push((r, got as i64 - before as i64));
        }
        reads += 1;
    }
    // Stop the writer before anything can panic: it writes into `v`'s mapping.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(bad.is_empty(), "{} of {reads} reads wrong, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);
    assert!(reads >= 2000, "only {reads} reads in 20 s");
}

/// The measurement behind the module docs: run `rdtsc` at CPL3 in a fresh VM and relate
/// it to the host's `rdtsc` and to KVM_GET_MSRS(IA32_TSC). Prints the numbers
/// (`cargo test -p vmm tsc_relation -- --nocapture`) and checks that the offset
/// [`TscOffset::measure`] finds predicts the guest's reading.
#[test]
fn tsc_relation_experiment() {
    use crate::layout::*;
    let Ok(mut vm) = crate::vm::EmptyVm::create(32 << 20) else {
        eprintln!("skipped: no KVM");
        return;
    };
    // rdtsc -> rdi; 1000 more rdtscs; rdtsc -> rsi; ud2 (an exception exit).
    let code: &[u8] = &[
        0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0x48, 0x89,
        0xC7, // rdtsc; shl rdx,32; or rax,rdx; mov rdi,rax
        0xB9, 0xE8, 0x03, 0x00, 0x00, // mov ecx, 1000
        0x0F, 0x31, 0xFF, 0xC9, 0x75, 0xFA, // L: rdtsc; dec ecx; jnz L
        0x0F, 0x31, 0x48, 0xC1, 0xE2, 0x20, 0x48, 0x09, 0xD0, 0x48, 0x89, 0xC6, // ... mov rsi,rax
        0x0F, 0x0B, // ud2
    ];
    vm.machine.memory.write(GuestAddr::new(USER_START), code).unwrap();
    crate::call::write_user_return(&mut vm.machine.memory, USER_START, USER_START + 0x10_0000, 0, 0).unwrap();
    let regs =
        kvm_bindings::kvm_regs { rip: SYSCALL_RETURN_PATH, rsp: KERNEL_STACK_TOP, rflags: 2, ..Default::default() };
    vm.machine.vcpu.set_regs(&regs).unwrap();
    let (offset_before, width) = TscOffset::measure_bracket(&vm.machine.vcpu).unwrap();
    let h0 = host_tsc();
    let exit = format!("{:?}", vm.machine.vcpu.run(&mut vm.machine.memory).map(|e| format!("{e:?}")));
    let h1 = host_tsc();
    let offset_after = TscOffset::measure(&vm.machine.vcpu).unwrap();
    let r = vm.machine.vcpu.get_regs().unwrap();
    let (g0, g1) = (r.rdi, r.rsi);
    let khz = vm.machine.vcpu.get_tsc_khz().ok();
    let hz = tsc_hz();
    eprintln!("flavour {} exit {exit}", crate::kvm::kvm_flavour());
    eprintln!("host tsc around KVM_RUN: {h0} .. {h1} ({} ticks)", h1 - h0);
    eprintln!("guest rdtsc first {g0} last {g1}: {} ticks for 1001 rdtsc", g1.wrapping_sub(g0));
    eprintln!("guest - host: first {} (from h0), last {} (to h1)", g0 as i64 - h0 as i64, g1 as i64 - h1 as i64);
    eprintln!(
        "TscOffset::measure before {offset_before:?} (KVM_GET_MSRS bracket {width} ticks) after {offset_after:?}"
    );
    let t = std::time::Instant::now();
    for _ in 0..100 {
        refresh(&vm.machine.vcpu, &mut vm.machine.memory, GuestAddr::new(USER_START + 0x1000)).unwrap();
    }
    eprintln!("refresh(): {:?} each", t.elapsed() / 100);
    let t = std::time::Instant::now();
    for _ in 0..100 {
        TscOffset::measure_bracket(&vm.machine.vcpu).unwrap();
    }
    eprintln!("TscOffset::measure_bracket (KVM_GET_MSRS): {:?} each", t.elapsed() / 100);
    let t = std::time::Instant::now();
    let mut attr = None;
    for _ in 0..100 {
        attr = kvm_tsc_offset_attr(&vm.machine.vcpu);
    }
    eprintln!("KVM_VCPU_TSC_OFFSET attribute: {attr:?}, {:?} each", t.elapsed() / 100);
    if let Some(a) = attr {
        assert!(a.abs_diff(offset_before.0) <= width, "the attribute and the MSR bracket agree");
    }
    eprintln!("KVM_GET_TSC_KHZ {khz:?}, calibrated {hz} Hz");
    assert!(g1 > g0, "guest TSC runs");
    // The offset KVM_GET_MSRS gave predicts the guest's reading within the KVM_RUN bracket.
    let predicted = |h: u64| h.wrapping_add(offset_before.0 as u64);
    assert!(
        predicted(h0) <= g0 + hz / 100_000 && g1 <= predicted(h1) + hz / 100_000,
        "guest TSC outside the predicted bracket"
    );
    assert!(offset_before.0.abs_diff(offset_after.0) < hz / 100_000, "offset stable to 10 µs");
    if let Some(khz) = khz {
        let ppm = (i128::from(khz) * 1000 - i128::from(hz)).abs() * 1_000_000 / i128::from(hz);
        eprintln!("KVM_GET_TSC_KHZ vs calibration: {ppm} ppm");
    }
}

/// Loads the `clock` test guest cold with the vDSO installed the way the integrator will
/// do it (region reserved in the address space, AT_SYSINFO_EHDR in the auxv, page from
/// [`refresh`]); `page` edits the page before the run. Returns the guest's key=value lines
/// and the clock syscalls it made. `None` when KVM or the bundle is missing.
fn run_clock_guest(bundle: &str, request: &[u8], page: impl FnOnce(&mut TimePage)) -> Option<GuestRun> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-functions").join(bundle);
    let (out, calls, before, after, _) = run_with_vdso(&dir, request, Some(page))?;
    assert_eq!(out.exit_code, 0, "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let kv = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.strip_prefix("0x").map_or_else(|| v.parse().unwrap(), |h| i128::from_str_radix(h, 16).unwrap());
            (k.to_string(), v)
        })
        .collect();
    Some(GuestRun { kv, calls, before, after })
}

/// Runs the bundle at `dir` cold, with the vDSO installed when `page` is given (which
/// may edit the fresh page). Returns the output, the clock syscalls made (numbers), and
/// the host's CLOCK_REALTIME before the start and after the exit. `None` when KVM or the
/// bundle is missing.
fn run_with_vdso(
    dir: &std::path::Path,
    request: &[u8],
    page: Option<impl FnOnce(&mut TimePage)>,
) -> Option<(crate::Output, Vec<u64>, i128, i128, u64)> {
    if !dir.join("config.json").exists() {
        eprintln!("skipped: {} missing (run guest-functions/build.sh)", dir.display());
        return None;
    }
    let function = crate::Function::load(dir, crate::StartMode::Cold).expect("load");
    let Ok(vm) = crate::vm::EmptyVm::create(function.memory_size()) else {
        eprintln!("skipped: no KVM");
        return None;
    };
    let before = host(PageClock::Realtime) as i128;
    let mut ready = function.start_cold(vm).expect("start");
    // The loader installed the vDSO (AT_SYSINFO_EHDR) with a fresh page; tests edit that
    // page, or invalidate it to measure the syscall path.
    let mem = &mut ready.vm.memory;
    let base = GuestAddr::new(base_for(mem.size()));
    match page {
        Some(edit) => {
            let mut p = refresh(&ready.vm.vcpu, mem, base).unwrap();
            edit(&mut p);
            p.write_to(mem, base).unwrap();
        }
        None => TimePage::invalid().write_to(mem, base).unwrap(),
    }
    let clock_calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = clock_calls.clone();
    ready.trace_syscalls(Box::new(move |r| {
        if matches!(r.nr, 96 | 201 | 228 | 229) {
            seen.lock().unwrap().push(r.nr);
        }
    }));
    ready.set_stdin(request);
    let finished = ready.run();
    let exits = finished.stats().exits;
    let out = finished.into_parts().0.expect("the guest runs");
    let calls = clock_calls.lock().unwrap().clone();
    Some((out, calls, before, host(PageClock::Realtime) as i128, exits))
}

#[test]
fn cpython_reads_the_clock_through_the_vdso() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/functions/hellowithdata-py");
    let body = br#"{"data": {"k": [1, 2, 3]}}"#;
    let t = std::time::Instant::now();
    let Some((without, calls_without, _, _, exits_without)) = run_with_vdso(&dir, body, None::<fn(&mut TimePage)>)
    else {
        return;
    };
    let t_without = t.elapsed();
    let t = std::time::Instant::now();
    let Some((with, calls_with, _, _, exits_with)) = run_with_vdso(&dir, body, Some(|_: &mut TimePage| {})) else {
        return;
    };
    let t_with = t.elapsed();
    eprintln!("hellowithdata-py cold: {exits_without} exits in {t_without:?} without the vDSO, {exits_with} exits in {t_with:?} with it");
    assert_eq!(without.exit_code, 0, "{}", String::from_utf8_lossy(&without.stderr));
    assert_eq!(with.stdout, without.stdout, "same answer with the vDSO");
    eprintln!(
        "hellowithdata-py cold start + one request: {} clock syscalls without the vDSO, {} with ({:?})",
        calls_without.len(),
        calls_with.len(),
        calls_with
    );
    assert!(calls_with.iter().all(|&nr| nr == 229), "only clock_getres may still exit: {calls_with:?}");
}

/// What the clock guest printed, the clock syscalls it made, and the host's
/// CLOCK_REALTIME just before its VM was started and just after it exited.
struct GuestRun {
    kv: Vec<(String, i128)>,
    calls: Vec<u64>,
    before: i128,
    after: i128,
}

impl GuestRun {
    fn get(&self, key: &str) -> i128 {
        self.kv.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{key} missing in {:?}", self.kv)).1
    }
    /// Whether the guest's `key`, in `unit` ns, lies within the run, give or take 5 ms.
    fn during_run(&self, key: &str, unit: i128) -> bool {
        let v = self.get(key) * unit;
        let margin = 5_000_000i128.max(unit);
        self.before - margin <= v && v <= self.after + margin
    }
}

#[test]
fn a_real_guest_reads_the_clock_without_exiting() {
    for bundle in ["clock", "clock-musl"] {
        let Some(run) = run_clock_guest(bundle, b"loops=1000", |_| {}) else { continue };
        assert_ne!(run.get("vdso"), 0, "{bundle}: AT_SYSINFO_EHDR seen");
        assert!(run.during_run("realtime_ns", 1), "{bundle}: realtime {:?} vs {}..{}", run.kv, run.before, run.after);
        assert!(run.during_run("gettimeofday_us", 1_000), "{bundle}: gettimeofday");
        assert!(run.during_run("time", 1_000_000_000), "{bundle}: time");
        let mono = i128::from(host(PageClock::Monotonic));
        assert!((mono - run.get("monotonic_ns")).abs() < 1_000_000_000, "{bundle}: monotonic");
        assert_eq!(run.get("monotonic_ok"), 1);
        // musl's time() and gettimeofday() go through clock_gettime; glibc's use their own
        // vDSO entries; clock_getres is answered by the vDSO in glibc, by a syscall in musl.
        let allowed: &[u64] = if bundle == "clock-musl" { &[229] } else { &[] };
        assert!(run.calls.iter().all(|nr| allowed.contains(nr)), "{bundle}: clock syscalls {:?}", run.calls);
        eprintln!(
            "{bundle}: 1000 clock_gettime in the guest took {} ns, clock syscalls {:?}",
            run.get("loop_ns"),
            run.calls
        );
    }
}

#[test]
fn a_real_guest_with_an_invalid_page_gets_the_time_from_syscalls() {
    for bundle in ["clock", "clock-musl"] {
        let Some(run) = run_clock_guest(bundle, b"loops=200", |p| p.valid = false) else { continue };
        assert!(run.during_run("realtime_ns", 1), "{bundle}: realtime");
        assert!(run.during_run("time", 1_000_000_000), "{bundle}: time");
        assert!(
            run.calls.iter().filter(|&&nr| nr == 228).count() >= 200,
            "{bundle}: clock_gettime went to the monitor: {:?}",
            run.calls
        );
        eprintln!("{bundle}, invalid page: 200 clock_gettime syscalls took {} ns", run.get("loop_ns"));
    }
}

#[test]
fn a_page_computed_for_another_vm_is_refused_or_right() {
    // A stale page: computed 300 ms "earlier" (the base is 300 ms of ticks back and the
    // clocks 300 ms back) gives the right time when the TSC relation held (kvm-pvm:
    // offset 0), because time is linear in the TSC. A page whose TSC base is far in this
    // guest's future (another VM's offset) is refused and the syscall answers.
    let hz = tsc_hz();
    if hz == 0 {
        return;
    }
    let Some(run) = run_clock_guest("clock", b"", |p| {
        p.tsc_base = p.tsc_base.wrapping_sub(hz * 3 / 10);
        p.realtime_ns -= 300_000_000;
        p.monotonic_ns -= 300_000_000;
    }) else {
        return;
    };
    assert!(run.during_run("realtime_ns", 1), "stale but consistent page");
    let Some(run) = run_clock_guest("clock", b"", |p| {
        p.tsc_base += hz * 60;
        p.realtime_ns -= 3600 * 1_000_000_000;
    }) else {
        return;
    };
    assert!(run.during_run("realtime_ns", 1), "future base: syscall");
    assert!(run.calls.contains(&228));
}

#[test]
fn vdso_blob_matches_its_source() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let recorded = std::fs::read_to_string(root.join("vmm/src/vdso/TOOLCHAIN")).unwrap();
    let version = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
    };
    let (Some(gcc), Some(ld)) = (version("gcc"), version("ld")) else {
        eprintln!("skipped: no gcc/ld to rebuild the vDSO with");
        return;
    };
    let out = std::env::temp_dir().join(format!("snapcall-vdso-{}.so", std::process::id()));
    let status = std::process::Command::new(root.join("guest-functions/vdso/build.sh")).arg(&out).status().unwrap();
    assert!(status.success(), "guest-functions/vdso/build.sh failed");
    let rebuilt = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    let this = format!("{gcc}\n{ld}\n");
    if this != recorded {
        eprintln!("skipped the byte comparison: toolchain is\n{this}but the blob was built with\n{recorded}");
        return;
    }
    assert!(
        rebuilt == VDSO_IMAGE,
        "vmm/src/vdso/vdso.so is stale: run guest-functions/vdso/build.sh and commit the result"
    );
}
