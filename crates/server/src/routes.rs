//! HTTP routes: manager endpoints (`/metadata`, `/actors`) and the gateway
//! (`/gateway/{actor}/action/{name}`, `/gateway/{actor}/connect`).

use agentvm_actors::cron::Clock as _;
use std::sync::Arc;

use agentvm_protocol::{decode_action_request, encode_action_response_parts, Encoding};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::client_version;
use crate::connection;
use crate::error::ApiError;
use crate::exposure::{self, Gate};
use crate::gateway::{self, Target, DEFAULT_NAMESPACE};
use crate::AppState;
use agentvm_actors::{actions, Actor};
use agentvm_protocol::keys;

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    let gate = Arc::new(Gate::new(state.config.exposure.clone(), state.config.listen.ip()));
    Router::new()
        .route("/metadata", get(metadata))
        .route("/health", get(health))
        .route("/actors", get(list_actors).put(get_or_create_actor).post(create_actor))
        .route("/actors/{id}", delete(destroy_actor))
        .route("/gateway/{segment}/action/{name}", post(http_action))
        .route("/gateway/{segment}/connect", get(connect))
        .route("/gateway/{segment}/{*rest}", any(gateway_unsupported))
        .route("/debug/clock", get(clock).post(move_clock))
        .merge(crate::inspector::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(exposure::require_preflighted_body))
        .layer(exposure::cors(Arc::clone(&gate)))
        // Outermost: the browser boundary runs before CORS, routes and token checks.
        .layer(axum::middleware::from_fn_with_state(gate, exposure::guard))
        // Preview URLs, outside the layers above: their token is the credential (see `preview`).
        .merge(crate::preview::routes())
        .with_state(state)
}

/// The gateway routes alone, for requests the Rivet Engine tunnels to this host (see
/// `crate::engine`): the same handlers as [`router`]'s, without the browser boundary (the
/// engine is the front door).
pub fn tunnel_router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/gateway/{segment}/action/{name}", post(http_action))
        .route("/gateway/{segment}/{*rest}", any(gateway_unsupported))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// What the RivetKit client reads first (and waits for before any other call). `actorNames`
/// are the config file's presets (`vm` without a file, when any name is served).
async fn metadata(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let presets = state.actors.presets();
    let names: Vec<String> = if presets.any_name() { vec!["vm".into()] } else { presets.names() };
    let actor_names: serde_json::Map<String, serde_json::Value> =
        names.into_iter().map(|name| (name, json!({"metadata": {}}))).collect();
    Json(json!({
        "runtime": "rivetkit",
        "version": "2.3.19",
        "envoy": {"kind": {"normal": {}}},
        "envoyProtocolVersion": 1,
        "actorNames": actor_names,
        "agentvm": {"version": env!("CARGO_PKG_VERSION")},
    }))
}

/// `GET /health`: the server is up; with `--engine`, `engine` says whether its link is.
async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let mut health = json!({"status": "ok", "runtime": "agentvm", "version": env!("CARGO_PKG_VERSION")});
    if let Some(link) = state.engine.get() {
        health["engine"] = link.status();
    }
    Json(health)
}

/// `GET /debug/clock` → `{now}`: cron's clock, in milliseconds since the Unix epoch.
async fn clock(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, None)?;
    let now = match &state.manual_clock {
        Some(clock) => clock.now_ms(),
        None => state.actors.cron().clock().now_ms(),
    };
    Ok(Json(json!({"now": now, "manual": state.manual_clock.is_some()})))
}

/// `POST /debug/clock {now} | {advanceMs}` → `{now}`: moves cron's manual clock (only on a
/// server started with `--manual-clock`; tests use it to run "every minute" without waiting).
async fn move_clock(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, None)?;
    let Some(clock) = &state.manual_clock else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "request",
            "no_manual_clock",
            "this server runs cron on the system clock; start it with --manual-clock to move it".to_string(),
        ));
    };
    let bad = |message: &str| ApiError::new(StatusCode::BAD_REQUEST, "request", "invalid_body", message.to_string());
    let request: serde_json::Value = serde_json::from_slice(&body).map_err(|e| bad(&format!("expected JSON: {e}")))?;
    let now = match (request["now"].as_u64(), request["advanceMs"].as_u64()) {
        (Some(now), None) => {
            clock.set(now);
            now
        }
        (None, Some(by)) => clock.advance(by),
        _ => return Err(bad("expected {\"now\": <ms since the epoch>} or {\"advanceMs\": <ms>}")),
    };
    Ok(Json(json!({"now": now})))
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "request", "not_found", format!("no route for {method} {}", uri.path()))
}

async fn gateway_unsupported(Path((_, rest)): Path<(String, String)>) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "request",
        "not_found",
        format!("gateway path `/{rest}` is not supported: use `action/<name>` or `connect`"),
    )
}

