//! The actions of a VM actor: names, arguments and results as in the reference product's
//! "Processes & Shell" API. Results are `Value`s; `Value::Undefined` for actions that return
//! nothing.

use std::time::Duration;

use std::sync::Arc;

use agentvm_protocol::Value;
use agentvm_vm::{ExecOptions, ShellOptions, SpawnOptions};
use bytes::Bytes;

use crate::actors::{Actor, Actors};
use crate::error::ActorError;
use args::Args;

mod args;

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
    "readFile",
    "writeFile",
    "readFiles",
    "writeFiles",
    "mkdir",
    "readdir",
    "readdirRecursive",
    "stat",
    "exists",
    "move",
    "deleteFile",
    "getVmEvents",
    "destroy",
];

/// Most events `getVmEvents` returns at once.
const MAX_EVENTS_PER_CALL: u64 = 10_000;

/// Longest `exec` timeout a client may ask for (a day); longer is refused, not clamped.
const MAX_TIMEOUT_MS: f64 = 86_400_000.0;

pub async fn dispatch(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    name: &str,
    values: &[Value],
) -> Result<Value, ActorError> {
    if !ACTIONS.contains(&name) {
        return Err(ActorError::ActionNotFound(name.to_string()));
    }
    let args = Args::new(name, values);
    // Check the arguments before booting a VM for a call that cannot succeed.
    let call = Call::parse(name, &args)?;
    // Once `destroy` began, only `destroy` itself is answered (it waits for the first one).
    if !matches!(call, Call::Destroy) {
        actor.check_usable()?;
    }
    let _active = actor.activity();
    // Actions that never need the VM running.
    match call {
        Call::Destroy => {
            actors.destroy(actor).await?;
            return Ok(Value::Undefined);
        }
        Call::Events { since, limit } => {
            let events = actor.events_after(since, limit).await?;
            return Ok(Value::Array(
                events
                    .iter()
                    .map(|e| {
                        Value::object([
                            ("seq", Value::from(e.seq)),
                            ("name", Value::from(e.name.as_str())),
                            ("data", crate::events::from_json(&e.payload)),
                            ("createdAt", Value::from(e.created_ms)),
                        ])
                    })
                    .collect(),
            ));
        }
        _ => {}
    }
    // File actions work on a sleeping VM without waking it: it boots quietly (no `vmBooted`)
    // and goes back to sleep quietly unless another action wakes it for real.
    let vm = actor.vm(call.is_file_action()).await?;
    let result = run(&vm, call).await;
    // A VM stopped under a running action by `destroy`: say so rather than "not running".
    result.map_err(|e| match actor.check_usable() {
        Err(refused) if e.is_vm_stopped() => refused,
        _ => e,
    })
}

/// Runs an action that needs the VM.
async fn run(vm: &agentvm_vm::Vm, call: Call) -> Result<Value, ActorError> {
    let undefined = |r: Result<(), agentvm_vm::VmError>| r.map(|()| Value::Undefined).map_err(ActorError::from);
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
        Call::ReadFile(path) => Ok(Value::Bytes(vm.read_file(&path).await?)),
        Call::WriteFile(path, content) => undefined(vm.write_file(&path, &content).await),
        Call::ReadFiles(paths) => Ok(Value::Array(
            vm.read_files(&paths)
                .await
                .into_iter()
                .map(|r| {
                    let mut entry = vec![
                        ("path".to_string(), Value::from(r.path)),
                        ("content".to_string(), r.content.map_or(Value::Null, Value::Bytes)),
                    ];
                    if let Some(error) = r.error {
                        entry.push(("error".to_string(), Value::from(error)));
                    }
                    Value::Map(entry)
                })
                .collect(),
        )),
        Call::WriteFiles(entries) => to_value(&vm.write_files(entries).await),
        Call::Mkdir(path, recursive) => undefined(vm.mkdir(&path, recursive).await),
        Call::Readdir(path) => to_value(&vm.readdir(&path).await?),
        Call::ReaddirRecursive(path, max_depth, exclude) => {
            to_value(&vm.readdir_recursive(&path, max_depth, &exclude).await?)
        }
        Call::Stat(path) => to_value(&vm.stat(&path).await?),
        Call::Exists(path) => Ok(Value::Bool(vm.exists(&path).await?)),
        Call::Move(from, to) => undefined(vm.move_path(&from, &to).await),
        Call::Delete(path, recursive) => undefined(vm.delete_path(&path, recursive).await),
        Call::Destroy | Call::Events { .. } => unreachable!("handled before the VM boots"),
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
    ReadFile(String),
    WriteFile(String, Vec<u8>),
    ReadFiles(Vec<String>),
    WriteFiles(Vec<(String, Vec<u8>)>),
    Mkdir(String, bool),
    Readdir(String),
    ReaddirRecursive(String, Option<u32>, Vec<String>),
    Stat(String),
    Exists(String),
    Move(String, String),
    Delete(String, bool),
    /// `getVmEvents({since?, limit?})`: the VM's durable event log after `since`.
    Events {
        since: Option<u64>,
        limit: usize,
    },
    Destroy,
}

