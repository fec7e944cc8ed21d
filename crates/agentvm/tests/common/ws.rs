//! A raw WebSocket client of `agentvm serve` in the json encoding, for frame-level tests.
#![allow(dead_code, reason = "each test binary uses only some of these helpers")]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::server::TestServer;

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/gateway/vm/connect` for `key`; returns the socket and the subprotocol the server chose.
pub async fn open(server: &TestServer, key: &str, method: &str, encoding: &str) -> (Socket, Option<String>) {
    let ws_url = server.url.replacen("http://", "ws://", 1);
    let url = format!(
        "{ws_url}/gateway/vm/connect?rvt-namespace=default&rvt-method={method}&rvt-runner=default&rvt-key={key}&rvt-crash-policy=sleep"
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", format!("rivet,rivet_encoding.{encoding}").parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("websocket handshake");
    let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_string());
    (socket, protocol)
}

/// Opens a json connection, checks `Init`, and subscribes to `events`.
pub async fn connect(server: &TestServer, key: &str, events: &[&str]) -> Socket {
    let (mut ws, _) = open(server, key, "getOrCreate", "json").await;
    assert_eq!(next_json(&mut ws).await["body"]["tag"], "Init");
    for event in events {
        send_json(&mut ws, subscribe(event, true)).await;
    }
    ws
}

pub async fn next_json(socket: &mut Socket) -> Value {
    next_json_within(socket, Duration::from_secs(15)).await.expect("no frame in time")
}

pub async fn next_json_within(socket: &mut Socket, limit: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next()).await.ok()?;
        match message.expect("socket ended").expect("socket error") {
            Message::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Waits for the event `name`, skipping other frames; returns its payload.
pub async fn wait_event(socket: &mut Socket, name: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = next_json_within(socket, left).await.unwrap_or_else(|| panic!("no {name} event within {limit:?}"));
        if frame["body"]["tag"] == "Event" && frame["body"]["val"]["name"] == name {
            return frame["body"]["val"]["args"][0].clone();
        }
    }
}

pub async fn send_json(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.unwrap();
}

pub fn action(id: u64, name: &str, args: Value) -> Value {
    json!({"body": {"tag": "ActionRequest", "val": {"id": ["$BigInt", id.to_string()], "name": name, "args": args}}})
}

pub fn subscribe(event: &str, on: bool) -> Value {
    json!({"body": {"tag": "SubscriptionRequest", "val": {"eventName": event, "subscribe": on}}})
}

/// A json connection that keeps frames it skipped, so events that arrive before an action's
/// response are still there for the test to see.
pub struct Conn {
    pub ws: Socket,
    backlog: std::collections::VecDeque<Value>,
    next_id: u64,
}

impl Conn {
    pub async fn open(server: &TestServer, key: &str, events: &[&str]) -> Conn {
        Conn { ws: connect(server, key, events).await, backlog: Default::default(), next_id: 0 }
    }

    pub fn from_socket(ws: Socket) -> Conn {
        Conn { ws, backlog: Default::default(), next_id: 0 }
    }

    /// Calls an action and returns its output; panics on an error answer.
    pub async fn call(&mut self, name: &str, args: Value) -> Value {
        match self.try_call(name, args).await {
            Ok(output) => output,
            Err(error) => panic!("{name} failed: {error}"),
        }
    }

    /// Like [`Conn::try_call`], but `None` when the socket ends or fails first (the server went
    /// away) instead of panicking.
    pub async fn call_unless_closed(&mut self, name: &str, args: Value) -> Option<Result<Value, Value>> {
        let id = self.next_id;
        self.next_id += 1;
        let request = serde_json::to_string(&action(id, name, args)).unwrap();
        self.ws.send(Message::Text(request.into())).await.ok()?;
        let id_text = json!(id.to_string());
        loop {
            let message = tokio::time::timeout(Duration::from_secs(15), self.ws.next()).await.ok()??.ok()?;
            let Message::Text(text) = message else { continue };
            let frame: Value = serde_json::from_str(&text).unwrap();
            let val = &frame["body"]["val"];
            match frame["body"]["tag"].as_str() {
                Some("ActionResponse") if val["id"][1] == id_text => return Some(Ok(val["output"].clone())),
                Some("Error") if val["actionId"][1] == id_text => return Some(Err(val.clone())),
                _ => self.backlog.push_back(frame),
            }
        }
    }

    /// Calls an action; `Err` holds the error frame's body.
    pub async fn try_call(&mut self, name: &str, args: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        send_json(&mut self.ws, action(id, name, args)).await;
        loop {
            let frame = next_json(&mut self.ws).await;
            let val = &frame["body"]["val"];
            let id_text = json!(id.to_string());
            match frame["body"]["tag"].as_str() {
                Some("ActionResponse") if val["id"][1] == id_text => return Ok(val["output"].clone()),
                Some("Error") if val["actionId"][1] == id_text => return Err(val.clone()),
                _ => self.backlog.push_back(frame),
            }
        }
    }

    /// The frames that arrived while waiting for action answers, in order (and forgets them).
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }

    /// The payload of the next event `name` (from the backlog first).
    pub async fn event(&mut self, name: &str, limit: Duration) -> Value {
        let is = |f: &Value| f["body"]["tag"] == "Event" && f["body"]["val"]["name"] == name;
        if let Some(at) = self.backlog.iter().position(is) {
            let frame = self.backlog.remove(at).unwrap();
            return frame["body"]["val"]["args"][0].clone();
        }
        wait_event(&mut self.ws, name, limit).await
    }

    /// Asserts that no event `name` arrives within `period`.
    pub async fn no_event(&mut self, name: &str, period: Duration) {
        let is = |f: &Value| f["body"]["tag"] == "Event" && f["body"]["val"]["name"] == name;
        assert!(!self.backlog.iter().any(is), "unexpected {name}: {:?}", self.backlog);
        let deadline = tokio::time::Instant::now() + period;
        while let Some(frame) =
            next_json_within(&mut self.ws, deadline.saturating_duration_since(tokio::time::Instant::now())).await
        {
            assert!(!is(&frame), "unexpected {name}: {frame}");
            self.backlog.push_back(frame);
        }
    }
}
