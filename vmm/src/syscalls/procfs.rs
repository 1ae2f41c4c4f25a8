//! The few /proc/self files programs read about themselves: `status`, `stat`, `maps` and
//! `cmdline`-free basics, made from the process's state when opened (as Linux makes them
//! when read). `/proc/self/exe` opens the program itself (see `sys_openat`); readlink of it
//! gives its path. `/proc/<pid>` for the program's own pid is the same as `/proc/self`.

use super::*;
use crate::mm::RegionKind;

/// The contents of the /proc file at `path` (normalised), if it is one we make.
pub(super) fn file(p: &Process, path: &str) -> Option<Vec<u8>> {
    let rest = path.strip_prefix("/proc/self/").or_else(|| {
        path.strip_prefix("/proc/")
            .and_then(|r| r.strip_prefix(&GUEST_PID.to_string()))
            .and_then(|r| r.strip_prefix('/'))
    })?;
    let name = program_name(p);
    let vm_kib = p.space.used_bytes() / 1024;
    match rest {
        "status" => Some(
            format!(
                "Name:\t{name}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{GUEST_PID}\nNgid:\t0\nPid:\t{GUEST_PID}\n\
                 PPid:\t{GUEST_PPID}\nTracerPid:\t0\nUid:\t{u}\t{u}\t{u}\t{u}\nGid:\t{u}\t{u}\t{u}\t{u}\n\
                 FDSize:\t{}\nGroups:\t\nVmPeak:\t{vm_kib:8} kB\nVmSize:\t{vm_kib:8} kB\nVmRSS:\t{vm_kib:8} kB\n\
                 Threads:\t1\nSigQ:\t0/0\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                 SigBlk:\t{:016x}\nSigIgn:\t{:016x}\nSigCgt:\t{:016x}\nCapInh:\t0000000000000000\n\
                 CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
                 NoNewPrivs:\t1\nSeccomp:\t2\nCpus_allowed_list:\t0\nvoluntary_ctxt_switches:\t0\n\
                 nonvoluntary_ctxt_switches:\t0\n",
                p.umask,
                crate::files::MAX_FDS,
                p.sigmask,
                signal_set(p, |h| h == SIG_IGN),
                signal_set(p, |h| h != SIG_IGN && h != SIG_DFL),
                u = GUEST_UID,
            )
            .into_bytes(),
        ),
        "stat" => {
            let rss_pages = p.space.used_bytes() / 4096;
            // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
            // utime stime cutime cstime priority nice num_threads itrealvalue starttime vsize rss ...
            let mut fields = vec![
                format!("{GUEST_PID}"),
                format!("({name})"),
                "R".into(),
                format!("{GUEST_PPID}"),
                format!("{GUEST_PID}"),
                format!("{GUEST_PID}"),
                "0".into(),
                "-1".into(),
                "4194304".into(),
            ];
            fields.extend(["0", "0", "0", "0", "0", "0", "0", "0", "20", "0", "1", "0", "0"].map(String::from));
            fields.push(p.space.used_bytes().to_string());
            fields.push(rss_pages.to_string());
            fields.extend(std::iter::repeat_n("0".to_string(), 52 - fields.len()));
            Some((fields.join(" ") + "\n").into_bytes())
        }
        "maps" => {
            let mut out = String::new();
            for r in p.space.regions() {
                let perm = |bit: u32, c: char| if r.prot & bit != 0 { c } else { '-' };
                let name = match r.kind {
                    RegionKind::Image => p.exe_path.as_str(),
                    RegionKind::Stack => "[stack]",
                    RegionKind::Vdso => "[vdso]",
                    RegionKind::Entropy => ENTROPY_DEVICE,
                    RegionKind::Mmap => "",
                };
                out += &format!(
                    "{:08x}-{:08x} {}{}{}p 00000000 00:00 0 {name}\n",
                    r.start,
                    r.end,
                    perm(crate::mm::PROT_READ, 'r'),
                    perm(PROT_WRITE, 'w'),
                    perm(crate::mm::PROT_EXEC, 'x')
                );
            }
            if p.space.brk() > p.space.brk_start() {
                out += &format!("{:08x}-{:08x} rw-p 00000000 00:00 0 [heap]\n", p.space.brk_start(), p.space.brk());
            }
            Some(out.into_bytes())
        }
        _ => None,
    }
}

fn program_name(p: &Process) -> String {
    let base = p.exe_path.rsplit('/').next().unwrap_or("");
    base.chars().take(15).collect()
}

/// The signals whose handler satisfies `pick`, as the hex mask /proc prints.
fn signal_set(p: &Process, pick: impl Fn(u64) -> bool) -> u64 {
    p.sigactions.iter().enumerate().filter(|(_, a)| pick(a.handler)).fold(0, |m, (i, _)| m | 1 << i)
}
