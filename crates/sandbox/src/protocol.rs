//! The control protocol between a VM's host side and its init (PID 1 inside the VM).
//!
//! Transport: one `AF_UNIX`/`SOCK_SEQPACKET` socket pair per VM, created by [`crate::launch`].
//! Each message is JSON, split into datagrams of at most [`FRAGMENT_PAYLOAD`] bytes so that no
//! message is limited by socket buffer sizes. The first byte of every datagram says whether more
//! fragments of the same message follow. File descriptors (the stdio pipes of a new process) are
//! attached as `SCM_RIGHTS` to the first fragment only.
//!
//! Messages are small and rare compared with process output, which never crosses this socket:
//! the host holds the pipes, init only forks, reaps and reports.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

/// Largest accepted message after reassembly. Spawn requests carry argv and environment, which
/// Linux itself caps at a few MiB (`ARG_MAX`), so this is generous.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Payload bytes per datagram; well under the default `net.core.wmem_default` (~208 KiB).
pub const FRAGMENT_PAYLOAD: usize = 32 * 1024;
/// Most file descriptors one message may carry.
pub const MAX_FDS: usize = 8;

const MORE: u8 = 1;
const LAST: u8 = 0;

/// What a new process's stdin/stdout/stderr are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stdio {
    /// Three descriptors are attached: stdin, stdout, stderr.
    Pipes,
    /// No descriptor is attached: init opens a new terminal in the VM's own devpts, with this
    /// window size, makes its slave the process's controlling terminal and stdin, stdout and
    /// stderr, and returns the master with [`Event::Spawned`].
    Terminal { cols: u16, rows: u16 },
}

/// A request to start a program inside the VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpawnRequest {
    /// Correlates the [`Event::Spawned`] / [`Event::SpawnFailed`] answer.
    pub id: u64,
    /// Program and arguments; `argv[0]` is looked up in the `PATH` of `env` unless it has a `/`.
    pub argv: Vec<String>,
    /// Complete environment, as `KEY=value` strings.
    pub env: Vec<String>,
    /// Absolute working directory inside the VM.
    pub cwd: String,
    pub stdio: Stdio,
}

/// Host → init.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Request {
    /// Start a program (descriptors attached, see [`Stdio`]). It becomes the leader of a new
    /// session and process group, so signals can reach everything it starts.
    Spawn(SpawnRequest),
    /// Send `signal` to the process group led by `pid`, a process started by `Spawn` that has
    /// not been reported as exited. Unknown or exited pids are ignored.
    Signal { pid: i32, signal: i32 },
    /// Send `signal` (and SIGCONT, so stopped jobs see it) to every process of the session led
    /// by `pid`, a terminal process started by `Spawn` — including its background jobs, and
    /// even after the leader itself exited.
    SignalSession { pid: i32, signal: i32 },
    /// Describe every process of the VM except init itself.
    ListProcesses { id: u64 },
    /// Send SIGTERM to every process, wait up to `grace_ms`, then end the VM.
    Shutdown { grace_ms: u64 },
    /// Make a TCP socket in the VM's network namespace and hand it to the host (answered by
    /// [`Event::Socket`], descriptor attached). This is how the server reaches a server inside
    /// the VM (`vmFetch`, preview URLs) and serves the VM's proxy and forwards on its loopback,
    /// without ever exposing the VM on the host or entering its namespaces itself.
    Socket { id: u64, kind: SocketKind, addr: std::net::SocketAddr },
}

/// What [`Request::Socket`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SocketKind {
    /// A listening socket bound to `addr` (which must be a loopback address).
    Listen,
    /// A non-blocking connection to `addr` (a loopback address), possibly still in progress:
    /// the host waits for it to become writable and reads `SO_ERROR`.
    Connect,
}

/// One entry of a process listing, as read from the VM's own `/proc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessEntry {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub command: String,
    pub args: Vec<String>,
    pub cwd: String,
    /// `true` for a zombie (exited, not yet reaped by its parent).
    pub exited: bool,
    /// For zombies: 128+signal or the exit code.
    pub exit_code: Option<i32>,
    /// Milliseconds since the Unix epoch.
    pub start_time_ms: u64,
}

/// Init → host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// The root filesystem is built and init accepts requests.
    Ready,
    /// Building the VM failed; init exits after sending this.
    SetupFailed {
        message: String,
    },
    Spawned {
        id: u64,
        pid: i32,
        /// When the process started, in milliseconds since the Unix epoch: the same figure a
        /// process listing ([`ProcessEntry::start_time_ms`]) shows for it.
        #[serde(default)]
        start_time_ms: u64,
    },
    SpawnFailed {
        id: u64,
        error: SpawnError,
    },
    /// A process started by `Spawn` ended: its exit code, or 128+signal.
    Exited {
        pid: i32,
        code: i32,
    },
    /// The answer to [`Request::Socket`]: on success the socket is attached; otherwise the
    /// error number of the step that failed.
    Socket {
        id: u64,
        result: Result<(), SocketError>,
    },
    /// Part of the answer to `ListProcesses`; `last` marks the final part.
    Processes {
        id: u64,
        entries: Vec<ProcessEntry>,
        last: bool,
    },
}

