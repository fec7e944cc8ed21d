//! Signed preview URLs: a token that lets anyone holding it reach one port of one VM over HTTP
//! (and WebSocket), with no other credential, until it expires or is expired by hand.
//!
//! The token is 32 characters of `[a-z0-9]` from the operating system's CSPRNG (about 165
//! bits). It is stored in the VM's own SQLite file (the authority: the port and the expiry) and
//! indexed in the registry (token → actor), see [`agentvm_store::preview`]; both survive
//! restarts, and destroying the VM removes both. Checking a token opens the VM's file if the VM
//! sleeps, but never boots the VM: a request with a bad token costs no VM.
//!
//! The actions (`createSignedPreviewUrl`, `expireSignedPreviewUrl`) are in
//! `actions/network.rs`; the HTTP side (routes, proxying) belongs to the front end, which calls
//! [`find`] / [`check`] here.

use std::sync::Arc;
use std::time::Duration;

use agentvm_store::PreviewToken;

use crate::actors::{blocking, now_ms, Actor, Actors};
use crate::error::ActorError;

/// Length of a token.
pub const TOKEN_LEN: usize = 32;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A created preview URL (`createSignedPreviewUrl`'s result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewUrl {
    /// `/request/fetch/<token>`: relative to the server's root.
    pub path: String,
    pub token: String,
    pub port: u16,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

/// A fresh token: 32 characters of `[a-z0-9]`, each drawn without bias from the CSPRNG
/// (bytes of 252 and above are dropped, 252 being the largest multiple of 36 in a byte).
pub fn new_token() -> Result<String, ActorError> {
    let mut token = String::with_capacity(TOKEN_LEN);
    let mut bytes = [0u8; 64];
    while token.len() < TOKEN_LEN {
        getrandom::fill(&mut bytes).map_err(|e| ActorError::Internal(format!("the system's random source: {e}")))?;
        for b in bytes.iter().filter(|&&b| b < 252) {
            if token.len() == TOKEN_LEN {
                break;
            }
            token.push(char::from(ALPHABET[usize::from(*b % 36)]));
        }
    }
    Ok(token)
}

/// Whether `token` has a token's shape (checked before any lookup).
pub fn is_token_shaped(token: &str) -> bool {
    token.len() == TOKEN_LEN && token.bytes().all(|b| ALPHABET.contains(&b))
}

/// Creates a token for `port` of `actor`'s VM, valid for `expires_in`.
pub async fn create(
    actors: &Arc<Actors>,
    actor: &Arc<Actor>,
    port: u16,
    expires_in: Duration,
) -> Result<PreviewUrl, ActorError> {
    let token = new_token()?;
    let now = now_ms();
    let expires_ms = now.saturating_add(u64::try_from(expires_in.as_millis()).unwrap_or(u64::MAX));
    let entry = PreviewToken { port, created_ms: now, expires_ms };
    let (file, registry, awake) = (Arc::clone(actor.event_file()), Arc::clone(actors.registry()), actor.is_awake());
    let (id, t) = (actor.id.clone(), token.clone());
    blocking(move || -> agentvm_store::Result<()> {
        // The VM's file first: the index never names a token its VM does not know... except
        // for the moment between the two writes, when the stable path cannot find it yet.
        file.with(awake, |store| store.add_preview_token(&t, entry, now))?;
        registry.index_preview_token(&t, &id, expires_ms, now)
    })
    .await??;
    Ok(PreviewUrl { path: format!("/request/fetch/{token}"), token, port, expires_ms })
}

/// Expires a token of `actor`'s VM; an unknown token is not an error (nothing to do). A token
/// of another VM is left alone.
pub async fn expire(actors: &Arc<Actors>, actor: &Arc<Actor>, token: &str) -> Result<(), ActorError> {
    let (file, registry, awake) = (Arc::clone(actor.event_file()), Arc::clone(actors.registry()), actor.is_awake());
    let (id, token) = (actor.id.clone(), token.to_string());
    blocking(move || -> agentvm_store::Result<()> {
        // The authority first: from this commit on the token opens nothing.
        file.with(awake, |store| store.remove_preview_token(&token))?;
        if registry.preview_token_actor(&token, 0)?.is_some_and(|owner| owner == id) {
            registry.unindex_preview_token(&token)?;
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// The port `token` opens on `actor`'s VM, if the token is one of this VM's and valid now.
/// Reads the VM's file (opening it if the VM sleeps); never boots the VM.
pub async fn check(actor: &Arc<Actor>, token: &str) -> Result<Option<u16>, ActorError> {
    if !is_token_shaped(token) {
        return Ok(None);
    }
    let (file, awake, token) = (Arc::clone(actor.event_file()), actor.is_awake(), token.to_string());
    let found = blocking(move || file.with(awake, |store| store.preview_token(&token, now_ms()))).await??;
    Ok(found.map(|t| t.port))
}

/// The actor and port a token opens (the stable path `/request/fetch/<token>/…`), if it is
/// valid now.
pub async fn find(actors: &Arc<Actors>, token: &str) -> Result<Option<(Arc<Actor>, u16)>, ActorError> {
    if !is_token_shaped(token) {
        return Ok(None);
    }
    let (registry, t) = (Arc::clone(actors.registry()), token.to_string());
    let Some(actor_id) = blocking(move || registry.preview_token_actor(&t, now_ms())).await?? else {
        return Ok(None);
    };
    let Ok(actor) = actors.by_id(&actor_id) else { return Ok(None) };
    Ok(check(&actor, token).await?.map(|port| (actor, port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_reference_shape_and_differ() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(is_token_shaped(&a) && is_token_shaped(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(!is_token_shaped("ABC"));
        assert!(!is_token_shaped(&a[1..]));
        // Every symbol appears: the draw covers the whole alphabet.
        let many: String = (0..50).map(|_| new_token().unwrap()).collect();
        assert!(ALPHABET.iter().all(|c| many.as_bytes().contains(c)));
    }
}
