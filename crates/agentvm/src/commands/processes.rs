//! `agentvm ps` and `agentvm kill`.

use agentvm_client::{Client, ExecOptions, ProcessTreeNode};
use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct PsArgs {
    /// The VM's key
    key: String,
    /// Print JSON (the `processTree` result) instead of a tree
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// The VM's key
    key: String,
    /// Process id inside the VM (as `agentvm ps` shows it)
    pid: u32,
    /// Signal name or number
    #[arg(short, long, default_value = "TERM")]
    signal: String,
}

pub async fn ps(client: &Client, args: PsArgs) -> anyhow::Result<()> {
    let tree =
        client.vm(&args.key).process_tree().await.with_context(|| format!("listing processes of VM {:?}", args.key))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&tree))?);
        return Ok(());
    }
    println!("{:>7} {:>7} {:<8} COMMAND", "PID", "PPID", "STATUS");
    for node in &tree {
        print_node(node, "", "");
    }
    Ok(())
}

fn print_node(node: &ProcessTreeNode, first: &str, rest: &str) {
    let info = &node.info;
    let command = std::iter::once(info.command.as_str())
        .chain(info.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    println!("{:>7} {:>7} {:<8} {first}{command}", info.pid, info.ppid, info.status);
    let last = node.children.len().saturating_sub(1);
    for (i, child) in node.children.iter().enumerate() {
        let (branch, continuation) = if i == last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
        print_node(child, &format!("{rest}{branch}"), &format!("{rest}{continuation}"));
    }
}

fn to_json(tree: &[ProcessTreeNode]) -> serde_json::Value {
    serde_json::Value::Array(
        tree.iter()
            .map(|node| {
                let i = &node.info;
                serde_json::json!({
                    "pid": i.pid, "ppid": i.ppid, "pgid": i.pgid, "sid": i.sid, "driver": i.driver,
                    "command": i.command, "args": i.args, "cwd": i.cwd, "status": i.status,
                    "exitCode": i.exit_code, "startTime": i.start_time, "exitTime": i.exit_time,
                    "children": to_json(&node.children),
                })
            })
            .collect(),
    )
}

/// Signals any process of the VM as its user would, with `kill` inside the VM: the VM's own
/// permissions decide, and pids are the VM's.
pub async fn kill(client: &Client, args: KillArgs) -> anyhow::Result<()> {
    let signal = args.signal.trim_start_matches("SIG");
    let valid = !signal.is_empty() && signal.chars().all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
    if !valid {
        bail!("invalid signal {:?}: use a name like TERM or KILL, or a number", args.signal);
    }
    let command = format!("kill -s {signal} {}", args.pid);
    let result = client
        .vm(&args.key)
        .exec(&command, ExecOptions::default())
        .await
        .with_context(|| format!("signalling process {} in VM {:?}", args.pid, args.key))?;
    if result.exit_code != 0 {
        let reason = result.stderr.trim().trim_start_matches("sh: 1: ").to_string();
        bail!("cannot signal process {} in VM {:?}: {reason}", args.pid, args.key);
    }
    Ok(())
}
