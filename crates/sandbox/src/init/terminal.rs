//! Terminals for shells: a PTY pair from the VM's own devpts instance (so `tty` inside prints
//! the VM's `/dev/pts/N`), with its window size set and its slave owned by the VM user.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

use crate::protocol::SpawnError;

/// Opens a new terminal; returns (master, slave).
pub fn open(cols: u16, rows: u16, owner: (u32, u32)) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let fail = |step: &str, e: nix::Error| SpawnError::Terminal { errno: e as i32, step: step.to_string() };
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).map_err(|e| fail("opening /dev/ptmx", e))?;
    grantpt(&master).map_err(|e| fail("grantpt", e))?;
    unlockpt(&master).map_err(|e| fail("unlockpt", e))?;
    let name = ptsname_r(&master).map_err(|e| fail("ptsname", e))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail(&format!("opening {name}"), e))?;
    // The shell runs as the VM user; programs that reopen their terminal by name need to own it.
    nix::unistd::fchown(&slave, Some(owner.0.into()), Some(owner.1.into()))
        .map_err(|e| fail("chown of the terminal", e))?;
    set_window_size(&master, cols, rows).map_err(|e| fail("setting the window size", e))?;
    // SAFETY: into_raw_fd hands us sole ownership of the master descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok((master, slave))
}

/// `TIOCSWINSZ`: the kernel sends SIGWINCH to the terminal's foreground process group.
pub fn set_window_size(fd: &impl AsRawFd, cols: u16, rows: u16) -> nix::Result<()> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    nix::errno::Errno::result(r).map(drop)
}
