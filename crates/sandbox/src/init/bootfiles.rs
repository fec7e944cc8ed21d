//! Files init writes into the VM at every boot: `/etc/hostname`, `/etc/hosts`,
//! `/etc/resolv.conf` (its name server depends on the VM's network policy) and the user's home
//! directory.
//!
//! They are written after `pivot_root`, when no host path is left to reach, and still without
//! following any link the VM may have left there ([`super::rootpath`]):
//! - `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` are agentvm's: a link or file in their place is replaced
//!   (a new file is written next to it and renamed over it, which never follows the old entry);
//!   an identical file is left alone so it is not copied into the VM's layer for nothing;
//! - the home directory is the user's: created (owned by the VM user, 0755) only when nothing is
//!   there; a link the VM put there is its own business and stays.
//!
//! A VM that turned `/etc` or `/home` itself into a link keeps its boot: the file is skipped with
//! a message on init's stderr rather than the VM failing to start.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid, UnlinkatFlags};

use super::rootpath::{components, ensure_dirs, OnLink, RootPathError};
use crate::base::hosts_file;
use crate::config::{InitConfig, UserSpec};
use crate::fsops::resolve::open_child;

/// Writes the boot files. Must run after `pivot_root`.
pub fn write(config: &InitConfig) -> Result<(), RootPathError> {
    let root = nix::fcntl::open("/", OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|errno| RootPathError::Io { what: "opening", path: "/".into(), errno })?;
    match ensure_dirs(&root, "/etc", OnLink::Refuse) {
        Ok((_, _, etc)) => {
            replace_file(&etc, "hostname", format!("{}\n", config.hostname).as_bytes(), "/etc/hostname")?;
            replace_file(&etc, "hosts", hosts_file(&config.hostname).as_bytes(), "/etc/hosts")?;
            let resolv = config.resolv_conf.as_deref().unwrap_or(crate::base::RESOLV_CONF_NONE);
            replace_file(&etc, "resolv.conf", resolv.as_bytes(), "/etc/resolv.conf")?;
        }
        Err(RootPathError::NotADirectory(path)) => skipped("/etc/hostname and /etc/hosts", &path),
        Err(e) => return Err(e),
    }
    ensure_home(&root, &config.user)
}

/// Makes `dir/name` a regular file (mode 0644) holding `content`.
fn replace_file(dir: &OwnedFd, name: &str, content: &[u8], shown: &str) -> Result<(), RootPathError> {
    let io = |what| move |errno| RootPathError::Io { what, path: shown.to_string(), errno };
    // O_NOFOLLOW: a link fails with ELOOP and is replaced below.
    if let Ok(existing) = open_child(dir, name.as_bytes(), OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
        let stat = nix::sys::stat::fstat(&existing).map_err(io("inspecting"))?;
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG if stat.st_size == content.len() as i64 => {
                let mut current = Vec::with_capacity(content.len());
                std::fs::File::from(existing)
                    .read_to_end(&mut current)
                    .map_err(|e| errno_of(&e))
                    .map_err(io("reading"))?;
                if current == content {
                    return Ok(());
                }
            }
            SFlag::S_IFREG => {}
            SFlag::S_IFDIR => {
                skipped(shown, shown);
                return Ok(());
            }
            // A fifo or a device node: never opened for writing, replaced like a link.
            _ => {}
        }
    }
    let temporary = format!(".{name}.agentvm-boot");
    match nix::unistd::unlinkat(dir, temporary.as_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(errno) => return Err(io("removing a leftover temporary file for")(errno)),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = nix::fcntl::openat(dir, temporary.as_str(), flags, Mode::from_bits_truncate(0o644))
        .map_err(io("creating a temporary file for"))?;
    nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(0o644)).map_err(io("setting the mode of"))?;
    std::fs::File::from(file).write_all(content).map_err(|e| errno_of(&e)).map_err(io("writing"))?;
    nix::fcntl::renameat(dir, temporary.as_str(), dir, name).map_err(|errno| {
        let _ = nix::unistd::unlinkat(dir, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
        io("replacing")(errno)
    })
}

/// Creates the user's home directory when nothing is at its path.
fn ensure_home(root: &OwnedFd, user: &UserSpec) -> Result<(), RootPathError> {
    let parts = components(&user.home)?;
    let (name, parents) = parts.split_last().ok_or_else(|| RootPathError::Invalid(user.home.clone()))?;
    let parent = if parents.is_empty() {
        root.try_clone().map_err(|e| RootPathError::Io {
            what: "duplicating",
            path: "/".into(),
            errno: errno_of(&e),
        })?
    } else {
        let parent_path = format!("/{}", parents.join("/"));
        match ensure_dirs(root, &parent_path, OnLink::Refuse) {
            Ok((_, _, dir)) => dir,
            Err(RootPathError::NotADirectory(path)) => {
                skipped(&user.home, &path);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    };
    let io = |what| move |errno| RootPathError::Io { what, path: user.home.clone(), errno };
    match nix::sys::stat::fstatat(&parent, *name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(_) => return Ok(()),
        Err(Errno::ENOENT) => {}
        Err(errno) => return Err(io("inspecting")(errno)),
    }
    nix::sys::stat::mkdirat(&parent, *name, Mode::from_bits_truncate(0o755)).map_err(io("creating"))?;
    let home = open_child(&parent, name.as_bytes(), OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(io("opening"))?;
    nix::unistd::fchown(&home, Some(Uid::from_raw(user.uid)), Some(Gid::from_raw(user.gid))).map_err(io("owning"))?;
    nix::sys::stat::fchmod(&home, Mode::from_bits_truncate(0o755)).map_err(io("setting the mode of"))
}

fn skipped(what: &str, link: &str) {
    eprintln!("agentvm vm-init: {link} is a symbolic link or not a directory; {what} left as the VM made it");
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}
