//! Every message survives encode -> decode in every encoding, for hand-picked and for
//! pseudo-random values.

mod common;

use agentvm_protocol::*;
use common::{rich_value, s};

const ENCODINGS: [Encoding; 3] = [Encoding::Bare, Encoding::Json, Encoding::Cbor];

fn error_body(actor: bool, metadata: Option<Value>) -> ErrorBody {
    ErrorBody {
        group: "actor".into(),
        code: "action_not_found".into(),
        message: "Action `nosuch` was not found.".into(),
        metadata,
        actor: actor.then(|| ActorSpecifier { actor_id: "actor-1".into(), generation: u64::MAX, key: None }),
    }
}

fn to_client_messages(value: &Value) -> Vec<ToClient> {
    vec![
        ToClient::Init { actor_id: "a".repeat(300), connection_id: "ünïcode-✓".into() },
        ToClient::Init { actor_id: String::new(), connection_id: String::new() },
        ToClient::Error { error: error_body(true, Some(value.clone())), action_id: Some(u64::MAX) },
        ToClient::Error { error: error_body(false, None), action_id: None },
        ToClient::Error {
            error: ErrorBody {
                actor: Some(ActorSpecifier { actor_id: "x".into(), generation: 0, key: Some("k/ey".into()) }),
                ..error_body(false, Some(Value::Null))
            },
            action_id: Some(0),
        },
        ToClient::ActionResponse { id: 0, output: value.clone() },
        ToClient::ActionResponse { id: 1 << 40, output: Value::Undefined },
        ToClient::ActionResponse { id: 2, output: Value::Array(vec![s("$x"), Value::Int(1)]) },
        ToClient::Event { name: "processOutput".into(), args: vec![value.clone(), Value::Undefined, Value::Null] },
        ToClient::Event { name: "e".into(), args: vec![] },
        // The args array itself looks like a compat form.
        ToClient::Event { name: "e".into(), args: vec![s("$Undefined"), Value::Int(0)] },
    ]
}

fn to_server_messages(value: &Value) -> Vec<ToServer> {
    vec![
        ToServer::ActionRequest { id: 0, name: "exec".into(), args: vec![value.clone()] },
        ToServer::ActionRequest { id: u64::MAX, name: String::new(), args: vec![] },
        ToServer::ActionRequest { id: 3, name: "f".into(), args: vec![s("$BigInt"), s("1")] },
        ToServer::ActionRequest {
            id: 4,
            name: "g".into(),
            args: vec![Value::Undefined, Value::Bytes(vec![9; 1000].into())],
        },
        ToServer::SubscriptionRequest { event_name: "processOutput".into(), subscribe: true },
        ToServer::SubscriptionRequest { event_name: "processExit".into(), subscribe: false },
    ]
}

/// A value as it arrives after a trip through `encoding`: CBOR (bare payloads, the cbor
/// encoding) carries integers beyond ±2^32 as floats, like cbor-x does for JS numbers.
fn over_wire(encoding: Encoding, value: &Value) -> Value {
    let all = |items: &[Value]| items.iter().map(|v| over_wire(encoding, v)).collect();
    match value {
        Value::Int(n) if encoding != Encoding::Json && !(-(1 << 32)..(1 << 32)).contains(n) => Value::Float(*n as f64),
        Value::Array(items) => Value::Array(all(items)),
        Value::Set(items) => Value::Set(all(items)),
        Value::Map(entries) => Value::Map(entries.iter().map(|(k, v)| (k.clone(), over_wire(encoding, v))).collect()),
        other => other.clone(),
    }
}

