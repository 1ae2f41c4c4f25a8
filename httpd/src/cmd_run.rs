//! `snapcall run BUNDLE < request > response`: one call, in a fresh VM, from the bundle's
//! snapshot when it has a valid one (or cold with `--cold`). A failed call (fault, deadline,
//! signal...) exits 125 after printing what the program wrote to stdout before it, the
//! error, and the tail of the program's stderr.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use vmm::{Function, StartMode};

/// Command-line arguments of `snapcall run`.
#[derive(clap::Args)]
pub struct Args {
    /// The function's bundle directory (config.json + rootfs).
    bundle: PathBuf,
    /// The request: text, or @FILE for a file's bytes (default: stdin).
    #[arg(short = 'd', long = "data")]
    data: Option<String>,
    /// Start from the program's entry point even if a snapshot exists.
    #[arg(long)]
    cold: bool,
    /// Print every syscall the program makes to stderr.
    #[arg(long)]
    trace_syscalls: bool,
    /// Print the phase breakdown (create VM, load/restore, run, teardown) to stderr.
    #[arg(long)]
    timing: bool,
    /// Kontain's km executable, for bundles only km can run (default: $SNAPCALL_KM, then km on $PATH).
    #[arg(long)]
    km: Option<PathBuf>,
}

/// Exit status for calls that produced no exit status of their own.
const STATUS_CALL_FAILED: u8 = 125;

/// Why `snapcall run` produced no exit status of the program's own.
struct Failure {
    message: String,
    /// A failed call's last bytes of stderr, printed after the message.
    stderr_tail: Vec<u8>,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, stderr_tail: Vec::new() }
    }
}

pub fn main(args: Args) -> ExitCode {
    match run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(Failure { message, stderr_tail }) => {
            eprintln!("snapcall run: {message}");
            if !stderr_tail.is_empty() {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "snapcall run: the program's stderr (last {} bytes):", stderr_tail.len());
                let _ = err.write_all(&stderr_tail);
                let _ = writeln!(
                    err,
                    "{}snapcall run: end of the program's stderr",
                    if stderr_tail.ends_with(b"\n") { "" } else { "\n" }
                );
            }
            ExitCode::from(STATUS_CALL_FAILED)
        }
    }
}

fn run(args: &Args) -> Result<u8, Failure> {
    let config = vmm::BundleConfig::load(&args.bundle).map_err(|e| e.to_string())?;
    if let Some(why) = vmm::km::needs_km(&config) {
        return Ok(run_with_km(args, why)?);
    }
    let mode = if args.cold { StartMode::Cold } else { StartMode::Snapshot };
    let function = Function::load(&args.bundle, mode).map_err(|e| e.to_string())?;
    let request = read_request(args.data.as_deref())?;

    let t = Instant::now();
    let vm = vmm::EmptyVm::create(function.memory_size()).map_err(|e| e.to_string())?;
    let create = t.elapsed();
    let mut ready = function.start(vm, &request).map_err(|e| e.to_string())?;
    if args.trace_syscalls {
        ready.trace_syscalls(Box::new(|r| eprintln!("{}", format_syscall(r))));
    }
    let finished = ready.run();
    let timings = finished.timings();
    let stats = finished.stats().clone();
    for refusal in stats.refusals() {
        eprintln!("snapcall: {}: {refusal}", function.name());
    }
    // Both empty when the program exited; kept past into_parts, which gives the VM up.
    let stderr_tail = finished.stderr_tail().to_vec();
    let failed_stdout = finished.failed_stdout().to_vec();
    let (outcome, used_vm) = finished.into_parts();
    let t = Instant::now();
    drop(used_vm);
    let teardown = t.elapsed();
    if args.timing {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "timing: create_vm={:.3}ms {}={:.3}ms run={:.3}ms teardown={:.3}ms exits={} syscalls={} host_page_faults={}",
            ms(create),
            if stats.restored { "restore" } else { "load" },
            ms(timings.start),
            ms(timings.run),
            ms(teardown),
            stats.exits,
            stats.syscalls,
            stats.host_page_faults
        );
    }
    match outcome {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out.stdout).and_then(|_| stdout.flush()).map_err(|e| format!("writing stdout: {e}"))?;
            std::io::stderr().write_all(&out.stderr).map_err(|e| format!("writing stderr: {e}"))?;
            Ok((out.exit_code & 0xFF) as u8)
        }
        Err(e) => {
            // What the program wrote before it failed still goes out: a partial answer (a
            // test runner's results up to the test that crashed) says more than none.
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&failed_stdout)
                .and_then(|_| stdout.flush())
                .map_err(|e| format!("writing stdout: {e}"))?;
            Err(Failure { message: format!("{}: {e}", function.name()), stderr_tail })
        }
    }
}

/// `-d DATA`, `-d @FILE`, or stdin.
fn read_request(data: Option<&str>) -> Result<Vec<u8>, String> {
    match data.map(|d| d.strip_prefix('@').ok_or(d)) {
        Some(Err(text)) => Ok(text.as_bytes().to_vec()),
        Some(Ok(path)) if path != "-" => std::fs::read(path).map_err(|e| format!("-d @{path}: {e}")),
        _ => {
            let mut request = Vec::new();
            std::io::stdin().read_to_end(&mut request).map_err(|e| format!("reading stdin: {e}"))?;
            Ok(request)
        }
    }
}

fn format_syscall(r: &vmm::SyscallRecord) -> String {
    let a = r.args;
    let result = match r.result {
        Some(v) if (-4095..0).contains(&v) => format!("-{} ({})", -v, errno_name(-v as i32)),
        Some(v) => format!("{v:#x}"),
        None => "(stops the call)".into(),
    };
    format!(
        "syscall {}({:#x}, {:#x}, {:#x}, {:#x}, {:#x}, {:#x}) = {result}",
        vmm::syscall_name(r.nr),
        a[0],
        a[1],
        a[2],
        a[3],
        a[4],
        a[5]
    )
}

fn errno_name(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

/// A bundle only Kontain's km can run: one km process, same stdin/stdout/exit contract.
fn run_with_km(args: &Args, why: String) -> Result<u8, String> {
    let function = vmm::km::KmFunction::load(&args.bundle, why).map_err(|e| e.to_string())?;
    let km = function.locate_km(args.km.as_deref()).map_err(|e| e.to_string())?;
    let request = read_request(args.data.as_deref())?;
    let started = Instant::now();
    let out = function.call(&km, &request).map_err(|e| e.to_string())?;
    if args.timing {
        eprintln!("timing: km={:.3}ms ({})", started.elapsed().as_secs_f64() * 1e3, function.why());
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out.stdout).and_then(|_| stdout.flush()).map_err(|e| format!("writing stdout: {e}"))?;
    std::io::stderr().write_all(&out.stderr).map_err(|e| format!("writing stderr: {e}"))?;
    Ok((out.exit_code & 0xFF) as u8)
}
