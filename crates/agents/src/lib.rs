//! Coding agents for agentvm VMs: which agents exist, what they are made of, where they live and
//! how a VM starts one.
//!
//! - [`spec`]: what an agent is — its npm packages at pinned versions, the Node.js it needs, its
//!   launch command inside a VM, the fixed environment it gets and the configuration the session
//!   layer must write for it.
//! - [`builtin()`]: the built-in entries (`pi`, `claude`, `codex`, `opencode`).
//! - [`operator`]: agents the operator declares in the server's config file (any ACP command).
//! - [`registry`]: both kinds under one id space; what `listAgents` reports; the launch of an id.
//! - [`layer`]: the shared software layer, `<data>/software`, which every VM sees read-only at
//!   [`layer::VM_MOUNT`] (`/opt/agentvm`), and the marker that says an agent is installed.
//! - [`install()`]: `agentvm agents install NAME`: `npm install` into a staging directory, then an
//!   atomic rename, so a VM never sees half an agent. VMs never download agents themselves.

pub mod builtin;
pub mod install;
pub mod layer;
pub mod operator;
pub mod registry;
pub mod spec;

pub use builtin::builtin;
pub use install::{install, InstallError, Installed};
pub use layer::{NotInstalled, SoftwareLayer, VM_MOUNT};
pub use operator::{OperatorAgent, OperatorAgentError};
pub use registry::{AgentStatus, Launch, Registry, RegistryError};
pub use spec::{AgentSpec, NodeRuntime, Package};
