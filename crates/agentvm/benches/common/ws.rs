//! A WebSocket `exec` for the benchmarks (each bench binary includes this file).

/// A client WebSocket connection to the server.
pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One `exec("echo hello")` over an open connection (bare encoding).
pub async fn ws_exec(socket: &mut Socket, id: u64) {
    use agentvm_protocol::{decode_to_client, encode_to_server, Encoding, ToClient, ToServer, Value};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let frame = encode_to_server(
        Encoding::Bare,
        4,
        &ToServer::ActionRequest { id, name: "exec".into(), args: vec![Value::from("echo hello")] },
    );
    socket.send(Message::Binary(frame.into_bytes().into())).await.unwrap();
    loop {
        if let Message::Binary(bytes) = socket.next().await.unwrap().unwrap() {
            if let ToClient::ActionResponse { id: got, output } = decode_to_client(Encoding::Bare, &bytes).unwrap().1 {
                assert_eq!((got, output.get("stdout").and_then(Value::as_str)), (id, Some("hello\n")));
                return;
            }
        }
    }
}
