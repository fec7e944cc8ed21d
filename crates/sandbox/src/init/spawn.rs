//! Starting one program inside the VM: fork, set up the child, exec.
//!
//! The child becomes the leader of a new session (so a group signal reaches everything it
//! starts), gets the descriptors the host sent as stdin/stdout/stderr (or a terminal as its
//! controlling TTY), resets the signal state init changed, raises its `oom_score_adj` (so the OOM
//! killer picks it before init), changes to its working directory, drops to the VM user and every
//! capability (the bounding set is already empty, see [`super::confine`]), sets `no_new_privs`
//! (inherited from init already; kept explicit), and execs — looking the program
//! up in the `PATH` of its own environment like `execvp`. Failures before exec travel back to init
//! through a close-on-exec pipe, so the host gets an error rather than a process that exits 127.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::wait::WaitStatus;
use nix::unistd::{fork, ForkResult};

use crate::config::InitConfig;
use crate::launch::{CapData, CapHeader, LINUX_CAPABILITY_VERSION_3};
use crate::protocol::{SpawnError, SpawnRequest, Stdio};

/// `PATH` used when the request's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Who commands run as.
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Root mode: switch ids (which drops the permitted and effective capabilities), then clear
    /// the rest. Rootless: the ids are already right; drop the capabilities init holds.
    switch_ids: bool,
    /// What the child writes to `/proc/self/oom_score_adj`, prepared before the fork.
    oom_score_adj: Vec<u8>,
}

impl Identity {
    pub fn from_config(config: &InitConfig) -> Identity {
        Identity {
            uid: config.user.uid,
            gid: config.user.gid,
            switch_ids: config.init_is_root,
            oom_score_adj: config.confinement.command_oom_score_adj.to_string().into_bytes(),
        }
    }
}

/// Where in the child a failure happened; reported with the errno.
#[derive(Clone, Copy)]
#[repr(u32)]
enum Stage {
    Stdio = 1,
    Cwd = 2,
    Identity = 3,
    Exec = 4,
}

