//! One WebSocket connection: `Init` at once, then subscriptions, actions (answered by id, each
//! in its own task so a long wait never blocks the others) and the actor's events, forwarded
//! only when subscribed.
//!
//! Events reach the connection through its own bounded queue in the actor's event stream,
//! filtered by the subscribed names before anything is queued. A connection that reads slowly
//! slows the output producers down instead of losing events; one that stops reading for longer
//! than a grace period is detached, and what did not fit its queue is replaced by one
//! `streamError {code: "event_stream_lagged", skipped, resumeFrom}` event, in order (see
//! `agentvm_vm::EventLog`).
//!
//! A connection owns its actions: they run in a [`JoinSet`] that is aborted when the socket
//! closes, so an `exec` whose caller left is killed (its future is dropped, and `exec`'s
//! kill-on-drop guard SIGKILLs the command's process group) and no longer keeps the VM awake.
//! At most [`crate::ServerConfig::max_actions_per_connection`] run at once; more are refused
//! with `connection/too_many_actions`.
//!
//! Versions (bare encoding): `Init` goes out as version 2, which every client accepts; after
//! that every frame uses the version of the client's latest frame.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_protocol::{decode_to_server, encode_to_client, Encoding, Frame, ToClient, ToServer};
use agentvm_vm::{Filter, Item};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use agentvm_actors::{actions, events, Actor};

use crate::error::ApiError;
use crate::AppState;

/// BARE version of the `Init` frame (identical bytes in versions 2 to 4).
const INIT_VERSION: u16 = 2;
/// When the actor goes away, how long actions still running get to send their answers.
const FINAL_REPLIES_WAIT: Duration = Duration::from_secs(5);

pub async fn run(socket: WebSocket, state: Arc<AppState>, actor: Arc<Actor>, encoding: Encoding) {
    let (mut sink, mut stream) = socket.split();
    let version = Arc::new(AtomicU16::new(INIT_VERSION));
    let subscriptions: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Only events of subscribed names enter this connection's queue (no copy of the others).
    let wanted = Arc::clone(&subscriptions);
    let filter: Filter = Box::new(move |event| wanted.lock().unwrap().contains(events::name(event)));
    let (replies, mut outgoing) = mpsc::unbounded_channel::<ToClient>();
    // Actions of this connection still running; aborted when the connection ends.
    let mut running: JoinSet<()> = JoinSet::new();
    let mut events = actor.subscribe(Some(filter));
    let connection_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(actor = %actor.id, connection = %connection_id, encoding = encoding.as_str(), "connection opened");

    let init = ToClient::Init { actor_id: actor.id.clone(), connection_id: connection_id.clone() };
    if send(&mut sink, encoding, INIT_VERSION, &init).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(Ok(Message::Binary(payload))) => {
                    receive(&payload, encoding, &state, &actor, &version, &subscriptions, &replies, &mut running)
                }
                Some(Ok(Message::Text(text))) => {
                    receive(text.as_bytes(), encoding, &state, &actor, &version, &subscriptions, &replies, &mut running)
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => {
                    tracing::debug!(connection = %connection_id, "connection failed: {e}");
                    break;
                }
            },
            // Reap finished action tasks so the set only holds running ones.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            Some(reply) = outgoing.recv() => {
                if send(&mut sink, encoding, version.load(Ordering::Relaxed), &reply).await.is_err() {
                    break;
                }
            }
            item = events.next() => match item {
                Some(Item::Event(event)) => {
                    let (name, payload) = events::to_wire(&event.event);
                    let frame = ToClient::Event { name: name.to_string(), args: vec![payload] };
                    if send(&mut sink, encoding, version.load(Ordering::Relaxed), &frame).await.is_err() {
                        break;
                    }
                }
                Some(Item::Skipped(gap)) => {
                    // Sent whether or not the client subscribed to it: nothing is dropped
                    // without this notice.
                    tracing::warn!(connection = %connection_id, skipped = gap.count, from = gap.first_seq, "connection too slow: it missed events");
                    let (name, payload) = events::gap_to_wire(&gap);
                    let frame = ToClient::Event { name: name.to_string(), args: vec![payload] };
                    if send(&mut sink, encoding, version.load(Ordering::Relaxed), &frame).await.is_err() {
                        break;
                    }
                }
                None => {
                    // The actor's stream ended: it was destroyed. Answer the actions still
                    // running (the `destroy` itself, typically), then close with a reason clients
                    // understand; they reconnect, which gets or creates the actor again.
                    let deadline = tokio::time::Instant::now() + FINAL_REPLIES_WAIT;
                    let _ = tokio::time::timeout_at(deadline, async {
                        while running.join_next().await.is_some() {}
                    })
                    .await;
                    while let Ok(reply) = outgoing.try_recv() {
                        let _ = send(&mut sink, encoding, version.load(Ordering::Relaxed), &reply).await;
                    }
                    let close = CloseFrame { code: 1011, reason: "actor.destroyed".into() };
                    let _ = sink.send(Message::Close(Some(close))).await;
                    break;
                }
            },
        }
    }
    // Whatever still runs was for this connection only: stop it (an `exec` is killed).
    let abandoned = running.len();
    running.abort_all();
    while running.join_next().await.is_some() {}
    let _ = sink.close().await;
    tracing::debug!(connection = %connection_id, abandoned, "connection closed");
}

