//! Scale-out benchmark: `cargo bench -p agentvm --bench engine` (release build), with the
//! engine and the S3 server of `scripts/scale-out-tools` (`eval "$(scripts/scale-out-tools)"`
//! first).
//!
//! One Rivet Engine (file-system backend), one S3-compatible server (moto), two agentvm hosts
//! in the engine's pool, and one agentvm server alone, all on loopback. Measures, in one run:
//!
//! - **create + first exec** (`echo hello` on a new key, over HTTP): through the engine versus
//!   directly against `agentvm serve`, interleaved, `AGENTVM_BENCH_ITERS` times (default 20);
//! - **warm exec** on one VM, through the engine versus directly (5× as many);
//! - **snapshot and restore of a VM with 100 MB of files** (`AGENTVM_BENCH_SNAPSHOT_MB`,
//!   random bytes, which do not compress): the engine sleeps the VM (stopped, captured,
//!   archived, uploaded: the time until its manifest is in the store, and the host's own
//!   figure for the snapshot); a wake on the same host (its local copy is current); then the
//!   host leaves the pool and the next request starts the VM on the other host, restored from
//!   the store (the request's time, and the host's figure for the restore).
//!
//! Writes a table to stdout and `target/bench-engine.md`. The machine is shared and noisy:
//! compare figures of one run.

#[path = "../tests/common/engine.rs"]
mod engine_harness;
#[path = "common/figures.rs"]
mod figures;
#[path = "common/server.rs"]
mod server;
use engine_harness::{Engine, S3};
use figures::{env_usize, percentile};

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agentvm server with its log in a file (the hosts' snapshot figures are read from it).
struct Server {
    process: Process,
    url: String,
    log: std::path::PathBuf,
}

fn start_server(dir: &std::path::Path, name: &str, extra: &[&str], env: &[(&str, String)]) -> Server {
    let log = dir.join(format!("{name}.log"));
    let (child, url) = server::start_server_logged(&dir.join(name), extra, env, &log);
    Server { process: Process(child), url, log }
}

/// A log's lines without their colours.
fn plain_lines(log: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.split('\x1b');
            let first = parts.next().unwrap_or_default().to_string();
            first + &parts.map(|part| part.split_once('m').map_or(part, |(_, rest)| rest)).collect::<String>()
        })
        .collect()
}

/// Lines of `logs` that contain `what` and `actor`, with their time (the line's start).
fn matching(logs: &[std::path::PathBuf], what: &str, actor: &str) -> Vec<String> {
    let mut lines: Vec<String> =
        logs.iter().flat_map(|log| plain_lines(log)).filter(|l| l.contains(what) && l.contains(actor)).collect();
    lines.sort();
    lines
}

fn count(logs: &[std::path::PathBuf], what: &str, actor: &str) -> usize {
    matching(logs, what, actor).len()
}

/// The `ms=` figure of the newest line of `logs` with `what` about `actor`.
fn newest_ms(logs: &[std::path::PathBuf], what: &str, actor: &str) -> Option<u64> {
    let line = matching(logs, what, actor).pop()?;
    line.split(" ms=").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Whether the newest start of `actor` in the pool happened on the host with this log.
fn started_here(log: &std::path::Path, actor: &str) -> bool {
    plain_lines(log).iter().any(|l| l.contains("the engine starts an actor here") && l.contains(actor))
        && plain_lines(log)
            .iter()
            .rev()
            .find(|l| l.contains(actor) && l.contains("actor here"))
            .is_some_and(|l| l.contains("starts"))
}

async fn wait_until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Gateway {
    http: reqwest::Client,
    base: String,
    /// `&rvt-runner=POOL` through the engine; empty directly.
    pool: String,
}

impl Gateway {
    async fn exec(&self, key: &str, command: &str) -> (Value, String) {
        let url = format!(
            "{}/gateway/vm/action/exec?rvt-namespace=default&rvt-method=getOrCreate{}&rvt-key={key}",
            self.base, self.pool
        );
        self.exec_at(url, command).await
    }

    /// `exec` on the actor with this id (`getForId`: no key lookup).
    async fn exec_by_id(&self, actor: &str, command: &str) -> (Value, String) {
        self.exec_at(format!("{}/gateway/{actor}/action/exec", self.base), command).await
    }

    async fn exec_at(&self, url: String, command: &str) -> (Value, String) {
        let response = self.http.post(url).json(&json!({ "args": [command] })).send().await.unwrap();
        let status = response.status();
        let actor =
            response.headers().get("x-rivet-actor").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "exec: {status} {body}");
        (body["output"].clone(), actor)
    }
}

