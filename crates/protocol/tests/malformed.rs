//! One test per class of malformed input: each is rejected with a clear error, never a panic.

mod common;

use agentvm_protocol::*;
use common::spec;

const ENCODINGS: [Encoding; 3] = [Encoding::Bare, Encoding::Json, Encoding::Cbor];

/// Runs every decoder on `input` (panics surface as test failures).
fn run_all_decoders(input: &[u8]) {
    for encoding in ENCODINGS {
        let _ = decode_to_server(encoding, input);
        let _ = decode_action_request(encoding, input);
        let _ = decode_to_client(encoding, input);
        let _ = decode_action_response(encoding, input);
    }
    let _ = decode_http_error_json(input);
}

fn server_err(encoding: Encoding, input: &[u8]) -> ProtocolError {
    run_all_decoders(input);
    match decode_to_server(encoding, input) {
        Ok(decoded) => panic!("{encoding}: {} decoded to {decoded:?}", common::hex(input)),
        Err(e) => e,
    }
}

fn request_err(encoding: Encoding, input: &[u8]) -> ProtocolError {
    run_all_decoders(input);
    match decode_action_request(encoding, input) {
        Ok(decoded) => panic!("{encoding}: {} decoded to {decoded:?}", common::hex(input)),
        Err(e) => e,
    }
}

/// Asserts a `Malformed` error whose message contains `needle`.
#[track_caller]
fn assert_malformed(error: ProtocolError, needle: &str) {
    match &error {
        ProtocolError::Malformed(message) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected Malformed containing {needle:?}, got {other:?}"),
    }
    assert_eq!((error.group(), error.code()), ("message", "malformed"));
}

#[test]
fn empty_input() {
    assert_malformed(server_err(Encoding::Bare, b""), "truncated");
    assert_malformed(server_err(Encoding::Json, b""), "invalid JSON");
    assert_malformed(server_err(Encoding::Cbor, b""), "end of CBOR input");
    // Only the version prefix.
    assert_malformed(server_err(Encoding::Bare, &[4, 0]), "truncated");
    assert_malformed(request_err(Encoding::Bare, &[4, 0]), "truncated");
    assert_malformed(request_err(Encoding::Bare, &[4]), "truncated");
}

#[test]
fn truncated_varint() {
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 80")), "truncated input reading action id");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 ff ff")), "truncated");
}

#[test]
fn overlong_varint() {
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 ffffffffffffffffff02 00 00")), "overflows 64 bits");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 ffffffffffffffffffff01")), "overflows 64 bits");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 8000 00 00")), "non-canonical");
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 8100 81 01")), "non-canonical");
}

#[test]
fn length_beyond_buffer() {
    assert_malformed(server_err(Encoding::Bare, &spec(r#"04 00 01 0d "proc""#)), "need 13 bytes");
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 0c 81 6a")), "need 12 bytes");
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 ffffffffffffffffff01")), "action args");
    // A CBOR length beyond the blob.
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 03 81 6a 65")), "exceeds");
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 9b ffffffffffffffff"#)), "exceeds");
}

#[test]
fn invalid_utf8() {
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 01 02 fffe 01")), "not valid UTF-8");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 00 00 02 c328 01 80")), "not valid UTF-8");
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 04 81 62 c328")), "UTF-8");
    assert_malformed(server_err(Encoding::Json, b"{\"body\":\"\xff\"}"), "invalid JSON");
}

