//! Transcripts on a simulated clock: a recorded session replays exactly in a fresh one,
//! secrets stay out, a changed transcript is caught, and the committed transcripts in
//! `tests/transcripts/` (regressions as files) replay exactly.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxsocket_core::transcript::{self, Redaction};
use wxsocket_core::*;

mod clock;
use clock::last_instant;

/// A session recording into a shared buffer, on a simulated clock.
struct Sim {
    s: Session,
    now: Instant,
    lines: Arc<Mutex<String>>,
}

impl Sim {
    fn new(config: SessionConfig, redaction: Redaction) -> Self {
        let lines = Arc::new(Mutex::new(String::new()));
        let mut s = Session::new(config).unwrap();
        let sink = Arc::clone(&lines);
        s.start_recording(redaction, move |line| {
            let mut out = sink.lock().unwrap();
            out.push_str(line);
            out.push('\n');
        });
        Self {
            s,
            now: Instant::now(),
            lines,
        }
    }

    fn later(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    /// Drains actions and events, as a driver does after every input.
    fn drain(&mut self) -> (Vec<Action>, Vec<Event>) {
        let a = std::iter::from_fn(|| self.s.poll_action()).collect();
        let e = std::iter::from_fn(|| self.s.poll_event()).collect();
        (a, e)
    }

    fn input(&mut self, conn: ConnId, e: TransportEvent) -> (Vec<Action>, Vec<Event>) {
        self.s.handle(conn, e, self.now);
        self.drain()
    }

    fn fire(&mut self) -> (Vec<Action>, Vec<Event>) {
        self.now = self.s.poll_timeout().expect("a timer");
        self.s.handle_timeout(self.now);
        self.drain()
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().clone()
    }

    /// A recording session with its connection open (defaults, redaction by default).
    fn open() -> (Self, ConnId) {
        let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
        let conn = sim
            .s
            .connect(&ConnectOptions::new("ws://127.0.0.1:9"), sim.now)
            .unwrap();
        sim.drain();
        sim.input(conn, TransportEvent::Opened(Box::default()));
        (sim, conn)
    }
}

fn assert_exact(text: &str, events: &[Event]) {
    let replay = transcript::replay(text, std::time::Instant::now()).unwrap();
    assert!(replay.is_exact(), "mismatches: {:#?}", replay.mismatches);
    let replayed: Vec<Event> = replay.events.into_iter().map(|(_, e)| e).collect();
    assert_eq!(replayed, events, "the replay's events");
}

#[test]
fn a_reconnecting_session_with_a_misbehaving_peer_replays_exactly() {
    let config = SessionConfig::default()
        .keepalive(Duration::from_secs(5), Duration::from_secs(1))
        .receive_bounds(2, 1 << 20)
        .reconnect(ReconnectPolicy::default().seed(0xfeed));
    let mut sim = Sim::new(config, Redaction::default());
    let mut events = Vec::new();
    let options = ConnectOptions::new("ws://127.0.0.1:9/chat")
        .protocol("chat")
        .header("Authorization", "Bearer top-secret")
        .header("X-Trace", "abc");
    let c1 = sim.s.connect(&options, sim.now).unwrap();
    let queued = sim.s.send(Message::text("early"), sim.now).unwrap();
    events.extend(sim.drain().1);
    for stage in [DialStage::Resolving, DialStage::Connecting, DialStage::Tls] {
        events.extend(sim.input(c1, TransportEvent::Dialing(stage)).1);
    }
    sim.later(30);
    let ms = Duration::from_millis;
    let mut handshake = Handshake::default()
        .with_protocol(Some("chat".into()))
        .with_profile(OpenProfile::new(ms(1), ms(2), Some(ms(9)), ms(10), ms(30)));
    handshake
        .headers
        .insert("set-cookie", "sid=also-secret".parse().unwrap());
    events.extend(sim.input(c1, TransportEvent::Opened(Box::new(handshake))).1);
    events.extend(sim.input(c1, TransportEvent::SendWritten(queued)).1);
    // Flow control: three messages against a bound of two, taken late.
    for i in 0..3u8 {
        sim.s.handle(
            c1,
            TransportEvent::Message(Message::binary(vec![i; 3])),
            sim.now,
        );
    }
    events.extend(sim.drain().1);
    events.extend(sim.input(c1, TransportEvent::Receiving).1);
    sim.s.ping(Bytes::from_static(b"p"), sim.now).unwrap();
    events.extend(
        sim.input(c1, TransportEvent::Pong(Bytes::from_static(b"p")))
            .1,
    );
    // The peer closes with a code it may not send: a protocol error, then a reconnect.
    sim.later(10);
    events.extend(
        sim.input(
            c1,
            TransportEvent::PeerClosed(PeerClose {
                code: Some(1005),
                reason: "bad".into(),
            }),
        )
        .1,
    );
    events.extend(sim.input(c1, TransportEvent::Closed).1);
    assert!(sim.s.is_backing_off());
    let (actions, more) = sim.fire();
    events.extend(more);
    let Some(Action::Dial { conn: c2, .. }) = actions.last().cloned() else {
        panic!("expected a dial: {actions:?}")
    };
    // The second dial fails, then the third opens and the application closes it.
    events.extend(
        sim.input(
            c2,
            TransportEvent::ConnectFailed(TransportError::new(
                TransportErrorKind::HttpStatus(503),
                "503 Service Unavailable",
            )),
        )
        .1,
    );
    let (actions, more) = sim.fire();
    events.extend(more);
    let Some(Action::Dial { conn: c3, .. }) = actions.last().cloned() else {
        panic!("expected a dial: {actions:?}")
    };
    events.extend(sim.input(c3, TransportEvent::Opened(Box::default())).1);
    // Keepalive: a ping goes out after 5 s of silence, the pong comes back.
    let (actions, _) = sim.fire();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Ping { .. })),
        "{actions:?}"
    );
    sim.s.close(Some(4000), "done", sim.now).unwrap();
    events.extend(sim.drain().1);
    events.extend(
        sim.input(
            c3,
            TransportEvent::PeerClosed(PeerClose {
                code: Some(4000),
                reason: "done".into(),
            }),
        )
        .1,
    );
    events.extend(sim.input(c3, TransportEvent::Closed).1);
    assert!(matches!(
        events.last(),
        Some(Event::Close { code: 4000, .. })
    ));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Reconnecting { .. }))
    );
    assert!(events.iter().any(|e| matches!(e, Event::Error { .. })));

    let text = sim.text();
    assert!(
        !text.contains("top-secret") && !text.contains("also-secret"),
        "{text}"
    );
    assert!(text.contains(transcript::REDACTED));
    assert!(
        text.contains("\"X-Trace\"") || text.contains("\"x-trace\",\"abc\""),
        "{text}"
    );
    assert!(
        text.contains("\"seed\":65261"),
        "the jitter seed is in the header"
    );
    // The replay sees the handshake as recorded: with the secret redacted.
    let Event::Open { handshake, .. } = &mut events[1] else {
        panic!("{:?}", events[1])
    };
    handshake
        .headers
        .insert("set-cookie", transcript::REDACTED.parse().unwrap());
    assert_exact(&text, &events);
}

