//! A small mutational fuzzer that runs on stable Rust (no cargo-fuzz, no sanitizers, no
//! coverage instrumentation): seed inputs from `fuzz/corpus/<target>/`, byte-level mutations
//! driven by a seeded PRNG, and one function per target that must never panic, hang or leak
//! and checks its own invariants (round-trips, typed errors, bounds).
//!
//! Without coverage feedback the only guidance is the target's *outcome signature*: each run
//! returns a small hash of what happened (which error, which framing, which errnos...), and an
//! input that produced a signature not seen before joins the in-memory corpus, so mutations
//! build on inputs that reached somewhere new. `docs/fuzzing.md` says how to run it and what
//! the long runs found.
//!
//! Budget: `SNAPCALL_FUZZ_SECS` (seconds per target, default 3) and `SNAPCALL_FUZZ_ITERS`
//! (executions per target, default unlimited); whichever ends first. `SNAPCALL_FUZZ_SEED`
//! fixes the PRNG seed (default: from the clock; always printed, so a run can be repeated).

pub mod targets;

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// xoshiro256** seeded through splitmix64: fast, good enough, reproducible.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (`0 < n < 2^32`).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers that sit on boundaries parsers get wrong.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    100,
    127,
    128,
    255,
    256,
    511,
    512,
    1000,
    1023,
    1024,
    4095,
    4096,
    4097,
    32767,
    32768,
    65535,
    65536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x20_0000,
    0x1000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
    u64::MAX - 4095,
];

/// The mutation engine: what a target may add to the generic byte mutations.
#[derive(Debug, Clone, Default)]
pub struct Mutator {
    /// Tokens inserted or overwritten whole (header names, JSON keys, note owners...).
    pub dictionary: Vec<Vec<u8>>,
    /// Longest input produced.
    pub max_len: usize,
}

impl Mutator {
    /// 1 to 8 stacked mutations of `input` ("havoc"); `other` is another corpus entry to
    /// splice with.
    pub fn mutate(&self, rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut b = input.to_vec();
        let rounds = 1 + rng.below(8).min(rng.below(8));
        for _ in 0..rounds {
            self.mutate_once(rng, &mut b, other);
        }
        b.truncate(self.max_len.max(1));
        b
    }

    fn mutate_once(&self, rng: &mut Rng, b: &mut Vec<u8>, other: &[u8]) {
        let len = b.len();
        match rng.below(12) {
            // flip one bit
            0 if len > 0 => {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
            // a random byte
            1 if len > 0 => {
                let i = rng.below(len);
                b[i] = rng.next_u64() as u8;
            }
            // add or subtract a little
            2 if len > 0 => {
                let i = rng.below(len);
                let d = rng.below(35) as u8;
                b[i] = if rng.one_in(2) { b[i].wrapping_add(d) } else { b[i].wrapping_sub(d) };
            }
            // an interesting integer, 1/2/4/8 bytes, either endianness
            3 if len > 0 => {
                let v = *rng.pick(INTERESTING);
                let v = if rng.one_in(4) { v.wrapping_neg() } else { v };
                let w = *rng.pick(&[1usize, 2, 4, 8]);
                let bytes = if rng.one_in(4) { v.to_be_bytes() } else { v.to_le_bytes() };
                let bytes = if bytes[0] == 0 && w < 8 && rng.one_in(4) { &bytes[8 - w..] } else { &bytes[..w] };
                let i = rng.below(len);
                let n = bytes.len().min(len - i);
                b[i..i + n].copy_from_slice(&bytes[..n]);
            }
            // an interesting integer as decimal or hex text
            4 => {
                let v = *rng.pick(INTERESTING);
                let text = match rng.below(3) {
                    0 => format!("{v}"),
                    1 => format!("{v:x}"),
                    _ => format!("-{v}"),
                };
                let i = rng.below(len + 1);
                if rng.one_in(2) && i < len {
                    let end = (i + text.len()).min(len);
                    b.splice(i..end, text.bytes());
                } else {
                    b.splice(i..i, text.bytes());
                }
            }
            // insert random bytes
            5 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let fill: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(i..i, fill);
            }
            // insert a repeated byte (long runs overflow counters)
            6 => {
                let i = rng.below(len + 1);
                let cap = if rng.one_in(8) { 4096 } else { 64 };
                let n = 1 + rng.below(cap);
                let byte = if len > 0 && rng.one_in(2) { b[rng.below(len)] } else { rng.next_u64() as u8 };
                b.splice(i..i, std::iter::repeat_n(byte, n));
            }
            // delete a range
            7 if len > 0 => {
                let i = rng.below(len);
                let cap = if rng.one_in(4) { len } else { 16 };
                let n = 1 + rng.below((len - i).min(cap));
                b.drain(i..i + n);
            }
            // duplicate a range somewhere else
            8 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let chunk = b[i..i + n].to_vec();
                let at = rng.below(len + 1);
                b.splice(at..at, chunk);
            }
            // splice with another corpus entry: our prefix, its suffix (or a piece of it inserted)
            9 if !other.is_empty() => {
                let cut = rng.below(len + 1);
                let from = rng.below(other.len());
                if rng.one_in(2) {
                    b.truncate(cut);
                    b.extend_from_slice(&other[from..]);
                } else {
                    let n = 1 + rng.below((other.len() - from).min(256));
                    b.splice(cut..cut, other[from..from + n].iter().copied());
                }
            }
            // a dictionary token, inserted or overwriting
            10 if !self.dictionary.is_empty() => {
                let tok = rng.pick(&self.dictionary).clone();
                let i = rng.below(len + 1);
                if rng.one_in(2) && i < len {
                    let end = (i + tok.len()).min(len);
                    b.splice(i..end, tok);
                } else {
                    b.splice(i..i, tok);
                }
            }
            // truncate
            11 if len > 0 => b.truncate(rng.below(len)),
            _ => {
                if len == 0 {
                    b.push(rng.next_u64() as u8);
                }
            }
        }
    }
}

