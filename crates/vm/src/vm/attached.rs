//! Programs whose stdio the caller drives itself: an ACP agent speaks JSON-RPC on its stdin and
//! stdout, so its output must reach the session layer as a byte stream, not as `processOutput`
//! events. It is an ordinary process of the VM otherwise: started by init as the VM user, seen
//! by `allProcesses` and `processTree`, killed with the VM.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::net::unix::pipe;

use crate::error::{Result, VmError};
use crate::process::{Kind, ProcessRecord};
use crate::types::OutputStream;

use super::Vm;

/// How much of an attached program's stderr is kept (its last bytes), for error reports.
pub const STDERR_TAIL_BYTES: usize = 16 << 10;

/// A running program with its stdin and stdout in the caller's hands. The three parts are
/// separate so that a writer task, a reader task and whoever watches the program can each own
/// theirs; dropping `stdin` closes the program's stdin.
pub struct AttachedProcess {
    pub stdin: pipe::Sender,
    pub stdout: pipe::Receiver,
    pub handle: AttachedHandle,
}

/// Watches and signals an attached program (cheap to clone).
#[derive(Clone)]
pub struct AttachedHandle {
    /// Its pid in the VM.
    pub pid: i32,
    record: Arc<ProcessRecord>,
    vm: Vm,
}

impl Vm {
    /// Starts `argv` (no shell) with `env` added to the VM's environment and `cwd` (default the
    /// user's home), handing its stdin and stdout to the caller; its stderr's last
    /// [`STDERR_TAIL_BYTES`] are kept ([`AttachedHandle::stderr_tail`]).
    pub async fn spawn_attached(
        &self,
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
    ) -> Result<AttachedProcess> {
        if argv.is_empty() {
            return Err(VmError::InvalidArgument("command must not be empty".into()));
        }
        // Attached: stdout is the caller's, and stderr is captured as its tail from the first byte.
        let (record, stdout) = self.start_with(Kind::Exec, argv, env, cwd, STDERR_TAIL_BYTES, true).await?;
        let Some(stdout) = stdout else {
            return Err(VmError::InvalidState(format!(
                "process {} lost its stdout before it was attached",
                record.pid
            )));
        };
        // A program that already exited (`true`, a quick `sh -c`) had its stdin closed with its
        // exit: the caller gets a stdin whose reader is gone, as writing to it would find anyway.
        let stdin = match record.take_stdin().await {
            Some(stdin) => stdin,
            None => {
                let (stdin, reader) =
                    pipe::pipe().map_err(|source| VmError::Io { context: "creating a pipe".into(), source })?;
                drop(reader);
                stdin
            }
        };
        let handle = AttachedHandle { pid: record.pid, record, vm: self.clone() };
        Ok(AttachedProcess { stdin, stdout, handle })
    }
}

impl AttachedHandle {
    /// Waits for the program to end; its exit code (128+signal for a signal).
    pub async fn wait(&self) -> i32 {
        self.record.wait().await
    }

    /// Its exit code, once it ended.
    pub fn exit_code(&self) -> Option<i32> {
        self.record.exit_code()
    }

    /// The last bytes it wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.record.captured(OutputStream::Stderr)).into_owned()
    }

    /// Sends `signal` to its process group.
    pub fn signal(&self, signal: i32) {
        self.vm.signal_record(&self.record, signal);
    }
}
