//! API errors: `{group, code, message, metadata?}` with an HTTP status, as RivetKit clients
//! expect them. HTTP errors are always sent as JSON (clients accept JSON errors whatever the
//! request encoding); over a WebSocket they become `Error` frames.

use agentvm_protocol::{ErrorBody, ProtocolError, Value};
use agentvm_vm::VmError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub group: &'static str,
    pub code: &'static str,
    pub message: String,
    pub metadata: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, group: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, group, code, message: message.into(), metadata: None }
    }

    pub fn action_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "actor", "action_not_found", format!("Action `{name}` was not found."))
    }

    pub fn actor_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "actor", "not_found", "The actor does not exist or was destroyed.")
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "request", "invalid", message)
    }

    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "action", "invalid_arguments", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "auth",
            "unauthorized",
            "missing or wrong token: send it as `x-rivet-token`, `Authorization: Bearer`, `rvt-token` or `@token`",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message",
            "incoming_too_long",
            format!("the request body exceeds the {limit} byte limit"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "rivetkit", "internal_error", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            group: self.group.to_string(),
            code: self.code.to_string(),
            message: self.message.clone(),
            metadata: self.metadata.clone(),
            actor: None,
        }
    }
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, e.group(), e.code(), e.to_string())
    }
}

/// VM errors keep their text (`Process not found: 42`, `ENOENT: ...`); the code says the kind.
impl From<VmError> for ApiError {
    fn from(e: VmError) -> Self {
        let (status, code) = match &e {
            VmError::ProcessNotFound(_) => (StatusCode::NOT_FOUND, "process_not_found"),
            VmError::ShellNotFound(_) => (StatusCode::NOT_FOUND, "shell_not_found"),
            VmError::SpawnFailed(_) => (StatusCode::BAD_REQUEST, "spawn_failed"),
            VmError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            VmError::InvalidState(_) => (StatusCode::CONFLICT, "invalid_state"),
            VmError::Stopped(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_running"),
            VmError::CreateFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "boot_failed"),
            VmError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
            VmError::FileSystem(message) => {
                // The text starts with the POSIX code (`ENOENT: ...`); clients get it as metadata too.
                let errno = message.split(':').next().unwrap_or("EIO").to_string();
                let status = if errno == "ENOENT" { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
                let mut error = ApiError::new(status, "vm", "fs_error", message.clone());
                error.metadata = Some(Value::object([("code", Value::from(errno))]));
                return error;
            }
        };
        ApiError::new(status, "vm", code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = agentvm_protocol::encode_http_error_json(&self.body());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("{}.{}", self.group, self.code)) {
            headers.insert("x-rivet-error", value);
        }
        response
    }
}
            VmError::ResourceExhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "resource_exhausted"),
