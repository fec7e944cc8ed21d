//! Building the VM's root filesystem, inside its own mount namespace, then `pivot_root`.
//!
//! Steps, in order (each one's failure names the step):
//! 1. make every mount private, so nothing propagates back to the host;
//! 2. overlay on [`NEW_ROOT`]: lower = the shared base layer, upper = the VM's own directory,
//!    both named through the `O_PATH` descriptors the launcher sent (`/proc/self/fd/N`);
//! 3. read-only, nosuid, nodev binds of the host's system directories (`/usr`...);
//! 4. `/proc` for the VM's PID namespace — mounted *before* `pivot_root`, because inside a user
//!    namespace the kernel refuses a new procfs once no fully visible one remains;
//! 5. a tmpfs `/dev` with the host's null, zero, full, random, urandom and tty nodes bound in
//!    (a user namespace cannot `mknod`), a new devpts instance, `/dev/ptmx`, `/dev/shm`;
//! 6. a tmpfs `/tmp`;
//! 7. the user's home directory, `/etc/hostname` and `/etc/hosts` for this VM;
//! 8. `pivot_root` into the new root and detach the old one: from here on no host path is
//!    reachable except the read-only binds.

use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use crate::base::hosts_file;
use crate::config::InitConfig;

/// Where the new root is assembled before `pivot_root`: any directory every uid may traverse
/// works, since this mount namespace is private; `/tmp` exists on every Linux system.
const NEW_ROOT: &str = "/tmp";

/// Host device nodes a VM gets.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Builds the root from the layer descriptors (`base`, `upper`, `work`) and pivots into it.
pub fn build(config: &InitConfig, layers: &[OwnedFd]) -> Result<(), String> {
    let spec = &config.rootfs;
    let [base, upper, work] = layers else {
        return Err(format!("expected {} layer descriptors, got {}", spec_layers(), layers.len()));
    };
    let root = Path::new(NEW_ROOT);
    step(
        "making mounts private",
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>),
    )?;

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

    for bind in &spec.readonly_binds {
        bind_readonly(&bind.source, &inside(root, &bind.target))?;
    }

    step(
        "mounting /proc",
        mount(
            Some("proc"),
            &root.join("proc"),
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        ),
    )?;
    build_dev(root, spec.max_ptys)?;
    step(
        "mounting /tmp",
        mount(
            Some("tmpfs"),
            &root.join("tmp"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    )?;

    let user = &config.user;
    let home = inside(root, &user.home);
    if !home.exists() {
        io_step("creating the home directory", fs::create_dir_all(&home))?;
        io_step("owning the home directory", chown(&home, Some(user.uid), Some(user.gid)))?;
        io_step("home directory mode", fs::set_permissions(&home, fs::Permissions::from_mode(0o755)))?;
    }
    write_if_changed(&root.join("etc/hostname"), &format!("{}\n", config.hostname))?;
    write_if_changed(&root.join("etc/hosts"), &hosts_file(&config.hostname))?;

    io_step("entering the new root", std::env::set_current_dir(root))?;
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step("detaching the host's root", umount2(".", MntFlags::MNT_DETACH))?;
    io_step("entering /", std::env::set_current_dir("/"))?;
    Ok(())
}

fn build_dev(root: &Path, max_ptys: u32) -> Result<(), String> {
    let dev = root.join("dev");
    step(
        "mounting /dev",
        mount(Some("tmpfs"), &dev, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, Some("mode=755,size=64k")),
    )?;
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
    step(
        "mounting /dev/shm",
        mount(Some("tmpfs"), &shm, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=1777")),
    )?;
    Ok(())
}

/// Binds `source` read-only at `target`. A bind inherits the source's flags and a remount in a
/// user namespace must keep the locked ones (atime mode), so they are carried over.
fn bind_readonly(source: &Path, target: &Path) -> Result<(), String> {
    let what = format!("binding {} read-only", source.display());
    step(&what, mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>))?;
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
    step(&what, mount(None::<&str>, target, None::<&str>, flags, None::<&str>))
}

fn spec_layers() -> usize {
    crate::config::RootfsSpec::LAYER_ORDER.len()
}

/// A path inside the new root for an absolute VM path.
fn inside(root: &Path, vm_path: &str) -> PathBuf {
    root.join(vm_path.trim_start_matches('/'))
}

fn write_if_changed(path: &Path, content: &str) -> Result<(), String> {
    if fs::read_to_string(path).ok().as_deref() != Some(content) {
        io_step("writing /etc", fs::write(path, content))?;
    }
    Ok(())
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

fn step(what: &str, result: nix::Result<()>) -> Result<(), String> {
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
