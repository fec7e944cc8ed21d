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
//! The web inspector (`inspector`): `GET /` and `/inspector/...`.
//! With `--manual-clock` (tests), `POST /debug/clock` moves cron's clock (`routes`).
//! Preview URLs (`preview`): `/request/fetch/{token}/...` and `/gateway/{actor}/request/fetch/{token}/...`
//! proxy HTTP and WebSocket to a port of the VM while the token is valid.
//!
//! With `--engine` (`ServerConfig::engine`), the server is also a host of a Rivet Engine pool
//! (`engine`): the engine places VMs and tunnels its clients' requests here, where they reach the
//! same gateway handlers and connection loop as the built-in routes; VM state moves between
//! hosts as snapshots (`docs/scale-out.md`).
//!
//! This crate is the front end over the transport-neutral actor core, `agentvm-actors` (the
//! actor directory, the VM lifecycle, action dispatch, events). It owns only what is HTTP or
//! WebSocket: routes (`routes`), the gateway's addressing (`gateway`), WebSocket connections
//! (`connection`) and their opening window that makes "subscribe, then act over HTTP" lossless
//! (`opening`), which json client version sent a request (`client_version`), browser exposure
//! and origin checks (`exposure`, `origin`), the REST JSON shapes, and how core errors become
//! an HTTP status and `{group, code, message}` (`error`).

mod client_version;
mod connection;
mod engine;
mod error;
mod exposure;
mod gateway;
mod inspector;
mod opening;
mod origin;
mod preview;
mod routes;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agentvm_actors::cron::Clock as _;
use agentvm_actors::{Actors, Presets, Settings};
use agentvm_vm::{HostConfig, VmHost};

pub use agentvm_actors::limits::{DEFAULT_CREATES_PER_SECOND, DEFAULT_CREATE_BURST, DEFAULT_MAX_VMS};
pub use agentvm_actors::memory::limit_arenas as limit_allocator_arenas;
pub use agentvm_snapshot::SnapshotStore;
pub use agentvm_store::EventRetention;
pub use engine::{EngineOptions, DEFAULT_SNAPSHOT_INTERVAL};
pub use error::ApiError;
pub use exposure::Exposure;
pub use origin::{AllowedHost, HostError, Origin, OriginError};

/// Default [`ServerConfig::exec_output_bytes`]: `exec` keeps this much of each stream (more is
/// read and discarded, and the result says `truncated: true`). Larger outputs belong in a file
/// (`readFile`) or a spawned process's `processOutput` events.
pub const DEFAULT_EXEC_OUTPUT_BYTES: usize = agentvm_vm::process::DEFAULT_EXEC_OUTPUT_BYTES;
/// Default [`ServerConfig::max_actions_per_connection`].
pub const DEFAULT_MAX_ACTIONS_PER_CONNECTION: usize = 256;

/// Default [`ServerConfig::event_queue_bytes`].
pub const DEFAULT_EVENT_QUEUE_BYTES: usize = 8 << 20;

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
    /// Which web pages (origins) and host names besides loopback may reach the API; see
    /// the `exposure` module for the rules.
    pub exposure: Exposure,
    /// Most VMs (actors, awake or asleep) the server holds; creating more fails with
    /// `503 server/too_many_vms`.
    pub max_vms: u64,
    /// New VMs per second (a token bucket of `create_burst`; 0 = unlimited); faster creation
    /// fails with `429 server/rate_limited`.
    pub creates_per_second: f64,
    pub create_burst: u32,
    /// Most output `exec` keeps per stream.
    pub exec_output_bytes: usize,
    /// Most actions one WebSocket connection may have running at once; more are refused with
    /// `connection/too_many_actions`.
    pub max_actions_per_connection: usize,
    /// How much history each VM's durable event log keeps (events and payload bytes).
    pub event_retention: EventRetention,
    /// A connection's event queue is full at this many bytes: output producers then wait for
    /// it (up to a grace period, after which it is told what it missed with `streamError`).
    pub event_queue_bytes: usize,
    /// What a VM of each actor name gets (the config file's `[actors.NAME]` presets); the
    /// default serves every name with the built-in VM.
    pub presets: Arc<Presets>,
    /// For tests: cron runs on a clock that starts at this time (milliseconds since the Unix
    /// epoch) and moves only through `POST /debug/clock`. `None`: the system clock.
    pub manual_clock: Option<u64>,
    /// Join a Rivet Engine's pool as a host of its actors (see `engine`); `None`: this server
    /// alone places and serves its VMs.
    pub engine: Option<EngineOptions>,
}

