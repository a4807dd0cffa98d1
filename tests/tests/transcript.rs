//! Transcripts recorded over real sockets (issue 20 §1), on both adapters: a client with
//! `Config::record` runs against the misbehaving test [`Peer`], and its transcript replays
//! in a fresh session to exactly the actions and events of the run.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxsocket_core::transcript;
use wxsocket_core::{ConnectOptions, Event, Message, ReconnectPolicy, SessionConfig};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::{Mode, Peer, Step, opcode};
use wxsocket_wire::client::{Config, Recording};

wxsocket_tests::on_both_adapters!(
    an_invalid_close_code_from_the_peer_replays_exactly,
    a_reconnection_replays_exactly,
);

/// A writer the test reads back after the run.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn recording_client<A: Adapter>(session: SessionConfig) -> (A, Buffer, Recording) {
    let buffer = Buffer::default();
    let recording = Recording::to_writer(buffer.clone());
    let config = Config::new().session(session).record(recording.clone());
    let a = A::with_config(config).unwrap_or_else(|e| panic!("[{}] config: {e}", A::NAME));
    (a, buffer, recording)
}

/// Shuts the client down (the driver has ended: nothing more is recorded), replays the
/// transcript and checks it against what the application saw.
fn replay_after<A: Adapter>(a: &mut A, buffer: &Buffer, recording: &Recording, seen: &[Event]) {
    a.shutdown();
    assert_eq!(recording.error(), None);
    let text = buffer.text();
    let replay = transcript::replay(&text, std::time::Instant::now())
        .unwrap_or_else(|e| panic!("[{}] unreadable transcript: {e}\n{text}", A::NAME));
    assert!(
        replay.is_exact(),
        "[{}] replay differs: {:#?}\n{text}",
        A::NAME,
        replay.mismatches
    );
    // Every event the application received is the replay's, in order (the driver may
    // have taken more from the session than the application read before the shutdown).
    let replayed: Vec<&Event> = replay.events.iter().map(|(_, e)| e).collect();
    assert!(
        replayed.len() >= seen.len(),
        "[{}] replay has {} events, the run {}",
        A::NAME,
        replayed.len(),
        seen.len()
    );
    for (i, (r, s)) in replayed.iter().zip(seen).enumerate() {
        assert_eq!(*r, s, "[{}] event {i}", A::NAME);
    }
    if let Ok(dir) = std::env::var("WXSOCKET_TRANSCRIPT_DIR") {
        // How the committed transcripts of crates/core/tests/transcripts/ were made.
        let name = format!(
            "{}-{}.jsonl",
            A::NAME,
            std::thread::current()
                .name()
                .unwrap_or("run")
                .replace("::", "-")
        );
        std::fs::write(std::path::Path::new(&dir).join(name), &text).unwrap();
    }
}

/// The peer sends a message, then a close frame with 1005, a code that must never be sent:
/// the client fails the connection with a protocol error (1002).
fn an_invalid_close_code_from_the_peer_replays_exactly<A: Adapter>() {
    let peer = Peer::start(Mode::Script(vec![
        Step::Message(Message::text("before the bad close")),
        Step::Frame {
            fin: true,
            rsv: 0,
            opcode: opcode::CLOSE,
            payload: vec![0x03, 0xED],
        },
    ]));
    let (mut a, buffer, recording) = recording_client::<A>(SessionConfig::default());
    let options = ConnectOptions::new(peer.url()).header("Authorization", "Bearer sekrit");
    let conn = a.connect(&options).unwrap();
    let seen = a.events_until_close(conn, EVENT_TIMEOUT);
    assert!(
        matches!(
            seen.last(),
            Some(Event::Close {
                code: 1002,
                clean: false,
                ..
            })
        ),
        "[{}] {seen:#?}",
        A::NAME
    );
    assert!(seen.iter().any(|e| matches!(e, Event::Message { .. })));
    replay_after(&mut a, &buffer, &recording, &seen);
    assert!(!buffer.text().contains("sekrit"));
}

