//! The few btrfs ioctls the quota filesystem needs: create a subvolume, enable simple quotas,
//! limit a subvolume's quota group, take and delete a read-only snapshot of a subvolume (a
//! VM's files at one instant, copied out while the VM keeps running).
//!
//! Written here because no maintained Rust crate wraps them without linking the C library
//! `libbtrfsutil`; each is one `ioctl` on a directory descriptor with a plain C struct.
//!
//! Each subvolume gets a quota group (`0/<subvolume id>`) from the kernel. *Simple quotas*
//! (kernel 6.7+) charge every extent to the subvolume that allocated it when it is allocated,
//! data and metadata alike, without the back-reference walks of full qgroups. A write, a
//! `mkdir` or a `creat` that would take a subvolume past its limit fails with `EDQUOT`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs.f_type` of btrfs.
pub const SUPER_MAGIC: i64 = 0x9123_683E;
/// Inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const SUBVOLUME_ROOT_INODE: u64 = 256;

const IOCTL_MAGIC: u64 = 0x94;
const fn ioc(dir: u64, nr: u64, size: usize) -> libc::c_ulong {
    ((dir << 30) | ((size as u64) << 16) | (IOCTL_MAGIC << 8) | nr) as libc::c_ulong
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}
const SUBVOL_CREATE: libc::c_ulong = ioc(IOC_WRITE, 14, size_of::<VolArgs>());

const SNAP_DESTROY: libc::c_ulong = ioc(IOC_WRITE, 15, size_of::<VolArgs>());

/// `struct btrfs_ioctl_vol_args_v2` (the `size`/`qgroup_inherit` union as its 32 bytes).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}
const SNAP_CREATE_V2: libc::c_ulong = ioc(IOC_WRITE, 23, size_of::<VolArgsV2>());
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}
const QUOTA_CTL: libc::c_ulong = ioc(IOC_READ | IOC_WRITE, 40, size_of::<QuotaCtlArgs>());
const QUOTA_CTL_ENABLE_SIMPLE_QUOTA: u64 = 4;

/// `struct btrfs_ioctl_qgroup_limit_args` (with its `struct btrfs_qgroup_limit`).
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}
const QGROUP_LIMIT: libc::c_ulong = ioc(IOC_READ, 43, size_of::<QgroupLimitArgs>());
const QGROUP_LIMIT_MAX_RFER: u64 = 1;
const QGROUP_LIMIT_MAX_EXCL: u64 = 2;

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    Err(io::Error::new(err.kind(), format!("{what}: {err}")))
}

/// Turns on simple quotas for the filesystem holding `dir` (a no-op when they are on).
pub fn enable_simple_quotas(dir: &File) -> io::Result<()> {
    let mut args = QuotaCtlArgs { cmd: QUOTA_CTL_ENABLE_SIMPLE_QUOTA, status: 0 };
    // SAFETY: BTRFS_IOC_QUOTA_CTL reads and writes a `btrfs_ioctl_quota_ctl_args`.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), QUOTA_CTL, &mut args as *mut QuotaCtlArgs) }, "enabling btrfs quotas")
}

/// Creates the subvolume `name` in the directory `parent`.
pub fn create_subvolume(parent: &File, name: &str) -> io::Result<()> {
    let bytes = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let bytes = bytes.as_bytes_with_nul();
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    if bytes.len() > args.name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "subvolume name too long"));
    }
    args.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: BTRFS_IOC_SUBVOL_CREATE reads a `btrfs_ioctl_vol_args` with a NUL-terminated name.
    check(
        unsafe { libc::ioctl(parent.as_raw_fd(), SUBVOL_CREATE, &args as *const VolArgs) },
        &format!("creating btrfs subvolume {name}"),
    )
}

/// Copies a NUL-terminated `name` into an ioctl's name field.
fn put_name(field: &mut [u8], name: &str) -> io::Result<()> {
    let c = CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > field.len() || name.contains('/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid subvolume name"));
    }
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(())
}

/// Takes a read-only snapshot of the subvolume `source` (its root directory) as `name` in the
/// directory `parent`: every file of the subvolume as it is at this instant, like after a
/// power cut (what programs had not written yet is not in it).
pub fn snapshot_subvolume(source: &File, parent: &File, name: &str) -> io::Result<()> {
    let mut args = VolArgsV2 {
        fd: i64::from(source.as_raw_fd()),
        transid: 0,
        flags: SUBVOL_RDONLY,
        unused: [0; 4],
        name: [0; 4040],
    };
    put_name(&mut args.name, name)?;
    // SAFETY: BTRFS_IOC_SNAP_CREATE_V2 reads a `btrfs_ioctl_vol_args_v2` whose `fd` is an open
    // descriptor of the source subvolume and whose name is NUL-terminated.
    check(
        unsafe { libc::ioctl(parent.as_raw_fd(), SNAP_CREATE_V2, &args as *const VolArgsV2) },
        &format!("snapshotting into {name}"),
    )
}

/// Deletes the subvolume (or snapshot) `name` in the directory `parent`, with its files.
pub fn delete_subvolume(parent: &File, name: &str) -> io::Result<()> {
    let mut args = VolArgs { fd: 0, name: [0; 4088] };
    put_name(&mut args.name, name)?;
    // SAFETY: BTRFS_IOC_SNAP_DESTROY reads a `btrfs_ioctl_vol_args` with a NUL-terminated name.
    check(
        unsafe { libc::ioctl(parent.as_raw_fd(), SNAP_DESTROY, &args as *const VolArgs) },
        &format!("deleting btrfs subvolume {name}"),
    )
}

/// Limits the quota group of the subvolume `subvolume` (its root directory) to `bytes`, or
/// lifts the limit with `None`.
pub fn limit_subvolume(subvolume: &File, bytes: Option<u64>) -> io::Result<()> {
    // The value u64::MAX clears a limit (the kernel's `CLEAR_VALUE`; btrfs-progs' "none").
    let max = bytes.unwrap_or(u64::MAX);
    let flags = QGROUP_LIMIT_MAX_RFER | QGROUP_LIMIT_MAX_EXCL;
    // qgroupid 0: the quota group of the subvolume the descriptor is in.
    let mut args = QgroupLimitArgs { qgroupid: 0, flags, max_rfer: max, max_excl: max, rsv_rfer: 0, rsv_excl: 0 };
    // SAFETY: BTRFS_IOC_QGROUP_LIMIT reads a `btrfs_ioctl_qgroup_limit_args`.
    check(
        unsafe { libc::ioctl(subvolume.as_raw_fd(), QGROUP_LIMIT, &mut args as *mut QgroupLimitArgs) },
        "setting the btrfs quota",
    )
}

/// Whether `path` is on btrfs.
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: statfs is plain data, filled in by the kernel.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    check(unsafe { libc::statfs(c.as_ptr(), &mut st) }, &format!("statfs {}", path.display()))?;
    Ok(st.f_type as i64 == SUPER_MAGIC)
}
