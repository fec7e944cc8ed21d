//! Presets: what a VM of each actor name gets, chosen by the operator, never by the client.
//!
//! The server's config file (`agentvm serve --config`, parsed by `agentvm-config`) defines one
//! [`Preset`] per actor name (`[actors.vm]`, `[actors.coder]`…): limits, environment defaults,
//! the network policy and preview URL limits. Without a file every name gets
//! [`Preset::default`], today's built-in VM (loopback only). With a file only the names it
//! defines exist; any other name is refused ([`crate::ActorError::UnknownActorName`]).
//!
//! A client may pass `createWithInput` when it creates an actor. The input can set only what
//! the preset lists in [`ClientSettable`] ([`ClientOptions::from_input`]): environment
//! defaults, and limits *below* the preset's. The network policy is never the client's; an
//! input that tries to set it (or anything else not settable) is refused with a clear error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use agentvm_network::Policy;
use agentvm_protocol::Value;
use agentvm_vm::VmOptions;
use serde::{Deserialize, Serialize};

use crate::error::ActorError;

/// Default [`PreviewLimits::default_expires`] (the reference's 3600 s).
pub const DEFAULT_PREVIEW_EXPIRES: Duration = Duration::from_secs(3600);
/// Default [`PreviewLimits::max_expires`] (the reference's 86400 s).
pub const MAX_PREVIEW_EXPIRES: Duration = Duration::from_secs(86_400);

/// The VM options of one actor name.
#[derive(Debug, Clone)]
pub struct Preset {
    /// The actor name (`vm`, `coder`).
    pub name: String,
    pub limits: Limits,
    /// Environment every process of the VM starts with (after the built-in `HOME`, `PATH`…; an
    /// action's own `env` still overrides it).
    pub env: BTreeMap<String, String>,
    pub network: Network,
    pub preview: PreviewLimits,
    /// Agent sessions: which agents, and how permission requests are answered.
    pub sessions: SessionPolicy,
    /// Cron: how many jobs a VM may have, and how often they may run.
    pub cron: crate::cron::CronLimits,
    /// What a client's `createWithInput` may set.
    pub client_settable: ClientSettable,
    /// VMs kept booted ahead of time for new keys (0: none; see `crate::pool`).
    pub warm_pool: usize,
}

/// How an agent's permission requests are answered in a VM of this preset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionMode {
    /// Broadcast as `permissionRequest` and wait for `respondPermission`; rejected (cancelled)
    /// after [`SessionPolicy::permission_timeout`]. Never allowed by default: it fails closed.
    #[default]
    Ask,
    /// Allowed at once (the agent's allow-once option).
    Allow,
    /// Rejected at once.
    Reject,
}

/// Default [`SessionPolicy::permission_timeout`] (the reference's 120 s).
pub const DEFAULT_PERMISSION_TIMEOUT: Duration = Duration::from_secs(120);

/// Agent sessions in VMs of a preset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    pub permissions: PermissionMode,
    /// How long a permission request waits for an answer before it is rejected.
    pub permission_timeout: Duration,
    /// The agents sessions may use; `None`: every agent the server knows.
    pub agents: Option<Vec<String>>,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        SessionPolicy { permissions: PermissionMode::Ask, permission_timeout: DEFAULT_PERMISSION_TIMEOUT, agents: None }
    }
}

/// Resource limits of a VM (the fields of [`VmOptions`] an operator sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub cpu_millicores: Option<u64>,
    pub tcp_memory_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    pub max_ptys: u32,
}

impl Default for Limits {
    fn default() -> Self {
        let options = VmOptions::default();
        Limits {
            memory_bytes: options.limits.memory_bytes,
            pids: options.limits.pids,
            cpu_millicores: options.limits.cpu_millicores,
            tcp_memory_bytes: options.limits.tcp_memory_bytes,
            disk_bytes: options.disk_bytes,
            max_ptys: options.max_ptys,
        }
    }
}

/// How the VM reaches the outside world.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Loopback only: nothing outside the VM is reachable (but [`Network::forward`]s).
    #[default]
    None,
    /// Only [`Network::allow`]ed destinations, through the server's proxy.
    Allow,
    /// Outbound internet through a user-space network stack; the host stays unreachable.
    Open,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Allow => "allow",
            NetworkMode::Open => "open",
        }
    }
}

/// A VM's network policy.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub mode: NetworkMode,
    /// Destinations the proxy lets through in [`NetworkMode::Allow`].
    pub allow: Arc<Policy>,
    /// Ports of the VM's loopback joined to fixed host addresses (in every mode).
    pub forward: Vec<Forward>,
}

