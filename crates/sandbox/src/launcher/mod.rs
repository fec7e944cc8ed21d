//! The VM launcher: one small, long-lived process (`agentvm vm-launcher`, a "zygote") that
//! clones the first process of every VM, which then runs [`crate::init`] without an `execve`.
//!
//! Why not clone from the server and exec the agentvm binary as init, as before:
//! - a clone without `CLONE_VM` copies the caller's page tables, so cloning from the server cost
//!   more the bigger it grew (at 1,500 VMs, 42% of the server's CPU went to `copy_page_range`
//!   and a cold create took twice as long);
//! - exec'ing the (large, position-independent) agentvm binary in every VM made the dynamic
//!   loader relocate its read-only-after-relocation data (`.data.rel.ro`) in every init: about
//!   1.3 MiB of private memory per VM, and the exec itself on the critical path.
//!
//! The launcher is exec'd once per host, stays single-threaded and small, and each VM's first
//! process is a copy-on-write fork of it: cheap whatever the server's size, and every init
//! shares the launcher's relocated pages with every other init.
//!
//! ```text
//! server (VmHost)                       launcher (single-threaded)          VM's first process
//! CloneRequest + VM's control end ───►  [setresuid to the namespace owner]
//!                                       clone3(NEW*, CLONE_PARENT) ───────► waits for GO
//!                                       [back to root]                       (see crate::launch)
//! ◄───────────── CloneReply (pid)
//! ```
//!
//! `CLONE_PARENT` makes the VM the server's child, exactly as if the server had cloned it: the
//! server waits for it and signals it by its pid; the launcher never has children.
//!
//! **What a VM inherits from the launcher.** Its memory image at the time of the clone: the
//! launcher is started with an empty environment (but `PATH`) and no argument from the server's
//! command line, and only ever reads clone requests, so that image holds nothing of the server
//! (no token, no other VM's data). All inits share the launcher's address-space layout (like
//! Android's zygote); no program of a VM runs in that image (init execs every program it starts),
//! and init's memory belongs to the host's user namespace, so nothing in the VM can read or trace
//! it. Descriptors: the child closes every descriptor but its own before it runs init.
//!
//! The launcher exits when the server's end of its socket closes (the server exited or dropped
//! the host). If it dies, the next launch starts a new one.

mod child;
mod zygote;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::protocol::{self, Received};

pub use zygote::main;

/// The hidden subcommand of the agentvm binary that runs the launcher.
pub const SUBCOMMAND: &str = "vm-launcher";

/// What the launcher needs to clone one VM's first process. The VM's end of its control socket
/// travels with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CloneRequest {
    /// Base, upper and work directories, opened by the child (see `child::run`).
    pub layers: [PathBuf; 3],
    /// Privileged mode: the host ids that own the VM's user namespace (its range's first id).
    pub owner: Option<(u32, u32)>,
    /// The ids the child takes inside its namespace before it runs init (root mode).
    pub init_ids: Option<(u32, u32)>,
    /// The base layer's descriptor arrives with GO (privileged mode: an idmapped view).
    pub base_with_go: bool,
}

/// The launcher's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum CloneReply {
    Cloned { pid: i32 },
    Failed { errno: i32, message: String },
}

/// The server's handle on its launcher process. Cheap to share; launches are serialised.
pub struct Launcher {
    program: PathBuf,
    process: Mutex<Option<LauncherProcess>>,
}

struct LauncherProcess {
    child: Child,
    socket: OwnedFd,
    receiver: protocol::Receiver,
}

impl Launcher {
    /// Starts `program vm-launcher` (`program` is the agentvm binary).
    pub fn start(program: &Path) -> io::Result<Launcher> {
        let process = LauncherProcess::start(program)?;
        Ok(Launcher { program: program.to_path_buf(), process: Mutex::new(Some(process)) })
    }

    /// Has the launcher clone a VM's first process into new namespaces (`flags`), with
    /// `control` as its end of the control socket. Returns its host pid (our child's).
    pub(crate) fn clone_vm(&self, request: &CloneRequest, control: BorrowedFd<'_>) -> io::Result<i32> {
        let mut process = self.process.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // One retry with a new launcher when the old one is gone (it crashed or was killed).
        for attempt in 0..2 {
            if process.is_none() {
                *process = Some(LauncherProcess::start(&self.program)?);
            }
            let Some(current) = process.as_mut() else { continue };
            match current.ask(request, control) {
                Ok(reply) => return reply,
                Err(e) => {
                    if let Some(mut gone) = process.take() {
                        let _ = gone.child.kill();
                        let _ = gone.child.wait();
                    }
                    if attempt == 1 {
                        return Err(io::Error::new(e.kind(), format!("the VM launcher failed: {e}")));
                    }
                    tracing::warn!(error = %e, "the VM launcher is gone; starting a new one");
                }
            }
        }
        Err(io::Error::other("the VM launcher could not be started"))
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let process = self.process.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(LauncherProcess { mut child, socket, .. }) = process.take() {
            // Closing our end makes it exit.
            drop(socket);
            let _ = child.wait();
        }
    }
}

impl LauncherProcess {
    fn start(program: &Path) -> io::Result<LauncherProcess> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(io::Error::from)?;
        // The socket is the launcher's stdin; no `pre_exec` hook, so the standard library can
        // use posix_spawn (no copy of the server's page tables, even once).
        let child = Command::new(program)
            .arg0("agentvm")
            .arg(SUBCOMMAND)
            .env_clear()
            .env("PATH", crate::launch::INIT_PATH)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting the VM launcher {}: {e}", program.display())))?;
        Ok(LauncherProcess { child, socket: ours, receiver: protocol::Receiver::new() })
    }

    /// One request and its reply. An error here means the launcher is unusable.
    fn ask(&mut self, request: &CloneRequest, control: BorrowedFd<'_>) -> io::Result<io::Result<i32>> {
        for (i, datagram) in protocol::encode(request)?.iter().enumerate() {
            let fds = if i == 0 { vec![control.as_raw_fd()] } else { Vec::new() };
            protocol::send_datagram(self.socket.as_fd(), datagram, &fds).map_err(io::Error::from)?;
        }
        loop {
            match self.receiver.receive::<CloneReply>(self.socket.as_fd())? {
                Received::Partial => continue,
                Received::Closed => return Err(io::Error::new(io::ErrorKind::BrokenPipe, "it closed its socket")),
                Received::Message(CloneReply::Cloned { pid }, _) => return Ok(Ok(pid)),
                Received::Message(CloneReply::Failed { errno, message }, _) => {
                    let kind = io::Error::from_raw_os_error(errno).kind();
                    return Ok(Err(io::Error::new(kind, message)));
                }
            }
        }
    }
}
