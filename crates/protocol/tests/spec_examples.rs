//! Every captured byte example of the protocol reference (§5, §6, §7, §10) decodes to the
//! expected value, and what the server produces is reproduced byte for byte (bare, cbor) or as
//! the same JSON document (json).

mod common;

use agentvm_protocol::*;
use common::{hex, json, s, sorted, spec};

const ACTOR_ID: &str = "xgmppcb3w24zn1y72b7go0wz90bl00";
const CONN_ID: &str = "e5938b0d-1fe6-4d1e-b98f-43459b1d4366";

fn failed_error(actor: bool) -> ErrorBody {
    ErrorBody {
        group: "user".into(),
        code: "boom".into(),
        message: "it failed".into(),
        metadata: Some(Value::object([("why", Value::Int(1))])),
        actor: actor.then(|| ActorSpecifier { actor_id: ACTOR_ID.into(), generation: 1, key: Some("my-agent".into()) }),
    }
}

fn process_output() -> Value {
    Value::object([
        ("pid", Value::Int(1)),
        ("stream", s("stdout")),
        ("data", Value::Bytes(b"ran echo hello\n".to_vec().into())),
    ])
}

fn exec_output(count: i64) -> Value {
    Value::object([
        ("stdout", s("hello\n")),
        ("stderr", s("")),
        ("exitCode", Value::Int(0)),
        ("count", Value::Int(count)),
    ])
}

/// The message with map keys sorted (the captured JSON has the engine's key order).
fn sorted_message(message: ToClient) -> ToClient {
    match message {
        ToClient::Event { name, args } => ToClient::Event { name, args: args.iter().map(sorted).collect() },
        ToClient::ActionResponse { id, output } => ToClient::ActionResponse { id, output: sorted(&output) },
        ToClient::Error { mut error, action_id } => {
            error.metadata = error.metadata.as_ref().map(sorted);
            ToClient::Error { error, action_id }
        }
        other => other,
    }
}

// --- §7.3: bare frames, 2.3.19 client <-> real engine ---

#[test]
fn bare_init_frame_is_byte_identical() {
    let captured = "0400001e78676d70706362337732347a6e317937326237676f30777a3930626c30302465353933386230642d316665362d346431652d623938662d343334353962316434333636";
    let init = ToClient::Init { actor_id: ACTOR_ID.into(), connection_id: CONN_ID.into() };
    assert_eq!(encode_to_client(Encoding::Bare, 4, &init), Frame::Binary(spec(captured)));
    assert_eq!(decode_to_client(Encoding::Bare, &spec(captured)).unwrap(), (Some(4), init.clone()));
    // Version 2 (what a server sends before knowing the client's version) differs only in the prefix.
    let v2 = encode_to_client(Encoding::Bare, INIT_VERSION, &init).into_bytes();
    assert_eq!(hex(&v2[..2]), "0200");
    assert_eq!(v2[2..], spec(captured)[2..]);
}

#[test]
fn bare_subscription_request() {
    let captured = spec("0400010d70726f636573734f757470757401");
    let sub = ToServer::SubscriptionRequest { event_name: "processOutput".into(), subscribe: true };
    assert_eq!(decode_to_server(Encoding::Bare, &captured).unwrap(), (Some(4), sub.clone()));
    assert_eq!(encode_to_server(Encoding::Bare, 4, &sub).into_bytes(), captured);
    // The 2.2.1 client (§10.4) sends the same frame with version 3.
    assert_eq!(
        decode_to_server(Encoding::Bare, &spec("0300010d70726f636573734f757470757401")).unwrap(),
        (Some(3), sub)
    );
}

