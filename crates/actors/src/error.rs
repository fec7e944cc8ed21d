//! The core's errors: what went wrong, as data. Each variant is one kind a front end tells
//! its clients about; the text clients see (and, for HTTP, the status) is decided by the front
//! end (`agentvm-server`'s `error.rs`), not here. `Display` is for logs.

use std::time::Duration;

use agentvm_store::StoreError;
use agentvm_vm::VmError;

use crate::lifecycle::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// No action has this name (checked before a VM boots).
    #[error("action `{0}` was not found")]
    ActionNotFound(String),
    /// The action's arguments are wrong; the text names the action, the argument and what was
    /// wrong (`exec: argument 1 (command) must be a string, got number`).
    #[error("{0}")]
    InvalidArguments(String),
    /// No actor has this address or id (never created, or destroyed).
    #[error("the actor does not exist or was destroyed")]
    NotFound,
    /// The actor refuses actions: `destroy` began or finished.
    #[error("actor {actor_id} refuses actions: {refusal:?}")]
    Refused { refusal: Refusal, actor_id: String },
    /// Creating one more actor would exceed the server's cap on VMs.
    #[error("the server holds its maximum of {limit} VMs")]
    TooManyVms { limit: u64 },
    /// Actors are being created faster than the server's rate allows.
    #[error("VMs are created too fast: retry in {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The server's config file defines no actor of this name (with a config file, only the
    /// names it defines exist).
    #[error("no actor named `{name}` on this server: its config defines {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownActorName { name: String, known: Vec<String> },
    /// A client's `createWithInput` sets something its preset does not let clients set (the
    /// network policy, higher limits…), or is malformed.
    #[error("{message}")]
    InputRefused { preset: String, message: String },
    /// No live session has this id (never created, closed, or its VM stopped since).
    #[error("Session not found: {0}")]
    SessionNotFound(String),
    /// The session was closed: its transcript stays readable, it is not resumed.
    #[error("session {0} was closed: create a new one")]
    SessionClosed(String),
    /// A session's agent failed: it exited, hung, wrote garbage or answered with an error; the
    /// text says which, with its stderr tail.
    #[error("{0}")]
    Agent(String),
    /// A cron action was refused (a bad schedule, a preset limit).
    #[error(transparent)]
    Cron(#[from] crate::cron::CronError),
    /// An engine places this host's VMs: new ones are created through it, not here.
    #[error("VMs of this host are placed by the Rivet Engine: create `{name}` [{key}] through the engine (its gateway, pool `--pool`)")]
    PlacedByEngine { name: String, key: String },
    /// The server is shutting down: no VM boots any more.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The VM refused or failed the operation.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The durable state (registry, event log) failed.
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    /// A filesystem operation of the core itself (an actor's directory) failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug or a task that died: nothing the client can fix.
    #[error("{0}")]
    Internal(String),
}

impl ActorError {
    /// The VM stopped under the action (shut down, or its init died).
    pub fn is_vm_stopped(&self) -> bool {
        matches!(self, ActorError::Vm(VmError::Stopped(_)))
    }
}
