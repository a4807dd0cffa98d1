//! The tokio adapter over real loopback sockets: the smoke set and what is specific to it.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wxsocket_tokio::{
    Client, CloseBeforeOpen, Config, ConnectError, ConnectOptions, ConnectionError, DeflateOptions,
    Event, FailedSend, Message, ReadyState, SendError, SendFailed, SendFailure, SessionConfig,
    StartError, TaskPool,
};

fn echo() -> Behaviour {
    Behaviour {
        echo: true,
        ..Behaviour::default()
    }
}

#[tokio::test]
async fn echoes_text_and_binary() {
    let server = Server::start(echo()).await;
    let (client, mut events) = Client::new(Config::default()).unwrap();
    assert_eq!(client.state(), ReadyState::Idle);
    let conn = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    assert!(matches!(next(&mut events).await, Event::Connecting { conn: c, .. } if c == conn));
    until_open(&mut events).await;
    assert_eq!(client.state(), ReadyState::Open);
    assert_eq!(client.current(), Some(conn));

    client.try_send("héllo").unwrap();
    client.try_send(vec![0u8, 1, 2, 255]).unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Event::Message {
            conn: c, message, ..
        } = next(&mut events).await
        {
            assert_eq!(c, conn);
            got.push(message);
        }
    }
    assert_eq!(
        got,
        [
            Message::text("héllo"),
            Message::binary(vec![0u8, 1, 2, 255])
        ]
    );

    client.close(None, "bye").unwrap();
    assert_eq!(
        until_close(&mut events).await,
        Event::close(conn, 1000, "bye", true)
    );
    assert_eq!(client.state(), ReadyState::Closed);
}

/// Messages sent while connecting go out in order, right after the handshake, in one
/// write: the server's first read after its 101 answer holds every frame.
#[tokio::test]
async fn queued_messages_are_flushed_in_order_in_one_write() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client
        .connect(&ConnectOptions::new(&url).tcp_no_delay(true))
        .unwrap();
    let ids: Vec<_> = (0..20)
        .map(|i| client.try_send(format!("queued {i}")).unwrap())
        .collect();
    assert!(client.buffered_amount() > 0);

    let (mut tcp, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    raw_accept(&mut tcp).await;
    let mut buf = vec![0u8; 64 * 1024];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    // Parse the masked frames of that single read.
    let mut texts = Vec::new();
    let mut at = 0;
    while at < n {
        assert_eq!(buf[at], 0x81, "a final text frame");
        let len = (buf[at + 1] & 0x7f) as usize;
        assert!(buf[at + 1] & 0x80 != 0 && len < 126);
        let mask = [buf[at + 2], buf[at + 3], buf[at + 4], buf[at + 5]];
        let payload: Vec<u8> = buf[at + 6..at + 6 + len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        texts.push(String::from_utf8(payload).unwrap());
        at += 6 + len;
    }
    let expected: Vec<String> = (0..20).map(|i| format!("queued {i}")).collect();
    assert_eq!(
        texts, expected,
        "all queued frames in the first read, in order"
    );

    // And each send is confirmed, in order, after the open event.
    let seen = until(
        &mut events,
        |e| matches!(e, Event::SendCompleted { id, .. } if *id == ids[19]),
    )
    .await;
    let completed: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(completed, ids);
    let open_at = seen
        .iter()
        .position(|e| matches!(e, Event::Open { .. }))
        .unwrap();
    let first_done = seen
        .iter()
        .position(|e| matches!(e, Event::SendCompleted { .. }))
        .unwrap();
    assert!(open_at < first_done);
    assert_eq!(client.buffered_amount(), 0);
}

/// A server that sends its first frames in the same write as the 101 answer: they are
/// read from the handshake's leftover bytes, then reading goes on from the socket.
#[tokio::test]
async fn frames_in_the_same_packet_as_the_handshake_answer_are_delivered() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw_accept_then(&mut tcp, b"\x81\x05early\x82\x02\x01\x02").await;
        tcp.write_all(b"\x81\x05later").await.unwrap();
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    });
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Event::Message { message, .. } = next(&mut events).await {
            got.push(message);
        }
    }
    assert_eq!(
        got,
        [
            Message::text("early"),
            Message::binary(vec![1u8, 2]),
            Message::text("later")
        ]
    );
    server.abort();
}

