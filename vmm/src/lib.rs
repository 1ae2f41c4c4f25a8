//! # vmm: one static Linux program per brand-new KVM VM, with no guest kernel
//!
//! The guest is an unmodified static x86-64 Linux program (C with glibc or musl, or a static
//! CPython). It runs at CPL3 in 64-bit mode; its `syscall`s enter a 4-instruction CPL0 stub
//! that exits to this monitor, which implements the Linux syscalls itself ([`syscalls`]).
//!
//! The per-call path, as a library user writes it:
//!
//! ```no_run
//! use vmm::{Function, Runtime, RuntimeConfig, StartMode};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;          // VM pool + reaper
//! let echo = Function::load("target/functions/echo-c".as_ref(), StartMode::Snapshot)?;
//! runtime.keep_ready(&echo);                                      // keep VMs of its size ready
//!
//! let vm = runtime.take_vm(&echo)?;                               // 1. take a fresh VM
//! let ready = echo.start(vm, b"hello")?;                          // 2. restore (or cold-load)
//! let mut finished = ready.run();                                 // 3. run to exit
//! let output = finished.take_outcome()?;                          // 4. respond
//! assert_eq!(output.stdout, b"hello");
//! runtime.release(finished);                                      // 5. destroy, off the path
//! # Ok(()) }
//! ```

pub mod budget;
pub mod bundle;
pub mod call;
mod deadline;
pub mod errno;
pub mod exits;
pub mod files;
pub mod function;
mod ioctl;
pub mod ipc;
pub mod km;
pub mod kvm;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod mm;
mod output_ring;
pub mod overlay;
pub mod page_tables;
pub mod pool;
mod prefault;
pub mod probe;
pub mod process;
pub mod request;
mod scheduler;
mod signal_delivery;
pub mod snapshot;
pub mod syscalls;
pub mod threads;
pub mod tsc;
mod userfault;
pub mod vdso;
mod verified;
pub mod vm;
pub mod vm_creator;
mod working_set;

pub use bundle::{BundleConfig, BundleError, Limits, ResponseFormat, Runner};
pub use call::{CallError, CallStats, FinishedCall, Output, PhaseTimings, ReadyCall, STDERR_TAIL_BYTES};
pub use function::{Function, FunctionError, StartError, StartMode};
pub use ioctl::IoctlError;
pub use pool::{FunctionPoolStats, PoolStats, Runtime, RuntimeConfig};
pub use process::{SyscallRecord, MAX_TRACED_SYSCALLS, MAX_UNKNOWN_SYSCALL_NUMBERS};
pub use request::{RequestHead, REQUEST_FILE};
pub use vm::{EmptyVm, VmError};
