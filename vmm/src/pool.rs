//! The VM pool and the reaper: VMs are created ahead of time on a background thread, and used
//! VMs are destroyed on another, so neither cost sits on a call's critical path.
//!
//! For a function with a snapshot, the pool goes further: it restores the snapshot into each
//! new VM (memory copied into huge-page-backed memory, vCPU state set, first KVM_RUN taken),
//! so a call only completes the pending read and runs. Such a VM has never run the program:
//! every call still gets a VM, memory and vCPU no other call used. When the pool is empty the
//! call waits for the VM a filler is making, if it is the only one waiting for it, and
//! otherwise creates its VM inline and restores it lazily (copy-on-write).
//!
//! Measured on kvm-pvm: creating a VM (VM, vCPU, CPUID, memory slot, control state, first
//! KVM_RUN) ≈0.4-0.5 ms, destroying one ≈0.2-0.5 ms, an eager CPython restore 3-10 ms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::function::Function;
use crate::huge_page_cache::HugePageCache;
use crate::memory::GuestMemory;
use crate::memory_reuse::ReusableMemory;
use crate::priority::BackgroundThreads;
use crate::snapshot::{RestoreMemory, SnapshotImage};
use crate::vm::{EmptyVm, FreshVm, Machine, UsedVm, VmError};

/// What a list of ready VMs holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PoolKey {
    /// Empty VMs of this memory size.
    Empty(u64),
    /// VMs with this snapshot image already restored into them.
    Restored(u64),
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// VMs kept ready per function (per memory size for cold functions). 0 disables the
    /// pool (every call creates its VM inline and destroys it inline: the "no pool" mode of
    /// the latency study).
    pub pool_size: usize,
    /// A function with no call for this long has its ready VMs destroyed and is not refilled
    /// until its next call, so an idle function holds no memory (scale to zero). Its next call
    /// creates a VM inline.
    pub idle_timeout: Duration,
    /// Threads making VMs ahead. More than one lets the pool keep up with a faster arrival
    /// rate where there are cores to spare; each competes with calls for a core.
    pub fill_threads: usize,
    /// **Experiment, off by default** (`recycle.rs`): a finished call's VM is kept as a
    /// "recycled shell", its memory replaced and vCPU state reset, and a later restore of a
    /// snapshot function reuses it instead of a new VM. Calls then no longer each get a VM no
    /// other call ran in (they still see nothing another call left); it exists to measure what
    /// freshness costs.
    pub recycle_vm_shells: bool,
    /// A destroyed VM's host memory, reset to what a new one would hold, becomes the memory
    /// of the pool's next VM of the same snapshot (`memory_reuse.rs`): the VM is still new, its
    /// memory not re-mapped and re-populated. On by default; off to compare
    /// (`snapcall serve --no-memory-reuse`).
    pub reuse_memory: bool,
    /// The nice value the fillers and the reaper take while their work can wait: a list
    /// still holds a ready VM, the reaper's queue is short (`priority.rs`). 0 keeps them at
    /// the normal priority, as does a process that could not lower it back (no CAP_SYS_NICE,
    /// RLIMIT_NICE below 20).
    pub background_nice: i32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            pool_size: 4,
            idle_timeout: Duration::from_secs(60),
            fill_threads: 1,
            recycle_vm_shells: false,
            reuse_memory: true,
            background_nice: crate::priority::DEFAULT_BACKGROUND_NICE,
        }
    }
}

/// Pool counters of one function (of one memory size, for functions without a snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionPoolStats {
    /// The function's name (for a memory size shared by several cold functions: the first
    /// one that asked).
    pub name: String,
    /// VMs ready for it now.
    pub ready: usize,
    /// VMs its calls took from the pool.
    pub hits: u64,
    /// Calls that found its list empty and created their VM inline.
    pub misses: u64,
    /// Hits that found the list empty and waited for the VM a filler was making (a call
    /// waits for one rather than make its own beside it; see [`Runtime::take_vm`]).
    pub waited: u64,
    /// VMs a filler thread is making for it now.
    pub making: usize,
    /// CPU time the pool spent making its VMs ahead (create, restore, pre-fault, the
    /// entropy refill): what its snapshot costs the pool, whichever function it delays.
    pub fill_cpu: Duration,
    /// VMs the pool keeps ready for it while it is in use ([`Runtime::scale`]).
    pub target: usize,
    /// Idle: no call for the idle timeout, or scaled to zero; it holds no ready VMs and is
    /// refilled from its next call on.
    pub idle: bool,
}

