//! Reading, writing, creating directories, `stat` and `exists`. Listing, deleting and moving
//! are in [`super::tree`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fsync, unlinkat, UnlinkatFlags};

use super::error::{fs_error, FsError, FsResult};
use super::resolve::{split, validate, Root};
use super::wire::FileStat;

/// Most symbolic links followed for the final component of a write (Linux's limit).
const MAX_SYMLINK_HOPS: usize = 40;
/// Read in chunks of this size.
const READ_CHUNK: usize = 1 << 16;

/// `readFile`: the whole file. At most `budget` bytes (`EFBIG` beyond), taken from the budget.
///
/// Files other than regular ones are read without blocking: a FIFO without a writer reads as
/// empty, an endless device (`/dev/zero`) fails with `EFBIG`.
pub fn read_file(root: &Root, path: &str, budget: &mut u64) -> FsResult<Vec<u8>> {
    validate(path, "open")?;
    let fd = root
        .open(path, OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .map_err(|e| fs_error(e, "open", path))?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| fs_error(e, "read", path))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind == SFlag::S_IFDIR {
        return Err(fs_error(Errno::EISDIR, "read", path));
    }
    let limit = *budget;
    let expected = if kind == SFlag::S_IFREG { (st.st_size.max(0) as u64).min(limit) as usize } else { 0 };
    let mut content = Vec::with_capacity(expected);
    let mut file = File::from(fd);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                if (content.len() + n) as u64 > limit {
                    return Err(fs_error(Errno::EFBIG, "read", path));
                }
                content.extend_from_slice(&chunk[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io_error(e, "read", path)),
        }
    }
    *budget -= content.len() as u64;
    Ok(content)
}

/// `writeFile`: replaces the file's content with the next `len` bytes of `content`, durably.
///
/// The parent directory must exist (unless `create_parents`: `mkdir -p` first). A symbolic
/// link as final component is followed (inside the root) and its target written, as Node does.
/// The new content goes to a temporary file in the same directory, which is synced and renamed
/// over the target, then the directory is synced: readers see the old or the new content,
/// never a mix, and the content survives a crash once this returns. An existing file keeps its
/// permission bits; a new one gets 0644. Where the user may write the file but not create one
/// next to it, or the target is not a regular file (a device, a FIFO), it is written in place.
/// Writing under `/proc` or `/sys` is refused with `EACCES`.
pub fn write_file(root: &Root, path: &str, content: &mut dyn Read, len: u64, create_parents: bool) -> FsResult<()> {
    validate(path, "open")?;
    if path.ends_with('/') {
        return Err(fs_error(Errno::EISDIR, "open", path));
    }
    if create_parents {
        if let Ok((parent, _)) = split(path) {
            mkdir_all(root, parent).map_err(|e| match e {
                // The parent exists but is not a directory.
                Errno::EEXIST => fs_error(Errno::ENOTDIR, "open", path),
                e => fs_error(e, "mkdir", path),
            })?;
        }
    }
    let mut logical = path.to_string();
    for _ in 0..=MAX_SYMLINK_HOPS {
        let (parent, name) = split(&logical).map_err(|_| fs_error(Errno::EISDIR, "open", path))?;
        let dir = root.open_dir_path(parent).map_err(|e| fs_error(e, "open", path))?;
        refuse_kernel_fs(&dir, path)?;
        let existing = match fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(Errno::ENOENT) => None,
            Err(e) => return Err(fs_error(e, "open", path)),
        };
        let Some(st) = existing else {
            return replace(&dir, name, None, content, len, path);
        };
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFLNK => {
                let target = readlinkat(&dir, name).map_err(|e| fs_error(e, "open", path))?;
                let target = target.into_string().map_err(|_| fs_error(Errno::EINVAL, "readlink", path))?;
                logical = if target.starts_with('/') { target } else { format!("{parent}/{target}") };
                if logical.len() >= super::resolve::PATH_MAX {
                    return Err(fs_error(Errno::ENAMETOOLONG, "open", path));
                }
            }
            SFlag::S_IFDIR => return Err(fs_error(Errno::EISDIR, "open", path)),
            SFlag::S_IFREG => return replace(&dir, name, Some(st.st_mode & 0o777), content, len, path),
            _ => return write_in_place(&dir, name, content, len, path),
        }
    }
    Err(fs_error(Errno::ELOOP, "open", path))
}