#[tokio::test]
async fn awaitable_send_resolves_when_written_and_reports_refusals() {
    let server = Server::start(echo()).await;
    let (client, mut events) = Client::new(Config::default()).unwrap();

    let refused = client.send("too early").await.unwrap_err();
    assert!(matches!(
        refused,
        SendFailed::Refused(SendError::NotConnected(_))
    ));

    client.connect(&ConnectOptions::new(&server.url)).unwrap();
    // Accepted while connecting; resolves once written after the open.
    let id = tokio::time::timeout(WAIT, client.send("queued, awaited"))
        .await
        .unwrap()
        .unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::SendCompleted { .. })).await;
    assert!(matches!(seen.last(), Some(Event::SendCompleted { id: done, .. }) if *done == id));
    let id2 = tokio::time::timeout(WAIT, client.send(Message::binary(vec![7; 100_000])))
        .await
        .unwrap()
        .unwrap();
    assert!(id2 > id);
    client.close(None, "").unwrap();
    let refused = client.send("after close").await.unwrap_err();
    assert!(matches!(
        refused,
        SendFailed::Refused(SendError::Closing(_))
    ));
}

#[tokio::test]
async fn awaitable_send_fails_when_closed_before_open() {
    let (url, _silent) = silent_server().await;
    let config = Config::default()
        .session(SessionConfig::default().close_before_open(CloseBeforeOpen::Abort));
    let (client, mut events) = Client::new(config).unwrap();
    let conn = client.connect(&ConnectOptions::new(&url)).unwrap();
    let pending = {
        let client = client.clone();
        tokio::spawn(async move { client.send("never written").await })
    };
    // Wait until the send is queued, then close before open.
    tokio::time::timeout(WAIT, async {
        while client.buffered_amount() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the send was queued");
    client.close(None, "").unwrap();
    let result = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    let mut seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    let close = seen.pop().unwrap();
    assert!(matches!(close, Event::Close { conn: c, code: 1006, clean: false, .. } if c == conn));
    // The queued message is handed back to whoever waited for it, with the id of its
    // `SendFailed` event.
    let id = seen
        .iter()
        .find_map(|e| match e {
            Event::SendFailed { id, .. } => Some(*id),
            _ => None,
        })
        .expect("the send's failure event");
    assert_eq!(
        result.unwrap_err(),
        SendFailed::Failed(
            FailedSend::new(SendFailure::Cancelled, Some(Message::text("never written")))
                .with_id(id)
        )
    );
}

/// A new connect while open: the old connection's close event comes before anything of
/// the new one, and the old transport gets a close frame (1000) in the background.
#[tokio::test]
async fn replacement_while_open_closes_the_old_connection_first() {
    let mut server = Server::start(echo()).await;
    let (client, mut events) = Client::new(Config::default()).unwrap();
    let first = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    until_open(&mut events).await;
    let second = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    assert!(second > first);
    let seen = until(&mut events, |e| matches!(e, Event::Open { .. })).await;
    let conns: Vec<_> = seen.iter().map(Event::conn).collect();
    let first_new = conns.iter().position(|c| *c == second).unwrap();
    assert!(conns[first_new..].iter().all(|c| *c == second), "{seen:?}");
    assert!(matches!(
        &seen[0],
        Event::Close { conn, code: 1000, clean: false, reason , .. } if *conn == first && reason == wxsocket_core::REPLACED_REASON
    ));
    // The server sees the old connection closed with a close frame.
    let frame = server.next_close().await.expect("close frame with a code");
    assert_eq!(u16::from(frame.code), 1000);
    // The new one works.
    client.try_send("on the new one").unwrap();
    let echoed = until(&mut events, |e| matches!(e, Event::Message { .. })).await;
    assert!(echoed.iter().all(|e| e.conn() == second));
}

#[tokio::test]
async fn handshake_timeout_against_a_server_that_never_answers() {
    let (url, _silent) = silent_server().await;
    let (client, mut events) = Client::new(Config::default()).unwrap();
    let started = Instant::now();
    let conn = client
        .connect(&ConnectOptions::new(&url).timeout(Duration::from_millis(300)))
        .unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Error { conn: c, error: ConnectionError::HandshakeTimeout { .. } , .. } if *c == conn
    )));
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
}

