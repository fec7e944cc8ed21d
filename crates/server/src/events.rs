//! VM events as the reference product names and shapes them: `Event {name, args: [payload]}`.

use agentvm_protocol::Value;
use agentvm_vm::{OutputStream, VmEvent};

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
    }
}
