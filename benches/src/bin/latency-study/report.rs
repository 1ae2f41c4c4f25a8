//! What a run writes: the markdown report, the raw-sample CSV, a per-mode summary CSV and an
//! SVG box plot on a log axis.

use std::fmt::Write as _;

use std::path::Path;
use std::time::Duration;

use crate::stats::{self, mean, ms, quantile, summarize};
use crate::{machine, Group, Series, Study, GAP};

pub const STATS_HEADER: &str =
    "| mode | mean | std | min | 25% | 50% | 75% | max | p99 | n |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|";

pub fn stats_row(s: &Series) -> String {
    let d = summarize(&s.totals);
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        s.name,
        ms(d.mean),
        ms(d.std),
        ms(d.min),
        ms(d.p25),
        ms(d.p50),
        ms(d.p75),
        ms(d.max),
        ms(d.p99),
        d.n
    )
}

/// One table per group, one row per mode, milliseconds.
pub fn stats_tables(series: &[Series]) -> String {
    let mut out = String::new();
    for g in Group::ALL {
        let rows: Vec<&Series> = series.iter().filter(|s| s.group == g && !s.totals.is_empty()).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "### {}\n\n{}\n\n{STATS_HEADER}", g.title(), g.about());
        for s in rows {
            let _ = writeln!(out, "{}", stats_row(s));
        }
        out.push('\n');
    }
    out
}

/// Mean of each phase, their sum, and how it compares with the mean measured total.
pub fn breakdown_table(series: &[Series]) -> String {
    let mut out = String::from(
        "| mode | vm | load/restore | run | release | queue | phases Σ | server total | client total | Σ / total | client − server, p50 | exits | VMs created inline; pool CPU per VM made ahead |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for s in series.iter().filter(|s| !s.phases.is_empty()) {
        let col = |f: fn(&crate::Phases) -> f64| {
            let v: Vec<f64> = s.phases.iter().map(f).filter(|x| !x.is_nan()).collect();
            mean(&v)
        };
        let (vm, load, run, release, queue) =
            (col(|p| p.vm), col(|p| p.load), col(|p| p.run), col(|p| p.release), col(|p| p.queue));
        let server = col(|p| p.server_total);
        let total = mean(&s.totals);
        let sum: f64 = [vm, load, run, release, queue].iter().filter(|x| !x.is_nan()).sum();
        let cover = sum / total;
        let mut wire: Vec<f64> =
            s.totals.iter().zip(&s.phases).map(|(t, p)| t - p.server_total).filter(|x| !x.is_nan()).collect();
        wire.sort_by(|a, b| a.total_cmp(b));
        let exits = col(|p| p.exits);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}% | {} | {} | {} |",
            s.name,
            ms(vm),
            ms(load),
            ms(run),
            ms(release),
            ms(queue),
            ms(sum),
            ms(server),
            ms(total),
            cover * 100.0,
            ms(quantile(&wire, 0.5)),
            if exits.is_nan() { "-".to_string() } else { format!("{exits:.0}") },
            s.inline_vms.clone().unwrap_or_else(|| "-".into()),
        );
    }
    out
}

pub fn samples_csv(series: &[Series]) -> String {
    let mut out =
        String::from("group,mode,sample,total_ms,vm_ms,load_ms,run_ms,release_ms,queue_ms,server_total_ms,exits\n");
    let f = |x: f64| if x.is_nan() { String::new() } else { format!("{x:.6}") };
    for s in series {
        for (i, t) in s.totals.iter().enumerate() {
            let p = s.phases.get(i).copied().unwrap_or_else(crate::Phases::none);
            let _ = writeln!(
                out,
                "{},\"{}\",{i},{:.6},{},{},{},{},{},{},{}",
                s.group.key(),
                s.name.replace('"', "'"),
                t,
                f(p.vm),
                f(p.load),
                f(p.run),
                f(p.release),
                f(p.queue),
                f(p.server_total),
                f(p.exits)
            );
        }
    }
    out
}