#[tokio::test]
async fn dropping_the_handle_sends_a_close_frame_and_ends_the_stream() {
    let mut server = Server::start(echo()).await;
    let (client, mut events) = Client::new(Config::default()).unwrap();
    let conn = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    until_open(&mut events).await;
    drop(client);
    let frame = server.next_close().await.expect("close frame with a code");
    assert_eq!(u16::from(frame.code), 1000);
    // The last events arrive, then the stream ends.
    let close = until_close(&mut events).await;
    assert!(matches!(close, Event::Close { conn: c, code: 1000, clean: true, .. } if c == conn));
    let end = tokio::time::timeout(WAIT, events.next()).await.unwrap();
    assert_eq!(end, None);
}

#[tokio::test]
async fn headers_and_protocols_reach_the_server_and_the_answer_is_reported() {
    let mut server = Server::start(Behaviour {
        echo: true,
        protocol: Some("chat.v2".into()),
    })
    .await;
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client
        .connect(
            &ConnectOptions::new(&server.url)
                .header("X-Token", "abc123")
                .protocol("chat.v1")
                .protocol("chat.v2")
                .data("room", "lobby 1"),
        )
        .unwrap();
    let Event::Open { handshake, .. } = until_open(&mut events).await else {
        unreachable!()
    };
    assert_eq!(handshake.protocol.as_deref(), Some("chat.v2"));
    assert_eq!(handshake.headers["x-server"], "wxsocket-test");
    let Seen::Connected(headers) = server.next().await else {
        panic!("expected the handshake first")
    };
    assert_eq!(headers["x-token"], "abc123");
    assert_eq!(headers["sec-websocket-protocol"], "chat.v1, chat.v2");
}

#[tokio::test]
async fn tcp_nodelay_is_set_only_when_asked() {
    let server = Server::start(echo()).await;
    for on in [true, false] {
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client
            .connect(&ConnectOptions::new(&server.url).tcp_no_delay(on))
            .unwrap();
        until_open(&mut events).await;
        let info = client.socket_info().expect("socket details once open");
        assert_eq!(info.nodelay, on);
        assert!(!info.tls);
        assert_eq!(
            info.peer_addr.to_string(),
            server.url["ws://".len()..server.url.len() - 3]
        );
    }
}

#[tokio::test]
async fn server_close_with_code_and_reason_and_abrupt_disconnect() {
    // A server that closes with 4001 "go away" after the first message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        let _ = ws.next().await;
        ws.send(WsMessage::Close(Some(CloseFrame {
            code: CloseCode::from(4001),
            reason: "go away".into(),
        })))
        .await
        .unwrap();
        while ws.next().await.is_some() {}
        drop(ws);
        // The second connection is dropped without a close handshake.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        let _ = ws.next().await;
        drop(ws);
    });
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    client.try_send("hi").unwrap();
    let close = until_close(&mut events).await;
    assert!(
        matches!(close, Event::Close { code: 4001, ref reason, clean: true, .. } if reason == "go away"),
        "{close:?}"
    );

    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    client.try_send("hi").unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(
        seen.iter().any(|e| matches!(e, Event::Error { .. })),
        "{seen:?}"
    );
    assert!(
        matches!(
            seen.last(),
            Some(Event::Close {
                code: 1006,
                clean: false,
                ..
            })
        ),
        "{seen:?}"
    );
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

