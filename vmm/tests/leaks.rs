//! 500 sequential calls leave the process's open fds and RSS flat (its own binary, so no
//! other test's VMs are counted).

mod common;
use common::*;
use vmm::StartMode;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn five_hundred_calls_leave_fds_and_rss_flat() {
    let f = load("echo-c", StartMode::Cold);
    let request = bytes(10_000, 1);
    for _ in 0..50 {
        assert_eq!(output(&f, &request).stdout, request);
    }
    let (fds, rss) = (open_fds(), rss_kib());
    for _ in 0..500 {
        assert_eq!(output(&f, &request).stdout, request);
    }
    assert_eq!(open_fds(), fds, "open fds grew");
    let grown = rss_kib().saturating_sub(rss);
    assert!(grown < 4096, "RSS grew by {grown} KiB over 500 calls");
}
