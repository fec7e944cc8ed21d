//! Payload values (`args`, `output`, `metadata`, event `args`) inside messages.
//!
//! In bare messages a payload is a `data` field holding CBOR of the compat-encoded value. In
//! json and cbor messages it is part of the message tree: compat-encoded when the server sends
//! it, revived by the caller when a json client sent it, native when a cbor client sent it.

use crate::bare::Writer;
use crate::cbor;
use crate::compat;
use crate::error::{malformed, Result};
use crate::value::Value;

/// Whether a client of BARE `version` revives compat forms in CBOR, so the server escapes
/// `["$x", v]` pairs and writes sets as `["$Set", [...]]` (see [`compat::Outgoing::bare`]).
fn escapes(version: u16) -> bool {
    compat::Outgoing::bare(version) == (compat::Outgoing::Cbor { escape: true })
}

/// A bare `data` blob the server sends to a client of BARE `version` (see [`compat::Outgoing`]).
pub(crate) fn encode_blob(value: &Value, version: u16) -> Vec<u8> {
    let escape = escapes(version);
    let mut blob = Vec::with_capacity(cbor::outgoing_len(value, escape));
    cbor::write_outgoing(&mut blob, value, escape);
    blob
}

/// Writes `value` as a bare `data` field the server sends to a client of BARE `version`: the
/// CBOR goes straight into the message (a payload of hundreds of MiB is copied once).
pub(crate) fn write_blob(w: &mut Writer, value: &Value, version: u16) {
    let escape = escapes(version);
    w.data_with(cbor::outgoing_len(value, escape), |out| cbor::write_outgoing(out, value, escape));
}

/// Ends the message `w` with a bare `data` field holding `value`, as the parts of the message
/// in order: the large strings and byte strings of `value` are parts of their own, moved (see
/// [`cbor::write_outgoing_owned`]).
pub(crate) fn finish_with_blob(mut w: Writer, value: Value, version: u16) -> Vec<Vec<u8>> {
    let escape = escapes(version);
    w.uint(cbor::outgoing_len(&value, escape) as u64);
    let mut parts = cbor::Parts { done: Vec::new(), current: w.finish() };
    cbor::write_outgoing_owned(&mut parts, value, escape);
    parts.finish()
}

/// Writes an argument list (a CBOR array) as a bare `data` field the server sends, like
/// [`write_blob`].
pub(crate) fn write_args_blob(w: &mut Writer, args: &[Value], version: u16) {
    let escape = escapes(version);
    w.data_with(cbor::outgoing_array_len(args, escape), |out| cbor::write_outgoing_array(out, args, escape));
}

/// Client side: a bare `data` blob of an argument list as the 2.3 client sends it (CBOR of the
/// compat-encoded array).
pub(crate) fn encode_client_args_blob(args: &[Value]) -> Vec<u8> {
    cbor::encode(&compat::encode_array(args))
}

/// Client side: decodes a bare `data` blob the server sent to a client of `version`: clients
/// 2.3+ (version 4) revive compat forms, older ones take the CBOR as it is.
/// With `source` (the received frame `blob` lies in), byte strings share it instead of being
/// copied.
pub(crate) fn decode_server_blob(
    blob: &[u8],
    source: Option<&bytes::Bytes>,
    what: &str,
    version: u16,
) -> Result<Value> {
    let value = match source {
        Some(source) => cbor::decode_shared(blob, source),
        None => cbor::decode(blob),
    };
    let value = value.map_err(|e| e.context(what))?;
    if version >= 4 {
        compat::revive(value).map_err(|e| e.context(what))
    } else {
        Ok(value)
    }
}

/// Decodes a bare `data` blob: CBOR, then compat forms revived.
pub(crate) fn decode_blob(blob: &[u8], what: &str) -> Result<Value> {
    let value = cbor::decode(blob).map_err(|e| e.context(what))?;
    compat::revive(value).map_err(|e| e.context(what))
}

/// The arguments of an action or event: must be an array.
pub(crate) fn into_args(value: Value) -> Result<Vec<Value>> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(malformed(format!("args must be an array, found {}", other.type_name()))),
    }
}
