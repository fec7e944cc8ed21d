//! JSON text <-> [`Value`].
//!
//! Parsing yields only JSON data-model variants (`Null`, `Bool`, `Int`, `Float`, `String`,
//! `Array`, `Map`); compat forms are revived separately ([`crate::compat::revive`]). Object keys
//! keep their order; a repeated key keeps its first position and its last value, as
//! `JSON.parse` does. `serde_json` limits nesting to 128 levels.
//!
//! Writing renders the compat forms of the non-JSON variants (`BigInt` as `["$BigInt","n"]`,
//! `Bytes` as `["$Uint8Array","b64"]`, `Undefined` as `["$Undefined",0]`, `Set` as
//! `["$Set",[...]]`) but does not escape `$`-arrays: payloads are run through
//! [`crate::compat::encode`] before they are put into a message, and ids are `BigInt`s on purpose.
//! Non-finite floats become `null`, like `JSON.stringify`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::compat::base64_encode;
use crate::error::{malformed, Result};
use crate::value::{MapBuilder, Value};

/// Parses JSON text (UTF-8 bytes) into a [`Value`] without reviving compat forms.
pub(crate) fn parse(input: &[u8]) -> Result<Value> {
    serde_json::from_slice::<Parsed>(input).map(|p| p.0).map_err(|e| malformed(format!("invalid JSON: {e}")))
}

/// Serializes a [`Value`] as compact JSON.
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    to_string(value).into_bytes()
}

/// Serializes a [`Value`] as compact JSON text.
pub(crate) fn to_string(value: &Value) -> String {
    // Our `Serialize` impl has string keys only and never fails, so neither does this.
    serde_json::to_string(&Written(value)).unwrap_or_default()
}

struct Parsed(Value);

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(ParsedVisitor).map(Parsed)
    }
}

struct ParsedVisitor;

impl<'de> Visitor<'de> for ParsedVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> std::result::Result<Value, E> {
        Ok(Value::Int(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> std::result::Result<Value, E> {
        // A JS number either way; above i64 it is only representable as a float.
        Ok(i64::try_from(n).map(Value::Int).unwrap_or(Value::Float(n as f64)))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> std::result::Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        Parsed::deserialize(d).map(|p| p.0)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Parsed(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Value, A::Error> {
        let mut map = MapBuilder::with_capacity(0);
        while let Some((key, Parsed(value))) = access.next_entry::<String, Parsed>()? {
            map.insert(key, value);
        }
        Ok(map.finish())
    }
}

struct Written<'a>(&'a Value);

/// `[tag, payload]`, the shape of every compat form.
struct Tagged<'a>(&'static str, Written<'a>);

impl Serialize for Tagged<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(self.0)?;
        seq.serialize_element(&self.1)?;
        seq.end()
    }
}

impl Serialize for Written<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Value::Undefined => Tagged("$Undefined", Written(&Value::Int(0))).serialize(s),
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::Float(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Float(_) => s.serialize_unit(),
            Value::BigInt(n) => Tagged("$BigInt", Written(&Value::String(n.to_string()))).serialize(s),
            Value::String(text) => s.serialize_str(text),
            Value::Bytes(bytes) => Tagged("$Uint8Array", Written(&Value::String(base64_encode(bytes)))).serialize(s),
            Value::Array(items) => serialize_items(s, items),
            Value::Set(items) => {
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element("$Set")?;
                seq.serialize_element(&Items(items))?;
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(key, &Written(value))?;
                }
                map.end()
            }
        }
    }
}

struct Items<'a>(&'a [Value]);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_items(s, self.0)
    }
}

fn serialize_items<S: Serializer>(s: S, items: &[Value]) -> std::result::Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(items.len()))?;
    for item in items {
        seq.serialize_element(&Written(item))?;
    }
    seq.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(v: &Value) -> String {
        String::from_utf8(to_vec(v)).unwrap()
    }

    #[test]
    fn parses_the_data_model() {
        let v = parse(br#"{"b":[1,-2,1.5,18446744073709551615,"x",null,true],"a":{}}"#).unwrap();
        assert_eq!(
            v,
            Value::object([
                (
                    "b",
                    Value::Array(vec![
                        Value::Int(1),
                        Value::Int(-2),
                        Value::Float(1.5),
                        Value::Float(u64::MAX as f64),
                        Value::from("x"),
                        Value::Null,
                        Value::Bool(true),
                    ])
                ),
                ("a", Value::Map(vec![])),
            ])
        );
        assert_eq!(
            parse(br#"{"a":1,"b":2,"a":3}"#).unwrap(),
            Value::object([("a", Value::Int(3)), ("b", Value::Int(2))])
        );
        // Compat forms are left alone by the parser.
        assert_eq!(parse(br#"["$BigInt","1"]"#).unwrap(), Value::Array(vec![Value::from("$BigInt"), Value::from("1")]));
    }

    #[test]
    fn parse_errors() {
        assert!(parse(b"").unwrap_err().to_string().contains("invalid JSON"));
        assert!(parse(b"{").is_err());
        assert!(parse(b"[1] x").is_err());
        assert!(parse(b"\"\xff\"").is_err());
        assert!(parse("[".repeat(100_000).as_bytes()).is_err());
    }

    #[test]
    fn writes_compat_forms_for_non_json_values() {
        assert_eq!(text(&Value::BigInt(7)), r#"["$BigInt","7"]"#);
        assert_eq!(text(&Value::Bytes(vec![1, 2, 3].into())), r#"["$Uint8Array","AQID"]"#);
        assert_eq!(text(&Value::Undefined), r#"["$Undefined",0]"#);
        assert_eq!(text(&Value::Set(vec![Value::Int(1)])), r#"["$Set",[1]]"#);
        assert_eq!(text(&Value::Float(f64::NAN)), "null");
        assert_eq!(text(&Value::Float(0.5)), "0.5");
        assert_eq!(text(&Value::object([("k\"", Value::from("v\n"))])), r#"{"k\"":"v\n"}"#);
    }
}
