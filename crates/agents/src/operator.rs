//! Agents the operator declares in the server's config file: any program that speaks ACP on its
//! stdio, started as given inside the VM. Plain data: the config file parses it, [`validate`]
//! checks it, the [`crate::Registry`] serves it next to the built-in agents. agentvm installs
//! nothing for these; the program must exist in the VM (the host's `/usr`, the VM's own files,
//! or the software layer at `/opt/agentvm`).
//!
//! [`validate`]: OperatorAgent::validate

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `{id, command: [argv...], env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorAgent {
    pub id: String,
    /// The program (an absolute path inside the VM, or a name looked up in the VM's `PATH`)
    /// and its arguments.
    pub command: Vec<String>,
    /// Fixed environment of every launch, below the session's own.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Why an operator's agent declaration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorAgentError {
    #[error("agent id {0:?} must be 1 to 64 of a-z, 0-9, `-` and `_`, starting with a letter or digit")]
    BadId(String),
    #[error("agent `{0}`: `command` must name a program")]
    EmptyCommand(String),
    #[error("agent `{id}`: environment variable name {name:?} must be non-empty, without `=` or NUL")]
    BadEnvName { id: String, name: String },
    #[error("agent `{id}`: a NUL byte in its command or environment")]
    Nul { id: String },
}

impl OperatorAgent {
    /// Checks what the kernel and the session layer rely on: an id usable in commands and paths,
    /// a program, and strings `execve` accepts.
    pub fn validate(&self) -> Result<(), OperatorAgentError> {
        if !valid_id(&self.id) {
            return Err(OperatorAgentError::BadId(self.id.clone()));
        }
        if self.command.first().is_none_or(|program| program.is_empty()) {
            return Err(OperatorAgentError::EmptyCommand(self.id.clone()));
        }
        for name in self.env.keys() {
            if name.is_empty() || name.contains('=') {
                return Err(OperatorAgentError::BadEnvName { id: self.id.clone(), name: name.clone() });
            }
        }
        let strings = self.command.iter().chain(self.env.keys()).chain(self.env.values());
        if strings.into_iter().any(|s| s.contains('\0')) {
            return Err(OperatorAgentError::Nul { id: self.id.clone() });
        }
        Ok(())
    }
}

/// Agent ids appear in commands (`agentvm agents install ID`) and in paths: 1 to 64 of
/// `a-z 0-9 - _`, starting with a letter or digit.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, command: &[&str]) -> OperatorAgent {
        OperatorAgent { id: id.into(), command: command.iter().map(|s| s.to_string()).collect(), env: BTreeMap::new() }
    }

    #[test]
    fn parses_from_plain_data_and_validates() {
        let parsed: OperatorAgent =
            serde_json::from_str(r#"{"id": "my-agent", "command": ["/usr/bin/my-acp", "--stdio"], "env": {"A": "1"}}"#)
                .unwrap();
        assert_eq!(parsed.command, ["/usr/bin/my-acp", "--stdio"]);
        assert!(parsed.validate().is_ok());
        let no_env: OperatorAgent = serde_json::from_str(r#"{"id": "x", "command": ["x"]}"#).unwrap();
        assert!(no_env.env.is_empty());
        assert!(serde_json::from_str::<OperatorAgent>(r#"{"id": "x", "command": ["x"], "cmd": 1}"#).is_err());

        assert_eq!(agent("Bad", &["x"]).validate(), Err(OperatorAgentError::BadId("Bad".into())));
        assert_eq!(agent("-x", &["x"]).validate(), Err(OperatorAgentError::BadId("-x".into())));
        assert_eq!(agent("x", &[]).validate(), Err(OperatorAgentError::EmptyCommand("x".into())));
        assert_eq!(agent("x", &[""]).validate(), Err(OperatorAgentError::EmptyCommand("x".into())));
        assert_eq!(agent("x", &["a\0b"]).validate(), Err(OperatorAgentError::Nul { id: "x".into() }));
        let mut bad_env = agent("x", &["x"]);
        bad_env.env.insert("A=B".into(), "1".into());
        assert!(matches!(bad_env.validate(), Err(OperatorAgentError::BadEnvName { .. })));
    }
}
