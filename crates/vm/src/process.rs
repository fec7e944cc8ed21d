//! The host's record of each process it started in a VM: identity, stdin, exit status, and
//! output (a replay log for spawned processes, a capture buffer for `exec`).

use std::collections::{HashMap, VecDeque};

use crate::replay_log::{Budget, Chunk, ReplayLog};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Serialize;
use tokio::net::unix::pipe;
use tokio::sync::{oneshot, watch};

use crate::types::{OutputStream, SpawnedProcessInfo};

/// Default of [`crate::VmOptions::exec_output_bytes`]: the output `exec` keeps per stream; later
/// output is read and discarded and the result says `truncated`. The server holds captured
/// output in memory until the result is sent, several times over while encoding it, so this is
/// kept small; a large output belongs in a file or in `spawn`'s streamed events.
pub const DEFAULT_EXEC_OUTPUT_BYTES: usize = 4 << 20;
/// Output agentvm's own helpers (the `vm-fs` file helper behind `readFile`) may produce.
pub const HELPER_OUTPUT_BYTES: usize = 256 << 20;
/// Exited spawned processes kept for `listProcesses` / `getProcess` / `waitProcess`.
pub const EXITED_RETENTION: usize = 1024;
/// Output kept for replay of a spawned process once it exited (its live limit is
/// [`crate::VmOptions::process_log_bytes`]).
pub const EXITED_LOG_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Started by `spawn`: output becomes events and goes to the replay log.
    Spawned,
    /// Started by `exec`: output is captured for the result.
    Exec,
}

/// A chunk of a process's output, with the sequence number of its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutputChunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub data: Bytes,
}

impl Chunk for OutputChunk {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn bytes(&self) -> usize {
        self.data.len()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Most bytes kept per stream.
    pub limit: usize,
    /// Output beyond `limit` was discarded.
    pub truncated: bool,
    /// Keep the *last* `limit` bytes instead of the first (a diagnostic tail, such as an
    /// agent's stderr).
    pub keep_tail: bool,
}

/// How much output a process's record keeps.
#[derive(Debug, Clone)]
pub(crate) struct OutputLimits {
    /// Replay log of a spawned process (bytes, while it runs).
    pub replay_bytes: usize,
    /// Captured output of an `exec` (bytes per stream).
    pub capture_bytes: usize,
    /// The VM's shared replay budget.
    pub budget: Arc<Budget>,
}

/// The host's side of a process's stdin.
///
/// The write end is the only descriptor a process's record holds, and it is closed as soon as
/// the process has exited ([`ProcessRecord::release_stdin`]): exited records are kept for
/// `getProcess` and `waitProcess` (up to [`EXITED_RETENTION`] per VM), and must cost no
/// descriptor.
#[derive(Debug)]
pub(crate) enum Stdin {
    /// The write end, open.
    Open(pipe::Sender),
    /// Closed by the caller (`closeProcessStdin`, or `exec` after writing its input).
    Closed,
    /// Closed because the process has exited: later writes are dropped, as in the reference
    /// product.
    Exited,
}

/// What was started: the command line and the working directory (for listings).
#[derive(Debug)]
pub(crate) struct Launch {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
}

pub(crate) struct ProcessRecord {
    pub pid: i32,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// Milliseconds since the Unix epoch, as init read it from the VM's `/proc` (the same
    /// figure `allProcesses` shows while the process runs).
    pub start_time_ms: u64,
    /// When init reported the exit (milliseconds since the Unix epoch); for a process that
    /// died with its VM, when the host learned of it.
    exit_time_ms: Mutex<Option<u64>>,
    pub kind: Kind,
    /// The process's stdin. Writers hold the lock while they write, so one write's bytes are
    /// never interleaved with another's.
    pub stdin: tokio::sync::Mutex<Stdin>,
    /// Set by `closeProcessStdin` before it takes the lock: a writer blocked on a process that
    /// does not read sees it, gives up the lock at once and fails (see
    /// [`crate::Vm::write_process_stdin`]), so closing never waits behind a blocked write.
    stdin_closing: watch::Sender<bool>,
    /// The exit code, set only after all the process's output was delivered.
    exit: watch::Sender<Option<i32>>,
    /// Delivers init's exit report to the output pump.
    init_exit: Mutex<Option<oneshot::Sender<i32>>>,
    output: Mutex<ReplayLog<OutputChunk>>,
    capture: Mutex<Capture>,
}

impl ProcessRecord {
    pub fn new(
        pid: i32,
        start_time_ms: u64,
        launch: Launch,
        kind: Kind,
        stdin: pipe::Sender,
        limits: &OutputLimits,
    ) -> (Arc<ProcessRecord>, oneshot::Receiver<i32>) {
        let (exit_tx, exit_rx) = oneshot::channel();
        let Launch { command, args, cwd } = launch;
        let record = ProcessRecord {
            pid,
            command,
            args,
            cwd,
            start_time_ms,
            exit_time_ms: Mutex::new(None),
            kind,
            stdin: tokio::sync::Mutex::new(Stdin::Open(stdin)),
            stdin_closing: watch::Sender::new(false),
            exit: watch::Sender::new(None),
            init_exit: Mutex::new(Some(exit_tx)),
            output: Mutex::new(ReplayLog::with_budget(
                if kind == Kind::Spawned { limits.replay_bytes } else { 0 },
                Arc::clone(&limits.budget),
            )),
            capture: Mutex::new(Capture {
                limit: if kind == Kind::Exec { limits.capture_bytes } else { 0 },
                ..Capture::default()
            }),
        };
        (Arc::new(record), exit_rx)
    }