impl Call {
    fn is_file_action(&self) -> bool {
        matches!(
            self,
            Call::ReadFile(..)
                | Call::WriteFile(..)
                | Call::ReadFiles(..)
                | Call::WriteFiles(..)
                | Call::Mkdir(..)
                | Call::Readdir(..)
                | Call::ReaddirRecursive(..)
                | Call::Stat(..)
                | Call::Exists(..)
                | Call::Move(..)
                | Call::Delete(..)
        )
    }

    fn parse(name: &str, args: &Args<'_>) -> Result<Call, ActorError> {
        Ok(match name {
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
            "getVmEvents" => {
                let options = args.options(0)?;
                let since = whole_number(options.number("since")?, u64::MAX, "getVmEvents", "since")?;
                let limit = whole_number(options.number("limit")?, MAX_EVENTS_PER_CALL, "getVmEvents", "limit")?;
                if limit == Some(0) {
                    return Err(ActorError::InvalidArguments(format!(
                        "getVmEvents: option `limit` must be a whole number from 1 to {MAX_EVENTS_PER_CALL}, got 0"
                    )));
                }
                // Sequence numbers are u64; a `since` at or past the newest is simply "nothing yet".
                Call::Events { since, limit: limit.map_or(1000, |n| n as usize) }
            }
            "destroy" => Call::Destroy,
            "readFile" => Call::ReadFile(args.string(0, "path")?),
            "writeFile" => Call::WriteFile(args.string(0, "path")?, args.data(1, "content")?),
            "readFiles" => Call::ReadFiles(args.string_list(0, "paths")?),
            "writeFiles" => Call::WriteFiles(args.entries(0)?),
            "mkdir" => Call::Mkdir(args.string(0, "path")?, args.options(1)?.flag("recursive")?),
            "readdir" => Call::Readdir(args.string(0, "path")?),
            "readdirRecursive" => {
                let options = args.options(1)?;
                let max_depth = match options.number("maxDepth")? {
                    None => None,
                    Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => Some(n as u32),
                    Some(n) => {
                        return Err(ActorError::InvalidArguments(format!(
                            "readdirRecursive: option `maxDepth` must be a whole number from 0, got {n}"
                        )))
                    }
                };
                Call::ReaddirRecursive(
                    args.string(0, "path")?,
                    max_depth,
                    options.string_list("exclude")?.unwrap_or_default(),
                )
            }
            "stat" => Call::Stat(args.string(0, "path")?),
            "exists" => Call::Exists(args.string(0, "path")?),
            "move" => Call::Move(args.string(0, "from")?, args.string(1, "to")?),
            "deleteFile" => Call::Delete(args.string(0, "path")?, args.options(1)?.flag("recursive")?),
            other => return Err(ActorError::ActionNotFound(other.to_string())),
        })
    }
}

/// A whole number from 0 to `max` (`None` when absent). NaN, infinities, fractions and
/// negative numbers are refused with a message naming the option; numbers past `max` too,
/// except for `u64::MAX` as `max`, where a larger number saturates (f64 cannot say 2^64 - 1).
fn whole_number(value: Option<f64>, max: u64, action: &str, option: &str) -> Result<Option<u64>, ActorError> {
    let Some(n) = value else { return Ok(None) };
    let in_range = n.is_finite() && n >= 0.0 && n.fract() == 0.0 && (max == u64::MAX || n <= max as f64);
    if !in_range {
        return Err(ActorError::InvalidArguments(format!(
            "{action}: option `{option}` must be a whole number from 0 to {max}, got {n}"
        )));
    }
    // `as` saturates at u64::MAX for 2^64 and above.
    Ok(Some(n as u64))
}

fn to_value(result: &impl serde::Serialize) -> Result<Value, ActorError> {
    serde_json::to_value(result).map(Value::from).map_err(|e| ActorError::Internal(format!("encoding a result: {e}")))
}
