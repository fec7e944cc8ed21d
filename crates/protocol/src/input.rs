//! An actor's creation input (`createWithInput` / `create(key, {input})`) as the rivetkit client
//! sends it: CBOR of the JSON-compatible value, in base64 — URL-safe without padding in the
//! `rvt-input` query parameter (clients 2.3), standard with padding in the `input` field of
//! `PUT`/`POST /actors` (older clients and `resolve()`). Both alphabets are accepted in both
//! places.

use base64::Engine;

use crate::error::ProtocolError;
use crate::Value;

/// Largest decoded input accepted (the client itself refuses more than 4096 bytes of CBOR in a
/// URL; a body may carry more).
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// Decodes a creation input.
pub fn decode_input(encoded: &str) -> Result<Value, ProtocolError> {
    let malformed = |what: String| ProtocolError::Malformed(format!("actor input: {what}"));
    let text = encoded.trim();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|e| malformed(format!("not base64: {e}")))?;
    decode_input_bytes(&bytes)
}

/// Decodes a creation input given as its CBOR bytes (as an engine passes it to its hosts).
pub fn decode_input_bytes(bytes: &[u8]) -> Result<Value, ProtocolError> {
    let malformed = |what: String| ProtocolError::Malformed(format!("actor input: {what}"));
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(malformed(format!("{} bytes, more than the {MAX_INPUT_BYTES} accepted", bytes.len())));
    }
    crate::cbor::decode(bytes).map_err(|e| malformed(format!("not CBOR: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_alphabets_decode_the_clients_bytes() {
        // `{a: 1}` as the client encodes it in a URL, and `{z: 2}` in a PUT body.
        assert_eq!(decode_input("uQABYWEB").unwrap().get("a").and_then(Value::as_i64), Some(1));
        assert_eq!(decode_input("uQABYXoC").unwrap().get("z").and_then(Value::as_i64), Some(2));
        assert!(decode_input("not base64!").is_err());
        // A map of one entry, cut off before its key.
        assert!(decode_input("uQAB").unwrap_err().to_string().contains("not CBOR"));
    }
}