#[test]
fn application_named_headers_are_redacted_and_recording_off_writes_nothing() {
    let mut sim = Sim::new(
        SessionConfig::default(),
        Redaction::default().header("x-api-key".parse().unwrap()),
    );
    let options = ConnectOptions::new("ws://127.0.0.1:9").header("X-Api-Key", "k-123");
    let conn = sim.s.connect(&options, sim.now).unwrap();
    let (_, mut events) = sim.drain();
    sim.later(5);
    events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
    assert!(sim.s.is_recording());
    sim.s.stop_recording();
    assert!(!sim.s.is_recording());
    let before = sim.text();
    sim.s.send(Message::text("not recorded"), sim.now).unwrap();
    sim.drain();
    assert_eq!(sim.text(), before);
    assert!(!before.contains("k-123"));
    assert_exact(&before, &events);
}

/// The server's response headers are redacted too (a `Set-Cookie` in the `Open` event),
/// and what is not secret stays as it was (the protocol, other headers); `Redaction::none`
/// writes every value.
#[test]
fn the_responses_secrets_are_redacted_and_none_writes_every_value() {
    assert!(Redaction::none().names().is_empty());
    let default = Redaction::default();
    assert_eq!(default.names().len(), 4);
    assert_eq!(default.clone().header(http::header::COOKIE), default);
    let mut response = http::HeaderMap::new();
    response.insert("set-cookie", "sid=abc123".parse().unwrap());
    response.insert("x-server", "kept-value".parse().unwrap());
    let handshake = Handshake::default()
        .with_protocol(Some("chat.v2".into()))
        .with_headers(response);
    for (redaction, secrets_written) in [(Redaction::default(), false), (Redaction::none(), true)] {
        let mut sim = Sim::new(SessionConfig::default(), redaction);
        let options = ConnectOptions::new("ws://127.0.0.1:9")
            .protocol("chat.v2")
            .header("Authorization", "Bearer t-777");
        let conn = sim.s.connect(&options, sim.now).unwrap();
        let (_, mut events) = sim.drain();
        sim.later(5);
        let opened = TransportEvent::Opened(Box::new(handshake.clone()));
        events.extend(sim.input(conn, opened).1);
        let text = sim.text();
        // The `Open` event as written (the output of `poll_event`), not only the input.
        let open = text
            .lines()
            .find(|l| l.contains(r#""in":"poll_event","out":"Open"#))
            .expect("the Open event is written");
        for kept in ["kept-value", "chat.v2"] {
            assert!(open.contains(kept), "{kept} missing from:\n{open}");
        }
        for secret in ["sid=abc123", "t-777"] {
            assert_eq!(
                text.contains(secret),
                secrets_written,
                "{secret} in:\n{text}"
            );
        }
        assert_eq!(open.contains("sid=abc123"), secrets_written, "{open}");
        assert_eq!(text.contains(transcript::REDACTED), !secrets_written);
        // The replay sees the response as written: the cookie's value redacted.
        if !secrets_written {
            for event in &mut events {
                if let Event::Open { handshake, .. } = event {
                    let redacted = http::HeaderValue::from_static(transcript::REDACTED);
                    handshake.headers.insert("set-cookie", redacted);
                }
            }
        }
        assert_exact(&text, &events);
    }
}

/// A proxy's credentials are never written, and the request still replays exactly (the
/// replay dials with placeholders; it used to dial with none, and every `Dial` differed).
#[test]
fn an_authenticated_proxy_stays_out_and_replays_exactly() {
    let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
    let options =
        ConnectOptions::new("ws://example.com/").proxy("http://user:s3cret@proxy.local:8080");
    let conn = sim.s.connect(&options, sim.now).unwrap();
    let (_, mut events) = sim.drain();
    sim.later(5);
    events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
    let text = sim.text();
    assert!(
        !text.contains("s3cret") && !text.contains("user:"),
        "{text}"
    );
    assert_exact(&text, &events);
}

/// A SOCKS5 proxy's credentials stay out as well, and its refusal (a kind of error of its
/// own) is read back as it was written.
#[test]
fn a_socks_proxy_and_its_refusal_replay_exactly() {
    let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
    let options = ConnectOptions::new("ws://example.com/").proxy("socks5h://user:s3cret@p:1080");
    let conn = sim.s.connect(&options, sim.now).unwrap();
    let (_, mut events) = sim.drain();
    let refused = TransportError::new(
        TransportErrorKind::ProxyRefused,
        "proxy socks5h://p:1080 refused the user name and password (RFC 1929 status 1)",
    );
    events.extend(sim.input(conn, TransportEvent::ConnectFailed(refused)).1);
    let text = sim.text();
    assert!(text.contains("\"socks5\":\"socks5h://p:1080\""), "{text}");
    assert!(text.contains("proxy_refused"), "{text}");
    assert!(
        !text.contains("s3cret") && !text.contains("user:"),
        "{text}"
    );
    assert_exact(&text, &events);
}

#[test]
fn completions_and_shutdown_replay_exactly() {
    let config = SessionConfig::default()
        .send_completions(false)
        .acknowledge(Acknowledgement::new());
    let mut sim = Sim::new(config, Redaction::none());
    sim.s.track_completions(true);
    let conn = sim
        .s
        .connect(&ConnectOptions::new("wss://example.com/x?q=1"), sim.now)
        .unwrap();
    let (_, mut events) = sim.drain();
    events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
    let id = sim.s.send(Message::text("ack me"), sim.now).unwrap();
    events.extend(sim.input(conn, TransportEvent::SendWritten(id)).1);
    let (actions, more) = sim.fire();
    events.extend(more);
    for a in actions {
        if let Action::Ping { payload, .. } = a {
            events.extend(sim.input(conn, TransportEvent::Pong(payload)).1);
        }
    }
    let completions: Vec<_> = std::iter::from_fn(|| sim.s.poll_completion()).collect();
    assert_eq!(completions, [(id, Ok(()))]);
    // Refused calls are inputs too (they run the timers).
    assert!(sim.s.close(Some(1), "bad code", sim.now).is_err());
    assert!(sim.s.ping(vec![0; 200], sim.now).is_err());
    sim.s.shutdown(sim.now);
    events.extend(sim.drain().1);
    events.extend(sim.input(conn, TransportEvent::Closed).1);
    assert!(sim.s.is_drained());
    assert_exact(&sim.text(), &events);
}

#[test]
fn a_changed_transcript_is_caught() {
    let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
    let conn = sim
        .s
        .connect(&ConnectOptions::new("ws://127.0.0.1:9"), sim.now)
        .unwrap();
    sim.drain();
    sim.later(1);
    sim.input(
        conn,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1000),
            reason: "x".into(),
        }),
    );
    sim.input(conn, TransportEvent::Opened(Box::default()));
    let text = sim.text();
    assert!(
        transcript::replay(&text, std::time::Instant::now())
            .unwrap()
            .is_exact()
    );
    // The same inputs with the handshake's outcome changed: the outputs differ.
    let changed = text.replace(
        concat!(
            r#"{"opened":{"protocol":null,"headers":[],"extensions":null,"deflate":null,"#,
            r#""profile":{"resolved":0,"connected":0,"tls":null,"request_written":0,"#,
            r#""response_received":0}}}"#
        ),
        r#""closed""#,
    );
    assert_ne!(changed, text);
    let replay = transcript::replay(&changed, std::time::Instant::now()).unwrap();
    assert!(!replay.is_exact());
    assert!(
        replay.mismatches[0]
            .recorded
            .as_deref()
            .unwrap()
            .contains("Open")
    );
    // A connect line edited to a URL `connect` refuses is refused by the replay too, as
    // `connect_request` refuses it, not dialled.
    let edited = text.replace("ws://127.0.0.1:9/", "ws://127.0.0.1:9/#top");
    assert_ne!(edited, text);
    let replay = transcript::replay(&edited, std::time::Instant::now()).unwrap();
    let first = &replay.mismatches[0];
    assert_eq!(
        first.replayed.as_deref(),
        Some("Err(FragmentInUrl)"),
        "{first:?}"
    );
    // Unreadable input is an error naming the line.
    let err = transcript::replay(
        &format!("{text}{{\"at\":0,\"in\":\"dance\"}}\n"),
        std::time::Instant::now(),
    )
    .unwrap_err();
    assert!(err.message.contains("dance"), "{err}");
    // Lines are counted from 1, empty ones included.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "");
    lines.insert(3, "{\"at\":0,\"in\":\"dance\"}");
    let err = transcript::replay(&lines.join("\n"), std::time::Instant::now()).unwrap_err();
    assert_eq!(err.line, 4, "{err}");
    assert!(transcript::replay("{\"wxsocket_transcript\":99}", std::time::Instant::now()).is_err());
}
/// Tokens in the URL's query are redacted in the request, the `Dial` and the `Connecting`
/// event (the usual names by default, others when named, none with `Redaction::none`), the
/// other parameters kept, and the transcript still replays exactly: the replay dials the URL
/// as written.
#[test]
fn query_tokens_are_redacted_and_the_replay_dials_the_url_as_written() {
    let url = "wss://example.com/ws?room=5&Token=tq-1&session=sq-2";
    for (redaction, hidden, shown) in [
        (Redaction::default(), &["tq-1"][..], &["room=5", "sq-2"][..]),
        (
            Redaction::default().query("SESSION"),
            &["tq-1", "sq-2"][..],
            &["room=5"][..],
        ),
        (Redaction::none(), &[][..], &["room=5", "tq-1", "sq-2"][..]),
    ] {
        let mut sim = Sim::new(SessionConfig::default(), redaction.clone());
        let conn = sim.s.connect(&ConnectOptions::new(url), sim.now).unwrap();
        let (_, mut events) = sim.drain();
        events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
        let text = sim.text();
        for secret in hidden {
            assert!(!text.contains(secret), "{secret} in:\n{text}");
        }
        for kept in shown {
            assert!(text.contains(kept), "{kept} missing from:\n{text}");
        }
        let replay = transcript::replay(&text, Instant::now()).unwrap();
        assert!(replay.is_exact(), "{:#?}", replay.mismatches);
        let Some((_, Event::Connecting { url: dialled, .. })) = replay.events.first() else {
            panic!("{:#?}", replay.events);
        };
        let query = dialled.query().unwrap_or_default();
        assert_eq!(
            query.contains("%3Credacted%3E"),
            !hidden.is_empty(),
            "{query}"
        );
        assert_eq!(events.len(), replay.events.len());
    }
    assert!(Redaction::none().query_names().is_empty());
    assert_eq!(
        Redaction::default().query("Token").query_names().len(),
        transcript::QUERY_DEFAULTS.len()
    );
    // Pairs split at `;` (which the url crate leaves inside a value or a key): a reviewer
    // found such a token recorded in clear, in the connect, the dial and the event.
    for url in [
        "ws://127.0.0.1:9/ws?room=1;token=sek-1;x=2",
        "ws://127.0.0.1:9/ws?a;token=sek-1&room=1",
    ] {
        let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
        sim.s.connect(&ConnectOptions::new(url), sim.now).unwrap();
        sim.drain();
        let text = sim.text();
        assert!(!text.contains("sek-1"), "{url}:\n{text}");
        assert!(text.contains("room"), "{text}");
        let replay = transcript::replay(&text, Instant::now()).unwrap();
        assert!(replay.is_exact(), "{:#?}", replay.mismatches);
    }
}

