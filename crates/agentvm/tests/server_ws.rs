//! `agentvm serve` WebSocket connections at the frame level: Init first, the `rivet`
//! subprotocol, subscriptions, action correlation, events only to subscribers, errors that keep
//! the connection open, and refusal of unknown actors.
mod common;

use std::time::Duration;

use common::server::TestServer;
use common::ws::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn json_connection_lifecycle() {
    let server = TestServer::start();
    let (mut ws, protocol) = open(&server, "ws-json", "getOrCreate", "json").await;
    assert_eq!(protocol.as_deref(), Some("rivet"), "the server must echo the rivet subprotocol");
    let init = next_json(&mut ws).await;
    assert_eq!(init["body"]["tag"], "Init");
    assert_eq!(init["body"]["val"]["actorId"].as_str().unwrap().len(), 30);
    assert!(init["body"]["val"]["connectionId"].as_str().is_some_and(|c| !c.is_empty()));

    send_json(&mut ws, subscribe("processOutput", true)).await;
    send_json(&mut ws, subscribe("processExit", true)).await;
    send_json(&mut ws, action(0, "spawn", json!(["sh", ["-c", "echo hi"]]))).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_json(&mut ws).await);
    }
    let response = seen.iter().find(|f| f["body"]["tag"] == "ActionResponse").expect("a response");
    assert_eq!(response["body"]["val"]["id"], json!(["$BigInt", "0"]));
    let pid = response["body"]["val"]["output"]["pid"].as_i64().unwrap();
    let output = seen.iter().find(|f| f["body"]["val"]["name"] == "processOutput").expect("output event");
    assert_eq!(
        output["body"]["val"]["args"],
        json!([{"pid": pid, "stream": "stdout", "data": ["$Uint8Array", "aGkK"]}])
    );
    let exit = seen.iter().find(|f| f["body"]["val"]["name"] == "processExit").expect("exit event");
    assert_eq!(exit["body"]["val"]["args"], json!([{"pid": pid, "exitCode": 0}]));

    // A malformed frame is a connection-level error; the connection keeps working.
    ws.send(Message::Text("{garbage".into())).await.unwrap();
    let error = next_json(&mut ws).await;
    assert_eq!(error["body"]["tag"], "Error");
    assert_eq!(error["body"]["val"]["actionId"], Value::Null);
    assert_eq!(error["body"]["val"]["group"], "message");

    // Unknown action: an Error answering that action id.
    send_json(&mut ws, action(1, "nosuch", json!([]))).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["body"]["val"]["actionId"], json!(["$BigInt", "1"]));
    assert_eq!(error["body"]["val"]["code"], "action_not_found");

    // Unsubscribed events are not sent: after unsubscribing, only the action response arrives.
    send_json(&mut ws, subscribe("processOutput", false)).await;
    send_json(&mut ws, subscribe("processExit", false)).await;
    send_json(&mut ws, action(2, "exec", json!(["true"]))).await;
    send_json(&mut ws, action(3, "spawn", json!(["echo", ["quiet"]]))).await;
    send_json(&mut ws, action(4, "exec", json!(["sleep 0.3; echo done"]))).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["body"]["tag"], "ActionResponse", "unexpected {frame}");
        ids.push(frame["body"]["val"]["id"][1].as_str().unwrap().to_string());
    }
    ids.sort();
    assert_eq!(ids, ["2", "3", "4"]);

    ws.send(Message::Close(None)).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("no close reply");
    assert!(matches!(end, Some(Ok(Message::Close(_))) | None), "{end:?}");
}

#[tokio::test]
async fn events_reach_every_connection_of_the_same_vm_only() {
    let server = TestServer::start();
    let (mut a, _) = open(&server, "ws-shared", "getOrCreate", "json").await;
    let (mut b, _) = open(&server, "ws-shared", "getOrCreate", "json").await;
    let (mut other, _) = open(&server, "ws-other", "getOrCreate", "json").await;
    for ws in [&mut a, &mut b, &mut other] {
        assert_eq!(next_json(ws).await["body"]["tag"], "Init");
        send_json(ws, subscribe("processOutput", true)).await;
        // A connection handles its messages in order: once an action sent after the
        // subscription is answered, the subscription is in place.
        send_json(ws, action(900, "listProcesses", json!([]))).await;
        loop {
            let frame = next_json(ws).await;
            if frame["body"]["tag"] == "ActionResponse" && frame["body"]["val"]["id"][1] == "900" {
                break;
            }
        }
    }
    send_json(&mut a, action(0, "spawn", json!(["echo", ["shared"]]))).await;
    for ws in [&mut a, &mut b] {
        loop {
            let frame = next_json(ws).await;
            if frame["body"]["val"]["name"] == "processOutput" {
                assert_eq!(frame["body"]["val"]["args"][0]["data"], json!(["$Uint8Array", "c2hhcmVkCg=="]));
                break;
            }
        }
    }
    let nothing = tokio::time::timeout(Duration::from_millis(700), other.next()).await;
    assert!(nothing.is_err(), "a connection of another VM got {nothing:?}");
}

#[tokio::test]
async fn bare_frames_are_binary_and_versioned() {
    let server = TestServer::start();
    let (mut ws, _) = open(&server, "ws-bare", "getOrCreate", "bare").await;
    let init = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => b,
        other => panic!("bare frames must be binary: {other:?}"),
    };
    assert_eq!(&init[..3], &[2, 0, 0], "Init as version 2, tag 0");
    // A client speaking version 3 gets version 3 back: Action id 0 `exec("echo hello")`.
    let request = hex("0300000004657865630c816a6563686f2068656c6c6f");
    ws.send(Message::Binary(request.into())).await.unwrap();
    let response = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(&response[..4], &[3, 0, 2, 0], "version 3, ActionResponse, id 0");
    // Garbage: an Error frame (tag 1), and the connection stays.
    ws.send(Message::Binary(vec![3, 0, 9, 9, 9].into())).await.unwrap();
    let error = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(error[2], 1, "Error tag");
    ws.send(Message::Binary(hex("0300000104657865630c816a6563686f2068656c6c6f").into())).await.unwrap();
    let response = match ws.next().await.unwrap().unwrap() {
        Message::Binary(b) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(&response[..4], &[3, 0, 2, 1], "still answering: id 1");
}

#[tokio::test]
async fn connecting_to_a_missing_actor_closes_with_the_reason() {
    let server = TestServer::start();
    let (mut ws, _) = open(&server, "ws-missing", "get", "json").await;
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1011);
            assert_eq!(frame.reason.as_str(), "actor.not_found");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
