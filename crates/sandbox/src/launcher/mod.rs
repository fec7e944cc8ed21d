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
use std::sync::{Arc, Condvar, Mutex};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupHost, CgroupLimits, VmCgroup};
use crate::protocol::{self, Received};

pub use zygote::main;

/// The hidden subcommand of the agentvm binary that runs the launcher.
pub const SUBCOMMAND: &str = "vm-launcher";

/// What the launcher needs to clone one VM's first process. The VM's end of its control socket
/// travels with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloneRequest {
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

/// The cgroups a new VM asks for (see [`Launcher::clone_vm`]).
#[derive(Debug, Clone, Copy)]
pub struct CgroupRequest<'a> {
    pub limits: &'a CgroupLimits,
    /// Host CPUs (empty: the server's), see [`CgroupHost::create_with_cpus`].
    pub cpus: &'a [u32],
}

/// A VM's first process, as the launcher made it.
#[derive(Debug)]
pub struct Cloned {
    /// Host pid (our child).
    pub pid: i32,
    /// The VM's cgroups, with its limits written.
    pub cgroup: Option<VmCgroup>,
    /// Whether it was born in them (else the caller attaches it, see [`crate::launch`]).
    pub born_inside: bool,
}

/// The server's handle on its launcher process. Launches are serialised.
///
/// Memory accounting: a page is charged to the memory cgroup of the process that first
/// touches it. The launcher and a VM's first process share the launcher's pages copy-on-write,
/// so a few pages (the launcher's stack and the heap it writes after a clone) end up charged to
/// a neighbouring VM's cgroup rather than their user's: a handful of KiB per VM, and a
/// destroyed VM's memory cgroup may stay in the kernel (offline) while the next VM still uses
/// such a page. Bounded by the number of running VMs.
///
/// **Cgroups without the slow attach.** Moving a process into a v1 cgroup waits for an RCU grace
/// period when no move happened for a while (6–7 ms here, against 0.1 ms back to back), and a
/// clone inherits its parent's cgroups. So the launcher waits for the next VM *inside* that
/// VM's cgroups, created ahead of time (limits are written when the VM is known: cheap). A VM
/// is born in them; right after, a background thread creates the next set and moves the
/// launcher there, paying the grace period off the critical path (a create arriving meanwhile
/// waits for that move, as it would have waited for its own attach).
pub struct Launcher {
    shared: Arc<Shared>,
    preparer: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    program: PathBuf,
    cgroups: CgroupHost,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    process: Option<LauncherProcess>,
    /// Cgroups the launcher is in, ready for the next VM.
    prepared: Option<VmCgroup>,
    /// The launcher is in a VM's cgroups (or its server's) and must move to new ones first.
    must_move: bool,
    stopping: bool,
}

