//! VM events as the reference product names and shapes them: `Event {name, args: [payload]}`;
//! `streamError` for a connection that missed events; and their form in the durable event log
//! (small fields as JSON text, bytes as a BLOB).

use agentvm_protocol::Value;
use agentvm_store::StoredEvent;
use agentvm_vm::{Gap, GapScope, OutputStream, SequencedEvent, VmEvent};

/// The event name and its payload. Output bytes are shared with the event, not copied.
pub fn to_wire(event: &VmEvent) -> (&'static str, Value) {
    match event {
        VmEvent::ProcessOutput { pid, stream, data } => (
            "processOutput",
            Value::object([
                ("pid", Value::Int(i64::from(*pid))),
                ("stream", Value::from(stream_name(*stream))),
                ("data", Value::Bytes(data.clone())),
            ]),
        ),
        VmEvent::ProcessExit { pid, exit_code } => (
            "processExit",
            Value::object([("pid", Value::Int(i64::from(*pid))), ("exitCode", Value::Int(i64::from(*exit_code)))]),
        ),
        VmEvent::ShellData { shell_id, data } => (
            "shellData",
            Value::object([("shellId", Value::from(shell_id.as_str())), ("data", Value::Bytes(data.clone()))]),
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
        VmEvent::SessionEvent { session_id, event } => (
            "sessionEvent",
            Value::object([("sessionId", Value::from(session_id.as_str())), ("event", json_value(event))]),
        ),
        VmEvent::PermissionRequest { session_id, request } => (
            "permissionRequest",
            Value::object([("sessionId", Value::from(session_id.as_str())), ("request", json_value(request))]),
        ),
        VmEvent::AgentCrashed { session_id, message } => (
            "agentCrashed",
            Value::object([
                ("sessionId", Value::from(session_id.as_str())),
                ("message", Value::from(message.as_str())),
            ]),
        ),
        VmEvent::CronEvent { event } => ("cronEvent", Value::object([("event", json_value(event))])),
        VmEvent::NetworkDenied { host, port, reason } => (
            "networkDenied",
            Value::object([
                ("host", Value::from(host.as_str())),
                ("port", Value::Int(i64::from(*port))),
                ("reason", Value::from(reason.as_str())),
            ]),
        ),
    }
}

/// The event's name, without building its payload (to filter before any copy).
pub fn name(event: &VmEvent) -> &'static str {
    match event {
        VmEvent::ProcessOutput { .. } => "processOutput",
        VmEvent::ProcessExit { .. } => "processExit",
        VmEvent::ShellData { .. } => "shellData",
        VmEvent::ShellExit { .. } => "shellExit",
        VmEvent::VmBooted => "vmBooted",
        VmEvent::VmShutdown { .. } => "vmShutdown",
        VmEvent::NetworkDenied { .. } => "networkDenied",
        VmEvent::SessionEvent { .. } => "sessionEvent",
        VmEvent::PermissionRequest { .. } => "permissionRequest",
        VmEvent::AgentCrashed { .. } => "agentCrashed",
        VmEvent::CronEvent { .. } => "cronEvent",
    }
}

/// The name of the event that tells a connection it missed events.
pub const STREAM_ERROR: &str = "streamError";

/// `streamError {scope, id?, code: "event_stream_lagged", skipped, resumeFrom, message}`: this
/// connection did not receive `skipped` of the events it subscribed to, from sequence number
/// `resumeFrom` on; `getVmEvents({since: resumeFrom - 1})` returns them (while retained).
pub fn gap_to_wire(gap: &Gap) -> (&'static str, Value) {
    let mut fields: Vec<(String, Value)> = Vec::new();
    match &gap.scope {
        GapScope::Process(pid) => {
            fields.push(("scope".into(), Value::from("process")));
            fields.push(("id".into(), Value::Int(i64::from(*pid))));
        }
        GapScope::Shell(id) => {
            fields.push(("scope".into(), Value::from("shell")));
            fields.push(("id".into(), Value::from(id.as_str())));
        }
        GapScope::Vm => fields.push(("scope".into(), Value::from("vm"))),
    }
    let message = format!(
        "this connection fell behind and missed {} events from sequence number {}; read them with getVmEvents({{since: {}}})",
        gap.count,
        gap.first_seq,
        gap.first_seq as i128 - 1,
    );
    fields.push(("code".into(), Value::from("event_stream_lagged")));
    fields.push(("skipped".into(), Value::from(gap.count)));
    fields.push(("resumeFrom".into(), Value::from(gap.first_seq)));
    fields.push(("message".into(), Value::from(message)));
    (STREAM_ERROR, Value::object(fields))
}

