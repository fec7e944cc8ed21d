//! `agentvm agents install NAME` and `agentvm agents ls`: the shared software layer of a data
//! directory (see `agentvm_agents`). They work on the directory itself, not through a server,
//! and while a server runs on it: VMs see the layer read-only and installs are atomic.

use std::path::PathBuf;

use agentvm_agents::{InstallError, Installed, Registry, SoftwareLayer, VM_MOUNT};
use anyhow::Context;

#[derive(clap::Subcommand)]
pub enum AgentsCommand {
    /// Install an agent (its npm packages at the pinned versions) into the data directory's
    /// software layer, which every VM sees read-only at /opt/agentvm. Needs npm and the registry
    Install {
        /// The agent: pi, claude, codex or opencode
        name: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List the agents, their packages and whether they are installed
    Ls {
        /// Print JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        data: DataDirArg,
    },
}

#[derive(clap::Args)]
pub struct DataDirArg {
    /// The server's data directory [default: /var/lib/agentvm as root, else ~/.local/share/agentvm]
    #[arg(long, env = "AGENTVM_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    fn layer(self) -> anyhow::Result<SoftwareLayer> {
        let dir = match self.data_dir {
            Some(dir) => dir,
            None => crate::serve::default_data_dir()?,
        };
        Ok(SoftwareLayer::of_data_dir(&dir))
    }
}

pub fn run(command: AgentsCommand) -> anyhow::Result<()> {
    let registry = Registry::builtin();
    match command {
        AgentsCommand::Install { name, data } => {
            let layer = data.layer()?;
            let Some(spec) = registry.builtin_spec(&name) else {
                let known = registry.ids().iter().map(|id| id.to_string()).collect();
                return Err(InstallError::UnknownAgent { id: name, known }.into());
            };
            let packages = agentvm_agents::registry::package_specs(spec).join(", ");
            let target = layer.agent_dir(spec.id);
            if !layer.is_installed(spec) {
                eprintln!("installing {} ({packages}) into {} ...", spec.id, target.display());
            }
            match agentvm_agents::install(spec, &layer).with_context(|| format!("installing agent `{}`", spec.id))? {
                Installed::AlreadyInstalled => println!("{} is already installed ({packages})", spec.id),
                Installed::Installed { duration, bytes, files } => println!(
                    "installed {} in {:.1} s: {:.0} MB in {files} files; VMs see it at {VM_MOUNT}/agents/{}",
                    spec.id,
                    duration.as_secs_f64(),
                    bytes as f64 / 1e6,
                    spec.id
                ),
            }
            Ok(())
        }
        AgentsCommand::Ls { json, data } => {
            let layer = data.layer()?;
            let statuses = registry.statuses(&layer);
            let packages =
                |id: &str| registry.builtin_spec(id).map(agentvm_agents::registry::package_specs).unwrap_or_default();
            if json {
                let list: Vec<serde_json::Value> = statuses
                    .iter()
                    .map(|status| {
                        let mut value = serde_json::to_value(status)?;
                        value["packages"] = serde_json::json!(packages(&status.id));
                        Ok(value)
                    })
                    .collect::<serde_json::Result<_>>()?;
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<10} {:<10} PACKAGES", "AGENT", "INSTALLED");
                for status in statuses {
                    let installed = if status.installed { "yes" } else { "no" };
                    println!("{:<10} {:<10} {}", status.id, installed, packages(&status.id).join(" "));
                }
            }
            Ok(())
        }
    }
}
