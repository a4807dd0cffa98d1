//! Tests specific to the blocking adapter, over real loopback sockets. (The scenarios of
//! the session model for both adapters live in the workspace's `tests/` conformance suite.)

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;
use wxsocket_blocking::*;

fn client() -> (Client, Events) {
    Client::new(Config::default()).unwrap()
}

fn open(client: &Client, events: &Events, url: &str) -> ConnId {
    let conn = client
        .connect(&ConnectOptions::new(url).tcp_no_delay(true))
        .unwrap();
    let seen = until(events, |e| is_open(e) || is_close(e));
    assert!(is_open(seen.last().unwrap()), "did not open: {seen:?}");
    conn
}

fn message_of(e: Event) -> Message {
    match e {
        Event::Message { message, .. } => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn open_and_echo_text_and_binary() {
    let server = Server::start();
    let (client, events) = client();
    let conn = client
        .connect(
            &ConnectOptions::new(server.url())
                .protocol("chat")
                .header("X-Token", "t1")
                .data("k", "v"),
        )
        .unwrap();
    assert!(matches!(next(&events), Event::Connecting { conn: c, .. } if c == conn));
    match next(&events) {
        Event::Open {
            conn: c, handshake, ..
        } => {
            assert_eq!(c, conn);
            assert_eq!(handshake.protocol.as_deref(), Some("chat"));
        }
        other => panic!("expected open, got {other:?}"),
    }
    assert_eq!(client.state(), ReadyState::Open);
    assert_eq!(client.current(), Some(conn));
    let Saw::Request { path, headers } = server.next() else {
        panic!()
    };
    assert_eq!(path, "/echo?k=v");
    assert!(headers.contains(&("x-token".into(), "t1".into())));

    let a = client.try_send("héllo").unwrap();
    let b = client.try_send(vec![0u8, 1, 2, 255]).unwrap();
    let seen = until(
        &events,
        |e| matches!(e, Event::Message { message, .. } if !message.is_text()),
    );
    let completed: Vec<SendId> = seen
        .iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(
        completed,
        [a, b],
        "both sends complete, in order, before the second echo"
    );
    let messages: Vec<Message> = seen
        .into_iter()
        .filter(is_message)
        .map(message_of)
        .collect();
    assert_eq!(
        messages,
        [
            Message::text("héllo"),
            Message::binary(vec![0u8, 1, 2, 255])
        ]
    );
    assert_eq!(client.buffered_amount(), 0);

    client.close(Some(4000), "bye").unwrap();
    let seen = until(&events, is_close);
    assert!(
        matches!(seen.last(), Some(Event::Close { code: 4000, clean: true, reason, .. }) if reason == "bye"),
        "{seen:?}"
    );
    assert_eq!(
        server.until(|s| matches!(s, Saw::Close(_))),
        Saw::Close(Some((4000, "bye".into())))
    );
    assert_eq!(client.state(), ReadyState::Closed);
}

#[test]
fn queued_before_open_are_flushed_in_order() {
    // The listener accepts but does not answer the upgrade until every message is queued,
    // so the queue is known to be full when the handshake completes.
    let mut listener = Silent::start();
    let (client, events) = client();
    client
        .connect(&ConnectOptions::new(listener.url()))
        .unwrap();
    let stream = listener.accept();
    let ids: Vec<SendId> = (0..50)
        .map(|i| client.try_send(format!("m{i}")).unwrap())
        .collect();
    assert_eq!(client.state(), ReadyState::Connecting);
    assert_eq!(
        client.buffered_amount(),
        (0..50).map(|i| format!("m{i}").len()).sum::<usize>()
    );
    let server = Held::serve(stream);
    let seen = until(
        &events,
        |e| matches!(e, Event::Message { message, .. } if message.as_bytes() == b"m49"),
    );
    let completed: Vec<SendId> = seen
        .iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(completed, ids);
    let texts: Vec<String> = seen
        .into_iter()
        .filter(is_message)
        .map(|e| String::from_utf8(message_of(e).as_bytes().to_vec()).unwrap())
        .collect();
    assert_eq!(texts, (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    // The server got them in the same order.
    for i in 0..50 {
        let saw = server.until(|s| matches!(s, Saw::Message(_)));
        assert_eq!(saw, Saw::Message(WsMessage::text(format!("m{i}"))));
    }
}

#[test]
fn send_wait_waits_for_the_write_and_reports_refusals() {
    let server = Server::start();
    let (client, events) = client();
    // Not connected: refused, message handed back.
    match client.send("early") {
        Err(SendFailed::Refused(SendError::NotConnected(m))) => {
            assert_eq!(m, Message::text("early"))
        }
        other => panic!("{other:?}"),
    }
    open(&client, &events, &server.url());
    let id = client.send(vec![9u8; 100_000]).unwrap();
    // The completion was also delivered as an event, before the echo.
    let seen = until(&events, is_message);
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SendCompleted { id: i, .. } if *i == id))
    );
    assert_eq!(message_of(seen.into_iter().last().unwrap()).len(), 100_000);
    // From another thread, concurrently with this one.
    let other = client.clone();
    let t = std::thread::spawn(move || {
        (0..20)
            .map(|i| other.send(format!("t{i}")).unwrap())
            .collect::<Vec<_>>()
    });
    let ids = t.join().unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

/// The id of the one `SendFailed` among `events`.
fn failed_id(events: &[Event]) -> SendId {
    let mut ids = events.iter().filter_map(|e| match e {
        Event::SendFailed { id, .. } => Some(*id),
        _ => None,
    });
    let id = ids.next().expect("a SendFailed event");
    assert_eq!(ids.next(), None, "one SendFailed event");
    id
}

#[test]
fn send_wait_fails_when_the_connection_never_opens() {
    let mut silent = Silent::start();
    let (client, events) = client();
    client
        .connect(&ConnectOptions::new(silent.url()).timeout(Duration::from_millis(300)))
        .unwrap();
    let _held = silent.accept();
    let started = Instant::now();
    // The queued message is handed back to whoever waited for it, with the id of its
    // `SendFailed` event.
    let never = Some(Message::text("never"));
    let waited = client.send("never");
    assert!(started.elapsed() < WAIT);
    let id = failed_id(&until(&events, is_close));
    assert_eq!(
        waited,
        Err(SendFailed::Failed(
            FailedSend::new(SendFailure::ConnectFailed, never).with_id(id)
        ))
    );
}

/// Sends waiting for room when the client shuts down are refused for what holds then (the
/// session is shut down: not connected), never with the stale "queue full" (a user's probe
/// saw 13 of 15 waiting sends return `QueueFull`, whose `kind()` says "may succeed later").
#[test]
fn sends_waiting_for_room_are_refused_as_not_connected_at_shutdown() {
    let mut silent = Silent::start();
    let config = Config::new().session(SessionConfig::default().queue_bounds(2, 1 << 20));
    let (client, events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let _held = silent.accept();
    client.try_send("a").unwrap();
    client.try_send("b").unwrap();
    let waiters: Vec<_> = (0..24)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || client.send(format!("w{i}")))
        })
        .collect();
    // Every waiter has been refused for room and sleeps (the queue stays full).
    std::thread::sleep(Duration::from_millis(200));
    client.shutdown();
    for waiter in waiters {
        match waiter.join().unwrap() {
            Err(SendFailed::Refused(refused)) => {
                assert!(!refused.is_full(), "{refused}");
                assert!(refused.into_message().as_text().is_some());
            }
            other => panic!("{other:?}"),
        }
    }
    drop(events);
}

