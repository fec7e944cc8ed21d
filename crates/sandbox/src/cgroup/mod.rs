//! Per-VM resource limits through cgroups, behind one interface for v1 and v2 hosts.
//!
//! The layout is detected once per process from `/proc/self/mountinfo` and `/proc/self/cgroup`:
//!
//! - **v1 / hybrid** (this project's machines): the `memory`, `pids` and `cpu` controllers live in
//!   v1 hierarchies; a v2 `unified` hierarchy, when mounted, is used only to kill a VM's whole
//!   cgroup at once (`cgroup.kill`).
//! - **v2**: one directory with `memory.max`, `pids.max` and `cpu.max`.
//!
//! **TCP buffer memory** differs between the two. On v2 the kernel charges socket buffers to the
//! cgroup's memory (`memory.max` covers them). On v1 they are *not* part of
//! `memory.limit_in_bytes`: a VM could pin gigabytes of TCP buffers (many loopback sockets with
//! full queues) while its memory cgroup shows a few MiB, until the host's `net.ipv4.tcp_mem`
//! ceiling is reached and every socket on the host starts dropping. v1 has a separate counter,
//! `memory.kmem.tcp.limit_in_bytes`, which the kernel only activates for a cgroup once a limit
//! is written there (sockets created before that are never charged); so the limit is written
//! before the VM's first process joins the cgroup. Past it, sends block (or fail with `EAGAIN`)
//! and received segments are dropped inside the VM only. The kernel still force-charges one
//! segment per socket so that every connection makes progress, so the real ceiling is the limit
//! plus up to ~64 KiB per socket with data in flight.
//!
//! A VM's cgroups are always created **below the server's own cgroup** in each hierarchy, named
//! `agentvm-<server pid>-<vm name>` so that concurrent servers never collide. Where no cgroup can
//! be written (rootless mode, a read-only cgroupfs), VMs still start, without limits, and the
//! reason is logged once.

mod detect;
mod v1;
mod v2;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

/// Limits applied to one VM. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory (RAM, and swap where the host accounts it) in bytes.
    pub memory_bytes: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
    /// CPU time in thousandths of a core (1000 = one full core).
    pub cpu_millicores: Option<u64>,
    /// TCP socket buffer memory in bytes (cgroup v1 `memory.kmem.tcp.limit_in_bytes`; on v2
    /// `memory_bytes` already covers socket buffers, so this is not written separately).
    pub tcp_memory_bytes: Option<u64>,
}

/// One limit file to write: `dir/file = value`.
#[derive(Debug, Clone)]
struct LimitWrite {
    dir: PathBuf,
    file: &'static str,
    value: String,
}

/// The cgroup layout of the host, as seen from this process.
#[derive(Debug, Clone)]
pub enum CgroupHost {
    V1(v1::Hierarchies),
    V2(v2::Hierarchy),
    /// No usable cgroup hierarchy; the reason is logged once when a VM is created.
    Unavailable(String),
}

/// The cgroup directories of one VM. Removing them is the owner's job ([`VmCgroup::remove`]).
#[derive(Debug)]
pub struct VmCgroup {
    /// The directories' name in every hierarchy.
    name: String,
    /// Every directory created for this VM; a process is attached to all of them.
    dirs: Vec<PathBuf>,
    /// `cgroup.kill` of a v2 directory, when the kernel has it.
    kill_file: Option<PathBuf>,
}

/// A VM's use of its resources (see [`VmCgroup::usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory charged to the VM (page cache included), in bytes.
    pub memory_bytes: Option<u64>,
    /// CPU time used since the VM started, in microseconds.
    pub cpu_usec: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u64>,
}

static UNAVAILABLE_WARNING: Once = Once::new();

/// The v1 TCP buffer limit written to activate accounting when the real one is not known yet.
const TCP_UNLIMITED: u64 = i64::MAX as u64 & !4095;

impl CgroupHost {
    /// Detects the layout from this process's mount table and cgroup membership.
    pub fn detect() -> CgroupHost {
        match detect::detect() {
            Ok(host) => host,
            Err(reason) => CgroupHost::Unavailable(reason),
        }
    }

