//! The launcher process's loop: read a [`CloneRequest`], clone, answer.

use std::ffi::CString;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::child::{self, ChildPlan};
use super::{CloneReply, CloneRequest};
use crate::protocol::{self, Received};

/// `struct clone_args` from `<linux/sched.h>` (the libc crate does not export it).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Entry point of `agentvm vm-launcher`: the server's socket is stdin. Never returns.
pub fn main() -> ! {
    match serve() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("agentvm vm-launcher: {e}");
            std::process::exit(1)
        }
    }
}

fn serve() -> io::Result<()> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let socket = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 10) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    let devnull = {
        let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
        // SAFETY: dup2 onto descriptor 0, which we own (our stdin, already duplicated above).
        if unsafe { libc::dup2(file.as_raw_fd(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        dup_above(file.as_raw_fd(), 10)?
    };
    // SAFETY: plain system calls, no memory passed.
    let is_root = unsafe { libc::geteuid() } == 0;
    // Our supplementary groups would otherwise reach every VM's first process.
    // SAFETY: setgroups with an empty list.
    if is_root && unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cmdline = child::CmdlineArea::of_this_process();
    let mut receiver = protocol::Receiver::new();
    loop {
        let (request, fds) = match receiver.receive::<CloneRequest>(socket.as_fd()) {
            Ok(Received::Message(request, fds)) => (request, fds),
            Ok(Received::Partial) => continue,
            Ok(Received::Closed) => {
                leave_prepared_cgroups();
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let reply = match clone_one(&request, &fds, devnull.as_raw_fd(), cmdline) {
            Ok(pid) => CloneReply::Cloned { pid },
            Err(e) => CloneReply::Failed { errno: e.raw_os_error().unwrap_or(libc::EIO), message: e.to_string() },
        };
        drop(fds);
        for datagram in protocol::encode(&reply)? {
            protocol::send_datagram(socket.as_fd(), &datagram, &[])?;
        }
    }
}

/// The server is gone: if we wait in cgroups made for its next VM, leave and remove them (a
/// server that exits cleanly does this itself; one that was killed cannot).
fn leave_prepared_cgroups() {
    let pid = std::process::id().to_string();
    for dir in crate::cgroup::CgroupHost::detect().own_dirs() {
        let ours = dir.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("agentvm-"));
        if let (true, Some(parent)) = (ours, dir.parent()) {
            if std::fs::write(parent.join("cgroup.procs"), &pid).is_ok() {
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }
}

/// Clones the VM's first process; returns its host pid.
fn clone_one(
    request: &CloneRequest,
    fds: &[OwnedFd],
    devnull: RawFd,
    cmdline: Option<child::CmdlineArea>,
) -> io::Result<i32> {
    let [control] = fds else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "a clone request carries exactly one descriptor"));
    };
    let layer = |p: &std::path::PathBuf| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "layer path contains a NUL byte"))
    };
    // Prepared before the clone: the child only performs raw system calls on it until it runs init.
    let plan = ChildPlan {
        layers: [layer(&request.layers[0])?, layer(&request.layers[1])?, layer(&request.layers[2])?],
        control: control.as_raw_fd(),
        devnull,
        ids: request.init_ids,
        base_with_go: request.base_with_go,
        cmdline,
    };
    let clone_args = CloneArgs {
        flags: (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_PARENT) as u64,
        // Ignored with CLONE_PARENT: the server, the VM's parent, gets our own exit signal.
        exit_signal: 0,
        ..CloneArgs::default()
    };
    // The new user namespace is owned by our effective uid: in privileged mode the VM's own
    // range, so the kernel charges the VM's per-user budgets to the VM alone (see
    // `crate::launch`). The saved ids stay root so we can return; the file-system ids stay root
    // so the child can still open its layers under the root-owned 0700 data directory.
    if let Some((uid, gid)) = request.owner {
        become_owner(uid, gid)?;
    }
    // SAFETY: clone3 without CLONE_VM behaves like fork(); this process is single-threaded, so
    // the child's copy is consistent. The child only runs `child::run`, which never returns.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &clone_args as *const CloneArgs, size_of::<CloneArgs>()) };
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; see above.
        unsafe { child::run(&plan) }
    }
    let clone_error = (ret < 0).then(io::Error::last_os_error);
    if request.owner.is_some() {
        if let Err(e) = become_root() {
            // Cannot serve further requests with the wrong ids: end, the server starts another.
            eprintln!("agentvm vm-launcher: returning to root: {e}");
            std::process::exit(1);
        }
    }
    if let Some(err) = clone_error {
        return Err(io::Error::new(err.kind(), format!("clone3 into new namespaces failed: {err}")));
    }
    Ok(ret as i32)
}

/// Real and effective ids become the namespace owner's; saved and file-system ids stay root.
fn become_owner(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain system calls, no memory passed.
    unsafe {
        if libc::syscall(libc::SYS_setresgid, gid, gid, 0) != 0 || libc::syscall(libc::SYS_setresuid, uid, uid, 0) != 0
        {
            let err = io::Error::last_os_error();
            let _ = become_root();
            return Err(io::Error::new(err.kind(), format!("taking uid {uid} to own the VM's namespaces: {err}")));
        }
        libc::syscall(libc::SYS_setfsgid, 0);
        libc::syscall(libc::SYS_setfsuid, 0);
    }
    Ok(())
}

/// Back to root after [`become_owner`] (allowed: the saved ids stayed root).
fn become_root() -> io::Result<()> {
    // SAFETY: plain system calls, no memory passed.
    unsafe {
        if libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0 || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn dup_above(fd: RawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
