//! Session actions (the reference's names and shapes, §2.5 of the API notes):
//! `createSession(agentType, {cwd?, env?})` → `{sessionId, agentType, capabilities, agentInfo}`,
//! `listSessions`, `getSession` (plus `pendingPermissions`: the ids of permission requests
//! waiting for an answer, so a client that reconnects can answer them), `sendPrompt(sessionId,
//! text)` → `{response, text}`, `cancelPrompt`, `respondPermission(sessionId, permissionId,
//! "once"|"always"|"reject")`, `setMode`, `getModes`, `setModel`, `setThoughtLevel`,
//! `getConfigOptions`, `rawSend`, `closeSession`,
//! `destroySession`, `resumeSession`, and the durable reads `listPersistedSessions`,
//! `getSessionEvents`, `getSequencedEvents`, `getEvents` (these three read the transcript, which
//! is written before anything is broadcast; they work while the VM sleeps, without booting it).

use std::sync::Arc;

use agentvm_protocol::Value;
use serde_json::json;

use super::args::Args;
use crate::actors::Actor;
use crate::error::ActorError;
use crate::sessions::CreateOptions;

/// The actions of this family.
pub const NAMES: &[&str] = &[
    "createSession",
    "listSessions",
    "getSession",
    "sendPrompt",
    "cancelPrompt",
    "respondPermission",
    "setMode",
    "getModes",
    "setModel",
    "setThoughtLevel",
    "getConfigOptions",
    "rawSend",
    "closeSession",
    "destroySession",
    "resumeSession",
    "listPersistedSessions",
    "getSessionEvents",
    "getSequencedEvents",
    "getEvents",
];

/// A validated session action.
pub(super) enum Call {
    Create { agent_type: String, options: CreateOptions },
    List,
    Get { id: String },
    Prompt { id: String, text: String },
    Cancel { id: String },
    Respond { id: String, permission_id: String, reply: String },
    SetMode { id: String, mode_id: String },
    GetModes { id: String },
    SetConfig { id: String, category: &'static str, value: String },
    GetConfigOptions { id: String },
    Raw { id: String, method: String, params: serde_json::Value },
    Close { id: String, destroy: bool },
    Resume { id: String },
    ListPersisted,
    Events { id: String, since: Option<u64>, method: Option<String>, shape: Shape },
}

/// How events are returned.
pub(super) enum Shape {
    /// `getSessionEvents`: `{sessionId, seq, event, createdAt}`.
    Persisted,
    /// `getSequencedEvents`: `{sequenceNumber, notification}`.
    Sequenced,
    /// `getEvents`: the notifications.
    Plain,
}

/// The call for `name`, or `None` when `name` is not a session action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    let id = || args.string(0, "sessionId");
    Ok(Some(match name {
        "createSession" => {
            let agent_type = args.string(0, "agentType")?;
            let options = args.options(1)?;
            let cwd = options.string("cwd")?;
            if let Some(cwd) = &cwd {
                if !cwd.starts_with('/') {
                    return Err(ActorError::InvalidArguments(format!(
                        "createSession: cwd must be an absolute path, got {cwd:?}"
                    )));
                }
            }
            Call::Create { agent_type, options: CreateOptions { cwd, env: options.env()? } }
        }
        "listSessions" => Call::List,
        "getSession" => Call::Get { id: id()? },
        "sendPrompt" => Call::Prompt { id: id()?, text: args.string(1, "text")? },
        "cancelPrompt" => Call::Cancel { id: id()? },
        "respondPermission" => {
            Call::Respond { id: id()?, permission_id: args.string(1, "permissionId")?, reply: args.string(2, "reply")? }
        }
        "setMode" => Call::SetMode { id: id()?, mode_id: args.string(1, "modeId")? },
        "getModes" => Call::GetModes { id: id()? },
        "setModel" => Call::SetConfig { id: id()?, category: "model", value: args.string(1, "model")? },
        "setThoughtLevel" => Call::SetConfig { id: id()?, category: "thought_level", value: args.string(1, "level")? },
        "getConfigOptions" => Call::GetConfigOptions { id: id()? },
        "rawSend" => {
            let params = args.json(2).unwrap_or(serde_json::Value::Null);
            Call::Raw { id: id()?, method: args.string(1, "method")?, params }
        }
        "closeSession" => Call::Close { id: id()?, destroy: false },
        "destroySession" => Call::Close { id: id()?, destroy: true },
        "resumeSession" => Call::Resume { id: id()? },
        "listPersistedSessions" => Call::ListPersisted,
        "getSessionEvents" | "getSequencedEvents" | "getEvents" => {
            let options = args.options(1)?;
            let since = options.number("since")?.filter(|n| *n >= 0.0).map(|n| n as u64);
            let shape = match name {
                "getSessionEvents" => Shape::Persisted,
                "getSequencedEvents" => Shape::Sequenced,
                _ => Shape::Plain,
            };
            Call::Events { id: id()?, since, method: options.string("method")?, shape }
        }
        _ => return Ok(None),
    }))
}