/// A transcript cut short (the process crashed while the session ran) replays exactly as
/// far as it goes, and says where the session was left; a whole one ends Closed.
#[test]
fn a_transcript_cut_short_says_where_the_session_was_left() {
    let (mut sim, conn) = Sim::open();
    let open = sim.text();
    let replay = transcript::replay(&open, Instant::now()).unwrap();
    assert!(replay.is_exact());
    assert_eq!(replay.final_state, ReadyState::Open);
    sim.input(conn, TransportEvent::Closed);
    let whole = transcript::replay(&sim.text(), Instant::now()).unwrap();
    assert_eq!(whole.final_state, ReadyState::Closed);
    assert_eq!(whole.cut_line, None);

    // A copy taken while the recorder wrote a line ends in part of it: that line is left
    // out and named (a prober's copy was refused whole, "unterminated string"), the rest
    // replays exactly. Only the last line, and only without its line end: a broken line
    // anywhere else is an error.
    let text = sim.text();
    let lines = text.lines().count();
    let last = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    for cut in [last + 1, last + 10, text.len() - 2] {
        let replay = transcript::replay(&text[..cut], Instant::now()).unwrap();
        assert_eq!(replay.cut_line, Some(lines), "cut at {cut}");
        assert!(replay.is_exact(), "{:?}", replay.mismatches);
        assert_eq!(replay.inputs, whole.inputs - 1);
    }
    let broken = format!("{}\n", &text[..last + 10]);
    let e = transcript::replay(&broken, Instant::now()).unwrap_err();
    assert_eq!(e.line, lines);
    let inside = format!("{}{}", &text[..last - 5], &text[last - 1..]);
    assert!(transcript::replay(&inside, Instant::now()).is_err());
}

