//! What a snapshot is: the manifest stored beside its parts.

use serde::{Deserialize, Serialize};

/// The current manifest format; a manifest of a newer format is refused rather than misread.
pub const FORMAT: u32 = 1;

/// The newest snapshot of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    /// Increases with every snapshot of the actor (whichever host takes it).
    pub sequence: u64,
    /// When it was taken (ms since the Unix epoch).
    pub taken_ms: u64,
    /// The host that took it (its envoy key), for operators.
    pub host: String,
    /// The engine's generation of the actor when it was taken.
    pub generation: u32,
    /// Whether the VM's files are a point-in-time copy (a filesystem snapshot) rather than a
    /// copy of a stopped VM's directory or, without snapshots, of a running one's.
    pub point_in_time: bool,
    pub actor: SnapshotActor,
    pub parts: Vec<Part>,
}

/// The actor as the host that captured it knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotActor {
    /// agentvm's id of the actor (its directory's name).
    pub id: String,
    pub namespace: String,
    pub name: String,
    /// The key in its REST form (`a/b`).
    pub key: String,
    pub created_ms: u64,
}

/// One archive of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// `state` (the event log and options) or `upper` (the VM's files).
    pub name: String,
    pub bytes: u64,
}
