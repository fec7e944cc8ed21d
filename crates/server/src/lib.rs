//! # agentvm-server
//!
//! `agentvm serve`: hosts VMs as actors and speaks the RivetKit client protocol, so the
//! unmodified `rivetkit` npm client (`createClient(url).vm.getOrCreate([key])`) drives them.
//! Each (namespace, name, key) is an actor backed by one agentvm VM that boots on first use.
//!
//! Routes: `GET /metadata`, `GET /health`, `PUT|POST|GET /actors`, `DELETE /actors/{id}`,
//! `POST /gateway/{actor}/action/{name}` (stateless actions in json, cbor or bare) and
//! `GET /gateway/{actor}/connect` (WebSocket: actions, subscriptions, events). `{actor}` is an
//! actor name with `rvt-*` query parameters (clients 2.3) or an actor id (clients 2.0–2.2).

mod actions;
mod actors;
mod args;
mod connection;
mod error;
mod events;
mod gateway;
mod routes;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentvm_vm::{HostConfig, VmHost};

pub use error::ApiError;

/// Largest HTTP request body accepted by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Largest WebSocket message accepted by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 32 << 20;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The agentvm binary (each VM's init).
    pub init_program: PathBuf,
    /// Required from clients when set; mandatory for non-loopback addresses.
    pub token: Option<String>,
    pub max_body_bytes: usize,
    pub max_message_bytes: usize,
    /// A VM with no action for this long, no running spawned process and no open shell sleeps.
    pub idle_timeout: Duration,
}

/// Default [`ServerConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to listen on {0} without a token: anyone who can reach it could run programs in your VMs (set --token, or listen on a loopback address)")]
    NonLoopbackWithoutToken(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Vm(#[from] agentvm_vm::VmError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct AppState {
    pub config: ServerConfig,
    pub actors: Arc<actors::Actors>,
}

/// Runs the server until `shutdown` resolves, then stops every VM and returns. Calls
/// `on_listening` with the bound address (useful with port 0).
pub async fn serve(
    config: ServerConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ServerError::NonLoopbackWithoutToken(config.listen));
    }
    let host_config = HostConfig::new(&config.data_dir, &config.init_program);
    let host = tokio::task::spawn_blocking(move || VmHost::new(host_config))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let lifecycle = actors::Lifecycle { idle_timeout: config.idle_timeout };
    let actors =
        actors::Actors::load(host, &config.data_dir, lifecycle).map_err(|e| std::io::Error::other(e.message))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let address = listener.local_addr()?;
    let idle = tokio::spawn(Arc::clone(&actors).sleep_idle_vms());
    let state = Arc::new(AppState { config, actors });
    let app = routes::router(Arc::clone(&state));
    on_listening(address);

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    });
    let server = tokio::spawn(server.into_future());
    shutdown.await;
    tracing::info!("shutting down: stopping VMs");
    let _ = stop_tx.send(true);
    idle.abort();
    let stops = state.actors.all().into_iter().map(|actor| async move { actor.stop(Some("sleep")).await });
    futures_util::future::join_all(stops).await;
    // Requests still in flight end once their VM stopped; do not wait for stragglers forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
