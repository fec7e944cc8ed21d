//! [`Client`]: the server's address, token and encoding, and the HTTP requests.

use std::time::Duration;

use agentvm_protocol::{decode_action_response, decode_http_error_json, encode_action_request, Encoding, Value};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer};

use crate::error::{chain, Error, Result};
use crate::vm::VmHandle;

/// Where `agentvm serve` listens by default.
pub const DEFAULT_URL: &str = "http://127.0.0.1:6420";

/// Most of an answer's announced `Content-Length` allocated before its bytes arrive.
const PREALLOCATED_BODY_BYTES: u64 = 1 << 30;

/// The BARE protocol version this client speaks (that of the rivetkit 2.3 client).
pub(crate) const BARE_VERSION: u16 = 4;

/// How long connecting to the server may take before it counts as [`Error::NoServer`].
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The actor name of VMs.
const ACTOR_NAME: &str = "vm";

/// What JavaScript's `encodeURIComponent` leaves alone.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// A client of one `agentvm serve`: cheap to clone (clones share their HTTP connections).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
/// # let _server = agentvm_client::testing::server();
/// use agentvm_client::{Client, Encoding};
///
/// let client = Client::from_env();                       // AGENTVM_URL, AGENTVM_TOKEN
/// client.health().await?;
/// let cbor = client.clone().with_encoding(Encoding::Cbor); // bare is the default
/// let vm = cbor.vm("list-me");
/// vm.exec("true", Default::default()).await?;
/// assert!(client.list_vms().await?.iter().any(|info| info.key == "list-me"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    url: String,
    token: Option<String>,
    encoding: Encoding,
    http: reqwest::Client,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("encoding", &self.encoding)
            .finish()
    }
}

impl Client {
    /// A client of the server at `url`, e.g. `http://127.0.0.1:6420`. Trailing `/`s are trimmed;
    /// a URL without a scheme (`127.0.0.1:6420`) gets `http://`. Only plain `http://` is spoken
    /// (put TLS in front of the server and the client alike, e.g. an SSH tunnel).
    pub fn new(url: impl Into<String>) -> Client {
        let url: String = url.into();
        let trimmed = url.trim().trim_end_matches('/');
        let url = if trimmed.contains("://") { trimmed.to_owned() } else { format!("http://{trimmed}") };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("agentvm-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Client { url, token: None, encoding: Encoding::Bare, http }
    }

    /// A client configured from the environment: `AGENTVM_URL` (else [`DEFAULT_URL`]) and
    /// `AGENTVM_TOKEN` (the server's `--token`, if it has one).
    pub fn from_env() -> Client {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let client = Client::new(var("AGENTVM_URL").unwrap_or_else(|| DEFAULT_URL.to_owned()));
        match var("AGENTVM_TOKEN") {
            Some(token) => client.with_token(token),
            None => client,
        }
    }

    /// Sends `token` with every request: as `x-rivet-token` on HTTP and `rvt-token` on
    /// WebSocket connections.
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.token = Some(token.into());
        self
    }

    /// The encoding of actions and connections: [`Encoding::Bare`] (the default, as the rivetkit
    /// client), [`Encoding::Cbor`] or [`Encoding::Json`].
    pub fn with_encoding(mut self, encoding: Encoding) -> Client {
        self.encoding = encoding;
        self
    }

    /// The server's URL, as normalized by [`Client::new`].
    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The VM with this key, booted on first use (`client.vm.getOrCreate([key])` in rivetkit).
    /// Nothing is sent until a method is called. A `,` separates key components as in the
    /// rivetkit client's query form (`"a,b"` is the key `["a", "b"]`).
    pub fn vm(&self, key: &str) -> VmHandle {
        VmHandle::new(self.clone(), key)
    }

    /// The VMs the server knows (running or asleep), `GET /actors?name=vm`.
    pub async fn list_vms(&self) -> Result<Vec<ActorInfo>> {
        let url = format!("{}/actors?name={ACTOR_NAME}", self.base()?);
        let (status, body) = self.send(self.http.get(&url)).await?;
        if !status.is_success() {
            return Err(error_response(status, &body));
        }
        #[derive(Deserialize)]
        struct Actors {
            actors: Vec<ActorInfo>,
        }
        let actors: Actors = serde_json::from_slice(&body)
            .map_err(|e| Error::Protocol(format!("GET /actors: unexpected answer: {e}")))?;
        Ok(actors.actors)
    }

