//! Scale-out: agentvm hosts of a real Rivet Engine (2.3.19, from its npm package, file-system
//! backend) with VM state in a real S3-compatible server (moto), everything on loopback. The
//! real rivetkit client talks to the engine only; the engine places VMs on two agentvm hosts,
//! sleeps and wakes them, and moves them when a host dies.
mod common;

use std::time::{Duration, Instant};

use common::engine::{wait_for, Engine, S3};
use common::server::TestServer;
use serde_json::{json, Value};

/// An engine, its S3 bucket and a pool of two agentvm hosts.
struct Cluster {
    // Dropped first: hosts stop (snapshotting their VMs) while the engine and S3 still run.
    hosts: Vec<Option<TestServer>>,
    engine: Engine,
    s3: S3,
    pool: String,
}

impl Cluster {
    async fn start(extra: &[&str]) -> Cluster {
        Self::start_with(Engine::start().await, extra).await
    }

    async fn start_with(engine: Engine, extra: &[&str]) -> Cluster {
        let s3 = S3::start().await;
        let pool = format!("vm-host-{}", std::process::id());
        engine.create_pool(&pool).await;
        let mut cluster = Cluster { hosts: Vec::new(), engine, s3, pool };
        for _ in 0..2 {
            let data = tempfile::Builder::new().prefix("agentvm-test-").tempdir().unwrap();
            let host = cluster.host(data, extra);
            cluster.hosts.push(Some(host));
        }
        for i in 0..2 {
            cluster.wait_connected(i, 1).await;
        }
        cluster
    }

    fn host(&self, data: tempfile::TempDir, extra: &[&str]) -> TestServer {
        let store = format!("s3://{}/agentvm", self.s3.bucket);
        let mut args = vec!["--engine", &self.engine.url, "--pool", &self.pool, "--snapshot-store", &store];
        args.extend_from_slice(&["--snapshot-interval", "1"]);
        args.extend_from_slice(extra);
        TestServer::start_in_env(data, &args, &self.s3.env())
    }

    fn running(&self, i: usize) -> &TestServer {
        self.hosts[i].as_ref().expect("a running host")
    }

    async fn health(&self, i: usize) -> Value {
        reqwest::get(format!("{}/health", self.running(i).url)).await.unwrap().json().await.unwrap()
    }

    /// Waits until host `i` has connected to the engine `connections` times and is connected.
    async fn wait_connected(&self, i: usize, connections: u64) {
        wait_for("a host's engine link", Duration::from_secs(30), || async move {
            let engine = self.health(i).await["engine"].clone();
            (engine["connected"] == true && engine["connections"].as_u64() >= Some(connections)).then_some(())
        })
        .await;
    }

    /// The host the engine placed actor `actor_id` on.
    async fn host_of(&self, actor_id: &str) -> usize {
        wait_for("the actor's host", Duration::from_secs(30), || async move {
            for i in 0..self.hosts.len() {
                if self.hosts[i].is_some() && self.health(i).await["engine"]["actors"].as_u64() >= Some(1) {
                    let log = self.engine.actor(actor_id).await;
                    if log.is_object() {
                        return Some(i);
                    }
                }
            }
            None
        })
        .await
    }

    /// Calls an action of VM `key` through the engine's gateway (JSON); its status, body and
    /// the engine's actor id.
    async fn call(&self, key: &str, action: &str, args: Value) -> (u16, Value, String) {
        let url = format!(
            "{}/gateway/vm/action/{action}?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner={}&rvt-key={key}",
            self.engine.url, self.pool
        );
        let response = reqwest::Client::new().post(url).json(&json!({ "args": args })).send().await.unwrap();
        let status = response.status().as_u16();
        let actor =
            response.headers().get("x-rivet-actor").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        (status, response.json().await.unwrap_or(Value::Null), actor)
    }

    async fn ok(&self, key: &str, action: &str, args: Value) -> (Value, String) {
        let (status, body, actor) = self.call(key, action, args).await;
        assert_eq!(status, 200, "{action} through the engine failed: {body}");
        (body["output"].clone(), actor)
    }

    /// The newest snapshot manifest of an actor, if any.
    async fn manifest(&self, actor_id: &str) -> Option<Value> {
        let manifest = self.s3.store("agentvm").latest(actor_id).await.unwrap()?;
        Some(serde_json::to_value(manifest).unwrap())
    }

