//! WebSocket frames (protocol reference §7).
//!
//! BARE: `u16` LE version, then a union tag and the member's fields in schema order:
//!
//! | Union      | Tag | Member                | Fields                                                     |
//! |------------|-----|-----------------------|------------------------------------------------------------|
//! | `ToClient` | 0   | `Init`                | `actorId: str, connectionId: str`                          |
//! | `ToClient` | 1   | `Error`               | `group, code, message: str, metadata: optional<data>,`     |
//! |            |     |                       | `actionId: optional<uint>, actor: optional<..>` (v4 only) |
//! | `ToClient` | 2   | `ActionResponse`      | `id: uint, output: data`                                   |
//! | `ToClient` | 3   | `Event`               | `name: str, args: data` (CBOR array)                       |
//! | `ToServer` | 0   | `ActionRequest`       | `id: uint, name: str, args: data` (CBOR array)             |
//! | `ToServer` | 1   | `SubscriptionRequest` | `eventName: str, subscribe: bool`                          |
//!
//! json/cbor: `{"body":{"tag":"<Member>","val":{<fields>}}}` without version. In JSON an
//! `Error` always carries `actionId` (`null` when absent).
//!
//! Besides the server side ([`decode_to_server`], [`encode_to_client`]) this module has the
//! client side ([`encode_to_server`], [`decode_to_client`]), for tests and tools that play the
//! client.

use crate::bare::{Reader, Writer};
use crate::compat::{self, Outgoing};
use crate::encoding::Encoding;
use crate::envelope::{self, Fields};
use crate::error::{malformed, ProtocolError};
use crate::error_body;
use crate::json;
use crate::message::{Frame, ToClient, ToServer};
use crate::payload;
use crate::value::Value;

const TO_CLIENT_INIT: u64 = 0;
const TO_CLIENT_ERROR: u64 = 1;
const TO_CLIENT_ACTION_RESPONSE: u64 = 2;
const TO_CLIENT_EVENT: u64 = 3;
const TO_SERVER_ACTION_REQUEST: u64 = 0;
const TO_SERVER_SUBSCRIPTION_REQUEST: u64 = 1;

/// The first BARE version whose `Error` carries `actor`.
const ERROR_ACTOR_SINCE: u16 = 4;

/// Decodes one client frame. Returns the BARE version (`None` for json/cbor).
///
/// json and bare payloads have their compat forms revived; cbor clients send native values.
pub fn decode_to_server(encoding: Encoding, payload: &[u8]) -> Result<(Option<u16>, ToServer), ProtocolError> {
    match encoding {
        Encoding::Bare => decode_to_server_bare(payload).map(|(v, m)| (Some(v), m)),
        Encoding::Json | Encoding::Cbor => {
            let tree = envelope::read(encoding, payload, encoding == Encoding::Json)?;
            to_server_from_tree(tree).map(|m| (None, m))
        }
    }
}

fn decode_to_server_bare(payload: &[u8]) -> Result<(u16, ToServer), ProtocolError> {
    let mut r = Reader::new(payload);
    let version = r.version()?;
    let message = match r.uint("message tag")? {
        TO_SERVER_ACTION_REQUEST => {
            let id = r.uint("action id")?;
            let name = r.str("action name")?;
            let args = payload::decode_blob(r.data("action args")?, "args")?;
            ToServer::ActionRequest { id, name, args: payload::into_args(args)? }
        }
        TO_SERVER_SUBSCRIPTION_REQUEST => {
            let event_name = r.str("event name")?;
            let subscribe = r.bool("subscribe")?;
            ToServer::SubscriptionRequest { event_name, subscribe }
        }
        tag => return Err(malformed(format!("unknown ToServer message tag {tag}"))),
    };
    r.finish()?;
    Ok((version, message))
}

fn to_server_from_tree(tree: Value) -> Result<ToServer, ProtocolError> {
    let (tag, val) = envelope::unwrap(tree)?;
    let mut val = val.named(tag.clone());
    match tag.as_str() {
        "ActionRequest" => {
            let id = val.u64("id")?;
            let name = val.string("name")?;
            let args = payload::into_args(val.required("args")?)?;
            Ok(ToServer::ActionRequest { id, name, args })
        }
        "SubscriptionRequest" => {
            let event_name = val.string("eventName")?;
            let subscribe = val.bool("subscribe")?;
            Ok(ToServer::SubscriptionRequest { event_name, subscribe })
        }
        other => Err(malformed(format!("unknown ToServer message tag {other:?}"))),
    }
}

