//! Starting a VM's init: `clone3` into new namespaces, map ids, join cgroups, exec init.
//!
//! Sequence (host side on the left, the new process on the right):
//!
//! ```text
//! socketpair(SEQPACKET)
//! clone3(NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS|PIDFD) ──► child: recvmsg(control) ... waits
//! write uid_map / gid_map (setgroups "deny" when rootless)
//! attach the child to the VM's cgroups
//! idmapped view of the base layer (privileged)
//! send GO (+ the base layer's descriptor) ───────────────────► setresuid/gid to init's ids,
//!                                                               raise ambient caps (rootless),
//!                                                               keep only descriptors 0..=7,
//!                                                               execve(init program, "vm-init")
//! send InitConfig ───────────────────────────────────────────► init builds the root fs, then
//! ◄──────────────────────────────────────────────────────────── Ready (or SetupFailed)
//! ```
//!
//! The cgroup namespace is entered by init itself *after* the attach, so that the VM's cgroup
//! is the root of its cgroup namespace.
//!
//! **Who owns the user namespace.** The kernel charges per-user budgets (inotify instances,
//! namespaces of each kind, ...) of everything inside a user namespace to the namespace's
//! *owner* at the parent level. A namespace created by the server would make host root the owner
//! of every VM, so one VM could exhaust budgets shared by all VMs and the host. In privileged
//! mode the namespace is therefore created by a short-lived intermediate process that first
//! becomes the VM's own host root uid (the start of its private range): the VM's budgets are
//! charged to that uid alone. The intermediate shares the server's memory and descriptor table
//! (`CLONE_VM | CLONE_VFORK | CLONE_FILES`, like `posix_spawn`), and clones the VM's first
//! process with `CLONE_PARENT`, so the VM is the server's child exactly as in rootless mode.
//!
//! Why raw `clone3` rather than `std::process::Command` or `nix::sched::clone`: the child must be
//! PID 1 of a new PID namespace (so `unshare` in a `pre_exec` hook is too late), and we need a
//! pidfd for race-free waiting and signalling. Between `clone3` and `execve` the child runs in a
//! copy of a possibly multi-threaded process, so it only performs raw system calls on memory
//! prepared before the clone: no allocation, no locks, no glibc wrappers that consult thread
//! state (glibc's `setresuid` would try to synchronise the parent's other threads).

use std::ffi::CString;
use std::fs;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::cgroup::VmCgroup;
use crate::config::InitConfig;
use crate::idmap::IdMapping;
use crate::idmapped::idmapped_view;
use crate::init::{CONTROL_FD, SUBCOMMAND};
use crate::protocol;

/// Everything needed to start one VM.
pub struct LaunchSpec<'a> {
    /// The agentvm binary (it runs `vm-init` as PID 1 of the VM).
    pub init_program: &'a Path,
    pub ids: IdMapping,
    pub cgroup: Option<&'a VmCgroup>,
    pub config: &'a InitConfig,
}

/// A started init: the VM lives as long as this process.
#[derive(Debug)]
pub struct InitProcess {
    /// Host pid of the VM's PID 1.
    pub host_pid: i32,
    pub pidfd: OwnedFd,
}

/// What [`launch`] returns.
#[derive(Debug)]
pub struct Launched {
    pub init: InitProcess,
    /// Host end of the control socket (blocking mode). Init ends the VM when it closes.
    pub control: OwnedFd,
}

/// The byte that releases the child once ids and cgroups are set.
const GO: u8 = 0x47;

/// Descriptors at which init finds the base, upper and work directories (`O_PATH`).
pub const LAYER_FDS: [RawFd; 3] = [4, 5, 6];

/// Exit code of the child when a layer directory cannot be opened.
const EXIT_LAYER_OPEN: i32 = 107;

/// Explains an exit of the VM's first process before init reported `Ready`.
pub fn describe_early_exit(status: i32) -> String {
    match status {
        101 => "the VM process lost its host before start".into(),
        102 => "the VM process could not set up its descriptors".into(),
        103 | 104 => "the VM process could not take its user and group ids (check the uid/gid maps)".into(),
        105 => "the VM process could not keep its capabilities (rootless mode)".into(),
        106 => "the init program could not be executed (check the path to the agentvm binary)".into(),
        EXIT_LAYER_OPEN => "the VM's layer directories (base, upper, work) could not be opened".into(),
        other => format!("init exited with status {other} before the VM was ready"),
    }
}

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

/// Everything the child needs between `clone3` and `execve`, prepared in advance so the child
/// never allocates.
struct ChildPlan {
    control: RawFd,
    devnull: RawFd,
    /// `O_PATH` descriptor of the init binary, executed with `execveat(AT_EMPTY_PATH)`.
    program: RawFd,
    empty_path: *const libc::c_char,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Base, upper and work directories, opened by the child (see [`child_after_clone`]).
    layers: [CString; 3],
    clear_groups: bool,
    ids: Option<(u32, u32)>,
    raise_ambient_up_to: Option<u32>,
    /// The base layer's descriptor arrives with GO (privileged mode: an idmapped view).
    base_with_go: bool,
}

