//! The process-wide `/dev/kvm` handle and the facts read from it once: the CPUID to give
//! guests, the XCR0 to enable, and HWCAP for the auxv.
//!
//! It also keeps one idle VM with one vCPU open for the life of the process. Measured on
//! kvm-pvm: with it, creating a vCPU drops from ≈215 µs to ≈35 µs and destroying a VM from
//! ≈480 µs to ≈210 µs, because the kernel patches code when the first VM appears and the last
//! one goes away. It costs nothing on real VT-x/AMD-V.

use std::sync::OnceLock;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use crate::ioctl::{ioctl, IoctlError};

/// Why `/dev/kvm` could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvmError {
    /// Opening `/dev/kvm` failed (no KVM module, or no permission).
    #[error("cannot open /dev/kvm (is KVM enabled, and may this user use it?): {0}")]
    Open(#[source] kvm_ioctls::Error),
    /// The kernel's KVM lacks a capability every VM needs.
    #[error("KVM lacks a capability snapcall needs: {0}")]
    MissingCapability(&'static str),
    /// Reading the host's facts (CPUID) or opening the keep-alive VM failed.
    #[error(transparent)]
    Ioctl(#[from] IoctlError),
}

/// The opened `/dev/kvm` plus what every VM is configured from.
pub struct KvmSystem {
    pub kvm: Kvm,
    /// KVM_GET_SUPPORTED_CPUID: the guest sees the host CPU's features KVM can virtualise,
    /// so glibc's ifunc selection picks the same string functions as on the host.
    pub cpuid: CpuId,
    /// XCR0 for guests: x87, SSE and, when supported, AVX and AVX-512 state.
    pub xcr0: u64,
    /// CPUID.1:EDX, which Linux reports as AT_HWCAP.
    pub hwcap: u64,
    /// The guests' TSC frequency (KVM_GET_TSC_KHZ, a vCPU ioctl), for the vDSO's time page:
    /// read from the first vCPU the process makes ([`Self::note_tsc_khz`]), or from a
    /// throwaway one if it is asked for before any VM exists. (It used to come from a VM and
    /// vCPU made for the purpose and kept for the process's life: one VM more to create and
    /// destroy in every one-shot `snapcall run`.)
    tsc_khz: OnceLock<Option<u32>>,
    /// The CPL0 special registers every new vCPU gets (`vm.rs`), made from the first vCPU's.
    cpl0_sregs: OnceLock<kvm_bindings::kvm_sregs>,
}

static SYSTEM: OnceLock<Result<KvmSystem, KvmError>> = OnceLock::new();

/// The process-wide KVM handle, opened on first use.
pub fn system() -> Result<&'static KvmSystem, KvmError> {
    SYSTEM.get_or_init(KvmSystem::open).as_ref().map_err(Clone::clone)
}

impl KvmSystem {
    fn open() -> Result<KvmSystem, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::Xsave, "KVM_CAP_XSAVE"),
            (Cap::Xcrs, "KVM_CAP_XCRS"),
            (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
            (Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCapability(name));
            }
        }
        let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(ioctl("KVM_GET_SUPPORTED_CPUID"))?;
        let leaf = |function: u32, index: u32| {
            cpuid.as_slice().iter().find(|e| e.function == function && e.index == index).copied()
        };
        let supported_xcr0 = leaf(0xD, 0).map(|e| u64::from(e.eax) | (u64::from(e.edx) << 32)).unwrap_or(0x3);
        let mut xcr0 = 0x3 | (supported_xcr0 & 0x4);
        if supported_xcr0 & 0xE0 == 0xE0 && xcr0 & 0x4 != 0 {
            xcr0 |= 0xE0;
        }
        let hwcap = leaf(1, 0).map(|e| u64::from(e.edx)).unwrap_or(0);
        Ok(KvmSystem { kvm, cpuid, xcr0, hwcap, tsc_khz: OnceLock::new(), cpl0_sregs: OnceLock::new() })
    }

    /// Records the guests' TSC frequency from `vcpu` if nothing has yet (one ioctl, once).
    pub(crate) fn note_tsc_khz(&self, vcpu: &VcpuFd) {
        self.tsc_khz.get_or_init(|| vcpu.get_tsc_khz().ok().filter(|&k| k > 0));
    }

    /// The CPL0 special registers of a new vCPU: made by `make` (from the first vCPU's own,
    /// one KVM_GET_SREGS) once per process, then the same for every VM.
    pub(crate) fn cpl0_sregs<E>(
        &self,
        make: impl FnOnce() -> Result<kvm_bindings::kvm_sregs, E>,
    ) -> Result<kvm_bindings::kvm_sregs, E> {
        if let Some(sregs) = self.cpl0_sregs.get() {
            return Ok(*sregs);
        }
        let sregs = make()?;
        // Two threads may both have made them; they are equal.
        Ok(*self.cpl0_sregs.get_or_init(|| sregs))
    }

    /// The guests' TSC frequency in kHz, if KVM reports one.
    pub fn tsc_khz(&self) -> Option<u32> {
        *self.tsc_khz.get_or_init(|| {
            let vm = self.kvm.create_vm().ok()?;
            let vcpu = vm.create_vcpu(0).ok()?;
            vcpu.get_tsc_khz().ok().filter(|&k| k > 0)
        })
    }
}

/// Which KVM module serves /dev/kvm, read from /sys/module.
pub fn kvm_flavour() -> &'static str {
    let loaded = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    if loaded("kvm_pvm") {
        "kvm-pvm"
    } else if loaded("kvm_intel") {
        "vt-x"
    } else if loaded("kvm_amd") {
        "amd-v"
    } else {
        "unknown"
    }
}

/// Whether KVM maps guest memory through shadow page tables (kvm-pvm always; VT-x without
/// EPT, AMD-V without NPT) rather than two-dimensional paging. Under shadow paging a guest
/// fault also maps its neighbours where it can (`working_set::prefetch_groups`); TDP maps
/// one fault's page (or huge page) only. Read once from the modules' parameters.
pub(crate) fn shadow_paging() -> bool {
    static SHADOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHADOW.get_or_init(|| {
        let param = |path: &str| std::fs::read_to_string(path).map(|v| v.trim().to_owned()).unwrap_or_default();
        match kvm_flavour() {
            "kvm-pvm" => true,
            "vt-x" => matches!(param("/sys/module/kvm_intel/parameters/ept").as_str(), "N" | "0"),
            "amd-v" => matches!(param("/sys/module/kvm_amd/parameters/npt").as_str(), "N" | "0"),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The TSC frequency is the same whether the first VM the process makes reports it or,
    /// asked for before any VM exists, a throwaway vCPU does.
    #[test]
    fn the_tsc_frequency_comes_from_the_first_vcpu_or_a_throwaway_one() {
        let asked_first = KvmSystem::open().unwrap();
        let from_throwaway = asked_first.tsc_khz();
        let noted = KvmSystem::open().unwrap();
        let vm = noted.kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        noted.note_tsc_khz(&vcpu);
        assert_eq!(noted.tsc_khz(), from_throwaway);
        assert_eq!(noted.tsc_khz(), vcpu.get_tsc_khz().ok().filter(|&k| k > 0));
    }
}
