//! Requests the engine's gateway tunnels to this host, served by the same code as the built-in
//! routes: an HTTP action goes through the gateway routes (`routes::tunnel_router`), a
//! WebSocket through `connection::serve` over the envoy's message channel.
//!
//! Tunnelled requests skip this server's token check: clients authenticated with the engine,
//! and only the engine reaches this host's envoy link.

use std::collections::HashMap;
use std::sync::Arc;

use agentvm_actors::Actor;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use rivet_envoy_client::config::{HttpRequest, HttpResponse};
use rivet_envoy_client::websocket::{WebSocketHandler, WebSocketSender};
use tokio::sync::mpsc;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::{client_version, connection, gateway, routes, AppState};

/// Marks a request as tunnelled by the engine (an extension only this module inserts).
#[derive(Debug, Clone, Copy)]
pub struct Tunnelled;

/// Serves a tunnelled HTTP request for `actor` (or answers the error that it is not here).
pub(super) async fn http(
    state: &Arc<AppState>,
    actor: Result<Arc<Actor>, ApiError>,
    request: HttpRequest,
) -> HttpResponse {
    let response = match actor {
        Ok(actor) => match to_axum(state, &actor, request).await {
            Ok(request) => match routes::tunnel_router(Arc::clone(state)).oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            Err(error) => error.into_response(),
        },
        Err(error) => error.into_response(),
    };
    from_axum(response, state.config.max_body_bytes).await
}

/// The tunnelled request as a request for the gateway route of `actor` (by its id).
async fn to_axum(state: &AppState, actor: &Actor, mut request: HttpRequest) -> Result<Request<Body>, ApiError> {
    let mut body = request.body.take().unwrap_or_default();
    if let Some(mut stream) = request.body_stream.take() {
        while let Some(chunk) =
            stream.recv().await.map_err(|e| ApiError::invalid_request(format!("reading the request body: {e}")))?
        {
            if body.len() + chunk.len() > state.config.max_body_bytes {
                return Err(ApiError::too_large(state.config.max_body_bytes));
            }
            body.extend_from_slice(&chunk);
        }
    }
    let path = if request.path.starts_with('/') { request.path.clone() } else { format!("/{}", request.path) };
    let uri = format!("/gateway/{}{path}", actor.id);
    let mut built = Request::builder()
        .method(request.method.as_str())
        .uri(uri)
        .body(Body::from(body))
        .map_err(|e| ApiError::invalid_request(format!("tunnelled request: {e}")))?;
    *built.headers_mut() = header_map(&request.headers);
    built.extensions_mut().insert(Tunnelled);
    Ok(built)
}

fn header_map(headers: &HashMap<String, String>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            map.append(name, value);
        }
    }
    map
}

async fn from_axum(response: Response, limit: usize) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else { continue };
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| *v = format!("{v}, {value}"))
            .or_insert_with(|| value.to_string());
    }
    // Bodies are bounded by the action's own limits (`exec` keeps at most its output limit).
    let body = match axum::body::to_bytes(body, limit.saturating_mul(4)).await {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => {
            tracing::error!("reading a tunnelled response: {e}");
            return HttpResponse { status: 500, headers: HashMap::new(), body: None, body_stream: None };
        }
    };
    HttpResponse { status: parts.status.as_u16(), headers, body: Some(body), body_stream: None }
}

/// Serves a tunnelled WebSocket of `actor`: frames from the engine go into a channel the
/// connection reads, the connection's frames go back through `sender`.
pub(super) fn websocket(
    state: Arc<AppState>,
    actor: Result<Arc<Actor>, ApiError>,
    path: &str,
    headers: &HashMap<String, String>,
    _sender: WebSocketSender,
) -> WebSocketHandler {
    let requested_at = tokio::time::Instant::now();
    let headers = header_map(headers);
    let opened = actor.and_then(|actor| {
        let encoding = routes::websocket_encoding(&headers)?;
        let query = path.split_once('?').map(|(_, q)| q);
        let addressed = gateway::parse(&actor.id, query.filter(|q| !q.contains("rvt-")))?;
        let client = client_version::of_request(&addressed, &headers).unwrap_or(client_version::ENGINE_CLIENTS);
        Ok((actor, encoding, Some(client)))
    });
    let (incoming, frames) = mpsc::unbounded_channel::<Result<Message, axum::Error>>();
    let on_message_tx = incoming.clone();
    WebSocketHandler {
        on_message: Box::new(move |message| {
            let frame = if message.binary {
                Message::Binary(message.data.into())
            } else {
                Message::Text(String::from_utf8_lossy(&message.data).into_owned().into())
            };
            let _ = on_message_tx.send(Ok(frame));
            Box::pin(async {})
        }),
        on_close: Box::new(move |_code, _reason| {
            let _ = incoming.send(Ok(Message::Close(None)));
            Box::pin(async {})
        }),
        on_open: Some(Box::new(move |sender| {
            Box::pin(async move {
                match opened {
                    Ok((actor, encoding, client)) => {
                        tokio::spawn(serve(state, actor, encoding, client, requested_at, sender, frames));
                    }
                    Err(error) => sender.close(Some(1011), Some(format!("{}.{}", error.group, error.code))),
                }
            })
        })),
    }
}

async fn serve(
    state: Arc<AppState>,
    actor: Arc<Actor>,
    encoding: agentvm_protocol::Encoding,
    client: Option<u16>,
    requested_at: tokio::time::Instant,
    sender: WebSocketSender,
    frames: mpsc::UnboundedReceiver<Result<Message, axum::Error>>,
) {
    let stream =
        futures_util::stream::unfold(frames, |mut frames| async move { frames.recv().await.map(|f| (f, frames)) });
    let sink = futures_util::sink::unfold(sender.clone(), |sender, message: Message| async move {
        match message {
            Message::Text(text) => sender.send(text.as_bytes().to_vec(), false),
            Message::Binary(bytes) => sender.send(bytes.to_vec(), true),
            Message::Close(frame) => {
                let (code, reason) =
                    frame.map_or((1000, String::new()), |CloseFrame { code, reason }| (code, reason.to_string()));
                sender.close(Some(code), Some(reason));
            }
            Message::Ping(_) | Message::Pong(_) => {}
        }
        // Written to the engine before the next: a slow tunnel slows the connection down.
        sender.flush().await;
        Ok::<_, axum::Error>(sender)
    });
    connection::serve(Box::pin(sink), stream.boxed(), state, actor, encoding, client, requested_at).await;
    sender.close(Some(1000), None);
}
