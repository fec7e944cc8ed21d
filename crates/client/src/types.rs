//! Options and results of the typed VM methods and the conversions between them and [`Value`].
//! The results (process info, exec results, stats, directory entries) and the spawn and shell
//! options are the server's own types from `agentvm-types`, re-exported here: one definition
//! for both sides, without the VM crates' Linux-only dependencies.

use std::collections::BTreeMap;
use std::time::Duration;

use agentvm_protocol::Value;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub use agentvm_types::{
    DirEntryInfo, EntryKind, ExecResult, FileStat, ProcessInfo, ProcessTreeNode, ShellOptions, SpawnOptions,
    SpawnedProcessInfo,
};

/// One entry of `readdirRecursive` (the name this client has always used).
pub type DirEntry = DirEntryInfo;

/// Options of [`VmHandle::exec`](crate::VmHandle::exec).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// Working directory inside the VM (default: `/home/user`).
    pub cwd: Option<String>,
    /// Bytes written to the command's stdin, which is then closed.
    pub stdin: Option<Vec<u8>>,
    /// Kill the command's process group after this long: the result then has exit code 137
    /// and `timed_out: true`. The server accepts 1 ms to one day.
    pub timeout: Option<Duration>,
}

/// A cron job of a VM, as [`VmHandle::list_cron_jobs`](crate::VmHandle::list_cron_jobs) returns
/// it. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronJob {
    pub id: String,
    /// The cron pattern or one-shot time, as given.
    pub schedule: String,
    /// The IANA time zone it is read in.
    pub timezone: String,
    /// `{type: "exec", command, args?}` or `{type: "session", agentType, prompt, cwd?}`.
    pub action: serde_json::Value,
    /// `allow`, `skip` or `queue`.
    pub overlap: String,
    pub last_run: Option<u64>,
    /// `None` once a one-shot has run.
    pub next_run: Option<u64>,
    pub run_count: u64,
    pub running: bool,
    pub created_at: u64,
}

/// One run of a cron job ([`VmHandle::list_cron_runs`](crate::VmHandle::list_cron_runs)).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CronRun {
    pub run_id: u64,
    pub job_id: String,
    /// The time it stood for (earlier than `started_at` after a queue or downtime).
    pub scheduled_time: u64,
    pub started_at: u64,
    pub finished_at: Option<u64>,
    pub duration_ms: Option<u64>,
    /// `running`, `complete`, `error` or `interrupted`.
    pub status: String,
    /// An exec job's exit code and output (the first 64 KiB of each stream).
    pub exit_code: Option<i64>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    /// A session job's session (its transcript: `getSessionEvents`).
    pub session_id: Option<String>,
    pub error: Option<String>,
}

/// One event of a VM's durable log, from [`VmHandle::get_vm_events`](crate::VmHandle::get_vm_events).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Sequence number, increasing across sleeps and server restarts.
    pub seq: u64,
    /// `processOutput`, `processExit`, `shellData`, `shellExit`, `vmBooted` or `vmShutdown`.
    pub name: String,
    /// The event's payload, as a live [`Event`](crate::Event) carries it (bytes stay bytes).
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
}

impl StoredEvent {
    pub(crate) fn from_value(value: Value) -> Result<StoredEvent> {
        let Value::Map(entries) = value else {
            return Err(unexpected("getVmEvents", "an event object", &value));
        };
        let (mut seq, mut name, mut data, mut created_at) = (None, None, Value::Undefined, None);
        for (key, value) in entries {
            match key.as_str() {
                "seq" => seq = value.as_i64().and_then(|n| u64::try_from(n).ok()),
                "name" => name = value.as_str().map(str::to_owned),
                "data" => data = value,
                "createdAt" => created_at = value.as_i64().and_then(|n| u64::try_from(n).ok()),
                _ => {}
            }
        }
        match (seq, name, created_at) {
            (Some(seq), Some(name), Some(created_at)) => Ok(StoredEvent { seq, name, data, created_at }),
            _ => Err(Error::Protocol("getVmEvents: an event lacks `seq`, `name` or `createdAt`".into())),
        }
    }
}

/// Decodes an action result into `T` (through `serde_json`; bytes become arrays of numbers).
pub(crate) fn decode<T: DeserializeOwned>(action: &str, value: Value) -> Result<T> {
    let json = to_json(value).map_err(|what| Error::Protocol(format!("{action}: unexpected result: {what}")))?;
    serde_json::from_value(json).map_err(|e| Error::Protocol(format!("{action}: unexpected result: {e}")))
}

