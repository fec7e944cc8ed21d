//! Starting a VM's init: the launcher clones it into new namespaces, the server maps its ids,
//! joins it to its cgroups and hands it its configuration.
//!
//! Sequence (server on the left, the new process on the right):
//!
//! ```text
//! socketpair(SEQPACKET)
//! CloneRequest to the launcher ─────► clone3(NEWUSER|NEWNS|NEWPID|NEWNET|NEWIPC|NEWUTS|PARENT)
//!   (see crate::launcher)              in the launcher ───► child: recvmsg(control) ... waits
//! write uid_map / gid_map (setgroups "deny" when rootless)
//! attach the child to the VM's cgroups (unless it was born in them, see crate::launcher)
//! idmapped view of the base layer (privileged)
//! send GO (+ the base layer's descriptor) ───────────────────► opens its layers, keeps only
//!                                                               descriptors 0..=6, takes init's
//!                                                               ids, runs init (no execve)
//! send InitConfig ───────────────────────────────────────────► init builds the root fs, then
//! ◄──────────────────────────────────────────────────────────── Ready (or SetupFailed)
//! ```
//!
//! The cgroup namespace is entered by init itself *after* the attach, so that the VM's cgroup
//! is the root of its cgroup namespace.
//!
//! **Who owns the user namespace.** The kernel charges per-user budgets (inotify instances,
//! namespaces of each kind, ...) of everything inside a user namespace to the namespace's
//! *owner* at the parent level. A namespace created as host root would make host root the owner
//! of every VM, so one VM could exhaust budgets shared by all VMs and the host. In privileged
//! mode the launcher therefore clones the VM's first process with the VM's own host root uid
//! (the start of its private range) as its effective uid: the VM's budgets are charged to that
//! uid alone.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::cgroup::VmCgroup;
use crate::config::InitConfig;
use crate::idmap::IdMapping;
use crate::idmapped::idmapped_view;
use crate::launcher::{CgroupRequest, CloneRequest, Launcher};
use crate::protocol;

/// Everything needed to start one VM.
pub struct LaunchSpec<'a> {
    /// The host's launcher process (see [`crate::launcher`]).
    pub launcher: &'a Launcher,
    pub ids: IdMapping,
    /// The VM's cgroups and limits; `None`: none.
    pub cgroup: Option<CgroupRequest<'a>>,
    pub config: &'a InitConfig,
}

/// A started init: the VM lives as long as this process.
#[derive(Debug)]
pub struct InitProcess {
    /// Host pid of the VM's PID 1.
    pub host_pid: i32,
    /// Whether we reaped it: its pid may then belong to another process.
    reaped: std::sync::Mutex<bool>,
}

/// What [`launch`] returns.
#[derive(Debug)]
pub struct Launched {
    pub init: InitProcess,
    /// Host end of the control socket (blocking mode). Init ends the VM when it closes.
    pub control: OwnedFd,
    /// The VM's cgroups (removing them is the caller's job once the VM is gone).
    pub cgroup: Option<VmCgroup>,
}

/// The byte that releases the child once ids and cgroups are set.
pub(crate) const GO: u8 = 0x47;

/// Descriptors at which init finds the base, upper and work directories (`O_PATH`).
pub const LAYER_FDS: [RawFd; 3] = [4, 5, 6];

/// Exit code of the child when a layer directory cannot be opened.
pub(crate) const EXIT_LAYER_OPEN: i32 = 107;

/// The `PATH` init (and the launcher) start with.
pub(crate) const INIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Explains an exit of the VM's first process before init reported `Ready`.
pub fn describe_early_exit(status: i32) -> String {
    match status {
        101 => "the VM process lost its host before start".into(),
        102 => "the VM process could not set up its descriptors".into(),
        103 | 104 => "the VM process could not take its user and group ids (check the uid/gid maps)".into(),
        EXIT_LAYER_OPEN => "the VM's layer directories (base, upper, work) could not be opened".into(),
        other => format!("init exited with status {other} before the VM was ready"),
    }
}

