//! The `km` fallback: functions that snapcall's own vmm cannot run (a KM snapshot with
//! several vCPUs, sockets, eventfds, epoll or signal handlers; KM's in-guest runtime; or a
//! bundle whose `snapcall.runner` annotation asks for km) are run by invoking Kontain's `km`
//! executable per call: `km SNAPSHOT` resumes a KM snapshot, `km PROGRAM ARGS` starts one.
//!
//! The request goes to km's stdin and the response comes from its stdout, under the same
//! deadline and output cap as a native call; the outcome uses the same [`Output`] type, so
//! callers map it to the same statuses.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bundle::{BundleConfig, BundleError, Limits, Runner};
use crate::call::Output;
use crate::snapshot::SNAPSHOT_FILE;

/// Why a km call did not produce an exit status.
#[derive(Debug, thiserror::Error)]
pub enum KmError {
    /// The function needs km and there is none.
    #[error("{function} needs Kontain's km ({why}), but no km executable was found (looked for {looked}); install km or set SNAPCALL_KM")]
    Missing {
        /// The function's name.
        function: String,
        /// Why it needs km.
        why: String,
        /// Where km was looked for.
        looked: String,
    },
    /// km could not be started.
    #[error("{function}: cannot start {km}: {source}")]
    Spawn {
        /// The function's name.
        function: String,
        /// The km executable.
        km: PathBuf,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// The call's deadline passed; km was killed.
    #[error("{function}: deadline of {timeout:?} passed (km killed)")]
    Deadline {
        /// The function's name.
        function: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Output went over the cap; km was killed.
    #[error("{function}: output went over the cap of {limit} bytes (km killed)")]
    OutputLimit {
        /// The function's name.
        function: String,
        /// The cap in bytes.
        limit: usize,
    },
    /// km died of a signal.
    #[error("{function}: km was killed by signal {signal}")]
    Signal {
        /// The function's name.
        function: String,
        /// The signal.
        signal: i32,
    },
    /// Reading km's output or waiting for it failed.
    #[error("{function}: talking to km: {source}")]
    Io {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// config.json is missing or malformed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

/// Why a bundle needs km, or `None` when the native vmm can run it.
pub fn needs_km(config: &BundleConfig) -> Option<String> {
    if config.runner == Runner::Km {
        return Some("its config.json sets snapcall.runner=km".into());
    }
    let path = config.dir.join(SNAPSHOT_FILE);
    if !path.exists() {
        return None;
    }
    let snap = snapshot_format::read_snapshot(&path, &snapshot_format::Limits::default()).ok()?;
    let verdict = snapshot_format::restore_verdict(&snap);
    (verdict.restorer == snapshot_format::Restorer::KmOnly)
        .then(|| format!("its snapshot needs km: {:?}", verdict.reasons))
}

/// A function run by km, one km process per call.
#[derive(Debug, Clone)]
pub struct KmFunction {
    config: BundleConfig,
    why: String,
    /// km's argv after the executable: the snapshot, or the program and its args.
    argv: Vec<PathBuf>,
}

impl KmFunction {
    /// Prepares the bundle at `dir` for km. `why` says why the native path won't do.
    pub fn load(dir: &Path, why: String) -> Result<KmFunction, KmError> {
        let config = BundleConfig::load(dir)?;
        let snapshot = config.dir.join(SNAPSHOT_FILE);
        let argv = if snapshot.exists() {
            vec![snapshot]
        } else {
            let program = config.rootfs.join(config.args[0].trim_start_matches('/'));
            std::iter::once(program).chain(config.args[1..].iter().map(PathBuf::from)).collect()
        };
        Ok(KmFunction { config, why, argv })
    }

    /// The function's name (its bundle directory's name).
    pub fn name(&self) -> &str {
        &self.config.name
    }
    /// Its bundle configuration.
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    /// Lowers the per-call deadline to at most `max` (an operator's cap).
    pub fn cap_timeout(&mut self, max: Duration) {
        self.config.limits.timeout = self.config.limits.timeout.min(max);
    }
    /// Why this function runs under km.
    pub fn why(&self) -> &str {
        &self.why
    }

    /// Finds the km executable: `configured`, else `$SNAPCALL_KM`, else `km` on `$PATH`.
    pub fn locate_km(&self, configured: Option<&Path>) -> Result<PathBuf, KmError> {
        let from_env = std::env::var_os("SNAPCALL_KM").map(PathBuf::from);
        let candidates: Vec<PathBuf> = match configured.map(Path::to_path_buf).or(from_env) {
            Some(p) => vec![p],
            None => std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join("km")).collect())
                .unwrap_or_default(),
        };
        let executable = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        candidates.iter().find(|p| executable(p)).cloned().ok_or_else(|| KmError::Missing {
            function: self.name().into(),
            why: self.why.clone(),
            looked: if candidates.len() == 1 { candidates[0].display().to_string() } else { "km on $PATH".into() },
        })
    }

    /// One call: a fresh km process with `request` on stdin, under the function's limits.
    pub fn call(&self, km: &Path, request: &[u8]) -> Result<Output, KmError> {
        let limits = &self.config.limits;
        let io = |source| KmError::Io { function: self.name().into(), source };
        let mut child = Command::new(km)
            .args(&self.argv)
            .env_clear()
            .envs(self.config.env.iter().filter_map(|kv| kv.split_once('=')))
            .current_dir(&self.config.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| KmError::Spawn { function: self.name().into(), km: km.into(), source })?;
        let result = pump(&mut child, request, limits);
        let pumped = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match e {
                    PumpError::Deadline => KmError::Deadline { function: self.name().into(), timeout: limits.timeout },
                    PumpError::OutputLimit => {
                        KmError::OutputLimit { function: self.name().into(), limit: limits.max_output_bytes }
                    }
                    PumpError::Io(e) => io(e),
                });
            }
        };
        let status = child.wait().map_err(io)?;
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Ok(Output { stdout: pumped.0, stderr: pumped.1, exit_code: code }),
            (None, Some(signal)) => Err(KmError::Signal { function: self.name().into(), signal }),
            (None, None) => Err(io(std::io::Error::other("km ended with no status"))),
        }
    }
}