    /// Waits for a snapshot of `actor_id` that began after `after` (ms since the epoch).
    async fn snapshot_after(&self, actor_id: &str, after: u64) -> Value {
        wait_for("a snapshot", Duration::from_secs(30), || async move {
            self.manifest(actor_id).await.filter(|m| m["takenMs"].as_u64() > Some(after))
        })
        .await
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Runs one client scenario against the engine, on the cluster's pool.
fn scenario(
    cluster: &Cluster,
    encoding: &str,
    key: &str,
    name: &str,
) -> std::thread::JoinHandle<(String, std::process::Output)> {
    let mut command = common::node::scenario(&cluster.engine.url, encoding, key, name);
    command.env("RIVET_POOL", &cluster.pool);
    let what = format!("{name}/{encoding} through the engine");
    std::thread::spawn(move || (what, command.output().expect("running node")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rivetkit_client_scenarios_run_through_the_engine_on_two_hosts() {
    let cluster = Cluster::start(&[]).await;
    let runs = vec![
        scenario(&cluster, "bare", "engine-seed-bare", "seed"),
        scenario(&cluster, "json", "engine-seed-json", "seed"),
        scenario(&cluster, "cbor", "engine-seed-cbor", "seed"),
        scenario(&cluster, "bare", "engine-multiplayer", "multiplayer"),
        scenario(&cluster, "cbor", "engine-files", "files"),
    ];
    for run in runs {
        let (what, output) = run.join().unwrap();
        common::node::assert_done(&what, &output);
    }
    // The pool's hosts run the six VMs between them. (Which host gets which is the engine's
    // choice: two random samples of a hash ring, which may both land on one host.)
    let (a, b) = (cluster.health(0).await, cluster.health(1).await);
    let placed = |h: &Value| h["engine"]["actors"].as_u64().unwrap_or(0);
    assert_eq!(placed(&a) + placed(&b), 6, "{a}\n{b}");
    eprintln!("VMs per host: {} and {}", placed(&a), placed(&b));
    // A host does not create VMs on its own: the engine decides where a key lives.
    let (status, body) =
        common::http::Api::new(cluster.running(0), "not-through-the-engine").call("exec", json!(["true"])).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("placed_by_engine")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_sleeps_and_wakes_through_the_engine_with_its_files() {
    let cluster = Cluster::start(&["--idle-timeout", "2"]).await;
    let (_, actor) = cluster.ok("sleepy", "exec", json!(["echo kept > /home/user/note"])).await;
    assert!(!actor.is_empty(), "the engine names the actor");
    // Idle for 2 s: the host asks the engine, which stops the VM (snapshotted) and marks it asleep.
    let slept = wait_for("the engine to put the idle VM to sleep", Duration::from_secs(30), || async {
        cluster.engine.actor(&actor).await["sleep_ts"].as_i64()
    })
    .await;
    let (output, again) = cluster.ok("sleepy", "exec", json!(["cat /home/user/note"])).await;
    assert_eq!(again, actor);
    assert_eq!(output["stdout"], "kept\n");
    // The engine's own sleep (its REST API) works too, and the next request wakes it again.
    cluster.engine.sleep(&actor).await;
    wait_for("the second sleep", Duration::from_secs(30), || async {
        cluster.engine.actor(&actor).await["sleep_ts"].as_i64().filter(|at| *at > slept)
    })
    .await;
    let (output, _) = cluster.ok("sleepy", "exec", json!(["cat /home/user/note"])).await;
    assert_eq!(output["stdout"], "kept\n");
    // Its history says so: two sleeps, three boots.
    let (events, _) = cluster.ok("sleepy", "getVmEvents", json!([{}])).await;
    let names: Vec<&str> = events.as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
    let count = |name: &str| names.iter().filter(|n| **n == name).count();
    assert_eq!((count("vmBooted"), count("vmShutdown")), (3, 2), "{names:?}");

    // Destroyed through the engine: its snapshots go, and the key starts afresh.
    assert!(cluster.manifest(&actor).await.is_some());
    cluster.engine.destroy(&actor).await;
    wait_for("the snapshots of the destroyed VM to go", Duration::from_secs(30), || async {
        cluster.manifest(&actor).await.is_none().then_some(())
    })
    .await;
    let (output, fresh) = cluster.ok("sleepy", "exec", json!(["cat /home/user/note 2>&1; true"])).await;
    assert_ne!(fresh, actor);
    assert!(output["stdout"].as_str().unwrap().contains("No such file"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_its_host_moves_the_vm_with_its_files_and_event_log() {
    let mut cluster = Cluster::start(&[]).await;
    let key = "movable";
    let (hash, actor) = cluster
        .ok(key, "exec", json!(["echo precious > /home/user/precious; head -c 3000000 /dev/urandom > /home/user/blob; sha256sum /home/user/blob"]))
        .await;
    let (spawned, _) = cluster.ok(key, "spawn", json!(["sh", ["-c", "echo logged-before-the-crash"]])).await;
    let pid = spawned["pid"].clone();
    cluster.ok(key, "waitProcess", json!([pid])).await;
    let (before, _) = cluster.ok(key, "getVmEvents", json!([{}])).await;
    let written = now_ms();
    let manifest = cluster.snapshot_after(&actor, written).await;
    assert_eq!(manifest["pointInTime"], true, "{manifest}");
    let victim = cluster.host_of(&actor).await;
    let _cleanup = Killed(Some(cluster.hosts[victim].take().unwrap().kill_hard()));
    let killed = Instant::now();

    // The engine notices the lost host and starts the VM on the other one, from the snapshot.
    let (output, moved) = wait_for("the VM on the other host", Duration::from_secs(60), || async {
        let (status, body, actor) = cluster
            .call(
                key,
                "exec",
                json!(["cat /home/user/precious; sha256sum /home/user/blob; stat -c %U:%G /home/user/precious"]),
            )
            .await;
        (status == 200).then(|| (body["output"].clone(), actor))
    })
    .await;
    eprintln!("moved after {:?}", killed.elapsed());
    assert_eq!(moved, actor);
    // Same bytes, and still the VM user's (its id range on this host differs).
    let expected = format!("precious\n{}user:user\n", hash["stdout"].as_str().unwrap());
    assert_eq!(output["stdout"].as_str().unwrap(), expected, "{output}");
    let survivor = 1 - victim;
    assert_eq!(cluster.health(survivor).await["engine"]["actors"], 1);
    // Every event logged before the snapshot is there, as it was.
    let (after, _) = cluster.ok(key, "getVmEvents", json!([{}])).await;
    let before = before.as_array().unwrap();
    assert!(before.iter().any(|e| e["name"] == "processExit" && e["data"]["pid"] == pid), "{before:?}");
    assert_eq!(&after.as_array().unwrap()[..before.len()], &before[..]);
}

/// A SIGKILLed host's data directory: its leftovers (mounts, LXCFS) go with a clean restart
/// and stop, whether the test passed or not.
struct Killed(Option<tempfile::TempDir>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(data) = self.0.take() {
            TestServer::start_in(data, &[]).stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_engine_keeps_vms_running_and_the_host_reconnects() {
    // Hosts give their VMs up after the engine's lost threshold without it (the engine would
    // have moved them): the outage here is shorter.
    let mut cluster = Cluster::start_with(Engine::start_with(60_000).await, &[]).await;
    let (spawned, actor) = cluster.ok("steady", "spawn", json!(["sleep", ["600"]])).await;
    let pid = spawned["pid"].as_i64().unwrap();
    let host = cluster.host_of(&actor).await;
    cluster.engine.kill();
    wait_for("the host to notice", Duration::from_secs(30), || async {
        (cluster.health(host).await["engine"]["connected"] == false).then_some(())
    })
    .await;
    // The VM keeps running meanwhile: the host's own API still reaches it.
    let process = common::http::Api::new(cluster.running(host), "steady").ok("getProcess", json!([pid])).await;
    assert_eq!(process["running"], true, "{process}");
    cluster.engine.restart().await;
    cluster.wait_connected(host, 2).await;
    let process = common::http::Api::new(cluster.running(host), "steady").ok("getProcess", json!([pid])).await;
    assert_eq!(process["running"], true, "{process}");
    // And the engine reaches the VM again.
    let (output, _) = wait_for("the VM through the engine again", Duration::from_secs(60), || async {
        let (status, body, actor) = cluster.call("steady", "exec", json!(["echo back"])).await;
        (status == 200).then_some((body["output"].clone(), actor))
    })
    .await;
    assert_eq!(output["stdout"], "back\n");
}
