//! VM benchmark: `cargo bench -p agentvm --bench vm` (release build).
//!
//! Measures, on the library path (no server in between):
//! - cold: create a VM + its first `exec("echo hello")` (p50, p95), each on a fresh VM id;
//! - warm: `exec("echo hello")` on a running VM (p50, p95);
//! - memory added per idle VM: `MemAvailable` before and after starting a batch of idle VMs,
//!   divided by their number, and the average private memory (PSS) of one VM's init.
//!
//! Then the same create + first exec and warm exec through a real `agentvm serve` process:
//! stateless HTTP actions (bare encoding, as the rivetkit client sends them by default) and a
//! WebSocket connection (connect + Init + action for cold; actions on one connection for warm).
//!
//! Then bulk output throughput in MB/s beside the host pipe floor (see `vm/throughput.rs`).
//!
//! Prints a Markdown report with the machine it ran on. The machine is shared and noisy:
//! compare figures from one run, not across runs. Iterations: `AGENTVM_BENCH_ITERS` (default
//! 100 cold, 5x that warm), idle batch `AGENTVM_BENCH_IDLE` (default 50).
//!
//! Groups: `core` (library path), `server` (through `agentvm serve`), `throughput`; name some
//! to run only those: `cargo bench -p agentvm --bench vm -- throughput`.

#[path = "common/server.rs"]
mod server;
#[path = "common/ws.rs"]
mod ws;
use server::start_server;
use std::time::{Duration, Instant};
use ws::ws_exec;

use agentvm_vm::{ExecOptions, HostConfig, Vm, VmHost, VmOptions};

#[path = "vm/throughput.rs"]
mod throughput;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn meminfo_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap()
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = meminfo_kib("MemTotal:") as f64 / (1024.0 * 1024.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}, load average {}", kernel.trim(), load.join(" "))
}

async fn echo(vm: &Vm) {
    let r = vm.exec("echo hello", ExecOptions::default()).await.unwrap();
    assert_eq!(r.stdout, "hello\n");
}

/// Whether the command line selects `group`: every group without arguments, else those named
/// (`cargo bench -p agentvm --bench vm -- throughput`; cargo adds `--bench`, which is skipped).
fn selected(group: &str) -> bool {
    let names: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    names.is_empty() || names.iter().any(|n| n == group)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let iterations = env_usize("AGENTVM_BENCH_ITERS", 100);
    println!("Machine: {}\n", machine());
    if selected("core") {
        core_figures(iterations).await;
    }
    if selected("server") {
        print_server_figures(server_figures(iterations).await);
    }
    if selected("throughput") {
        throughput::run().await;
    }
}

