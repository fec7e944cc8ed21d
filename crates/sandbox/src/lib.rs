//! # agentvm-sandbox
//!
//! The Linux isolation layer of agentvm: everything that turns a directory and a binary into a
//! running VM, with no async runtime and no knowledge of clients.
//!
//! A VM is a process tree in its own user, mount, PID, IPC, UTS, network and cgroup namespaces.
//! Its PID 1 is agentvm's [`init`], started by [`launch`] from the [`launcher`]. Its root filesystem is an overlay of
//! the shared read-only [`base`] layer and the VM's own upper directory, with the host's `/usr`
//! bound read-only; its network is loopback only; its limits come from [`cgroup`]s. The host side
//! talks to init over the [`protocol`] socket: init forks programs with the stdio descriptors the
//! host sends, reaps everything, and reports exits.
//!
//! Every process of a VM runs under the [`seccomp`] policy, without capabilities and within the
//! limits of [`config::Confinement`] (SECURITY.md at the repository root is the threat model).
//!
//! [`fsops`] is `agentvm vm-fs`, the helper that executes the VM filesystem API inside a VM.
//!
//! The async process API built on top of this lives in the `agentvm-vm` crate.

pub mod base;
pub mod cgroup;
pub mod config;
pub mod fsops;
pub mod idmap;
pub mod idmapped;
pub mod init;
pub mod launch;
pub mod launcher;
pub mod proc_files;
pub mod protocol;
pub mod quota;
pub mod seccomp;
