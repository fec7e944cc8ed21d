//! Which actors the engine placed on this host, and bringing one here: its state (from this
//! host's disk when it is the newest copy, else from its newest snapshot), its VM booted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use agentvm_actors::Actor;
use agentvm_protocol::keys;
use axum::http::StatusCode;
use rivet_envoy_protocol as protocol;

use super::{snapshots, EngineError, Link};
use crate::error::ApiError;

/// An actor the engine runs here.
pub(super) struct Placement {
    /// The engine's id of the actor (stable across hosts; names its snapshots).
    pub engine_id: String,
    /// The engine's generation of this start.
    pub generation: u32,
    pub actor: Arc<Actor>,
    /// A sleep was asked for since the VM last did something.
    sleep_asked: AtomicBool,
    /// Held while a snapshot of it is taken (one at a time); when the newest one began.
    pub(super) snapshotting: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// The actors placed here, by engine id (and by agentvm id, for the idle loop).
#[derive(Default)]
pub(super) struct Placements {
    by_engine: Mutex<HashMap<String, Arc<Placement>>>,
    by_actor: Mutex<HashMap<String, String>>,
}

impl Placements {
    pub(super) fn len(&self) -> usize {
        self.by_engine.lock().unwrap().len()
    }

    pub(super) fn all(&self) -> Vec<Arc<Placement>> {
        self.by_engine.lock().unwrap().values().cloned().collect()
    }

    fn insert(&self, placement: Arc<Placement>) {
        self.by_actor.lock().unwrap().insert(placement.actor.id.clone(), placement.engine_id.clone());
        self.by_engine.lock().unwrap().insert(placement.engine_id.clone(), placement);
    }

    fn remove(&self, engine_id: &str, generation: u32) -> Option<Arc<Placement>> {
        let mut by_engine = self.by_engine.lock().unwrap();
        let placement = by_engine.get(engine_id).filter(|p| p.generation == generation).cloned()?;
        by_engine.remove(engine_id);
        self.by_actor.lock().unwrap().remove(&placement.actor.id);
        Some(placement)
    }

    /// Forgets the placement of agentvm actor `actor_id` (destroyed here); its engine id and
    /// generation.
    pub(super) fn forget(&self, actor_id: &str) -> Option<(String, u32)> {
        let engine_id = self.by_actor.lock().unwrap().remove(actor_id)?;
        let placement = self.by_engine.lock().unwrap().remove(&engine_id)?;
        Some((engine_id, placement.generation))
    }

    /// The actor the engine's id names, if it runs here.
    pub(super) fn actor(&self, engine_id: &str) -> Result<Arc<Actor>, ApiError> {
        match self.by_engine.lock().unwrap().get(engine_id) {
            Some(placement) => {
                placement.sleep_asked.store(false, Ordering::SeqCst);
                Ok(Arc::clone(&placement.actor))
            }
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "actor",
                "not_running_here",
                format!("actor {engine_id} is not running on this host (it is starting or stopping): try again"),
            )),
        }
    }

    /// The engine id and generation of an idle actor, the first time it is found idle since
    /// its last request.
    pub(super) fn sleep_once(&self, actor_id: &str) -> Option<(String, u32)> {
        let engine_id = self.by_actor.lock().unwrap().get(actor_id).cloned()?;
        let placement = self.by_engine.lock().unwrap().get(&engine_id).cloned()?;
        (!placement.sleep_asked.swap(true, Ordering::SeqCst)).then(|| (engine_id, placement.generation))
    }
}

