//! A host of VMs: one data directory, one base layer, one cgroup layout, many VMs.
//!
//! Data directory layout:
//!
//! ```text
//! <data>/lock            held (flock) while a host uses the directory
//! <data>/base/           the shared read-only base layer, rebuilt at every start
//! <data>/vms/<id>/upper  the VM's writable layer: its durable state
//! <data>/vms/<id>/work   overlayfs scratch space
//! <data>/disk.img        with disk quotas: one btrfs image holding every VM's layers,
//! <data>/disk/<id>/      mounted at <data>/disk, one volume per VM (see [`crate::disk`])
//! <data>/lxcfs/          as root: the LXCFS mount whose files VMs see as their /proc
//!                        (with lxcfs.pid and lxcfs.log; see [`crate::proc_view`])
//! <data>/software/       the shared software layer (installed agents), every VM's read-only
//!                        /opt/agentvm (see `agentvm_agents::layer`)
//! ```
//!
//! The data directory is `0700` root; `upper` and `work` belong to the VM's root (the first id
//! of its own range in privileged mode, see [`crate::uid_ranges`]).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentvm_sandbox::base::{self, BaseLayer, BaseOptions};
use agentvm_sandbox::cgroup::CgroupHost;
use agentvm_sandbox::config::{Confinement, UserSpec};
use agentvm_sandbox::idmap::{IdMapping, DEFAULT_PRIVILEGED_BASE, VM_USER_ID};
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Result, VmError};
use crate::types::VmOptions;
use crate::uid_ranges::{RangeLease, UidRanges, MACHINE_LOCK};
use crate::vm::Vm;

/// Name of the unprivileged account inside every VM.
pub const VM_USER_NAME: &str = "user";

/// Settings of a [`VmHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    /// The agentvm binary, which runs as each VM's init (`agentvm vm-init`).
    pub init_program: PathBuf,
    /// First host uid/gid of the VM id range when running as root.
    pub uid_base: u32,
    /// Whether VM disks get quotas (see [`crate::disk`]).
    pub disk_quota: crate::disk::DiskQuota,
}

impl HostConfig {
    pub fn new(data_dir: impl Into<PathBuf>, init_program: impl Into<PathBuf>) -> Self {
        HostConfig {
            data_dir: data_dir.into(),
            init_program: init_program.into(),
            uid_base: DEFAULT_PRIVILEGED_BASE,
            disk_quota: crate::disk::DiskQuota::default(),
        }
    }
}

/// Creates VMs. Cheap to clone.
#[derive(Clone)]
pub struct VmHost {
    pub(crate) inner: Arc<HostInner>,
}

pub(crate) struct HostInner {
    pub vms_dir: PathBuf,
    pub base: BaseLayer,
    pub ids: IdMapping,
    /// Clones every VM's first process (the `agentvm vm-launcher` process).
    pub launcher: agentvm_sandbox::launcher::Launcher,
    pub user: UserSpec,
    /// Per-VM host id ranges (privileged mode only).
    pub uid_ranges: Option<Arc<UidRanges>>,
    /// Where VMs' layers live and their disk quotas.
    pub disks: crate::disk::Disks,
    /// What VMs' `/proc` and CPU affinity show.
    pub proc_views: crate::proc_view::ProcViews,
    /// The shared software layer, bound read-only at `/opt/agentvm` in every VM.
    pub software_dir: PathBuf,
    _lock: Flock<fs::File>,
}

