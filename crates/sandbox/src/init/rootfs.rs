//! Building the VM's root filesystem, inside its own mount namespace, then `pivot_root`.
//!
//! Steps, in order (each one's failure names the step):
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. overlay on [`NEW_ROOT`]: lower = the shared base layer, upper = the VM's own directory,
//!    both named through the `O_PATH` descriptors the launcher sent (`/proc/self/fd/N`), which
//!    are closed right after: from then on the VM's files are reached only through the overlay;
//! 3. read-only, nosuid, nodev binds of the host's system directories (`/usr`...) and of the
//!    data directory's shared ones (the software layer at `/opt/agentvm`: attached from the
//!    idmapped views the host sent, or bound by path in rootless mode);
//! 4. `/proc` for the VM's PID namespace — mounted *before* `pivot_root`, because inside a user
//!    namespace the kernel refuses a new procfs once no fully visible one remains; then the
//!    host's LXCFS files over some of its entries, when the host sent them (see
//!    [`super::proc_view`]);
//! 5. a tmpfs `/dev` with the host's null, zero, full, random, urandom and tty nodes bound in
//!    (a user namespace cannot `mknod`), a new devpts instance, `/dev/ptmx`, a sized `/dev/shm`;
//! 6. a sized tmpfs `/tmp` (see [`crate::config::Confinement`]);
//! 7. `pivot_root` into the new root and detach the old one: from here on no host path is
//!    reachable except the read-only binds. The files init writes into the VM at boot
//!    (`/etc/hostname`, `/etc/hosts`, the home directory) are written after this, by
//!    [`super::bootfiles`].
//!
//! Every mount point is a directory of the VM's own root filesystem, which the VM may have
//! replaced by a symbolic link (to a host path, say) while it was not mounted over. Mount points
//! are therefore resolved with [`super::rootpath`] (no link followed; a link found there is
//! replaced by a directory) and mounts are made on `/proc/self/fd/N` of the resolved directory,
//! never on a path the kernel would resolve again.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{statvfs, FsFlags};

use super::rootpath::{ensure_dirs, OnLink};
use crate::config::{InitConfig, TmpfsSize};
use crate::fsops::resolve::open_child;

/// Where the new root is assembled before `pivot_root`: any directory every uid may traverse
/// works, since this mount namespace is private; `/tmp` exists on every Linux system.
const NEW_ROOT: &str = "/tmp";

