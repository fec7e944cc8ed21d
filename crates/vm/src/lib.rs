//! # agentvm-vm
//!
//! agentvm VMs as async handles. A [`VmHost`] owns a data directory and creates [`Vm`]s; a
//! `Vm` runs programs with the process API of the reference product (agentOS "Processes &
//! Shell"): [`Vm::exec`], [`Vm::spawn`], stdin, wait, list, signals, [`Vm::all_processes`] and
//! [`Vm::process_tree`], and an event stream ([`Vm::subscribe`]) of `processOutput` and
//! `processExit`.
//!
//! The filesystem API ([`files`]: [`Vm::read_file`], [`Vm::write_file`], [`Vm::readdir`],
//! [`Vm::stat`], [`Vm::move_path`]...) runs inside the VM as the VM user.
//!
//! ```no_run
//! # async fn demo() -> Result<(), agentvm_vm::VmError> {
//! use agentvm_vm::{ExecOptions, HostConfig, VmHost, VmOptions};
//! let host = VmHost::new(HostConfig::new("/var/lib/agentvm", "/usr/local/bin/agentvm"))?;
//! let vm = host.create_vm("my-agent", VmOptions::default()).await?;
//! let result = vm.exec("echo hello && ls /home/user", ExecOptions::default()).await?;
//! assert_eq!(result.stdout, "hello\n");
//! # Ok(()) }
//! ```
//!
//! Isolation itself (namespaces, root filesystem, cgroups, init) lives in `agentvm-sandbox`.

mod control;
pub mod disk;
pub mod error;
pub mod events;
pub mod fetch;
pub mod files;
mod host;
mod listing;
mod lxcfs;
mod proc_view;
pub mod process;
mod pump;
mod replay_log;
pub mod shell;
pub mod terminal_budget;
mod tree;
pub mod types;
mod uid_ranges;
mod vm;

pub use agentvm_sandbox::cgroup::Usage;
pub use error::{errno_code, Errno, FetchProblem, FileError, FsError, Result, SpawnError, VmError};
pub use events::{EventLog, Filter, Gap, GapScope, Item, Retention, SequencedEvent, Subscription, VmEvent};
pub use fetch::{FetchRequest, FetchResponse, FETCH_MAX_BODY_BYTES, FETCH_TIMEOUT};
pub use files::{DirEntryInfo, EntryKind, FileStat, ReadFileResult, WriteFileResult};
pub use host::{validate_id, HostConfig, VmHost, VM_USER_NAME};
pub use process::OutputChunk;
pub use shell::{ShellChunk, ShellOptions};
pub use types::*;
pub use vm::{hostname_for, AttachedHandle, AttachedProcess, Vm, WeakVm, DEFAULT_PATH, STDERR_TAIL_BYTES};
