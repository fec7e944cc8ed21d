//! [`Connection`]: a WebSocket to one VM, for events and actions, that reconnects by itself.
//!
//! A background task owns the socket. The handle talks to it through a command channel and
//! receives events through an unbounded channel, so a slow reader never stalls action answers
//! (which share the socket with events).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentvm_protocol::{
    decode_to_client, decode_to_client_shared, encode_to_server, Encoding, Frame, ToClient, ToServer, Value,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use crate::client::{BARE_VERSION, CONNECT_TIMEOUT};
use crate::error::{chain, Error, Result};
use crate::vm::VmHandle;

/// First delay before reconnecting; doubles up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(250);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// How long the WebSocket handshake and the server's `Init` may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// A ping goes out after this long without any frame from the server...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// ...and the socket counts as dead after this long without any.
const DEAD_AFTER: Duration = Duration::from_secs(45);
/// How long `subscribe` waits for the server to confirm it read the subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message accepted from the server (outputs can be large: `exec` captures up to
/// 256 MiB per stream).
const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// The name of the event a [`Connection`] reports after it reconnected.
pub const RECONNECTED: &str = "reconnected";

/// An event from the VM: `processOutput`, `processExit`, `shellData`, `shellExit`, `vmBooted`,
/// `vmShutdown`, or [`RECONNECTED`] from the connection itself.
///
/// Payloads are objects, with bytes as [`Value::Bytes`]:
///
/// | Event | Payload |
/// |---|---|
/// | `processOutput` | `{pid, stream: "stdout" \| "stderr", data: bytes}` |
/// | `processExit` | `{pid, exitCode}` |
/// | `shellData` | `{shellId, data: bytes}` |
/// | `shellExit` | `{shellId, exitCode}` |
/// | `vmBooted` | `{}` |
/// | `vmShutdown` | `{reason: "sleep" \| "destroy" \| "error"}` |
/// | `reconnected` | `{actorId, connectionId}` of the new socket; events sent while the connection was down are lost (the VM's log has them: [`VmHandle::get_vm_events`]) |
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    /// The event's first argument (the server sends one).
    pub payload: Value,
}

/// A live WebSocket connection to one VM, from [`VmHandle::connect`].
///
/// Events arrive only after [`subscribe`](Connection::subscribe) and are read in order with
/// [`next_event`](Connection::next_event); they queue up in memory until read, so unsubscribe
/// from what you stop reading. Actions over the connection ([`action`](Connection::action)) run
/// concurrently on the server and are matched to their answers by id.
///
/// Reconnects by itself (250 ms, doubling to 5 s) when the socket drops, resubscribes to every
/// subscribed event, and reports a gap as Event name "reconnected". Actions in flight when the
/// socket dropped fail with [`Error::Closed`] (they may have run); actions called while it is
/// down wait for the next socket. Dropping the handle, or [`close`](Connection::close), ends it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> agentvm_client::Result<()> {
/// # let _server = agentvm_client::testing::server();
/// use agentvm_client::{Client, Value};
///
/// let vm = Client::from_env().vm("events");
/// let mut conn = vm.connect().await?;
/// conn.subscribe("processOutput").await?;
/// conn.subscribe("processExit").await?;
///
/// let args = ["-c".to_string(), "echo out; echo err >&2; exit 3".to_string()];
/// let pid = vm.spawn("sh", &args, Default::default()).await?;
///
/// let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
/// let exit_code = loop {
///     let event = conn.next_event().await.expect("connection open");
///     if event.payload.get("pid").and_then(Value::as_i64) != Some(pid.into()) {
///         continue;
///     }
///     match (event.name.as_str(), event.payload.get("stream").and_then(Value::as_str)) {
///         ("processOutput", Some(stream)) => {
///             if let Some(Value::Bytes(data)) = event.payload.get("data") {
///                 if stream == "stdout" { stdout.extend_from_slice(data) } else { stderr.extend_from_slice(data) }
///             }
///         }
///         ("processExit", _) => break event.payload.get("exitCode").and_then(Value::as_i64),
///         _ => {}
///     }
/// };
/// assert_eq!((stdout.as_slice(), stderr.as_slice(), exit_code), (&b"out\n"[..], &b"err\n"[..], Some(3)));
///
/// // Actions work over the connection too.
/// let out = conn.action("exec", vec![Value::from("echo via socket")]).await?;
/// assert_eq!(out.get("stdout").and_then(Value::as_str), Some("via socket\n"));
/// conn.close().await;
/// # Ok(()) }
/// ```
pub struct Connection {
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("actor_id", &self.actor_id()).finish()
    }
}

