//! The shell API: interactive shells on a terminal (`openShell`, `writeShell`, `resizeShell`,
//! `closeShell`, `waitShell`). The terminal itself is watched by [`crate::shell`].

use std::sync::Arc;

use agentvm_sandbox::protocol::{Request, SpawnRequest, Stdio};
use tokio::sync::oneshot;

use crate::control::Outgoing;
use crate::error::{Result, VmError};
use crate::shell::{self, ShellChunk, ShellOptions};

use super::{Pending, Vm};

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
}
