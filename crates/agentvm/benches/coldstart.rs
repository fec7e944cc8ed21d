//! Cold start and density: `cargo bench -p agentvm --bench coldstart` (release build).
//!
//! The reference product's own workloads, with its statistics, through a real `agentvm serve`:
//! - **cold**: create a VM + its first `exec("echo hello")` through the HTTP API, after an idle
//!   gap (`AGENTVM_BENCH_GAP_MS`, default 300 ms: long enough for the kernel's RCU-synchronised
//!   paths to go quiet) and back to back; n = `AGENTVM_BENCH_ITERS` (default 100); p50/p95/p99;
//! - **warm pool**: the same create + first exec answered from a preset's `warm_pool` (8);
//! - **warm**: `exec("echo hello")` on an awake VM over HTTP and over one WebSocket connection;
//! - **memory staircase**: proportional memory (PSS) of the whole process tree (server, LXCFS,
//!   every VM's processes) and the server's own PSS and descriptors at 0, 1, 10, 50, 100 idle VMs
//!   (2.5 s after their last exec);
//! - **density** (`density` group): VMs created four at a time, with and without an open shell
//!   each, up to `AGENTVM_BENCH_DENSITY` (default 1000; 10000 for the full run) or the first
//!   refusal, recording at each step the creation rate, memory per VM and warm exec latency on
//!   the first VM; then how long the server takes to shut all of them down.
//!
//! `AGENTVM_BENCH_BASELINE=/path/to/agentvm` runs every measure with that binary too (a build
//! of an earlier commit) and prints both side by side: the machine is shared and noisy, so
//! compare within one run. The report goes to stdout and `target/bench-coldstart.md`.
//!
//! Groups: `latency`, `memory`, `density`; name some to run only those
//! (`cargo bench -p agentvm --bench coldstart -- latency`).

#[path = "common/figures.rs"]
mod figures;
#[path = "common/server.rs"]
mod server;
#[path = "common/ws.rs"]
mod ws;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentvm_protocol::{decode_action_response, decode_to_client, encode_action_request};
use agentvm_protocol::{Encoding, ToClient, Value};
use figures::{env_usize, percentile};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use ws::{ws_exec as ws_echo, Socket};

const QUERY: &str = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep";
/// Server options: no idle sleep, no creation limits (the benchmark is the only client).
const SERVE_OPTIONS: &[&str] =
    &["--idle-timeout", "100000", "--max-vms", "1000000", "--max-creates-per-second", "0", "--create-burst", "100000"];

/// How long after their last exec VMs count as idle (the server closes an awake VM's event
/// log after 2 s without events).
const IDLE_SETTLE: Duration = Duration::from_millis(2500);

/// One measured binary: its label and path.
struct Subject {
    label: String,
    binary: PathBuf,
}

/// Rows of one table: measure → one cell per subject.
#[derive(Default)]
struct Table {
    rows: Vec<(String, Vec<String>)>,
}

impl Table {
    fn set(&mut self, subject: usize, row: &str, value: String) {
        let index = match self.rows.iter().position(|(name, _)| name == row) {
            Some(i) => i,
            None => {
                self.rows.push((row.to_string(), Vec::new()));
                self.rows.len() - 1
            }
        };
        let cells = &mut self.rows[index].1;
        cells.resize(cells.len().max(subject + 1), "–".into());
        cells[subject] = value;
    }

