//! # agentvm-protocol
//!
//! Codecs for the wire protocol of the `rivetkit` npm client (2.0.x to 2.3.x), so that agentvm
//! can serve VMs as RivetKit actors: stateless HTTP actions and WebSocket connections, in the
//! three encodings the client offers (see `shared/reference/rivetkit-protocol.md`, §5–§7, §9).
//!
//! * [`Encoding`]: `bare` (default: a `u16` LE version + BARE, with CBOR payload blobs),
//!   `json`, `cbor`.
//! * [`Value`]: what actions take and return, including `undefined`, `BigInt`, `Uint8Array` and
//!   `Set`, carried by the JSON-compat layer (`["$BigInt","1"]`, `["$Uint8Array","AQID"]`, ...).
//! * HTTP: [`decode_action_request`], [`encode_action_response`], [`encode_http_error_json`].
//! * WebSocket: [`decode_to_server`] and [`encode_to_client`] for [`ToServer`] / [`ToClient`]
//!   messages, producing [`Frame`]s.
//! * The client side of both (`encode_to_server`, `decode_to_client`, `encode_action_request`,
//!   `decode_action_response`, `decode_http_error_json`), for tests and tools.
//!
//! Decoders never panic and reject anything malformed with a [`ProtocolError`] whose
//! [`group`](ProtocolError::group)/[`code`](ProtocolError::code) can be sent back as is.
//!
//! ```
//! use agentvm_protocol::{decode_to_server, encode_to_client, Encoding, Frame, ToClient, ToServer, Value};
//!
//! // The captured `exec("echo hello")` frame of a 2.3.19 client (protocol version 4).
//! let frame = [0x04, 0x00, 0x00, 0x00, 0x04, b'e', b'x', b'e', b'c', 0x0c, 0x81, 0x6a, b'e', b'c', b'h', b'o', b' ', b'h', b'e', b'l', b'l', b'o'];
//! let (version, message) = decode_to_server(Encoding::Bare, &frame).unwrap();
//! assert_eq!(version, Some(4));
//! assert_eq!(message, ToServer::ActionRequest { id: 0, name: "exec".into(), args: vec![Value::from("echo hello")] });
//!
//! let reply = ToClient::ActionResponse { id: 0, output: Value::object([("exitCode", Value::from(0))]) };
//! let Frame::Text(json) = encode_to_client(Encoding::Json, 4, &reply) else { unreachable!() };
//! assert_eq!(json, r#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","0"],"output":{"exitCode":0}}}}"#);
//! ```

#![forbid(unsafe_code)]

mod bare;
mod cbor;
mod compat;
mod encoding;
mod envelope;
mod error;
mod error_body;
mod http;
mod input;
mod json;
pub mod keys;
mod message;
mod payload;
mod value;
mod ws;

pub use compat::JSON_UNDEFINED_SINCE;
pub use encoding::Encoding;
pub use error::ProtocolError;
pub use http::{
    decode_action_request, decode_action_response, decode_http_error_json, encode_action_request,
    encode_action_response, encode_action_response_parts, encode_http_error_json,
};
pub use input::{decode_input, decode_input_bytes, MAX_INPUT_BYTES};
pub use message::{ActorSpecifier, ErrorBody, Frame, ToClient, ToServer};
pub use value::Value;
pub use ws::{decode_to_client, decode_to_client_shared, decode_to_server, encode_to_client, encode_to_server};

/// BARE protocol versions accepted from clients: 2 (rivetkit 2.0.x), 3 (2.1–2.2), 4 (2.3.x).
/// Versions 0, 1 and anything above 4 are rejected with [`ProtocolError::UnsupportedVersion`].
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u16> = 2..=4;

/// The BARE version to use for a `ToClient::Init` sent before any client frame: `Init` is
/// byte-identical in versions 2 to 4 and every supported client accepts version 2.
pub const INIT_VERSION: u16 = 2;

/// Maximum nesting depth of decoded values (JSON and CBOR); deeper input is malformed.
pub const MAX_DEPTH: usize = cbor::MAX_DEPTH;
