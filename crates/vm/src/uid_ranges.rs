//! Per-VM host uid/gid ranges (privileged mode).
//!
//! Every VM gets its own range of [`PRIVILEGED_COUNT`] host ids, so no kernel identity is shared
//! between VMs: VM user 1000 of one VM is a different host uid from VM user 1000 of another,
//! and the VM's user namespace is owned by the first id of its range (see
//! `agentvm_sandbox::launch`). Per-user kernel budgets — key quotas, inotify instances, message
//! queue bytes, pipe buffer pages, namespaces — are therefore per VM.
//!
//! **Persistence without a table.** A VM's range is recorded where it matters: the owner of its
//! `upper` directory is the first id of its range (the VM's root). At start the host reads the
//! owners back; a VM whose owner is not an aligned range of this host (a directory made by an
//! older agentvm, or a range another VM already claimed) is given a free range at its next boot
//! and its files are re-owned (ids shifted from the old range to the new one). Destroying a VM
//! frees its range for reuse: its files are gone and so are its processes.
//!
//! **Unique on the machine while running.** Several servers (several data directories) may run
//! on one machine. While a VM runs, its range is locked machine-wide: one byte per range in
//! [`MACHINE_LOCK`], locked with an open-file-description lock (released by the kernel if the
//! server dies). A VM whose persisted range is locked by another server gets a free range and
//! its files are re-owned, as above; so no two running VMs on the machine ever share ids.
//!
//! Ranges are `first + slot * PRIVILEGED_COUNT` for `slot` in `0..slots`; the default places
//! 16,384 ranges between 2^30 and 2^31 (see `agentvm_sandbox::idmap::DEFAULT_PRIVILEGED_BASE`).

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use agentvm_sandbox::idmap::{IdMapping, DEFAULT_PRIVILEGED_END, PRIVILEGED_COUNT};

use crate::error::{Result, VmError};

/// The machine-wide lock file of running ranges.
pub(crate) const MACHINE_LOCK: &str = "/run/agentvm/uid-ranges.lock";

/// Allocator of per-VM host id ranges.
pub(crate) struct UidRanges {
    first: u32,
    slots: u32,
    machine: File,
    state: Mutex<Assigned>,
}

#[derive(Default)]
struct Assigned {
    /// The range of every VM of this host (running or not).
    by_vm: HashMap<String, u32>,
    used: BTreeSet<u32>,
    /// Ranges of running VMs, with how many leases hold each (a VM may boot again before its
    /// previous boot's handle is gone).
    running: HashMap<u32, usize>,
}

/// Holds a VM's range locked machine-wide while the VM runs.
pub(crate) struct RangeLease {
    ranges: Arc<UidRanges>,
    slot: u32,
}

impl Drop for RangeLease {
    fn drop(&mut self) {
        let mut state = self.ranges.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = state.running.get_mut(&self.slot) {
            *count -= 1;
            if *count == 0 {
                state.running.remove(&self.slot);
                self.ranges.unlock(self.slot);
            }
        }
    }
}

impl UidRanges {
    /// Ranges from `first` up to [`DEFAULT_PRIVILEGED_END`] (at least one), locked machine-wide
    /// in `lock_file` while in use.
    pub fn new(first: u32, lock_file: &Path) -> io::Result<UidRanges> {
        let slots = (DEFAULT_PRIVILEGED_END.saturating_sub(first) / PRIVILEGED_COUNT).max(1);
        if let Some(dir) = lock_file.parent() {
            fs::create_dir_all(dir)?;
        }
        let machine = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(lock_file)?;
        Ok(UidRanges { first, slots, machine, state: Mutex::new(Assigned::default()) })
    }

