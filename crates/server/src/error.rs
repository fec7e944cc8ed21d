//! API errors: `{group, code, message, metadata?}` with an HTTP status, as RivetKit clients
//! expect them. HTTP errors are always sent as JSON (clients accept JSON errors whatever the
//! request encoding); over a WebSocket they become `Error` frames.
//!
//! This is where the actor core's typed errors ([`ActorError`]) get their client-facing form:
//! status, group, code and message (see `From<ActorError>` below).

use agentvm_actors::{ActorError, Refusal};
use agentvm_protocol::{ErrorBody, ProtocolError, Value};
use agentvm_vm::{errno_code, Errno, FetchProblem, VmError};
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
    pub fn refused(refusal: Refusal, actor_id: &str) -> Self {
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

    /// The server got SIGTERM/SIGINT: it stops its VMs and boots none.
    pub fn shutting_down() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server",
            "shutting_down",
            "the server is shutting down and starts no VM: retry against the server once it is back",
        )
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

/// The core's error kinds as clients see them.
impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::ActionNotFound(name) => ApiError::action_not_found(&name),
            ActorError::InvalidArguments(message) => ApiError::invalid_arguments(message),
            ActorError::NotFound => ApiError::actor_not_found(),
            ActorError::Refused { refusal, actor_id } => ApiError::refused(refusal, &actor_id),
            ActorError::TooManyVms { limit } => ApiError::too_many_vms(limit),
            ActorError::RateLimited { retry_after } => ApiError::creation_rate_limited(retry_after),
            ActorError::ShuttingDown => ApiError::shutting_down(),
            e @ ActorError::PlacedByEngine { .. } => {
                ApiError::new(StatusCode::CONFLICT, "actor", "placed_by_engine", e.to_string())
            }
            // Not `actor/not_found`: the rivetkit client retries that for seconds, and no retry
            // can make an undefined name exist.
            e @ ActorError::UnknownActorName { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "actor", "unknown_name", e.to_string())
            }
            e @ ActorError::SessionNotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "session", "not_found", e.to_string())
            }
            e @ ActorError::SessionClosed(_) => ApiError::new(StatusCode::CONFLICT, "session", "closed", e.to_string()),
            ActorError::Agent(message) => ApiError::new(StatusCode::BAD_GATEWAY, "session", "agent_failed", message),
            ActorError::Cron(e) => {
                use agentvm_actors::cron::{schedule::ScheduleError, CronError};
                let (status, code) = match &e {
                    CronError::Schedule(ScheduleError::Past { .. }) => (StatusCode::BAD_REQUEST, "past_schedule"),
                    CronError::Schedule(ScheduleError::TimeZone(_)) => (StatusCode::BAD_REQUEST, "invalid_timezone"),
                    CronError::Schedule(ScheduleError::Invalid { .. }) => (StatusCode::BAD_REQUEST, "invalid_schedule"),
                    CronError::TooFrequent { .. } => (StatusCode::BAD_REQUEST, "too_frequent"),
                    CronError::TooManyJobs { .. } => (StatusCode::CONFLICT, "too_many_jobs"),
                };
                ApiError::new(status, "cron", code, e.to_string())
            }
            ActorError::InputRefused { message, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "actor", "invalid_input", message)
            }
            ActorError::Vm(e) => ApiError::from(e),
            ActorError::Store(e) => ApiError::internal(format!("state store: {e}")),
            ActorError::Io { context, source } => ApiError::internal(format!("{context}: {source}")),
            ActorError::Internal(message) => ApiError::internal(message),
        }
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
            VmError::PortClosed { .. } => (StatusCode::BAD_GATEWAY, "port_closed"),
            VmError::Fetch { problem: FetchProblem::TimedOut(_), .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "fetch_timed_out")
            }
            VmError::Fetch { problem: FetchProblem::TooLarge(_), .. } => (StatusCode::BAD_GATEWAY, "fetch_too_large"),
            VmError::Fetch { .. } => (StatusCode::BAD_GATEWAY, "fetch_failed"),
            VmError::Socket(_) => (StatusCode::BAD_GATEWAY, "socket_failed"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Every kind of core error, rendered as clients receive it.
    #[test]
    fn core_errors_render_as_status_group_code_and_message() {
        let render = |e: ActorError| {
            let api = ApiError::from(e);
            (api.status.as_u16(), api.group, api.code, api.message, api.metadata)
        };
        let id = "0123456789abcdef0123456789abcd".to_string();
        assert_eq!(
            render(ActorError::ActionNotFound("nope".into())),
            (404, "actor", "action_not_found", "Action `nope` was not found.".into(), None)
        );
        assert_eq!(
            render(ActorError::InvalidArguments("exec: argument 1 (command) must be a string, got number".into())),
            (
                400,
                "action",
                "invalid_arguments",
                "exec: argument 1 (command) must be a string, got number".into(),
                None
            )
        );
        assert_eq!(
            render(ActorError::NotFound),
            (404, "actor", "not_found", "The actor does not exist or was destroyed.".into(), None)
        );
        assert_eq!(
            render(ActorError::Refused { refusal: Refusal::Destroying, actor_id: id.clone() }),
            (503, "actor", "destroying", format!("The actor {id} is being destroyed."), None)
        );
        assert_eq!(
            render(ActorError::Refused { refusal: Refusal::Destroyed, actor_id: id.clone() }),
            (410, "actor", "destroyed", format!("The actor {id} was destroyed."), None)
        );
        assert_eq!(
            render(ActorError::TooManyVms { limit: 3 }),
            (
                503,
                "server",
                "too_many_vms",
                "this server holds its maximum of 3 VMs (--max-vms): destroy some first".into(),
                Some(Value::object([("limit", Value::from(3u64))]))
            )
        );
        assert_eq!(
            render(ActorError::RateLimited { retry_after: Duration::from_micros(1500) }),
            (
                429,
                "server",
                "rate_limited",
                "VMs are being created faster than this server allows (--max-creates-per-second): retry in 1 ms".into(),
                Some(Value::object([("retryAfterMs", Value::from(1u64))]))
            )
        );
        assert_eq!(
            render(ActorError::Vm(VmError::Stopped("vm1".into()))),
            (503, "vm", "not_running", "VM vm1 is not running".into(), None)
        );
        assert_eq!(
            render(ActorError::Io {
                context: "creating /data/vms/x".into(),
                source: std::io::Error::other("disk full")
            }),
            (500, "rivetkit", "internal_error", "creating /data/vms/x: disk full".into(), None)
        );
        let dir = tempfile::tempdir().unwrap();
        // A directory is no SQLite database: a real store error.
        let Err(store) = agentvm_store::Registry::open(dir.path()) else { panic!("opened a directory as a registry") };
        let text = format!("state store: {store}");
        assert_eq!(render(ActorError::Store(store)), (500, "rivetkit", "internal_error", text, None));
        assert_eq!(
            render(ActorError::Internal("a blocking task failed: boom".into())),
            (500, "rivetkit", "internal_error", "a blocking task failed: boom".into(), None)
        );
    }
}
