//! A tunnel: bytes both ways until both sides are done, counted.
//!
//! `tokio::io::copy_bidirectional` keeps half-closes right: when one side stops sending, the
//! other side's write half is shut down and the opposite direction carries on until it ends too.
//! Its buffers are 64 KiB a direction (tokio's default is 8 KiB): fewer system calls per byte in
//! bulk transfers, for 128 KiB a tunnel.

use std::io;

use tokio::net::TcpStream;

use super::Proxy;

/// Bytes buffered per direction.
const BUFFER: usize = 64 * 1024;

/// Relays between `client` and `upstream` until both directions have ended.
pub(super) async fn relay(client: &mut TcpStream, upstream: &mut TcpStream, proxy: &Proxy) -> io::Result<()> {
    let (from_client, to_client) = tokio::io::copy_bidirectional_with_sizes(client, upstream, BUFFER, BUFFER).await?;
    proxy.count_relayed(from_client, to_client);
    tracing::debug!(from_client, to_client, "proxy: tunnel closed");
    Ok(())
}
