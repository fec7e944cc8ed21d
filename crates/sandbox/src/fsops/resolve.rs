//! Path resolution that cannot leave the VM's root — the security core of `vm-fs`.
//!
//! `vm-fs` already runs inside the VM (its mount namespace holds no host path but the read-only
//! binds), as the VM user, so the VM's isolation does the heavy lifting. On top of that, as
//! defense in depth, no path given by a client is ever handed to a path-based system call:
//!
//! * [`Root`] holds an `O_PATH` descriptor of `/`. Every client path is opened with
//!   `openat2(2)` relative to it with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`: `..`, absolute
//!   symbolic links and relative ones that climb are all resolved *inside* the root (`/..` is
//!   `/`), and `/proc` magic links (`/proc/<pid>/root`, `/proc/self/fd/N`, `/proc/self/cwd`),
//!   which would jump to an arbitrary file or namespace, are refused with `ELOOP`. The kernel
//!   answers `EAGAIN` when a concurrent rename could have let `..` escape; the open is retried.
//! * Operations on a final component (create, unlink, mkdir, rename, `lstat`) use the `*at`
//!   system calls on a parent descriptor obtained the same way, with a validated single name
//!   (not empty, `.`, `..`, and without `/`), so a swapped directory or symbolic link can only
//!   redirect them to another place inside the root.
//! * Walks (recursive listing, delete and copy) open each child by name beneath its parent's
//!   descriptor with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` and `O_NOFOLLOW`: they never follow
//!   a symbolic link.
//!
//! There is no fallback when `openat2` is missing (Linux before 5.6): operations fail.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::error::{fs_error, FsError, FsResult};

/// Longest path accepted, terminating NUL included (Linux's `PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// Retries of an `openat2` that the kernel answered with `EAGAIN` (a concurrent rename).
const EAGAIN_RETRIES: usize = 128;

/// Checks a client path: absolute, shorter than [`PATH_MAX`], without NUL bytes.
pub fn validate(path: &str, syscall: &str) -> FsResult<()> {
    if path.contains('\0') {
        return Err(FsError::NulByte { path: shorten(&path.replace('\0', "\\0")) });
    }
    if !path.starts_with('/') {
        return Err(FsError::NotAbsolute { path: shorten(path) });
    }
    if path.len() >= PATH_MAX {
        return Err(fs_error(Errno::ENAMETOOLONG, syscall, &shorten(path)));
    }
    Ok(())
}

/// A path cut for an error message.
fn shorten(path: &str) -> String {
    const KEEP: usize = 200;
    if path.len() <= KEEP {
        return path.to_string();
    }
    let mut end = KEEP;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &path[..end])
}

/// Splits a validated path into its parent and final name, ignoring trailing slashes.
/// `Err(EBUSY)` for the root itself, `Err(EINVAL)` when the final name is `.` or `..`.
pub fn split(path: &str) -> Result<(&str, &str), Errno> {
    let trimmed = path.trim_end_matches('/');
    let Some(slash) = trimmed.rfind('/') else {
        return Err(Errno::EBUSY);
    };
    let (parent, name) = (&trimmed[..slash], &trimmed[slash + 1..]);
    if !valid_name(name.as_bytes()) {
        return Err(Errno::EINVAL);
    }
    Ok((if parent.is_empty() { "/" } else { parent }, name))
}

/// A single directory entry name: not empty, `.` or `..`, no `/` or NUL.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

/// The VM's root directory, against which every client path is resolved.
pub struct Root {
    fd: OwnedFd,
}

impl Root {
    /// Opens `dir` as the root (`/` in `vm-fs`; any directory in tests).
    pub fn open_dir(dir: &Path) -> std::io::Result<Root> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        Ok(Root { fd })
    }

    /// Opens `path` inside the root (see the module documentation). `flags` may include
    /// `O_NOFOLLOW` (the final component is not followed) and `O_CREAT`, with mode 0666 & ~umask.
    pub fn open(&self, path: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
        let resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        open_how(&self.fd, path.as_bytes(), flags, resolve)
    }

    /// Opens a directory as an `O_PATH` descriptor, for `*at` calls.
    pub fn open_dir_path(&self, path: &str) -> Result<OwnedFd, Errno> {
        self.open(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
    }
}

/// Opens the entry `name` of `dir` without following any symbolic link and without leaving
/// `dir`. `name` must be a [`valid_name`] (walks get names from the directory itself).
pub fn open_child(dir: &impl AsFd, name: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    if !valid_name(name) {
        return Err(Errno::EINVAL);
    }
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    open_how(dir, name, flags | OFlag::O_NOFOLLOW, resolve)
}

