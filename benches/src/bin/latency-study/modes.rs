//! The modes, section by section: each runs its calls through [`Study::measure`] (or, for the
//! floor, its own loops over `vmm::probe`) and appends one [`Series`] per mode.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vmm::probe::{self, ExitKind, ExitProbe};
use vmm::{Function, Runtime, RuntimeConfig, StartMode};

use crate::{
    cost, http, ms_of, native, warmup_calls, Group, Phases, Series, Study, C_FN, POOL, PROBE_MEMORY, PY_FN, REQUEST,
};

// ---------------------------------------------------------------- 1. physical floor

pub(crate) fn floor(st: &mut Study) {
    // VMs made the way the server makes them: by the VM creator (no debugfs directory each),
    // with its keeper's vCPU alive (docs/vmm.md, "The keeper holds a vCPU").
    vmm::vm_creator::start();
    let n = st.sizes.floor_steps;
    st.progress.set_label("floor: VM creation steps");
    let names = [
        "KVM_CREATE_VM",
        "set memory (mmap + KVM_SET_USER_MEMORY_REGION)",
        "KVM_CREATE_VCPU",
        "KVM_SET_CPUID2",
        "destroy VM (never run)",
    ];
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            st.problems.push("floor steps: time cap".into());
            break;
        }
        match probe::create_steps(PROBE_MEMORY) {
            Ok(s) => {
                for (c, d) in cols.iter_mut().zip([s.create_vm, s.set_memory, s.create_vcpu, s.set_cpuid, s.destroy]) {
                    c.push(ms_of(d));
                }
            }
            Err(e) => {
                st.problems.push(format!("floor steps: {e}"));
                break;
            }
        }
        st.progress.tick(1);
    }
    for (name, totals) in names.iter().zip(cols) {
        st.series.push(Series {
            name: name.to_string(),
            group: Group::Floor,
            totals,
            phases: vec![],
            inline_vms: None,
        });
    }

    st.progress.set_label("floor: whole VM, first KVM_RUN, destroy");
    let (mut create, mut first, mut destroy) = (Vec::new(), Vec::new(), Vec::new());
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            break;
        }
        let t0 = Instant::now();
        let mut p = match ExitProbe::new(PROBE_MEMORY, ExitKind::Cpl3Mmio) {
            Ok(p) => p,
            Err(e) => {
                st.problems.push(format!("floor probe VM: {e}"));
                break;
            }
        };
        create.push(ms_of(t0.elapsed()));
        match p.run_once() {
            Ok(d) => first.push(ms_of(d)),
            Err(e) => {
                st.problems.push(format!("floor first KVM_RUN: {e}"));
                break;
            }
        }
        let vm = p.into_vm();
        let t1 = Instant::now();
        drop(vm);
        destroy.push(ms_of(t1.elapsed()));
        st.progress.tick(1);
    }
    for (name, totals) in [
        ("EmptyVm::create (whole)", create),
        ("a call's first KVM_RUN (iretq to CPL3 + 1 exit)", first),
        ("destroy VM (after a run)", destroy),
    ] {
        st.series.push(Series { name: name.into(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }

    st.progress.set_label("floor: first KVM_RUN of a new vCPU");
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let t = Instant::now();
    for _ in 0..n {
        if t.elapsed() > st.sizes.cap {
            break;
        }
        match probe::first_kvm_run(PROBE_MEMORY) {
            Ok(r) => {
                first.push(ms_of(r.first));
                second.push(ms_of(r.second));
            }
            Err(e) => {
                st.problems.push(format!("floor first KVM_RUN of a new vCPU: {e}"));
                break;
            }
        }
        st.progress.tick(1);
    }
    for (name, totals) in [("first KVM_RUN of a new vCPU (CPL0, 1 exit)", first), ("its second KVM_RUN", second)] {
        st.series.push(Series { name: name.into(), group: Group::Floor, totals, phases: vec![], inline_vms: None });
    }

    let n = st.sizes.floor_exits;
    for kind in ExitKind::ALL {
        st.progress.set_label(&format!("floor: {}", kind.name()));
        let mut totals = Vec::with_capacity(n);
        match ExitProbe::new(PROBE_MEMORY, kind) {
            Ok(mut p) => {
                let _ = p.run_once(); // the first KVM_RUN is measured above
                let t = Instant::now();
                for _ in 0..n {
                    if t.elapsed() > st.sizes.cap {
                        break;
                    }
                    match p.run_once() {
                        Ok(d) => totals.push(ms_of(d)),
                        Err(e) => {
                            st.problems.push(format!("{}: {e}", kind.name()));
                            break;
                        }
                    }
                    if totals.len() % 100 == 0 {
                        st.progress.tick(1);
                    }
                }
            }
            Err(e) => st.problems.push(format!("{}: {e}", kind.name())),
        }
        st.series.push(Series {
            name: kind.name().into(),
            group: Group::Floor,
            totals,
            phases: vec![],
            inline_vms: None,
        });
    }
}

// ---------------------------------------------------------------- 2. native baselines

pub(crate) fn python_env(rootfs: &Path) -> Vec<String> {
    vec![
        format!("PYTHONHOME={}", rootfs.join("usr").display()),
        format!("PYTHONPATH={}", rootfs.join("function").display()),
        "PYTHONUTF8=1".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
        "PYTHONNOUSERSITE=1".into(),
        "HOME=/".into(),
    ]
}

fn check_echo(out: &[u8]) -> Result<(), String> {
    if out == REQUEST {
        Ok(())
    } else {
        Err(format!("unexpected response {:?}", String::from_utf8_lossy(&out[..out.len().min(200)])))
    }
}

pub(crate) fn native_baselines(st: &mut Study, functions: &Path, logs: &Path) {
    let echo = functions.join(C_FN).join("rootfs/bin/echo-c");
    let prog = native::Program::new(&echo, &["echo-c".into()], &["PATH=/bin".into(), "HOME=/".into()]);
    for (name, how) in
        [("fork+exec+wait echo-c", native::Spawn::ForkExec), ("posix_spawn+wait echo-c", native::Spawn::PosixSpawn)]
    {
        st.measure(name, Group::Native, st.sizes.fast, cost::FAST, || {
            let t = Instant::now();
            let out = prog.call(how, REQUEST)?;
            let total = ms_of(t.elapsed());
            check_echo(&out)?;
            Ok((total, None))
        });
    }

    let rootfs = functions.join(PY_FN).join("rootfs");
    let python = rootfs.join("usr/bin/python3");
    let py_args: Vec<String> = ["python3", "-S", "-B"]
        .into_iter()
        .map(String::from)
        .chain([rootfs.join("runtime/snapcall_runtime.py").display().to_string()])
        .chain(["--module", "hellowithdata", "--handler", "handler", "--function-name", PY_FN].map(String::from))
        .collect();
    let py = native::Program::new(&python, &py_args, &python_env(&rootfs));
    st.measure(
        "python3 per call (bundle CPython, native)",
        Group::Native,
        st.sizes.py_per_call,
        cost::PY_PROCESS,
        || {
            let t = Instant::now();
            let out = py.call(native::Spawn::PosixSpawn, REQUEST)?;
            let total = ms_of(t.elapsed());
            check_echo(&out)?;
            Ok((total, None))
        },
    );

    // The warm server: same interpreter, runtime and handler, kept alive between calls.
    let mut cmd = Command::new(&python);
    cmd.env_clear()
        .envs(python_env(&rootfs).iter().filter_map(|kv| kv.split_once('=')))
        .arg("-S")
        .arg("-B")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/py/warm_server.py"))
        .arg("--runtime-dir")
        .arg(rootfs.join("runtime"))
        .arg("--function-dir")
        .arg(rootfs.join("function"))
        .args(["--module", "hellowithdata", "--handler", "handler"]);
    match http::ServerChild::start(cmd, &logs.join("warm-python-server.log"), "listening on", st.progress) {
        Ok(server) => {
            http_mode(
                st,
                &server,
                "/hellowithdata",
                "warm Python HTTP server (keep-alive)",
                st.sizes.fast,
                cost::FAST,
                false,
            );
            curl_mode(st, &server, "/hellowithdata", "curl → warm Python server (Kubeless stand-in)", cost::CURL);
        }
        Err(e) => {
            st.problems.push(format!("warm Python server: {e}"));
            st.progress.tick(st.sizes.fast as u64 * cost::FAST + st.sizes.curl as u64 * cost::CURL);
        }
    }
}

// ---------------------------------------------------------------- 3. in-process library calls

pub(crate) fn library(st: &mut Study, functions: &Path) {
    for pool in [0, POOL] {
        let runtime = match Runtime::new(RuntimeConfig { pool_size: pool, ..Default::default() }) {
            Ok(r) => r,
            Err(e) => {
                st.problems.push(format!("vmm runtime: {e}"));
                continue;
            }
        };
        for (fname, lang) in [(C_FN, "C"), (PY_FN, "Python")] {
            for (mode, start) in [("cold", StartMode::Cold), ("snapshot", StartMode::Snapshot)] {
                let f = match Function::load(&functions.join(fname), start) {
                    Ok(f) => f,
                    Err(e) => {
                        st.problems.push(format!("{fname} {mode}: {e}"));
                        continue;
                    }
                };
                let (n, c) = match (lang, mode) {
                    ("C", "cold") => (st.sizes.c_cold, cost::C_COLD),
                    ("C", _) => (st.sizes.fast, cost::FAST),
                    (_, "cold") => (st.sizes.py_cold, cost::PY_COLD),
                    _ => (st.sizes.py_snap, cost::PY_SNAP),
                };
                runtime.keep_ready(&f);
                runtime.wait_until_full();
                let before = runtime.pool_stats();
                let name = format!("{lang} {mode}, library call, {}", if pool == 0 { "no pool" } else { "pool" });
                let count = st.measure(&name, Group::Library, n, c, || {
                    let t0 = Instant::now();
                    let vm = runtime.take_vm(&f).map_err(|e| e.to_string())?;
                    let t1 = Instant::now();
                    let ready = f.start(vm, REQUEST).map_err(|e| e.to_string())?;
                    let finished = ready.run();
                    let t2 = Instant::now();
                    let timings = finished.timings();
                    let exits = finished.stats().exits as f64;
                    let checked = match finished.outcome() {
                        Ok(o) if o.exit_code == 0 => check_echo(&o.stdout),
                        Ok(o) => Err(format!("exit code {}", o.exit_code)),
                        Err(e) => Err(e.to_string()),
                    };
                    runtime.release(finished.into_parts().1);
                    let t3 = Instant::now();
                    checked?;
                    let phases = Phases {
                        vm: ms_of(t1 - t0),
                        load: ms_of(timings.start),
                        run: ms_of(timings.run),
                        release: ms_of(t3 - t2),
                        exits,
                        ..Phases::none()
                    };
                    Ok((ms_of(t3 - t0), Some(phases)))
                });
                if let (Some(count), true) = (count, pool > 0) {
                    let after = runtime.pool_stats();
                    let inline = after.created_inline.saturating_sub(before.created_inline);
                    let ahead = after.created.saturating_sub(before.created).saturating_sub(inline);
                    let fill = after.fill_cpu.saturating_sub(before.fill_cpu).as_secs_f64();
                    if let Some(s) = st.series.last_mut() {
                        s.inline_vms = Some(pool_note(inline, count + warmup_calls(n), ahead, fill));
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- 4. + 5. HTTP and curl

fn http_mode(st: &mut Study, server: &http::ServerChild, path: &str, name: &str, n: usize, cost: u64, snapcall: bool) {
    let mut client = match http::Client::connect(server.addr) {
        Ok(c) => c,
        Err(e) => {
            st.problems.push(format!("{name}: {e}"));
            st.progress.tick(n as u64 * cost);
            return;
        }
    };
    // (VMs created inline, VMs created, seconds of pool CPU) from the server's /metrics.
    let pool = |s: &http::ServerChild| {
        let m = s.get_text("/metrics")?;
        Some((
            metric(&m, "snapcall_vms_created_inline_total")? as u64,
            metric(&m, "snapcall_vms_created_total")? as u64,
            metric(&m, "snapcall_pool_fill_cpu_seconds_total")?,
        ))
    };
    let before = if snapcall { pool(server) } else { None };
    let count = st.measure(name, Group::Http, n, cost, || {
        let t = Instant::now();
        let r = client.post(path, "application/json", REQUEST)?;
        let total = ms_of(t.elapsed());
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, String::from_utf8_lossy(&r.body)));
        }
        check_echo(&r.body)?;
        let phases = r.server_timing.map(|h| {
            let mut p = Phases::none();
            for (k, v) in http::parse_server_timing(&h) {
                match k.as_str() {
                    "queue" => p.queue = v,
                    "vm" => p.vm = v,
                    "restore" => p.load = v,
                    "run" => p.run = v,
                    "total" => p.server_total = v,
                    _ => {}
                }
            }
            p
        });
        Ok((total, phases))
    });
    drop(client);
    let after = if snapcall { pool(server) } else { None };
    if let (Some(b), Some(a), Some(count)) = (before, after, count) {
        if let Some(s) = st.series.last_mut() {
            let inline = a.0.saturating_sub(b.0);
            let ahead = a.1.saturating_sub(b.1).saturating_sub(inline);
            s.inline_vms = Some(pool_note(inline, count + warmup_calls(n), ahead, (a.2 - b.2).max(0.0)));
        }
    }
}

/// The pool column: how many calls (warm-up included) found the pool empty, and the pool's
/// CPU per VM it made ahead meanwhile (its background cost, competing with the calls).
fn pool_note(inline: u64, calls: usize, made_ahead: u64, fill_cpu_secs: f64) -> String {
    if made_ahead == 0 {
        return format!("{inline} of {calls} (incl. warm-up)");
    }
    format!("{inline} of {calls} (incl. warm-up); {:.2} ms", fill_cpu_secs * 1e3 / made_ahead as f64)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

fn curl_mode(st: &mut Study, server: &http::ServerChild, path: &str, name: &str, cost: u64) {
    let url = format!("http://{}{path}", server.addr);
    let data = String::from_utf8_lossy(REQUEST).to_string();
    st.measure(name, Group::Curl, st.sizes.curl, cost, || {
        let t = Instant::now();
        let out = Command::new("curl")
            .args(["-sS", "--noproxy", "*", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--header", "Content-Type: application/json", "--data", &data, &url])
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        let total = ms_of(t.elapsed());
        if out.stdout != b"200" {
            return Err(format!(
                "curl: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok((total, None))
    });
}

pub(crate) fn over_http(st: &mut Study, functions: &Path, logs: &Path, snapcall: &Path) {
    for cold in [true, false] {
        for pool in [0, POOL] {
            let mode = if cold { "cold" } else { "snapshot" };
            let mut cmd = Command::new(snapcall);
            cmd.arg("serve").arg("--functions").arg(functions).args(["--listen", "127.0.0.1:0", "--threads", "1"]);
            cmd.arg("--pool-size").arg(pool.to_string());
            if cold {
                cmd.arg("--cold");
            }
            let log = logs.join(format!("serve-{mode}-pool{pool}.log"));
            let (c_n, py_n) =
                if cold { (st.sizes.c_cold, st.sizes.py_cold) } else { (st.sizes.fast, st.sizes.py_snap) };
            let (c_cost, py_cost) = if cold { (cost::C_COLD, cost::PY_COLD) } else { (cost::FAST, cost::PY_SNAP) };
            let curl_py_cost = if cold { cost::PY_COLD } else { cost::CURL };
            let with_curl = pool > 0;
            let server = match http::ServerChild::start(cmd, &log, "listening on", st.progress) {
                Ok(s) => s,
                Err(e) => {
                    st.problems.push(format!("snapcall serve ({mode}, pool {pool}): {e}"));
                    let curl = if with_curl { st.sizes.curl as u64 * (cost::CURL + curl_py_cost) } else { 0 };
                    st.progress.tick(c_n as u64 * c_cost + py_n as u64 * py_cost + curl);
                    continue;
                }
            };
            std::thread::sleep(Duration::from_millis(200)); // let the pool fill
            let pool_name = if pool == 0 { "no pool" } else { "pool" };
            for (fname, lang, n, c) in [(C_FN, "C", c_n, c_cost), (PY_FN, "Python", py_n, py_cost)] {
                http_mode(
                    st,
                    &server,
                    &format!("/{fname}"),
                    &format!("{lang} {mode}, HTTP keep-alive, {pool_name}"),
                    n,
                    c,
                    true,
                );
            }
            if with_curl {
                for (fname, lang, c) in [(C_FN, "C", cost::CURL), (PY_FN, "Python", curl_py_cost)] {
                    curl_mode(st, &server, &format!("/{fname}"), &format!("curl → snapcall {lang} {mode} (pool)"), c);
                }
            }
        }
    }
}