/// What a client of `version` decodes from a value the server sent (see `Outgoing`): json has
/// no `undefined` (sent as `null`); CBOR carries large integers as floats; clients before 2.3
/// (bare before version 4) get a `Set` as a plain array.
fn received_by_client(encoding: Encoding, version: u16, value: &Value) -> Value {
    let all = |items: &[Value]| items.iter().map(|v| received_by_client(encoding, version, v)).collect();
    match value {
        Value::Int(n) if encoding != Encoding::Json && !(-(1 << 32)..(1 << 32)).contains(n) => Value::Float(*n as f64),
        Value::Undefined if encoding == Encoding::Json => Value::Null,
        Value::Set(items) if encoding == Encoding::Bare && version < 4 => Value::Array(all(items)),
        Value::Array(items) => Value::Array(all(items)),
        Value::Set(items) => Value::Set(all(items)),
        Value::Map(entries) => {
            Value::Map(entries.iter().map(|(k, v)| (k.clone(), received_by_client(encoding, version, v))).collect())
        }
        other => other.clone(),
    }
}

/// What a client of `version` decodes from an action's output: in json, an `undefined` output
/// is `undefined` for clients 2.3 (when the server knows the version), `null` otherwise.
fn output_received(encoding: Encoding, version: Option<u16>, output: &Value) -> Value {
    match (encoding, output) {
        (Encoding::Json, Value::Undefined) if version.is_some_and(|v| v >= JSON_UNDEFINED_SINCE) => Value::Undefined,
        _ => received_by_client(encoding, version.unwrap_or(4), output),
    }
}

fn args_over_wire(encoding: Encoding, args: &[Value]) -> Vec<Value> {
    args.iter().map(|v| over_wire(encoding, v)).collect()
}

/// What a client decodes from `message` sent at `version`: bare before v4 has no `actor`.
fn as_received(encoding: Encoding, version: u16, message: &ToClient) -> ToClient {
    match message {
        ToClient::Error { error, action_id } => {
            let actor = if encoding == Encoding::Bare && version < 4 { None } else { error.actor.clone() };
            let metadata = error
                .metadata
                .as_ref()
                .filter(|m| **m != Value::Undefined)
                .map(|m| received_by_client(encoding, version, m));
            ToClient::Error { error: ErrorBody { actor, metadata, ..error.clone() }, action_id: *action_id }
        }
        ToClient::ActionResponse { id, output } => {
            ToClient::ActionResponse { id: *id, output: output_received(encoding, Some(version), output) }
        }
        ToClient::Event { name, args } => ToClient::Event {
            name: name.clone(),
            args: args.iter().map(|v| received_by_client(encoding, version, v)).collect(),
        },
        ToClient::Init { .. } => message.clone(),
    }
}

fn to_server_received(encoding: Encoding, message: ToServer) -> ToServer {
    match message {
        ToServer::ActionRequest { id, name, args } => {
            ToServer::ActionRequest { id, name, args: args_over_wire(encoding, &args) }
        }
        other => other,
    }
}

fn check_to_client(value: &Value) {
    for encoding in ENCODINGS {
        for version in SUPPORTED_VERSIONS {
            for message in to_client_messages(value) {
                let frame = encode_to_client(encoding, version, &message);
                assert_eq!(matches!(frame, Frame::Text(_)), encoding.uses_text_frames());
                let decoded = decode_to_client(encoding, frame.as_bytes())
                    .unwrap_or_else(|e| panic!("{encoding} v{version} {message:?}: {e}"));
                let expected_version = (encoding == Encoding::Bare).then_some(version);
                assert_eq!(
                    decoded,
                    (expected_version, as_received(encoding, version, &message)),
                    "{encoding} v{version}"
                );
            }
        }
    }
}

fn check_to_server(value: &Value) {
    for encoding in ENCODINGS {
        for version in SUPPORTED_VERSIONS {
            for message in to_server_messages(value) {
                let frame = encode_to_server(encoding, version, &message);
                let decoded = decode_to_server(encoding, frame.as_bytes())
                    .unwrap_or_else(|e| panic!("{encoding} v{version} {message:?}: {e}"));
                let expected_version = (encoding == Encoding::Bare).then_some(version);
                assert_eq!(decoded, (expected_version, to_server_received(encoding, message)), "{encoding} v{version}");
            }
        }
    }
}