#[test]
fn bad_bool_and_optional_bytes() {
    assert_malformed(server_err(Encoding::Bare, &spec(r#"04 00 01 01 "a" 02"#)), "invalid bool");
    let bad_optional = spec(r#"04 00 01 01"g" 01"c" 01"m" 02"#);
    run_all_decoders(&bad_optional);
    assert_malformed(decode_to_client(Encoding::Bare, &bad_optional).unwrap_err(), "presence byte 2");
}

#[test]
fn unknown_union_tag() {
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 02 00")), "unknown ToServer message tag 2");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 7f")), "unknown ToServer message tag 127");
    assert_malformed(server_err(Encoding::Bare, &spec("04 00 8001")), "unknown ToServer message tag 128");
    assert_malformed(
        decode_to_client(Encoding::Bare, &spec("04 00 04")).unwrap_err(),
        "unknown ToClient message tag 4",
    );
}

#[test]
fn unsupported_version() {
    for version in [0u16, 1, 5, 0xffff] {
        let mut frame = spec("0400010d70726f636573734f757470757401");
        frame[..2].copy_from_slice(&version.to_le_bytes());
        let error = server_err(Encoding::Bare, &frame);
        assert_eq!(error, ProtocolError::UnsupportedVersion(version));
        assert_eq!((error.group(), error.code()), ("message", "malformed"));

        let mut body = spec("04000c816a6563686f2068656c6c6f");
        body[..2].copy_from_slice(&version.to_le_bytes());
        assert_eq!(request_err(Encoding::Bare, &body), ProtocolError::UnsupportedVersion(version));
    }
}

#[test]
fn trailing_bytes() {
    assert_malformed(server_err(Encoding::Bare, &spec("0400010d70726f636573734f75747075740100")), "1 trailing bytes");
    assert_malformed(request_err(Encoding::Bare, &spec("04000c816a6563686f2068656c6c6fff")), "trailing bytes");
    // Inside the CBOR blob, and after a cbor message.
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 02 80 00")), "trailing bytes after the CBOR value");
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 80 00"#)), "trailing bytes");
    assert_malformed(request_err(Encoding::Json, br#"{"args":[]} []"#), "invalid JSON");
}

#[test]
fn args_not_an_array() {
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 01 01")), "args must be an array, found number");
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 01 a0")), "args must be an array, found object");
    assert_malformed(request_err(Encoding::Json, br#"{"args":"x"}"#), "args must be an array, found string");
    assert_malformed(request_err(Encoding::Json, br#"{"args":["$Set",[1]]}"#), "args must be an array, found Set");
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" a0"#)), "args must be an array");
    assert_malformed(
        server_err(Encoding::Bare, &spec(r#"04 00 00 00 01"f" 01 f6"#)),
        "args must be an array, found null",
    );
    assert_malformed(
        server_err(Encoding::Json, br#"{"body":{"tag":"ActionRequest","val":{"id":1,"name":"f","args":{}}}}"#),
        "args must be an array",
    );
    // The request body itself must be an object.
    assert_malformed(request_err(Encoding::Json, b"[1]"), "request body must be an object, found array");
    assert_malformed(request_err(Encoding::Cbor, &spec("81 01")), "request body must be an object");
}

#[test]
fn invalid_json() {
    for input in [&b"{"[..], b"nope", b"{\"body\":}", b"\xff", b"{'a':1}", b"[1,]"] {
        assert_malformed(server_err(Encoding::Json, input), "invalid JSON");
        assert_malformed(request_err(Encoding::Json, input), "invalid JSON");
    }
}

#[test]
fn json_envelope_shape_errors() {
    let cases: [(&[u8], &str); 14] = [
        (br#"[]"#, "message must be an object, found array"),
        (br#"{}"#, "message is missing field `body`"),
        (br#"{"body":1}"#, "body must be an object, found number"),
        (br#"{"body":{"val":{}}}"#, "body is missing field `tag`"),
        (br#"{"body":{"tag":1,"val":{}}}"#, "body field `tag` must be a string"),
        (br#"{"body":{"tag":"Init"}}"#, "body is missing field `val`"),
        (br#"{"body":{"tag":"ActionRequest","val":[]}}"#, "body.val must be an object"),
        (br#"{"body":{"tag":"Bogus","val":{}}}"#, "unknown ToServer message tag \"Bogus\""),
        (br#"{"body":{"tag":"ActionRequest","val":{"name":"f","args":[]}}}"#, "ActionRequest is missing field `id`"),
        (br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","0"],"args":[]}}}"#, "missing field `name`"),
        (
            br#"{"body":{"tag":"ActionRequest","val":{"id":"0","name":"f","args":[]}}}"#,
            "field `id` must be an integer, found string",
        ),
        (br#"{"body":{"tag":"ActionRequest","val":{"id":-1,"name":"f","args":[]}}}"#, "field `id` is out of range: -1"),
        (
            br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","18446744073709551616"],"name":"f","args":[]}}}"#,
            "out of range",
        ),
        (
            br#"{"body":{"tag":"SubscriptionRequest","val":{"eventName":"e","subscribe":"yes"}}}"#,
            "field `subscribe` must be a boolean, found string",
        ),
    ];
    for (input, needle) in cases {
        assert_malformed(server_err(Encoding::Json, input), needle);
    }
    assert_malformed(
        server_err(Encoding::Json, br#"{"body":{"tag":"ActionRequest","val":{"id":1.5,"name":"f","args":[]}}}"#),
        "must be an integer, found number",
    );
    assert_malformed(
        server_err(Encoding::Json, br#"{"body":{"tag":"SubscriptionRequest","val":{"eventName":5,"subscribe":true}}}"#),
        "field `eventName` must be a string, found number",
    );
    assert_malformed(
        server_err(Encoding::Json, br#"{"body":{"tag":"ActionRequest","val":{"id":1,"name":"f"}}}"#),
        "missing field `args`",
    );
    // The same checks apply to cbor envelopes.
    assert_malformed(
        server_err(Encoding::Cbor, &spec(r#"a1 64"body" a2 63"tag" 63"Foo" 63"val" a0"#)),
        "unknown ToServer message tag",
    );
    assert_malformed(server_err(Encoding::Cbor, &spec("a0")), "missing field `body`");
}

#[test]
fn unknown_compat_tag() {
    assert_malformed(
        request_err(Encoding::Json, br#"{"args":[["$Date","2024"]]}"#),
        "unknown JSON encoding type: $Date",
    );
    assert_malformed(
        request_err(Encoding::Bare, &spec(r#"04 00 0e 81 82 64"$Foo" 66"foobar""#)),
        "unknown JSON encoding type: $Foo",
    );
    assert_malformed(
        server_err(
            Encoding::Json,
            br#"{"body":{"tag":"ActionRequest","val":{"id":["$Nope","0"],"name":"f","args":[]}}}"#,
        ),
        "unknown JSON encoding type: $Nope",
    );
    // cbor clients do not use compat forms: the same array is plain data there.
    assert_eq!(
        decode_action_request(Encoding::Cbor, &spec(r#"a1 64"args" 81 82 64"$Foo" 01"#)).unwrap().1,
        vec![Value::Array(vec![Value::from("$Foo"), Value::Int(1)])]
    );
}

#[test]
fn bad_base64() {
    assert_malformed(
        request_err(Encoding::Json, br#"{"args":[["$Uint8Array","!!!"]]}"#),
        "invalid base64 in $Uint8Array",
    );
    assert_malformed(
        request_err(Encoding::Json, br#"{"args":[["$ArrayBuffer","A"]]}"#),
        "invalid base64 in $ArrayBuffer",
    );
    assert_malformed(
        request_err(Encoding::Bare, &spec(r#"04 00 13 81 82 6b"$Uint8Array" 64"A=QD""#)),
        "invalid base64",
    );
}

#[test]
fn deeply_nested_input_is_rejected_without_overflowing_the_stack() {
    let depth = 100_000;
    // CBOR: inside a bare blob, as a cbor message, as a cbor request body.
    let mut blob = vec![0x81; depth];
    blob.push(0x00);
    // ActionRequest id 0, name "f", args = [blob] as a `data` field (LEB128 length).
    let mut bare = spec("04 00 00 00 01 66");
    let mut len = blob.len() as u64 + 1;
    while len >= 0x80 {
        bare.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    bare.push(len as u8);
    bare.push(0x81);
    bare.extend_from_slice(&blob);
    assert_malformed(server_err(Encoding::Bare, &bare), "nested deeper than 128");
    assert_malformed(server_err(Encoding::Cbor, &blob), "nested deeper than 128");
    let mut body = spec(r#"a1 64"args""#);
    body.extend_from_slice(&blob);
    assert_malformed(request_err(Encoding::Cbor, &body), "nested deeper than 128");
    // Indefinite-length arrays and nested tags.
    assert_malformed(server_err(Encoding::Cbor, &vec![0x9f; depth]), "nested deeper");
    assert_malformed(server_err(Encoding::Cbor, &vec![0xc1; depth]), "nested deeper");
    // JSON.
    let deep_json = format!(r#"{{"args":[{}1{}]}}"#, "[".repeat(depth), "]".repeat(depth));
    assert_malformed(request_err(Encoding::Json, deep_json.as_bytes()), "recursion limit");
    // Just inside the limit is fine.
    let ok = format!(r#"{{"args":[{}1{}]}}"#, "[".repeat(100), "]".repeat(100));
    assert!(decode_action_request(Encoding::Json, ok.as_bytes()).is_ok());
}

#[test]
fn non_string_map_keys() {
    assert_malformed(
        request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 a1 01 02"#)),
        "must be a text string, found number",
    );
    assert_malformed(request_err(Encoding::Bare, &spec("04 00 04 81 a1 f6 01")), "must be a text string, found null");
    assert_malformed(server_err(Encoding::Cbor, &spec("a1 01 02")), "must be a text string");
}

#[test]
fn other_cbor_errors() {
    // Reserved additional info, a stray break, unsupported simple values, bignums that don't fit.
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 1c"#)), "invalid CBOR");
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 ff"#)), "unexpected CBOR break");
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 f0"#)), "simple value");
    assert_malformed(
        request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 c2 51 0100000000000000000000000000000000"#)),
        "128 bits",
    );
    assert_malformed(request_err(Encoding::Cbor, &spec(r#"a1 64"args" 81 7f 61 61 01 ff"#)), "CBOR text string");
}

#[test]
fn unknown_encoding() {
    let error = Encoding::parse("msgpack").unwrap_err();
    assert_eq!(error, ProtocolError::UnknownEncoding("msgpack".into()));
    assert_eq!((error.group(), error.code()), ("encoding", "invalid"));
    assert_eq!(ErrorBody::from(&error).code, "invalid");
}

/// Arbitrary byte soup through every decoder: nothing may panic.
#[test]
fn random_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seeds = [
        spec("0400010d70726f636573734f757470757401"),
        spec("0400000004657865630c816a6563686f2068656c6c6f"),
        br#"{"body":{"tag":"ActionRequest","val":{"id":["$BigInt","0"],"name":"exec","args":["$Set",[1]]}}}"#.to_vec(),
        spec(
            r#"a1 64"body" a2 63"tag" 6d"ActionRequest" 63"val" a3 62"id" 1b 0000000000000000 64"name" 64"exec" 64"args" 81 f7"#,
        ),
    ];
    for _ in 0..20_000 {
        let mut input = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..(next() % 4 + 1) {
            let r = next();
            let pos = (r >> 8) as usize % (input.len() + 1);
            match r % 3 {
                0 if pos < input.len() => input[pos] = (r >> 32) as u8,
                1 => input.insert(pos, (r >> 32) as u8),
                _ => input.truncate(pos),
            }
        }
        run_all_decoders(&input);
    }
}
