//! Stateless HTTP actions (protocol reference §5): `POST .../action/{name}`.
//!
//! | Encoding | Request body                          | Success body                      |
//! |----------|---------------------------------------|-----------------------------------|
//! | bare     | `u16` LE version + `{args: data}`     | `u16` LE version + `{output: data}` |
//! | json     | `{"args":[...]}` (compat forms)       | `{"output":...}` (compat forms)   |
//! | cbor     | CBOR map `{args: [...]}` (native)     | CBOR map `{output: ...}`          |
//!
//! Errors are always answered as JSON (`content-type: application/json`), which the client
//! parses whatever the request encoding: `{"group","code","message","metadata"?,"actor"?}`.
//!
//! Besides the server side this module has the client side ([`encode_action_request`],
//! [`decode_action_response`], [`decode_http_error_json`]) for tests and tools.

use crate::bare::{Reader, Writer};
use crate::compat::{self, Outgoing};
use crate::encoding::Encoding;
use crate::envelope::{self, Fields};
use crate::error::ProtocolError;
use crate::error_body;
use crate::json;
use crate::message::ErrorBody;
use crate::payload;
use crate::value::Value;

/// The BARE version written when a request carried none (an empty body): byte-identical
/// `HttpActionResponse` in every version, and accepted by every supported client.
const DEFAULT_BARE_VERSION: u16 = 2;

/// Decodes the body of `POST .../action/{name}`. Returns the BARE version prefix (`None` for
/// json/cbor, and for an empty body) and the arguments.
///
/// An empty body, or an object without `args` (or with `args: null`), means no arguments.
pub fn decode_action_request(encoding: Encoding, body: &[u8]) -> Result<(Option<u16>, Vec<Value>), ProtocolError> {
    let empty = match encoding {
        Encoding::Json => body.iter().all(u8::is_ascii_whitespace),
        Encoding::Cbor | Encoding::Bare => body.is_empty(),
    };
    if empty {
        return Ok((None, Vec::new()));
    }
    match encoding {
        Encoding::Bare => {
            let mut r = Reader::new(body);
            let version = r.version()?;
            let args = payload::decode_blob(r.data("action args")?, "args")?;
            r.finish()?;
            Ok((Some(version), payload::into_args(args)?))
        }
        Encoding::Json | Encoding::Cbor => {
            let tree = envelope::read(encoding, body, encoding == Encoding::Json)?;
            let mut fields = Fields::of(tree, "request body")?;
            match fields.optional("args") {
                Some(args) => Ok((None, payload::into_args(args)?)),
                None => Ok((None, Vec::new())),
            }
        }
    }
}

/// Encodes `{output}` for a successful action. `version` is the client's protocol version: in
/// bare the request's prefix; in json, which carries none, what the server could tell (see
/// [`JSON_UNDEFINED_SINCE`](crate::JSON_UNDEFINED_SINCE)): an `undefined` output is
/// `["$Undefined",0]` for clients 2.3 and `null` otherwise (every client rejects a body without
/// `output`). Ignored for cbor.
pub fn encode_action_response(encoding: Encoding, version: Option<u16>, output: &Value) -> Vec<u8> {
    match encoding {
        Encoding::Bare => {
            let version = version.unwrap_or(DEFAULT_BARE_VERSION);
            let mut w = Writer::with_version(version);
            payload::write_blob(&mut w, output, version);
            w.finish()
        }
        Encoding::Json => envelope::write(encoding, &Value::object([("output", compat::json_output(output, version))])),
        Encoding::Cbor => envelope::write(
            encoding,
            &Value::object([("output", compat::encode_outgoing(output, Outgoing::for_encoding(encoding)))]),
        ),
    }
}

/// [`encode_action_response`] taking the output by value, as the parts of the body in order.
/// In bare, the large strings and byte strings of the output (an `exec`'s stdout, a file read
/// with `readFile`) are parts of their own, moved rather than copied: a body of hundreds of MiB
/// is then never copied in user space. json and cbor bodies are one part.
pub fn encode_action_response_parts(encoding: Encoding, version: Option<u16>, output: Value) -> Vec<Vec<u8>> {
    match encoding {
        Encoding::Bare => {
            let version = version.unwrap_or(DEFAULT_BARE_VERSION);
            payload::finish_with_blob(Writer::with_version(version), output, version)
        }
        Encoding::Json | Encoding::Cbor => vec![encode_action_response(encoding, version, &output)],
    }
}