fn check_http(value: &Value) {
    for encoding in ENCODINGS {
        for version in SUPPORTED_VERSIONS {
            let args = vec![value.clone(), Value::Undefined, s("$x")];
            let body = encode_action_request(encoding, version, &args);
            let expected_version = (encoding == Encoding::Bare).then_some(version);
            let expected = (expected_version, args_over_wire(encoding, &args));
            assert_eq!(decode_action_request(encoding, &body).unwrap(), expected, "{encoding}");

            for output in [value.clone(), Value::Undefined, Value::Null] {
                let body = encode_action_response(encoding, expected_version, &output);
                let expected = (expected_version, received_by_client(encoding, version, &output));
                assert_eq!(decode_action_response(encoding, &body).unwrap(), expected, "{encoding}");
                if encoding == Encoding::Json {
                    // A json client whose version the server could tell.
                    let body = encode_action_response(encoding, Some(version), &output);
                    let expected = (None, output_received(encoding, Some(version), &output));
                    assert_eq!(decode_action_response(encoding, &body).unwrap(), expected, "json v{version}");
                }
            }
        }
    }
    let error = error_body(true, Some(value.clone()));
    let metadata =
        error.metadata.as_ref().filter(|m| **m != Value::Undefined).map(|m| received_by_client(Encoding::Json, 4, m));
    let expected = ErrorBody { metadata, ..error.clone() };
    assert_eq!(decode_http_error_json(&encode_http_error_json(&error)).unwrap(), expected);
}

#[test]
fn rich_value_round_trips() {
    let value = rich_value();
    check_to_client(&value);
    check_to_server(&value);
    check_http(&value);
}

#[test]
fn bare_response_without_request_version_uses_version_2() {
    let body = encode_action_response(Encoding::Bare, None, &Value::Int(1));
    assert_eq!(body, [0x02, 0x00, 0x01, 0x01]);
}

#[test]
fn empty_and_argless_requests_mean_no_arguments() {
    for encoding in ENCODINGS {
        assert_eq!(decode_action_request(encoding, b"").unwrap(), (None, vec![]), "{encoding}");
    }
    for body in [&b"{}"[..], b"  ", b"{\"args\":null}", b"{\"other\":1}"] {
        assert_eq!(decode_action_request(Encoding::Json, body).unwrap(), (None, vec![]));
    }
    assert_eq!(decode_action_request(Encoding::Cbor, &[0xa0]).unwrap(), (None, vec![]));
}

/// A small deterministic PRNG (xorshift64*), so the random cases are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn string(&mut self) -> String {
        const PIECES: [&str; 10] = ["$", "$$", "a", "Z", "é", "\"", "\n", "$BigInt", "$Set", "✓"];
        (0..self.below(5)).map(|_| PIECES[self.below(PIECES.len() as u64) as usize]).collect()
    }

    fn value(&mut self, depth: u32) -> Value {
        let leaf = depth == 0 || self.below(3) == 0;
        match if leaf { self.below(8) } else { 8 + self.below(4) } {
            0 => Value::Undefined,
            1 => Value::Null,
            2 => Value::Bool(self.below(2) == 1),
            3 => Value::Int(self.next() as i64 >> self.below(64)),
            4 => Value::Float((self.next() as i64 >> 11) as f64 / 1024.0 + 0.5),
            5 => Value::BigInt(((self.next() as i128) << 64 | self.next() as i128) >> self.below(128)),
            6 => Value::String(self.string()),
            7 => Value::Bytes((0..self.below(20)).map(|_| self.next() as u8).collect()),
            8 => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            9 => {
                // Arrays shaped like compat forms are the interesting case.
                Value::Array(vec![Value::String(format!("${}", self.string())), self.value(depth - 1)])
            }
            10 => Value::Set((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            _ => {
                let mut keys = std::collections::HashSet::new();
                Value::Map(
                    (0..self.below(5))
                        .map(|i| (format!("{}{i}", self.string()), self.value(depth - 1)))
                        .filter(|(k, _)| keys.insert(k.clone()))
                        .collect(),
                )
            }
        }
    }
}

#[test]
fn random_values_round_trip() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        let value = rng.value(6);
        check_to_client(&value);
        check_to_server(&value);
        check_http(&value);
    }
}
