//! Calls one function N times through the pool, the way the server does, and prints the
//! median of each phase. Handy under `perf record` (docs/profiling.md):
//!
//! ```text
//! cargo run --release -p vmm --example call_loop -- target/functions/echo-c 1000 'hello'
//! ```
//!
//! With `SNAPCALL_PACED=1` it waits for the pool to be full before each call, so every call
//! gets a VM restored ahead (the pool's best case) instead of racing the pool's refill.
//! With `SNAPCALL_RECYCLE=1` it runs the recycled-VM-shell experiment (`RuntimeConfig::
//! recycle_vm_shells`; never the default), to compare against fresh VMs in the same run.
//! With `SNAPCALL_NO_MEMORY_REUSE=1` every VM gets new memory (`RuntimeConfig::reuse_memory`
//! off), to compare against the default.

use std::time::{Duration, Instant};

use vmm::{Function, Runtime, RuntimeConfig, StartMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bundle = args.next().ok_or("usage: call_loop BUNDLE [N] [REQUEST]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let request = args.next().unwrap_or_else(|| "hello".into()).into_bytes();

    let recycle = std::env::var_os("SNAPCALL_RECYCLE").is_some_and(|v| v == "1");
    let reuse_memory = std::env::var_os("SNAPCALL_NO_MEMORY_REUSE").is_none_or(|v| v != "1");
    let runtime = Runtime::new(RuntimeConfig { recycle_vm_shells: recycle, reuse_memory, ..Default::default() })?;
    let function = Function::load(bundle.as_ref(), StartMode::Snapshot)?;
    runtime.keep_ready(&function);
    runtime.wait_until_full();
    let paced = std::env::var_os("SNAPCALL_PACED").is_some_and(|v| v == "1");
    let (mut vm_t, mut start_t, mut run_t, mut total_t) = (vec![], vec![], vec![], vec![]);
    let (cpu_before, background_before) = (process_cpu(), runtime.pool_stats());
    for _ in 0..n {
        if paced {
            runtime.wait_until_full();
        }
        let t0 = Instant::now();
        let vm = runtime.take_vm(&function)?;
        let t1 = Instant::now();
        let ready = function.start(vm, &request)?;
        let t2 = Instant::now();
        let (outcome, used_vm) = ready.run().into_parts();
        let t3 = Instant::now();
        let out = outcome?;
        if out.exit_code != 0 || out.stdout.is_empty() {
            return Err(format!(
                "bad output: exit {} stdout {:?}",
                out.exit_code,
                String::from_utf8_lossy(&out.stdout)
            )
            .into());
        }
        runtime.release(used_vm);
        vm_t.push(t1 - t0);
        start_t.push(t2 - t1);
        run_t.push(t3 - t2);
        total_t.push(t3 - t0);
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e6
    };
    println!(
        "{n} calls of {}: median take_vm {:.0} µs, start {:.0} µs, run {:.0} µs, total {:.0} µs ({})",
        function.name(),
        median(&mut vm_t),
        median(&mut start_t),
        median(&mut run_t),
        median(&mut total_t),
        if function.has_snapshot() { "snapshot" } else { "cold" }
    );
    let cpu = process_cpu().saturating_sub(cpu_before);
    let stats = runtime.pool_stats();
    let background =
        (stats.fill_cpu + stats.reap_cpu).saturating_sub(background_before.fill_cpu + background_before.reap_cpu);
    println!(
        "process CPU per call {:.0} µs, of which the pool and reaper {:.0} µs; {} VMs recycled, {} huge pages \
         reused, {} memories reused ({})",
        cpu.as_secs_f64() * 1e6 / n as f64,
        background.as_secs_f64() * 1e6 / n as f64,
        stats.recycled,
        stats.huge_pages_reused,
        stats.memory_reused,
        if recycle { "recycled-shell experiment" } else { "a fresh VM per call" }
    );
    let ahead = (stats.created - stats.created_inline).max(1) as f64;
    println!(
        "pool: {} VMs created, {} of them inline because the pool was empty; CPU per VM made ahead {:.0} µs, \
         per VM destroyed {:.0} µs",
        stats.created,
        stats.created_inline,
        stats.fill_cpu.as_secs_f64() * 1e6 / ahead,
        stats.reap_cpu.as_secs_f64() * 1e6 / stats.destroyed.max(1) as f64
    );
    let phases = stats.fill_phases.since(&background_before.fill_phases);
    let [create, memory, prefault, vcpu] = phases.per_vm().map(|d| d.as_secs_f64() * 1e6);
    println!(
        "pool, mean wall time per VM restored ahead ({} VMs): create {create:.0} µs, memory {memory:.0} µs, \
         pre-fault run {prefault:.0} µs, vCPU state {vcpu:.0} µs",
        phases.vms
    );
    Ok(())
}

/// User plus system CPU time of this whole process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
