//! The VM's init: PID 1 inside every VM, run as `agentvm vm-init` by [`crate::launch`].
//!
//! Init is small and single-threaded. It
//! 1. receives its [`InitConfig`] over the control socket (descriptor [`CONTROL_FD`]),
//! 2. enters a new cgroup namespace, builds the root filesystem and `pivot_root`s into it
//!    (`rootfs`), writes the VM's boot files (`bootfiles`), brings up loopback and sets the
//!    host name,
//! 3. confines itself and so every process of the VM (`confine`): namespace and resource
//!    limits, an empty capability bounding set, `no_new_privs` and the [`crate::seccomp`] policy,
//! 4. then serves requests: it forks and execs programs with the stdio descriptors the host sent
//!    (the host keeps the other ends), reaps every process (orphans included), reports the exits
//!    of the programs it started, signals process groups and lists processes.
//!
//! When the control socket closes (the host process died or dropped the VM), init exits, and
//! the kernel kills every remaining process of the VM with it: nothing outlives the host.

mod bootfiles;
mod confine;
mod limits;
mod net;
mod proc_view;
mod procfs;
mod rootfs;
mod rootpath;
mod spawn;
mod terminal;

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::config::InitConfig;
use crate::protocol::{self, Event, Received, Request, Stdio};

pub use spawn::exit_code_of;

/// Descriptor number of the control socket in init.
pub const CONTROL_FD: RawFd = 3;
/// The hidden subcommand of the agentvm binary that runs init.
pub const SUBCOMMAND: &str = "vm-init";
/// Grace period for SIGTERM before init ends the VM when it is itself asked to stop by a signal.
const SIGNAL_GRACE: Duration = Duration::from_secs(2);
/// Process entries per `Processes` message.
const LIST_BATCH: usize = 128;

/// Entry point of `agentvm vm-init`. Never returns.
pub fn main() -> ! {
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("agentvm vm-init: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn run() -> io::Result<()> {
    // SAFETY: `stat` is plain old data, for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat only inspects the descriptor and writes into `st`, which outlives the call.
    if unsafe { libc::fstat(CONTROL_FD, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::other("must be started by agentvm (no control socket on descriptor 3)"));
    }
    // SAFETY: descriptor 3 is the control socket the launcher installed for us, owned by no one else.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    nix::fcntl::fcntl(&control, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    let mut receiver = protocol::Receiver::new();
    let (config, mut attached): (InitConfig, Vec<OwnedFd>) = loop {
        match receiver.receive(control.as_fd())? {
            Received::Message(config, fds) => break (config, fds),
            Received::Partial => continue,
            Received::Closed => return Ok(()),
        }
    };
    // SAFETY: the launcher opened these descriptors for init and nothing else owns them.
    let layers: Vec<OwnedFd> = crate::launch::LAYER_FDS.iter().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
    for fd in &layers {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    }
    // The configuration carries the host's LXCFS files for /proc, if any (see `proc_view`), then
    // in privileged mode the views of `RootfsSpec::data_binds`.
    let views = if config.init_is_root { config.rootfs.data_binds.len() } else { 0 };
    let data_views = attached.split_off(attached.len().saturating_sub(views));
    let setup_result = setup(&config, layers, attached, data_views);
    if let Err(message) = setup_result {
        send(control.as_fd(), &Event::SetupFailed { message: message.clone() });
        return Err(io::Error::other(message));
    }
    let signals = block_signals()?;
    send(control.as_fd(), &Event::Ready);
    let mut init = Init {
        control,
        signals,
        receiver,
        ids: spawn::Identity::from_config(&config),
        tracked: HashSet::new(),
        sessions: HashSet::new(),
    };
    init.serve()
}

/// Everything between exec and the first request: namespaces, filesystem, network, identity,
/// confinement.
fn setup(
    config: &InitConfig,
    layers: Vec<OwnedFd>,
    proc_files: Vec<OwnedFd>,
    data_views: Vec<OwnedFd>,
) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("unshare(cgroup namespace): {e}"))?;
    rootfs::build(config, layers, proc_files, data_views)?;
    proc_view::pin_cpus(&config.confinement.proc_view.cpus)?;
    bootfiles::write(config).map_err(|e| format!("writing the boot files: {e}"))?;
    net::loopback_up().map_err(|e| format!("bringing up loopback: {e}"))?;
    nix::unistd::sethostname(&config.hostname).map_err(|e| format!("sethostname: {e}"))?;
    confine::confine(config).map_err(|e| format!("confining the VM: {e}"))?;
    Ok(())
}