#[test]
fn send_wait_timeout_gives_up_on_a_held_handshake_and_the_completion_still_arrives() {
    let mut silent = Silent::start();
    let (client, events) = client();
    // Refused at once, as `send` would be: the message handed back, no waiting.
    match client.send_timeout("early", WAIT) {
        Ok(Err(SendFailed::Refused(SendError::NotConnected(m)))) => {
            assert_eq!(m, Message::text("early"))
        }
        other => panic!("{other:?}"),
    }
    let conn = client.connect(&ConnectOptions::new(silent.url())).unwrap();
    // The upgrade request arrives and is held unanswered: the send stays queued.
    let held = silent.accept();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let pending = match client.send_timeout("queued", timeout) {
        Err(pending) => pending,
        other => panic!("expected the send to stay pending, got {other:?}"),
    };
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < WAIT, "waited {waited:?}");
    assert_eq!(pending.timeout, timeout);
    let said = pending.to_string();
    assert!(
        said.contains("still pending") && said.contains(&pending.id.to_string()),
        "the error names the pending send: {said}"
    );
    assert_eq!(client.state(), ReadyState::Connecting);
    assert_eq!(client.buffered_amount(), "queued".len());

    // Now the handshake is answered: the queued message is written after all, and its
    // completion arrives as an event, once.
    let server = Held::serve(held);
    let seen = until(&events, |e| {
        matches!(e, Event::SendCompleted { .. } | Event::SendFailed { .. })
    });
    assert!(
        matches!(seen.last(), Some(Event::SendCompleted { conn: c, id , .. }) if *c == conn && *id == pending.id),
        "{seen:?}"
    );
    assert_eq!(
        server.until(|s| matches!(s, Saw::Message(_))),
        Saw::Message(WsMessage::text("queued"))
    );
    // A wait that is long enough returns the write.
    let id = client
        .send_timeout("in time", WAIT)
        .expect("written within the timeout")
        .expect("written");
    assert!(id > pending.id);
    let mut seen = seen;
    seen.extend(until(
        &events,
        |e| matches!(e, Event::Message { message, .. } if *message == Message::text("in time")),
    ));
    let completions_of_pending = seen
        .iter()
        .filter(|e| {
            matches!(e, Event::SendCompleted { id, .. } | Event::SendFailed { id, .. } if *id == pending.id)
        })
        .count();
    assert_eq!(completions_of_pending, 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::SendCompleted { id: i, .. } if *i == id))
    );
}

