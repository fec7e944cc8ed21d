//! Errors of the VM API. Their `Display` texts are what clients see, so they follow the
//! reference product's wording (`Process not found: <pid>`) and the POSIX-code style
//! (`ENOENT: ...`) where a system error is the cause.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Process not found: {0}")]
    ProcessNotFound(i32),
    #[error("Shell not found: {0}")]
    ShellNotFound(String),
    /// The program could not be started (text starts with the POSIX code, e.g. `ENOENT: ...`).
    #[error("{0}")]
    SpawnFailed(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation does not apply in the current state (e.g. stdin already closed).
    #[error("{0}")]
    InvalidState(String),
    /// The VM could not be created.
    #[error("creating VM {vm}: {message}")]
    CreateFailed { vm: String, message: String },
    /// The VM has stopped (shut down, or its init died).
    #[error("VM {0} is not running")]
    Stopped(String),
    /// A host-wide or per-VM budget is used up (uid ranges, terminals, VMs...): the text says
    /// which, and what the limit is.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// A filesystem operation failed; the text starts with the POSIX code, in Node's style
    /// (`ENOENT: no such file or directory, open '/home/user/x'`).
    #[error("{0}")]
    FileSystem(String),
}

impl VmError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> VmError {
        VmError::Io { context: context.into(), source }
    }
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;
