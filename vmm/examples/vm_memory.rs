//! Host memory per VM held ready: a pool of N VMs restored ahead for one function against a
//! pool of 1, in one process, from /proc/self/smaps_rollup. Anonymous pages are what a VM
//! costs the host on its own; pages shared with the snapshot's in-memory copy are counted once
//! however many VMs map them (Pss splits them).
//!
//! ```text
//! cargo run --release -p vmm --example vm_memory -- BUNDLE [N]
//! ```

use std::collections::HashMap;

use vmm::{Function, Runtime, RuntimeConfig, StartMode};

/// The kB fields of /proc/self/smaps_rollup.
fn rollup() -> HashMap<String, u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().trim_end_matches(" kB").parse().ok()?))
        })
        .collect()
}

fn held(function: &Function, n: usize) -> Result<HashMap<String, u64>, Box<dyn std::error::Error>> {
    let runtime = Runtime::new(RuntimeConfig { pool_size: n, ..Default::default() })?;
    runtime.keep_ready(function);
    runtime.wait_until_full();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let stats = runtime.pool_stats();
    if stats.ready < n {
        return Err(format!("the pool holds {} VMs, not {n}", stats.ready).into());
    }
    Ok(rollup())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bundle = args.next().ok_or("usage: vm_memory BUNDLE [N]")?;
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(9);
    let function = Function::load(bundle.as_ref(), StartMode::Snapshot)?;
    // Once first, so the snapshot's shared copy exists in both measurements.
    held(&function, 1)?;
    let one = held(&function, 1)?;
    let many = held(&function, n)?;
    let per_vm =
        |k: &str| (many.get(k).copied().unwrap_or(0) as f64 - one.get(k).copied().unwrap_or(0) as f64) / (n - 1) as f64;
    // Anonymous memory is what each VM holds on its own (its copy-on-write copies, its huge
    // windows, its page tables): smaps' "Private" columns also count the shared copy's pages
    // while only one VM maps them, so against a pool of 1 they undercount (CPython: 2.7 MiB
    // "private" for 4.4 MiB of anonymous memory per VM).
    println!(
        "{}: per VM held ready ({n} against 1): private (anonymous) {:.0} KiB, Rss {:.0} KiB, Pss {:.0} KiB",
        function.name(),
        per_vm("Anonymous"),
        per_vm("Rss"),
        per_vm("Pss"),
    );
    Ok(())
}
