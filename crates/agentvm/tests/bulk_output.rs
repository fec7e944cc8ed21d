//! Bulk output end to end (issue 11, acceptance 5): 1 GiB written by one spawned process arrives
//! complete, in order and followed by its `processExit` with code 0, through the Rust client and
//! through the real rivetkit npm client (bare encoding), against a real `agentvm serve`.
//!
//! The process is `yes LINE | head -c 1073741824`: every byte is checked against LINE + "\n"
//! repeated as it arrives (never kept), and the total must be exact, so a lost, repeated or
//! reordered chunk fails the test at the first wrong byte. The rivetkit client also gets the
//! fastest writer, `head -c 1073741824 /dev/zero` (the total checked). A `streamError` event
//! (the server skipped events for a connection that fell behind) fails the test with its
//! payload. Each case takes the machine's cores for its whole run, so they run one at a time.
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use agentvm_client::{Client, Connection, Value};
use common::server::TestServer;

/// Bytes the process writes.
const TOTAL: u64 = 1 << 30;
/// The line `yes` repeats: 64 characters and a newline, a period of 65 bytes (odd, so a lost
/// chunk of any power-of-two size shifts the pattern).
const LINE: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";
/// A case that takes longer fails (it takes well under a minute when output flows).
const DEADLINE: Duration = Duration::from_secs(150);

/// Serialises the cases: each keeps both cores busy.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn command() -> String {
    format!("yes {LINE} | head -c {TOTAL}")
}

/// Checks a byte stream against LINE + "\n" repeated, chunk by chunk.
struct PatternCheck {
    /// The period repeated, long enough that a chunk of up to 1 MiB compares in one go.
    reference: Vec<u8>,
    period: usize,
    received: u64,
    chunks: u64,
}

impl PatternCheck {
    fn new() -> PatternCheck {
        let period = format!("{LINE}\n").into_bytes();
        let reference = period.iter().copied().cycle().take((1 << 20) + period.len()).collect();
        PatternCheck { reference, period: period.len(), received: 0, chunks: 0 }
    }

    /// The first wrong byte, as a message.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        self.chunks += 1;
        while !data.is_empty() {
            let phase = (self.received % self.period as u64) as usize;
            let n = data.len().min(self.reference.len() - phase);
            let expected = &self.reference[phase..phase + n];
            if &data[..n] != expected {
                let at = data.iter().zip(expected).position(|(a, b)| a != b).unwrap_or(0);
                return Err(format!(
                    "byte {} is {:?}, expected {:?} (chunk {}): bytes lost or out of order",
                    self.received + at as u64,
                    data[at] as char,
                    expected[at] as char,
                    self.chunks
                ));
            }
            self.received += n as u64;
            data = &data[n..];
        }
        Ok(())
    }
}

fn int(value: &Value, key: &str) -> Option<i64> {
    value.get(key).and_then(Value::as_i64)
}

#[test]
fn one_gib_reaches_the_rust_client_complete_and_in_order() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The client's socket task and this reader each get a thread.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(rust_client());
}

async fn rust_client() {
    let server = TestServer::start();
    let client = Client::new(&server.url);
    let vm = client.vm("bulk-rust");
    let mut conn = vm.connect().await.expect("connecting");
    for event in ["processOutput", "processExit", "streamError"] {
        conn.subscribe(event).await.expect("subscribing");
    }
    let started = Instant::now();
    let spawned = conn
        .action("spawn", vec![Value::from("sh"), Value::Array(vec![Value::from("-c"), Value::from(command())])])
        .await
        .expect("spawn over the connection");
    let pid = int(&spawned, "pid").expect("spawn returns {pid}");
    let (check, exit_code) = match tokio::time::timeout(DEADLINE, receive(&mut conn, pid)).await {
        Ok(result) => result,
        Err(_) => panic!("no processExit within {DEADLINE:?}"),
    };
    let elapsed = started.elapsed();
    eprintln!(
        "Rust client: {} bytes in {} chunks, {:.1} s, {:.0} MB/s",
        check.received,
        check.chunks,
        elapsed.as_secs_f64(),
        check.received as f64 / 1e6 / elapsed.as_secs_f64()
    );
    assert_eq!((check.received, exit_code), (TOTAL, 0), "bytes received before processExit, exit code");
    conn.close().await;
}

/// Reads events until the exit of `pid`; panics on anything that means lost output.
async fn receive(conn: &mut Connection, pid: i64) -> (PatternCheck, i64) {
    let mut check = PatternCheck::new();
    loop {
        let Some(event) = conn.next_event().await else {
            panic!("the connection closed after {} bytes", check.received)
        };
        match event.name.as_str() {
            "processOutput" => {
                assert_eq!(int(&event.payload, "pid"), Some(pid), "output of another process: {:?}", event.payload);
                assert_eq!(event.payload.get("stream").and_then(Value::as_str), Some("stdout"));
                let Some(Value::Bytes(data)) = event.payload.get("data") else {
                    panic!("processOutput without bytes: {:?}", event.payload)
                };
                if let Err(wrong) = check.feed(data) {
                    panic!("{wrong}");
                }
            }
            "processExit" if int(&event.payload, "pid") == Some(pid) => {
                return (check, int(&event.payload, "exitCode").expect("exitCode"));
            }
            "streamError" => {
                panic!("streamError after {} bytes: {:?}", check.received, event.payload)
            }
            // The socket dropped and was reopened: what was sent meanwhile is lost.
            other => panic!("unexpected event {other} after {} bytes: {:?}", check.received, event.payload),
        }
    }
}

#[test]
fn one_gib_reaches_the_rivetkit_client_complete_and_in_order() {
    rivetkit_client("line");
}

/// The fastest writer there is (`head -c 1073741824 /dev/zero`): only the total can be checked,
/// but it outruns the Node client the most, so it is the one that shows a reading client being
/// skipped (`streamError`) instead of throttling the process.
#[test]
fn one_gib_from_the_fastest_writer_reaches_the_rivetkit_client_complete() {
    rivetkit_client("zero");
}

/// Runs the `bulk` scenario of clients/node (PATTERN `line` or `zero`) with the rivetkit 2.3.19
/// client against a fresh server; it checks the bytes, the exit and the absence of `streamError`.
fn rivetkit_client(pattern: &str) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/node/v2.3.19");
    assert!(
        dir.join("node_modules/rivetkit").is_dir(),
        "the rivetkit client is not installed in {}: run `npm install --ignore-scripts` there (scripts/test does)",
        dir.display()
    );
    let server = TestServer::start();
    let output = Command::new("node")
        .arg(dir.join("run.mjs"))
        .current_dir(&dir)
        .env("ENDPOINT", &server.url)
        .env("ENCODING", "bare")
        .env("KEY", format!("bulk-node-{pattern}"))
        .env("SCENARIO", "bulk")
        .env("BYTES", TOTAL.to_string())
        .env("PATTERN", pattern)
        .env("TIMEOUT_MS", DEADLINE.as_millis().to_string())
        .env_remove("RIVET_ENDPOINT")
        .env_remove("RIVET_ENGINE")
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout.lines().find(|l| l.contains(r#""ok":"bulk""#));
    eprintln!("rivetkit client ({pattern}): {}", summary.unwrap_or("no summary"));
    assert!(
        output.status.success() && summary.is_some() && stdout.lines().any(|l| l.contains(r#""done":true"#)),
        "the rivetkit client run ({pattern}) failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