    /// Creates the cgroups of one VM and writes its limits. Returns `Ok(None)`, after logging
    /// the reason once per process, when this host has no writable cgroups.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> io::Result<Option<VmCgroup>> {
        self.create_with_cpus(name, limits, &[])
    }

    /// [`CgroupHost::create`], confining the VM to `cpus` (host CPU numbers; empty: the
    /// server's) where a v1 `cpuset` hierarchy exists. Elsewhere init's CPU affinity does it
    /// (see `crate::init::proc_view`).
    pub fn create_with_cpus(&self, name: &str, limits: &CgroupLimits, cpus: &[u32]) -> io::Result<Option<VmCgroup>> {
        let Some(created) = self.create_empty(name, limits.tcp_memory_bytes)? else { return Ok(None) };
        match self.apply_limits(&created, limits, cpus) {
            Ok(()) => Ok(Some(created)),
            Err(e) => {
                let _ = created.remove();
                Err(e)
            }
        }
    }

    /// Creates the cgroups of one VM without limits, except what must be set before a process
    /// joins: a v1 cpuset's lists (the server's CPUs) and the TCP buffer limit, which v1 only
    /// enforces when it is written before the first process joins (see the module
    /// documentation): `tcp_memory_bytes`, or the largest value when it is not known yet (the
    /// real one is then written by [`CgroupHost::apply_limits`] before the VM starts).
    pub fn create_empty(&self, name: &str, tcp_memory_bytes: Option<u64>) -> io::Result<Option<VmCgroup>> {
        let activation = CgroupLimits {
            memory_bytes: None,
            pids: None,
            cpu_millicores: None,
            tcp_memory_bytes: Some(tcp_memory_bytes.unwrap_or(TCP_UNLIMITED)),
        };
        let planned = match self {
            CgroupHost::V1(h) => h.plan(name, &activation, &[]),
            CgroupHost::V2(h) => h.plan(name, &activation),
            CgroupHost::Unavailable(reason) => Err(reason.clone()),
        };
        let (dirs, writes, kill_file) = match planned {
            Ok(plan) => plan,
            Err(reason) => {
                warn_unavailable(&reason);
                return Ok(None);
            }
        };
        let mut created = VmCgroup { name: name.to_string(), dirs: Vec::new(), kill_file };
        for dir in &dirs {
            match fs::create_dir(dir) {
                Ok(()) => created.dirs.push(dir.clone()),
                Err(e) if created.dirs.is_empty() && is_permission_error(&e) => {
                    warn_unavailable(&format!("cannot create {}: {e}", dir.display()));
                    return Ok(None);
                }
                Err(e) => {
                    let _ = created.remove();
                    return Err(annotate(e, dir));
                }
            }
        }
        // What must be set before a process joins: the TCP limit, and a v1 cpuset's lists.
        for w in writes.iter().filter(|w| w.file == v1::TCP_LIMIT_FILE || w.file.starts_with("cpuset.")) {
            let path = w.dir.join(w.file);
            if let Err(e) = fs::write(&path, &w.value) {
                let _ = created.remove();
                return Err(annotate(e, &path));
            }
        }
        Ok(Some(created))
    }

    /// Writes a VM's limits (and CPUs, see [`CgroupHost::create_with_cpus`]) into its cgroups.
    pub fn apply_limits(&self, cgroup: &VmCgroup, limits: &CgroupLimits, cpus: &[u32]) -> io::Result<()> {
        let planned = match self {
            CgroupHost::V1(h) => h.plan(&cgroup.name, limits, cpus),
            CgroupHost::V2(h) => h.plan(&cgroup.name, limits),
            CgroupHost::Unavailable(reason) => Err(reason.clone()),
        };
        let (_, writes, _) = planned.map_err(io::Error::other)?;
        for w in &writes {
            let path = w.dir.join(w.file);
            fs::write(&path, &w.value).map_err(|e| annotate(e, &path))?;
        }
        Ok(())
    }

    /// Moves `pid` back into the server's own cgroups (out of a VM's).
    pub fn attach_to_own(&self, pid: i32) -> io::Result<()> {
        for dir in self.own_dirs() {
            let path = dir.join("cgroup.procs");
            fs::write(&path, pid.to_string()).map_err(|e| annotate(e, &path))?;
        }
        Ok(())
    }

    /// A cgroup name unique among all VMs of this process, and (through the pid) among
    /// concurrent agentvm processes: `agentvm-<server pid>-<n>` (see [`CgroupHost::sweep_stale`]).
    pub fn next_name() -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        format!("agentvm-{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// This process's own cgroup directory in each hierarchy agentvm uses.
    pub fn own_dirs(&self) -> Vec<PathBuf> {
        match self {
            CgroupHost::V1(h) => h.parent_dirs(),
            CgroupHost::V2(h) => vec![h.parent_dir()],
            CgroupHost::Unavailable(_) => Vec::new(),
        }
    }

    /// Removes empty cgroups left behind by agentvm servers that are no longer running (for
    /// example after `kill -9`). Directories of live servers are never touched.
    pub fn sweep_stale(&self) {
        for parent in self.own_dirs() {
            let Ok(entries) = fs::read_dir(&parent) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(stale_owner_pid) else { continue };
                if Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                if fs::remove_dir(entry.path()).is_ok() {
                    tracing::info!(cgroup = %entry.path().display(), "removed cgroup of a server that is gone");
                }
            }
        }
    }
}

