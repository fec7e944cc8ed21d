//! # agentvm-config
//!
//! The server's config file: `agentvm serve --config FILE` (or `AGENTVM_CONFIG`), TOML, one
//! table per actor name. `client.coder.getOrCreate(key)` gets the `[actors.coder]` preset; with
//! a file, names it does not define are refused. Every key is optional (the defaults are the
//! built-in VM's); unknown keys and bad values are errors naming the file and the line.
//!
//! ```toml
//! [actors.vm]                       # the name clients use: client.vm.getOrCreate(...)
//!
//! [actors.coder]
//! client_settable = ["env"]         # what createWithInput may set: "env", "limits" (default ["env"])
//! env = { NODE_ENV = "development" }
//! warm_pool = 4                     # VMs booted ahead of time for new keys (default 0, at most 64)
//!
//! [actors.coder.limits]
//! memory = "2GiB"                   # bytes, or a number with KiB/MiB/GiB/TiB
//! pids = 1024
//! cpus = 2                          # cores; fractions allowed (0.5)
//! disk = "20GiB"
//! tcp_memory = "64MiB"
//! ptys = 16
//!
//! [actors.coder.network]
//! mode = "allow"                    # "none" (default), "allow", "open"
//! allow = ["api.anthropic.com:443", "*.npmjs.org:443", "10.1.2.3:5432"]
//! forward = [{ port = 8080, to = "127.0.0.1:9000" }]
//!
//! [actors.coder.preview]
//! default_expires_in_seconds = 3600
//! max_expires_in_seconds = 86400
//!
//! [actors.coder.sessions]
//! permissions = "ask"               # "ask" (default), "allow", "reject"
//! permission_timeout_seconds = 120  # unanswered requests are rejected after this
//! agents = ["pi", "claude", "mine"] # default: every agent the server knows
//!
//! [actors.coder.cron]
//! max_jobs = 100                    # jobs per VM that will run again (default 100)
//! min_interval_seconds = 60         # shortest time between two runs of a job (default 60)
//!
//! [agents.mine]                     # an operator's ACP agent: any program speaking ACP on stdio
//! command = ["node", "/opt/mine/agent.mjs"]
//! env = { MINE_MODE = "ci" }
//! ```
//!
//! The crate turns the file into [`agentvm_actors::Presets`]; the actor core applies them.

mod size;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentvm_actors::cron::CronLimits;
use agentvm_actors::preset::{
    ClientSettable, Forward, Limits, Network, NetworkMode, PermissionMode, Preset, PreviewLimits, SessionPolicy,
};
use agentvm_actors::Presets;
use agentvm_agents::{OperatorAgent, Registry};
use agentvm_network::Policy;
use serde::Deserialize;
use toml::Spanned;

use size::{Cpus, Size};

/// The proxy's port on each VM's loopback: a forward cannot take it in `allow` mode.
const PROXY_PORT: u16 = agentvm_actors::network::PROXY_PORT;

/// A config file that cannot be used: which file, which line (when the problem has one), what.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

/// Reads and checks the config file at `path`: the VM preset of each actor name, and the agents
/// sessions can use (the built-in ones and the operator's `[agents.ID]`, see
/// [`Presets::agents`]).
pub fn load(path: &Path) -> Result<Presets, ConfigError> {
    Ok(load_all(path)?.0)
}

/// `[engine]`: join a Rivet Engine's pool as a host (command-line options override each key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// The engine's URL.
    pub endpoint: Option<String>,
    /// The pool (runner config) name.
    pub pool: Option<String>,
    pub namespace: Option<String>,
    /// This host's version in the pool.
    pub version: Option<u32>,
    /// Where VM state is snapshotted (`s3://bucket/prefix`, or a directory).
    pub snapshot_store: Option<String>,
    /// Seconds between snapshots of an awake VM.
    pub snapshot_interval_seconds: Option<u64>,
}

