//! Directory listings and deletion. Walks never follow a symbolic link: each child is opened
//! by name beneath its parent's descriptor ([`open_child`]), and explicit stacks and queues
//! (not recursion) bound the memory a deep tree can take.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, FileStat, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::error::{fs_error, FsError, FsResult};
use super::resolve::{open_beneath, open_child, split, validate, Root};
use super::wire::{DirEntryInfo, EntryKind};

/// Most entries `readdirRecursive` returns.
pub const MAX_RECURSIVE_ENTRIES: usize = 100_000;
/// Most bytes of paths `readdirRecursive` returns (keeps the reply well below what the host
/// captures).
pub const MAX_RECURSIVE_PATH_BYTES: usize = 64 << 20;

/// The names in a directory (without `.` and `..`), sorted, and the directory to use with them.
pub(crate) fn list(fd: OwnedFd) -> Result<(Dir, Vec<Vec<u8>>), Errno> {
    let mut dir = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok((dir, names))
}

pub(crate) fn file_type(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

pub(crate) fn lstat_at(dir: &impl AsFd, name: &[u8]) -> Result<FileStat, Errno> {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// `readdir`: the names in a directory, sorted, without `.` and `..`. Names that are not UTF-8
/// are converted lossily.
pub fn readdir(root: &Root, path: &str) -> FsResult<Vec<String>> {
    validate(path, "scandir")?;
    let fd = root.open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|e| fs_error(e, "scandir", path))?;
    let (_, names) = list(fd).map_err(|e| fs_error(e, "scandir", path))?;
    Ok(names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect())
}

/// `readdirRecursive`: every entry under `path`, breadth-first (a directory's entries sorted
/// by name, then those of its subdirectories in that order), with absolute paths.
///
/// `max_depth` 0 lists the immediate children only; `exclude` names entries that are neither
/// listed nor descended into. Symbolic links are listed, never followed. Subdirectories the
/// user may not read are listed but not descended into (like `find`, which reports and goes
/// on); entries that vanish meanwhile are skipped. More than [`MAX_RECURSIVE_ENTRIES`] entries
/// (or [`MAX_RECURSIVE_PATH_BYTES`] of paths) is an error.
pub fn readdir_recursive(
    root: &Root,
    path: &str,
    max_depth: Option<u32>,
    exclude: &[String],
) -> FsResult<Vec<DirEntryInfo>> {
    validate(path, "scandir")?;
    let err = |e| fs_error(e, "scandir", path);
    let start = root.open(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(err)?;
    let base = path.trim_end_matches('/').to_string();
    // (path relative to `start`, absolute path, depth of its entries)
    let mut queue: VecDeque<(Vec<u8>, String, u32)> = VecDeque::from([(Vec::new(), base, 0)]);
    let mut out = Vec::new();
    let mut path_bytes = 0;
    while let Some((relative, absolute, depth)) = queue.pop_front() {
        let fd = if relative.is_empty() {
            start.try_clone().map_err(|e| super::ops::io_error(e, "scandir", path))?
        } else {
            match open_beneath(&start, &relative, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(Errno::ENAMETOOLONG) => return Err(fs_error(Errno::ENAMETOOLONG, "scandir", &absolute)),
                Err(_) => continue,
            }
        };
        let (dir, names) = match list(fd) {
            Ok(listed) => listed,
            Err(e) if relative.is_empty() => return Err(err(e)),
            Err(_) => continue,
        };
        for name in names {
            let name_text = String::from_utf8_lossy(&name).into_owned();
            if exclude.contains(&name_text) {
                continue;
            }
            let Ok(st) = lstat_at(&dir, &name) else { continue };
            let kind = match file_type(&st) {
                SFlag::S_IFDIR => EntryKind::Directory,
                SFlag::S_IFLNK => EntryKind::Symlink,
                _ => EntryKind::File,
            };
            let child = format!("{absolute}/{name_text}");
            path_bytes += child.len();
            if out.len() == MAX_RECURSIVE_ENTRIES || path_bytes > MAX_RECURSIVE_PATH_BYTES {
                return Err(FsError::ListingTooLarge {
                    entries: MAX_RECURSIVE_ENTRIES,
                    mib: MAX_RECURSIVE_PATH_BYTES >> 20,
                    path: path.to_string(),
                });
            }
            out.push(DirEntryInfo { path: child.clone(), kind, size: st.st_size.max(0) as u64 });
            if kind == EntryKind::Directory && max_depth.is_none_or(|max| depth < max) {
                let mut child_relative = relative.clone();
                if !child_relative.is_empty() {
                    child_relative.push(b'/');
                }
                child_relative.extend_from_slice(&name);
                queue.push_back((child_relative, child, depth + 1));
            }
        }
    }
    Ok(out)
}

/// `delete`: a file or symbolic link is unlinked; a directory is removed if empty
/// (`ENOTEMPTY` otherwise), or with `recursive` after everything in it (never following a
/// symbolic link: a link is removed, not what it points to).
pub fn delete(root: &Root, path: &str, recursive: bool) -> FsResult<()> {
    validate(path, "rm")?;
    let (parent, name) = split(path).map_err(|e| fs_error(e, "rmdir", path))?;
    let dir = root.open_dir_path(parent).map_err(|e| fs_error(e, "lstat", path))?;
    let st = lstat_at(&dir, name.as_bytes()).map_err(|e| fs_error(e, "lstat", path))?;
    if file_type(&st) != SFlag::S_IFDIR {
        return unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir).map_err(|e| fs_error(e, "unlink", path));
    }
    if recursive {
        let fd = open_child(&dir, name.as_bytes(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|e| fs_error(e, "scandir", path))?;
        remove_contents(fd, path)?;
    }
    unlinkat(&dir, name, UnlinkatFlags::RemoveDir).map_err(|e| fs_error(e, "rmdir", path))
}

/// Removes everything inside the directory `top` (`path` names it in errors).
pub(crate) fn remove_contents(top: OwnedFd, path: &str) -> FsResult<()> {
    struct Frame {
        dir: Dir,
        names: Vec<Vec<u8>>,
        /// The directory's name in its parent (the frame below); `None` for `top`.
        name: Option<Vec<u8>>,
        path: String,
    }
    let (dir, names) = list(top).map_err(|e| fs_error(e, "scandir", path))?;
    let mut stack = vec![Frame { dir, names, name: None, path: path.trim_end_matches('/').to_string() }];
    while let Some(mut frame) = stack.pop() {
        let Some(name) = frame.names.pop() else {
            if let (Some(name), Some(parent)) = (frame.name, stack.last()) {
                drop(frame.dir);
                match unlinkat(&parent.dir, name.as_slice(), UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(fs_error(e, "rmdir", &frame.path)),
                }
            }
            continue;
        };
        let child_path = format!("{}/{}", frame.path, String::from_utf8_lossy(&name));
        let st = match lstat_at(&frame.dir, &name) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                stack.push(frame);
                continue;
            }
            Err(e) => return Err(fs_error(e, "lstat", &child_path)),
        };
        if file_type(&st) == SFlag::S_IFDIR {
            let fd = open_child(&frame.dir, &name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| fs_error(e, "scandir", &child_path))?;
            let (dir, names) = list(fd).map_err(|e| fs_error(e, "scandir", &child_path))?;
            stack.push(frame);
            stack.push(Frame { dir, names, name: Some(name), path: child_path });
        } else {
            match unlinkat(&frame.dir, name.as_slice(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(fs_error(e, "unlink", &child_path)),
            }
            stack.push(frame);
        }
    }
    Ok(())
}
