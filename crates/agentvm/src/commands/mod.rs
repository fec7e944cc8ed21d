//! The client-side commands of the `agentvm` CLI, each a thin layer over `agentvm-client`.

pub mod agents;
pub mod exec;
pub mod files;
pub mod inspect;
pub mod logs;
pub mod processes;
pub mod vms;

/// Event names a VM broadcasts.
pub const ALL_EVENTS: &[&str] = &["processOutput", "processExit", "shellData", "shellExit", "vmBooted", "vmShutdown"];