pub fn summary_csv(series: &[Series]) -> String {
    let mut out = String::from("group,mode,n,mean_ms,std_ms,min_ms,p25_ms,p50_ms,p75_ms,max_ms,p99_ms\n");
    for s in series.iter().filter(|s| !s.totals.is_empty()) {
        let d = summarize(&s.totals);
        let _ = writeln!(
            out,
            "{},\"{}\",{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6}",
            s.group.key(),
            s.name.replace('"', "'"),
            d.n,
            d.mean,
            d.std,
            d.min,
            d.p25,
            d.p50,
            d.p75,
            d.max,
            d.p99
        );
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A horizontal box plot per mode on a log axis: whiskers p1–p99, box 25–75 %, a bar at the
/// median, a dot at the max. Dashed lines mark the issue's p50 bars (0.25 ms and 1 ms).
pub fn svg(series: &[Series], title: &str) -> String {
    let rows: Vec<&Series> = series.iter().filter(|s| !s.totals.is_empty()).collect();
    let (label_w, plot_w, row_h, top) = (330.0, 720.0, 16.0, 56.0);
    let mut groups = 0;
    let mut last = None;
    for s in &rows {
        if last != Some(s.group) {
            groups += 1;
            last = Some(s.group);
        }
    }
    let height = top + (rows.len() as f64 + groups as f64 * 1.4) * row_h + 40.0;
    let width = label_w + plot_w + 30.0;
    let (lo, hi) = (-3.0f64, 3.0f64); // 1 µs .. 1 s
    let x = |v: f64| label_w + (v.max(1e-3).log10().clamp(lo, hi) - lo) / (hi - lo) * plot_w;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(o, r##"<text x="10" y="18" font-size="14" font-weight="bold">{}</text>"##, esc(title));
    let _ = writeln!(
        o,
        r##"<text x="10" y="34" fill="#555">per-call latency, ms, log scale; box 25–75 %, bar median, whiskers p1–p99, dot max</text>"##
    );
    let bottom = height - 30.0;
    for e in (lo as i32)..=(hi as i32) {
        let v = 10f64.powi(e);
        let px = x(v);
        let label = if e < 0 { format!("{v}") } else { format!("{}", v as u64) };
        let _ = writeln!(o, r##"<line x1="{px:.1}" y1="{top:.0}" x2="{px:.1}" y2="{bottom:.0}" stroke="#ccc"/>"##);
        let _ = writeln!(
            o,
            r##"<text x="{px:.1}" y="{:.0}" text-anchor="middle" fill="#333">{label}</text>"##,
            bottom + 14.0
        );
        let _ =
            writeln!(o, r##"<text x="{px:.1}" y="{:.0}" text-anchor="middle" fill="#333">{label}</text>"##, top - 6.0);
    }
    for (v, name) in [(0.25, "0.25 ms bar"), (1.0, "1 ms bar")] {
        let px = x(v);
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{top:.0}" x2="{px:.1}" y2="{bottom:.0}" stroke="#c00" stroke-dasharray="4,3"/>"##
        );
        let _ =
            writeln!(o, r##"<text x="{:.1}" y="{:.0}" fill="#c00" font-size="9">{name}</text>"##, px + 3.0, top + 10.0);
    }
    let mut y = top + 4.0;
    let mut last = None;
    for s in rows {
        if last != Some(s.group) {
            last = Some(s.group);
            y += row_h * 0.4;
            let _ = writeln!(
                o,
                r##"<text x="10" y="{:.1}" font-weight="bold" fill="{}">{}</text>"##,
                y + 10.0,
                s.group.color(),
                esc(s.group.title())
            );
            y += row_h;
        }
        let mut v = s.totals.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| quantile(&v, p);
        let (p1, p25, p50, p75, p99, max) = (q(0.01), q(0.25), q(0.5), q(0.75), q(0.99), q(1.0));
        let cy = y + row_h / 2.0;
        let c = s.group.color();
        let _ = writeln!(
            o,
            r##"<text x="{:.0}" y="{:.1}" text-anchor="end">{}</text>"##,
            label_w - 8.0,
            cy + 4.0,
            esc(&s.name)
        );
        let _ = writeln!(o, r##"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="{c}"/>"##, x(p1), x(p99));
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}" fill-opacity="0.35" stroke="{c}"/>"##,
            x(p25),
            y + 3.0,
            (x(p75) - x(p25)).max(1.0),
            row_h - 6.0
        );
        let _ = writeln!(
            o,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black" stroke-width="2"/>"##,
            x(p50),
            y + 2.0,
            x(p50),
            y + row_h - 2.0
        );
        let _ = writeln!(o, r##"<circle cx="{:.1}" cy="{cy:.1}" r="2" fill="{c}"/>"##, x(max));
        y += row_h;
    }
    o.push_str("</svg>\n");
    o
}

fn find<'a>(st: &'a Study, name: &str) -> Option<&'a Series> {
    st.series.iter().find(|s| s.name == name && !s.totals.is_empty())
}

fn p50(st: &Study, name: &str) -> Option<f64> {
    find(st, name).map(|s| summarize(&s.totals).p50)
}

/// The seed's table (seconds there; milliseconds here), its machine, and our curl columns in
/// the same orientation.
fn seed_table(st: &Study) -> String {
    let seed: [(&str, [f64; 7]); 4] = [
        ("Kubeless", [23.3, 11.166, 18.0, 19.0, 19.0, 19.0, 54.0]),
        ("KM Python", [118.8, 12.354, 112.0, 113.0, 114.5, 118.0, 153.0]),
        ("KM Py Snap", [51.0, 12.953, 40.0, 42.0, 47.0, 53.25, 81.0]),
        ("KM C", [38.0, 7.746, 27.0, 31.25, 40.0, 44.0, 49.0]),
    ];
    let ours = [
        ("warm Python server", "curl → warm Python server (Kubeless stand-in)"),
        ("snapcall Python cold", "curl → snapcall Python cold (pool)"),
        ("snapcall Py snapshot", "curl → snapcall Python snapshot (pool)"),
        ("snapcall C snapshot", "curl → snapcall C snapshot (pool)"),
        ("snapcall C cold", "curl → snapcall C cold (pool)"),
    ];
    let mut cols: Vec<(String, [f64; 9])> = seed
        .iter()
        .map(|(n, v)| (format!("seed: {n}"), [v[0], v[1], v[2], v[3], v[4], v[5], v[6], f64::NAN, 10.0]))
        .collect();
    for (label, name) in ours {
        if let Some(s) = find(st, name) {
            let d = summarize(&s.totals);
            cols.push((
                format!("ours: {label}"),
                [d.mean, d.std, d.min, d.p25, d.p50, d.p75, d.max, d.p99, d.n as f64],
            ));
        }
    }
    let mut o = String::from("| ms |");
    for (n, _) in &cols {
        let _ = write!(o, " {n} |");
    }
    o.push_str("\n|---|");
    o.push_str(&"--:|".repeat(cols.len()));
    o.push('\n');
    for (i, stat) in ["mean", "std", "min", "25%", "50%", "75%", "max", "p99", "n"].iter().enumerate() {
        let _ = write!(o, "| {stat} |");
        for (_, v) in &cols {
            let cell = if i == 8 { format!("{}", v[i] as u64) } else { ms(v[i]) };
            let _ = write!(o, " {cell} |");
        }
        o.push('\n');
    }
    o
}

fn bars(st: &Study) -> String {
    let mut o = String::from("| bar | measured | verdict |\n|---|---|---|\n");
    let fork = p50(st, "fork+exec+wait echo-c");
    let warm = p50(st, "warm Python HTTP server (keep-alive)");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    for (mode, abs, rel_to, rel_name, rel_max) in [
        ("C snapshot, HTTP keep-alive, pool", 0.25, fork, "fork+exec+wait", 0.5),
        ("C snapshot, HTTP keep-alive, no pool", 0.25, fork, "fork+exec+wait", 0.5),
        ("Python snapshot, HTTP keep-alive, pool", 1.0, warm, "warm Python server", 2.0),
        ("Python snapshot, HTTP keep-alive, no pool", 1.0, warm, "warm Python server", 2.0),
    ] {
        match p50(st, mode) {
            Some(v) => {
                let _ = writeln!(o, "| {mode}: p50 ≤ {abs} ms | {} ms | {} |", ms(v), verdict(v <= abs));
                if let Some(r) = rel_to {
                    let _ = writeln!(
                        o,
                        "| {mode}: p50 ≤ {rel_max}× {rel_name} p50 ({} ms) | {:.2}× | {} |",
                        ms(r),
                        v / r,
                        verdict(v / r <= rel_max)
                    );
                }
            }
            None => {
                let _ = writeln!(o, "| {mode} | not measured | - |");
            }
        }
    }
    // Issue 10's memory bars: what one more ready VM costs the host.
    for m in &st.memory {
        let _ = writeln!(
            o,
            "| {}: host memory per ready VM ≤ {:.0} KiB | {:.0} KiB anonymous ({:.0} KiB Pss) | {} |",
            m.function,
            m.limit_kib,
            m.anonymous_kib,
            m.pss_kib,
            verdict(m.anonymous_kib <= m.limit_kib)
        );
    }
    // Phase sums: in-process, the vmm's phase clocks against the study's clock around the call.
    for s in st.series.iter().filter(|s| s.group == Group::Library && !s.phases.is_empty()) {
        let total = stats::mean(&s.totals);
        let sum: f64 = s.phases.iter().map(|p| p.vm + p.load + p.run + p.release).sum::<f64>() / s.phases.len() as f64;
        let off = (sum / total - 1.0) * 100.0;
        let _ = writeln!(
            o,
            "| {}: phases sum to the total within 5 % | Σ {} of {} ms ({:+.1} %) | {} |",
            s.name,
            ms(sum),
            ms(total),
            off,
            verdict(off.abs() <= 5.0)
        );
    }
    for s in st.series.iter().filter(|s| s.group == Group::Http && !s.phases.is_empty()) {
        let server = stats::mean(&s.phases.iter().map(|p| p.server_total).collect::<Vec<_>>());
        let sum = stats::mean(&s.phases.iter().map(|p| p.queue + p.vm + p.load + p.run).collect::<Vec<_>>());
        let total = stats::mean(&s.totals);
        let off = (sum / total - 1.0) * 100.0;
        let _ = writeln!(
            o,
            "| {}: server phases sum to the client's total within 5 % | Σ {} ms, server total {} ms, client total {} ms ({:+.1} %) | {} |",
            s.name,
            ms(sum),
            ms(server),
            ms(total),
            off,
            verdict(off.abs() <= 5.0)
        );
    }
    o
}

pub fn write_report(st: &Study, m: &machine::Machine, command: &str, elapsed: Duration, out: &Path) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# snapcall latency study\n\nCommand: `{command}` ({:.0} s). All times in milliseconds. Traffic is 127.0.0.1 only; calls are serial, {} ms apart.\n", elapsed.as_secs_f64(), GAP.as_millis());
    let _ = writeln!(r, "## Machine\n\n{}", m.markdown());
    let _ = writeln!(r, "## Per-call latency, one row per mode\n\n{}", stats_tables(&st.series));
    let _ = writeln!(r, "## Phases (means, ms)\n\nIn-process: vm = take_vm, load/restore and run = the vmm's own clocks, release = handing the VM back (no pool: destroying it inline). Over HTTP: the phases come from the server's `Server-Timing` header; client total − server total is HTTP parsing, the loopback and the client.\n\n{}", breakdown_table(&st.series));
    let _ = writeln!(r, "## Against the issue's bars (goals, not assertions)\n\n{}", bars(st));
    let _ = writeln!(r, "## Beside the seed's table\n\nThe seed (Kontain FaaS POC): `time curl` × 10 against minikube on an Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz, 32 GB; its seconds converted to ms. Ours: the same `curl --data '{{\"Another\": \"Echo\"}}'`, one process per call, on the machine above.\n\n{}", seed_table(st));
    if !st.problems.is_empty() {
        let _ = writeln!(r, "## Problems during the run\n");
        for p in &st.problems {
            let _ = writeln!(r, "- {p}");
        }
        r.push('\n');
    }
    let _ = writeln!(r, "## Run time per section\n");
    for (name, d) in &st.sections {
        let _ = writeln!(r, "- {name}: {:.1} s", d.as_secs_f64());
    }
    r.push('\n');
    let _ = writeln!(r, "![per-call latency](latency.svg)\n\nRaw samples: samples.csv; per-mode summary: summary.csv.");
    let title = format!("snapcall latency study: {} · {} · {}", m.cpu, m.kvm, m.date);
    for (file, text) in [
        ("results.md", r.clone()),
        ("samples.csv", samples_csv(&st.series)),
        ("summary.csv", summary_csv(&st.series)),
        ("latency.svg", svg(&st.series, &title)),
    ] {
        if let Err(e) = std::fs::write(out.join(file), text) {
            eprintln!("latency-study: writing {file}: {e}");
        }
    }
    r
}
