//! Shared by the `serve_*` integration tests: start the real `snapcall serve` binary on an
//! ephemeral loopback port over a directory of real bundles, and talk HTTP/1.1 to it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `target/functions` and `target/test-functions`, built once (C bundles only) if missing.
pub fn bundles() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<()> = OnceLock::new();
    let target = root().join("target");
    BUILT.get_or_init(|| {
        let needed =
            ["functions/echo-c", "functions/hello-c", "test-functions/exit-code", "test-functions/infinite-loop"];
        if needed.iter().all(|n| target.join(n).join("config.json").is_file()) {
            return;
        }
        let status = Command::new("bash")
            .arg(root().join("guest-functions/build.sh"))
            .arg("--no-python")
            // The bundles are made by `snapcall build`: this test's own binary.
            .env("SNAPCALL", env!("CARGO_BIN_EXE_snapcall"))
            .status()
            .expect("run guest-functions/build.sh");
        assert!(status.success(), "guest-functions/build.sh --no-python failed");
    });
    (target.join("functions"), target.join("test-functions"))
}

/// A fresh functions directory holding copies of the named bundles (looked up in
/// `target/functions`, then `target/test-functions`). Copies, not symlinks: a rebuild of
/// `target/` by someone else while a test runs must not change what the server serves.
pub fn functions_dir(names: &[&str]) -> PathBuf {
    let (functions, tests) = bundles();
    let dir = std::env::temp_dir().join(format!(
        "snapcall-serve-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        let src = [functions.join(name), tests.join(name)].into_iter().find(|p| p.join("config.json").is_file());
        let src = src.unwrap_or_else(|| panic!("bundle {name} not built"));
        let ok = Command::new("cp").arg("-a").arg(&src).arg(dir.join(name)).status().unwrap().success();
        assert!(ok, "copy {}", src.display());
    }
    dir
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How much of the default load to run: `SNAPCALL_SERVE_SCALE` (default 1.0).
pub fn scaled(n: usize) -> usize {
    let f: f64 = std::env::var("SNAPCALL_SERVE_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    ((n as f64 * f).round() as usize).max(1)
}

/// A running `snapcall serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server on `dir` with extra command-line arguments.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_snapcall"))
            .arg("serve")
            .arg("--functions")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start snapcall serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                    let _ = tx.send(addr);
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("server did not start: {}", log.lock().unwrap())
        });
        Server { child, addr, dir: dir.to_path_buf(), log }
    }

    /// One request on `c`; a failure shows the server's log.
    pub fn call(&self, c: &mut Client, method: &str, path: &str, body: &[u8]) -> Resp {
        c.send_raw(&encode(method, path, &[], body));
        c.read_response().unwrap_or_else(|| {
            let status = self.child_status();
            panic!("no response to {method} {path} (server {status}); log:\n{}", self.log.lock().unwrap())
        })
    }

    /// "running", or how the server ended (without reaping it).
    fn child_status(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: a zeroed siginfo_t is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid fills `info` for our own child; WNOWAIT leaves the child to be
        // reaped by `Child::wait` later.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: si_pid/si_status are valid to read after waitid reported a child.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        match (rc, pid, info.si_code) {
            (0, 0, _) => "running".into(),
            (0, _, libc::CLD_EXITED) => format!("exited with status {status}"),
            (0, _, code) => format!("killed by signal {status} (si_code {code})"),
            _ => "unknown".into(),
        }
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the process to exit (after SIGTERM); its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// The value of one Prometheus sample, e.g. `snapcall_calls_total{function="echo-c"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let r = self.connect().request("GET", "/metrics", &[], b"");
        let text = String::from_utf8(r.body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no sample {sample}"))
            .parse()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal keep-alive HTTP/1.1 client (Content-Length responses, which is all snapcall sends).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        self.send_raw(&encode(method, path, headers, body));
        self.read_response().expect("response")
    }

    /// Reads one response; `None` if the connection closed before a complete one.
    pub fn read_response(&mut self) -> Option<Resp> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                if status == 100 {
                    self.buf.drain(..end + 4);
                    return Some(Resp { status, headers, body: Vec::new() });
                }
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Some(Resp { status, headers, body });
                }
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// True if the server closed the connection (EOF or reset) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 256];
        loop {
            match self.stream.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
                }
            }
        }
    }
}

/// Request bytes with a Content-Length body (none for an empty GET).
pub fn encode(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Runs curl with `args`; returns (exit ok, stdout).
pub fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "30"]).args(args).output().expect("run curl");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `resp` has a `Date` header that is an IMF-fixdate of a second within the last
/// `secs` seconds (RFC 9110 §6.6.1: every response from a server with a clock).
pub fn has_current_date(resp: &Resp, secs: u64) -> bool {
    let Some(date) = resp.header("Date") else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    (0..=secs).any(|back| httpd::date::format(now - back).as_slice() == date.as_bytes())
}
