//! File actions: reading and writing files and directories in the VM's root filesystem.
//!
//! They work on a sleeping VM without waking it: [`super::dispatch`] boots it *quietly* (no
//! `vmBooted`), and it goes back to sleep quietly unless another action wakes it for real.

use agentvm_protocol::Value;
use agentvm_vm::Vm;

use super::args::Args;
use super::{to_value, undefined};
use crate::error::ActorError;

/// The actions of this family.
pub const NAMES: &[&str] = &[
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
];

/// A validated file action.
pub(super) enum Call {
    Read(String),
    Write(String, Vec<u8>),
    ReadMany(Vec<String>),
    WriteMany(Vec<(String, Vec<u8>)>),
    Mkdir(String, bool),
    Readdir(String),
    ReaddirRecursive(String, Option<u32>, Vec<String>),
    Stat(String),
    Exists(String),
    Move(String, String),
    Delete(String, bool),
}

/// The call for `name`, or `None` when `name` is not a file action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "readFile" => Call::Read(args.string(0, "path")?),
        "writeFile" => Call::Write(args.string(0, "path")?, args.data(1, "content")?),
        "readFiles" => Call::ReadMany(args.string_list(0, "paths")?),
        "writeFiles" => Call::WriteMany(args.entries(0)?),
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
        _ => return Ok(None),
    }))
}

/// Runs a file action on the (possibly quietly booted) VM.
pub(super) async fn run(vm: &Vm, call: Call) -> Result<Value, ActorError> {
    match call {
        Call::Read(path) => Ok(Value::from(vm.read_file(&path).await?)),
        Call::Write(path, content) => undefined(vm.write_file(&path, &content).await),
        Call::ReadMany(paths) => Ok(Value::Array(
            vm.read_files(&paths)
                .await
                .into_iter()
                .map(|r| {
                    let mut entry = vec![
                        ("path".to_string(), Value::from(r.path)),
                        ("content".to_string(), r.content.map_or(Value::Null, Value::from)),
                    ];
                    if let Some(error) = r.error {
                        entry.push(("error".to_string(), Value::from(error)));
                    }
                    Value::Map(entry)
                })
                .collect(),
        )),
        Call::WriteMany(entries) => to_value(&vm.write_files(entries).await),
        Call::Mkdir(path, recursive) => undefined(vm.mkdir(&path, recursive).await),
        Call::Readdir(path) => to_value(&vm.readdir(&path).await?),
        Call::ReaddirRecursive(path, max_depth, exclude) => {
            to_value(&vm.readdir_recursive(&path, max_depth, &exclude).await?)
        }
        Call::Stat(path) => to_value(&vm.stat(&path).await?),
        Call::Exists(path) => Ok(Value::Bool(vm.exists(&path).await?)),
        Call::Move(from, to) => undefined(vm.move_path(&from, &to).await),
        Call::Delete(path, recursive) => undefined(vm.delete_path(&path, recursive).await),
    }
}