/// The server restarts (closes with 1012) until the test switches it to echo; the client
/// reconnects after a seeded backoff, sends, gets its echo and closes.
fn a_reconnection_replays_exactly<A: Adapter>() {
    let peer = Peer::start(Mode::CloseWith(1012, "restart".into()));
    let session = SessionConfig::default().reconnect(
        ReconnectPolicy::default()
            .backoff(Duration::from_millis(20), Duration::from_millis(50))
            .seed(7),
    );
    let (mut a, buffer, recording) = recording_client::<A>(session);
    a.connect(&ConnectOptions::new(peer.url())).unwrap();
    let deadline = Instant::now() + 4 * EVENT_TIMEOUT;
    let mut seen = Vec::new();
    let mut closing = false;
    loop {
        assert!(Instant::now() < deadline, "[{}] {seen:#?}", A::NAME);
        let event = a.expect_event("the next event of the reconnection");
        seen.push(event.clone());
        match event {
            Event::Reconnecting { .. } => peer.set_mode(Mode::Echo),
            Event::Open { .. } => {
                // Refused only if this connection is already closing (the 1012 restart).
                let _ = a.try_send(Message::text("hello again"));
            }
            // Closed at the first echo. A second may follow: a message the first
            // connection accepted just before the restart goes to the next one too.
            Event::Message { .. } if !closing => {
                a.close(None, "bye").unwrap();
                closing = true;
            }
            Event::Close { code: 1000, .. } => break,
            _ => {}
        }
    }
    assert!(seen.iter().any(|e| matches!(e, Event::Reconnecting { .. })));
    replay_after(&mut a, &buffer, &recording, &seen);
}

/// The wx socket of each adapter records its session (a prober's engine found its
/// recording left an empty file): connect, a send queued before open, the echo, the close
/// from the message listener; the transcript replays exactly, to those events.
macro_rules! a_wx_socket_records_its_session {
    ($name:ident, $adapter:ident, $($runtime:tt)*) => {
        #[test]
        fn $name() {
            use $adapter::wx::{CloseSocket, ConnectSocket, SendSocketMessage, WxSocket};
            $($runtime)*
            let peer = Peer::start(Mode::Echo);
            let buffer = Buffer::default();
            let recording = Recording::to_writer(buffer.clone());
            let config = $adapter::Config::new().record(recording.clone());
            let wx = WxSocket::new(config).unwrap();
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let weak = wx.downgrade();
            let t = tx.clone();
            wx.on_socket_message(move |res| {
                t.send(format!("message {:?}", res.data)).unwrap();
                let _ = weak.upgrade().unwrap().close_socket(CloseSocket::new());
            });
            wx.on_socket_close(move |res| tx.send(format!("close {}", res.code)).unwrap());
            let options = ConnectOptions::new(peer.url()).header("Authorization", "Bearer sekrit");
            wx.connect_socket(ConnectSocket::new(options)).unwrap();
            wx.send_socket_message(SendSocketMessage::new("queued")).unwrap();
            let heard: Vec<String> = (0..2).map(|_| rx.recv_timeout(EVENT_TIMEOUT).unwrap()).collect();
            assert_eq!(heard, ["message Text(\"queued\")", "close 1000"]);
            drop(wx);
            // The driver has ended once the listeners (its last holders of `rx`'s sender)
            // are dropped: nothing more is recorded.
            assert_eq!(
                rx.recv_timeout(EVENT_TIMEOUT),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
            );
            assert_eq!(recording.error(), None);
            let text = buffer.text();
            let replay = transcript::replay(&text, Instant::now()).unwrap();
            assert!(replay.is_exact(), "{:#?}\n{text}", replay.mismatches);
            let events: Vec<&Event> = replay.events.iter().map(|(_, e)| e).collect();
            assert!(
                matches!(events.first(), Some(Event::Connecting { .. })),
                "{events:#?}"
            );
            assert!(events.iter().any(|e| matches!(e, Event::Open { .. })));
            assert!(events.iter().any(|e| matches!(e, Event::Message { message, .. } if *message == Message::text("queued"))));
            assert!(matches!(events.last(), Some(Event::Close { code: 1000, .. })), "{events:#?}");
            assert!(!text.contains("sekrit"));
        }
    };
}

a_wx_socket_records_its_session!(a_wx_socket_records_its_session_blocking, wxsocket_blocking,);
a_wx_socket_records_its_session!(
    a_wx_socket_records_its_session_tokio,
    wxsocket_tokio,
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
);

/// A task pool cannot be recorded (a transcript holds one session): `record` is refused,
/// naming the field, instead of an empty file (a prober's pool left one without a word).
#[test]
fn a_task_pool_refuses_a_recording() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _entered = runtime.enter();
    let config = || Config::new().record(Recording::to_writer(Buffer::default()));
    let e = wxsocket_tokio::TaskPool::new(config()).unwrap_err();
    assert_eq!(e.field(), Some("record"), "{e}");
    let e = wxsocket_blocking::TaskPool::new(config()).unwrap_err();
    assert_eq!(e.field(), Some("record"), "{e}");
}
