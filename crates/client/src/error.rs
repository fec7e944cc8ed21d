//! [`Error`]: everything a call can fail with.

use agentvm_protocol::{ErrorBody, Value};

/// What a call of this crate can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers at the URL: the connection was refused, the host name did not resolve or
    /// connecting timed out (after 10 s).
    #[error("no server at {url} — start one with `agentvm serve`")]
    NoServer {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The server answered with an error, e.g. group `vm`, code `process_not_found`, message
    /// `Process not found: 42`. Displays as the message alone. File-system errors carry the POSIX
    /// code as `metadata.code` (`{"code": "ENOENT"}`).
    #[error("{message}")]
    Api { group: String, code: String, message: String, metadata: Option<Value> },
    /// The server sent something this client cannot decode, or an action returned a value of an
    /// unexpected shape.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request failed at the HTTP or WebSocket level: the URL is not usable, the server
    /// dropped the request, or it answered with something that is not an agentvm error.
    #[error("{0}")]
    Http(String),
    /// The [`Connection`](crate::Connection) is closed, or its socket dropped while an action
    /// was in flight (the action may or may not have run; it is not retried).
    #[error("the connection is closed")]
    Closed,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `group.code` of an [`Error::Api`] (e.g. `vm.process_not_found`); `None` for other errors.
    pub fn api_code(&self) -> Option<String> {
        match self {
            Error::Api { group, code, .. } => Some(format!("{group}.{code}")),
            _ => None,
        }
    }
}

impl From<ErrorBody> for Error {
    fn from(body: ErrorBody) -> Self {
        Error::Api { group: body.group, code: body.code, message: body.message, metadata: body.metadata }
    }
}

/// An error and its sources, `: `-separated (reqwest and tungstenite keep the cause in the chain).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