/// An event in the durable log's form: small fields as JSON text, bytes apart.
pub fn to_stored(event: &SequencedEvent) -> StoredEvent {
    let (fields, data) = match &event.event {
        VmEvent::ProcessOutput { pid, stream, data } => {
            (serde_json::json!({"pid": pid, "stream": stream_name(*stream)}), Some(data.clone()))
        }
        VmEvent::ProcessExit { pid, exit_code } => (serde_json::json!({"pid": pid, "exitCode": exit_code}), None),
        VmEvent::ShellData { shell_id, data } => (serde_json::json!({"shellId": shell_id}), Some(data.clone())),
        VmEvent::ShellExit { shell_id, exit_code } => {
            (serde_json::json!({"shellId": shell_id, "exitCode": exit_code}), None)
        }
        VmEvent::VmBooted => (serde_json::json!({}), None),
        VmEvent::VmShutdown { reason } => (serde_json::json!({"reason": reason}), None),
        VmEvent::NetworkDenied { host, port, reason } => {
            (serde_json::json!({"host": host, "port": port, "reason": reason}), None)
        }
        VmEvent::SessionEvent { session_id, event } => {
            (serde_json::json!({"sessionId": session_id, "event": parse_json(event)}), None)
        }
        VmEvent::PermissionRequest { session_id, request } => {
            (serde_json::json!({"sessionId": session_id, "request": parse_json(request)}), None)
        }
        VmEvent::AgentCrashed { session_id, message } => {
            (serde_json::json!({"sessionId": session_id, "message": message}), None)
        }
        VmEvent::CronEvent { event } => (serde_json::json!({"event": parse_json(event)}), None),
    };
    StoredEvent {
        seq: event.seq,
        name: name(&event.event).to_string(),
        fields: fields.to_string(),
        data,
        created_ms: event.at_ms,
    }
}

/// A stored event's payload as clients receive it (the inverse of [`to_stored`]).
pub fn stored_payload(event: &StoredEvent) -> Value {
    let fields = match serde_json::from_str::<serde_json::Value>(&event.fields) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    let mut entries: Vec<(String, Value)> = fields.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
    if let Some(data) = &event.data {
        entries.push(("data".into(), Value::Bytes(data.clone())));
    }
    Value::object(entries)
}

/// JSON text carried by an event (written by agentvm, so it parses; `null` otherwise).
fn parse_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

fn json_value(text: &str) -> Value {
    Value::from(parse_json(text))
}

fn stream_name(stream: OutputStream) -> &'static str {
    match stream {
        OutputStream::Stdout => "stdout",
        OutputStream::Stderr => "stderr",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_form_round_trips() {
        let samples = [
            VmEvent::ProcessOutput { pid: 3, stream: OutputStream::Stderr, data: vec![0, 1, 255].into() },
            VmEvent::ProcessExit { pid: 3, exit_code: -1 },
            VmEvent::ShellData { shell_id: "s\"1".into(), data: vec![].into() },
            VmEvent::ShellExit { shell_id: "s1".into(), exit_code: 7 },
            VmEvent::VmBooted,
            VmEvent::VmShutdown { reason: "sleep".into() },
            VmEvent::NetworkDenied { host: "evil.example".into(), port: 443, reason: "not allowed".into() },
            VmEvent::CronEvent { event: r#"{"type":"cron:fire","jobId":"j","time":5}"#.into() },
        ];
        for (seq, event) in samples.into_iter().enumerate() {
            let stored = to_stored(&SequencedEvent { seq: seq as u64, at_ms: 99, event: event.clone() });
            let (name, payload) = to_wire(&event);
            assert_eq!((stored.name.as_str(), stored.created_ms), (name, 99));
            assert_eq!(stored_payload(&stored), payload, "{name}");
        }
    }

    #[test]
    fn a_gap_names_what_was_missed() {
        let (name, payload) = gap_to_wire(&Gap { first_seq: 10, count: 5, scope: GapScope::Process(4) });
        assert_eq!(name, "streamError");
        let json = payload.to_json_with(&|_| serde_json::Value::Null);
        assert_eq!(json["scope"], "process");
        assert_eq!(json["id"], 4);
        assert_eq!((json["skipped"].as_u64(), json["resumeFrom"].as_u64()), (Some(5), Some(10)));
        assert_eq!(json["code"], "event_stream_lagged");
    }
}
