//! The second front end: this server as a host ("envoy") of a Rivet Engine pool.
//!
//! With `--engine URL --pool NAME`, the server connects to the engine through the published
//! envoy client (`rivet-envoy-client`, pinned to the engine's version) and the engine decides
//! where actors run: it starts an actor on one host of the pool (`callbacks`: the VM is
//! brought here and booted, see `placement`), tunnels the client's HTTP actions and WebSocket
//! connections to that host (`tunnel`: they reach the same handlers as the built-in routes,
//! `routes::http_action` and `connection::serve`), and tells it when the actor sleeps, moves
//! or is destroyed. A VM's durable state follows it from host to host through snapshots in
//! object storage (`snapshots`, `agentvm_snapshot`); `docs/scale-out.md` has the design and
//! what a host crash can lose.
//!
//! The built-in server keeps running beside it (its `/health` says whether the engine link is
//! up); the engine is the front door for clients of the pool.

mod callbacks;
mod error;
mod placement;
mod snapshots;
mod tunnel;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use agentvm_snapshot::SnapshotStore;
use rivet_envoy_client::handle::EnvoyHandle;
use serde_json::json;

use crate::AppState;

pub use error::EngineError;
use placement::Placements;
pub use tunnel::Tunnelled;

/// How long a host that shuts down gives the engine and the snapshot store to take its VMs
/// back (see [`leave`]).
pub const LEAVE_GRACE: Duration = Duration::from_secs(6);

/// Default [`EngineOptions::snapshot_interval`].
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

/// How this server joins an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The engine's URL (its guard, e.g. `http://127.0.0.1:6420`).
    pub endpoint: String,
    /// The pool (runner config) whose actors this host runs.
    pub pool: String,
    /// The engine namespace.
    pub namespace: String,
    /// The token the engine requires of hosts, if any.
    pub token: Option<String>,
    /// This host's version within the pool: the engine gives new actors to the highest.
    pub version: u32,
    /// Where VM state is kept between hosts; `None`: it stays on the host that ran the VM
    /// (a VM then moves to another host without its files).
    pub snapshots: Option<SnapshotStore>,
    /// How often an awake VM's state is snapshotted (it is also snapshotted when it sleeps).
    pub snapshot_interval: Duration,
}

/// The link to the engine, as operators see it.
pub struct Link {
    options: EngineOptions,
    handle: OnceLock<EnvoyHandle>,
    connected: AtomicBool,
    connects: AtomicU64,
    placements: Placements,
    state: Weak<AppState>,
}

impl Link {
    /// `/health`'s `engine` object.
    pub fn status(&self) -> serde_json::Value {
        let envoy_key = self.handle.get().map(|h| h.get_envoy_key().to_string());
        json!({
            "endpoint": self.options.endpoint,
            "pool": self.options.pool,
            "namespace": self.options.namespace,
            "connected": self.connected.load(Ordering::SeqCst),
            "connections": self.connects.load(Ordering::SeqCst),
            "envoyKey": envoy_key,
            "actors": self.placements.len(),
            "snapshots": self.options.snapshots.as_ref().map(|s| s.location().to_string()),
        })
    }

    fn state(&self) -> Option<Arc<AppState>> {
        self.state.upgrade()
    }
}

/// Connects to the engine (in the background: a server whose engine is down starts anyway and
/// keeps trying) and hands idle VMs' sleep to it. Returns the link.
pub fn join(state: &Arc<AppState>, options: EngineOptions) -> Arc<Link> {
    let link = Arc::new(Link {
        options: options.clone(),
        handle: OnceLock::new(),
        connected: AtomicBool::new(false),
        connects: AtomicU64::new(0),
        placements: Placements::default(),
        state: Arc::downgrade(state),
    });
    // Idle VMs sleep when the engine says so (it may have requests on the way); a client's
    // `destroy` destroys the engine's actor too.
    let (idle, destroyed) = (Arc::downgrade(&link), Arc::downgrade(&link));
    state.actors.placed_by(agentvm_actors::actors::Placement {
        idle: Arc::new(move |actor| {
            if let Some(link) = idle.upgrade() {
                callbacks::request_sleep(&link, actor);
            }
        }),
        destroyed: Arc::new(move |actor| {
            if let Some(link) = destroyed.upgrade() {
                callbacks::request_destroy(&link, actor);
            }
        }),
    });
    let config = rivet_envoy_client::config::EnvoyConfig {
        version: options.version,
        endpoint: options.endpoint.clone(),
        token: options.token.clone(),
        namespace: options.namespace.clone(),
        pool_name: options.pool.clone(),
        prepopulate_actor_names: state
            .actors
            .presets()
            .names()
            .into_iter()
            .map(|name| (name, rivet_envoy_client::config::ActorName { metadata: json!({}) }))
            .collect(),
        metadata: Some(json!({"agentvm": env!("CARGO_PKG_VERSION")})),
        not_global: true,
        debug_latency_ms: None,
        callbacks: Arc::new(callbacks::Callbacks { link: Arc::downgrade(&link) }),
    };
    tracing::info!(endpoint = %options.endpoint, pool = %options.pool, namespace = %options.namespace, "joining the engine");
    let handle = rivet_envoy_client::envoy::start_envoy_sync(config);
    let _ = link.handle.set(handle);
    if options.snapshots.is_some() {
        // Staging copies of snapshots a server that ended mid-upload left.
        let _ = std::fs::remove_dir_all(state.config.data_dir.join("snapshots"));
        tokio::spawn(snapshots::run_periodic(Arc::downgrade(&link)));
    }
    link
}

/// Leaves the engine: stops taking actors and gives each running one back (its VM stopped
/// and snapshotted), within `grace` in all: the engine stops them, and what it has not stopped
/// when half of it passed is stopped here. VMs still running then are stopped by the server's
/// shutdown, without a snapshot (their newest state stays on this host's disk).
pub async fn leave(link: &Arc<Link>, grace: Duration) {
    let Some(handle) = link.handle.get() else { return };
    tracing::info!(actors = link.placements.len(), "leaving the engine: handing its actors back");
    if tokio::time::timeout(grace / 2, handle.shutdown_and_wait(false)).await.is_err() {
        tracing::warn!("the engine did not take every actor back in time");
        handle.shutdown(true);
    }
    if tokio::time::timeout(grace / 2, placement::stop_all(link)).await.is_err() {
        tracing::warn!(actors = link.placements.len(), "leaving the engine: some VMs were not snapshotted in time");
    }
}
