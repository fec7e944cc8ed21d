//! Cron benchmark: `cargo bench -p agentvm --bench cron` (release build).
//!
//! One real `agentvm serve` on loopback with a manual cron clock (`--manual-clock`, moved with
//! `POST /debug/clock`) and a 1 s idle timeout. Measures:
//!
//! - **scheduleCron** latency (p50, p95) on a sleeping VM (its SQLite file opened for the call);
//! - **a due job** (`echo hi`) on an awake VM and on a sleeping one: from moving the clock to the
//!   run's end recorded (wall time, polled every millisecond), and the run's own `durationMs`
//!   (fire to end; on a sleeping VM the boot included);
//! - **a wake storm**: N sleeping VMs (`AGENTVM_BENCH_CRON_VMS`, default 200), one job each, all
//!   due at the same minute: the time until every run ended, and runs per second (the scheduler
//!   wakes 16 VMs at once).
//!
//! Waiting for a VM to sleep uses a connection subscribed to `vmShutdown`: polling with actions
//! would keep it awake. Iterations `AGENTVM_BENCH_ITERS` (default 20). The machine is shared and noisy: compare
//! figures of one run.

#[path = "common/figures.rs"]
mod figures;
#[path = "common/server.rs"]
mod server;
use figures::{env_usize, percentile};
use server::start_server;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// 2030-01-01T00:00:00Z.
const T0: u64 = 1_893_456_000_000;
const MINUTE: u64 = 60_000;

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, key: &str, name: &str, args: Value) -> Value {
        let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key={key}", self.base);
        let response = self.http.post(url).json(&json!({ "args": args })).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{name}: {status} {body}");
        body["output"].clone()
    }

    async fn set_clock(&self, now: u64) {
        let response =
            self.http.post(format!("{}/debug/clock", self.base)).json(&json!({"now": now})).send().await.unwrap();
        assert!(response.status().is_success());
    }

    /// Polls (every `every`) until `key`'s VM has `n` ended runs; the newest run.
    async fn wait_runs_every(&self, key: &str, n: usize, every: Duration) -> Value {
        loop {
            let runs = self.call(key, "listCronRuns", json!([])).await;
            let runs = runs.as_array().unwrap();
            if runs.iter().filter(|r| r["status"] != "running").count() >= n {
                return runs[0].clone();
            }
            tokio::time::sleep(every).await;
        }
    }

    /// [`Api::wait_runs_every`] polling every millisecond.
    async fn wait_runs(&self, key: &str, n: usize) -> Value {
        self.wait_runs_every(key, n, Duration::from_millis(1)).await
    }
}

/// A connection subscribed to `vmShutdown` of one VM (connections do not keep a VM awake;
/// polling actions would).
struct Watch {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
}

impl Watch {
    async fn open(base: &str, key: &str) -> Watch {
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/gateway/vm/connect?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key={key}&rvt-crash-policy=sleep",
            base.replacen("http://", "ws://", 1)
        );
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "rivet,rivet_encoding.json".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket handshake");
        let subscribe =
            json!({"body": {"tag": "SubscriptionRequest", "val": {"eventName": "vmShutdown", "subscribe": true}}});
        socket.send(tokio_tungstenite::tungstenite::Message::Text(subscribe.to_string().into())).await.unwrap();
        Watch { socket }
    }

    /// Waits for the VM's next `vmShutdown`.
    async fn asleep(&mut self) {
        use futures_util::StreamExt;
        while let Some(Ok(message)) = self.socket.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap();
                if frame["body"]["tag"] == "Event" && frame["body"]["val"]["name"] == "vmShutdown" {
                    return;
                }
            }
        }
        panic!("the connection ended");
    }
}

fn summary(what: &str, mut wall: Vec<Duration>, mut own: Vec<Duration>) {
    wall.sort();
    own.sort();
    println!(
        "{what:<34} clock moved -> run recorded p50 {} p95 {}   run durationMs p50 {} p95 {}",
        ms(percentile(&wall, 0.5)),
        ms(percentile(&wall, 0.95)),
        ms(percentile(&own, 0.5)),
        ms(percentile(&own, 0.95)),
    );
}

