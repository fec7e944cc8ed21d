//! CBOR decoding into [`Value`], on top of `ciborium-ll`'s header parser.
//!
//! The mapping follows what the client's cbor-x produces and expects:
//!
//! | CBOR                                   | Value                                      |
//! |----------------------------------------|--------------------------------------------|
//! | integer with a 0–4 byte argument       | `Int` (`BigInt` if outside `i64`)          |
//! | integer in the 8-byte form `1b`/`3b`   | `BigInt` (cbor-x writes `BigInt`s so)      |
//! | tag 2/3 bignum                         | `BigInt` (error if it does not fit `i128`) |
//! | half/single/double float               | `Float`                                    |
//! | `f4` `f5` `f6` `f7`                    | `Bool`, `Null`, `Undefined`                |
//! | byte string, tag 64 (`Uint8Array`)     | `Bytes`                                    |
//! | tag 258 around an array                | `Set`                                      |
//! | any other tag (1 = epoch `Date`, ...)  | the tagged value                           |
//! | map                                    | `Map` (keys must be text strings)          |
//!
//! Indefinite lengths are accepted. Nesting (arrays, maps and tags) is limited to
//! [`MAX_DEPTH`] so hostile input cannot exhaust the stack; declared lengths are checked against
//! the remaining input before anything is allocated; trailing bytes are an error.
//!
//! Byte strings of definite length are taken out of the input in one piece: as slices of the
//! received buffer when the caller has it as [`Bytes`] ([`decode_shared`], no copy at all), as
//! one copy otherwise.

use bytes::Bytes;
use ciborium_ll::{simple, Decoder, Header};

use super::encode::TAG_SET;
use crate::error::{malformed, ProtocolError, Result};
use crate::value::{MapBuilder, Value};

/// Maximum nesting of arrays, maps and tags.
pub(crate) const MAX_DEPTH: usize = 128;

const TAG_BIGNUM_POSITIVE: u64 = 2;
const TAG_BIGNUM_NEGATIVE: u64 = 3;
const TAG_UINT8_ARRAY: u64 = 64;
/// Low 5 bits of an initial byte announcing an 8-byte argument.
const ARG_8_BYTES: u8 = 27;
/// Chunk size for copying string contents out of the decoder.
const CHUNK: usize = 4096;

/// Decodes exactly one CBOR item spanning all of `input`.
pub(crate) fn decode(input: &[u8]) -> Result<Value> {
    decode_in(input, None)
}

/// [`decode`] of `input`, a part of `source`: byte strings are slices of `source`, not copies.
pub(crate) fn decode_shared(input: &[u8], source: &Bytes) -> Result<Value> {
    decode_in(input, Some(source))
}

fn decode_in(input: &[u8], source: Option<&Bytes>) -> Result<Value> {
    let mut parser = Parser { input, base: 0, decoder: Decoder::from(input), source };
    let value = parser.value(0)?;
    let end = parser.offset();
    if end != input.len() {
        return Err(malformed(format!("{} trailing bytes after the CBOR value", input.len().saturating_sub(end))));
    }
    Ok(value)
}

struct Parser<'a> {
    input: &'a [u8],
    /// Where in `input` the decoder started (it is restarted after a byte string taken whole).
    base: usize,
    decoder: Decoder<&'a [u8]>,
    /// The buffer `input` lies in, when byte strings may share it.
    source: Option<&'a Bytes>,
}

fn io_error<E>(error: ciborium_ll::Error<E>) -> ProtocolError {
    match error {
        ciborium_ll::Error::Io(_) => malformed("unexpected end of CBOR input"),
        ciborium_ll::Error::Syntax(offset) => malformed(format!("invalid CBOR at byte {offset}")),
    }
}