    fn render(&self, title: &str, subjects: &[Subject]) -> String {
        let mut out = format!("## {title}\n\n| Measure |");
        for s in subjects {
            let _ = write!(out, " {} |", s.label);
        }
        out.push_str("\n|---|");
        out.push_str(&"---|".repeat(subjects.len()));
        out.push('\n');
        for (name, cells) in &self.rows {
            let _ = write!(out, "| {name} |");
            for i in 0..subjects.len() {
                let _ = write!(out, " {} |", cells.get(i).map_or("–", String::as_str));
            }
            out.push('\n');
        }
        out.push('\n');
        out
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// "p50 / p95 / p99" in milliseconds.
fn quantiles(samples: &mut [Duration]) -> String {
    samples.sort();
    format!("{} / {} / {}", ms(percentile(samples, 0.5)), ms(percentile(samples, 0.95)), ms(percentile(samples, 0.99)))
}

/// A running `agentvm serve` and an HTTP client for it.
struct Server {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(binary: &Path) -> Server {
        Server::start_with(binary, &[])
    }

    fn start_with(binary: &Path, extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
        let options: Vec<&str> = SERVE_OPTIONS.iter().chain(extra).copied().collect();
        let (child, url) = server::start_server_binary(binary, &dir.path().join("data"), &options);
        Server { child, url, http: reqwest::Client::new(), _dir: dir }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// One action over HTTP (bare encoding, as the rivetkit client sends it by default).
    async fn action(&self, key: &str, name: &str, args: &[Value]) -> Result<Value, String> {
        let body = encode_action_request(Encoding::Bare, 4, args);
        let response = self
            .http
            .post(format!("{}/gateway/vm/action/{name}?{QUERY}&rvt-key={key}", self.url))
            .header("x-rivet-encoding", "bare")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        decode_action_response(Encoding::Bare, &bytes).map(|(_, v)| v).map_err(|e| format!("{e:?}"))
    }

    async fn echo(&self, key: &str) -> Result<(), String> {
        let output = self.action(key, "exec", &[Value::from("echo hello")]).await?;
        match output.get("stdout").and_then(Value::as_str) {
            Some("hello\n") => Ok(()),
            _ => Err(format!("unexpected exec output {output:?}")),
        }
    }

    /// A WebSocket connection to the VM `key` (bare encoding), after its Init message.
    async fn connect(&self, key: &str) -> Socket {
        let ws = self.url.replacen("http://", "ws://", 1);
        let mut request = format!("{ws}/gateway/vm/connect?{QUERY}&rvt-key={key}").into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "rivet,rivet_encoding.bare".parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let init = socket.next().await.unwrap().unwrap().into_data();
        assert!(matches!(decode_to_client(Encoding::Bare, &init).unwrap().1, ToClient::Init { .. }));
        socket
    }

    /// SIGTERM, then the time until the process has exited.
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        started.elapsed()
    }
}

/// Memory and descriptors of a server and its process tree.
struct Footprint {
    tree_pss_kib: u64,
    server_pss_kib: u64,
    server_fds: usize,
    processes: usize,
}

fn smaps_pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Pss:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .unwrap_or(0)
}

/// Every process below `root` (the server), itself included.
fn process_tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The fields after the command name (which may hold spaces) start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        tree.extend(children.get(&tree[i]).into_iter().flatten());
        i += 1;
    }
    tree
}

fn footprint(server: &Server) -> Footprint {
    let tree = process_tree(server.pid());
    Footprint {
        tree_pss_kib: tree.iter().map(|&p| smaps_pss_kib(p)).sum(),
        server_pss_kib: smaps_pss_kib(server.pid()),
        server_fds: std::fs::read_dir(format!("/proc/{}/fd", server.pid())).map(|d| d.count()).unwrap_or(0),
        processes: tree.len(),
    }
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1).map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or(0);
    let load = read("/proc/loadavg");
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cores} cores, {:.0} GiB, Linux {}, load average {}",
        mem_kib as f64 / 1048576.0,
        read("/proc/sys/kernel/osrelease").trim(),
        load.join(" ")
    )
}

/// Create + first exec of `count` new keys, each after `gap`.
async fn creates_after_gaps(server: &Server, prefix: &str, count: usize, gap: Duration) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        tokio::time::sleep(gap).await;
        let started = Instant::now();
        server.echo(&format!("{prefix}-{i}")).await.unwrap();
        samples.push(started.elapsed());
    }
    samples
}

