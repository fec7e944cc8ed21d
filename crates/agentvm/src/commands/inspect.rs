//! `agentvm inspect [KEY]`: the web inspector's address (of one VM with KEY), opened in the
//! desktop's browser when there is one. The token is never put in the address: the page asks
//! for it and keeps it in the tab.

use agentvm_client::Client;
use anyhow::Context;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The VM to show (its key); without it, the list of VMs
    key: Option<String>,
    /// Only print the address
    #[arg(long)]
    no_open: bool,
}

pub async fn inspect(client: &Client, args: InspectArgs) -> anyhow::Result<()> {
    let base = client.url().trim_end_matches('/');
    let url = match &args.key {
        None => format!("{base}/"),
        Some(key) => {
            let vms = client.list_vms().await.context("listing VMs")?;
            let vm = vms
                .iter()
                .find(|v| &v.key == key)
                .with_context(|| format!("no VM has the key {key:?} (agentvm vm ls lists them)"))?;
            format!("{base}/#/vm/{}", vm.actor_id)
        }
    };
    println!("{url}");
    let desktop = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !args.no_open && desktop {
        // Best effort: without a browser the address above is what the user needs.
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if opened.is_err() {
            eprintln!("agentvm: could not start xdg-open; open the address above in a browser");
        }
    }
    Ok(())
}
