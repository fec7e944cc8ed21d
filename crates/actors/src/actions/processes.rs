//! Process actions: `exec`, `spawn`, stdin, waiting, listing and signalling processes.

use std::time::Duration;

use agentvm_protocol::Value;
use agentvm_vm::{ExecOptions, ExecResult, SpawnOptions, Vm};
use bytes::Bytes;

use super::args::Args;
use super::{to_value, undefined};
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &[
    "exec",
    "spawn",
    "writeProcessStdin",
    "closeProcessStdin",
    "waitProcess",
    "listProcesses",
    "getProcess",
    "stopProcess",
    "killProcess",
    "allProcesses",
    "processTree",
];

/// Longest `exec` timeout a client may ask for (a day); longer is refused, not clamped.
const MAX_TIMEOUT_MS: f64 = 86_400_000.0;

/// A validated process action.
pub(super) enum Call {
    Exec(String, ExecOptions),
    Spawn(String, Vec<String>, SpawnOptions),
    WriteStdin(i32, Vec<u8>),
    CloseStdin(i32),
    Wait(i32),
    List,
    Get(i32),
    Stop(i32),
    Kill(i32),
    All,
    Tree,
}

/// The call for `name`, or `None` when `name` is not a process action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "exec" => {
            let command = args.string(0, "command")?;
            let options = args.options(1)?;
            let timeout = match options.number("timeout")? {
                None => None,
                Some(ms) if ms.is_finite() && ms > 0.0 && ms <= MAX_TIMEOUT_MS => {
                    Some(Duration::from_secs_f64(ms / 1000.0))
                }
                Some(ms) => {
                    return Err(ActorError::InvalidArguments(format!(
                        "exec: option `timeout` must be a number of milliseconds from 1 to {MAX_TIMEOUT_MS}, got {ms}"
                    )))
                }
            };
            Call::Exec(
                command,
                ExecOptions {
                    env: options.env()?,
                    cwd: options.string("cwd")?,
                    stdin: options.data("stdin")?.map(Bytes::from),
                    timeout,
                },
            )
        }
        "spawn" => {
            let command = args.string(0, "command")?;
            let argv = args.string_list(1, "args")?;
            let options = args.options(2)?;
            Call::Spawn(command, argv, SpawnOptions { env: options.env()?, cwd: options.string("cwd")? })
        }
        "writeProcessStdin" => Call::WriteStdin(args.pid(0)?, args.data(1, "data")?),
        "closeProcessStdin" => Call::CloseStdin(args.pid(0)?),
        "waitProcess" => Call::Wait(args.pid(0)?),
        "listProcesses" => Call::List,
        "getProcess" => Call::Get(args.pid(0)?),
        "stopProcess" => Call::Stop(args.pid(0)?),
        "killProcess" => Call::Kill(args.pid(0)?),
        "allProcesses" => Call::All,
        "processTree" => Call::Tree,
        _ => return Ok(None),
    }))
}

/// Runs a process action on the running VM.
pub(super) async fn run(vm: &Vm, call: Call) -> Result<Value, ActorError> {
    match call {
        Call::Exec(command, options) => Ok(exec_result(vm.exec(&command, options).await?)),
        Call::Spawn(command, argv, options) => {
            let pid = vm.spawn(&command, &argv, options).await?;
            Ok(Value::object([("pid", Value::Int(pid.into()))]))
        }
        Call::WriteStdin(pid, data) => undefined(vm.write_process_stdin(pid, &data).await),
        Call::CloseStdin(pid) => undefined(vm.close_process_stdin(pid).await),
        Call::Wait(pid) => Ok(Value::Int(vm.wait_process(pid).await?.into())),
        Call::List => to_value(&vm.list_processes()),
        Call::Get(pid) => to_value(&vm.get_process(pid)?),
        Call::Stop(pid) => undefined(vm.stop_process(pid)),
        Call::Kill(pid) => undefined(vm.kill_process(pid)),
        Call::All => to_value(&vm.all_processes().await?),
        Call::Tree => to_value(&vm.process_tree().await?),
    }
}

/// `exec`'s result as a value: `ExecResult`'s serde form (`exitCode`, `stdout`, `stderr`, and
/// `timedOut` and `truncated` only when true), with the output moved in rather than copied
/// through `serde_json` (it can be hundreds of MiB).
fn exec_result(result: ExecResult) -> Value {
    let ExecResult { exit_code, stdout, stderr, timed_out, truncated } = result;
    let mut fields = vec![
        ("exitCode", Value::Int(exit_code.into())),
        ("stdout", Value::String(stdout)),
        ("stderr", Value::String(stderr)),
    ];
    if timed_out {
        fields.push(("timedOut", Value::Bool(true)));
    }
    if truncated {
        fields.push(("truncated", Value::Bool(true)));
    }
    Value::object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exec_result_is_its_serde_form() {
        for (timed_out, truncated) in [(false, false), (true, false), (false, true), (true, true)] {
            let result =
                ExecResult { exit_code: 137, stdout: "out\u{fffd}".into(), stderr: "err".into(), timed_out, truncated };
            assert_eq!(exec_result(result.clone()), to_value(&result).unwrap());
        }
    }
}
