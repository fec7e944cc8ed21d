//! Preview URLs: HTTP and WebSocket requests proxied to a server listening inside a VM, for
//! whoever holds a valid preview token (`createSignedPreviewUrl`).
//!
//! Two paths reach it:
//!
//! - `ANY /request/fetch/{token}[/rest]`, the stable path (`createSignedPreviewUrl`'s `path`):
//!   the token alone says which VM (through the registry's index);
//! - `ANY /gateway/{actor}/request/fetch/{token}[/rest]`, the raw path the rivetkit client uses
//!   for `handle.fetch("/fetch/<token>/…")`: the token must belong to that actor. Any other
//!   `/gateway/{actor}/request/…` path is `404`, as in the reference's handler.
//!
//! **The token is the credential.** These routes are mounted outside the API's token check and
//! the browser guards of [`crate::exposure`] (a preview is meant to be opened in a browser, from
//! anywhere). A request without the API token never creates an actor: the gateway form resolves
//! `getOrCreate` as `get` unless the API token checks out, and answers `403` for an actor that
//! does not exist, as for a bad token, so that it tells nothing about which actors exist. The
//! API token itself, when a client sent it, is not passed on to the VM.
//!
//! **Behaviour** (the reference's): `OPTIONS` → `204` with CORS headers; a token that is
//! unknown, expired or of another VM → `403`; otherwise the VM is woken if it sleeps and the
//! request goes to `http://localhost:<port><rest><query>` (`Host: localhost:<port>`; the
//! gateway form's `rvt-*` parameters removed); every answer gets `Access-Control-Allow-Origin:
//! *`, `Access-Control-Allow-Methods: GET, POST, PUT, DELETE, OPTIONS` and
//! `Access-Control-Allow-Headers: *`. Nothing listening on the port → `502`.
//!
//! Bodies stream both ways (nothing is buffered whole; no size limit, no timeout: dev servers
//! long-poll), and a WebSocket upgrade (hot reload) is forwarded to the VM's server: when it
//! answers `101`, both upgraded connections are joined byte for byte. While a request or a
//! tunnel is open the VM counts as active and does not go to sleep.

use std::sync::Arc;

use agentvm_actors::{preview, Actor, ActorError};
use agentvm_vm::VmError;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use hyper_util::rt::TokioIo;

use crate::error::ApiError;
use crate::gateway::{self, Target};
use crate::routes::{authorize, resolve};
use crate::AppState;

/// The preview routes; mount them *outside* the API's layers (see the module's doc).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/request/fetch/{token}", any(stable))
        // (A catch-all matches one character at least.)
        .route("/request/fetch/{token}/", any(stable))
        .route("/request/fetch/{token}/{*rest}", any(stable))
        .route("/gateway/{segment}/request/{*rest}", any(through_gateway))
}

/// Where a preview request goes: the token and the path after it, still percent-encoded as the
/// client sent it (`""` or `/…`).
#[derive(Debug, PartialEq, Eq)]
struct FetchPath<'a> {
    token: &'a str,
    rest: &'a str,
}

/// Splits `fetch/<token>[/rest]` (what follows `/request/`).
fn split_fetch(after_request: &str) -> Option<FetchPath<'_>> {
    let after = after_request.strip_prefix("fetch/")?;
    let (token, rest) = match after.find('/') {
        Some(i) => after.split_at(i),
        None => (after, ""),
    };
    (!token.is_empty()).then_some(FetchPath { token, rest })
}

/// `ANY /request/fetch/{token}[/rest]`.
async fn stable(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let Some(target) = path.strip_prefix("/request/").and_then(split_fetch) else {
        return with_cors(not_found(&path));
    };
    if request.method() == Method::OPTIONS {
        return preflight();
    }
    let found = match preview::find(&state.actors, target.token).await {
        Ok(found) => found,
        Err(error) => return with_cors(ApiError::from(error).into_response()),
    };
    let Some((actor, port)) = found else { return forbidden() };
    let path_and_query = path_and_query(target.rest, request.uri().query());
    proxy(&state, &actor, port, path_and_query, request).await
}