/// Longest a call that found its list empty waits for the VM a filler is making before it
/// creates its own. A restore ahead takes 1-2 ms on a warm host, tens of ms on fresh huge
/// pages or beside other VMs' calls, when a VM made inline is as slow; the bound is for a
/// filler that stopped making progress.
const MAX_WAIT_FOR_FILLER: Duration = Duration::from_millis(100);

/// Longest the filler waits before retrying a function whose VMs it failed to make.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Used VMs waiting for the reaper before `release` destroys them itself (see `retire`).
pub const REAPER_BACKLOG: usize = 8;

/// The reaper destroys at the normal priority once more VMs than this wait for it, and
/// steps aside for calls below (`priority.rs`).
const REAPER_CALM: usize = 2;

/// Counters for /metrics.
#[derive(Debug, Clone, Default)]
pub struct PoolStats {
    /// VMs ready in the pool now.
    pub ready: usize,
    /// VMs created, by the pool and inline.
    pub created: u64,
    /// Created inline because the pool was empty.
    pub created_inline: u64,
    /// Used or evicted VMs destroyed.
    pub destroyed: u64,
    /// Ready VMs destroyed because their function went idle.
    pub evicted: u64,
    /// CPU time the pool's filler spent making VMs ahead (create, restore, pre-fault): the
    /// background cost of the pool, which competes with calls on a small machine.
    pub fill_cpu: Duration,
    /// CPU time the reaper spent destroying used VMs (or, with the recycling experiment,
    /// turning them into shells).
    pub reap_cpu: Duration,
    /// Used VMs turned into recycled shells (the experiment; 0 unless it is on).
    pub recycled: u64,
    /// Huge windows filled from a destroyed VM's huge page rather than a new one
    /// (`huge_page_cache.rs`: no zeroing).
    pub huge_pages_reused: u64,
    /// Destroyed VMs' huge pages held for that now (at most 8, none once the pool is idle).
    pub huge_pages_held: usize,
    /// VMs the pool made around a destroyed VM's memory, reset, instead of new memory
    /// (`memory_reuse.rs`).
    pub memory_reused: u64,
    /// Destroyed VMs' memories held for that now (at most [`crate::MEMORY_REUSE_CAPACITY`],
    /// none once the pool is idle).
    pub memory_held: usize,
    /// Where the time making VMs ahead for snapshots went, phase by phase.
    pub fill_phases: FillPhases,
    /// Per function, by name.
    pub functions: Vec<FunctionPoolStats>,
}

/// Where the pool's time making VMs ahead for snapshots went, phase by phase: wall time on
/// the filler threads, summed over `vms` (divide for a mean per VM, [`Self::per_vm`]). What
/// shows which part of a fresh VM costs what on a given host, in every run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FillPhases {
    /// VMs the sums are over.
    pub vms: u64,
    /// Creating the VM: KVM_CREATE_VM, its memory slot, KVM_CREATE_VCPU, KVM_SET_CPUID2,
    /// the monitor area and control registers.
    pub create: Duration,
    /// Guest memory: the program's page tables, the snapshot's mappings, the huge windows'
    /// copies, populating the working set, the entropy refill.
    pub memory: Duration,
    /// The pre-fault run in the VM (`prefault.rs`): the vCPU's first KVM_RUN and about one
    /// KVM page fault per touched group of pages.
    pub prefault: Duration,
    /// The vCPU's state: XSAVE, MSRs, XCR0, the staged registers and the run that loads them.
    pub vcpu: Duration,
}

impl FillPhases {
    fn add(&mut self, other: &FillPhases) {
        self.vms += other.vms;
        self.create += other.create;
        self.memory += other.memory;
        self.prefault += other.prefault;
        self.vcpu += other.vcpu;
    }

    /// The phases since `earlier` (a copy taken before), for one run's share.
    pub fn since(&self, earlier: &FillPhases) -> FillPhases {
        FillPhases {
            vms: self.vms.saturating_sub(earlier.vms),
            create: self.create.saturating_sub(earlier.create),
            memory: self.memory.saturating_sub(earlier.memory),
            prefault: self.prefault.saturating_sub(earlier.prefault),
            vcpu: self.vcpu.saturating_sub(earlier.vcpu),
        }
    }