/// Starts init in new namespaces and hands it its configuration. Returns once init has been
/// released; the caller reads [`protocol::Event::Ready`] from `control`.
pub fn launch(spec: &LaunchSpec<'_>) -> io::Result<Launched> {
    let (host_end, child_end) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    let rootfs = &spec.config.rootfs;
    let request = CloneRequest {
        layers: [rootfs.base.clone(), rootfs.upper.clone(), rootfs.work.clone()],
        owner: owner_of_namespace(spec.ids),
        init_ids: spec.ids.init_is_root().then(|| spec.ids.init_ids()),
        base_with_go: owner_of_namespace(spec.ids).is_some(),
    };
    let cloned = spec.launcher.clone_vm(&request, child_end.as_fd(), spec.cgroup)?;
    drop(child_end);
    let init = InitProcess::new(cloned.pid);
    let attach = cloned.cgroup.as_ref().filter(|_| !cloned.born_inside);
    if let Err(e) = configure_child(spec, &init, &host_end, attach) {
        init.kill();
        let _ = init.wait_blocking();
        if let Some(cgroup) = &cloned.cgroup {
            let _ = cgroup.remove();
        }
        return Err(e);
    }
    Ok(Launched { init, control: host_end, cgroup: cloned.cgroup })
}

/// Host side of the handshake: id maps, cgroups, release, configuration.
fn configure_child(
    spec: &LaunchSpec<'_>,
    init: &InitProcess,
    control: &OwnedFd,
    attach: Option<&VmCgroup>,
) -> io::Result<()> {
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
    if let Some(cgroup) = attach {
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

/// The host uid/gid that must own the VM's user namespace, when it is not the server itself:
/// in privileged mode, the first id of the VM's own range.
fn owner_of_namespace(ids: IdMapping) -> Option<(u32, u32)> {
    match ids {
        IdMapping::Privileged { base, .. } => Some((base, base)),
        IdMapping::Rootless { .. } => None,
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

impl InitProcess {
    /// The VM's first process, our child (`CLONE_PARENT` from the launcher), by its host pid.
    ///
    /// Why a pid and not a pidfd: a pidfd costs a descriptor per VM, and the pid of our own
    /// child is stable until *we* reap it (nothing else in the server waits for arbitrary
    /// children). Reaping and signalling are ordered by one lock, so a signal never reaches a
    /// reaped (and possibly reused) pid.
    pub(crate) fn new(host_pid: i32) -> InitProcess {
        InitProcess { host_pid, reaped: std::sync::Mutex::new(false) }
    }

    /// SIGKILL to init, which ends every process of the VM (the kernel tears the PID namespace
    /// down with it).
    pub fn kill(&self) {
        let reaped = self.reaped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !*reaped {
            // SAFETY: kill() of our own unreaped child (see `new`); no memory is passed.
            unsafe { libc::kill(self.host_pid, libc::SIGKILL) };
        }
    }

    /// Reaps init if it has exited; returns its wait status.
    pub fn try_wait(&self) -> io::Result<Option<i32>> {
        self.reap(libc::WNOHANG)
    }

    /// Blocks until init has exited and reaps it.
    pub fn wait_blocking(&self) -> io::Result<Option<i32>> {
        // Wait without reaping (so `kill` may still run meanwhile), then reap under the lock.
        if !*self.reaped.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            self.waitid(libc::WEXITED | libc::WNOWAIT)?;
        }
        self.reap(libc::WNOHANG)
    }

    fn reap(&self, options: libc::c_int) -> io::Result<Option<i32>> {
        let mut reaped = self.reaped.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if *reaped {
            return Ok(Some(0));
        }
        let status = self.waitid(libc::WEXITED | options)?;
        if status.is_some() {
            *reaped = true;
        }
        Ok(status)
    }

    fn waitid(&self, options: libc::c_int) -> io::Result<Option<i32>> {
        // SAFETY: siginfo_t is plain data; waitid fills it in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: waits for our own child and writes into `info`, which outlives the call.
            let r = unsafe { libc::waitid(libc::P_PID, self.host_pid as libc::id_t, &mut info, options) };
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