#[test]
fn a_pool_task_bounds_its_waiting_send_too() {
    let mut silent = Silent::start();
    let (pool, events) = TaskPool::new(Config::default()).unwrap();
    let task = pool.connect(&ConnectOptions::new(silent.url())).unwrap();
    let held = silent.accept();
    let timeout = Duration::from_millis(200);
    let started = Instant::now();
    let pending = match task.send_timeout("queued", timeout) {
        Err(pending) => pending,
        other => panic!("expected the send to stay pending, got {other:?}"),
    };
    let waited = started.elapsed();
    assert!(waited >= timeout && waited < WAIT, "waited {waited:?}");
    let server = Held::serve(held);
    let seen = until(&events, |e| {
        matches!(e, Event::SendCompleted { .. } | Event::SendFailed { .. })
    });
    assert!(
        matches!(seen.last(), Some(Event::SendCompleted { conn, id , .. }) if *conn == task.id() && *id == pending.id),
        "{seen:?}"
    );
    assert_eq!(
        server.until(|s| matches!(s, Saw::Message(_))),
        Saw::Message(WsMessage::text("queued"))
    );
    let id = task
        .send_timeout("in time", WAIT)
        .expect("written within the timeout")
        .expect("written");
    assert!(id > pending.id);
}

#[test]
fn send_wait_timeout_reports_a_failure_that_comes_in_time() {
    let mut silent = Silent::start();
    let (client, events) = client();
    client
        .connect(&ConnectOptions::new(silent.url()).timeout(Duration::from_millis(300)))
        .unwrap();
    let _held = silent.accept();
    let started = Instant::now();
    let never = Some(Message::text("never"));
    let waited = client.send_timeout("never", WAIT);
    assert!(started.elapsed() < WAIT);
    let id = failed_id(&until(&events, is_close));
    assert_eq!(
        waited,
        Ok(Err(SendFailed::Failed(
            FailedSend::new(SendFailure::ConnectFailed, never).with_id(id)
        )))
    );
}

#[test]
fn recv_variants_and_iterators() {
    let server = Server::start();
    let (client, events) = client();
    // Nothing yet.
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        events.recv_timeout(Duration::from_millis(20)),
        Err(RecvTimeoutError::Timeout)
    );
    open(&client, &events, &server.url());
    client.try_send("a").unwrap();
    client.try_send("b").unwrap();
    // Blocking iterator by reference: stops where we break.
    let mut texts = Vec::new();
    for event in &events {
        if let Event::Message { message, .. } = event {
            texts.push(message);
            if texts.len() == 2 {
                break;
            }
        }
    }
    assert_eq!(texts, [Message::text("a"), Message::text("b")]);
    assert!(events.try_iter().all(|e| !is_message(&e)));
    // Dropping the only client closes cleanly; the owning iterator then ends by itself.
    drop(client);
    let rest: Vec<Event> = events.into_iter().collect();
    assert!(
        matches!(
            rest.last(),
            Some(Event::Close {
                code: 1000,
                clean: true,
                ..
            })
        ),
        "{rest:?}"
    );
}

