//! Shared helpers for integration tests: a real VM host on a temporary data directory, using
//! the agentvm binary built by cargo as each VM's init.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

pub mod acp_agent;
pub mod engine;
pub mod http;
pub mod mock_llm;
pub mod node;
pub mod pi;
pub mod server;
pub mod ws;

use std::time::Duration;

use agentvm_vm::{ExecOptions, HostConfig, Item, Subscription, Vm, VmEvent, VmHost, VmOptions};

pub struct TestHost {
    pub host: VmHost,
    pub dir: tempfile::TempDir,
}

pub fn host() -> TestHost {
    let dir = tempfile::Builder::new().prefix("agentvm-test-").tempdir().expect("temp dir");
    let host = VmHost::new(HostConfig::new(dir.path().join("data"), env!("CARGO_BIN_EXE_agentvm"))).expect("host");
    TestHost { host, dir }
}

impl TestHost {
    pub async fn vm(&self, id: &str) -> Vm {
        self.host.create_vm(id, VmOptions::default()).await.expect("create VM")
    }

    pub async fn vm_with(&self, id: &str, options: VmOptions) -> Vm {
        self.host.create_vm(id, options).await.expect("create VM")
    }
}

/// Runs a shell command and returns its stdout; fails the test on a non-zero exit.
pub async fn sh(vm: &Vm, command: &str) -> String {
    let r = vm.exec(command, ExecOptions::default()).await.expect("exec");
    assert_eq!(r.exit_code, 0, "`{command}` failed: stdout={:?} stderr={:?}", r.stdout, r.stderr);
    r.stdout
}

/// Runs a shell command and returns the full result.
pub async fn run(vm: &Vm, command: &str) -> agentvm_vm::ExecResult {
    vm.exec(command, ExecOptions::default()).await.expect("exec")
}

/// The next event, failing the test after `secs` seconds.
pub async fn next_event(sub: &mut Subscription, secs: u64) -> VmEvent {
    match tokio::time::timeout(Duration::from_secs(secs), sub.next()).await {
        Ok(Some(Item::Event(e))) => e.event.clone(),
        Ok(other) => panic!("unexpected stream item: {other:?}"),
        Err(_) => panic!("no event within {secs}s"),
    }
}

/// Collects output of `pid` until its exit event; returns (stdout, stderr, exit code).
pub async fn collect_until_exit(sub: &mut Subscription, pid: i32, secs: u64) -> (Vec<u8>, Vec<u8>, i32) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let item = tokio::time::timeout_at(deadline, sub.next()).await.expect("process did not exit in time");
        match item {
            Some(Item::Event(e)) => match &e.event {
                VmEvent::ProcessOutput { pid: p, stream, data } if *p == pid => match stream {
                    agentvm_vm::OutputStream::Stdout => out.extend_from_slice(data),
                    agentvm_vm::OutputStream::Stderr => err.extend_from_slice(data),
                },
                VmEvent::ProcessExit { pid: p, exit_code } if *p == pid => return (out, err, *exit_code),
                _ => {}
            },
            Some(Item::Skipped(gap)) => panic!("subscriber skipped events: {gap:?}"),
            None => panic!("event stream ended"),
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