    /// Mean per VM of each phase (all zero before the first VM): create, memory, pre-fault, vCPU.
    pub fn per_vm(&self) -> [Duration; 4] {
        let n = u32::try_from(self.vms.max(1)).unwrap_or(u32::MAX);
        [self.create / n, self.memory / n, self.prefault / n, self.vcpu / n]
    }
}

/// CPU time of the calling thread so far.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime with a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Adds the CPU time `work` takes on this thread to `total` (nanoseconds).
fn charge<T>(total: &AtomicU64, work: impl FnOnce() -> T) -> T {
    let before = thread_cpu_time();
    let out = work();
    total.fetch_add(thread_cpu_time().saturating_sub(before).as_nanos() as u64, Ordering::Relaxed);
    out
}

/// The ready VMs of one key, and when a call last asked for one.
struct Ready {
    vms: Vec<FreshVm>,
    /// VMs a filler thread is making for this key now.
    making: usize,
    /// Calls waiting for one of those (`take_vm`): each claims one VM in the making.
    waiting: usize,
    last_used: Instant,
    /// VMs kept ready for this key; `None`: the runtime's `pool_size`.
    target: Option<usize>,
    name: String,
    hits: u64,
    misses: u64,
    /// Hits that waited for a VM a filler was making.
    waited: u64,
    fill_cpu: Duration,
    /// Failed attempts to make a VM for this key in a row, and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Ready {
    fn new(name: &str) -> Ready {
        Ready {
            vms: Vec::new(),
            making: 0,
            waiting: 0,
            last_used: Instant::now(),
            target: None,
            name: name.into(),
            hits: 0,
            misses: 0,
            waited: 0,
            fill_cpu: Duration::ZERO,
            failures: 0,
            retry_at: None,
        }
    }

    fn stats(&self, shared: &Shared) -> FunctionPoolStats {
        FunctionPoolStats {
            name: self.name.clone(),
            ready: self.vms.len(),
            hits: self.hits,
            misses: self.misses,
            waited: self.waited,
            making: self.making,
            fill_cpu: self.fill_cpu,
            target: self.target.unwrap_or(shared.target),
            idle: self.last_used.elapsed() >= shared.idle_timeout,
        }
    }
}

struct Shared {
    ready: Mutex<HashMap<PoolKey, Ready>>,
    /// Snapshots the pool restores ahead, by image id.
    images: Mutex<HashMap<u64, Arc<SnapshotImage>>>,
    /// Wakes the filler when a VM was taken or a new size was asked for.
    wanted: Condvar,
    /// Wakes calls waiting for a VM in the making when a filler finished one (or failed).
    made: Condvar,
    /// VMs handed to the reaper and not yet destroyed (it hurries above [`REAPER_CALM`]).
    reaper_queue: AtomicUsize,
    /// The fillers' and reaper's priority (`priority.rs`).
    background: BackgroundThreads,
    target: usize,
    idle_timeout: Duration,
    evicted: AtomicU64,
    created: AtomicU64,
    created_inline: AtomicU64,
    destroyed: AtomicU64,
    /// See [`PoolStats`] (nanoseconds).
    fill_cpu_ns: AtomicU64,
    reap_cpu_ns: AtomicU64,
    fill_phases: Mutex<FillPhases>,
    /// The recycling experiment: on, and the shells made so far, by memory size.
    recycle: bool,
    shells: Mutex<HashMap<u64, Vec<EmptyVm>>>,
    recycled: AtomicU64,
    /// Destroyed VMs' huge pages, for the next VMs' huge windows.
    huge_pages: Arc<HugePageCache>,
    /// Destroyed VMs' memories, reset, for the next VMs of the same snapshot (when on).
    reuse_memory: bool,
    reusable: ReusableMemory,
    shutting_down: std::sync::atomic::AtomicBool,
}