impl Parser<'_> {
    /// Bytes of `input` consumed.
    fn offset(&mut self) -> usize {
        self.base + self.decoder.offset()
    }

    fn remaining(&mut self) -> usize {
        self.input.len().saturating_sub(self.offset())
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let start = self.offset();
        let header = self.decoder.pull().map_err(io_error)?;
        // The 8-byte integer form is what marks a `BigInt` for cbor-x; keep that distinction.
        let wide = self.input.get(start).is_some_and(|b| b & 0x1f == ARG_8_BYTES);
        match header {
            Header::Positive(n) => Ok(integer(i128::from(n), wide)),
            Header::Negative(n) => Ok(integer(-1 - i128::from(n), wide)),
            Header::Float(f) => Ok(Value::Float(f)),
            Header::Simple(simple::FALSE) => Ok(Value::Bool(false)),
            Header::Simple(simple::TRUE) => Ok(Value::Bool(true)),
            Header::Simple(simple::NULL) => Ok(Value::Null),
            Header::Simple(simple::UNDEFINED) => Ok(Value::Undefined),
            Header::Simple(other) => Err(malformed(format!("unsupported CBOR simple value {other} at byte {start}"))),
            Header::Break => Err(malformed(format!("unexpected CBOR break at byte {start}"))),
            Header::Bytes(len) => Ok(Value::Bytes(self.bytes(len)?)),
            Header::Text(len) => Ok(Value::String(self.text(len, start)?)),
            Header::Array(len) => Ok(Value::Array(self.items(len, depth)?)),
            Header::Map(len) => self.map(len, depth),
            Header::Tag(tag) => self.tagged(tag, depth),
        }
    }

    fn nested(&mut self, depth: usize) -> Result<Value> {
        if depth >= MAX_DEPTH {
            return Err(malformed(format!("CBOR value nested deeper than {MAX_DEPTH} levels")));
        }
        self.value(depth + 1)
    }

    /// Checks a declared length against the input left (every element takes at least
    /// `min_size` bytes) and returns a safe capacity for it.
    fn capacity(&mut self, len: Option<usize>, min_size: usize, what: &str) -> Result<usize> {
        let remaining = self.remaining();
        match len {
            Some(n) if n.saturating_mul(min_size) > remaining => {
                Err(malformed(format!("CBOR {what} of length {n} exceeds the {remaining} bytes left")))
            }
            Some(n) => Ok(n),
            None => Ok(0),
        }
    }

    #[inline(never)] // keeps the chunk buffer off the recursive frames
    fn bytes(&mut self, len: Option<usize>) -> Result<Bytes> {
        let capacity = self.capacity(len, 1, "byte string")?;
        if len.is_some() {
            // Taken whole (the length is checked above), then the decoder restarts after it.
            let start = self.offset();
            let end = start + capacity;
            let piece = self.input.get(start..end).ok_or_else(|| malformed("unexpected end of CBOR input"))?;
            let bytes = match self.source {
                Some(source) if contains(source, piece) => source.slice_ref(piece),
                _ => Bytes::copy_from_slice(piece),
            };
            let rest = self.input.get(end..).unwrap_or_default();
            self.base = end;
            self.decoder = Decoder::from(rest);
            return Ok(bytes);
        }
        let mut out = Vec::new();
        let mut buf = [0u8; CHUNK];
        let mut segments = self.decoder.bytes(len);
        while let Some(mut segment) = segments.pull().map_err(io_error)? {
            while let Some(chunk) = segment.pull(&mut buf).map_err(io_error)? {
                out.extend_from_slice(chunk);
            }
        }
        Ok(out.into())
    }

    #[inline(never)] // keeps the chunk buffer off the recursive frames
    fn text(&mut self, len: Option<usize>, start: usize) -> Result<String> {
        let mut out = String::with_capacity(self.capacity(len, 1, "text string")?);
        let mut buf = [0u8; CHUNK];
        let mut segments = self.decoder.text(len);
        let invalid = |e: ciborium_ll::Error<_>| match e {
            ciborium_ll::Error::Syntax(_) => {
                malformed(format!("invalid UTF-8 or malformed segment in the CBOR text string at byte {start}"))
            }
            other => io_error(other),
        };
        while let Some(mut segment) = segments.pull().map_err(invalid)? {
            while let Some(chunk) = segment.pull(&mut buf).map_err(invalid)? {
                out.push_str(chunk);
            }
        }
        Ok(out)
    }

    /// Reads the next header if it is a `break` (end of an indefinite-length container).
    fn at_break(&mut self) -> Result<bool> {
        match self.decoder.pull().map_err(io_error)? {
            Header::Break => Ok(true),
            header => {
                self.decoder.push(header);
                Ok(false)
            }
        }
    }

    fn items(&mut self, len: Option<usize>, depth: usize) -> Result<Vec<Value>> {
        let mut items = Vec::with_capacity(self.capacity(len, 1, "array")?);
        match len {
            Some(n) => {
                for _ in 0..n {
                    items.push(self.nested(depth)?);
                }
            }
            None => {
                while !self.at_break()? {
                    items.push(self.nested(depth)?);
                }
            }
        }
        Ok(items)
    }

    fn map(&mut self, len: Option<usize>, depth: usize) -> Result<Value> {
        let mut map = MapBuilder::with_capacity(self.capacity(len, 2, "map")?);
        match len {
            Some(n) => {
                for _ in 0..n {
                    self.entry(&mut map, depth)?;
                }
            }
            None => {
                while !self.at_break()? {
                    self.entry(&mut map, depth)?;
                }
            }
        }
        Ok(map.finish())
    }

    fn entry(&mut self, map: &mut MapBuilder, depth: usize) -> Result<()> {
        let start = self.offset();
        let key = match self.nested(depth)? {
            Value::String(key) => key,
            other => {
                return Err(malformed(format!(
                    "CBOR map key at byte {start} must be a text string, found {}",
                    other.type_name()
                )))
            }
        };
        let value = self.nested(depth)?;
        map.insert(key, value);
        Ok(())
    }

    fn tagged(&mut self, tag: u64, depth: usize) -> Result<Value> {
        let inner = self.nested(depth)?;
        match (tag, inner) {
            (TAG_BIGNUM_POSITIVE | TAG_BIGNUM_NEGATIVE, Value::Bytes(digits)) => {
                let magnitude = bignum(&digits)?;
                if tag == TAG_BIGNUM_POSITIVE {
                    i128::try_from(magnitude).map(Value::BigInt)
                } else {
                    // -1 - magnitude; fits when magnitude <= i128::MAX.
                    i128::try_from(magnitude).map(|m| Value::BigInt(-1 - m))
                }
                .map_err(|_| malformed("CBOR bignum does not fit in 128 bits"))
            }
            (TAG_BIGNUM_POSITIVE | TAG_BIGNUM_NEGATIVE, other) => {
                Err(malformed(format!("CBOR bignum tag {tag} must wrap a byte string, found {}", other.type_name())))
            }
            (TAG_UINT8_ARRAY, bytes @ Value::Bytes(_)) => Ok(bytes),
            (TAG_SET, Value::Array(items)) => Ok(Value::Set(items)),
            // Epoch dates (tag 1), typed arrays, and anything else: the tagged value itself.
            (_, inner) => Ok(inner),
        }
    }
}