fn to_json(value: Value) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value as J;
    Ok(match value {
        Value::Undefined | Value::Null => J::Null,
        Value::Bool(b) => J::Bool(b),
        Value::Int(n) => J::from(n),
        // A JS number: integral ones (CBOR may carry large ones as floats) become integers.
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => J::from(f as i64),
        Value::Float(f) => serde_json::Number::from_f64(f).map(J::Number).ok_or(format!("non-finite number {f}"))?,
        Value::BigInt(n) => match (i64::try_from(n), u64::try_from(n)) {
            (Ok(n), _) => J::from(n),
            (_, Ok(n)) => J::from(n),
            _ => return Err(format!("integer {n} out of range")),
        },
        Value::String(s) => J::String(s),
        Value::Bytes(bytes) => J::Array(bytes.into_iter().map(J::from).collect()),
        Value::Array(items) | Value::Set(items) => J::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?),
        Value::Map(entries) => {
            J::Object(entries.into_iter().map(|(k, v)| Ok((k, to_json(v)?))).collect::<Result<_, String>>()?)
        }
    })
}

/// An error for a result that is not what `action` returns.
pub(crate) fn unexpected(action: &str, expected: &str, got: &Value) -> Error {
    Error::Protocol(format!("{action}: expected {expected} as result, got {}", got.type_name()))
}

/// An `i32` result (a pid or an exit code).
pub(crate) fn int32(action: &str, value: &Value) -> Result<i32> {
    value.as_i64().and_then(|n| i32::try_from(n).ok()).ok_or_else(|| unexpected(action, "an integer", value))
}

/// Builds an options object from the fields that are set.
#[derive(Default)]
pub(crate) struct Options(Vec<(String, Value)>);

impl Options {
    pub(crate) fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.0.push((name.to_owned(), value.into()));
        self
    }

    pub(crate) fn opt(self, name: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.set(name, value),
            None => self,
        }
    }

    pub(crate) fn env(self, env: &BTreeMap<String, String>) -> Self {
        if env.is_empty() {
            return self;
        }
        let map = Value::Map(env.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect());
        self.set("env", map)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn into_value(self) -> Value {
        Value::Map(self.0)
    }
}

/// Milliseconds as the server reads them: an integer when whole, else a fraction.
pub(crate) fn millis(duration: Duration) -> Value {
    if duration.subsec_nanos() % 1_000_000 == 0 {
        Value::from(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    } else {
        Value::Float(duration.as_secs_f64() * 1000.0)
    }
}

pub(crate) fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| Value::from(s.as_str())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_results_and_rejects_wrong_shapes() {
        let value =
            Value::object([("exitCode", Value::Int(3)), ("stdout", Value::from("a")), ("stderr", Value::from(""))]);
        let r: ExecResult = decode("exec", value).unwrap();
        assert_eq!(
            r,
            ExecResult { exit_code: 3, stdout: "a".into(), stderr: String::new(), timed_out: false, truncated: false }
        );
        let err = decode::<ExecResult>("exec", Value::Int(1)).unwrap_err();
        assert!(err.to_string().starts_with("protocol error: exec: unexpected result"), "{err}");
        assert!(decode::<u64>("x", Value::Float(f64::NAN)).is_err());
        assert_eq!(decode::<u64>("x", Value::BigInt(u64::MAX.into())).unwrap(), u64::MAX);
        assert_eq!(decode::<Vec<u8>>("x", Value::Bytes(vec![1, 2].into())).unwrap(), vec![1, 2]);
        assert_eq!(decode::<u64>("x", Value::Float(1795257889370.0)).unwrap(), 1795257889370);
        assert_eq!(decode::<f64>("x", Value::Float(2.5)).unwrap(), 2.5);
        assert!(int32("waitProcess", &Value::Int(i64::MAX)).is_err());
        assert!(StoredEvent::from_value(Value::Null).is_err());
        assert!(StoredEvent::from_value(Value::object([("seq", Value::Int(-1))])).is_err());
    }

    #[test]
    fn millis_are_whole_when_possible() {
        assert_eq!(millis(Duration::from_secs(2)), Value::Int(2000));
        assert_eq!(millis(Duration::from_micros(1500)), Value::Float(1.5));
    }
}
