//! Agent actions: `listAgents()` → `[{id, acpAdapter, agentPackage, installed, acpAdapterVersion,
//! agentPackageVersion}]` (the reference's shape plus the pinned versions). `installed` is read
//! from the server's software layer (`<data>/software`, see `agentvm_agents::layer`), which
//! `agentvm agents install` fills; the answer is the same for every actor. It never boots the VM.

use std::sync::Arc;

use agentvm_agents::SoftwareLayer;
use agentvm_protocol::Value;

use crate::actors::{blocking, Actors};
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &["listAgents"];

/// A validated agent action.
pub(super) enum Call {
    List,
}

/// The call for `name`, or `None` when `name` is not an agent action. `listAgents` takes no
/// arguments (extra ones are ignored, as JavaScript would).
pub(super) fn parse(name: &str) -> Option<Call> {
    match name {
        "listAgents" => Some(Call::List),
        _ => None,
    }
}

/// Runs an agent action (no VM needed).
pub(super) async fn run(actors: &Arc<Actors>, call: Call) -> Result<Value, ActorError> {
    let Call::List = call;
    let layer = SoftwareLayer::at(actors.host().software_dir());
    // A few small marker files: read off the async workers all the same.
    let agents = Arc::clone(actors.presets().agents());
    let statuses = blocking(move || agents.statuses(&layer)).await?;
    super::to_value(&statuses)
}
