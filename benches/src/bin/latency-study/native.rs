//! Native baselines: a static program started per call, its request on a stdin pipe and its
//! response read from a stdout pipe to EOF, then reaped. Two ways to start it: fork+execve
//! (what a naive server does) and posix_spawn (glibc's vfork-style CLONE_VM|CLONE_VFORK).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// How the child is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawn {
    ForkExec,
    PosixSpawn,
}

/// A program with its argv and envp prepared once (no allocation between fork and exec).
pub struct Program {
    path: CString,
    _args: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    devnull: i32,
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in arguments")
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl Program {
    pub fn new(path: &Path, args: &[String], env: &[String]) -> Program {
        let path = CString::new(path.as_os_str().as_bytes()).expect("path without NUL");
        let args: Vec<CString> = args.iter().map(|a| cstr(a)).collect();
        let env: Vec<CString> = env.iter().map(|e| cstr(e)).collect();
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: open(2) of a constant path; the fd is owned by this Program.
        let devnull = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        Program { path, _args: args, _env: env, argv, envp, devnull }
    }

    /// Starts the program, writes `request` to its stdin, reads its stdout to EOF and reaps it.
    pub fn call(&self, how: Spawn, request: &[u8]) -> Result<Vec<u8>, String> {
        let mut stdin = [0i32; 2];
        let mut stdout = [0i32; 2];
        // SAFETY: pipe2 into local arrays.
        if unsafe { libc::pipe2(stdin.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os_err("pipe2"));
        }
        // SAFETY: as above.
        if unsafe { libc::pipe2(stdout.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(os_err("pipe2"));
        }
        let pid = match how {
            Spawn::ForkExec => self.fork_exec(stdin[0], stdout[1]),
            Spawn::PosixSpawn => self.posix_spawn(stdin[0], stdout[1]),
        };
        // SAFETY: closing the child's ends, which we own.
        unsafe {
            libc::close(stdin[0]);
            libc::close(stdout[1]);
        }
        let result = match pid {
            Err(e) => {
                // SAFETY: closing our write end; no child will read it.
                unsafe { libc::close(stdin[1]) };
                Err(e)
            }
            Ok(pid) => exchange(pid, stdin[1], stdout[0], request),
        };
        // SAFETY: closing our read end (stdin[1] was closed on every path above).
        unsafe { libc::close(stdout[0]) };
        result
    }

    fn fork_exec(&self, stdin: i32, stdout: i32) -> Result<i32, String> {
        // SAFETY: fork(2). The child only calls async-signal-safe functions (dup2, execve,
        // _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork"));
        }
        if pid == 0 {
            // SAFETY: in the child: wire the pipes to fds 0-2 and exec; never return.
            unsafe {
                libc::dup2(stdin, 0);
                libc::dup2(stdout, 1);
                libc::dup2(self.devnull, 2);
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(pid)
    }

    fn posix_spawn(&self, stdin: i32, stdout: i32) -> Result<i32, String> {
        let mut pid = 0;
        // SAFETY: posix_spawn file actions initialised, used and destroyed here; argv and
        // envp are NULL-terminated arrays of live C strings.
        unsafe {
            let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            libc::posix_spawn_file_actions_init(&mut fa);
            libc::posix_spawn_file_actions_adddup2(&mut fa, stdin, 0);
            libc::posix_spawn_file_actions_adddup2(&mut fa, stdout, 1);
            libc::posix_spawn_file_actions_adddup2(&mut fa, self.devnull, 2);
            let rc = libc::posix_spawn(
                &mut pid,
                self.path.as_ptr(),
                &fa,
                std::ptr::null(),
                self.argv.as_ptr() as *const *mut libc::c_char,
                self.envp.as_ptr() as *const *mut libc::c_char,
            );
            libc::posix_spawn_file_actions_destroy(&mut fa);
            if rc != 0 {
                return Err(format!("posix_spawn: {}", std::io::Error::from_raw_os_error(rc)));
            }
        }
        Ok(pid)
    }
}

/// Writes the request and closes `stdin_w`, reads `stdout_r` to EOF (not closing it), reaps.
fn exchange(pid: i32, stdin_w: i32, stdout_r: i32, request: &[u8]) -> Result<Vec<u8>, String> {
    let mut off = 0;
    while off < request.len() {
        // SAFETY: writing from a live slice to our pipe end.
        let n = unsafe { libc::write(stdin_w, request[off..].as_ptr().cast(), request.len() - off) };
        if n <= 0 {
            break; // the child closed its stdin early; its output tells
        }
        off += n as usize;
    }
    // SAFETY: closing our write end: the child sees EOF.
    unsafe { libc::close(stdin_w) };
    let mut out = Vec::with_capacity(256);
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(stdout_r, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        if n <= 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(os_err("waitpid"));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("child exited with status {status:#x}"));
    }
    Ok(out)
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: closing our own fd.
        unsafe { libc::close(self.devnull) };
    }
}
