//! `wxsocket` / `wxsocket demo`: the mini-program page flow against an embedded echo
//! server, printed as a timeline that explains the session model.
//!
//! Every expectation is checked as it goes: if the library ever behaved differently, the
//! demo says what it expected and exits with status 1.

use crate::DemoArgs;
use crate::backend::{Backend, Kind};
use crate::output::{Out, show_message};
use crate::server;
use crate::server::WireCounters;
use std::cell::Cell;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use wxsocket_core::{
    CloseBeforeOpen, ConnId, ConnectOptions, DeflateParams, Event, Message, REPLACED_REASON,
    ReadyState, SendFailure, SessionConfig,
};

/// How long the embedded server waits before answering a handshake.
const HANDSHAKE_DELAY: Duration = Duration::from_millis(100);
/// The longest any step may wait for an event.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the demo; exit status 0 when every step behaved as the session model says.
pub fn run(args: &DemoArgs) -> ExitCode {
    let kind = if args.blocking {
        Kind::Blocking
    } else {
        Kind::Tokio
    };
    match play(kind) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxsocket demo: unexpected behaviour: {e}");
            ExitCode::from(1)
        }
    }
}

/// One session (one `wx` object) of the demo, with its letter and its events.
struct Stage {
    letter: char,
    backend: Backend,
    events: Receiver<Event>,
    /// The last connection started, named when the session has none in progress.
    last: Cell<Option<ConnId>>,
}

struct Timeline {
    out: Out,
    kind: Kind,
}

fn upper(state: ReadyState) -> String {
    state.name().to_uppercase()
}

impl Timeline {
    fn stage(&self, letter: char, policy: CloseBeforeOpen) -> Result<Stage, String> {
        let (tx, events) = mpsc::sync_channel(crate::backend::EVENT_CHANNEL);
        let session = SessionConfig::default().close_before_open(policy);
        let backend = Backend::start(
            self.kind,
            wxsocket_tokio::Config::new().session(session),
            tx,
            |e| e,
            None,
        )
        .map_err(|e| e.to_string())?;
        Ok(Stage {
            letter,
            backend,
            events,
            last: Cell::new(None),
        })
    }

    fn row(&self, who: &str, text: &str) {
        self.out.line(&format!(
            "{:>8.1} ms  {who:<15} {text}",
            self.out.elapsed_ms_f64()
        ));
    }

    /// A call the page makes, with the session's state right after it.
    fn call(&self, stage: &Stage, text: &str) {
        let who = match stage.backend.current().or(stage.last.get()) {
            Some(conn) => format!("{}#{conn} {}", stage.letter, upper(stage.backend.state())),
            None => format!("{} {}", stage.letter, upper(stage.backend.state())),
        };
        self.row(&who, &format!("-> {text}"));
    }

    fn note(&self, text: &str) {
        self.out.line(&format!("{:29}// {text}", ""));
    }

    fn heading(&self, text: &str) {
        self.out.line("");
        self.out.line(&format!("== {text}"));
    }

    fn event(&self, stage: &Stage, event: &Event) {
        let conn = event.conn();
        let state = match event {
            Event::Connecting { .. } | Event::Reconnecting { .. } => ReadyState::Connecting,
            Event::Open { .. } => ReadyState::Open,
            Event::Close { .. } => ReadyState::Closed,
            _ if stage.backend.current() == Some(conn) => stage.backend.state(),
            _ => ReadyState::Closed,
        };
        let text = match event {
            Event::Connecting { url, .. } => format!("connecting to {url}"),
            Event::Open { handshake, .. } => {
                let protocol = handshake.protocol.as_deref().unwrap_or("none");
                match &handshake.deflate {
                    Some(params) => {
                        format!("onSocketOpen (protocol: {protocol}, compression: {params})")
                    }
                    None => format!("onSocketOpen (protocol: {protocol})"),
                }
            }
            Event::Message { message, .. } => format!("onSocketMessage {}", brief(message)),
            Event::SendCompleted { id, .. } => {
                format!("send {id} written (sendSocketMessage success)")
            }
            Event::SendFailed { id, reason, .. } => {
                format!("send {id} failed: {reason} (sendSocketMessage fail)")
            }
            Event::Error { error, .. } => format!("onSocketError: {error}"),
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => format!("onSocketClose code {code} reason {reason:?} clean={clean}"),
            other => format!("{other:?}"),
        };
        self.row(
            &format!("{}#{conn} {}", stage.letter, upper(state)),
            &format!("<- {text}"),
        );
    }

