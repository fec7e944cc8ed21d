//! Agent sessions: a coding agent running inside the VM as an ordinary VM process, driven over
//! ACP (`acp`), its requests served from the VM (`client`), its records and transcript in the
//! VM's own SQLite file (`transcript`).
//!
//! A session lives while the VM that runs its agent does: when the VM stops (sleep, crash,
//! destroy) the agent is gone and the session is no longer live, but its record and transcript
//! stay readable (`listPersistedSessions`, `getSessionEvents`) without booting the VM. Every
//! event is written to the transcript before it is broadcast. An agent that exits, hangs in
//! the handshake or writes garbage gives `agentCrashed` and fails the pending call with its
//! stderr tail; the VM and other sessions keep working.

pub mod acp;
pub mod client;
pub mod transcript;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use agentvm_store::SessionRecord;
use agentvm_vm::{EventLog, Vm, VmEvent};
use serde_json::{json, Value};

use crate::error::ActorError;
use crate::preset::Preset;
use acp::{AcpError, AgentConnection, Timeouts};
use client::{Reply, VmClient};
use transcript::Transcript;

/// The live sessions of one actor.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Session>>>,
    /// Resumes happen one at a time (two prompts to a sleeping session start one agent).
    resuming: tokio::sync::Mutex<()>,
}

/// An agent process after its `initialize` handshake.
struct Started {
    connection: AgentConnection,
    init: acp::schema::InitializeResponse,
    client: Arc<VmClient>,
}

/// Starts an agent in the VM for session `session_id` and runs the handshake; a failure is an
/// `agentCrashed` event and an error.
async fn start_agent(
    cx: &Context<'_>,
    session_id: &str,
    argv: &[String],
    fixed_env: &BTreeMap<String, String>,
    env: &BTreeMap<String, String>,
    cwd: &str,
) -> Result<Started, ActorError> {
    let mut full_env = fixed_env.clone();
    full_env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let process = cx.vm.spawn_attached(argv.to_vec(), &full_env, Some(cwd)).await?;
    let client = Arc::new(VmClient::new(
        session_id.to_string(),
        cx.vm,
        Arc::clone(cx.events),
        cx.transcript.clone(),
        cx.preset.sessions.clone(),
    ));
    let (connection, init) = AgentConnection::start(process, client.clone(), Timeouts::default())
        .await
        .map_err(|e| crashed(cx, session_id, e))?;
    Ok(Started { connection, init, client })
}

/// An agent failure as an `agentCrashed` event and an error.
fn crashed(cx: &Context<'_>, session_id: &str, error: AcpError) -> ActorError {
    cx.events.push(VmEvent::AgentCrashed { session_id: session_id.to_string(), message: error.to_string() });
    ActorError::Agent(error.to_string())
}

/// One live session.
pub struct Session {
    pub id: String,
    pub agent_type: String,
    /// The agent's own session id.
    pub agent_session_id: String,
    connection: AgentConnection,
    client: Arc<VmClient>,
    record: SessionRecord,
    /// The `session/new` (or `session/load`) answer: modes, models, config options; kept
    /// current as modes and options are set.
    setup: Mutex<Value>,
}

/// Where a new session runs and what it may use.
pub struct Context<'a> {
    pub vm: &'a Vm,
    pub preset: &'a Preset,
    pub events: &'a Arc<EventLog>,
    pub transcript: &'a Transcript,
    pub agents: &'a agentvm_agents::Registry,
    /// The server's software layer (`<data>/software`), where built-in agents are installed.
    pub software_dir: &'a std::path::Path,
}

/// What `createSession` was asked for.
pub struct CreateOptions {
    pub cwd: Option<String>,
    pub env: BTreeMap<String, String>,
}

