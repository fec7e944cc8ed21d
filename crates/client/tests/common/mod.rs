//! Helpers for the integration tests: each test starts its own real `agentvm serve`.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use std::time::Duration;

use agentvm_client::testing::TestServer;
use agentvm_client::{Client, Connection, Event, Value};

/// A server of its own for one test (`AGENTVM_URL` is left alone: tests run in parallel).
pub fn server() -> TestServer {
    TestServer::start()
}

pub fn client(server: &TestServer) -> Client {
    Client::new(server.url())
}

pub fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The next event, failing the test after `secs` seconds.
pub async fn next_event(conn: &mut Connection, secs: u64) -> Event {
    match tokio::time::timeout(Duration::from_secs(secs), conn.next_event()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the connection closed"),
        Err(_) => panic!("no event within {secs}s"),
    }
}

/// The next event named `name` (others are skipped).
pub async fn wait_event(conn: &mut Connection, name: &str, secs: u64) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, conn.next_event()).await {
            Ok(Some(event)) if event.name == name => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the connection closed while waiting for {name}"),
            Err(_) => panic!("no {name} event within {secs}s"),
        }
    }
}

pub fn int(payload: &Value, field: &str) -> Option<i64> {
    payload.get(field).and_then(Value::as_i64)
}

/// Collects the output of `pid` until its `processExit`: (stdout, stderr, exit code).
pub async fn collect_until_exit(conn: &mut Connection, pid: i32, secs: u64) -> (Vec<u8>, Vec<u8>, i64) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let event = match tokio::time::timeout(left, conn.next_event()).await {
            Ok(Some(event)) => event,
            Ok(None) => panic!("the connection closed before process {pid} exited"),
            Err(_) => panic!("process {pid} did not exit within {secs}s"),
        };
        if int(&event.payload, "pid") != Some(pid.into()) {
            continue;
        }
        match event.name.as_str() {
            "processOutput" => {
                let Some(Value::Bytes(data)) = event.payload.get("data") else { panic!("no bytes: {event:?}") };
                match event.payload.get("stream").and_then(Value::as_str) {
                    Some("stdout") => stdout.extend_from_slice(data),
                    Some("stderr") => stderr.extend_from_slice(data),
                    other => panic!("unknown stream {other:?}"),
                }
            }
            "processExit" => return (stdout, stderr, int(&event.payload, "exitCode").expect("exitCode")),
            _ => {}
        }
    }
}

/// Polls `check` until it returns true, failing after `secs` seconds.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}
