//! Where a VM's layers (`upper`, `work`) live, and the disk quota that bounds them.
//!
//! With a quota filesystem (the default as root, see [`agentvm_sandbox::quota`]) every VM's
//! layers are in a volume of their own on it, `<data>/disk/<id>/{upper,work}`, limited to
//! [`VmOptions::disk_bytes`](crate::VmOptions::disk_bytes) (10 GiB by default), set again at
//! every boot so a changed option applies to existing VMs. A VM that writes past it, in bytes or
//! in files (every inode costs metadata bytes), gets `EDQUOT` ("Disk quota exceeded"); the
//! host's disk and inode table only see the image file. The VM's event log and other server
//! state stay in `<data>/vms/<id>/`, outside the quota, so a full VM still records its events.
//!
//! Without one (rootless mode, `mkfs.btrfs` missing, [`DiskQuota::Off`]) layers are plain
//! directories `<data>/vms/<id>/{upper,work}` on the host filesystem, unbounded, and the host
//! says so once in its log. VMs made that way keep their layers where they are even once a
//! quota filesystem exists (they have no quota then).

use std::fs;
use std::path::{Path, PathBuf};

use agentvm_sandbox::quota::{QuotaError, QuotaFs};

use crate::error::{Result, VmError};
use crate::host::VmHost;

/// Whether a [`VmHost`] bounds VM disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskQuota {
    /// Use a quota filesystem where the host can mount one (as root, with `mkfs.btrfs`);
    /// otherwise run without disk quotas and log why.
    #[default]
    Auto,
    /// No disk quotas: layers are plain directories in the data directory.
    Off,
}

/// The layers of all VMs of a host.
pub(crate) struct Disks {
    vms_dir: PathBuf,
    quota: Option<QuotaFs>,
}

impl Disks {
    /// Mounts (or makes) the quota filesystem of the data directory `data` as `mode` asks.
    pub(crate) fn open(data: &Path, vms_dir: &Path, mode: DiskQuota) -> Result<Disks> {
        let plain = Disks { vms_dir: vms_dir.to_path_buf(), quota: None };
        if mode == DiskQuota::Off {
            return Ok(plain);
        }
        let image = data.join("disk.img");
        if !nix::unistd::geteuid().is_root() {
            tracing::warn!("rootless mode: VM disks have no quota (mounting the quota filesystem needs root)");
            return Ok(plain);
        }
        match QuotaFs::open(&image, &data.join("disk")) {
            Ok(quota) => {
                sweep_snapshots(&quota);
                Ok(Disks { vms_dir: vms_dir.to_path_buf(), quota: Some(quota) })
            }
            // An image that exists holds VMs' files: running without it would lose them.
            Err(e) if image.exists() => {
                Err(VmError::io(format!("mounting the VM disk {}", image.display()), std::io::Error::other(e)))
            }
            Err(e) => {
                let hint = if matches!(e, QuotaError::NoMkfs) { " (apt-get install btrfs-progs)" } else { "" };
                tracing::warn!("VM disks have NO quota: a VM can fill the host's disk: {e}{hint}");
                Ok(plain)
            }
        }
    }

    /// The directory holding the VM's `upper` and `work`.
    pub(crate) fn layers_dir(&self, id: &str) -> PathBuf {
        let plain = self.vms_dir.join(id);
        match &self.quota {
            Some(quota) if !plain.join("upper").exists() => quota.mountpoint().join(id),
            _ => plain,
        }
    }

    /// The layers directory of `id`, made a quota volume first where quotas apply.
    pub(crate) fn prepare(&self, id: &str) -> Result<PathBuf> {
        let dir = self.layers_dir(id);
        if let Some(quota) = &self.quota {
            if dir.starts_with(quota.mountpoint()) {
                return quota.volume(id).map_err(|e| VmError::io(format!("VM {id}"), std::io::Error::other(e)));
            }
        }
        Ok(dir)
    }

    /// Sets the VM's quota (where it has a volume).
    pub(crate) fn set_limit(&self, id: &str, bytes: Option<u64>) -> Result<()> {
        let Some(quota) = &self.quota else { return Ok(()) };
        let dir = self.layers_dir(id);
        if !QuotaFs::is_volume(&dir) {
            return Ok(());
        }
        quota.set_limit(&dir, bytes).map_err(|e| VmError::io(format!("VM {id}"), std::io::Error::other(e)))
    }