impl VmHost {
    /// Takes the data directory (refusing one another host is using), rebuilds the base layer,
    /// detects cgroups and removes cgroups left by servers that died.
    pub fn new(config: HostConfig) -> Result<VmHost> {
        let data = &config.data_dir;
        fs::create_dir_all(data).map_err(|e| VmError::io(format!("creating data directory {}", data.display()), e))?;
        let lock_path = data.join("lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| VmError::io(format!("opening {}", lock_path.display()), e))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            VmError::io(
                format!("data directory {} is in use by another agentvm process", data.display()),
                std::io::Error::from(e),
            )
        })?;
        if !config.init_program.is_file() {
            return Err(VmError::InvalidArgument(format!(
                "init program {} does not exist (it must be the agentvm binary)",
                config.init_program.display()
            )));
        }
        let ids = IdMapping::for_current_process(config.uid_base);
        let base = base::build(
            &data.join("base"),
            &BaseOptions {
                host_root: Path::new("/"),
                owner: ids.base_layer_owner(),
                user_name: VM_USER_NAME,
                user_id: VM_USER_ID,
            },
        )
        .map_err(|e| VmError::io("building the base layer", e))?;
        let vms_dir = data.join("vms");
        fs::create_dir_all(&vms_dir).map_err(|e| VmError::io(format!("creating {}", vms_dir.display()), e))?;
        let software_dir = agentvm_agents::SoftwareLayer::of_data_dir(data).dir().to_path_buf();
        for dir in [software_dir.clone(), software_dir.join("agents")] {
            fs::create_dir_all(&dir)
                .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)))
                .map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
        }
        let disks = crate::disk::Disks::open(data, &vms_dir, config.disk_quota)?;
        let uid_ranges = match ids {
            IdMapping::Privileged { base, .. } => {
                let ranges = UidRanges::new(base, Path::new(MACHINE_LOCK))
                    .map_err(|e| VmError::io(format!("opening {MACHINE_LOCK}"), e))?;
                ranges.recover(&vms_dir);
                if let Some(dir) = disks.quota_dir() {
                    ranges.recover(dir);
                }
                Some(Arc::new(ranges))
            }
            IdMapping::Rootless { .. } => None,
        };
        let _ = fs::set_permissions(data, fs::Permissions::from_mode(0o700));
        crate::terminal_budget::raise_host_pool();
        let cgroups = CgroupHost::detect();
        cgroups.sweep_stale();
        let launcher = agentvm_sandbox::launcher::Launcher::start(&config.init_program, cgroups)
            .map_err(|e| VmError::io("starting the VM launcher", e))?;
        let proc_views = crate::proc_view::ProcViews::start(data, matches!(ids, IdMapping::Privileged { .. }));
        let user = UserSpec {
            name: VM_USER_NAME.into(),
            uid: VM_USER_ID,
            gid: VM_USER_ID,
            home: format!("/home/{VM_USER_NAME}"),
        };
        Ok(VmHost {
            inner: Arc::new(HostInner {
                vms_dir,
                base,
                ids,
                launcher,
                user,
                uid_ranges,
                disks,
                proc_views,
                software_dir,
                _lock: lock,
            }),
        })
    }

    /// Boots the VM `id`, reusing its directory (and so its files) if it exists.
    pub async fn create_vm(&self, id: &str, mut options: VmOptions) -> Result<Vm> {
        validate_id(id)?;
        let limits = options.limits;
        let confinement =
            options.confinement.get_or_insert_with(|| Confinement::sized_for(limits.memory_bytes, limits.pids));
        confinement.proc_view = self.inner.proc_views.for_vm(&limits, confinement.allow_nested_userns);
        Vm::create(self.clone(), id.to_string(), options).await
    }

    /// The directory holding the VM's durable state.
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.inner.vms_dir.join(id)
    }

    /// Deletes a VM's directory. The VM must not be running.
    pub fn remove_vm_data(&self, id: &str) -> Result<()> {
        validate_id(id)?;
        let dir = self.vm_dir(id);
        // overlayfs leaves a mode-000 directory in `work`; without root we must open it up first.
        make_owner_writable(&dir);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VmError::io(format!("removing VM {id}"), e)),
            _ => {
                self.inner.disks.remove(id)?;
                if let Some(ranges) = &self.inner.uid_ranges {
                    ranges.release(id);
                }
                Ok(())
            }
        }
    }

    /// The shared software layer's host directory (`<data>/software`), which every VM sees
    /// read-only at `/opt/agentvm`.
    pub fn software_dir(&self) -> &Path {
        &self.inner.software_dir
    }

    /// How VM ids map to host ids on this host.
    pub fn id_mapping(&self) -> IdMapping {
        self.inner.ids
    }

    /// Creates `<vms>/<id>/{upper,work}` owned by the VM's root, and returns them with the
    /// VM's id mapping (its own range in privileged mode) and the lease that keeps the range
    /// the VM's alone while it runs.
    pub(crate) fn prepare_vm_dir(&self, id: &str) -> Result<(PathBuf, PathBuf, IdMapping, Option<RangeLease>)> {
        let dir = self.inner.disks.prepare(id)?;
        let (ids, lease) = match &self.inner.uid_ranges {
            Some(ranges) => {
                let (ids, lease) = ranges.assign(id, &dir)?;
                (ids, Some(lease))
            }
            None => (self.inner.ids, None),
        };
        let (uid, gid) = ids.host_ids_of_vm_owner();
        let mut made = Vec::new();
        for name in ["upper", "work"] {
            let path = dir.join(name);
            fs::create_dir_all(&path).map_err(|e| VmError::io(format!("creating {}", path.display()), e))?;
            chown(&path, Some(uid), Some(gid)).map_err(|e| VmError::io(format!("owning {}", path.display()), e))?;
            made.push(path);
        }
        let work = made.pop().expect("two dirs");
        let upper = made.pop().expect("two dirs");
        Ok((upper, work, ids, lease))
    }
}

/// Gives the owner full access to every directory below `dir` that it owns (best effort).
fn make_owner_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else { return };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode((meta.permissions().mode() | 0o700) & 0o7777));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            make_owner_writable(&entry.path());
        }
    }
}

/// VM ids name directories: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['.', '-'])
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(VmError::InvalidArgument(format!(
            "invalid VM id {id:?}: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_data_dir_are_refused() {
        for bad in ["", ".", "..", "../x", "a/b", "-x", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "my-agent", "A.b_c-1"] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }
}