/// What one run of a target showed.
pub type Outcome = Result<u64, String>;

/// A fuzz target: a function of bytes that must not panic or hang and returns either an
/// outcome signature (`Ok`) or an invariant it found broken (`Err`, a failure like a panic).
pub trait Target {
    /// Directory name under `fuzz/corpus/`.
    fn name(&self) -> &'static str;
    fn mutator(&self) -> Mutator;
    fn run(&mut self, input: &[u8]) -> Outcome;
    /// How long one execution may take before it counts as a hang.
    fn hang_limit(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// Executions one run stands for (the VM target batches many syscalls per run).
    fn executions(&self) -> u64 {
        1
    }
    /// Checked after the run: resources the target's calls must have given back.
    fn leak_check(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// A fresh input instead of a mutation, when the target has a generator (1 run in 4).
    fn generate(&mut self, _rng: &mut Rng) -> Option<Vec<u8>> {
        None
    }
}

/// How long a run may take.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub time: Duration,
    /// Executions (as counted by [`Target::executions`]).
    pub executions: u64,
    pub seed: u64,
}

impl Budget {
    /// From `SNAPCALL_FUZZ_SECS`, `SNAPCALL_FUZZ_ITERS`, `SNAPCALL_FUZZ_SEED`; the defaults
    /// are CI-sized: 3 s, unlimited executions, a seed from the clock.
    pub fn from_env() -> Budget {
        let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let clock = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Budget {
            time: Duration::from_secs_f64(
                std::env::var("SNAPCALL_FUZZ_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0),
            ),
            executions: env("SNAPCALL_FUZZ_ITERS").unwrap_or(u64::MAX),
            seed: env("SNAPCALL_FUZZ_SEED").unwrap_or(clock.as_nanos() as u64 ^ u64::from(std::process::id())),
        }
    }
}

/// One failure: the input (saved under `target/fuzz-failures/<target>/`) and what broke.
#[derive(Debug, Clone)]
pub struct Failure {
    pub what: String,
    pub saved: PathBuf,
}

/// The result of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub target: &'static str,
    pub seed: u64,
    pub runs: u64,
    pub executions: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    /// Inputs kept because their outcome signature was new.
    pub corpus: usize,
    pub signatures: usize,
    pub failures: Vec<Failure>,
    pub slowest: Duration,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fuzz {}: seed {} | {} runs, {} executions in {:.1} s ({:.0}/s) | {} seeds, corpus {}, {} outcome \
             signatures | slowest run {:.1} ms | RSS {} -> {} KiB | {} failures",
            self.target,
            self.seed,
            self.runs,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.seeds,
            self.corpus,
            self.signatures,
            self.slowest.as_secs_f64() * 1e3,
            self.rss_start_kib,
            self.rss_end_kib,
            self.failures.len()
        )?;
        for fl in &self.failures {
            write!(f, "\n  FAILURE: {} (input: {})", fl.what, fl.saved.display())?;
        }
        Ok(())
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every file of `fuzz/corpus/<name>/`, sorted by name.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = root().join("fuzz/corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files.into_iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn save_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = root().join("target/fuzz-failures").join(target);
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{:016x}", fnv(input)));
    let _ = std::fs::write(&path, input);
    path
}

/// Resident set size of this process, KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

thread_local! {
    static PANIC_MESSAGE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that, on a thread inside [`fuzz`], keeps the message for the
/// report instead of printing it; every other panic goes to the previous hook as before.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(|f| f.get()) {
                PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(format!("{info}")));
            } else {
                prev(info);
            }
        }));
    });
}

