//! What the engine asks of this host (`EnvoyCallbacks`): start an actor, stop it, serve a
//! tunnelled request or WebSocket. Each callback only translates; the work is in `placement`,
//! `snapshots` and `tunnel`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use agentvm_actors::Actor;
use anyhow::anyhow;
use rivet_envoy_client::config::{ActorStopHandle, BoxFuture, EnvoyCallbacks, HttpRequest, HttpResponse};
use rivet_envoy_client::handle::EnvoyHandle;
use rivet_envoy_client::websocket::{WebSocketHandler, WebSocketSender};
use rivet_envoy_protocol as protocol;

use super::{placement, tunnel, Link};
use crate::error::ApiError;
use crate::AppState;

pub(super) struct Callbacks {
    pub(super) link: Weak<Link>,
}

/// The server's state and the actor a tunnelled request is for (or why it does not run here).
type Serving = (Arc<AppState>, Result<Arc<Actor>, ApiError>);

impl Callbacks {
    fn link(&self) -> anyhow::Result<Arc<Link>> {
        self.link.upgrade().ok_or_else(|| anyhow!("the server is shutting down"))
    }

    /// What a tunnelled request needs: the server's state, and the actor it is for (or the
    /// error that it does not run here).
    fn serving(&self, actor_id: &str) -> anyhow::Result<Serving> {
        let link = self.link()?;
        let state = link.state().ok_or_else(|| anyhow!("the server is shutting down"))?;
        Ok((state, link.placements.actor(actor_id)))
    }
}

/// Asks the engine to put an idle actor to sleep (once per idle spell): the engine answers
/// with a stop, unless a request is on its way.
pub(super) fn request_sleep(link: &Arc<Link>, actor: &Arc<Actor>) {
    let Some((engine_id, generation)) = link.placements.sleep_once(&actor.id) else { return };
    let Some(handle) = link.handle.get() else { return };
    tracing::info!(actor = %actor.id, engine_actor = %engine_id, "VM idle: asking the engine to sleep it");
    handle.sleep_actor(engine_id, Some(generation), None);
}

/// A client destroyed an actor here (its `destroy` action): the engine destroys its actor,
/// and its snapshots go.
pub(super) fn request_destroy(link: &Arc<Link>, actor: &Arc<Actor>) {
    let Some((engine_id, generation)) = link.placements.forget(&actor.id) else { return };
    tracing::info!(actor = %actor.id, engine_actor = %engine_id, "destroyed by a client: asking the engine to destroy its actor");
    if let Some(handle) = link.handle.get() {
        handle.stop_actor(engine_id.clone(), Some(generation));
    }
    if let Some(store) = link.options.snapshots.clone() {
        tokio::spawn(async move {
            if let Err(e) = store.remove(&engine_id).await {
                tracing::error!(engine_actor = %engine_id, "removing the snapshots of a destroyed actor: {e}");
            }
        });
    }
}

impl EnvoyCallbacks for Callbacks {
    fn on_connect(&self, handle: EnvoyHandle) {
        if let Some(link) = self.link.upgrade() {
            link.connected.store(true, Ordering::SeqCst);
            let n = link.connects.fetch_add(1, Ordering::SeqCst) + 1;
            tracing::info!(
                endpoint = %handle.endpoint(), pool = %handle.pool_name(), namespace = %handle.namespace(),
                envoy_key = %handle.get_envoy_key(), connection = n,
                "registered with the engine as a host"
            );
        }
    }

    fn on_disconnect(&self, handle: EnvoyHandle) {
        if let Some(link) = self.link.upgrade() {
            link.connected.store(false, Ordering::SeqCst);
            tracing::warn!(endpoint = %handle.endpoint(), "lost the engine connection: VMs keep running, reconnecting");
        }
    }

    fn on_shutdown(&self) {
        tracing::info!("the engine link is closed");
    }

    fn on_actor_start(
        &self,
        _handle: EnvoyHandle,
        actor_id: String,
        generation: u32,
        config: protocol::ActorConfig,
        _preloaded_kv: Option<protocol::PreloadedKv>,
    ) -> BoxFuture<anyhow::Result<()>> {
        let link = self.link();
        Box::pin(async move {
            let link = link?;
            Ok(placement::start(&link, actor_id, generation, config).await?)
        })
    }

    fn on_actor_stop_with_completion(
        &self,
        _handle: EnvoyHandle,
        actor_id: String,
        generation: u32,
        reason: protocol::StopActorReason,
        stop_handle: ActorStopHandle,
    ) -> BoxFuture<anyhow::Result<()>> {
        let link = self.link();
        Box::pin(async move {
            let link = link?;
            // The stop (a VM shutdown, a snapshot upload) takes a while: the envoy's actor loop
            // goes on meanwhile and reports the stop when the handle completes.
            tokio::spawn(async move {
                let result = placement::stop(&link, &actor_id, generation, reason).await;
                stop_handle.finish(result.map_err(anyhow::Error::from));
            });
            Ok(())
        })
    }

    fn fetch(
        &self,
        _handle: EnvoyHandle,
        actor_id: String,
        _gateway_id: protocol::GatewayId,
        _request_id: protocol::RequestId,
        request: HttpRequest,
    ) -> BoxFuture<anyhow::Result<HttpResponse>> {
        let serving = self.serving(&actor_id);
        Box::pin(async move {
            let (state, actor) = serving?;
            Ok(tunnel::http(&state, actor, request).await)
        })
    }

    fn websocket(
        &self,
        _handle: EnvoyHandle,
        actor_id: String,
        _gateway_id: protocol::GatewayId,
        _request_id: protocol::RequestId,
        _request: HttpRequest,
        path: String,
        headers: HashMap<String, String>,
        _is_hibernatable: bool,
        _is_restoring_hibernatable: bool,
        sender: WebSocketSender,
    ) -> BoxFuture<anyhow::Result<WebSocketHandler>> {
        let serving = self.serving(&actor_id);
        Box::pin(async move {
            let (state, actor) = serving?;
            Ok(tunnel::websocket(state, actor, &path, &headers, sender))
        })
    }

    fn can_hibernate(
        &self,
        _actor_id: &str,
        _gateway_id: &protocol::GatewayId,
        _request_id: &protocol::RequestId,
        _request: &HttpRequest,
    ) -> BoxFuture<anyhow::Result<bool>> {
        // A connection holds the VM awake (it may be subscribed to a process's output); the
        // client reconnects after a sleep, as it does against the built-in server.
        Box::pin(async { Ok(false) })
    }
}
