//! The JSON-compat layer (protocol reference §6.3).
//!
//! Values that JSON cannot carry travel as 2-element arrays tagged by a string starting with `$`:
//!
//! | Value            | Compat form                 |
//! |------------------|-----------------------------|
//! | `BigInt`         | `["$BigInt","123"]`         |
//! | `Uint8Array`     | `["$Uint8Array","<b64>"]`   |
//! | `ArrayBuffer`    | `["$ArrayBuffer","<b64>"]`  |
//! | `undefined`      | `["$Undefined",0]`          |
//! | `Set`            | `["$Set",[...]]`            |
//! | user `["$x", v]` | `["$$x", v]` (escaped)      |
//!
//! What the server sends depends on the encoding ([`Outgoing`]), because client versions differ:
//! 2.3.x clients revive compat forms in all three encodings and also accept native CBOR byte
//! strings, while 2.0–2.2 clients revive them only in json and expect native CBOR values in bare
//! and cbor (a `["$Uint8Array", ...]` reaches their event handlers as a plain array). So json
//! payloads are compat-encoded, bare and cbor payloads are native CBOR. The server revives what
//! json and bare clients send; cbor clients send native CBOR values and no compat forms, so
//! nothing is revived there.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use crate::error::{malformed, Result};
use crate::value::Value;

const BIGINT: &str = "$BigInt";
const UINT8_ARRAY: &str = "$Uint8Array";
const ARRAY_BUFFER: &str = "$ArrayBuffer";
const UNDEFINED: &str = "$Undefined";
pub(crate) const SET: &str = "$Set";

/// Decodes base64 the way Node's `Buffer.from(s, "base64")` is used by clients: the standard
/// alphabet, padding optional, non-zero trailing bits tolerated.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn tagged(tag: &str, payload: Value) -> Value {
    Value::Array(vec![Value::String(tag.to_owned()), payload])
}

/// Standard padded base64, as the client and the real engine write it.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// How the server writes payload values (`output`, event `args`, error `metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// json: compat forms for what JSON cannot carry; `undefined` becomes `null`, because
    /// clients before 2.3 do not know `$Undefined` and every client rejects a missing `output`.
    Json,
    /// bare and cbor: native CBOR values (byte strings, 8-byte integers, `undefined`), which
    /// every client decodes. `escape` doubles the `$` of user `["$x", v]` pairs, for clients that
    /// revive compat forms in CBOR (cbor encoding, and bare from version 4, i.e. clients 2.3+).
    Cbor { escape: bool },
}

impl Outgoing {
    /// The style for a json or cbor message (bare messages depend on the version: [`Outgoing::bare`]).
    pub(crate) fn for_encoding(encoding: crate::encoding::Encoding) -> Outgoing {
        match encoding {
            crate::encoding::Encoding::Json => Outgoing::Json,
            crate::encoding::Encoding::Cbor | crate::encoding::Encoding::Bare => Outgoing::Cbor { escape: true },
        }
    }

    /// The style for a bare message of `version`.
    pub(crate) fn bare(version: u16) -> Outgoing {
        Outgoing::Cbor { escape: version >= 4 }
    }
}

/// The first client protocol version (rivetkit 2.3) whose json decoder revives
/// `["$Undefined",0]`; older clients throw `Unknown JSON encoding type: $Undefined` on it.
pub const JSON_UNDEFINED_SINCE: u16 = 4;

/// An action's `output` in the json encoding, for a client of protocol `version` (`None`: not
/// known). What every client accepts for an action that returns nothing differs: a body
/// without `output` fails every client's schema check, `["$Undefined",0]` (what the reference
/// engine sends) resolves to `undefined` in clients 2.3 and throws in older ones, and `null`
/// resolves to `null` in all. So `undefined` is `["$Undefined",0]` from
/// [`JSON_UNDEFINED_SINCE`] and `null` otherwise; any other output is [`encode_outgoing`]'s.
pub(crate) fn json_output(output: &Value, version: Option<u16>) -> Value {
    match output {
        Value::Undefined if version.is_some_and(|v| v >= JSON_UNDEFINED_SINCE) => tagged(UNDEFINED, Value::Int(0)),
        other => encode_outgoing(other, Outgoing::Json),
    }
}

/// Encodes a payload value for sending in the given style.
pub(crate) fn encode_outgoing(value: &Value, style: Outgoing) -> Value {
    match (style, value) {
        (Outgoing::Json, Value::Undefined) => Value::Null,
        (Outgoing::Json, Value::BigInt(n)) => tagged(BIGINT, Value::String(n.to_string())),
        (Outgoing::Json, Value::Bytes(bytes)) => tagged(UINT8_ARRAY, Value::String(base64_encode(bytes))),
        (Outgoing::Json, Value::Set(items)) => {
            tagged(SET, Value::Array(items.iter().map(|v| encode_outgoing(v, style)).collect()))
        }
        (Outgoing::Cbor { escape: true }, Value::Set(items)) => {
            tagged(SET, Value::Array(items.iter().map(|v| encode_outgoing(v, style)).collect()))
        }
        (Outgoing::Cbor { escape: false }, Value::Set(items)) => {
            Value::Array(items.iter().map(|v| encode_outgoing(v, style)).collect())
        }
        (_, Value::Array(items)) => encode_outgoing_array(items, style),
        (_, Value::Map(entries)) => {
            Value::Map(entries.iter().map(|(k, v)| (k.clone(), encode_outgoing(v, style))).collect())
        }
        (_, other) => other.clone(),
    }
}

