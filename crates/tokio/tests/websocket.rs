//! The simple path (`connect`, `WebSocket`) over loopback: echo, every way it ends, its one
//! error type, reconnection and the bounds underneath. Every wait is bounded.

mod common;

use common::WAIT;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wxsocket_tokio::{
    Config, ConnectOptions, Error, ErrorKind, Message, ReconnectPolicy, SessionConfig, connect,
    connect_with,
};

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

/// A server that, per accepted connection `i`, sends `script(i)`'s messages and then
/// closes with its frame (or drops TCP with `None`).
/// What the scripted server does on a connection: the messages it sends, then its close
/// frame (or `None`: it drops TCP).
type Script = (Vec<&'static str>, Option<(u16, &'static str)>);

async fn scripted(script: fn(usize) -> Script) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        for i in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = common::accept(tcp).await else {
                continue;
            };
            let (messages, close) = script(i);
            for m in messages {
                let _ = ws.send(WsMessage::text(m)).await;
            }
            match close {
                Some((code, reason)) => {
                    let _ = ws
                        .close(Some(CloseFrame {
                            code: CloseCode::from(code),
                            reason: reason.into(),
                        }))
                        .await;
                    while let Some(Ok(_)) = ws.next().await {}
                }
                None => drop(ws),
            }
        }
    });
    (url, task)
}

#[tokio::test]
async fn the_echo_client() {
    let server = wxsocket_test_server::EchoServer::start().unwrap();
    let mut ws = within(connect(server.url().as_str())).await.unwrap();
    for text in ["one", "two", "three"] {
        ws.send(text).await.unwrap();
        let echo = within(ws.next()).await.unwrap();
        assert_eq!(echo.as_text(), Some(text));
    }
    let closed = within(ws.close()).await.unwrap();
    assert_eq!((closed.code, closed.clean), (1000, true));
}

#[tokio::test]
async fn a_socket_that_never_opens_is_a_connection_error() {
    // The local port of a connected client socket, held for the test: nothing listens on
    // it, so the dial is refused, and no other test can bind it meanwhile (a port bound and
    // released could be taken by a listener of a test running alongside).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let err = within(connect(format!("ws://127.0.0.1:{port}/")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.to_string().starts_with("connection failed"), "{err}");
}

