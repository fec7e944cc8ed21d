//! What init needs to know to build a VM; sent by the host as the first control message.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The VM's identity and filesystem layout, from init's point of view.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitConfig {
    pub hostname: String,
    pub rootfs: RootfsSpec,
    /// The unprivileged account every command runs as (uid/gid inside the VM).
    pub user: UserSpec,
    /// `true` when init is root inside the VM (the host ran as root and mapped a uid range);
    /// `false` in rootless mode, where init is the user itself and holds its capabilities only
    /// as ambient capabilities, which it drops for every command it starts.
    pub init_is_root: bool,
    /// Seccomp policy, limits and tmpfs sizes every process of the VM gets.
    #[serde(default)]
    pub confinement: Confinement,
    /// `/etc/resolv.conf` of this boot; `None`: the base's (no name server, loopback only).
    #[serde(default)]
    pub resolv_conf: Option<String>,
}

/// Host paths that make up the root filesystem.
///
/// Init does not open `base`, `upper` and `work` by path: in privileged mode it runs as an
/// unprivileged host uid that may not traverse the data directory. The launched child opens
/// them before it drops to init's ids and leaves them at [`crate::launch::LAYER_FDS`], in
/// [`RootfsSpec::LAYER_ORDER`] order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsSpec {
    /// Read-only lower layer: the shared base tree (see [`crate::base`]).
    pub base: PathBuf,
    /// The VM's own writable layer: its durable state.
    pub upper: PathBuf,
    /// Overlayfs work directory, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// Host directories bound read-only into the VM (`/usr`, and `/bin`, `/lib`... where they
    /// are real directories on the host).
    pub readonly_binds: Vec<Bind>,
    /// Directories of the server's data directory bound read-only into the VM (the shared
    /// software layer at `/opt/agentvm`). Init may not traverse the data directory in privileged
    /// mode, so the launcher sends a read-only, nosuid, nodev idmapped view of each, after the
    /// LXCFS files, and init attaches it; in rootless mode init (the directory's owner) binds
    /// them by path, as `readonly_binds`.
    #[serde(default)]
    pub data_binds: Vec<Bind>,
    /// Most terminals the VM's own devpts instance may hand out.
    pub max_ptys: u32,
}

impl RootfsSpec {
    /// Order of the layer descriptors attached to the configuration message.
    pub const LAYER_ORDER: [&'static str; 3] = ["base", "upper", "work"];
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the VM.
    pub target: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// What init enforces on every process of the VM on top of the namespaces: the seccomp policy's
/// one switch, resource limits and tmpfs sizes (SECURITY.md explains each layer). Init applies it
/// to itself after the root filesystem is built, before it serves the first request, so every
/// process of the VM inherits it.
///
/// [`Confinement::default`] suits the default VM (1 GiB, 512 processes); use
/// [`Confinement::sized_for`] for other cgroup limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Confinement {
    /// Let the VM's processes create user namespaces, and inside them mount, enter namespaces and
    /// use `clone3` (rootless containers, bubblewrap). Off by default: see [`crate::seccomp`].
    pub allow_nested_userns: bool,
    /// Resource limits (`setrlimit`) every process of the VM starts with.
    pub rlimits: Rlimits,
    /// The VM's `/tmp` (a tmpfs: its pages count against the VM's memory limit).
    pub tmp: TmpfsSize,
    /// The VM's `/dev/shm` (POSIX shared memory; also the cap for System V shared memory).
    pub dev_shm: TmpfsSize,
    /// Limits of the VM's own user and IPC namespaces (`/proc/sys/user`, `/proc/sys/fs/mqueue`,
    /// `kernel.shm*`/`msg*`/`sem`).
    pub kernel: KernelLimits,
    /// `oom_score_adj` of every command init starts (inherited by their descendants), so the
    /// memory cgroup's OOM killer picks a command before init (which keeps 0: lowering it needs
    /// `CAP_SYS_RESOURCE` on the host).
    pub command_oom_score_adj: i32,
    /// What the VM's `/proc` reports and which CPUs its processes start on (filled in by the
    /// host for each VM; the default shows the host's `/proc` and keeps the host's CPUs).
    pub proc_view: ProcView,
}

/// The VM's view of its machine, so that programs sizing themselves from it (`nproc`, `free`,
/// `make -j`, thread pools) see the VM's limits rather than the host's (see
/// `crate::init::proc_view`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProcView {
    /// A host directory of `/proc` files that answer each reader according to its cgroup and
    /// PID namespace (LXCFS's `proc/`), mounted over the same names in the VM's `/proc`. The
    /// launcher sends init a detached clone of each file with the configuration message (see
    /// [`crate::proc_files`]); `None` (no LXCFS, rootless, nested user namespaces allowed): the
    /// VM's `/proc` is its plain procfs.
    pub files_dir: Option<PathBuf>,
    /// The host CPUs of the VM: its v1 `cpuset` cgroup where there is one, and in any case the
    /// set init pins itself to before the first command, inherited by every process of the VM,
    /// so `sched_getaffinity` (what `nproc`, Go, Rust's `available_parallelism` and libuv read)
    /// counts the VM's CPUs. Empty: the server's CPUs.
    pub cpus: Vec<u32>,
}

