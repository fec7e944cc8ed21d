//! The real `rivetkit` npm client (2.3.19 and 2.2.1) against `agentvm serve`: the seed page's
//! examples in every encoding, multiplayer, and the filesystem actions. `scripts/test` installs the clients
//! (`npm install` in clients/node/v*); without them this test fails and says how to install them.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::server::TestServer;

const VERSIONS: &[&str] = &["v2.3.19", "v2.2.1"];
const ENCODINGS: &[&str] = &["bare", "json", "cbor"];

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node")
}

fn check_installed(version: &str) -> PathBuf {
    let dir = clients_dir().join(version);
    assert!(
        dir.join("node_modules/rivetkit").is_dir(),
        "the rivetkit client is not installed in {}: run `npm install --ignore-scripts` there (scripts/test does)",
        dir.display()
    );
    dir
}

struct Run {
    name: String,
    child: std::thread::JoinHandle<std::process::Output>,
}

fn start(server: &TestServer, version: &str, encoding: &str, scenario: &str) -> Run {
    let dir = check_installed(version);
    let name = format!("{version}/{encoding}/{scenario}");
    let key = format!("node-{}-{encoding}-{scenario}", version.replace('.', "-"));
    let endpoint = server.url.clone();
    let (encoding, scenario) = (encoding.to_string(), scenario.to_string());
    let child = std::thread::spawn(move || {
        Command::new("node")
            .arg(dir.join("run.mjs"))
            .current_dir(&dir)
            .env("ENDPOINT", endpoint)
            .env("ENCODING", encoding)
            .env("KEY", key)
            .env("SCENARIO", scenario)
            .env_remove("RIVET_ENDPOINT")
            .env_remove("RIVET_ENGINE")
            .output()
            .expect("running node")
    });
    Run { name, child }
}

fn finish(runs: Vec<Run>) {
    let mut failures = Vec::new();
    for run in runs {
        let output = run.child.join().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let passed = output.status.success() && stdout.lines().any(|l| l.contains(r#""done":true"#));
        eprintln!("== {}: {}", run.name, if passed { "passed" } else { "FAILED" });
        if !passed {
            failures.push(format!(
                "{} ({}):\n{stdout}\n{}",
                run.name,
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "node client runs failed:\n{}", failures.join("\n"));
}

#[test]
fn seed_examples_in_every_encoding_and_client_version() {
    let server = TestServer::start();
    let mut runs = Vec::new();
    for version in VERSIONS {
        for encoding in ENCODINGS {
            runs.push(start(&server, version, encoding, "seed"));
        }
    }
    finish(runs);
}

#[test]
fn multiplayer_events_with_every_client_version() {
    let server = TestServer::start();
    let runs = VERSIONS.iter().map(|v| start(&server, v, "bare", "multiplayer")).collect();
    finish(runs);
}

#[test]
fn filesystem_actions_in_every_encoding_and_client_version() {
    let server = TestServer::start();
    let mut runs = Vec::new();
    for version in VERSIONS {
        for encoding in ENCODINGS {
            runs.push(start(&server, version, encoding, "files"));
        }
    }
    finish(runs);
}

/// Issue 12, acceptance 1: "subscribe, then spawn over HTTP" (the README example and the seed
/// pattern), 200 fresh VMs each, with every client version and encoding: the first output and
/// the exit always arrive, exactly once.
#[test]
fn subscribe_first_then_spawn_never_loses_or_repeats_an_event() {
    // 2,400 VMs: unlimited creation rate, and they sleep as soon as they are idle.
    let server = TestServer::start_with(&["--max-creates-per-second", "0", "--idle-timeout", "1"]);
    let mut runs = Vec::new();
    for version in VERSIONS {
        for encoding in ENCODINGS {
            runs.push(start(&server, version, encoding, "subscribe-first"));
        }
    }
    finish(runs);
}
