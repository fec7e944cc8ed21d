//! Every agent a server knows: the built-in ones and those its operator declared, under one id
//! space. It answers `listAgents` and tells the session layer how to launch an id.

use serde::Serialize;

use crate::layer::{NotInstalled, SoftwareLayer};
use crate::operator::{OperatorAgent, OperatorAgentError};
pub use crate::spec::Launch;
use crate::spec::{AgentSpec, DEFAULT_CWD};

/// One agent of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    Builtin(&'static AgentSpec),
    Operator(OperatorAgent),
}

impl Agent {
    pub fn id(&self) -> &str {
        match self {
            Agent::Builtin(spec) => spec.id,
            Agent::Operator(agent) => &agent.id,
        }
    }
}

/// The built-in agents plus the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    agents: Vec<Agent>,
}

/// Why a set of operator agents cannot join the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Invalid(#[from] OperatorAgentError),
    #[error("agent `{0}` is declared twice (or is a built-in agent's id)")]
    Duplicate(String),
}

/// One row of `listAgents`: the reference's `{id, acpAdapter, agentPackage, installed}` plus the
/// pinned versions. An operator's agent shows its program as `acpAdapter`, no package and no
/// versions, and counts as installed (agentvm installs nothing for it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub id: String,
    pub acp_adapter: String,
    pub agent_package: Option<String>,
    pub installed: bool,
    pub acp_adapter_version: Option<String>,
    pub agent_package_version: Option<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::builtin()
    }
}

impl Registry {
    /// The built-in agents alone.
    pub fn builtin() -> Registry {
        Registry { agents: crate::builtin::builtin().iter().map(Agent::Builtin).collect() }
    }

    /// The built-in agents and `operator`'s, each validated; ids must be unique across both.
    pub fn with_operator_agents(operator: Vec<OperatorAgent>) -> Result<Registry, RegistryError> {
        let mut registry = Registry::builtin();
        for agent in operator {
            agent.validate()?;
            if registry.get(&agent.id).is_some() {
                return Err(RegistryError::Duplicate(agent.id));
            }
            registry.agents.push(Agent::Operator(agent));
        }
        Ok(registry)
    }

    pub fn get(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id() == id)
    }

    /// The built-in entry `id` (what `agentvm agents install` installs).
    pub fn builtin_spec(&self, id: &str) -> Option<&'static AgentSpec> {
        match self.get(id)? {
            Agent::Builtin(spec) => Some(spec),
            Agent::Operator(_) => None,
        }
    }

    /// Every id, built-in first, in declaration order.
    pub fn ids(&self) -> Vec<&str> {
        self.agents.iter().map(Agent::id).collect()
    }

    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// How a VM starts `id` (paths are the VM's); `None` for an unknown id.
    pub fn launch(&self, id: &str) -> Option<Launch> {
        Some(match self.get(id)? {
            Agent::Builtin(spec) => spec.launch(),
            Agent::Operator(agent) => {
                Launch { argv: agent.command.clone(), env: agent.env.clone(), cwd_default: DEFAULT_CWD.into() }
            }
        })
    }

    /// The launch of `id` if it can run now: a built-in agent must be installed in `layer`.
    /// `Ok(None)` for an unknown id.
    pub fn launch_installed(&self, id: &str, layer: &SoftwareLayer) -> Result<Option<Launch>, NotInstalled> {
        if let Some(Agent::Builtin(spec)) = self.get(id) {
            layer.require(spec)?;
        }
        Ok(self.launch(id))
    }

    /// What `listAgents` returns, with `installed` read from `layer` (a few small file reads).
    pub fn statuses(&self, layer: &SoftwareLayer) -> Vec<AgentStatus> {
        self.agents
            .iter()
            .map(|agent| match agent {
                Agent::Builtin(spec) => AgentStatus {
                    id: spec.id.into(),
                    acp_adapter: spec.acp_adapter.name.into(),
                    agent_package: Some(spec.agent_package.name.into()),
                    installed: layer.is_installed(spec),
                    acp_adapter_version: Some(spec.acp_adapter.version.into()),
                    agent_package_version: Some(spec.agent_package.version.into()),
                },
                Agent::Operator(agent) => AgentStatus {
                    id: agent.id.clone(),
                    acp_adapter: agent.command.first().cloned().unwrap_or_default(),
                    agent_package: None,
                    installed: true,
                    acp_adapter_version: None,
                    agent_package_version: None,
                },
            })
            .collect()
    }
}

/// `name@version` of every package of `spec`, for listings.
pub fn package_specs(spec: &AgentSpec) -> Vec<String> {
    spec.packages().iter().map(|p| p.spec()).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn operator(id: &str) -> OperatorAgent {
        OperatorAgent {
            id: id.into(),
            command: vec!["/usr/local/bin/my-acp".into(), "--acp".into()],
            env: BTreeMap::from([("MODE".into(), "quiet".into())]),
        }
    }

    #[test]
    fn builtin_and_operator_agents_share_one_id_space() {
        let registry = Registry::with_operator_agents(vec![operator("mine")]).unwrap();
        assert_eq!(registry.ids(), ["pi", "claude", "codex", "opencode", "mine"]);
        let launch = registry.launch("mine").unwrap();
        assert_eq!(launch.argv, ["/usr/local/bin/my-acp", "--acp"]);
        assert_eq!(launch.env["MODE"], "quiet");
        assert!(registry.launch("nope").is_none());
        assert_eq!(Registry::with_operator_agents(vec![operator("pi")]), Err(RegistryError::Duplicate("pi".into())));
        assert_eq!(
            Registry::with_operator_agents(vec![operator("a"), operator("a")]),
            Err(RegistryError::Duplicate("a".into()))
        );
        assert!(matches!(Registry::with_operator_agents(vec![operator("A")]), Err(RegistryError::Invalid(_))));
    }

    #[test]
    fn statuses_have_the_reference_shape() {
        let data = tempfile::tempdir().unwrap();
        let layer = SoftwareLayer::of_data_dir(data.path());
        let registry = Registry::with_operator_agents(vec![operator("mine")]).unwrap();
        let statuses = registry.statuses(&layer);
        let json = serde_json::to_value(&statuses[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "pi", "acpAdapter": "pi-acp", "agentPackage": "@mariozechner/pi-coding-agent",
                "installed": false, "acpAdapterVersion": "0.0.23", "agentPackageVersion": "0.73.1"
            })
        );
        assert!(statuses.iter().filter(|s| s.id != "mine").all(|s| !s.installed));
        assert!(statuses.iter().any(|s| s.id == "mine" && s.installed && s.agent_package.is_none()));
        assert_eq!(
            registry.launch_installed("pi", &layer).unwrap_err().to_string(),
            "agent `pi` is not installed: run `agentvm agents install pi`"
        );
        assert!(registry.launch_installed("mine", &layer).unwrap().is_some());
    }
}
