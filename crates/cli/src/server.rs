//! The server of `wxsocket serve` and of the demo: tokio-tungstenite's server side,
//! echoing text and binary messages (or, with `broadcast`, sending each one to every
//! client) and answering the client's close frame (tungstenite replies with the same code
//! and reason). With `deflate` it accepts a permessage-deflate offer: the client's
//! compressed messages are inflated before tungstenite reads them
//! (`wxsocket_wire::deflate::Inflater::server`), the replies are compressed
//! (`Compressor::server`). Every connection counts the bytes its socket reads and writes.
//! On shutdown ([`serve_until`]'s signal) every client gets a close frame 1001 and the server
//! waits (bounded) for the close handshakes to finish.

use crate::output::{Out, hex};
pub use crate::server_stream::WireCounters;
use crate::server_stream::{ServerStream, Socket, core_message};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use wxsocket_core::{DeflateOptions, DeflateParams, Message};
use wxsocket_wire::deflate::{Compressor, Inflater};

/// The largest message the server takes, inflated, in one frame or many: `wxsocket
/// connect`'s default `--max-message-size`, which sends each message as one frame
/// (tungstenite's own default frame limit, 16 MiB, refused its messages of 16 to 64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// Messages waiting for one client in broadcast mode; a client that falls this far behind
/// is closed with 1008 rather than buffered without bound.
const BROADCAST_BACKLOG: usize = 4096;

/// How long the clients get to answer the shutdown close frame (from the shutdown signal:
/// writing the frame to a client that does not read counts too).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How much longer than [`SHUTDOWN_GRACE`] the server waits for its connections, so that
/// one that gave up on its client at the grace's end still prints its close line.
const LAST_LINES: Duration = Duration::from_millis(500);

/// How long a client gets to finish its TLS and WebSocket handshakes, unless
/// [`Options::handshake_timeout`] says otherwise.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The close reason sent (with 1008) to a client too slow for the broadcast.
const TOO_SLOW_REASON: &str = "too slow for the broadcast";

/// The close reason sent to every client on shutdown.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long after accepting a TCP connection before answering its handshake
    /// (the demo uses it to stand for a distant server, so the "connecting" phase is seen).
    pub handshake_delay: Duration,
    /// How long a client gets, from its TCP connection (after `handshake_delay`), to finish
    /// its TLS and WebSocket handshakes (`None`: 10 s); one that has not is dropped.
    pub handshake_timeout: Option<Duration>,
    /// Accept permessage-deflate offers.
    pub deflate: bool,
    /// Print each connection and close on this output.
    pub log: Option<Arc<Out>>,
    /// Record each connection's byte counters here.
    pub wire: Option<Arc<WireLog>>,
    /// Serve `wss://` with this TLS configuration (`--tls-cert`, `--client-ca`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What `wxsocket serve` adds to [`Options`].
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// Send every message to every client (the sender included) instead of echoing it.
    pub broadcast: bool,
    /// The sub-protocols the server agrees to, in its preference order (empty: the first
    /// one the client offers).
    pub protocols: Vec<String>,
    /// `--json`: print the connection, message and close events as JSON lines.
    pub json: bool,
}

/// The byte counters of the connections, by request target (path and query), recorded as
/// each handshake is answered (so before the client sees its open event).
#[derive(Debug, Default)]
pub struct WireLog(Mutex<Vec<(String, Arc<WireCounters>)>>);

impl WireLog {
    /// The counters of the latest connection that asked for `target`.
    pub fn find(&self, target: &str) -> Option<Arc<WireCounters>> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .rev()
            .find(|(t, _)| t == target)
            .map(|(_, c)| Arc::clone(c))
    }
}

/// A broadcast client's queue, and the signal that it was dropped for falling behind.
type Outbox = (mpsc::Sender<Message>, Arc<Notify>);

/// What every connection task shares.
struct Shared {
    options: Options,
    serving: Serving,
    /// The clients' outboxes (broadcast mode), by connection number.
    /// Each with the signal that it was dropped for falling behind.
    clients: Mutex<BTreeMap<u64, Outbox>>,
    /// Turns true when the server shuts down.
    shutdown: watch::Receiver<bool>,
    /// The connections this server sent its shutdown close frame (1001).
    closed_on_shutdown: AtomicUsize,
}

impl Shared {
    fn log(&self) -> Option<&Out> {
        self.options.log.as_deref()
    }

