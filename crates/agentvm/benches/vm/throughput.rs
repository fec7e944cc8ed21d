//! The throughput group (`cargo bench -p agentvm --bench vm -- throughput`): how fast bulk
//! output flows, in MB/s (10^6 bytes per second), every path measured in the same run:
//!
//! - the host pipe floor: `head -c N /dev/zero` into a pipe read on the host by Rust (64 KiB
//!   reads, as agentvm's output pump does) and by Node (`process.stdin`);
//! - `processOutput` events to the Rust client (`agentvm-client`, bare encoding): the same
//!   command spawned over a WebSocket in a VM of a real `agentvm serve`, timed from the spawn
//!   call to the `processExit` event;
//! - `processOutput` events to the real rivetkit Node client (2.3.19, bare), the same way
//!   (scenario `bulk` of clients/node, timed inside Node);
//! - `exec("head -c N /dev/zero")` as a stateless HTTP action (bare), output within the server's
//!   `--max-exec-output-bytes` (the bench server allows 512 MiB): once read as a raw HTTP body
//!   and only counted (what the server delivers), once through the Rust client, which decodes
//!   the result (what a Rust caller gets).
//!
//! A path that lost bytes (or sent `streamError`) is reported with the share that arrived.
//! `AGENTVM_BENCH_THROUGHPUT_BYTES` (default 256 MiB) is N; `AGENTVM_BENCH_THROUGHPUT_ITERS`
//! (default 3) runs per path, reported as median and best; `AGENTVM_BENCH_THROUGHPUT` (default
//! `pipe,rust,node,exec`) picks the paths, e.g. to profile one of them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use agentvm_client::{Client, Value};

use super::{env_usize, start_server};

/// Output `exec` may keep per stream on the bench server.
const EXEC_LIMIT: usize = 512 << 20;

/// One timed transfer.
struct Sample {
    /// Bytes that arrived.
    bytes: u64,
    seconds: f64,
    /// Why the transfer was incomplete, if it was.
    loss: Option<String>,
}

impl Sample {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
}

pub async fn run() {
    let bytes = env_usize("AGENTVM_BENCH_THROUGHPUT_BYTES", 256 << 20) as u64;
    let iterations = env_usize("AGENTVM_BENCH_THROUGHPUT_ITERS", 3).max(1);
    let paths = std::env::var("AGENTVM_BENCH_THROUGHPUT").unwrap_or_else(|_| "pipe,rust,node,exec".into());
    let wanted = |path: &str| paths.split(',').any(|p| p.trim() == path);

    let mut rows: Vec<(&str, Vec<Sample>)> = Vec::new();
    if wanted("pipe") {
        rows.push(("host pipe, read by Rust (floor)", (0..iterations).map(|_| host_pipe_rust(bytes)).collect()));
        rows.push(("host pipe, read by Node (floor)", (0..iterations).map(|_| host_pipe_node(bytes)).collect()));
    }
    let dir = tempfile::Builder::new().prefix("agentvm-bench-").tempdir().unwrap();
    let limit = EXEC_LIMIT.to_string();
    let (mut child, url) = start_server(&dir.path().join("data"), &["--max-exec-output-bytes", &limit]);
    println!("(throughput: server pid {})", child.id());
    let client = Client::new(&url);
    if wanted("rust") {
        let mut samples = Vec::new();
        for i in 0..iterations {
            samples.push(events_to_rust(&client, &format!("tput-rust-{i}"), bytes).await);
        }
        rows.push(("`processOutput` to the Rust client (WebSocket, bare)", samples));
    }
    if wanted("node") {
        let samples = (0..iterations).map(|i| events_to_node(&url, &format!("tput-node-{i}"), bytes)).collect();
        rows.push(("`processOutput` to the rivetkit 2.3.19 Node client (bare)", samples));
    }
    if wanted("exec") {
        let mut raw = Vec::new();
        let mut decoded = Vec::new();
        for i in 0..iterations {
            raw.push(exec_raw_http(&url, &format!("tput-exec-raw-{i}"), bytes).await);
            decoded.push(exec_over_http(&client, &format!("tput-exec-{i}"), bytes).await);
        }
        rows.push(("`exec` result, raw HTTP body (bare, counted, not decoded)", raw));
        rows.push(("`exec` result through the Rust client (bare, decoded)", decoded));
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();

    println!("## Throughput ({} MiB per transfer)\n", bytes >> 20);
    println!("| Path | MB/s (median) | MB/s (best) | n | complete |");
    println!("|---|---|---|---|---|");
    for (name, samples) in rows {
        let mut rates: Vec<f64> = samples.iter().map(Sample::mb_per_s).collect();
        rates.sort_by(f64::total_cmp);
        let losses: Vec<&str> = samples.iter().filter_map(|s| s.loss.as_deref()).collect();
        let complete = if losses.is_empty() {
            "yes".to_string()
        } else {
            format!("**no**, {} of {}: {}", losses.len(), samples.len(), losses.join("; "))
        };
        println!(
            "| {name} | {:.0} | {:.0} | {} | {complete} |",
            rates[rates.len() / 2],
            rates[rates.len() - 1],
            rates.len()
        );
    }
    println!();
}

/// `head -c N /dev/zero` into a pipe read here, 64 KiB at a time.
fn host_pipe_rust(bytes: u64) -> Sample {
    let started = Instant::now();
    let mut child = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/zero"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running head");
    let mut stdout = child.stdout.take().unwrap();
    let mut buffer = vec![0u8; 64 << 10];
    let mut received = 0u64;
    loop {
        match stdout.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading the pipe: {e}"),
        }
    }
    assert!(child.wait().unwrap().success());
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(received, bytes);
    Sample { bytes: received, seconds, loss: None }
}

