//! # vmm: one static Linux program per brand-new KVM VM, with no guest kernel
//!
//! The guest is an unmodified static x86-64 Linux program (C with glibc or musl, or a static
//! CPython). It runs at CPL3 in 64-bit mode; its `syscall`s enter a 4-instruction stub that
//! exits to this monitor, which implements the Linux syscalls itself.
//!
//! The per-call path, as a library user writes it (this runs as a doc test, in real VMs):
//!
//! ```
//! use vmm::{Function, Runtime, RuntimeConfig, StartMode};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let bundle = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/functions/echo-c");
//! let runtime = Runtime::new(RuntimeConfig::default())?;          // VM pool + reaper
//! let echo = Function::load(bundle.as_ref(), StartMode::Snapshot)?;
//! runtime.keep_ready(&echo);                                      // keep VMs of its size ready
//!
//! let vm = runtime.take_vm(&echo)?;                               // 1. a VM no call used
//! let ready = echo.start(vm, b"hello")?;                          // 2. restore (or cold-load)
//! let finished = ready.run();                                     // 3. run to exit
//! let (outcome, used_vm) = finished.into_parts();                 // 4. respond
//! assert_eq!(outcome?.stdout, b"hello");
//! runtime.release(used_vm);                                       // 5. destroy, off the path
//! # Ok(()) }
//! ```
//!
//! Each step consumes the state before it, so the types say what a VM may do:
//! [`EmptyVm`] (fresh) or [`PreparedVm`] (a snapshot restored ahead, which only that
//! snapshot's function can start) → [`ReadyCall`] (runs once) → [`FinishedCall`] → [`UsedVm`]
//! (can only be destroyed; only the opt-in experiment [`RuntimeConfig::recycle_vm_shells`]
//! instead gives its KVM objects, with new memory and every register reset, to a later call).
//! Its host memory may outlive it: reset byte for byte to a new layout, it can back the next
//! new VM of the same snapshot ([`RuntimeConfig::reuse_memory`]).
//!
//! Snapshots are taken with [`Function::take_snapshot`]; bundles that need Kontain's `km` run
//! through [`km`]. The rest of the crate (guest memory, the syscall layer, the vCPU) is
//! private: docs/vmm.md and docs/architecture.md describe it.

#![warn(missing_docs)]

// The public surface: the five-step call path, bundles, snapshots, the pool and its stats,
// and the errors each step can give. Everything else is the monitor's own business.
mod budget;
mod bundle;
mod call;
mod deadline;
mod errno;
mod exits;
mod files;
mod function;
mod huge_page_cache;
mod ioctl;
mod ipc;
pub mod km;
mod kvm;
mod layout;
mod loader;
mod memory;
mod memory_reuse;
mod mm;
mod output_ring;
mod overlay;
mod page_tables;
mod pool;
mod prefault;
mod priority;
#[cfg(feature = "probe")]
pub mod probe;
mod process;
mod recycle;
mod request;
mod scheduler;
mod signal_delivery;
pub mod snapshot;
mod syscalls;
mod threads;
mod tsc;
mod userfault;
mod vcpu_state;
mod vdso;
mod verified;
mod vm;
pub mod vm_creator;
mod working_set;
mod written_pages;

pub use bundle::{BundleConfig, BundleError, Limits, ResponseFormat, Runner};
pub use call::{CallError, CallStats, FinishedCall, Output, PhaseTimings, ReadyCall, STDERR_TAIL_BYTES};
pub use files::MAX_FDS;
pub use function::{Function, FunctionError, StartError, StartMode};
pub use huge_page_cache::CAPACITY as HUGE_PAGE_CACHE_CAPACITY;
pub use ioctl::IoctlError;
pub use kvm::{kvm_flavour, KvmError};
pub use layout::DOORBELL_ADDR;
pub use loader::LoadError;
pub use memory::MemoryError;
pub use memory_reuse::CAPACITY as MEMORY_REUSE_CAPACITY;
/// Pages a VM has for page tables (W^X): past them, mprotect and mmap give ENOMEM.
pub use page_tables::POOL_PAGES as PAGE_TABLE_POOL_PAGES;
pub use pool::{FillPhases, FunctionPoolStats, PoolStats, Runtime, RuntimeConfig, REAPER_BACKLOG};
pub use priority::DEFAULT_BACKGROUND_NICE as DEFAULT_POOL_NICE;
pub use process::{SyscallRecord, SyscallTracer, GUEST_UID, MAX_TRACED_SYSCALLS, MAX_UNKNOWN_SYSCALL_NUMBERS};
pub use request::{RequestHead, REQUEST_FILE};
pub use syscalls::name as syscall_name;
pub use threads::MAX_THREADS;
pub use vm::{EmptyVm, FreshVm, PreparedVm, UsedVm, VmError};
