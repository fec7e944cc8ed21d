//! The web inspector's routes: `GET /` (its page), `GET /inspector/{path}` (its modules, styles
//! and the libraries it uses, all built into the binary by `agentvm-inspector`) and
//! `GET /inspector/api/vms` (every VM with its actor name, key and phase). The page uses the
//! ordinary API for everything else. The files carry no data and need no token; the list of VMs
//! does, like every other route. The router's browser guards (Host, Origin) apply to all of it:
//! the page's own origin is the server's, which they allow.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::error::ApiError;
use crate::routes::authorize;
use crate::AppState;

/// What the pages may load and connect to: only this server (xterm.js sets inline styles).
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/inspector", get(index))
        .route("/inspector/api/vms", get(vms))
        .route("/inspector/{*path}", get(file))
}

async fn index() -> Response {
    serve(agentvm_inspector::INDEX)
}

async fn file(Path(path): Path<String>) -> Response {
    match agentvm_inspector::asset(&path) {
        Some(asset) => serve(asset),
        None => ApiError::new(StatusCode::NOT_FOUND, "request", "not_found", format!("no inspector file {path:?}"))
            .into_response(),
    }
}

fn serve(asset: agentvm_inspector::Asset) -> Response {
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    // Built into this binary: a new binary may change them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// `GET /inspector/api/vms`: `[{id, name, key, namespace, phase, createdAt, bootedAt,
/// memoryBytes, cpuUsec, processes, lastEvent: {name, at} | null}]`, oldest first; the figures
/// are `null` while a VM sleeps (and without cgroups).
async fn vms(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers, None)?;
    let mut actors = state.actors.all();
    actors.sort_by(|a, b| a.created_ms.cmp(&b.created_ms).then_with(|| a.id.cmp(&b.id)));
    // Awake VMs' figures are read from their cgroup files: on a blocking thread.
    let list = tokio::task::spawn_blocking(move || {
        actors
            .iter()
            .map(|a| {
                let overview = a.overview();
                let usage = overview.usage.unwrap_or_default();
                json!({
                    "id": a.id,
                    "name": a.name,
                    "key": a.key,
                    "namespace": a.namespace,
                    "phase": overview.phase,
                    "createdAt": a.created_ms,
                    "bootedAt": overview.booted_ms,
                    "memoryBytes": usage.memory_bytes,
                    "cpuUsec": usage.cpu_usec,
                    "processes": usage.pids,
                    "lastEvent": overview.last_event.map(|(name, at)| json!({"name": name, "at": at})),
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("listing VMs: {e}")))?;
    Ok(Json(serde_json::Value::Array(list)))
}