impl Launcher {
    /// Starts `program vm-launcher` (`program` is the agentvm binary), which will wait for
    /// each VM in cgroups of `cgroups` made ahead of time.
    pub fn start(program: &Path, cgroups: CgroupHost) -> io::Result<Launcher> {
        let process = LauncherProcess::start(program)?;
        let shared = Arc::new(Shared {
            program: program.to_path_buf(),
            cgroups,
            state: Mutex::new(State { process: Some(process), must_move: true, ..State::default() }),
            wake: Condvar::new(),
        });
        let preparer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new().name("vm-cgroups".into()).spawn(move || shared.prepare_forever())?
        };
        Ok(Launcher { shared, preparer: Some(preparer) })
    }

    /// Has the launcher clone a VM's first process into new namespaces, with `control` as its
    /// end of the control socket, in new cgroups when `cgroup` asks for them.
    pub fn clone_vm(
        &self,
        request: &CloneRequest,
        control: BorrowedFd<'_>,
        cgroup: Option<CgroupRequest<'_>>,
    ) -> io::Result<Cloned> {
        let shared = &*self.shared;
        let mut state = shared.lock();
        // The launcher may still be in the previous VM's cgroups: its next VM must not be.
        if state.must_move {
            shared.move_launcher(&mut state);
        }
        let cgroup = match cgroup {
            None => None,
            Some(wish) => match state.prepared.take() {
                Some(prepared) => match shared.cgroups.apply_limits(&prepared, wish.limits, wish.cpus) {
                    Ok(()) => Some((prepared, true)),
                    Err(e) => {
                        shared.abandon(&mut state, prepared);
                        return Err(e);
                    }
                },
                None => shared
                    .cgroups
                    .create_with_cpus(&CgroupHost::next_name(), wish.limits, wish.cpus)?
                    .map(|created| (created, false)),
            },
        };
        match (shared.clone_locked(&mut state, request, control), cgroup) {
            (Ok((pid, restarted)), Some((cgroup, inside))) => {
                if inside && !restarted {
                    // The launcher is in the VM's cgroups now; it moves on in the background.
                    state.must_move = true;
                    shared.wake.notify_all();
                }
                Ok(Cloned { pid, cgroup: Some(cgroup), born_inside: inside && !restarted })
            }
            (Ok((pid, _)), None) => Ok(Cloned { pid, cgroup: None, born_inside: false }),
            (Err(e), Some((cgroup, inside))) => {
                if inside {
                    shared.abandon(&mut state, cgroup);
                } else {
                    let _ = cgroup.remove();
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The background thread: moves the launcher into new cgroups whenever it was given away.
    fn prepare_forever(&self) {
        let mut state = self.lock();
        loop {
            while !state.must_move && !state.stopping {
                state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if state.stopping {
                return;
            }
            self.move_launcher(&mut state);
        }
    }

    /// Creates the next VM's cgroups and moves the launcher into them; without cgroups (or on
    /// an error), back into the server's own.
    fn move_launcher(&self, state: &mut State) {
        state.must_move = false;
        let Some(pid) = state.process.as_ref().map(|p| p.child.id() as i32) else { return };
        let prepared = match self.cgroups.create_empty(&CgroupHost::next_name(), None) {
            Ok(Some(cgroup)) => match cgroup.attach(pid) {
                Ok(()) => Some(cgroup),
                Err(e) => {
                    tracing::warn!(error = %e, "moving the VM launcher into the next VM's cgroups");
                    let _ = self.cgroups.attach_to_own(pid);
                    let _ = cgroup.remove();
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "creating the next VM's cgroups");
                None
            }
        };
        if prepared.is_none() {
            if let Err(e) = self.cgroups.attach_to_own(pid) {
                tracing::warn!(error = %e, "moving the VM launcher back into the server's cgroups");
            }
        }
        if let Some(old) = std::mem::replace(&mut state.prepared, prepared) {
            let _ = old.remove();
        }
    }

    /// Gives up cgroups the launcher is in (after a failure): it leaves, they go.
    fn abandon(&self, state: &mut State, cgroup: VmCgroup) {
        if let Some(pid) = state.process.as_ref().map(|p| p.child.id() as i32) {
            let _ = self.cgroups.attach_to_own(pid);
        }
        let _ = cgroup.remove();
        state.must_move = true;
        self.wake.notify_all();
    }

    /// One clone by the launcher, with one retry in a new launcher when the old one is gone.
    /// Returns the pid, and whether a new launcher (in the server's cgroups) made it.
    fn clone_locked(
        &self,
        state: &mut State,
        request: &CloneRequest,
        control: BorrowedFd<'_>,
    ) -> io::Result<(i32, bool)> {
        for attempt in 0..2 {
            if state.process.is_none() {
                state.process = Some(LauncherProcess::start(&self.program)?);
            }
            let Some(current) = state.process.as_mut() else { continue };
            match current.ask(request, control) {
                Ok(reply) => return reply.map(|pid| (pid, attempt > 0)),
                Err(e) => {
                    if let Some(mut gone) = state.process.take() {
                        let _ = gone.child.kill();
                        let _ = gone.child.wait();
                    }
                    // A new launcher starts in the server's cgroups.
                    if let Some(old) = state.prepared.take() {
                        let _ = old.remove();
                    }
                    state.must_move = true;
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
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        if let Some(preparer) = self.preparer.take() {
            let _ = preparer.join();
        }
        let mut state = self.shared.lock();
        if let Some(LauncherProcess { mut child, socket, .. }) = state.process.take() {
            // Closing our end makes it exit.
            drop(socket);
            let _ = child.wait();
        }
        if let Some(prepared) = state.prepared.take() {
            let _ = prepared.remove();
        }
    }
}

/// The running launcher and our end of its socket.
struct LauncherProcess {
    child: Child,
    socket: OwnedFd,
    receiver: protocol::Receiver,
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