enum PumpError {
    Deadline,
    OutputLimit,
    Io(std::io::Error),
}

/// Feeds stdin and drains stdout/stderr with poll(2) until both close, within the deadline
/// and the output cap; returns (stdout, stderr).
fn pump(child: &mut Child, request: &[u8], limits: &Limits) -> Result<(Vec<u8>, Vec<u8>), PumpError> {
    let deadline = Instant::now() + limits.timeout;
    let file = |fd: std::os::fd::OwnedFd| std::fs::File::from(fd);
    let mut stdin = child.stdin.take().map(|p| file(p.into()));
    let mut stdout = child.stdout.take().map(|p| file(p.into()));
    let mut stderr = child.stderr.take().map(|p| file(p.into()));
    for fd in [
        stdin.as_ref().map(|f| f.as_raw_fd()),
        stdout.as_ref().map(|f| f.as_raw_fd()),
        stderr.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        // SAFETY: fcntl on pipe fds we own, adding O_NONBLOCK.
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK) };
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0usize;
    if request.is_empty() {
        stdin = None;
    }
    let mut buf = vec![0u8; 64 << 10];
    while stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(PumpError::Deadline);
        }
        let mut fds = Vec::with_capacity(3);
        if let Some(f) = &stdin {
            fds.push(libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
        }
        for f in [stdout.as_ref().map(|f| f.as_raw_fd()), stderr.as_ref().map(|f| f.as_raw_fd())].into_iter().flatten()
        {
            fds.push(libc::pollfd { fd: f, events: libc::POLLIN, revents: 0 });
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: poll on a local array of pollfds for fds we own.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(PumpError::Io(e));
        }
        for p in &fds {
            if p.revents == 0 {
                continue;
            }
            if let Some(f) = stdin.as_mut().filter(|f| f.as_raw_fd() == p.fd) {
                match f.write(&request[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => written = request.len(), // km closed its stdin: stop feeding
                }
                if written >= request.len() {
                    stdin = None;
                }
                continue;
            }
            let (slot, sink) = if stdout.as_ref().is_some_and(|f| f.as_raw_fd() == p.fd) {
                (&mut stdout, &mut out)
            } else {
                (&mut stderr, &mut err)
            };
            let Some(reader) = slot.as_mut() else { continue };
            match reader.read(&mut buf) {
                Ok(0) => *slot = None,
                Ok(n) => sink.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {
                }
                Err(e) => return Err(PumpError::Io(e)),
            }
        }
        if out.len() + err.len() > limits.max_output_bytes {
            return Err(PumpError::OutputLimit);
        }
    }
    Ok((out, err))
}
