//! The process API of the reference product: `exec`, `spawn`, stdin, wait, list, signals and
//! `allProcesses`, and the helper runner ([`Vm::run_capture`]) the filesystem API uses. A
//! program starts as a request to init with its three stdio pipes (see [`super::dispatch`]).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use agentvm_sandbox::protocol::{ProcessEntry, Request, SpawnRequest, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::control::Outgoing;
use crate::error::{Result, VmError};
use crate::listing::{self, Remembered};
use crate::process::{Kind, Launch, OutputChunk, ProcessRecord, Stdin, HELPER_OUTPUT_BYTES};
use crate::tree::build_tree;
use crate::types::{ExecOptions, ExecResult, ProcessInfo, ProcessTreeNode, SpawnOptions, SpawnedProcessInfo};

use super::{Pending, Vm};

impl Vm {
    /// Runs `command` with `/bin/sh -c` to completion and returns its exit code and output.
    pub async fn exec(&self, command: &str, options: ExecOptions) -> Result<ExecResult> {
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()];
        let limit = self.inner.exec_output_bytes;
        let record = self.start(Kind::Exec, argv, &options.env, options.cwd.as_deref(), limit).await?;
        // If the caller stops waiting (dropped future), the command is killed.
        let mut guard = KillOnDrop { vm: self, record: &record, armed: true };
        let stdin = record.take_stdin().await;
        if let (Some(stdin), Some(data)) = (stdin, options.stdin) {
            tokio::spawn(feed_stdin(Arc::clone(&record), stdin, data));
        }
        let finished = match options.timeout {
            Some(limit) => tokio::time::timeout(limit, record.wait()).await.ok(),
            None => Some(record.wait().await),
        };
        let (exit_code, timed_out) = match finished {
            Some(code) => (code, false),
            None => {
                self.signal(&record, libc::SIGKILL);
                (record.wait().await, true)
            }
        };
        guard.armed = false;
        let capture = record.take_capture();
        Ok(ExecResult {
            exit_code,
            stdout: utf8_lossy(capture.stdout),
            stderr: utf8_lossy(capture.stderr),
            timed_out,
            truncated: capture.truncated,
        })
    }

    /// Starts `command` with `args` (no shell) in the background; returns its pid in the VM.
    /// Its output arrives as `processOutput` events, its end as `processExit`.
    pub async fn spawn(&self, command: &str, args: &[String], options: SpawnOptions) -> Result<i32> {
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(command.to_string());
        argv.extend(args.iter().cloned());
        let record = self.start(Kind::Spawned, argv, &options.env, options.cwd.as_deref(), 0).await?;
        Ok(record.pid)
    }

    /// Writes to a process's stdin. Data for a process that has exited is dropped, as in the
    /// reference product (the server closes a process's stdin as soon as it has exited);
    /// writing after `closeProcessStdin` is an error.
    ///
    /// A write the process does not read waits until it reads, and settles without waiting
    /// further when the process exits (`Ok`: the rest is dropped, as for any write to an exited
    /// process) or when its stdin is closed meanwhile (`InvalidState`, saying how many bytes
    /// went in: the caller closed stdin under its own write, and should learn that data was
    /// lost). Other calls on the process never wait behind a blocked write.
    pub async fn write_process_stdin(&self, pid: i32, data: &[u8]) -> Result<()> {
        let record = self.record(pid)?;
        if record.exit_code().is_some() {
            return Ok(());
        }
        let mut stdin = record.stdin.lock().await;
        let pipe = match &mut *stdin {
            Stdin::Open(pipe) => pipe,
            Stdin::Exited => return Ok(()),
            Stdin::Closed => return Err(VmError::InvalidState(format!("stdin of process {pid} is closed"))),
        };
        let closing = record.stdin_closing();
        let exited = record.wait();
        tokio::pin!(closing, exited);
        let mut written = 0;
        while written < data.len() {
            tokio::select! {
                biased;
                // Checked before each write: a close that came first wins.
                () = &mut closing => {
                    return Err(VmError::InvalidState(format!(
                        "stdin of process {pid} was closed during the write: {written} of {} bytes were written, \
                         the rest was dropped",
                        data.len()
                    )));
                }
                // The process exited while the write waited (a descendant may still hold the
                // pipe without reading it): the rest is dropped, and the write end can be closed.
                _ = &mut exited => return Ok(()),
                // `write` is cancel-safe: a write that lost the race wrote nothing.
                result = pipe.write(&data[written..]) => match result {
                    Ok(n) => written += n,
                    // The process closed its stdin or exited meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(VmError::io(format!("writing to stdin of process {pid}"), e)),
                },
            }
        }
        Ok(())
    }

    /// Closes a process's stdin (the process reads end of file). Idempotent; a no-op once the
    /// process has exited. Answers at once even while a write to the process waits (that write
    /// fails, see [`Vm::write_process_stdin`]).
    pub async fn close_process_stdin(&self, pid: i32) -> Result<()> {
        self.record(pid)?.close_stdin().await;
        Ok(())
    }

    /// Waits for a process to exit; returns its exit code (128+signal for a signal death).
    pub async fn wait_process(&self, pid: i32) -> Result<i32> {
        Ok(self.record(pid)?.wait().await)
    }

    /// Processes started with `spawn`, exited ones included (the most recent
    /// [`crate::process::EXITED_RETENTION`]).
    pub fn list_processes(&self) -> Vec<SpawnedProcessInfo> {
        self.inner.shared.processes.lock().unwrap().spawned().iter().map(|r| r.info()).collect()
    }

    pub fn get_process(&self, pid: i32) -> Result<SpawnedProcessInfo> {
        Ok(self.record(pid)?.info())
    }

    /// SIGTERM to the process's group. No-op once it has exited.
    pub fn stop_process(&self, pid: i32) -> Result<()> {
        let record = self.record(pid)?;
        self.signal(&record, libc::SIGTERM);
        Ok(())
    }

    /// SIGKILL to the process's group. No-op once it has exited.
    pub fn kill_process(&self, pid: i32) -> Result<()> {
        let record = self.record(pid)?;
        self.signal(&record, libc::SIGKILL);
        Ok(())
    }

    /// Sends `signal` to the process group of a process agentvm started.
    pub fn signal_process(&self, pid: i32, signal: i32) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(VmError::InvalidArgument(format!("invalid signal number {signal}")));
        }
        let record = self.record(pid)?;
        self.signal(&record, signal);
        Ok(())
    }

    /// Recent output of a process with sequence number above `after` (all retained if `None`).
    pub fn process_output(&self, pid: i32, after: Option<u64>) -> Result<Vec<OutputChunk>> {
        Ok(self.record(pid)?.output_since(after))
    }

    /// Every process in the VM (including those started by shells and their children), except
    /// agentvm's init, and the exited spawned processes the VM still remembers (see
    /// `listing.rs`).
    pub async fn all_processes(&self) -> Result<Vec<ProcessInfo>> {
        let entries = self.list_entries().await?;
        // Read after the listing: a process that exited meanwhile is shown exited.
        let spawned = self.inner.shared.processes.lock().unwrap().spawned();
        let remembered = spawned
            .iter()
            .map(|r| Remembered {
                pid: r.pid,
                command: r.command.clone(),
                args: r.args.clone(),
                cwd: r.cwd.clone(),
                start_time_ms: r.start_time_ms,
                exit: r.exit_code().zip(r.exit_time_ms()),
            })
            .collect();
        Ok(listing::merge(entries, remembered))
    }

    /// Init's listing of the VM's `/proc`: every process but init, zombies included.
    pub(super) async fn list_entries(&self) -> Result<Vec<ProcessEntry>> {
        let (reply, answer) = oneshot::channel();
        let id = self.register(Pending::List { entries: Vec::new(), reply })?;
        self.send(Request::ListProcesses { id }, Vec::new(), id)?;
        answer.await.map_err(|_| self.stopped_error())
    }

    /// [`Vm::all_processes`] as a forest by parent pid.
    pub async fn process_tree(&self) -> Result<Vec<ProcessTreeNode>> {
        Ok(build_tree(self.all_processes().await?))
    }

    async fn start(
        &self,
        kind: Kind,
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        capture_limit: usize,
    ) -> Result<Arc<ProcessRecord>> {
        Ok(self.start_with(kind, argv, env, cwd, capture_limit, false).await?.0)
    }

    /// [`Vm::start`]; with `attach_stdout`, the program's stdout is returned to the caller
    /// instead of going to the output pump (which then sees only stderr).
    pub(super) async fn start_with(
        &self,
        kind: Kind,
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        capture_limit: usize,
        attach_stdout: bool,
    ) -> Result<(Arc<ProcessRecord>, Option<pipe::Receiver>)> {
        if !self.is_running() {
            return Err(self.stopped_error());
        }
        if argv[0].is_empty() {
            return Err(VmError::InvalidArgument("command must not be empty".into()));
        }
        let cwd = self.working_dir(cwd)?;
        let full_env = self.environment(env, &[], cwd)?;

        let (stdin_read, stdin_write) = pipe_pair()?;
        let (stdout_read, stdout_write) = pipe_pair()?;
        let (stderr_read, stderr_write) = pipe_pair()?;
        let io = |e| VmError::io("setting up process pipes", e);
        let stdin = pipe::Sender::from_owned_fd(stdin_write).map_err(io)?;
        let stdout = pipe::Receiver::from_owned_fd(stdout_read).map_err(io)?;
        let stderr = pipe::Receiver::from_owned_fd(stderr_read).map_err(io)?;
        // Attached: the caller reads stdout; the pump gets a pipe that is at its end at once.
        let (stdout, attached) = if attach_stdout {
            let (empty_read, _closed_write) = pipe_pair()?;
            (pipe::Receiver::from_owned_fd(empty_read).map_err(io)?, Some(stdout))
        } else {
            (stdout, None)
        };

        let (reply, answer) = oneshot::channel();
        let launch = Launch { command: argv[0].clone(), args: argv[1..].to_vec(), cwd: cwd.to_string() };
        // An attached program's stderr is kept as its tail (for crash reports), decided before
        // its pumps read anything.
        let keep_tail = attach_stdout;
        let id =
            self.register(Pending::Spawn { kind, launch, stdin, stdout, stderr, capture_limit, keep_tail, reply })?;
        let request =
            Request::Spawn(SpawnRequest { id, argv, env: full_env, cwd: cwd.to_string(), stdio: Stdio::Pipes });
        self.send(request, vec![stdin_read, stdout_write, stderr_write], id)?;
        let record = answer.await.map_err(|_| self.stopped_error())??;
        Ok((record, attached))
    }

    /// The working directory for a new program: absolute, default the user's home.
    pub(super) fn working_dir<'a>(&'a self, cwd: Option<&'a str>) -> Result<&'a str> {
        let cwd = cwd.unwrap_or(&self.inner.home);
        if !cwd.starts_with('/') {
            return Err(VmError::InvalidArgument(format!("cwd must be an absolute path: {cwd}")));
        }
        Ok(cwd)
    }

    /// The VM's default environment, then `fixed`, then the caller's `env`, as `KEY=value`.
    pub(super) fn environment(
        &self,
        env: &BTreeMap<String, String>,
        fixed: &[(&str, String)],
        cwd: &str,
    ) -> Result<Vec<String>> {
        let mut full = self.inner.env.clone();
        for (key, value) in fixed {
            full.insert(key.to_string(), value.clone());
        }
        for (key, value) in env {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(VmError::InvalidArgument(format!("invalid environment variable name: {key:?}")));
            }
            full.insert(key.clone(), value.clone());
        }
        full.insert("PWD".into(), cwd.to_string());
        Ok(full.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
    }

    pub(super) fn signal_record(&self, record: &ProcessRecord, signal: i32) {
        self.signal(record, signal);
    }

    fn signal(&self, record: &ProcessRecord, signal: i32) {
        if record.exit_code().is_none() {
            let _ = self
                .inner
                .outgoing
                .send(Outgoing { request: Request::Signal { pid: record.pid, signal }, fds: Vec::new() });
        }
    }

    fn record(&self, pid: i32) -> Result<Arc<ProcessRecord>> {
        self.inner.shared.processes.lock().unwrap().get(pid).ok_or(VmError::ProcessNotFound(pid))
    }

    /// Runs `argv` (no shell, working directory `/`) to completion with `stdin` as its input;
    /// returns its exit code, stdout and stderr. For agentvm's own helpers (`vm-fs`).
    pub(crate) async fn run_capture(&self, argv: Vec<String>, stdin: bytes::Bytes) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let record = self.start(Kind::Exec, argv, &BTreeMap::new(), Some("/"), HELPER_OUTPUT_BYTES).await?;
        // If the caller stops waiting (dropped future), the program is killed.
        let mut guard = KillOnDrop { vm: self, record: &record, armed: true };
        if let Some(pipe) = record.take_stdin().await {
            tokio::spawn(feed_stdin(Arc::clone(&record), pipe, stdin));
        }
        let exit_code = record.wait().await;
        guard.armed = false;
        let capture = record.take_capture();
        Ok((exit_code, capture.stdout, capture.stderr))
    }
}

/// Kills an `exec` command whose caller stopped waiting for it (the future was dropped while
/// `armed`); the caller disarms it once the command has ended.
struct KillOnDrop<'a> {
    vm: &'a Vm,
    record: &'a Arc<ProcessRecord>,
    armed: bool,
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.vm.signal(self.record, libc::SIGKILL);
        }
    }
}

/// Writes `data` to the stdin of an `exec` command or a helper, then closes it: when the
/// command has read everything, or has exited (EPIPE, or its exit published while a descendant
/// still holds the pipe unread), whichever comes first. The command's output and exit code
/// say what happened; nothing is reported from here.
async fn feed_stdin(record: Arc<ProcessRecord>, mut pipe: pipe::Sender, data: bytes::Bytes) {
    tokio::select! {
        _ = pipe.write_all(&data) => {}
        _ = record.wait() => {}
    }
}

/// Captured output as text: moved when it is valid UTF-8, invalid sequences replaced otherwise.
fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| VmError::io("creating a pipe", e.into()))
}
