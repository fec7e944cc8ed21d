//! Host side of the VM's `/proc` view (see `crate::init::proc_view`): detached clones of the
//! host's LXCFS files, which the launcher sends to init with its configuration.
//!
//! Why clones and not a descriptor of the directory: a bind mount's source must belong to the
//! mounter's own mount namespace, and the LXCFS mount the host sees is not the copy in the VM's
//! namespace. A detached clone (`open_tree(OPEN_TREE_CLONE)`, made by the host) belongs to no
//! namespace, and init may attach it with `move_mount`, as it attaches the idmapped base layer
//! ([`crate::idmapped`], whose raw `move_mount` it shares). The clones also spare init any path
//! through the data directory, which it may not traverse.

use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::config::ProcView;
use crate::idmapped::detached_clone;

/// One detached clone of each of [`ProcView::FILES`] in `dir`, in that order.
pub fn detached_clones(dir: &Path) -> io::Result<Vec<OwnedFd>> {
    ProcView::FILES.iter().map(|name| detached_clone(&dir.join(name))).collect()
}
