//! The three message encodings a RivetKit client can choose.

use crate::error::ProtocolError;

/// How messages are encoded on the wire.
///
/// Chosen by the client: the `x-rivet-encoding` header on HTTP actions, the
/// `rivet_encoding.<x>` WebSocket subprotocol on connections.
///
/// * `bare` (the client default): a `u16` little-endian protocol version, then a BARE struct
///   whose payload fields (`args`, `output`, `metadata`) are CBOR blobs of JSON-compat values.
/// * `json`: JSON text; values that JSON cannot carry use the JSON-compat forms
///   (`["$BigInt","1"]`, `["$Uint8Array","AQID"]`, ...), ids are `["$BigInt","n"]`.
/// * `cbor`: the same message shapes as json, as CBOR maps; ids are 8-byte CBOR integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Json,
    Cbor,
    Bare,
}

impl Encoding {
    /// Parses an encoding name: `json`, `cbor` or `bare` (ASCII case and surrounding spaces are
    /// ignored), as found in the `x-rivet-encoding` header or the `rivet_encoding.<x>`
    /// subprotocol suffix.
    pub fn parse(s: &str) -> Result<Encoding, ProtocolError> {
        let name = s.trim();
        if name.eq_ignore_ascii_case("json") {
            Ok(Encoding::Json)
        } else if name.eq_ignore_ascii_case("cbor") {
            Ok(Encoding::Cbor)
        } else if name.eq_ignore_ascii_case("bare") {
            Ok(Encoding::Bare)
        } else {
            Err(ProtocolError::UnknownEncoding(s.to_owned()))
        }
    }

    /// The wire name: `json`, `cbor` or `bare`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Cbor => "cbor",
            Encoding::Bare => "bare",
        }
    }

    /// WebSocket frames: json is sent as Text, bare/cbor as Binary (the client rejects text
    /// frames in binary encodings).
    pub fn uses_text_frames(&self) -> bool {
        matches!(self, Encoding::Json)
    }

    /// The `content-type` of an HTTP body in this encoding.
    pub fn content_type(&self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Cbor | Encoding::Bare => "application/octet-stream",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Encoding {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(Encoding::parse("json").unwrap(), Encoding::Json);
        assert_eq!(Encoding::parse("CBOR").unwrap(), Encoding::Cbor);
        assert_eq!(Encoding::parse(" bare ").unwrap(), Encoding::Bare);
        assert_eq!(Encoding::parse("xml"), Err(ProtocolError::UnknownEncoding("xml".into())));
        assert_eq!(Encoding::parse("").unwrap_err().group(), "encoding");
    }

    #[test]
    fn names_and_frames() {
        for e in [Encoding::Json, Encoding::Cbor, Encoding::Bare] {
            assert_eq!(Encoding::parse(e.as_str()).unwrap(), e);
        }
        assert!(Encoding::Json.uses_text_frames());
        assert!(!Encoding::Bare.uses_text_frames());
        assert!(!Encoding::Cbor.uses_text_frames());
    }
}
