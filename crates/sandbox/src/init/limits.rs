//! Resource limits init sets for the whole VM: the limits of the VM's own user and IPC namespaces
//! and the resource limits every process inherits from init.
//!
//! The kernel budgets many objects per user, counted in every user namespace up to the host's:
//! a user namespace's limits (`/proc/sys/user/max_*`) apply to the processes in it and in the
//! namespaces below it, and a namespace created inside the VM is also charged, at the host's
//! level, to the owner of the VM's user namespace. Init is root in the VM's user namespace and
//! writes the VM's own limits there; they are the inner layer, the host's per-user limits of the
//! VM's owner the outer one (SECURITY.md).
//!
//! | Limit | Default | Where |
//! |---|---|---|
//! | `max_{user,mnt,pid,net,ipc,uts,cgroup,time}_namespaces` | 0, or 64 each with nested user namespaces | `/proc/sys/user` |
//! | `max_inotify_instances` / `max_inotify_watches` | 128 / 65536 per VM user | `/proc/sys/user` |
//! | `max_fanotify_groups` / `max_fanotify_marks` | 0 (`fanotify_init` is denied by seccomp too) | `/proc/sys/user` |
//! | `queues_max` / `msg_max` / `msgsize_max` | 64 / 10 / 8192 | `/proc/sys/fs/mqueue` (the VM's IPC namespace) |
//! | `shmmax` / `shmall` | the size of `/dev/shm` | `/proc/sys/kernel` (IPC namespace) |
//! | `shmmni` / `msgmni` / `sem` | 1024 / 1024 / `250 32000 100 1024` | `/proc/sys/kernel` (IPC namespace) |
//! | `RLIMIT_NOFILE` | 1024 | every process |
//! | `RLIMIT_NPROC` | the pids limit (512) | every process of the VM user |
//! | `RLIMIT_MSGQUEUE` | 800 KiB | every process |
//! | `RLIMIT_CORE` | soft 0 | every process |
//!
//! The IPC namespace's files belong to its root user, which a rootless VM does not have (only
//! the user is mapped): there, the mqueue and System V values keep the kernel's defaults, and the
//! per-user `RLIMIT_MSGQUEUE` still bounds POSIX queues.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::config::{Confinement, KernelLimits};

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("writing {path} = {value}: {source}")]
    Sysctl { path: &'static str, value: String, source: std::io::Error },
    #[error("setting {resource:?}: {source}")]
    Rlimit { resource: Resource, source: nix::Error },
}

/// Writes the VM's namespace limits. `ipc_owner`: init is the root user that owns the VM's IPC
/// namespace (privileged mode), so it may write the IPC namespace's limits.
pub fn apply_namespace_limits(confinement: &Confinement, ipc_owner: bool) -> Result<(), LimitError> {
    for (path, value) in namespace_limits(confinement, ipc_owner) {
        std::fs::write(path, &value).map_err(|source| LimitError::Sysctl { path, value, source })?;
    }
    Ok(())
}

/// The `/proc/sys` files init writes, with their values.
fn namespace_limits(confinement: &Confinement, ipc_owner: bool) -> Vec<(&'static str, String)> {
    const NAMESPACE_FILES: [&str; 8] = [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/user/max_mnt_namespaces",
        "/proc/sys/user/max_pid_namespaces",
        "/proc/sys/user/max_net_namespaces",
        "/proc/sys/user/max_ipc_namespaces",
        "/proc/sys/user/max_uts_namespaces",
        "/proc/sys/user/max_cgroup_namespaces",
        "/proc/sys/user/max_time_namespaces",
    ];
    let k: &KernelLimits = &confinement.kernel;
    let namespaces = if confinement.allow_nested_userns { k.nested_namespaces } else { 0 };
    let mut writes: Vec<(&'static str, String)> =
        NAMESPACE_FILES.iter().map(|&path| (path, namespaces.to_string())).collect();
    writes.extend([
        ("/proc/sys/user/max_inotify_instances", k.inotify_instances.to_string()),
        ("/proc/sys/user/max_inotify_watches", k.inotify_watches.to_string()),
        ("/proc/sys/user/max_fanotify_groups", "0".to_string()),
        ("/proc/sys/user/max_fanotify_marks", "0".to_string()),
    ]);
    if ipc_owner {
        let shm = confinement.dev_shm.bytes;
        let [semmsl, semmns, semopm, semmni] = k.semaphores;
        writes.extend([
            ("/proc/sys/fs/mqueue/queues_max", k.mqueues.to_string()),
            ("/proc/sys/fs/mqueue/msg_max", k.mqueue_messages.to_string()),
            ("/proc/sys/fs/mqueue/msgsize_max", k.mqueue_message_bytes.to_string()),
            ("/proc/sys/kernel/shmmax", shm.to_string()),
            ("/proc/sys/kernel/shmall", shm.div_ceil(page_size()).to_string()),
            ("/proc/sys/kernel/shmmni", k.shm_segments.to_string()),
            ("/proc/sys/kernel/msgmni", k.msg_queues.to_string()),
            ("/proc/sys/kernel/sem", format!("{semmsl} {semmns} {semopm} {semmni}")),
        ]);
    }
    writes
}

/// Sets init's resource limits, which every process it starts inherits. A limit is never raised
/// above the hard limit init got from the server (that needs `CAP_SYS_RESOURCE` on the host).
pub fn apply_rlimits(confinement: &Confinement) -> Result<(), LimitError> {
    let r = &confinement.rlimits;
    for (resource, soft, hard) in [
        (Resource::RLIMIT_NOFILE, Some(r.open_files), Some(r.open_files)),
        (Resource::RLIMIT_NPROC, Some(r.processes), Some(r.processes)),
        (Resource::RLIMIT_MSGQUEUE, Some(r.mqueue_bytes), Some(r.mqueue_bytes)),
        (Resource::RLIMIT_CORE, Some(r.core_bytes), None),
    ] {
        let (_, current_hard) = getrlimit(resource).map_err(|source| LimitError::Rlimit { resource, source })?;
        let hard = hard.map_or(current_hard, |h| h.min(current_hard));
        let soft = soft.map_or(hard, |s| s.min(hard));
        setrlimit(resource, soft, hard).map_err(|source| LimitError::Rlimit { resource, source })?;
    }
    Ok(())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_closed_unless_nested_userns_is_allowed() {
        let mut c = Confinement::default();
        let value_of = |c: &Confinement, path: &str| {
            namespace_limits(c, true).into_iter().find(|(p, _)| *p == path).map(|(_, v)| v).unwrap()
        };
        assert_eq!(value_of(&c, "/proc/sys/user/max_uts_namespaces"), "0");
        c.allow_nested_userns = true;
        assert_eq!(value_of(&c, "/proc/sys/user/max_uts_namespaces"), "64");
        assert_eq!(value_of(&c, "/proc/sys/kernel/shmmax"), (128u64 << 20).to_string());
        assert!(namespace_limits(&c, false).iter().all(|(p, _)| p.starts_with("/proc/sys/user/")));
    }
}
