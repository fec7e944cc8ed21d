//! The host's LXCFS daemon: one per host (data directory), mounted at `<data>/lxcfs`.
//!
//! [LXCFS](https://linuxcontainers.org/lxcfs/) (Debian package `lxcfs`, kept by the LXC
//! project and used by LXD, Incus and Kubernetes nodes) is a FUSE filesystem whose
//! `proc/meminfo`, `cpuinfo`, `stat`, `uptime`, `loadavg`... answer each read from the
//! reader's own cgroup and PID namespace. One mount therefore serves every VM; init binds its
//! files over the VM's `/proc` (see `agentvm_sandbox::init::proc_view`). We use it rather
//! than our own FUSE server because getting every field of those files right (swap, cached,
//! per-CPU tick accounting, load averages per cgroup) is what LXCFS has been doing for a
//! decade.
//!
//! Lifecycle: the host starts it in the foreground (`-f`, our child, in its own process group
//! so a terminal's Ctrl-C reaches only the server), waits until the mount answers, and on drop
//! sends SIGTERM (LXCFS unmounts itself), escalating to SIGKILL and a lazy unmount. A server
//! that was SIGKILLed leaves the daemon and its mount behind: the next host on the same data
//! directory kills the daemon named in `<data>/lxcfs.pid` and lazily unmounts before starting
//! its own.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The program, looked up in `PATH`.
const PROGRAM: &str = "lxcfs";
/// How long a starting daemon may take to answer on its mount.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping daemon gets after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the daemon could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LxcfsError {
    #[error("`lxcfs` is not installed (Debian: apt-get install lxcfs)")]
    NotInstalled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("lxcfs exited ({status}) before its mount was ready; its log: {log}")]
    Exited { status: std::process::ExitStatus, log: String },
    #[error("lxcfs did not mount {mountpoint} within {timeout:?}")]
    Timeout { mountpoint: PathBuf, timeout: Duration },
}

/// A running LXCFS daemon and its mount; stopped and unmounted on drop.
#[derive(Debug)]
pub(crate) struct Lxcfs {
    child: Child,
    mountpoint: PathBuf,
    pidfile: PathBuf,
}

impl Lxcfs {
    /// Where the mount of the host on `data` lives.
    pub fn mountpoint(data: &Path) -> PathBuf {
        data.join("lxcfs")
    }

    /// Recovers whatever a killed predecessor left on `data`, then starts the daemon and waits
    /// until its mount answers.
    pub fn start(data: &Path) -> Result<Lxcfs, LxcfsError> {
        let mountpoint = Self::mountpoint(data);
        let pidfile = data.join("lxcfs.pid");
        recover(&mountpoint, &pidfile);
        let io_err = |context: String| move |source| LxcfsError::Io { context, source };
        fs::create_dir_all(&mountpoint).map_err(io_err(format!("creating {}", mountpoint.display())))?;
        let log_path = data.join("lxcfs.log");
        let log = fs::File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
        let log_err = log.try_clone().map_err(io_err("duplicating the log descriptor".into()))?;
        let child = Command::new(PROGRAM)
            // foreground; per-cgroup load averages; CPU count from the CFS quota; pidfile away
            // from the system-wide /run/lxcfs.pid (a distribution's own lxcfs may run too).
            .args(["-f", "-l", "--enable-cfs", "-p"])
            .arg(&pidfile)
            .arg(&mountpoint)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => LxcfsError::NotInstalled,
                _ => LxcfsError::Io { context: "starting lxcfs".into(), source: e },
            })?;
        let mut daemon = Lxcfs { child, mountpoint, pidfile };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if daemon.mountpoint.join("proc/meminfo").exists() {
                return Ok(daemon);
            }
            if let Ok(Some(status)) = daemon.child.try_wait() {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let tail = log.trim().lines().rev().take(5).collect::<Vec<_>>().join(" / ");
                return Err(LxcfsError::Exited { status, log: tail });
            }
            if Instant::now() > deadline {
                return Err(LxcfsError::Timeout { mountpoint: daemon.mountpoint.clone(), timeout: START_TIMEOUT });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The directory of per-reader `/proc` files.
    pub fn proc_dir(&self) -> PathBuf {
        self.mountpoint.join("proc")
    }

    /// Whether the daemon still runs (a dead daemon's mount answers `ENOTCONN`).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Lxcfs {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        // Detach the mount first, then end the daemon at once: it keeps no state, and over
        // SIGTERM it takes its time (measured: the whole 2 s grace, on most stops).
        let _ = umount2(&self.mountpoint, MntFlags::MNT_DETACH);
        let _ = kill(pid, Signal::SIGKILL);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        unmount_all(&self.mountpoint);
        let _ = fs::remove_file(&self.pidfile);
    }
}

/// Kills the daemon a previous host on this data directory left running (if the pidfile
/// names a live `lxcfs` serving our mount point) and lazily unmounts what is left.
fn recover(mountpoint: &Path, pidfile: &Path) {
    if let Some(pid) = fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let ours = args.first().is_some_and(|a| a.ends_with(PROGRAM.as_bytes()))
            && args.contains(&mountpoint.as_os_str().as_encoded_bytes());
        if ours {
            tracing::info!(pid, "stopping the lxcfs a previous server left on {}", mountpoint.display());
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // Not our child: wait until it is gone (or a zombie its reaper will collect).
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline && is_running(pid) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = fs::remove_file(pidfile);
    }
    unmount_all(mountpoint);
}

fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which ends at the last ')'.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Lazily unmounts everything stacked on `mountpoint` (`EINVAL` once nothing is mounted).
fn unmount_all(mountpoint: &Path) {
    for _ in 0..8 {
        match umount2(mountpoint, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return,
            Err(e) => {
                tracing::warn!("unmounting {}: {e}", mountpoint.display());
                return;
            }
        }
    }
}
