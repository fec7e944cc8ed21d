//! # agentvm-types
//!
//! The results and options of agentvm's VM API, defined once: the VM crate (`agentvm-vm`)
//! returns them, the server sends them as they serialize here, and the Rust client
//! (`agentvm-client`) decodes the server's answers into the same types. Field names serialize
//! in camelCase, as the reference product's clients expect (`exitCode`, `startTime`...).
//!
//! This crate depends on serde only, so a client pulls in nothing Linux-specific for them.

mod files;
mod processes;

pub use files::{DirEntryInfo, EntryKind, FileStat, ReadFileResult, WriteFileResult};
pub use processes::{
    ExecResult, OutputStream, ProcessInfo, ProcessTreeNode, ShellOptions, SpawnOptions, SpawnedProcessInfo,
};