fn integer(n: i128, wide: bool) -> Value {
    match i64::try_from(n) {
        Ok(small) if !wide => Value::Int(small),
        _ => Value::BigInt(n),
    }
}

/// A big-endian unsigned magnitude, leading zeros allowed.
fn bignum(digits: &[u8]) -> Result<u128> {
    let start = digits.iter().position(|&b| b != 0).unwrap_or(digits.len());
    let significant = digits.get(start..).unwrap_or_default();
    if significant.len() > 16 {
        return Err(malformed("CBOR bignum does not fit in 128 bits"));
    }
    Ok(significant.iter().fold(0u128, |acc, &b| acc << 8 | u128::from(b)))
}

/// Whether `piece` lies within `source`'s memory (so `Bytes::slice_ref` accepts it).
fn contains(source: &Bytes, piece: &[u8]) -> bool {
    let (start, end) = (source.as_ptr() as usize, source.as_ptr() as usize + source.len());
    let (piece_start, piece_end) = (piece.as_ptr() as usize, piece.as_ptr() as usize + piece.len());
    start <= piece_start && piece_end <= end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn dec(s: &str) -> Result<Value> {
        decode(&unhex(s))
    }

    #[test]
    fn integers() {
        assert_eq!(dec("1a00000001").unwrap(), Value::Int(1));
        assert_eq!(dec("1b0000000000000001").unwrap(), Value::BigInt(1));
        assert_eq!(dec("1bffffffffffffffff").unwrap(), Value::BigInt(u64::MAX.into()));
        assert_eq!(dec("3b0000000000000000").unwrap(), Value::BigInt(-1));
        assert_eq!(dec("3a7fffffff").unwrap(), Value::Int(-(1 << 31)));
        assert_eq!(dec("c24101").unwrap(), Value::BigInt(1));
        assert_eq!(dec("c34100").unwrap(), Value::BigInt(-1));
        assert_eq!(dec("c251007fffffffffffffffffffffffffffffff").unwrap(), Value::BigInt(i128::MAX));
        assert!(dec("c25100ffffffffffffffffffffffffffffffff").is_err());
        assert!(dec("c2510100000000000000000000000000000000").is_err());
        assert!(dec("c250ffffffffffffffffffffffffffffffff").is_err());
        assert_eq!(dec("c3507fffffffffffffffffffffffffffffff").unwrap(), Value::BigInt(i128::MIN));
        assert!(dec("c20a").unwrap_err().to_string().contains("byte string"));
    }

    #[test]
    fn simple_values_floats_and_tags() {
        assert_eq!(dec("f7").unwrap(), Value::Undefined);
        assert_eq!(dec("f6").unwrap(), Value::Null);
        assert_eq!(dec("f4").unwrap(), Value::Bool(false));
        assert_eq!(dec("f93c00").unwrap(), Value::Float(1.0));
        assert_eq!(dec("fa3fc00000").unwrap(), Value::Float(1.5));
        assert_eq!(dec("d84043010203").unwrap(), Value::Bytes(vec![1, 2, 3].into()));
        assert_eq!(dec("c11a5f5e1000").unwrap(), Value::Int(1_600_000_000));
        assert_eq!(
            dec("d9010282 0102".replace(' ', "").as_str()).unwrap(),
            Value::Set(vec![Value::Int(1), Value::Int(2)])
        );
        assert!(dec("f0").is_err());
        assert!(dec("ff").is_err());
        assert!(dec("1c").is_err());
    }

    #[test]
    fn strings_and_containers() {
        assert_eq!(dec("5f4101420203ff").unwrap(), Value::Bytes(vec![1, 2, 3].into()));
        assert_eq!(dec("7f6161626263ff").unwrap(), Value::from("abc"));
        assert_eq!(dec("9f0102ff").unwrap(), Value::Array(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(dec("bf616101ff").unwrap(), Value::object([("a", Value::Int(1))]));
        assert_eq!(dec("b90001616101").unwrap(), Value::object([("a", Value::Int(1))]));
        assert_eq!(dec("a2616101616102").unwrap(), Value::object([("a", Value::Int(2))]));
        assert!(dec("62c328").unwrap_err().to_string().contains("UTF-8"));
        assert!(dec("a10101").unwrap_err().to_string().contains("must be a text string"));
        assert!(dec("9bffffffffffffffff").unwrap_err().to_string().contains("exceeds"));
        assert!(dec("5a7fffffff").unwrap_err().to_string().contains("exceeds"));
        assert!(dec("811901").unwrap_err().to_string().contains("end of CBOR input"));
        assert!(dec("8201").unwrap_err().to_string().contains("exceeds"));
        assert!(dec("0101").unwrap_err().to_string().contains("trailing"));
        assert!(dec("").unwrap_err().to_string().contains("end of CBOR input"));
    }

    #[test]
    fn depth_is_limited() {
        assert!(decode(&vec![0x81; MAX_DEPTH].into_iter().chain([0x00]).collect::<Vec<_>>()).is_ok());
        let deep: Vec<u8> = vec![0x81; MAX_DEPTH + 1].into_iter().chain([0x00]).collect();
        assert!(decode(&deep).unwrap_err().to_string().contains("nested deeper"));
        assert!(decode(&vec![0x9f; 100_000]).is_err());
        assert!(decode(&vec![0xc1; 100_000]).is_err());
        assert!(decode(&[0xa1, 0x61, 0x61].repeat(100_000)).is_err());
    }
}