/// Encodes an HTTP error body as JSON: `{"group","code","message","metadata"?,"actor"?}`, with
/// `metadata` compat-encoded. Send it with `content-type: application/json` whatever the request
/// encoding.
pub fn encode_http_error_json(error: &ErrorBody) -> Vec<u8> {
    json::to_vec(&Value::Map(error_body::fields(Encoding::Json, error)))
}

/// Client side: encodes an action request body as the RivetKit client does.
pub fn encode_action_request(encoding: Encoding, version: u16, args: &[Value]) -> Vec<u8> {
    match encoding {
        Encoding::Bare => {
            let mut w = Writer::with_version(version);
            w.data(&payload::encode_client_args_blob(args));
            w.finish()
        }
        Encoding::Json => json::to_vec(&Value::object([("args", compat::encode_array(args))])),
        Encoding::Cbor => envelope::write(encoding, &Value::object([("args", Value::Array(args.to_vec()))])),
    }
}

/// Client side: decodes a success body. Returns the BARE version (`None` for json/cbor) and the
/// output (`Undefined` when a json/cbor body has no `output`).
pub fn decode_action_response(encoding: Encoding, body: &[u8]) -> Result<(Option<u16>, Value), ProtocolError> {
    match encoding {
        Encoding::Bare => {
            let mut r = Reader::new(body);
            let version = r.version()?;
            let output = payload::decode_server_blob(r.data("action output")?, None, "output", version)?;
            r.finish()?;
            Ok((Some(version), output))
        }
        Encoding::Json | Encoding::Cbor => {
            let mut fields = Fields::of(envelope::read(encoding, body, true)?, "response body")?;
            Ok((None, fields.take("output").unwrap_or(Value::Undefined)))
        }
    }
}

/// Client side: decodes a JSON error body.
pub fn decode_http_error_json(body: &[u8]) -> Result<ErrorBody, ProtocolError> {
    let mut fields = Fields::of(envelope::read(Encoding::Json, body, true)?, "error body")?;
    error_body::from_fields(&mut fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undefined_output_in_json_follows_the_client_version() {
        let body =
            |version| String::from_utf8(encode_action_response(Encoding::Json, version, &Value::Undefined)).unwrap();
        assert_eq!(body(Some(4)), r#"{"output":["$Undefined",0]}"#);
        assert_eq!(body(Some(3)), r#"{"output":null}"#);
        assert_eq!(body(None), r#"{"output":null}"#);
        // The client side reads both back.
        assert_eq!(decode_action_response(Encoding::Json, body(Some(4)).as_bytes()).unwrap().1, Value::Undefined);
        assert_eq!(decode_action_response(Encoding::Json, body(None).as_bytes()).unwrap().1, Value::Null);
    }

    #[test]
    fn the_parts_make_the_same_body() {
        let stdout = "x".repeat(100_000);
        let output = Value::object([
            ("exitCode", Value::Int(0)),
            ("stdout", Value::from(stdout.clone())),
            ("stderr", Value::from("")),
            ("bytes", Value::Bytes(vec![1; 100_000].into())),
            ("pair", Value::Array(vec![Value::from("$x"), Value::Bytes(vec![2; 100_000].into())])),
        ]);
        for encoding in [Encoding::Bare, Encoding::Json, Encoding::Cbor] {
            for version in [None, Some(3), Some(4)] {
                let parts = encode_action_response_parts(encoding, version, output.clone());
                assert_eq!(
                    parts.concat(),
                    encode_action_response(encoding, version, &output),
                    "{encoding:?} {version:?}"
                );
                if encoding == Encoding::Bare {
                    assert!(parts.iter().any(|p| p == stdout.as_bytes()), "stdout is a part of its own");
                }
            }
        }
    }
}
