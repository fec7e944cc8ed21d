//! `move`: `rename(2)`, and across filesystems (`EXDEV`, e.g. the VM's `/tmp` tmpfs and its
//! home directory) a copy then a delete.
//!
//! The copy is made under a temporary name next to the destination, flushed (`syncfs`), and
//! renamed into place, so the destination appears whole or not at all and the kernel's rules for
//! replacing an existing destination apply as for a plain rename (`ENOTEMPTY`, `EISDIR`...).
//! Only then is the source deleted. Modes and times are preserved, symbolic links re-created
//! (never followed), FIFOs re-created; devices and sockets cannot be copied (`EXDEV`). Owners
//! are not preserved (the VM user cannot give files away). If the copy fails, it is removed and
//! the source is untouched.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, OFlag};
use nix::sys::stat::{fchmod, futimens, mkdirat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{mkfifoat, symlinkat, syncfs, unlinkat, UnlinkatFlags};

use super::error::{fs_error, FsError, FsResult};
use super::ops::temp_name;
use super::resolve::{open_child, split, validate, Root};
use super::tree::{file_type, list, lstat_at, remove_contents};

/// `move(from, to)`. Errors read like Node's: `ENOENT: ..., rename '/a' -> '/b'`.
pub fn move_path(root: &Root, from: &str, to: &str) -> FsResult<()> {
    validate(from, "rename")?;
    validate(to, "rename")?;
    let both = format!("{from}' -> '{to}");
    let err = |e| fs_error(e, "rename", &both);
    let (from_parent, from_name) = split(from).map_err(err)?;
    let (to_parent, to_name) = split(to).map_err(err)?;
    let from_dir = root.open_dir_path(from_parent).map_err(err)?;
    let to_dir = root.open_dir_path(to_parent).map_err(err)?;
    match renameat(&from_dir, from_name, &to_dir, to_name) {
        Ok(()) => Ok(()),
        Err(Errno::EXDEV) => move_across(&from_dir, from_name, &to_dir, to_name, &both),
        Err(e) => Err(err(e)),
    }
}

/// Copy to a temporary name in `to_dir`, rename it to `to_name`, delete the source.
fn move_across(from_dir: &OwnedFd, from_name: &str, to_dir: &OwnedFd, to_name: &str, both: &str) -> FsResult<()> {
    let err = |e| fs_error(e, "rename", both);
    let st = lstat_at(from_dir, from_name.as_bytes()).map_err(err)?;
    let temp = temp_name("move");
    let copied = copy_node(from_dir, from_name.as_bytes(), &st, to_dir, temp.as_bytes())
        .and_then(|()| sync_fs(to_dir))
        .and_then(|()| renameat(to_dir, temp.as_str(), to_dir, to_name));
    if let Err(e) = copied {
        remove_copy(to_dir, &temp);
        return Err(err(e));
    }
    let removed = if file_type(&st) == SFlag::S_IFDIR {
        open_child(from_dir, from_name.as_bytes(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(err)
            .and_then(|fd| remove_contents(fd, both))
            .and_then(|()| unlinkat(from_dir, from_name, UnlinkatFlags::RemoveDir).map_err(err))
    } else {
        unlinkat(from_dir, from_name, UnlinkatFlags::NoRemoveDir).map_err(err)
    };
    removed.map_err(|e| FsError::SourceNotRemoved { source: Box::new(e) })
}

/// Removes a partial copy (best effort).
fn remove_copy(dir: &OwnedFd, name: &str) {
    if let Ok(fd) = open_child(dir, name.as_bytes(), OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
        let _ = remove_contents(fd, name);
        let _ = unlinkat(dir, name, UnlinkatFlags::RemoveDir);
    } else {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
}

/// Flushes the filesystem of `dir` (an `O_PATH` descriptor, which `syncfs` does not accept).
fn sync_fs(dir: &OwnedFd) -> Result<(), Errno> {
    match openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => syncfs(&fd),
        Err(_) => Ok(()),
    }
}

/// Copies the entry `name` of `src` (with `lstat` result `st`) to `dst_name` in `dst`.
fn copy_node(src: &impl AsFd, name: &[u8], st: &FileStat, dst: &impl AsFd, dst_name: &[u8]) -> Result<(), Errno> {
    if file_type(st) == SFlag::S_IFDIR {
        copy_tree(src, name, st, dst, dst_name)
    } else {
        copy_leaf(src, name, st, dst, dst_name)
    }
}

/// Copies anything but a directory.
fn copy_leaf(src: &impl AsFd, name: &[u8], st: &FileStat, dst: &impl AsFd, dst_name: &[u8]) -> Result<(), Errno> {
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    match file_type(st) {
        SFlag::S_IFREG => {
            let input = open_child(src, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let output = openat(dst.as_fd(), dst_name, flags, Mode::from_bits_truncate(0o600))?;
            let (mut input, mut output) = (File::from(input), File::from(output));
            io::copy(&mut input, &mut output).map_err(errno_of)?;
            fchmod(&output, mode)?;
            set_times(&output, st)
        }
        SFlag::S_IFLNK => {
            let target = readlinkat(src.as_fd(), name)?;
            symlinkat(target.as_os_str(), dst.as_fd(), dst_name)
        }
        SFlag::S_IFIFO => mkfifoat(dst.as_fd(), dst_name, mode),
        _ => Err(Errno::EXDEV),
    }
}

/// Copies a directory tree, depth-first with an explicit stack. Directories are created 0700
/// and get their mode and times once their content is in.
fn copy_tree(src: &impl AsFd, name: &[u8], st: &FileStat, dst: &impl AsFd, dst_name: &[u8]) -> Result<(), Errno> {
    struct Frame {
        src: Dir,
        dst: OwnedFd,
        names: Vec<Vec<u8>>,
        st: FileStat,
    }
    let open_pair = |src: &dyn AsFd, name: &[u8], dst: &dyn AsFd, dst_name: &[u8], st: FileStat| {
        mkdirat(dst.as_fd(), dst_name, Mode::from_bits_truncate(0o700))?;
        let dst = open_child(&dst.as_fd(), dst_name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let (src, names) = list(open_child(&src.as_fd(), name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?)?;
        Ok::<_, Errno>(Frame { src, dst, names, st })
    };
    let mut stack = vec![open_pair(src, name, dst, dst_name, *st)?];
    while let Some(mut frame) = stack.pop() {
        let Some(child) = frame.names.pop() else {
            fchmod(&frame.dst, Mode::from_bits_truncate(frame.st.st_mode & 0o7777))?;
            set_times(&frame.dst, &frame.st)?;
            continue;
        };
        let child_st = match lstat_at(&frame.src, &child) {
            Ok(st) => st,
            Err(Errno::ENOENT) => {
                stack.push(frame);
                continue;
            }
            Err(e) => return Err(e),
        };
        if file_type(&child_st) == SFlag::S_IFDIR {
            let next = open_pair(&frame.src, &child, &frame.dst, &child, child_st)?;
            stack.push(frame);
            stack.push(next);
        } else {
            copy_leaf(&frame.src, &child, &child_st, &frame.dst, &child)?;
            stack.push(frame);
        }
    }
    Ok(())
}

fn set_times(fd: &impl AsFd, st: &FileStat) -> Result<(), Errno> {
    futimens(fd, &TimeSpec::new(st.st_atime, st.st_atime_nsec), &TimeSpec::new(st.st_mtime, st.st_mtime_nsec))
}

fn errno_of(e: io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}