/// Each way a connection can be routed (the proxy environment, no proxy, a given proxy)
/// is written and read back as it was: the replayed `Dial` equals the recorded one.
#[test]
fn every_proxy_route_replays_exactly() {
    for options in [
        ConnectOptions::new("ws://example.com/"),
        ConnectOptions::new("ws://example.com/").no_proxy(),
        ConnectOptions::new("ws://example.com/").proxy("http://proxy.local:8080"),
        ConnectOptions::new("ws://example.com/").proxy("socks5://proxy.local"),
        ConnectOptions::new("wss://example.com/").proxy("socks5h://u:pw@[::1]:9050"),
    ] {
        let mut sim = Sim::new(SessionConfig::default(), Redaction::default());
        let conn = sim.s.connect(&options, sim.now).unwrap();
        let (_, mut events) = sim.drain();
        events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
        assert_exact(&sim.text(), &events);
    }
}

/// Regressions as files: every transcript under `tests/transcripts/` replays exactly.
#[test]
fn committed_transcripts_replay_exactly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/transcripts");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let replay = transcript::replay(&text, std::time::Instant::now())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(replay.inputs > 0, "{}: no inputs", path.display());
        assert!(
            replay.is_exact(),
            "{}: {:#?}",
            path.display(),
            replay.mismatches
        );
        seen += 1;
    }
    assert!(
        seen >= 2,
        "expected committed transcripts in {}",
        dir.display()
    );
}

