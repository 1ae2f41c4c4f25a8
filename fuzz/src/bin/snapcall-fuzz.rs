//! `snapcall-fuzz TARGET...`: run fuzz targets with the budget from the environment
//! (`SNAPCALL_FUZZ_SECS`, `SNAPCALL_FUZZ_ITERS`, `SNAPCALL_FUZZ_SEED`; see `fuzz/src/lib.rs`),
//! print each report, exit 1 if any failed. `all` runs every target. Long runs:
//! `docs/fuzzing.md`.

use fuzz::{fuzz, targets, Budget};

fn main() {
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() || names.iter().any(|n| n == "-h" || n == "--help") {
        eprintln!("usage: snapcall-fuzz TARGET... (targets: {}, or all)", targets::ALL.join(", "));
        std::process::exit(2);
    }
    if names.iter().any(|n| n == "all") {
        names = targets::ALL.iter().map(|s| s.to_string()).collect();
    }
    let budget = Budget::from_env();
    let mut failed = false;
    for name in names {
        let Some(mut target) = targets::by_name(&name) else {
            eprintln!("snapcall-fuzz: no target {name:?} (targets: {})", targets::ALL.join(", "));
            std::process::exit(2);
        };
        let report = fuzz(target.as_mut(), budget);
        println!("{report}");
        failed |= !report.failures.is_empty();
    }
    std::process::exit(i32::from(failed));
}
