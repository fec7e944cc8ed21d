//! `agentvm vm ls` and `agentvm vm rm`.

use agentvm_client::Client;
use anyhow::Context;

#[derive(clap::Subcommand)]
pub enum VmCommand {
    /// List VMs (keys, actor ids, creation times)
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Destroy a VM: stop it and delete all its files and history
    Rm {
        /// The VM's key
        key: String,
    },
}

pub async fn run(client: &Client, command: VmCommand) -> anyhow::Result<()> {
    match command {
        VmCommand::Ls { json } => {
            let vms = client.list_vms().await.context("listing VMs")?;
            if json {
                let list: Vec<_> = vms
                    .iter()
                    .map(|v| serde_json::json!({"key": v.key, "actorId": v.actor_id, "createdAt": v.create_ts}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<32} CREATED", "KEY", "ACTOR ID");
                for vm in vms {
                    println!("{:<24} {:<32} {}", vm.key, vm.actor_id, format_time(vm.create_ts));
                }
            }
            Ok(())
        }
        VmCommand::Rm { key } => client.vm(&key).destroy().await.with_context(|| format!("destroying VM {key:?}")),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00");
        assert_eq!(super::format_time(1_795_250_118_607), "2026-11-21 08:35:18");
    }
}