/// A server that never answers the close frame: the close timeout ends it, unclean.
#[tokio::test]
async fn close_timeout_against_a_server_that_never_answers_the_close() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw_accept(&mut tcp).await;
        // Read and ignore everything, never answer.
        let mut buf = [0u8; 1024];
        while let Ok(Ok(n)) = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
            if n == 0 {
                break;
            }
        }
    });
    let config = Config::default()
        .session(SessionConfig::default().close_timeout(Duration::from_millis(300)));
    let (client, mut events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    let started = Instant::now();
    client.close(None, "").unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::CloseTimeout(_),
            ..
        }
    )));
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
    // The transport was dropped: the server's read ends.
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn keepalive_declares_a_silent_peer_dead() {
    // Answers the handshake, then reads nothing and sends nothing (no pong).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let _server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw_accept(&mut tcp).await;
        tokio::time::sleep(WAIT).await;
        drop(tcp);
    });
    let session =
        SessionConfig::default().keepalive(Duration::from_millis(100), Duration::from_millis(200));
    let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    let started = Instant::now();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::KeepaliveTimeout(_),
            ..
        }
    )));
    assert!(matches!(seen.last(), Some(Event::Close { code: 1006, .. })));
}

/// A server that answers every ping (tungstenite does) keeps a keepalive client open for
/// well beyond the pong timeout, and the pings really went out: the server counts them,
/// and they keep coming after the first timeout would have passed.
#[tokio::test]
async fn keepalive_pings_keep_a_live_peer_open() {
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let pings: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&pings);
    let _server = tokio::spawn(async move {
        use futures_util::StreamExt;
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        // Reading sends tungstenite's queued pong for each ping.
        while let Some(Ok(message)) = ws.next().await {
            if message.is_ping() {
                seen.lock().unwrap().push(Instant::now());
            }
        }
    });
    let interval = Duration::from_millis(100);
    let timeout = Duration::from_secs(1);
    let session = SessionConfig::default().keepalive(interval, timeout);
    let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    let opened = Instant::now();
    // Three pong timeouts: a client that sent no ping, or ignored the pongs, would be
    // declared dead (or silent) within this window.
    let watch = 3 * timeout;
    let quiet = tokio::time::timeout(watch, events.next()).await;
    assert!(
        quiet.is_err(),
        "no event while the peer answers pings: {quiet:?}"
    );
    assert_eq!(client.state(), ReadyState::Open);
    let pings = pings.lock().unwrap().clone();
    assert!(
        pings.len() >= 3,
        "{} pings in {watch:?} at a {interval:?} keepalive",
        pings.len()
    );
    // Pings still came after a whole pong timeout had passed: each answer kept it alive.
    let last = *pings.last().unwrap();
    assert!(
        last >= opened + timeout + interval,
        "last ping {:?} after open",
        last - opened
    );
}

#[tokio::test]
async fn refused_options_are_errors_before_any_io() {
    let (client, _events) = Client::new(Config::default()).unwrap();
    let err = client
        .connect(
            &ConnectOptions::new("ws://127.0.0.1:9/")
                .deflate(DeflateOptions::default().server_max_window_bits(Some(16))),
        )
        .unwrap_err();
    assert_eq!(
        err,
        ConnectError::InvalidDeflate {
            field: "server_max_window_bits",
            value: 16,
            allowed: "a window size from 8 to 15",
        }
    );
    let err = client
        .connect(&ConnectOptions::new("ftp://x/"))
        .unwrap_err();
    assert!(matches!(err, ConnectError::UnsupportedScheme { .. }));
    assert_eq!(client.state(), ReadyState::Idle);
}

