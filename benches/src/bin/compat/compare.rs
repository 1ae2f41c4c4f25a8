//! Native against VM, per test id: of the tests that pass natively, which pass in the VM,
//! which are lost (and why), and which are set apart because they need what the VM refuses
//! by design (child processes, the host network).

use std::collections::HashMap;

use crate::records::{Outcome, TestRecord};
use crate::runners::ModuleRun;

/// A natively passing test that did not pass in the VM, and the first cause.
#[derive(Debug, Clone)]
pub struct Lost {
    pub id: String,
    pub cause: String,
    /// The first syscall the VM refused inside the test, when a traced re-run found one.
    pub refused: Option<String>,
}

/// One module's comparison.
#[derive(Debug, Clone, Default)]
pub struct ModuleResult {
    pub module: String,
    /// Tests the native run reported (skips included).
    pub native_tests: usize,
    pub native_skipped: usize,
    pub native_pass: usize,
    /// Natively passing tests that pass in the VM too.
    pub vm_pass: usize,
    pub lost: Vec<Lost>,
    /// Natively passing tests that failed in the VM while starting a child process.
    pub child: Vec<Lost>,
    /// ... or while using an internet socket / name lookup.
    pub net: Vec<Lost>,
    /// Tests that fail natively but pass in the VM.
    pub vm_only_pass: usize,
    /// The native run's module error or how it was cut short.
    pub native_note: Option<String>,
    pub vm_note: Option<String>,
}

impl ModuleResult {
    /// Natively passing tests that count: those not set apart.
    pub fn counted(&self) -> usize {
        self.native_pass - self.child.len() - self.net.len()
    }
}

fn note(run: &ModuleRun) -> Option<String> {
    match (&run.reported.module_error, &run.failure) {
        (Some(e), _) => Some(format!("module error: {e}")),
        (None, Some(f)) => Some(format!("run cut short: {f}")),
        (None, None) => None,
    }
}

/// Compares one module's native and VM runs.
pub fn compare(module: &str, native: &ModuleRun, vm: &ModuleRun) -> ModuleResult {
    let vm_by_id: HashMap<&str, &TestRecord> = vm.reported.tests.iter().map(|t| (t.id.as_str(), t)).collect();
    let missing_cause = match (&vm.reported.module_error, &vm.failure) {
        (Some(e), _) => format!("the module did not run in the VM: {e}"),
        (None, Some(f)) => format!("the VM run ended before this test: {f}"),
        (None, None) => "not reported by the VM run".to_string(),
    };
    let mut r = ModuleResult {
        module: module.to_string(),
        native_note: note(native),
        vm_note: note(vm),
        ..ModuleResult::default()
    };
    for t in &native.reported.tests {
        r.native_tests += 1;
        match t.outcome {
            Outcome::Skip => {
                r.native_skipped += 1;
                continue;
            }
            Outcome::Fail => {
                if vm_by_id.get(t.id.as_str()).is_some_and(|v| v.outcome == Outcome::Pass) {
                    r.vm_only_pass += 1;
                }
                continue;
            }
            Outcome::Pass => r.native_pass += 1,
        }
        let Some(v) = vm_by_id.get(t.id.as_str()) else {
            r.lost.push(Lost { id: t.id.clone(), cause: missing_cause.clone(), refused: None });
            continue;
        };
        let cause = match v.outcome {
            Outcome::Pass => {
                r.vm_pass += 1;
                continue;
            }
            Outcome::Skip => format!("skipped in the VM: {}", v.cause),
            Outcome::Fail => v.cause.clone(),
        };
        let lost = Lost { id: t.id.clone(), cause, refused: None };
        if v.child {
            r.child.push(lost);
        } else if v.net {
            r.net.push(lost);
        } else {
            r.lost.push(lost);
        }
    }
    r
}

/// Sums over modules.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub native_tests: usize,
    pub native_pass: usize,
    pub vm_pass: usize,
    pub child: usize,
    pub net: usize,
    pub lost: usize,
}

impl Totals {
    pub fn of(results: &[ModuleResult]) -> Totals {
        let mut t = Totals::default();
        for r in results {
            t.native_tests += r.native_tests;
            t.native_pass += r.native_pass;
            t.vm_pass += r.vm_pass;
            t.child += r.child.len();
            t.net += r.net.len();
            t.lost += r.lost.len();
        }
        t
    }

    /// Natively passing tests that count (not set apart).
    pub fn counted(&self) -> usize {
        self.native_pass - self.child - self.net
    }

    /// Percent of the counted natively passing tests that pass in the VM.
    pub fn percent(&self) -> f64 {
        percent(self.vm_pass, self.counted())
    }
}

pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A lost test's cause, reduced to a key that groups tests lost to the same thing: the
/// refused syscall when known, else the exception line without quoted names, numbers (but
/// errnos) and the location.
pub fn cause_key(lost: &Lost) -> String {
    if let Some(s) = &lost.refused {
        return format!("syscall {s}");
    }
    let text = lost.cause.split(" (at ").next().unwrap_or("");
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => {
                quote = None;
                out.push('…');
                out.push(q);
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                out.push(c);
            }
            None if c.is_ascii_digit() => {
                let keep = out.ends_with("[Errno ");
                let mut digits = c.to_string();
                while let Some(d) = chars.next_if(|d| d.is_ascii_digit()) {
                    digits.push(d);
                }
                out.push_str(if keep { &digits } else { "N" });
            }
            None => out.push(c),
        }
    }
    if quote.is_some() {
        out.push('…');
    }
    out.chars().take(120).collect()
}

/// Lost tests grouped by [`cause_key`], largest group first: (key, count, an example).
pub fn ranked_causes(results: &[ModuleResult]) -> Vec<(String, usize, Lost)> {
    let mut groups: HashMap<String, (usize, Lost)> = HashMap::new();
    for l in results.iter().flat_map(|r| &r.lost) {
        groups.entry(cause_key(l)).or_insert_with(|| (0, l.clone())).0 += 1;
    }
    let mut v: Vec<_> = groups.into_iter().map(|(k, (n, ex))| (k, n, ex)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Reported;

    fn rec(id: &str, outcome: Outcome, cause: &str, child: bool, net: bool) -> TestRecord {
        TestRecord { id: id.into(), outcome, cause: cause.into(), child, net, n: 0 }
    }

    fn run(tests: Vec<TestRecord>) -> ModuleRun {
        ModuleRun { reported: Reported { tests, module_error: None, done: true }, ..ModuleRun::default() }
    }

    #[test]
    fn classifies_every_natively_passing_test() {
        let native = run(vec![
            rec("a", Outcome::Pass, "", false, false),
            rec("b", Outcome::Pass, "", false, false),
            rec("c", Outcome::Pass, "", false, false),
            rec("d", Outcome::Pass, "", false, false),
            rec("e", Outcome::Pass, "", false, false),
            rec("f", Outcome::Skip, "no", false, false),
            rec("g", Outcome::Fail, "x", false, false),
        ]);
        let vm = run(vec![
            rec("a", Outcome::Pass, "", false, false),
            rec("b", Outcome::Fail, "OSError: [Errno 38] Function not implemented", false, false),
            rec("c", Outcome::Fail, "PermissionError", true, false),
            rec("d", Outcome::Skip, "can't start new thread", false, false),
            rec("g", Outcome::Pass, "", false, false),
        ]);
        let r = compare("m", &native, &vm);
        assert_eq!((r.native_tests, r.native_skipped, r.native_pass, r.vm_pass), (7, 1, 5, 1));
        assert_eq!(r.child.len(), 1);
        let lost: Vec<_> = r.lost.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(lost, ["b", "d", "e"]);
        assert!(r.lost[1].cause.starts_with("skipped in the VM"));
        assert_eq!(r.lost[2].cause, "not reported by the VM run");
        assert_eq!(r.vm_only_pass, 1);
        assert_eq!(r.counted(), 4);
        let t = Totals::of(&[r]);
        assert_eq!(t.percent(), 25.0);
    }

    #[test]
    fn a_vm_run_that_died_loses_its_unreported_tests_with_the_reason() {
        let native = run(vec![rec("a", Outcome::Pass, "", false, false)]);
        let mut vm = run(vec![]);
        vm.reported.done = false;
        vm.failure = Some("deadline exceeded".into());
        let r = compare("m", &native, &vm);
        assert!(r.lost[0].cause.contains("deadline exceeded"), "{:?}", r.lost);
    }

    #[test]
    fn cause_keys_group_alike_errors() {
        let l = |c: &str| Lost { id: "x".into(), cause: c.into(), refused: None };
        let a = cause_key(&l("OSError: [Errno 30] Read-only file system: '@test_100_tmp' (at a.py:3 in f)"));
        let b = cause_key(&l("OSError: [Errno 30] Read-only file system: '/work/x' (at b.py:9 in g)"));
        assert_eq!(a, b);
        assert_eq!(a, "OSError: [Errno 30] Read-only file system: '…'");
        assert_eq!(cause_key(&l("AssertionError: 3 != 4")), "AssertionError: N != N");
        let s = Lost { refused: Some("pipe2 ENOSYS".into()), ..l("OSError: whatever") };
        assert_eq!(cause_key(&s), "syscall pipe2 ENOSYS");
    }
}