/// Owns the VM pool, its filler thread and the reaper thread.
pub struct Runtime {
    shared: Arc<Shared>,
    reaper: Option<mpsc::SyncSender<Retired>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts the filler and reaper threads and opens /dev/kvm.
    pub fn new(config: RuntimeConfig) -> Result<Runtime, VmError> {
        crate::kvm::system()?;
        // VMs without a debugfs directory each (vm_creator.rs): worth it from the second VM on.
        crate::vm_creator::start();
        let shared = Arc::new(Shared {
            ready: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
            wanted: Condvar::new(),
            made: Condvar::new(),
            reaper_queue: AtomicUsize::new(0),
            background: BackgroundThreads::new(config.background_nice),
            target: config.pool_size,
            idle_timeout: config.idle_timeout,
            evicted: AtomicU64::new(0),
            created: AtomicU64::new(0),
            created_inline: AtomicU64::new(0),
            destroyed: AtomicU64::new(0),
            fill_cpu_ns: AtomicU64::new(0),
            reap_cpu_ns: AtomicU64::new(0),
            fill_phases: Mutex::new(FillPhases::default()),
            recycle: config.recycle_vm_shells,
            shells: Mutex::new(HashMap::new()),
            recycled: AtomicU64::new(0),
            huge_pages: Arc::new(HugePageCache::new()),
            reuse_memory: config.reuse_memory,
            reusable: ReusableMemory::default(),
            shutting_down: false.into(),
        });
        let (tx, rx) = mpsc::sync_channel::<Retired>(REAPER_BACKLOG);
        let reaper_shared = shared.clone();
        let mut threads = vec![std::thread::Builder::new()
            .name("snapcall-reaper".into())
            .spawn(move || {
                block_signals();
                for vm in rx {
                    let queued = reaper_shared.reaper_queue.fetch_sub(1, Ordering::Relaxed);
                    reaper_shared.background.work(queued > REAPER_CALM);
                    reaper_shared.retire_now(vm);
                }
            })
            .map_err(|source| VmError::SpawnThread { thread: "VM reaper", source })?];
        for _ in 0..if config.pool_size > 0 { config.fill_threads.max(1) } else { 0 } {
            let filler = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("snapcall-pool".into())
                    .spawn(move || {
                        block_signals();
                        filler.background.register_filler();
                        fill(&filler)
                    })
                    .map_err(|source| VmError::SpawnThread { thread: "VM pool filler", source })?,
            );
        }
        Ok(Runtime { shared, reaper: Some(tx), threads })
    }

    /// The nice value the pool's threads take while their work can wait: the one asked for,
    /// or 0 where this process could not lower it back ([`RuntimeConfig::background_nice`]).
    pub fn background_nice(&self) -> i32 {
        self.shared.background.nice()
    }

    /// Asks the pool to keep VMs ready for `function`: with its snapshot already restored
    /// when it has one, else empty VMs of its memory size.
    pub fn keep_ready(&self, function: &Function) {
        if self.shared.target == 0 {
            return;
        }
        let key = match function.snapshot() {
            Some(image) => {
                let mut images = self.shared.images.lock().unwrap_or_else(|e| e.into_inner());
                images.insert(image.id(), image.clone());
                PoolKey::Restored(image.id())
            }
            None => PoolKey::Empty(function.memory_size()),
        };
        let mut ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.entry(key).or_insert_with(|| Ready::new(function.name())).last_used = Instant::now();
        self.shared.wanted.notify_all();
    }

    /// Stops keeping VMs ready for `function` (e.g. its bundle was replaced) and destroys
    /// the ones already made.
    pub fn forget(&self, function: &Function) {
        let key = match function.snapshot() {
            Some(image) => {
                self.shared.images.lock().unwrap_or_else(|e| e.into_inner()).remove(&image.id());
                drop(self.shared.reusable.take_all(image.id()));
                PoolKey::Restored(image.id())
            }
            None => return,
        };
        let ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        // A call waiting for one of its VMs in the making stops waiting and makes its own.
        self.shared.made.notify_all();
        for vm in ready.into_iter().flat_map(|r| r.vms) {
            self.retire(Retired::Destroy(vm.into_machine()));
        }
    }

    /// Sets how many VMs the pool keeps ready for `function` while it is in use. `0` releases
    /// them now, as going idle does: its ready VMs are destroyed and none are made until its
    /// next call, which creates its VM inline and starts the refill (scale from zero). For a
    /// function without a snapshot the setting is shared by every such function of its memory
    /// size (they share their empty VMs).
    pub fn scale(&self, function: &Function, replicas: usize) {
        let key = self.key(function);
        let mut ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        let r = ready.entry(key).or_insert_with(|| Ready::new(function.name()));
        if replicas == 0 {
            // Idle as of now: the filler evicts its VMs on its next round.
            r.last_used = Instant::now().checked_sub(self.shared.idle_timeout).unwrap_or(r.last_used);
            r.target = None;
        } else {
            r.target = Some(replicas);
            r.last_used = Instant::now();
        }
        drop(ready);
        self.shared.wanted.notify_all();
    }

    /// The pool's counters for `function`, if it asked for VMs ([`Self::keep_ready`]).
    pub fn function_stats(&self, function: &Function) -> Option<FunctionPoolStats> {
        let key = self.key(function);
        let ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready.get(&key).map(|r| r.stats(&self.shared))
    }

    fn key(&self, function: &Function) -> PoolKey {
        match function.snapshot() {
            Some(image) => PoolKey::Restored(image.id()),
            None => PoolKey::Empty(function.memory_size()),
        }
    }

    /// A VM no call has used, for `function`: from the pool (restored ahead when the
    /// function has a snapshot), or created now when the pool has none. The pool refills
    /// when the call's VM is handed back with [`Self::release`] (after the response), or at
    /// once when this leaves the function's list below half its target.
    ///
    /// When the list is empty but a filler is making a VM for it that no other call waits
    /// for, the call waits for that one (at most [`MAX_WAIT_FOR_FILLER`]): what is left of a
    /// restore ahead is shorter than a whole VM made inline, and a VM made beside it would
    /// take the core the filler needs, so the next call would find the list empty too. Each
    /// VM in the making serves one waiting call; any further call creates its own.
    pub fn take_vm(&self, function: &Function) -> Result<FreshVm, VmError> {
        if self.shared.target > 0 {
            let key = match function.snapshot() {
                Some(image) => PoolKey::Restored(image.id()),
                None => PoolKey::Empty(function.memory_size()),
            };
            let mut ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
            let ready_vm = ready.get_mut(&key).and_then(|r| {
                r.last_used = Instant::now();
                r.vms.pop()
            });
            let (mut ready, vm) = match ready_vm {
                Some(vm) => (ready, Some(vm)),
                None => self.shared.wait_for_the_vm_in_the_making(ready, key),
            };
            let left = ready.get_mut(&key).map_or(0, |r| {
                if vm.is_some() {
                    r.hits += 1;
                } else {
                    r.misses += 1;
                }
                r.vms.len()
            });
            drop(ready);
            // The pool normally refills from `release`, after the response is out: waking the
            // filler here would start a restore (milliseconds of CPU for CPython) just as this
            // call starts running, and on a small machine the call would wait for a core.
            // Only a list running low wakes it now.
            if vm.is_none() || left < self.shared.target.div_ceil(2) {
                self.shared.wanted.notify_all();
            }
            if let Some(vm) = vm {
                return Ok(vm);
            }
        }
        if function.snapshot().is_some() {
            if let Some(shell) = self.shared.take_shell(function.memory_size()) {
                return Ok(FreshVm::Empty(shell));
            }
        }
        self.shared.created_inline.fetch_add(1, Ordering::Relaxed);
        self.shared.created.fetch_add(1, Ordering::Relaxed);
        // Around a kept memory when there is one: under load the filler cannot keep up, the
        // reaper keeps a memory per call that ends, and one the filler has no use for would be
        // dropped while this call zeroes and maps new memory.
        match function.snapshot() {
            Some(image) => self.shared.create_vm_for(image),
            None => self.shared.create_vm(function.memory_size(), false),
        }
        .map(FreshVm::Empty)
    }

    /// Destroys `vm` on the reaper thread, or here when the reaper is [`REAPER_BACKLOG`] VMs
    /// behind: a reaper that falls behind leaves hundreds of dead VMs alive, and each live VM
    /// makes every mmap and munmap in the process slower (KVM's MMU notifier checks them all),
    /// so the backlog would feed itself.
    fn retire(&self, vm: Retired) {
        let Some(tx) = &self.reaper else { return self.shared.retire_now(vm) };
        // Counted before the send, so the reaper never takes the count below zero.
        self.shared.reaper_queue.fetch_add(1, Ordering::Relaxed);
        if let Err(mpsc::TrySendError::Full(vm) | mpsc::TrySendError::Disconnected(vm)) = tx.try_send(vm) {
            self.shared.reaper_queue.fetch_sub(1, Ordering::Relaxed);
            self.shared.retire_now(vm);
        }
    }

    /// Hands a finished call's VM to the reaper and lets the pool refill; call this after
    /// the response is sent, so neither competes with the call for a core.
    pub fn release(&self, vm: UsedVm) {
        let vm = vm.machine;
        if self.shared.target == 0 {
            drop(vm);
            self.shared.destroyed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.retire(if self.shared.recycle { Retired::Recycle(vm) } else { Retired::Destroy(vm) });
        self.shared.wanted.notify_all();
    }

    /// Counters for monitoring.
    pub fn pool_stats(&self) -> PoolStats {
        let ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        PoolStats {
            ready: ready.values().map(|r| r.vms.len()).sum(),
            created: self.shared.created.load(Ordering::Relaxed),
            created_inline: self.shared.created_inline.load(Ordering::Relaxed),
            destroyed: self.shared.destroyed.load(Ordering::Relaxed),
            evicted: self.shared.evicted.load(Ordering::Relaxed),
            fill_cpu: Duration::from_nanos(self.shared.fill_cpu_ns.load(Ordering::Relaxed)),
            reap_cpu: Duration::from_nanos(self.shared.reap_cpu_ns.load(Ordering::Relaxed)),
            fill_phases: *self.shared.fill_phases.lock().unwrap_or_else(|e| e.into_inner()),
            recycled: self.shared.recycled.load(Ordering::Relaxed),
            huge_pages_reused: self.shared.huge_pages.reused(),
            huge_pages_held: self.shared.huge_pages.held(),
            memory_reused: self.shared.reusable.reused(),
            memory_held: self.shared.reusable.held(),
            functions: {
                let mut f: Vec<FunctionPoolStats> = ready.values().map(|r| r.stats(&self.shared)).collect();
                f.sort_by(|a, b| a.name.cmp(&b.name));
                f
            },
        }
    }

    /// Blocks until the pool holds its target number of VMs for every size asked for
    /// (benchmarks use it to measure calls, not the pool's warm-up).
    pub fn wait_until_full(&self) {
        // The filler may be asleep (it is woken by `release`, or when a list runs low).
        self.shared.wanted.notify_all();
        let started = Instant::now();
        while started.elapsed().as_secs() < 30 {
            {
                let ready = self.shared.ready.lock().unwrap_or_else(|e| e.into_inner());
                let idle = |r: &Ready| r.last_used.elapsed() >= self.shared.idle_timeout;
                if ready.values().all(|r| r.vms.len() >= r.target.unwrap_or(self.shared.target) || idle(r)) {
                    return;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// A VM on its way to the reaper.
enum Retired {
    /// Unused (evicted, forgotten) or used: destroy it.
    Destroy(Machine),
    /// A finished call's VM, under the recycling experiment: make it a shell.
    Recycle(Machine),
}

/// Most recycled shells kept per memory size; past it, used VMs are destroyed.
const MAX_SHELLS: usize = 16;

type ReadyLists<'a> = std::sync::MutexGuard<'a, HashMap<PoolKey, Ready>>;

impl Shared {
    /// With `key`'s list empty: when a filler is making a VM for it that no other call waits
    /// for, waits for that VM (at most [`MAX_WAIT_FOR_FILLER`]) rather than have the caller
    /// make a second one beside it, which would cost more than what is left of the first
    /// and take the core the filler needs. `None` when there is none to wait for, or it went
    /// to a call that came after (then the caller makes its own).
    fn wait_for_the_vm_in_the_making<'a>(
        &self,
        mut ready: ReadyLists<'a>,
        key: PoolKey,
    ) -> (ReadyLists<'a>, Option<FreshVm>) {
        match ready.get_mut(&key) {
            Some(r) if r.making > r.waiting => r.waiting += 1,
            _ => return (ready, None),
        }
        // The VM may be in the making at the background priority: no longer.
        self.background.hurry();
        let deadline = Instant::now() + MAX_WAIT_FOR_FILLER;
        let mut vm = None;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            ready = self.made.wait_timeout(ready, left).unwrap_or_else(|e| e.into_inner()).0;
            let Some(r) = ready.get_mut(&key) else { break };
            vm = r.vms.pop();
            // Made (or failed) and taken by another call meanwhile: nothing left to wait for.
            if vm.is_some() || r.making < r.waiting {
                break;
            }
        }
        // Saturating: the key may have been forgotten and asked for again meanwhile, its
        // counts starting over without this call.
        if let Some(r) = ready.get_mut(&key) {
            r.waiting = r.waiting.saturating_sub(1);
            r.waited += u64::from(vm.is_some());
        }
        (ready, vm)
    }

    /// A new VM whose huge windows come from (and go back to) this runtime's cache. Not with
    /// the pool off: nothing would empty the cache when idle, and "no pool" means no reuse.
    /// `for_restore`: a snapshot is restored into it at once, whose pre-fault run is the
    /// vCPU's first (so no warm-up run of its own: [`EmptyVm::create_unwarmed`]).
    fn create_vm(&self, memory_size: u64, for_restore: bool) -> Result<EmptyVm, VmError> {
        let mut vm = if for_restore { EmptyVm::create_unwarmed(memory_size)? } else { EmptyVm::create(memory_size)? };
        if self.target > 0 {
            vm.machine.memory.use_huge_page_cache(self.huge_pages.clone());
        }
        Ok(vm)
    }

    /// A new VM for a restore of `image`, around a destroyed VM's memory reset for it when
    /// one is kept (`memory_reuse.rs`), else as [`Self::create_vm`] makes one.
    fn create_vm_for(&self, image: &SnapshotImage) -> Result<EmptyVm, VmError> {
        match self.reusable.take(image.id()) {
            Some(memory) => EmptyVm::create_unwarmed_in(memory),
            None => self.create_vm(image.memory_size(), true),
        }
    }

    /// Keeps the memory of a destroyed VM for the next VM of the snapshot it was laid out for,
    /// reset, when that is on, the snapshot is still served and in use, and there is room;
    /// else drops (unmaps) it.
    fn keep_for_reuse(&self, mut memory: GuestMemory) {
        if !self.reuse_memory || !self.reusable.has_room() {
            return;
        }
        let Some(id) = memory.laid_out_for() else { return };
        let Some(image) = self.images.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned() else { return };
        let in_use = {
            let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
            ready.get(&PoolKey::Restored(id)).is_some_and(|r| r.last_used.elapsed() < self.idle_timeout)
        };
        if in_use && image.reset_used_memory(&mut memory) {
            // No room after all (another thread was first): dropped here.
            let _ = self.reusable.put(id, memory);
        }
    }

    /// Destroys `vm`, or makes it a recycled shell (charged to the reaper's CPU either way).
    fn retire_now(&self, vm: Retired) {
        charge(&self.reap_cpu_ns, || match vm {
            Retired::Destroy(vm) => {
                let memory = vm.into_memory();
                self.destroyed.fetch_add(1, Ordering::Relaxed);
                self.keep_for_reuse(memory);
            }
            Retired::Recycle(vm) => {
                let size = vm.memory.size();
                // Only shells a snapshot function of this size can take (a cold start does not
                // set the whole vCPU state), and not too many.
                let wanted = || {
                    let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
                    let shells = self.shells.lock().unwrap_or_else(|e| e.into_inner());
                    images.values().any(|i| i.memory_size() == size)
                        && shells.get(&size).map_or(0, Vec::len) < MAX_SHELLS
                };
                // A shell that cannot be made was dropped (destroyed) on the way.
                let shell = if wanted() { vm.into_recycled_shell().ok() } else { None };
                match shell {
                    Some(shell) => {
                        self.recycled.fetch_add(1, Ordering::Relaxed);
                        self.shells.lock().unwrap_or_else(|e| e.into_inner()).entry(size).or_default().push(shell);
                    }
                    None => {
                        self.destroyed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    }

    /// A recycled shell of `size` bytes, if the experiment made one.
    fn take_shell(&self, size: u64) -> Option<EmptyVm> {
        if !self.recycle {
            return None;
        }
        self.shells.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&size).and_then(Vec::pop)
    }
}

/// The pool's threads take no signals (SIGHUP, SIGTERM...): those are the embedding
/// program's to handle, on its own threads, whatever mask it had when it started us.
pub(crate) fn block_signals() {
    // SAFETY: an empty sigset filled with every signal, applied to this thread only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// The filler thread: tops every list in use up to the target, one VM at a time, and
/// destroys the ready VMs of functions that went idle.
fn fill(shared: &Shared) {
    loop {
        let (key, urgent) = {
            let mut ready = shared.ready.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if shared.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                let idle = |r: &Ready| r.last_used.elapsed() >= shared.idle_timeout;
                let mut evicted = Vec::new();
                let mut kept_memory = Vec::new();
                for (key, r) in ready.iter_mut().filter(|(_, r)| idle(r)) {
                    evicted.append(&mut r.vms);
                    if let PoolKey::Restored(id) = key {
                        kept_memory.append(&mut shared.reusable.take_all(*id));
                    }
                }
                if !evicted.is_empty() || !kept_memory.is_empty() {
                    // Destroy outside the lock: it takes ~0.3 ms per VM. Shells go too: an
                    // idle server holds no VMs.
                    drop(ready);
                    let shells: Vec<EmptyVm> =
                        shared.shells.lock().unwrap_or_else(|e| e.into_inner()).drain().flat_map(|(_, v)| v).collect();
                    shared.destroyed.fetch_add(shells.len() as u64, Ordering::Relaxed);
                    drop(shells);
                    let n = evicted.len() as u64;
                    drop(evicted);
                    // Before the huge pages are cleared: dropped memory gives its windows there.
                    drop(kept_memory);
                    shared.huge_pages.clear();
                    shared.evicted.fetch_add(n, Ordering::Relaxed);
                    shared.destroyed.fetch_add(n, Ordering::Relaxed);
                    ready = shared.ready.lock().unwrap_or_else(|e| e.into_inner());
                    continue;
                }
                let backing_off = |r: &Ready| r.retry_at.is_some_and(|t| Instant::now() < t);
                if let Some((&key, r)) = ready.iter_mut().find(|(_, r)| {
                    r.vms.len() + r.making < r.target.unwrap_or(shared.target) && !idle(r) && !backing_off(r)
                }) {
                    r.making += 1;
                    // Urgent when a call will soon find the list empty (or waits already).
                    break (key, r.vms.is_empty() || r.waiting > 0);
                }
                // Wake up now and then to notice functions going idle.
                let nap = shared.idle_timeout.clamp(Duration::from_millis(10), Duration::from_secs(1));
                ready = shared.wanted.wait_timeout(ready, nap).unwrap_or_else(|e| e.into_inner()).0;
            }
        };
        shared.background.work(urgent);
        let cpu_before = thread_cpu_time();
        let made = match key {
            PoolKey::Empty(size) => shared.create_vm(size, false).ok().map(|vm| {
                shared.created.fetch_add(1, Ordering::Relaxed);
                FreshVm::Empty(vm)
            }),
            PoolKey::Restored(id) => {
                let image = shared.images.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
                image.and_then(|image| {
                    let started = Instant::now();
                    let vm = match shared.take_shell(image.memory_size()) {
                        Some(shell) => shell,
                        None => {
                            let vm = shared.create_vm_for(&image).ok()?;
                            shared.created.fetch_add(1, Ordering::Relaxed);
                            vm
                        }
                    };
                    let create = started.elapsed();
                    let mut vm = image.prepare(vm, RestoreMemory::Ahead).ok()?;
                    vm.load_registers_ahead().ok()?;
                    let phases = FillPhases { vms: 1, create, ..vm.phases };
                    shared.fill_phases.lock().unwrap_or_else(|e| e.into_inner()).add(&phases);
                    Some(FreshVm::Prepared(vm))
                })
            }
        };
        let spent = thread_cpu_time().saturating_sub(cpu_before);
        shared.fill_cpu_ns.fetch_add(spent.as_nanos() as u64, Ordering::Relaxed);
        // One lock for "no longer making" and "ready": between two, another filler would see
        // the VM neither in the making nor ready and make one too many (two fillers overshot a
        // target of 3 that way).
        let mut ready = shared.ready.lock().unwrap_or_else(|e| e.into_inner());
        let forgotten = match ready.get_mut(&key) {
            None => made, // forgotten meanwhile: destroyed below, outside the lock
            Some(r) => {
                r.making = r.making.saturating_sub(1);
                r.fill_cpu += spent;
                match made {
                    Some(vm) => {
                        r.vms.push(vm);
                        (r.failures, r.retry_at) = (0, None);
                    }
                    None => {
                        // Keep the function (the failure may pass: EMFILE, ENOMEM), but back
                        // off, 100 ms doubling to 5 s, so one that cannot be restored does not
                        // keep a core busy. Its calls create their VMs inline meanwhile and
                        // report why they fail.
                        r.failures = r.failures.saturating_add(1);
                        let backoff =
                            Duration::from_millis(100).saturating_mul(1 << r.failures.min(6)).min(MAX_BACKOFF);
                        r.retry_at = Some(Instant::now() + backoff);
                    }
                }
                None
            }
        };
        drop(ready);
        shared.made.notify_all();
        drop(forgotten);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        self.shared.wanted.notify_all();
        self.reaper = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
