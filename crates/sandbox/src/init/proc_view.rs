//! The VM's view of its machine: `/proc` files that report the VM's own limits and uptime, and
//! the CPUs its processes run on. Build tools size their parallelism from these (`nproc`,
//! `make -j$(nproc)`, `free`, Node's `os.cpus()`, Python's `os.cpu_count()`), and without this
//! a 1-CPU, 512 MiB VM on a 64-core host would start 64 compilers and be OOM-killed.
//!
//! Two mechanisms, because programs read two kinds of source:
//!
//! - **Files** (`/proc/meminfo`, `cpuinfo`, `stat`, `uptime`, `loadavg`, `diskstats`, `swaps`):
//!   from the host's LXCFS mount ([`ProcView::files_dir`]; the host sends a detached clone of
//!   each file with the configuration, see [`crate::proc_files`]), attached over the same
//!   names in the VM's freshly mounted procfs, before `pivot_root`. LXCFS answers each read from the reader's cgroup (memory limit, CPU quota) and
//!   PID namespace (uptime since the VM's init started), so one mount serves every VM.
//! - **CPU affinity**: `nproc`, glibc's `sched_getaffinity`, Go, Rust's
//!   `available_parallelism` and libuv count the CPUs a process may run on, which no file can
//!   change. Init pins itself to [`ProcView::cpus`] (chosen by the host to spread VMs over the
//!   cores) before the first command starts, so every process of the VM inherits the set. The
//!   CPU limit itself stays the cgroup's quota; the affinity only makes the count visible (a
//!   VM process may widen its own affinity again, gaining no CPU time).

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::config::ProcView;

/// Attaches the host's detached clones of [`ProcView::FILES`] (in that order) over the same
/// names in `proc`, the root of the VM's own procfs (a fresh mount, so its names are safe to
/// use). No clones: the VM keeps the plain procfs.
pub fn attach_files(files: &[OwnedFd], proc: &Path) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    if files.len() != ProcView::FILES.len() {
        return Err(format!("expected {} /proc files from the host, got {}", ProcView::FILES.len(), files.len()));
    }
    for (file, name) in files.iter().zip(ProcView::FILES) {
        crate::idmapped::attach(file, &proc.join(name))
            .map_err(|e| format!("attaching the host's LXCFS file over /proc/{name}: {e}"))?;
    }
    Ok(())
}

/// Pins the calling process (init) to `cpus`; children inherit the set. Empty: left alone.
pub fn pin_cpus(cpus: &[u32]) -> Result<(), String> {
    if cpus.is_empty() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu as usize).map_err(|e| format!("CPU {cpu} out of range: {e}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("pinning init to CPUs {cpus:?}: {e}"))
}
