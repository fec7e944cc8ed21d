//! Preview proxy benchmark: `cargo bench -p agentvm --bench preview` (release build).
//!
//! One real `agentvm serve` on loopback, one VM running `python3 -m http.server` over a
//! directory with a large file (256 MiB of zeros by default) and a small one, and the same
//! `python3 -m http.server` on the host over the same files. Measures:
//!
//! - **throughput** (MB/s, best of a few runs) of downloading the large file: straight from the
//!   host server (the floor: what the client and Python manage without any proxy), through the
//!   preview URL (`/request/fetch/<token>/big`), and through the gateway form; and `vmFetch` of
//!   a 16 MiB file (its 32 MiB cap), over the JSON action API (so base64 included);
//! - **latency** of a small `GET` (12 bytes), one after another (p50, p95): straight from the
//!   host server vs through the preview URL. Python's server closes the connection after each
//!   answer, so both sides pay one TCP connection per request; the difference is what the
//!   preview adds (token check, the connection made by the VM's init, the proxying).
//!
//! Sizes: `AGENTVM_BENCH_PREVIEW_MB` (default 256), requests `AGENTVM_BENCH_ITERS` (default
//! 300). The machine is shared and noisy: compare figures of one run.

#[path = "common/figures.rs"]
mod figures;
#[path = "common/server.rs"]
mod server;
use figures::{env_usize, percentile};
use server::start_server;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, name: &str, args: Value) -> Value {
        let url = format!("{}/gateway/vm/action/{name}?rvt-method=getOrCreate&rvt-key=bench", self.base);
        let response = self.http.post(url).json(&json!({ "args": args })).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{name}: {status} {body}");
        body["output"].clone()
    }
}

/// Downloads `url` `runs` times; the best rate in MB/s (and the bytes of one download).
async fn download_rate(http: &reqwest::Client, url: &str, runs: usize) -> (f64, usize) {
    let mut best = 0.0f64;
    let mut size = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let mut response = http.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{url}: {}", response.status());
        let mut bytes = 0;
        while let Some(chunk) = response.chunk().await.unwrap() {
            bytes += chunk.len();
        }
        size = bytes;
        best = best.max(bytes as f64 / 1e6 / start.elapsed().as_secs_f64());
    }
    (best, size)
}

/// `n` small GETs one after another; their sorted durations.
async fn latencies(http: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = http.get(url).send().await.unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        all.push(start.elapsed());
    }
    all.sort();
    all
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let megabytes = env_usize("AGENTVM_BENCH_PREVIEW_MB", 256);
    let iterations = env_usize("AGENTVM_BENCH_ITERS", 300);
    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let (mut server, base) = start_server(&dir.path().join("data"), &[]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let api = Api { http: http.clone(), base: base.clone() };

    // The files, in the VM and on the host.
    let make = format!(
        "mkdir -p /home/user/site && cd /home/user/site && head -c {}M /dev/zero > big && head -c 16M /dev/zero > mid && echo small reply > small",
        megabytes
    );
    api.call("exec", json!([make])).await;
    let host_site = dir.path().join("site");
    std::fs::create_dir(&host_site).unwrap();
    std::fs::write(host_site.join("big"), vec![0u8; megabytes << 20]).unwrap();
    std::fs::write(host_site.join("small"), "small reply\n").unwrap();

    // The servers.
    let serve = ["-m", "http.server", "8000", "--bind", "127.0.0.1", "--directory", "/home/user/site"];
    api.call("spawn", json!(["python3", serve])).await;
    let host_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut host_server = std::process::Command::new("python3")
        .args(["-m", "http.server", &host_port.to_string(), "--bind", "127.0.0.1", "--directory"])
        .arg(&host_site)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("{base}/gateway/vm/action/vmFetch?rvt-method=getOrCreate&rvt-key=bench");
        let answer = http.post(url).json(&json!({"args": [8000, "/small"]})).send().await.unwrap();
        let host_up = http.get(format!("http://127.0.0.1:{host_port}/small")).send().await.is_ok();
        if answer.status().is_success() && host_up {
            break;
        }
        assert!(Instant::now() < deadline, "the servers did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = api.call("createSignedPreviewUrl", json!([8000])).await;
    let preview = format!("{base}{}", created["path"].as_str().unwrap());
    let token = created["token"].as_str().unwrap().to_string();
    let actor: Value = http.get(format!("{base}/actors?name=vm&key=bench")).send().await.unwrap().json().await.unwrap();
    let gateway = format!("{base}/gateway/{}/request/fetch/{token}", actor["actors"][0]["actor_id"].as_str().unwrap());
    let direct = format!("http://127.0.0.1:{host_port}");

    println!("## Preview proxy ({megabytes} MiB download, best of 3; {iterations} small GETs)\n");
    println!("| Path | MB/s |\n|---|---|");
    let (rate, size) = download_rate(&http, &format!("{direct}/big"), 3).await;
    assert_eq!(size, megabytes << 20);
    println!("| host python http.server, direct (no proxy) | {rate:.0} |");
    let (rate, size) = download_rate(&http, &format!("{preview}/big"), 3).await;
    assert_eq!(size, megabytes << 20);
    println!("| VM python http.server via `/request/fetch/<token>/` | {rate:.0} |");
    let (rate, _) = download_rate(&http, &format!("{gateway}/big"), 3).await;
    println!("| VM python http.server via `/gateway/<id>/request/fetch/<token>/` | {rate:.0} |");
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let out = api.call("vmFetch", json!([8000, "/mid"])).await;
        assert_eq!(out["status"], 200);
        best = best.max(16.0 * 1.048576 / start.elapsed().as_secs_f64());
    }
    println!("| `vmFetch` of 16 MiB (JSON action, base64) | {best:.0} |\n");

    let direct_small = latencies(&http, &format!("{direct}/small"), iterations).await;
    let preview_small = latencies(&http, &format!("{preview}/small"), iterations).await;
    println!("| Small GET | p50 | p95 |\n|---|---|---|");
    println!(
        "| host python http.server, direct | {} | {} |",
        ms(percentile(&direct_small, 0.5)),
        ms(percentile(&direct_small, 0.95))
    );
    println!(
        "| via the preview URL | {} | {} |",
        ms(percentile(&preview_small, 0.5)),
        ms(percentile(&preview_small, 0.95))
    );
    let added = percentile(&preview_small, 0.5).saturating_sub(percentile(&direct_small, 0.5));
    println!("\nAdded by the preview proxy (p50): {}", ms(added));

    let _ = host_server.kill();
    let _ = host_server.wait();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = server.wait();
}