#[tokio::test]
async fn connection_refused_is_an_error_event_and_close_1006() {
    // The local port of a connected client socket, held for the test: nothing listens on
    // it, so the dial is refused, and no other test can bind it meanwhile.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client
        .connect(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")))
        .unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::ConnectFailed(_),
            ..
        }
    )));
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
}

#[tokio::test]
async fn task_pool_holds_independent_connections_up_to_its_limit() {
    let server = Server::start(echo()).await;
    let config = Config::default().session(SessionConfig::default().pool_limit(2));
    let (pool, mut events) = TaskPool::new(config).unwrap();
    let a = pool.connect(&ConnectOptions::new(&server.url)).unwrap();
    let b = pool.connect(&ConnectOptions::new(&server.url)).unwrap();
    let err = pool.connect(&ConnectOptions::new(&server.url)).unwrap_err();
    assert_eq!(err, ConnectError::TooManyConnections { limit: 2 });
    let mut open = 0;
    while open < 2 {
        if let Event::Open { .. } = next(&mut events).await {
            open += 1;
        }
    }
    tokio::time::timeout(WAIT, a.send("from a"))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, b.send("from b"))
        .await
        .unwrap()
        .unwrap();
    let mut echoes = Vec::new();
    while echoes.len() < 2 {
        if let Event::Message { conn, message, .. } = next(&mut events).await {
            echoes.push((conn, message));
        }
    }
    echoes.sort_by_key(|(c, _)| *c);
    assert_eq!(
        echoes,
        [
            (a.id(), Message::text("from a")),
            (b.id(), Message::text("from b"))
        ]
    );
    a.close(Some(4000), "done with a").unwrap();
    let close = until_close(&mut events).await;
    assert!(matches!(close, Event::Close { conn, clean: true, .. } if conn == a.id()));
    assert_eq!(b.state(), ReadyState::Open);
    assert!(b.socket_info().is_some());
    // A slot is free again.
    let c = pool.connect(&ConnectOptions::new(&server.url)).unwrap();
    assert_ne!(c.id(), a.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_on_a_multi_thread_runtime_complete_in_order() {
    let n = 5_000;
    let server = Server::start(echo()).await;
    // Room for every completion: the sends are made before any event is taken, and the
    // connection task may write them all first (the bound itself is tested elsewhere).
    let session = SessionConfig::default().max_untaken_completions(n);
    let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
    client
        .connect(&ConnectOptions::new(&server.url).tcp_no_delay(true))
        .unwrap();
    until_open(&mut events).await;
    let ids: Vec<_> = (0..n)
        .map(|i| client.try_send(format!("m{i}")).unwrap())
        .collect();
    let mut completed = Vec::new();
    let mut echoed = Vec::new();
    while echoed.len() < n {
        match next(&mut events).await {
            Event::SendCompleted { id, .. } => completed.push(id),
            Event::Message { message, .. } => echoed.push(message),
            Event::Close { .. } => panic!("closed"),
            _ => {}
        }
    }
    let expected: Vec<_> = (0..n).map(|i| Message::text(format!("m{i}"))).collect();
    assert_eq!(echoed, expected);
    assert_eq!(completed, ids);
}

/// A client made on one runtime and used from another, whose first runtime is dropped
/// (as when a test builds a shared client on a runtime of its own): the driver and the
/// connection tasks are gone with that runtime, so the open connection ends as lost (an
/// error, then close 1006), a message in the queue fails, the event stream ends, and a
/// later send is refused at once. Before, `next` and `send` waited for ever.
#[tokio::test]
async fn a_client_whose_runtime_is_dropped_ends_its_connections_instead_of_hanging() {
    let server = Server::start(echo()).await;
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (client, mut events) = {
        let _on_other = other.enter();
        Client::new(Config::default()).unwrap()
    };
    let conn = client.connect(&ConnectOptions::new(&server.url)).unwrap();
    until_open(&mut events).await;
    client.send("before").await.unwrap();
    assert!(matches!(
        until(&mut events, |e| matches!(e, Event::Message { .. })).await.pop(),
        Some(Event::Message { message, .. }) if message == Message::text("before")
    ));

    tokio::task::spawn_blocking(move || drop(other))
        .await
        .unwrap();

    let ending = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    assert!(
        ending
            .iter()
            .any(|e| matches!(e, Event::Error { conn: c, .. } if *c == conn)),
        "an error says why the connection ended: {ending:#?}"
    );
    assert!(
        matches!(ending.last(), Some(Event::Close { conn: c, code: 1006, .. }) if *c == conn),
        "{ending:#?}"
    );
    let after = tokio::time::timeout(WAIT, client.send("after")).await;
    assert!(
        matches!(after, Ok(Err(SendFailed::Refused(_)))),
        "a send after the runtime is gone is refused at once: {after:?}"
    );
    assert_eq!(tokio::time::timeout(WAIT, events.next()).await, Ok(None));
    tokio::time::timeout(WAIT, client.shutdown())
        .await
        .expect("shutdown returns once the driver is gone");
}

/// A runtime without its time driver is refused by `Client::new`, naming the field and the
/// fix, before any IO (the driver task used to panic at its first timer, and every
/// connection then ended as "shut down").
#[test]
fn a_runtime_without_timers_is_refused_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let refused = runtime.block_on(async { Client::new(Config::default()) });
    let Err(StartError::Config(error)) = refused.map(|_| ()) else {
        panic!("expected the runtime refused as a configuration");
    };
    assert_eq!(error.field, "runtime");
    assert!(error.problem.contains("enable_time"), "{error}");
}

