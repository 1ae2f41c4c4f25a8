//! `vmm::BundleConfig::load` on a fuzzed `config.json`: whoever supplies a bundle controls it.
//!
//! The bundle directory is real (a temp dir with `rootfs/`, another directory, and symlinks
//! that lead out of the bundle: `up -> ..`, `abs -> /`, `inner -> rootfs`), so `root.path`
//! resolution is exercised against the file system. Invariants: no panic; an accepted config
//! has its rootfs strictly inside the bundle, an absolute `args[0]` and cwd, and limits in
//! their documented ranges; a refusal names the file.

use std::path::PathBuf;
use std::time::Duration;

use vmm::{BundleConfig, BundleError};

use crate::{signature, Mutator, Outcome, Rng, Target};

pub struct Config {
    dir: PathBuf,
    canonical: PathBuf,
}

impl Config {
    pub fn new() -> Config {
        // On tmpfs when there is one: a journaling file system makes the rewrite of
        // config.json per run the target's main cost.
        let shm = std::path::Path::new("/dev/shm");
        let tmp = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let base = tmp.join(format!("snapcall-fuzz-config-{}", std::process::id()));
        let dir = base.join("bundle");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(dir.join("rootfs/bin")).expect("create the fuzz bundle");
        std::fs::create_dir_all(dir.join("other")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("up")).unwrap();
        std::os::unix::fs::symlink("/", dir.join("abs")).unwrap();
        std::os::unix::fs::symlink("rootfs", dir.join("inner")).unwrap();
        std::os::unix::fs::symlink("../outside", dir.join("rootfs/out")).unwrap();
        let canonical = dir.canonicalize().unwrap();
        Config { dir, canonical }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        if let Some(base) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

impl Target for Config {
    fn name(&self) -> &'static str {
        "config"
    }

    fn mutator(&self) -> Mutator {
        let tokens: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            ":",
            ",",
            "null",
            "true",
            "false",
            "\"process\"",
            "\"args\"",
            "\"env\"",
            "\"cwd\"",
            "\"root\"",
            "\"path\"",
            "\"annotations\"",
            "\"rootfs\"",
            "\"..\"",
            "\"/\"",
            "\"up\"",
            "\"abs\"",
            "\"inner\"",
            "\"other\"",
            "\"rootfs/out\"",
            "\"rootfs/../..\"",
            "\"snapcall.memory_mib\"",
            "\"snapcall.timeout_ms\"",
            "\"snapcall.max_output_bytes\"",
            "\"snapcall.runner\"",
            "\"km\"",
            "\"native\"",
            "\"snapcall.warmup_request\"",
            "\"snapcall.content_type\"",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "1e999",
            "-0",
            "18446744073709551616",
            "\"4097\"",
            "\"31\"",
            "\"32\"",
            "\"4096\"",
        ];
        Mutator { dictionary: tokens.iter().map(|t| t.as_bytes().to_vec()).collect(), max_len: 16 * 1024 }
    }

