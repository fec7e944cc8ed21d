//! A running VM: the [`Vm`] handle and the state it shares with init's reader task.
//!
//! Data flows one way: a call on [`Vm`] becomes a request to init (with the stdio descriptors it
//! needs); init's answers come back on the reader task, which registers processes and starts
//! their output pumps; pumps turn output into events and exit codes. No call holds a lock while
//! it waits, so a long `waitProcess` or `exec` never delays other calls on the same VM.
//!
//! `Vm` is one type whose methods live by responsibility, each file an `impl Vm` block (as
//! [`crate::files`] adds the filesystem API):
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` (here) | the types ([`Vm`], its inner state, pending requests), state accessors |
//! | [`boot`] | creating a VM: budgets, launching init, waiting for it to be ready |
//! | [`attached`] | programs whose stdin and stdout the caller drives (ACP agents) |
//! | [`processes`] | the process API: `exec`, `spawn`, stdin, wait, list, signals, `allProcesses` |
//! | [`shells`] | the shell API: open, write, resize, close, wait |
//! | [`sockets`] | TCP sockets made inside the VM's network namespace: connect to, listen on its loopback |
//! | [`dispatch`] | requests to init and init's messages matched back to them |
//! | [`teardown`] | shutdown, and killing init and removing cgroups when the last handle goes |

mod attached;
mod boot;
mod dispatch;
mod processes;
mod shells;
mod sockets;
mod teardown;

pub use attached::{AttachedHandle, AttachedProcess, STDERR_TAIL_BYTES};
pub use boot::hostname_for;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use agentvm_sandbox::cgroup::VmCgroup;
use agentvm_sandbox::launch::InitProcess;
use agentvm_sandbox::protocol::ProcessEntry;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

use crate::control::Outgoing;
use crate::error::{Result, VmError};
use crate::events::{EventLog, Subscription};
use crate::process::{Kind, Launch, ProcessRecord, ProcessTable};
use crate::shell::{self, ShellTable};

/// `PATH` of every VM process unless overridden.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A handle on a running VM. Cloning is cheap; when the last handle is dropped the VM is torn
/// down (every process killed, cgroups removed). Its files stay in its directory.
#[derive(Clone)]
pub struct Vm {
    inner: Arc<VmInner>,
}

/// A [`Vm`] handle that does not keep the VM alive: [`WeakVm::upgrade`] gives the VM while some
/// [`Vm`] handle still exists. For tasks that serve a VM and must not delay its teardown.
#[derive(Clone)]
pub struct WeakVm(std::sync::Weak<VmInner>);

impl WeakVm {
    pub fn upgrade(&self) -> Option<Vm> {
        self.0.upgrade().map(|inner| Vm { inner })
    }
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
        launch: Launch,
        stdin: pipe::Sender,
        stdout: pipe::Receiver,
        stderr: pipe::Receiver,
        /// Most output captured per stream (for `exec` and helpers).
        capture_limit: usize,
        /// Capture keeps the *last* `capture_limit` bytes (an attached program's stderr tail)
        /// rather than the first: decided before the first byte is read.
        keep_tail: bool,
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
    Socket {
        reply: oneshot::Sender<Result<std::os::fd::OwnedFd>>,
    },
}

impl Vm {
    /// The VM's id (the name of its directory).
    pub fn id(&self) -> &str {
        &self.inner.shared.id
    }

    /// Host pid of the VM's init, for diagnostics.
    pub fn host_pid(&self) -> i32 {
        self.inner.init.host_pid
    }

    /// What the VM uses now (memory, CPU time, processes) from its cgroups; `None` without
    /// cgroups (a rootless server without a delegated subtree). Blocking: a few small reads.
    pub fn usage(&self) -> Option<crate::Usage> {
        self.inner.cgroup.as_ref().map(VmCgroup::usage)
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

    /// The host pid of the VM's init (its PID 1), whose namespaces are the VM's.
    pub fn init_pid(&self) -> i32 {
        self.inner.init.host_pid
    }

    /// A handle that does not keep the VM alive (see [`WeakVm`]).
    pub fn downgrade(&self) -> WeakVm {
        WeakVm(Arc::downgrade(&self.inner))
    }

    /// Like [`Vm::stopped`], but holds no handle on the VM (which would keep it alive): for
    /// tasks that serve the VM and must end with it.
    pub fn on_stop(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.shared.stopped.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    /// `true` while a spawned process runs or a shell is open (what keeps a VM from sleeping).
    pub fn has_activity(&self) -> bool {
        let shared = &self.inner.shared;
        let processes = shared.processes.lock().unwrap().spawned().iter().any(|r| r.exit_code().is_none());
        processes || !shared.shells.lock().unwrap().open_ids().is_empty()
    }

    /// Reads the event stream from `from` (replaying retained events) or from now on.
    pub fn subscribe(&self, from: Option<u64>) -> Subscription {
        self.inner.shared.events.subscribe(from)
    }

    pub fn events(&self) -> &Arc<EventLog> {
        &self.inner.shared.events
    }

    fn stopped_error(&self) -> VmError {
        VmError::Stopped(self.inner.shared.id.clone())
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

    #[allow(dead_code, reason = "a compile-time check, never called")]
    fn handles_are_send_and_sync() {
        fn is<T: Send + Sync>() {}
        is::<Vm>();
    }
}