    /// A human line (nothing in JSON mode).
    fn human(&self, text: impl FnOnce() -> String) {
        if let Some(out) = self.log()
            && !self.serving.json
        {
            out.stamped(&text());
        }
    }

    /// A JSON event (nothing in human mode).
    fn json(&self, value: impl FnOnce() -> Value) {
        if let Some(out) = self.log()
            && self.serving.json
            && let Value::Object(object) = value()
        {
            out.json(object);
        }
    }
}

/// Accepts connections on `listener` forever (the demo's echo server).
pub async fn serve(listener: TcpListener, options: Options) {
    let (_stop, shutdown) = watch::channel(false);
    serve_until(listener, options, Serving::default(), shutdown).await;
}

/// Accepts connections on `listener` until `shutdown` turns true (or its sender is
/// dropped), then closes every connection with 1001 and waits at most [`SHUTDOWN_GRACE`]
/// for them to finish; a handshake still in progress is dropped. Returns how many
/// connections it closed with 1001.
pub async fn serve_until(
    listener: TcpListener,
    options: Options,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
) -> usize {
    let shared = Arc::new(Shared {
        options,
        serving,
        clients: Mutex::default(),
        shutdown: shutdown.clone(),
        closed_on_shutdown: AtomicUsize::new(0),
    });
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                n += 1;
                tasks.spawn(connection(stream, peer, n, Arc::clone(&shared)));
                // Reap the finished ones, so the set stays as large as the open connections.
                while tasks.try_join_next().is_some() {}
            }
            _ = async { shutdown.wait_for(|stop| *stop).await.is_ok() } => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + LAST_LINES, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    shared.closed_on_shutdown.load(Ordering::Relaxed)
}

/// Binds `127.0.0.1:0` and serves in the background on the shared runtime; returns the
/// `ws://` URL.
pub fn start_background(options: Options) -> std::io::Result<String> {
    let rt = crate::backend::runtime()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let _entered = rt.enter();
    let listener = TcpListener::from_std(listener)?;
    rt.spawn(serve(listener, options));
    Ok(format!("ws://{addr}/"))
}