fn main() {
    let iters = env_usize("AGENTVM_BENCH_ITERS", 20);
    let vms = env_usize("AGENTVM_BENCH_CRON_VMS", 200);
    let data = tempfile::tempdir().unwrap();
    let start = T0.to_string();
    let extra = ["--manual-clock", start.as_str(), "--idle-timeout", "1", "--max-creates-per-second", "0"];
    let (child, base) = start_server(&data.path().join("data"), &extra);
    // Stopped (SIGTERM, then waited for) however the bench ends, a panic included.
    let _server = StopOnDrop(child);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let api = Api { http: reqwest::Client::new(), base };
        let job =
            |id: &str| json!([{"id": id, "schedule": "* * * * *", "action": {"type": "exec", "command": "echo hi"}}]);

        // scheduleCron on a sleeping (never booted) VM.
        let mut schedule = Vec::new();
        for i in 0..iters.max(20) {
            let started = Instant::now();
            api.call("schedule", "scheduleCron", job(&format!("j{i}"))).await;
            schedule.push(started.elapsed());
        }
        schedule.sort();
        println!(
            "scheduleCron (VM asleep)           p50 {} p95 {}",
            ms(percentile(&schedule, 0.5)),
            ms(percentile(&schedule, 0.95))
        );
        for i in 0..iters.max(20) {
            api.call("schedule", "cancelCronJob", json!([format!("j{i}")])).await;
        }

        // A due job on an awake VM (an open shell keeps it awake), then on a sleeping one.
        let mut now = T0;
        api.call("awake", "scheduleCron", job("a")).await;
        api.call("awake", "openShell", json!([])).await;
        let (mut wall, mut own) = (Vec::new(), Vec::new());
        for n in 1..=iters {
            now += MINUTE;
            let started = Instant::now();
            api.set_clock(now).await;
            let run = api.wait_runs("awake", n).await;
            wall.push(started.elapsed());
            own.push(Duration::from_millis(run["durationMs"].as_u64().unwrap()));
        }
        summary("due job, VM awake", wall, own);
        api.call("awake", "cancelCronJob", json!(["a"])).await;

        api.call("asleep", "scheduleCron", job("s")).await;
        let mut watch = Watch::open(&api.base, "asleep").await;
        let (mut wall, mut own) = (Vec::new(), Vec::new());
        for n in 1..=iters {
            if n > 1 {
                watch.asleep().await;
            }
            now += MINUTE;
            let started = Instant::now();
            api.set_clock(now).await;
            let run = api.wait_runs("asleep", n).await;
            wall.push(started.elapsed());
            own.push(Duration::from_millis(run["durationMs"].as_u64().unwrap_or_else(|| panic!("{run}"))));
        }
        summary("due job, VM asleep (woken)", wall, own);
        api.call("asleep", "cancelCronJob", json!(["s"])).await;

        // The wake storm: every VM's job due at the same minute; against the same number of
        // fresh sleeping VMs woken by a client's `exec("echo hi")`, 16 at a time.
        for v in 0..vms {
            api.call(&format!("storm-{v}"), "scheduleCron", job("storm")).await;
            api.call(&format!("direct-{v}"), "listCronJobs", json!([])).await;
        }
        now = (now / MINUTE + 1) * MINUTE;
        let started = Instant::now();
        api.set_clock(now).await;
        for v in 0..vms {
            api.wait_runs_every(&format!("storm-{v}"), 1, Duration::from_millis(20)).await;
        }
        let storm = started.elapsed();
        let started = Instant::now();
        let api = std::sync::Arc::new(api);
        let mut clients = tokio::task::JoinSet::new();
        for lane in 0..16 {
            let api = std::sync::Arc::clone(&api);
            clients.spawn(async move {
                for v in (lane..vms).step_by(16) {
                    api.call(&format!("direct-{v}"), "exec", json!(["echo hi"])).await;
                }
            });
        }
        while clients.join_next().await.is_some() {}
        let direct = started.elapsed();
        println!(
            "wake storm: {vms} sleeping VMs due at once   cron {:.2} s ({:.0} runs/s)   direct exec, 16 at a time {:.2} s ({:.0}/s)   ratio {:.2}",
            storm.as_secs_f64(),
            vms as f64 / storm.as_secs_f64(),
            direct.as_secs_f64(),
            vms as f64 / direct.as_secs_f64(),
            storm.as_secs_f64() / direct.as_secs_f64(),
        );
    });
}

struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}
