//! Shell actions: interactive terminals (`openShell`, `writeShell`, `resizeShell`,
//! `closeShell`, `waitShell`).

use agentvm_protocol::Value;
use agentvm_vm::{ShellOptions, Vm};

use super::args::Args;
use super::undefined;
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &["openShell", "writeShell", "resizeShell", "closeShell", "waitShell"];

/// A validated shell action.
pub(super) enum Call {
    Open(ShellOptions),
    Write(String, Vec<u8>),
    Resize(String, u16, u16),
    Close(String),
    Wait(String),
}

/// The call for `name`, or `None` when `name` is not a shell action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "openShell" => {
            let options = args.options(0)?;
            Call::Open(ShellOptions {
                command: options.string("command")?,
                args: options.string_list("args")?,
                env: options.env()?,
                cwd: options.string("cwd")?,
                cols: options.u16("cols")?,
                rows: options.u16("rows")?,
            })
        }
        "writeShell" => Call::Write(args.string(0, "shellId")?, args.data(1, "data")?),
        "resizeShell" => Call::Resize(args.string(0, "shellId")?, args.u16(1, "cols")?, args.u16(2, "rows")?),
        "closeShell" => Call::Close(args.string(0, "shellId")?),
        "waitShell" => Call::Wait(args.string(0, "shellId")?),
        _ => return Ok(None),
    }))
}

/// Runs a shell action on the running VM.
pub(super) async fn run(vm: &Vm, call: Call) -> Result<Value, ActorError> {
    match call {
        Call::Open(options) => {
            let shell_id = vm.open_shell(options).await?;
            Ok(Value::object([("shellId", Value::from(shell_id))]))
        }
        Call::Write(id, data) => undefined(vm.write_shell(&id, &data).await),
        Call::Resize(id, cols, rows) => undefined(vm.resize_shell(&id, cols, rows)),
        Call::Close(id) => undefined(vm.close_shell(&id).await),
        Call::Wait(id) => Ok(Value::Int(vm.wait_shell(&id).await?.into())),
    }
}
