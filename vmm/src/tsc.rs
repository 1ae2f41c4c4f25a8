//! The host's TSC and the guest's: `rdtsc`, the TSC frequency, and the per-vCPU offset KVM
//! adds, which the vDSO's time page ([`crate::vdso`]) needs to turn a guest TSC into time.
//!
//! How the guest TSC relates to the host's (measured by `tsc_relation_experiment` in
//! `vdso/tests.rs`):
//! KVM defines the guest TSC as `host_tsc * ratio + offset`, where the offset is per vCPU and
//! on VT-x/AMD-V is set so a new vCPU's TSC starts near 0; KVM_GET_MSRS(IA32_TSC) returns the
//! guest value at the instant of the ioctl. On this machine (kvm-pvm, nested, 2 cores):
//! - guest CPL3 `rdtsc` does not exit (1001 back-to-back rdtscs: ≈ 25 ticks, ≈ 10 ns, each);
//! - guest `rdtsc` is the host TSC: the guest's readings lie between the host's readings just
//!   before and after KVM_RUN; KVM_GET_MSRS(IA32_TSC) lies inside its host `rdtsc` bracket
//!   (≈ 13-17 k ticks, 5-6 µs wide) with offset 0, and the vCPU attribute KVM_VCPU_TSC_OFFSET
//!   reads 0: PVM runs the guest's CPL3 code natively on the host TSC;
//! - KVM_GET_TSC_KHZ (2 596 148 kHz) matches the 20 ms calibration to < 1 ppm.
//!
//! So on kvm-pvm `offset = 0`; on VT-x/AMD-V `offset = guest IA32_TSC - host TSC`, per VM.
//! [`TscOffset::measure`] reads the offset KVM keeps (exact) or brackets IA32_TSC with host
//! `rdtsc`s, which is right on both, and [`TimePage::compute`] takes the guest TSC at a host
//! instant, so it is right wherever that pair comes from. Numbers: docs/vdso.md.

use std::sync::OnceLock;
use std::time::Duration;

use crate::vm::VmError;

/// Host `rdtsc`.
pub fn host_tsc() -> u64 {
    // SAFETY: rdtsc has no memory effects; every x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The host clock `clock` now, in ns.
pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local struct.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The guest TSC minus the host TSC: constant for a vCPU's life (KVM's TSC offset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TscOffset(pub i64);

impl TscOffset {
    /// The offset KVM keeps for the vCPU ([`kvm_tsc_offset_attr`], exact) where the kernel
    /// has that attribute, else [`TscOffset::measure_bracket`].
    ///
    /// The bracket reads the guest's IA32_TSC with KVM_GET_MSRS between two host `rdtsc`s (a
    /// second try only when the first bracket is wider than 20 µs). The guest's value was read at some host TSC inside the
    /// bracket, so the offset lies in `[guest - after, guest - before]`; when that interval
    /// holds 0 (kvm-pvm: the guest's CPL3 runs on the host TSC) the offset is 0, else its
    /// midpoint (VT-x/AMD-V: the per-VM offset, ≈ minus the host's TSC at vCPU creation).
    pub fn measure(vcpu: &kvm_ioctls::VcpuFd) -> Result<TscOffset, VmError> {
        if let Some(offset) = kvm_tsc_offset_attr(vcpu) {
            return Ok(TscOffset(offset));
        }
        Ok(Self::measure_bracket(vcpu)?.0)
    }

    /// The KVM_GET_MSRS bracket alone, and its width in ticks.
    pub fn measure_bracket(vcpu: &kvm_ioctls::VcpuFd) -> Result<(TscOffset, u64), VmError> {
        const MSR_IA32_TSC: u32 = 0x10;
        let entry = kvm_bindings::kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() };
        const IOCTL: &str = "KVM_GET_MSRS";
        let mut msrs =
            kvm_bindings::Msrs::from_entries(&[entry]).map_err(|_| VmError::TooManyMsrs { ioctl: IOCTL, count: 1 })?;
        let mut best: Option<(u64, u64, u64)> = None;
        for _ in 0..2 {
            if best.is_some_and(|(b, a, _)| a.wrapping_sub(b) < tsc_hz().max(1_000_000_000) / 50_000) {
                break;
            }
            let before = host_tsc();
            let n = vcpu.get_msrs(&mut msrs).map_err(crate::ioctl::ioctl(IOCTL))?;
            let after = host_tsc();
            if n != 1 {
                return Err(VmError::MsrRefused { ioctl: IOCTL, done: n, asked: 1, refused: MSR_IA32_TSC });
            }
            let guest = msrs.as_slice()[0].data;
            if best.is_none_or(|(b, a, _)| after.wrapping_sub(before) < a.wrapping_sub(b)) {
                best = Some((before, after, guest));
            }
        }
        let (before, after, guest) = best.expect("three reads");
        let (lo, hi) = (guest.wrapping_sub(after) as i64, guest.wrapping_sub(before) as i64);
        let offset = if lo <= 0 && 0 <= hi { 0 } else { lo.wrapping_add(hi.wrapping_sub(lo) / 2) };
        Ok((TscOffset(offset), after.wrapping_sub(before)))
    }
}