/// Encodes an array payload (its items, then the `$`-escape where the style asks for it).
pub(crate) fn encode_outgoing_array(items: &[Value], style: Outgoing) -> Value {
    let mut encoded: Vec<Value> = items.iter().map(|v| encode_outgoing(v, style)).collect();
    if style != (Outgoing::Cbor { escape: false }) {
        if let [Value::String(first), _] = encoded.as_mut_slice() {
            if first.starts_with('$') {
                first.insert(0, '$');
            }
        }
    }
    Value::Array(encoded)
}

/// Compat-encodes a value as the 2.3 client does when it sends: afterwards it holds only JSON data-model variants
/// (`Null`, `Bool`, `Int`, `Float`, `String`, `Array`, `Map`).
pub(crate) fn encode(value: &Value) -> Value {
    match value {
        Value::Undefined => tagged(UNDEFINED, Value::Int(0)),
        Value::BigInt(n) => tagged(BIGINT, Value::String(n.to_string())),
        Value::Bytes(bytes) => tagged(UINT8_ARRAY, Value::String(base64_encode(bytes))),
        Value::Set(items) => tagged(SET, Value::Array(items.iter().map(encode).collect())),
        Value::Array(items) => encode_array(items),
        Value::Map(entries) => Value::Map(entries.iter().map(|(k, v)| (k.clone(), encode(v))).collect()),
        Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::String(_) => value.clone(),
    }
}

/// Compat-encodes an array: its items, then the `$`-escape of a `["$x", v]` pair.
pub(crate) fn encode_array(items: &[Value]) -> Value {
    let mut encoded: Vec<Value> = items.iter().map(encode).collect();
    if let [Value::String(first), _] = encoded.as_mut_slice() {
        if first.starts_with('$') {
            first.insert(0, '$');
        }
    }
    Value::Array(encoded)
}

/// Revives compat forms in a decoded value (the inverse of [`encode`]).
///
/// An array `["$name", x]` with an unknown `$name` is an error, as on the client.
pub(crate) fn revive(value: Value) -> Result<Value> {
    match value {
        Value::Array(items) => revive_array(items),
        Value::Set(items) => Ok(Value::Set(revive_all(items)?)),
        Value::Map(entries) => {
            let entries = entries.into_iter().map(|(k, v)| Ok((k, revive(v)?))).collect::<Result<_>>()?;
            Ok(Value::Map(entries))
        }
        other => Ok(other),
    }
}

fn revive_all(items: Vec<Value>) -> Result<Vec<Value>> {
    items.into_iter().map(revive).collect()
}

fn revive_array(items: Vec<Value>) -> Result<Value> {
    let [first, payload]: [Value; 2] = match items.try_into() {
        Ok(pair) => pair,
        Err(items) => return Ok(Value::Array(revive_all(items)?)),
    };
    let tag = match first {
        Value::String(tag) if tag.starts_with('$') => tag,
        first => return Ok(Value::Array(vec![revive(first)?, revive(payload)?])),
    };
    match tag.as_str() {
        BIGINT => Ok(Value::BigInt(parse_bigint(&payload)?)),
        UINT8_ARRAY | ARRAY_BUFFER => {
            let Value::String(text) = &payload else {
                return Err(malformed(format!("{tag} payload must be a base64 string, found {}", payload.type_name())));
            };
            let bytes = LENIENT_BASE64.decode(text).map_err(|e| malformed(format!("invalid base64 in {tag}: {e}")))?;
            Ok(Value::Bytes(bytes.into()))
        }
        UNDEFINED => Ok(Value::Undefined),
        SET => match payload {
            Value::Array(items) => Ok(Value::Set(revive_all(items)?)),
            other => Err(malformed(format!("$Set payload must be an array, found {}", other.type_name()))),
        },
        escaped if escaped.starts_with("$$") => {
            let unescaped = escaped.get(1..).unwrap_or_default().to_owned();
            Ok(Value::Array(vec![Value::String(unescaped), revive(payload)?]))
        }
        unknown => Err(malformed(format!("unknown JSON encoding type: {unknown}"))),
    }
}