/// The lines of a transcript, `block` repeated `times` after `head`, produced as they are
/// read (never held whole), with the largest resident set seen while they were read.
struct Repeated {
    head: std::io::Cursor<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
    times: usize,
    peak_rss_kib: u64,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

impl std::io::Read for Repeated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.head.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        if self.times == 0 {
            return Ok(0);
        }
        let n = (self.block.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        if self.at == self.block.len() {
            self.at = 0;
            self.times -= 1;
            if self.times.is_multiple_of(4096) {
                self.peak_rss_kib = self.peak_rss_kib.max(rss_kib());
            }
        }
        Ok(n)
    }
}

/// A transcript of 100 MiB of messages, read as it is produced: an open session, then
/// 102,400 times the lines of one 1 KiB message received (and its event taken), as `edit`
/// leaves them. Returns the reader and how many messages it holds.
fn a_long_transcript(edit: impl FnOnce(&mut Vec<u8>)) -> (std::io::BufReader<Repeated>, usize) {
    let (mut sim, conn) = Sim::open();
    let head = sim.text();
    sim.later(1);
    let message = Message::text("m".repeat(1024));
    let (_, events) = sim.input(conn, TransportEvent::Message(message));
    assert_eq!(events.len(), 1);
    let mut block = sim.text().as_bytes()[head.len()..].to_vec();
    edit(&mut block);
    let times = 100 * 1024;
    let reader = std::io::BufReader::new(Repeated {
        head: std::io::Cursor::new(head.into_bytes()),
        block,
        at: 0,
        times,
        peak_rss_kib: 0,
    });
    (reader, times)
}

