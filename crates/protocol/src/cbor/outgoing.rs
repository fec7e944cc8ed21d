//! A payload the server sends in a bare message, written as CBOR straight from the value.
//!
//! The result is byte for byte `encode(&compat::encode_outgoing(value, Outgoing::bare(v)))`,
//! without building the compat-encoded tree first: that tree is a copy of every string and byte
//! string in the value, and an `exec` result or a `readFile` can hold hundreds of MiB. With
//! [`outgoing_len`] the caller sizes its buffer once, so the payload's bytes are copied once,
//! into the message; with [`write_outgoing_owned`] large strings are not copied at all.
//!
//! The compat rules for CBOR styles (see [`crate::compat::Outgoing`]): values are native CBOR;
//! a `Set` becomes `["$Set", [...]]` when `escape` is set (clients 2.3+), a plain array
//! otherwise; with `escape`, a user pair `["$x", v]` is written as `["$$x", v]`.

use super::encode::{
    write_head, write_text, write_value, Length, Sink, MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_TEXT,
};
use crate::compat::SET;
use crate::value::Value;

/// Writes `value` compat-encoded for a bare client (`escape`: the client revives compat forms in
/// CBOR, i.e. BARE version 4 and later).
pub(crate) fn write_outgoing<S: Sink>(out: &mut S, value: &Value, escape: bool) {
    match value {
        Value::Set(items) if escape => {
            write_head(out, MAJOR_ARRAY, 2);
            write_text(out, SET);
            write_items(out, items, escape);
        }
        Value::Set(items) => write_items(out, items, escape),
        Value::Array(items) => write_outgoing_array(out, items, escape),
        Value::Map(entries) => {
            write_head(out, MAJOR_MAP, entries.len() as u64);
            for (key, value) in entries {
                write_text(out, key);
                write_outgoing(out, value, escape);
            }
        }
        other => write_value(out, other),
    }
}

/// Writes an array payload: its items, with the `$`-escape of a `["$x", v]` pair when `escape`.
pub(crate) fn write_outgoing_array<S: Sink>(out: &mut S, items: &[Value], escape: bool) {
    match escaped_pair(items, escape) {
        Some((tag, payload)) => {
            write_head(out, MAJOR_ARRAY, 2);
            write_head(out, MAJOR_TEXT, tag.len() as u64 + 1);
            out.put(b"$");
            out.put(tag.as_bytes());
            write_outgoing(out, payload, escape);
        }
        None => write_items(out, items, escape),
    }
}

/// The tag and payload of a user pair `["$x", v]` whose tag gets another `$` (with `escape`).
fn escaped_pair(items: &[Value], escape: bool) -> Option<(&str, &Value)> {
    match items {
        [Value::String(tag), payload] if escape && tag.starts_with('$') => Some((tag, payload)),
        _ => None,
    }
}

fn write_items<S: Sink>(out: &mut S, items: &[Value], escape: bool) {
    write_head(out, MAJOR_ARRAY, items.len() as u64);
    for item in items {
        write_outgoing(out, item, escape);
    }
}

/// A string or byte string at least this long is handed over as a part of its own by
/// [`write_outgoing_owned`] instead of being copied.
pub(crate) const LARGE: usize = 64 << 10;

/// Encoded bytes as a list of parts: small items are copied into the current part, large
/// strings and byte strings become parts of their own, moved (see [`write_outgoing_owned`]).
#[derive(Debug, Default)]
pub(crate) struct Parts {
    pub done: Vec<Vec<u8>>,
    pub current: Vec<u8>,
}

impl Parts {
    /// Appends `bytes` as a part of its own.
    fn hand_over(&mut self, bytes: Vec<u8>) {
        if !self.current.is_empty() {
            self.done.push(std::mem::take(&mut self.current));
        }
        self.done.push(bytes);
    }

    /// Every part, in order.
    pub(crate) fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.current.is_empty() {
            self.done.push(self.current);
        }
        self.done
    }
}

impl Sink for Parts {
    fn put(&mut self, bytes: &[u8]) {
        self.current.extend_from_slice(bytes);
    }

    fn put_byte(&mut self, byte: u8) {
        self.current.push(byte);
    }
}

