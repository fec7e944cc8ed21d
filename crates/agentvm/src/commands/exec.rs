//! `agentvm exec` and `agentvm shell`.
//!
//! `exec KEY -- CMD ARGS...` spawns the command (no shell in between, like `docker exec`) over a
//! WebSocket connection, prints its stdout and stderr as they stream and exits with its exit
//! code. `-i` forwards this terminal's stdin; without it the command's stdin is closed at once.
//! `exec -it KEY [-- CMD]` and `shell KEY` open an interactive terminal instead: raw mode, the
//! window size sent at start and on every resize, Ctrl-C going to the VM, Ctrl-] detaching, and
//! the terminal restored on every way out.
//!
//! Exit codes: the command's own; 125 when agentvm itself failed (no server, bad key...).

use std::collections::BTreeMap;
use std::io::Write;

use agentvm_client::{Client, Connection, Value};
use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;

use crate::terminal;

/// Exit code for failures of agentvm itself, as opposed to the command's own code.
const AGENTVM_FAILED: i32 = 125;
/// Ctrl-]: leaves an interactive session without closing the shell.
const DETACH_KEY: u8 = 0x1d;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and forward it to the command
    #[arg(short, long)]
    interactive: bool,
    /// Run in an interactive terminal (with -i: `exec -it KEY`)
    #[arg(short, long)]
    tty: bool,
    /// Environment variable for the command, `NAME=value` (repeatable)
    #[arg(short, long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Working directory inside the VM (default /home/user)
    #[arg(short, long)]
    workdir: Option<String>,
    /// The VM's key (`client.vm.getOrCreate([KEY])`)
    key: String,
    /// The command and its arguments (after `--`)
    #[arg(last = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
pub struct ShellArgs {
    /// The VM's key
    key: String,
    /// Program to run instead of the VM's login shell
    #[arg(last = true)]
    command: Vec<String>,
}

pub async fn exec(client: &Client, args: ExecArgs) -> i32 {
    let result = if args.tty {
        interactive(client, &args.key, &args.command, parse_env(&args.env), args.workdir.clone()).await
    } else {
        streamed(client, &args).await
    };
    finish(result)
}

pub async fn shell(client: &Client, args: ShellArgs) -> i32 {
    finish(interactive(client, &args.key, &args.command, Ok(BTreeMap::new()), None).await)
}

fn finish(result: anyhow::Result<i32>) -> i32 {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("agentvm: {e:#}");
            AGENTVM_FAILED
        }
    }
}

fn parse_env(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    pairs
        .iter()
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
            _ => bail!("invalid --env {pair:?}: expected NAME=value"),
        })
        .collect()
}

fn options(env: BTreeMap<String, String>, cwd: Option<String>) -> Value {
    let mut fields = vec![("env".to_string(), Value::Map(env.into_iter().map(|(k, v)| (k, Value::from(v))).collect()))];
    if let Some(cwd) = cwd {
        fields.push(("cwd".to_string(), Value::from(cwd)));
    }
    Value::Map(fields)
}

/// A command with its output streamed; returns its exit code.
async fn streamed(client: &Client, args: &ExecArgs) -> anyhow::Result<i32> {
    let Some((program, rest)) = args.command.split_first() else {
        bail!("no command given: use `agentvm exec {} -- COMMAND [ARGS...]` (or `-it` for a shell)", args.key)
    };
    let env = parse_env(&args.env)?;
    let vm = client.vm(&args.key);
    let mut conn = vm.connect().await.with_context(|| format!("connecting to VM {:?}", args.key))?;
    for event in ["processOutput", "processExit"] {
        conn.subscribe(event).await?;
    }
    // The spawn goes over the same connection, after the subscriptions: no output is missed.
    let argv = Value::Array(rest.iter().cloned().map(Value::from).collect());
    let spawned = conn
        .action("spawn", vec![Value::from(program.as_str()), argv, options(env, args.workdir.clone())])
        .await
        .with_context(|| format!("starting {program:?} in VM {:?}", args.key))?;
    let pid = spawned.get("pid").and_then(Value::as_i64).context("the server answered spawn without a pid")?;
    let pid = i32::try_from(pid).context("invalid pid")?;
    let stdin = if args.interactive {
        Some(tokio::spawn(forward_stdin(vm.clone(), pid)))
    } else {
        vm.close_process_stdin(pid).await?;
        None
    };
    let code = print_until_exit(&mut conn, pid).await?;
    if let Some(task) = stdin {
        task.abort();
    }
    conn.close().await;
    Ok(code)
}

