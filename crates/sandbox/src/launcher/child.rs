//! The VM's first process, between `clone3` in the launcher and [`crate::init::main`].
//!
//! It waits for GO from the server (which meanwhile writes its id maps and attaches it to its
//! cgroups, see [`crate::launch`]), takes its descriptors and ids, and runs init. Until init
//! runs it performs only raw system calls on memory the launcher prepared before the clone.

use std::ffi::CString;
use std::mem::size_of;
use std::os::fd::RawFd;

use crate::init::CONTROL_FD;
use crate::launch::{EXIT_LAYER_OPEN, GO, LAYER_FDS};

/// What the child needs, prepared by the launcher before the clone.
pub(super) struct ChildPlan {
    pub control: RawFd,
    pub devnull: RawFd,
    /// Base, upper and work directories, opened by the child (see [`run`]).
    pub layers: [CString; 3],
    /// Root mode: the ids init takes inside the VM (its root), with no supplementary groups.
    pub ids: Option<(u32, u32)>,
    /// The base layer's descriptor arrives with GO (privileged mode: an idmapped view).
    pub base_with_go: bool,
    /// Where the launcher's command line lives, rewritten to say `agentvm vm-init`.
    pub cmdline: Option<CmdlineArea>,
}

/// The memory holding this process's command line (`/proc/self/cmdline` reads it).
#[derive(Clone, Copy)]
pub(super) struct CmdlineArea {
    start: usize,
    end: usize,
}

impl CmdlineArea {
    /// Fields 48 and 49 of `/proc/self/stat` (`arg_start`, `arg_end`).
    pub fn of_this_process() -> Option<CmdlineArea> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace().skip(48 - 3);
        let start = fields.next()?.parse().ok()?;
        let end = fields.next()?.parse().ok()?;
        (end > start).then_some(CmdlineArea { start, end })
    }
}

/// What PID 1 of every VM shows as its command line, as when init was exec'd.
const INIT_CMDLINE: &[u8] = b"agentvm\0vm-init\0";

/// Runs in the cloned child. Only raw system calls until init; exits with a distinct code
/// ([`crate::launch::describe_early_exit`]) at each failure.
///
/// # Safety
/// Must only be called in the child of the launcher's `clone3`.
pub(super) unsafe fn run(plan: &ChildPlan) -> ! {
    // SAFETY: the caller guarantees we are the child of `clone3` (see `# Safety`), a copy of the
    // single-threaded launcher; only raw system calls run on `plan`, our own copy.
    unsafe {
        let received = match receive_go(plan.control) {
            Some(fd) => fd,
            None => libc::_exit(101),
        };
        if plan.base_with_go && received < 0 {
            libc::_exit(EXIT_LAYER_OPEN);
        }
        // Park the received descriptor above the numbers we are about to fill.
        let base = if received >= 0 {
            let high = libc::fcntl(received, libc::F_DUPFD_CLOEXEC, 10);
            libc::close(received);
            if high < 0 {
                libc::_exit(102);
            }
            high
        } else {
            -1
        };
        if libc::dup2(plan.devnull, 0) < 0
            || libc::dup2(plan.devnull, 1) < 0
            || libc::dup2(plan.devnull, 2) < 0
            || libc::dup2(plan.control, CONTROL_FD) < 0
        {
            libc::_exit(102);
        }
        // Open the layer directories now: we are in the VM's mount namespace (overlayfs only
        // accepts layers from the mounter's own namespace) and our file-system ids are still host
        // root (or the user, rootless), so root-owned 0700 directories on the way to the data
        // directory can be traversed as their owner. In privileged mode the base arrived as an
        // idmapped view.
        for (i, (path, target)) in plan.layers.iter().zip(LAYER_FDS).enumerate() {
            let fd =
                if i == 0 && base >= 0 { base } else { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) };
            if fd < 0 {
                libc::_exit(EXIT_LAYER_OPEN);
            }
            if fd != target && (libc::dup2(fd, target) < 0 || libc::close(fd) < 0) {
                libc::_exit(EXIT_LAYER_OPEN);
            }
        }
        // Init starts with exactly: stdin/stdout/stderr on /dev/null, the control socket and the
        // three layers. Nothing of the launcher's (or the server's) reaches the VM.
        let first_other = (LAYER_FDS[2] + 1) as libc::c_uint;
        if libc::syscall(libc::SYS_close_range, first_other, libc::c_uint::MAX, 0) != 0 {
            libc::_exit(102);
        }
        if let Some((uid, gid)) = plan.ids {
            if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
                libc::_exit(103);
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                libc::_exit(104);
            }
        }
        // Taking ids made us non-dumpable (an exec used to reset that), which would make our
        // /proc files, and those of the programs we fork until they exec, belong to host root:
        // they could not even raise their own `oom_score_adj`. Our memory still belongs to the
        // host's user namespace, so nothing in the VM can trace or read it either way.
        if libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) != 0 {
            libc::_exit(104);
        }
        if let Some(area) = plan.cmdline {
            // Our own (copy-on-write) copy of the launcher's argument strings, on our stack.
            let len = area.end - area.start;
            if len >= INIT_CMDLINE.len() {
                let dst = area.start as *mut u8;
                std::ptr::copy_nonoverlapping(INIT_CMDLINE.as_ptr(), dst, INIT_CMDLINE.len());
                std::ptr::write_bytes(dst.add(INIT_CMDLINE.len()), 0, len - INIT_CMDLINE.len());
            }
        }
    }
    crate::init::main()
}

/// Waits for GO on the control socket. Returns the descriptor that came with it (-1 if none),
/// or `None` when the host went away or sent something else.
///
/// # Safety
/// Raw system calls on stack memory only.
unsafe fn receive_go(control: RawFd) -> Option<RawFd> {
    // SAFETY: raw system calls on this stack frame's buffers (`byte`, `iov`, `control_buf`, `msg`),
    // which outlive the calls; the cmsg pointer comes from CMSG_FIRSTHDR over `msg` and is
    // checked for null and for an SCM_RIGHTS header before its one descriptor is copied out.
    unsafe {
        let mut byte = 0u8;
        let mut iov = libc::iovec { iov_base: &mut byte as *mut u8 as *mut libc::c_void, iov_len: 1 };
        // Room for one SCM_RIGHTS message with one descriptor, aligned for cmsghdr.
        let mut control_buf = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control_buf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = size_of_val(&control_buf) as _;
        let n = loop {
            let n = libc::recvmsg(control, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break n;
        };
        if n != 1 || byte != GO {
            return None;
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != libc::SOL_SOCKET || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Some(-1);
        }
        let mut fd: RawFd = -1;
        std::ptr::copy_nonoverlapping(libc::CMSG_DATA(cmsg), &mut fd as *mut RawFd as *mut u8, size_of::<RawFd>());
        Some(fd)
    }
}
