//! A function: a bundle prepared for calls. Parsed once (config, program, rootfs, snapshot),
//! then started any number of times, each time in a VM no other call has used.
//!
//! Two recipes end in the same [`ReadyCall`]: a cold start loads the ELF program and builds
//! its initial stack; a restore maps the snapshot copy-on-write and sets the saved vCPU state.

use std::path::Path;
use std::time::{Duration, Instant};

use kvm_bindings::kvm_regs;

use crate::bundle::{BundleConfig, BundleError};
use crate::call::{CallStats, PhaseTimings, ReadyCall};
use crate::files::Rootfs;
use crate::layout::GuestAddr;
use crate::layout::{KERNEL_STACK_TOP, SYSCALL_RETURN_PATH};
use crate::loader::{build_stack, LoadError, Program};
use crate::mm::{self, AddressSpace};
use crate::process::{Process, ProcessSpec};
use crate::request::RequestHead;
use crate::snapshot::{SnapshotError, SnapshotImage, SnapshotReport, SnapshotSubject};
use crate::vdso;
use crate::verified::Stamp;
use crate::vm::{EmptyVm, FreshVm, VmError};

/// Whether calls start from the bundle's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Use `snapshot.kmsnap` when it is there and valid for this bundle; else start cold.
    Snapshot,
    /// Always load the program and run it from its entry point.
    Cold,
}

/// Why a function could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// config.json is missing or malformed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The bundle's rootfs could not be opened.
    #[error("{function}: cannot open rootfs {path}: {source}")]
    Rootfs {
        /// The function's name.
        function: String,
        /// The rootfs's host path.
        path: String,
        /// What failed underneath.
        source: std::io::Error,
    },
    /// The program (`args[0]`) could not be read from the rootfs.
    #[error("{function}: cannot read program {path} in its rootfs: errno {errno}")]
    Program {
        /// The function's name.
        function: String,
        /// The program's path inside the rootfs.
        path: String,
        /// The errno the kernel returned.
        errno: i32,
    },
    /// The program file changed since the function was loaded.
    #[error("{function}: program {path} changed since the function was loaded; load it again")]
    ProgramChanged {
        /// The function's name.
        function: String,
        /// The program's path inside the rootfs.
        path: String,
    },
    /// The program is not a static x86-64 executable snapcall can load.
    #[error("{function}: {source}")]
    Load {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: LoadError,
    },
    /// The bundle's snapshot is corrupt, stale or not this function's.
    #[error("{function}: {source}")]
    Snapshot {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: Box<SnapshotError>,
    },
}

/// Why a call could not be started in its VM.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The VM's memory is not the function's memory size.
    #[error("{function}: VM memory is {vm:#x} bytes but the function needs {needed:#x}")]
    WrongVmSize {
        /// The function's name.
        function: String,
        /// The VM's memory size.
        vm: u64,
        /// The function's.
        needed: u64,
    },
    /// Loading the program cold failed.
    #[error("{function}: loading the program: {source}")]
    Load {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: LoadError,
    },
    /// Restoring the snapshot into the VM failed.
    #[error("{function}: restoring the snapshot: {source}")]
    Restore {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: Box<SnapshotError>,
    },
    /// Setting the VM up for the program failed.
    #[error("{function}: {source}")]
    Vm {
        /// The function's name.
        function: String,
        /// What failed underneath.
        source: VmError,
    },
    /// The program could not be read (a cold start reads it on first use).
    #[error(transparent)]
    Program(Box<FunctionError>),
    /// The VM holds a snapshot restored ahead for another function (or another version of
    /// this one's snapshot), or its memory is laid out for one: it can start only the
    /// function it was prepared for.
    #[error("{function}: the VM was restored ahead, or its memory laid out, for another snapshot")]
    PreparedForAnother {
        /// The function's name.
        function: String,
    },
}

/// A function bundle ready to be called.
pub struct Function {
    pub(crate) config: BundleConfig,
    /// The program's path inside the rootfs (`args[0]`).
    pub(crate) program_path: String,
    /// Which version of the program file this function was loaded against.
    pub(crate) program_stamp: Stamp,
    /// The program, read and parsed when first needed: a restore from a snapshot verified
    /// before ([`crate::verified`]) never reads it.
    program: std::sync::OnceLock<Program>,
    pub(crate) rootfs: Rootfs,
    /// Every call's process description (rootfs, program, cwd, limits), built once here and
    /// handed to both recipes.
    pub(crate) spec: ProcessSpec,
    pub(crate) snapshot: Option<std::sync::Arc<SnapshotImage>>,
}