    /// Prints the stage's events until one matches; fails after [`STEP_TIMEOUT`].
    fn until(
        &self,
        stage: &Stage,
        what: &str,
        mut pred: impl FnMut(&Event) -> bool,
    ) -> Result<Event, String> {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match stage.events.recv_timeout(left) {
                Ok(event) => {
                    self.event(stage, &event);
                    if pred(&event) {
                        return Ok(event);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("no {what} within {STEP_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("the event stream ended before {what}"));
                }
            }
        }
    }

    fn send(&self, stage: &Stage, message: Message) -> Result<(), String> {
        let shown = brief(&message);
        match stage.backend.send(message) {
            Ok(id) => {
                let how = if stage.backend.state() == ReadyState::Connecting {
                    format!("ok, queued as send {id}")
                } else {
                    format!("ok, handed to the socket as send {id}")
                };
                self.call(stage, &format!("sendSocketMessage({shown})  => {how}"));
                Ok(())
            }
            Err(e) => Err(format!("sendSocketMessage({shown}) was refused: {e}")),
        }
    }

    fn connect(&self, stage: &Stage, url: &str) -> Result<ConnId, String> {
        self.connect_with(stage, &ConnectOptions::new(url), &format!("{url:?}"))
    }

    /// `connectSocket` with `options`, shown as `shown`.
    fn connect_with(
        &self,
        stage: &Stage,
        options: &ConnectOptions,
        shown: &str,
    ) -> Result<ConnId, String> {
        let conn = stage
            .backend
            .connect(options)
            .map_err(|e| format!("connectSocket:fail {e}"))?;
        stage.last.set(Some(conn));
        self.call(
            stage,
            &format!("connectSocket({shown})  => connectSocket:ok"),
        );
        Ok(conn)
    }

    /// Sends `message` and waits for its echo, checked; returns the bytes the server's
    /// socket read and wrote meanwhile (the message and its echo on the wire).
    fn round_trip(
        &self,
        stage: &Stage,
        wire: &WireCounters,
        message: Message,
    ) -> Result<(u64, u64), String> {
        let before = (wire.read(), wire.written());
        self.send(stage, message.clone())?;
        let echo = self.until(stage, "echo", |e| matches!(e, Event::Message { .. }))?;
        check(
            matches!(&echo, Event::Message { message: m, .. } if *m == message),
            "the echo differs from the message sent",
        )?;
        Ok((wire.read() - before.0, wire.written() - before.1))
    }
}

/// A message as the timeline shows it: long text cut short, with its size.
fn brief(message: &Message) -> String {
    match message {
        Message::Text(text) if text.as_str().chars().count() > 48 => {
            let start: String = text.as_str().chars().take(32).collect();
            format!("text {} B {start}…", text.as_str().len())
        }
        other => show_message(other),
    }
}

/// The size of a frame carrying `payload` bytes: 2 header bytes, 2 or 8 more for a
/// longer payload, and the 4-byte mask key on frames from the client.
fn frame_size(payload: usize, from_client: bool) -> u64 {
    let length = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    (2 + length + if from_client { 4 } else { 0 } + payload) as u64
}

/// Step 5: perMessageDeflate negotiated, a compressible message and its echo, the bytes on
/// the wire as the embedded server's socket counted them.
fn compression(t: &Timeline, url: &str, wire: &server::WireLog) -> Result<(), String> {
    t.heading("5. perMessageDeflate: compression agreed in the handshake (RFC 7692)");
    let e = t.stage('E', CloseBeforeOpen::Abort)?;
    let target = "/compressed";
    let deflate_url = format!("{}{}", url.trim_end_matches('/'), target);
    let conn = t.connect_with(
        &e,
        &ConnectOptions::new(&deflate_url).per_message_deflate(true),
        &format!("{{url: {deflate_url:?}, perMessageDeflate: true}}"),
    )?;
    t.note(
        "the handshake offers Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, then the same with client_no_context_takeover",
    );
    let open = t.until(&e, "open", |e| matches!(e, Event::Open { .. }))?;
    let Event::Open { handshake, .. } = open else {
        return Err("expected the open event".into());
    };
    let params = handshake
        .deflate
        .ok_or("the server accepts compression, but the socket opened without it")?;
    check(
        params == DeflateParams::default(),
        &format!(
            "expected the default parameters (15-bit windows, context takeover), agreed {params}"
        ),
    )?;
    t.note(&format!(
        "the server answered {:?}: both sides keep their context between messages,",
        handshake.extensions.as_deref().unwrap_or("")
    ));
    t.note(
        "with 32 KiB windows; the page sees plain messages, compression is the socket's business",
    );
    let counters = wire
        .find(target)
        .ok_or("the embedded server has no byte count for the connection")?;

    let json = Message::text(json_like(4096));
    let (plain_up, plain_down) = (frame_size(4096, true), frame_size(4096, false));
    let (up, down) = t.round_trip(&e, &counters, json.clone())?;
    check(
        up < plain_up / 2 && down < plain_down / 2,
        &format!(
            "expected the 4096-byte JSON to take under half its size on the wire, took {up} B and {down} B"
        ),
    )?;
    t.note(&format!(
        "on the wire: {up} B to the server and {down} B back, where the uncompressed frames take \
         {plain_up} B and {plain_down} B"
    ));
    let (again_up, again_down) = t.round_trip(&e, &counters, json)?;
    check(
        again_up < up / 4 && again_down < down / 4,
        &format!(
            "expected the repeated message to refer back to the first, took {again_up} B and {again_down} B"
        ),
    )?;
    t.note(&format!(
        "the same message again: {again_up} B and {again_down} B, as it refers back to the previous one (context takeover)"
    ));
    let (small_up, small_down) = t.round_trip(&e, &counters, Message::text("hi"))?;
    check(
        (small_up, small_down) == (frame_size(2, true), frame_size(2, false)),
        &format!("expected \"hi\" to go uncompressed, took {small_up} B and {small_down} B"),
    )?;
    t.note(&format!(
        "\"hi\" is shorter than the 32-byte threshold: sent as is ({small_up} B and {small_down} B)"
    ));
    e.backend
        .close(None, "")
        .map_err(|e| format!("closeSocket failed: {e}"))?;
    t.call(&e, "closeSocket()  => closeSocket:ok");
    let close = t.until(&e, "close event", |ev| is_close(ev, conn))?;
    check(
        matches!(
            close,
            Event::Close {
                code: 1000,
                clean: true,
                ..
            }
        ),
        "compression: expected a clean close 1000",
    )?;
    Ok(())
}

/// A JSON-like text of exactly `size` bytes (an array of small records, as an API might
/// send): what the compression stage echoes.
fn json_like(size: usize) -> String {
    let mut out = String::from("[");
    for i in 0.. {
        let record = format!(
            "{{\"id\":{},\"name\":\"user-{}\",\"score\":{},\"active\":{}}},",
            1000 + i * 7,
            i % 13,
            (i * 37) % 100,
            i % 3 == 0
        );
        if out.len() + record.len() + 1 > size {
            break;
        }
        out.push_str(&record);
    }
    out.pop();
    out.push(']');
    while out.len() < size {
        out.insert(out.len() - 1, ' ');
    }
    out
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

fn is_close(event: &Event, conn: ConnId) -> bool {
    matches!(event, Event::Close { conn: c, .. } if *c == conn)
}

fn play(kind: Kind) -> Result<(), String> {
    let wire = Arc::new(server::WireLog::default());
    let url = server::start_background(server::Options {
        handshake_delay: HANDSHAKE_DELAY,
        handshake_timeout: None,
        deflate: true,
        log: None,
        wire: Some(Arc::clone(&wire)),
        tls: None,
    })
    .map_err(|e| format!("cannot start the echo server: {e}"))?;
    let t = Timeline {
        out: Out::new(false),
        kind,
    };
    t.out.line(&format!(
        "wxsocket demo: the WeChat mini-program socket model (wx.connectSocket, onSocketOpen, \
         sendSocketMessage, onSocketMessage, closeSocket, onSocketClose) on {}",
        kind.crate_name()
    ));
    t.out.line(&format!(
        "Embedded echo server: {url} (it answers each handshake after {} ms, like a distant server).",
        HANDSHAKE_DELAY.as_millis()
    ));
    t.out.line(
        "Columns: time since start, session letter#connection and its readyState, then \
         -> a call the page makes, <- an event delivered to it, // what the model does.",
    );

    // 1. Connect, and send before open.
    t.heading("1. connectSocket, and three messages sent before the socket is open");
    let a = t.stage('A', CloseBeforeOpen::Abort)?;
    let first = t.connect(&a, &url)?;
    t.note("\"ok\" only means the call was accepted: the dial has started, nothing is open yet");
    t.until(&a, "connecting event", |e| {
        matches!(e, Event::Connecting { .. })
    })?;
    for text in ["one", "two", "three"] {
        t.send(&a, Message::text(text))?;
    }
    t.note("the socket is still CONNECTING, so the session queues them (in order, bounded); the");
    t.note("page WeChat documents had to keep this queue itself and flush it in onSocketOpen");
    t.until(&a, "open", |e| matches!(e, Event::Open { .. }))?;
    t.note("open: the queue is flushed now, in order, before anything sent later");
    let mut echoes = Vec::new();
    t.until(&a, "three echoes", |e| {
        if let Event::Message { message, .. } = e {
            echoes.push(String::from_utf8_lossy(message.as_bytes()).into_owned());
        }
        echoes.len() == 3
    })?;
    check(
        echoes == ["one", "two", "three"],
        &format!("echoes out of order: {echoes:?}"),
    )?;
    t.note("every send got exactly one completion (written), and the echoes came back in order");
    t.send(&a, Message::binary(vec![0xde, 0xad, 0xbe, 0xef]))?;
    t.until(
        &a,
        "binary echo",
        |e| matches!(e, Event::Message { message, .. } if !message.is_text()),
    )?;

    // 2. Close before open, under each policy.
    t.heading("2. closeSocket before onSocketOpen, under the three close-before-open policies");
    t.out.line(
        "   (in WeChat's documents, a closeSocket before onSocketOpen does not close the socket; wxsocket\n    makes this a policy, set per session: one session each)",
    );

    t.heading("2a. session B, policy Abort (the default, what browsers do)");
    let b = t.stage('B', CloseBeforeOpen::Abort)?;
    let conn = t.connect(&b, &url)?;
    t.until(&b, "connecting event", |e| {
        matches!(e, Event::Connecting { .. })
    })?;
    t.send(&b, Message::text("never sent"))?;
    b.backend
        .close(None, "too early")
        .map_err(|e| format!("closeSocket under Abort failed: {e}"))?;
    t.call(&b, "closeSocket()  => closeSocket:ok");
    let mut cancelled = false;
    let close = t.until(&b, "close event", |e| {
        if matches!(
            e,
            Event::SendFailed {
                reason: SendFailure::Cancelled,
                ..
            }
        ) {
            cancelled = true;
        }
        is_close(e, conn)
    })?;
    check(
        matches!(
            close,
            Event::Close {
                code: 1006,
                clean: false,
                ..
            }
        ) && cancelled,
        "Abort: expected the queued send to fail and close 1006, clean=false",
    )?;
    t.note("the dial was cancelled: the queued message failed (never lost silently), close 1006");
    drop(b);

    t.heading("2b. session C, policy AfterOpen (WeChat's documented workaround, built in)");
    let c = t.stage('C', CloseBeforeOpen::AfterOpen)?;
    let conn = t.connect(&c, &url)?;
    t.until(&c, "connecting event", |e| {
        matches!(e, Event::Connecting { .. })
    })?;
    t.send(&c, Message::text("flushed, then closed"))?;
    c.backend
        .close(None, "after open")
        .map_err(|e| format!("closeSocket under AfterOpen failed: {e}"))?;
    t.call(&c, "closeSocket()  => closeSocket:ok");
    t.note("the close is remembered: on open the queue is flushed, then the close frame goes out");
    let close = t.until(&c, "close event", |e| is_close(e, conn))?;
    check(
        matches!(
            close,
            Event::Close {
                code: 1000,
                clean: true,
                ..
            }
        ),
        "AfterOpen: expected a clean close 1000 after open",
    )?;
    t.note(
        "a clean close; replies arriving after our close frame are not delivered (as in browsers)",
    );
    drop(c);

    t.heading("2c. session D, policy Ignore (WeChat's documented race, faithfully)");
    let d = t.stage('D', CloseBeforeOpen::Ignore)?;
    let conn = t.connect(&d, &url)?;
    t.until(&d, "connecting event", |e| {
        matches!(e, Event::Connecting { .. })
    })?;
    t.send(&d, Message::text("still sent"))?;
    match d.backend.close(None, "") {
        Err(e) => t.call(&d, &format!("closeSocket()  => closeSocket:fail {e}")),
        Ok(()) => return Err("Ignore: closeSocket before open should fail".into()),
    }
    t.note("nothing changed: the socket will open anyway");
    t.until(&d, "open", |e| matches!(e, Event::Open { .. }))?;
    d.backend
        .close(None, "closed in onSocketOpen")
        .map_err(|e| format!("closeSocket after open failed: {e}"))?;
    t.call(&d, "closeSocket() inside onSocketOpen  => closeSocket:ok");
    t.note("so the page closes inside onSocketOpen, as WeChat's documented workaround says");
    let close = t.until(&d, "close event", |e| is_close(e, conn))?;
    check(
        matches!(
            close,
            Event::Close {
                code: 1000,
                clean: true,
                ..
            }
        ),
        "Ignore: expected a clean close 1000 after the workaround",
    )?;
    drop(d);

    // 3. Replacement.
    t.heading("3. a second connectSocket on session A replaces the first (one socket at a time)");
    let second = t.connect(&a, &url)?;
    let mut replaced = false;
    t.until(&a, "connecting event of the new socket", |e| {
        if let Event::Close {
            conn,
            code: 1000,
            reason,
            ..
        } = e
        {
            replaced |= *conn == first && reason == REPLACED_REASON;
        }
        matches!(e, Event::Connecting { conn, .. } if *conn == second)
    })?;
    check(
        replaced,
        "replacement: expected the old socket's close event (1000, replaced) first",
    )?;
    t.note(&format!(
        "#{first} got its close event at once; every event of #{first} comes before any of #{second}"
    ));
    t.send(&a, Message::text("hello from the new socket"))?;
    t.until(
        &a,
        "echo on the new socket",
        |e| matches!(e, Event::Message { conn, .. } if *conn == second),
    )?;

    // 4. Clean close.
    t.heading("4. closeSocket with a code and a reason");
    a.backend
        .close(Some(4000), "demo finished")
        .map_err(|e| format!("closeSocket(4000) failed: {e}"))?;
    t.call(
        &a,
        "closeSocket({code: 4000, reason: \"demo finished\"})  => closeSocket:ok",
    );
    t.note("CLOSING: the close frame is sent; the session waits (bounded) for the server's answer");
    let close = t.until(&a, "close event", |e| is_close(e, second))?;
    check(
        matches!(&close, Event::Close { code: 4000, clean: true, reason, .. } if reason == "demo finished"),
        "expected a clean close 4000 \"demo finished\"",
    )?;
    t.note("the server answered with the same code and reason: a clean close");
    match a.backend.send(Message::text("too late")) {
        Err(e) => t.call(
            &a,
            &format!("sendSocketMessage(\"too late\")  => sendSocketMessage:fail {e}"),
        ),
        Ok(_) => return Err("a send after close should fail".into()),
    }
    t.note("calls on a closed socket fail at once, in WeChat's words");

    // 5. Compression.
    compression(&t, &url, &wire)?;

    t.out.line("");
    t.out.line(&format!(
        "Done in {:.0} ms. Next: `wxsocket serve` in one terminal, `wxsocket connect ws://127.0.0.1:9001/` \
         in another (add --json for scripts, --deflate to both for compression, --help for options).",
        t.out.elapsed_ms_f64()
    ));
    Ok(())
}