struct Shared {
    actor_id: Mutex<String>,
}

enum Command {
    Action { name: String, args: Vec<Value>, reply: oneshot::Sender<Result<Value>> },
    Subscribe { event: String, subscribe: bool, done: oneshot::Sender<()> },
    Close,
}

impl Connection {
    pub(crate) async fn open(vm: &VmHandle) -> Result<Connection> {
        let target = Target::of(vm)?;
        let (socket, actor_id, _) = target.dial().await?;
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared { actor_id: Mutex::new(actor_id) });
        let driver = Driver {
            target,
            commands: commands_rx,
            events: events_tx,
            shared: Arc::clone(&shared),
            subscriptions: BTreeSet::new(),
            queued: Vec::new(),
        };
        let task = tokio::spawn(driver.run(socket));
        Ok(Connection { commands: commands_tx, events: events_rx, shared, task })
    }

    /// Starts receiving the events named `event`. Returns once the server applied the
    /// subscription, so events caused by any later call (over this connection or not) arrive.
    pub async fn subscribe(&self, event: &str) -> Result<()> {
        self.subscription(event, true).await
    }

    /// Stops receiving the events named `event` (some already on their way may still arrive).
    pub async fn unsubscribe(&self, event: &str) -> Result<()> {
        self.subscription(event, false).await
    }

    async fn subscription(&self, event: &str, subscribe: bool) -> Result<()> {
        let (done, applied) = oneshot::channel();
        self.commands
            .send(Command::Subscribe { event: event.to_owned(), subscribe, done })
            .map_err(|_| Error::Closed)?;
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, applied).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Closed),
            // Sent, but the server did not confirm in time; it stays subscribed either way.
            Err(_) => Ok(()),
        }
    }

    /// Next event, in order; None once the connection is closed for good.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// An action over the socket (responses matched by id).
    pub async fn action(&self, name: &str, args: Vec<Value>) -> Result<Value> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Action { name: name.to_owned(), args, reply }).map_err(|_| Error::Closed)?;
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// The id of the actor (VM) the current socket is connected to; it changes when the VM was
    /// destroyed and the connection reconnected to the new one.
    pub fn actor_id(&self) -> String {
        self.shared.actor_id.lock().map(|id| id.clone()).unwrap_or_default()
    }

    /// Closes the connection (pending actions fail with [`Error::Closed`]) and waits for the
    /// socket to be shut.
    pub async fn close(self) {
        let _ = self.commands.send(Command::Close);
        let _ = self.task.await;
    }
}

type Socket = WebSocketStream<TcpStream>;

/// Where and how to connect.
struct Target {
    /// The server URL, for errors.
    url: String,
    /// `host:port` to connect to.
    authority: (String, u16),
    /// `ws://.../gateway/vm/connect?rvt-...`.
    ws_url: String,
    encoding: Encoding,
}