/// Encodes one server frame.
///
/// For bare, `version` is the `u16` prefix: use 2 for the `Init` that precedes any client frame,
/// then echo the client's version; `Error.actor` is written only when `version >= 4`. json and
/// cbor always include `actor`; in json, `version` is what the server knows of the client's
/// protocol version (json frames carry none), which decides how an `undefined` action output
/// is written ([`JSON_UNDEFINED_SINCE`](crate::JSON_UNDEFINED_SINCE)). Payloads are
/// compat-encoded in every encoding.
pub fn encode_to_client(encoding: Encoding, version: u16, message: &ToClient) -> Frame {
    match encoding {
        Encoding::Bare => Frame::Binary(encode_to_client_bare(version, message)),
        Encoding::Json | Encoding::Cbor => frame(encoding, &to_client_tree(encoding, version, message)),
    }
}

fn frame(encoding: Encoding, tree: &Value) -> Frame {
    match encoding {
        Encoding::Json => Frame::Text(json::to_string(tree)),
        Encoding::Cbor | Encoding::Bare => Frame::Binary(envelope::write(encoding, tree)),
    }
}

fn encode_to_client_bare(version: u16, message: &ToClient) -> Vec<u8> {
    let mut w = Writer::with_version(version);
    match message {
        ToClient::Init { actor_id, connection_id } => {
            w.uint(TO_CLIENT_INIT);
            w.str(actor_id);
            w.str(connection_id);
        }
        ToClient::Error { error, action_id } => {
            w.uint(TO_CLIENT_ERROR);
            error_body::write_bare_head(&mut w, error, version);
            w.optional(*action_id, Writer::uint);
            if version >= ERROR_ACTOR_SINCE {
                error_body::write_bare_actor(&mut w, error.actor.as_ref());
            }
        }
        ToClient::ActionResponse { id, output } => {
            w.uint(TO_CLIENT_ACTION_RESPONSE);
            w.uint(*id);
            payload::write_blob(&mut w, output, version);
        }
        ToClient::Event { name, args } => {
            w.uint(TO_CLIENT_EVENT);
            w.str(name);
            payload::write_args_blob(&mut w, args, version);
        }
    }
    w.finish()
}

fn to_client_tree(encoding: Encoding, version: u16, message: &ToClient) -> Value {
    match message {
        ToClient::Init { actor_id, connection_id } => envelope::wrap(
            "Init",
            Value::object([
                ("actorId", Value::from(actor_id.as_str())),
                ("connectionId", Value::from(connection_id.as_str())),
            ]),
        ),
        ToClient::Error { error, action_id } => {
            let mut fields = error_body::fields(encoding, error);
            fields.push(("actionId".to_owned(), action_id.map_or(Value::Null, envelope::id)));
            envelope::wrap("Error", Value::Map(fields))
        }
        ToClient::ActionResponse { id, output } => envelope::wrap(
            "ActionResponse",
            Value::object([("id", envelope::id(*id)), ("output", action_output(encoding, version, output))]),
        ),
        ToClient::Event { name, args } => envelope::wrap(
            "Event",
            Value::object([
                ("name", Value::from(name.as_str())),
                ("args", compat::encode_outgoing_array(args, Outgoing::for_encoding(encoding))),
            ]),
        ),
    }
}

/// An action's output in a json or cbor frame (json: see [`compat::json_output`]).
fn action_output(encoding: Encoding, version: u16, output: &Value) -> Value {
    match encoding {
        Encoding::Json => compat::json_output(output, Some(version)),
        Encoding::Cbor | Encoding::Bare => compat::encode_outgoing(output, Outgoing::for_encoding(encoding)),
    }
}

/// Client side: encodes one client frame as the RivetKit client does (bare and json payloads
/// compat-encoded, cbor payloads native; ids as `BigInt`s).
pub fn encode_to_server(encoding: Encoding, version: u16, message: &ToServer) -> Frame {
    match encoding {
        Encoding::Bare => {
            let mut w = Writer::with_version(version);
            match message {
                ToServer::ActionRequest { id, name, args } => {
                    w.uint(TO_SERVER_ACTION_REQUEST);
                    w.uint(*id);
                    w.str(name);
                    w.data(&payload::encode_client_args_blob(args));
                }
                ToServer::SubscriptionRequest { event_name, subscribe } => {
                    w.uint(TO_SERVER_SUBSCRIPTION_REQUEST);
                    w.str(event_name);
                    w.bool(*subscribe);
                }
            }
            Frame::Binary(w.finish())
        }
        Encoding::Json | Encoding::Cbor => {
            // The client compat-encodes in json only; cbor-x writes native values.
            let args_value = |args: &[Value]| match encoding {
                Encoding::Json => compat::encode_array(args),
                Encoding::Cbor | Encoding::Bare => Value::Array(args.to_vec()),
            };
            let tree = match message {
                ToServer::ActionRequest { id, name, args } => envelope::wrap(
                    "ActionRequest",
                    Value::object([
                        ("id", envelope::id(*id)),
                        ("name", Value::from(name.as_str())),
                        ("args", args_value(args)),
                    ]),
                ),
                ToServer::SubscriptionRequest { event_name, subscribe } => envelope::wrap(
                    "SubscriptionRequest",
                    Value::object([
                        ("eventName", Value::from(event_name.as_str())),
                        ("subscribe", Value::Bool(*subscribe)),
                    ]),
                ),
            };
            frame(encoding, &tree)
        }
    }
}

