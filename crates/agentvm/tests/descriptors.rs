//! The server's descriptors (issue 11, acceptance 3): nothing the server opens for a process, an
//! `exec` or a shell outlives it (a spawned process's stdin closes at its exit, even while a
//! write to it waits), so thousands of processes run under a small descriptor limit; and the
//! server raises its own limit to the hard limit at start.
//!
//! Descriptors are counted as the entries of `/proc/<server pid>/fd`, against a baseline taken
//! once the VM is awake (after a first process), with a small slack for what comes and goes on
//! its own (an HTTP connection the server has not seen closed yet).
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use common::http::Api;
use common::server::TestServer;
use serde_json::json;

/// The server's descriptor limit (soft and hard) in these tests: far below what 2,000 processes
/// would need if each kept one descriptor.
const NOFILE: u64 = 256;
/// Spawned processes in the acceptance test.
const PROCESSES: usize = 2000;
/// Processes in flight at once (each holds three pipes and an HTTP connection meanwhile).
const CONCURRENCY: usize = 16;
/// Descriptors the count may exceed its baseline by.
const SLACK: usize = 4;

impl Api<'_> {
    /// Spawns `true` and waits for its exit; an error as text.
    async fn spawn_true(&self) -> Result<(), String> {
        let (status, body) = self.call("spawn", json!(["true", []])).await;
        if status != 200 {
            return Err(format!("spawn: {status} {body}"));
        }
        let pid = body["output"]["pid"].clone();
        match self.call("waitProcess", json!([pid])).await {
            (200, body) if body["output"] == 0 => Ok(()),
            (status, body) => Err(format!("waitProcess({pid}): {status} {body}")),
        }
    }
}

fn open_descriptors(server: &TestServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid())).expect("the server's /proc/<pid>/fd").count()
}

/// The server's `RLIMIT_NOFILE` as `(soft, hard)`, from `/proc/<pid>/limits`.
fn nofile_limit(server: &TestServer) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("a Max open files line");
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

