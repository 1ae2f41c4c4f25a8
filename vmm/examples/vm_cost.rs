//! What a brand-new VM costs on this host, step by step, with and without one idle VM kept
//! alive beside it (KVM does machine-wide work when its first VM appears and its last one
//! goes), in alternating rounds so that both sides see the same host:
//!
//! ```text
//! cargo run --release -p vmm --features probe --example vm_cost -- [ROUNDS] [MEMORY_MIB]
//! ```

use std::time::{Duration, Instant};

use vmm::probe::{create_steps, vcpu_ioctl_prices};
use vmm::EmptyVm;

fn median(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(200);
    let mib: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let size = mib << 20;
    for round in 0..4 {
        let keep_alive = round % 2 == 1;
        let idle = if keep_alive { Some(EmptyVm::create(size)?) } else { None };
        let (mut create, mut destroy) = (Vec::new(), Vec::new());
        let (mut create_vm, mut memory, mut vcpu, mut cpuid, mut teardown) = (vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            let t0 = Instant::now();
            let vm = EmptyVm::create(size)?;
            let t1 = Instant::now();
            drop(vm);
            destroy.push(t1.elapsed());
            create.push(t1 - t0);
            let s = create_steps(size)?;
            create_vm.push(s.create_vm);
            memory.push(s.set_memory);
            vcpu.push(s.create_vcpu);
            cpuid.push(s.set_cpuid);
            teardown.push(s.destroy);
        }
        println!(
            "{} idle VM alive: EmptyVm::create {:.0} µs, drop {:.0} µs | steps: KVM_CREATE_VM {:.0}, memory slot {:.0}, \
             KVM_CREATE_VCPU {:.0}, KVM_SET_CPUID2 {:.0}, teardown {:.0} µs (medians of {rounds})",
            if keep_alive { "with an" } else { "no    " },
            median(&mut create),
            median(&mut destroy),
            median(&mut create_vm),
            median(&mut memory),
            median(&mut vcpu),
            median(&mut cpuid),
            median(&mut teardown),
        );
        drop(idle);
    }
    let p = vcpu_ioctl_prices(size, rounds)?;
    println!(
        "vCPU ioctls on a warm vCPU: KVM_RUN immediate exit {:.0} µs ({:.0} with registers staged), KVM_SET_REGS {:.0}, \
         KVM_SET_XSAVE {:.0}, KVM_SET_MSRS {:.0} µs (medians of {rounds})",
        p.immediate_run.as_secs_f64() * 1e6,
        p.immediate_run_staged.as_secs_f64() * 1e6,
        p.set_regs.as_secs_f64() * 1e6,
        p.set_xsave.as_secs_f64() * 1e6,
        p.set_msrs.as_secs_f64() * 1e6,
    );
    Ok(())
}