/// A long transcript (an hour of traffic: here 100 MiB of messages) replays from a reader
/// in the memory of one line and the session, not of the file and every event (a prober's
/// 215 MB transcript took 417 MB to replay, and `wxsocket replay` 336 MB).
#[test]
fn a_long_transcript_replays_from_a_reader_in_bounded_memory() {
    use std::io::Read as _;
    let (mut reader, times) = a_long_transcript(|_| {});
    let before = rss_kib();
    let mut messages = 0;
    let replay = transcript::replay_from(&mut reader, Instant::now(), |_, e| {
        messages += usize::from(matches!(e, Event::Message { .. }));
    })
    .unwrap();
    assert!(replay.is_exact(), "{:?}", &replay.mismatches[..1]);
    assert_eq!(messages, times);
    assert!(replay.events.is_empty());
    assert_eq!(reader.read(&mut [0; 1]).unwrap(), 0, "not read to the end");
    let grew = reader.get_ref().peak_rss_kib.saturating_sub(before);
    assert!(grew < 32 * 1024, "the resident set grew by {grew} KiB");
}

/// A long transcript whose replay differs on every message (recorded by another build,
/// say) keeps the first differences and counts the rest: memory stays bounded (a prober
/// noted that every difference was kept, twice the message each).
#[test]
fn a_long_transcript_that_differs_everywhere_replays_in_bounded_memory() {
    let (mut reader, times) = a_long_transcript(|block| {
        // The recorded event says something else than the replay will.
        let last = block
            .iter()
            .rposition(|&b| b == b'm')
            .expect("the recorded message");
        block[last] = b'x';
    });
    let before = rss_kib();
    let replay = transcript::replay_from(&mut reader, Instant::now(), |_, _| {}).unwrap();
    assert!(!replay.is_exact());
    assert_eq!(replay.mismatched, times);
    assert_eq!(replay.mismatches.len(), transcript::MISMATCHES_KEPT);
    let first = &replay.mismatches[0];
    assert!(first.recorded.as_ref().unwrap().contains("mx"), "{first:?}");
    let grew = reader.get_ref().peak_rss_kib.saturating_sub(before);
    assert!(grew < 32 * 1024, "the resident set grew by {grew} KiB");
}

