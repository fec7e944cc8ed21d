//! Paths inside the VM's root filesystem, resolved without following any symbolic link.
//!
//! Init works on the VM's root filesystem at every boot, and that filesystem belongs to the VM:
//! the VM can leave a symbolic link where init expects a directory or a file (`ln -sfn
//! /path/on/host /etc/hostname`, then a reboot). Before `pivot_root` an absolute link leads to
//! the host; after it, a `/proc/self/fd/N` link could still reach a descriptor init holds. So
//! init never resolves a VM path by name: it walks it one component at a time from a descriptor
//! of the root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` and
//! `O_NOFOLLOW` ([`crate::fsops::resolve::open_child`]), and acts on a final entry only with `*at`
//! calls that do not follow it either (`mkdirat`, `unlinkat`, `renameat`, `O_CREAT | O_EXCL`).
//!
//! What init does when it meets a link depends on the path ([`OnLink`]): mount points are
//! system directories that a mount covers anyway, so a link there is replaced by a directory;
//! the home directory is the user's, so a link there is left alone.

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::fsops::resolve::open_child;

/// What to do with a symbolic link (or any non-directory) where a directory is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnLink {
    /// Remove it and create a directory in its place.
    Replace,
    /// Fail with [`RootPathError::NotADirectory`].
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum RootPathError {
    #[error("'{0}' is not an absolute path of plain components")]
    Invalid(String),
    #[error("'{0}' is a symbolic link or not a directory")]
    NotADirectory(String),
    #[error("{what} '{path}': {errno}")]
    Io { what: &'static str, path: String, errno: Errno },
}

impl RootPathError {
    fn io<'a>(what: &'static str, path: &'a str) -> impl FnOnce(Errno) -> RootPathError + 'a {
        move |errno| RootPathError::Io { what, path: path.to_string(), errno }
    }
}

/// The components of an absolute VM path (`/home/user` → `["home", "user"]`). Empty, `.` and
/// `..` components are refused: init's paths come from the host and are plain.
pub fn components(vm_path: &str) -> Result<Vec<&str>, RootPathError> {
    let rest = vm_path.strip_prefix('/').ok_or_else(|| RootPathError::Invalid(vm_path.into()))?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0')) {
        return Err(RootPathError::Invalid(vm_path.into()));
    }
    Ok(parts)
}

/// Opens the directory `name` of `parent` as an `O_PATH` descriptor, creating it (mode 0755,
/// owned by init) when it is missing. `shown` names it in errors.
pub fn ensure_dir(parent: &OwnedFd, name: &str, on_link: OnLink, shown: &str) -> Result<OwnedFd, RootPathError> {
    let open = || open_child(parent, name.as_bytes(), OFlag::O_PATH | OFlag::O_DIRECTORY);
    match open() {
        Ok(dir) => return Ok(dir),
        Err(Errno::ENOENT) => {}
        // O_NOFOLLOW | O_DIRECTORY on a link or a file: ELOOP or ENOTDIR.
        Err(Errno::ELOOP | Errno::ENOTDIR) if on_link == OnLink::Replace => {
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
                .map_err(RootPathError::io("removing the link at", shown))?;
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => return Err(RootPathError::NotADirectory(shown.into())),
        Err(errno) => return Err(RootPathError::Io { what: "opening", path: shown.into(), errno }),
    }
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(errno) => return Err(RootPathError::Io { what: "creating", path: shown.into(), errno }),
    }
    open().map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => RootPathError::NotADirectory(shown.into()),
        errno => RootPathError::Io { what: "opening", path: shown.into(), errno },
    })
}

/// Walks the absolute VM path `vm_path` from `root` with [`ensure_dir`]; returns the parent
/// directory of its last component, that component's name and the directory itself.
pub fn ensure_dirs<'p>(
    root: &OwnedFd,
    vm_path: &'p str,
    on_link: OnLink,
) -> Result<(OwnedFd, &'p str, OwnedFd), RootPathError> {
    let parts = components(vm_path)?;
    let (last, parents) = parts.split_last().ok_or_else(|| RootPathError::Invalid(vm_path.into()))?;
    let mut parent = root.try_clone().map_err(|e| RootPathError::Io {
        what: "duplicating the root descriptor for",
        path: vm_path.into(),
        errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
    })?;
    for (i, part) in parents.iter().enumerate() {
        let shown = format!("/{}", parts[..=i].join("/"));
        parent = ensure_dir(&parent, part, on_link, &shown)?;
    }
    let dir = ensure_dir(&parent, last, on_link, vm_path)?;
    Ok((parent, last, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn open_root(dir: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn splits_plain_absolute_paths_only() {
        assert_eq!(components("/home/user").unwrap(), ["home", "user"]);
        for bad in ["home", "/", "/a//b", "/a/../b", "/a/./b", "/a/"] {
            assert!(components(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replaces_links_at_mount_points_and_never_follows_them() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root_dir.path().join("usr")).unwrap();
        symlink(outside.path(), root_dir.path().join("usr/lib")).unwrap();
        symlink(outside.path(), root_dir.path().join("proc")).unwrap();
        let root = open_root(root_dir.path());
        ensure_dirs(&root, "/usr/lib/x", OnLink::Replace).unwrap();
        ensure_dirs(&root, "/proc", OnLink::Replace).unwrap();
        assert!(root_dir.path().join("usr/lib/x").symlink_metadata().unwrap().is_dir());
        assert!(root_dir.path().join("proc").symlink_metadata().unwrap().is_dir());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing was created outside");
    }

    #[test]
    fn refuses_links_where_asked() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        symlink(outside.path(), root_dir.path().join("home")).unwrap();
        let root = open_root(root_dir.path());
        let err = ensure_dirs(&root, "/home/user", OnLink::Refuse).unwrap_err();
        assert!(matches!(err, RootPathError::NotADirectory(ref p) if p == "/home"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