impl Target {
    fn of(vm: &VmHandle) -> Result<Target> {
        let client = vm.client();
        let base = client.base()?;
        let parsed = reqwest::Url::parse(base).map_err(|e| Error::Http(format!("invalid server URL `{base}`: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| Error::Http(format!("invalid server URL `{base}`: no host")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = parsed.port_or_known_default().unwrap_or(80);
        let ws_url =
            format!("ws://{}/gateway/vm/connect?{}", &base["http://".len()..], client.gateway_query(vm.key(), true));
        Ok(Target { url: base.to_owned(), authority: (host, port), ws_url, encoding: client.encoding() })
    }

    /// Connects, completes the handshake and waits for `Init`: the socket, actor id and
    /// connection id.
    async fn dial(&self) -> Result<(Socket, String, String)> {
        let no_server =
            |source: Box<dyn std::error::Error + Send + Sync>| Error::NoServer { url: self.url.clone(), source };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(no_server(Box::new(e))),
            Err(_) => return Err(no_server("connecting timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(stream)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Http(format!("{}: the server did not accept the connection in time", self.url))),
        }
    }

    async fn handshake(&self, stream: TcpStream) -> Result<(Socket, String, String)> {
        let mut request = self
            .ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Http(format!("invalid server URL `{}`: {e}", self.url)))?;
        let protocols = format!("rivet, rivet_encoding.{}", self.encoding.as_str());
        let protocols = HeaderValue::from_str(&protocols).map_err(|e| Error::Http(e.to_string()))?;
        request.headers_mut().insert("sec-websocket-protocol", protocols);
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_MESSAGE_BYTES));
        let (mut socket, _) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    let status = response.status();
                    let body = response.body().as_deref().unwrap_or_default();
                    crate::client::error_response(status, body)
                }
                other => Error::Http(format!("connecting to {}: {}", self.url, chain(&other))),
            })?;
        loop {
            let message = match socket.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(Error::Http(format!("connecting to {}: {}", self.url, chain(&e)))),
                None => return Err(Error::Http(format!("{} closed the connection before accepting it", self.url))),
            };
            let payload = match message {
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(frame) => return Err(refusal(&self.url, frame)),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            match decode_to_client(self.encoding, &payload) {
                Ok((_, ToClient::Init { actor_id, connection_id })) => return Ok((socket, actor_id, connection_id)),
                Ok((_, ToClient::Error { error, .. })) => return Err(error.into()),
                Ok((_, other)) => return Err(Error::Protocol(format!("expected Init first, got {}", kind(&other)))),
                Err(e) => return Err(Error::Protocol(format!("decoding the server's first message: {e}"))),
            }
        }
    }
}

/// A close before `Init`: the server refused the connection, with `group.code` as the reason.
fn refusal(url: &str, frame: Option<CloseFrame>) -> Error {
    let reason = frame.as_ref().map(|f| f.reason.as_str()).unwrap_or_default();
    // The reason is `group.code`, optionally followed by `#rayId`.
    let code = reason.split('#').next().unwrap_or_default();
    match code.split_once('.') {
        Some((group, code)) if !group.is_empty() && !code.is_empty() && !code.contains(' ') => Error::Api {
            group: group.to_owned(),
            code: code.to_owned(),
            message: format!("the server refused the connection: {reason}"),
            metadata: None,
        },
        _ => Error::Http(format!("{url} closed the connection before accepting it ({reason:?})")),
    }
}

fn kind(message: &ToClient) -> &'static str {
    match message {
        ToClient::Init { .. } => "Init",
        ToClient::Error { .. } => "Error",
        ToClient::ActionResponse { .. } => "ActionResponse",
        ToClient::Event { .. } => "Event",
    }
}

/// Why serving a socket ended.
enum Ended {
    /// Closed on request: stop for good.
    Closed,
    /// The socket dropped: reconnect.
    Lost,
}

/// An action called while no socket was up: name, arguments and where its answer goes.
type QueuedAction = (String, Vec<Value>, oneshot::Sender<Result<Value>>);

/// The background task.
struct Driver {
    target: Target,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Shared>,
    subscriptions: BTreeSet<String>,
    /// Actions called while no socket was up, sent once one is.
    queued: Vec<QueuedAction>,
}

/// The state of one socket. A writer task owns its sending half, so reading never waits for a
/// write (the server may be waiting for us to read before it reads what we write).
struct Live {
    out: mpsc::UnboundedSender<Message>,
    next_id: u64,
    pending: HashMap<u64, oneshot::Sender<Result<Value>>>,
    /// Subscriptions waiting for the pong of the ping sent after them.
    barriers: VecDeque<(u64, oneshot::Sender<()>)>,
    next_ping: u64,
    last_frame: Instant,
}

type Reader = futures_util::stream::SplitStream<Socket>;

/// Writes what `out` receives until it closes or the socket fails.
async fn write_all(
    mut sink: futures_util::stream::SplitSink<Socket, Message>,
    mut out: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(message) = out.recv().await {
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            return;
        }
    }
}

