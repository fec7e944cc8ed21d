//! The accept loop shared by the proxy and the forwarder: one task per connection, at most
//! `max_connections` at once, every one ended with the loop.
//!
//! Connection tasks live in a [`JoinSet`] owned by the loop's future, so aborting the task that
//! runs [`serve_proxy`](crate::serve_proxy) or [`serve_forward`](crate::serve_forward) (what a
//! caller does when its VM stops) drops the set and aborts every tunnel with it: nothing outlives
//! the listener.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Accepts on `listener` forever, running `handle` for each connection while fewer than
/// `max_connections` run; a connection past the cap is sent `over_cap` (best effort, without
/// waiting) and closed, then `on_over_cap` is called.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max_connections: usize,
    over_cap: &'static [u8],
    on_over_cap: impl Fn(),
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (EMFILE) and the like: the listener is fine, the process is
                // momentarily full. A pause keeps the loop from spinning on the same error.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while let Some(finished) = tasks.try_join_next() {
            if let Err(error) = finished {
                tracing::error!(%error, "a connection task failed");
            }
        }
        if tasks.len() >= max_connections {
            tracing::debug!(%peer, max_connections, "connection refused: too many connections");
            // A fresh socket's send buffer is empty: a short answer fits without waiting.
            let _ = stream.try_write(over_cap);
            on_over_cap();
            continue;
        }
        tasks.spawn(handle(stream, peer));
    }
}