/// A copy cut inside a character of its last line (text is written as it is, not escaped)
/// replays up to that line too (a reviewer's was refused, "not valid UTF-8"); a line that is
/// not UTF-8 anywhere else is an error.
#[test]
fn a_copy_cut_inside_a_character_replays_up_to_that_line() {
    let (mut sim, conn) = Sim::open();
    sim.input(conn, TransportEvent::Message(Message::text("你好世界")));
    let text = sim.text();
    let last = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let at = last + text[last..].find('你').expect("written unescaped") + 1;
    let cut = &text.as_bytes()[..at];
    let replay = transcript::replay_from(cut, Instant::now(), |_, _| {}).unwrap();
    assert_eq!(replay.cut_line, Some(text.lines().count()));
    assert!(replay.is_exact(), "{:?}", replay.mismatches);
    let mut broken = cut.to_vec();
    broken.push(b'\n');
    broken.extend_from_slice(&text.as_bytes()[last..]);
    let e = transcript::replay_from(&broken[..], Instant::now(), |_, _| {}).unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{e}");
}

/// A transcript recorded with delivery acknowledgement records its seed, so the barrier
/// pings' payloads replay exactly; one recorded before there was a seed is refused with
/// an error that says why (its payloads, the counter alone, cannot be made again).
#[test]
fn an_acknowledgement_seed_is_recorded_and_its_absence_explained() {
    let config = SessionConfig::default().acknowledge(Acknowledgement::new().seed(42));
    let sim = Sim::new(config, Redaction::default());
    let text = sim.text();
    let header = text.lines().next().expect("a header");
    assert!(header.contains("\"seed\":42"), "{header}");
    assert!(transcript::replay(&text, Instant::now()).is_ok());
    let old = text.replacen(",\"seed\":42", "", 1);
    let err = transcript::replay(&old, Instant::now()).unwrap_err();
    assert_eq!(err.line, 1, "{err}");
    assert!(
        err.message.contains("missing \"seed\"") && err.message.contains("no seed"),
        "{err}"
    );
}

