//! API errors: `{group, code, message, metadata?}` with an HTTP status, as RivetKit clients
//! expect them. HTTP errors are always sent as JSON (clients accept JSON errors whatever the
//! request encoding); over a WebSocket they become `Error` frames.

use agentvm_protocol::{ErrorBody, ProtocolError, Value};
use agentvm_vm::{errno_code, Errno, VmError};
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

    /// An action on an actor that `destroy` is removing, or removed.
    pub fn refused(refusal: agentvm_actors::Refusal, actor_id: &str) -> Self {
        use agentvm_actors::Refusal;
        match refusal {
            Refusal::Destroying => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "actor",
                "destroying",
                format!("The actor {actor_id} is being destroyed."),
            ),
            Refusal::Destroyed => {
                Self::new(StatusCode::GONE, "actor", "destroyed", format!("The actor {actor_id} was destroyed."))
            }
        }
    }

    /// The server holds as many VMs as `--max-vms` allows.
    pub fn too_many_vms(limit: u64) -> Self {
        let mut error = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server",
            "too_many_vms",
            format!("this server holds its maximum of {limit} VMs (--max-vms): destroy some first"),
        );
        error.metadata = Some(Value::object([("limit", Value::from(limit))]));
        error
    }

    /// New VMs are created faster than `--max-creates-per-second` allows.
    pub fn creation_rate_limited(retry_after: std::time::Duration) -> Self {
        let retry_ms = retry_after.as_millis().clamp(1, u64::MAX as u128) as u64;
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "server",
            "rate_limited",
            format!("VMs are being created faster than this server allows (--max-creates-per-second): retry in {retry_ms} ms"),
        );
        error.metadata = Some(Value::object([("retryAfterMs", Value::from(retry_ms))]));
        error
    }

    /// A WebSocket connection has as many actions running as it may.
    pub fn too_many_actions(limit: usize) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "connection",
            "too_many_actions",
            format!("this connection already has {limit} actions running: wait for some to finish"),
        )
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

/// VM errors: the code comes from the variant (and, for file system errors, `metadata.code`
/// from the errno the error carries); the message is the error's `Display` (`Process not found:
/// 42`, `ENOENT: no such file or directory, open '/x'`). No text is parsed.
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
            VmError::ResourceExhausted(_) => (StatusCode::SERVICE_UNAVAILABLE, "resource_exhausted"),
            VmError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io_error"),
            VmError::FileSystem(fs) => {
                let errno = fs.errno();
                let status = if errno == Errno::ENOENT { StatusCode::NOT_FOUND } else { StatusCode::BAD_REQUEST };
                let mut error = ApiError::new(status, "vm", "fs_error", fs.to_string());
                error.metadata = Some(Value::object([("code", Value::from(errno_code(errno)))]));
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
        if let Some(ms) = self.metadata.as_ref().and_then(|m| m.get("retryAfterMs")).and_then(Value::as_i64) {
            let seconds = (ms + 999) / 1000;
            headers.insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

/// The rendered form of every VM error kind.
#[cfg(test)]
#[path = "error_vm_tests.rs"]
mod vm_error_tests;