    /// Locks `slot` machine-wide; `false` when another process holds it.
    fn try_lock(&self, slot: u32) -> io::Result<bool> {
        match self.set_lock(slot, libc::F_WRLCK as libc::c_short) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn unlock(&self, slot: u32) {
        let _ = self.set_lock(slot, libc::F_UNLCK as libc::c_short);
    }

    fn set_lock(&self, slot: u32, kind: libc::c_short) -> io::Result<()> {
        // SAFETY: flock is plain data; every field the kernel reads is set below.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = slot as libc::off_t;
        lock.l_len = 1;
        // SAFETY: F_OFD_SETLK reads `lock`; the descriptor is ours.
        if unsafe { libc::fcntl(self.machine.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn start_of(&self, slot: u32) -> u32 {
        self.first + slot * PRIVILEGED_COUNT
    }

    /// The slot whose range starts at `uid`, if `uid` is such a start.
    fn slot_starting_at(&self, uid: u32) -> Option<u32> {
        let offset = uid.checked_sub(self.first)?;
        (offset % PRIVILEGED_COUNT == 0 && offset / PRIVILEGED_COUNT < self.slots).then_some(offset / PRIVILEGED_COUNT)
    }

    /// Reads back the ranges of the VMs under `vms_dir` (the owner of each `upper`).
    pub fn recover(&self, vms_dir: &Path) {
        let Ok(entries) = fs::read_dir(vms_dir) else { return };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let Ok(meta) = fs::symlink_metadata(entry.path().join("upper")) else { continue };
            if let Some(slot) = self.slot_starting_at(meta.uid()) {
                if state.used.insert(slot) {
                    state.by_vm.insert(id, slot);
                }
            }
        }
    }

    /// The mapping of VM `id` for a boot, with the lease that keeps its range locked while the
    /// VM runs. Allocates a range on first use, or when another server runs a VM in the range
    /// this VM had. If `vm_dir` holds files of another range, they are re-owned into the new one.
    pub fn assign(self: &Arc<Self>, id: &str, vm_dir: &Path) -> Result<(IdMapping, RangeLease)> {
        let lock_error = |e: io::Error| VmError::io(format!("locking a uid range in {MACHINE_LOCK}"), e);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = state.by_vm.get(id).copied();
        if let Some(s) = slot {
            if !state.running.contains_key(&s) && !self.try_lock(s).map_err(lock_error)? {
                // Another server runs a VM in this range: move this VM to a free one.
                state.by_vm.remove(id);
                state.used.remove(&s);
                slot = None;
            }
        }
        let slot = match slot {
            Some(s) => s,
            None => {
                let mut found = None;
                for s in 0..self.slots {
                    if !state.used.contains(&s) && self.try_lock(s).map_err(lock_error)? {
                        found = Some(s);
                        break;
                    }
                }
                let s = found.ok_or_else(|| {
                    VmError::ResourceExhausted(format!(
                        "no free host uid range: each VM gets its own range and all {} are in use",
                        self.slots
                    ))
                })?;
                state.used.insert(s);
                state.by_vm.insert(id.to_string(), s);
                s
            }
        };
        *state.running.entry(slot).or_default() += 1;
        drop(state);
        let lease = RangeLease { ranges: Arc::clone(self), slot };
        let start = self.start_of(slot);
        for layer in ["upper", "work"] {
            let dir = vm_dir.join(layer);
            if let Ok(meta) = fs::symlink_metadata(&dir) {
                if meta.uid() != start {
                    reown_tree(&dir, meta.uid(), start)
                        .map_err(|e| VmError::io(format!("moving {} to its uid range", dir.display()), e))?;
                }
            }
        }
        Ok((IdMapping::Privileged { base: start, count: PRIVILEGED_COUNT }, lease))
    }

    /// Frees the range of a destroyed VM.
    pub fn release(&self, id: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = state.by_vm.remove(id) {
            state.used.remove(&slot);
        }
    }
}

/// Shifts the owner and group of everything under `dir` from the range starting at `from` to
/// the range starting at `to` (ids outside the old range are left alone). `chown` clears the
/// set-user/group-id bits of files, so they are put back.
fn reown_tree(dir: &Path, from: u32, to: u32) -> io::Result<()> {
    let shift = |id: u32| match id.checked_sub(from) {
        Some(offset) if offset < PRIVILEGED_COUNT => Some(to + offset),
        _ => None,
    };
    let meta = fs::symlink_metadata(dir)?;
    let (uid, gid) = (shift(meta.uid()), shift(meta.gid()));
    if uid.is_some() || gid.is_some() {
        lchown(dir, uid, gid)?;
        let mode = meta.mode() & 0o7777;
        if !meta.file_type().is_symlink() && mode & 0o6000 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
        }
    }
    if meta.is_dir() {
        for entry in fs::read_dir(dir)? {
            reown_tree(&entry?.path(), from, to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let r = UidRanges::new(0x4000_0000, &dir.path().join("lock")).unwrap();
        assert_eq!(r.slots, 16_384);
        assert_eq!(r.slot_starting_at(0x4000_0000), Some(0));
        assert_eq!(r.slot_starting_at(0x4001_0000), Some(1));
        assert_eq!(r.slot_starting_at(0x4001_0001), None);
        assert_eq!(r.slot_starting_at(100_000), None);
        assert_eq!(r.slot_starting_at(0x8000_0000), None);
    }

    fn ranges(dir: &Path) -> Arc<UidRanges> {
        Arc::new(UidRanges::new(0x4000_0000, &dir.join("lock")).unwrap())
    }

    #[test]
    fn ranges_are_distinct_and_reused_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let r = ranges(dir.path());
        let (a, lease_a) = r.assign("a", &dir.path().join("a")).unwrap();
        let (b, _lease_b) = r.assign("b", &dir.path().join("b")).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.assign("a", &dir.path().join("a")).unwrap().0, a, "a VM keeps its range");
        drop(lease_a);
        r.release("a");
        assert_eq!(r.assign("c", &dir.path().join("c")).unwrap().0, a, "a destroyed VM's range is reused");
    }

    #[test]
    fn a_range_running_in_another_server_is_not_shared() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (ranges(dir.path()), ranges(dir.path()));
        let (a, _running) = one.assign("a", &dir.path().join("a")).unwrap();
        // The second server recovered VM "x" with the same range, which now runs elsewhere.
        two.state.lock().unwrap().by_vm.insert("x".into(), 0);
        two.state.lock().unwrap().used.insert(0);
        let (x, _lease) = two.assign("x", &dir.path().join("x")).unwrap();
        assert_ne!(a, x);
    }
}
