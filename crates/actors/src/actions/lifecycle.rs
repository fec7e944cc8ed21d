//! Lifecycle actions: `destroy` stops the VM and deletes the actor's data for good (the
//! transitions themselves are in [`crate::lifecycle`]; the work of each step in
//! [`crate::actors`]). It never boots the VM, and it is answered even while another `destroy`
//! runs (it waits for that one).

use std::sync::Arc;

use agentvm_protocol::Value;

use crate::actors::{Actor, Actors};
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &["destroy"];

/// A validated lifecycle action.
pub(super) enum Call {
    Destroy,
}

/// The call for `name`, or `None` when `name` is not a lifecycle action.
pub(super) fn parse(name: &str) -> Option<Call> {
    match name {
        "destroy" => Some(Call::Destroy),
        _ => None,
    }
}

/// Runs a lifecycle action.
pub(super) async fn run(actors: &Arc<Actors>, actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    let Call::Destroy = call;
    actors.destroy(actor).await?;
    actors.destroyed_by_client(actor);
    Ok(Value::Undefined)
}
