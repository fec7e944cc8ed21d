//! Message trees of the json and cbor encodings (protocol reference §6.4).
//!
//! WebSocket messages are `{"body": {"tag": "<Member>", "val": {...}}}` with the member and
//! field names of the BARE schema (`Init`, `actorId`, `connectionId`, ...); HTTP bodies are plain
//! objects (`{"args": [...]}`, `{"output": ...}`). The same [`Value`] tree is written as JSON
//! text or as a CBOR map; only ids differ: `["$BigInt","n"]` in JSON, the 8-byte integer form
//! in CBOR, both produced from a [`Value::BigInt`].

use crate::cbor;
use crate::compat;
use crate::encoding::Encoding;
use crate::error::{malformed, Result};
use crate::json;
use crate::value::Value;

/// Serializes a message tree in `encoding` (json or cbor).
pub(crate) fn write(encoding: Encoding, tree: &Value) -> Vec<u8> {
    match encoding {
        Encoding::Json => json::to_vec(tree),
        Encoding::Cbor | Encoding::Bare => cbor::encode(tree),
    }
}

/// Parses a message tree in `encoding` (json or cbor); compat forms are revived when `revive`.
pub(crate) fn read(encoding: Encoding, bytes: &[u8], revive: bool) -> Result<Value> {
    let tree = match encoding {
        Encoding::Json => json::parse(bytes)?,
        Encoding::Cbor | Encoding::Bare => cbor::decode(bytes)?,
    };
    if revive {
        compat::revive(tree)
    } else {
        Ok(tree)
    }
}

/// `{"body": {"tag": tag, "val": val}}`.
pub(crate) fn wrap(tag: &str, val: Value) -> Value {
    Value::object([("body", Value::object([("tag", Value::from(tag)), ("val", val)]))])
}

/// Splits `{"body": {"tag": .., "val": {..}}}` into the tag and the fields of `val`.
pub(crate) fn unwrap(tree: Value) -> Result<(String, Fields)> {
    let mut root = Fields::of(tree, "message")?;
    let mut body = Fields::of(root.required("body")?, "body")?;
    let tag = body.string("tag")?;
    let val = Fields::of(body.required("val")?, "body.val")?;
    Ok((tag, val))
}

/// The id as a [`Value::BigInt`], which both writers render in the form the client validates.
pub(crate) fn id(id: u64) -> Value {
    Value::BigInt(id.into())
}

/// The fields of one object of a message, taken out by name.
pub(crate) struct Fields {
    entries: Vec<(String, Value)>,
    context: String,
}

impl Fields {
    /// `value` must be an object; `context` names it in error messages.
    pub(crate) fn of(value: Value, context: &str) -> Result<Fields> {
        match value {
            Value::Map(entries) => Ok(Fields { entries, context: context.to_owned() }),
            other => Err(malformed(format!("{context} must be an object, found {}", other.type_name()))),
        }
    }

    /// Renames the object in later error messages (e.g. to the message member name).
    pub(crate) fn named(mut self, context: impl Into<String>) -> Self {
        self.context = context.into();
        self
    }

    /// The field's value if present and not `undefined`.
    pub(crate) fn take(&mut self, key: &str) -> Option<Value> {
        let index = self.entries.iter().position(|(k, _)| k == key)?;
        match self.entries.swap_remove(index).1 {
            Value::Undefined => None,
            value => Some(value),
        }
    }

    /// The field's value if present and neither `null` nor `undefined`.
    pub(crate) fn optional(&mut self, key: &str) -> Option<Value> {
        self.take(key).filter(|v| !v.is_nullish())
    }

    pub(crate) fn required(&mut self, key: &str) -> Result<Value> {
        self.take(key).ok_or_else(|| malformed(format!("{} is missing field `{key}`", self.context)))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> crate::ProtocolError {
        malformed(format!("{} field `{key}` must be {expected}, found {}", self.context, found.type_name()))
    }

    pub(crate) fn string(&mut self, key: &str) -> Result<String> {
        match self.required(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", &other)),
        }
    }

    pub(crate) fn bool(&mut self, key: &str) -> Result<bool> {
        match self.required(key)? {
            Value::Bool(b) => Ok(b),
            other => Err(self.wrong_type(key, "a boolean", &other)),
        }
    }

    /// An unsigned 64-bit integer: a `BigInt` (as the client sends ids) or a plain integer.
    pub(crate) fn u64(&mut self, key: &str) -> Result<u64> {
        let value = self.required(key)?;
        self.to_u64(key, value)
    }

    /// Like [`u64`](Self::u64) for a field that may be absent or `null`.
    pub(crate) fn optional_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.optional(key) {
            Some(value) => self.to_u64(key, value).map(Some),
            None => Ok(None),
        }
    }

    fn to_u64(&self, key: &str, value: Value) -> Result<u64> {
        let n = match value {
            Value::Int(n) => i128::from(n),
            Value::BigInt(n) => n,
            other => return Err(self.wrong_type(key, "an integer", &other)),
        };
        u64::try_from(n).map_err(|_| malformed(format!("{} field `{key}` is out of range: {n}", self.context)))
    }
}
