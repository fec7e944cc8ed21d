//! Starting a VM's init: `clone3` into new namespaces, map ids, join cgroups, exec init.
//!
//! Sequence (host side on the left, the new process on the right):
//!
//! ```text
//! socketpair(SEQPACKET)
//! clone3(NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS|PIDFD) ──► child: read(control) ... waits
//! write uid_map / gid_map (setgroups "deny" when rootless)
//! attach the child to the VM's cgroups
//! send GO ───────────────────────────────────────────────────► setresuid/gid to init's ids,
//!                                                               raise ambient caps (rootless),
//!                                                               execve(init program, "vm-init")
//! send InitConfig ───────────────────────────────────────────► init builds the root fs, then
//! ◄──────────────────────────────────────────────────────────── Ready (or SetupFailed)
//! ```
//!
//! The cgroup namespace is entered by init itself *after* the attach, so that the VM's cgroup
//! is the root of its cgroup namespace.
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
}

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
    // SAFETY: clone3 without CLONE_VM behaves like fork(): the child gets a copy-on-write copy
    // of our memory and returns 0 on its own copy of this stack. It then only runs
    // `child_after_clone`, which performs raw system calls on `plan` and never returns.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, &clone_args as *const CloneArgs, size_of::<CloneArgs>()) };
    if ret == 0 {
        // SAFETY: we are the freshly cloned child; see above.
        unsafe { child_after_clone(&plan) }
    }
    if ret < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("clone3 into new namespaces failed: {err}")));
    }
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
    protocol::send_datagram(control.as_fd(), &[GO], &[]).map_err(io::Error::from)?;
    for datagram in protocol::encode(spec.config)? {
        protocol::send_datagram(control.as_fd(), &datagram, &[]).map_err(io::Error::from)?;
    }
    Ok(())
}

/// Runs in the cloned child. Only raw system calls; exits with a distinct code at each failure.
///
/// # Safety
/// Must only be called in the child of `clone3`, before `execve`.
unsafe fn child_after_clone(plan: &ChildPlan) -> ! {
    let mut byte = 0u8;
    if libc::read(plan.control, &mut byte as *mut u8 as *mut libc::c_void, 1) != 1 || byte != GO {
        libc::_exit(101);
    }
    if libc::dup2(plan.devnull, 0) < 0 || libc::dup2(plan.devnull, 1) < 0 || libc::dup2(plan.control, CONTROL_FD) < 0 {
        libc::_exit(102);
    }
    // Open the layer directories now: we are in the VM's mount namespace (overlayfs only accepts
    // layers from the mounter's own namespace) and still host uid 0, so root-owned 0700
    // directories on the way to the data directory can be traversed as their owner.
    for (path, target) in plan.layers.iter().zip(LAYER_FDS) {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
        if fd < 0 {
            libc::_exit(EXIT_LAYER_OPEN);
        }
        if fd != target && (libc::dup2(fd, target) < 0 || libc::close(fd) < 0) {
            libc::_exit(EXIT_LAYER_OPEN);
        }
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
        plan.program,
        plan.empty_path,
        plan.argv.as_ptr(),
        plan.envp.as_ptr(),
        libc::AT_EMPTY_PATH,
    );
    libc::_exit(106);
}

/// Rootless mode: init is not uid 0 in its namespace, so `execve` would drop the capabilities
/// the new user namespace gave us. Ambient capabilities survive `execve`; raise all we hold.
///
/// # Safety
/// Raw system calls only; callable between clone and exec.
unsafe fn raise_ambient_capabilities(last: u32) -> Result<(), ()> {
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
