//! A running VM and its process API.
//!
//! Data flows one way: a call on [`Vm`] becomes a request to init (with the stdio descriptors it
//! needs); init's answers come back on the reader task, which registers processes and starts
//! their output pumps; pumps turn output into events and exit codes. No call holds a lock while
//! it waits, so a long `waitProcess` or `exec` never delays other calls on the same VM.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agentvm_sandbox::cgroup::VmCgroup;
use agentvm_sandbox::config::{Confinement, InitConfig, RootfsSpec};
use agentvm_sandbox::launch::{describe_early_exit, launch, InitProcess, LaunchSpec, Launched};
use agentvm_sandbox::protocol::{Event, ProcessEntry, Request, SpawnRequest, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::control::{self, Outgoing};
use crate::error::{Result, VmError};
use crate::events::{EventLog, Subscription};
use crate::host::VmHost;
use crate::process::{Kind, OutputChunk, OutputLimits, ProcessRecord, ProcessTable, HELPER_OUTPUT_BYTES};
use crate::pump::Pump;
use crate::shell::{self, ShellChunk, ShellOptions, ShellTable};
use crate::tree::build_tree;
use crate::types::{
    ExecOptions, ExecResult, ProcessInfo, ProcessTreeNode, SpawnOptions, SpawnedProcessInfo, VmOptions,
};

/// `PATH` of every VM process unless overridden.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A handle on a running VM. Cloning is cheap; when the last handle is dropped the VM is torn
/// down (every process killed, cgroups removed). Its files stay in its directory.
#[derive(Clone)]
pub struct Vm {
    inner: Arc<VmInner>,
}

struct VmInner {
    shared: Arc<Shared>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    init: InitProcess,
    cgroup: Option<VmCgroup>,
    env: BTreeMap<String, String>,
    home: String,
    /// `/bin/bash` or `/bin/sh`: the default program of `open_shell`.
    login_shell: String,
    /// Most output `exec` keeps per stream.
    exec_output_bytes: usize,
    torn_down: AtomicBool,
    /// Keeps the VM's host uid range its own on this machine while this handle lives.
    _range_lease: Option<crate::uid_ranges::RangeLease>,
    /// The VM's share of the server-wide terminal budget, held while this handle lives.
    _terminals: crate::terminal_budget::TerminalLease,
}

/// State shared with the reader task and the pumps.
struct Shared {
    id: String,
    events: Arc<EventLog>,
    /// Whether the event log ends with this VM (it does unless the caller supplied it).
    owns_events: bool,
    processes: Mutex<ProcessTable>,
    shells: Arc<Mutex<ShellTable>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_request: AtomicU64,
    alive: AtomicBool,
    /// Becomes `true` once the VM has stopped (shut down, or its init died).
    stopped: tokio::sync::watch::Sender<bool>,
    ready: Mutex<Option<oneshot::Sender<Result<(), String>>>>,
    /// Set once the control channel exists; used to kill exec processes whose caller left.
    outgoing: OnceLock<mpsc::UnboundedSender<Outgoing>>,
    process_log_bytes: usize,
    /// What all the VM's replay logs hold together (see [`crate::replay_log`]).
    replay_budget: Arc<crate::replay_log::Budget>,
}

/// A request waiting for init's answer.
enum Pending {
    Spawn {
        kind: Kind,
        command: String,
        args: Vec<String>,
        stdin: pipe::Sender,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        /// Most output captured per stream (for `exec` and helpers).
        capture_limit: usize,
        reply: oneshot::Sender<Result<Arc<ProcessRecord>>>,
    },
    Shell {
        shell_id: String,
        reply: oneshot::Sender<Result<Arc<shell::ShellRecord>>>,
    },
    List {
        entries: Vec<ProcessEntry>,
        reply: oneshot::Sender<Vec<ProcessEntry>>,
    },
}

impl Vm {
    pub(crate) async fn create(host: VmHost, id: String, options: VmOptions) -> Result<Vm> {
        let create_failed = |message: String| VmError::CreateFailed { vm: id.clone(), message };
        // Host-wide budgets first: a VM that cannot have its terminals does not boot.
        let terminals = crate::terminal_budget::TerminalBudget::global().reserve(options.max_ptys)?;
        let (upper, work, ids, range_lease) = host.prepare_vm_dir(&id)?;
        // The quota is lifted while init mounts the root filesystem (overlayfs needs a little
        // room in `work`: a VM at its quota would otherwise boot read-only and could not free
        // space) and set once init is ready, before any program of the VM runs.
        host.apply_disk_quota(&id, None)?;
        let inner = &host.inner;
        let hostname = options.hostname.clone().unwrap_or_else(|| hostname_for(&id));
        let config = InitConfig {
            hostname: hostname.clone(),
            rootfs: RootfsSpec {
                base: inner.base.dir.clone(),
                upper,
                work,
                readonly_binds: inner.base.readonly_binds.clone(),
                max_ptys: options.max_ptys,
            },
            user: inner.user.clone(),
            init_is_root: ids.init_is_root(),
            confinement: options
                .confinement
                .clone()
                .unwrap_or_else(|| Confinement::sized_for(options.limits.memory_bytes, options.limits.pids)),
        };

        // Creating cgroups and launching are a few blocking system calls.
        let launch_host = host.clone();
        let limits = options.limits;
        let (launched, cgroup) = tokio::task::spawn_blocking(move || -> Result<(Launched, Option<VmCgroup>)> {
            let h = &launch_host.inner;
            let cgroup = h
                .cgroups
                .create(&launch_host.next_cgroup_name(), &limits)
                .map_err(|e| VmError::io("creating the VM's cgroups", e))?;
            let spec = LaunchSpec { init_program: &h.init_program, ids, cgroup: cgroup.as_ref(), config: &config };
            match launch(&spec) {
                Ok(launched) => Ok((launched, cgroup)),
                Err(e) => {
                    if let Some(cg) = &cgroup {
                        let _ = cg.remove();
                    }
                    Err(VmError::io("starting the VM", e))
                }
            }
        })
        .await
        .map_err(|e| create_failed(format!("launcher task failed: {e}")))??;
        let Launched { init, control } = launched;

        let (ready_tx, ready_rx) = oneshot::channel();
        let owns_events = options.events.is_none();
        let shared = Arc::new(Shared {
            id: id.clone(),
            events: options.events.clone().unwrap_or_else(|| EventLog::new(options.event_log)),
            owns_events,
            processes: Mutex::new(ProcessTable::default()),
            shells: Arc::new(Mutex::new(ShellTable::default())),
            pending: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            alive: AtomicBool::new(true),
            stopped: tokio::sync::watch::Sender::new(false),
            ready: Mutex::new(Some(ready_tx)),
            outgoing: OnceLock::new(),
            process_log_bytes: options.process_log_bytes,
            replay_budget: crate::replay_log::Budget::new(crate::replay_log::REPLAY_BYTES_PER_VM),
        });
        let started = nix::fcntl::fcntl(&control, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(std::io::Error::from)
            .and_then(|_| {
                let on_event = Arc::clone(&shared);
                let on_close = Arc::clone(&shared);
                control::start(control, move |e, fds| on_event.handle(e, fds), move || on_close.init_gone())
            });
        let outgoing = match started {
            Ok(tx) => tx,
            Err(e) => {
                teardown(&init, cgroup.as_ref());
                return Err(VmError::io("watching the VM's control socket", e));
            }
        };
        let _ = shared.outgoing.set(outgoing.clone());

        let mut env = BTreeMap::new();
        let user = &inner.user;
        let login_shell = inner.base.shell.clone();
        for (k, v) in [
            ("HOME", user.home.as_str()),
            ("USER", user.name.as_str()),
            ("LOGNAME", user.name.as_str()),
            ("SHELL", inner.base.shell.as_str()),
            ("PATH", DEFAULT_PATH),
            ("LANG", "C.UTF-8"),
            ("HOSTNAME", hostname.as_str()),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        let vm = Vm {
            inner: Arc::new(VmInner {
                shared,
                outgoing,
                init,
                cgroup,
                env,
                home: user.home.clone(),
                login_shell,
                exec_output_bytes: options.exec_output_bytes,
                torn_down: AtomicBool::new(false),
                _range_lease: range_lease,
                _terminals: terminals,
            }),
        };
        match ready_rx.await {
            Ok(Ok(())) => match host.apply_disk_quota(&id, options.disk_bytes) {
                Ok(()) => Ok(vm),
                Err(e) => {
                    vm.inner.teardown();
                    Err(e)
                }
            },
            Ok(Err(message)) => {
                vm.inner.teardown();
                Err(create_failed(message))
            }
            Err(_) => {
                // Init exited before it was ready; its exit status says why.
                let status = vm.inner.init.wait_blocking().ok().flatten();
                vm.inner.teardown();
                Err(create_failed(
                    status.map_or_else(|| "init exited before the VM was ready".into(), describe_early_exit),
                ))
            }
        }
    }

    /// The VM's id (the name of its directory).
    pub fn id(&self) -> &str {
        &self.inner.shared.id
    }

    /// Host pid of the VM's init, for diagnostics.
    pub fn host_pid(&self) -> i32 {
        self.inner.init.host_pid
    }

    /// The VM's cgroup directories on the host (empty without cgroups), for diagnostics.
    pub fn cgroup_dirs(&self) -> Vec<std::path::PathBuf> {
        self.inner.cgroup.as_ref().map(|c| c.dirs().to_vec()).unwrap_or_default()
    }

    /// `false` once the VM has stopped or its init died.
    pub fn is_running(&self) -> bool {
        self.inner.shared.alive.load(Ordering::Acquire)
    }

    /// Resolves once the VM has stopped: shut down, dropped, or its init died.
    pub async fn stopped(&self) {
        let mut rx = self.inner.shared.stopped.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// `true` while a spawned process runs or a shell is open (what keeps a VM from sleeping).
    pub fn has_activity(&self) -> bool {
        let shared = &self.inner.shared;
        let processes = shared.processes.lock().unwrap().spawned().iter().any(|r| r.exit_code().is_none());
        processes || !shared.shells.lock().unwrap().open_ids().is_empty()
    }

    /// Runs `command` with `/bin/sh -c` to completion and returns its exit code and output.
    pub async fn exec(&self, command: &str, options: ExecOptions) -> Result<ExecResult> {
        let argv = vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()];
        let limit = self.inner.exec_output_bytes;
        let record = self.start(Kind::Exec, argv, &options.env, options.cwd.as_deref(), limit).await?;
        // If the caller stops waiting (dropped future), the command is killed.
        let mut guard = KillOnDrop { vm: self, record: &record, armed: true };
        let stdin = record.stdin.lock().await.take();
        if let (Some(mut stdin), Some(data)) = (stdin, options.stdin) {
            tokio::spawn(async move {
                // EPIPE when the command exits without reading everything: nothing to report.
                let _ = stdin.write_all(&data).await;
            });
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
    /// reference product; writing after `closeProcessStdin` is an error.
    pub async fn write_process_stdin(&self, pid: i32, data: &[u8]) -> Result<()> {
        let record = self.record(pid)?;
        if record.exit_code().is_some() {
            return Ok(());
        }
        let mut stdin = record.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(VmError::InvalidState(format!("stdin of process {pid} is closed")));
        };
        match pipe.write_all(data).await {
            Ok(()) => Ok(()),
            // The process closed its stdin or exited meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(VmError::io(format!("writing to stdin of process {pid}"), e)),
        }
    }

    /// Closes a process's stdin (the process reads end of file). Idempotent.
    pub async fn close_process_stdin(&self, pid: i32) -> Result<()> {
        let record = self.record(pid)?;
        record.stdin.lock().await.take();
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
    /// agentvm's init.
    pub async fn all_processes(&self) -> Result<Vec<ProcessInfo>> {
        let (reply, answer) = oneshot::channel();
        let id = self.register(Pending::List { entries: Vec::new(), reply })?;
        self.send(Request::ListProcesses { id }, Vec::new(), id)?;
        let entries = answer.await.map_err(|_| self.stopped_error())?;
        Ok(entries
            .into_iter()
            .map(|e| ProcessInfo {
                pid: e.pid,
                ppid: e.ppid,
                pgid: e.pgid,
                sid: e.sid,
                driver: "native".into(),
                command: e.command,
                args: e.args,
                cwd: e.cwd,
                status: if e.exited { "exited" } else { "running" }.into(),
                exit_code: e.exit_code,
                start_time: e.start_time_ms,
            })
            .collect())
    }

    /// [`Vm::all_processes`] as a forest by parent pid.
    pub async fn process_tree(&self) -> Result<Vec<ProcessTreeNode>> {
        Ok(build_tree(self.all_processes().await?))
    }

    /// Reads the event stream from `from` (replaying retained events) or from now on.
    pub fn subscribe(&self, from: Option<u64>) -> Subscription {
        self.inner.shared.events.subscribe(from)
    }

    pub fn events(&self) -> &Arc<EventLog> {
        &self.inner.shared.events
    }

    /// Stops the VM: SIGTERM to every process, up to `grace` for them to exit, then SIGKILL to
    /// what is left; removes its cgroups. Files stay. Idempotent.
    pub async fn shutdown(&self, grace: Duration) {
        if self.is_running() {
            let grace_ms = grace.as_millis().min(u64::MAX as u128) as u64;
            let _ = self.inner.outgoing.send(Outgoing { request: Request::Shutdown { grace_ms }, fds: Vec::new() });
            let inner = Arc::clone(&self.inner);
            let waited = tokio::task::spawn_blocking(move || inner.init.wait_blocking());
            let _ = tokio::time::timeout(grace + Duration::from_secs(1), waited).await;
        }
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.teardown()).await;
    }

    async fn start(
        &self,
        kind: Kind,
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        capture_limit: usize,
    ) -> Result<Arc<ProcessRecord>> {
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

        let (reply, answer) = oneshot::channel();
        let id = self.register(Pending::Spawn {
            kind,
            command: argv[0].clone(),
            args: argv[1..].to_vec(),
            stdin,
            stdout,
            stderr,
            capture_limit,
            reply,
        })?;
        let request =
            Request::Spawn(SpawnRequest { id, argv, env: full_env, cwd: cwd.to_string(), stdio: Stdio::Pipes });
        self.send(request, vec![stdin_read, stdout_write, stderr_write], id)?;
        answer.await.map_err(|_| self.stopped_error())?
    }

    /// The working directory for a new program: absolute, default the user's home.
    fn working_dir<'a>(&'a self, cwd: Option<&'a str>) -> Result<&'a str> {
        let cwd = cwd.unwrap_or(&self.inner.home);
        if !cwd.starts_with('/') {
            return Err(VmError::InvalidArgument(format!("cwd must be an absolute path: {cwd}")));
        }
        Ok(cwd)
    }

    /// The VM's default environment, then `fixed`, then the caller's `env`, as `KEY=value`.
    fn environment(&self, env: &BTreeMap<String, String>, fixed: &[(&str, String)], cwd: &str) -> Result<Vec<String>> {
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

    /// Opens an interactive shell on a new terminal; returns its id (`shell-<n>`).
    pub async fn open_shell(&self, options: ShellOptions) -> Result<String> {
        if !self.is_running() {
            return Err(self.stopped_error());
        }
        let cols = options.cols.unwrap_or(shell::DEFAULT_COLS);
        let rows = options.rows.unwrap_or(shell::DEFAULT_ROWS);
        shell::validate_size(cols, rows)?;
        let mut argv = match &options.command {
            Some(command) if command.is_empty() => {
                return Err(VmError::InvalidArgument("command must not be empty".into()));
            }
            Some(command) => vec![command.clone()],
            None if self.inner.login_shell == "/bin/bash" => vec!["bash".to_string()],
            None => vec!["sh".to_string()],
        };
        match options.args {
            Some(args) => argv.extend(args),
            None if options.command.is_none() && argv[0] == "bash" => argv.push("-l".into()),
            None => {}
        }
        let cwd = self.working_dir(options.cwd.as_deref())?;
        let fixed =
            [("TERM", "xterm-256color".to_string()), ("COLUMNS", cols.to_string()), ("LINES", rows.to_string())];
        let env = self.environment(&options.env, &fixed, cwd)?;
        let shell_id = self.inner.shared.shells.lock().unwrap().next_id();
        let (reply, answer) = oneshot::channel();
        let id = self.register(Pending::Shell { shell_id, reply })?;
        let request =
            Request::Spawn(SpawnRequest { id, argv, env, cwd: cwd.to_string(), stdio: Stdio::Terminal { cols, rows } });
        self.send(request, Vec::new(), id)?;
        let record = answer.await.map_err(|_| self.stopped_error())??;
        Ok(record.id.clone())
    }

    /// Writes to a shell's terminal (what a user types). An error once the shell has exited.
    pub async fn write_shell(&self, shell_id: &str, data: &[u8]) -> Result<()> {
        self.shell(shell_id)?.write(data).await
    }

    /// Sets a shell's window size; the program in the foreground gets SIGWINCH.
    pub fn resize_shell(&self, shell_id: &str, cols: u16, rows: u16) -> Result<()> {
        shell::validate_size(cols, rows)?;
        self.shell(shell_id)?.resize(cols, rows)
    }

    /// Hangs a shell up: SIGHUP to its whole session, then, after a short grace
    /// ([`shell::CLOSE_GRACE`]), SIGKILL to whatever of the session is left. Idempotent.
    pub async fn close_shell(&self, shell_id: &str) -> Result<()> {
        let record = self.shell(shell_id)?;
        let pid = record.pid;
        let session = |signal| Outgoing { request: Request::SignalSession { pid, signal }, fds: Vec::new() };
        if record.exit_code().is_none() {
            let _ = self.inner.outgoing.send(session(libc::SIGHUP));
            let _ = tokio::time::timeout(shell::CLOSE_GRACE, record.wait()).await;
        }
        // Background jobs that ignore SIGHUP belong to the shell too.
        let _ = self.inner.outgoing.send(session(libc::SIGKILL));
        record.wait().await;
        Ok(())
    }

    /// Waits for a shell to end; returns its exit code.
    pub async fn wait_shell(&self, shell_id: &str) -> Result<i32> {
        Ok(self.shell(shell_id)?.wait().await)
    }

    /// Recent terminal output of a shell with sequence number above `after`.
    pub fn shell_output(&self, shell_id: &str, after: Option<u64>) -> Result<Vec<ShellChunk>> {
        Ok(self.shell(shell_id)?.output_since(after))
    }

    /// Ids of the shells that are open.
    pub fn open_shells(&self) -> Vec<String> {
        self.inner.shared.shells.lock().unwrap().open_ids()
    }

    fn shell(&self, shell_id: &str) -> Result<Arc<shell::ShellRecord>> {
        self.inner
            .shared
            .shells
            .lock()
            .unwrap()
            .get(shell_id)
            .ok_or_else(|| VmError::ShellNotFound(shell_id.to_string()))
    }

    /// Records a request that awaits init's answer. Refused once init is gone: the check and
    /// the insertion happen under the lock [`Shared::init_gone`] takes to fail everything.
    fn register(&self, pending: Pending) -> Result<u64> {
        let shared = &self.inner.shared;
        let mut table = shared.pending.lock().unwrap();
        if !shared.alive.load(Ordering::Acquire) {
            return Err(self.stopped_error());
        }
        let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        table.insert(id, pending);
        Ok(id)
    }

    fn send(&self, request: Request, fds: Vec<OwnedFd>, id: u64) -> Result<()> {
        if self.inner.outgoing.send(Outgoing { request, fds }).is_err() {
            self.inner.shared.pending.lock().unwrap().remove(&id);
            return Err(self.stopped_error());
        }
        Ok(())
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

    fn stopped_error(&self) -> VmError {
        VmError::Stopped(self.inner.shared.id.clone())
    }

    /// Runs `argv` (no shell, working directory `/`) to completion with `stdin` as its input;
    /// returns its exit code, stdout and stderr. For agentvm's own helpers (`vm-fs`).
    pub(crate) async fn run_capture(&self, argv: Vec<String>, stdin: bytes::Bytes) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        let record = self.start(Kind::Exec, argv, &BTreeMap::new(), Some("/"), HELPER_OUTPUT_BYTES).await?;
        // If the caller stops waiting (dropped future), the program is killed.
        let mut guard = KillOnDrop { vm: self, record: &record, armed: true };
        if let Some(mut pipe) = record.stdin.lock().await.take() {
            // EPIPE when the program exits without reading everything: its output says why.
            tokio::spawn(async move { pipe.write_all(&stdin).await });
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

impl Shared {
    /// Handles one event from init (runs on the reader task).
    fn handle(self: &Arc<Self>, event: Event, fds: Vec<OwnedFd>) {
        match event {
            Event::Ready => self.answer_ready(Ok(())),
            Event::SetupFailed { message } => self.answer_ready(Err(message)),
            Event::Spawned { id, pid } => {
                let pending = self.pending.lock().unwrap().remove(&id);
                let (kind, command, args, stdin, stdout, stderr, capture_limit, reply) = match pending {
                    Some(Pending::Spawn { kind, command, args, stdin, stdout, stderr, capture_limit, reply }) => {
                        (kind, command, args, stdin, stdout, stderr, capture_limit, reply)
                    }
                    Some(Pending::Shell { shell_id, reply }) => {
                        let Some(master) = fds.into_iter().next() else {
                            let _ = reply.send(Err(VmError::SpawnFailed("init sent no terminal".into())));
                            return;
                        };
                        let started = shell::start(
                            &self.shells,
                            &self.events,
                            shell_id,
                            pid,
                            master,
                            self.process_log_bytes,
                            &self.replay_budget,
                        )
                        .map_err(|e| VmError::io("watching the terminal", e));
                        let _ = reply.send(started);
                        return;
                    }
                    _ => return,
                };
                let limits = OutputLimits {
                    replay_bytes: self.process_log_bytes,
                    capture_bytes: capture_limit,
                    budget: Arc::clone(&self.replay_budget),
                };
                let (record, init_exit) = ProcessRecord::new(pid, command, args, kind, stdin, &limits);
                self.processes.lock().unwrap().insert(Arc::clone(&record));
                let table = Arc::clone(self);
                tokio::spawn(
                    Pump {
                        record: Arc::clone(&record),
                        events: Arc::clone(&self.events),
                        stdout,
                        stderr,
                        init_exit,
                        on_exit: Box::new(move |record| {
                            let mut processes = table.processes.lock().unwrap();
                            match record.kind {
                                Kind::Spawned => processes.retire(record),
                                Kind::Exec => processes.remove(record),
                            }
                        }),
                    }
                    .run(),
                );
                if reply.send(Ok(Arc::clone(&record))).is_err() && kind == Kind::Exec {
                    // Nobody waits for this command any more.
                    if let Some(outgoing) = self.outgoing.get() {
                        let _ = outgoing.send(Outgoing {
                            request: Request::Signal { pid, signal: libc::SIGKILL },
                            fds: Vec::new(),
                        });
                    }
                }
            }
            Event::SpawnFailed { id, message } => match self.pending.lock().unwrap().remove(&id) {
                Some(Pending::Spawn { reply, .. }) => {
                    let _ = reply.send(Err(VmError::SpawnFailed(message)));
                }
                Some(Pending::Shell { reply, .. }) => {
                    let _ = reply.send(Err(VmError::SpawnFailed(message)));
                }
                _ => {}
            },
            Event::Exited { pid, code } => {
                if let Some(record) = self.processes.lock().unwrap().get(pid) {
                    record.report_exit(code);
                } else if let Some(shell) = self.shells.lock().unwrap().by_pid(pid) {
                    shell.report_exit(code);
                }
            }
            Event::Processes { id, entries, last } => {
                let mut pending = self.pending.lock().unwrap();
                if let Some(Pending::List { entries: collected, .. }) = pending.get_mut(&id) {
                    collected.extend(entries);
                }
                if last {
                    if let Some(Pending::List { entries, reply }) = pending.remove(&id) {
                        let _ = reply.send(entries);
                    }
                }
            }
        }
    }

    fn answer_ready(&self, result: Result<(), String>) {
        if let Some(tx) = self.ready.lock().unwrap().take() {
            let _ = tx.send(result);
        }
    }

    /// The control socket closed: init and every process of the VM are gone.
    fn init_gone(&self) {
        {
            let mut pending = self.pending.lock().unwrap();
            self.alive.store(false, Ordering::Release);
            pending.clear();
        }
        self.stopped.send_replace(true);
        self.ready.lock().unwrap().take();
        for record in self.processes.lock().unwrap().all() {
            record.abandon();
        }
        for shell in self.shells.lock().unwrap().all() {
            shell.abandon();
        }
    }
}

impl VmInner {
    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        {
            let mut pending = self.shared.pending.lock().unwrap();
            self.shared.alive.store(false, Ordering::Release);
            pending.clear();
        }
        teardown(&self.init, self.cgroup.as_ref());
        self.shared.stopped.send_replace(true);
        if self.shared.owns_events {
            self.shared.events.close();
        }
    }
}

impl Drop for VmInner {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Kills init (and with it every process of the VM), reaps it and removes the cgroups.
fn teardown(init: &InitProcess, cgroup: Option<&VmCgroup>) {
    init.kill();
    if let Err(e) = init.wait_blocking() {
        tracing::warn!("reaping a VM's init: {e}");
    }
    if let Some(cgroup) = cgroup {
        if let Err(e) = cgroup.remove() {
            tracing::warn!("removing a VM's cgroups: {e}");
        }
    }
}

/// Captured output as text: moved when it is valid UTF-8, invalid sequences replaced otherwise.
fn utf8_lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| VmError::io("creating a pipe", e.into()))
}

/// A valid host name from any text (a VM id, an actor key): at most 63 characters of
/// lowercase letters, digits and `-`; `agentvm` when nothing usable remains.
pub fn hostname_for(id: &str) -> String {
    let name: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(63).collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "agentvm".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_valid() {
        assert_eq!(hostname_for("My_Agent.1"), "my-agent-1");
        assert_eq!(hostname_for("___"), "agentvm");
        assert_eq!(hostname_for(&"a".repeat(100)).len(), 63);
    }

    #[allow(dead_code)]
    fn handles_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Vm>();
    }
}