/// Host device nodes a VM gets.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root from the layer descriptors (`base`, `upper`, `work`, consumed) and pivots
/// into it. `proc_files` are the host's LXCFS files for `/proc` (none without LXCFS);
/// `data_views` the views of [`crate::config::RootfsSpec::data_binds`] (privileged mode).
pub fn build(
    config: &InitConfig,
    layers: Vec<OwnedFd>,
    proc_files: Vec<OwnedFd>,
    data_views: Vec<OwnedFd>,
) -> Result<(), String> {
    let spec = &config.rootfs;
    let [base, upper, work] = layers.as_slice() else {
        return Err(format!("expected {} layer descriptors, got {}", spec_layers(), layers.len()));
    };
    let root = Path::new(NEW_ROOT);
    step(
        "making mounts private",
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>),
    )?;

    // Rootless: init binds the data directory's shared directories itself, so it opens them
    // now, while their paths still lead to them (the data directory may be under /tmp, which
    // the overlay is about to cover).
    let data_sources = if config.init_is_root { data_views } else { open_data_binds(spec)? };

    let fd_path = |fd: &OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    // Privileged mode: the base is the host's idmapped, detached view; attach it under the new
    // root's mount point first (the overlay then covers it).
    let lower = if config.init_is_root {
        crate::idmapped::attach(base, root).map_err(|e| format!("attaching the base layer: {e}"))?;
        root.to_path_buf()
    } else {
        fd_path(base)
    };
    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        escape(&lower),
        escape(&fd_path(upper)),
        escape(&fd_path(work))
    );
    step(
        "mounting the root overlay",
        mount(Some("overlay"), root, Some("overlay"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(options.as_str())),
    )
    .map_err(|e| format!("{e} (upper layer {})", spec.upper.display()))?;
    // The overlay holds its own references; no VM path may lead to these descriptors.
    drop(layers);
    let root_fd = step(
        "opening the new root",
        nix::fcntl::open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()),
    )?;

    for bind in &spec.readonly_binds {
        bind_readonly(&bind.source, &MountPoint::prepare(&root_fd, &bind.target)?)?;
    }
    attach_data_binds(&root_fd, config, data_sources)?;

    let proc = MountPoint::prepare(&root_fd, "/proc")?;
    step(
        "mounting /proc",
        mount(
            Some("proc"),
            &proc.target(),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;
    if !proc_files.is_empty() {
        let proc_root = proc.mounted()?;
        super::proc_view::attach_files(
            &proc_files,
            &PathBuf::from(format!("/proc/self/fd/{}", proc_root.as_raw_fd())),
        )?;
    }
    drop(proc_files);
    build_dev(&MountPoint::prepare(&root_fd, "/dev")?, spec.max_ptys, &config.confinement.dev_shm)?;
    let tmp = MountPoint::prepare(&root_fd, "/tmp")?;
    let tmp_options = format!("mode=1777,{}", tmpfs_size(&config.confinement.tmp));
    step(
        "mounting /tmp",
        mount(
            Some("tmpfs"),
            &tmp.target(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(tmp_options.as_str()),
        ),
    )?;
    drop(root_fd);

    io_step("entering the new root", std::env::set_current_dir(root))?;
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step("detaching the host's root", umount2(".", MntFlags::MNT_DETACH))?;
    io_step("entering /", std::env::set_current_dir("/"))?;
    Ok(())
}

/// A directory of the new root about to be mounted over, resolved with [`super::rootpath`].
struct MountPoint {
    vm_path: String,
    parent: OwnedFd,
    name: String,
    dir: OwnedFd,
}

impl MountPoint {
    /// Resolves (and if need be creates or repairs) the mount point `vm_path`.
    fn prepare(root: &OwnedFd, vm_path: &str) -> Result<MountPoint, String> {
        let (parent, name, dir) = ensure_dirs(root, vm_path, OnLink::Replace)
            .map_err(|e| format!("preparing the mount point {vm_path}: {e}"))?;
        Ok(MountPoint { vm_path: vm_path.to_string(), parent, name: name.to_string(), dir })
    }

    /// What to pass to mount(2) as the target: the resolved directory itself.
    fn target(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()))
    }

    /// The root of what is now mounted there (a descriptor of the directory underneath would
    /// name the covered directory, not the mount).
    fn mounted(&self) -> Result<OwnedFd, String> {
        open_child(&self.parent, self.name.as_bytes(), OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| format!("opening the mount at {}: {e}", self.vm_path))
    }
}

/// Rootless mode: `O_PATH` descriptors of the data directory's shared directories (init owns
/// the data directory and may open them).
fn open_data_binds(spec: &crate::config::RootfsSpec) -> Result<Vec<OwnedFd>, String> {
    let open =
        |path: &Path| nix::fcntl::open(path, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty());
    spec.data_binds.iter().map(|bind| step(&format!("opening {}", bind.source.display()), open(&bind.source))).collect()
}