/// The library-path group: cold and warm `exec`, memory per idle VM.
async fn core_figures(iterations: usize) {
    let idle_count = env_usize("AGENTVM_BENCH_IDLE", 50);
    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let host = VmHost::new(HostConfig::new(dir.path().join("data"), env!("CARGO_BIN_EXE_agentvm"))).unwrap();

    // Warm-up: page in the binaries and the kernel paths.
    for i in 0..5 {
        let vm = host.create_vm(&format!("warmup-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
    }

    let mut cold = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        let vm = host.create_vm(&format!("cold-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
        cold.push(started.elapsed());
        drop(vm);
    }
    cold.sort();

    let vm = host.create_vm("warm", VmOptions::default()).await.unwrap();
    let mut warm = Vec::with_capacity(iterations * 5);
    for _ in 0..iterations * 5 {
        let started = Instant::now();
        echo(&vm).await;
        warm.push(started.elapsed());
    }
    warm.sort();
    drop(vm);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = meminfo_kib("MemAvailable:");
    let mut idle = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        let vm = host.create_vm(&format!("idle-{i}"), VmOptions::default()).await.unwrap();
        echo(&vm).await;
        idle.push(vm);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = meminfo_kib("MemAvailable:");
    let per_vm_kib = before.saturating_sub(after) as f64 / idle_count as f64;
    let pss_avg = idle.iter().map(|vm| pss_kib(vm.host_pid())).sum::<u64>() as f64 / idle_count as f64;
    drop(idle);

    println!("## VM core (library path)\n");
    println!("| Measure | p50 | p95 | n |");
    println!("|---|---|---|---|");
    println!(
        "| create VM + first `exec(\"echo hello\")` | {} | {} | {} |",
        ms(percentile(&cold, 0.5)),
        ms(percentile(&cold, 0.95)),
        cold.len()
    );
    println!(
        "| warm `exec(\"echo hello\")` | {} | {} | {} |",
        ms(percentile(&warm, 0.5)),
        ms(percentile(&warm, 0.95)),
        warm.len()
    );
    println!();
    println!("| Memory per idle VM ({idle_count} VMs) | KiB |");
    println!("|---|---|");
    println!("| host `MemAvailable` drop / VM | {per_vm_kib:.0} |");
    println!("| PSS of one VM's init (average) | {pss_avg:.0} |");
    println!();
}

fn print_server_figures(server: Vec<(&'static str, Vec<Duration>)>) {
    println!("## Through `agentvm serve` (loopback)\n");
    println!("| Measure | p50 | p95 | n |");
    println!("|---|---|---|---|");
    for (name, mut samples) in server {
        samples.sort();
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.95)),
            samples.len()
        );
    }
    println!();
}

/// Cold and warm `exec("echo hello")` through HTTP actions and through a WebSocket.
async fn server_figures(iterations: usize) -> Vec<(&'static str, Vec<Duration>)> {
    use agentvm_protocol::{decode_action_response, decode_to_client, encode_action_request};
    use agentvm_protocol::{Encoding, ToClient, Value};
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let (mut child, url) = start_server(&dir.path().join("data"), &[]);
    let http = reqwest::Client::new();
    let body = encode_action_request(Encoding::Bare, 4, &[Value::from("echo hello")]);
    let query = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep";
    let http_exec = |key: String| {
        let request = http
            .post(format!("{url}/gateway/vm/action/exec?{query}&rvt-key={key}"))
            .header("x-rivet-encoding", "bare")
            .body(body.clone());
        async move {
            let bytes = request.send().await.unwrap().bytes().await.unwrap();
            let (_, output) = decode_action_response(Encoding::Bare, &bytes).unwrap();
            assert_eq!(output.get("stdout").and_then(Value::as_str), Some("hello\n"));
        }
    };
    for i in 0..5 {
        http_exec(format!("warmup-{i}")).await;
    }
    let mut http_cold = Vec::new();
    for i in 0..iterations {
        let started = Instant::now();
        http_exec(format!("http-cold-{i}")).await;
        http_cold.push(started.elapsed());
    }
    let mut http_warm = Vec::new();
    for _ in 0..iterations * 5 {
        let started = Instant::now();
        http_exec("http-warm".into()).await;
        http_warm.push(started.elapsed());
    }

    let ws_base = url.replacen("http://", "ws://", 1);
    let connect = |key: String| {
        let mut request = format!("{ws_base}/gateway/vm/connect?{query}&rvt-key={key}").into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "rivet,rivet_encoding.bare".parse().unwrap());
        async move {
            let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            let init = socket.next().await.unwrap().unwrap().into_data();
            assert!(matches!(decode_to_client(Encoding::Bare, &init).unwrap().1, ToClient::Init { .. }));
            socket
        }
    };
    let mut ws_cold = Vec::new();
    for i in 0..iterations {
        let started = Instant::now();
        let mut socket = connect(format!("ws-cold-{i}")).await;
        ws_exec(&mut socket, 0).await;
        ws_cold.push(started.elapsed());
        let _ = socket.close(None).await;
    }
    let mut socket = connect("ws-warm".into()).await;
    let mut ws_warm = Vec::new();
    for id in 0..(iterations * 5) as u64 {
        let started = Instant::now();
        ws_exec(&mut socket, id).await;
        ws_warm.push(started.elapsed());
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    vec![
        ("HTTP action: create VM + first `exec`", http_cold),
        ("HTTP action: warm `exec`", http_warm),
        ("WebSocket: connect + create VM + first `exec`", ws_cold),
        ("WebSocket: warm `exec` on an open connection", ws_warm),
    ]
}