/// Waits until the server holds at most `baseline + SLACK` descriptors; prints the counts.
async fn back_to_baseline(server: &TestServer, baseline: usize, after: &str) {
    eprintln!("descriptors: {baseline} at baseline, {} right after {after}", open_descriptors(server));
    common::eventually(
        30,
        &format!("the server's descriptors back to {baseline} (+{SLACK}) after {after}"),
        || async { open_descriptors(server) <= baseline + SLACK },
    )
    .await;
    eprintln!("descriptors: {} after {after}, settled", open_descriptors(server));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_processes_under_a_256_descriptor_limit() {
    let server = TestServer::start_with_nofile(NOFILE, NOFILE, &[]);
    assert_eq!(nofile_limit(&server), (NOFILE, NOFILE));
    let baseline = {
        let warm_up = Api::new(&server, "fds");
        warm_up.spawn_true().await.expect("the first process");
        open_descriptors(&server)
    };

    let api = Api::new(&server, "fds");
    let next = AtomicUsize::new(0);
    let errors = Mutex::new(Vec::new());
    let started = std::time::Instant::now();
    let workers = (0..CONCURRENCY).map(|_| async {
        while next.fetch_add(1, Ordering::Relaxed) < PROCESSES {
            if let Err(e) = api.spawn_true().await {
                errors.lock().unwrap().push(e);
            }
        }
    });
    futures_util::future::join_all(workers).await;
    let errors = errors.into_inner().unwrap();
    eprintln!("{PROCESSES} processes, {CONCURRENCY} at a time, in {:?}", started.elapsed());
    assert!(
        errors.is_empty(),
        "{} of {PROCESSES} failed, the first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    drop(api);

    back_to_baseline(&server, baseline, &format!("{PROCESSES} processes")).await;
    // The VM still works, with room to spare.
    let api = Api::new(&server, "fds");
    assert_eq!(api.ok("exec", json!(["echo ok"])).await["stdout"], "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_execs_and_stdin_leave_no_descriptor_behind() {
    let server = TestServer::start_with_nofile(NOFILE, NOFILE, &[]);
    let baseline = {
        let warm_up = Api::new(&server, "fds-mixed");
        warm_up.spawn_true().await.expect("the first process");
        open_descriptors(&server)
    };
    let api = Api::new(&server, "fds-mixed");

    // Shells: opened, used, closed.
    let mut shells = Vec::new();
    for _ in 0..5 {
        shells.push(api.ok("openShell", json!([{}])).await["shellId"].clone());
    }
    for shell in &shells {
        api.ok("writeShell", json!([shell, "echo hi\n"])).await;
    }
    for shell in &shells {
        api.ok("closeShell", json!([shell])).await;
    }
    // A shell that ends by itself.
    let shell = api.ok("openShell", json!([{"command": "sh", "args": ["-c", "exit 3"]}])).await["shellId"].clone();
    assert_eq!(api.ok("waitShell", json!([shell])).await, 3);

    // Execs, with and without stdin, and one that exits without reading its stdin.
    for i in 0..20 {
        let result = api.ok("exec", json!([format!("echo {i}")])).await;
        assert_eq!(result["stdout"], format!("{i}\n"));
    }
    let result = api.ok("exec", json!(["cat", {"stdin": "from stdin"}])).await;
    assert_eq!(result["stdout"], "from stdin");
    let unread = "x".repeat(256 << 10);
    assert_eq!(api.ok("exec", json!(["exit 4", {"stdin": unread}])).await["exitCode"], 4);

    // Spawned processes whose stdin the client leaves open (the server closes it at the exit),
    // writes to after the exit (dropped, as in the reference product), closes, or writes to
    // and closes; and one killed.
    for i in 0..20 {
        let pid = api.ok("spawn", json!(["true", []])).await["pid"].clone();
        assert_eq!(api.ok("waitProcess", json!([pid])).await, 0);
        if i % 5 == 0 {
            // After the exit: writes are dropped and closing is a no-op.
            api.ok("writeProcessStdin", json!([pid, "late"])).await;
            api.ok("closeProcessStdin", json!([pid])).await;
        }
    }
    let pid = api.ok("spawn", json!(["cat", []])).await["pid"].clone();
    api.ok("writeProcessStdin", json!([pid, "data"])).await;
    api.ok("closeProcessStdin", json!([pid])).await;
    assert_eq!(api.ok("waitProcess", json!([pid])).await, 0);
    let (status, body) = api.call("writeProcessStdin", json!([pid, "late"])).await;
    assert_eq!(status, 200, "a write after the exit is dropped: {body}");
    let pid = api.ok("spawn", json!(["sleep", ["100"]])).await["pid"].clone();
    api.ok("killProcess", json!([pid])).await;
    assert_eq!(api.ok("waitProcess", json!([pid])).await, 137);
    drop(api);

    back_to_baseline(&server, baseline, "shells, execs and processes").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdin_write_blocked_on_a_full_pipe_ends_with_the_process() {
    let server = TestServer::start_with_nofile(NOFILE, NOFILE, &[]);
    let api = Api::new(&server, "fds-blocked");
    api.spawn_true().await.expect("the first process");
    let baseline = open_descriptors(&server);
    // The process hands its stdin to a descendant in a session of its own, which does not read
    // it and outlives the process: it only reports how many bytes wait in the pipe, in
    // /tmp/fill. (A background job's stdin is /dev/null before its own redirections, hence the
    // copy on descriptor 3.)
    let reader = "import fcntl, os, struct, termios, time\n\
        while True:\n\
        \x20   waiting = struct.unpack(\"i\", fcntl.ioctl(0, termios.FIONREAD, bytes(4)))[0]\n\
        \x20   open(\"/tmp/fill.new\", \"w\").write(str(waiting))\n\
        \x20   os.rename(\"/tmp/fill.new\", \"/tmp/fill\")\n\
        \x20   time.sleep(0.02)";
    let script = format!("exec 3<&0; setsid python3 -c '{reader}' <&3 3<&- >/dev/null 2>&1 & exec sleep 1000 3<&-");
    let pid = api.ok("spawn", json!(["sh", ["-c", script]])).await["pid"].clone();
    // More than a pipe holds: the write blocks once the pipe is full.
    let writer = Api::new(&server, "fds-blocked");
    let args = json!([pid, "x".repeat(1 << 20)]);
    let mut write = Box::pin(async move { writer.call("writeProcessStdin", args).await });
    let pipe_filled = common::eventually(30, "the write to fill the pipe", || async {
        let result = api.ok("exec", json!(["cat /tmp/fill 2>/dev/null"])).await;
        result["stdout"].as_str().and_then(|s| s.trim().parse::<u64>().ok()).is_some_and(|n| n > 0)
    });
    tokio::select! {
        answer = &mut write => panic!("the write of 1 MiB cannot complete while nothing reads: {answer:?}"),
        () = pipe_filled => {}
    }

    api.ok("killProcess", json!([pid])).await;
    assert_eq!(api.ok("waitProcess", json!([pid])).await, 137);
    let (status, body) = tokio::time::timeout(std::time::Duration::from_secs(30), write)
        .await
        .expect("the blocked write to end with the process");
    assert_eq!(status, 200, "the rest of the write is dropped: {body}");
    drop(api);
    back_to_baseline(&server, baseline, "a blocked write").await;
}

#[tokio::test]
async fn the_server_raises_its_descriptor_limit_to_the_hard_limit() {
    let server = TestServer::start_with_nofile(NOFILE, 4 * NOFILE, &[]);
    assert_eq!(nofile_limit(&server), (4 * NOFILE, 4 * NOFILE));
}
