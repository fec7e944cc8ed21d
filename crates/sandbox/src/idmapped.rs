//! An idmapped, read-only view of the shared base layer for one VM.
//!
//! Every VM has its own host uid range (see [`crate::idmap`]), but all VMs share one base layer
//! on disk, owned by host root. Mounted as it is, that tree would appear as `nobody` inside a
//! VM, and the VM's root could not change `/etc` (overlayfs copy-up needs the lower file's owner
//! to be mapped). An *idmapped mount* of the base shifts its ownership through the VM's own user
//! namespace: on-disk uid 0 is seen as the VM's root, in that VM only. The mount is read-only and
//! detached (it belongs to no mount namespace); the launched child receives its descriptor and
//! uses it as the overlay's lower layer.
//!
//! Why raw system calls: `open_tree(2)` and `mount_setattr(2)` have no wrapper in `nix`, and the
//! `rustix` version that has them would be a second system-call crate for two calls.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct mount_attr` from `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A detached clone of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`): it belongs to no
/// mount namespace, so a process in another one may attach it with [`attach`].
pub fn detached_clone(path: &Path) -> io::Result<OwnedFd> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("open_tree({}): {e}", path.display())));
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as i32) })
}

/// A detached, read-only, nosuid, nodev clone of `dir` whose ownership is mapped through the
/// user namespace of process `pid` (whose `uid_map`/`gid_map` must already be written).
pub fn idmapped_view(dir: &Path, pid: i32) -> io::Result<OwnedFd> {
    let userns = File::open(format!("/proc/{pid}/ns/user"))
        .map_err(|e| io::Error::new(e.kind(), format!("opening the VM's user namespace: {e}")))?;
    let tree = detached_clone(dir)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let empty = c"";
    // SAFETY: mount_setattr reads `attr` (of the size passed) and the empty path; it changes
    // only the detached mount behind `tree`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("idmapping {}: {e}", dir.display())));
    }
    Ok(tree)
}

const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Attaches the detached view `tree` (received from the host) at `target` in the caller's
/// mount namespace. Overlayfs accepts a layer only from the mounter's own mount namespace, or
/// from a detached one the mounter is privileged over; the view was made by the host, so the
/// VM's init attaches it first, then names it by path.
pub fn attach(tree: &OwnedFd, target: &Path) -> io::Result<()> {
    let target_c = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "mount target contains a NUL byte"))?;
    let empty = c"";
    // SAFETY: move_mount reads two NUL-terminated paths; it moves the detached mount behind
    // `tree` onto `target` in our own mount namespace.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
