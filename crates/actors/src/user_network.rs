//! Outbound internet for `network.mode = "open"`: slirp4netns, a mature user-space network
//! stack (rootless Podman's and Docker's), rather than one of our own.
//!
//! slirp4netns joins the VM's network namespace, creates `tap0` there (10.0.2.100/24, default
//! route via 10.0.2.2, name server 10.0.2.3) and carries the VM's packets out as ordinary
//! sockets of its own process on the host. With `--disable-host-loopback` the host's loopback
//! (where the server's API listens; the server refuses `open` presets on another address)
//! stays unreachable; other VMs publish nothing on the host, so they are unreachable too. It
//! runs with its own sandbox and seccomp filter (`--enable-sandbox --enable-seccomp`), and
//! exits when the server does (`--exit-fd`: a pipe whose write end only the server holds) or
//! when the VM stops.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use agentvm_vm::Vm;

use crate::error::ActorError;

/// The program, looked up in these directories (the server's `PATH` is not trusted for it).
const SEARCH: &[&str] = &["/usr/bin", "/usr/local/bin", "/bin"];
/// How long the stack may take to configure the VM's interface.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// `/etc/resolv.conf` of a VM in open mode: slirp4netns's DNS forwarder.
pub const RESOLV_CONF: &str = "# agentvm: network.mode = \"open\" (slirp4netns)\nnameserver 10.0.2.3\n";

/// Where slirp4netns is, or an error saying how to install it.
pub fn find() -> Result<PathBuf, String> {
    SEARCH.iter().map(|dir| Path::new(dir).join("slirp4netns")).find(|p| p.is_file()).ok_or_else(|| {
        "network.mode = \"open\" needs slirp4netns, which is not installed: `apt install slirp4netns`".to_string()
    })
}

/// Attaches slirp4netns to a freshly booted `vm`; it stops when the VM does.
pub async fn start(vm: &Vm) -> Result<(), ActorError> {
    let failed = |message: String| ActorError::Internal(format!("network.mode = \"open\": {message}"));
    let program = find().map_err(failed)?;
    // Close-on-exec: no other child of the server may inherit them (an inherited write end of
    // the exit pipe would keep slirp4netns alive after the server).
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| failed(format!("pipe: {e}")));
    let (ready_read, ready_write) = pipe()?;
    let (exit_read, exit_write) = pipe()?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(["--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp"])
        .arg("--ready-fd=3")
        .arg("--exit-fd=4")
        .arg(vm.init_pid().to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (ready_fd, exit_fd) = (ready_write.as_raw_fd(), exit_read.as_raw_fd());
    // SAFETY: runs in the forked child before exec and only calls fcntl and dup2, which are
    // async-signal-safe; the descriptors it names are open in the parent at fork time.
    unsafe {
        command.pre_exec(move || {
            // Move both out of the way of 3 and 4 first, so neither copy overwrites the other;
            // dup2 then gives slirp4netns fds 3 and 4 without close-on-exec.
            let ready = libc::fcntl(ready_fd, libc::F_DUPFD_CLOEXEC, 10);
            let exit = libc::fcntl(exit_fd, libc::F_DUPFD_CLOEXEC, 10);
            if ready < 0 || exit < 0 || libc::dup2(ready, 3) < 0 || libc::dup2(exit, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| failed(format!("starting slirp4netns: {e}")))?;
    drop(ready_write);
    drop(exit_read);
    let ready = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        std::fs::File::from(ready_read).read(&mut byte).map(|n| n == 1)
    });
    match tokio::time::timeout(READY_TIMEOUT, ready).await {
        Ok(Ok(Ok(true))) => {}
        outcome => {
            let _ = child.start_kill();
            let stderr = match child.wait_with_output().await {
                Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            let why = if outcome.is_err() { "did not configure the VM's interface in time" } else { "failed" };
            return Err(failed(format!("slirp4netns {why}: {stderr}")));
        }
    }
    tracing::debug!(vm = vm.id(), pid = child.id(), "slirp4netns attached");
    let stopped = vm.on_stop();
    tokio::spawn(async move {
        // Holding the exit pipe's write end keeps slirp4netns running; if the server dies, the
        // kernel closes it and slirp4netns exits by itself.
        let _exit: OwnedFd = exit_write;
        tokio::select! {
            () = stopped => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            status = child.wait() => tracing::warn!(?status, "slirp4netns exited while its VM runs"),
        }
    });
    Ok(())
}
