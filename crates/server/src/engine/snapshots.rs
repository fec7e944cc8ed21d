//! Taking an actor's snapshot (when it stops here, and every `snapshot_interval` while it is
//! awake) and restoring one, and the marker that says which snapshot this host's copy of an
//! actor already contains.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Instant;

use agentvm_protocol::keys;
use agentvm_snapshot::{pack, unpack, Manifest, Part, SnapshotActor, SnapshotStore};
use serde::{Deserialize, Serialize};

use super::placement::Placement;
use super::{EngineError, Link};
use crate::AppState;

/// The marker's file name in an actor's state directory (never part of a snapshot).
pub(super) const MARKER: &str = "engine.json";

/// Which engine actor this host's copy belongs to, and the newest snapshot it contains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Marker {
    pub engine_actor_id: String,
    pub snapshot: Option<u64>,
}

pub(super) async fn read_marker(state: &AppState, actor_id: &str) -> Option<Marker> {
    let path = state.actors.state_dir(actor_id).join(MARKER);
    let bytes = tokio::fs::read(&path).await.ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) async fn write_marker(state: &AppState, actor_id: &str, engine_id: &str, snapshot: Option<u64>) {
    let path = state.actors.state_dir(actor_id).join(MARKER);
    let marker = Marker { engine_actor_id: engine_id.to_string(), snapshot };
    let Ok(json) = serde_json::to_vec(&marker) else { return };
    let temporary = path.with_extension("json.new");
    let written = async {
        tokio::fs::write(&temporary, json).await?;
        tokio::fs::rename(&temporary, &path).await
    };
    if let Err(e) = written.await {
        tracing::error!(path = %path.display(), "writing the engine marker: {e}");
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Takes a snapshot of a placed actor and stores it as its newest. Refused when a newer start
/// of the actor (on another host) already stored one: this host's copy is then stale.
pub(super) async fn take(
    link: &Arc<Link>,
    store: &SnapshotStore,
    placement: &Placement,
) -> Result<Manifest, EngineError> {
    let state = link.state().ok_or(EngineError::ShuttingDown)?;
    let mut last = placement.snapshotting.lock().await;
    let began = tokio::time::Instant::now();
    let started = Instant::now();
    let engine_id = &placement.engine_id;
    let previous = store.latest(engine_id).await?;
    if let Some(newer) = previous.as_ref().filter(|p| p.generation > placement.generation) {
        return Err(EngineError::Fenced {
            sequence: newer.sequence,
            newer: newer.generation,
            ours: placement.generation,
            host: newer.host.clone(),
        });
    }
    let sequence = previous.as_ref().map_or(1, |p| p.sequence + 1);
    let staging = state.config.data_dir.join("snapshots").join(format!("{engine_id}-{sequence}"));
    let _ = tokio::fs::remove_dir_all(&staging).await;
    tokio::fs::create_dir_all(&staging)
        .await
        .map_err(|source| EngineError::Io { context: format!("creating {}", staging.display()), source })?;
    let result = take_in(&state, store, placement, &staging, sequence, previous.as_ref()).await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let manifest = result?;
    // Changes from here on go into the next one.
    *last = Some(began);
    write_marker(&state, &placement.actor.id, engine_id, Some(sequence)).await;
    let bytes: u64 = manifest.parts.iter().map(|p| p.bytes).sum();
    tracing::info!(
        engine_actor = %engine_id, actor = %placement.actor.id, sequence, bytes,
        point_in_time = manifest.point_in_time, ms = started.elapsed().as_millis() as u64,
        "snapshot stored"
    );
    Ok(manifest)
}

async fn take_in(
    state: &AppState,
    store: &SnapshotStore,
    placement: &Placement,
    staging: &Path,
    sequence: u64,
    previous: Option<&Manifest>,
) -> Result<Manifest, EngineError> {
    let actor = &placement.actor;
    let awake = actor.is_awake();
    let tag = format!("{sequence}-{}", now_ms());
    let captured = actor.capture(staging, &tag, &[MARKER]).await?;
    let (state_tar, upper_tar) = (staging.join("state.tar"), staging.join("upper.tar"));
    let state_bytes = pack(&captured.state, &state_tar).await?;
    let upper_bytes = pack(captured.upper(), &upper_tar).await?;
    let point_in_time = captured.is_point_in_time() || !awake;
    drop(captured);
    let host = link_host(state);
    let manifest = Manifest {
        format: agentvm_snapshot::FORMAT,
        sequence,
        taken_ms: now_ms(),
        host,
        generation: placement.generation,
        point_in_time,
        actor: SnapshotActor {
            id: actor.id.clone(),
            namespace: actor.namespace.clone(),
            name: actor.name.clone(),
            key: keys::to_rest(&actor.key),
            created_ms: actor.created_ms,
        },
        parts: vec![
            Part { name: "state".into(), bytes: state_bytes },
            Part { name: "upper".into(), bytes: upper_bytes },
        ],
    };
    let files: [(&str, &Path); 2] = [("state", &state_tar), ("upper", &upper_tar)];
    store.put(&placement.engine_id, &manifest, &files, previous).await?;
    Ok(manifest)
}

/// This host's name in manifests (its envoy key when connected).
fn link_host(state: &AppState) -> String {
    state.engine.get().and_then(|link| link.handle.get().map(|h| h.get_envoy_key().to_string())).unwrap_or_default()
}

/// Makes the actor of a stored snapshot here: its parts unpacked, the actor registered under
/// the id it had.
pub(super) async fn restore(
    state: &Arc<AppState>,
    store: &SnapshotStore,
    engine_id: &str,
    manifest: &Manifest,
) -> Result<Arc<agentvm_actors::Actor>, EngineError> {
    let started = Instant::now();
    let target = state.actors.prepare_restore(&manifest.actor.id).await?;
    for part in &manifest.parts {
        let dir = match part.name.as_str() {
            "state" => &target.state,
            "upper" => &target.upper,
            other => {
                return Err(EngineError::UnknownPart {
                    actor: engine_id.to_string(),
                    sequence: manifest.sequence,
                    part: other.to_string(),
                })
            }
        };
        unpack(store.part(engine_id, manifest, &part.name).await?, dir).await?;
    }
    let a = &manifest.actor;
    let key = keys::from_rest(&a.key);
    let actor = state.actors.restore(&a.namespace, &a.name, &key, &a.id, a.created_ms).await?;
    write_marker(state, &actor.id, engine_id, Some(manifest.sequence)).await;
    let bytes: u64 = manifest.parts.iter().map(|p| p.bytes).sum();
    tracing::info!(
        engine_actor = %engine_id, actor = %actor.id, sequence = manifest.sequence, from = %manifest.host, bytes,
        ms = started.elapsed().as_millis() as u64, "restored from a snapshot"
    );
    Ok(actor)
}

/// Snapshots every awake placed actor every `snapshot_interval`, until the link goes away.
pub(super) async fn run_periodic(link: Weak<Link>) {
    let Some((interval, store)) =
        link.upgrade().and_then(|l| Some((l.options.snapshot_interval, l.options.snapshots.clone()?)))
    else {
        return;
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(link) = link.upgrade() else { return };
        for placement in link.placements.all() {
            // Awake and possibly changed since its last snapshot (a sleeping VM was
            // snapshotted when it stopped).
            let last = *placement.snapshotting.lock().await;
            let changed = last.is_none_or(|at| placement.actor.active_since(at.into_std()));
            if !placement.actor.is_awake() || !changed {
                continue;
            }
            if let Err(e) = take(&link, &store, &placement).await {
                tracing::error!(engine_actor = %placement.engine_id, "periodic snapshot: {e}");
            }
        }
    }
}
