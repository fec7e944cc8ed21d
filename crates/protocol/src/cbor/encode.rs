//! A small CBOR (RFC 8949) encoder with the integer widths the RivetKit client needs.
//!
//! The client's cbor-x decodes integers written with 0–4 bytes of argument as JS `number`s and
//! only the 8-byte form (`0x1b`, `0x3b`) or a tag 2/3 bignum as `bigint`. So:
//!
//! * [`Value::Int`] is written in the shortest form when that takes at most a 4-byte argument
//!   (what cbor-x reads as a `number`); beyond ±2^32 the shortest integer form would be the
//!   8-byte one, which cbor-x would turn into a `bigint`, so such an `Int` is written as an
//!   `f64` instead, which is also how cbor-x itself writes a JS number of that size;
//! * [`Value::BigInt`] is always written in the 8-byte form when it fits 64 bits (ids and
//!   `generation` in cbor envelopes must be: the client validates them as `bigint`), otherwise as
//!   a tag 2/3 bignum;
//! * floats are always `f64` (`0xfb`), `undefined` is `0xf7`, every length is definite and map
//!   keys are text strings.
//!
//! Byte strings and sets are written natively (byte string, tag 258 around an array); payloads
//! sent to clients are compat-encoded first and contain neither.

use crate::value::Value;

const MAJOR_UNSIGNED: u8 = 0;
const MAJOR_NEGATIVE: u8 = 1;
pub(crate) const MAJOR_BYTES: u8 = 2;
pub(crate) const MAJOR_TEXT: u8 = 3;
pub(crate) const MAJOR_ARRAY: u8 = 4;
pub(crate) const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;

const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const UNDEFINED: u8 = 0xf7;
const FLOAT64: u8 = 0xfb;

const TAG_BIGNUM_POSITIVE: u64 = 2;
const TAG_BIGNUM_NEGATIVE: u64 = 3;
/// "Finite set" tag (cbor-x writes JS `Set`s with it).
pub(crate) const TAG_SET: u64 = 258;

/// Where encoded bytes go: a buffer, or [`Length`], which only counts them. Every writer below
/// is generic over it, so a value can be measured first and then written into a buffer
/// allocated once at its exact size (large payloads, such as an `exec` result of hundreds of
/// MiB, are then copied once, into their final place).
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn put_byte(&mut self, byte: u8) {
        self.put(&[byte]);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_byte(&mut self, byte: u8) {
        self.push(byte);
    }
}

/// A [`Sink`] that counts the bytes it is given.
#[derive(Debug, Default)]
pub(crate) struct Length(pub usize);

impl Sink for Length {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn put_byte(&mut self, _byte: u8) {
        self.0 += 1;
    }
}

/// Encodes `value` as one CBOR item.
pub(crate) fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

pub(crate) fn write_value<S: Sink>(out: &mut S, value: &Value) {
    match value {
        Value::Undefined => out.put_byte(UNDEFINED),
        Value::Null => out.put_byte(NULL),
        Value::Bool(b) => out.put_byte(if *b { TRUE } else { FALSE }),
        Value::Int(n) => write_int(out, *n),
        Value::Float(f) => {
            out.put_byte(FLOAT64);
            out.put(&f.to_be_bytes());
        }
        Value::BigInt(n) => write_bigint(out, *n),
        Value::String(s) => write_text(out, s),
        Value::Bytes(bytes) => {
            write_head(out, MAJOR_BYTES, bytes.len() as u64);
            out.put(bytes);
        }
        Value::Array(items) => write_array(out, items),
        Value::Set(items) => {
            write_head(out, MAJOR_TAG, TAG_SET);
            write_array(out, items);
        }
        Value::Map(entries) => {
            write_head(out, MAJOR_MAP, entries.len() as u64);
            for (key, value) in entries {
                write_text(out, key);
                write_value(out, value);
            }
        }
    }
}

pub(crate) fn write_text<S: Sink>(out: &mut S, text: &str) {
    write_head(out, MAJOR_TEXT, text.len() as u64);
    out.put(text.as_bytes());
}

fn write_array<S: Sink>(out: &mut S, items: &[Value]) {
    write_head(out, MAJOR_ARRAY, items.len() as u64);
    for item in items {
        write_value(out, item);
    }
}

/// Integers with at most a 4-byte argument: what cbor-x decodes as a JS `number`.
const NUMBER_RANGE: std::ops::RangeInclusive<i64> = -(1 << 32)..=(1 << 32) - 1;

