//! BARE primitives and the embedded version prefix (protocol reference §6.1).
//!
//! | Type          | Encoding                                                       |
//! |---------------|----------------------------------------------------------------|
//! | version       | `u16` little-endian, before every message                      |
//! | `uint`        | LEB128: 7 bits per byte, high bit = more; at most 10 bytes      |
//! | `bool`        | one byte, 0 or 1                                               |
//! | `str`, `data` | `uint` length, then that many bytes (UTF-8 for `str`)          |
//! | `optional<T>` | one byte 0 (absent) or 1 (present, then `T`)                   |
//! | union         | the member's tag as a `uint` (one byte for tags < 128), then it |
//!
//! The reader is strict, like the client's `@bare-ts/lib`: non-canonical varints (a trailing
//! zero byte), bool/optional bytes other than 0 and 1, and bytes left after a message are
//! errors. Every length is checked against the input before it is used.

use crate::error::{malformed, ProtocolError, Result};
use crate::SUPPORTED_VERSIONS;

/// Reads BARE values from a byte slice, front to back.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader { input, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.input.len().saturating_sub(self.pos);
        let end = self.pos.checked_add(n).filter(|_| n <= remaining);
        match end.and_then(|end| self.input.get(self.pos..end)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(malformed(format!(
                "truncated input reading {what}: need {n} bytes at offset {}, {remaining} left",
                self.pos
            ))),
        }
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        match self.take(1, what)? {
            [b] => Ok(*b),
            _ => Err(malformed(format!("truncated input reading {what}"))),
        }
    }

    /// The `u16` little-endian version prefix; must be in [`SUPPORTED_VERSIONS`].
    pub(crate) fn version(&mut self) -> Result<u16> {
        let version = match self.take(2, "the version prefix")? {
            [lo, hi] => u16::from_le_bytes([*lo, *hi]),
            _ => return Err(malformed("truncated version prefix")),
        };
        if SUPPORTED_VERSIONS.contains(&version) {
            Ok(version)
        } else {
            Err(ProtocolError::UnsupportedVersion(version))
        }
    }

    /// A LEB128 `uint` (at most 10 bytes, canonical, no overflow past 64 bits).
    pub(crate) fn uint(&mut self, what: &str) -> Result<u64> {
        let start = self.pos;
        let mut value = 0u64;
        for i in 0..10u32 {
            let b = self.byte(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(malformed(format!("varint for {what} at offset {start} overflows 64 bits")));
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(malformed(format!("non-canonical varint for {what} at offset {start}")));
                }
                return Ok(value);
            }
        }
        Err(malformed(format!("varint for {what} at offset {start} is longer than 10 bytes")))
    }

    /// A `uint` length prefix, then that many bytes.
    pub(crate) fn data(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = self.uint(what)?;
        let len = usize::try_from(len).map_err(|_| malformed(format!("length of {what} is too large: {len}")))?;
        self.take(len, what)
    }

    /// A `str`: like `data`, and valid UTF-8.
    pub(crate) fn str(&mut self, what: &str) -> Result<String> {
        let bytes = self.data(what)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| malformed(format!("{what} is not valid UTF-8: {e}")))
    }

    pub(crate) fn bool(&mut self, what: &str) -> Result<bool> {
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(malformed(format!("invalid bool byte {other} for {what}"))),
        }
    }

    /// An `optional<T>`: a presence byte, then `T` read by `read` when present.
    pub(crate) fn optional<T>(&mut self, what: &str, read: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        match self.byte(what)? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(malformed(format!("invalid optional presence byte {other} for {what}"))),
        }
    }

    /// Succeeds only when the whole input has been read.
    pub(crate) fn finish(&self) -> Result<()> {
        match self.input.len().saturating_sub(self.pos) {
            0 => Ok(()),
            n => Err(malformed(format!("{n} trailing bytes after the message"))),
        }
    }
}

/// Appends BARE values to a buffer.
pub(crate) struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// Starts a message with its `u16` little-endian version prefix.
    pub(crate) fn with_version(version: u16) -> Self {
        Writer { out: version.to_le_bytes().to_vec() }
    }

    pub(crate) fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.out.push(n as u8);
    }

    pub(crate) fn data(&mut self, bytes: &[u8]) {
        self.uint(bytes.len() as u64);
        self.out.extend_from_slice(bytes);
    }

    /// A `data` field of `len` bytes that `write` appends straight to the message, which grows
    /// once by `len`: a large payload is not built in a buffer of its own and copied in.
    /// `write` must append exactly `len` bytes.
    pub(crate) fn data_with(&mut self, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
        self.uint(len as u64);
        self.out.reserve_exact(len);
        let start = self.out.len();
        write(&mut self.out);
        debug_assert_eq!(self.out.len() - start, len, "a data field's announced length");
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.data(s.as_bytes());
    }

    pub(crate) fn bool(&mut self, b: bool) {
        self.out.push(u8::from(b));
    }

    pub(crate) fn optional<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.out.push(0),
            Some(v) => {
                self.out.push(1);
                write(self, v);
            }
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint_of(bytes: &[u8]) -> Result<u64> {
        let mut r = Reader::new(bytes);
        let v = r.uint("x")?;
        r.finish()?;
        Ok(v)
    }

    #[test]
    fn varints_round_trip() {
        for n in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX.into(), u64::MAX - 1, u64::MAX] {
            let mut w = Writer { out: Vec::new() };
            w.uint(n);
            assert_eq!(uint_of(&w.finish()).unwrap(), n, "{n}");
        }
        assert_eq!(uint_of(&[0xac, 0x02]).unwrap(), 300);
        assert_eq!(uint_of(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).unwrap(), u64::MAX);
    }

    #[test]
    fn varint_errors() {
        assert!(uint_of(&[]).unwrap_err().to_string().contains("truncated"));
        assert!(uint_of(&[0x80]).unwrap_err().to_string().contains("truncated"));
        assert!(uint_of(&[0x80, 0x00]).unwrap_err().to_string().contains("non-canonical"));
        assert!(uint_of(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])
            .unwrap_err()
            .to_string()
            .contains("overflows"));
        assert!(uint_of(&[0xff; 11]).unwrap_err().to_string().contains("overflows"));
    }

    #[test]
    fn lengths_bools_optionals() {
        assert!(Reader::new(&[0x05, b'a']).data("s").unwrap_err().to_string().contains("need 5 bytes"));
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).data("s").is_err());
        assert!(Reader::new(&[0x01, 0xff]).str("s").unwrap_err().to_string().contains("UTF-8"));
        assert!(Reader::new(&[0x02]).bool("b").unwrap_err().to_string().contains("invalid bool"));
        assert!(Reader::new(&[0x02]).optional("o", |r| r.bool("b")).unwrap_err().to_string().contains("presence"));
        assert_eq!(Reader::new(&[0x00]).optional("o", |r| r.bool("b")).unwrap(), None);
        assert_eq!(Reader::new(&[0x01, 0x01]).optional("o", |r| r.bool("b")).unwrap(), Some(true));
    }

    #[test]
    fn versions() {
        assert_eq!(Reader::new(&[4, 0]).version().unwrap(), 4);
        assert_eq!(Reader::new(&[2, 0]).version().unwrap(), 2);
        for bad in [[0u8, 0u8], [1, 0], [5, 0], [0xff, 0xff], [0, 4]] {
            assert!(matches!(Reader::new(&bad).version(), Err(ProtocolError::UnsupportedVersion(_))));
        }
        assert!(matches!(Reader::new(&[4]).version(), Err(ProtocolError::Malformed(_))));
    }
}