/// The vCPU's TSC offset as KVM keeps it (KVM_GET_DEVICE_ATTR, group KVM_VCPU_TSC_CTRL,
/// attribute KVM_VCPU_TSC_OFFSET; Linux ≥ 5.16), or `None` where the attribute is missing.
pub fn kvm_tsc_offset_attr(vcpu: &kvm_ioctls::VcpuFd) -> Option<i64> {
    use std::os::fd::AsRawFd;
    let mut value: u64 = 0;
    let attr = kvm_bindings::kvm_device_attr {
        flags: 0,
        group: kvm_bindings::KVM_VCPU_TSC_CTRL,
        attr: u64::from(kvm_bindings::KVM_VCPU_TSC_OFFSET),
        addr: &mut value as *mut u64 as u64,
    };
    // _IOW(KVMIO, 0xe2, struct kvm_device_attr)
    const KVM_GET_DEVICE_ATTR: libc::c_ulong = 0x4018_aee2;
    // SAFETY: the ioctl reads `attr` and writes 8 bytes to `value`, both live locals.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_DEVICE_ATTR, &attr) };
    (r == 0).then_some(value as i64)
}

/// Measures the TSC frequency against CLOCK_MONOTONIC over `span` (so the guest's clock runs
/// at the rate of the host's NTP-disciplined clocks). ≈ 5 ppm over 20 ms.
pub fn calibrate_tsc_hz(span: Duration) -> u64 {
    let pair = || {
        let mut best = (u64::MAX, 0u64, 0u64);
        for _ in 0..5 {
            let t0 = host_tsc();
            let ns = clock_ns(libc::CLOCK_MONOTONIC);
            let t1 = host_tsc();
            if t1.wrapping_sub(t0) < best.0 {
                best = (t1.wrapping_sub(t0), t0.wrapping_add(t1.wrapping_sub(t0) / 2), ns);
            }
        }
        (best.1, best.2)
    };
    let (tsc0, ns0) = pair();
    std::thread::sleep(span);
    let (tsc1, ns1) = pair();
    let dns = ns1.saturating_sub(ns0).max(1);
    (u128::from(tsc1.wrapping_sub(tsc0)) * 1_000_000_000 / u128::from(dns)) as u64
}

/// The host TSC frequency, calibrated once per process (20 ms, on first use). 0 when the TSC
/// is not invariant (CPUID 0x80000007 EDX bit 8), which makes every page invalid.
pub fn tsc_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        if !invariant_tsc() {
            return 0;
        }
        // KVM_GET_TSC_KHZ agrees with a 20 ms calibration to under 1 ppm here and costs nothing.
        match crate::kvm::system().ok().and_then(|s| s.tsc_khz()) {
            Some(khz) => u64::from(khz) * 1000,
            None => calibrate_tsc_hz(Duration::from_millis(20)),
        }
    })
}

/// Whether the host CPU says its TSC runs at a constant rate in every power state.
pub fn invariant_tsc() -> bool {
    // Leaf 0x80000000 says which extended leaves exist.
    let max = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    max >= 0x8000_0007 && core::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0
}