impl Function {
    /// Prepares the bundle at `dir`. With [`StartMode::Snapshot`], a snapshot that does not
    /// match this bundle (stale, corrupt) is an error, never silently used.
    pub fn load(dir: &Path, mode: StartMode) -> Result<Function, FunctionError> {
        let config = BundleConfig::load(dir)?;
        let name = config.name.clone();
        let rootfs = Rootfs::open(&config.rootfs).map_err(|source| FunctionError::Rootfs {
            function: name.clone(),
            path: config.rootfs.display().to_string(),
            source,
        })?;
        let program_path = config.args[0].clone();
        let program_err = |errno| FunctionError::Program { function: name.clone(), path: program_path.clone(), errno };
        let handle = rootfs.open_in_root(&program_path, libc::O_PATH).map_err(|e| program_err(e.0))?;
        let program_stamp = Stamp::of_file(&std::fs::File::from(handle)).map_err(|e| program_err(errno_of(e)))?;
        let spec = ProcessSpec {
            rootfs: rootfs.clone(),
            exe_path: program_path.clone(),
            cwd: config.cwd.clone(),
            max_output: config.limits.max_output_bytes,
            timeout: config.limits.timeout,
        };
        let mut function = Function {
            config,
            program_path,
            program_stamp,
            program: std::sync::OnceLock::new(),
            rootfs,
            spec,
            snapshot: None,
        };
        if mode == StartMode::Snapshot {
            let image = SnapshotImage::open_for(&function.subject())
                .map_err(|source| FunctionError::Snapshot { function: name.clone(), source: Box::new(source) })?;
            function.snapshot = image.map(std::sync::Arc::new);
        }
        // Without a snapshot calls start cold: find out now whether the program can.
        if function.snapshot.is_none() {
            function.program()?;
        }
        Ok(function)
    }

    /// The program, read and parsed on first use. It must be the version the function was
    /// loaded against (the same stamp), or the snapshot checks made then would not hold.
    pub(crate) fn program(&self) -> Result<&Program, FunctionError> {
        if let Some(p) = self.program.get() {
            return Ok(p);
        }
        let name = self.name();
        let err = |errno| FunctionError::Program { function: name.into(), path: self.program_path.clone(), errno };
        let (bytes, stamp) = read_in_root(&self.rootfs, &self.program_path).map_err(err)?;
        if stamp != self.program_stamp {
            return Err(FunctionError::ProgramChanged { function: name.into(), path: self.program_path.clone() });
        }
        let program = Program::parse(&self.program_path, bytes, self.config.limits.memory_bytes)
            .map_err(|source| FunctionError::Load { function: name.into(), source })?;
        Ok(self.program.get_or_init(|| program))
    }