/// `{port = 8080, to = "127.0.0.1:9000"}`: connections to `127.0.0.1:port` inside the VM are
/// joined by the server to `to` (resolved by the server at each connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub port: u16,
    pub to: String,
}

/// Limits of `createSignedPreviewUrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewLimits {
    pub default_expires: Duration,
    pub max_expires: Duration,
}

impl Default for PreviewLimits {
    fn default() -> Self {
        PreviewLimits { default_expires: DEFAULT_PREVIEW_EXPIRES, max_expires: MAX_PREVIEW_EXPIRES }
    }
}

/// The parts of a preset a client's `createWithInput` may set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettable {
    /// `input.env`: environment defaults added to the preset's.
    pub env: bool,
    /// `input.limits`: lower limits than the preset's (never higher).
    pub limits: bool,
}

impl Default for ClientSettable {
    /// `env` only.
    fn default() -> Self {
        ClientSettable { env: true, limits: false }
    }
}

impl ClientSettable {
    /// The input keys these settings allow, for error messages.
    fn keys(self) -> Vec<&'static str> {
        [("env", self.env), ("limits", self.limits)].into_iter().filter(|(_, on)| *on).map(|(k, _)| k).collect()
    }
}

impl Default for Preset {
    /// Today's built-in VM: default limits, no extra environment, loopback only.
    fn default() -> Self {
        Preset::named("vm")
    }
}

impl Preset {
    /// The built-in defaults under another name.
    pub fn named(name: &str) -> Preset {
        Preset {
            name: name.to_string(),
            limits: Limits::default(),
            env: BTreeMap::new(),
            network: Network::default(),
            preview: PreviewLimits::default(),
            sessions: SessionPolicy::default(),
            cron: crate::cron::CronLimits::default(),
            client_settable: ClientSettable::default(),
            warm_pool: 0,
        }
    }

    /// The VM options of this preset narrowed by a client's settings: limits are the lower of
    /// the two, environment defaults the preset's then the client's.
    pub fn vm_options(&self, client: &ClientOptions) -> VmOptions {
        let mut options = VmOptions::default();
        let lower = |preset: Option<u64>, client: Option<u64>| match (preset, client) {
            (Some(p), Some(c)) => Some(p.min(c)),
            (None, c) => c,
            (p, None) => p,
        };
        let asked = client.limits.unwrap_or_default();
        options.limits.memory_bytes = lower(self.limits.memory_bytes, asked.memory_bytes);
        options.limits.pids = lower(self.limits.pids, asked.pids);
        options.limits.cpu_millicores = lower(self.limits.cpu_millicores, asked.cpu_millicores);
        options.limits.tcp_memory_bytes = self.limits.tcp_memory_bytes;
        options.disk_bytes = lower(self.limits.disk_bytes, asked.disk_bytes);
        options.max_ptys = self.limits.max_ptys;
        options.env = self.env.clone();
        options.env.extend(client.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        options
    }
}

/// What a client chose at creation (`createWithInput`), within what its preset allows. Stored
/// with the VM and applied at every boot (checked again against the preset of that time).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOptions {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ClientLimits>,
}

/// Limits a client asked for: each at most the preset's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millicores: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
}

impl ClientOptions {
    /// The settings of a `createWithInput` value (`{env?: {NAME: "value"}, limits?: {memoryBytes?,
    /// pids?, cpuMillicores?, diskBytes?}}`), refused with [`ActorError::InputRefused`] when it
    /// sets anything `preset` does not let clients set — the network policy above all — or
    /// asks for more than the preset's limits. `undefined`/`null` input means nothing.
    pub fn from_input(input: &Value, preset: &Preset) -> Result<ClientOptions, ActorError> {
        let refuse = |message: String| ActorError::InputRefused { preset: preset.name.clone(), message };
        let entries = match input {
            Value::Undefined | Value::Null => return Ok(ClientOptions::default()),
            Value::Map(entries) => entries,
            _ => return Err(refuse("createWithInput must be an object".into())),
        };
        let settable = preset.client_settable;
        let mut options = ClientOptions::default();
        let mut seen = BTreeSet::new();
        for (key, value) in entries {
            if !seen.insert(key.as_str()) {
                return Err(refuse(format!("createWithInput sets `{key}` twice")));
            }
            match key.as_str() {
                "network" => {
                    return Err(refuse(format!(
                        "the network policy is set by the server's preset `{}` and cannot be changed by a client",
                        preset.name
                    )))
                }
                "env" if settable.env => options.env = env_from(value).map_err(refuse)?,
                "limits" if settable.limits => {
                    options.limits = Some(limits_from(value, &preset.limits).map_err(refuse)?)
                }
                other => {
                    let keys = settable.keys();
                    let allowed =
                        if keys.is_empty() { "nothing".to_string() } else { format!("only `{}`", keys.join("`, `")) };
                    return Err(refuse(format!(
                        "createWithInput cannot set `{other}`: the preset `{}` lets clients set {allowed}",
                        preset.name
                    )));
                }
            }
        }
        Ok(options)
    }

