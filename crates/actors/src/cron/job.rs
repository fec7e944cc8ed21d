//! What a job is: `scheduleCron`'s argument, checked, and the form it is stored in (JSON text
//! in the VM's SQLite file, see `agentvm_store::cron`).
//!
//! `{id?, schedule, timezone?, action, overlap?}` with `action` one of
//! `{type: "exec", command, args?}` (runs `sh -c "command args..."`, like the reference) and
//! `{type: "session", agentType, prompt, cwd?}` (creates a session, sends the prompt, closes the
//! session). The reference's docs also write `agent` for `agentType` and `options: {cwd}`;
//! both are accepted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest job id.
pub const MAX_ID_LEN: usize = 256;
/// Longest schedule and time zone name (errors quote them).
pub const MAX_SCHEDULE_LEN: usize = 256;
pub const MAX_TIMEZONE_LEN: usize = 64;
/// Longest exec command line (command and arguments).
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
/// Longest session prompt (jobs are kept on the host's disk, outside the VM's quota).
pub const MAX_PROMPT_BYTES: usize = 256 << 10;

/// A job's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub schedule: String,
    /// IANA time zone name; `None`: UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub action: Action,
    pub overlap: Overlap,
}

/// What a run does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    Exec {
        command: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        args: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Session {
        agent_type: String,
        prompt: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
}

impl Action {
    /// The shell command line of an exec action (the reference joins with spaces, unquoted).
    pub fn command_line(command: &str, args: &[String]) -> String {
        std::iter::once(command).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }
}

/// What happens when a run is due while the previous one still runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Both run.
    #[default]
    Allow,
    /// The new run is skipped.
    Skip,
    /// The new run waits and starts when the running one ends (at most
    /// [`super::run::MAX_QUEUED`] wait; more are skipped).
    Queue,
}

impl Overlap {
    pub fn name(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
        }
    }
}

/// `scheduleCron`'s argument: the id the client chose, if any, and the job.
pub fn parse(value: &Value) -> Result<(Option<String>, JobSpec), String> {
    let Value::Object(fields) = value else {
        return Err(format!("expected {{schedule, action, id?, overlap?, timezone?}}, got {}", kind(value)));
    };
    for key in fields.keys() {
        if !["id", "schedule", "action", "overlap", "timezone"].contains(&key.as_str()) {
            return Err(format!("unknown field {key:?} (expected schedule, action, id, overlap, timezone)"));
        }
    }
    let id = match fields.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
                return Err(format!("id must be 1 to {MAX_ID_LEN} characters without control characters"));
            }
            Some(id.clone())
        }
        Some(other) => return Err(format!("id must be a string, got {}", kind(other))),
    };
    let schedule = match fields.get("schedule") {
        Some(Value::String(s)) if s.len() <= MAX_SCHEDULE_LEN => s.clone(),
        Some(Value::String(_)) => return Err(format!("schedule must be at most {MAX_SCHEDULE_LEN} bytes")),
        Some(other) => return Err(format!("schedule must be a string, got {}", kind(other))),
        None => return Err(
            "schedule is required (a cron pattern such as \"0 3 * * *\", or a time such as \"2030-01-01T09:00:00Z\")"
                .into(),
        ),
    };
    let timezone = match fields.get("timezone") {
        None | Some(Value::Null) => None,
        Some(Value::String(tz)) if tz.len() <= MAX_TIMEZONE_LEN => Some(tz.clone()),
        Some(Value::String(_)) => return Err(format!("timezone must be at most {MAX_TIMEZONE_LEN} bytes")),
        Some(other) => return Err(format!("timezone must be a string, got {}", kind(other))),
    };
    let overlap = match fields.get("overlap") {
        None | Some(Value::Null) => Overlap::Allow,
        Some(Value::String(s)) => match s.as_str() {
            "allow" => Overlap::Allow,
            "skip" => Overlap::Skip,
            "queue" => Overlap::Queue,
            other => return Err(format!("overlap must be \"allow\", \"skip\" or \"queue\", got {other:?}")),
        },
        Some(other) => return Err(format!("overlap must be a string, got {}", kind(other))),
    };
    let action = parse_action(fields.get("action").ok_or(
        "action is required ({type: \"exec\", command, args?} or {type: \"session\", agentType, prompt, cwd?})",
    )?)?;
    Ok((id, JobSpec { schedule, timezone, action, overlap }))
}

