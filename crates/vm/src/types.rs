//! Options of the process API and of VMs. The results (and the options a client sends as they
//! are) are defined once in `agentvm-types`, shared with the Rust client, and re-exported here.

use std::collections::BTreeMap;
use std::time::Duration;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_sandbox::config::Confinement;
use bytes::Bytes;

/// Options of [`crate::Vm::exec`].
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Added to (and overriding) the VM's default environment.
    pub env: BTreeMap<String, String>,
    /// Absolute working directory; default `/home/user`.
    pub cwd: Option<String>,
    /// Written to the command's stdin, which is then closed. Without it stdin is empty.
    pub stdin: Option<Bytes>,
    /// Kill the command (SIGKILL to its process group) after this long.
    pub timeout: Option<Duration>,
}

pub use agentvm_types::{ExecResult, OutputStream, ProcessInfo, ProcessTreeNode, SpawnOptions, SpawnedProcessInfo};

/// Per-VM settings.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Host name inside the VM; default: the VM id, cut to 63 characters.
    pub hostname: Option<String>,
    /// `/etc/resolv.conf` inside the VM; `None`: no name server.
    pub resolv_conf: Option<String>,
    /// Environment every process of the VM starts with, added to (and overriding) the built-in
    /// `HOME`, `USER`, `PATH`…; a call's own `env` overrides both.
    pub env: BTreeMap<String, String>,
    pub limits: CgroupLimits,
    /// Most terminals the VM may open at once (its devpts `max=`). The VM reserves this many
    /// from the server-wide terminal budget while it runs (see [`crate::terminal_budget`]).
    pub max_ptys: u32,
    /// Disk quota of the VM's files (its upper layer), in bytes; `None` for no quota. Applies
    /// where the host manages a quota filesystem (see [`crate::disk`]); inodes count against it
    /// as the metadata bytes they take.
    pub disk_bytes: Option<u64>,
    /// Output kept per process for replay (bytes; 64 KiB once it exited, and at most 16 MiB for
    /// all processes and shells of the VM).
    pub process_log_bytes: usize,
    /// Output `exec` keeps per stream (bytes); more is discarded and the result is `truncated`.
    pub exec_output_bytes: usize,
    /// Event log retention for subscribers (see [`crate::EventLog`]).
    pub event_log: crate::events::Retention,
    /// Write events into this log instead of a new one (a server keeps one stream per actor
    /// across VM restarts). A log given here is not closed when the VM stops.
    pub events: Option<std::sync::Arc<crate::events::EventLog>>,
    /// Seccomp switch (`allow_nested_userns`), resource limits and tmpfs sizes of every process
    /// of the VM. `None`: [`Confinement::sized_for`] the memory and pids limits above.
    pub confinement: Option<Confinement>,
}

/// Default limits: 1 GiB of memory, 512 processes/threads, one CPU core.
pub const DEFAULT_LIMITS: CgroupLimits = CgroupLimits {
    memory_bytes: Some(1 << 30),
    pids: Some(512),
    cpu_millicores: Some(1000),
    tcp_memory_bytes: Some(DEFAULT_TCP_MEMORY_BYTES),
};

/// Default TCP socket buffer memory per VM: 64 MiB, room for a few loopback connections at full
/// speed (see [`agentvm_sandbox::cgroup`] for how it is enforced on v1 and v2 hosts).
pub const DEFAULT_TCP_MEMORY_BYTES: u64 = 64 << 20;

/// Default [`VmOptions::max_ptys`]: enough for an agent's shells and a `tmux` with a few panes,
/// while 352 running VMs fit in the host's terminal pool of 2816 (see [`crate::terminal_budget`];
/// a server keeps a VM running for its idle timeout after its last action, so a benchmark or a
/// burst of clients easily has a few hundred). Give a VM more in its options when it needs them.
pub const DEFAULT_MAX_PTYS: u32 = 8;

/// Default [`VmOptions::disk_bytes`]: 10 GiB for the VM's files (see [`crate::disk`]).
pub const DEFAULT_DISK_BYTES: u64 = 10 << 30;

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            hostname: None,
            env: BTreeMap::new(),
            resolv_conf: None,
            limits: DEFAULT_LIMITS,
            max_ptys: DEFAULT_MAX_PTYS,
            disk_bytes: Some(DEFAULT_DISK_BYTES),
            process_log_bytes: 1 << 20,
            exec_output_bytes: crate::process::DEFAULT_EXEC_OUTPUT_BYTES,
            event_log: crate::events::Retention::default(),
            events: None,
            confinement: None,
        }
    }
}