/// Descriptor at which the launched child keeps the init program until `execveat`.
const PROGRAM_FD: RawFd = 7;

/// Starts init in new namespaces and hands it its configuration. Returns once init has been
/// released; the caller reads [`protocol::Event::Ready`] from `control`.
pub fn launch(spec: &LaunchSpec<'_>) -> io::Result<Launched> {
    let (host_end, child_end) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    // Keep the child's descriptors away from 0..=6, the numbers it dup2()s onto.
    let child_end = dup_above(child_end.as_raw_fd(), 10)?;
    let devnull = dup_above(fs::OpenOptions::new().read(true).write(true).open("/dev/null")?.as_raw_fd(), 10)?;

    // Executed through a descriptor: after it takes init's ids the child may not be allowed to
    // traverse the directories leading to the binary (a 0700 checkout, for example).
    let program = nix::fcntl::open(
        spec.init_program,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        io::Error::new(io::Error::from(e).kind(), format!("init program {}: {e}", spec.init_program.display()))
    })?;
    let program = dup_above(program.as_raw_fd(), 10)?;
    let empty_path = CString::default();
    // These strings must outlive the clone: the child's argv/envp point into them.
    let arg_strings = [CString::new("agentvm").unwrap(), CString::new(SUBCOMMAND).unwrap()];
    let env_strings = [CString::new("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").unwrap()];
    let mut argv: Vec<*const libc::c_char> = arg_strings.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env_strings.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());

    let rootfs = &spec.config.rootfs;
    let layer_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "layer path contains a NUL byte"))
    };
    let plan = ChildPlan {
        layers: [layer_path(&rootfs.base)?, layer_path(&rootfs.upper)?, layer_path(&rootfs.work)?],
        control: child_end.as_raw_fd(),
        devnull: devnull.as_raw_fd(),
        program: program.as_raw_fd(),
        empty_path: empty_path.as_ptr(),
        argv,
        envp,
        clear_groups: spec.ids.init_is_root(),
        ids: spec.ids.init_is_root().then(|| spec.ids.init_ids()),
        raise_ambient_up_to: (!spec.ids.init_is_root()).then(last_capability),
        base_with_go: owner_of_namespace(spec.ids).is_some(),
    };

    let mut pidfd: RawFd = -1;
    let clone_args = CloneArgs {
        flags: (libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    let ret = match owner_of_namespace(spec.ids) {
        Some(owner) => clone_as_owner(&plan, clone_args, owner)?,
        None => {
            // SAFETY: clone3 without CLONE_VM behaves like fork(): the child gets a copy-on-write
            // copy of our memory and returns 0 on its own copy of this stack. It then only runs
            // `child_after_clone`, which performs raw system calls on `plan` and never returns.
            let ret =
                unsafe { libc::syscall(libc::SYS_clone3, &clone_args as *const CloneArgs, size_of::<CloneArgs>()) };
            if ret == 0 {
                // SAFETY: we are the freshly cloned child; see above.
                unsafe { child_after_clone(&plan) }
            }
            if ret < 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(err.kind(), format!("clone3 into new namespaces failed: {err}")));
            }
            ret
        }
    };
    drop(child_end);
    drop(devnull);
    drop(plan);
    drop(arg_strings);
    drop(env_strings);
    drop(program);
    let host_pid = ret as i32;
    // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let init = InitProcess { host_pid, pidfd };

    if let Err(e) = configure_child(spec, &init, &host_end) {
        init.kill();
        let _ = init.wait_blocking();
        return Err(e);
    }
    Ok(Launched { init, control: host_end })
}

