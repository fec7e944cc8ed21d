//! cgroup v1 (and hybrid) hosts: one hierarchy per controller, plus the v2 `unified` hierarchy
//! for `cgroup.kill` when it is mounted.

use std::path::PathBuf;

use super::{CgroupLimits, LimitWrite};

/// The server's own cgroup directory in each hierarchy agentvm uses.
#[derive(Debug, Clone)]
pub struct Hierarchies {
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    /// The CPUs a VM may run on (see [`super::CgroupHost::create_with_cpus`]); with `cpuacct`,
    /// what LXCFS reads to show a VM its own CPUs and CPU time in `/proc/cpuinfo` and
    /// `/proc/stat` (it looks for a process's cgroup in every hierarchy).
    pub cpuset: Option<PathBuf>,
    /// CPU time accounting (no limit); often mounted together with `cpu`.
    pub cpuacct: Option<PathBuf>,
    pub unified: Option<PathBuf>,
}

/// The v1 limit on a cgroup's TCP socket buffer memory.
pub(super) const TCP_LIMIT_FILE: &str = "memory.kmem.tcp.limit_in_bytes";

/// CFS scheduling period used for CPU limits.
const CPU_PERIOD_US: u64 = 100_000;

pub(super) type Plan = (Vec<PathBuf>, Vec<LimitWrite>, Option<PathBuf>);

impl Hierarchies {
    pub(super) fn parent_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.memory, &self.pids, &self.cpu, &self.cpuset, &self.cpuacct, &self.unified]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        dirs.dedup();
        dirs
    }

    /// The cgroups of VM `name` and their limits; `cpus` (empty: the server's) go to `cpuset`.
    pub(super) fn plan(&self, name: &str, limits: &CgroupLimits, cpus: &[u32]) -> Result<Plan, String> {
        let mut dirs = Vec::new();
        let mut writes = Vec::new();
        if let Some(parent) = &self.memory {
            let dir = parent.join(name);
            if let Some(bytes) = limits.memory_bytes {
                writes.push(LimitWrite { dir: dir.clone(), file: "memory.limit_in_bytes", value: bytes.to_string() });
                // RAM + swap together, where the kernel accounts swap: no escape into swap.
                if parent.join("memory.memsw.limit_in_bytes").exists() {
                    writes.push(LimitWrite {
                        dir: dir.clone(),
                        file: "memory.memsw.limit_in_bytes",
                        value: bytes.to_string(),
                    });
                }
            }
            if let Some(bytes) = limits.tcp_memory_bytes {
                // Must be written before any process joins: v1 only charges sockets created in a
                // cgroup whose TCP limit is already set (see the module documentation of `cgroup`).
                if parent.join(TCP_LIMIT_FILE).exists() {
                    writes.push(LimitWrite { dir: dir.clone(), file: TCP_LIMIT_FILE, value: bytes.to_string() });
                } else {
                    static NO_TCP_LIMIT: std::sync::Once = std::sync::Once::new();
                    NO_TCP_LIMIT.call_once(|| {
                        tracing::warn!(
                            "{} has no {TCP_LIMIT_FILE} (kernel without v1 kmem accounting): \
                             TCP buffer memory of VMs is not limited",
                            parent.display()
                        )
                    });
                }
            }
            dirs.push(dir);
        }
        if let Some(parent) = &self.pids {
            let dir = parent.join(name);
            if let Some(max) = limits.pids {
                writes.push(LimitWrite { dir: dir.clone(), file: "pids.max", value: max.to_string() });
            }
            dirs.push(dir);
        }
        if let Some(parent) = &self.cpu {
            let dir = parent.join(name);
            if let Some(millicores) = limits.cpu_millicores {
                let quota = (millicores * CPU_PERIOD_US / 1000).max(1000);
                writes.push(LimitWrite {
                    dir: dir.clone(),
                    file: "cpu.cfs_period_us",
                    value: CPU_PERIOD_US.to_string(),
                });
                writes.push(LimitWrite { dir: dir.clone(), file: "cpu.cfs_quota_us", value: quota.to_string() });
            }
            dirs.push(dir);
        }
        if let Some(parent) = &self.cpuset {
            // A v1 cpuset admits no process before both of its lists are set.
            let dir = parent.join(name);
            let read = |file: &str| std::fs::read_to_string(parent.join(file)).map(|s| s.trim().to_string());
            let cpu_list = if cpus.is_empty() {
                read("cpuset.cpus").map_err(|e| format!("reading {}/cpuset.cpus: {e}", parent.display()))?
            } else {
                cpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            };
            let mems = read("cpuset.mems").map_err(|e| format!("reading {}/cpuset.mems: {e}", parent.display()))?;
            writes.push(LimitWrite { dir: dir.clone(), file: "cpuset.cpus", value: cpu_list });
            writes.push(LimitWrite { dir: dir.clone(), file: "cpuset.mems", value: mems });
            dirs.push(dir);
        }
        if let Some(parent) = self.cpuacct.as_ref().filter(|p| Some(*p) != self.cpu.as_ref()) {
            dirs.push(parent.join(name));
        }
        let mut kill_file = None;
        if let Some(parent) = &self.unified {
            let dir = parent.join(name);
            if parent.join("cgroup.kill").exists() {
                kill_file = Some(dir.join("cgroup.kill"));
            }
            dirs.push(dir);
        }
        if dirs.is_empty() {
            return Err("no memory, pids, cpu or unified cgroup hierarchy is mounted".into());
        }
        Ok((dirs, writes, kill_file))
    }
}