    /// Init reported the exit; the pump finishes delivering output, then publishes it.
    pub fn report_exit(&self, code: i32) {
        self.exit_time_ms.lock().unwrap().get_or_insert_with(now_ms);
        if let Some(tx) = self.init_exit.lock().unwrap().take() {
            let _ = tx.send(code);
        }
    }

    /// The VM is gone: the process died with it (the pump reports SIGKILL).
    pub fn abandon(&self) {
        self.exit_time_ms.lock().unwrap().get_or_insert_with(now_ms);
        self.init_exit.lock().unwrap().take();
    }

    /// Takes the write end of the process's stdin (for `exec`, which writes its input and then
    /// closes it); `None` if it was closed already.
    pub async fn take_stdin(&self) -> Option<pipe::Sender> {
        let mut stdin = self.stdin.lock().await;
        match std::mem::replace(&mut *stdin, Stdin::Closed) {
            Stdin::Open(pipe) => Some(pipe),
            Stdin::Exited => {
                *stdin = Stdin::Exited;
                None
            }
            Stdin::Closed => None,
        }
    }

    /// Closes the process's stdin for `closeProcessStdin` (idempotent): first tells a writer
    /// blocked on it to give up, then closes the write end once it has.
    pub async fn close_stdin(&self) {
        self.stdin_closing.send_replace(true);
        let mut stdin = self.stdin.lock().await;
        if let Stdin::Open(_) = *stdin {
            *stdin = Stdin::Closed;
        }
    }