    /// The function's name (its bundle directory's name).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Lowers the per-call deadline to at most `max` (an operator's cap over what the
    /// bundle's config.json asks for); [`Function::config`] shows the deadline in force.
    pub fn cap_timeout(&mut self, max: Duration) {
        self.config.limits.timeout = self.config.limits.timeout.min(max);
        self.spec.timeout = self.config.limits.timeout;
    }
    /// Its bundle configuration (limits, content type, annotations).
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }
    /// Guest memory size a VM for this function must have.
    pub fn memory_size(&self) -> u64 {
        self.config.limits.memory_bytes
    }
    /// The snapshot calls restore, if any.
    pub fn snapshot(&self) -> Option<&std::sync::Arc<SnapshotImage>> {
        self.snapshot.as_ref()
    }

    /// Runs the function cold until it first reads stdin and writes its snapshot to `out`
    /// (the state there, then the working set that calls from it touch).
    pub fn take_snapshot(&self, out: &Path) -> Result<SnapshotReport, SnapshotError> {
        let vm = EmptyVm::create(self.memory_size())?;
        let ready = self.start_for_snapshot(vm).map_err(|e| SnapshotError::Start(Box::new(e)))?;
        let at = ready.run_until_stdin_read()?;
        crate::snapshot::capture(&self.subject(), at, out)
    }

    /// What snapshots see of this function (`snapshot.rs` needs nothing else of it).
    pub(crate) fn subject(&self) -> SnapshotSubject<'_> {
        SnapshotSubject {
            dir: &self.config.dir,
            memory_size: self.memory_size(),
            config_source: &self.config.source,
            program_stamp: self.program_stamp,
            program: Box::new(|| self.program()),
            spec: &self.spec,
            warmup_request: self.config.warmup_request.as_deref(),
        }
    }

    /// Whether calls restore a snapshot.
    pub fn has_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Puts the program into `vm`, from the snapshot if there is one, with `request` as its
    /// stdin and the default request head (`POST /`, no headers) in
    /// [`crate::request::REQUEST_FILE`]. The VM must not have been used (the type guarantees it).
    pub fn start(&self, vm: impl Into<FreshVm>, request: &[u8]) -> Result<ReadyCall, StartError> {
        self.start_request(vm, RequestHead::default(), request)
    }

    /// As [`Function::start`], for an HTTP request: `body` on stdin, `head` (moved in, not
    /// copied) behind [`crate::request::REQUEST_FILE`].
    pub fn start_request(
        &self,
        vm: impl Into<FreshVm>,
        head: RequestHead,
        body: &[u8],
    ) -> Result<ReadyCall, StartError> {
        // A watchdog function that starts cold gets the request in its environment too.
        let watchdog_env = (self.config.watchdog && self.snapshot.is_none()).then(|| {
            let mut env = self.config.env.clone();
            env.extend(head.watchdog_env());
            env
        });
        let mut ready = self.restore_or_load(vm.into(), body, watchdog_env.as_deref())?;
        ready.process.request_head = Some(head);
        Ok(ready)
    }

    /// Restores the snapshot into `vm`, or loads the program cold (with `cold_env` instead of
    /// the bundle's environment when given), with `request` on stdin.
    fn restore_or_load(
        &self,
        vm: FreshVm,
        request: &[u8],
        cold_env: Option<&[String]>,
    ) -> Result<ReadyCall, StartError> {
        let started = Instant::now();
        if vm.memory_size() != self.memory_size() {
            return Err(StartError::WrongVmSize {
                function: self.name().into(),
                vm: vm.memory_size(),
                needed: self.memory_size(),
            });
        }
        // A VM restored ahead, or made around a memory kept from a finished VM (which still
        // maps its snapshot: `memory_reuse.rs`), belongs to that snapshot's function alone.
        let belongs_to = match &vm {
            FreshVm::Prepared(vm) => Some(vm.image),
            FreshVm::Empty(vm) => vm.machine.memory.laid_out_for(),
        };
        if belongs_to.is_some_and(|id| Some(id) != self.snapshot.as_ref().map(|image| image.id())) {
            return Err(StartError::PreparedForAnother { function: self.name().into() });
        }
        let mut ready = match (&self.snapshot, vm) {
            (Some(image), vm) => image
                .restore(&self.spec, vm, request)
                .map_err(|source| StartError::Restore { function: self.name().into(), source: Box::new(source) })?,
            (None, FreshVm::Empty(vm)) => {
                let mut ready = self.start_cold_with_env(vm, cold_env.unwrap_or(&self.config.env))?;
                ready.set_stdin(request);
                ready
            }
            (None, FreshVm::Prepared(_)) => {
                return Err(StartError::PreparedForAnother { function: self.name().into() })
            }
        };
        ready.timings.start = started.elapsed();
        Ok(ready)
    }

    /// Cold start: the program from its entry point, stopped nowhere (for tests that edit
    /// the VM before the program runs).
    #[cfg(test)]
    pub(crate) fn start_cold(&self, vm: EmptyVm) -> Result<ReadyCall, StartError> {
        self.start_cold_with_env(vm, &self.config.env)
    }

    /// A cold start for taking the snapshot: as [`Self::start_cold`], plus the bundle's
    /// `snapcall.warmup_request` (hex) in `SNAPCALL_WARMUP_HEX` for runtimes that run one
    /// sample request before waiting for the real one.
    pub(crate) fn start_for_snapshot(&self, vm: EmptyVm) -> Result<ReadyCall, StartError> {
        let mut env = self.config.env.clone();
        if let Some(sample) = &self.config.warmup_request {
            let hex: String = sample.iter().map(|b| format!("{b:02x}")).collect();
            env.push(format!("SNAPCALL_WARMUP_HEX={hex}"));
        }
        self.start_cold_with_env(vm, &env)
    }

    fn start_cold_with_env(&self, vm: EmptyVm, env: &[String]) -> Result<ReadyCall, StartError> {
        let mut vm = vm.machine;
        let load_err = |source| StartError::Load { function: self.name().into(), source };
        let vm_err = |source| StartError::Vm { function: self.name().into(), source };
        let sys = crate::kvm::system().map_err(|e| vm_err(e.into()))?;
        let program = self.program().map_err(|e| StartError::Program(Box::new(e)))?;
        program.copy_into(&mut vm.memory).map_err(load_err)?;
        let mut random = [0u8; 16];
        crate::syscalls::fill_random(&mut random)
            .map_err(|e| load_err(LoadError::Random(std::io::Error::from_raw_os_error(e.0))))?;
        let no_room = |what| load_err(LoadError::NoRoom { path: program.path.clone(), what });
        let mut space =
            AddressSpace::with_image(vm.memory.size(), &program.image_segments()).map_err(|_| no_room("the stack"))?;
        // The vDSO: clock reads at CPL3 from a time page the monitor keeps current.
        let vdso = vdso::base_for(vm.memory.size());
        space
            .reserve(vdso, vdso::VDSO_REGION_SIZE, mm::PROT_READ | mm::PROT_EXEC, mm::RegionKind::Vdso)
            .map_err(|_| no_room("the vDSO below the stack"))?;
        let page = vdso::TimePage::compute(vdso::sample_now(vm.tsc_offset), crate::tsc::tsc_hz());
        let ehdr = vdso::install(&mut vm.memory, GuestAddr::new(vdso), &page).map_err(|e| load_err(e.into()))?;
        let stack = build_stack(&mut vm.memory, program, &self.config.args, env, sys.hwcap, random, Some(ehdr))
            .map_err(load_err)?;
        let mut process = Process::for_call(space, &self.spec, &self.spec.cwd);
        process.auxv = stack.auxv;
        // The program's own page tables (each segment's rights), in place before it runs.
        let tables = crate::page_tables::build(&process.space).map_err(|e| load_err(LoadError::PageTables(e)))?;
        tables.write_to(&mut vm.memory).map_err(|e| load_err(e.into()))?;
        crate::page_tables::load_root(&mut vm, tables.tables.root());
        process.page_tables = Some(tables.tables);
        // Enter the program through the stub's return path: iretq to entry at CPL3.
        crate::call::write_user_return(&mut vm.memory, program.entry, stack.rsp, 0, 0).map_err(vm_err)?;
        let regs = kvm_regs { rip: SYSCALL_RETURN_PATH, rsp: KERNEL_STACK_TOP, rflags: 0x2, ..Default::default() };
        vm.vcpu.stage_regs(&regs);
        Ok(ReadyCall {
            vm,
            process,
            timeout: self.spec.timeout,
            timings: PhaseTimings::default(),
            stats: CallStats::default(),
        })
    }
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// Reads a whole file of the rootfs (confined to it like every guest open), with the stamp
/// of the version read.
pub(crate) fn read_in_root(rootfs: &Rootfs, path: &str) -> Result<(Vec<u8>, Stamp), i32> {
    use std::io::Read;
    let errno = errno_of;
    let mut file = std::fs::File::from(rootfs.open_in_root(path, libc::O_RDONLY).map_err(|e| e.0)?);
    let stamp = Stamp::of_file(&file).map_err(errno)?;
    let mut bytes = Vec::with_capacity(usize::try_from(file.metadata().map_err(errno)?.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(errno)?;
    Ok((bytes, stamp))
}

/// For tests: a private copy of the built bundle `target/functions/<name>` (no snapshot in
/// it), in a temporary directory named after `tag` and this process, for a test to snapshot
/// and remove.
#[cfg(test)]
pub(crate) fn private_bundle_copy(name: &str, tag: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/functions").join(name);
    let dir = std::env::temp_dir().join(format!("snapcall-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(std::process::Command::new("cp").arg("-a").arg(&src).arg(&dir).status().unwrap().success());
    let _ = std::fs::remove_file(dir.join(crate::snapshot::SNAPSHOT_FILE));
    dir
}
