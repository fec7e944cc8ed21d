//! What can go wrong bringing a VM here, stopping it or snapshotting it, as data: the envoy
//! client reports it to the engine (a failed start or stop) and the log words it.

use agentvm_actors::ActorError;
use agentvm_snapshot::SnapshotError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The server is shutting down (its state is gone).
    #[error("the server is shutting down")]
    ShuttingDown,
    /// The actor core refused or failed (creating, restoring, booting, destroying).
    #[error(transparent)]
    Actor(#[from] ActorError),
    /// The engine's input for the actor is not a creation input.
    #[error(transparent)]
    Input(#[from] agentvm_protocol::ProtocolError),
    /// The snapshot store or the archiver failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A staging directory could not be made.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A newer start of the actor (on another host) stored a snapshot: this host's copy is stale
    /// and is not uploaded over it.
    #[error("not uploaded: the actor's snapshot {sequence} is from a newer start (generation {newer} > {ours}) on host {host}")]
    Fenced { sequence: u64, newer: u32, ours: u32, host: String },
    /// A stored snapshot names a part this version does not know.
    #[error("snapshot {sequence} of {actor} has an unknown part {part:?}")]
    UnknownPart { actor: String, sequence: u64, part: String },
}