/// A replay based near the end of the clock (`base` may be any `Instant`: an embedder's
/// simulated clock) whose transcript records an input after it ends is an error naming
/// that line and its time, not the panic of `Instant + Duration` (found by the
/// `transcript` fuzz target, on a committed transcript based at the last instant).
#[test]
fn a_time_past_the_end_of_the_clock_is_an_error() {
    let (mut sim, conn) = Sim::open();
    sim.later(5);
    sim.input(conn, TransportEvent::Message(Message::text("late")));
    let text = sim.text();
    let first_later = text
        .lines()
        .position(|l| l.starts_with("{\"at\":5000000,"))
        .expect("an input 5 ms after the first")
        + 1;
    let base = last_instant() - Duration::from_millis(1);
    let e = transcript::replay(&text, base).unwrap_err();
    assert_eq!(e.line, first_later, "{e}");
    assert!(
        e.message.contains("\"at\" 5000000 ns") && e.message.contains("end of the clock"),
        "{e}"
    );
    let e = transcript::replay_from(text.as_bytes(), base, |_, _| {}).unwrap_err();
    assert_eq!(e.line, first_later, "{e}");
    // From a base with room for it, the same transcript replays exactly.
    let room = last_instant() - Duration::from_secs(1);
    assert!(transcript::replay(&text, room).unwrap().is_exact());
}

/// `reconnect_with` is recorded with its request, its secrets redacted as `connect`'s are
/// (a renewed token in a header and in the query), and replays exactly: the reconnection
/// dials the new request; a refused call is recorded with its error.
#[test]
fn reconnect_with_is_recorded_redacted_and_replays_exactly() {
    let config = SessionConfig::default().reconnect(ReconnectPolicy::default().seed(36));
    let mut sim = Sim::new(config, Redaction::default());
    let conn = sim
        .s
        .connect(
            &ConnectOptions::new("ws://127.0.0.1:9/?token=first-1"),
            sim.now,
        )
        .unwrap();
    let (_, mut events) = sim.drain();
    events.extend(sim.input(conn, TransportEvent::Opened(Box::default())).1);
    let renewed = ConnectOptions::new("ws://127.0.0.1:9/next?token=second-2")
        .header("authorization", "Bearer second-3");
    sim.s.reconnect_with(&renewed, sim.now).unwrap();
    sim.later(10);
    events.extend(sim.input(conn, TransportEvent::Closed).1);
    let (actions, more) = sim.fire();
    events.extend(more);
    let next = actions
        .iter()
        .find_map(|a| match a {
            Action::Dial { conn, request } => Some((*conn, request.url.path().to_owned())),
            _ => None,
        })
        .expect("the reconnection's dial");
    assert_eq!(next.1, "/next");
    events.extend(sim.input(next.0, TransportEvent::Opened(Box::default())).1);
    sim.s.shutdown(sim.now);
    let refused = sim.s.reconnect_with(&renewed, sim.now);
    assert_eq!(refused, Err(ConnectError::ShutDown));
    events.extend(sim.drain().1);
    let text = sim.text();
    assert!(text.contains("\"in\":\"reconnect_with\""), "{text}");
    for secret in ["first-1", "second-2", "second-3"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    // Exact, the replay dialling the URLs as written (the tokens redacted).
    let replay = transcript::replay(&text, Instant::now()).unwrap();
    assert!(replay.is_exact(), "{:#?}", replay.mismatches);
    assert_eq!(replay.events.len(), events.len());
    let paths: Vec<String> = replay
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Connecting { url, .. } => Some(url.path().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(paths, ["/", "/next"]);
}
