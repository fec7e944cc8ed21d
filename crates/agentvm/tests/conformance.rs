//! Conformance fixes of issue 12, each against a real server over HTTP actions in JSON, as a
//! client without a library (or a rivetkit client) would call them:
//!
//! - a write to the stdin of a process that never reads it blocks nothing else: `getProcess`,
//!   `closeProcessStdin`, `stopProcess` and `killProcess` answer at once, and the pending write
//!   settles (acceptance 2);
//! - `allProcesses` entries carry `exitTime` (acceptance 4);
//! - `closeShell` returns once the shell's whole session is gone (acceptance 5).
mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::http::Api;
use common::server::TestServer;
use serde_json::{json, Value};

/// What "answers promptly" means here.
const PROMPT: Duration = Duration::from_secs(2);
/// The size of the pending write: far more than a pipe holds (64 KiB).
const WRITE_BYTES: usize = 1 << 20;

impl Api<'_> {
    /// [`Api::ok`], failing unless it answers within [`PROMPT`].
    async fn ok_promptly(&self, name: &str, args: Value) -> Value {
        let started = Instant::now();
        let output = tokio::time::timeout(PROMPT, self.ok(name, args))
            .await
            .unwrap_or_else(|_| panic!("{name} did not answer within {PROMPT:?}"));
        eprintln!("{name} answered in {:?}", started.elapsed());
        output
    }

    /// Spawns `sleep SECONDS`, which never reads its stdin; returns its pid in the VM. Each
    /// test picks its own `seconds`, which tells its process apart on the host.
    async fn spawn_non_reader(&self, seconds: u32) -> i64 {
        self.ok("spawn", json!(["sleep", [seconds.to_string()]])).await["pid"].as_i64().expect("a pid")
    }

    /// Starts a write of [`WRITE_BYTES`] to the stdin of `pid` and waits until it is blocked:
    /// the pipe is full and the write has not settled.
    async fn blocked_write(&self, pid: i64, seconds: u32) -> tokio::task::JoinHandle<(u16, Value)> {
        let data = base64::engine::general_purpose::STANDARD.encode(vec![b'x'; WRITE_BYTES]);
        let url = self.url("writeProcessStdin");
        let http = self.http.clone();
        let write = tokio::spawn(async move {
            let body = json!({ "args": [pid, ["$Uint8Array", data]] });
            let response = http.post(url).json(&body).send().await.expect("request");
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        });
        let host_pid = host_pid_of_sleep(seconds, pid);
        common::eventually(20, "the stdin pipe to fill up", || async { stdin_backlog(host_pid) >= 4096 }).await;
        assert!(!write.is_finished(), "the write settled although the process reads nothing: {:?}", write.await);
        write
    }
}

/// The host pid of the process `sleep SECONDS` whose pid in its VM is `vm_pid`.
fn host_pid_of_sleep(seconds: u32, vm_pid: i64) -> i32 {
    let cmdline = format!("sleep\0{seconds}\0");
    let found = std::fs::read_dir("/proc").unwrap().flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        if std::fs::read(format!("/proc/{pid}/cmdline")).ok()? != cmdline.as_bytes() {
            return None;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ns_pids = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
        (ns_pids.split_whitespace().last()? == vm_pid.to_string()).then_some(pid)
    });
    found.unwrap_or_else(|| panic!("no host process for `sleep {seconds}` (pid {vm_pid} in its VM)"))
}

/// Bytes waiting in the stdin pipe of host process `pid` (`FIONREAD` on the pipe, reopened
/// through `/proc`: the test runs as root, like the server that created the pipe).
fn stdin_backlog(pid: i32) -> usize {
    use std::os::fd::AsRawFd;
    let pipe = std::fs::File::open(format!("/proc/{pid}/fd/0")).expect("opening the process's stdin pipe");
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which points to a live c_int; the
    // descriptor is open for the duration of the call.
    let result = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut waiting) };
    assert_eq!(result, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(waiting).unwrap_or(0)
}