/// [`load`], with the file's `[engine]` section if it has one.
pub fn load_all(path: &Path) -> Result<(Presets, Option<EngineSection>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    let file = path.display().to_string();
    let presets = parse(&text, &file)?;
    let parsed: FileSection = toml::from_str(&text).map_err(|e| ConfigError {
        file: file.clone(),
        line: e.span().map(|s| line_of(&text, s.start)),
        message: e.message().to_string(),
    })?;
    Ok((presets, parsed.engine))
}

/// Checks config `text` (`file` names it in errors).
pub fn parse(text: &str, file: &str) -> Result<Presets, ConfigError> {
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_string(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let parsed: FileSection = toml::from_str(text).map_err(|e| error(e.span(), e.message().to_string()))?;
    let operator: Vec<OperatorAgent> = parsed
        .agents
        .into_iter()
        .map(|(id, agent)| OperatorAgent { id, command: agent.command, env: agent.env })
        .collect();
    let agents = Registry::with_operator_agents(operator)
        .map_err(|e| error(text.find("[agents.").map(|o| o..o), format!("agents: {e}")))?;
    let mut presets = Vec::new();
    for (name, section) in parsed.actors {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            let line = text.find(&name).map(|offset| offset..offset);
            return Err(error(line, format!("actor name {name:?}: use letters, digits, `-` and `_`")));
        }
        presets.push(section.into_preset(&name, &agents).map_err(|(span, message)| error(span, message))?);
    }
    if presets.is_empty() {
        return Err(error(
            None,
            "the config file defines no actor: add at least one `[actors.NAME]` table (e.g. `[actors.vm]`)".into(),
        ));
    }
    Ok(Presets::only(presets).with_agents(agents))
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSection {
    #[serde(default)]
    actors: BTreeMap<String, ActorSection>,
    #[serde(default)]
    agents: BTreeMap<String, AgentSection>,
    engine: Option<EngineSection>,
}

/// `[agents.ID]`: an ACP agent of the operator's, any program speaking ACP on its stdio.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSection {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionsSection {
    permissions: Option<PermissionMode>,
    permission_timeout_seconds: Option<Spanned<u64>>,
    agents: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CronSection {
    max_jobs: Option<Spanned<u64>>,
    min_interval_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActorSection {
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    network: NetworkSection,
    #[serde(default)]
    preview: PreviewSection,
    #[serde(default)]
    sessions: SessionsSection,
    #[serde(default)]
    cron: CronSection,
    client_settable: Option<Vec<Settable>>,
    warm_pool: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    memory: Option<Size>,
    pids: Option<Spanned<u64>>,
    cpus: Option<Cpus>,
    disk: Option<Size>,
    tcp_memory: Option<Size>,
    ptys: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    mode: Option<Spanned<NetworkMode>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    forward: Vec<Spanned<ForwardSection>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardSection {
    port: u16,
    to: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PreviewSection {
    default_expires_in_seconds: Option<Spanned<u64>>,
    max_expires_in_seconds: Option<Spanned<u64>>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Settable {
    Env,
    Limits,
}

type Problem = (Option<std::ops::Range<usize>>, String);

impl ActorSection {
    fn into_preset(self, name: &str, agents: &Registry) -> Result<Preset, Problem> {
        let mut preset = Preset::named(name);
        preset.limits = self.limits.into_limits()?;
        for (key, value) in self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.get_ref().contains('\0') {
                return Err((Some(value.span()), format!("env: invalid variable {key:?}")));
            }
            preset.env.insert(key, value.into_inner());
        }
        preset.network = self.network.into_network()?;
        preset.preview = self.preview.into_limits()?;
        preset.sessions = self.sessions.into_policy(agents)?;
        preset.cron = self.cron.into_limits()?;
        if let Some(size) = self.warm_pool {
            let max = agentvm_actors::MAX_WARM_POOL as u64;
            if *size.get_ref() > max {
                return Err((Some(size.span()), format!("warm_pool: at most {max} VMs")));
            }
            preset.warm_pool = *size.get_ref() as usize;
        }
        if let Some(settable) = self.client_settable {
            preset.client_settable = ClientSettable { env: false, limits: false };
            for item in settable {
                match item {
                    Settable::Env => preset.client_settable.env = true,
                    Settable::Limits => preset.client_settable.limits = true,
                }
            }
        }
        Ok(preset)
    }
}

impl LimitsSection {
    fn into_limits(self) -> Result<Limits, Problem> {
        let mut limits = Limits::default();
        let positive = |value: &Spanned<u64>, what: &str| {
            if *value.get_ref() == 0 {
                Err((Some(value.span()), format!("limits.{what} must be at least 1")))
            } else {
                Ok(*value.get_ref())
            }
        };
        if let Some(memory) = self.memory {
            limits.memory_bytes = Some(memory.at_least(1 << 20, "limits.memory", "1MiB")?);
        }
        if let Some(pids) = &self.pids {
            limits.pids = Some(positive(pids, "pids")?);
        }
        if let Some(cpus) = self.cpus {
            limits.cpu_millicores = Some(cpus.millicores()?);
        }
        if let Some(disk) = self.disk {
            limits.disk_bytes = Some(disk.at_least(16 << 20, "limits.disk", "16MiB")?);
        }
        if let Some(tcp) = self.tcp_memory {
            limits.tcp_memory_bytes = Some(tcp.at_least(1 << 20, "limits.tcp_memory", "1MiB")?);
        }
        if let Some(ptys) = &self.ptys {
            let n = *ptys.get_ref();
            if !(1..=1024).contains(&n) {
                return Err((Some(ptys.span()), "limits.ptys must be between 1 and 1024".into()));
            }
            limits.max_ptys = n;
        }
        Ok(limits)
    }
}

impl NetworkSection {
    fn into_network(self) -> Result<Network, Problem> {
        let (mode, mode_span) = match self.mode {
            Some(mode) => (*mode.get_ref(), Some(mode.span())),
            None => (NetworkMode::None, None),
        };
        let mut entries = Vec::new();
        for entry in &self.allow {
            Policy::parse(std::slice::from_ref(entry.get_ref()))
                .map_err(|e| (Some(entry.span()), format!("network.allow: {e}")))?;
            entries.push(entry.get_ref().clone());
        }
        if !entries.is_empty() && mode != NetworkMode::Allow {
            let span = self.allow.first().map(Spanned::span);
            return Err((
                span,
                format!("network.allow has no effect with mode = \"{}\": set mode = \"allow\"", mode.as_str()),
            ));
        }
        if mode == NetworkMode::Allow && entries.is_empty() {
            return Err((mode_span, "network.mode = \"allow\" needs a non-empty network.allow list".into()));
        }
        let allow = Policy::parse(&entries).map_err(|e| (None, format!("network.allow: {e}")))?;
        let mut forward = Vec::new();
        let mut ports = BTreeSet::new();
        for entry in self.forward {
            let span = Some(entry.span());
            let ForwardSection { port, to } = entry.into_inner();
            if port == 0 {
                return Err((span, "network.forward: port must be between 1 and 65535".into()));
            }
            if mode == NetworkMode::Allow && port == PROXY_PORT {
                return Err((span, format!("network.forward: port {PROXY_PORT} is the egress proxy's in allow mode")));
            }
            if !ports.insert(port) {
                return Err((span, format!("network.forward: port {port} is forwarded twice")));
            }
            check_host_port(&to)
                .map_err(|message| (span.clone(), format!("network.forward: to = {to:?}: {message}")))?;
            forward.push(Forward { port, to });
        }
        Ok(Network { mode, allow: Arc::new(allow), forward })
    }
}

/// `host:port` or `[v6]:port`, with a port in 1..=65535.
fn check_host_port(text: &str) -> Result<(), String> {
    let (host, port) = text.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("expected HOST:PORT".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port (1-65535)")),
    }
}

impl CronSection {
    fn into_limits(self) -> Result<CronLimits, Problem> {
        let mut limits = CronLimits::default();
        if let Some(max) = &self.max_jobs {
            if !(1..=100_000).contains(max.get_ref()) {
                return Err((Some(max.span()), "cron.max_jobs must be between 1 and 100000".into()));
            }
            limits.max_jobs = *max.get_ref();
        }
        if let Some(seconds) = &self.min_interval_seconds {
            if !(1..=366 * 86_400).contains(seconds.get_ref()) {
                return Err((Some(seconds.span()), "cron.min_interval_seconds must be between 1 and 31622400".into()));
            }
            limits.min_interval_ms = seconds.get_ref() * 1000;
        }
        Ok(limits)
    }
}

impl SessionsSection {
    fn into_policy(self, agents: &Registry) -> Result<SessionPolicy, Problem> {
        let mut policy = SessionPolicy::default();
        if let Some(mode) = self.permissions {
            policy.permissions = mode;
        }
        if let Some(timeout) = &self.permission_timeout_seconds {
            let seconds = *timeout.get_ref();
            if !(1..=86_400).contains(&seconds) {
                return Err((
                    Some(timeout.span()),
                    "sessions.permission_timeout_seconds must be between 1 and 86400".into(),
                ));
            }
            policy.permission_timeout = Duration::from_secs(seconds);
        }
        if let Some(list) = self.agents {
            let mut ids = Vec::new();
            for id in list {
                if agents.get(id.get_ref()).is_none() {
                    return Err((
                        Some(id.span()),
                        format!(
                            "sessions.agents: unknown agent {:?} (known: {})",
                            id.get_ref(),
                            agents.ids().join(", ")
                        ),
                    ));
                }
                ids.push(id.into_inner());
            }
            policy.agents = Some(ids);
        }
        Ok(policy)
    }
}

impl PreviewSection {
    fn into_limits(self) -> Result<PreviewLimits, Problem> {
        let mut limits = PreviewLimits::default();
        if let Some(max) = &self.max_expires_in_seconds {
            if *max.get_ref() == 0 || *max.get_ref() > 365 * 86_400 {
                return Err((Some(max.span()), "preview.max_expires_in_seconds must be between 1 and 31536000".into()));
            }
            limits.max_expires = Duration::from_secs(*max.get_ref());
        }
        if let Some(default) = &self.default_expires_in_seconds {
            let seconds = *default.get_ref();
            if seconds == 0 || Duration::from_secs(seconds) > limits.max_expires {
                return Err((
                    Some(default.span()),
                    format!(
                        "preview.default_expires_in_seconds must be between 1 and max_expires_in_seconds ({})",
                        limits.max_expires.as_secs()
                    ),
                ));
            }
            limits.default_expires = Duration::from_secs(seconds);
        }
        if limits.default_expires > limits.max_expires {
            return Err((None, "preview.default_expires_in_seconds is above max_expires_in_seconds".into()));
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> ConfigError {
        parse(text, "agentvm.toml").expect_err("should be refused")
    }

    #[test]
    fn a_full_file_becomes_presets() {
        let config = parse(
            r#"
[actors.vm]

[actors.coder]
client_settable = ["env", "limits"]
env = { NODE_ENV = "development" }

[actors.coder.limits]
memory = "2GiB"
pids = 1024
cpus = 1.5
disk = 21474836480
tcp_memory = "64MiB"
ptys = 16

[actors.coder.network]
mode = "allow"
allow = ["api.example.com:443", "*.example.org:443", "10.1.2.3:5432"]
forward = [{ port = 8080, to = "127.0.0.1:9000" }]

[actors.coder.preview]
default_expires_in_seconds = 600
max_expires_in_seconds = 7200

[actors.coder.sessions]
permissions = "reject"
permission_timeout_seconds = 30
agents = ["pi", "mine"]

[actors.coder.cron]
max_jobs = 5
min_interval_seconds = 300

[agents.mine]
command = ["node", "/opt/mine/agent.mjs"]
env = { MINE = "1" }
"#,
            "agentvm.toml",
        )
        .unwrap();
        let presets = &config;
        assert!(config.agents().get("mine").is_some() && config.agents().get("pi").is_some());
        assert_eq!(presets.names(), vec!["coder".to_string(), "vm".to_string()]);
        assert!(presets.get("other").is_err());
        let vm = presets.get("vm").unwrap();
        assert_eq!(vm.network.mode, NetworkMode::None);
        assert_eq!(vm.limits, Limits::default());
        let coder = presets.get("coder").unwrap();
        assert_eq!(coder.limits.memory_bytes, Some(2 << 30));
        assert_eq!(coder.limits.cpu_millicores, Some(1500));
        assert_eq!(coder.limits.disk_bytes, Some(20 << 30));
        assert_eq!(coder.limits.max_ptys, 16);
        assert_eq!(coder.env.get("NODE_ENV").map(String::as_str), Some("development"));
        assert_eq!(coder.network.mode, NetworkMode::Allow);
        assert!(coder.network.allow.check("a.example.org", 443).is_ok());
        assert!(coder.network.allow.check("evil.com", 443).is_err());
        assert_eq!(coder.network.forward, vec![Forward { port: 8080, to: "127.0.0.1:9000".into() }]);
        assert_eq!(coder.preview.default_expires, Duration::from_secs(600));
        assert!(coder.client_settable.limits && coder.client_settable.env);
        assert_eq!(coder.sessions.permissions, PermissionMode::Reject);
        assert_eq!(coder.sessions.permission_timeout, Duration::from_secs(30));
        assert_eq!(coder.sessions.agents.as_deref(), Some(&["pi".to_string(), "mine".to_string()][..]));
        assert_eq!(vm.sessions, SessionPolicy::default());
        assert_eq!(coder.cron, CronLimits { max_jobs: 5, min_interval_ms: 300_000 });
        assert_eq!(vm.cron, CronLimits::default());
    }

    #[test]
    fn mistakes_name_the_line() {
        let e = error("[actors.vm]\nmemmory = 1\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("memmory"), "{e}");
        let e = error("[actors.vm.network]\nmode = \"allow\"\nallow = [\n  \"ok.example.com:443\",\n  \"no-port.example.com\",\n]\n");
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().starts_with("agentvm.toml:5: network.allow"), "{e}");
        let e = error("[actors.vm.limits]\nmemory = \"12 parsecs\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm.network]\nmode = \"sometimes\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm.network]\nallow = [\"a.com:443\"]\n");
        assert!(e.to_string().contains("mode = \"allow\""), "{e}");
        let e = error("[actors.vm.network]\nforward = [{ port = 80, to = \"localhost\" }]\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm.network]\nmode=\"allow\"\nallow=[\"a.com:443\"]\nforward = [{ port = 3128, to = \"127.0.0.1:1\" }]\n");
        assert!(e.to_string().contains("proxy"), "{e}");
        let e = error("[actors.vm.cron]\nmax_jobs = 0\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.to_string().contains("cron.max_jobs"), "{e}");
        let e = error("[actors.vm.cron]\nevery = 5\n");
        assert!(e.to_string().contains("every"), "{e}");
        let e = error("[actors.vm.limits]\ncpus = 0\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm.preview]\ndefault_expires_in_seconds = 100000\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[server]\nlisten = 1\n");
        assert!(e.to_string().contains("server"), "{e}");
        let e = error("[actors.\"a b\"]\n");
        assert_eq!(e.line, Some(1), "{e}");
        let e = error("[actors.vm]\nclient_settable = [\"network\"]\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm.sessions]\nagents = [\"nope\"]\n");
        assert!(e.line == Some(2) && e.to_string().contains("pi"), "{e}");
        let e = error("[actors.vm.sessions]\npermissions = \"maybe\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = error("[actors.vm]\n[agents.pi]\ncommand = [\"x\"]\n");
        assert!(e.to_string().contains("pi"), "{e}");
        let e = error("[actors.vm]\n[agents.x]\ncommand = []\n");
        assert!(e.to_string().contains("command"), "{e}");
        let e = error("[actors.vm]\n[agents.x]\ncmd = [\"a\"]\n");
        assert_eq!(e.line, Some(3), "{e}");
    }

    #[test]
    fn a_file_without_actors_is_refused() {
        assert!(error("").to_string().contains("[actors.NAME]"));
    }
}