fn parse_action(value: &Value) -> Result<Action, String> {
    let Value::Object(fields) = value else {
        return Err(format!("action must be an object, got {}", kind(value)));
    };
    let string = |name: &str| -> Result<Option<String>, String> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("action.{name} must be a string, got {}", kind(other))),
        }
    };
    match string("type")?.as_deref() {
        Some("exec") => {
            let command = string("command")?
                .filter(|c| !c.trim().is_empty())
                .ok_or("action.command is required (a shell command)")?;
            let args = match fields.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| {
                        item.as_str().map(str::to_string).ok_or_else(|| "action.args must be strings".to_string())
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(format!("action.args must be an array of strings, got {}", kind(other))),
            };
            let line = Action::command_line(&command, &args);
            if line.len() > MAX_COMMAND_BYTES || line.contains('\0') {
                return Err(format!("action.command must be at most {MAX_COMMAND_BYTES} bytes without NUL"));
            }
            Ok(Action::Exec { command, args })
        }
        Some("session") => {
            let agent_type = match string("agentType")? {
                Some(agent) => agent,
                None => string("agent")?.ok_or("action.agentType is required (an agent id such as \"pi\")")?,
            };
            let prompt = string("prompt")?.ok_or("action.prompt is required")?;
            if prompt.len() > MAX_PROMPT_BYTES {
                return Err(format!("action.prompt must be at most {MAX_PROMPT_BYTES} bytes"));
            }
            let nested_cwd = match fields.get("options") {
                Some(Value::Object(options)) => match options.get("cwd") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(cwd)) => Some(cwd.clone()),
                    Some(other) => return Err(format!("action.options.cwd must be a string, got {}", kind(other))),
                },
                _ => None,
            };
            let cwd = string("cwd")?.or(nested_cwd);
            if let Some(cwd) = &cwd {
                if !cwd.starts_with('/') || cwd.contains('\0') {
                    return Err(format!("action.cwd must be an absolute path, got {cwd:?}"));
                }
            }
            Ok(Action::Session { agent_type, prompt, cwd })
        }
        Some(other) => Err(format!("action.type must be \"exec\" or \"session\", got {other:?}")),
        None => Err("action.type is required (\"exec\" or \"session\")".into()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_actions_parse_with_defaults_and_aliases_and_round_trip() {
        let (id, spec) =
            parse(&json!({"schedule": "* * * * *", "action": {"type": "exec", "command": "echo", "args": ["a", "b"]}}))
                .unwrap();
        assert_eq!(id, None);
        assert_eq!(spec.overlap, Overlap::Allow);
        assert_eq!(spec.action, Action::Exec { command: "echo".into(), args: vec!["a".into(), "b".into()] });
        let (id, spec) =
            parse(&json!({"id": "nightly", "schedule": "0 3 * * *", "overlap": "queue", "timezone": "Europe/Paris",
            "action": {"type": "session", "agent": "pi", "prompt": "tidy up", "options": {"cwd": "/work"}}}))
            .unwrap();
        assert_eq!(id.as_deref(), Some("nightly"));
        assert_eq!(
            spec.action,
            Action::Session { agent_type: "pi".into(), prompt: "tidy up".into(), cwd: Some("/work".into()) }
        );
        let stored = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<JobSpec>(&stored).unwrap(), spec);
        assert_eq!(serde_json::to_value(&spec).unwrap()["action"]["agentType"], "pi");
    }

    #[test]
    fn bad_jobs_are_refused_with_what_is_wrong() {
        let cases = [
            (json!("* * * * *"), "expected {schedule"),
            (json!({"action": {"type": "exec", "command": "x"}}), "schedule is required"),
            (json!({"schedule": 5, "action": {"type": "exec", "command": "x"}}), "schedule must be a string"),
            (json!({"schedule": "* * * * *"}), "action is required"),
            (json!({"schedule": "* * * * *", "action": {"type": "exec"}}), "action.command is required"),
            (json!({"schedule": "* * * * *", "action": {"type": "callback"}}), "action.type must be"),
            (json!({"schedule": "* * * * *", "action": {"type": "session", "prompt": "x"}}), "agentType is required"),
            (
                json!({"schedule": "* * * * *", "action": {"type": "exec", "command": "x"}, "overlap": "sometimes"}),
                "overlap must be",
            ),
            (json!({"schedule": "* * * * *", "action": {"type": "exec", "command": "x"}, "id": ""}), "id must be"),
            (json!({"schedule": "* * * * *", "action": {"type": "exec", "command": "x"}, "every": 5}), "unknown field"),
            (
                json!({"schedule": "* * * * *", "action": {"type": "session", "agentType": "pi", "prompt": "x", "cwd": "rel"}}),
                "absolute",
            ),
            (json!({"schedule": "*".repeat(300), "action": {"type": "exec", "command": "x"}}), "at most 256"),
            (
                json!({"schedule": "* * * * *", "timezone": "A".repeat(100), "action": {"type": "exec", "command": "x"}}),
                "at most 64",
            ),
            (
                json!({"schedule": "* * * * *", "action": {"type": "exec", "command": "x".repeat(70_000)}}),
                "at most 65536",
            ),
            (
                json!({"schedule": "* * * * *", "action": {"type": "session", "agentType": "pi", "prompt": "x".repeat(300_000)}}),
                "at most 262144",
            ),
        ];
        for (value, expected) in cases {
            let e = parse(&value).expect_err(&value.to_string());
            assert!(e.contains(expected), "{value}: {e}");
        }
    }
}