/// Refuses writes into the kernel's own filesystems (procfs, sysfs).
fn refuse_kernel_fs(dir: &OwnedFd, path: &str) -> FsResult<()> {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    let fs = fstatfs(dir).map_err(|e| fs_error(e, "open", path))?.filesystem_type();
    if fs == PROC_SUPER_MAGIC || fs == SYSFS_MAGIC {
        return Err(fs_error(Errno::EACCES, "open", path));
    }
    Ok(())
}

/// Unique names for temporary files within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name (short, so it fits next to a name of the maximum length).
pub(crate) fn temp_name(what: &str) -> String {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!(".agentvm-{what}-{}-{n}-{nanos:x}", std::process::id())
}

/// Writes `content` to a new temporary file in `dir` and renames it over `name`.
fn replace(dir: &OwnedFd, name: &str, mode: Option<u32>, content: &mut dyn Read, len: u64, path: &str) -> FsResult<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut attempts = 0;
    let (temp, fd) = loop {
        let temp = temp_name("write");
        attempts += 1;
        match openat(dir, temp.as_str(), flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => break (temp, fd),
            Err(Errno::EEXIST) if attempts < 16 => continue,
            Err(Errno::EACCES | Errno::EPERM | Errno::EROFS) if mode.is_some() => {
                return write_in_place(dir, name, content, len, path);
            }
            Err(e) => return Err(fs_error(e, "open", path)),
        }
    };
    let result = (|| {
        let mut file = File::from(fd);
        copy_exact(content, &mut file, len).map_err(|e| io_error(e, "write", path))?;
        fchmod(&file, Mode::from_bits_truncate(mode.unwrap_or(0o644))).map_err(|e| fs_error(e, "chmod", path))?;
        fsync(&file).map_err(|e| fs_error(e, "fsync", path))?;
        renameat(dir, temp.as_str(), dir, name).map_err(|e| fs_error(e, "rename", path))?;
        sync_dir(dir).map_err(|e| fs_error(e, "fsync", path))
    })();
    if result.is_err() {
        let _ = unlinkat(dir, temp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    result
}

/// Overwrites `name` in `dir` in place (truncate, write, sync), following no symbolic link.
fn write_in_place(dir: &OwnedFd, name: &str, content: &mut dyn Read, len: u64, path: &str) -> FsResult<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let fd = openat(dir, name, flags | OFlag::O_CLOEXEC, Mode::empty()).map_err(|e| fs_error(e, "open", path))?;
    // Opening did not block (a FIFO without a reader fails with ENXIO); writing may.
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty())).map_err(|e| fs_error(e, "open", path))?;
    let mut file = File::from(fd);
    copy_exact(content, &mut file, len).map_err(|e| io_error(e, "write", path))?;
    match fsync(&file) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::EROFS) => Ok(()),
        Err(e) => Err(fs_error(e, "fsync", path)),
    }
}

/// Copies exactly `len` bytes; a shorter source is an error (a truncated request).
fn copy_exact(content: &mut dyn Read, out: &mut File, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut content.take(len), out)?;
    if copied != len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "request ended inside the content"));
    }
    out.flush()
}

/// Syncs a directory given as an `O_PATH` descriptor. A directory the user may not read cannot
/// be opened for syncing; that is skipped.
pub(crate) fn sync_dir(dir: &OwnedFd) -> Result<(), Errno> {
    match openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(fd) => fsync(&fd),
        Err(_) => Ok(()),
    }
}

/// `mkdir`: one directory (`EEXIST` if it exists, `ENOENT` without a parent), or with
/// `recursive` every missing directory of the path (`mkdir -p`; existing directories are fine).
/// New directories get 0777 & ~umask (0755).
pub fn mkdir(root: &Root, path: &str, recursive: bool) -> FsResult<()> {
    validate(path, "mkdir")?;
    if recursive {
        return mkdir_all(root, path).map_err(|e| fs_error(e, "mkdir", path));
    }
    let (parent, name) = split(path).map_err(|_| fs_error(Errno::EEXIST, "mkdir", path))?;
    let dir = root.open_dir_path(parent).map_err(|e| fs_error(e, "mkdir", path))?;
    mkdirat(&dir, name, Mode::from_bits_truncate(0o777)).map_err(|e| fs_error(e, "mkdir", path))
}