/// Why init could not start a program, as data (the error number and what it applied to). Its
/// `Display` is the client-facing text (`ENOENT: command not found: nope`,
/// `ENOENT: No such file or directory, chdir '/nonexistent'`); nothing parses it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SpawnError {
    /// The request carried the wrong number of stdio descriptors (`EINVAL`).
    #[error("EINVAL: expected {expected} stdio descriptors, got {got}")]
    StdioCount { expected: usize, got: usize },
    /// No program, or an empty one (`EINVAL`).
    #[error("EINVAL: empty command")]
    EmptyCommand,
    /// An argument, environment variable or the working directory contains a NUL byte
    /// (`EINVAL`); `what` names which.
    #[error("EINVAL: {what} contains a NUL byte")]
    NulByte { what: String },
    /// Creating the pipe that reports the child's failure failed.
    #[error("{}: {}, pipe", errno_name(*errno), errno_text(*errno))]
    Pipe { errno: i32 },
    #[error("{}: {}, fork", errno_name(*errno), errno_text(*errno))]
    Fork { errno: i32 },
    /// Opening or setting up the shell's terminal failed at `step` (`grantpt`, `opening /dev/ptmx`...).
    #[error("{}: {}, {step}", errno_name(*errno), errno_text(*errno))]
    Terminal { errno: i32, step: String },
    /// The child could not take its stdio descriptors.
    #[error("{}: {}, setting up stdio", errno_name(*errno), errno_text(*errno))]
    Stdio { errno: i32 },
    /// The working directory could not be entered.
    #[error("{}: {}, chdir '{cwd}'", errno_name(*errno), errno_text(*errno))]
    Chdir { errno: i32, cwd: String },
    /// The child could not switch to the VM user.
    #[error("{}: {}, dropping privileges", errno_name(*errno), errno_text(*errno))]
    Identity { errno: i32 },
    /// No candidate of `PATH` (or the given path) exists (`ENOENT`).
    #[error("ENOENT: command not found: {program}")]
    NotFound { program: String },
    /// `execve` failed for another reason.
    #[error("{}: {}, exec '{program}'", errno_name(*errno), errno_text(*errno))]
    Exec { errno: i32, program: String },
    /// Init answered a shell request without the terminal (`EIO`; host side).
    #[error("init sent no terminal")]
    NoTerminal,
}

impl SpawnError {
    /// The error number the failure stands for.
    pub fn errno(&self) -> nix::errno::Errno {
        use nix::errno::Errno;
        match self {
            SpawnError::StdioCount { .. } | SpawnError::EmptyCommand | SpawnError::NulByte { .. } => Errno::EINVAL,
            SpawnError::NotFound { .. } => Errno::ENOENT,
            SpawnError::NoTerminal => Errno::EIO,
            SpawnError::Pipe { errno }
            | SpawnError::Fork { errno }
            | SpawnError::Terminal { errno, .. }
            | SpawnError::Stdio { errno }
            | SpawnError::Chdir { errno, .. }
            | SpawnError::Identity { errno }
            | SpawnError::Exec { errno, .. } => Errno::from_raw(*errno),
        }
    }
}

/// Why init could not make a socket for [`Request::Socket`]: the error number and the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}: {}, {step}", errno_name(*errno), errno_text(*errno))]
pub struct SocketError {
    pub errno: i32,
    /// `socket`, `bind`, `listen`, `connect`, or `address` (not a loopback address).
    pub step: String,
}

impl SocketError {
    pub fn errno(&self) -> nix::errno::Errno {
        nix::errno::Errno::from_raw(self.errno)
    }
}

/// `ENOENT`.
fn errno_name(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// The C library's description (`No such file or directory`).
fn errno_text(errno: i32) -> &'static str {
    nix::errno::Errno::from_raw(errno).desc()
}

/// Splits an encoded message into datagrams, each starting with the more-fragments flag.
pub fn encode<T: Serialize>(message: &T) -> io::Result<Vec<Vec<u8>>> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("control message of {} bytes exceeds the {} byte limit", body.len(), MAX_MESSAGE),
        ));
    }
    let chunks: Vec<&[u8]> = if body.is_empty() { vec![&[][..]] } else { body.chunks(FRAGMENT_PAYLOAD).collect() };
    let last = chunks.len() - 1;
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut datagram = Vec::with_capacity(chunk.len() + 1);
            datagram.push(if i == last { LAST } else { MORE });
            datagram.extend_from_slice(chunk);
            datagram
        })
        .collect())
}