    /// Deletes the VM's volume, if it has one. The VM must not be running.
    pub(crate) fn remove(&self, id: &str) -> Result<()> {
        let Some(quota) = &self.quota else { return Ok(()) };
        let dir = quota.mountpoint().join(id);
        // Deleting an (empty) volume is an ordinary rmdir for root, so this removes it too.
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(VmError::io(format!("removing the disk of VM {id}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Where volumes live, when quotas apply.
    pub(crate) fn quota_dir(&self) -> Option<&Path> {
        self.quota.as_ref().map(QuotaFs::mountpoint)
    }
}

/// Deletes the files snapshots a server that ended mid-copy left (see [`LayersSnapshot`]).
fn sweep_snapshots(quota: &QuotaFs) {
    let Ok(entries) = fs::read_dir(quota.mountpoint()) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(".snapshot-")) {
            if let Err(e) = quota.delete_snapshot(&entry.path()) {
                tracing::warn!(snapshot = %entry.path().display(), "deleting a leftover VM files snapshot: {e}");
            }
        }
    }
}

/// A VM's files (its `upper` layer) at one instant, for copying out: a read-only snapshot of
/// its volume, deleted when this is dropped, or, without quota volumes, the live directory.
pub struct LayersSnapshot {
    host: VmHost,
    snapshot: Option<PathBuf>,
    upper: PathBuf,
}

impl LayersSnapshot {
    /// The `upper` directory to copy.
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Whether it is a point-in-time copy (a snapshot) rather than the live directory.
    pub fn is_point_in_time(&self) -> bool {
        self.snapshot.is_some()
    }
}

impl Drop for LayersSnapshot {
    fn drop(&mut self) {
        if let (Some(snapshot), Some(quota)) = (&self.snapshot, &self.host.inner.disks.quota) {
            if let Err(e) = quota.delete_snapshot(snapshot) {
                tracing::warn!(snapshot = %snapshot.display(), "deleting a VM files snapshot: {e}");
            }
        }
    }
}

impl VmHost {
    /// The VM's files as they are now (see [`LayersSnapshot`]); `tag` makes the snapshot's name
    /// unique. Without a quota volume the live `upper` is returned: copy it while the VM is
    /// stopped for a consistent copy. Blocking.
    pub fn snapshot_layers(&self, id: &str, tag: &str) -> Result<LayersSnapshot> {
        crate::host::validate_id(id)?;
        let dir = self.layers_dir(id);
        let quota = self.inner.disks.quota.as_ref().filter(|_| QuotaFs::is_volume(&dir));
        let Some(quota) = quota else {
            return Ok(LayersSnapshot { host: self.clone(), snapshot: None, upper: dir.join("upper") });
        };
        let snapshot =
            quota.snapshot(id, tag).map_err(|e| VmError::io(format!("VM {id}"), std::io::Error::other(e)))?;
        let upper = snapshot.join("upper");
        Ok(LayersSnapshot { host: self.clone(), snapshot: Some(snapshot), upper })
    }

    /// The directory a VM's `upper` goes in, made (a quota volume where quotas apply) if
    /// needed: where a VM's files restored from elsewhere are written before its first boot
    /// here. Blocking.
    pub fn prepare_layers(&self, id: &str) -> Result<PathBuf> {
        crate::host::validate_id(id)?;
        self.inner.disks.prepare(id)
    }

    /// The directory holding the VM's layers: `upper` (its files) and `work`.
    pub fn layers_dir(&self, id: &str) -> PathBuf {
        self.inner.disks.layers_dir(id)
    }

    /// Whether VMs of this host have disk quotas.
    pub fn disk_quota_active(&self) -> bool {
        self.inner.disks.quota_dir().is_some()
    }

    /// Applies [`VmOptions::disk_bytes`](crate::VmOptions::disk_bytes) before a boot.
    pub(crate) fn apply_disk_quota(&self, id: &str, bytes: Option<u64>) -> Result<()> {
        self.inner.disks.set_limit(id, bytes)
    }
}