impl Sessions {
    /// Launches `agent_type` in `vm` and opens an ACP session with it.
    pub async fn create(&self, cx: Context<'_>, agent_type: &str, options: CreateOptions) -> Result<Value, ActorError> {
        let launch = launch_for(&cx, agent_type)?;
        let cwd = options.cwd.unwrap_or_else(|| launch.cwd_default.clone());
        let session_id = new_id();
        let started = start_agent(&cx, &session_id, &launch.argv, &launch.env, &options.env, &cwd).await?;
        let created =
            started.connection.new_session(&cwd, Vec::new()).await.map_err(|e| crashed(&cx, &session_id, e))?;
        let record = SessionRecord {
            session_id: session_id.clone(),
            agent_type: agent_type.to_string(),
            agent_session_id: Some(created.session_id.to_string()),
            cwd,
            capabilities: serde_json::to_string(&started.init.agent_capabilities).unwrap_or_else(|_| "{}".into()),
            agent_info: serde_json::to_string(&started.init.agent_info).unwrap_or_else(|_| "null".into()),
            env: serde_json::to_string(&options.env).unwrap_or_else(|_| "{}".into()),
            created_ms: crate::actors::now_ms(),
            closed_ms: None,
        };
        cx.transcript.put(record.clone(), true).await?;
        let setup = serde_json::to_value(&created).unwrap_or(Value::Null);
        let session = self.insert(&cx, started, record, created.session_id.to_string(), setup);
        Ok(session.to_value())
    }

    /// The live session `session_id`, or — when its agent is gone (the VM slept, the server
    /// restarted) — the same session again: its agent is started as before and restores the
    /// conversation with `session/load`, without repeating it to subscribers.
    pub async fn resume(&self, cx: Context<'_>, session_id: &str) -> Result<Arc<Session>, ActorError> {
        if let Ok(live) = self.get(session_id) {
            return Ok(live);
        }
        let _one_at_a_time = self.resuming.lock().await;
        if let Ok(live) = self.get(session_id) {
            return Ok(live);
        }
        let record = cx
            .transcript
            .record(session_id, true)
            .await?
            .ok_or_else(|| ActorError::SessionNotFound(session_id.to_string()))?;
        if record.closed_ms.is_some() {
            return Err(ActorError::SessionClosed(session_id.to_string()));
        }
        let agent_session_id =
            record.agent_session_id.clone().ok_or_else(|| ActorError::SessionNotFound(session_id.to_string()))?;
        let launch = launch_for(&cx, &record.agent_type)?;
        let env: BTreeMap<String, String> = serde_json::from_str(&record.env).unwrap_or_default();
        let started = start_agent(&cx, session_id, &launch.argv, &launch.env, &env, &record.cwd).await?;
        if !started.init.agent_capabilities.load_session {
            return Err(ActorError::Agent(format!(
                "agent `{}` cannot load an earlier session (no loadSession capability): create a new session",
                record.agent_type
            )));
        }
        // The agent replays the conversation as updates: the transcript has them already.
        started.client.set_replaying(true);
        let loaded = started.connection.load_session(&agent_session_id, &record.cwd, Vec::new()).await;
        started.client.set_replaying(false);
        let loaded = loaded.map_err(|e| crashed(&cx, session_id, e))?;
        let setup = serde_json::to_value(&loaded).unwrap_or(Value::Null);
        Ok(self.insert(&cx, started, record, agent_session_id, setup))
    }

    /// Makes a started agent a live session, watched for its end.
    fn insert(
        &self,
        cx: &Context<'_>,
        started: Started,
        record: SessionRecord,
        agent_session_id: String,
        setup: Value,
    ) -> Arc<Session> {
        let session = Arc::new(Session {
            id: record.session_id.clone(),
            agent_type: record.agent_type.clone(),
            agent_session_id,
            setup: Mutex::new(setup),
            connection: started.connection,
            client: started.client,
            record,
        });
        self.live.lock().unwrap().insert(session.id.clone(), Arc::clone(&session));
        // The agent's end: a crash is told to everyone; the session stops being live.
        let (watched, log) = (Arc::clone(&session), Arc::clone(cx.events));
        let stopped = cx.vm.on_stop();
        tokio::spawn(async move {
            tokio::select! {
                reason = watched.connection.closed() => {
                    if !matches!(reason, AcpError::Closed) {
                        log.push(VmEvent::AgentCrashed { session_id: watched.id.clone(), message: reason.to_string() });
                    }
                }
                () = stopped => {}
            }
        });
        session
    }

    pub fn get(&self, session_id: &str) -> Result<Arc<Session>, ActorError> {
        self.live
            .lock()
            .unwrap()
            .get(session_id)
            .cloned()
            .filter(|s| s.connection.close_reason().is_none())
            .ok_or_else(|| ActorError::SessionNotFound(session_id.to_string()))
    }