/// A runtime without its IO driver is refused by `Client::new` as one without timers is
/// (its dials used to fail as network errors, "IO is disabled", which a reconnect policy
/// retried for ever; before that the dial waited out its handshake timeout).
#[test]
fn a_runtime_without_io_is_refused_at_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let refused = runtime.block_on(async { Client::new(Config::default()) });
    let Err(StartError::Config(error)) = refused.map(|_| ()) else {
        panic!("expected the runtime refused as a configuration");
    };
    assert_eq!(error.field, "runtime");
    assert!(error.problem.contains("enable_io"), "{error}");
}

/// Tasks that retry a refused send in a loop (`Err(_) => continue`) still yield to the
/// runtime: `send` and the `Sink` take part in tokio's cooperative budget, as tokio's own
/// channels do, so dropping the runtime ends such tasks instead of waiting for them for
/// ever (a prober's program hung at exit, a worker spinning in a refused `send`; a reviewer
/// found the `Sink` path spinning after the first fix). Whether the runtime shut down.
fn a_runtime_with_tasks_retrying_refused_sends_shuts_down(sink: bool) -> bool {
    use futures_util::SinkExt;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let tries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        runtime.block_on(async {
            // Not connected: every send is refused at once.
            let (client, _events) = Client::new(Config::default()).unwrap();
            for _ in 0..2 {
                let mut client = client.clone();
                let tries = std::sync::Arc::clone(&tries);
                tokio::spawn(async move {
                    loop {
                        let refused = if sink {
                            SinkExt::send(&mut client, Message::text("spam"))
                                .await
                                .is_err()
                        } else {
                            client.send("spam").await.is_err()
                        };
                        if refused {
                            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
            while tries.load(std::sync::atomic::Ordering::Relaxed) < 1000 {
                tokio::task::yield_now().await;
            }
        });
        drop(runtime);
        let _ = done_tx.send(());
    });
    done_rx.recv_timeout(Duration::from_secs(10)).is_ok()
}

#[test]
fn a_loop_retrying_refused_sends_does_not_keep_the_runtime_from_shutting_down() {
    assert!(a_runtime_with_tasks_retrying_refused_sends_shuts_down(
        false
    ));
}

#[test]
fn a_loop_retrying_refused_sink_sends_does_not_keep_the_runtime_from_shutting_down() {
    assert!(a_runtime_with_tasks_retrying_refused_sends_shuts_down(true));
}
