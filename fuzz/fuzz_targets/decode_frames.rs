//! Feeds every input to every decoder of `agentvm-protocol`, in all three encodings: the
//! server-side ones (client frames, HTTP action requests) and the client-side ones (server
//! frames, HTTP responses and errors). Nothing may panic, and whatever decodes must survive
//! encode -> decode unchanged in the same encoding (the only allowed failure is the nesting
//! limit, since compat forms can add a level to natively encoded values). What the server sends
//! is lossy on purpose for some values (`undefined` is `null` in json; a `Set` is a plain array
//! for bare clients before version 4), so for server-to-client messages the property is that a
//! second trip changes nothing.

#![no_main]

use agentvm_protocol::{
    decode_action_request, decode_action_response, decode_http_error_json, decode_to_client, decode_to_server,
    encode_action_request, encode_action_response, encode_http_error_json, encode_to_client, encode_to_server,
    Encoding, ProtocolError,
};
use libfuzzer_sys::fuzz_target;

const ENCODINGS: [Encoding; 3] = [Encoding::Bare, Encoding::Json, Encoding::Cbor];

/// The version to re-encode with: the decoded one, or 4 when the message carried none.
fn version_of(version: Option<u16>) -> u16 {
    version.unwrap_or(4)
}

/// The first trip of a lossy encoding: it must decode, or hit the nesting limit.
fn first_trip<T: std::fmt::Debug>(what: &str, encoding: Encoding, first: Result<T, ProtocolError>) -> Option<T> {
    match first {
        Ok(once) => Some(once),
        Err(ProtocolError::Malformed(m)) if m.contains("nested deeper") || m.contains("recursion limit") => None,
        Err(e) => panic!("{what} {encoding}: our own encoding does not decode: {e}"),
    }
}

/// Checks a re-decode of our own encoding of `first`.
fn same<T: std::fmt::Debug>(what: &str, encoding: Encoding, first: &T, again: Result<T, ProtocolError>) {
    match again {
        // Debug output compares floats by value and prints every NaN alike.
        Ok(again) => assert_eq!(format!("{first:?}"), format!("{again:?}"), "{what} {encoding}: re-decode differs"),
        Err(ProtocolError::Malformed(m)) if m.contains("nested deeper") || m.contains("recursion limit") => {}
        Err(e) => panic!("{what} {encoding}: our own encoding of {first:?} does not decode: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for encoding in ENCODINGS {
        if let Ok((version, message)) = decode_to_server(encoding, data) {
            let frame = encode_to_server(encoding, version_of(version), &message);
            same("to_server", encoding, &message, decode_to_server(encoding, frame.as_bytes()).map(|(_, m)| m));
        }
        if let Ok((version, args)) = decode_action_request(encoding, data) {
            let body = encode_action_request(encoding, version_of(version), &args);
            same("action_request", encoding, &args, decode_action_request(encoding, &body).map(|(_, a)| a));
        }
        if let Ok((version, message)) = decode_to_client(encoding, data) {
            let version = version_of(version);
            let trip = |m| decode_to_client(encoding, encode_to_client(encoding, version, m).as_bytes()).map(|(_, m)| m);
            if let Some(once) = first_trip("to_client", encoding, trip(&message)) {
                same("to_client", encoding, &once, trip(&once));
            }
        }
        if let Ok((version, output)) = decode_action_response(encoding, data) {
            let version = Some(version_of(version));
            let trip = |o| decode_action_response(encoding, &encode_action_response(encoding, version, o)).map(|(_, o)| o);
            if let Some(once) = first_trip("action_response", encoding, trip(&output)) {
                same("action_response", encoding, &once, trip(&once));
            }
        }
    }
    if let Ok(error) = decode_http_error_json(data) {
        same("http_error", Encoding::Json, &error, decode_http_error_json(&encode_http_error_json(&error)));
    }
});