#[test]
fn bare_action_requests() {
    let captured = spec("0400000004657865630c816a6563686f2068656c6c6f");
    let exec = ToServer::ActionRequest { id: 0, name: "exec".into(), args: vec![s("echo hello")] };
    assert_eq!(decode_to_server(Encoding::Bare, &captured).unwrap(), (Some(4), exec.clone()));
    assert_eq!(encode_to_server(Encoding::Bare, 4, &exec).into_bytes(), captured);
    assert_eq!(
        decode_to_server(Encoding::Bare, &spec("0300000004657865630c816a6563686f2068656c6c6f")).unwrap(),
        (Some(3), exec)
    );

    let fail = spec(r#"04 00 | 00 | 01 | 04 "fail" | 02 81 01"#);
    let expected = ToServer::ActionRequest { id: 1, name: "fail".into(), args: vec![Value::Int(1)] };
    assert_eq!(decode_to_server(Encoding::Bare, &fail).unwrap(), (Some(4), expected));
}

#[test]
fn bare_event_frame() {
    let captured = spec(
        r#"04 00 | 03 | 0d "processOutput" | 3e 81 b9 0003 63"pid" 01 66"stream" 66"stdout" 64"data" 82 6b"$Uint8Array" 74"cmFuIGVjaG8gaGVsbG8K""#,
    );
    let event = ToClient::Event { name: "processOutput".into(), args: vec![process_output()] };
    assert_eq!(decode_to_client(Encoding::Bare, &captured).unwrap(), (Some(4), event.clone()));
    // Ours uses the minimal map header (`a3` instead of cbor-x's `b9 0003`) and sends the bytes
    // as a native CBOR byte string (`4f` + 15 bytes) rather than the engine's compat array:
    // 2.3 clients accept both, and clients before 2.3 only revive compat forms in json.
    let ours = spec(
        r#"04 00 | 03 | 0d "processOutput" | 2a 81 a3 63"pid" 01 66"stream" 66"stdout" 64"data" 4f"ran echo hello\n""#,
    );
    assert_eq!(encode_to_client(Encoding::Bare, 4, &event).into_bytes(), ours);
}

#[test]
fn bare_action_response_frame() {
    let captured =
        spec(r#"04 00 | 02 | 00 | 2a b9 0004 66"stdout" 66"hello\n" 66"stderr" 60 68"exitCode" 00 65"count" 03"#);
    let response = ToClient::ActionResponse { id: 0, output: exec_output(3) };
    assert_eq!(decode_to_client(Encoding::Bare, &captured).unwrap(), (Some(4), response.clone()));
    let ours = spec(r#"04 00 | 02 | 00 | 28 a4 66"stdout" 66"hello\n" 66"stderr" 60 68"exitCode" 00 65"count" 03"#);
    assert_eq!(encode_to_client(Encoding::Bare, 4, &response).into_bytes(), ours);
}

#[test]
fn bare_error_frame_is_byte_identical() {
    let captured = spec(&format!(
        r#"04 00 | 01 | 04"user" 04"boom" 09"it failed" | 01 06 a1 63"why" 01 | 01 01 | 01 1e"{ACTOR_ID}" 01 01 08"my-agent""#
    ));
    let error = ToClient::Error { error: failed_error(true), action_id: Some(1) };
    assert_eq!(encode_to_client(Encoding::Bare, 4, &error), Frame::Binary(captured.clone()));
    assert_eq!(decode_to_client(Encoding::Bare, &captured).unwrap(), (Some(4), error.clone()));

    // Before version 4 the `actor` field does not exist.
    let v3 = spec(r#"03 00 | 01 | 04"user" 04"boom" 09"it failed" | 01 06 a1 63"why" 01 | 01 01"#);
    assert_eq!(encode_to_client(Encoding::Bare, 3, &error).into_bytes(), v3);
    let without_actor = ToClient::Error { error: failed_error(false), action_id: Some(1) };
    assert_eq!(decode_to_client(Encoding::Bare, &v3).unwrap(), (Some(3), without_actor));
}

// --- §5 and §10: HTTP action bodies ---

#[test]
fn http_bare_requests() {
    let cases = [
        ("04000c816a6563686f2068656c6c6f", 4, vec![s("echo hello")]),
        ("0400028101", 4, vec![Value::Int(1)]),
        ("04000481626869", 4, vec![s("hi")]),
        ("03000c816a6563686f2068656c6c6f", 3, vec![s("echo hello")]),
    ];
    for (body, version, args) in cases {
        assert_eq!(
            decode_action_request(Encoding::Bare, &spec(body)).unwrap(),
            (Some(version), args.clone()),
            "{body}"
        );
        assert_eq!(hex(&encode_action_request(Encoding::Bare, version, &args)), body);
    }
}

#[test]
fn http_json_and_cbor_requests() {
    assert_eq!(
        decode_action_request(Encoding::Json, br#"{"args":["echo hello"]}"#).unwrap(),
        (None, vec![s("echo hello")])
    );
    assert_eq!(decode_action_request(Encoding::Json, br#"{"args":[1]}"#).unwrap(), (None, vec![Value::Int(1)]));
    let cbor = spec(r#"b9 0001 64 "args" 81 6a "echo hello""#);
    assert_eq!(decode_action_request(Encoding::Cbor, &cbor).unwrap(), (None, vec![s("echo hello")]));
}

#[test]
fn http_responses() {
    // The fake server's answer of §10.1 (which used cbor-x's `b9 0003` map header: 0x23 bytes)
    // and the engine's of §5.
    let fake = spec(r#"04 00 | 21 a3 66"stdout" 66"hello\n" 66"stderr" 60 68"exitCode" 00"#);
    let output = Value::object([("stdout", s("hello\n")), ("stderr", s("")), ("exitCode", Value::Int(0))]);
    assert_eq!(encode_action_response(Encoding::Bare, Some(4), &output), fake);
    assert_eq!(decode_action_response(Encoding::Bare, &fake).unwrap(), (Some(4), output));
    let engine = spec(r#"04 00 2a b9 0004 66"stdout" 66"hello\n" 66"stderr" 60 68"exitCode" 00 65"count" 03"#);
    assert_eq!(decode_action_response(Encoding::Bare, &engine).unwrap(), (Some(4), exec_output(3)));

    assert_eq!(
        json(&encode_action_response(Encoding::Json, None, &exec_output(4))),
        json(br#"{"output":{"count":4,"exitCode":0,"stderr":"","stdout":"hello\n"}}"#)
    );
    // Every client rejects a json body without `output`; `undefined` is sent as `null`.
    assert_eq!(encode_action_response(Encoding::Json, None, &Value::Undefined), br#"{"output":null}"#);
    assert_eq!(encode_action_response(Encoding::Bare, Some(4), &Value::Undefined), [4, 0, 1, 0xf7]);
    assert_eq!(encode_action_response(Encoding::Cbor, None, &Value::Int(1)), spec(r#"a1 66"output" 01"#));
}

#[test]
fn http_error_bodies_are_engine_json() {
    let expected = json(
        br#"{"actor":{"actorId":"xgmppcb3w24zn1y72b7go0wz90bl00","generation":1,"key":"my-agent"},"code":"boom","group":"user","message":"it failed","metadata":{"why":1}}"#,
    );
    assert_eq!(json(&encode_http_error_json(&failed_error(true))), expected);
    assert_eq!(decode_http_error_json(&encode_http_error_json(&failed_error(true))).unwrap(), failed_error(true));

    let not_found = ErrorBody::new("actor", "not_found", "The actor does not exist or was destroyed.");
    assert_eq!(
        String::from_utf8(encode_http_error_json(&not_found)).unwrap(),
        r#"{"group":"actor","code":"not_found","message":"The actor does not exist or was destroyed."}"#
    );
    // Metadata goes through the compat layer.
    let with_bytes = ErrorBody { metadata: Some(Value::Bytes(vec![1, 2, 3].into())), ..not_found };
    assert_eq!(json(&encode_http_error_json(&with_bytes))["metadata"], serde_json::json!(["$Uint8Array", "AQID"]));
}

// --- §6.2 / §6.3: CBOR integer forms, native cbor values, the JSON-compat layer ---

#[test]
fn cbor_bigint_forms() {
    let args =
        |item: &str| decode_action_request(Encoding::Cbor, &spec(&format!(r#"a1 64"args" 81 {item}"#))).unwrap().1;
    assert_eq!(args("1b0000000000000001"), vec![Value::BigInt(1)]);
    assert_eq!(args("1a00000001"), vec![Value::Int(1)]);
    assert_eq!(args("c24101"), vec![Value::BigInt(1)]);
}

#[test]
fn cbor_client_values_are_native_and_not_revived() {
    let body = spec(r#"b9 0001 64"args" 85 d8 40 43 010203 1b 0000000000000005 f7 c1 1a 5f5e1000 82 62"$x" 01"#);
    assert_eq!(
        decode_action_request(Encoding::Cbor, &body).unwrap().1,
        vec![
            Value::Bytes(vec![1, 2, 3].into()),
            Value::BigInt(5),
            Value::Undefined,
            Value::Int(1_600_000_000),
            Value::Array(vec![s("$x"), Value::Int(1)]),
        ]
    );
}

#[test]
fn bare_blobs_carry_compat_values() {
    // A Uint8Array argument in bare arrives as its compat form, not as a CBOR byte string.
    let body = spec(r#"04 00 | 13 81 82 6b"$Uint8Array" 64"AQID""#);
    assert_eq!(
        decode_action_request(Encoding::Bare, &body).unwrap(),
        (Some(4), vec![Value::Bytes(vec![1, 2, 3].into())])
    );
    // Native byte strings are accepted too.
    assert_eq!(
        decode_action_request(Encoding::Bare, &spec("04 00 | 05 81 43 010203")).unwrap().1,
        vec![Value::Bytes(vec![1, 2, 3].into())]
    );
}

#[test]
fn engine_json_compat_output() {
    let captured = br#"{"output":{"bytes":["$Uint8Array","AQID"],"n":["$BigInt","1180591620717411303424"],"set":["$Set",[1]],"tricky":["$$foo",1],"und":["$Undefined",0]}}"#;
    let expected = Value::object([
        ("bytes", Value::Bytes(vec![1, 2, 3].into())),
        ("n", Value::BigInt(1 << 70)),
        ("set", Value::Set(vec![Value::Int(1)])),
        ("tricky", Value::Array(vec![s("$foo"), Value::Int(1)])),
        ("und", Value::Undefined),
    ]);
    assert_eq!(decode_action_response(Encoding::Json, captured).unwrap(), (None, expected.clone()));
    // Ours is the engine's output except that `undefined` goes out as `null`: clients before 2.3
    // do not know `$Undefined`.
    let ours = br#"{"output":{"bytes":["$Uint8Array","AQID"],"n":["$BigInt","1180591620717411303424"],"set":["$Set",[1]],"tricky":["$$foo",1],"und":null}}"#;
    assert_eq!(json(&encode_action_response(Encoding::Json, None, &expected)), json(ours));
    // The same revival applies to what json clients send.
    let request = br#"{"args":[{"bytes":["$Uint8Array","AQID"],"n":["$BigInt","1180591620717411303424"],"set":["$Set",[1]],"tricky":["$$foo",1],"und":["$Undefined",0]}]}"#;
    assert_eq!(decode_action_request(Encoding::Json, request).unwrap(), (None, vec![expected]));
}

#[test]
fn process_output_data_is_compat_in_json_and_native_in_cbor() {
    let event = ToClient::Event { name: "processOutput".into(), args: vec![process_output()] };
    let json_frame = encode_to_client(Encoding::Json, 4, &event).into_bytes();
    let compat = b"[\"$Uint8Array\",\"cmFuIGVjaG8gaGVsbG8K\"]";
    assert!(json_frame.windows(compat.len()).any(|w| w == compat), "json: {}", String::from_utf8_lossy(&json_frame));
    for encoding in [Encoding::Bare, Encoding::Cbor] {
        for version in [2, 3, 4] {
            let bytes = encode_to_client(encoding, version, &event).into_bytes();
            let native = b"\x4fran echo hello\n";
            assert!(bytes.windows(native.len()).any(|w| w == native), "{encoding} v{version}: {}", hex(&bytes));
        }
    }
}

// --- §7.4: json frames ---

#[test]
fn json_client_frames() {
    let sub = br#"{"body":{"tag":"SubscriptionRequest","val":{"eventName":"processOutput","subscribe":true}}}"#;
    assert_eq!(
        decode_to_server(Encoding::Json, sub).unwrap(),
        (None, ToServer::SubscriptionRequest { event_name: "processOutput".into(), subscribe: true })
    );
    let exec = br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","0"],"name":"exec","args":["echo hello"]}}}"#;
    let exec_msg = ToServer::ActionRequest { id: 0, name: "exec".into(), args: vec![s("echo hello")] };
    assert_eq!(decode_to_server(Encoding::Json, exec).unwrap(), (None, exec_msg.clone()));
    assert_eq!(json(encode_to_server(Encoding::Json, 4, &exec_msg).as_bytes()), json(exec));
    let fail = br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","1"],"name":"fail","args":[1]}}}"#;
    assert_eq!(
        decode_to_server(Encoding::Json, fail).unwrap(),
        (None, ToServer::ActionRequest { id: 1, name: "fail".into(), args: vec![Value::Int(1)] })
    );
    // A plain integer id is accepted too.
    let plain = br#"{"body":{"tag":"ActionRequest","val":{"id":7,"name":"fail","args":[]}}}"#;
    assert_eq!(
        decode_to_server(Encoding::Json, plain).unwrap(),
        (None, ToServer::ActionRequest { id: 7, name: "fail".into(), args: vec![] })
    );
}

#[test]
fn json_server_frames() {
    let text = |m: &ToClient| match encode_to_client(Encoding::Json, 4, m) {
        Frame::Text(t) => t,
        Frame::Binary(_) => panic!("json must be sent as text"),
    };
    let cases: Vec<(ToClient, &[u8])> = vec![
        (
            ToClient::Init { actor_id: ACTOR_ID.into(), connection_id: "8843c32a-f7f6-4080-a904-daf1a8192569".into() },
            br#"{"body":{"tag":"Init","val":{"actorId":"xgmppcb3w24zn1y72b7go0wz90bl00","connectionId":"8843c32a-f7f6-4080-a904-daf1a8192569"}}}"#,
        ),
        (
            ToClient::Event { name: "processOutput".into(), args: vec![process_output()] },
            br#"{"body":{"tag":"Event","val":{"args":[{"data":["$Uint8Array","cmFuIGVjaG8gaGVsbG8K"],"pid":1,"stream":"stdout"}],"name":"processOutput"}}}"#,
        ),
        (
            ToClient::ActionResponse { id: 0, output: exec_output(4) },
            br#"{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","0"],"output":{"count":4,"exitCode":0,"stderr":"","stdout":"hello\n"}}}}"#,
        ),
        (
            ToClient::Error { error: failed_error(true), action_id: Some(1) },
            br#"{"body":{"tag":"Error","val":{"actionId":["$BigInt","1"],"actor":{"actorId":"xgmppcb3w24zn1y72b7go0wz90bl00","generation":1,"key":"my-agent"},"code":"boom","group":"user","message":"it failed","metadata":{"why":1}}}}"#,
        ),
    ];
    for (message, captured) in cases {
        assert_eq!(json(text(&message).as_bytes()), json(captured), "{message:?}");
        let (version, decoded) = decode_to_client(Encoding::Json, captured).unwrap();
        assert_eq!(version, None);
        assert_eq!(sorted_message(decoded), sorted_message(message));
    }
    // A connection-level error still carries `actionId`, as null.
    let conn_error = ToClient::Error { error: ErrorBody::new("actor", "not_found", "gone"), action_id: None };
    assert_eq!(
        json(text(&conn_error).as_bytes()),
        serde_json::json!({"body":{"tag":"Error","val":{"group":"actor","code":"not_found","message":"gone","actionId":null}}})
    );
}

// --- §7.5: cbor frames ---

#[test]
fn cbor_client_action_frame() {
    let captured = spec(
        r#"b9 0001 64 "body" b9 0002 63 "tag" 6d "ActionRequest" 63 "val" b9 0003 62 "id" 1b 0000000000000000 64 "name" 64 "exec" 64 "args" 81 6a "echo hello""#,
    );
    let exec = ToServer::ActionRequest { id: 0, name: "exec".into(), args: vec![s("echo hello")] };
    assert_eq!(decode_to_server(Encoding::Cbor, &captured).unwrap(), (None, exec.clone()));
    // Ours: minimal map headers, same ids.
    let ours = spec(
        r#"a1 64 "body" a2 63 "tag" 6d "ActionRequest" 63 "val" a3 62 "id" 1b 0000000000000000 64 "name" 64 "exec" 64 "args" 81 6a "echo hello""#,
    );
    assert_eq!(encode_to_server(Encoding::Cbor, 4, &exec).into_bytes(), ours);
}

#[test]
fn cbor_server_frames() {
    let init = ToClient::Init { actor_id: ACTOR_ID.into(), connection_id: CONN_ID.into() };
    let expected = spec(&format!(
        r#"a1 64 "body" a2 63 "tag" 64 "Init" 63 "val" a2 67 "actorId" 78 1e "{ACTOR_ID}" 6c "connectionId" 78 24 "{CONN_ID}""#
    ));
    assert_eq!(encode_to_client(Encoding::Cbor, 4, &init), Frame::Binary(expected));

    let response = encode_to_client(Encoding::Cbor, 4, &ToClient::ActionResponse { id: 0, output: Value::Null });
    assert_eq!(
        response,
        Frame::Binary(spec(
            r#"a1 64"body" a2 63"tag" 6e"ActionResponse" 63"val" a2 62"id" 1b 0000000000000000 66"output" f6"#
        ))
    );

    let error = encode_to_client(Encoding::Cbor, 4, &ToClient::Error { error: failed_error(true), action_id: Some(1) })
        .into_bytes();
    for needle in [spec(r#"6a "generation" 1b 0000000000000001"#), spec(r#"68 "actionId" 1b 0000000000000001"#)] {
        assert!(error.windows(needle.len()).any(|w| w == needle), "{} lacks {}", hex(&error), hex(&needle));
    }
    assert_eq!(
        decode_to_client(Encoding::Cbor, &error).unwrap(),
        (None, ToClient::Error { error: failed_error(true), action_id: Some(1) })
    );
}