    /// The live sessions, `{sessionId, agentType}`.
    pub fn list(&self) -> Value {
        let live = self.live.lock().unwrap();
        let mut list: Vec<&Arc<Session>> = live.values().filter(|s| s.connection.close_reason().is_none()).collect();
        list.sort_by_key(|s| s.record.created_ms);
        Value::Array(list.iter().map(|s| json!({"sessionId": s.id, "agentType": s.agent_type})).collect())
    }

    /// Ends a session: its agent and terminals are killed, pending permissions rejected.
    pub fn close(&self, session_id: &str) -> Result<Arc<Session>, ActorError> {
        let session = self
            .live
            .lock()
            .unwrap()
            .remove(session_id)
            .ok_or_else(|| ActorError::SessionNotFound(session_id.to_string()))?;
        for permission in session.client.pending_permissions() {
            session.client.respond(&permission, Reply::Reject);
        }
        session.client.end_terminals();
        session.connection.kill();
        Ok(session)
    }

    /// Forgets every session (the VM stopped; their agents are gone).
    pub fn clear(&self) {
        self.live.lock().unwrap().clear();
    }
}

impl Session {
    /// `SessionRecord = {sessionId, agentType, capabilities, agentInfo}`.
    pub fn to_value(&self) -> Value {
        let parse = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        json!({
            "sessionId": self.id,
            "agentType": self.agent_type,
            "capabilities": parse(&self.record.capabilities),
            "agentInfo": parse(&self.record.agent_info),
        })
    }

    /// One prompt turn: `{response: JsonRpcResponse, text}` — the agent's answer, and the text
    /// of the message chunks it streamed meanwhile.
    pub async fn prompt(&self, transcript: &Transcript, text: &str) -> Result<Value, ActorError> {
        let prompt = json!({"method": "session/prompt", "params": {"sessionId": self.agent_session_id, "prompt": [{"type": "text", "text": text}]}});
        // The turn's chunks are the events after the prompt's own entry (none are kept once the
        // transcript is full).
        let prompt_seq = transcript.append(&self.id, prompt.to_string()).await?.unwrap_or(u64::MAX);
        let result = self
            .connection
            .prompt_text(&self.agent_session_id, text)
            .await
            .map_err(|e| ActorError::Agent(format!("session {}: {e}", self.id)))?;
        let result = serde_json::to_value(&result).unwrap_or(Value::Null);
        let mut streamed = String::new();
        for event in transcript.events(&self.id, Some(prompt_seq), usize::MAX, true).await? {
            let Ok(event) = serde_json::from_str::<Value>(&event.event) else { continue };
            let update = &event["params"]["update"];
            if update["sessionUpdate"] == "agent_message_chunk" {
                if let Some(chunk) = update["content"]["text"].as_str() {
                    streamed.push_str(chunk);
                }
            }
        }
        let response = json!({"jsonrpc": "2.0", "result": result});
        transcript.append(&self.id, json!({"method": "session/prompt/result", "params": response}).to_string()).await?;
        Ok(json!({"response": response, "text": streamed}))
    }

    /// Cancels the turn in flight (`session/cancel`); pending permissions are rejected.
    pub fn cancel(&self) -> Result<Value, ActorError> {
        for permission in self.client.pending_permissions() {
            self.client.respond(&permission, Reply::Reject);
        }
        self.connection.cancel(&self.agent_session_id).map_err(|e| ActorError::Agent(e.to_string()))?;
        Ok(json!({"jsonrpc": "2.0", "result": {"cancelled": true, "requested": true, "via": "notification"}}))
    }

    /// Answers a pending permission request.
    pub fn respond(&self, permission_id: &str, reply: &str) -> Result<Value, ActorError> {
        let parsed = Reply::parse(reply).ok_or_else(|| {
            ActorError::InvalidArguments(format!(
                "respondPermission: reply must be \"once\", \"always\" or \"reject\", got {reply:?}"
            ))
        })?;
        if !self.client.respond(permission_id, parsed) {
            return Err(ActorError::SessionNotFound(format!(
                "{}: no pending permission request {permission_id}",
                self.id
            )));
        }
        Ok(json!({"jsonrpc": "2.0", "result": {"permissionId": permission_id, "reply": reply, "via": "agentvm"}}))
    }

    /// Pending permission requests (a client that reconnects lists them to answer them).
    pub fn pending_permissions(&self) -> Vec<String> {
        self.client.pending_permissions()
    }

