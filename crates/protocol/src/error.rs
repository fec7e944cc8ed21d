//! Decoding errors.
//!
//! Every error maps onto one of the RivetKit error codes that servers send back to clients
//! (`group`/`code`, see the protocol reference §9), so a server can turn a failed decode into an
//! HTTP error body or a WebSocket `Error` frame without its own mapping table.

/// Why a payload could not be decoded (or an encoding name not understood).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `x-rivet-encoding` header or `rivet_encoding.<x>` subprotocol named no known encoding.
    #[error("unknown encoding `{0}` (expected `json`, `cbor` or `bare`)")]
    UnknownEncoding(String),
    /// The bytes are not a valid message of the selected encoding.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A BARE message carried a version prefix outside [`SUPPORTED_VERSIONS`](crate::SUPPORTED_VERSIONS).
    #[error("unsupported protocol version {0} (supported: 2 to 4)")]
    UnsupportedVersion(u16),
}

impl ProtocolError {
    /// The RivetKit error group: `encoding` or `message`.
    pub fn group(&self) -> &'static str {
        match self {
            ProtocolError::UnknownEncoding(_) => "encoding",
            ProtocolError::Malformed(_) | ProtocolError::UnsupportedVersion(_) => "message",
        }
    }

    /// The RivetKit error code within [`group`](Self::group): `invalid` or `malformed`.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::UnknownEncoding(_) => "invalid",
            ProtocolError::Malformed(_) | ProtocolError::UnsupportedVersion(_) => "malformed",
        }
    }
}

impl ProtocolError {
    /// Prefixes a `Malformed` message with where the problem was (`"args: ..."`).
    pub(crate) fn context(self, what: &str) -> Self {
        match self {
            ProtocolError::Malformed(message) => ProtocolError::Malformed(format!("{what}: {message}")),
            other => other,
        }
    }
}

/// Shorthand for building a [`ProtocolError::Malformed`].
pub(crate) fn malformed(message: impl Into<String>) -> ProtocolError {
    ProtocolError::Malformed(message.into())
}

pub(crate) type Result<T> = std::result::Result<T, ProtocolError>;