/// Client side: decodes one server frame. Returns the BARE version (`None` for json/cbor).
/// Compat forms are revived in every encoding, as the client does.
pub fn decode_to_client(encoding: Encoding, payload: &[u8]) -> Result<(Option<u16>, ToClient), ProtocolError> {
    decode_to_client_in(encoding, payload, None)
}

/// [`decode_to_client`] of a frame held as [`bytes::Bytes`]: in bare, the byte strings of the
/// payloads (an event's output) are slices of the frame, not copies.
pub fn decode_to_client_shared(
    encoding: Encoding,
    payload: &bytes::Bytes,
) -> Result<(Option<u16>, ToClient), ProtocolError> {
    decode_to_client_in(encoding, payload, Some(payload))
}

fn decode_to_client_in(
    encoding: Encoding,
    payload: &[u8],
    source: Option<&bytes::Bytes>,
) -> Result<(Option<u16>, ToClient), ProtocolError> {
    match encoding {
        Encoding::Bare => decode_to_client_bare(payload, source).map(|(v, m)| (Some(v), m)),
        Encoding::Json | Encoding::Cbor => {
            let tree = envelope::read(encoding, payload, true)?;
            to_client_from_tree(tree).map(|m| (None, m))
        }
    }
}

fn decode_to_client_bare(payload: &[u8], source: Option<&bytes::Bytes>) -> Result<(u16, ToClient), ProtocolError> {
    let mut r = Reader::new(payload);
    let version = r.version()?;
    let message = match r.uint("message tag")? {
        TO_CLIENT_INIT => {
            let actor_id = r.str("actor id")?;
            let connection_id = r.str("connection id")?;
            ToClient::Init { actor_id, connection_id }
        }
        TO_CLIENT_ERROR => {
            let mut error = error_body::read_bare_head(&mut r, version)?;
            let action_id = r.optional("action id", |r| r.uint("action id"))?;
            if version >= ERROR_ACTOR_SINCE {
                error.actor = error_body::read_bare_actor(&mut r)?;
            }
            ToClient::Error { error, action_id }
        }
        TO_CLIENT_ACTION_RESPONSE => {
            let id = r.uint("action id")?;
            let output = payload::decode_server_blob(r.data("action output")?, source, "output", version)?;
            ToClient::ActionResponse { id, output }
        }
        TO_CLIENT_EVENT => {
            let name = r.str("event name")?;
            let args = payload::decode_server_blob(r.data("event args")?, source, "args", version)?;
            ToClient::Event { name, args: payload::into_args(args)? }
        }
        tag => return Err(malformed(format!("unknown ToClient message tag {tag}"))),
    };
    r.finish()?;
    Ok((version, message))
}

fn to_client_from_tree(tree: Value) -> Result<ToClient, ProtocolError> {
    let (tag, val) = envelope::unwrap(tree)?;
    let mut val: Fields = val.named(tag.clone());
    match tag.as_str() {
        "Init" => {
            let actor_id = val.string("actorId")?;
            let connection_id = val.string("connectionId")?;
            Ok(ToClient::Init { actor_id, connection_id })
        }
        "Error" => {
            let error = error_body::from_fields(&mut val)?;
            let action_id = val.optional_u64("actionId")?;
            Ok(ToClient::Error { error, action_id })
        }
        "ActionResponse" => {
            let id = val.u64("id")?;
            let output = val.take("output").unwrap_or(Value::Undefined);
            Ok(ToClient::ActionResponse { id, output })
        }
        "Event" => {
            let name = val.string("name")?;
            let args = payload::into_args(val.required("args")?)?;
            Ok(ToClient::Event { name, args })
        }
        other => Err(malformed(format!("unknown ToClient message tag {other:?}"))),
    }
}
