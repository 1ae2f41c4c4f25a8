//! A progress bar on stderr, and a watchdog that ends the study (and its child servers) if
//! nothing progresses for two minutes, so every run is bounded even if a call hangs.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Progress {
    started: Instant,
    total: AtomicU64,
    done: AtomicU64,
    last_tick_ms: AtomicU64,
    last_draw_ms: AtomicU64,
    label: Mutex<String>,
    /// Child processes to kill if the watchdog fires.
    pub children: Mutex<Vec<i32>>,
}

const STALL: Duration = Duration::from_secs(120);

impl Progress {
    pub fn new(total: u64) -> &'static Progress {
        let p: &'static Progress = Box::leak(Box::new(Progress {
            started: Instant::now(),
            total: AtomicU64::new(total.max(1)),
            done: AtomicU64::new(0),
            last_tick_ms: AtomicU64::new(0),
            last_draw_ms: AtomicU64::new(0),
            label: Mutex::new(String::new()),
            children: Mutex::new(Vec::new()),
        }));
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let idle = p.now_ms().saturating_sub(p.last_tick_ms.load(Ordering::Relaxed));
            if idle > STALL.as_millis() as u64 {
                eprintln!("\nlatency-study: no progress for {}s in \"{}\": giving up", STALL.as_secs(), p.label());
                for &pid in p.children.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    // SAFETY: kill(2) on a pid we spawned; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::process::exit(2);
            }
        });
        p
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn label(&self) -> String {
        self.label.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Names what is being measured now.
    pub fn set_label(&self, label: &str) {
        *self.label.lock().unwrap_or_else(|e| e.into_inner()) = label.to_string();
        self.last_tick_ms.store(self.now_ms(), Ordering::Relaxed);
        self.draw(true);
    }

    /// `n` more units done.
    pub fn tick(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.last_tick_ms.store(self.now_ms(), Ordering::Relaxed);
        self.draw(false);
    }

    fn draw(&self, force: bool) {
        let now = self.now_ms();
        if !force && now.saturating_sub(self.last_draw_ms.load(Ordering::Relaxed)) < 100 {
            return;
        }
        self.last_draw_ms.store(now, Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed).min(total);
        let width = 30;
        let filled = (done * width / total) as usize;
        let mut label = self.label();
        label.truncate(48);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}{}] {:3}% {:5.1}s  {}",
            "#".repeat(filled),
            ".".repeat(width as usize - filled),
            done * 100 / total,
            now as f64 / 1e3,
            label
        );
        let _ = err.flush();
    }

    pub fn finish(&self) {
        self.done.store(self.total.load(Ordering::Relaxed), Ordering::Relaxed);
        self.set_label("done");
        eprintln!();
    }
}
