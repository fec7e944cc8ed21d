//! TCP sockets inside the VM's network namespace, made by its init and handed to the server.
//!
//! A VM has its own network namespace with only loopback, and the server never enters it: it
//! asks init for a socket ([`Request::Socket`]) and gets the descriptor back over the control
//! socket. A socket keeps the namespace it was made in, so the server can then accept on a
//! listener that lives on the VM's `127.0.0.1` (the egress proxy and forwards of a network
//! policy), or talk to a server listening inside the VM (`vmFetch`, preview URLs), while the
//! VM itself is never reachable from the host's network. Works the same for a rootless server,
//! which could not `setns` into the VM.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;

use agentvm_sandbox::protocol::{Request, SocketKind};
use nix::errno::Errno;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::error::{Result, VmError};

use super::{Pending, Vm};

impl Vm {
    /// A TCP connection to a server listening on `port` of the VM's loopback: `127.0.0.1`
    /// first, then `[::1]` (for servers bound to IPv6 only). Fails with
    /// [`VmError::PortClosed`] when nothing listens there.
    pub async fn connect(&self, port: u16) -> Result<TcpStream> {
        match self.connect_to(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await {
            Err(VmError::PortClosed { .. }) => self.connect_to(SocketAddr::from((Ipv6Addr::LOCALHOST, port))).await,
            other => other,
        }
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<TcpStream> {
        let port = addr.port();
        let refused = |e: &VmError| {
            matches!(
                e.errno(),
                Some(Errno::ECONNREFUSED | Errno::EADDRNOTAVAIL | Errno::ENETUNREACH | Errno::EAFNOSUPPORT)
            )
        };
        let fd = match self.socket(SocketKind::Connect, addr).await {
            Ok(fd) => fd,
            Err(e) if refused(&e) => return Err(VmError::PortClosed { port }),
            Err(e) => return Err(e),
        };
        let stream = TcpStream::from_std(std::net::TcpStream::from(fd))
            .map_err(|e| VmError::io("registering a VM socket", e))?;
        // A non-blocking connect completes when the socket becomes writable; SO_ERROR says how.
        stream.writable().await.map_err(|e| VmError::io("connecting inside the VM", e))?;
        match stream.take_error() {
            Ok(None) => Ok(stream),
            Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNREFUSED) => Err(VmError::PortClosed { port }),
            Ok(Some(e)) | Err(e) => Err(VmError::io(format!("connecting to port {port} in the VM"), e)),
        }
    }

    /// A listener on `addr` of the VM's loopback (`127.0.0.1:8080`); connections made inside
    /// the VM to that address are accepted by the caller, on the host. Fails with
    /// [`VmError::Socket`] (`EADDRINUSE`...) when the address cannot be taken.
    pub async fn listen(&self, addr: SocketAddr) -> Result<TcpListener> {
        let fd = self.socket(SocketKind::Listen, addr).await?;
        TcpListener::from_std(std::net::TcpListener::from(fd)).map_err(|e| VmError::io("registering a VM listener", e))
    }

    async fn socket(&self, kind: SocketKind, addr: SocketAddr) -> Result<OwnedFd> {
        let (reply, answer) = oneshot::channel();
        let id = self.register(Pending::Socket { reply })?;
        self.send(Request::Socket { id, kind, addr }, Vec::new(), id)?;
        answer.await.map_err(|_| self.stopped_error())?
    }
}