impl ServerConfig {
    /// The defaults, listening on `listen` with data in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, init_program: PathBuf) -> ServerConfig {
        ServerConfig {
            listen,
            data_dir,
            init_program,
            token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            exposure: Exposure::default(),
            max_vms: DEFAULT_MAX_VMS,
            creates_per_second: DEFAULT_CREATES_PER_SECOND,
            create_burst: DEFAULT_CREATE_BURST,
            exec_output_bytes: DEFAULT_EXEC_OUTPUT_BYTES,
            max_actions_per_connection: DEFAULT_MAX_ACTIONS_PER_CONNECTION,
            event_retention: EventRetention::default(),
            event_queue_bytes: DEFAULT_EVENT_QUEUE_BYTES,
            presets: Arc::default(),
            manual_clock: None,
            engine: None,
        }
    }
}

/// Default [`ServerConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("refusing to listen on {0} without a token: anyone who can reach it could run programs in your VMs (set --token, or listen on a loopback address)")]
    NonLoopbackWithoutToken(SocketAddr),
    /// A preset cannot be served as configured (a missing tool, an unsafe combination).
    #[error("{0}")]
    Preset(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Vm(#[from] agentvm_vm::VmError),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub struct AppState {
    pub config: ServerConfig,
    pub actors: Arc<Actors>,
    /// Cron's clock when the server was started with a manual one (`--manual-clock`).
    pub manual_clock: Option<Arc<agentvm_actors::cron::ManualClock>>,
    /// The link to the Rivet Engine, with `--engine`.
    pub engine: std::sync::OnceLock<Arc<engine::Link>>,
}

/// Refuses presets that cannot be served safely here: `network.mode = "open"` needs slirp4netns,
/// and a server listening beyond loopback (VMs in open mode reach the host's other addresses,
/// only its loopback is kept from them).
fn check_presets(config: &ServerConfig) -> Result<(), ServerError> {
    let open: Vec<&str> = config
        .presets
        .iter()
        .filter(|p| p.network.mode == agentvm_actors::preset::NetworkMode::Open)
        .map(|p| p.name.as_str())
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    agentvm_actors::user_network::find().map_err(ServerError::Preset)?;
    if !config.listen.ip().is_loopback() {
        return Err(ServerError::Preset(format!(
            "presets {open:?} give VMs the internet (network.mode = \"open\"), from which the host's own non-loopback addresses are reachable: listen on a loopback address (and put a proxy in front) rather than {}",
            config.listen
        )));
    }
    tracing::info!(presets = ?open, "network.mode = \"open\" through slirp4netns");
    Ok(())
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
    check_presets(&config)?;
    let host_config = HostConfig::new(&config.data_dir, &config.init_program);
    let host = tokio::task::spawn_blocking(move || VmHost::new(host_config))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let settings = Settings {
        idle_timeout: config.idle_timeout,
        max_vms: config.max_vms,
        creates_per_second: config.creates_per_second,
        create_burst: config.create_burst,
        exec_output_bytes: config.exec_output_bytes,
        event_retention: config.event_retention,
        event_queue_bytes: config.event_queue_bytes.max(64 << 10),
    };
    let data_dir = config.data_dir.clone();
    let presets = Arc::clone(&config.presets);
    let manual_clock = config.manual_clock.map(|start| Arc::new(agentvm_actors::cron::ManualClock::new(start)));
    let clock: Arc<dyn agentvm_actors::cron::Clock> = match &manual_clock {
        Some(manual) => {
            tracing::warn!(
                start_ms = manual.now_ms(),
                "cron runs on a manual clock (moved with POST /debug/clock): for tests only"
            );
            Arc::clone(manual) as Arc<dyn agentvm_actors::cron::Clock>
        }
        None => Arc::new(agentvm_actors::cron::SystemClock),
    };
    // Opening the registry and every VM's event log is blocking work.
    let actors = tokio::task::spawn_blocking(move || Actors::load(host, &data_dir, settings, presets, clock))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map_err(|e| std::io::Error::other(ApiError::from(e).message))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: config.listen, source })?;
    let address = listener.local_addr()?;
    let engine_options = config.engine.clone();
    // With an engine, due jobs of sleeping VMs are skipped (see docs/scale-out.md).
    let cron = tokio::spawn(Arc::clone(&actors).run_cron());
    // Warm pools boot VMs under ids of their own; an engine gives every VM its id.
    let pools = engine_options.is_none().then(|| tokio::spawn(Arc::clone(&actors).run_pools()));
    let state = Arc::new(AppState { config, actors, manual_clock, engine: std::sync::OnceLock::new() });
    if let Some(options) = engine_options {
        tracing::warn!(
            "the engine places VMs: cron jobs run while their VM is awake, due runs of sleeping VMs are skipped"
        );
        let _ = state.engine.set(engine::join(&state, options));
    }
    let idle = tokio::spawn(Arc::clone(&state.actors).sleep_idle_vms());
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
    cron.abort();
    if let Some(pools) = pools {
        pools.abort();
    }
    if let Some(link) = state.engine.get() {
        engine::leave(link, engine::LEAVE_GRACE).await;
    }
    state.actors.shut_down().await;
    // Requests still in flight end once their VM stopped; do not wait for stragglers forever.
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}
