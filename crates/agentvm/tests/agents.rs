//! Agents and the shared software layer: `agentvm agents install` (a real npm install of pi from
//! the registry, fast from the npm cache on later runs), `agentvm agents ls`, what every VM sees
//! at /opt/agentvm (read-only, nothing else of the data directory), and `listAgents`. Claude
//! (~600 MB) is not installed here; its registry entry is unit-tested in crates/agents.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use agentvm_agents::Registry;
use common::http::Api;
use common::server::TestServer;
use serde_json::{json, Value};

fn agentvm(args: &[&str], data: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("running agentvm")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `agentvm agents ls --json` as id → installed.
fn listed(data: &Path) -> Vec<(String, bool)> {
    let output = agentvm(&["agents", "ls", "--json"], data);
    assert!(output.status.success(), "agents ls: {output:?}");
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap().to_string(), a["installed"].as_bool().unwrap()))
        .collect()
}

/// `listAgents` through the server, as id → installed, checking each entry's shape.
async fn list_agents(api: &Api<'_>) -> Vec<(String, bool)> {
    let list = api.ok("listAgents", json!([])).await;
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            for key in ["id", "acpAdapter", "agentPackage"] {
                assert!(a[key].is_string(), "{key} of {a}");
            }
            (a["id"].as_str().unwrap().to_string(), a["installed"].as_bool().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pi_installs_once_into_the_software_layer_every_vm_sees_read_only() {
    // The server runs throughout: installing while it runs is supported.
    let server = TestServer::start();
    let data = server.data.path().join("data");
    let api = Api::new(&server, "agents");

    // Nothing installed: the listings say so, and a VM sees an empty layer.
    let none: Vec<(String, bool)> =
        ["pi", "claude", "codex", "opencode"].iter().map(|id| (id.to_string(), false)).collect();
    assert_eq!(listed(&data), none);
    assert_eq!(list_agents(&api).await, none);
    let ls = api.ok("exec", json!(["ls -A /opt/agentvm/agents | wc -l"])).await;
    assert_eq!(ls["stdout"], "0\n", "{ls}");

    let unknown = agentvm(&["agents", "install", "nope"], &data);
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        "agentvm: unknown agent `nope`; the known agents are: pi, claude, codex, opencode\n"
    );

    let started = Instant::now();
    let install = agentvm(&["agents", "install", "pi"], &data);
    let took = started.elapsed();
    assert!(install.status.success(), "install failed: {}", String::from_utf8_lossy(&install.stderr));
    assert!(stdout(&install).starts_with("installed pi in "), "{}", stdout(&install));
    println!("agents install pi: {:.1} s; {}", took.as_secs_f64(), stdout(&install).trim());

    // The marker records exactly the pinned versions.
    let marker_path = data.join("software/agents/pi/agentvm-agent.json");
    let marker: Value = serde_json::from_slice(&std::fs::read(&marker_path).unwrap()).unwrap();
    assert_eq!(
        marker,
        json!({"id": "pi", "packages": {"pi-acp": "0.0.23", "@mariozechner/pi-coding-agent": "0.73.1"}})
    );
    let marked_at = std::fs::metadata(&marker_path).unwrap().modified().unwrap();
    assert_eq!(std::fs::read_dir(data.join("software/.staging")).unwrap().count(), 0, "staging left behind");

    // A second install is a no-op.
    let again = agentvm(&["agents", "install", "pi"], &data);
    assert!(again.status.success());
    assert_eq!(stdout(&again), "pi is already installed (pi-acp@0.0.23, @mariozechner/pi-coding-agent@0.73.1)\n");
    assert_eq!(std::fs::metadata(&marker_path).unwrap().modified().unwrap(), marked_at);

    let mut expected = none.clone();
    expected[0].1 = true;
    assert_eq!(listed(&data), expected);
    assert_eq!(list_agents(&api).await, expected, "pi installed, claude and the others not");

    // The VM booted before the install sees it (the layer is a live read-only view)...
    let bin = "/opt/agentvm/agents/pi/node_modules/.bin";
    let seen =
        api.ok("exec", json!([format!("test -x {bin}/pi-acp && test -x {bin}/pi && ls /opt/agentvm/agents")])).await;
    assert_eq!(seen["stdout"], "pi\n", "{seen}");
    // ...and runs it with the registry's launch: pi from PATH, and pi-acp answering an ACP
    // `initialize` offline.
    let launch = Registry::builtin().launch("pi").unwrap();
    let env = serde_json::to_value(&launch.env).unwrap();
    let version = api.ok("exec", json!(["pi --version", {"env": env}])).await;
    // (pi prints its version on stderr)
    assert_eq!(format!("{}{}", version["stdout"].as_str().unwrap(), version["stderr"].as_str().unwrap()), "0.73.1\n");
    let initialize =
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":1,"clientCapabilities":{}}}"#;
    let acp = api
        .ok(
            "exec",
            json!([launch.argv.join(" "), {"env": env, "cwd": launch.cwd_default, "stdin": format!("{initialize}\n")}]),
        )
        .await;
    assert_eq!(acp["exitCode"], 0, "{acp}");
    let answer: Value = serde_json::from_str(acp["stdout"].as_str().unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"]["agentInfo"]["name"], "pi-acp");
    assert_eq!(answer["result"]["agentInfo"]["version"], "0.0.23");

    // Nobody in the VM can write there: the mount itself is read-only (so even a root with
    // every capability would get EROFS), and the VM user gets "Read-only file system".
    let options = api.ok("exec", json!(["awk '$5 == \"/opt/agentvm\" {print $6}' /proc/self/mountinfo"])).await;
    let options = options["stdout"].as_str().unwrap().trim().to_string();
    assert!(options.split(',').any(|o| o == "ro"), "mount options {options:?}");
    assert!(options.split(',').any(|o| o == "nosuid"), "mount options {options:?}");
    for write in [
        "touch /opt/agentvm/x",
        "mkdir /opt/agentvm/agents/pi/y",
        "rm -f /opt/agentvm/agents/pi/agentvm-agent.json",
        "echo x >> /opt/agentvm/agents/pi/node_modules/pi-acp/package.json",
    ] {
        let result = api.ok("exec", json!([write])).await;
        assert_ne!(result["exitCode"], 0, "{write}: {result}");
        // A file the VM user could not write anyway fails on its permissions first.
        let stderr = result["stderr"].as_str().unwrap();
        assert!(stderr.contains("Read-only file system") || stderr.contains("Permission denied"), "{write}: {result}");
    }
    // Only the layer itself, nothing else of the data directory.
    let top = api.ok("exec", json!(["ls -A /opt/agentvm"])).await;
    assert_eq!(top["stdout"], ".staging\nagents\n", "{top}");
    assert!(data.join("software/agents/pi/agentvm-agent.json").exists());
}

/// Agents the operator declares in the config file are listed next to the built-in ones, and a
/// preset may name only agents the server knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_agents_from_the_config_file_are_listed() {
    let mut config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(
        &mut config,
        b"[actors.vm.sessions]\nagents = [\"mine\"]\n\n[agents.mine]\ncommand = [\"node\", \"/opt/mine/agent.mjs\"]\n",
    )
    .unwrap();
    let server = TestServer::start_with(&["--config", config.path().to_str().unwrap()]);
    let api = Api::new(&server, "operator-agents");
    let list = api.ok("listAgents", json!([])).await;
    let mine = list.as_array().unwrap().iter().find(|a| a["id"] == "mine").cloned();
    assert_eq!(
        mine.map(|m| (m["acpAdapter"].clone(), m["installed"].clone())),
        Some((json!("node"), json!(true))),
        "{list}"
    );
    assert!(list.as_array().unwrap().iter().any(|a| a["id"] == "pi"), "{list}");
}
