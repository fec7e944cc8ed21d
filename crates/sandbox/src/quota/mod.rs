//! Disk quotas for VMs: one server-managed btrfs filesystem image holding every VM's layers,
//! with one subvolume and one quota group per VM.
//!
//! Why this mechanism: a VM's writable layer used to be a plain directory on the host's
//! filesystem, so one VM could fill the host's disk and inode table. The candidates were
//!
//! - **ext4/xfs project quotas** on the data directory: the host filesystem here is mounted
//!   without `prjquota`, and this kernel has neither `CONFIG_QFMT_V2` (which ext4's quota
//!   feature needs: `mount` of an ext4 image made with `-O quota,project` fails) nor
//!   `CONFIG_XFS_QUOTA`;
//! - **one filesystem image per VM**: a loop device and a mount per boot cost ~10-20 ms,
//!   more than the whole create + first exec of a VM;
//! - **one btrfs image for all VMs** (this module): mounted once when the host starts; a VM's
//!   first boot creates a subvolume (well under a millisecond, no mount) and every boot sets its
//!   quota group's limit. Btrfs' simple quotas charge data *and* metadata, so files, directories
//!   and inodes all count against the VM's bytes, and going past them fails with `EDQUOT`
//!   ("Disk quota exceeded") inside the VM. To the host the whole thing is one sparse file: a VM
//!   creating millions of inodes takes none from the host's inode table.
//!
//! The image lives at `<data>/disk.img`, sized (sparsely) to the space available on the host
//! filesystem when it was made, and is mounted at `<data>/disk` with `discard`, so space that
//! VMs free is punched out of the image file and returned to the host. It is made with
//! `mkfs.btrfs` (Debian package `btrfs-progs`) the first time, attached to a loop device with
//! autoclear, and unmounted (lazily) when the [`QuotaFs`] is dropped; VMs still running keep
//! the filesystem alive until they end, and the loop device goes away with it. A mount left by
//! a server that was killed is found again and reused.

mod btrfs;
mod loopdev;

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Why the quota filesystem is not available.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("mkfs.btrfs not found (install btrfs-progs)")]
    NoMkfs,
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("mkfs.btrfs {image} failed: {output}")]
    Mkfs { image: String, output: String },
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> QuotaError {
    let context = context.into();
    move |source| QuotaError::Io { context, source }
}

/// The mounted quota filesystem. Unmounted when dropped.
#[derive(Debug)]
pub struct QuotaFs {
    mountpoint: PathBuf,
}

/// Smallest image made (btrfs needs ~114 MiB; anything this small is a test).
const MIN_IMAGE_BYTES: u64 = 1 << 30;

impl QuotaFs {
    /// Mounts `image` at `mountpoint`, making the image first if it does not exist, or reuses a
    /// btrfs filesystem already mounted there.
    pub fn open(image: &Path, mountpoint: &Path) -> Result<QuotaFs, QuotaError> {
        fs::create_dir_all(mountpoint).map_err(io_error(format!("creating {}", mountpoint.display())))?;
        let fs = QuotaFs { mountpoint: mountpoint.to_path_buf() };
        if !is_mountpoint(mountpoint)? {
            if !image.exists() {
                make_image(image)?;
            }
            mount_image(image, mountpoint)?;
        } else if !btrfs::is_btrfs(mountpoint).map_err(io_error("checking the mounted quota filesystem"))? {
            // Not ours: leave it mounted (dropping `fs` would unmount it).
            std::mem::forget(fs);
            return Err(QuotaError::Io {
                context: format!("{} is a mount point but not a btrfs filesystem", mountpoint.display()),
                source: io::Error::from(io::ErrorKind::AlreadyExists),
            });
        }
        let root = File::open(mountpoint).map_err(io_error(format!("opening {}", mountpoint.display())))?;
        btrfs::enable_simple_quotas(&root).map_err(io_error(format!("{}", mountpoint.display())))?;
        Ok(fs)
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The volume `name` (a directory with its own quota directly below the mount point),
    /// created if needed. `name` must be a single path component.
    pub fn volume(&self, name: &str) -> Result<PathBuf, QuotaError> {
        let path = self.mountpoint.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error(format!("checking {}", path.display()))(e));
            }
            Err(_) => {}
        }
        let parent =
            File::open(&self.mountpoint).map_err(io_error(format!("opening {}", self.mountpoint.display())))?;
        match btrfs::create_subvolume(&parent, name) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io_error("creating a VM volume")(e)),
            _ => Ok(path),
        }
    }

    /// Whether `path` is a volume with a quota of its own (and not a plain directory).
    pub fn is_volume(path: &Path) -> bool {
        fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == btrfs::SUBVOLUME_ROOT_INODE)
    }

    /// A read-only snapshot of the volume `name` (every file at one instant), at
    /// `<mountpoint>/.snapshot-<name>-<tag>`; delete it with [`QuotaFs::delete_snapshot`].
    pub fn snapshot(&self, name: &str, tag: &str) -> Result<PathBuf, QuotaError> {
        let source = self.mountpoint.join(name);
        let snapshot = format!(".snapshot-{name}-{tag}");
        let open = |p: &Path| File::open(p).map_err(io_error(format!("opening {}", p.display())));
        btrfs::snapshot_subvolume(&open(&source)?, &open(&self.mountpoint)?, &snapshot)
            .map_err(io_error(format!("snapshotting {}", source.display())))?;
        Ok(self.mountpoint.join(snapshot))
    }

    /// Deletes a snapshot [`QuotaFs::snapshot`] took.
    pub fn delete_snapshot(&self, snapshot: &Path) -> Result<(), QuotaError> {
        let name = snapshot
            .strip_prefix(&self.mountpoint)
            .ok()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with(".snapshot-") && !n.contains('/'))
            .ok_or_else(|| io_error("deleting a snapshot")(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let parent =
            File::open(&self.mountpoint).map_err(io_error(format!("opening {}", self.mountpoint.display())))?;
        btrfs::delete_subvolume(&parent, name).map_err(io_error(format!("deleting {}", snapshot.display())))
    }

    /// Sets the quota of the volume at `path` (from [`QuotaFs::volume`]); `None` lifts it.
    pub fn set_limit(&self, path: &Path, bytes: Option<u64>) -> Result<(), QuotaError> {
        let dir = File::open(path).map_err(io_error(format!("opening {}", path.display())))?;
        btrfs::limit_subvolume(&dir, bytes).map_err(io_error(format!("{}", path.display())))
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        // Lazy: VMs that still run keep the filesystem (and its loop device) until they end.
        if let Err(e) = umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            tracing::warn!(mountpoint = %self.mountpoint.display(), "unmounting the VM disk: {e}");
        }
    }
}