impl Driver {
    async fn run(mut self, first: Socket) {
        let mut socket = first;
        loop {
            match self.serve(socket).await {
                Ended::Closed => return,
                Ended::Lost => {}
            }
            let Some((next, actor_id, connection_id)) = self.reconnect().await else { return };
            if let Ok(mut id) = self.shared.actor_id.lock() {
                id.clone_from(&actor_id);
            }
            let payload =
                Value::object([("actorId", Value::from(actor_id)), ("connectionId", Value::from(connection_id))]);
            let _ = self.events.send(Event { name: RECONNECTED.to_owned(), payload });
            socket = next;
        }
    }

    /// Serves one socket until it drops or the connection is closed.
    async fn serve(&mut self, socket: Socket) -> Ended {
        let (sink, mut reader) = socket.split();
        let (out, out_rx) = mpsc::unbounded_channel();
        let mut writer = tokio::spawn(write_all(sink, out_rx));
        let mut live = Live {
            out,
            next_id: 0,
            pending: HashMap::new(),
            barriers: VecDeque::new(),
            next_ping: 1,
            last_frame: Instant::now(),
        };
        let ended = self.serve_live(&mut live, &mut reader, &mut writer).await;
        // Whatever is still unanswered will not be: the server forgets a socket's actions with it.
        for (_, reply) in live.pending.drain() {
            let _ = reply.send(Err(Error::Closed));
        }
        // Subscriptions are remembered and sent again on the next socket.
        for (_, done) in live.barriers.drain(..) {
            let _ = done.send(());
        }
        match ended {
            Ended::Closed => {
                for (_, _, reply) in self.queued.drain(..) {
                    let _ = reply.send(Err(Error::Closed));
                }
                let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                let _ = live.out.send(Message::Close(Some(close)));
                drop(live);
                if tokio::time::timeout(Duration::from_secs(2), &mut writer).await.is_err() {
                    writer.abort();
                }
            }
            Ended::Lost => writer.abort(),
        }
        ended
    }