/// Waits for a settled write's answer, failing unless it comes within [`PROMPT`].
async fn settles(write: tokio::task::JoinHandle<(u16, Value)>) -> (u16, Value) {
    tokio::time::timeout(PROMPT, write).await.expect("the pending write did not settle").expect("write task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_stdin_write_blocks_nothing_and_fails_when_stdin_is_closed() {
    let server = TestServer::start();
    let api = Api::new(&server, "stdin-close");
    let pid = api.spawn_non_reader(601).await;
    let write = api.blocked_write(pid, 601).await;

    let info = api.ok_promptly("getProcess", json!([pid])).await;
    assert_eq!(info["running"], true, "{info}");
    api.ok_promptly("closeProcessStdin", json!([pid])).await;
    let (status, body) = settles(write).await;
    assert_eq!(status, 409, "a write cut off by closeProcessStdin fails: {body}");
    assert_eq!(body["code"], "invalid_state", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!("stdin of process {pid} was closed during the write: "))
            && message.contains(&format!(" of {WRITE_BYTES} bytes were written")),
        "{message}"
    );
    // Closed stays closed; the process is unaffected until killed.
    let (status, body) = api.call("writeProcessStdin", json!([pid, "more"])).await;
    assert_eq!((status, body["message"].as_str()), (409, Some(format!("stdin of process {pid} is closed").as_str())));
    api.ok_promptly("killProcess", json!([pid])).await;
    assert_eq!(api.ok("waitProcess", json!([pid])).await, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_stdin_write_ends_when_the_process_is_stopped_or_killed() {
    let server = TestServer::start();
    let api = Api::new(&server, "stdin-signal");
    for (seconds, action, code) in [(602, "stopProcess", 143), (603, "killProcess", 137)] {
        let pid = api.spawn_non_reader(seconds).await;
        let write = api.blocked_write(pid, seconds).await;

        api.ok_promptly(action, json!([pid])).await;
        let (status, body) = settles(write).await;
        // As any write to an exited process: accepted, and the rest dropped.
        assert_eq!(status, 200, "a write cut off by the process's exit ({action}) succeeds: {body}");
        assert_eq!(api.ok("waitProcess", json!([pid])).await, code);
        let info = api.ok_promptly("getProcess", json!([pid])).await;
        assert_eq!((info["running"].clone(), info["exitCode"].clone()), (json!(false), json!(code)), "{info}");
        api.ok_promptly("closeProcessStdin", json!([pid])).await;
    }
}

/// The realtime clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The `allProcesses` entry of `pid`.
async fn listed(api: &Api<'_>, pid: i64) -> Value {
    let all = api.ok("allProcesses", json!([])).await;
    let entries = all.as_array().expect("an array");
    let mine: Vec<&Value> = entries.iter().filter(|p| p["pid"] == pid).collect();
    assert_eq!(mine.len(), 1, "pid {pid} listed once: {all}");
    mine[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_processes_shows_when_a_process_exited() {
    let server = TestServer::start();
    let api = Api::new(&server, "exit-time");
    let before = now_ms();
    let pid = api.ok("spawn", json!(["sh", ["-c", "read line; exit 3"]])).await["pid"].as_i64().expect("a pid");

    let running = listed(&api, pid).await;
    assert_eq!((running["status"].as_str(), running["exitCode"].is_null()), (Some("running"), true), "{running}");
    // Present and null while it runs (the reference's `number | null`).
    assert_eq!(running.get("exitTime"), Some(&Value::Null), "{running}");
    let start = running["startTime"].as_u64().expect("a startTime");
    // Start times count whole clock ticks (10 ms), rounded down.
    assert!(start + 10 >= before && start <= now_ms(), "started at {start}, spawned at {before}");

    api.ok("writeProcessStdin", json!([pid, "go\n"])).await;
    assert_eq!(api.ok("waitProcess", json!([pid])).await, 3);
    let exited = listed(&api, pid).await;
    assert_eq!(
        (exited["status"].as_str(), exited["exitCode"].as_i64(), exited["command"].as_str()),
        (Some("exited"), Some(3), Some("sh")),
        "{exited}"
    );
    assert_eq!(exited["args"], json!(["-c", "read line; exit 3"]));
    assert_eq!(
        (exited["ppid"].as_i64(), exited["pgid"].as_i64(), exited["sid"].as_i64()),
        (Some(1), Some(pid), Some(pid))
    );
    assert_eq!(exited["cwd"], "/home/user");
    assert_eq!(exited["startTime"].as_u64(), Some(start), "the start time does not change at the exit");
    let exit = exited["exitTime"].as_u64().unwrap_or_else(|| panic!("no exitTime: {exited}"));
    assert!(start <= exit && exit <= now_ms(), "started at {start}, exited at {exit}");
    // processTree shows the same.
    let tree = api.ok("processTree", json!([])).await;
    let node = tree.as_array().unwrap().iter().find(|n| n["pid"] == pid).expect("a root of the tree").clone();
    assert_eq!((node["exitTime"].as_u64(), node["status"].as_str()), (Some(exit), Some("exited")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_shell_returns_once_its_background_jobs_are_gone() {
    let server = TestServer::start();
    let api = Api::new(&server, "close-shell");
    for round in 0..3 {
        let shell_id = api.ok("openShell", json!([])).await["shellId"].clone();
        let marker = format!("60{round}5");
        // A job that ignores SIGHUP (nohup), and one that does not.
        let line = format!("nohup sleep {marker} >/dev/null 2>&1 & sleep 1{marker} & echo started\n");
        api.ok("writeShell", json!([shell_id, line])).await;
        let jobs = || async {
            let all = api.ok("allProcesses", json!([])).await;
            all.as_array().unwrap().iter().filter(|p| p["command"] == "sleep").cloned().collect::<Vec<Value>>()
        };
        common::eventually(10, "both jobs running", || async { jobs().await.len() == 2 }).await;
        let sid = jobs().await[0]["sid"].as_i64().expect("the jobs' session");

        api.ok("closeShell", json!([shell_id])).await;
        let all = api.ok("allProcesses", json!([])).await;
        let left: Vec<&Value> = all.as_array().unwrap().iter().filter(|p| p["sid"] == sid || p["pid"] == sid).collect();
        assert!(left.is_empty(), "round {round}: right after closeShell, the shell's session still has {left:?}");
        let (status, body) = api.call("writeShell", json!([shell_id, "echo late\n"])).await;
        assert_eq!(status, 409, "the shell has exited: {body}");
    }
}