/// Cold create + first exec (after a gap and back to back) and warm exec.
async fn latency(server: &Server, table: &mut Table, subject: usize) {
    let iterations = env_usize("AGENTVM_BENCH_ITERS", 100);
    let gap = Duration::from_millis(env_usize("AGENTVM_BENCH_GAP_MS", 300) as u64);
    for i in 0..5 {
        server.echo(&format!("warmup-{i}")).await.unwrap();
    }
    let mut after_gap = creates_after_gaps(server, "gap", iterations, gap).await;
    let mut back_to_back = Vec::new();
    for i in 0..iterations {
        let started = Instant::now();
        server.echo(&format!("b2b-{i}")).await.unwrap();
        back_to_back.push(started.elapsed());
    }
    let mut http_warm = Vec::new();
    for _ in 0..iterations * 5 {
        let started = Instant::now();
        server.echo("warm").await.unwrap();
        http_warm.push(started.elapsed());
    }
    let mut socket = server.connect("warm").await;
    let mut ws_warm = Vec::new();
    for id in 0..(iterations * 5) as u64 {
        let started = Instant::now();
        ws_echo(&mut socket, id).await;
        ws_warm.push(started.elapsed());
    }
    let _ = socket.close(None).await;
    let gap_ms = gap.as_millis();
    table.set(
        subject,
        &format!("create + first exec, after a {gap_ms} ms gap (n={iterations})"),
        quantiles(&mut after_gap),
    );
    table.set(subject, &format!("create + first exec, back to back (n={iterations})"), quantiles(&mut back_to_back));
    table.set(subject, &format!("warm exec over HTTP (n={})", iterations * 5), quantiles(&mut http_warm));
    table.set(subject, &format!("warm exec over a connection (n={})", iterations * 5), quantiles(&mut ws_warm));
}

/// Create + first exec of new keys answered from a warm pool of 8 (`warm_pool` in the preset),
/// after the same gap as the cold measure (the pool refills meanwhile).
async fn warm_pool(binary: &Path, table: &mut Table, subject: usize) {
    let iterations = env_usize("AGENTVM_BENCH_ITERS", 100);
    let gap = Duration::from_millis(env_usize("AGENTVM_BENCH_GAP_MS", 300) as u64);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), "[actors.vm]\nwarm_pool = 8\n").unwrap();
    let server = Server::start_with(binary, &["--config", config.path().to_str().unwrap()]);
    // Until the pool is full: as many VMs as it holds, plus the launcher and LXCFS.
    while process_tree(server.pid()).len() < 1 + 2 + 8 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut samples = creates_after_gaps(&server, "pooled", iterations, gap).await;
    let gap_ms = gap.as_millis();
    table.set(
        subject,
        &format!("create + first exec from a warm pool, after a {gap_ms} ms gap (n={iterations})"),
        quantiles(&mut samples),
    );
    server.stop();
}

/// The memory staircase: the whole tree's PSS at 0, 1, 10, 50, 100 idle VMs.
async fn memory(server: &Server, table: &mut Table, subject: usize) {
    let settle = || tokio::time::sleep(IDLE_SETTLE);
    settle().await;
    let empty = footprint(server);
    table.set(subject, "0 VMs: tree PSS, server PSS, server fds", describe(&empty, None));
    let mut made = 0;
    for step in [1usize, 10, 50, 100] {
        while made < step {
            server.echo(&format!("idle-{made}")).await.unwrap();
            made += 1;
        }
        settle().await;
        let now = footprint(server);
        table.set(subject, &format!("{step} VMs: tree PSS, server PSS, server fds"), describe(&now, None));
        if step == 100 {
            table.set(
                subject,
                "per idle VM (100 VMs): tree PSS, server PSS, server fds",
                describe(&now, Some((&empty, step))),
            );
        }
    }
}

/// A footprint, or its growth per VM from `base` over `count` VMs.
fn describe(now: &Footprint, base: Option<(&Footprint, usize)>) -> String {
    match base {
        None => format!(
            "{:.1} MiB, {:.1} MiB, {} ({} processes)",
            now.tree_pss_kib as f64 / 1024.0,
            now.server_pss_kib as f64 / 1024.0,
            now.server_fds,
            now.processes
        ),
        Some((base, count)) => {
            let per = |a: u64, b: u64| (a as f64 - b as f64) / count as f64;
            format!(
                "{:.0} KiB, {:.1} KiB, {:.1}",
                per(now.tree_pss_kib, base.tree_pss_kib),
                per(now.server_pss_kib, base.server_pss_kib),
                per(now.server_fds as u64, base.server_fds as u64)
            )
        }
    }
}

