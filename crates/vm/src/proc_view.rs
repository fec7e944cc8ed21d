//! What each VM's `/proc` and CPU affinity show (see `agentvm_sandbox::init::proc_view` for
//! the VM side): the host's LXCFS files, and a set of CPUs as large as the VM's CPU limit.
//!
//! **Files.** As root the host runs one LXCFS daemon ([`crate::lxcfs`]); its files answer
//! each VM from the VM's memory and CPU cgroups and its init's start time. Without LXCFS
//! installed, or in rootless mode (LXCFS needs root to mount and to read every cgroup), VMs
//! see the host's `/proc`; the host says so once in its log. VMs that may create nested user
//! namespaces also keep the plain `/proc`: the kernel lets a nested namespace mount a new
//! procfs only while every file of the parent's is visible, and files bound over it hide some
//! (bubblewrap's `--proc` and `unshare --mount-proc` would fail).
//!
//! **CPUs.** `nproc` and most runtimes count the CPUs in their affinity mask, not a file. A VM
//! limited to `c` millicores is pinned to `ceil(c / 1000)` of the server's CPUs, chosen round
//! robin so consecutive VMs land on different cores; a VM whose limit covers every CPU (or has
//! none) is not pinned. This applies in rootless mode too, where it is the only CPU bound.
//! Trade-off: a pinned VM waits for its own core even when another is idle (as with Docker's
//! `--cpuset-cpus`); in exchange every program in it sizes its thread pools to its quota
//! instead of oversubscribing it, which costs more under a CFS quota than the lost balancing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use agentvm_sandbox::cgroup::CgroupLimits;
use agentvm_sandbox::config::ProcView;

use crate::lxcfs::Lxcfs;

/// The host's side: the LXCFS daemon (if any) and the CPU spreader.
#[derive(Debug)]
pub(crate) struct ProcViews {
    lxcfs: Option<Mutex<Lxcfs>>,
    cpus: CpuSpread,
}

impl ProcViews {
    /// Starts LXCFS on `data` when `privileged` (logging once why not otherwise).
    pub fn start(data: &Path, privileged: bool) -> ProcViews {
        let lxcfs = if !privileged {
            tracing::warn!(
                "rootless mode: VMs see the host's /proc figures (LXCFS needs root); nproc follows the CPU limit"
            );
            None
        } else {
            match Lxcfs::start(data) {
                Ok(daemon) => Some(Mutex::new(daemon)),
                Err(e) => {
                    tracing::warn!("VMs see the host's /proc figures (memory, CPUs, uptime): {e}");
                    None
                }
            }
        };
        ProcViews { lxcfs, cpus: CpuSpread::of_this_process() }
    }

    /// The view of a VM with these limits.
    pub fn for_vm(&self, limits: &CgroupLimits, nested_userns: bool) -> ProcView {
        let files_dir = match (&self.lxcfs, nested_userns) {
            (Some(daemon), false) => {
                let mut daemon = daemon.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if daemon.is_alive() {
                    Some(daemon.proc_dir())
                } else {
                    tracing::error!("lxcfs has exited: this VM sees the host's /proc figures");
                    None
                }
            }
            _ => None,
        };
        ProcView { files_dir, cpus: self.cpus.next(limits.cpu_millicores) }
    }
}

/// Hands out CPU sets round robin over the CPUs this process may use.
#[derive(Debug)]
struct CpuSpread {
    allowed: Vec<u32>,
    next: AtomicUsize,
}

impl CpuSpread {
    fn of_this_process() -> CpuSpread {
        let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).map(|i| i as u32).collect()
            })
            .unwrap_or_default();
        CpuSpread { allowed, next: AtomicUsize::new(0) }
    }

    /// `ceil(millicores / 1000)` CPUs, or none (no pinning) when that covers them all.
    fn next(&self, millicores: Option<u64>) -> Vec<u32> {
        let Some(millicores) = millicores else { return Vec::new() };
        let wanted = millicores.div_ceil(1000).max(1) as usize;
        if wanted >= self.allowed.len() {
            return Vec::new();
        }
        let start = self.next.fetch_add(wanted, Ordering::Relaxed);
        (0..wanted).map(|i| self.allowed[(start + i) % self.allowed.len()]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_sets_follow_the_limit_and_spread() {
        let spread = CpuSpread { allowed: vec![0, 1, 2, 3], next: AtomicUsize::new(0) };
        assert_eq!(spread.next(Some(1000)), vec![0]);
        assert_eq!(spread.next(Some(500)), vec![1]);
        assert_eq!(spread.next(Some(1500)), vec![2, 3]);
        assert_eq!(spread.next(Some(1000)), vec![0]);
        assert!(spread.next(Some(4000)).is_empty(), "a limit covering every CPU is not pinned");
        assert!(spread.next(None).is_empty());
    }
}