fn row(out: &mut String, what: &str, through: &[Duration], direct: &[Duration]) {
    let (mut a, mut b) = (through.to_vec(), direct.to_vec());
    a.sort();
    b.sort();
    let (pa, pb) = (percentile(&a, 0.5), percentile(&b, 0.5));
    out.push_str(&format!(
        "| {what} | {} / {} | {} / {} | {:.2} |\n",
        ms(pa),
        ms(percentile(&a, 0.95)),
        ms(pb),
        ms(percentile(&b, 0.95)),
        pa.as_secs_f64() / pb.as_secs_f64()
    ));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iters = env_usize("AGENTVM_BENCH_ITERS", 20);
    let snapshot_mb = env_usize("AGENTVM_BENCH_SNAPSHOT_MB", 100);
    let dir = tempfile::Builder::new().prefix("agentvm-bench-engine-").tempdir().unwrap();
    let http = reqwest::Client::new();

    // The engine, its pool and the S3 server (the scale-out tests' harness).
    let engine_process = Engine::start().await;
    let engine = engine_process.url.clone();
    let pool = "bench-pool";
    engine_process.create_pool(pool).await;
    let s3 = S3::start().await;
    let s3_env: Vec<(String, String)> = s3.env();
    let s3_env: Vec<(&str, String)> = s3_env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let store = s3.store("agentvm");
    let location = format!("s3://{}/agentvm", s3.bucket);

    // Two hosts (snapshots only when VMs stop) and one server alone.
    let host_args = ["--engine", &engine, "--pool", pool, "--snapshot-store", &location, "--snapshot-interval", "3600"];
    let mut hosts: Vec<Option<Server>> = vec![
        Some(start_server(dir.path(), "host-a", &host_args, &s3_env)),
        Some(start_server(dir.path(), "host-b", &host_args, &s3_env)),
    ];
    let direct = start_server(dir.path(), "direct", &[], &[]);
    for host in hosts.iter().flatten() {
        let url = format!("{}/health", host.url);
        wait_until("a host's engine link", || {
            let request = http.get(&url).send();
            async move {
                let health: Value = request.await.ok()?.json().await.ok()?;
                (health["engine"]["connected"] == true).then_some(())
            }
        })
        .await;
    }
    let through = Gateway { http: http.clone(), base: engine.clone(), pool: format!("&rvt-runner={pool}") };
    let alone = Gateway { http: http.clone(), base: direct.url.clone(), pool: String::new() };

    // Create + first exec, interleaved.
    let (mut cold_engine, mut cold_direct) = (Vec::new(), Vec::new());
    for i in 0..iters {
        for (gateway, samples) in [(&through, &mut cold_engine), (&alone, &mut cold_direct)] {
            let started = Instant::now();
            let (output, _) = gateway.exec(&format!("cold-{i}"), "echo hello").await;
            samples.push(started.elapsed());
            assert_eq!(output["stdout"], "hello\n");
        }
    }
    // Warm exec, by key and by id.
    let (mut warm_engine, mut warm_direct) = (Vec::new(), Vec::new());
    let (mut by_id_engine, mut by_id_direct) = (Vec::new(), Vec::new());
    let (_, warm_id_engine) = through.exec("warm", "true").await;
    let (_, warm_id_direct) = alone.exec("warm", "true").await;
    for _ in 0..iters * 5 {
        for (gateway, samples) in [(&through, &mut warm_engine), (&alone, &mut warm_direct)] {
            let started = Instant::now();
            gateway.exec("warm", "true").await;
            samples.push(started.elapsed());
        }
        for (gateway, id, samples) in
            [(&through, &warm_id_engine, &mut by_id_engine), (&alone, &warm_id_direct, &mut by_id_direct)]
        {
            let started = Instant::now();
            gateway.exec_by_id(id, "true").await;
            samples.push(started.elapsed());
        }
    }

    // Snapshot and restore of a VM with files: sleeps and wakes; the engine picks a host at
    // each wake, so some wakes find the VM's copy current on their host and some restore it.
    let command = format!("head -c {}M /dev/urandom > /home/user/big && sha256sum /home/user/big", snapshot_mb);
    let (hash, actor) = through.exec("big", &command).await;
    let logs = |hosts: &[Option<Server>]| hosts.iter().flatten().map(|h| h.log.clone()).collect::<Vec<_>>();
    let (mut stored, mut snapshot_figures, mut local, mut remote, mut restore_figures) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut snapshot_bytes = 0;
    let rounds = env_usize("AGENTVM_BENCH_SNAPSHOT_ROUNDS", 4);
    for round in 0..=rounds {
        let before = store.latest(&actor).await.unwrap().map_or(0, |m| m.sequence);
        let started = Instant::now();
        let response = http
            .post(format!("{engine}/actors/{actor}/sleep?namespace=default"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let manifest = wait_until("the snapshot", || {
            let (store, actor) = (store.clone(), actor.clone());
            async move { store.latest(&actor).await.ok().flatten().filter(|m| m.sequence > before) }
        })
        .await;
        stored.push(started.elapsed());
        snapshot_bytes = manifest.parts.iter().map(|p| p.bytes).sum::<u64>();
        if let Some(ms) = newest_ms(&logs(&hosts), "snapshot stored", &actor) {
            snapshot_figures.push(Duration::from_millis(ms));
        }
        wait_until("the VM asleep", || {
            let request = http.get(format!("{engine}/actors?namespace=default&actor_ids={actor}")).send();
            async move {
                let body: Value = request.await.ok()?.json().await.ok()?;
                body["actors"][0]["sleep_ts"].as_i64()
            }
        })
        .await;
        // The last round: the host that has the VM's copy leaves, so the wake restores it.
        if round == rounds && remote.is_empty() {
            let holder = hosts.iter().position(|h| h.as_ref().is_some_and(|h| started_here(&h.log, &actor)));
            if let Some(holder) = holder {
                drop(hosts[holder].take());
            }
        } else if round == rounds {
            break;
        }
        let restores = count(&logs(&hosts), "restored from a snapshot", &actor);
        let started = Instant::now();
        let (output, _) = through.exec("big", "sha256sum /home/user/big").await;
        let took = started.elapsed();
        assert_eq!(output["stdout"], hash["stdout"]);
        if count(&logs(&hosts), "restored from a snapshot", &actor) > restores {
            remote.push(took);
            if let Some(ms) = newest_ms(&logs(&hosts), "restored from a snapshot", &actor) {
                restore_figures.push(Duration::from_millis(ms));
            }
        } else {
            local.push(took);
        }
    }
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        if samples.is_empty() {
            "–".to_string()
        } else {
            format!("{} (n={})", ms(percentile(samples, 0.5)), samples.len())
        }
    };

    let mut out = String::new();
    out.push_str(&format!(
        "Engine benchmark ({iters} iterations; {} CPUs; load average {}):\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push_str(
        "| over HTTP | through the engine p50 / p95 | direct p50 / p95 | ratio of p50s |\n|---|---|---|---|\n",
    );
    row(&mut out, "create + first exec (new key)", &cold_engine, &cold_direct);
    row(&mut out, "warm exec (by key)", &warm_engine, &warm_direct);
    row(&mut out, "warm exec (by id)", &by_id_engine, &by_id_direct);
    out.push_str(&format!(
        "\nA VM with {snapshot_mb} MB of files ({:.1} MB archived), medians:\n\n| step | time |\n|---|---|\n",
        snapshot_bytes as f64 / 1e6
    ));
    out.push_str(&format!("| sleep request → snapshot in the store | {} |\n", median(&mut stored)));
    out.push_str(&format!(
        "| … the host's snapshot (capture, archive, upload) | {} |\n",
        median(&mut snapshot_figures)
    ));
    out.push_str(&format!("| wake + exec, the host's copy current | {} |\n", median(&mut local)));
    out.push_str(&format!("| wake + exec, restored from the store | {} |\n", median(&mut remote)));
    out.push_str(&format!(
        "| … the host's restore (download, unpack, register) | {} |\n",
        median(&mut restore_figures)
    ));
    print!("{out}");
    let _ = std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/bench-engine.md"), &out);
    drop(hosts);
    drop(direct.process);
}