/// `head -c N /dev/zero | node`: Node counts what `process.stdin` delivers, timed from the
/// start of its script (not its own start-up) to the end of input.
fn host_pipe_node(bytes: u64) -> Sample {
    const SCRIPT: &str = "const t0 = performance.now(); let n = 0; \
        process.stdin.on('data', (d) => { n += d.length; }); \
        process.stdin.on('end', () => console.log(JSON.stringify({ bytes: n, ms: performance.now() - t0 })));";
    let output = Command::new("sh")
        .args(["-c", &format!("head -c {bytes} /dev/zero | node -e \"$SCRIPT\"")])
        .env("SCRIPT", SCRIPT)
        .output()
        .expect("running head | node");
    assert!(output.status.success(), "head | node: {}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("node's summary");
    let received = summary["bytes"].as_u64().unwrap_or(0);
    assert_eq!(received, bytes);
    Sample { bytes: received, seconds: summary["ms"].as_f64().unwrap_or(f64::NAN) / 1000.0, loss: None }
}

/// `head -c N /dev/zero` spawned over a connection that subscribed to its events; bytes counted
/// from `processOutput` until `processExit`.
async fn events_to_rust(client: &Client, key: &str, bytes: u64) -> Sample {
    let vm = client.vm(key);
    let mut conn = vm.connect().await.expect("connecting");
    for event in ["processOutput", "processExit", "streamError"] {
        conn.subscribe(event).await.expect("subscribing");
    }
    // Boot the VM before the clock starts.
    conn.action("exec", vec![Value::from("true")]).await.expect("booting the VM");
    let command = format!("head -c {bytes} /dev/zero");
    let started = Instant::now();
    let args = vec![Value::from("sh"), Value::Array(vec![Value::from("-c"), Value::from(command)])];
    let spawned = conn.action("spawn", args).await.expect("spawn");
    let pid = spawned.get("pid").and_then(Value::as_i64).expect("spawn returns {pid}");
    let mut received = 0u64;
    let mut stream_errors = 0;
    loop {
        let event = conn.next_event().await.expect("the connection closed");
        let of_pid = event.payload.get("pid").and_then(Value::as_i64) == Some(pid);
        match event.name.as_str() {
            "processOutput" if of_pid => {
                if let Some(Value::Bytes(data)) = event.payload.get("data") {
                    received += data.len() as u64;
                }
            }
            "processExit" if of_pid => break,
            "streamError" => stream_errors += 1,
            _ => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    conn.close().await;
    Sample { bytes: received, seconds, loss: loss(received, bytes, stream_errors) }
}

/// The rivetkit client's `bulk` scenario with `PATTERN=zero ALLOW_LOSS=1`: it reports what
/// arrived rather than failing at the first lost byte.
fn events_to_node(url: &str, key: &str, bytes: u64) -> Sample {
    let dir = node_client_dir();
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("ENDPOINT", url)
        .env("ENCODING", "bare")
        .env("KEY", key)
        .env("SCENARIO", "bulk")
        .env("BYTES", bytes.to_string())
        .env("PATTERN", "zero")
        .env("ALLOW_LOSS", "1")
        .env("TIMEOUT_MS", "300000")
        .env_remove("RIVET_ENDPOINT")
        .env_remove("RIVET_ENGINE")
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["ok"] == "bulk")
        .unwrap_or_else(|| panic!("the Node client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    let received = summary["bytes"].as_u64().unwrap_or(0);
    let stream_errors = summary["streamErrors"].as_u64().unwrap_or(0);
    Sample {
        bytes: received,
        seconds: summary["ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        loss: loss(received, bytes, stream_errors),
    }
}

/// `exec("head -c N /dev/zero")` as one HTTP action on a booted VM.
async fn exec_over_http(client: &Client, key: &str, bytes: u64) -> Sample {
    let vm = client.vm(key);
    vm.action("exec", vec![Value::from("true")]).await.expect("booting the VM");
    let started = Instant::now();
    let output = vm.action("exec", vec![Value::from(format!("head -c {bytes} /dev/zero"))]).await.expect("exec");
    let seconds = started.elapsed().as_secs_f64();
    let stdout = output.get("stdout").and_then(Value::as_str).map_or(0, str::len) as u64;
    let truncated = output.get("truncated").and_then(Value::as_bool) == Some(true);
    let loss = match (loss(stdout, bytes, 0), truncated) {
        (None, false) => None,
        (other, _) => Some(other.unwrap_or_else(|| "truncated".into())),
    };
    Sample { bytes: stdout, seconds, loss }
}

/// `exec("head -c N /dev/zero")` as one HTTP request on a booted VM whose answer is only
/// counted as it arrives: the server's side of `exec`, without a client's decoding.
async fn exec_raw_http(url: &str, key: &str, bytes: u64) -> Sample {
    use agentvm_protocol::{encode_action_request, Encoding};
    let query = "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-crash-policy=sleep";
    let http = reqwest::Client::new();
    let exec = |command: String| {
        http.post(format!("{url}/gateway/vm/action/exec?{query}&rvt-key={key}"))
            .header("x-rivet-encoding", "bare")
            .body(encode_action_request(Encoding::Bare, 4, &[Value::from(command)]))
            .send()
    };
    exec("true".into()).await.expect("booting the VM").bytes().await.expect("booting the VM");
    let started = Instant::now();
    let mut response = exec(format!("head -c {bytes} /dev/zero")).await.expect("exec");
    assert!(response.status().is_success(), "exec answered {}", response.status());
    let mut body = 0u64;
    while let Some(chunk) = response.chunk().await.expect("reading the answer") {
        body += chunk.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    // The answer is the output plus a few bytes of framing (version, lengths, the other fields).
    let loss = (body < bytes || body > bytes + 256).then(|| format!("an answer of {body} bytes"));
    Sample { bytes, seconds, loss }
}

/// What went missing, if anything.
fn loss(received: u64, expected: u64, stream_errors: u64) -> Option<String> {
    (received != expected || stream_errors > 0)
        .then(|| format!("{:.1}% arrived, {stream_errors} streamError", received as f64 * 100.0 / expected as f64))
}

fn node_client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node/v2.3.19");
    assert!(
        dir.join("node_modules/rivetkit").is_dir(),
        "the rivetkit client is not installed in {}: run `npm install --ignore-scripts` there (scripts/test does)",
        dir.display()
    );
    dir
}
