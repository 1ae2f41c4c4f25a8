//! The facts about the machine a run was made on.

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub online_cpus: usize,
    pub kernel: String,
    pub kvm: &'static str,
    pub memory_gib: f64,
    pub loadavg: String,
    pub date: String,
    /// `git describe` of the checkout measured, with `-dirty` for uncommitted changes.
    pub commit: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let online_cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let memory_gib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / (1024.0 * 1024.0));
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let commit = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            commit,
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            online_cpus,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            kvm: vmm::kvm_flavour(),
            memory_gib,
            loadavg: read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
            date,
        }
    }

    pub fn markdown(&self) -> String {
        format!(
            "| | |\n|---|---|\n| CPU | {} |\n| cores usable / online | {} / {} |\n| memory | {:.1} GiB |\n| kernel | {} |\n| KVM | {} |\n| load average at start | {} |\n| date | {} |\n| snapcall commit | {} |\n",
            self.cpu, self.cores, self.online_cpus, self.memory_gib, self.kernel, self.kvm, self.loadavg, self.date, self.commit
        )
    }
}
