//! Escape battery, area `lifecycle`: what a client can do to the server's own resources and to
//! the lifecycle of VMs — racing `destroy`, abandoning actions, unbounded actions per
//! connection, numeric arguments at their extremes, creating VMs without bound, and output that
//! would grow the server's memory. Each test is one attempt: it asserts the refusal (or the
//! bound) and that the server and other VMs still work.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::server::TestServer;
use common::ws::*;
use serde_json::{json, Value};

/// An HTTP action on `key` (getOrCreate): status, body and the actor id header.
async fn call(server: &TestServer, key: &str, name: &str, args: Value) -> (u16, Value, Option<String>) {
    let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key={key}", server.url);
    let response = reqwest::Client::new().post(url).json(&json!({"args": args})).send().await.expect("request");
    let status = response.status().as_u16();
    let actor = response.headers().get("x-rivet-actor").map(|v| v.to_str().unwrap().to_string());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body, actor)
}

/// The output of a successful HTTP action.
async fn ok(server: &TestServer, key: &str, name: &str, args: Value) -> Value {
    let (status, body, _) = call(server, key, name, args).await;
    assert_eq!(status, 200, "{name} failed: {body}");
    body["output"].clone()
}

/// An HTTP action addressed by actor id.
async fn call_by_id(server: &TestServer, id: &str, name: &str, args: Value) -> (u16, Value) {
    let url = format!("{}/gateway/{id}/action/{name}", server.url);
    let response = reqwest::Client::new().post(url).json(&json!({"args": args})).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn code(body: &Value) -> String {
    format!("{}/{}", body["group"].as_str().unwrap_or("?"), body["code"].as_str().unwrap_or("?"))
}

/// Host pids of the VM inits the server runs (its child processes, whichever thread started them).
fn vm_inits(server: &TestServer) -> Vec<i32> {
    server.vm_inits()
}

/// Cgroup directories of the server's VMs still present on the host (not those the launcher
/// waits in for the next VM).
fn vm_cgroups(server: &TestServer) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, prefix: &str, depth: usize, found: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path);
            } else if depth > 0 {
                walk(&path, prefix, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), &format!("agentvm-{}-", server.pid()), 6, &mut found);
    let standby = server.launcher_cgroups();
    found.retain(|dir| !standby.iter().any(|name| dir.file_name().is_some_and(|n| n == name.as_str())));
    found
}

fn vms_dir(server: &TestServer) -> std::path::PathBuf {
    server.data.path().join("data/vms")
}