/// `agentvm-<pid>-...` → pid.
fn stale_owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("agentvm-")?.split('-').next()?.parse().ok()
}

impl VmCgroup {
    /// Moves `pid` (a host pid) into every cgroup of the VM.
    pub fn attach(&self, pid: i32) -> io::Result<()> {
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            fs::write(&path, pid.to_string()).map_err(|e| annotate(e, &path))?;
        }
        Ok(())
    }

    /// Kills every process in the VM's cgroup, when the kernel supports `cgroup.kill`.
    pub fn kill_all(&self) -> bool {
        self.kill_file.as_ref().is_some_and(|f| fs::write(f, "1").is_ok())
    }

    /// What the VM uses now, from its cgroup files (v2: `memory.current`, `cpu.stat`,
    /// `pids.current`; v1: `memory.usage_in_bytes`, `cpuacct.usage`, `pids.current`); a figure
    /// the kernel does not give is `None`. Blocking (reads a few small files).
    pub fn usage(&self) -> Usage {
        let read = |name: &str| self.dirs.iter().find_map(|dir| fs::read_to_string(dir.join(name)).ok());
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let cpu_usec = read("cpu.stat")
            .and_then(|stat| {
                stat.lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.trim().parse::<u64>().ok()))
            })
            .or_else(|| number(read("cpuacct.usage")).map(|ns| ns / 1000));
        Usage {
            memory_bytes: number(read("memory.current")).or_else(|| number(read("memory.usage_in_bytes"))),
            cpu_usec,
            pids: number(read("pids.current")),
        }
    }

    /// The directories of this VM, for diagnostics and tests.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Removes the VM's cgroup directories. Processes must be gone; directories that are still
    /// busy for a moment while the kernel finishes tearing tasks down are retried briefly.
    pub fn remove(&self) -> io::Result<()> {
        let mut result = Ok(());
        for dir in self.dirs.iter().rev() {
            let mut attempt = 0;
            loop {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 100 => {
                        attempt += 1;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => {
                        result = Err(annotate(e, dir));
                        break;
                    }
                }
            }
        }
        result
    }
}

fn warn_unavailable(reason: &str) {
    UNAVAILABLE_WARNING.call_once(|| {
        tracing::warn!("cgroups unavailable, VMs run without memory, CPU and process limits: {reason}");
    });
}

fn is_permission_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS))
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names() {
        assert_eq!(stale_owner_pid("agentvm-123-vm7"), Some(123));
        assert_eq!(stale_owner_pid("agentvm-x-vm7"), None);
        assert_eq!(stale_owner_pid("other"), None);
    }
}