/// Opens a relative path of directories beneath `dir`, following no symbolic link.
pub fn open_beneath(dir: &impl AsFd, relative: &[u8], flags: OFlag) -> Result<OwnedFd, Errno> {
    let resolve = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    open_how(dir, relative, flags | OFlag::O_NOFOLLOW, resolve)
}

fn open_how(dir: &impl AsFd, path: &[u8], flags: OFlag, resolve: ResolveFlag) -> Result<OwnedFd, Errno> {
    let mode = if flags.contains(OFlag::O_CREAT) { Mode::from_bits_truncate(0o666) } else { Mode::empty() };
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).mode(mode).resolve(resolve);
    for _ in 0..EAGAIN_RETRIES {
        match openat2(dir.as_fd(), path, how) {
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
    Err(Errno::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("/a/b", "open").is_ok());
        assert_eq!(validate("rel", "open").unwrap_err(), FsError::NotAbsolute { path: "rel".into() });
        assert_eq!(validate("", "open").unwrap_err().to_string(), "EINVAL: path must be absolute: ''");
        assert_eq!(validate("/a\0b", "open").unwrap_err(), FsError::NulByte { path: "/a\\0b".into() });
        let long = format!("/{}", "a".repeat(PATH_MAX));
        let e = validate(&long, "open").unwrap_err();
        assert_eq!(e.errno(), Errno::ENAMETOOLONG);
        let text = e.to_string();
        assert!(text.starts_with("ENAMETOOLONG: name too long, open '/aaa") && text.len() < 300, "{text}");
    }

    #[test]
    fn splitting() {
        assert_eq!(split("/a/b"), Ok(("/a", "b")));
        assert_eq!(split("/a/b//"), Ok(("/a", "b")));
        assert_eq!(split("/a"), Ok(("/", "a")));
        assert_eq!(split("/"), Err(Errno::EBUSY));
        assert_eq!(split("///"), Err(Errno::EBUSY));
        assert_eq!(split("/a/.."), Err(Errno::EINVAL));
        assert_eq!(split("/a/."), Err(Errno::EINVAL));
        assert!(!valid_name(b"a/b") && !valid_name(b"") && valid_name(b"...") && valid_name(b".a"));
    }

    #[test]
    fn resolution_stays_in_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path();
        std::fs::create_dir(root_path.join("d")).unwrap();
        std::fs::write(root_path.join("d/f"), "inside").unwrap();
        std::os::unix::fs::symlink("/", root_path.join("d/to_root")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root_path.join("d/up")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root_path.join("d/abs")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", root_path.join("d/magic")).unwrap();
        let root = Root::open_dir(root_path).unwrap();
        let read = |p: &str| -> Result<String, Errno> {
            let fd = root.open(p, OFlag::O_RDONLY)?;
            Ok(std::fs::read_to_string(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd))).unwrap())
        };
        assert_eq!(read("/d/f"), Ok("inside".into()));
        assert_eq!(read("/../../d/f"), Ok("inside".into()));
        assert_eq!(read("/d/to_root/d/f"), Ok("inside".into()));
        assert_eq!(read("/d/up/d/f"), Ok("inside".into()));
        let secret = outside.path().join("secret");
        let secret = secret.to_str().unwrap();
        assert_eq!(read(secret), Err(Errno::ENOENT));
        assert_eq!(read(&format!("/d/to_root{secret}")), Err(Errno::ENOENT));
        assert_eq!(read("/d/abs/secret"), Err(Errno::ENOENT));
        assert_eq!(read(&format!("/d/up/../..{secret}")), Err(Errno::ENOENT));
        // /proc is not inside this root; a real procfs magic link is refused outright:
        assert_eq!(root.open("/d/magic/etc", OFlag::O_PATH).unwrap_err(), Errno::ENOENT);
        let host_root = Root::open_dir(Path::new("/")).unwrap();
        assert_eq!(host_root.open("/proc/self/root/etc", OFlag::O_PATH).unwrap_err(), Errno::ELOOP);
        assert_eq!(host_root.open("/proc/self/fd/0", OFlag::O_PATH).unwrap_err(), Errno::ELOOP);
        // Walks follow no symbolic link at all.
        let d = root.open_dir_path("/d").unwrap();
        assert!(open_child(&d, b"to_root", OFlag::O_RDONLY | OFlag::O_DIRECTORY).is_err());
        assert!(open_beneath(&d, b"to_root/d", OFlag::O_PATH).is_err());
        assert_eq!(open_child(&d, b"..", OFlag::O_PATH).unwrap_err(), Errno::EINVAL);
        assert_eq!(open_beneath(&d, b"../d", OFlag::O_PATH).unwrap_err(), Errno::EXDEV);
    }
}