    /// These settings without what `preset` no longer allows (the operator may have changed
    /// the config since the VM was created). Returns what was dropped, for the log.
    pub fn restrict_to(&mut self, preset: &Preset) -> Vec<&'static str> {
        let mut dropped = Vec::new();
        if !preset.client_settable.env && !self.env.is_empty() {
            self.env.clear();
            dropped.push("env");
        }
        if !preset.client_settable.limits && self.limits.take().is_some() {
            dropped.push("limits");
        }
        dropped
    }
}

/// The file in a VM's directory that holds its [`ClientOptions`] (absent when the client set
/// nothing).
const CLIENT_OPTIONS_FILE: &str = "client-options.json";

impl ClientOptions {
    /// Writes these options into the VM directory `dir`, durably (temporary file, fsync,
    /// rename, fsync of the directory); writes nothing for empty options. Blocking.
    pub fn save(&self, dir: &std::path::Path) -> Result<(), ActorError> {
        if *self == ClientOptions::default() {
            return Ok(());
        }
        let io = |context: &str| {
            let context = format!("{context} {}", dir.join(CLIENT_OPTIONS_FILE).display());
            move |source| ActorError::Io { context, source }
        };
        let json =
            serde_json::to_vec(self).map_err(|e| ActorError::Internal(format!("encoding client options: {e}")))?;
        let temporary = dir.join(format!("{CLIENT_OPTIONS_FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary).map_err(io("creating"))?;
        std::io::Write::write_all(&mut file, &json).map_err(io("writing"))?;
        file.sync_all().map_err(io("syncing"))?;
        std::fs::rename(&temporary, dir.join(CLIENT_OPTIONS_FILE)).map_err(io("renaming to"))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing the directory of"))
    }

    /// The options saved in the VM directory `dir` (empty when none were). Blocking.
    pub fn load(dir: &std::path::Path) -> Result<ClientOptions, ActorError> {
        let path = dir.join(CLIENT_OPTIONS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ActorError::Internal(format!("reading {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientOptions::default()),
            Err(source) => Err(ActorError::Io { context: format!("reading {}", path.display()), source }),
        }
    }
}

fn env_from(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Map(entries) = value else { return Err("createWithInput.env must be an object of strings".into()) };
    let mut env = BTreeMap::new();
    for (name, value) in entries {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(format!("createWithInput.env: invalid variable name {name:?}"));
        }
        let Some(text) = value.as_str() else {
            return Err(format!("createWithInput.env.{name} must be a string"));
        };
        if text.contains('\0') {
            return Err(format!("createWithInput.env.{name} contains a NUL byte"));
        }
        env.insert(name.clone(), text.to_string());
    }
    Ok(env)
}

fn limits_from(value: &Value, preset: &Limits) -> Result<ClientLimits, String> {
    let Value::Map(entries) = value else { return Err("createWithInput.limits must be an object".into()) };
    let mut limits = ClientLimits::default();
    for (name, value) in entries {
        let (slot, ceiling) = match name.as_str() {
            "memoryBytes" => (&mut limits.memory_bytes, preset.memory_bytes),
            "pids" => (&mut limits.pids, preset.pids),
            "cpuMillicores" => (&mut limits.cpu_millicores, preset.cpu_millicores),
            "diskBytes" => (&mut limits.disk_bytes, preset.disk_bytes),
            other => {
                return Err(format!(
                    "createWithInput.limits.{other} is not a limit (memoryBytes, pids, cpuMillicores, diskBytes)"
                ))
            }
        };
        let n = value
            .as_i64()
            .and_then(|n| u64::try_from(n).ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("createWithInput.limits.{name} must be a positive integer"))?;
        if let Some(ceiling) = ceiling {
            if n > ceiling {
                return Err(format!(
                    "createWithInput.limits.{name} = {n} is above the preset's {ceiling}: a client can only lower limits"
                ));
            }
        }
        *slot = Some(n);
    }
    Ok(limits)
}

/// Every preset of a server, by actor name, and the agents its sessions can run (the built-in
/// ones and the operator's `[agents.ID]`).
#[derive(Debug)]
pub struct Presets {
    named: BTreeMap<String, Arc<Preset>>,
    agents: Arc<agentvm_agents::Registry>,
    /// Without a config file, every actor name gets the built-in defaults: one shared preset
    /// per name, made on first use.
    any_name: Option<std::sync::Mutex<BTreeMap<String, Arc<Preset>>>>,
}

impl Default for Presets {
    /// No config file: every name gets [`Preset::default`].
    fn default() -> Self {
        Presets {
            named: BTreeMap::new(),
            agents: Arc::new(agentvm_agents::Registry::builtin()),
            any_name: Some(Default::default()),
        }
    }
}

impl Presets {
    /// Exactly these presets: other actor names are refused.
    pub fn only(presets: impl IntoIterator<Item = Preset>) -> Presets {
        let named = presets.into_iter().map(|p| (p.name.clone(), Arc::new(p))).collect();
        Presets { named, agents: Arc::new(agentvm_agents::Registry::builtin()), any_name: None }
    }

    /// The same presets with `agents` as the agents sessions can run.
    pub fn with_agents(mut self, agents: agentvm_agents::Registry) -> Presets {
        self.agents = Arc::new(agents);
        self
    }

    /// The agents sessions can run.
    pub fn agents(&self) -> &Arc<agentvm_agents::Registry> {
        &self.agents
    }

    /// The preset of actor name `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Preset>, ActorError> {
        if let Some(preset) = self.named.get(name) {
            return Ok(Arc::clone(preset));
        }
        if let Some(made) = &self.any_name {
            let mut made = made.lock().unwrap();
            return Ok(Arc::clone(made.entry(name.to_string()).or_insert_with(|| Arc::new(Preset::named(name)))));
        }
        Err(ActorError::UnknownActorName { name: name.to_string(), known: self.names() })
    }

    /// The names defined by the config file (empty without one).
    pub fn names(&self) -> Vec<String> {
        self.named.keys().cloned().collect()
    }

    /// Every defined preset.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Preset>> {
        self.named.values()
    }

    /// Whether any actor name is served (no config file).
    pub fn any_name(&self) -> bool {
        self.any_name.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: serde_json::Value) -> Value {
        Value::from(json)
    }

    #[test]
    fn a_client_may_set_env_but_never_the_network() {
        let preset = Preset::default();
        let ok = ClientOptions::from_input(&input(serde_json::json!({"env": {"A": "1"}})), &preset).unwrap();
        assert_eq!(ok.env.get("A").map(String::as_str), Some("1"));
        let err = ClientOptions::from_input(&input(serde_json::json!({"network": {"mode": "open"}})), &preset)
            .unwrap_err()
            .to_string();
        assert!(err.contains("network policy") && err.contains("`vm`"), "{err}");
        let err = ClientOptions::from_input(&input(serde_json::json!({"limits": {"pids": 10}})), &preset)
            .unwrap_err()
            .to_string();
        assert!(err.contains("only `env`"), "{err}");
        assert!(ClientOptions::from_input(&input(serde_json::json!({"env": {"A": 1}})), &preset).is_err());
        assert!(ClientOptions::from_input(&input(serde_json::json!("x")), &preset).is_err());
        assert_eq!(ClientOptions::from_input(&Value::Undefined, &preset).unwrap(), ClientOptions::default());
    }

    #[test]
    fn limits_can_only_be_lowered() {
        let mut preset = Preset::default();
        preset.client_settable.limits = true;
        let lower = ClientOptions::from_input(&input(serde_json::json!({"limits": {"pids": 64}})), &preset).unwrap();
        assert_eq!(preset.vm_options(&lower).limits.pids, Some(64));
        let err =
            ClientOptions::from_input(&input(serde_json::json!({"limits": {"memoryBytes": 1u64 << 40}})), &preset)
                .unwrap_err()
                .to_string();
        assert!(err.contains("only lower"), "{err}");
        let mut stored = lower.clone();
        preset.client_settable.limits = false;
        assert_eq!(stored.restrict_to(&preset), vec!["limits"]);
        assert_eq!(preset.vm_options(&stored).limits.pids, Preset::default().limits.pids);
    }

    #[test]
    fn only_configured_names_exist_with_a_file() {
        let presets = Presets::only([Preset::named("coder")]);
        assert!(presets.get("coder").is_ok());
        let err = presets.get("vm").unwrap_err().to_string();
        assert!(err.contains("coder"), "{err}");
        assert_eq!(Presets::default().get("anything").unwrap().name, "anything");
    }
}
