//! Action dispatch: an action name and its decoded arguments in, a result [`Value`] or a typed
//! [`ActorError`] out. Names, arguments and results are those of the reference product's
//! "Processes & Shell" API; `Value::Undefined` for actions that return nothing.
//!
//! Every action is handled in the file of its family, which parses its arguments (before any VM
//! boots, so a call that cannot succeed costs nothing) and runs it:
//!
//! | family | file | actions |
//! | --- | --- | --- |
//! | processes | `processes.rs` | `exec`, `spawn`, `writeProcessStdin`, `closeProcessStdin`, `waitProcess`, `listProcesses`, `getProcess`, `stopProcess`, `killProcess`, `allProcesses`, `processTree` |
//! | shells | `shells.rs` | `openShell`, `writeShell`, `resizeShell`, `closeShell`, `waitShell` |
//! | files | `files.rs` | `readFile`, `writeFile`, `readFiles`, `writeFiles`, `mkdir`, `readdir`, `readdirRecursive`, `stat`, `exists`, `move`, `deleteFile` |
//! | events | `events.rs` | `getVmEvents` |
//! | lifecycle | `lifecycle.rs` | `destroy` |
//! | network | `network.rs` | `vmFetch`, `createSignedPreviewUrl`, `expireSignedPreviewUrl` |
//! | agents | `agents.rs` | `listAgents` |
//! | cron | `cron.rs` | `scheduleCron`, `listCronJobs`, `cancelCronJob`, `listCronRuns` |
//! | sessions | `sessions.rs` | `createSession`, `listSessions`, `getSession`, `sendPrompt`, `cancelPrompt`, `respondPermission`, `setMode`, `getModes`, `setModel`, `setThoughtLevel`, `getConfigOptions`, `rawSend`, `closeSession`, `destroySession`, `resumeSession`, `listPersistedSessions`, `getSessionEvents`, `getSequencedEvents`, `getEvents` |
//!
//! [`dispatch`] adds what every action shares: refusing actions once `destroy` began, counting
//! the action as activity (an actor with actions in flight never sleeps) and getting the VM
//! (booting it; quietly for file actions).

mod agents;
mod args;
mod cron;
mod events;
mod files;
mod lifecycle;
mod network;
mod processes;
mod sessions;
mod shells;

use std::sync::Arc;

use agentvm_protocol::Value;

use crate::actors::{Actor, Actors};
use crate::error::ActorError;
use args::Args;

/// Every action name, by family.
pub fn names() -> impl Iterator<Item = &'static str> {
    [
        processes::NAMES,
        shells::NAMES,
        files::NAMES,
        events::NAMES,
        lifecycle::NAMES,
        network::NAMES,
        agents::NAMES,
        sessions::NAMES,
        cron::NAMES,
    ]
    .into_iter()
    .flatten()
    .copied()
}

/// A validated action call.
enum Call {
    Processes(processes::Call),
    Shells(shells::Call),
    Files(files::Call),
    Events(events::Call),
    Lifecycle(lifecycle::Call),
    Network(network::Call),
    Agents(agents::Call),
    Sessions(sessions::Call),
    Cron(cron::Call),
}

impl Call {
    /// The call named `name`; unknown names fail with [`ActorError::ActionNotFound`].
    fn parse(name: &str, args: &Args<'_>) -> Result<Call, ActorError> {
        if let Some(call) = processes::parse(name, args)? {
            return Ok(Call::Processes(call));
        }
        if let Some(call) = shells::parse(name, args)? {
            return Ok(Call::Shells(call));
        }
        if let Some(call) = files::parse(name, args)? {
            return Ok(Call::Files(call));
        }
        if let Some(call) = events::parse(name, args)? {
            return Ok(Call::Events(call));
        }
        if let Some(call) = lifecycle::parse(name) {
            return Ok(Call::Lifecycle(call));
        }
        if let Some(call) = network::parse(name, args)? {
            return Ok(Call::Network(call));
        }
        if let Some(call) = sessions::parse(name, args)? {
            return Ok(Call::Sessions(call));
        }
        if let Some(call) = cron::parse(name, args)? {
            return Ok(Call::Cron(call));
        }
        if let Some(call) = agents::parse(name) {
            return Ok(Call::Agents(call));
        }
        Err(ActorError::ActionNotFound(name.to_string()))
    }
}

/// Runs the action `name` with `values` on `actor`.
pub async fn dispatch(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    name: &str,
    values: &[Value],
) -> Result<Value, ActorError> {
    // Check the name and the arguments before booting a VM for a call that cannot succeed.
    let call = Call::parse(name, &Args::new(name, values))?;
    // Once `destroy` began, only `destroy` itself is answered (it waits for the first one).
    if !matches!(call, Call::Lifecycle(lifecycle::Call::Destroy)) {
        actor.check_usable()?;
    }
    let _active = actor.activity();
    // File actions work on a sleeping VM without waking it: it boots quietly (no `vmBooted`)
    // and goes back to sleep quietly unless another action wakes it for real.
    let quiet = matches!(call, Call::Files(_));
    let result = match call {
        // Actions that never need the VM running.
        Call::Lifecycle(call) => return lifecycle::run(actors, actor, call).await,
        Call::Events(call) => return events::run(actor, call).await,
        Call::Agents(call) => return agents::run(actors, call).await,
        // Cron reads and writes the VM's file; a due job wakes the VM, not the action.
        Call::Cron(call) => return cron::run(actors, actor, call).await,
        // Durable reads work on a sleeping VM without booting it; the rest boot it.
        Call::Sessions(call) if sessions::durable(&call) => return sessions::run(actor, call).await,
        Call::Sessions(call) => sessions::run(actor, call).await,
        Call::Processes(call) => processes::run(&actor.vm(quiet).await?, call).await,
        Call::Shells(call) => shells::run(&actor.vm(quiet).await?, call).await,
        Call::Files(call) => files::run(&actor.vm(quiet).await?, call).await,
        // Boots the VM only for `vmFetch`.
        Call::Network(call) => network::run(actors, actor, call).await,
    };
    // A VM stopped under a running action by `destroy`: say so rather than "not running".
    result.map_err(|e| match actor.check_usable() {
        Err(refused) if e.is_vm_stopped() => refused,
        _ => e,
    })
}

/// `Value::Undefined` for an action that returns nothing.
fn undefined(result: Result<(), agentvm_vm::VmError>) -> Result<Value, ActorError> {
    result.map(|()| Value::Undefined).map_err(ActorError::from)
}

/// A result's serde form as a [`Value`].
fn to_value(result: &impl serde::Serialize) -> Result<Value, ActorError> {
    serde_json::to_value(result).map(Value::from).map_err(|e| ActorError::Internal(format!("encoding a result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_belongs_to_exactly_one_family() {
        let all: Vec<&str> = names().collect();
        assert_eq!(all.len(), 56);
        let mut unique = all.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "an action name in two families");
        for name in all {
            let parsed = Call::parse(name, &Args::new(name, &[]));
            assert!(!matches!(parsed, Err(ActorError::ActionNotFound(_))), "{name} is listed but not parsed");
        }
        assert!(
            matches!(Call::parse("nope", &Args::new("nope", &[])), Err(ActorError::ActionNotFound(n)) if n == "nope")
        );
    }
}
