//! The port forwarder: every connection accepted on a listener is joined to one fixed address.
//!
//! This is `network.forward = [{port = 8080, to = "127.0.0.1:9000"}]`: a client inside the VM
//! connects to its own `127.0.0.1:8080` with no proxy support and reaches the host's
//! `127.0.0.1:9000`. The destination is the operator's, not the client's, so no policy applies;
//! `to` (`host:port` or `[v6]:port`) is resolved again at each connection, so a name follows DNS
//! changes. A connection that cannot be made simply closes the accepted one (logged at debug):
//! the client sees its connection end, as it would with a server that is down.

use std::io;

use tokio::net::{TcpListener, TcpStream};

use crate::accept::accept_loop;
use crate::connect::{connect, ConnectError};
use crate::limits::ProxyLimits;

/// Serves the forward on `listener` until the future is dropped (abort its task to stop it; every
/// connection it started stops with it). Of `limits`, `max_connections` and `connect_timeout`
/// apply.
pub async fn serve_forward(listener: TcpListener, to: String, limits: ProxyLimits) {
    let to: std::sync::Arc<str> = to.into();
    accept_loop(
        listener,
        limits.max_connections,
        b"",
        || {},
        |client, peer| {
            let to = to.clone();
            async move {
                match join(client, &to, limits).await {
                    Ok((sent, received)) => tracing::debug!(%peer, %to, sent, received, "forward: connection closed"),
                    Err(error) => tracing::debug!(%peer, %to, %error, "forward: connection failed"),
                }
            }
        },
    )
    .await;
}

async fn join(mut client: TcpStream, to: &str, limits: ProxyLimits) -> Result<(u64, u64), ForwardError> {
    let (host, port) = split_host_port(to).ok_or_else(|| ForwardError::BadAddress(to.to_owned()))?;
    let mut upstream = connect(host, port, None, limits.connect_timeout).await?;
    Ok(tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 64 * 1024, 64 * 1024).await?)
}

/// `host:port` or `[v6]:port` into its parts.
fn split_host_port(to: &str) -> Option<(&str, u16)> {
    let (host, port) = to.rsplit_once(':')?;
    let port = port.parse().ok().filter(|p| *p != 0)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("{0:?} is not host:port")]
    BadAddress(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("127.0.0.1:9000"), Some(("127.0.0.1", 9000)));
        assert_eq!(split_host_port("[::1]:9000"), Some(("::1", 9000)));
        assert_eq!(split_host_port("db.example:5432"), Some(("db.example", 5432)));
        assert_eq!(split_host_port("::1:9000"), None);
        assert_eq!(split_host_port("db.example"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("a:0"), None);
    }
}