#[test]
fn recv_returns_none_after_shutdown() {
    let (client, events) = client();
    drop(client);
    assert_eq!(
        events.recv_timeout(WAIT),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(events.recv(), None);
    assert_eq!(events.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn replacement_while_open_closes_the_old_socket() {
    let server = Server::start();
    let (client, events) = client();
    let first = open(&client, &events, &server.url());
    let second = client.connect(&ConnectOptions::new(server.url())).unwrap();
    assert!(second > first);
    // At once: the old connection's close event, then the new one's connecting.
    match events.try_recv().unwrap() {
        Event::Close {
            conn, code, reason, ..
        } => {
            assert_eq!((conn, code), (first, 1000));
            assert_eq!(reason, REPLACED);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(events.try_recv().unwrap(), Event::Connecting { conn, .. } if conn == second));
    let seen = until(&events, |e| is_open(e) || is_close(e));
    assert!(matches!(seen.last(), Some(Event::Open { conn, .. }) if *conn == second));
    // The server saw the first connection's close frame (1000).
    assert_eq!(
        server.until(|s| matches!(s, Saw::Close(_))),
        Saw::Close(Some((1000, REPLACED.into())))
    );
    client.try_send("after").unwrap();
    let seen = until(&events, is_message);
    assert!(seen.iter().all(|e| e.conn() == second));
}

const REPLACED: &str = wxsocket_core::REPLACED_REASON;

#[test]
fn handshake_timeout_against_a_silent_listener() {
    let mut silent = Silent::start();
    let (client, events) = client();
    let timeout = Duration::from_millis(250);
    let started = Instant::now();
    let conn = client
        .connect(&ConnectOptions::new(silent.url()).timeout(timeout))
        .unwrap();
    let queued = client.try_send("q").unwrap();
    let mut peer = silent.accept();
    let seen = until(&events, is_close);
    let elapsed = started.elapsed();
    assert!(
        // From below only (a loaded machine may be late); `until` bounds the wait.
        elapsed >= timeout,
        "{elapsed:?}"
    );
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::Error { conn: c, error: ConnectionError::HandshakeTimeout { after, .. }, .. } if *c == conn && *after == timeout
    )));
    assert!(seen.iter().any(|e| matches!(
        e,
        Event::SendFailed { id, reason: SendFailure::ConnectFailed, .. } if *id == queued
    )));
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
    // The dial was aborted: the socket is closed (EOF after the request bytes).
    let mut buf = Vec::new();
    peer.read_to_end(&mut buf).unwrap();
    assert!(buf.starts_with(b"GET / HTTP/1.1\r\n"));
}

#[test]
fn close_before_open_aborts_the_dial() {
    let mut silent = Silent::start();
    let (client, events) = client();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let mut peer = silent.accept();
    client.close(None, "").unwrap();
    let seen = until(&events, is_close);
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
    let mut buf = Vec::new();
    peer.read_to_end(&mut buf).unwrap();
}

#[test]
fn connection_refused_is_an_error_event() {
    // The local port of a connected client socket, held for the test: nothing listens on
    // it, so the dial is refused, and no other test can bind it meanwhile.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = held.local_addr().unwrap().port();
    let (client, events) = client();
    client
        .connect(&ConnectOptions::new(format!("ws://127.0.0.1:{port}/")))
        .unwrap();
    let seen = until(&events, is_close);
    assert!(
        seen.iter().any(|e| matches!(
            e,
            Event::Error {
                error: ConnectionError::ConnectFailed(TransportError {
                    kind: TransportErrorKind::Connect,
                    ..
                }),
                ..
            }
        )),
        "{seen:?}"
    );
    assert!(matches!(seen.last(), Some(Event::Close { code: 1006, .. })));
}

#[test]
fn dropping_the_handles_sends_a_close_frame() {
    let server = Server::start();
    let (client, events) = client();
    open(&client, &events, &server.url());
    drop(client);
    drop(events);
    assert_eq!(
        server.until(|s| matches!(s, Saw::Close(_))),
        Saw::Close(Some((1000, String::new())))
    );
    assert_eq!(server.next(), Saw::Ended);
}

#[test]
fn wss_with_a_generated_ca() {
    let tls = tls();
    let server = Server::start_tls(tls.server.clone());
    let config = Config::default().tls(TlsRoots::only(vec![tls.ca_der.clone()]));
    let (client, events) = Client::new(config).unwrap();
    // By name (resolved on the helper thread; `localhost` may resolve to ::1 first, which
    // refuses, then 127.0.0.1) and by IP.
    for url in [
        format!("wss://localhost:{}/tls", server.addr.port()),
        format!("wss://127.0.0.1:{}/tls", server.addr.port()),
    ] {
        open(&client, &events, &url);
        let big = vec![5u8; 300_000];
        client.try_send("secure").unwrap();
        client.try_send(big.clone()).unwrap();
        let seen = until(
            &events,
            |e| matches!(e, Event::Message { message, .. } if !message.is_text()),
        );
        let messages: Vec<Message> = seen
            .into_iter()
            .filter(is_message)
            .map(message_of)
            .collect();
        assert_eq!(messages, [Message::text("secure"), Message::binary(big)]);
        client.close(None, "").unwrap();
        let seen = until(&events, is_close);
        assert!(
            matches!(
                seen.last(),
                Some(Event::Close {
                    code: 1000,
                    clean: true,
                    ..
                })
            ),
            "{seen:?}"
        );
    }
}

#[test]
fn wss_with_an_untrusted_certificate_fails_cleanly() {
    let tls = tls();
    let server = Server::start_tls(tls.server.clone());
    // Webpki roots only: the test CA is unknown.
    let (client, events) = client();
    let started = Instant::now();
    client
        .connect(&ConnectOptions::new(format!(
            "wss://127.0.0.1:{}/",
            server.addr.port()
        )))
        .unwrap();
    let seen = until(&events, is_close);
    assert!(started.elapsed() < WAIT);
    let error = seen
        .iter()
        .find_map(|e| match e {
            Event::Error {
                error: ConnectionError::ConnectFailed(e),
                ..
            } => Some(e.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no connect error in {seen:?}"));
    assert_eq!(error.kind, TransportErrorKind::Tls);
    assert!(
        error.message.to_lowercase().contains("certificate"),
        "{}",
        error.message
    );
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
}

#[test]
fn unsupported_and_invalid_options_are_refused_before_dialling() {
    let (client, events) = client();
    let err = client
        .connect(
            &ConnectOptions::new("ws://127.0.0.1:1/")
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
    assert!(matches!(
        client.connect(&ConnectOptions::new("ftp://x/")),
        Err(ConnectError::UnsupportedScheme { .. })
    ));
    assert_eq!(client.state(), ReadyState::Idle);
    assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn task_pool_runs_several_sockets_on_one_driver() {
    let server = Server::start();
    let config = Config::default().session(SessionConfig::default().pool_limit(2));
    let (pool, events) = TaskPool::new(config).unwrap();
    let a = pool.connect(&ConnectOptions::new(server.url())).unwrap();
    let b = pool.connect(&ConnectOptions::new(server.url())).unwrap();
    assert!(matches!(
        pool.connect(&ConnectOptions::new(server.url())),
        Err(ConnectError::TooManyConnections { limit: 2 })
    ));
    a.try_send("to a").unwrap();
    b.try_send("to b").unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        if let Event::Message { conn, message, .. } = next(&events) {
            got.push((conn, message));
        }
    }
    got.sort_by_key(|(c, _)| *c);
    assert_eq!(
        got,
        [
            (a.id(), Message::text("to a")),
            (b.id(), Message::text("to b"))
        ]
    );
    assert_eq!(a.send("again").map(|_| ()), Ok(()));
    a.close(None, "").unwrap();
    let seen = until(&events, is_close);
    assert_eq!(seen.last().unwrap().conn(), a.id());
    assert_eq!(b.state(), ReadyState::Open);
    drop((a, b, pool));
    let rest: Vec<Event> = events.into_iter().collect();
    assert!(
        rest.iter().any(|e| matches!(
            e,
            Event::Close {
                code: 1000,
                clean: true,
                ..
            }
        )),
        "{rest:?}"
    );
}

#[test]
fn a_peer_that_vanishes_is_reported() {
    let mut silent = Silent::start();
    // Accept and answer the handshake by hand, then drop the TCP connection.
    let (client, events) = client();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let peer = silent.accept();
    let mut ws = tungstenite::accept(peer).unwrap();
    until(&events, is_open);
    ws.get_mut().shutdown(std::net::Shutdown::Both).unwrap();
    let seen = until(&events, is_close);
    assert!(
        seen.iter().any(|e| matches!(e, Event::Error { .. })),
        "{seen:?}"
    );
    assert!(matches!(
        seen.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
}

#[test]
fn keepalive_pings_and_detects_a_dead_peer() {
    let mut silent = Silent::start();
    let config = Config::default().session(
        SessionConfig::default().keepalive(Duration::from_millis(100), Duration::from_millis(150)),
    );
    let (client, events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let peer = silent.accept();
    // The keepalive interval starts when the client opens, which may be before this
    // thread sees the handshake answered (and well before it takes the Open event under
    // load): timed from here, the close can come no earlier than interval + timeout.
    let started = Instant::now();
    // Answer the handshake, then never read again (so no pong is ever sent).
    let _ws = tungstenite::accept(peer).unwrap();
    until(&events, is_open);
    let seen = until(&events, is_close);
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

#[test]
fn socket_info_reports_tcp_nodelay() {
    let server = Server::start();
    let (client, events) = client();
    assert_eq!(client.socket_info(), None);
    client
        .connect(&ConnectOptions::new(server.url()).tcp_no_delay(true))
        .unwrap();
    until(&events, is_open);
    let info = client.socket_info().unwrap();
    assert!(info.nodelay);
    assert!(!info.tls);
    assert_eq!(info.peer_addr, server.addr);
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until(&events, is_open);
    assert!(!client.socket_info().unwrap().nodelay);
}

#[test]
fn close_timeout_when_the_peer_never_closes_tcp() {
    use std::io::Write;
    let mut silent = Silent::start();
    let config = Config::default()
        .session(SessionConfig::default().close_timeout(Duration::from_millis(200)));
    let (client, events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let peer = silent.accept();
    let mut ws = tungstenite::accept(peer).unwrap();
    until(&events, is_open);
    // The server's close frame (code 1000, unmasked), then silence: TCP stays open.
    ws.get_mut().write_all(&[0x88, 0x02, 0x03, 0xe8]).unwrap();
    let started = Instant::now();
    let seen = until(&events, is_close);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < WAIT,
        "{elapsed:?}"
    );
    // The peer's code is reported; both close frames were exchanged, so the close is clean
    // although the client had to end TCP itself (RFC 6455 §7.1.4).
    assert!(
        matches!(
            seen.last(),
            Some(Event::Close {
                code: 1000,
                clean: true,
                ..
            })
        ),
        "{seen:?}"
    );
    // Our reply went out before the abort.
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(ws.get_mut(), &mut buf).unwrap();
    assert_eq!(buf[0], 0x88, "{:?}", &buf[..n]);
}

#[test]
fn wx_surface_runs_callbacks_on_the_driver_thread() {
    use std::sync::mpsc;
    use wxsocket_blocking::wx::{CloseSocket, ConnectSocket, SendSocketMessage, WxSocket};
    let server = Server::start();
    let wx = WxSocket::new(Config::default()).unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    // Sending before connecting fails in WeChat's words.
    let t = tx.clone();
    let err = wx
        .send_socket_message(SendSocketMessage::new("early").fail(move |r| {
            t.send(r.err_msg.clone()).unwrap();
        }))
        .unwrap_err();
    assert_eq!(
        err.err_msg,
        "sendSocketMessage:fail WebSocket is not connected"
    );
    assert_eq!(
        rx.recv_timeout(WAIT).unwrap(),
        "sendSocketMessage:fail WebSocket is not connected"
    );
    // WeChat's pattern: send inside onSocketOpen, close on the first message.
    let weak = wx.downgrade();
    let t = tx.clone();
    wx.on_socket_open(move |res| {
        // The dial's timing, measured over the real socket (`res.profile`): no TLS for ws://.
        let p = res.profile;
        let measured = p.response_received > p.request_written && p.tls.is_none();
        t.send(format!(
            "open on {:?}, profile measured: {measured}",
            std::thread::current().name()
        ))
        .unwrap();
        let wx = weak.upgrade().unwrap();
        let t = t.clone();
        wx.send_socket_message(SendSocketMessage::new("hi").success(move |r| {
            t.send(r.err_msg.clone()).unwrap();
        }))
        .unwrap();
    });
    let weak = wx.downgrade();
    let t = tx.clone();
    wx.on_socket_message(move |m| {
        t.send(format!("message {:?}", m.data)).unwrap();
        weak.upgrade()
            .unwrap()
            .close_socket(CloseSocket::with(4001, "done"))
            .unwrap();
    });
    let t = tx.clone();
    wx.on_socket_close(move |c| t.send(format!("close {} {}", c.code, c.clean)).unwrap());
    let t = tx.clone();
    wx.connect_socket(
        ConnectSocket::new(ConnectOptions::new(server.url())).success(move |r| {
            t.send(r.err_msg.clone()).unwrap();
        }),
    )
    .unwrap();
    let got: Vec<String> = (0..5).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    assert_eq!(
        got,
        [
            "connectSocket:ok".to_string(),
            "open on Some(\"wxsocket-wx\"), profile measured: true".into(),
            "sendSocketMessage:ok".into(),
            format!("message {:?}", Message::text("hi")),
            "close 4001 true".into(),
        ]
    );
    assert_eq!(wx.state(), ReadyState::Closed);
    // An invalid perMessageDeflate offer is refused like any invalid option.
    let err = wx
        .connect_socket(ConnectSocket::new(
            ConnectOptions::new(server.url())
                .deflate(DeflateOptions::default().client_max_window_bits(7)),
        ))
        .unwrap_err();
    assert!(
        err.err_msg
            .starts_with("connectSocket:fail perMessageDeflate: client_max_window_bits=7"),
        "{}",
        err.err_msg
    );
}

/// Opens a client against `silent`, answers the handshake by hand, and has the client
/// receive one message while it sleeps in `recv` (so the sockets' reads are handed to the
/// receiving thread, see the crate docs). Returns the peer's side.
fn receive_once_then_stop(
    silent: &mut Silent,
    config: Config,
) -> (Client, Events, tungstenite::WebSocket<std::net::TcpStream>) {
    let (client, events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(silent.url())).unwrap();
    let peer = silent.accept();
    let mut ws = tungstenite::accept(peer).unwrap();
    until(&events, is_open);
    let receiver = ReceivingThread::current();
    let sender = std::thread::spawn(move || {
        // Once the client is asleep in `recv`.
        receiver.wait_until_asleep();
        ws.send(WsMessage::text("first")).unwrap();
        ws
    });
    let first = message_of(until(&events, is_message).pop().unwrap());
    assert_eq!(first, Message::text("first"));
    (client, events, sender.join().unwrap())
}

/// A thread another one can watch fall asleep (Linux: its state in `/proc`).
struct ReceivingThread {
    #[cfg(target_os = "linux")]
    task: std::path::PathBuf,
}

impl ReceivingThread {
    fn current() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            // The link reads `PID/task/TID`, relative to /proc.
            task: std::path::Path::new("/proc")
                .join(std::fs::read_link("/proc/thread-self").expect("/proc/thread-self")),
        }
    }

    /// Returns once the thread is blocked (state `S`), as it is in `recv` with nothing to
    /// take; panics after [`WAIT`]. Elsewhere than Linux, a pause stands in for it.
    fn wait_until_asleep(&self) {
        #[cfg(target_os = "linux")]
        {
            let deadline = Instant::now() + WAIT;
            loop {
                let stat = std::fs::read_to_string(self.task.join("stat")).expect("task stat");
                // "pid (name) S ...": the state follows the name's closing parenthesis.
                let state = stat
                    .rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().next());
                if state == Some("S") {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "the receiving thread never slept"
                );
                std::thread::yield_now();
            }
        }
        #[cfg(not(target_os = "linux"))]
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_stops_receiving_still_answers_pings_and_the_close_handshake() {
    let mut silent = Silent::start();
    let (client, events, mut ws) = receive_once_then_stop(&mut silent, Config::default());
    // The application does not call `recv` again; the protocol's replies still go out.
    ws.send(WsMessage::Ping(b"are you there".to_vec().into()))
        .unwrap();
    let pong = match ws.read().expect("no pong in time") {
        WsMessage::Pong(p) => p,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(&pong[..], b"are you there");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: 4000.into(),
        reason: "bye".into(),
    }))
    .unwrap();
    let reply = match ws.read() {
        Ok(WsMessage::Close(frame)) => frame,
        Ok(other) => panic!("unexpected {other:?}"),
        Err(e) => panic!("no close reply in time: {e}"),
    };
    assert_eq!(reply.map(|f| u16::from(f.code)), Some(4000));
    // The server ends the TCP connection after the close handshake.
    ws.get_mut().shutdown(std::net::Shutdown::Both).unwrap();
    // The close handshake finished without the application; its events wait for it.
    let seen = until(&events, is_close);
    assert!(
        matches!(
            seen.last(),
            Some(Event::Close {
                code: 4000,
                clean: true,
                ..
            })
        ),
        "{seen:?}"
    );
    assert_eq!(client.state(), ReadyState::Closed);
}

#[test]
fn try_recv_sees_a_message_that_arrives_after_a_blocking_recv() {
    let mut silent = Silent::start();
    let (_client, events, mut ws) = receive_once_then_stop(&mut silent, Config::default());
    ws.send(WsMessage::text("second")).unwrap();
    let deadline = Instant::now() + WAIT;
    let message = loop {
        match events.try_recv() {
            Ok(Event::Message { message, .. }) => break message,
            Ok(_) => {}
            Err(TryRecvError::Empty) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("no message in time: {e:?}"),
        }
    };
    assert_eq!(message, Message::text("second"));
}

#[test]
fn keepalive_holds_while_the_application_does_not_receive() {
    let mut silent = Silent::start();
    let config = Config::default().session(
        SessionConfig::default().keepalive(Duration::from_millis(50), Duration::from_secs(1)),
    );
    let (client, events, mut ws) = receive_once_then_stop(&mut silent, config);
    // The peer answers every ping (tungstenite replies while reading) for well over one
    // pong timeout (generous: a loaded machine may be slow to answer), and the
    // application leaves its events alone meanwhile.
    let peer = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_millis(2500);
        let mut pings = 0;
        ws.get_mut()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        while Instant::now() < until {
            match ws.read() {
                Ok(WsMessage::Ping(_)) => pings += 1,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("peer: {e}"),
            }
        }
        (ws, pings)
    });
    let (_ws, pings) = peer.join().unwrap();
    assert!(pings >= 3, "only {pings} pings");
    assert_eq!(client.state(), ReadyState::Open);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::Error { .. } | Event::Close { .. }),
            "{event:?}"
        );
    }
}

#[test]
fn several_threads_receiving_share_the_events_exactly_once() {
    let server = Server::start();
    let (client, events) = client();
    open(&client, &events, &server.url());
    let events = std::sync::Arc::new(events);
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    const N: usize = 300;
    let receivers: Vec<_> = (0..3)
        .map(|i| {
            let (events, got) = (events.clone(), got.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + WAIT;
                while got.lock().unwrap().len() < N && Instant::now() < deadline {
                    // Short timeouts for one thread, so the watching thread changes often.
                    let wait = Duration::from_millis(if i == 0 { 2 } else { 50 });
                    if let Ok(Event::Message { message, .. }) = events.recv_timeout(wait) {
                        got.lock().unwrap().push(message);
                    }
                }
            })
        })
        .collect();
    for i in 0..N {
        client.try_send(format!("m{i}")).unwrap();
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for r in receivers {
        r.join().unwrap();
    }
    let mut got: Vec<String> = got
        .lock()
        .unwrap()
        .iter()
        .map(|m| String::from_utf8(m.as_bytes().to_vec()).unwrap())
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

/// `shutdown()` called inside a callback (on the driver thread) starts the shutdown and
/// returns instead of waiting for its own thread: the connection still closes with 1000.
#[test]
fn wx_shutdown_inside_a_callback_does_not_wait_for_itself() {
    use std::sync::mpsc;
    use wxsocket_blocking::wx::{ConnectSocket, WxSocket};
    let server = Server::start();
    let wx = WxSocket::new(Config::default()).unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let weak = wx.downgrade();
    let t = tx.clone();
    wx.on_socket_open(move |_| {
        weak.upgrade().unwrap().shutdown();
        t.send("shutdown returned".into()).unwrap();
    });
    let t = tx.clone();
    wx.on_socket_close(move |c| t.send(format!("close {} {}", c.code, c.clean)).unwrap());
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new(server.url())))
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "shutdown returned");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "close 1000 true");
}

