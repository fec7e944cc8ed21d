//! How VM user and group ids map to host ids.
//!
//! Two modes, chosen from the host process's own identity:
//!
//! - **Privileged** (the server runs as root): VM ids `0..count` map to host ids
//!   `base..base+count`, where every VM gets a `base` of its own (a range allocated and persisted
//!   per VM by the host, see `agentvm-vm`'s `uid_ranges`), so no two VMs share a kernel identity:
//!   keys, per-user budgets (inotify, message queues, pipe buffers, processes) and the user
//!   namespace's owner are all per VM. VM root is an unprivileged host uid, the VM user (uid 1000)
//!   is host uid `base+1000`, and host root is not mapped at all, so files owned by host root
//!   (the shared `/usr`) appear as `nobody` and can never be written by the VM. The shared base
//!   layer, owned by host root on disk, is seen through an idmapped mount (see
//!   [`crate::idmapped`]) and so appears owned by the VM's root.
//! - **Rootless** (an ordinary user with unprivileged user namespaces): a single mapping, VM uid
//!   1000 = the host user. Init runs as that user and holds its namespace capabilities as ambient
//!   capabilities, which it drops for every command it starts. There is no root inside the VM.

use serde::{Deserialize, Serialize};

/// The uid and gid of the VM's unprivileged user, as seen inside the VM.
pub const VM_USER_ID: u32 = 1000;
/// Default first host id of the privileged mappings: VM ranges start here, one every
/// [`PRIVILEGED_COUNT`] ids. It lies above the ranges `useradd` hands out in `/etc/subuid`
/// (100000 to 600100000) and below 2^31 (some tools treat uids as signed).
pub const DEFAULT_PRIVILEGED_BASE: u32 = 0x4000_0000;
/// Number of ids in a privileged mapping (one VM's range).
pub const PRIVILEGED_COUNT: u32 = 65_536;
/// Highest host id (exclusive) a VM range may reach by default.
pub const DEFAULT_PRIVILEGED_END: u32 = 0x8000_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdMapping {
    Privileged { base: u32, count: u32 },
    Rootless { host_uid: u32, host_gid: u32 },
}

impl IdMapping {
    /// Privileged when running as root, rootless otherwise.
    pub fn for_current_process(privileged_base: u32) -> IdMapping {
        let euid = nix::unistd::geteuid().as_raw();
        if euid == 0 {
            IdMapping::Privileged { base: privileged_base, count: PRIVILEGED_COUNT }
        } else {
            IdMapping::Rootless { host_uid: euid, host_gid: nix::unistd::getegid().as_raw() }
        }
    }

    pub fn uid_map(&self) -> String {
        match *self {
            IdMapping::Privileged { base, count } => format!("0 {base} {count}\n"),
            IdMapping::Rootless { host_uid, .. } => format!("{VM_USER_ID} {host_uid} 1\n"),
        }
    }

    pub fn gid_map(&self) -> String {
        match *self {
            IdMapping::Privileged { base, count } => format!("0 {base} {count}\n"),
            IdMapping::Rootless { host_gid, .. } => format!("{VM_USER_ID} {host_gid} 1\n"),
        }
    }

    /// An unprivileged writer of `gid_map` must first deny `setgroups(2)` in the namespace.
    pub fn deny_setgroups(&self) -> bool {
        matches!(self, IdMapping::Rootless { .. })
    }

    /// `true` when init is uid 0 inside the VM.
    pub fn init_is_root(&self) -> bool {
        matches!(self, IdMapping::Privileged { .. })
    }

    /// The ids init takes inside the VM before it execs.
    pub fn init_ids(&self) -> (u32, u32) {
        match self {
            IdMapping::Privileged { .. } => (0, 0),
            IdMapping::Rootless { .. } => (VM_USER_ID, VM_USER_ID),
        }
    }

    /// Host uid and gid that own files created by VM id `vm_id`, if it is mapped.
    pub fn host_ids_of(&self, vm_id: u32) -> Option<(u32, u32)> {
        match *self {
            IdMapping::Privileged { base, count } if vm_id < count => Some((base + vm_id, base + vm_id)),
            IdMapping::Rootless { host_uid, host_gid } if vm_id == VM_USER_ID => Some((host_uid, host_gid)),
            _ => None,
        }
    }

    /// Host ids that own the shared base layer on disk: host root in privileged mode (each VM
    /// sees it through an idmapped mount as its own root), the user in rootless mode.
    pub fn base_layer_owner(&self) -> (u32, u32) {
        match *self {
            IdMapping::Privileged { .. } => (0, 0),
            IdMapping::Rootless { host_uid, host_gid } => (host_uid, host_gid),
        }
    }

    /// Host ids that own the VM's root-owned files (the upper layer's top).
    pub fn host_ids_of_vm_owner(&self) -> (u32, u32) {
        let (uid, _) = self.init_ids();
        self.host_ids_of(uid).expect("init's ids are always mapped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_maps_a_range_without_host_root() {
        let m = IdMapping::Privileged { base: 100_000, count: 65_536 };
        assert_eq!(m.uid_map(), "0 100000 65536\n");
        assert_eq!(m.host_ids_of(1000), Some((101_000, 101_000)));
        assert_eq!(m.host_ids_of(70_000), None);
        assert!(!m.deny_setgroups());
    }

    #[test]
    fn rootless_maps_only_the_user() {
        let m = IdMapping::Rootless { host_uid: 1234, host_gid: 99 };
        assert_eq!(m.uid_map(), "1000 1234 1\n");
        assert_eq!(m.gid_map(), "1000 99 1\n");
        assert_eq!(m.host_ids_of(0), None);
        assert_eq!(m.host_ids_of_vm_owner(), (1234, 99));
        assert!(m.deny_setgroups());
    }
}