/// VMs until `AGENTVM_BENCH_DENSITY` (or the first refusal), four created at a time; at each
/// step the creation rate, memory and warm exec latency; then the shutdown time.
async fn density(binary: &Path, with_shell: bool, table: &mut Table, subject: usize) {
    let limit = env_usize("AGENTVM_BENCH_DENSITY", 1000);
    let server = Arc::new(Server::start(binary));
    let kind = if with_shell { "with a shell" } else { "idle" };
    let base = footprint(&server);
    server.echo("density-probe").await.unwrap();
    let mut probe = server.connect("density-probe").await;
    let mut single = Vec::new();
    for id in 0..200 {
        let started = Instant::now();
        ws_echo(&mut probe, id).await;
        single.push(started.elapsed());
    }
    table.set(subject, &format!("{kind}: warm exec on 1 VM, p50 ms"), quantiles(&mut single));
    let mut next_id = 1000u64;
    let mut made = 1usize;
    let mut failure: Option<String> = None;
    for step in [100usize, 250, 500, 1000, 2000, 3000, 5000, 7500, 10000].into_iter().filter(|s| *s <= limit) {
        let started = Instant::now();
        let count = step - made;
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(made));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (server, next) = (Arc::clone(&server), Arc::clone(&next));
            workers.push(tokio::spawn(async move {
                let mut cold = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= step {
                        return Ok(cold);
                    }
                    let key = format!("density-{i}");
                    let t = Instant::now();
                    server.echo(&key).await?;
                    cold.push(t.elapsed());
                    if with_shell {
                        server.action(&key, "openShell", &[]).await?;
                    }
                }
            }));
        }
        let mut cold = Vec::new();
        for worker in workers {
            match worker.await.unwrap() {
                Ok(samples) => cold.extend(samples),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = &failure {
            table.set(subject, &format!("{kind}: stopped"), format!("before {step} VMs: {e}"));
            break;
        }
        made = step;
        let rate = count as f64 / started.elapsed().as_secs_f64();
        tokio::time::sleep(IDLE_SETTLE).await;
        let now = footprint(&server);
        let mut warm = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            ws_echo(&mut probe, next_id).await;
            next_id += 1;
            warm.push(t.elapsed());
        }
        table.set(
            subject,
            &format!("{kind}, {step} VMs: VMs/s, create p50 ms, warm exec p50/p95/p99 ms, per VM: tree PSS, server PSS, server fds"),
            format!(
                "{rate:.0}, {}, {}, {}",
                ms(percentile(&{
                    cold.sort();
                    cold
                }, 0.5)),
                quantiles(&mut warm),
                describe(&now, Some((&base, step)))
            ),
        );
    }
    let _ = probe.close(None).await;
    let server = Arc::try_unwrap(server).ok().expect("the workers are done");
    let shutdown = server.stop();
    table.set(subject, &format!("{kind}: shutdown of {made} VMs, s"), format!("{:.2}", shutdown.as_secs_f64()));
}

fn selected(group: &str) -> bool {
    let names: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    names.is_empty() || names.iter().any(|n| n == group)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut subjects = Vec::new();
    if let Ok(baseline) = std::env::var("AGENTVM_BENCH_BASELINE") {
        subjects.push(Subject { label: format!("baseline `{baseline}`"), binary: baseline.into() });
    }
    subjects.push(Subject { label: "this build".into(), binary: env!("CARGO_BIN_EXE_agentvm").into() });
    let mut report = format!("Machine: {}\n\n", machine());
    println!("{report}");
    let mut tables = Vec::new();
    if selected("latency") || selected("memory") {
        let mut latency_table = Table::default();
        let mut memory_table = Table::default();
        for (i, subject) in subjects.iter().enumerate() {
            if selected("memory") {
                let server = Server::start(&subject.binary);
                memory(&server, &mut memory_table, i).await;
                server.stop();
            }
            if selected("latency") {
                let server = Server::start(&subject.binary);
                latency(&server, &mut latency_table, i).await;
                server.stop();
                // Earlier builds have no warm pool.
                if i + 1 == subjects.len() {
                    warm_pool(&subject.binary, &mut latency_table, i).await;
                }
            }
        }
        tables.push(latency_table.render("Latency through `agentvm serve` (ms: p50 / p95 / p99)", &subjects));
        tables.push(memory_table.render("Memory staircase (idle VMs)", &subjects));
    }
    if selected("density") {
        let mut table = Table::default();
        for with_shell in [false, true] {
            for (i, subject) in subjects.iter().enumerate() {
                density(&subject.binary, with_shell, &mut table, i).await;
            }
        }
        tables.push(table.render("Density", &subjects));
    }
    for t in &tables {
        println!("{t}");
        report.push_str(t);
    }
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-coldstart.md");
    if std::fs::write(&out, &report).is_ok() {
        println!("(written to {})", out.display());
    }
}
