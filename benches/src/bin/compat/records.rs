//! What the compat runner (`guest-functions/python/compat_runner.py`) prints: one
//! `@compat {json}` line per test, a `module_error` line when the module did not load, and a
//! `done` line when it ran to its end. Everything else on the stream is ignored.

use serde::{Deserialize, Serialize};

/// One test's result, as the runner reported it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TestRecord {
    #[serde(rename = "test")]
    pub id: String,
    pub outcome: Outcome,
    /// The first line of the first error (with where it was raised), or the skip reason.
    #[serde(default)]
    pub cause: String,
    /// The test tried to start a child process.
    #[serde(default)]
    pub child: bool,
    /// The test tried to use an internet socket or a name lookup.
    #[serde(default)]
    pub net: bool,
    /// The test's position in the run (1-based), for the trace markers.
    #[serde(default)]
    pub n: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// One line of the runner's output.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Test(TestRecord),
    ModuleError {
        module_error: String,
    },
    Done {
        #[allow(dead_code)]
        done: u64,
    },
}

/// Everything one run of one module reported.
#[derive(Debug, Clone, Default)]
pub struct Reported {
    pub tests: Vec<TestRecord>,
    /// The module did not import, or its `test_main` raised.
    pub module_error: Option<String>,
    /// The runner printed its `done` line: the run was not cut short.
    pub done: bool,
}

/// The prefix of every runner line.
const PREFIX: &str = "@compat ";

/// Parses the runner's stdout; lines that are not the runner's are skipped.
pub fn parse(stdout: &str) -> Reported {
    let mut out = Reported::default();
    for line in stdout.lines() {
        let Some(json) = line.strip_prefix(PREFIX) else { continue };
        match serde_json::from_str::<Line>(json) {
            Ok(Line::Test(t)) => out.tests.push(t),
            Ok(Line::ModuleError { module_error }) => out.module_error = Some(module_error),
            Ok(Line::Done { .. }) => out.done = true,
            Err(_) => {}
        }
    }
    out
}

/// The test the runner last started, from its `@compat start ID` lines on stderr: where a
/// run that hung or crashed was.
pub fn last_started(stderr: &str) -> Option<String> {
    stderr.lines().rev().find_map(|l| l.strip_prefix("@compat start ").map(|id| id.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_ignores_other_lines() {
        let out = parse(concat!(
            "noise a test printed\n",
            "@compat {\"test\": \"test.t.A.test_x\", \"outcome\": \"pass\", \"cause\": \"\", \"child\": false, \"net\": false, \"n\": 1}\n",
            "@compat {\"test\": \"test.t.A.test_y\", \"outcome\": \"fail\", \"cause\": \"OSError: [Errno 38] x\", \"child\": true, \"net\": false, \"n\": 2}\n",
            "@compat {not json\n",
            "@compat {\"done\": 2}\n",
        ));
        assert_eq!(out.tests.len(), 2);
        assert_eq!(out.tests[1].outcome, Outcome::Fail);
        assert!(out.tests[1].child);
        assert!(out.done);
        assert!(out.module_error.is_none());
    }

    #[test]
    fn a_cut_short_run_is_not_done() {
        let out = parse("@compat {\"module_error\": \"ImportError: no\"}\n");
        assert!(!out.done);
        assert_eq!(out.module_error.as_deref(), Some("ImportError: no"));
    }

    #[test]
    fn finds_the_last_started_test() {
        let err = "@compat start a.b\nblah\n@compat start a.c\nTraceback\n";
        assert_eq!(last_started(err).as_deref(), Some("a.c"));
        assert_eq!(last_started("nothing"), None);
    }
}