    pub async fn set_mode(&self, mode_id: &str) -> Result<Value, ActorError> {
        let result = self
            .connection
            .set_mode(&self.agent_session_id, mode_id)
            .await
            .map_err(|e| ActorError::Agent(e.to_string()))?;
        if let Some(modes) = self.setup.lock().unwrap().get_mut("modes").filter(|m| m.is_object()) {
            modes["currentModeId"] = Value::from(mode_id);
        }
        Ok(json!({"jsonrpc": "2.0", "result": serde_json::to_value(&result).unwrap_or(Value::Null)}))
    }

    /// `{currentModeId, availableModes}` as the agent announced them, or `null`.
    pub fn modes(&self) -> Value {
        self.setup.lock().unwrap().get("modes").cloned().unwrap_or(Value::Null)
    }

    /// The session's config options in the reference's shape (`{id, category?, label?,
    /// description?, currentValue?, allowedValues?: [{id, label?}], readOnly?}`); a `model`
    /// option is derived from the agent's `models` when it announces no option of that category.
    pub fn config_options(&self) -> Value {
        let setup = self.setup.lock().unwrap();
        let mut options: Vec<Value> = setup["configOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                let allowed: Vec<Value> = o["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| json!({"id": v["value"], "label": v["name"]}))
                    .collect();
                json!({"id": o["id"], "category": o["category"], "label": o["name"], "description": o["description"],
                       "currentValue": o["currentValue"], "allowedValues": allowed})
            })
            .collect();
        let has_model = options.iter().any(|o| o["category"] == "model");
        if let (false, Some(models)) = (has_model, setup.get("models").filter(|m| m.is_object())) {
            let allowed: Vec<Value> = models["availableModels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| json!({"id": m["modelId"], "label": m["name"]}))
                .collect();
            options.push(json!({"id": "model", "category": "model", "label": "Model",
                                "currentValue": models["currentModelId"], "allowedValues": allowed}));
        }
        Value::Array(options)
    }

    /// `session/set_config_option` for the option of `category` (`model`, `thought_level`), or
    /// the option with that id when none has the category.
    pub async fn set_config(&self, category: &str, value: &str) -> Result<Value, ActorError> {
        let config_id = self
            .config_options()
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["category"] == category)
            .and_then(|o| o["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| category.to_string());
        let params = json!({"sessionId": self.agent_session_id, "configId": config_id, "value": value});
        let result = self
            .connection
            .raw("session/set_config_option", params)
            .await
            .map_err(|e| ActorError::Agent(e.to_string()))?;
        if let Some(options) = result.get("configOptions").filter(|o| o.is_array()) {
            self.setup.lock().unwrap()["configOptions"] = options.clone();
        }
        Ok(json!({"jsonrpc": "2.0", "result": result}))
    }

    pub async fn raw(&self, method: &str, params: Value) -> Result<Value, ActorError> {
        let mut params = if params.is_object() { params } else { json!({}) };
        params["sessionId"] = Value::from(self.agent_session_id.clone());
        let result = self.connection.raw(method, params).await.map_err(|e| ActorError::Agent(e.to_string()))?;
        Ok(json!({"jsonrpc": "2.0", "result": result}))
    }
}

/// How `agent_type` starts in a VM of this preset: allowed by the preset, known to the server
/// and, for a built-in agent, installed.
fn launch_for(cx: &Context<'_>, agent_type: &str) -> Result<agentvm_agents::Launch, ActorError> {
    if let Some(allowed) = &cx.preset.sessions.agents {
        if !allowed.iter().any(|a| a == agent_type) {
            return Err(ActorError::InvalidArguments(format!(
                "agent `{agent_type}` is not allowed for `{}` VMs (allowed: {})",
                cx.preset.name,
                allowed.join(", ")
            )));
        }
    }
    let layer = agentvm_agents::SoftwareLayer::at(cx.software_dir);
    match cx.agents.launch_installed(agent_type, &layer) {
        Ok(Some(launch)) => Ok(launch),
        Ok(None) => Err(ActorError::InvalidArguments(format!("Unknown agent type: {agent_type}"))),
        Err(not_installed) => Err(ActorError::InvalidArguments(not_installed.to_string())),
    }
}

/// A new session id (32 hex characters from the system's CSPRNG).
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // The CSPRNG is always there on Linux; a clock-based id keeps the session usable.
        bytes[..8].copy_from_slice(&crate::actors::now_ms().to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