/// Handles one frame from the client.
#[allow(clippy::too_many_arguments, reason = "one frame touches every part of the connection's state")]
fn receive(
    payload: &[u8],
    encoding: Encoding,
    state: &Arc<AppState>,
    actor: &Arc<Actor>,
    version: &AtomicU16,
    subscriptions: &Mutex<HashSet<String>>,
    replies: &mpsc::UnboundedSender<ToClient>,
    running: &mut JoinSet<()>,
) {
    let message = match decode_to_server(encoding, payload) {
        Ok((frame_version, message)) => {
            if let Some(v) = frame_version {
                version.store(v, Ordering::Relaxed);
            }
            message
        }
        Err(e) => {
            // A connection-level error: the connection stays open for the next frame.
            let _ = replies.send(ToClient::Error { error: ApiError::from(e).body(), action_id: None });
            return;
        }
    };
    match message {
        ToServer::SubscriptionRequest { event_name, subscribe } => {
            let mut set = subscriptions.lock().unwrap();
            if subscribe {
                set.insert(event_name);
            } else {
                set.remove(&event_name);
            }
        }
        ToServer::ActionRequest { id, name, args } => {
            let limit = state.config.max_actions_per_connection;
            while running.try_join_next().is_some() {}
            if running.len() >= limit {
                let error = ApiError::too_many_actions(limit);
                let _ = replies.send(ToClient::Error { error: error.body(), action_id: Some(id) });
                return;
            }
            let (state, actor, replies) = (Arc::clone(state), Arc::clone(actor), replies.clone());
            running.spawn(async move {
                let reply = match actions::dispatch(&state.actors, &actor, &name, &args).await {
                    Ok(output) => ToClient::ActionResponse { id, output },
                    Err(error) => ToClient::Error { error: ApiError::from(error).body(), action_id: Some(id) },
                };
                let _ = replies.send(reply);
            });
        }
    }
}

async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    encoding: Encoding,
    version: u16,
    message: &ToClient,
) -> Result<(), axum::Error> {
    let message = match encode_to_client(encoding, version, message) {
        Frame::Text(text) => Message::Text(text.into()),
        Frame::Binary(bytes) => Message::Binary(bytes.into()),
    };
    sink.send(message).await
}

/// Refuses a connection after the upgrade: close 1011 with `group.code` as the reason.
pub async fn refuse(mut socket: WebSocket, error: &ApiError) {
    let reason = format!("{}.{}", error.group, error.code);
    let _ = socket.send(Message::Close(Some(CloseFrame { code: 1011, reason: reason.into() }))).await;
}
