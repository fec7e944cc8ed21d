//! The browser boundary: which web pages may drive this server.
//!
//! Anything that can send an HTTP request to the listen address can run programs in every VM.
//! Programs (the Node and Rust clients, the CLI, curl) are trusted to the extent that they can
//! reach the port and hold the token. Web pages are different: a browser sends requests for any
//! site the user visits, to any address, including loopback. So every request — WebSocket
//! upgrades included, which are GET requests — passes three checks before any route sees it
//! ([`guard`] runs the first two, before anything else; [`require_preflighted_body`] the third,
//! inside the CORS layer so that an allowed page can read why its body was refused):
//!
//! 1. **Host** (DNS rebinding). A page on `evil.example` can make its own name resolve to
//!    127.0.0.1 and then talk to this server "same-origin"; its requests then carry
//!    `Host: evil.example`. The `Host` must therefore be a loopback name (`localhost`,
//!    `*.localhost`, `127.0.0.1`, `[::1]`, any loopback address), the listen address (any IP
//!    address when listening on `0.0.0.0`/`[::]`: a rebinding attack needs a DNS name, an
//!    address literal cannot be rebound), or a name the operator allows (`--allow-host`), with
//!    any port (so an `ssh -L` tunnel or a reverse proxy on another port keeps working). Anything
//!    else gets `421`. A request without `Host` (HTTP/1.0) is not from a browser and passes.
//! 2. **Origin**. Browsers say which page sent a request in `Origin` (always on cross-origin
//!    requests, on every POST and on every WebSocket). A request with an `Origin` passes only if
//!    the origin is on the allow-list (`--allow-origin`, exact `scheme://host[:port]`, no
//!    wildcards, never `null`) or is the server's own origin, `http://<Host>` (a page this
//!    server serves itself, such as a future inspector UI; safe because the `Host` passed check
//!    1). Otherwise `403`. A request without `Origin` is from a program and passes — unless a
//!    browser marked it as coming from another site (`Sec-Fetch-Site: cross-site|same-site`,
//!    e.g. an `<img>` or a link), which gets `403` too.
//! 3. **Body type**. A `POST` or `PUT` must carry `x-rivet-encoding` or a JSON content type
//!    (`application/json`, `application/*+json`). Browsers send `text/plain`, form and
//!    multipart bodies, and bodies without a type, to any site without asking first; with
//!    either of those headers they must ask (a CORS preflight), which check 2 answers. Else `415`.
//!
//! Allowed origins then get CORS headers ([`cors`]): the origin echoed, credentials allowed (the
//! rivetkit browser client sends `credentials: "include"`), `Vary: Origin`, and preflight answers
//! that name the methods and headers the rivetkit client sends. Refusals carry no CORS headers,
//! so a foreign page cannot even read why it was refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowCredentials, AllowOrigin, AllowPrivateNetwork, CorsLayer};

use crate::error::ApiError;
use crate::origin::{AllowedHost, Origin, RequestHost};

/// Who besides programs may call the server: the operator's allow-lists.
#[derive(Debug, Clone, Default)]
pub struct Exposure {
    /// Web origins whose pages may call the server (`--allow-origin`).
    pub allowed_origins: Vec<Origin>,
    /// Host names accepted in `Host` besides loopback names and the listen address
    /// (`--allow-host`).
    pub allowed_hosts: Vec<AllowedHost>,
}

/// Request headers the rivetkit client (2.2 and 2.3) sends, answered in preflights.
const ALLOWED_HEADERS: [&str; 15] = [
    "content-type",
    "authorization",
    "user-agent",
    "traceparent",
    "tracestate",
    "x-rivet-encoding",
    "x-rivet-conn-params",
    "x-rivet-token",
    "x-rivet-target",
    "x-rivet-actor",
    "x-rivet-namespace",
    "x-rivet-query",
    "x-rivet-actor-key",
    "x-rivet-ray-id",
    "x-rivet-skip-ready-wait",
];

/// Response headers a page may read.
const EXPOSED_HEADERS: [&str; 3] = ["x-rivet-error", "x-rivet-actor", "x-rivet-ray-id"];

