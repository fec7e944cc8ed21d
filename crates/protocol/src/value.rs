//! [`Value`]: the data exchanged with clients (action arguments and outputs, event arguments,
//! error metadata).

use std::collections::HashMap;

/// A value exchanged with clients: the JSON data model plus what the JSON-compat layer carries
/// (JS `undefined`, `BigInt`, `Uint8Array`, `Set`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JS `undefined`.
    #[default]
    Undefined,
    Null,
    Bool(bool),
    /// An integer that fits `i64` (a JS `number`).
    Int(i64),
    /// A non-integral or out-of-range JS `number`.
    Float(f64),
    /// A JS `BigInt`: `["$BigInt","n"]`, a CBOR 8-byte integer (`0x1b`/`0x3b`) or a tag 2/3
    /// bignum that fits 128 bits.
    BigInt(i128),
    String(String),
    /// A `Uint8Array` / `ArrayBuffer`: `["$Uint8Array",b64]`, a CBOR byte string or tag 64.
    /// Shared, not copied: a value made from a process's output (an event's `data`) holds the
    /// same bytes as the event, and cloning it costs a reference count.
    Bytes(bytes::Bytes),
    Array(Vec<Value>),
    /// A JS `Set`: `["$Set",[...]]` (CBOR tag 258 in the cbor encoding).
    Set(Vec<Value>),
    /// An object; entries keep their insertion order and keys are unique after decoding.
    Map(Vec<(String, Value)>),
}

impl Value {
    /// This value as plain JSON, with `bytes` deciding how byte strings appear (JSON has no
    /// bytes). `undefined` becomes `null`, big integers decimal strings, sets arrays.
    pub fn to_json_with(&self, bytes: &dyn Fn(&[u8]) -> serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Undefined | Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(n) => J::from(*n),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::BigInt(n) => J::String(n.to_string()),
            Value::String(s) => J::String(s.clone()),
            Value::Bytes(b) => bytes(b),
            Value::Array(items) | Value::Set(items) => J::Array(items.iter().map(|v| v.to_json_with(bytes)).collect()),
            Value::Map(entries) => J::Object(entries.iter().map(|(k, v)| (k.clone(), v.to_json_with(bytes))).collect()),
        }
    }

    /// Looks up `key` in a [`Value::Map`]; `None` for other variants or a missing key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An integer: `Int`, a `BigInt` in range, or a `Float` with no fractional part in range.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(n) => Some(n),
            Value::BigInt(n) => i64::try_from(n).ok(),
            // -2^63 is exact as f64; 2^63 is the first value out of range.
            Value::Float(f) if f.fract() == 0.0 && (i64::MIN as f64..-(i64::MIN as f64)).contains(&f) => Some(f as i64),
            _ => None,
        }
    }

    /// Any number (`Int`, `Float`, `BigInt`) as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(n) => Some(n as f64),
            Value::Float(f) => Some(f),
            Value::BigInt(n) => Some(n as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// `Null` or `Undefined`.
    pub fn is_nullish(&self) -> bool {
        matches!(self, Value::Null | Value::Undefined)
    }

    /// The JS-side type name, for error messages: `undefined`, `null`, `boolean`, `number`,
    /// `bigint`, `string`, `Uint8Array`, `array`, `Set` or `object`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Undefined => "undefined",
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::Float(_) => "number",
            Value::BigInt(_) => "bigint",
            Value::String(_) => "string",
            Value::Bytes(_) => "Uint8Array",
            Value::Array(_) => "array",
            Value::Set(_) => "Set",
            Value::Map(_) => "object",
        }
    }

    /// Builds a [`Value::Map`] from `(key, value)` pairs, in order.
    pub fn object<K: Into<String>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<serde_json::Value> for Value {
    /// Numbers become `Int` when integral and in `i64` range, `Float` otherwise.
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => Value::Array(items.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Map(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Int(n.into())
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(n.into())
    }
}

impl From<u64> for Value {
    /// `Int` when it fits `i64`, `BigInt` otherwise.
    fn from(n: u64) -> Self {
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(n.into()),
        }
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value::Bytes(bytes.into())
    }
}

impl From<bytes::Bytes> for Value {
    fn from(bytes: bytes::Bytes) -> Self {
        Value::Bytes(bytes)
    }
}

impl From<Vec<Value>> for Value {
    fn from(items: Vec<Value>) -> Self {
        Value::Array(items)
    }
}

/// Collects the entries of a decoded map: keys stay unique, a repeated key keeps the position of
/// its first occurrence and the value of its last (what `JSON.parse` does).
pub(crate) struct MapBuilder {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl MapBuilder {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        MapBuilder { entries: Vec::with_capacity(capacity), index: HashMap::with_capacity(capacity) }
    }

    pub(crate) fn insert(&mut self, key: String, value: Value) {
        if let Some(slot) = self.index.get(&key).and_then(|&i| self.entries.get_mut(i)) {
            slot.1 = value;
        } else {
            self.index.insert(key.clone(), self.entries.len());
            self.entries.push((key, value));
        }
    }

    pub(crate) fn finish(self) -> Value {
        Value::Map(self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let v = Value::object([("a", Value::from(1)), ("b", Value::from("x"))]);
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert_eq!(v.get("b").and_then(Value::as_str), Some("x"));
        assert_eq!(v.get("c"), None);
        assert_eq!(Value::Int(1).get("a"), None);
        assert_eq!(Value::BigInt(7).as_i64(), Some(7));
        assert_eq!(Value::BigInt(i128::MAX).as_i64(), None);
        assert_eq!(Value::Float(3.0).as_i64(), Some(3));
        assert_eq!(Value::Float(3.5).as_i64(), None);
        assert_eq!(Value::Float(9.3e18).as_i64(), None);
        assert_eq!(Value::Float(i64::MIN as f64).as_i64(), Some(i64::MIN));
        assert_eq!(Value::Float(-(i64::MIN as f64)).as_i64(), None);
        assert_eq!(Value::Float(f64::NAN).as_i64(), None);
        assert_eq!(Value::Int(2).as_f64(), Some(2.0));
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
        assert!(Value::Undefined.is_nullish() && Value::Null.is_nullish() && !Value::Int(0).is_nullish());
        assert_eq!(Value::from(Vec::<u8>::new()).type_name(), "Uint8Array");
        assert_eq!(Value::Map(vec![]).type_name(), "object");
        assert_eq!(Value::Float(1.5).type_name(), "number");
    }

    #[test]
    fn conversions() {
        assert_eq!(Value::from(u64::MAX), Value::BigInt(u64::MAX.into()));
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(Value::from(vec![1u8, 2]), Value::Bytes(bytes::Bytes::from_static(&[1, 2])));
        let json: serde_json::Value = serde_json::json!({"i": 1, "f": 1.5, "big": u64::MAX, "l": [null, true]});
        let v = Value::from(json);
        assert_eq!(v.get("i"), Some(&Value::Int(1)));
        assert_eq!(v.get("f"), Some(&Value::Float(1.5)));
        assert_eq!(v.get("big"), Some(&Value::Float(u64::MAX as f64)));
        assert_eq!(v.get("l"), Some(&Value::Array(vec![Value::Null, Value::Bool(true)])));
    }

    #[test]
    fn map_builder_keeps_first_position_last_value() {
        let mut b = MapBuilder::with_capacity(0);
        b.insert("a".into(), Value::Int(1));
        b.insert("b".into(), Value::Int(2));
        b.insert("a".into(), Value::Int(3));
        assert_eq!(b.finish(), Value::object([("a", Value::Int(3)), ("b", Value::Int(2))]));
    }
}
