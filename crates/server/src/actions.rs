//! The actions of a VM actor: names, arguments and results as in the reference product's
//! "Processes & Shell" API. Results are `Value`s; `Value::Undefined` for actions that return
//! nothing.

use std::time::Duration;

use agentvm_protocol::Value;
use agentvm_vm::{ExecOptions, ShellOptions, SpawnOptions, VmHost};
use bytes::Bytes;

use crate::actors::Actor;
use crate::args::Args;
use crate::error::ApiError;

/// Every action this server knows (unknown names fail before a VM boots).
pub const ACTIONS: &[&str] = &[
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
    "openShell",
    "writeShell",
    "resizeShell",
    "closeShell",
    "waitShell",
];

/// Longest `exec` timeout a client may ask for (a day); longer is refused, not clamped.
const MAX_TIMEOUT_MS: f64 = 86_400_000.0;

pub async fn dispatch(actor: &Actor, host: &VmHost, name: &str, values: &[Value]) -> Result<Value, ApiError> {
    if !ACTIONS.contains(&name) {
        return Err(ApiError::action_not_found(name));
    }
    let args = Args::new(name, values);
    // Check the arguments before booting a VM for a call that cannot succeed.
    let call = Call::parse(name, &args)?;
    let vm = actor.vm(host).await?;
    let undefined = |r: Result<(), agentvm_vm::VmError>| r.map(|()| Value::Undefined).map_err(ApiError::from);
    match call {
        Call::Exec(command, options) => to_value(&vm.exec(&command, options).await?),
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
        Call::OpenShell(options) => {
            let shell_id = vm.open_shell(options).await?;
            Ok(Value::object([("shellId", Value::from(shell_id))]))
        }
        Call::WriteShell(id, data) => undefined(vm.write_shell(&id, &data).await),
        Call::ResizeShell(id, cols, rows) => undefined(vm.resize_shell(&id, cols, rows)),
        Call::CloseShell(id) => undefined(vm.close_shell(&id).await),
        Call::WaitShell(id) => Ok(Value::Int(vm.wait_shell(&id).await?.into())),
    }
}

/// A validated action call.
enum Call {
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
    OpenShell(ShellOptions),
    WriteShell(String, Vec<u8>),
    ResizeShell(String, u16, u16),
    CloseShell(String),
    WaitShell(String),
}

impl Call {
    fn parse(name: &str, args: &Args<'_>) -> Result<Call, ApiError> {
        Ok(match name {
            "exec" => {
                let command = args.string(0, "command")?;
                let options = args.options(1)?;
                let timeout = match options.number("timeout")? {
                    None => None,
                    Some(ms) if ms.is_finite() && ms > 0.0 && ms <= MAX_TIMEOUT_MS => {
                        Some(Duration::from_secs_f64(ms / 1000.0))
                    }
                    Some(ms) => return Err(ApiError::invalid_arguments(format!(
                        "exec: option `timeout` must be a number of milliseconds from 1 to {MAX_TIMEOUT_MS}, got {ms}"
                    ))),
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
            "openShell" => {
                let options = args.options(0)?;
                Call::OpenShell(ShellOptions {
                    command: options.string("command")?,
                    args: options.string_list("args")?,
                    env: options.env()?,
                    cwd: options.string("cwd")?,
                    cols: options.u16("cols")?,
                    rows: options.u16("rows")?,
                })
            }
            "writeShell" => Call::WriteShell(args.string(0, "shellId")?, args.data(1, "data")?),
            "resizeShell" => Call::ResizeShell(args.string(0, "shellId")?, args.u16(1, "cols")?, args.u16(2, "rows")?),
            "closeShell" => Call::CloseShell(args.string(0, "shellId")?),
            "waitShell" => Call::WaitShell(args.string(0, "shellId")?),
            other => return Err(ApiError::action_not_found(other)),
        })
    }
}

fn to_value(result: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(result).map(Value::from).map_err(|e| ApiError::internal(format!("encoding a result: {e}")))
}