    /// A structurally valid config.json with each field drawn from values that probe its check
    /// (byte mutations alone rarely keep JSON valid while changing a value to a wrong one).
    fn generate(&mut self, rng: &mut Rng) -> Option<Vec<u8>> {
        fn json_value(rng: &mut Rng, strings: &[&str]) -> String {
            match rng.below(10) {
                0 => "null".into(),
                1 => format!("{}", rng.next_u64() as i64),
                2 => "[]".into(),
                3 => "{}".into(),
                4 => "true".into(),
                _ => serde_json::to_string(rng.pick(strings)).unwrap_or_default(),
            }
        }
        const PATHS: &[&str] = &[
            "rootfs",
            "inner",
            "up",
            "abs",
            "other",
            "rootfs/out",
            "..",
            ".",
            "",
            "/",
            "/etc",
            "rootfs/../..",
            "rootfs/./bin",
            "up/bundle/rootfs",
            "config.json",
            "missing",
            "rootfs/bin",
            "\u{0}",
            "rootfs\u{0}x",
        ];
        const ARGS: &[&str] = &["/bin/x", "bin/x", "", "/", "/bin/../../x", "\u{0}"];
        const NUMBERS: &[&str] = &[
            "0",
            "1",
            "31",
            "32",
            "33",
            "64",
            "4096",
            "4097",
            "3600000",
            "3600001",
            "1073741824",
            "1073741825",
            "-1",
            "",
            " 64",
            "64 ",
            "0x40",
            "1e3",
            "18446744073709551616",
            "km",
            "native",
            "KM",
            "{}",
        ];
        const KEYS: &[&str] = &[
            "snapcall.memory_mib",
            "snapcall.timeout_ms",
            "snapcall.max_output_bytes",
            "snapcall.runner",
            "snapcall.content_type",
            "snapcall.warmup_request",
            "snapcall.python.module",
            "other",
        ];
        let mut fields = Vec::new();
        if !rng.one_in(10) {
            let mut process = Vec::new();
            if !rng.one_in(8) {
                let n = rng.below(3) + usize::from(!rng.one_in(6));
                let args: Vec<String> = (0..n).map(|_| json_value(rng, ARGS)).collect();
                process.push(format!("\"args\":[{}]", args.join(",")));
            }
            if rng.one_in(2) {
                process.push(format!("\"env\":[{}]", json_value(rng, &["A=B", "", "PATH=/bin"])));
            }
            if rng.one_in(2) {
                process.push(format!("\"cwd\":{}", json_value(rng, &["/", "/data", "data", "", "/.."])));
            }
            fields.push(format!("\"process\":{{{}}}", process.join(",")));
        }
        if !rng.one_in(4) {
            fields.push(format!("\"root\":{{\"path\":{}}}", json_value(rng, PATHS)));
        }
        if rng.one_in(2) {
            let n = rng.below(4);
            let ann: Vec<String> =
                (0..n).map(|_| format!("\"{}\":{}", rng.pick(KEYS), json_value(rng, NUMBERS))).collect();
            fields.push(format!("\"annotations\":{{{}}}", ann.join(",")));
        }
        Some(format!("{{{}}}", fields.join(",")).into_bytes())
    }

    fn run(&mut self, input: &[u8]) -> Outcome {
        std::fs::write(self.dir.join("config.json"), input).map_err(|e| format!("writing config.json: {e}"))?;
        match BundleConfig::load(&self.dir) {
            Ok(c) => {
                if !c.rootfs.starts_with(&self.canonical) || c.rootfs == self.canonical {
                    return Err(format!("rootfs {} is not strictly inside the bundle", c.rootfs.display()));
                }
                if !c.args.first().is_some_and(|a| a.starts_with('/')) || !c.cwd.starts_with('/') {
                    return Err(format!("args {:?} cwd {:?} accepted", c.args, c.cwd));
                }
                let l = &c.limits;
                let mem_ok = (32 << 20..=4096 << 20).contains(&l.memory_bytes) && l.memory_bytes % (2 << 20) == 0;
                let time_ok = (Duration::from_millis(1)..=Duration::from_secs(3600)).contains(&l.timeout);
                let out_ok = (1..=1 << 30).contains(&l.max_output_bytes);
                if !mem_ok || !time_ok || !out_ok {
                    return Err(format!("limits out of range: {l:?}"));
                }
                let rel = c.rootfs.strip_prefix(&self.canonical).unwrap_or(&c.rootfs);
                Ok(signature(&[b"ok", rel.as_os_str().as_encoded_bytes(), format!("{:?}", c.runner).as_bytes()]))
            }
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains("config.json") {
                    return Err(format!("refusal does not name the file: {msg}"));
                }
                let kind: Vec<u8> = match &e {
                    BundleError::Read { .. } => b"read".to_vec(),
                    BundleError::Json { source, .. } => format!("json {:?}", source.classify()).into_bytes(),
                    BundleError::Field { field, .. } => field.as_bytes().to_vec(),
                };
                Ok(signature(&[b"err", &kind]))
            }
        }
    }
}
