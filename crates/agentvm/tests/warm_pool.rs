//! Warm pools (`warm_pool = N` in a preset): new keys get VMs booted ahead of time, with the
//! preset's limits, and nothing of one pooled VM is visible to the next key that takes one.
mod common;

use std::path::Path;

use common::server::TestServer;
use serde_json::{json, Value};

/// `exec` on `key` over HTTP (getOrCreate): its output.
async fn exec(server: &TestServer, key: &str, command: &str) -> Value {
    let url = format!("{}/gateway/pooled/action/exec?rvt-method=getOrCreate&rvt-key={key}", server.url);
    let response = reqwest::Client::new().post(url).json(&json!({"args": [command]})).send().await.expect("request");
    assert_eq!(response.status(), 200, "exec {command:?} on {key}");
    let body: Value = response.json().await.unwrap();
    body["output"].clone()
}

async fn stdout(server: &TestServer, key: &str, command: &str) -> String {
    let output = exec(server, key, command).await;
    assert_eq!(output["exitCode"], 0, "{command}: {output}");
    output["stdout"].as_str().unwrap().to_string()
}

/// VM directories still marked as pooled (booted, taken by no key).
fn pooled_dirs(data: &Path) -> usize {
    std::fs::read_dir(data.join("data/vms")).unwrap().flatten().filter(|e| e.path().join("pooled").exists()).count()
}

fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("agentvm.toml");
    std::fs::write(&path, "[actors.pooled]\nwarm_pool = 2\n\n[actors.pooled.limits]\nmemory = \"256MiB\"\n").unwrap();
    path
}

#[tokio::test]
async fn new_keys_take_pooled_vms_that_share_nothing() {
    let config_dir = tempfile::tempdir().unwrap();
    let config = config(config_dir.path());
    let server = TestServer::start_with(&["--config", config.to_str().unwrap()]);
    let data = server.data.path().to_path_buf();
    common::eventually(30, "the pool to hold two booted VMs", || async {
        server.vm_inits().len() == 2 && pooled_dirs(&data) == 2
    })
    .await;

    // The first key takes a pooled VM: no third VM boots for it.
    let pooled_before: Vec<i32> = server.vm_inits();
    let pid_line = stdout(&server, "first", "echo $PPID; echo secret-of-first > /home/user/mine; (sleep 600 &)").await;
    assert!(!pid_line.is_empty());
    let mut inits = server.vm_inits();
    inits.retain(|pid| pooled_before.contains(pid));
    assert!(!inits.is_empty(), "the first key's VM is one that was in the pool");
    // The preset's limits hold in a pooled VM (LXCFS shows the memory limit).
    let meminfo = stdout(&server, "first", "grep MemTotal /proc/meminfo").await;
    assert!(meminfo.contains("262144 kB"), "{meminfo}");
    // The pool refills.
    common::eventually(30, "the pool to refill", || async { pooled_dirs(&data) == 2 }).await;

    // The next key sees nothing of the first: files, processes, its environment.
    let second = stdout(&server, "second", "ls -A /home/user; ps -e -o comm=; cat /tmp/* 2>/dev/null; true").await;
    assert!(!second.contains("mine") && !second.contains("sleep"), "{second}");
    assert!(stdout(&server, "second", "test -e /home/user/mine || echo absent").await.contains("absent"));
    // Each has its own host uid range, as every VM does.
    let map = "cat /proc/self/uid_map";
    assert_ne!(stdout(&server, "first", map).await, stdout(&server, "second", map).await);
    // ...and the first still has its own.
    assert_eq!(stdout(&server, "first", "cat /home/user/mine").await, "secret-of-first\n");
    assert!(stdout(&server, "first", "ps -e -o comm=").await.contains("sleep"));

    // A restart keeps the keys' files and leaves no unused pooled VM of the old run behind.
    let data_dir = server.stop_keep_data();
    let server = TestServer::start_in(data_dir, &["--config", config.to_str().unwrap()]);
    assert_eq!(stdout(&server, "first", "cat /home/user/mine").await, "secret-of-first\n");
    let data = server.data.path().to_path_buf();
    common::eventually(30, "the new pool", || async { pooled_dirs(&data) == 2 }).await;
    let dirs = std::fs::read_dir(data.join("data/vms")).unwrap().count();
    assert_eq!(dirs, 4, "two keys and two pooled VMs, nothing of the earlier pool");
}

#[tokio::test]
async fn a_pool_size_beyond_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentvm.toml");
    std::fs::write(&path, "[actors.vm]\nwarm_pool = 1000\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_agentvm"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("agentvm.toml:2") && stderr.contains("warm_pool: at most 64"), "{stderr}");
}
