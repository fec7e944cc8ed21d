//! The messages of the client protocol, independent of their encoding.

use crate::error::ProtocolError;
use crate::value::Value;

/// An error as the client sees it (`RivetError`): `group.code`, a message, optional metadata and,
/// from protocol version 4, the actor that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorBody {
    pub group: String,
    pub code: String,
    pub message: String,
    /// Any value; compat-encoded on the wire.
    pub metadata: Option<Value>,
    pub actor: Option<ActorSpecifier>,
}

impl ErrorBody {
    /// An error without metadata or actor.
    pub fn new(group: impl Into<String>, code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody { group: group.into(), code: code.into(), message: message.into(), metadata: None, actor: None }
    }
}

impl From<&ProtocolError> for ErrorBody {
    /// `encoding.invalid` or `message.malformed`, with the error's text as message.
    fn from(error: &ProtocolError) -> Self {
        ErrorBody::new(error.group(), error.code(), error.to_string())
    }
}

/// Which actor an error came from (`ActorSpecifier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorSpecifier {
    pub actor_id: String,
    pub generation: u64,
    pub key: Option<String>,
}

/// A WebSocket message from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ToServer {
    /// Call action `name` with positional `args`; answered by an `ActionResponse` or an `Error`
    /// carrying the same `id` (a per-connection counter starting at 0).
    ActionRequest { id: u64, name: String, args: Vec<Value> },
    /// Start (`subscribe: true`) or stop receiving `Event`s named `event_name`. No reply.
    SubscriptionRequest { event_name: String, subscribe: bool },
}

/// A WebSocket message to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ToClient {
    /// Must be the first frame; the client queues actions until it arrives.
    Init { actor_id: String, connection_id: String },
    /// With `action_id`: that action failed. Without: a connection-level error.
    Error { error: ErrorBody, action_id: Option<u64> },
    /// The result of the action with this `id`.
    ActionResponse { id: u64, output: Value },
    /// A broadcast event; the client calls each listener as `cb(...args)`.
    Event { name: String, args: Vec<Value> },
}

/// A WebSocket payload to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

impl Frame {
    /// The payload bytes, whatever the frame type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Frame::Text(text) => text.as_bytes(),
            Frame::Binary(bytes) => bytes,
        }
    }

    /// Consumes the frame into its payload bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Frame::Text(text) => text.into_bytes(),
            Frame::Binary(bytes) => bytes,
        }
    }
}
