//! The comparison as Markdown: the per-module table, the ranked first causes, and every lost
//! and set-apart test with its cause.

use std::fmt::Write;

use crate::compare::{percent, ranked_causes, ModuleResult, Totals};

/// The table and its totals line.
pub fn table(results: &[ModuleResult]) -> String {
    let mut s = String::new();
    s.push_str("| module | tests | skipped natively | pass natively | pass in VM | child process | host network | lost | VM / native |\n");
    s.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in results {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} % |",
            r.module,
            r.native_tests,
            r.native_skipped,
            r.native_pass,
            r.vm_pass,
            r.child.len(),
            r.net.len(),
            r.lost.len(),
            percent(r.vm_pass, r.counted())
        );
    }
    let t = Totals::of(results);
    let _ = writeln!(
        s,
        "| **total** | {} | | {} | {} | {} | {} | {} | **{:.1} %** |",
        t.native_tests,
        t.native_pass,
        t.vm_pass,
        t.child,
        t.net,
        t.lost,
        t.percent()
    );
    s.push('\n');
    let _ = writeln!(
        s,
        "**{:.1} %** of the natively passing tests pass in the VM: {} of {} ({} lost); {} that start a child \
         process and {} that use the host network are set apart.",
        t.percent(),
        t.vm_pass,
        t.counted(),
        t.lost,
        t.child,
        t.net
    );
    let notes: Vec<String> = results
        .iter()
        .flat_map(|r| {
            [("native", &r.native_note), ("VM", &r.vm_note)]
                .into_iter()
                .filter_map(move |(side, n)| n.as_ref().map(|n| format!("- {} ({side}): {n}", r.module)))
        })
        .collect();
    if !notes.is_empty() {
        s.push_str("\nModules whose run did not end normally:\n\n");
        for n in notes {
            s.push_str(&n);
            s.push('\n');
        }
    }
    s
}

/// The first causes of the lost tests, ranked by how many tests each costs.
pub fn causes(results: &[ModuleResult], top: usize) -> String {
    let ranked = ranked_causes(results);
    let mut s = String::new();
    s.push_str("| lost tests | first cause | example |\n|--:|---|---|\n");
    for (key, n, ex) in ranked.iter().take(top) {
        let _ = writeln!(s, "| {n} | {} | `{}`: {} |", cell(key), ex.id, cell(&ex.cause));
    }
    if ranked.len() > top {
        let rest: usize = ranked.iter().skip(top).map(|(_, n, _)| n).sum();
        let _ = writeln!(s, "| {rest} | ({} more causes) | |", ranked.len() - top);
    }
    s
}

/// Every lost and set-apart test with its cause, by module.
pub fn details(results: &[ModuleResult]) -> String {
    let mut s = String::new();
    for r in results {
        if r.lost.is_empty() && r.child.is_empty() && r.net.is_empty() {
            continue;
        }
        let _ = writeln!(s, "### {}\n", r.module);
        for (what, list) in [("lost", &r.lost), ("child process", &r.child), ("host network", &r.net)] {
            for l in list.iter() {
                let refused = l.refused.as_ref().map(|r| format!(" [refused: {r}]")).unwrap_or_default();
                let _ = writeln!(s, "- {what}: `{}`: {}{refused}", l.id, l.cause);
            }
        }
        s.push('\n');
    }
    s
}

/// `text` made safe for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
