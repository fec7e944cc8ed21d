//! Errors of the VM API, as data: each variant says what kind of failure it is and carries its
//! details (an error number, a path, a pid), never a text to parse. Their `Display` is the
//! client-facing text (the reference product's wording, `Process not found: <pid>`, and Node's
//! style, `ENOENT: no such file or directory, open '/home/user/x'`, for system errors); the API
//! layer (the server's `error.rs`) shows it and takes the code from [`VmError::errno`], never
//! from the text.

use std::io;

pub use agentvm_sandbox::fsops::error::FsError;
pub use agentvm_sandbox::protocol::SpawnError;
pub use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Process not found: {0}")]
    ProcessNotFound(i32),
    #[error("Shell not found: {0}")]
    ShellNotFound(String),
    /// The program could not be started: init's [`SpawnError`] (errno and what it applied to).
    #[error(transparent)]
    SpawnFailed(#[from] SpawnError),
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
    /// A filesystem operation failed (see [`FileError`]).
    #[error(transparent)]
    FileSystem(FileError),
    /// Nothing listens on this port of the VM's loopback (the connection was refused).
    #[error("ECONNREFUSED: nothing listens on port {port} in the VM")]
    PortClosed { port: u16 },
    /// An HTTP request into the VM (`vmFetch`) failed after connecting.
    #[error("vmFetch to port {port}: {problem}")]
    Fetch { port: u16, problem: FetchProblem },
    /// Init could not make a socket in the VM's network namespace (a listener's port may be
    /// taken: `EADDRINUSE`).
    #[error(transparent)]
    Socket(#[from] agentvm_sandbox::protocol::SocketError),
}

/// What went wrong with an HTTP request into the VM ([`VmError::Fetch`]).
#[derive(Debug, thiserror::Error)]
pub enum FetchProblem {
    /// No complete answer within the time limit.
    #[error("no complete answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// The response body is larger than the limit (bytes).
    #[error("the response body is larger than {} MiB (use a preview URL to stream it)", .0 >> 20)]
    TooLarge(usize),
    /// The answer is not valid HTTP/1.1.
    #[error("the server's answer is not valid HTTP/1.1: {0}")]
    NotHttp(String),
    /// The connection broke.
    #[error("{0}")]
    Connection(io::Error),
}

/// Why a filesystem operation ([`crate::files`]) failed: the operation's own failure inside the
/// VM, or the file helper that runs it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The operation failed inside the VM: errno, system call and path.
    #[error(transparent)]
    Operation(#[from] FsError),
    /// The VM's file helper (`agentvm vm-fs`) exited with a failure; its stderr says why.
    #[error("EIO: the VM's file helper failed (exit code {exit_code}): {stderr}")]
    HelperFailed { exit_code: i32, stderr: String },
    /// The helper answered something that is not a valid reply.
    #[error("EIO: unexpected answer from the VM's file helper: {0}")]
    HelperAnswer(String),
    /// The request could not be encoded for the helper (its header is too large).
    #[error("EINVAL: {0}")]
    Request(String),
}

impl FileError {
    /// The error number the failure stands for (what clients see as its code).
    pub fn errno(&self) -> Errno {
        match self {
            FileError::Operation(e) => e.errno(),
            FileError::HelperFailed { .. } | FileError::HelperAnswer(_) => Errno::EIO,
            FileError::Request(_) => Errno::EINVAL,
        }
    }
}

impl From<FsError> for VmError {
    fn from(e: FsError) -> Self {
        VmError::FileSystem(FileError::Operation(e))
    }
}

impl From<FileError> for VmError {
    fn from(e: FileError) -> Self {
        VmError::FileSystem(e)
    }
}

impl VmError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> VmError {
        VmError::Io { context: context.into(), source }
    }

    /// The POSIX error number of a system error (file operations, failed spawns), as data.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            VmError::FileSystem(e) => Some(e.errno()),
            VmError::SpawnFailed(e) => Some(e.errno()),
            VmError::Socket(e) => Some(e.errno()),
            VmError::PortClosed { .. } => Some(Errno::ECONNREFUSED),
            _ => None,
        }
    }
}

/// The symbolic name of an error number (`ENOENT`), as clients see it in `metadata.code`.
pub fn errno_code(errno: Errno) -> String {
    agentvm_sandbox::fsops::error::code(errno)
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;