/// What [`write_outgoing`] writes, taking the value by value: the strings and byte strings of
/// at least [`LARGE`] bytes it holds in maps and arrays (an `exec` result's output) are moved
/// into parts of their own, so the only copy of them left is the kernel's, into the socket.
/// Whatever is not a map, such an array or such a string is written by [`write_outgoing`].
pub(crate) fn write_outgoing_owned(out: &mut Parts, value: Value, escape: bool) {
    match value {
        Value::String(text) if text.len() >= LARGE => {
            write_head(out, MAJOR_TEXT, text.len() as u64);
            out.hand_over(text.into_bytes());
        }
        Value::Bytes(bytes) if bytes.len() >= LARGE => {
            write_head(out, MAJOR_BYTES, bytes.len() as u64);
            out.hand_over(Vec::from(bytes));
        }
        Value::Map(entries) => {
            write_head(out, MAJOR_MAP, entries.len() as u64);
            for (key, value) in entries {
                write_text(out, &key);
                write_outgoing_owned(out, value, escape);
            }
        }
        // A `["$x", v]` pair is escaped: the borrowing writer below writes it.
        Value::Array(items) if escaped_pair(&items, escape).is_none() => {
            write_head(out, MAJOR_ARRAY, items.len() as u64);
            for item in items {
                write_outgoing_owned(out, item, escape);
            }
        }
        other => write_outgoing(out, &other, escape),
    }
}

/// The length of what [`write_outgoing`] writes.
pub(crate) fn outgoing_len(value: &Value, escape: bool) -> usize {
    let mut length = Length::default();
    write_outgoing(&mut length, value, escape);
    length.0
}

/// The length of what [`write_outgoing_array`] writes.
pub(crate) fn outgoing_array_len(items: &[Value], escape: bool) -> usize {
    let mut length = Length::default();
    write_outgoing_array(&mut length, items, escape);
    length.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor::encode;
    use crate::compat::{encode_outgoing, encode_outgoing_array, Outgoing};

    /// Values covering every variant and every compat rule, nested.
    fn samples() -> Vec<Value> {
        let leaves = vec![
            Value::Undefined,
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Int(1 << 40),
            Value::Float(2.5),
            Value::BigInt(1 << 70),
            Value::from("text"),
            Value::from("$looks-tagged"),
            Value::Bytes((0..=255).collect::<Vec<u8>>().into()),
            Value::Set(vec![Value::Int(1), Value::from("$x")]),
        ];
        let mut samples = leaves.clone();
        samples.push(Value::Array(vec![Value::from("$x"), Value::Int(1)]));
        samples.push(Value::Array(vec![Value::from("$x"), Value::Int(1), Value::Int(2)]));
        samples.push(Value::Array(vec![Value::from("x"), Value::from("$y")]));
        samples.push(Value::Array(vec![Value::Set(vec![]), Value::from("$y")]));
        samples.push(Value::Array(leaves.clone()));
        samples.push(Value::object([
            ("stdout", Value::from("x".repeat(70_000))),
            ("data", Value::Array(vec![Value::from("$x"), Value::Bytes(vec![7; 70_000].into())])),
            ("pair", Value::Array(vec![Value::from("$$already"), Value::Set(vec![Value::Bytes(vec![1].into())])])),
            ("all", Value::Array(leaves)),
        ]));
        samples
    }

    #[test]
    fn writes_exactly_the_compat_tree_and_measures_it() {
        for escape in [false, true] {
            let style = Outgoing::Cbor { escape };
            for value in samples() {
                let mut direct = Vec::new();
                write_outgoing(&mut direct, &value, escape);
                assert_eq!(direct, encode(&encode_outgoing(&value, style)), "{value:?}, escape {escape}");
                assert_eq!(outgoing_len(&value, escape), direct.len());
            }
            let items = samples();
            let mut direct = Vec::new();
            write_outgoing_array(&mut direct, &items, escape);
            assert_eq!(direct, encode(&encode_outgoing_array(&items, style)));
            assert_eq!(outgoing_array_len(&items, escape), direct.len());
            for value in samples() {
                let mut parts = Parts::default();
                write_outgoing_owned(&mut parts, value.clone(), escape);
                let parts = parts.finish();
                assert_eq!(parts.concat(), encode(&encode_outgoing(&value, style)), "{value:?}, escape {escape}");
                if let Some(Value::String(stdout)) = value.get("stdout") {
                    assert!(parts.iter().any(|p| p == stdout.as_bytes()), "the large string is a part of its own");
                }
            }
            let pair = [Value::from("$x"), Value::Bytes(vec![9].into())];
            let mut direct = Vec::new();
            write_outgoing_array(&mut direct, &pair, escape);
            assert_eq!(direct, encode(&encode_outgoing_array(&pair, style)));
        }
    }
}