impl ProcView {
    /// The `/proc` files taken from [`ProcView::files_dir`], each present in LXCFS 5.
    pub const FILES: [&'static str; 7] = ["meminfo", "cpuinfo", "stat", "uptime", "loadavg", "diskstats", "swaps"];
}

/// Per-process resource limits, set as both soft and hard limit unless noted; never above the
/// hard limit the server itself runs with (init cannot raise a hard limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rlimits {
    /// `RLIMIT_NOFILE`: open files per process. A VM holds at most this many times its
    /// process limit (`pids.max`) open files.
    pub open_files: u64,
    /// `RLIMIT_NPROC`: processes and threads of the VM user (the only process bound of a
    /// rootless VM, which has no pids cgroup).
    pub processes: u64,
    /// `RLIMIT_MSGQUEUE`: bytes of POSIX message queues per VM user.
    pub mqueue_bytes: u64,
    /// `RLIMIT_CORE` soft limit (the hard limit stays, so `ulimit -c` can opt in): core dumps
    /// are off by default.
    pub core_bytes: u64,
}

/// Size of a tmpfs: `size=` and `nr_inodes=` mount options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TmpfsSize {
    pub bytes: u64,
    pub inodes: u64,
}

/// Limits init writes into the VM's own namespaces (it is root there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelLimits {
    /// `/proc/sys/user/max_{user,mnt,pid,net,ipc,uts,cgroup,time}_namespaces` when nested user
    /// namespaces are allowed: namespaces of each kind one VM user may hold. Without nested user
    /// namespaces every one of them is 0.
    pub nested_namespaces: u32,
    /// `/proc/sys/user/max_inotify_instances` and `max_inotify_watches` (per VM user).
    pub inotify_instances: u32,
    pub inotify_watches: u32,
    /// `/proc/sys/fs/mqueue/queues_max`, `msg_max` and `msgsize_max`.
    pub mqueues: u32,
    pub mqueue_messages: u32,
    pub mqueue_message_bytes: u32,
    /// `kernel.shmmni`, `kernel.msgmni`, and `kernel.sem` (`semmsl semmns semopm semmni`).
    /// `kernel.shmmax`/`shmall` follow [`Confinement::dev_shm`].
    pub shm_segments: u32,
    pub msg_queues: u32,
    pub semaphores: [u32; 4],
}

/// Memory limit [`Confinement::sized_for`] assumes when the VM has none (rootless mode).
pub const DEFAULT_MEMORY_BASIS: u64 = 1 << 30;
/// Process limit assumed when the VM has no pids limit.
pub const DEFAULT_PROCESSES: u64 = 512;

impl Confinement {
    /// Defaults for a VM with these cgroup limits: `/tmp` gets a quarter of the memory limit,
    /// `/dev/shm` an eighth (so filling them ends in `ENOSPC`, never in the OOM killer), each with
    /// one inode per KiB (an empty file's metadata costs about that much kernel memory, which the
    /// memory cgroup counts; the inode cap is what bounds it in a rootless VM, which has none);
    /// `RLIMIT_NPROC` follows the pids limit.
    pub fn sized_for(memory_bytes: Option<u64>, pids: Option<u64>) -> Confinement {
        let memory = memory_bytes.unwrap_or(DEFAULT_MEMORY_BASIS);
        let tmpfs = |bytes: u64| TmpfsSize { bytes, inodes: (bytes / 1024).max(1024) };
        Confinement {
            allow_nested_userns: false,
            rlimits: Rlimits {
                open_files: 1024,
                processes: pids.unwrap_or(DEFAULT_PROCESSES),
                mqueue_bytes: 819_200,
                core_bytes: 0,
            },
            tmp: tmpfs(memory / 4),
            dev_shm: tmpfs(memory / 8),
            kernel: KernelLimits {
                nested_namespaces: 64,
                inotify_instances: 128,
                inotify_watches: 65_536,
                mqueues: 64,
                mqueue_messages: 10,
                mqueue_message_bytes: 8192,
                shm_segments: 1024,
                msg_queues: 1024,
                semaphores: [250, 32_000, 100, 1024],
            },
            command_oom_score_adj: 500,
            proc_view: ProcView::default(),
        }
    }
}

impl Default for Confinement {
    fn default() -> Self {
        Confinement::sized_for(Some(DEFAULT_MEMORY_BASIS), Some(DEFAULT_PROCESSES))
    }
}