/// The payload of `["$BigInt", x]`: a decimal string (optionally signed, surrounding spaces
/// allowed, as JS `BigInt()` does) or an integer.
fn parse_bigint(payload: &Value) -> Result<i128> {
    match payload {
        Value::String(s) => {
            let digits = s.trim();
            let unsigned = digits.strip_prefix(['-', '+']).unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(malformed(format!("invalid $BigInt value {s:?}")));
            }
            digits.parse::<i128>().map_err(|_| malformed(format!("$BigInt value {s} does not fit in 128 bits")))
        }
        Value::Int(n) => Ok((*n).into()),
        Value::BigInt(n) => Ok(*n),
        other => Err(malformed(format!("$BigInt payload must be a decimal string, found {}", other.type_name()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Value {
        Value::from(x)
    }

    #[test]
    fn encodes_special_values() {
        assert_eq!(encode(&Value::BigInt(-5)), Value::Array(vec![s("$BigInt"), s("-5")]));
        assert_eq!(encode(&Value::Bytes(vec![1, 2, 3].into())), Value::Array(vec![s("$Uint8Array"), s("AQID")]));
        assert_eq!(encode(&Value::Undefined), Value::Array(vec![s("$Undefined"), Value::Int(0)]));
        assert_eq!(
            encode(&Value::Set(vec![Value::Bytes(vec![].into())])),
            Value::Array(vec![s("$Set"), Value::Array(vec![Value::Array(vec![s("$Uint8Array"), s("")])])])
        );
        assert_eq!(encode(&Value::Array(vec![s("$x"), Value::Int(1)])), Value::Array(vec![s("$$x"), Value::Int(1)]));
        assert_eq!(encode(&Value::Array(vec![s("$"), Value::Int(1)])), Value::Array(vec![s("$$"), Value::Int(1)]));
        // Not exactly two elements, or first not a `$` string: untouched.
        let three = Value::Array(vec![s("$x"), Value::Int(1), Value::Int(2)]);
        assert_eq!(encode(&three), three);
        let plain = Value::Array(vec![s("x"), Value::Int(1)]);
        assert_eq!(encode(&plain), plain);
    }

    #[test]
    fn revives_what_it_encodes() {
        let v = Value::object([
            ("a", Value::Array(vec![s("$$y"), Value::Undefined])),
            ("b", Value::Set(vec![Value::BigInt(i128::MIN), Value::Bytes(vec![0, 255].into())])),
            ("c", Value::Array(vec![s("$"), Value::Null])),
        ]);
        assert_eq!(revive(encode(&v)).unwrap(), v);
    }

    #[test]
    fn revive_errors() {
        let err = |v: Value| revive(v).unwrap_err().to_string();
        assert!(err(Value::Array(vec![s("$Date"), s("x")])).contains("unknown JSON encoding type: $Date"));
        assert!(err(Value::Array(vec![s("$"), s("x")])).contains("unknown JSON encoding type: $"));
        assert!(err(Value::Array(vec![s("$Uint8Array"), s("**")])).contains("invalid base64"));
        assert!(err(Value::Array(vec![s("$Uint8Array"), Value::Int(1)])).contains("base64 string"));
        assert!(err(Value::Array(vec![s("$BigInt"), s("1.5")])).contains("invalid $BigInt"));
        assert!(err(Value::Array(vec![s("$BigInt"), s("-")])).contains("invalid $BigInt"));
        assert!(err(Value::Array(vec![s("$BigInt"), s(&"9".repeat(40))])).contains("128 bits"));
        assert!(err(Value::Array(vec![s("$Set"), Value::Int(1)])).contains("$Set payload"));
    }

    #[test]
    fn json_outputs_undefined_as_the_client_version_understands_it() {
        let undefined = Value::Array(vec![s("$Undefined"), Value::Int(0)]);
        assert_eq!(json_output(&Value::Undefined, Some(4)), undefined);
        assert_eq!(json_output(&Value::Undefined, Some(5)), undefined);
        assert_eq!(json_output(&Value::Undefined, Some(3)), Value::Null);
        assert_eq!(json_output(&Value::Undefined, None), Value::Null);
        // Anything else as before, for every version.
        let bytes = Value::Bytes(vec![1, 2, 3].into());
        assert_eq!(json_output(&bytes, Some(4)), encode_outgoing(&bytes, Outgoing::Json));
        assert_eq!(json_output(&Value::Null, Some(4)), Value::Null);
    }

    #[test]
    fn revive_is_lenient_where_the_client_is() {
        assert_eq!(revive(Value::Array(vec![s("$Uint8Array"), s("AQI")])).unwrap(), Value::Bytes(vec![1, 2].into()));
        assert_eq!(revive(Value::Array(vec![s("$ArrayBuffer"), s("AQJ=")])).unwrap(), Value::Bytes(vec![1, 2].into()));
        assert_eq!(revive(Value::Array(vec![s("$BigInt"), s(" +7 ")])).unwrap(), Value::BigInt(7));
        assert_eq!(revive(Value::Array(vec![s("$BigInt"), Value::Int(7)])).unwrap(), Value::BigInt(7));
        assert_eq!(revive(Value::Array(vec![s("$Undefined"), Value::Null])).unwrap(), Value::Undefined);
    }
}
