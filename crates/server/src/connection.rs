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
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_protocol::{decode_to_server, encode_to_client, Encoding, Frame, ToClient, ToServer};
use agentvm_store::StoredEvent;
use agentvm_vm::{Filter, Item};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use agentvm_actors::{actions, events, Actor};

use crate::error::ApiError;
use crate::opening::{Opening, LOOKBACK, LOOKBACK_EVENTS};
use crate::AppState;

/// BARE version of the `Init` frame (identical bytes in versions 2 to 4).
const INIT_VERSION: u16 = 2;
/// When the actor goes away, how long actions still running get to send their answers.
const FINAL_REPLIES_WAIT: Duration = Duration::from_secs(5);

/// Serves a connection whose upgrade request arrived at `requested_at`; `client` is the
/// client's protocol version when its request told it (see [`crate::client_version`]).
pub async fn run(
    socket: WebSocket,
    state: Arc<AppState>,
    actor: Arc<Actor>,
    encoding: Encoding,
    client: Option<u16>,
    requested_at: Instant,
) {
    let (sink, stream) = socket.split();
    serve(sink, stream, state, actor, encoding, client, requested_at).await
}

/// Serves a connection over any transport (a WebSocket accepted here, or one the Rivet Engine's
/// gateway tunnels to this host, see `crate::engine`): `sink` and `stream` are its two directions.
pub async fn serve<S, R>(
    mut sink: S,
    mut stream: R,
    state: Arc<AppState>,
    actor: Arc<Actor>,
    encoding: Encoding,
    client: Option<u16>,
    requested_at: Instant,
) where
    S: futures_util::Sink<Message, Error = axum::Error> + Unpin + Send,
    R: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    // bare frames carry the client's version (and update this); json and cbor ones do not, so
    // the request's tells it (json answers `undefined` by version).
    let first = if encoding == Encoding::Bare { INIT_VERSION } else { client.unwrap_or(INIT_VERSION) };
    let version = Arc::new(AtomicU16::new(first));
    let subscriptions: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Only events of subscribed names enter this connection's queue (no copy of the others),
    // except during its opening window, which keeps the others for subscriptions to come.
    let window_open = Arc::new(AtomicBool::new(true));
    let (wanted, keeping) = (Arc::clone(&subscriptions), Arc::clone(&window_open));
    let filter: Filter =
        Box::new(move |event| keeping.load(Ordering::Relaxed) || wanted.lock().unwrap().contains(events::name(event)));
    let (replies, mut outgoing) = mpsc::unbounded_channel::<ToClient>();
    // Actions of this connection still running; aborted when the connection ends.
    let mut running: JoinSet<()> = JoinSet::new();
    let mut events = actor.subscribe(Some(filter));
    let mut opening = Opening::new(requested_at, lookback(&actor, requested_at, events.start()).await);
    let connection_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(actor = %actor.id, connection = %connection_id, encoding = encoding.as_str(), "connection opened");

    let init = ToClient::Init { actor_id: actor.id.clone(), connection_id: connection_id.clone() };
    if send(&mut sink, encoding, INIT_VERSION, &init).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            message = stream.next() => {
                // This frame and every one already arrived (subscriptions come in a burst when
                // the socket opens): what the opening window kept is released once, in order.
                let mut subscribed = HashSet::new();
                let mut next = Some(message);
                let mut ended = false;
                while let Some(message) = next.take() {
                    let payload: &[u8] = match &message {
                        Some(Ok(Message::Binary(payload))) => payload,
                        Some(Ok(Message::Text(text))) => text.as_bytes(),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => &[],
                        Some(Ok(Message::Close(_))) | None => {
                            ended = true;
                            break;
                        }
                        Some(Err(e)) => {
                            tracing::debug!(connection = %connection_id, "connection failed: {e}");
                            ended = true;
                            break;
                        }
                    };
                    if !payload.is_empty() {
                        let new = receive(payload, encoding, &state, &actor, &version, &subscriptions, &replies, &mut running);
                        subscribed.extend(new);
                    }
                    next = stream.next().now_or_never();
                }
                if opening.is_open() && !subscribed.is_empty() {
                    for (name, payload) in opening.release(&subscribed) {
                        let frame = ToClient::Event { name, args: vec![payload] };
                        if send(&mut sink, encoding, version.load(Ordering::Relaxed), &frame).await.is_err() {
                            ended = true;
                            break;
                        }
                    }
                }
                if ended {
                    break;
                }
            },
            () = sleep_until_closed(&opening) => {
                window_open.store(false, Ordering::Relaxed);
                opening.close();
            }
            // Reap finished action tasks so the set only holds running ones.
            Some(_) = running.join_next(), if !running.is_empty() => {}
            Some(reply) = outgoing.recv() => {
                if send(&mut sink, encoding, version.load(Ordering::Relaxed), &reply).await.is_err() {
                    break;
                }
            }
            item = events.next() => match item {
                Some(Item::Event(event)) => {
                    if !subscriptions.lock().unwrap().contains(events::name(&event.event)) {
                        opening.hold(event);
                        continue;
                    }
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
                    let deadline = Instant::now() + FINAL_REPLIES_WAIT;
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

/// The events of the lookback before `requested_at` (see [`crate::opening`]), up to `start`
/// (the first the connection receives live), read back from the VM's log.
async fn lookback(actor: &Actor, requested_at: Instant, start: u64) -> Vec<StoredEvent> {
    let since = requested_at.checked_sub(LOOKBACK).unwrap_or(requested_at);
    let from = actor.seq_since(since).max(start.saturating_sub(LOOKBACK_EVENTS as u64));
    if from >= start {
        return Vec::new();
    }
    match actor.events_after(from.checked_sub(1), (start - from) as usize).await {
        Ok(mut logged) => {
            logged.retain(|e| e.seq < start);
            logged
        }
        Err(e) => {
            tracing::warn!(actor = %actor.id, "reading the events before a connection opened: {e}");
            Vec::new()
        }
    }
}

/// Resolves when the opening window closes (never once it is closed).
async fn sleep_until_closed(opening: &Opening) {
    match opening.closes_at() {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Handles one frame from the client; returns the event name it subscribed to, if it did so
/// just now.
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
) -> Option<String> {
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
            return None;
        }
    };
    match message {
        ToServer::SubscriptionRequest { event_name, subscribe } => {
            let mut set = subscriptions.lock().unwrap();
            if subscribe {
                if set.insert(event_name.clone()) {
                    return Some(event_name);
                }
            } else {
                set.remove(&event_name);
            }
            None
        }
        ToServer::ActionRequest { id, name, args } => {
            let limit = state.config.max_actions_per_connection;
            while running.try_join_next().is_some() {}
            if running.len() >= limit {
                let error = ApiError::too_many_actions(limit);
                let _ = replies.send(ToClient::Error { error: error.body(), action_id: Some(id) });
                return None;
            }
            let (state, actor, replies) = (Arc::clone(state), Arc::clone(actor), replies.clone());
            running.spawn(async move {
                let reply = match actions::dispatch(&state.actors, &actor, &name, &args).await {
                    Ok(output) => ToClient::ActionResponse { id, output },
                    Err(error) => ToClient::Error { error: ApiError::from(error).body(), action_id: Some(id) },
                };
                let _ = replies.send(reply);
            });
            None
        }
    }
}

async fn send<S: futures_util::Sink<Message, Error = axum::Error> + Unpin>(
    sink: &mut S,
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