/// A directory is a mount point when its device differs from its parent's.
fn is_mountpoint(dir: &Path) -> Result<bool, QuotaError> {
    let own = fs::metadata(dir).map_err(io_error(format!("stat {}", dir.display())))?;
    let parent = dir.join("..");
    let up = fs::metadata(&parent).map_err(io_error(format!("stat {}", parent.display())))?;
    Ok(own.dev() != up.dev())
}

/// Makes a sparse btrfs image the size of the space available next to it.
fn make_image(image: &Path) -> Result<(), QuotaError> {
    let mkfs = ["/usr/sbin/mkfs.btrfs", "/sbin/mkfs.btrfs", "/usr/bin/mkfs.btrfs"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or(QuotaError::NoMkfs)?;
    let dir = image.parent().unwrap_or(Path::new("."));
    let available = nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .map_err(|e| io_error(format!("statvfs {}", dir.display()))(io::Error::from(e)))?;
    let size = (available & !((1 << 30) - 1)).max(MIN_IMAGE_BYTES);
    // Made under a temporary name and renamed: a half-made image is never mounted.
    let partial = image.with_extension("img.partial");
    let file = File::create(&partial).map_err(io_error(format!("creating {}", partial.display())))?;
    file.set_len(size).map_err(io_error(format!("sizing {}", partial.display())))?;
    drop(file);
    // -K: no discard of the (sparse, empty) file; -m single: one copy of metadata (the image
    // is one file on one device, a second copy in it protects nothing).
    let output = Command::new(mkfs)
        .args(["-q", "-K", "-m", "single", "-d", "single"])
        .arg(&partial)
        .output()
        .map_err(io_error(format!("running {}", mkfs.display())))?;
    if !output.status.success() {
        let _ = fs::remove_file(&partial);
        return Err(QuotaError::Mkfs {
            image: image.display().to_string(),
            output: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    fs::rename(&partial, image).map_err(io_error(format!("renaming {}", partial.display())))
}

fn mount_image(image: &Path, mountpoint: &Path) -> Result<(), QuotaError> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io_error(format!("opening {}", image.display())))?;
    let device = loopdev::attach(&file, &image.display().to_string())
        .map_err(io_error(format!("attaching {} to a loop device", image.display())))?;
    // `discard`: blocks freed in the filesystem are punched out of the image file at once.
    mount(
        Some(&device.path),
        mountpoint,
        Some("btrfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
        Some("discard"),
    )
    .map_err(|e| io_error(format!("mounting {} at {}", image.display(), mountpoint.display()))(e.into()))?;
    // The mount holds the device now; closing ours lets autoclear detach it after unmount.
    drop(device);
    // Private: where the data directory is on a shared mount, the new mount would otherwise
    // propagate into peer mount namespaces (a supervisor's, other jobs'), where our unmount may
    // never reach it, keeping the filesystem and its loop device alive after we are gone. VMs
    // still see it: their mount namespaces are copies of ours.
    mount(None::<&str>, mountpoint, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| io_error(format!("making the mount at {} private", mountpoint.display()))(e.into()))?;
    Ok(())
}