/// The engine starts an actor here: its state is brought here and its VM booted.
pub(super) async fn start(
    link: &Arc<Link>,
    engine_id: String,
    generation: u32,
    config: protocol::ActorConfig,
) -> Result<(), EngineError> {
    let state = link.state().ok_or(EngineError::ShuttingDown)?;
    let key = keys::from_rest(config.key.as_deref().unwrap_or("/"));
    let input = match config.input.as_deref() {
        Some(bytes) if !bytes.is_empty() => Some(agentvm_protocol::decode_input_bytes(bytes)?),
        _ => None,
    };
    let namespace = link.options.namespace.clone();
    tracing::info!(engine_actor = %engine_id, generation, name = %config.name, key = %keys::to_rest(&key), "the engine starts an actor here");
    let local = state.actors.resolve(&namespace, &config.name, &key, false, None).await.ok().map(|(a, _)| a);
    let marker = match &local {
        Some(actor) => snapshots::read_marker(&state, &actor.id).await,
        None => None,
    };
    let local = match (local, &marker) {
        // Made for another engine actor of the same key, destroyed while this host was away.
        (Some(actor), Some(marker)) if marker.engine_actor_id != engine_id => {
            tracing::info!(actor = %actor.id, "a stale local copy of an earlier actor with this key: removed");
            state.actors.destroy(&actor).await?;
            None
        }
        (Some(actor), None) if actor.id != engine_id => {
            tracing::info!(actor = %actor.id, engine_actor = %engine_id, "a VM made before this host joined the engine: the engine's actor of its key from now on");
            Some(actor)
        }
        (local, _) => local,
    };
    let newest = match &link.options.snapshots {
        Some(store) => store.latest(&engine_id).await?.map(|m| (store, m)),
        None => None,
    };
    // This host's copy already says whose it is when it was made or restored for this actor.
    let marked = marker.as_ref().is_some_and(|m| m.engine_actor_id == engine_id);
    let (actor, marked) = match (local, newest) {
        (local, Some((store, manifest))) => {
            let base = marker.as_ref().filter(|m| m.engine_actor_id == engine_id).and_then(|m| m.snapshot);
            match local {
                Some(actor) if actor.id == manifest.actor.id && base.is_some_and(|b| b >= manifest.sequence) => {
                    (actor, marked)
                }
                stale => {
                    if let Some(stale) = stale {
                        tracing::info!(actor = %stale.id, "the local copy is older than the newest snapshot: replaced");
                        state.actors.destroy(&stale).await?;
                    }
                    // Marked by the restore, with the snapshot it contains.
                    (snapshots::restore(&state, store, &engine_id, &manifest).await?, true)
                }
            }
        }
        (Some(actor), None) => (actor, marked),
        (None, None) => {
            let created_ms = u64::try_from(config.create_ts).unwrap_or_default();
            let created =
                state.actors.resolve_as(&namespace, &config.name, &key, &engine_id, created_ms, input.as_ref()).await;
            (created?, false)
        }
    };
    if !marked {
        snapshots::write_marker(&state, &actor.id, &engine_id, None).await;
    }
    // Booted now: the request that made the engine start it comes next.
    actor.vm(false).await?;
    link.placements.insert(Arc::new(Placement {
        engine_id,
        generation,
        actor,
        sleep_asked: AtomicBool::new(false),
        snapshotting: tokio::sync::Mutex::new(None),
    }));
    Ok(())
}

/// The engine stops an actor here: destroyed with its snapshots, or stopped and snapshotted
/// (it sleeps, or moves, or this host leaves).
pub(super) async fn stop(
    link: &Arc<Link>,
    engine_id: &str,
    generation: u32,
    reason: protocol::StopActorReason,
) -> Result<(), EngineError> {
    let state = link.state().ok_or(EngineError::ShuttingDown)?;
    let Some(placement) = link.placements.remove(engine_id, generation) else {
        tracing::debug!(engine_actor = %engine_id, generation, "stop of an actor not running here");
        return Ok(());
    };
    tracing::info!(engine_actor = %engine_id, actor = %placement.actor.id, ?reason, "the engine stops an actor here");
    if reason == protocol::StopActorReason::Destroy {
        state.actors.destroy(&placement.actor).await?;
        if let Some(store) = &link.options.snapshots {
            store.remove(engine_id).await?;
        }
        return Ok(());
    }
    placement.actor.stop().await;
    if let Some(store) = &link.options.snapshots {
        snapshots::take(link, store, &placement).await?;
    }
    Ok(())
}

/// Stops every actor placed here (this host leaves the engine), snapshotting each.
pub(super) async fn stop_all(link: &Arc<Link>) {
    let mut stops = tokio::task::JoinSet::new();
    for placement in link.placements.all() {
        let link = Arc::clone(link);
        stops.spawn(async move {
            let reason = protocol::StopActorReason::GoingAway;
            if let Err(e) = stop(&link, &placement.engine_id, placement.generation, reason).await {
                tracing::error!(engine_actor = %placement.engine_id, "stopping an actor as this host leaves: {e}");
            }
        });
    }
    while stops.join_next().await.is_some() {}
}