/// Exit code in agentvm's convention: the code for a normal exit, 128+signal for a signal death.
/// `None` for statuses that are not terminations (stopped, continued).
pub fn exit_code_of(status: &WaitStatus) -> Option<i32> {
    match *status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Forks and execs `request`; returns the new pid (as seen in the VM).
pub fn spawn(request: &SpawnRequest, fds: Vec<OwnedFd>, identity: &Identity) -> Result<i32, SpawnError> {
    let expected = match request.stdio {
        Stdio::Pipes => 3,
        Stdio::Terminal { .. } => 1,
    };
    if fds.len() != expected {
        return Err(SpawnError::StdioCount { expected, got: fds.len() });
    }
    let Some(program) = request.argv.first() else {
        return Err(SpawnError::EmptyCommand);
    };
    if program.is_empty() {
        return Err(SpawnError::EmptyCommand);
    }
    let to_c = |s: &str, what: &str| CString::new(s).map_err(|_| SpawnError::NulByte { what: what.to_string() });
    let argv: Vec<CString> = request.argv.iter().map(|a| to_c(a, "an argument")).collect::<Result<_, _>>()?;
    let env: Vec<CString> = request.env.iter().map(|e| to_c(e, "an environment variable")).collect::<Result<_, _>>()?;
    let cwd = to_c(&request.cwd, "the working directory")?;
    let candidates: Vec<CString> = if program.contains('/') {
        vec![argv[0].clone()]
    } else {
        let path = request.env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        path.split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .filter_map(|dir| CString::new(format!("{dir}/{program}")).ok())
            .collect()
    };
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());

    let (report_read, report_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Pipe { errno: e as i32 })?;
    // SAFETY: init is single-threaded, so the child may run ordinary code until exec.
    match unsafe { fork() } {
        Err(e) => Err(SpawnError::Fork { errno: e as i32 }),
        Ok(ForkResult::Child) => {
            drop(report_read);
            let (stage, errno) = child(request.stdio, &fds, &cwd, identity, &candidates, &argv_ptrs, &env_ptrs);
            let mut report = [0u8; 8];
            report[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
            report[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            // SAFETY: writing 8 bytes from a local buffer, then leaving without running destructors.
            unsafe {
                libc::write(report_write.as_raw_fd(), report.as_ptr() as *const libc::c_void, report.len());
                libc::_exit(127)
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(report_write);
            drop(fds);
            let mut report = [0u8; 8];
            let mut got = 0;
            while got < report.len() {
                match nix::unistd::read(&report_read, &mut report[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
            if got < report.len() {
                return Ok(child.as_raw());
            }
            // The child exits 127 and is reaped (untracked) by the main loop.
            let stage = u32::from_ne_bytes(report[..4].try_into().unwrap());
            let errno = Errno::from_raw(i32::from_ne_bytes(report[4..].try_into().unwrap()));
            Err(describe_failure(stage, errno, request))
        }
    }
}

fn describe_failure(stage: u32, errno: Errno, request: &SpawnRequest) -> SpawnError {
    let errno_raw = errno as i32;
    match stage {
        s if s == Stage::Cwd as u32 => SpawnError::Chdir { errno: errno_raw, cwd: request.cwd.clone() },
        s if s == Stage::Exec as u32 && errno == Errno::ENOENT => {
            SpawnError::NotFound { program: request.argv[0].clone() }
        }
        s if s == Stage::Exec as u32 => SpawnError::Exec { errno: errno_raw, program: request.argv[0].clone() },
        s if s == Stage::Identity as u32 => SpawnError::Identity { errno: errno_raw },
        _ => SpawnError::Stdio { errno: errno_raw },
    }
}

/// The child between fork and exec. Returns only on failure.
fn child(
    stdio: Stdio,
    fds: &[OwnedFd],
    cwd: &CString,
    identity: &Identity,
    candidates: &[CString],
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
) -> (Stage, Errno) {
    // SAFETY: every call below is a plain system call on descriptors and memory we own; this is
    // a single-threaded child that either execs or exits.
    unsafe {
        if libc::setsid() < 0 {
            return (Stage::Stdio, Errno::last());
        }
        let targets: &[(usize, i32)] = match stdio {
            Stdio::Pipes => &[(0, 0), (1, 1), (2, 2)],
            Stdio::Terminal { .. } => &[(0, 0), (0, 1), (0, 2)],
        };
        for &(index, target) in targets {
            if libc::dup2(fds[index].as_raw_fd(), target) < 0 {
                return (Stage::Stdio, Errno::last());
            }
        }
        if matches!(stdio, Stdio::Terminal { .. }) && libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
            return (Stage::Stdio, Errno::last());
        }
        // Everything else init has open (control socket, other processes' pipes) closes on exec.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            for fd in 3..1024 {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
        // Init blocks signals and ignores SIGPIPE (Rust's runtime does); programs expect defaults.
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        // Before the id switch: afterwards the process is not dumpable and its /proc files
        // belong to the VM's root. Raising the value needs no privilege.
        if raise_oom_score_adj(&identity.oom_score_adj).is_err() {
            return (Stage::Identity, Errno::last());
        }
        if libc::chdir(cwd.as_ptr()) != 0 {
            return (Stage::Cwd, Errno::last());
        }
        if identity.switch_ids {
            let gid = identity.gid;
            if libc::setgroups(1, &gid) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(identity.uid, identity.uid, identity.uid) != 0
            {
                return (Stage::Identity, Errno::last());
            }
        }
        // The id switch cleared the permitted, effective and ambient sets but not the
        // inheritable one; rootless init passes all of them down. Clear everything.
        if drop_all_capabilities().is_err() {
            return (Stage::Identity, Errno::last());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return (Stage::Identity, Errno::last());
        }

        let mut failure = Errno::ENOENT;
        let mut denied = false;
        for candidate in candidates {
            libc::execve(candidate.as_ptr(), argv.as_ptr(), env.as_ptr());
            match Errno::last() {
                // Keep looking, like execvp; remember a permission problem for the report.
                Errno::EACCES => denied = true,
                Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::ENAMETOOLONG => {}
                other => {
                    failure = other;
                    break;
                }
            }
        }
        if denied && failure == Errno::ENOENT {
            failure = Errno::EACCES;
        }
        (Stage::Exec, failure)
    }
}

/// Writes `value` to `/proc/self/oom_score_adj`.
///
/// # Safety
/// Plain system calls on memory prepared before the fork.
unsafe fn raise_oom_score_adj(value: &[u8]) -> Result<(), ()> {
    // SAFETY: the caller upholds this function's contract (see `# Safety`): plain system calls on
    // a static path and on `value`, which the caller's borrow keeps alive.
    unsafe {
        let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(());
        }
        let written = libc::write(fd, value.as_ptr() as *const libc::c_void, value.len());
        libc::close(fd);
        if written == value.len() as isize {
            Ok(())
        } else {
            Err(())
        }
    }
}

/// Clears the ambient, inheritable, permitted and effective capabilities.
///
/// # Safety
/// Plain system calls.
unsafe fn drop_all_capabilities() -> Result<(), ()> {
    // SAFETY: plain system calls on this stack frame's `header` and `data`, which outlive them.
    unsafe {
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(());
        }
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(());
        }
        Ok(())
    }
}