/// Three threads wait in `recv` on the same `Events`; three messages arrive in one read
/// (one thread reads them all): each thread gets one, none sleeps while an event waits
/// (a delivery used to wake one parked thread however many events it moved).
#[test]
fn every_thread_waiting_in_recv_gets_an_event_from_one_burst() {
    const THREADS: usize = 3;
    let mut server = Silent::start();
    let (client, events) = client();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    let mut ws = tungstenite::accept(server.accept()).expect("the handshake");
    let seen = until(&events, |e| is_open(e) || is_close(e));
    assert!(is_open(seen.last().unwrap()), "did not open: {seen:?}");
    let events = std::sync::Arc::new(events);
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let events = std::sync::Arc::clone(&events);
            std::thread::spawn(move || events.recv_timeout(WAIT))
        })
        .collect();
    // Let every thread settle in `recv` (one on the sockets, the others parked).
    std::thread::sleep(Duration::from_millis(200));
    // Written together, with one flush: one burst on the wire.
    for text in ["a", "b", "c"] {
        ws.write(WsMessage::text(text)).unwrap();
    }
    ws.flush().unwrap();
    let sent = Instant::now();
    let mut got: Vec<Message> = threads
        .into_iter()
        .map(|t| message_of(t.join().unwrap().expect("a thread in recv got no event")))
        .collect();
    got.sort_by_key(|m| m.as_bytes().to_vec());
    let expected: Vec<Message> = ["a", "b", "c"].into_iter().map(Message::text).collect();
    assert_eq!(got, expected);
    // A thread left asleep with an event waiting only finds it at its own timeout.
    let took = sent.elapsed();
    assert!(
        took < WAIT / 2,
        "a thread in recv slept {took:?} while an event waited for it"
    );
    drop(client);
}