/// Host side of the handshake: id maps, cgroups, release, configuration.
fn configure_child(spec: &LaunchSpec<'_>, init: &InitProcess, control: &OwnedFd) -> io::Result<()> {
    let proc_dir = format!("/proc/{}", init.host_pid);
    let write = |file: &str, content: &str| {
        fs::write(format!("{proc_dir}/{file}"), content)
            .map_err(|e| io::Error::new(e.kind(), format!("writing {file} of the new VM: {e}")))
    };
    if spec.ids.deny_setgroups() {
        write("setgroups", "deny")?;
    }
    write("uid_map", &spec.ids.uid_map())?;
    write("gid_map", &spec.ids.gid_map())?;
    if let Some(cgroup) = spec.cgroup {
        cgroup.attach(init.host_pid)?;
    }
    let base = match owner_of_namespace(spec.ids) {
        Some(_) => Some(idmapped_view(&spec.config.rootfs.base, init.host_pid)?),
        None => None,
    };
    let attached: Vec<RawFd> = base.iter().map(|fd| fd.as_raw_fd()).collect();
    protocol::send_datagram(control.as_fd(), &[GO], &attached).map_err(io::Error::from)?;
    drop(base);
    // The host's LXCFS files travel as detached mounts (see `crate::proc_files`).
    let proc_files = match &spec.config.confinement.proc_view.files_dir {
        Some(dir) => crate::proc_files::detached_clones(dir)?,
        None => Vec::new(),
    };
    // So do the binds from the data directory, as read-only idmapped views (privileged mode;
    // see `RootfsSpec::data_binds`).
    let data_views = match owner_of_namespace(spec.ids) {
        Some(_) => spec.config.rootfs.data_binds.iter().map(|b| idmapped_view(&b.source, init.host_pid)).collect(),
        None => Ok(Vec::new()),
    }?;
    let attached: Vec<RawFd> = proc_files.iter().chain(&data_views).map(|fd| fd.as_raw_fd()).collect();
    for (i, datagram) in protocol::encode(spec.config)?.iter().enumerate() {
        let fds = if i == 0 { attached.as_slice() } else { &[] };
        protocol::send_datagram(control.as_fd(), datagram, fds).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Runs in the cloned child. Only raw system calls; exits with a distinct code at each failure.
///
/// # Safety
/// Must only be called in the child of `clone3`, before `execve`.
unsafe fn child_after_clone(plan: &ChildPlan) -> ! {
    // SAFETY: the caller guarantees we are the child of `clone3`, before `execve` (see `# Safety`);
    // only raw system calls run here, on `plan`, which the parent keeps alive until we exec
    // or exit (it waits for us under CLONE_VFORK or on the control socket).
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
        // Open the layer directories now: we are in the VM's mount namespace (overlayfs only accepts
        // layers from the mounter's own namespace) and our file-system ids are still host root (or
        // the user, rootless), so root-owned 0700 directories on the way to the data directory can
        // be traversed as their owner. In privileged mode the base arrived as an idmapped view.
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
        // Init starts with exactly: stdin/stdout/stderr on /dev/null, the control socket, the three
        // layers and (until exec) the program. Nothing of the server's leaks into the VM.
        if libc::dup3(plan.program, PROGRAM_FD, libc::O_CLOEXEC) < 0
            || libc::syscall(libc::SYS_close_range, (PROGRAM_FD + 1) as libc::c_uint, libc::c_uint::MAX, 0) != 0
        {
            libc::_exit(102);
        }
        if plan.clear_groups && libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0 {
            libc::_exit(103);
        }
        if let Some((uid, gid)) = plan.ids {
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
            {
                libc::_exit(104);
            }
        }
        if let Some(last) = plan.raise_ambient_up_to {
            if raise_ambient_capabilities(last).is_err() {
                libc::_exit(105);
            }
        }
        libc::syscall(
            libc::SYS_execveat,
            PROGRAM_FD,
            plan.empty_path,
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(106);
    }
}

/// Waits for GO on the control socket. Returns the descriptor that came with it (-1 if none),
/// or `None` when the host went away or sent something else.
///
/// # Safety
/// Raw system calls on stack memory only; callable between clone and exec.
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

/// The host uid/gid that must own the VM's user namespace, when it is not the server itself:
/// in privileged mode, the first id of the VM's own range.
fn owner_of_namespace(ids: IdMapping) -> Option<(u32, u32)> {
    match ids {
        IdMapping::Privileged { base, .. } => Some((base, base)),
        IdMapping::Rootless { .. } => None,
    }
}

/// What the intermediate process reports back through the memory it shares with us.
struct Intermediate<'a> {
    plan: &'a ChildPlan,
    clone_args: CloneArgs,
    owner: (u32, u32),
    /// Host pid of the VM's first process, or a negative errno.
    result: i64,
}

/// Clones the VM's first process from an intermediate that first takes the `owner` ids, so the
/// new user namespace is owned by them (see the module documentation). Returns its host pid.
fn clone_as_owner(plan: &ChildPlan, mut clone_args: CloneArgs, owner: (u32, u32)) -> io::Result<i64> {
    // The VM is our child, not the intermediate's: its exit signal is the intermediate's
    // (SIGCHLD, below), and we wait for it through its pidfd.
    clone_args.flags |= libc::CLONE_PARENT as u64;
    clone_args.exit_signal = 0;
    let mut job = Intermediate { plan, clone_args, owner, result: -(libc::EINVAL as i64) };
    let mut stack = vec![0u8; INTERMEDIATE_STACK];
    // The stack grows down on every architecture we support; keep it 16-byte aligned.
    let top = ((stack.as_mut_ptr() as usize + stack.len()) & !15) as *mut libc::c_void;
    // SAFETY: glibc's clone() runs `intermediate_main` on `stack`, sharing our memory and
    // descriptor table; CLONE_VFORK suspends this thread until it has exited, so `job` and
    // `stack` outlive it and nothing else touches `job` meanwhile.
    let pid = unsafe {
        libc::clone(
            intermediate_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD,
            &mut job as *mut Intermediate<'_> as *mut libc::c_void,
        )
    };
    if pid < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("starting the VM launcher: {err}")));
    }
    let mut status = 0;
    // SAFETY: reaps our own child, which has already exited (CLONE_VFORK).
    while unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } < 0 {
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    drop(stack);
    if job.result < 0 {
        let err = io::Error::from_raw_os_error((-job.result) as i32);
        return Err(io::Error::new(err.kind(), format!("clone3 into new namespaces as uid {}: {err}", owner.0)));
    }
    Ok(job.result)
}

