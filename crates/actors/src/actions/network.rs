//! Network actions: `vmFetch` (one HTTP request to a server listening inside the VM, answered
//! in full) and signed preview URLs (`createSignedPreviewUrl`, `expireSignedPreviewUrl`; the
//! tokens themselves are [`crate::preview`]'s, the HTTP proxy behind them the front end's).
//!
//! Shapes are the reference's: `vmFetch(port, url, {method?, headers?, body?})` →
//! `{status, statusText, headers, body: Uint8Array}`; `createSignedPreviewUrl(port,
//! expiresInSeconds?)` → `{path: "/request/fetch/<token>", token, port, expiresAt}`.
//! Preview actions never boot the VM; `vmFetch` does (the server it asks must run).

use std::sync::Arc;
use std::time::Duration;

use agentvm_protocol::Value;
use agentvm_vm::{FetchRequest, FetchResponse, Vm};
use bytes::Bytes;

use super::args::Args;
use crate::actors::{Actor, Actors};
use crate::error::ActorError;
use crate::preset::PreviewLimits;
use crate::preview;

/// The actions of this family.
pub const NAMES: &[&str] = &["vmFetch", "createSignedPreviewUrl", "expireSignedPreviewUrl"];

/// A validated network action.
pub(super) enum Call {
    Fetch { port: u16, request: FetchRequest },
    CreatePreview { port: u16, expires_in: Option<f64> },
    ExpirePreview { token: String },
}

/// The call for `name`, or `None` when `name` is not a network action.
pub(super) fn parse(name: &str, args: &Args<'_>) -> Result<Option<Call>, ActorError> {
    Ok(Some(match name {
        "vmFetch" => {
            let port = port(name, args)?;
            let url = args.string(1, "url")?;
            if !url.starts_with('/') {
                return Err(ActorError::InvalidArguments(format!(
                    "vmFetch: url must be a path starting with `/` (the server is http://localhost:{port}), got {url:?}"
                )));
            }
            let options = args.options(2)?;
            let method = options.string("method")?.unwrap_or_else(|| "GET".into());
            // As `fetch` does, the standard methods in any case are sent upper-case.
            let standard = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
            let method = standard.iter().find(|m| m.eq_ignore_ascii_case(&method)).map_or(method, |m| m.to_string());
            let headers = options.string_map("headers")?.unwrap_or_default();
            let body = Bytes::from(options.data("body")?.unwrap_or_default());
            let request = FetchRequest { method, path_and_query: url, headers, body };
            request.validate().map_err(|e| ActorError::InvalidArguments(e.to_string()))?;
            Call::Fetch { port, request }
        }
        "createSignedPreviewUrl" => {
            let port = port(name, args)?;
            Call::CreatePreview { port, expires_in: args.optional_number(1, "expiresInSeconds")? }
        }
        "expireSignedPreviewUrl" => Call::ExpirePreview { token: args.string(0, "token")? },
        _ => return Ok(None),
    }))
}

/// Argument 1: a TCP port, 1 to 65535.
fn port(action: &str, args: &Args<'_>) -> Result<u16, ActorError> {
    let n = args.integer(0, "port")?;
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ActorError::InvalidArguments(format!("{action}: port must be between 1 and 65535, got {n}")))
}

/// How long a preview URL of `actor` lives when the call does not say, and at most: its
/// preset's `preview` limits (by default the reference's 3600 s and 86400 s).
fn preview_limits(actors: &Actors, actor: &Actor) -> PreviewLimits {
    // A name the configuration no longer defines keeps the defaults.
    actors.presets().get(&actor.name).map(|preset| preset.preview).unwrap_or_default()
}

/// Runs a network action; only `vmFetch` boots (or wakes) the VM.
pub(super) async fn run(actors: &Arc<Actors>, actor: &Arc<Actor>, call: Call) -> Result<Value, ActorError> {
    match call {
        Call::Fetch { port, request } => fetch(&actor.vm(false).await?, port, request).await,
        Call::CreatePreview { port, expires_in } => {
            let PreviewLimits { default_expires: default, max_expires: max } = preview_limits(actors, actor);
            let expires_in = match expires_in {
                None => default,
                Some(seconds) if seconds >= 1.0 && seconds <= max.as_secs_f64() => Duration::from_secs_f64(seconds),
                Some(_) => {
                    return Err(ActorError::InvalidArguments(format!(
                        "expiresInSeconds must be between 1 and {}",
                        max.as_secs()
                    )))
                }
            };
            let url = preview::create(actors, actor, port, expires_in).await?;
            Ok(Value::Map(vec![
                ("path".into(), Value::from(url.path)),
                ("token".into(), Value::from(url.token)),
                ("port".into(), Value::from(i64::from(url.port))),
                ("expiresAt".into(), Value::from(url.expires_ms)),
            ]))
        }
        Call::ExpirePreview { token } => {
            preview::expire(actors, actor, &token).await?;
            Ok(Value::Undefined)
        }
    }
}

async fn fetch(vm: &Vm, port: u16, request: FetchRequest) -> Result<Value, ActorError> {
    let FetchResponse { status, status_text, headers, body } = vm.fetch(port, request).await?;
    Ok(Value::Map(vec![
        ("status".into(), Value::from(i64::from(status))),
        ("statusText".into(), Value::from(status_text)),
        ("headers".into(), Value::Map(headers.into_iter().map(|(k, v)| (k, Value::from(v))).collect())),
        ("body".into(), Value::Bytes(body)),
    ]))
}