/// Why a request was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request has more than one {0} header")]
    Repeated(&'static str),
    #[error("the Host header {0:?} is not `host[:port]`")]
    MalformedHost(String),
    #[error(
        "requests for host `{0}` are refused (a web page can point its own DNS name at this server): \
         this server answers to loopback names, its listen address and names given with \
         --allow-host (AGENTVM_ALLOW_HOST); to serve under `{0}`, start it with --allow-host {0}"
    )]
    ForeignHost(String),
    #[error(
        "requests from the web origin {0} are refused: only origins given with --allow-origin \
         (AGENTVM_ALLOW_ORIGIN) may call this server from a browser; to let pages from {0} drive \
         your VMs, start it with --allow-origin {0}"
    )]
    ForeignOrigin(Origin),
    #[error(
        "requests from the web origin {0} are refused: it is not an origin --allow-origin can \
         allow (`null` comes from sandboxed frames, file: pages and redirects: any site can send it)"
    )]
    UnusableOrigin(String),
    #[error(
        "a browser sent this request from another site (Sec-Fetch-Site: {0}) without saying which: \
         browser requests need an Origin allowed with --allow-origin"
    )]
    CrossSite(String),
    #[error(
        "a {method} body must be sent with `Content-Type: application/json` or an `x-rivet-encoding` \
         header (json, cbor or bare), got {content_type}: browsers send such bodies to any site \
         without asking, so they are refused"
    )]
    UnsupportedBody { method: Method, content_type: String },
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let (status, code) = match &refusal {
            Refusal::Repeated(_) | Refusal::MalformedHost(_) => (StatusCode::BAD_REQUEST, "invalid"),
            Refusal::ForeignHost(_) => (StatusCode::MISDIRECTED_REQUEST, "host_not_allowed"),
            Refusal::ForeignOrigin(_) | Refusal::UnusableOrigin(_) => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            Refusal::CrossSite(_) => (StatusCode::FORBIDDEN, "cross_site"),
            Refusal::UnsupportedBody { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        };
        ApiError::new(status, "request", code, refusal.to_string())
    }
}

/// The checks of the module documentation, for one server.
pub struct Gate {
    exposure: Exposure,
    listen: IpAddr,
}

impl Gate {
    pub fn new(exposure: Exposure, listen: IpAddr) -> Gate {
        Gate { exposure, listen }
    }