    async fn serve_live(&mut self, live: &mut Live, reader: &mut Reader, writer: &mut JoinHandle<()>) -> Ended {
        // As the rivetkit client does on open: subscriptions first, then queued actions.
        for event in self.subscriptions.clone() {
            self.send(live, &ToServer::SubscriptionRequest { event_name: event, subscribe: true });
        }
        for (name, args, reply) in std::mem::take(&mut self.queued) {
            self.send_action(live, name, args, reply);
        }
        let mut keepalive = tokio::time::interval(KEEPALIVE_INTERVAL);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        keepalive.reset();
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Close) => return Ended::Closed,
                    Some(Command::Action { name, args, reply }) => self.send_action(live, name, args, reply),
                    Some(Command::Subscribe { event, subscribe, done }) => {
                        if subscribe {
                            self.subscriptions.insert(event.clone());
                        } else {
                            self.subscriptions.remove(&event);
                        }
                        self.send(live, &ToServer::SubscriptionRequest { event_name: event, subscribe });
                        // The server reads frames in order: its pong to this ping means it
                        // applied the subscription.
                        let id = live.next_ping;
                        live.next_ping += 1;
                        live.barriers.push_back((id, done));
                        let _ = live.out.send(Message::Ping(id.to_be_bytes().to_vec().into()));
                    }
                },
                message = reader.next() => {
                    live.last_frame = Instant::now();
                    match message {
                        Some(Ok(Message::Binary(bytes))) => self.receive(live, &bytes),
                        Some(Ok(Message::Text(text))) => self.receive(live, &text.into()),
                        Some(Ok(Message::Pong(payload))) => {
                            if let Ok(bytes) = <[u8; 8]>::try_from(payload.as_ref()) {
                                let id = u64::from_be_bytes(bytes);
                                while live.barriers.front().is_some_and(|(waiting, _)| *waiting <= id) {
                                    if let Some((_, done)) = live.barriers.pop_front() {
                                        let _ = done.send(());
                                    }
                                }
                            }
                        }
                        Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Ended::Lost,
                    }
                }
                // The writer stops only when a write failed.
                _ = &mut *writer => return Ended::Lost,
                _ = keepalive.tick() => {
                    if live.last_frame.elapsed() >= DEAD_AFTER {
                        return Ended::Lost;
                    }
                    if live.last_frame.elapsed() >= KEEPALIVE_INTERVAL {
                        let _ = live.out.send(Message::Ping(Vec::new().into()));
                    }
                }
            }
        }
    }

    fn send_action(&mut self, live: &mut Live, name: String, args: Vec<Value>, reply: oneshot::Sender<Result<Value>>) {
        let id = live.next_id;
        live.next_id += 1;
        live.pending.insert(id, reply);
        self.send(live, &ToServer::ActionRequest { id, name, args });
    }

    /// Queues a message for the writer (a failed write ends the socket, and with it `serve_live`).
    fn send(&self, live: &Live, message: &ToServer) {
        let message = match encode_to_server(self.target.encoding, BARE_VERSION, message) {
            Frame::Text(text) => Message::Text(text.into()),
            Frame::Binary(bytes) => Message::Binary(bytes.into()),
        };
        let _ = live.out.send(message);
    }

    /// Handles one frame from the server. An event's bytes are slices of the frame, not copies.
    fn receive(&mut self, live: &mut Live, payload: &Bytes) {
        match decode_to_client_shared(self.target.encoding, payload) {
            Ok((_, ToClient::ActionResponse { id, output })) => {
                if let Some(reply) = live.pending.remove(&id) {
                    let _ = reply.send(Ok(output));
                }
            }
            Ok((_, ToClient::Error { error, action_id: Some(id) })) => {
                if let Some(reply) = live.pending.remove(&id) {
                    let _ = reply.send(Err(error.into()));
                }
            }
            // A connection-level error fails every action in flight; the socket stays open.
            Ok((_, ToClient::Error { error, action_id: None })) => {
                for (_, reply) in live.pending.drain() {
                    let _ = reply.send(Err(error.clone().into()));
                }
            }
            Ok((_, ToClient::Event { name, args })) => {
                let payload = args.into_iter().next().unwrap_or_default();
                let _ = self.events.send(Event { name, payload });
            }
            Ok((_, ToClient::Init { actor_id, .. })) => {
                if let Ok(mut id) = self.shared.actor_id.lock() {
                    *id = actor_id;
                }
            }
            // Which action the frame answered is unknown: fail them all rather than leave one
            // waiting forever.
            Err(e) => {
                for (_, reply) in live.pending.drain() {
                    let _ = reply.send(Err(Error::Protocol(format!("undecodable message from the server: {e}"))));
                }
            }
        }
    }

    /// Dials again with backoff until it works, handling commands meanwhile. `None` when the
    /// connection was closed, or the server refused it for good (a wrong token).
    async fn reconnect(&mut self) -> Option<(Socket, String, String)> {
        let mut delay = FIRST_RECONNECT_DELAY;
        loop {
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    _ = &mut wait => break,
                    command = self.commands.recv() => if !offline(&mut self.queued, &mut self.subscriptions, command) { return None },
                }
            }
            let result = {
                let attempt = self.target.dial();
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        result = &mut attempt => break result,
                        command = self.commands.recv() => if !offline(&mut self.queued, &mut self.subscriptions, command) { return None },
                    }
                }
            };
            match result {
                Ok(dialed) => return Some(dialed),
                Err(Error::Api { group, code, message, metadata }) if group == "auth" => {
                    for (_, _, reply) in self.queued.drain(..) {
                        let error = Error::Api {
                            group: group.clone(),
                            code: code.clone(),
                            message: message.clone(),
                            metadata: metadata.clone(),
                        };
                        let _ = reply.send(Err(error));
                    }
                    return None;
                }
                Err(_) => delay = (delay * 2).min(MAX_RECONNECT_DELAY),
            }
        }
    }
}

/// Handles a command while no socket is up; `false` to stop.
fn offline(queued: &mut Vec<QueuedAction>, subscriptions: &mut BTreeSet<String>, command: Option<Command>) -> bool {
    match command {
        None | Some(Command::Close) => {
            for (_, _, reply) in queued.drain(..) {
                let _ = reply.send(Err(Error::Closed));
            }
            false
        }
        Some(Command::Action { name, args, reply }) => {
            queued.push((name, args, reply));
            true
        }
        Some(Command::Subscribe { event, subscribe, done }) => {
            if subscribe {
                subscriptions.insert(event);
            } else {
                subscriptions.remove(&event);
            }
            let _ = done.send(());
            true
        }
    }
}