/// `ANY /gateway/{actor}/request/{*rest}`.
async fn through_gateway(
    State(state): State<Arc<AppState>>,
    Path((segment, _)): Path<(String, String)>,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    // The raw path: `/gateway/<segment, encoded>/request/<rest>`.
    let after_request =
        path.strip_prefix("/gateway/").and_then(|p| p.split_once('/')).and_then(|(_, p)| p.strip_prefix("request/"));
    let Some(target) = after_request.and_then(split_fetch) else {
        return with_cors(not_found(&path));
    };
    if request.method() == Method::OPTIONS {
        return preflight();
    }
    let query = request.uri().query();
    let addressed = match gateway::parse(&segment, query) {
        Ok(addressed) => addressed,
        Err(error) => return with_cors(error.into_response()),
    };
    let authorized = authorize(&state, request.headers(), addressed.token.as_deref()).is_ok();
    let target_actor = match addressed.target {
        // Only an authenticated request may create the actor.
        Target::Name { namespace, name, key, create } => {
            Target::Name { namespace, name, key, create: create && authorized }
        }
        id => id,
    };
    let actor = match resolve(&state, &target_actor).await {
        Ok(actor) => actor,
        // Nothing about which actors exist to whoever has no API token.
        Err(_) if !authorized => return forbidden(),
        Err(error) => return with_cors(error.into_response()),
    };
    let port = match preview::check(&actor, target.token).await {
        Ok(Some(port)) => port,
        Ok(None) => return forbidden(),
        Err(error) => return with_cors(ApiError::from(error).into_response()),
    };
    let query = query.map(without_rvt_parameters);
    let path_and_query = path_and_query(target.rest, query.as_deref().filter(|q| !q.is_empty()));
    proxy(&state, &actor, port, path_and_query, request).await
}

/// `<rest or "/">[?query]`.
fn path_and_query(rest: &str, query: Option<&str>) -> String {
    let path = if rest.is_empty() { "/" } else { rest };
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    }
}

/// The query without the gateway's own `rvt-*` parameters (as the engine forwards it).
fn without_rvt_parameters(query: &str) -> String {
    query.split('&').filter(|pair| !pair.starts_with("rvt-")).collect::<Vec<_>>().join("&")
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), besides those
/// `Connection` itself names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop fields; an upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().map(HeaderName::as_str).chain(HOP_BY_HOP.iter().copied()) {
        if upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Whether the request asks to switch protocols (a WebSocket).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Sends `request` to `port` of the actor's VM (waking it) and streams the answer back.
async fn proxy(state: &AppState, actor: &Arc<Actor>, port: u16, path_and_query: String, request: Request) -> Response {
    match forward(state, actor, port, path_and_query, request).await {
        Ok(response) => with_cors(response),
        Err(error) => with_cors(error.into_response()),
    }
}

