//! `snapcall serve`: serve every bundle in a directory over HTTP/1.1 (see docs/httpd.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[path = "serve/mod.rs"]
mod serve;

use serve::app::App;
use serve::logs::{LogConfig, Logs};
use serve::metrics::Metrics;
use serve::registry::{Caps, Registry, Summary};

/// Command-line arguments of `snapcall serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with one function bundle per subdirectory; the subdirectory's name is the route.
    #[arg(long, env = "SNAPCALL_FUNCTIONS")]
    functions: PathBuf,
    /// Address to listen on (port 0: any free port, printed on stderr).
    #[arg(long, env = "SNAPCALL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Event loops, each with its own SO_REUSEPORT listener (default: one per two cores; the
    /// other core runs the VM pool and reaper threads, see docs/httpd.md).
    #[arg(long, env = "SNAPCALL_THREADS")]
    threads: Option<usize>,
    /// Calls making progress at once, on worker threads (default: one per two cores); a call
    /// running over 500 ms stops counting and another worker takes the next (up to --max-inflight).
    #[arg(long, env = "SNAPCALL_WORKERS")]
    workers: Option<usize>,
    /// Run calls on the event loop that read them instead (for measurement only: one long
    /// call then delays every other request of its loop, /healthz included).
    #[arg(long, env = "SNAPCALL_INLINE_CALLS", conflicts_with = "workers")]
    inline_calls: bool,
    /// VMs kept ready per function (0: create and destroy each VM inline).
    #[arg(long, env = "SNAPCALL_POOL_SIZE", default_value_t = 4)]
    pool_size: usize,
    /// A function with no call for this long gives its ready VMs back (scale to zero), seconds.
    #[arg(long, env = "SNAPCALL_POOL_IDLE_SECS", default_value_t = 60)]
    pool_idle_secs: u64,
    /// Threads making VMs ahead (more keep up with a faster arrival rate, each costing a core).
    #[arg(long, env = "SNAPCALL_POOL_THREADS", default_value_t = 1)]
    pool_threads: usize,
    /// Nice value of the threads making and destroying VMs while their work can wait (a
    /// function still has a ready VM): calls then take the cores first. 0 keeps them at the
    /// normal priority; so does a process that could not lower it back (no CAP_SYS_NICE).
    #[arg(long, env = "SNAPCALL_POOL_NICE", default_value_t = vmm::DEFAULT_POOL_NICE,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pool_nice: i32,
    /// EXPERIMENT, for measuring what freshness costs; never for production: keep each finished
    /// call's KVM VM as a "recycled shell" (memory replaced, vCPU state reset) for a later call
    /// of a snapshot function, instead of a new VM per call (docs/vmm.md, "What freshness costs").
    #[arg(long, env = "SNAPCALL_EXPERIMENTAL_RECYCLE_VM_SHELLS")]
    experimental_recycle_vm_shells: bool,
    /// Do not reuse a destroyed VM's host memory, reset, for the next new VM of the same
    /// snapshot; map and populate new memory for every VM instead (to compare: docs/vmm.md).
    #[arg(long, env = "SNAPCALL_NO_MEMORY_REUSE")]
    no_memory_reuse: bool,
    /// Kontain's km executable, for bundles only km can run (default: $SNAPCALL_KM, then km on $PATH).
    #[arg(long, env = "SNAPCALL_KM")]
    km: Option<PathBuf>,
    /// Start calls cold (load the ELF) even when a snapshot exists.
    #[arg(long, env = "SNAPCALL_COLD")]
    cold: bool,
    /// Largest request body, bytes (413 above).
    #[arg(long, env = "SNAPCALL_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body_bytes: u64,
    /// Open connections, all loops together.
    #[arg(long, env = "SNAPCALL_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Calls admitted and not yet answered, all loops together (503 above).
    #[arg(long, env = "SNAPCALL_MAX_INFLIGHT", default_value_t = 256)]
    max_inflight: usize,
    /// Calls of one function admitted and not yet answered (429 above).
    #[arg(long, env = "SNAPCALL_MAX_CONCURRENCY_PER_FUNCTION", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    max_concurrency_per_function: u64,
    /// Longest per-call deadline a bundle may set (a longer snapcall.timeout_ms is lowered to it), ms.
    #[arg(long, env = "SNAPCALL_MAX_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_timeout_ms: u64,
    /// Largest guest memory a bundle may ask for (a bundle asking more is not loaded), MiB.
    #[arg(long, env = "SNAPCALL_MAX_MEMORY_MIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_memory_mib: u64,
    /// From a request's first byte to the end of its head, ms.
    #[arg(long, env = "SNAPCALL_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// From the end of a head to the end of its body, ms.
    #[arg(long, env = "SNAPCALL_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Keep-alive connection without a request, ms.
    #[arg(long, env = "SNAPCALL_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// Serve the OpenFaaS faas-provider API on /system/* (deploy, scale, secrets; docs/provider.md).
    /// Off by default: it lets its callers run code and write into --functions.
    #[arg(long, env = "SNAPCALL_PROVIDER")]
    provider: bool,
    /// Local image store the provider deploys images from: OCI layouts (DIR/REGISTRY/REPO/) or
    /// archives (DIR/REGISTRY/REPO.tar), as skopeo and umoci write them.
    #[arg(long, env = "SNAPCALL_IMAGES", requires = "provider")]
    images: Option<PathBuf>,
    /// Require basic auth on /system/* (OpenFaaS's basic_auth=true), with the credentials in
    /// the files basic-auth-user and basic-auth-password under --secret-mount-path.
    #[arg(long, env = "SNAPCALL_BASIC_AUTH", requires = "provider")]
    basic_auth: bool,
    /// Where the basic-auth credential files are (OpenFaaS's secret_mount_path).
    #[arg(long, env = "SNAPCALL_SECRET_MOUNT_PATH", default_value = "/var/openfaas/secrets")]
    secret_mount_path: PathBuf,
    /// The most an image may unpack to (all layers, uncompressed), MiB.
    #[arg(long, env = "SNAPCALL_MAX_IMAGE_MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_image_mib: u64,
    /// On SIGTERM, how long requests in progress may take before connections are cut, ms.
    #[arg(long, env = "SNAPCALL_SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    shutdown_grace_ms: u64,
    /// Where one line per answered request goes: stderr, off, or a file path (appended to).
    #[arg(long, env = "SNAPCALL_ACCESS_LOG", default_value = "stderr")]
    access_log: serve::access_log::Destination,
    /// Most bytes of log lines kept per function for /system/logs (the oldest go first).
    #[arg(long, env = "SNAPCALL_LOG_RING_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(4096..=1 << 30))]
    log_ring_bytes: u64,
}