    /// Checks 1 and 2 for a request with these headers.
    pub fn check_caller(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let host = self.host(headers)?;
        match single(headers, header::ORIGIN)? {
            Some(value) => {
                let Some(origin) = value.to_str().ok().and_then(|o| o.parse::<Origin>().ok()) else {
                    return Err(Refusal::UnusableOrigin(printable(value)));
                };
                if !self.allows_origin(&origin, host.as_ref()) {
                    return Err(Refusal::ForeignOrigin(origin));
                }
            }
            None => {
                if let Some(site) = single(headers, HeaderName::from_static("sec-fetch-site"))? {
                    if matches!(site.as_bytes(), b"cross-site" | b"same-site") {
                        return Err(Refusal::CrossSite(printable(site)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Check 1: the accepted `Host`, if the request names one.
    fn host(&self, headers: &HeaderMap) -> Result<Option<RequestHost>, Refusal> {
        let Some(value) = single(headers, header::HOST)? else { return Ok(None) };
        let text = value.to_str().map_err(|_| Refusal::MalformedHost(printable(value)))?;
        let host = RequestHost::parse(text).ok_or_else(|| Refusal::MalformedHost(text.to_string()))?;
        let listen_address = host.ip().is_some_and(|ip| self.listen.is_unspecified() || ip == self.listen);
        if host.is_loopback() || listen_address || self.exposure.allowed_hosts.iter().any(|h| h.matches(&host)) {
            Ok(Some(host))
        } else {
            Err(Refusal::ForeignHost(host.name().to_string()))
        }
    }

    /// Check 2 for a request carrying `origin`: allow-listed, or the server's own origin.
    fn allows_origin(&self, origin: &Origin, host: Option<&RequestHost>) -> bool {
        self.exposure.allowed_origins.contains(origin) || host.is_some_and(|host| Origin::http(host) == *origin)
    }

    /// For the CORS layer: whether this request's origin may read responses. Requests reaching
    /// it passed [`Gate::check`] already; asking again keeps the two from ever disagreeing.
    fn allows_request_origin(&self, origin: &HeaderValue, parts: &Parts) -> bool {
        let Some(origin) = origin.to_str().ok().and_then(|o| o.parse::<Origin>().ok()) else { return false };
        self.host(&parts.headers).ok().is_some_and(|host| self.allows_origin(&origin, host.as_ref()))
    }
}

/// Check 3: a body a browser could not have sent without a preflight.
pub fn check_body_type(method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    if !matches!(*method, Method::POST | Method::PUT) || headers.contains_key("x-rivet-encoding") {
        return Ok(());
    }
    let refuse = |content_type: String| Refusal::UnsupportedBody { method: method.clone(), content_type };
    let Some(value) = single(headers, header::CONTENT_TYPE)? else { return Err(refuse("no Content-Type".into())) };
    // The MIME type's essence, as the Fetch standard reads it: up to the first `;`.
    let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || essence.strip_prefix("application/").and_then(|s| s.strip_suffix("+json")).is_some_and(|middle| {
            !middle.is_empty() && middle.chars().all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.".contains(c))
        });
    if json {
        Ok(())
    } else {
        Err(refuse(format!("Content-Type {}", printable(value))))
    }
}

/// The value of a header that must not be repeated (two `Origin`s or `Host`s are ambiguous:
/// another component could read the other one).
fn single(headers: &HeaderMap, name: HeaderName) -> Result<Option<&HeaderValue>, Refusal> {
    let mut values = headers.get_all(&name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Refusal::Repeated(match name.as_str() {
            "host" => "Host",
            "origin" => "Origin",
            "content-type" => "Content-Type",
            _ => "Sec-Fetch-Site",
        }));
    }
    Ok(first)
}

/// A header value for an error message: quoted, escaped, bounded.
fn printable(value: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let bounded: String = text.chars().take(200).collect();
    format!("{bounded:?}")
}

/// Middleware running checks 1 and 2 ([`Gate::check_caller`]) before everything else. Its
/// refusals carry no CORS headers at all.
pub async fn guard(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    match gate.check_caller(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut response = refuse(&request, refusal);
            // The answer depends on the Origin (the CORS layer says so for everything else).
            response.headers_mut().insert(header::VARY, HeaderValue::from_static("origin"));
            response
        }
    }
}

/// Middleware running check 3 ([`check_body_type`]), inside the CORS layer.
pub async fn require_preflighted_body(request: Request, next: Next) -> Response {
    match check_body_type(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refuse(&request, refusal),
    }
}

fn refuse(request: &Request, refusal: Refusal) -> Response {
    tracing::info!(method = %request.method(), path = request.uri().path(), "refused: {refusal}");
    ApiError::from(refusal).into_response()
}

/// CORS headers for the origins [`Gate`] allows, and preflight answers.
pub fn cors(gate: Arc<Gate>) -> CorsLayer {
    let allowed = move |origin: &HeaderValue, parts: &Parts| gate.allows_request_origin(origin, parts);
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(allowed.clone()))
        .allow_credentials(AllowCredentials::predicate(allowed.clone()))
        // Chrome asks before a public page calls a loopback address; an allowed origin may.
        .allow_private_network(AllowPrivateNetwork::predicate(allowed))
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
        .max_age(Duration::from_secs(7200))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn gate(origins: &[&str], hosts: &[&str], listen: IpAddr) -> Gate {
        let exposure = Exposure {
            allowed_origins: origins.iter().map(|o| o.parse().unwrap()).collect(),
            allowed_hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
        };
        Gate::new(exposure, listen)
    }

    fn check(gate: &Gate, method: Method, headers: &[(&'static str, &str)]) -> Result<(), Refusal> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        gate.check_caller(&map).and_then(|()| check_body_type(&method, &map))
    }

    const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn hosts() {
        let g = gate(&[], &["vm.example.com"], LOOPBACK);
        for ok in ["localhost", "localhost:6420", "app.localhost:1", "127.0.0.1:6420", "[::1]:6420", "vm.example.com"] {
            assert_eq!(check(&g, Method::GET, &[("host", ok)]), Ok(()), "{ok}");
        }
        assert_eq!(check(&g, Method::GET, &[]), Ok(()));
        for foreign in ["evil.example:6420", "10.0.0.1:6420", "localhost.evil.example", "vm.example.com.evil.example"] {
            assert!(matches!(check(&g, Method::GET, &[("host", foreign)]), Err(Refusal::ForeignHost(_))), "{foreign}");
        }
        assert!(matches!(check(&g, Method::GET, &[("host", "a@localhost")]), Err(Refusal::MalformedHost(_))));
        assert_eq!(
            check(&g, Method::GET, &[("host", "localhost"), ("host", "evil.example")]),
            Err(Refusal::Repeated("Host"))
        );
        let any = gate(&[], &[], IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(check(&any, Method::GET, &[("host", "10.0.0.1:6420")]), Ok(()));
        assert!(check(&any, Method::GET, &[("host", "rebound.evil.example:6420")]).is_err());
        let one = gate(&[], &[], IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(check(&one, Method::GET, &[("host", "10.0.0.1:6420")]), Ok(()));
        assert!(check(&one, Method::GET, &[("host", "10.0.0.2:6420")]).is_err());
    }

    #[test]
    fn origins() {
        let g = gate(&["http://localhost:3000"], &[], LOOPBACK);
        let host = ("host", "127.0.0.1:6420");
        assert_eq!(check(&g, Method::GET, &[host, ("origin", "http://localhost:3000")]), Ok(()));
        assert_eq!(check(&g, Method::GET, &[host, ("origin", "http://127.0.0.1:6420")]), Ok(()), "same origin");
        for foreign in [
            "https://evil.example",
            "null",
            "http://localhost:3000.evil.example",
            "http://localhost:30001",
            "https://localhost:3000",
            "http://127.0.0.1:6421",
            "garbage",
        ] {
            assert!(
                matches!(
                    check(&g, Method::GET, &[host, ("origin", foreign)]),
                    Err(Refusal::ForeignOrigin(_) | Refusal::UnusableOrigin(_))
                ),
                "{foreign}"
            );
        }
        assert!(check(&g, Method::GET, &[host, ("sec-fetch-site", "cross-site")]).is_err());
        assert!(check(&g, Method::GET, &[host, ("sec-fetch-site", "same-site")]).is_err());
        assert_eq!(check(&g, Method::GET, &[host, ("sec-fetch-site", "none")]), Ok(()));
    }

    #[test]
    fn bodies() {
        let g = gate(&[], &[], LOOPBACK);
        let ok = |headers: &[(&'static str, &str)]| check(&g, Method::POST, headers);
        assert_eq!(ok(&[("content-type", "application/json")]), Ok(()));
        assert_eq!(ok(&[("content-type", "Application/JSON; charset=utf-8")]), Ok(()));
        assert_eq!(ok(&[("content-type", "application/vnd.api+json")]), Ok(()));
        assert_eq!(ok(&[("x-rivet-encoding", "bare"), ("content-type", "application/octet-stream")]), Ok(()));
        assert_eq!(ok(&[("x-rivet-encoding", "json"), ("content-type", "application/x-www-form-urlencoded")]), Ok(()));
        for bad in [
            "text/plain",
            "text/plain; charset=application/json",
            "text/plain;application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "application/+json",
        ] {
            assert!(matches!(ok(&[("content-type", bad)]), Err(Refusal::UnsupportedBody { .. })), "{bad}");
        }
        assert!(matches!(ok(&[]), Err(Refusal::UnsupportedBody { .. })));
        assert_eq!(check(&g, Method::GET, &[]), Ok(()));
        assert_eq!(check(&g, Method::DELETE, &[]), Ok(()));
        assert!(check(&g, Method::PUT, &[("content-type", "text/plain")]).is_err());
    }
}
