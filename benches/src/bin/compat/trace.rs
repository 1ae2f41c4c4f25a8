//! The syscalls behind a lost test: a VM re-run of a module's lost tests under
//! `snapcall run --trace-syscalls`, with the runner bracketing test N by the markers
//! `lseek(0x7ffffff0, N, 0)` and `lseek(0x7ffffff0, N, 1)` (see compat_runner.py). Between
//! them, the first syscall the VM refused (ENOSYS, EPERM, EACCES, ...) is the likely cause.

use std::collections::HashMap;

/// The runner's marker fd (compat_runner.py's MARK_FD).
const MARK_FD: u64 = 0x7fff_fff0;

/// Errnos that mean "the VM does not do this" rather than an ordinary failed call.
const REFUSALS: [(i64, &str); 7] = [
    (38, "ENOSYS"),
    (1, "EPERM"),
    (13, "EACCES"),
    (30, "EROFS"),
    (95, "EOPNOTSUPP"),
    (97, "EAFNOSUPPORT"),
    (93, "EPROTONOSUPPORT"),
];

/// One traced syscall: `syscall NAME(0x.., 0x.., ...) = RESULT`.
#[derive(Debug, PartialEq, Eq)]
struct Traced<'a> {
    name: &'a str,
    args: Vec<u64>,
    /// The negative errno, when the call failed.
    errno: Option<i64>,
}

fn parse_line(line: &str) -> Option<Traced<'_>> {
    let rest = line.strip_prefix("syscall ")?;
    let (name, rest) = rest.split_once('(')?;
    let (args, result) = rest.split_once(") = ")?;
    let args = args
        .split(", ")
        .map(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).unwrap_or(u64::MAX))
        .collect();
    let errno = result.strip_prefix('-').and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok());
    Some(Traced { name, args, errno })
}

/// For each test index N, the first refused syscall inside its markers, as "NAME ERRNO".
pub fn refused_per_test(stderr: &str) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let mut current: Option<u64> = None;
    for t in stderr.lines().filter_map(parse_line) {
        if t.name == "lseek" && t.args.first() == Some(&MARK_FD) {
            let n = t.args.get(1).copied().unwrap_or(0);
            current = match t.args.get(2) {
                Some(0) => Some(n),
                _ => None,
            };
            continue;
        }
        let (Some(n), Some(errno)) = (current, t.errno) else { continue };
        if let Some((_, ename)) = REFUSALS.iter().find(|(e, _)| *e == errno) {
            out.entry(n).or_insert_with(|| format!("{} {ename}", t.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_the_first_refusal_between_markers() {
        let trace = "\
syscall pipe2(0x7ffd, 0x80000, 0x0, 0x0, 0x0, 0x0) = -38 (Function not implemented (os error 38))
syscall lseek(0x7ffffff0, 0x3, 0x0, 0x0, 0x0, 0x0) = -9 (Bad file descriptor (os error 9))
syscall openat(0xffffff9c, 0x1000, 0x0, 0x0, 0x0, 0x0) = -2 (No such file or directory (os error 2))
syscall socket(0x2, 0x1, 0x0, 0x0, 0x0, 0x0) = -1 (Operation not permitted (os error 1))
syscall pipe2(0x7ffd, 0x80000, 0x0, 0x0, 0x0, 0x0) = -38 (Function not implemented (os error 38))
syscall lseek(0x7ffffff0, 0x3, 0x1, 0x0, 0x0, 0x0) = -9 (Bad file descriptor (os error 9))
syscall lseek(0x7ffffff0, 0x4, 0x0, 0x0, 0x0, 0x0) = -9 (Bad file descriptor (os error 9))
syscall read(0x3, 0x1000, 0x10, 0x0, 0x0, 0x0) = 0x10
syscall lseek(0x7ffffff0, 0x4, 0x1, 0x0, 0x0, 0x0) = -9 (Bad file descriptor (os error 9))
";
        let got = refused_per_test(trace);
        assert_eq!(got.get(&3).map(String::as_str), Some("socket EPERM"));
        assert_eq!(got.get(&4), None);
        assert_eq!(got.len(), 1, "the pipe2 outside any test is nobody's: {got:?}");
    }

    #[test]
    fn ignores_other_lines() {
        assert_eq!(parse_line("Traceback (most recent call last):"), None);
        let t = parse_line("syscall getpid(0x0, 0x0, 0x0, 0x0, 0x0, 0x0) = 0x64").unwrap();
        assert_eq!((t.name, t.errno), ("getpid", None));
    }
}