/// Ids of the registered actors called `vm`.
async fn registered(server: &TestServer) -> Vec<String> {
    let listed: Value = reqwest::get(format!("{}/actors?name=vm", server.url)).await.unwrap().json().await.unwrap();
    let mut ids: Vec<String> =
        listed["actors"].as_array().unwrap().iter().map(|a| a["actor_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

/// Registered actors and VM directories on disk agree, and no more VMs run than are registered.
async fn assert_registry_consistent(server: &TestServer) {
    let registered = registered(server).await;
    let mut on_disk: Vec<String> = std::fs::read_dir(vms_dir(server))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(registered, on_disk, "registered actors and VM directories differ");
    let running = vm_inits(server).len();
    assert!(running <= registered.len(), "{running} VMs run for {} registered actors", registered.len());
}

/// Destroys every registered actor, then waits until no VM, cgroup or VM directory is left:
/// a VM that a destroy missed (booted for an actor being destroyed) would stay behind.
async fn destroy_all_and_expect_nothing_left(server: &TestServer) {
    for id in registered(server).await {
        let response = reqwest::Client::new().delete(format!("{}/actors/{id}", server.url)).send().await.unwrap();
        assert!(response.status().is_success() || response.status() == 404, "{}", response.status());
    }
    common::eventually(10, "every VM of the server to end", || async { vm_inits(server).is_empty() }).await;
    assert_eq!(vm_cgroups(server), Vec::<std::path::PathBuf>::new(), "VM cgroups remain");
    assert_eq!(registered(server).await, Vec::<String>::new());
    let left: Vec<_> = std::fs::read_dir(vms_dir(server)).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "VM directories remain: {left:?}");
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("VmHWM")
}

/// Whether a process whose arguments contain `marker` runs in the VM of `key`.
async fn vm_runs(server: &TestServer, key: &str, marker: &str) -> bool {
    let processes = ok(server, key, "allProcesses", json!([])).await;
    processes.as_array().unwrap().iter().any(|p| p["args"].to_string().contains(marker))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escape_destroy_racing_a_burst_of_actions_leaves_no_vm_running() {
    let server = TestServer::start();
    for round in 0..4 {
        let key = format!("race-{round}");
        let (_, _, id) = call(&server, &key, "exec", json!(["echo up"])).await;
        let old_id = id.expect("actor id header");
        assert_eq!(vm_inits(&server).len(), 1);
        // 50 actions, with `destroy` in the middle of them, all at once.
        let mut calls = Vec::new();
        for i in 0..51 {
            let (server, key) = (&server, key.clone());
            calls.push(async move {
                if i == 25 {
                    call(server, &key, "destroy", json!([])).await
                } else {
                    call(server, &key, "exec", json!(["echo hi"])).await
                }
            });
        }
        let results = futures_util::future::join_all(calls).await;
        for (status, body, _) in &results {
            // Actions the destroy overtook are refused, or answered (an exec it killed exits 143).
            let allowed = *status == 200 || ["actor/destroying", "actor/destroyed"].contains(&code(body).as_str());
            assert!(allowed, "round {round}: {status} {body}");
        }
        assert_eq!(results[25].0, 200, "destroy failed: {}", results[25].1);
        // Every action has been answered: the destroyed actor's data is gone, and what runs now
        // belongs to a fresh actor (actions after the destroy create one, with another id).
        assert!(!vms_dir(&server).join(&old_id).exists(), "round {round}: the destroyed actor's data remains");
        assert!(!registered(&server).await.contains(&old_id));
        assert_registry_consistent(&server).await;
        destroy_all_and_expect_nothing_left(&server).await;
    }
    // The server still works, and a destroyed key gets a fresh VM.
    assert_eq!(ok(&server, "race-0", "exec", json!(["echo alive"])).await["stdout"], "alive\n");
    assert_registry_consistent(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn escape_destroy_during_the_first_boot_leaves_no_vm() {
    let server = TestServer::start();
    for round in 0..5 {
        let key = format!("boot-race-{round}");
        // Create the actor without booting its VM, then boot and destroy at once.
        let (_, _, id) = call(&server, &key, "getVmEvents", json!([])).await;
        let old_id = id.unwrap();
        let boot = call_by_id(&server, &old_id, "exec", json!(["echo booted"]));
        let destroy = async {
            let url = format!("{}/actors/{old_id}", server.url);
            reqwest::Client::new().delete(url).send().await.unwrap().status().as_u16()
        };
        let ((status, body), destroyed) = tokio::join!(boot, destroy);
        assert_eq!(destroyed, 200);
        assert!(status == 200 || code(&body).starts_with("actor/"), "{status} {body}");
        destroy_all_and_expect_nothing_left(&server).await;
    }
}

#[tokio::test]
async fn escape_actions_on_a_destroying_or_destroyed_actor_are_refused() {
    let server = TestServer::start();
    let (_, _, id) = call(&server, "doomed", "exec", json!(["echo up"])).await;
    let id = id.unwrap();
    // A process that ignores SIGTERM makes the stop take its full grace period (2 s).
    ok(&server, "doomed", "spawn", json!(["sh", ["-c", "trap '' TERM; sleep 1002"]])).await;
    let mut watcher = Conn::open(&server, "doomed", &["vmShutdown"]).await;
    // A round trip: the subscription is in place before the destroy starts.
    watcher.call("getVmEvents", json!([{"limit": 1}])).await;
    let destroying = {
        let url = format!("{}/actors/{id}", server.url);
        tokio::spawn(async move { reqwest::Client::new().delete(url).send().await.unwrap().status().as_u16() })
    };
    // The destroy has begun once actions are refused (its stop then takes the 2 s grace).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call_by_id(&server, &id, "getProcess", json!([1])).await;
        if code(&body) == "actor/destroying" {
            assert_eq!(status, 503);
            break;
        }
        assert!(Instant::now() < deadline, "the destroy never began: {status} {body}");
    }
    for name in ["exec", "readFile", "getVmEvents"] {
        let args = if name == "readFile" { json!(["/etc/hostname"]) } else { json!(["echo sneaked in"]) };
        let args = if name == "getVmEvents" { json!([]) } else { args };
        let (status, body) = call_by_id(&server, &id, name, args).await;
        assert_eq!((status, code(&body).as_str()), (503, "actor/destroying"), "{name}: {body}");
    }
    assert_eq!(destroying.await.unwrap(), 200);
    // `vmShutdown {reason: "destroy"}` is the last event, once the VM stopped.
    assert_eq!(watcher.event("vmShutdown", Duration::from_secs(10)).await, json!({"reason": "destroy"}));
    let (status, body) = call_by_id(&server, &id, "exec", json!(["echo late"])).await;
    assert_eq!((status, code(&body).as_str()), (404, "actor/not_found"), "{body}");
    destroy_all_and_expect_nothing_left(&server).await;
}

#[tokio::test]
async fn escape_closing_a_websocket_kills_its_inflight_exec() {
    let server = TestServer::start();
    ok(&server, "ws-close", "exec", json!(["true"])).await;
    let mut conn = Conn::open(&server, "ws-close", &[]).await;
    send_json(&mut conn.ws, action(1, "exec", json!(["sleep 1003; echo never"]))).await;
    common::eventually(10, "the exec to run", || vm_runs(&server, "ws-close", "1003")).await;
    drop(conn);
    common::eventually(10, "the exec to be killed", || async { !vm_runs(&server, "ws-close", "1003").await }).await;
    // The VM still works.
    assert_eq!(ok(&server, "ws-close", "exec", json!(["echo ok"])).await["stdout"], "ok\n");
}

#[tokio::test]
async fn escape_an_abandoned_http_exec_is_killed() {
    let server = TestServer::start();
    ok(&server, "http-abandon", "exec", json!(["true"])).await;
    let url = format!("{}/gateway/vm/action/exec?rvt-method=getOrCreate&rvt-key=http-abandon", server.url);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().unwrap();
    let request = client.post(url).json(&json!({"args": ["sleep 1004"]})).send();
    let (gave_up, ()) = tokio::join!(request, async {
        common::eventually(10, "the exec to run", || vm_runs(&server, "http-abandon", "1004")).await;
    });
    assert!(gave_up.is_err(), "the exec returned");
    common::eventually(10, "the exec to be killed", || async { !vm_runs(&server, "http-abandon", "1004").await }).await;
}

#[tokio::test]
async fn escape_a_connection_cannot_run_unbounded_actions() {
    let server = TestServer::start_with(&["--max-actions-per-connection", "4"]);
    ok(&server, "ws-cap", "exec", json!(["true"])).await;
    let mut conn = Conn::open(&server, "ws-cap", &[]).await;
    for id in 0..4 {
        send_json(&mut conn.ws, action(id, "exec", json!([format!("sleep 100{id}5")]))).await;
    }
    common::eventually(10, "4 execs to run", || async {
        let processes = ok(&server, "ws-cap", "allProcesses", json!([])).await;
        processes.as_array().unwrap().iter().filter(|p| p["command"] == "sleep").count() == 4
    })
    .await;
    let refused = conn.try_call("exec", json!(["echo fifth"])).await.expect_err("a fifth action ran");
    assert_eq!(code(&refused), "connection/too_many_actions", "{refused}");
    // Other connections are not affected; closing this one ends its actions.
    drop(conn);
    common::eventually(10, "the execs to be killed", || async {
        let processes = ok(&server, "ws-cap", "allProcesses", json!([])).await;
        !processes.as_array().unwrap().iter().any(|p| p["command"] == "sleep")
    })
    .await;
}

#[tokio::test]
async fn escape_get_vm_events_with_the_largest_sequence_number_does_not_overflow() {
    let server = TestServer::start();
    ok(&server, "events-huge", "spawn", json!(["echo", ["x"]])).await;
    for since in [json!(["$BigInt", "18446744073709551615"]), json!(18446744073709551615u64), json!(1e300)] {
        let (status, body, _) = call(&server, "events-huge", "getVmEvents", json!([{"since": since}])).await;
        assert_eq!((status, &body["output"]), (200, &json!([])), "since {since}: {body}");
    }
    let (status, body, _) =
        call(&server, "events-huge", "getVmEvents", json!([{"since": ["$BigInt", "18446744073709551616"]}])).await;
    assert!(status == 200 || status == 400, "{status} {body}");
    // The server is alive and the log still reads from the start.
    let events = ok(&server, "events-huge", "getVmEvents", json!([])).await;
    assert!(!events.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn escape_nonsense_numbers_get_clear_errors() {
    let server = TestServer::start();
    let cases = [
        ("getVmEvents", json!([{"since": -1}])),
        ("getVmEvents", json!([{"since": 1.5}])),
        ("getVmEvents", json!([{"since": ["$BigInt", "-5"]}])),
        ("getVmEvents", json!([{"since": "5"}])),
        ("getVmEvents", json!([{"limit": 0}])),
        ("getVmEvents", json!([{"limit": 2.5}])),
        ("getVmEvents", json!([{"limit": 10001}])),
        ("getVmEvents", json!([{"limit": 1e300}])),
        ("getVmEvents", json!([{"limit": -3}])),
        ("exec", json!(["true", {"timeout": -1}])),
        ("exec", json!(["true", {"timeout": 1e300}])),
        ("readdirRecursive", json!(["/", {"maxDepth": -1}])),
        ("readdirRecursive", json!(["/", {"maxDepth": 1e20}])),
        ("waitProcess", json!([1099511627776u64])),
        ("waitProcess", json!([1.5])),
        ("resizeShell", json!(["shell-1", 70000, 24])),
    ];
    for (name, args) in cases {
        let (status, body, _) = call(&server, "numbers", name, args.clone()).await;
        assert_eq!((status, code(&body).as_str()), (400, "action/invalid_arguments"), "{name} {args}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(name), "{body}");
    }
    assert_eq!(ok(&server, "numbers", "exec", json!(["echo fine"])).await["stdout"], "fine\n");
}

#[tokio::test]
async fn escape_creating_more_vms_than_the_cap_is_refused() {
    let server = TestServer::start_with(&["--max-vms", "3"]);
    for i in 0..3 {
        ok(&server, &format!("cap-{i}"), "exec", json!(["true"])).await;
    }
    let (status, body, _) = call(&server, "cap-3", "exec", json!(["true"])).await;
    assert_eq!((status, code(&body).as_str()), (503, "server/too_many_vms"), "{body}");
    assert_eq!(body["metadata"]["limit"], 3);
    // Existing VMs keep working; a destroy makes room.
    assert_eq!(ok(&server, "cap-0", "exec", json!(["echo still"])).await["stdout"], "still\n");
    ok(&server, "cap-1", "destroy", json!([])).await;
    ok(&server, "cap-3", "exec", json!(["true"])).await;
    // The cap holds across a restart.
    let data = server.stop_keep_data();
    let server = TestServer::start_in(data, &["--max-vms", "3"]);
    let (status, body, _) = call(&server, "cap-4", "exec", json!(["true"])).await;
    assert_eq!((status, code(&body).as_str()), (503, "server/too_many_vms"), "{body}");
}

#[tokio::test]
async fn escape_creating_vms_faster_than_the_rate_is_refused() {
    let server = TestServer::start_with(&["--max-creates-per-second", "0.5", "--create-burst", "2"]);
    ok(&server, "rate-0", "getVmEvents", json!([])).await;
    ok(&server, "rate-1", "getVmEvents", json!([])).await;
    let url = format!("{}/gateway/vm/action/exec?rvt-method=getOrCreate&rvt-key=rate-2", server.url);
    let response = reqwest::Client::new().post(url).json(&json!({"args": ["true"]})).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "server/rate_limited", "{body}");
    assert!(body["metadata"]["retryAfterMs"].as_u64().unwrap() > 0);
    // Existing VMs are not limited.
    for _ in 0..5 {
        assert_eq!(ok(&server, "rate-0", "exec", json!(["echo x"])).await["stdout"], "x\n");
    }
}

#[tokio::test]
async fn escape_exec_output_is_capped_and_says_so() {
    let server = TestServer::start_with(&["--max-exec-output-bytes", "1000"]);
    let out = ok(&server, "exec-cap", "exec", json!(["yes | head -c 5000; yes e | head -c 3000 >&2"])).await;
    assert_eq!(out["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(out["stderr"].as_str().unwrap().len(), 1000);
    assert_eq!(out["truncated"], true);
    assert_eq!(out["exitCode"], 0);
    // Small outputs keep the reference shape exactly.
    let out = ok(&server, "exec-cap", "exec", json!(["echo small"])).await;
    assert_eq!(out, json!({"exitCode": 0, "stdout": "small\n", "stderr": ""}));
}

/// The documented cap: the server's peak resident memory (VmHWM) while one VM prints 1 GiB.
const SERVER_MEMORY_CAP_KIB: u64 = 128 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_one_vm_printing_a_gibibyte_keeps_the_server_under_its_memory_cap() {
    let server = TestServer::start();
    ok(&server, "loud", "exec", json!(["true"])).await;
    let before = vm_hwm_kib(server.pid());
    let started = Instant::now();
    // Through exec: captured up to its cap, the rest read and discarded.
    let out = ok(&server, "loud", "exec", json!(["yes 0123456789abcdef | head -c 1073741824"])).await;
    assert_eq!(out["truncated"], true);
    assert_eq!(out["stdout"].as_str().unwrap().len(), agentvm_server::DEFAULT_EXEC_OUTPUT_BYTES);
    let after_exec = vm_hwm_kib(server.pid());
    // Through spawn, with a subscriber that never reads (it lags) and the event log persisting.
    let mut lagging = Conn::open(&server, "loud", &["processOutput", "processExit"]).await;
    let pid = ok(&server, "loud", "spawn", json!(["sh", ["-c", "yes 0123456789abcdef | head -c 1073741824"]])).await
        ["pid"]
        .clone();
    assert_eq!(ok(&server, "loud", "waitProcess", json!([pid])).await, 0);
    let after_spawn = vm_hwm_kib(server.pid());
    eprintln!(
        "server VmHWM: {before} KiB before, {after_exec} KiB after exec of 1 GiB, {after_spawn} KiB after spawn of 1 GiB \
         ({:?})",
        started.elapsed()
    );
    assert!(after_spawn < SERVER_MEMORY_CAP_KIB, "server peaked at {after_spawn} KiB");
    // The server still answers, the lagging connection included.
    assert_eq!(ok(&server, "loud", "exec", json!(["echo ok"])).await["stdout"], "ok\n");
    let _ = lagging.try_call("exec", json!(["true"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_many_processes_cannot_pin_unbounded_replay_memory() {
    let server = TestServer::start();
    ok(&server, "replay", "exec", json!(["true"])).await;
    let before = vm_hwm_kib(server.pid());
    // 200 spawned processes of 1 MiB each: without a per-VM budget the server would keep
    // 200 MiB of replay logs.
    let mut pids = Vec::new();
    for _ in 0..200 {
        let pid = ok(&server, "replay", "spawn", json!(["head", ["-c", "1048576", "/dev/zero"]])).await["pid"].clone();
        pids.push(pid);
    }
    for pid in pids {
        ok(&server, "replay", "waitProcess", json!([pid])).await;
    }
    let after = vm_hwm_kib(server.pid());
    eprintln!("server VmHWM: {before} KiB before, {after} KiB after 200 processes of 1 MiB");
    assert!(after - before < 100 << 10, "the server grew by {} KiB", after - before);
    assert_eq!(ok(&server, "replay", "exec", json!(["echo ok"])).await["stdout"], "ok\n");
}

#[tokio::test]
async fn escape_a_sleeping_vm_holds_no_server_descriptors() {
    let server = TestServer::start_with(&["--idle-timeout", "1"]);
    let fds = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    ok(&server, "fd-0", "exec", json!(["true"])).await;
    let mut conn = Conn::open(&server, "fd-0", &["vmShutdown"]).await;
    conn.event("vmShutdown", Duration::from_secs(15)).await;
    drop(conn);
    let idle = fds();
    for i in 1..40 {
        ok(&server, &format!("fd-{i}"), "getVmEvents", json!([])).await;
    }
    common::eventually(15, "event files of sleeping VMs to be closed", || async { fds() <= idle + 4 }).await;
    assert!(Path::new(&vms_dir(&server)).read_dir().unwrap().count() >= 40);
}