/// A JS number that is an integer: the shortest integer form (major type 0 for `n >= 0`, major
/// type 1 with `-1 - n` below) within [`NUMBER_RANGE`], an `f64` outside it.
fn write_int<S: Sink>(out: &mut S, n: i64) {
    if !NUMBER_RANGE.contains(&n) {
        out.put_byte(FLOAT64);
        out.put(&(n as f64).to_be_bytes());
    } else if n >= 0 {
        write_head(out, MAJOR_UNSIGNED, n.unsigned_abs());
    } else {
        // -1 - n for negative n is (!n) reinterpreted, which never overflows.
        write_head(out, MAJOR_NEGATIVE, !n as u64);
    }
}

/// A `BigInt`: the 8-byte form when it fits 64 bits (so cbor-x decodes a `bigint`), a tag 2/3
/// bignum (minimal big-endian magnitude) otherwise.
fn write_bigint<S: Sink>(out: &mut S, n: i128) {
    let (major, tag, magnitude) = if n >= 0 {
        (MAJOR_UNSIGNED, TAG_BIGNUM_POSITIVE, n.unsigned_abs())
    } else {
        (MAJOR_NEGATIVE, TAG_BIGNUM_NEGATIVE, (!n) as u128)
    };
    match u64::try_from(magnitude) {
        Ok(small) => {
            out.put_byte(major << 5 | 27);
            out.put(&small.to_be_bytes());
        }
        Err(_) => {
            let be = magnitude.to_be_bytes();
            let start = be.iter().position(|&b| b != 0).unwrap_or(be.len());
            let digits = be.get(start..).unwrap_or_default();
            write_head(out, MAJOR_TAG, tag);
            write_head(out, MAJOR_BYTES, digits.len() as u64);
            out.put(digits);
        }
    }
}

/// An item head: major type plus argument in the shortest form.
pub(crate) fn write_head<S: Sink>(out: &mut S, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.put_byte(m | arg as u8);
    } else if let Ok(a) = u8::try_from(arg) {
        out.put(&[m | 24, a]);
    } else if let Ok(a) = u16::try_from(arg) {
        out.put_byte(m | 25);
        out.put(&a.to_be_bytes());
    } else if let Ok(a) = u32::try_from(arg) {
        out.put_byte(m | 26);
        out.put(&a.to_be_bytes());
    } else {
        out.put_byte(m | 27);
        out.put(&arg.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(v: &Value) -> String {
        encode(v).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn integers_are_minimal() {
        assert_eq!(hex(&Value::Int(0)), "00");
        assert_eq!(hex(&Value::Int(23)), "17");
        assert_eq!(hex(&Value::Int(24)), "1818");
        assert_eq!(hex(&Value::Int(256)), "190100");
        assert_eq!(hex(&Value::Int(65536)), "1a00010000");
        assert_eq!(hex(&Value::Int((1 << 32) - 1)), "1affffffff");
        assert_eq!(hex(&Value::Int(-1)), "20");
        assert_eq!(hex(&Value::Int(-25)), "3818");
        assert_eq!(hex(&Value::Int(-(1 << 32))), "3affffffff");
    }

    #[test]
    fn integers_beyond_32_bits_are_floats_not_bigints() {
        assert_eq!(hex(&Value::Int(1 << 32)), "fb41f0000000000000");
        assert_eq!(hex(&Value::Int(-(1 << 32) - 1)), "fbc1f0000000100000");
        assert_eq!(hex(&Value::Int(i64::MIN)), "fbc3e0000000000000");
    }

    #[test]
    fn bigints_use_the_8_byte_form_or_bignums() {
        assert_eq!(hex(&Value::BigInt(0)), "1b0000000000000000");
        assert_eq!(hex(&Value::BigInt(1)), "1b0000000000000001");
        assert_eq!(hex(&Value::BigInt(-1)), "3b0000000000000000");
        assert_eq!(hex(&Value::BigInt(u64::MAX as i128 + 1)), "c249010000000000000000");
        assert_eq!(hex(&Value::BigInt(-(u64::MAX as i128) - 2)), "c349010000000000000000");
    }

    #[test]
    fn other_items() {
        assert_eq!(hex(&Value::Undefined), "f7");
        assert_eq!(hex(&Value::Null), "f6");
        assert_eq!(hex(&Value::Bool(true)), "f5");
        assert_eq!(hex(&Value::Float(1.5)), "fb3ff8000000000000");
        assert_eq!(hex(&Value::from("a")), "6161");
        assert_eq!(hex(&Value::Bytes(vec![1].into())), "4101");
        assert_eq!(hex(&Value::Set(vec![Value::Int(1)])), "d901028101");
        assert_eq!(hex(&Value::object([("a", Value::Array(vec![]))])), "a1616180");
    }
}