/// The data directory's shared directories ([`crate::config::RootfsSpec::data_binds`]): in
/// privileged mode the host's read-only idmapped views are attached (init may not traverse the
/// data directory); in rootless mode init owns the data directory and binds the directories it
/// opened read-only, as the host's system directories.
fn attach_data_binds(root: &OwnedFd, config: &InitConfig, sources: Vec<OwnedFd>) -> Result<(), String> {
    let binds = &config.rootfs.data_binds;
    if sources.len() != binds.len() {
        return Err(format!("expected {} data directory views from the host, got {}", binds.len(), sources.len()));
    }
    if !config.init_is_root {
        for (source, bind) in sources.iter().zip(binds) {
            let source_path = PathBuf::from(format!("/proc/self/fd/{}", source.as_raw_fd()));
            bind_readonly(&source_path, &MountPoint::prepare(root, &bind.target)?)
                .map_err(|e| format!("{e} ({} at {})", bind.source.display(), bind.target))?;
        }
        return Ok(());
    }
    for (view, bind) in sources.iter().zip(binds) {
        let mount_point = MountPoint::prepare(root, &bind.target)?;
        // `move_mount` does not follow a final symbolic link, magic ones included: name the
        // directory (just made a real one) through its parent's descriptor instead.
        let target = PathBuf::from(format!("/proc/self/fd/{}", mount_point.parent.as_raw_fd())).join(&mount_point.name);
        crate::idmapped::attach(view, &target)
            .map_err(|e| format!("attaching {} at {}: {e}", bind.source.display(), bind.target))?;
    }
    Ok(())
}

/// `size=` and `nr_inodes=` options of a tmpfs.
fn tmpfs_size(size: &TmpfsSize) -> String {
    format!("size={},nr_inodes={}", size.bytes, size.inodes)
}

fn build_dev(mount_point: &MountPoint, max_ptys: u32, shm_size: &TmpfsSize) -> Result<(), String> {
    step(
        "mounting /dev",
        mount(
            Some("tmpfs"),
            &mount_point.target(),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("mode=755,size=64k,nr_inodes=64"),
        ),
    )?;
    // A fresh tmpfs: nothing in it is the VM's, so paths below it are safe to use by name.
    let dev_fd = mount_point.mounted()?;
    let dev = PathBuf::from(format!("/proc/self/fd/{}", dev_fd.as_raw_fd()));
    for name in DEVICES {
        let target = dev.join(name);
        io_step("creating a device mount point", fs::write(&target, b""))?;
        step(
            "binding a device node",
            mount(Some(&Path::new("/dev").join(name)), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>),
        )?;
    }
    let pts = dev.join("pts");
    io_step("creating /dev/pts", fs::create_dir(&pts))?;
    let pts_options = format!("newinstance,ptmxmode=0666,mode=0620,max={max_ptys}");
    step(
        "mounting devpts",
        mount(
            Some("devpts"),
            &pts,
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(pts_options.as_str()),
        ),
    )?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        io_step("creating /dev links", symlink(target, dev.join(link)))?;
    }
    let shm = dev.join("shm");
    io_step("creating /dev/shm", fs::create_dir(&shm))?;
    let shm_options = format!("mode=1777,{}", tmpfs_size(shm_size));
    step(
        "mounting /dev/shm",
        mount(Some("tmpfs"), &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(shm_options.as_str())),
    )?;
    Ok(())
}

/// Binds `source` read-only at `target`. A bind inherits the source's flags and a remount in a
/// user namespace must keep the locked ones (atime mode), so they are carried over.
fn bind_readonly(source: &Path, target: &MountPoint) -> Result<(), String> {
    let what = format!("binding {} read-only", source.display());
    step(&what, mount(Some(source), &target.target(), None::<&str>, MsFlags::MS_BIND, None::<&str>))?;
    let existing = statvfs(source).map_err(|e| format!("{what}: statvfs: {e}"))?.flags();
    let mut flags =
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    for (have, keep) in [
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if existing.contains(have) {
            flags |= keep;
        }
    }
    let bound = target.mounted()?;
    let bound_path = PathBuf::from(format!("/proc/self/fd/{}", bound.as_raw_fd()));
    step(&what, mount(None::<&str>, &bound_path, None::<&str>, flags, None::<&str>))
}

fn spec_layers() -> usize {
    crate::config::RootfsSpec::LAYER_ORDER.len()
}

/// Overlayfs splits its options on `,` and layer lists on `:`; both (and `\`) are escaped.
fn escape(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn step<T>(what: &str, result: nix::Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

fn io_step<T>(what: &str, result: std::io::Result<T>) -> Result<T, String> {
    result.map_err(|e| format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_overlay_separators() {
        assert_eq!(escape(Path::new("/a,b:c\\d")), "/a\\,b\\:c\\\\d");
    }
}