/// Replays the seeds, then mutates until the budget is spent. A panic, a broken invariant or
/// a failed leak check is a [`Failure`] (its input saved); a run longer than the target's hang
/// limit saves its input and aborts the process (a hang cannot be interrupted in-process).
pub fn fuzz(target: &mut dyn Target, budget: Budget) -> Report {
    let name = target.name();
    let mutator = target.mutator();
    let mut rng = Rng::new(budget.seed);
    let seeds = seeds(name);
    let mut corpus: Vec<Vec<u8>> = if seeds.is_empty() { vec![Vec::new()] } else { seeds.clone() };
    let mut signatures = HashSet::new();
    let mut report = Report { target: name, seed: budget.seed, seeds: seeds.len(), ..Report::default() };

    // Panics are caught and reported with their input; keep the default hook's noise out.
    install_panic_hook();
    FUZZING.with(|f| f.set(true));

    // The watchdog: a run that takes longer than the hang limit is a hang.
    let current: Arc<Mutex<Vec<u8>>> = Arc::default();
    let started_ns = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let watchdog = {
        let (current, started_ns, stop, limit) =
            (current.clone(), started_ns.clone(), stop.clone(), target.hang_limit());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let s = started_ns.load(Ordering::Relaxed);
                if s != 0 && epoch.elapsed().saturating_sub(Duration::from_nanos(s)) > limit {
                    let input = current.lock().unwrap().clone();
                    let saved = save_failure(name, &input);
                    eprintln!("fuzz {name}: HANG: one run took over {limit:?}; input saved to {}", saved.display());
                    std::process::abort();
                }
            }
        })
    };

    let start = Instant::now();
    report.rss_start_kib = rss_kib();
    let mut i = 0usize;
    let mut corpus_bytes: usize = corpus.iter().map(Vec::len).sum();
    let mut progress_at = Duration::from_secs(60);
    while start.elapsed() < budget.time && report.executions < budget.executions {
        if start.elapsed() >= progress_at {
            progress_at += Duration::from_secs(60);
            eprintln!(
                "fuzz {name}: {} runs, {} executions, {:.0} s, {} failures",
                report.runs,
                report.executions,
                start.elapsed().as_secs_f64(),
                report.failures.len()
            );
        }
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else if rng.one_in(4) {
            target.generate(&mut rng).unwrap_or_else(|| {
                let a = rng.below(corpus.len());
                let b = rng.below(corpus.len());
                mutator.mutate(&mut rng, &corpus[a], &corpus[b])
            })
        } else {
            let a = rng.below(corpus.len());
            let b = rng.below(corpus.len());
            mutator.mutate(&mut rng, &corpus[a], &corpus[b])
        };
        i += 1;
        current.lock().unwrap().clone_from(&input);
        let t = Instant::now();
        started_ns.store(epoch.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
        let result = catch_unwind(AssertUnwindSafe(|| target.run(&input)));
        started_ns.store(0, Ordering::Relaxed);
        report.slowest = report.slowest.max(t.elapsed());
        report.runs += 1;
        report.executions += target.executions();
        let what = match result {
            Ok(Ok(sig)) => {
                if signatures.insert(sig) && corpus.len() < 4096 && corpus_bytes < 64 << 20 {
                    corpus_bytes += input.len();
                    corpus.push(input);
                }
                continue;
            }
            Ok(Err(broken)) => broken,
            Err(_) => PANIC_MESSAGE.with(|m| m.borrow_mut().take()).unwrap_or_else(|| "panic".into()),
        };
        if report.failures.len() < 20 {
            let saved = save_failure(name, &input);
            report.failures.push(Failure { what, saved });
        }
    }
    report.elapsed = start.elapsed();
    if let Err(leak) = target.leak_check() {
        report.failures.push(Failure { what: format!("leak: {leak}"), saved: PathBuf::new() });
    }
    report.rss_end_kib = rss_kib();
    report.corpus = corpus.len();
    report.signatures = signatures.len();
    stop.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    FUZZING.with(|f| f.set(false));
    report
}

/// A stable 64-bit hash of a few outcome features (for signatures).
pub fn signature(parts: &[&[u8]]) -> u64 {
    parts.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| fnv(p) ^ h.rotate_left(5))
}