fn log_summary(s: &Summary) {
    eprintln!(
        "snapcall serve: functions: {} added, {} changed, {} removed, {} unchanged{}",
        s.added.len(),
        s.changed.len(),
        s.removed.len(),
        s.kept,
        if s.added.is_empty() { String::new() } else { format!(" (added: {})", s.added.join(", ")) }
    );
    for (name, why) in &s.failed {
        eprintln!("snapcall serve: {name}: not loaded: {why}");
    }
}

pub fn main(args: Args) -> ExitCode {
    // Before any thread exists (the vmm runtime starts its pool and reaper threads).
    serve::block_signals();
    // Measured on 2 cores (docs/httpd.md): two loops creating and restoring VMs at once
    // contend on the process's mm-wide locks (KVM_CREATE_VM takes all of them) and each call
    // got 4-5x slower; one loop with the pool and reaper threads beside it doubled calls/s.
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
    let pool = vmm::RuntimeConfig {
        pool_size: args.pool_size,
        idle_timeout: Duration::from_secs(args.pool_idle_secs),
        fill_threads: args.pool_threads,
        recycle_vm_shells: args.experimental_recycle_vm_shells,
        reuse_memory: !args.no_memory_reuse,
        background_nice: args.pool_nice,
    };
    if args.experimental_recycle_vm_shells {
        eprintln!(
            "snapcall serve: EXPERIMENT: recycling VM shells; calls of snapshot functions no longer get a VM no other call ran in"
        );
    }
    let runtime = match vmm::Runtime::new(pool) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("snapcall serve: cannot start the VM runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.pool_nice != 0 && runtime.background_nice() == 0 {
        eprintln!(
            "snapcall serve: the pool's threads stay at the normal priority: this process could not lower a nice value back (no CAP_SYS_NICE, RLIMIT_NICE below 20)"
        );
    }
    let mode = if args.cold { vmm::StartMode::Cold } else { vmm::StartMode::Snapshot };
    let metrics = Arc::new(Metrics::default());
    let caps =
        Caps { max_timeout: Duration::from_millis(args.max_timeout_ms), max_memory_bytes: args.max_memory_mib << 20 };
    let registry = Arc::new(Registry::new(args.functions.clone(), mode, caps));
    match registry.rescan(&runtime, &metrics) {
        Ok(s) => log_summary(&s),
        Err(e) => {
            eprintln!("snapcall serve: cannot read {}: {e}", args.functions.display());
            return ExitCode::FAILURE;
        }
    }
    let provider = if args.provider {
        let auth = if args.basic_auth {
            match serve::provider::auth::BasicAuth::load(&args.secret_mount_path) {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("snapcall serve: --basic-auth: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            None
        };
        let cfg = serve::provider::ProviderConfig {
            namespace: serve::routes::NAMESPACE.to_string(),
            images: args.images.clone(),
            auth,
            unpack: oci_image::UnpackLimits { max_bytes: args.max_image_mib << 20, ..Default::default() },
        };
        match serve::provider::Provider::new(cfg, registry.clone(), runtime.clone(), metrics.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("snapcall serve: --provider: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let access_log = match serve::access_log::AccessLog::start(&args.access_log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("snapcall serve: cannot open the access log {:?}: {e}", args.access_log);
            return ExitCode::FAILURE;
        }
    };
    let app = Arc::new(App {
        provider,
        runtime,
        registry,
        metrics: metrics.clone(),
        km: args.km.clone(),
        max_concurrency_per_function: usize::try_from(args.max_concurrency_per_function).unwrap_or(usize::MAX),
        logs: Logs::new(LogConfig {
            ring_bytes: usize::try_from(args.log_ring_bytes).unwrap_or(usize::MAX),
            ..LogConfig::default()
        }),
        access_log,
        follower_count: Default::default(),
    });

    let mut loops = serve::default_loop_config();
    loops.limits.max_body = args.max_body_bytes;
    loops.max_connections = args.max_connections;
    loops.max_inflight = args.max_inflight;
    loops.header_timeout = Duration::from_millis(args.header_timeout_ms);
    loops.body_timeout = Duration::from_millis(args.body_timeout_ms);
    loops.idle_timeout = Duration::from_millis(args.idle_timeout_ms);
    loops.shutdown_grace = Duration::from_millis(args.shutdown_grace_ms);
    // Calls never run on a loop thread (unless --inline-calls): a call spinning to its
    // deadline must not stall /healthz and every other request of its loop.
    let calls = if args.inline_calls {
        serve::CallThreads::Inline
    } else {
        // As many calls at once as there were loops running inline calls (one per two cores,
        // measured in docs/httpd.md); stuck calls do not count (workers.rs).
        let per_two_cores = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        serve::CallThreads::Workers { threads: args.workers.unwrap_or(per_two_cores).max(1) }
    };
    let cfg = serve::ServerConfig { listen: args.listen, threads, calls, loops };

    let reload_app = app.clone();
    let result = serve::serve(cfg, app, metrics, move || {
        eprintln!("snapcall serve: SIGHUP: rescanning {}", args.functions.display());
        match reload_app.registry.rescan(&reload_app.runtime, &reload_app.metrics) {
            Ok(s) => log_summary(&s),
            Err(e) => eprintln!("snapcall serve: rescan failed: {e}"),
        }
    });
    match result {
        Ok(()) => {
            eprintln!("snapcall serve: stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("snapcall serve: {e}");
            ExitCode::FAILURE
        }
    }
}
