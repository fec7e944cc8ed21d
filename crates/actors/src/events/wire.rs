//! VM events as the reference product names and shapes them: `Event {name, args: [payload]}`,
//! and their JSON form in the durable event log (bytes as `["$Uint8Array", base64]`).

use agentvm_protocol::Value;
use agentvm_vm::{OutputStream, VmEvent};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// The event name and its payload.
pub fn to_wire(event: &VmEvent) -> (&'static str, Value) {
    match event {
        VmEvent::ProcessOutput { pid, stream, data } => (
            "processOutput",
            Value::object([
                ("pid", Value::Int(i64::from(*pid))),
                (
                    "stream",
                    Value::from(match stream {
                        OutputStream::Stdout => "stdout",
                        OutputStream::Stderr => "stderr",
                    }),
                ),
                ("data", Value::Bytes(data.to_vec())),
            ]),
        ),
        VmEvent::ProcessExit { pid, exit_code } => (
            "processExit",
            Value::object([("pid", Value::Int(i64::from(*pid))), ("exitCode", Value::Int(i64::from(*exit_code)))]),
        ),
        VmEvent::ShellData { shell_id, data } => (
            "shellData",
            Value::object([("shellId", Value::from(shell_id.as_str())), ("data", Value::Bytes(data.to_vec()))]),
        ),
        VmEvent::ShellExit { shell_id, exit_code } => (
            "shellExit",
            Value::object([
                ("shellId", Value::from(shell_id.as_str())),
                ("exitCode", Value::Int(i64::from(*exit_code))),
            ]),
        ),
        VmEvent::VmBooted => ("vmBooted", Value::object(Vec::<(String, Value)>::new())),
        VmEvent::VmShutdown { reason } => ("vmShutdown", Value::object([("reason", Value::from(reason.as_str()))])),
    }
}

/// An event payload as JSON for the durable log. Payloads are the server's own shapes (objects
/// of numbers, strings and bytes), so the `$Uint8Array` form cannot collide with user data.
pub fn to_json(value: &Value) -> serde_json::Value {
    value.to_json_with(&|b| serde_json::json!(["$Uint8Array", STANDARD.encode(b)]))
}

/// The inverse of [`to_json`].
pub fn from_json(value: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match value {
        J::Array(items) => match items.as_slice() {
            [J::String(tag), J::String(b64)] if tag == "$Uint8Array" => {
                STANDARD.decode(b64).map(Value::Bytes).unwrap_or_else(|_| Value::from(value.clone()))
            }
            _ => Value::Array(items.iter().map(from_json).collect()),
        },
        J::Object(entries) => Value::Map(entries.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
        other => Value::from(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_form_round_trips() {
        let event = VmEvent::ProcessOutput { pid: 3, stream: OutputStream::Stderr, data: vec![0, 1, 255].into() };
        let (name, payload) = to_wire(&event);
        assert_eq!(name, "processOutput");
        let json = to_json(&payload);
        assert_eq!(json, serde_json::json!({"pid": 3, "stream": "stderr", "data": ["$Uint8Array", "AAH/"]}));
        assert_eq!(from_json(&json), payload);
    }
}