/// Blocks the signals init handles and returns a descriptor that reports them.
///
/// PID 1 of a namespace only receives signals from outside for which it has a handler, so
/// SIGTERM/SIGINT/SIGHUP get a no-op handler in addition to being blocked and read through the
/// signalfd. Children reset their mask before exec ([`spawn`]).
fn block_signals() -> io::Result<SignalFd> {
    extern "C" fn ignore(_: libc::c_int) {}
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
        if signal != Signal::SIGCHLD {
            let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::SA_RESTART, SigSet::empty());
            // SAFETY: the handler does nothing and is async-signal-safe.
            unsafe { sigaction(signal, &action) }?;
        }
    }
    mask.thread_block()?;
    Ok(SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?)
}

struct Init {
    control: OwnedFd,
    signals: SignalFd,
    receiver: protocol::Receiver,
    ids: spawn::Identity,
    /// Programs started by `Spawn` whose exit has not been reported yet.
    tracked: HashSet<i32>,
    /// Leaders of terminal sessions, until no process of their session is left.
    sessions: HashSet<i32>,
}

impl Init {
    fn serve(&mut self) -> io::Result<()> {
        loop {
            let (control_ready, signals_ready) = {
                let mut fds = [
                    PollFd::new(self.control.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if signals_ready {
                if let Some(grace) = self.handle_signals() {
                    return self.shutdown(grace);
                }
            }
            if control_ready {
                match self.receiver.receive::<Request>(self.control.as_fd()) {
                    Ok(Received::Message(request, fds)) => {
                        if let Some(grace) = self.handle(request, fds) {
                            return self.shutdown(grace);
                        }
                    }
                    Ok(Received::Partial) => {}
                    // The host is gone: end the VM (the kernel kills the rest with us).
                    Ok(Received::Closed) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::InvalidData => eprintln!("agentvm vm-init: {e}"),
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Handles one request; returns a grace period when the VM must shut down.
    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) -> Option<Duration> {
        match request {
            Request::Spawn(spawn) => {
                let id = spawn.id;
                let (fds, master) = match spawn.stdio {
                    Stdio::Pipes => (fds, None),
                    Stdio::Terminal { cols, rows } => match terminal::open(cols, rows, (self.ids.uid, self.ids.gid)) {
                        Ok((master, slave)) => (vec![slave], Some(master)),
                        Err(error) => {
                            self.send(&Event::SpawnFailed { id, error });
                            return None;
                        }
                    },
                };
                match spawn::spawn(&spawn, fds, &self.ids) {
                    Ok(pid) => {
                        self.tracked.insert(pid);
                        if master.is_some() {
                            self.sessions.insert(pid);
                        }
                        let attached: Vec<RawFd> = master.iter().map(|m| m.as_raw_fd()).collect();
                        // Read before the child can be reaped (only this loop reaps).
                        let start_time_ms = procfs::start_time_ms(pid).unwrap_or(0);
                        let spawned = Event::Spawned { id, pid, start_time_ms };
                        send_with(self.control.as_fd(), &spawned, &attached);
                    }
                    Err(error) => self.send(&Event::SpawnFailed { id, error }),
                }
            }
            Request::Signal { pid, signal } => {
                if self.tracked.contains(&pid) {
                    signal_group(pid, signal);
                }
            }
            Request::SignalSession { pid, signal } => {
                if self.sessions.contains(&pid) && !signal_session(pid, signal) {
                    self.sessions.remove(&pid);
                }
            }
            Request::ListProcesses { id } => {
                let entries = procfs::list();
                let mut batches = entries.chunks(LIST_BATCH).peekable();
                if batches.peek().is_none() {
                    self.send(&Event::Processes { id, entries: Vec::new(), last: true });
                }
                while let Some(batch) = batches.next() {
                    let last = batches.peek().is_none();
                    self.send(&Event::Processes { id, entries: batch.to_vec(), last });
                }
            }
            Request::Shutdown { grace_ms } => return Some(Duration::from_millis(grace_ms)),
            Request::Socket { id, kind, addr } => match net::make_socket(kind, addr) {
                Ok(socket) => {
                    send_with(self.control.as_fd(), &Event::Socket { id, result: Ok(()) }, &[socket.as_raw_fd()])
                }
                Err(error) => self.send(&Event::Socket { id, result: Err(error) }),
            },
        }
        None
    }

    /// Drains the signalfd: reaps children on SIGCHLD; returns a grace period on a stop signal.
    fn handle_signals(&mut self) -> Option<Duration> {
        let mut stop = None;
        while let Ok(Some(info)) = self.signals.read_signal() {
            if info.ssi_signo as i32 != libc::SIGCHLD {
                stop = Some(SIGNAL_GRACE);
            }
        }
        self.reap();
        stop
    }

    /// Reaps every exited child; reports the ones the host started.
    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    let Some(pid) = status.pid() else { continue };
                    let Some(code) = exit_code_of(&status) else { continue };
                    if self.tracked.remove(&pid.as_raw()) {
                        self.send(&Event::Exited { pid: pid.as_raw(), code });
                    }
                }
            }
        }
    }

    /// SIGTERM to everything, reap until all are gone or `grace` has passed, then return (and
    /// exit, which makes the kernel SIGKILL whatever is left).
    fn shutdown(&mut self, grace: Duration) -> io::Result<()> {
        let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            self.reap();
            if matches!(waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD)) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let mut fds = [PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(left.as_millis().min(1000) as i32).unwrap_or(PollTimeout::ZERO);
            let _ = poll(&mut fds, timeout);
            while let Ok(Some(_)) = self.signals.read_signal() {}
        }
    }

    fn send(&self, event: &Event) {
        send(self.control.as_fd(), event);
    }
}

/// Sends `signal` to the process group `pid` leads, and to `pid` itself if it left the group.
fn signal_group(pid: i32, signal: i32) {
    let Ok(signal) = Signal::try_from(signal) else { return };
    let _ = kill(Pid::from_raw(-pid), signal);
    if nix::unistd::getpgid(Some(Pid::from_raw(pid))).is_ok_and(|pgid| pgid.as_raw() != pid) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// Signals every process of session `sid` (plus SIGCONT, so stopped jobs act on it). Returns
/// `false` when the session has no process left.
fn signal_session(sid: i32, signal: i32) -> bool {
    let Ok(signal) = Signal::try_from(signal) else { return true };
    let members: Vec<i32> = procfs::list().into_iter().filter(|p| p.sid == sid && !p.exited).map(|p| p.pid).collect();
    for &pid in &members {
        let _ = kill(Pid::from_raw(pid), signal);
        if signal != Signal::SIGKILL {
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }
    !members.is_empty()
}

/// Sends one event; a failure means the host is gone, which the poll loop notices next.
fn send(control: BorrowedFd<'_>, event: &Event) {
    send_with(control, event, &[]);
}

/// Sends one event with descriptors attached to its first datagram.
fn send_with(control: BorrowedFd<'_>, event: &Event, fds: &[RawFd]) {
    let Ok(datagrams) = protocol::encode(event) else { return };
    for (i, datagram) in datagrams.iter().enumerate() {
        let attach = if i == 0 { fds } else { &[] };
        while let Err(Errno::EINTR) = protocol::send_datagram(control, datagram, attach) {}
    }
}