async fn forward(
    state: &AppState,
    actor: &Arc<Actor>,
    port: u16,
    path_and_query: String,
    mut request: Request,
) -> Result<Response, ApiError> {
    actor.check_usable()?;
    let active = actor.activity();
    let vm = actor.vm(false).await?;
    let stream = vm.connect(port).await.map_err(|e| unreachable_port(port, e))?;

    let upgrade = is_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let uri: Uri = path_and_query.parse().map_err(|e| ApiError::invalid_request(format!("invalid path: {e}")))?;
    let mut outgoing = axum::http::Request::builder().method(parts.method).uri(uri);
    let headers = outgoing.headers_mut().ok_or_else(|| ApiError::internal("building the proxied request"))?;
    *headers = parts.headers;
    strip_hop_by_hop(headers, upgrade);
    strip_credentials(state, headers);
    let host = HeaderValue::from_str(&format!("localhost:{port}")).map_err(|e| ApiError::internal(e.to_string()))?;
    headers.insert(header::HOST, host);
    let outgoing = outgoing
        .body(if upgrade { Body::empty() } else { body })
        .map_err(|e| ApiError::internal(format!("building the proxied request: {e}")))?;

    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| bad_gateway(port, &e))?;
    // The connection runs until the answer's body is read (or the client went away); the VM
    // stays active as long.
    tokio::spawn(async move {
        let _active = active;
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!("preview connection to port {port}: {e}");
        }
    });
    let mut response = sender.send_request(outgoing).await.map_err(|e| bad_gateway(port, &e))?;
    drop(sender);

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(bad_gateway(port, &"it switched protocols unasked"));
        };
        let vm_upgrade = hyper::upgrade::on(&mut response);
        let tunnel_active = actor.activity();
        tokio::spawn(async move {
            let _active = tunnel_active;
            match tokio::try_join!(client_upgrade, vm_upgrade) {
                Ok((client, vm)) => {
                    let (mut client, mut vm) = (TokioIo::new(client), TokioIo::new(vm));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut vm).await {
                        tracing::debug!("preview tunnel to port {port} ended: {e}");
                    }
                }
                Err(e) => tracing::debug!("preview upgrade to port {port} failed: {e}"),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The API token (and the gateway's own headers) never reach the VM.
fn strip_credentials(state: &AppState, headers: &mut HeaderMap) {
    let rivet: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("x-rivet-")).cloned().collect();
    for name in rivet {
        headers.remove(name);
    }
    if let Some(token) = state.config.token.as_deref() {
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if bearer == Some(token) {
            headers.remove(header::AUTHORIZATION);
        }
    }
}

fn unreachable_port(port: u16, error: VmError) -> ApiError {
    match error {
        VmError::PortClosed { .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "preview",
            "port_closed",
            format!("nothing listens on port {port} in the VM (its loopback, 127.0.0.1 or ::1)"),
        ),
        other => ApiError::from(ActorError::Vm(other)),
    }
}

fn bad_gateway(port: u16, error: &dyn std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "preview",
        "bad_gateway",
        format!("the server on port {port} in the VM did not answer over HTTP/1.1: {error}"),
    )
}

fn forbidden() -> Response {
    with_cors(
        ApiError::new(
            StatusCode::FORBIDDEN,
            "preview",
            "forbidden",
            "the preview token is unknown, expired or was expired (createSignedPreviewUrl makes a new one)",
        )
        .into_response(),
    )
}

fn not_found(path: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "request",
        "not_found",
        format!("no preview at {path}: preview paths are /request/fetch/<token>[/path]"),
    )
    .into_response()
}

fn preflight() -> Response {
    with_cors(StatusCode::NO_CONTENT.into_response())
}

/// The reference's CORS answer, on every preview response.
fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("*"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_paths_split_into_token_and_rest() {
        assert_eq!(split_fetch("fetch/abc"), Some(FetchPath { token: "abc", rest: "" }));
        assert_eq!(split_fetch("fetch/abc/"), Some(FetchPath { token: "abc", rest: "/" }));
        assert_eq!(split_fetch("fetch/abc/x/y%20z"), Some(FetchPath { token: "abc", rest: "/x/y%20z" }));
        assert_eq!(split_fetch("fetch/"), None);
        assert_eq!(split_fetch("other/abc"), None);
        assert_eq!(path_and_query("", None), "/");
        assert_eq!(path_and_query("/a", Some("b=1")), "/a?b=1");
        assert_eq!(without_rvt_parameters("rvt-method=get&a=1&rvt-key=k&b=2"), "a=1&b=2");
    }

    #[test]
    fn hop_by_hop_fields_go_except_an_upgrade_s_own() {
        let mut headers = HeaderMap::new();
        for (n, v) in
            [("connection", "keep-alive, x-private"), ("x-private", "1"), ("te", "trailers"), ("accept", "*/*")]
        {
            headers.append(n, HeaderValue::from_static(v));
        }
        let mut plain = headers.clone();
        strip_hop_by_hop(&mut plain, false);
        assert_eq!(plain.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["accept"]);
        headers.insert("upgrade", HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get("connection").unwrap(), "upgrade");
        assert_eq!(headers.get("upgrade").unwrap(), "websocket");
        assert!(headers.get("x-private").is_none());
    }
}