/// Whether the call works on the durable records alone (no VM needed).
pub(super) fn durable(call: &Call) -> bool {
    matches!(call, Call::ListPersisted | Call::Events { .. })
}

/// Runs a session action.
pub(super) async fn run(actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    let transcript = actor.transcript();
    let awake = actor.is_awake();
    let out = |v: serde_json::Value| Ok(Value::from(v));
    match call {
        Call::ListPersisted => {
            let records = transcript.records(awake).await?;
            out(serde_json::Value::Array(
                records
                    .iter()
                    .map(|r| {
                        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_default();
                        json!({"sessionId": r.session_id, "agentType": r.agent_type, "capabilities": parse(&r.capabilities),
                               "agentInfo": parse(&r.agent_info), "createdAt": r.created_ms})
                    })
                    .collect(),
            ))
        }
        Call::Events { id, since, method, shape } => {
            if transcript.record(&id, awake).await?.is_none() {
                return Err(ActorError::SessionNotFound(id));
            }
            let events = transcript.events(&id, since, 100_000, awake).await?;
            let mut list = Vec::new();
            for event in events {
                let parsed: serde_json::Value = serde_json::from_str(&event.event).unwrap_or_default();
                if method.as_deref().is_some_and(|m| parsed["method"] != m) {
                    continue;
                }
                list.push(match shape {
                    Shape::Persisted => {
                        json!({"sessionId": id, "seq": event.seq, "event": parsed, "createdAt": event.created_ms})
                    }
                    Shape::Sequenced => json!({"sequenceNumber": event.seq, "notification": parsed}),
                    Shape::Plain => parsed,
                });
            }
            out(serde_json::Value::Array(list))
        }
        call => run_live(actor, call).await,
    }
}

/// Session actions that need the VM (and the live session).
async fn run_live(actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    let sessions = actor.sessions();
    let out = |v: serde_json::Value| Ok(Value::from(v));
    match call {
        Call::Create { agent_type, options } => {
            let vm = actor.vm(false).await?;
            out(actor.create_session(&vm, &agent_type, options).await?)
        }
        Call::List => out(sessions.list()),
        Call::Get { id } => {
            let session = sessions.get(&id)?;
            let mut value = session.to_value();
            value["pendingPermissions"] = json!(session.pending_permissions());
            out(value)
        }
        Call::Prompt { id, text } => {
            // A session whose agent is gone (the VM slept, the server restarted) is resumed.
            let vm = actor.vm(false).await?;
            let session = actor.resume_session(&vm, &id).await?;
            out(session.prompt(&actor.transcript(), &text).await?)
        }
        Call::Cancel { id } => out(sessions.get(&id)?.cancel()?),
        Call::Respond { id, permission_id, reply } => out(sessions.get(&id)?.respond(&permission_id, &reply)?),
        Call::SetMode { id, mode_id } => out(sessions.get(&id)?.set_mode(&mode_id).await?),
        Call::GetModes { id } => out(sessions.get(&id)?.modes()),
        Call::SetConfig { id, category, value } => out(sessions.get(&id)?.set_config(category, &value).await?),
        Call::GetConfigOptions { id } => out(sessions.get(&id)?.config_options()),
        Call::Raw { id, method, params } => out(sessions.get(&id)?.raw(&method, params).await?),
        Call::Close { id, destroy } => {
            // A live session's agent ends; a persisted one (its VM slept) is marked closed.
            actor.close_session(&id, destroy).await?;
            Ok(Value::Undefined)
        }
        Call::Resume { id } => {
            let vm = actor.vm(false).await?;
            actor.resume_session(&vm, &id).await?;
            out(json!({"sessionId": id}))
        }
        Call::ListPersisted | Call::Events { .. } => unreachable_durable(),
    }
}

fn unreachable_durable() -> Result<Value, ActorError> {
    Err(ActorError::Internal("a durable session read reached the live path".into()))
}
