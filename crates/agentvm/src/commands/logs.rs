//! `agentvm logs`: a VM's event log (`getVmEvents`), then with `-f` its live events.

use std::io::Write;

use agentvm_client::{Client, Value};
use anyhow::Context;

use super::ALL_EVENTS;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// The VM's key
    key: String,
    /// Keep printing new events as they happen
    #[arg(short, long)]
    follow: bool,
    /// One JSON object per line instead of text
    #[arg(long)]
    json: bool,
    /// Only events after this sequence number
    #[arg(long)]
    since: Option<u64>,
}

pub async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let vm = client.vm(&args.key);
    // Subscribe first, so nothing falls between the history and the live events.
    let mut live = match args.follow {
        true => {
            let conn = vm.connect().await.with_context(|| format!("connecting to VM {:?}", args.key))?;
            for event in ALL_EVENTS {
                conn.subscribe(event).await?;
            }
            Some(conn)
        }
        false => None,
    };
    let history =
        vm.get_vm_events(args.since, None).await.with_context(|| format!("reading the log of VM {:?}", args.key))?;
    let mut out = std::io::stdout();
    for event in &history {
        print_event(&mut out, Some(event.seq), &event.name, &event.data, args.json)?;
    }
    if let Some(conn) = live.as_mut() {
        while let Some(event) = conn.next_event().await {
            print_event(&mut out, None, &event.name, &event.payload, args.json)?;
        }
    }
    Ok(())
}

fn print_event(out: &mut impl Write, seq: Option<u64>, name: &str, payload: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        let mut line = serde_json::json!({"name": name, "data": to_json(payload)});
        if let Some(seq) = seq {
            line["seq"] = seq.into();
        }
        writeln!(out, "{line}")?;
    } else {
        let prefix = seq.map(|s| format!("#{s} ")).unwrap_or_default();
        let field = |k: &str| payload.get(k).map(describe).unwrap_or_default();
        let text = match name {
            "processOutput" => {
                format!("pid {} {}: {}", field("pid"), field("stream"), field("data").trim_end_matches('\n'))
            }
            "processExit" => format!("pid {} exited with code {}", field("pid"), field("exitCode")),
            "shellData" => format!("{}: {}", field("shellId"), field("data").trim_end_matches('\n')),
            "shellExit" => format!("{} exited with code {}", field("shellId"), field("exitCode")),
            "vmShutdown" => format!("VM shutting down ({})", field("reason")),
            "vmBooted" => "VM booted".to_string(),
            other => format!("{other} {}", to_json(payload)),
        };
        writeln!(out, "{prefix}{name:<13} {text}")?;
    }
    out.flush()?;
    Ok(())
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Int(n) => n.to_string(),
        other => to_json(other).to_string(),
    }
}

/// A payload as JSON; bytes become text when they are UTF-8, else `{"base64": ...}`.
fn to_json(value: &Value) -> serde_json::Value {
    value.to_json_with(&|b| match std::str::from_utf8(b) {
        Ok(text) => serde_json::Value::String(text.to_string()),
        Err(_) => {
            use base64::Engine;
            serde_json::json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
        }
    })
}