/// Copies this process's stdin to the command's, then closes it.
async fn forward_stdin(vm: agentvm_client::VmHandle, pid: i32) {
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if vm.write_process_stdin(pid, &buffer[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = vm.close_process_stdin(pid).await;
}

/// Prints the process's output as it arrives; returns its exit code.
async fn print_until_exit(conn: &mut Connection, pid: i32) -> anyhow::Result<i32> {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(event) = conn.next_event().await {
        let of_pid = event.payload.get("pid").and_then(Value::as_i64) == Some(pid.into());
        match event.name.as_str() {
            "processOutput" if of_pid => {
                let data = match event.payload.get("data") {
                    Some(Value::Bytes(b)) => b.as_ref(),
                    _ => &[],
                };
                let sink: &mut dyn Write = if event.payload.get("stream").and_then(Value::as_str) == Some("stderr") {
                    &mut err
                } else {
                    &mut out
                };
                sink.write_all(data)?;
                sink.flush()?;
            }
            "processExit" if of_pid => {
                let code = event.payload.get("exitCode").and_then(Value::as_i64).unwrap_or(1);
                return Ok(code as i32);
            }
            "reconnected" => eprintln!("agentvm: connection lost and restored; output may be incomplete"),
            _ => {}
        }
    }
    bail!("the connection to the server ended before the command exited")
}

/// An interactive terminal session; returns the shell's exit code (0 when detached).
async fn interactive(
    client: &Client,
    key: &str,
    command: &[String],
    env: anyhow::Result<BTreeMap<String, String>>,
    cwd: Option<String>,
) -> anyhow::Result<i32> {
    let env = env?;
    if !terminal::stdin_is_terminal() {
        bail!("an interactive session needs a terminal on stdin (use `agentvm exec KEY -- CMD` in scripts)");
    }
    let vm = client.vm(key);
    let mut conn = vm.connect().await.with_context(|| format!("connecting to VM {key:?}"))?;
    for event in ["shellData", "shellExit"] {
        conn.subscribe(event).await?;
    }
    let (cols, rows) = terminal::size().unwrap_or((80, 24));
    let mut fields =
        vec![("cols".to_string(), Value::from(cols as i64)), ("rows".to_string(), Value::from(rows as i64))];
    if let Some((program, args)) = command.split_first() {
        fields.push(("command".to_string(), Value::from(program.as_str())));
        fields.push(("args".to_string(), Value::Array(args.iter().cloned().map(Value::from).collect())));
    }
    fields.push(("env".to_string(), Value::Map(env.into_iter().map(|(k, v)| (k, Value::from(v))).collect())));
    if let Some(cwd) = cwd {
        fields.push(("cwd".to_string(), Value::from(cwd)));
    }
    let opened = conn
        .action("openShell", vec![Value::Map(fields)])
        .await
        .with_context(|| format!("opening a shell in VM {key:?}"))?;
    let shell_id =
        opened.get("shellId").and_then(Value::as_str).context("the server answered without a shellId")?.to_string();

    let raw = terminal::RawMode::enable().context("switching the terminal to raw mode")?;
    let (input_tx, mut input_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    // Reading stdin blocks; a thread does it (it ends with the process).
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 4096];
        while let Ok(n) = stdin.read(&mut buffer) {
            if n == 0 || input_tx.blocking_send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut resized = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut out = std::io::stdout();
    let outcome = loop {
        tokio::select! {
            input = input_rx.recv() => match input {
                Some(bytes) if bytes.contains(&DETACH_KEY) => {
                    let before = &bytes[..bytes.iter().position(|&b| b == DETACH_KEY).unwrap_or(0)];
                    if !before.is_empty() {
                        vm.write_shell(&shell_id, before).await?;
                    }
                    break Outcome::Detached;
                }
                Some(bytes) => vm.write_shell(&shell_id, &bytes).await?,
                None => break Outcome::InputClosed,
            },
            _ = resized.recv() => {
                if let Some((cols, rows)) = terminal::size() {
                    vm.resize_shell(&shell_id, cols, rows).await?;
                }
            }
            event = conn.next_event() => match event {
                Some(event) if event.payload.get("shellId").and_then(Value::as_str) == Some(shell_id.as_str()) => {
                    match (event.name.as_str(), event.payload.get("data")) {
                        ("shellData", Some(Value::Bytes(data))) => {
                            out.write_all(data)?;
                            out.flush()?;
                        }
                        ("shellExit", _) => {
                            break Outcome::Exited(event.payload.get("exitCode").and_then(Value::as_i64).unwrap_or(0) as i32)
                        }
                        _ => {}
                    }
                }
                Some(_) => {}
                None => break Outcome::Disconnected,
            },
        }
    };
    drop(raw);
    conn.close().await;
    match outcome {
        Outcome::Exited(code) => Ok(code),
        Outcome::Detached => {
            eprintln!("\r\nagentvm: detached; {shell_id} keeps running in VM {key:?}");
            Ok(0)
        }
        Outcome::InputClosed => {
            let _ = vm.close_shell(&shell_id).await;
            Ok(0)
        }
        Outcome::Disconnected => bail!("the connection to the server ended"),
    }
}

enum Outcome {
    Exited(i32),
    Detached,
    InputClosed,
    Disconnected,
}
