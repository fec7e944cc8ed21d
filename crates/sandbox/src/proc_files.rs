//! Host side of the VM's `/proc` view (see `crate::init::proc_view`): detached clones of the
//! host's LXCFS files, which the launcher sends to init with its configuration.
//!
//! Why clones and not a descriptor of the directory: a bind mount's source must belong to the
//! mounter's own mount namespace, and the LXCFS mount the host sees is not the copy in the VM's
//! namespace. A detached clone (`open_tree(OPEN_TREE_CLONE)`, made by the host) belongs to no
//! namespace, and init may attach it with `move_mount`, as it attaches the idmapped base layer
//! ([`crate::idmapped`], whose raw `move_mount` it shares). The clones also spare init any path
//! through the data directory, which it may not traverse.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::ProcView;

const OPEN_TREE_CLONE: libc::c_uint = 1;

/// One detached clone of each of [`ProcView::FILES`] in `dir`, in that order.
pub fn detached_clones(dir: &Path) -> io::Result<Vec<OwnedFd>> {
    ProcView::FILES.iter().map(|name| detached_clone(&dir.join(name))).collect()
}

fn detached_clone(path: &Path) -> io::Result<OwnedFd> {
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