    /// Checks that a server answers (`GET /health`).
    pub async fn health(&self) -> Result<()> {
        let url = format!("{}/health", self.base()?);
        let (status, body) = self.send(self.http.get(&url)).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_response(status, &body))
        }
    }

    /// The URL, checked to be one this client can talk to.
    pub(crate) fn base(&self) -> Result<&str> {
        if self.url.starts_with("http://") {
            Ok(&self.url)
        } else {
            Err(Error::Http(format!("unsupported server URL `{}`: this client speaks plain http:// only", self.url)))
        }
    }

    /// The `rvt-*` query addressing the VM `key` (token included when `with_token`).
    pub(crate) fn gateway_query(&self, key: &str, with_token: bool) -> String {
        let mut query = String::from("rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default");
        if !key.is_empty() {
            query.push_str("&rvt-key=");
            query.push_str(&encode_component(key));
        }
        query.push_str("&rvt-crash-policy=sleep");
        if let (true, Some(token)) = (with_token, &self.token) {
            query.push_str("&rvt-token=");
            query.push_str(&encode_component(token));
        }
        query
    }

    /// A stateless action on the VM `key`: `POST /gateway/vm/action/{name}?rvt-...`.
    pub(crate) async fn action(&self, key: &str, name: &str, args: &[Value]) -> Result<Value> {
        let url = format!(
            "{}/gateway/{ACTOR_NAME}/action/{}?{}",
            self.base()?,
            encode_component(name),
            self.gateway_query(key, false)
        );
        let body = encode_action_request(self.encoding, BARE_VERSION, args);
        let request = self
            .http
            .post(&url)
            .header("x-rivet-encoding", self.encoding.as_str())
            .header(CONTENT_TYPE, HeaderValue::from_static(self.encoding.content_type()))
            .body(body);
        let (status, body) = self.send(request).await?;
        if !status.is_success() {
            return Err(error_response(status, &body));
        }
        decode_action_response(self.encoding, &body)
            .map(|(_, output)| output)
            .map_err(|e| Error::Protocol(format!("{name}: cannot decode the response: {e}")))
    }

    /// Sends a request (with the token) and reads the whole answer.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<(StatusCode, Vec<u8>)> {
        if let Some(token) = &self.token {
            request = request.header("x-rivet-token", token);
        }
        let mut response = request.send().await.map_err(|e| self.request_error(e))?;
        let status = response.status();
        // One buffer of the announced size, filled as chunks arrive: an answer (an `exec`'s
        // output) can be hundreds of MiB, and gathering it in a growing buffer, then copying it
        // out, would copy it twice more. The size is trusted up to a bound only.
        let announced = response.content_length().unwrap_or(0).min(PREALLOCATED_BODY_BYTES);
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(e))? {
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    fn request_error(&self, error: reqwest::Error) -> Error {
        if error.is_connect() {
            Error::NoServer { url: self.url.clone(), source: Box::new(error) }
        } else {
            Error::Http(format!("request to {} failed: {}", self.url, chain(&error)))
        }
    }
}

/// A non-2xx answer: the server's JSON error, or what the answer said if it is not one.
pub(crate) fn error_response(status: StatusCode, body: &[u8]) -> Error {
    match decode_http_error_json(body) {
        Ok(error) => error.into(),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let text: String = text.chars().take(500).collect();
            if text.is_empty() {
                Error::Http(format!("the server answered {status}"))
            } else {
                Error::Http(format!("the server answered {status}: {text}"))
            }
        }
    }
}

pub(crate) fn encode_component(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A VM as `GET /actors` describes it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ActorInfo {
    /// The actor id (derived from namespace, name and key; changes when the VM is destroyed and
    /// created again).
    pub actor_id: String,
    /// The actor name: `vm`.
    pub name: String,
    /// The key, in the form [`Client::vm`] takes: components joined with `,`.
    #[serde(deserialize_with = "rest_key")]
    pub key: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub create_ts: u64,
}

/// Reads the REST form of a key (components joined with `/`, `\` escaping `\` and `/`, `\0` an
/// empty component, `/` the empty key) into components joined with `,`.
fn rest_key<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<String, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(agentvm_protocol::keys::from_rest(&text).join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized() {
        assert_eq!(Client::new("http://h:1/").url(), "http://h:1");
        assert_eq!(Client::new("127.0.0.1:6420").url(), "http://127.0.0.1:6420");
        assert!(Client::new("https://h").base().is_err());
    }

    #[test]
    fn gateway_query_encodes_key_and_token() {
        let client = Client::new("http://h").with_token("t&k");
        assert_eq!(
            client.gateway_query("a/b c", true),
            "rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=a%2Fb%20c&rvt-crash-policy=sleep&rvt-token=t%26k"
        );
        assert!(!client.gateway_query("", false).contains("rvt-key"));
    }

    #[test]
    fn rest_keys() {
        use agentvm_protocol::keys::from_rest as key_from_rest;
        assert_eq!(key_from_rest("my-agent"), ["my-agent"]);
        assert_eq!(key_from_rest("a\\/b/c"), ["a/b", "c"]);
        assert!(key_from_rest("/").is_empty());
        assert_eq!(key_from_rest("\\0"), [""]);
        assert_eq!(key_from_rest("x\\\\y/\\0"), ["x\\y", ""]);
    }

    #[test]
    fn error_answers() {
        let e = error_response(
            StatusCode::NOT_FOUND,
            br#"{"group":"vm","code":"process_not_found","message":"Process not found: 4"}"#,
        );
        assert!(matches!(&e, Error::Api { code, .. } if code == "process_not_found"));
        assert_eq!(e.to_string(), "Process not found: 4");
        let e = error_response(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "the server answered 502 Bad Gateway: <html>bad gateway</html>");
    }
}
