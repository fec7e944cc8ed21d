//! [`ErrorBody`] and [`ActorSpecifier`] on the wire (protocol reference §9).
//!
//! JSON/CBOR: `{group, code, message, metadata?, actor?}` with `actor = {actorId, generation,
//! key?}`; `metadata` is compat-encoded. `generation` is a plain number in JSON and the 8-byte
//! integer form in CBOR, as the real engine sends them. BARE: `ActorSpecifier` is
//! `actorId: str, generation: uint, key: optional<str>`.

use crate::bare::{Reader, Writer};
use crate::compat::{self, Outgoing};
use crate::encoding::Encoding;
use crate::envelope::Fields;
use crate::error::Result;
use crate::message::{ActorSpecifier, ErrorBody};
use crate::payload;
use crate::value::Value;

/// The fields of an error object, in the order of the BARE schema (without `actionId`).
pub(crate) fn fields(encoding: Encoding, error: &ErrorBody) -> Vec<(String, Value)> {
    let mut out = vec![
        ("group".to_owned(), Value::from(error.group.as_str())),
        ("code".to_owned(), Value::from(error.code.as_str())),
        ("message".to_owned(), Value::from(error.message.as_str())),
    ];
    if let Some(metadata) = metadata(error) {
        out.push(("metadata".to_owned(), compat::encode_outgoing(metadata, Outgoing::for_encoding(encoding))));
    }
    if let Some(actor) = &error.actor {
        out.push(("actor".to_owned(), actor_tree(encoding, actor)));
    }
    out
}

/// The metadata to send: `Some(Undefined)` is sent as absent, which is what the client sees
/// either way.
fn metadata(error: &ErrorBody) -> Option<&Value> {
    error.metadata.as_ref().filter(|m| **m != Value::Undefined)
}

fn actor_tree(encoding: Encoding, actor: &ActorSpecifier) -> Value {
    let generation = match encoding {
        Encoding::Json => Value::from(actor.generation),
        Encoding::Cbor | Encoding::Bare => Value::BigInt(actor.generation.into()),
    };
    let mut entries =
        vec![("actorId".to_owned(), Value::from(actor.actor_id.as_str())), ("generation".to_owned(), generation)];
    if let Some(key) = &actor.key {
        entries.push(("key".to_owned(), Value::from(key.as_str())));
    }
    Value::Map(entries)
}

/// Reads an error object whose compat forms were already revived.
pub(crate) fn from_fields(fields: &mut Fields) -> Result<ErrorBody> {
    let group = fields.string("group")?;
    let code = fields.string("code")?;
    let message = fields.string("message")?;
    let metadata = fields.take("metadata");
    let actor = match fields.optional("actor") {
        Some(value) => {
            let mut actor = Fields::of(value, "actor")?;
            let actor_id = actor.string("actorId")?;
            let generation = actor.u64("generation")?;
            let key = match actor.optional("key") {
                Some(Value::String(key)) => Some(key),
                Some(other) => {
                    return Err(crate::error::malformed(format!(
                        "actor field `key` must be a string, found {}",
                        other.type_name()
                    )))
                }
                None => None,
            };
            Some(ActorSpecifier { actor_id, generation, key })
        }
        None => None,
    };
    Ok(ErrorBody { group, code, message, metadata, actor })
}

/// BARE `group, code, message, metadata: optional<data>`, for a message of `version`.
pub(crate) fn write_bare_head(w: &mut Writer, error: &ErrorBody, version: u16) {
    w.str(&error.group);
    w.str(&error.code);
    w.str(&error.message);
    w.optional(metadata(error), |w, metadata| w.data(&payload::encode_blob(metadata, version)));
}

/// Reads what [`write_bare_head`] writes; `actor` is left `None`.
pub(crate) fn read_bare_head(r: &mut Reader<'_>, version: u16) -> Result<ErrorBody> {
    let group = r.str("error group")?;
    let code = r.str("error code")?;
    let message = r.str("error message")?;
    let metadata = r.optional("error metadata", |r| {
        payload::decode_server_blob(r.data("error metadata")?, None, "error metadata", version)
    })?;
    // `undefined` metadata is the same as none (see `metadata`).
    let metadata = metadata.filter(|m| *m != Value::Undefined);
    Ok(ErrorBody { group, code, message, metadata, actor: None })
}

/// BARE `actor: optional<ActorSpecifier>`.
pub(crate) fn write_bare_actor(w: &mut Writer, actor: Option<&ActorSpecifier>) {
    w.optional(actor, |w, actor| {
        w.str(&actor.actor_id);
        w.uint(actor.generation);
        w.optional(actor.key.as_deref(), |w, key| w.str(key));
    });
}

pub(crate) fn read_bare_actor(r: &mut Reader<'_>) -> Result<Option<ActorSpecifier>> {
    r.optional("actor", |r| {
        let actor_id = r.str("actor id")?;
        let generation = r.uint("actor generation")?;
        let key = r.optional("actor key", |r| r.str("actor key"))?;
        Ok(ActorSpecifier { actor_id, generation, key })
    })
}
