//! Host memory per VM the pool holds ready (issue 10's memory bars): a pool of `MANY` VMs
//! restored ahead for one function against a pool of one, in this process, from
//! /proc/self/smaps_rollup. A VM's own memory is its anonymous pages (its copy-on-write
//! copies, private huge windows, page tables); smaps' "Private" columns would also count the
//! snapshot's shared copy while a single VM maps it. Pss splits the shared pages among the
//! VMs that map them.

use std::path::Path;
use std::time::Duration;

use vmm::{Function, Runtime, RuntimeConfig, StartMode};

/// VMs held in the larger pool.
const MANY: usize = 9;

/// What one more ready VM costs the host, KiB.
pub struct PerVm {
    pub function: String,
    /// Issue 10's bar for it.
    pub limit_kib: f64,
    pub anonymous_kib: f64,
    pub pss_kib: f64,
}

/// The (Anonymous, Pss) totals of this process, KiB.
fn rollup() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let field = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(f64::NAN)
    };
    (field("Anonymous"), field("Pss"))
}

/// The totals with a pool of `n` ready VMs for `function`.
fn with_pool(function: &Function, n: usize) -> Result<(f64, f64), String> {
    let runtime = Runtime::new(RuntimeConfig { pool_size: n, ..Default::default() }).map_err(|e| e.to_string())?;
    runtime.keep_ready(function);
    runtime.wait_until_full();
    std::thread::sleep(Duration::from_millis(200));
    let ready = runtime.pool_stats().ready;
    if ready < n {
        return Err(format!("the pool holds {ready} VMs, not {n}"));
    }
    Ok(rollup())
}

/// Memory per ready VM of the snapshot function in `dir`.
pub fn per_ready_vm(dir: &Path, limit_kib: f64) -> Result<PerVm, String> {
    let function = Function::load(dir, StartMode::Snapshot).map_err(|e| e.to_string())?;
    // Once first, so that the snapshot's shared copy exists in both measurements.
    with_pool(&function, 1)?;
    let (one, many) = (with_pool(&function, 1)?, with_pool(&function, MANY)?);
    let per = |a: f64, b: f64| (b - a) / (MANY - 1) as f64;
    Ok(PerVm {
        function: function.name().to_string(),
        limit_kib,
        anonymous_kib: per(one.0, many.0),
        pss_kib: per(one.1, many.1),
    })
}