const INTERMEDIATE_STACK: usize = 64 * 1024;

/// The intermediate: take the owner's ids, clone the VM's first process, report, exit.
extern "C" fn intermediate_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Intermediate` that `clone_as_owner` keeps alive until we exit; we
    // share its memory (CLONE_VM) and it is suspended (CLONE_VFORK). Only raw system calls run
    // here: we share the parent's thread-local state and allocator.
    unsafe {
        let job = &mut *(arg as *mut Intermediate<'_>);
        let (uid, gid) = job.owner;
        // Real and effective ids become the owner's (the new namespace's owner is the effective
        // uid); the saved ids stay host root, which lets the file-system ids stay root too: the
        // VM's first process must still traverse the root-owned 0700 data directory to open its
        // layers, as their owner. It holds no capability outside its new namespace, and host
        // root is not mapped inside it, so it can never become host root again; it takes the
        // VM's ids (all of them) before it executes init.
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, gid, gid, 0) != 0
            || libc::syscall(libc::SYS_setresuid, uid, uid, 0) != 0
        {
            job.result = -(*libc::__errno_location() as i64);
            return 0;
        }
        libc::syscall(libc::SYS_setfsgid, 0);
        libc::syscall(libc::SYS_setfsuid, 0);
        let ret = libc::syscall(libc::SYS_clone3, &job.clone_args as *const CloneArgs, size_of::<CloneArgs>());
        if ret == 0 {
            // The VM's first process: a copy of this one (no CLONE_VM).
            child_after_clone(job.plan)
        }
        job.result = if ret < 0 { -(*libc::__errno_location() as i64) } else { ret };
        0
    }
}

/// Rootless mode: init is not uid 0 in its namespace, so `execve` would drop the capabilities
/// the new user namespace gave us. Ambient capabilities survive `execve`; raise all we hold.
///
/// # Safety
/// Raw system calls only; callable between clone and exec.
unsafe fn raise_ambient_capabilities(last: u32) -> Result<(), ()> {
    // SAFETY: raw system calls on this stack frame's `header` and `data`, which outlive them.
    unsafe {
        let mut header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        let mut data = [CapData::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) != 0 {
            return Err(());
        }
        for d in &mut data {
            d.inheritable = d.permitted;
        }
        if libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) != 0 {
            return Err(());
        }
        for cap in 0..=last {
            // Capabilities outside the bounding set cannot be raised; skipping them is correct.
            libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong, cap as libc::c_ulong, 0, 0);
        }
        Ok(())
    }
}

pub(crate) const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
pub(crate) struct CapHeader {
    pub version: u32,
    pub pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

fn last_capability() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(40)
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

impl InitProcess {
    /// SIGKILL to init, which ends every process of the VM (the kernel tears the PID namespace
    /// down with it).
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on our own pidfd; no memory is passed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<()>(),
                0,
            );
        }
    }

    /// Reaps init if it has exited; returns its wait status.
    pub fn try_wait(&self) -> io::Result<Option<i32>> {
        self.wait_with(libc::WEXITED | libc::WNOHANG)
    }

    /// Blocks until init has exited and reaps it.
    pub fn wait_blocking(&self) -> io::Result<Option<i32>> {
        self.wait_with(libc::WEXITED)
    }

    fn wait_with(&self, options: libc::c_int) -> io::Result<Option<i32>> {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: P_PIDFD (3) waits on our own pidfd and writes into `info`.
            let r =
                unsafe { libc::waitid(3 as libc::idtype_t, self.pidfd.as_raw_fd() as libc::id_t, &mut info, options) };
            if r == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Ok(Some(0)),
                _ => return Err(err),
            }
        }
        // SAFETY: after a successful waitid, si_pid/si_status are valid for CLD_* codes.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        Ok((pid != 0).then_some(status))
    }
}