/// What the handshake callback saw and decided.
#[derive(Debug, Default)]
struct Seen {
    target: String,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

/// The sub-protocol to answer with: the first the client offers that the server accepts
/// (any, when `accepted` is empty).
fn pick_protocol(request: &Request, accepted: &[String]) -> Option<String> {
    let offered: Vec<&str> = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if accepted.is_empty() {
        return offered.first().map(|p| (*p).to_owned());
    }
    accepted
        .iter()
        .find(|a| offered.contains(&a.as_str()))
        .cloned()
}

/// How a connection ended.
enum End {
    /// The client closed (code, reason); clean once the stream ended after it.
    ByClient(u16, String),
    /// The server closed with 1001 on shutdown, or 1008 for a client too slow for the
    /// broadcast (the client's answer arrived when `answered`).
    ByServer(u16, &'static str, bool),
    /// The client broke the protocol (the error): the server sent this close frame and
    /// ended the connection (RFC 6455 §7.1.7).
    Failed(u16, &'static str, String),
    /// An error, or the TCP connection ended without a close frame (`None`).
    Abnormal(Option<String>),
}

/// The close frame that fails a client for `error`, when the error is the client's breach
/// of the protocol (rather than the connection's end).
fn violation(error: &tokio_tungstenite::tungstenite::Error) -> Option<(CloseCode, &'static str)> {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Protocol(_) => Some((CloseCode::Protocol, "protocol error")),
        Error::Utf8(_) => Some((CloseCode::Invalid, "invalid UTF-8")),
        Error::Capacity(_) => Some((CloseCode::Size, "message too big")),
        _ => None,
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, n: u64, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    if !shared.options.handshake_delay.is_zero() {
        tokio::time::sleep(shared.options.handshake_delay).await;
    }
    let handshake_timeout = shared
        .options
        .handshake_timeout
        .unwrap_or(HANDSHAKE_TIMEOUT);
    let handshake_deadline = tokio::time::Instant::now() + handshake_timeout;
    let late = || {
        format!(
            "handshake failed: not finished within {} ms",
            handshake_timeout.as_millis()
        )
    };
    let counters = Arc::new(WireCounters::default());
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = Arc::clone(&seen);
    let deflate = shared.options.deflate;
    let wire_log = shared.options.wire.clone();
    let accepted = shared.serving.protocols.clone();
    let mine = Arc::clone(&counters);
    #[allow(clippy::result_large_err)] // the callback type tungstenite asks for
    let callback = move |request: &Request, mut response: Response| {
        let protocol = pick_protocol(request, &accepted);
        if let Some(protocol) = &protocol
            && let Ok(value) = HeaderValue::from_str(protocol)
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        let mut agreed = None;
        if deflate && let Some((params, value)) = wxsocket_wire::deflate::accept(request.headers())
        {
            response
                .headers_mut()
                .insert("sec-websocket-extensions", value);
            agreed = Some(params);
        }
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Some(wire) = &wire_log {
            let mut all = wire.0.lock().unwrap_or_else(|e| e.into_inner());
            all.push((target.clone(), Arc::clone(&mine)));
        }
        *record.lock().unwrap_or_else(|e| e.into_inner()) = Seen {
            target,
            protocol,
            deflate: agreed,
        };
        Ok::<Response, ErrorResponse>(response)
    };
    let mut stopping = shared.shutdown.clone();
    let socket = match &shared.options.tls {
        None => Socket::Plain(stream),
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(config));
            let accepted = tokio::select! {
                accepted = tokio::time::timeout_at(handshake_deadline, acceptor.accept(stream)) => accepted,
                _ = stopping.wait_for(|stop| *stop) => return,
            };
            let socket = match accepted {
                Ok(Ok(tls)) => {
                    if tls.get_ref().1.peer_certificates().is_some() {
                        shared.human(|| format!("#{n} {peer}: presented a client certificate"));
                    }
                    Ok(Socket::Tls(Box::new(tls)))
                }
                Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                Err(_) => Err(format!("TLS {}", late())),
            };
            match socket {
                Ok(socket) => socket,
                Err(error) => {
                    shared.human(|| format!("#{n} {peer}: {error}"));
                    shared.json(|| json!({"event": "error", "conn": n, "peer": peer.to_string(), "error": error}));
                    return;
                }
            }
        }
    };
    let stream = ServerStream::new(socket, Arc::clone(&counters));
    let handshake = tokio::select! {
        handshake = tokio::time::timeout_at(
            handshake_deadline,
            tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())),
        ) => handshake,
        // A client still in its handshake when the server shuts down is dropped.
        _ = stopping.wait_for(|stop| *stop) => return,
    };
    let mut ws = match handshake {
        Ok(Ok(ws)) => ws,
        failed => {
            let error = match failed {
                Ok(Err(e)) => format!("handshake failed: {e}"),
                _ => late(),
            };
            shared.human(|| format!("#{n} {peer}: {error}"));
            shared.json(
                || json!({"event": "error", "conn": n, "peer": peer.to_string(), "error": error}),
            );
            return;
        }
    };
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    // The client sends no frame before it has the answer: watch its frames, and inflate
    // them, from here on.
    ws.get_mut().watch_frames();
    let mut compressor = seen.deflate.map(|params| {
        ws.get_mut().inflate(Inflater::server(&params, MAX_MESSAGE));
        Compressor::server(&params, DeflateOptions::default().threshold)
    });
    // In the broadcast before the connection is announced: whoever waits for the
    // announcement may count on this client getting every later message.
    let (outbox, mut inbox) = mpsc::channel::<Message>(BROADCAST_BACKLOG);
    let dropped = Arc::new(Notify::new());
    if shared.serving.broadcast {
        let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.insert(n, (outbox, Arc::clone(&dropped)));
    } else {
        drop(outbox);
    }
    shared.human(|| {
        let protocol = seen.protocol.as_deref().unwrap_or("none");
        let compression = match &seen.deflate {
            Some(params) => format!(", compression: {params}"),
            None => String::new(),
        };
        format!(
            "#{n} {peer} connected: GET {} (protocol: {protocol}{compression})",
            seen.target
        )
    });
    shared.json(|| {
        json!({
            "event": "connection",
            "conn": n,
            "peer": peer.to_string(),
            "path": seen.target,
            "protocol": seen.protocol,
            "deflate": seen.deflate.map(|p| json!({
                "server_no_context_takeover": p.server_no_context_takeover,
                "client_no_context_takeover": p.client_no_context_takeover,
                "server_max_window_bits": p.server_max_window_bits,
                "client_max_window_bits": p.client_max_window_bits,
            })),
        })
    });
    let mut shutdown = shared.shutdown.clone();
    let mut watching = true;
    // The close frame this server sent, if it did.
    let mut closing: Option<(u16, &'static str)> = None;
    let mut client_close: Option<(u16, String)> = None;
    let mut replied = 0u64;
    // The close frame sent to a client that broke the protocol.
    let mut violated: Option<(u16, &'static str)> = None;
    // Once this server sent its close frame, the client has SHUTDOWN_GRACE to answer.
    let mut answer_by: Option<tokio::time::Instant> = None;
    let failure = loop {
        if closing.is_some() && answer_by.is_none() {
            answer_by = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
        }
        let unanswered = async {
            match answer_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = unanswered => break Some("the client did not answer the close frame".to_owned()),
            stop = async { shutdown.wait_for(|stop| *stop).await.is_ok() }, if watching && closing.is_none() => {
                watching = false;
                if stop && client_close.is_none() {
                    closing = Some((1001, SHUTDOWN_REASON));
                    match close_on_shutdown(&mut ws, &shared).await {
                        Ok(until) => answer_by = Some(until),
                        Err(e) => break Some(e),
                    }
                }
            }
            outgoing = inbox.recv(), if shared.serving.broadcast && closing.is_none() && client_close.is_none() => {
                let sent = match outgoing {
                    // Waiting for room on a socket the client does not read must not
                    // outlast its place in the broadcast.
                    Some(message) => tokio::select! {
                        sent = ws.send(encode(&mut compressor, message)) => Some(sent),
                        () = dropped.notified() => None,
                    },
                    None => None,
                };
                match sent {
                    Some(Ok(())) => replied += 1,
                    Some(Err(e)) => break Some(e.to_string()),
                    None => {
                        // Dropped from the broadcast for falling behind.
                        closing = Some((1008, TOO_SLOW_REASON));
                        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                        if let Err(e) = send_close(&mut ws, CloseCode::Policy, TOO_SLOW_REASON, until).await {
                            break Some(e);
                        }
                    }
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                    let Some(message) = core_message(message) else { continue };
                    shared.json(|| {
                        let (kind, data) = match &message {
                            Message::Text(t) => ("text", t.as_str().to_owned()),
                            other => ("binary", hex(other.as_bytes())),
                        };
                        json!({"event": "message", "conn": n, "type": kind, "data": data})
                    });
                    if closing.is_some() {
                        // Data after our close frame: read, not answered.
                        continue;
                    }
                    if shared.serving.broadcast {
                        broadcast(&shared, message);
                    } else {
                        // A client that does not read leaves the echo waiting for room:
                        // the shutdown still reaches it (the close frame queues behind the
                        // echo, within the grace).
                        let stop = async { shutdown.wait_for(|stop| *stop).await.is_ok() };
                        let sent = tokio::select! {
                            sent = ws.send(encode(&mut compressor, message)) => Some(sent),
                            true = stop, if watching => None,
                        };
                        match sent {
                            Some(Ok(())) => replied += 1,
                            Some(Err(e)) => break Some(e.to_string()),
                            None => {
                                watching = false;
                                closing = Some((1001, SHUTDOWN_REASON));
                                match close_on_shutdown(&mut ws, &shared).await {
                                    Ok(until) => answer_by = Some(until),
                                    Err(e) => break Some(e),
                                }
                            }
                        }
                    }
                }
                Some(Ok(WsMessage::Close(frame))) => {
                    // tungstenite queues the reply; the next read flushes it and ends the
                    // stream.
                    let sent = ws.get_ref().client_close_code();
                    let invalid = |c: &u16| !wxsocket_core::close::is_valid_from_peer(*c);
                    if let Some(code) = sent.filter(invalid)
                        && closing.is_none()
                    {
                        // A code the client may not send: tungstenite answers 1002 itself
                        // and hands that answer on as if it were the client's. The client
                        // broke the protocol (RFC 6455 §7.4.1); the answer is the failing
                        // close frame.
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.flush()).await;
                        violated = Some((u16::from(CloseCode::Protocol), "Protocol violation"));
                        break Some(format!("invalid close code {code}"));
                    }
                    if closing.is_none() {
                        client_close = Some(match frame {
                            Some(f) => (u16::from(f.code), f.reason.to_string()),
                            None => (u16::from(CloseCode::Status), String::new()),
                        });
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if let Some((code, reason)) = violation(&e)
                        && closing.is_none()
                        && client_close.is_none()
                    {
                        // Best effort: the client learns why, unless it does not read.
                        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
                        if send_close(&mut ws, code, reason, until).await.is_ok() {
                            violated = Some((u16::from(code), reason));
                        }
                    }
                    break Some(e.to_string());
                }
                None => break None,
            },
        }
    };
    if shared.serving.broadcast {
        let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.remove(&n);
    }
    let end = match (closing, client_close, failure, violated) {
        (Some((code, reason)), _, None, _) => End::ByServer(code, reason, true),
        (Some((code, reason)), _, Some(_), _) => End::ByServer(code, reason, false),
        (None, Some((code, reason)), _, _) => End::ByClient(code, reason),
        (None, None, Some(error), Some((code, reason))) => End::Failed(code, reason, error),
        (None, None, failure, _) => End::Abnormal(failure),
    };
    let plural = if replied == 1 { "" } else { "s" };
    let verb = if shared.serving.broadcast {
        "sent"
    } else {
        "echoed"
    };
    shared.human(|| {
        let how = match &end {
            End::ByClient(code, reason) => format!("closed by the client: {code} {reason:?}"),
            End::ByServer(code, reason, true) => format!("closed by the server: {code} {reason:?}"),
            End::ByServer(code, reason, false) => {
                format!("closed by the server: {code} {reason:?}, not answered")
            }
            End::Failed(code, reason, error) => {
                format!("failed: {error}; closed by the server: {code} {reason:?}")
            }
            End::Abnormal(Some(error)) => format!("ended: {error}"),
            End::Abnormal(None) => "ended without a close frame".to_owned(),
        };
        format!(
            "#{n} {peer} {how} ({replied} message{plural} {verb}; on the wire, handshake included: {} B read, {} B written)",
            counters.read(),
            counters.written()
        )
    });
    shared.json(|| {
        let (code, reason, clean, by) = match &end {
            End::ByClient(code, reason) => (*code, reason.clone(), true, "client"),
            End::ByServer(code, reason, answered) => {
                (*code, (*reason).to_owned(), *answered, "server")
            }
            End::Failed(code, reason, _) => (*code, (*reason).to_owned(), false, "server"),
            End::Abnormal(_) => (1006, String::new(), false, "none"),
        };
        let error = match &end {
            End::Abnormal(Some(error)) | End::Failed(_, _, error) => Some(error.clone()),
            _ => None,
        };
        json!({
            "event": "close",
            "conn": n,
            "code": code,
            "reason": reason,
            "clean": clean,
            "by": by,
            "error": error,
            "messages_sent": replied,
            "bytes_read": counters.read(),
            "bytes_written": counters.written(),
        })
    });
}

/// Sends the shutdown's close frame (1001) within the grace from now, and counts it once
/// written. Returns when the client's answer is due, or why the frame was not sent.
async fn close_on_shutdown(
    ws: &mut tokio_tungstenite::WebSocketStream<ServerStream<Socket>>,
    shared: &Shared,
) -> Result<tokio::time::Instant, String> {
    let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    send_close(ws, CloseCode::Away, SHUTDOWN_REASON, until).await?;
    shared.closed_on_shutdown.fetch_add(1, Ordering::Relaxed);
    Ok(until)
}

/// Sends a close frame, giving up at `until` if the socket has no room (a client that
/// does not read).
async fn send_close(
    ws: &mut tokio_tungstenite::WebSocketStream<ServerStream<Socket>>,
    code: CloseCode,
    reason: &'static str,
    until: tokio::time::Instant,
) -> Result<(), String> {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    match tokio::time::timeout_at(until, ws.close(Some(frame))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the close frame could not be written: the client is not reading".into()),
    }
}

/// A message as this connection's socket sends it (compressed when agreed).
fn encode(compressor: &mut Option<Compressor>, message: Message) -> WsMessage {
    match compressor {
        Some(c) => c.encode(message),
        None => wxsocket_wire::convert::to_ws(message),
    }
}

/// Hands `message` to every client's outbox; a client whose outbox is full is dropped from
/// the broadcast (its task sees the channel end, or the signal while it waits to write)
/// and closed with 1008.
fn broadcast(shared: &Shared, message: Message) {
    let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
    clients.retain(
        |_, (outbox, dropped)| match outbox.try_send(message.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_) | mpsc::error::TrySendError::Closed(_)) => {
                dropped.notify_one();
                false
            }
        },
    );
}

/// The server's WebSocket limits ([`MAX_MESSAGE`]).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}
