//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use agentvm_protocol::Value;

/// Bytes from the notation of the protocol reference: hex digits (spaces and `|` ignored) and
/// `"quoted"` UTF-8 text (with `\n` escapes), e.g. `04 00 | 0d "processOutput" 01`.
pub fn spec(notation: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = notation.chars().peekable();
    let mut nibble: Option<u8> = None;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                assert!(nibble.is_none(), "odd hex digits before a string in {notation:?}");
                loop {
                    match chars.next().expect("unterminated string") {
                        '"' => break,
                        '\\' => match chars.next().expect("dangling escape") {
                            'n' => out.push(b'\n'),
                            other => panic!("unknown escape \\{other}"),
                        },
                        c => {
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
            }
            c if c.is_ascii_hexdigit() => {
                let d = c.to_digit(16).unwrap() as u8;
                match nibble.take() {
                    None => nibble = Some(d),
                    Some(hi) => out.push(hi << 4 | d),
                }
            }
            ' ' | '|' | '\n' => assert!(nibble.is_none(), "odd hex digits in {notation:?}"),
            other => panic!("unexpected {other:?} in {notation:?}"),
        }
    }
    assert!(nibble.is_none(), "odd hex digits in {notation:?}");
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn s(text: &str) -> Value {
    Value::from(text)
}

/// Parses JSON for order-insensitive comparison.
pub fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("invalid JSON {:?}: {e}", String::from_utf8_lossy(bytes)))
}

/// A value using every variant, with the shapes the compat layer must get right.
pub fn rich_value() -> Value {
    Value::object([
        ("undefined_in_map", Value::Undefined),
        ("null", Value::Null),
        ("bools", Value::Array(vec![Value::Bool(true), Value::Bool(false)])),
        (
            "ints",
            Value::Array(vec![
                Value::Int(0),
                Value::Int(-1),
                Value::Int(23),
                Value::Int(i64::MAX),
                Value::Int(i64::MIN),
            ]),
        ),
        ("floats", Value::Array(vec![Value::Float(1.5), Value::Float(-0.25), Value::Float(1e300)])),
        (
            "bigints",
            Value::Array(vec![Value::BigInt(0), Value::BigInt(-7), Value::BigInt(1 << 70), Value::BigInt(i128::MIN)]),
        ),
        ("text", s("héllo \"world\"\n")),
        ("bytes", Value::Bytes(vec![0, 1, 2, 255].into())),
        ("empty_bytes", Value::Bytes(vec![].into())),
        ("set", Value::Set(vec![Value::Int(1), s("two"), Value::Bytes(vec![3].into())])),
        ("undefined_in_array", Value::Array(vec![Value::Undefined, Value::Int(1)])),
        ("tricky", Value::Array(vec![s("$foo"), Value::Int(1)])),
        ("tricky_nested", Value::Array(vec![s("$$bar"), Value::Array(vec![s("$BigInt"), s("1")])])),
        ("dollar_three", Value::Array(vec![s("$x"), Value::Int(1), Value::Int(2)])),
        ("nested", Value::object([("a", Value::Array(vec![Value::object([("b", Value::Map(vec![]))])]))])),
    ])
}

/// The value with the entries of every map sorted by key, for order-insensitive comparison.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Map(entries) => {
            let mut entries: Vec<(String, Value)> = entries.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Map(entries)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        Value::Set(items) => Value::Set(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}