/// Checks the server token, when one is configured.
pub fn authorize(state: &AppState, headers: &HeaderMap, given: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = state.config.token.as_deref() else { return Ok(()) };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
    let offered = [given, header("x-rivet-token"), bearer];
    if offered.into_iter().flatten().any(|t| constant_time_eq(t.as_bytes(), expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The actor a gateway request addresses (created by `getOrCreate`, with its `rvt-input`).
pub async fn resolve_addressed(state: &AppState, addressed: &gateway::Addressed) -> Result<Arc<Actor>, ApiError> {
    let input = addressed.input.as_deref().map(agentvm_protocol::decode_input).transpose()?;
    resolve_with(state, &addressed.target, input.as_ref()).await
}

/// The actor `target` names (created by `getOrCreate`, without input).
pub async fn resolve(state: &AppState, target: &Target) -> Result<Arc<Actor>, ApiError> {
    resolve_with(state, target, None).await
}

async fn resolve_with(
    state: &AppState,
    target: &Target,
    input: Option<&agentvm_protocol::Value>,
) -> Result<Arc<Actor>, ApiError> {
    match target {
        Target::Name { namespace, name, key, create } => {
            Ok(state.actors.resolve(namespace, name, key, *create, input).await?.0)
        }
        Target::Id(id) => Ok(state.actors.by_id(id)?),
    }
}

/// A stateless action: `POST /gateway/{actor}/action/{name}`.
async fn http_action(
    State(state): State<Arc<AppState>>,
    Path((segment, name)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    tunnelled: Option<axum::Extension<crate::engine::Tunnelled>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let tunnelled = tunnelled.is_some();
    match run_http_action(&state, &segment, &name, query.as_deref(), tunnelled, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run_http_action(
    state: &AppState,
    segment: &str,
    name: &str,
    query: Option<&str>,
    tunnelled: bool,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let addressed = gateway::parse(segment, query)?;
    // The engine authenticated a tunnelled request's client (see `crate::engine::tunnel`).
    if !tunnelled {
        authorize(state, headers, addressed.token.as_deref())?;
    }
    // Without the header, JSON (the exposure gate let the body in only as `application/json`).
    let encoding = match headers.get("x-rivet-encoding").and_then(|v| v.to_str().ok()) {
        Some(value) => Encoding::parse(value)?,
        None => Encoding::Json,
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(state.config.max_body_bytes)
        } else {
            ApiError::invalid_request(format!("reading the request body: {rejection}"))
        }
    })?;
    let actor = resolve_addressed(state, &addressed).await?;
    let (version, args) = decode_action_request(encoding, &body)?;
    // json bodies carry no version, yet a void action's answer depends on it.
    let version = match encoding {
        Encoding::Json => {
            client_version::of_request(&addressed, headers).or(tunnelled.then_some(client_version::ENGINE_CLIENTS))
        }
        Encoding::Bare | Encoding::Cbor => version,
    };
    let output = actions::dispatch(&state.actors, &actor, name, &args).await?;
    let content_type = if encoding == Encoding::Json { "application/json" } else { "application/octet-stream" };
    let mut response = response_body(encode_action_response_parts(encoding, version, output));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(id) = HeaderValue::from_str(&actor.id) {
        response.headers_mut().insert("x-rivet-actor", id);
    }
    Ok(response)
}

/// An action's answer from its parts (see [`encode_action_response_parts`]): large outputs are
/// sent from where they are, without being copied into one buffer first. The length is known,
/// so the answer has a `Content-Length` like any other.
fn response_body(mut parts: Vec<Vec<u8>>) -> Response {
    if parts.len() == 1 {
        return parts.pop().unwrap_or_default().into_response();
    }
    let length = parts.iter().map(Vec::len).sum::<usize>();
    let chunks = parts.into_iter().map(|part| Ok::<_, std::convert::Infallible>(Bytes::from(part)));
    let mut response = Body::from_stream(futures_util::stream::iter(chunks)).into_response();
    response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// A WebSocket connection: `GET /gateway/{actor}/connect`.
async fn connect(
    State(state): State<Arc<AppState>>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The connection's opening window is counted from here (see `opening`).
    let requested_at = tokio::time::Instant::now();
    let opened = (|| {
        let encoding = websocket_encoding(&headers)?;
        let addressed = gateway::parse(&segment, query.as_deref())?;
        let token = addressed.token.clone().or_else(|| subprotocol(&headers, "rivet_token."));
        authorize(&state, &headers, token.as_deref())?;
        let client = client_version::of_request(&addressed, &headers);
        Ok::<_, ApiError>((encoding, addressed, client))
    })();
    let opened = match opened {
        Ok((encoding, addressed, client)) => {
            resolve_addressed(&state, &addressed).await.map(|actor| (encoding, actor, client))
        }
        Err(error) => Err(error),
    };
    let limit = state.config.max_message_bytes;
    upgrade.protocols(["rivet"]).max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| async move {
        match opened {
            Ok((encoding, actor, client)) => {
                connection::run(socket, state, actor, encoding, client, requested_at).await
            }
            // As the engine does: complete the upgrade, then close with the reason.
            Err(error) => connection::refuse(socket, &error).await,
        }
    })
}

/// The value of the WebSocket subprotocol that starts with `prefix` (`rivet_encoding.`,
/// `rivet_token.`), if the client offered one.
fn subprotocol(headers: &HeaderMap, prefix: &str) -> Option<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(prefix).map(str::to_string))
}

/// A connection's encoding, from its `rivet_encoding.*` subprotocol (JSON without one).
pub fn websocket_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    match subprotocol(headers, "rivet_encoding.") {
        Some(e) => Ok(Encoding::parse(&e)?),
        None => Ok(Encoding::Json),
    }
}

#[derive(Deserialize)]
struct NamespaceQuery {
    namespace: Option<String>,
    name: Option<String>,
    key: Option<String>,
    actor_ids: Option<String>,
}

#[derive(Deserialize)]
struct ActorRequest {
    name: String,
    key: Option<String>,
    /// The creation input: standard base64 of CBOR (see `agentvm_protocol::decode_input`).
    input: Option<String>,
}

fn rest_namespace(query: &NamespaceQuery) -> &str {
    query.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(DEFAULT_NAMESPACE)
}

fn parse_actor_request(body: &Bytes) -> Result<ActorRequest, ApiError> {
    let request: ActorRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid_request(format!("invalid actor request: {e}")))?;
    if request.name.is_empty() {
        return Err(ApiError::invalid_request("actor name must not be empty"));
    }
    Ok(request)
}

