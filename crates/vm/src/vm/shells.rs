//! The shell API: interactive shells on a terminal (`openShell`, `writeShell`, `resizeShell`,
//! `closeShell`, `waitShell`). The terminal itself is watched by [`crate::shell`].

use std::sync::Arc;
use std::time::Duration;

use agentvm_sandbox::protocol::{Request, SpawnRequest, Stdio};
use tokio::sync::oneshot;

use crate::control::Outgoing;
use crate::error::{Result, VmError};
use crate::shell::{self, ShellChunk, ShellOptions};

use super::{Pending, Vm};

/// Longest `closeShell` waits for the processes of the shell's session to be gone after SIGKILL.
const SESSION_GONE_WAIT: Duration = Duration::from_secs(5);
/// Longest pause between two looks at whether they are gone (the pauses double from 1 ms).
const SESSION_POLL_MAX: Duration = Duration::from_millis(50);

impl Vm {
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
    /// ([`shell::CLOSE_GRACE`]), SIGKILL to whatever of the session is left. Returns once the
    /// shell has ended and no process of its session is left in the VM, zombies included (at
    /// most 5 s after the SIGKILL, for a process stuck in the kernel). Idempotent.
    pub async fn close_shell(&self, shell_id: &str) -> Result<()> {
        let record = self.shell(shell_id)?;
        let pid = record.pid;
        if record.exit_code().is_none() {
            self.signal_session(pid, libc::SIGHUP);
            let _ = tokio::time::timeout(shell::CLOSE_GRACE, record.wait()).await;
        }
        // Background jobs that ignore SIGHUP belong to the shell too.
        self.signal_session(pid, libc::SIGKILL);
        record.wait().await;
        self.session_gone(pid).await
    }

    /// Waits until no process of session `sid` is left (killed processes are reaped by init
    /// within milliseconds), killing the session again each time one is found: a job the shell
    /// forked while the first SIGKILL went out. Gives up after [`SESSION_GONE_WAIT`] (only a
    /// process stuck in the kernel outlasts SIGKILL that long) and says so in the log.
    async fn session_gone(&self, sid: i32) -> Result<()> {
        let deadline = tokio::time::Instant::now() + SESSION_GONE_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            let entries = match self.list_entries().await {
                Ok(entries) => entries,
                // The VM stopped: every process of it is gone.
                Err(_) if !self.is_running() => return Ok(()),
                Err(e) => return Err(e),
            };
            let left = entries.iter().filter(|p| p.sid == sid).count();
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(vm = %self.id(), sid, left, "processes of a closed shell outlast SIGKILL");
                return Ok(());
            }
            self.signal_session(sid, libc::SIGKILL);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SESSION_POLL_MAX);
        }
    }

    /// Sends `signal` to every process of the session led by the shell process `pid`.
    fn signal_session(&self, pid: i32, signal: i32) {
        let _ = self.inner.outgoing.send(Outgoing { request: Request::SignalSession { pid, signal }, fds: Vec::new() });
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
}
