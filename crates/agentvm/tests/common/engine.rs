//! A real Rivet Engine (the binary from its npm package, with its file-system backend) and a
//! real S3-compatible server (moto, from PyPI), both on random loopback ports, for the
//! scale-out tests. `scripts/test` fetches them and says where with `RIVET_ENGINE_BINARY` and
//! `AGENTVM_TEST_S3_SERVER`; without them these tests fail and say how to get them.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn tool(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests through scripts/test, which fetches the engine and the S3 server (see scripts/scale-out-tools)")
    })
}

/// A free loopback port (released for the process that will bind it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// One engine node with its own database directory.
pub struct Engine {
    pub url: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

fn spawn_engine(dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("engine.log")).unwrap();
    Command::new(tool("RIVET_ENGINE_BINARY"))
        .args(["start", "--config"])
        .arg(dir.join("config.json"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting rivet-engine")
}

impl Engine {
    /// Starts the engine (failure detection at 3 s, telemetry off) and waits until it is healthy.
    pub async fn start() -> Engine {
        Self::start_with(3000).await
    }

    /// Starts the engine with a host declared lost after `lost_ms` without pings (hosts stop
    /// their actors then too).
    pub async fn start_with(lost_ms: u64) -> Engine {
        let dir = tempfile::Builder::new().prefix("agentvm-engine-").tempdir().unwrap();
        let (guard, peer, metrics) = (free_port(), free_port(), free_port());
        let config = json!({
            "file_system": {"path": dir.path().join("db")},
            "telemetry": {"enabled": false},
            "guard": {"host": "127.0.0.1", "port": guard},
            "api_peer": {"host": "127.0.0.1", "port": peer},
            "metrics": {"host": "127.0.0.1", "port": metrics},
            "pegboard": {"envoy_lost_threshold": lost_ms, "envoy_eligible_threshold": 3000, "envoy_update_ping_interval": 1000},
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let child = spawn_engine(dir.path());
        let engine = Engine { url: format!("http://127.0.0.1:{guard}"), dir, child };
        engine.wait_healthy().await;
        engine
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let health = format!("{}/health", self.url);
        wait_for("the engine's /health", Duration::from_secs(30), || {
            let request = http.get(&health).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// Kills the engine (SIGKILL).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the engine again on the same database and ports.
    pub async fn restart(&mut self) {
        self.child = spawn_engine(self.dir.path());
        self.wait_healthy().await;
    }

    /// Declares the pool `name` (a runner config whose hosts connect by WebSocket).
    /// Retried: a new engine creates its `default` namespace just after it is healthy.
    pub async fn create_pool(&self, name: &str) {
        let http = reqwest::Client::new();
        let url = format!("{}/runner-configs/{name}?namespace=default", self.url);
        wait_for("the pool to be created", Duration::from_secs(30), || {
            let request = http.put(&url).json(&json!({"datacenters": {"default": {"normal": {}}}})).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    /// The engine's record of an actor.
    pub async fn actor(&self, actor_id: &str) -> Value {
        let url = format!("{}/actors?namespace=default&actor_ids={actor_id}", self.url);
        let body: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["actors"][0].clone()
    }

    /// Asks the engine to put an actor to sleep.
    pub async fn sleep(&self, actor_id: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/actors/{actor_id}/sleep?namespace=default", self.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "sleeping {actor_id}: {}", response.text().await.unwrap_or_default());
    }

    /// Destroys an actor through the engine's REST API.
    pub async fn destroy(&self, actor_id: &str) {
        let response = reqwest::Client::new()
            .delete(format!("{}/actors/{actor_id}?namespace=default", self.url))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "destroying {actor_id}: {}", response.text().await.unwrap_or_default());
    }

    /// The engine's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("engine.log")).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// An S3-compatible server (moto) with one bucket.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    child: Child,
}

impl S3 {
    pub async fn start() -> S3 {
        let port = free_port();
        let child = Command::new(tool("AGENTVM_TEST_S3_SERVER"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the S3 server");
        let s3 = S3 { endpoint: format!("http://127.0.0.1:{port}"), bucket: "agentvm-snapshots".into(), child };
        let http = reqwest::Client::new();
        let bucket = format!("{}/{}", s3.endpoint, s3.bucket);
        wait_for("the S3 server", Duration::from_secs(60), || {
            let request = http.put(&bucket).send();
            async move { request.await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
        s3
    }

    /// The variables a host needs to use the bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// The snapshot store at `s3://<bucket>/<prefix>`, as a host sees it.
    pub fn store(&self, prefix: &str) -> agentvm_snapshot::SnapshotStore {
        let options = self.env().into_iter().map(|(k, v)| (k.to_lowercase(), v));
        agentvm_snapshot::SnapshotStore::open_with(&format!("s3://{}/{prefix}", self.bucket), options).unwrap()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}
