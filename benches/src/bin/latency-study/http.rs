//! A minimal HTTP/1.1 keep-alive client (one connection, one request at a time) and the
//! child servers it talks to, all on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::progress::Progress;

/// One response: status, the `Server-Timing` header if any, the body.
pub struct Response {
    pub status: u16,
    pub server_timing: Option<String>,
    pub body: Vec<u8>,
}

pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    host: String,
}

const IO_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE: usize = 16 << 20;

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Result<Client, String> {
        assert!(addr.ip().is_loopback(), "the study talks to 127.0.0.1 only");
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(Client { stream, buf: Vec::with_capacity(4096), host: addr.to_string() })
    }

    /// POSTs `body` to `path` and reads the whole response (Content-Length framing).
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> Result<Response, String> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req).map_err(|e| format!("write: {e}"))?;
        self.buf.clear();
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.read_more(&mut chunk)?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut length = None;
        let mut server_timing = None;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("server-timing") {
                    server_timing = Some(v.to_string());
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    return Err("chunked responses are not supported by the study's client".into());
                }
            }
        }
        let length = length.ok_or("response without Content-Length")?;
        if length > MAX_RESPONSE {
            return Err(format!("response of {length} bytes"));
        }
        while self.buf.len() < head_end + length {
            self.read_more(&mut chunk)?;
        }
        let body = self.buf[head_end..head_end + length].to_vec();
        Ok(Response { status, server_timing, body })
    }

    fn read_more(&mut self, chunk: &mut [u8]) -> Result<(), String> {
        if self.buf.len() > MAX_RESPONSE {
            return Err("response too large".into());
        }
        match self.stream.read(chunk) {
            Ok(0) => Err("connection closed by the server".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }
}

/// `queue;dur=0.004, vm;dur=0.003, ...` → (name, ms) pairs.
pub fn parse_server_timing(h: &str) -> Vec<(String, f64)> {
    h.split(',')
        .filter_map(|m| {
            let mut parts = m.trim().split(';');
            let name = parts.next()?.trim().to_string();
            let dur = parts.find_map(|p| p.trim().strip_prefix("dur="))?.parse::<f64>().ok()?;
            Some((name, dur))
        })
        .collect()
}

/// A server started by the study; killed (SIGTERM, then SIGKILL) when dropped.
pub struct ServerChild {
    child: Child,
    pub addr: SocketAddr,
    progress: &'static Progress,
}

impl ServerChild {
    /// Spawns `cmd` with stderr to `log` and waits (≤ 60 s) for `marker` followed by
    /// `http://ADDR` to appear in it.
    pub fn start(
        mut cmd: Command,
        log: &Path,
        marker: &str,
        progress: &'static Progress,
    ) -> Result<ServerChild, String> {
        let file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(file);
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        progress.children.lock().unwrap_or_else(|e| e.into_inner()).push(child.id() as i32);
        let mut server = ServerChild { child, addr: "127.0.0.1:0".parse().unwrap(), progress };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains(marker)) {
                let addr = line
                    .split("http://")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| c.is_whitespace() || c == '/').next())
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .ok_or_else(|| format!("cannot read the address in {line:?}"))?;
                server.addr = addr;
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("server exited with {status} before listening; log {}:\n{text}", log.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("server did not report listening within 60 s; see {}", log.display()))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A GET, answered body as text (for /metrics).
    pub fn get_text(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).ok()?;
        s.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).ok()?;
        let mut out = Vec::new();
        s.take(MAX_RESPONSE as u64).read_to_end(&mut out).ok()?;
        Some(String::from_utf8_lossy(&out).to_string())
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.progress.children.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
    }
}