/// A shutdown while 300 sends wait for the connection (more than the driver turns into
/// callbacks at a time): every send's `complete` runs before `shutdown` returns (those past
/// the first batch were left behind). A call after the shutdown runs its own `fail` and
/// `complete` before it returns, since no driver is left to run them.
#[test]
fn wx_shutdown_runs_every_callback_it_makes_due_and_later_calls_run_theirs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use wxsocket_blocking::wx::{ConnectSocket, SendSocketMessage, WxSocket};
    const SENDS: usize = 300;
    let server = Silent::start();
    let wx = WxSocket::new(Config::default()).unwrap();
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new(server.url())))
        .unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    for i in 0..SENDS {
        let c = Arc::clone(&completed);
        wx.send_socket_message(SendSocketMessage::new(format!("m{i}")).complete(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    }
    wx.shutdown();
    assert_eq!(completed.load(Ordering::SeqCst), SENDS);
    let (tx, log) = std::sync::mpsc::channel::<String>();
    let (t1, t2) = (tx.clone(), tx);
    wx.send_socket_message(
        SendSocketMessage::new("late")
            .fail(move |r| t1.send(format!("fail: {r}")).unwrap())
            .complete(move |r| t2.send(format!("complete: {r}")).unwrap()),
    )
    .unwrap_err();
    let ran: Vec<String> = log.try_iter().collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(
        ran[0].starts_with("fail: sendSocketMessage:fail"),
        "{ran:?}"
    );
    assert!(
        ran[1].starts_with("complete: sendSocketMessage:fail"),
        "{ran:?}"
    );
}
