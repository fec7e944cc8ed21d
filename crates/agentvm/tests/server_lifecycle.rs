//! Durable VMs through the server: boot and sleep events, what keeps a VM awake, crashes,
//! destroy, and restarts that keep the registry, the files and the event log.
mod common;

use std::time::Duration;

use common::server::TestServer;
use common::ws::*;
use serde_json::{json, Value};

const LIFECYCLE: &[&str] = &["vmBooted", "vmShutdown"];

async fn http_action(server: &TestServer, key: &str, name: &str, args: Value) -> Value {
    let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key={key}", server.url);
    let response = reqwest::Client::new().post(url).json(&json!({"args": args})).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{name}: {status} {body}");
    body["output"].clone()
}

#[tokio::test]
async fn an_idle_vm_sleeps_and_the_next_action_wakes_it_with_its_files() {
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    let mut c = Conn::open(&server, "life-sleep", LIFECYCLE).await;
    c.call("exec", json!(["echo kept > /home/user/f; echo tmp > /tmp/t"])).await;
    assert_eq!(c.event("vmBooted", Duration::from_secs(10)).await, json!({}));
    assert_eq!(c.event("vmShutdown", Duration::from_secs(15)).await, json!({"reason": "sleep"}));
    // The connection stayed open; the next action wakes the VM, with its files (not /tmp).
    let out = c.call("exec", json!(["cat /home/user/f; cat /tmp/t 2>/dev/null || echo no-tmp"])).await;
    assert_eq!(out["stdout"], "kept\nno-tmp\n");
    c.event("vmBooted", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_running_process_or_an_open_shell_keeps_the_vm_awake() {
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    let mut c = Conn::open(&server, "life-busy", LIFECYCLE).await;
    let pid = c.call("spawn", json!(["sleep", ["1000"]])).await["pid"].clone();
    c.event("vmBooted", Duration::from_secs(10)).await;
    c.no_event("vmShutdown", Duration::from_secs(4)).await;
    c.call("killProcess", json!([pid])).await;
    let shell = c.call("openShell", json!([])).await["shellId"].clone();
    c.no_event("vmShutdown", Duration::from_secs(4)).await;
    c.call("closeShell", json!([shell])).await;
    assert_eq!(c.event("vmShutdown", Duration::from_secs(15)).await, json!({"reason": "sleep"}));
}

#[tokio::test]
async fn a_long_wait_keeps_the_vm_awake() {
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    let mut c = Conn::open(&server, "life-wait", LIFECYCLE).await;
    let out = c.call("exec", json!(["sleep 3; echo done"])).await;
    assert_eq!(out["stdout"], "done\n");
    c.event("vmBooted", Duration::from_secs(1)).await;
    c.no_event("vmShutdown", Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_vm_whose_init_dies_reports_an_error_and_boots_again() {
    let server = TestServer::start();
    let mut c = Conn::open(&server, "life-crash", LIFECYCLE).await;
    c.call("exec", json!(["echo x > /home/user/x"])).await;
    c.event("vmBooted", Duration::from_secs(10)).await;
    let inits = server.vm_inits();
    assert_eq!(inits.len(), 1, "{inits:?}");
    let init = inits[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(c.event("vmShutdown", Duration::from_secs(10)).await, json!({"reason": "error"}));
    let out = c.call("exec", json!(["cat /home/user/x"])).await;
    assert_eq!(out["stdout"], "x\n");
    c.event("vmBooted", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn destroy_removes_everything_and_the_key_gets_a_fresh_vm() {
    let server = TestServer::start();
    let (mut ws, _) = open(&server, "life-destroy", "getOrCreate", "json").await;
    let init = next_json(&mut ws).await;
    let actor_id = init["body"]["val"]["actorId"].as_str().unwrap().to_string();
    send_json(&mut ws, subscribe("vmShutdown", true)).await;
    let mut c = Conn::from_socket(ws);
    c.call("exec", json!(["echo gone > /home/user/g"])).await;
    let vm_dir = server.data.path().join("data/vms").join(&actor_id);
    // The VM's files: in its volume on the quota filesystem (the test runs as root).
    let layers_dir = server.data.path().join("data/disk").join(&actor_id);
    assert!(layers_dir.join("upper").is_dir());
    c.call("destroy", json!([])).await;
    assert_eq!(c.event("vmShutdown", Duration::from_secs(5)).await, json!({"reason": "destroy"}));
    // Connections to the destroyed actor are closed, so clients reconnect to a fresh one.
    loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await.expect("the connection stayed open") {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
                assert_eq!(frame.reason.as_str(), "actor.destroyed");
                break;
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    assert!(!vm_dir.exists(), "the VM's directory remains");
    assert!(!layers_dir.exists(), "the VM's disk volume remains");
    let listed: Value =
        reqwest::get(format!("{}/actors?name=vm&key=life-destroy", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(listed["actors"], json!([]));
    let registry = agentvm_store::Registry::open(&server.data.path().join("data/registry.sqlite3")).unwrap();
    assert_eq!(registry.row_count().unwrap(), 0, "the registry row remains");

    let (mut again, _) = open(&server, "life-destroy", "getOrCreate", "json").await;
    let init = next_json(&mut again).await;
    let new_id = init["body"]["val"]["actorId"].as_str().unwrap().to_string();
    assert_ne!(new_id, actor_id, "a destroyed actor's id is not reused");
    let out = Conn::from_socket(again).call("exec", json!(["ls -A /home/user"])).await;
    assert_eq!(out["stdout"], "");
}

#[tokio::test]
async fn a_restart_keeps_actors_files_and_the_event_log() {
    let server = TestServer::start();
    http_action(&server, "life-restart", "exec", json!(["echo survived > /home/user/s"])).await;
    http_action(&server, "life-restart", "spawn", json!(["echo", ["logged"]])).await;
    // The spawned process's exit is the last event: wait until the log holds it.
    let mut before = Value::Null;
    for _ in 0..500 {
        before = http_action(&server, "life-restart", "getVmEvents", json!([])).await;
        if before.as_array().is_some_and(|events| events.iter().any(|e| e["name"] == "processExit")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names: Vec<&str> = before.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["vmBooted", "processOutput", "processExit"], "{before}");
    assert_eq!(before[1]["data"]["data"], json!(["$Uint8Array", "bG9nZ2VkCg=="]));
    let last_seq = before[2]["seq"].as_u64().unwrap();

    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &[]);
    let listed: Value = reqwest::get(format!("{}/actors?name=vm", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(listed["actors"].as_array().unwrap().len(), 1, "{listed}");
    // The log survived the restart (with the shutdown the stop broadcast) and reads without waking the VM.
    let after = http_action(&server, "life-restart", "getVmEvents", json!([{"since": last_seq}])).await;
    assert_eq!(after.as_array().unwrap()[0]["name"], "vmShutdown", "{after}");
    let out = http_action(&server, "life-restart", "exec", json!(["cat /home/user/s"])).await;
    assert_eq!(out["stdout"], "survived\n");
    let newest = http_action(&server, "life-restart", "getVmEvents", json!([{"since": last_seq + 1}])).await;
    let booted = newest.as_array().unwrap().iter().find(|e| e["name"] == "vmBooted").expect("vmBooted after restart");
    assert!(booted["seq"].as_u64().unwrap() > last_seq + 1, "sequence numbers continue after a restart");
}

#[tokio::test]
async fn bad_event_log_queries_are_rejected() {
    let server = TestServer::start();
    let url = format!("{}/gateway/vm/action/getVmEvents?rvt-method=getOrCreate&rvt-key=life-bad", server.url);
    for args in [json!([{"since": -1}]), json!([{"limit": 0}]), json!([{"limit": 1e9}]), json!(["x"])] {
        let response = reqwest::Client::new().post(&url).json(&json!({"args": args})).send().await.unwrap();
        assert_eq!(response.status(), 400, "{args}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_no_acknowledged_write() {
    use std::sync::{Arc, Mutex};
    let server = TestServer::start();
    http_action(&server, "life-burst", "mkdir", json!(["/home/user/burst", {"recursive": true}])).await;
    let url = format!("{}/gateway/vm/action/writeFile?rvt-method=getOrCreate&rvt-key=life-burst", server.url);
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (url, acked, client) = (url.clone(), Arc::clone(&acked), client.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let path = format!("/home/user/burst/w{worker}-{i}");
                let content = format!("worker {worker} write {i} {}", "x".repeat(i % 97));
                let sent = client.post(&url).json(&json!({"args": [path, content]})).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => acked.lock().unwrap().push((path, content)),
                    Ok(response) => panic!("writeFile failed: {}", response.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill it while writes are in flight, once a good number has been acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() <= 100 {
        assert!(std::time::Instant::now() < deadline, "fewer than 100 writes acknowledged in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let data = server.kill_hard();
    for worker in workers {
        worker.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "only {} writes before the kill", acked.len());

    let server = TestServer::start_in(data, &[]);
    let listed: Value =
        reqwest::get(format!("{}/actors?name=vm&key=life-burst", server.url)).await.unwrap().json().await.unwrap();
    assert_eq!(listed["actors"].as_array().unwrap().len(), 1, "the registry lost the VM: {listed}");
    let paths: Vec<String> = acked.iter().map(|(p, _)| p.clone()).collect();
    let read = http_action(&server, "life-burst", "readFiles", json!([paths])).await;
    for ((path, content), entry) in acked.iter().zip(read.as_array().unwrap()) {
        assert_eq!(entry["path"], json!(path));
        let bytes = entry["content"][1].as_str().unwrap_or_else(|| panic!("{path} lost: {entry}"));
        use base64::Engine;
        let got = base64::engine::general_purpose::STANDARD.decode(bytes).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), *content, "{path}");
    }
    let out = http_action(&server, "life-burst", "exec", json!(["ls /home/user/burst | wc -l"])).await;
    let count: usize = out["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(count >= acked.len());
    eprintln!("{} acknowledged writes before SIGKILL, all readable after the restart", acked.len());
}

/// The events a json connection receives until the server closes it (or `limit` passes):
/// `(name, payload)` in order.
async fn events_until_closed(c: &mut Conn, limit: Duration) -> Vec<(String, Value)> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut frames = c.take_backlog();
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, c.ws.next()).await {
        let Message::Text(text) = message else { continue };
        frames.push(serde_json::from_str(&text).unwrap());
    }
    let mut events = Vec::new();
    for frame in frames {
        if frame["body"]["tag"] == "Event" {
            let val = &frame["body"]["val"];
            events.push((val["name"].as_str().unwrap().to_string(), val["args"][0].clone()));
        }
    }
    events
}

/// Issue 12, acceptance 3: destroy and sleep with processes and a shell running: their exits
/// come first and `vmShutdown` is the last event.
#[tokio::test]
async fn vm_shutdown_comes_after_the_exits_it_causes() {
    let server = TestServer::start();
    let names = ["processExit", "shellExit", "vmShutdown", "vmBooted"];
    // Destroy.
    let mut c = Conn::open(&server, "life-order-destroy", &names).await;
    for _ in 0..3 {
        c.call("spawn", json!(["sleep", ["100"]])).await;
    }
    c.call("openShell", json!([])).await;
    c.call("destroy", json!([])).await;
    let events = events_until_closed(&mut c, Duration::from_secs(20)).await;
    let order: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(order.last(), Some(&"vmShutdown"), "{events:?}");
    assert_eq!(order.iter().filter(|n| **n == "processExit").count(), 3, "{events:?}");
    assert_eq!(order.iter().filter(|n| **n == "shellExit").count(), 1, "{events:?}");
    assert_eq!(events.last().unwrap().1, json!({"reason": "destroy"}));

    // Sleep (at a server shutdown, the only time a VM with running processes sleeps).
    let mut c = Conn::open(&server, "life-order-sleep", &names).await;
    for _ in 0..3 {
        c.call("spawn", json!(["sleep", ["100"]])).await;
    }
    drop(c);
    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &[]);
    let log = http_action(&server, "life-order-sleep", "getVmEvents", json!([])).await;
    let order: Vec<&str> = log.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(order, ["vmBooted", "processExit", "processExit", "processExit", "vmShutdown"], "{log}");
}

/// SIGTERM as soon as the server says it listens stops it cleanly (exit 0, its VMs' disk and
/// LXCFS released), rather than killing it before its handler is in place.
#[tokio::test]
async fn sigterm_right_after_listening_stops_cleanly() {
    for _ in 0..3 {
        let mut server = TestServer::start();
        let status = server.stop();
        assert!(status.success(), "the server ended with {status}");
    }
}
