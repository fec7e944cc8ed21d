//! Pure cgroup v2 hosts: one directory per VM with `memory.max`, `pids.max` and `cpu.max`.
//!
//! v2 charges TCP socket buffers to the cgroup's memory, so `memory.max` bounds them too and
//! [`CgroupLimits::tcp_memory_bytes`] needs no file of its own here.
//!
//! Controllers are only usable in a child cgroup when the parent lists them in
//! `cgroup.subtree_control`, and v2 forbids enabling them in a cgroup that still holds processes
//! (except the root). The server therefore does not enable controllers itself: when its own
//! cgroup delegates them (for example a systemd unit with `Delegate=yes` whose processes live in
//! a leaf), limits apply; otherwise VMs get a cgroup without those limits, which still gives
//! `cgroup.kill`, and the missing controllers are logged.

use std::fs;
use std::path::PathBuf;

use super::v1::Plan;
use super::{CgroupLimits, LimitWrite};

#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// The server's own cgroup directory.
    pub own: PathBuf,
}

const CPU_PERIOD_US: u64 = 100_000;

impl Hierarchy {
    pub(super) fn parent_dir(&self) -> PathBuf {
        self.own.clone()
    }

    pub(super) fn plan(&self, name: &str, limits: &CgroupLimits) -> Result<Plan, String> {
        let dir = self.own.join(name);
        let enabled = fs::read_to_string(self.own.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| enabled.split_whitespace().any(|x| x == c);
        let mut writes = Vec::new();
        let mut missing = Vec::new();
        if let Some(bytes) = limits.memory_bytes {
            if has("memory") {
                writes.push(LimitWrite { dir: dir.clone(), file: "memory.max", value: bytes.to_string() });
                writes.push(LimitWrite { dir: dir.clone(), file: "memory.swap.max", value: "0".into() });
            } else {
                missing.push("memory");
            }
        }
        if let Some(max) = limits.pids {
            if has("pids") {
                writes.push(LimitWrite { dir: dir.clone(), file: "pids.max", value: max.to_string() });
            } else {
                missing.push("pids");
            }
        }
        if let Some(millicores) = limits.cpu_millicores {
            if has("cpu") {
                let quota = (millicores * CPU_PERIOD_US / 1000).max(1000);
                writes.push(LimitWrite {
                    dir: dir.clone(),
                    file: "cpu.max",
                    value: format!("{quota} {CPU_PERIOD_US}"),
                });
            } else {
                missing.push("cpu");
            }
        }
        if !missing.is_empty() {
            super::warn_unavailable(&format!(
                "the server's cgroup {} does not delegate the {} controller(s)",
                self.own.display(),
                missing.join(", ")
            ));
        }
        let kill_file = Some(dir.join("cgroup.kill"));
        Ok((vec![dir], writes, kill_file))
    }
}