    /// Resolves once `closeProcessStdin` was called.
    pub async fn stdin_closing(&self) {
        let mut rx = self.stdin_closing.subscribe();
        // The record owns the sender, so this cannot fail while `self` lives.
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Closes the write end of the process's stdin because the process has exited (called once
    /// its exit is published). A writer holding the lock gives it up at once, since it stops
    /// writing when the exit is published (see [`crate::Vm::write_process_stdin`]); then the
    /// write end is closed by a task.
    pub fn release_stdin(self: &Arc<Self>) {
        match self.stdin.try_lock() {
            Ok(mut stdin) => *stdin = Stdin::Exited,
            Err(_busy) => {
                let record = Arc::clone(self);
                tokio::spawn(async move { *record.stdin.lock().await = Stdin::Exited });
            }
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    pub fn publish_exit(&self, code: i32) {
        self.exit_time_ms.lock().unwrap().get_or_insert_with(now_ms);
        self.exit.send_replace(Some(code));
    }

    /// When the process exited (milliseconds since the Unix epoch), once its exit is published.
    pub fn exit_time_ms(&self) -> Option<u64> {
        self.exit_code().and(*self.exit_time_ms.lock().unwrap())
    }

    /// Waits until the exit is published.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.subscribe();
        let code = *rx.wait_for(Option::is_some).await.expect("the record owns the sender");
        code.expect("waited for Some")
    }

    pub fn log_output(&self, chunk: OutputChunk) {
        self.output.lock().unwrap().push(chunk);
    }

    pub fn output_since(&self, after: Option<u64>) -> Vec<OutputChunk> {
        self.output.lock().unwrap().since(after)
    }

    pub fn capture(&self, stream: OutputStream, data: &[u8]) {
        let mut capture = self.capture.lock().unwrap();
        let limit = capture.limit;
        let keep_tail = capture.keep_tail;
        let buffer = match stream {
            OutputStream::Stdout => &mut capture.stdout,
            OutputStream::Stderr => &mut capture.stderr,
        };
        if keep_tail {
            buffer.extend_from_slice(data);
            if buffer.len() > limit {
                let excess = buffer.len() - limit;
                buffer.drain(..excess);
                capture.truncated = true;
            }
            return;
        }
        let room = limit.saturating_sub(buffer.len());
        buffer.extend_from_slice(&data[..data.len().min(room)]);
        if data.len() > room {
            capture.truncated = true;
        }
    }

    /// From now on keep the last bytes of each stream rather than the first.
    pub fn keep_capture_tail(&self) {
        self.capture.lock().unwrap().keep_tail = true;
    }

    /// A copy of what was captured so far of `stream`.
    pub fn captured(&self, stream: OutputStream) -> Vec<u8> {
        let capture = self.capture.lock().unwrap();
        match stream {
            OutputStream::Stdout => capture.stdout.clone(),
            OutputStream::Stderr => capture.stderr.clone(),
        }
    }

    pub fn take_capture(&self) -> Capture {
        let mut capture = self.capture.lock().unwrap();
        let limit = capture.limit;
        std::mem::replace(&mut *capture, Capture { limit, ..Capture::default() })
    }

    pub fn info(&self) -> SpawnedProcessInfo {
        let exit_code = self.exit_code();
        SpawnedProcessInfo {
            pid: self.pid,
            command: self.command.clone(),
            args: self.args.clone(),
            running: exit_code.is_none(),
            exit_code,
        }
    }
}

/// The realtime clock in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Every process the host started in one VM and has not forgotten yet.
#[derive(Default)]
pub(crate) struct ProcessTable {
    records: HashMap<i32, Arc<ProcessRecord>>,
    /// Exited spawned processes, oldest first, for bounded retention.
    exited: VecDeque<Arc<ProcessRecord>>,
}

impl ProcessTable {
    pub fn insert(&mut self, record: Arc<ProcessRecord>) {
        self.records.insert(record.pid, record);
    }

    pub fn get(&self, pid: i32) -> Option<Arc<ProcessRecord>> {
        self.records.get(&pid).cloned()
    }

    /// Spawned processes, by pid.
    pub fn spawned(&self) -> Vec<Arc<ProcessRecord>> {
        let mut list: Vec<_> = self.records.values().filter(|r| r.kind == Kind::Spawned).cloned().collect();
        list.sort_by_key(|r| r.pid);
        list
    }

    pub fn all(&self) -> Vec<Arc<ProcessRecord>> {
        self.records.values().cloned().collect()
    }

    /// Called when a process's exit is published: spawned records stay (up to the retention),
    /// exec records are dropped once `exec` has read them (see [`ProcessTable::remove`]).
    pub fn retire(&mut self, record: &Arc<ProcessRecord>) {
        if record.kind != Kind::Spawned {
            return;
        }
        record.output.lock().unwrap().shrink(EXITED_LOG_BYTES);
        self.exited.push_back(Arc::clone(record));
        while self.exited.len() > EXITED_RETENTION {
            let old = self.exited.pop_front().expect("non-empty");
            self.remove(&old);
        }
    }

    /// Forgets `record` if the pid still refers to it (pids can be reused).
    pub fn remove(&mut self, record: &Arc<ProcessRecord>) {
        if self.records.get(&record.pid).is_some_and(|r| Arc::ptr_eq(r, record)) {
            self.records.remove(&record.pid);
        }
    }
}
