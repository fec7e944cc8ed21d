//! Connecting out from the server: resolve a destination, keep the addresses the policy allows,
//! connect to the first one that answers.
//!
//! Names are resolved here, by the server (`tokio::net::lookup_host`, the system resolver),
//! never by the VM. With a [`Policy`], each resolved address must pass
//! [`Policy::check_address`]; addresses that do not are skipped, and only when none is left is the
//! destination denied. One deadline covers resolving and every connection attempt.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::policy::{DenyReason, Policy};

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The policy refused every address the destination resolved to.
    #[error("{0}")]
    Denied(DenyReason),
    /// The name could not be resolved.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// The name resolved to no address.
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// The client's own loopback port (see `Proxy::with_local`) could not be connected to.
    #[error("nothing answers on port {port} of this machine's loopback: {source}")]
    Local {
        /// The port.
        port: u16,
        /// Why.
        source: io::Error,
    },
    /// Every allowed address refused the connection.
    #[error("{addr} refused the connection")]
    Refused {
        /// The last address tried.
        addr: SocketAddr,
    },
    /// Every allowed address failed otherwise (no route, host unreachable...).
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        /// The last address tried.
        addr: SocketAddr,
        /// The connect error.
        source: io::Error,
    },
    /// Resolving and connecting took longer than the connect timeout.
    #[error("no answer from {host}:{port} within {timeout:?}")]
    TimedOut {
        /// The destination host.
        host: String,
        /// The destination port.
        port: u16,
        /// The limit that passed.
        timeout: Duration,
    },
}

/// Connects to `host:port` (a name, or an IP literal with or without brackets), checking each
/// resolved address against `policy` when one is given. The caller has already matched
/// `host:port` itself against the policy ([`Policy::check`]).
pub async fn connect(
    host: &str,
    port: u16,
    policy: Option<&Policy>,
    limit: Duration,
) -> Result<TcpStream, ConnectError> {
    let deadline = Instant::now() + limit;
    let timed_out = || ConnectError::TimedOut { host: host.to_owned(), port, timeout: limit };
    let addrs = timeout_at(deadline, resolve(host, port)).await.map_err(|_| timed_out())??;
    let mut denied = None;
    let mut last_error = None;
    for addr in addrs {
        if let Some(policy) = policy {
            if let Err(reason) = policy.check_address(host, port, addr.ip()) {
                denied.get_or_insert(reason);
                continue;
            }
        }
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(source)) if source.kind() == io::ErrorKind::ConnectionRefused => {
                last_error = Some(ConnectError::Refused { addr });
            }
            Ok(Err(source)) => last_error = Some(ConnectError::Unreachable { addr, source }),
            Err(_) => return Err(timed_out()),
        }
    }
    Err(last_error.or(denied.map(ConnectError::Denied)).unwrap_or_else(|| ConnectError::NoAddress(host.to_owned())))
}

/// `host`'s addresses: an IP literal is its own, a name goes to the system resolver.
async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve { host: host.to_owned(), source })?;
    Ok(addrs.collect())
}