#[tokio::test]
async fn invalid_options_fail_before_any_io() {
    let err = within(connect("ftp://example.com/")).await.unwrap_err();
    assert!(matches!(err, Error::Options(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let options = ConnectOptions::new("ws://127.0.0.1:1/").header("Host", "x");
    let err = within(connect(&options)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

#[tokio::test]
async fn the_peer_closing_ends_the_stream_after_the_messages_it_sent() {
    let (url, _server) = scripted(|_| (vec!["a", "b", "c"], Some((4001, "bye")))).await;
    let mut ws = within(connect(url.as_str())).await.unwrap();
    let got: Vec<String> = within(ws.by_ref().map(|m| m.to_string()).collect()).await;
    assert_eq!(got, ["a", "b", "c"]);
    let closed = ws.closed().unwrap();
    assert_eq!((closed.code, closed.reason.as_str()), (4001, "bye"));
    assert!(ws.error().is_none());
    let err = ws.send("late").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err:?}");
    // Closing a closed socket reports how it closed.
    let closed = within(ws.close()).await.unwrap();
    assert_eq!(closed.code, 4001);
}

#[tokio::test]
async fn a_dropped_connection_reports_its_error() {
    let (url, _server) = scripted(|_| (vec!["only"], None)).await;
    let mut ws = within(connect(url.as_str())).await.unwrap();
    assert_eq!(within(ws.next()).await.unwrap().as_text(), Some("only"));
    assert!(within(ws.next()).await.is_none());
    assert_eq!(ws.closed().unwrap().code, 1006);
    assert!(ws.error().is_some());
}

#[tokio::test]
async fn with_a_reconnect_policy_the_stream_goes_on_across_a_drop() {
    let (url, _server) = scripted(|i| match i {
        0 => (vec!["first"], None),
        _ => (vec!["second"], Some((1000, "done"))),
    })
    .await;
    let policy =
        ReconnectPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(50));
    let config = Config::default().session(SessionConfig::default().reconnect(policy));
    let mut ws = within(connect_with(config, url.as_str())).await.unwrap();
    let got: Vec<String> = within(ws.by_ref().map(|m| m.to_string()).collect()).await;
    assert_eq!(got, ["first", "second"]);
    assert_eq!(ws.closed().unwrap().code, 1000);
}

#[tokio::test]
async fn dropping_the_connect_future_cancels_the_dial() {
    use tokio::io::AsyncReadExt;
    // A server that accepts, never answers the handshake, and reports when the client
    // lets go of the socket.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (accepted_tx, accepted) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let _ = accepted_tx.send(());
        let mut buf = [0u8; 4096];
        while tcp.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let dial = tokio::spawn(connect(url));
    within(accepted).await.unwrap();
    dial.abort();
    // The dial's socket is closed: the server reads the end of the stream.
    within(server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_and_the_stream_carry_many_messages_in_order() {
    let server = wxsocket_test_server::EchoServer::start().unwrap();
    let session = SessionConfig::default().receive_bounds(16, 1 << 20);
    let config = Config::default().session(session);
    let ws = within(connect_with(config, server.url().as_str()))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    let sending = tokio::spawn(async move {
        let mut all =
            futures_util::stream::iter((0..2000).map(|i| Ok(Message::text(i.to_string()))));
        sink.send_all(&mut all).await.unwrap();
        sink
    });
    for i in 0..2000 {
        let m = within(stream.next()).await.unwrap();
        assert_eq!(m.as_text(), Some(i.to_string().as_str()));
    }
    let sink = within(sending).await.unwrap();
    let ws = sink.reunite(stream).unwrap();
    assert_eq!(within(ws.close()).await.unwrap().code, 1000);
}

#[tokio::test]
async fn a_ping_is_answered_by_a_pong_with_its_payload() {
    let server = wxsocket_test_server::EchoServer::start().unwrap();
    let mut ws = within(connect(server.url().as_str())).await.unwrap();
    ws.ping("are you there").unwrap();
    ws.send("after").await.unwrap();
    // The pong came before the echo sent after it.
    assert_eq!(within(ws.next()).await.unwrap().as_text(), Some("after"));
    assert_eq!(ws.last_pong().map(|p| &p[..]), Some(&b"are you there"[..]));
    let err = ws.ping(vec![0u8; 126]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let (client, mut events) = ws.into_parts();
    client.ping("raw").unwrap();
    let pong = common::until(&mut events, |e| {
        matches!(e, wxsocket_tokio::Event::Pong { .. })
    })
    .await
    .pop()
    .unwrap();
    assert_eq!(pong.to_string(), format!("#{} pong (3 bytes)", pong.conn()));
}

/// A server restart as a reconnect policy sees it: the first connection closes cleanly with
/// 1012, the second's handshake waits until told. Between them a ping is "not open yet" (a
/// connection error, not "closed"); after them the socket says a reconnection happened
/// (although no error did) and what the new connection's server answered.
#[tokio::test]
async fn a_reconnection_after_a_clean_close_is_counted_and_its_handshake_seen() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (go, proceed) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let request = common::read_request(&mut tcp).await.unwrap();
        let protocol = [("Sec-WebSocket-Protocol", "chat".to_owned())];
        let mut first = common::answer(tcp, &request, &protocol).await.unwrap();
        first.send(WsMessage::text("first")).await.unwrap();
        let restart = CloseFrame {
            code: CloseCode::Restart,
            reason: "restarting".into(),
        };
        first.close(Some(restart)).await.unwrap();
        while let Some(Ok(_)) = first.next().await {}
        let (mut tcp, _) = listener.accept().await.unwrap();
        let request = common::read_request(&mut tcp).await.unwrap();
        proceed.await.unwrap();
        let protocol = [("Sec-WebSocket-Protocol", "chat2".to_owned())];
        let mut second = common::answer(tcp, &request, &protocol).await.unwrap();
        second.send(WsMessage::text("second")).await.unwrap();
        while let Some(Ok(_)) = second.next().await {}
    });
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(1), Duration::from_millis(10))
        .max_attempts(Some(3));
    let config = Config::default().session(SessionConfig::default().reconnect(policy));
    let options = ConnectOptions::new(url).protocol("chat").protocol("chat2");
    let mut ws = within(connect_with(config, options)).await.unwrap();
    assert_eq!(ws.handshake().protocol.as_deref(), Some("chat"));
    assert_eq!(ws.reconnections(), 0);
    assert_eq!(within(ws.next()).await.unwrap().as_text(), Some("first"));
    // The second dial waits for its handshake: the socket is connecting again.
    within(async {
        while ws.client().state() != wxsocket_tokio::ReadyState::Connecting {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let refused = ws.ping("still there?").unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Connection, "{refused}");
    assert!(refused.to_string().contains("not open yet"), "{refused}");
    go.send(()).unwrap();
    assert_eq!(within(ws.next()).await.unwrap().as_text(), Some("second"));
    assert_eq!(ws.reconnections(), 1);
    assert_eq!(ws.error(), None, "a clean close is no error");
    assert_eq!(ws.handshake().protocol.as_deref(), Some("chat2"));
    ws.ping("now?").unwrap();
    let closed = within(ws.close()).await.unwrap();
    assert_eq!((closed.code, closed.clean), (1000, true));
    within(server).await.unwrap();
}
