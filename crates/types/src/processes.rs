//! Processes and shells: what `exec`, `listProcesses`, `getProcess`, `allProcesses` and
//! `processTree` return, and the options of `spawn` and `openShell`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What `exec` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// The exit code, or 128+signal for a signal death (137 after a timeout).
    pub exit_code: i32,
    /// Output decoded as UTF-8 (invalid sequences replaced).
    pub stdout: String,
    pub stderr: String,
    /// `true` when the command was killed because it ran past its timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// `true` when stdout or stderr was longer than the server keeps per stream
    /// (`--max-exec-output-bytes`): the rest was read and discarded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Options of `spawn`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Added to (and overriding) the VM's default environment.
    pub env: BTreeMap<String, String>,
    /// Absolute working directory; default the VM user's home (`/home/user`).
    pub cwd: Option<String>,
}

/// Options of `openShell`. Defaults: `bash -l` where the VM has bash (else `sh`),
/// `TERM=xterm-256color`, 80x24.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShellOptions {
    /// Program to run instead of the login shell.
    pub command: Option<String>,
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<String>,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
}

/// A process started with `spawn`, as `listProcesses` / `getProcess` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnedProcessInfo {
    /// The VM's own pid (what `ps` inside shows).
    pub pid: i32,
    pub command: String,
    pub args: Vec<String>,
    pub running: bool,
    pub exit_code: Option<i32>,
}

/// Any process of the VM, as `allProcesses` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// How the process runs: always `"native"` (a real Linux process) in agentvm.
    pub driver: String,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// `"running"` or `"exited"`: a zombie not yet reaped by its parent, or a process started
    /// by `spawn` that the VM still remembers (as `listProcesses` does).
    pub status: String,
    pub exit_code: Option<i32>,
    /// Milliseconds since the Unix epoch.
    pub start_time: u64,
    /// When the process exited, in milliseconds since the Unix epoch; `null` while it runs, and
    /// for a zombie the VM did not start (its exit time is not known). Absent in answers of
    /// servers before it was added.
    #[serde(default)]
    pub exit_time: Option<u64>,
}

/// A node of `processTree`: a process and the processes whose parent it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessTreeNode {
    #[serde(flatten)]
    pub info: ProcessInfo,
    pub children: Vec<ProcessTreeNode>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_results_serialize_flags_only_when_set() {
        let result = ExecResult {
            exit_code: 0,
            stdout: "hi\n".into(),
            stderr: String::new(),
            timed_out: false,
            truncated: false,
        };
        let json = serde_json::to_string(&result).unwrap();
        assert_eq!(json, r#"{"exitCode":0,"stdout":"hi\n","stderr":""}"#);
        assert_eq!(serde_json::from_str::<ExecResult>(&json).unwrap(), result);
        let timed_out = ExecResult { exit_code: 137, timed_out: true, ..result };
        let json = serde_json::to_string(&timed_out).unwrap();
        assert_eq!(json, r#"{"exitCode":137,"stdout":"hi\n","stderr":"","timedOut":true}"#);
    }

    #[test]
    fn tree_nodes_flatten_the_process() {
        let info = ProcessInfo {
            pid: 2,
            ppid: 1,
            pgid: 2,
            sid: 2,
            driver: "native".into(),
            command: "sh".into(),
            args: vec![],
            cwd: "/".into(),
            status: "running".into(),
            exit_code: None,
            start_time: 5,
            exit_time: None,
        };
        let node = ProcessTreeNode { info, children: vec![] };
        let json = serde_json::to_value(&node).unwrap();
        assert_eq!(json["pid"], 2);
        assert_eq!(json["startTime"], 5);
        // Present as `null` while the process runs, as the reference's `number | null`.
        assert_eq!(json.get("exitTime"), Some(&serde_json::Value::Null));
        assert_eq!(json["children"], serde_json::json!([]));
        assert_eq!(serde_json::from_value::<ProcessTreeNode>(json).unwrap(), node);
    }
}
