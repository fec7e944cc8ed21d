//! Network inside the VM: a new network namespace has only `lo`, and it is down; and the
//! sockets init makes on it for the host (see [`make_socket`]).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::protocol::{SocketError, SocketKind};

/// Sets `IFF_UP` on `lo` with the classic `SIOCSIFFLAGS` ioctl (no netlink needed for one flag).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; we fill the name and read/write the flags union member.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    result
}

/// Makes the socket a [`crate::protocol::Request::Socket`] asks for, in the VM's network
/// namespace (init's own). Only loopback addresses: the VM has no other interface the host
/// could mean, and a request for anything else is a host bug.
pub fn make_socket(kind: SocketKind, addr: SocketAddr) -> Result<OwnedFd, SocketError> {
    use nix::sys::socket::{
        bind, connect, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
    };
    fn failed(step: &'static str) -> impl Fn(nix::errno::Errno) -> SocketError {
        move |e| SocketError { errno: e as i32, step: step.to_string() }
    }
    if !addr.ip().is_loopback() {
        return Err(SocketError { errno: libc::EINVAL, step: "address".into() });
    }
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Stream, flags, None).map_err(failed("socket"))?;
    let target = SockaddrStorage::from(addr);
    match kind {
        SocketKind::Listen => {
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(failed("setsockopt"))?;
            if addr.is_ipv6() {
                setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(failed("setsockopt"))?;
            }
            bind(fd.as_raw_fd(), &target).map_err(failed("bind"))?;
            listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN)).map_err(failed("listen"))?;
        }
        SocketKind::Connect => match connect(fd.as_raw_fd(), &target) {
            // Loopback connections usually complete at once; otherwise the host waits.
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(failed("connect")(e)),
        },
    }
    Ok(fd)
}