/// `mkdir -p dir`. `EEXIST` when `dir` (or the last component) exists but is not a directory.
fn mkdir_all(root: &Root, dir: &str) -> Result<(), Errno> {
    if root.open_dir_path(dir).is_ok() {
        return Ok(());
    }
    let components: Vec<&str> = dir.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let mut prefix = String::new();
    for (i, component) in components.iter().enumerate() {
        let last = i + 1 == components.len();
        let next = format!("{prefix}/{component}");
        if *component != ".." {
            match root.open_dir_path(&next) {
                Ok(_) => {}
                Err(Errno::ENOENT) => {
                    let parent = root.open_dir_path(if prefix.is_empty() { "/" } else { &prefix })?;
                    match mkdirat(&parent, *component, Mode::from_bits_truncate(0o777)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(Errno::ENOTDIR) if last => return Err(Errno::EEXIST),
                Err(e) => return Err(e),
            }
        }
        prefix = next;
    }
    match root.open_dir_path(dir) {
        Ok(_) => Ok(()),
        Err(Errno::ENOTDIR) => Err(Errno::EEXIST),
        Err(e) => Err(e),
    }
}

/// `stat`: what the path points to (symbolic links followed, like Node's `fs.stat`), except
/// `isSymbolicLink`, which says whether the final component itself is a link (`lstat`).
pub fn stat(root: &Root, path: &str) -> FsResult<FileStat> {
    validate(path, "stat")?;
    let fd = root.open(path, OFlag::O_PATH).map_err(|e| fs_error(e, "stat", path))?;
    let st = statx(&fd).map_err(|e| fs_error(e, "stat", path))?;
    let is_link = root
        .open(path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
        .ok()
        .and_then(|fd| statx(&fd).ok())
        .is_some_and(|l| u32::from(l.stx_mode) & libc::S_IFMT == libc::S_IFLNK);
    let ms = |t: libc::statx_timestamp| t.tv_sec as f64 * 1000.0 + f64::from(t.tv_nsec) / 1e6;
    let birth = if st.stx_mask & libc::STATX_BTIME != 0 { st.stx_btime } else { st.stx_ctime };
    Ok(FileStat {
        mode: u32::from(st.stx_mode),
        size: st.stx_size,
        blocks: st.stx_blocks,
        dev: libc::makedev(st.stx_dev_major, st.stx_dev_minor),
        rdev: libc::makedev(st.stx_rdev_major, st.stx_rdev_minor),
        is_directory: u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR,
        is_symbolic_link: is_link,
        atime_ms: ms(st.stx_atime),
        mtime_ms: ms(st.stx_mtime),
        ctime_ms: ms(st.stx_ctime),
        birthtime_ms: ms(birth),
        ino: st.stx_ino,
        nlink: u64::from(st.stx_nlink),
        uid: st.stx_uid,
        gid: st.stx_gid,
    })
}

/// `statx` of an open descriptor (an `O_PATH` one works).
fn statx(fd: &impl AsFd) -> Result<libc::statx, Errno> {
    let mut buf = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is a valid empty C string (with AT_EMPTY_PATH the descriptor itself is
    // examined) and `buf` is a writable statx buffer of the right size.
    let rc = unsafe {
        libc::statx(
            fd.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            buf.as_mut_ptr(),
        )
    };
    Errno::result(rc)?;
    // SAFETY: statx succeeded and filled the buffer (which was zeroed, so any field it did not
    // fill is a valid zero).
    Ok(unsafe { buf.assume_init() })
}

/// `exists`: whether the path resolves (symbolic links followed, like Node's `existsSync`).
/// Any failure to resolve it (missing, dangling link, no permission, magic link) is `false`.
pub fn exists(root: &Root, path: &str) -> FsResult<bool> {
    validate(path, "access")?;
    Ok(root.open(path, OFlag::O_PATH).is_ok())
}

/// The failure of an I/O call: its error number, or `EIO` with the error's text.
pub(crate) fn io_error(e: io::Error, syscall: &str, path: &str) -> FsError {
    match e.raw_os_error() {
        Some(errno) => fs_error(Errno::from_raw(errno), syscall, path),
        None => FsError::Io { detail: e.to_string(), syscall: syscall.to_string(), path: path.to_string() },
    }
}