/// The actor a `PUT`/`POST /actors` body names, created if missing; and whether it was new.
async fn actor_from_request(
    state: &AppState,
    query: &NamespaceQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(Arc<Actor>, bool), ApiError> {
    authorize(state, headers, None)?;
    let request = parse_actor_request(body)?;
    let key = keys::from_rest(request.key.as_deref().unwrap_or("/"));
    let input = request.input.as_deref().map(agentvm_protocol::decode_input).transpose()?;
    Ok(state.actors.resolve(rest_namespace(query), &request.name, &key, true, input.as_ref()).await?)
}

/// `PUT /actors`: get or create.
async fn get_or_create_actor(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (actor, created) = actor_from_request(&state, &query, &headers, &body).await?;
    Ok(Json(json!({"actor": record(&actor), "created": created})))
}

/// `POST /actors`: create; an existing actor with the same key is an error.
async fn create_actor(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (actor, created) = actor_from_request(&state, &query, &headers, &body).await?;
    if !created {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "actor",
            "duplicate_key",
            format!("an actor named {} with key {} already exists", actor.name, keys::to_rest(&actor.key)),
        ));
    }
    Ok(Json(json!({"actor": record(&actor)})))
}

/// `GET /actors`: by `actor_ids`, by `name` + `key`, or all of a `name`.
async fn list_actors(
    State(state): State<Arc<AppState>>,
    axum::extract::Query(query): axum::extract::Query<NamespaceQuery>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, None)?;
    let namespace = rest_namespace(&query);
    let actors: Vec<serde_json::Value> = if let Some(ids) = &query.actor_ids {
        ids.split(',').filter_map(|id| state.actors.by_id(id.trim()).ok()).map(|a| record(&a)).collect()
    } else if let (Some(name), Some(key)) = (&query.name, &query.key) {
        let key = keys::from_rest(key);
        state
            .actors
            .resolve(namespace, name, &key, false, None)
            .await
            .map(|(a, _)| vec![record(&a)])
            .unwrap_or_default()
    } else {
        state.actors.list(namespace, query.name.as_deref()).iter().map(|a| record(a)).collect()
    };
    Ok(Json(json!({"actors": actors, "pagination": {"cursor": null}})))
}

/// `DELETE /actors/{id}`: stop the VM and delete its data.
async fn destroy_actor(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, None)?;
    let actor = state.actors.by_id(&id)?;
    state.actors.destroy(&actor).await?;
    Ok(Json(json!({})))
}

/// An actor as the REST API describes it.
fn record(actor: &Actor) -> serde_json::Value {
    json!({
        "actor_id": actor.id,
        "name": actor.name,
        "key": keys::to_rest(&actor.key),
        "namespace_id": actor.namespace,
        "datacenter": "default",
        "runner_name_selector": "default",
        "crash_policy": "sleep",
        "create_ts": actor.created_ms,
        "start_ts": actor.created_ms,
        "pending_allocation_ts": null,
        "connectable_ts": actor.created_ms,
        "sleep_ts": null,
        "reschedule_ts": null,
        "destroy_ts": null,
    })
}