/// Sends one datagram, with `fds` attached when non-empty. Follows the socket's blocking mode.
pub fn send_datagram(socket: BorrowedFd<'_>, datagram: &[u8], fds: &[RawFd]) -> nix::Result<()> {
    let iov = [IoSlice::new(datagram)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    Ok(())
}

/// Reassembles messages from datagrams received on one socket.
#[derive(Default)]
pub struct Receiver {
    partial: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// What one datagram was.
enum Fragment {
    /// The peer closed the socket.
    Closed,
    /// More fragments of the same message follow.
    More,
    /// The message's last fragment.
    Last,
}

thread_local! {
    /// Where datagrams land before [`Receiver::receive`] copies their payload out: one per
    /// thread rather than one per receiver, since a server has a receiver for every VM.
    static DATAGRAM: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; FRAGMENT_PAYLOAD + 1]);
}

/// What one call to [`Receiver::receive`] produced.
pub enum Received<T> {
    /// A complete message and the descriptors that came with it.
    Message(T, Vec<OwnedFd>),
    /// A fragment was consumed; more are needed.
    Partial,
    /// The peer closed the socket.
    Closed,
}

impl Receiver {
    pub fn new() -> Self {
        Receiver { partial: Vec::new(), fds: Vec::new() }
    }

    /// Reads one datagram into `buffer` and appends its payload and descriptors to the message
    /// being assembled.
    fn receive_into(&mut self, buffer: &mut [u8], socket: BorrowedFd<'_>) -> io::Result<Fragment> {
        let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (len, truncated, fds) = {
            let mut iov = [IoSliceMut::new(buffer)];
            let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut cmsg_space), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(io::Error::from)?;
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: the kernel just installed these descriptors for us; nobody else owns them.
                    fds.extend(raw.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            let truncated = msg.flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            (msg.bytes, truncated, fds)
        };
        if len == 0 {
            return Ok(Fragment::Closed);
        }
        if truncated {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "control datagram truncated"));
        }
        self.fds.extend(fds);
        if self.partial.len() + len - 1 > MAX_MESSAGE {
            self.partial.clear();
            self.fds.clear();
            return Err(io::Error::new(io::ErrorKind::InvalidData, "control message exceeds the size limit"));
        }
        self.partial.extend_from_slice(&buffer[1..len]);
        Ok(if buffer[0] == MORE { Fragment::More } else { Fragment::Last })
    }

    /// Reads one datagram (following the socket's blocking mode). Received descriptors are
    /// close-on-exec.
    pub fn receive<T: for<'de> Deserialize<'de>>(&mut self, socket: BorrowedFd<'_>) -> io::Result<Received<T>> {
        match DATAGRAM.with(|buffer| self.receive_into(&mut buffer.borrow_mut(), socket))? {
            Fragment::Closed => return Ok(Received::Closed),
            Fragment::More => return Ok(Received::Partial),
            Fragment::Last => {}
        }

        let body = std::mem::take(&mut self.partial);
        let fds = std::mem::take(&mut self.fds);
        let message = serde_json::from_slice(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad control message: {e}")))?;
        Ok(Received::Message(message, fds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap()
    }

    #[test]
    fn large_message_round_trips_in_fragments_with_fds() {
        let (a, b) = pair();
        let request = Request::Spawn(SpawnRequest {
            id: 7,
            argv: vec!["echo".into(), "x".repeat(100_000)],
            env: vec!["A=b".into()],
            cwd: "/".into(),
            stdio: Stdio::Pipes,
        });
        let (r, w) = nix::unistd::pipe().unwrap();
        let datagrams = encode(&request).unwrap();
        assert!(datagrams.len() > 3);
        let writer = std::thread::spawn({
            let a = a.try_clone().unwrap();
            let fds = [r.as_raw_fd(), w.as_raw_fd()];
            move || {
                for (i, d) in datagrams.iter().enumerate() {
                    send_datagram(a.as_fd(), d, if i == 0 { &fds } else { &[] }).unwrap();
                }
            }
        });
        let mut receiver = Receiver::new();
        let (message, fds) = loop {
            match receiver.receive::<Request>(b.as_fd()).unwrap() {
                Received::Message(m, fds) => break (m, fds),
                Received::Partial => continue,
                Received::Closed => panic!("closed"),
            }
        };
        writer.join().unwrap();
        assert_eq!(fds.len(), 2);
        match message {
            Request::Spawn(s) => assert_eq!(s.argv[1].len(), 100_000),
            other => panic!("unexpected {other:?}"),
        }
        drop(a);
        assert!(matches!(receiver.receive::<Request>(b.as_fd()).unwrap(), Received::Closed));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (a, b) = pair();
        send_datagram(a.as_fd(), b"\0{not json", &[]).unwrap();
        let mut receiver = Receiver::new();
        assert!(receiver.receive::<Request>(b.as_fd()).is_err());
    }
}
