//! Transcripts: every input a [`Session`] receives, written down so that a bug report is one
//! file that replays exactly in a fresh session (SPEC §9).
//!
//! Recording is opt-in: [`Session::start_recording`] hands each line of the transcript to a
//! sink the application gives (to write to a file, a buffer, a log); the core does no IO.
//! Off, it costs one branch per input and no allocation.
//!
//! # The format (version [`FORMAT_VERSION`])
//!
//! JSON lines. The first line is the header:
//! `{"wxsocket_transcript":1,"recorded_by":"wxsocket-core 0.1.0","config":{…},"redacted":["authorization",…],"redacted_query":["access_token",…]}`
//! — the version of the core that recorded it (for the report; not checked), the whole
//! [`SessionConfig`] (the reconnect jitter seed and the acknowledgement seed included, so
//! the backoff delays and the barrier pings' payloads replay exactly), the header names
//! and the URL query parameters whose values were replaced by [`REDACTED`] (`redacted_query` is absent from transcripts of versions that did not
//! redact the query). Then one line
//! per input, in order:
//!
//! ```text
//! {"at":1500000,"in":"handle","conn":1,"event":{"peer_closed":{"code":1000,"reason":"bye"}}}
//! {"at":1500000,"in":"poll_event","out":"Close { conn: ConnId(1), code: 1000, … }"}
//! ```
//!
//! `at` is the input's time in nanoseconds after the first timed input (the session's own
//! clock: a `now` earlier than one seen before counts as the latest, as in the session). `in`
//! names the call: `connect` and `reconnect_with` (the validated request; a reader older
//! than `reconnect_with` refuses a line of it by name), `send`, `ping`, `close`, `shutdown`,
//! `handle` (a [`TransportEvent`] for a connection), `timeout`, and the calls that take
//! output — `poll_action`, `poll_event`, `poll_completion` (taking an event frees
//! flow-control credit, so when the application takes them is an input too) — and
//! `track_completions`. A poll that returned nothing changes nothing and is not written.
//! `out` is what the call returned, as its `Debug` text (with the same redaction): the
//! outputs are there to be compared, not parsed, and a replay compares its own against them.
//! A `connect` or `reconnect_with` whose options fail validation changes nothing and is not
//! written.
//!
//! # Secrets
//!
//! Header values named in the [`Redaction`] (by default `Authorization`, `Cookie`,
//! `Proxy-Authorization` and `Set-Cookie`) are written as [`REDACTED`], in the requests and
//! in the handshake answers, and so are the values of the URL query parameters it names (by
//! default [`QUERY_DEFAULTS`]: `token`, `access_token`, `key`, …), in the requests and the
//! `Connecting` events; proxy credentials are never written (only whether there are any:
//! the replay dials with [`REDACTED`] in their place). The session's behaviour does not
//! depend on any of them, so a redacted transcript still replays exactly. The rest of the
//! URL is written as it was (credentials in it are sent as `Authorization` and so
//! redacted), and so are the messages: a token under another query parameter than those
//! named, or in a message, is in the transcript.
//!
//! # Size
//!
//! A message is written twice, in its input (sent or received) and in the output that
//! reports it (the `Send` action, the `Message` event), binary payloads as hex or escaped
//! bytes: each text message costs about twice its size, each binary one about five and a
//! half times (a 1 MiB binary message sent and echoed back: about 11.5 MB).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::{Duration, Instant};
//! use wxsocket_core::transcript::{self, Redaction};
//! use wxsocket_core::*;
//!
//! let lines = Arc::new(Mutex::new(String::new()));
//! let mut session = Session::new(SessionConfig::default()).unwrap();
//! let sink = Arc::clone(&lines);
//! session.start_recording(Redaction::default(), move |line| {
//!     let mut out = sink.lock().unwrap();
//!     out.push_str(line);
//!     out.push('\n');
//! });
//!
//! let t0 = Instant::now();
//! let options = ConnectOptions::new("ws://127.0.0.1:9000").header("Authorization", "Bearer s3cret");
//! let conn = session.connect(&options, t0).unwrap();
//! while session.poll_action().is_some() {}
//! session.handle(conn, TransportEvent::Opened(Box::default()), t0 + Duration::from_millis(20));
//! while session.poll_event().is_some() {}
//!
//! let text = lines.lock().unwrap().clone();
//! assert!(!text.contains("s3cret"));
//! let replay = transcript::replay(&text, std::time::Instant::now()).unwrap();
//! assert!(replay.is_exact(), "{:?}", replay.mismatches);
//! assert!(matches!(replay.events[1].1, Event::Open { .. }));
//! ```

mod json;

use crate::close::PeerClose;
use crate::config::{Acknowledgement, CloseBeforeOpen, Keepalive, ReconnectPolicy, SessionConfig};
use crate::deflate::{DeflateOptions, DeflateParams};
use crate::event::Event;
use crate::ids::{ConnId, SendId};
use crate::message::{Message, Utf8Payload};
use crate::proxy::{Proxy, ProxyProtocol, ProxyRoute};
use crate::request::HandshakeRequest;
use crate::session::Session;
use crate::transport::{
    Action, DialStage, Handshake, OpenProfile, TransportError, TransportErrorKind, TransportEvent,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The version written in a transcript's header line; [`replay`] refuses any other.
pub const FORMAT_VERSION: u64 = 1;

/// What a redacted header value is written as.
pub const REDACTED: &str = "<redacted>";

/// The header names, and the URL query parameters, whose values a transcript does not
/// contain. The default names the headers `Authorization`, `Cookie`, `Proxy-Authorization`
/// and `Set-Cookie` and the query parameters in [`QUERY_DEFAULTS`]; add the application's
/// own (an API key header, a session token) with [`header`](Self::header) and
/// [`query`](Self::query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redaction {
    names: Vec<HeaderName>,
    /// Lowercase.
    query: Vec<String>,
}

/// The URL query parameters redacted by default (compared without regard to ASCII case):
/// the names tokens and keys usually travel under when a WebSocket authenticates in its
/// URL, as browsers, which cannot set headers on one, make it do.
pub const QUERY_DEFAULTS: &[&str] = &[
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "key",
    "password",
    "secret",
    "sig",
    "signature",
    "token",
];

/// A URL given as text (absolute or relative, well-formed or not) as errors show it: its
/// user information replaced by `***`, and the values of the [`QUERY_DEFAULTS`] parameters
/// by `***`. Errors reach events, logs and transcripts as they are, so a driver that puts
/// a URL from the network into one (a redirect's `Location`) passes it through this.
///
/// ```
/// use wxsocket_core::transcript::redact_url_text;
/// let shown = redact_url_text("wss://u:pw@h/ws?room=5&token=abc");
/// assert_eq!(shown, "wss://***@h/ws?room=5&token=***");
/// assert_eq!(redact_url_text("/next?sig=x#top"), "/next?sig=***#top");
/// ```
pub fn redact_url_text(url: &str) -> String {
    crate::proxy::redact(url)
}

impl Default for Redaction {
    fn default() -> Self {
        Self {
            names: vec![
                http::header::AUTHORIZATION,
                http::header::COOKIE,
                http::header::PROXY_AUTHORIZATION,
                http::header::SET_COOKIE,
            ],
            query: QUERY_DEFAULTS.iter().map(|q| (*q).to_owned()).collect(),
        }
    }
}

impl Redaction {
    /// Redacts nothing (every header value and the URL are written as they were).
    pub fn none() -> Self {
        Self {
            names: Vec::new(),
            query: Vec::new(),
        }
    }

    /// Also redacts the value of URL query parameter `name` (compared without regard to
    /// ASCII case): `wss://host/ws?session=abc` is written as
    /// `wss://host/ws?session=%3Credacted%3E`.
    pub fn query(mut self, name: &str) -> Self {
        let name = name.to_ascii_lowercase();
        if !self.query.contains(&name) {
            self.query.push(name);
        }
        self
    }

    /// The query parameters redacted, lowercase.
    pub fn query_names(&self) -> &[String] {
        &self.query
    }

    fn redacts_query(&self, name: &str) -> bool {
        self.query.iter().any(|q| q.eq_ignore_ascii_case(name))
    }

    /// `url` with the values of the redacted query parameters replaced by
    /// [`REDACTED`] (the query is written again, form-encoded); `url` itself when it has
    /// none of them.
    ///
    /// ```
    /// use wxsocket_core::transcript::Redaction;
    /// let url = url::Url::parse("wss://h/ws?room=5&token=abc").unwrap();
    /// assert_eq!(Redaction::default().url(&url).as_str(), "wss://h/ws?room=5&token=%3Credacted%3E");
    /// ```
    pub fn url<'a>(&self, url: &'a url::Url) -> Cow<'a, url::Url> {
        // The url crate splits the query at `&` only; a pair may hold more split at `;`
        // (`?room=1;token=x`): their keys are looked at too (a reviewer found such a token
        // recorded in clear).
        let secret = |k: &str| self.redacts_query(k);
        let hidden_key = |k: &str| k.split(';').any(secret);
        let within = |v: &str| crate::proxy::redact_pairs(v, secret, REDACTED);
        if !url
            .query_pairs()
            .any(|(k, v)| hidden_key(&k) || within(&v) != v)
        {
            return Cow::Borrowed(url);
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if hidden_key(&k) {
                    REDACTED.to_owned()
                } else {
                    within(&v)
                };
                (k.into_owned(), v)
            })
            .collect();
        let mut out = url.clone();
        out.query_pairs_mut().clear().extend_pairs(pairs);
        Cow::Owned(out)
    }

    /// Also redacts the values of header `name`.
    pub fn header(mut self, name: HeaderName) -> Self {
        if !self.names.contains(&name) {
            self.names.push(name);
        }
        self
    }

    /// The header names redacted.
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    fn headers<'a>(&self, headers: &'a HeaderMap) -> Cow<'a, HeaderMap> {
        if !self.names.iter().any(|n| headers.contains_key(n)) {
            return Cow::Borrowed(headers);
        }
        let mut out = headers.clone();
        for name in &self.names {
            if let http::header::Entry::Occupied(mut entry) = out.entry(name) {
                for value in entry.iter_mut() {
                    *value = HeaderValue::from_static(REDACTED);
                }
            }
        }
        Cow::Owned(out)
    }

    fn request<'a>(&self, request: &'a Arc<HandshakeRequest>) -> Cow<'a, Arc<HandshakeRequest>> {
        match (self.headers(&request.headers), self.url(&request.url)) {
            (Cow::Borrowed(_), Cow::Borrowed(_)) => Cow::Borrowed(request),
            (headers, url) => {
                let mut r = HandshakeRequest::clone(request);
                r.headers = headers.into_owned();
                r.url = url.into_owned();
                Cow::Owned(Arc::new(r))
            }
        }
    }

    fn handshake(&self, handshake: &Handshake) -> Handshake {
        let mut h = handshake.clone();
        h.headers = self.headers(&handshake.headers).into_owned();
        h
    }

    /// The `Debug` text of an action, redacted.
    fn action(&self, action: &Action) -> String {
        match action {
            Action::Dial { request, .. } if matches!(self.request(request), Cow::Owned(_)) => {
                let mut redacted = action.clone();
                if let Action::Dial { request, .. } = &mut redacted {
                    *request = self.request(request).into_owned();
                }
                format!("{redacted:?}")
            }
            other => format!("{other:?}"),
        }
    }

    /// The `Debug` text of an event, redacted (the handshake of `Open` may carry secrets in
    /// its response headers).
    fn event(&self, event: &Event) -> String {
        match event {
            Event::Connecting { url, .. } if matches!(self.url(url), Cow::Owned(_)) => {
                let mut redacted = event.clone();
                if let Event::Connecting { url, .. } = &mut redacted {
                    *url = Arc::new(self.url(url).into_owned());
                }
                format!("{redacted:?}")
            }
            Event::Open { handshake, .. }
                if matches!(self.headers(&handshake.headers), Cow::Owned(_)) =>
            {
                let mut redacted = event.clone();
                if let Event::Open { handshake, .. } = &mut redacted {
                    **handshake = self.handshake(handshake);
                }
                format!("{redacted:?}")
            }
            other => format!("{other:?}"),
        }
    }
}

/// The recording state of a session ([`Session::start_recording`]).
pub(crate) struct Recorder {
    redaction: Redaction,
    sink: Box<dyn FnMut(&str) + Send>,
    /// The first `now` the session saw: offsets are from it.
    base: Option<Instant>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder")
            .field("redaction", &self.redaction)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// One input, as recorded and replayed.
#[derive(Debug, Clone)]
pub(crate) enum Input {
    Connect(Arc<HandshakeRequest>),
    ReconnectWith(Arc<HandshakeRequest>),
    Send(Message),
    Ping(Bytes),
    Close(Option<u16>, String),
    Shutdown,
    Handle(ConnId, TransportEvent),
    Timeout,
    PollAction,
    PollEvent,
    PollCompletion,
    TrackCompletions(bool),
}

/// What a recorded call returned, before it is written.
pub(crate) enum Output<'a> {
    None,
    Debug(&'a dyn fmt::Debug),
    Action(&'a Action),
    Event(&'a Event),
}

impl Output<'_> {
    fn text(&self, redaction: &Redaction) -> Option<String> {
        match self {
            Output::None => None,
            Output::Debug(d) => Some(format!("{d:?}")),
            Output::Action(a) => Some(redaction.action(a)),
            Output::Event(e) => Some(redaction.event(e)),
        }
    }
}

impl Recorder {
    pub(crate) fn new(
        config: &SessionConfig,
        redaction: Redaction,
        mut sink: Box<dyn FnMut(&str) + Send>,
    ) -> Self {
        let header = Value::obj()
            .with("wxsocket_transcript", FORMAT_VERSION)
            .with(
                "recorded_by",
                concat!("wxsocket-core ", env!("CARGO_PKG_VERSION")),
            )
            .with("config", config_json(config))
            .with(
                "redacted",
                Value::Arr(
                    redaction
                        .names
                        .iter()
                        .map(|n| Value::from(n.as_str()))
                        .collect(),
                ),
            )
            .with("redacted_query", redaction.query.clone());
        sink(&header.to_line());
        Self {
            redaction,
            sink,
            base: None,
        }
    }

    /// Writes one input; `now` is the session's clock after it (`None` before any time).
    pub(crate) fn record(&mut self, now: Option<Instant>, input: &Input, output: Output<'_>) {
        let at = match (now, self.base) {
            (Some(now), Some(base)) => now.saturating_duration_since(base),
            (Some(now), None) => {
                self.base = Some(now);
                Duration::ZERO
            }
            (None, _) => Duration::ZERO,
        };
        let mut line = input_json(input, at, &self.redaction);
        if let Some(out) = output.text(&self.redaction) {
            line = line.with("out", out);
        }
        (self.sink)(&line.to_line());
    }
}

// ----- writing -----

fn nanos(d: Duration) -> Value {
    Value::Num(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> Value {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    Value::Str(s)
}

fn headers_json(headers: &HeaderMap, redaction: &Redaction) -> Value {
    let headers = redaction.headers(headers);
    Value::Arr(
        headers
            .iter()
            .map(|(name, value)| {
                let value = match value.to_str() {
                    Ok(s) => Value::from(s),
                    Err(_) => Value::obj().with("bytes", hex(value.as_bytes())),
                };
                Value::Arr(vec![Value::from(name.as_str()), value])
            })
            .collect(),
    )
}

fn deflate_options_json(d: &DeflateOptions) -> Value {
    Value::obj()
        .with("server_no_context_takeover", d.server_no_context_takeover)
        .with("client_no_context_takeover", d.client_no_context_takeover)
        .with("server_max_window_bits", d.server_max_window_bits)
        .with("client_max_window_bits", d.client_max_window_bits)
        .with("threshold", d.threshold)
        .with("level", d.level)
}

fn deflate_params_json(d: &DeflateParams) -> Value {
    Value::obj()
        .with("server_no_context_takeover", d.server_no_context_takeover)
        .with("client_no_context_takeover", d.client_no_context_takeover)
        .with("server_max_window_bits", d.server_max_window_bits)
        .with("client_max_window_bits", d.client_max_window_bits)
}

/// The key a transcript writes a proxy's URL under.
fn proxy_key(protocol: ProxyProtocol) -> &'static str {
    match protocol {
        ProxyProtocol::Http => "http",
        ProxyProtocol::Socks5 => "socks5",
    }
}

fn request_json(r: &HandshakeRequest, redaction: &Redaction) -> Value {
    let proxy = match &r.proxy {
        ProxyRoute::Environment => Value::from("environment"),
        ProxyRoute::Direct => Value::from("direct"),
        // `Display` leaves the credentials out; only whether there are any is written (the
        // replay stands in placeholders, so the requests compare equal).
        // Keyed by protocol (`http`, `socks5`); the URL's scheme tells `socks5h` apart.
        ProxyRoute::Through(p) => Value::obj()
            .with(proxy_key(p.protocol()), p.to_string())
            .with("credentials", p.credentials().is_some()),
    };
    Value::obj()
        .with("url", redaction.url(&r.url).as_str())
        .with("headers", headers_json(&r.headers, redaction))
        .with("protocols", r.protocols.clone())
        .with("tcp_no_delay", r.tcp_no_delay)
        .with(
            "deflate",
            r.per_message_deflate
                .as_ref()
                .map_or(Value::Null, deflate_options_json),
        )
        .with("timeout", r.timeout.map(nanos))
        .with("proxy", proxy)
}

/// The open handshake, every field: a field added to [`Handshake`] is one line here and
/// one in [`handshake_from`].
fn handshake_json(h: &Handshake, redaction: &Redaction) -> Value {
    Value::obj()
        .with("protocol", h.protocol.clone())
        .with("headers", headers_json(&h.headers, redaction))
        .with("extensions", h.extensions.clone())
        .with(
            "deflate",
            h.deflate.as_ref().map_or(Value::Null, deflate_params_json),
        )
        .with("profile", profile_json(&h.profile))
}

/// The dial's timing as the driver measured it, in nanoseconds after the dial began.
fn profile_json(p: &OpenProfile) -> Value {
    Value::obj()
        .with("resolved", nanos(p.resolved))
        .with("connected", nanos(p.connected))
        .with("tls", p.tls.map(nanos))
        .with("request_written", nanos(p.request_written))
        .with("response_received", nanos(p.response_received))
}

fn message_json(m: &Message) -> Value {
    match m {
        Message::Text(t) => Value::obj().with("text", t.as_str()),
        Message::Binary(b) => Value::obj().with("binary", hex(b)),
    }
}

fn error_json(e: &TransportError) -> Value {
    let (kind, status) = match e.kind {
        TransportErrorKind::Connect => ("connect", None),
        TransportErrorKind::Tls => ("tls", None),
        TransportErrorKind::HttpStatus(s) => ("http_status", Some(s)),
        TransportErrorKind::Protocol => ("protocol", None),
        TransportErrorKind::Negotiation => ("negotiation", None),
        TransportErrorKind::InvalidUtf8 => ("invalid_utf8", None),
        TransportErrorKind::MessageTooBig => ("message_too_big", None),
        TransportErrorKind::Io => ("io", None),
        TransportErrorKind::ProxyRefused => ("proxy_refused", None),
    };
    let v = Value::obj().with("kind", kind);
    let v = match status {
        Some(s) => v.with("status", s),
        None => v,
    };
    let v = v.with("message", e.message.as_str());
    match e.retry_after {
        Some(wait) => v.with("retry_after", nanos(wait)),
        None => v,
    }
}

fn transport_json(e: &TransportEvent, redaction: &Redaction) -> Value {
    let one = |k: &'static str, v: Value| Value::obj().with(k, v);
    match e {
        TransportEvent::Opened(h) => one("opened", handshake_json(h, redaction)),
        TransportEvent::ConnectFailed(err) => one("connect_failed", error_json(err)),
        TransportEvent::Message(m) => one("message", message_json(m)),
        TransportEvent::Ping(p) => one("ping", hex(p)),
        TransportEvent::Pong(p) => one("pong", hex(p)),
        TransportEvent::PeerClosed(c) => one(
            "peer_closed",
            Value::obj()
                .with("code", c.code)
                .with("reason", c.reason.as_str()),
        ),
        TransportEvent::SendWritten(id) => one("send_written", Value::Num(id.get())),
        TransportEvent::Error(err) => one("error", error_json(err)),
        TransportEvent::Closed => Value::from("closed"),
        TransportEvent::Receiving => Value::from("receiving"),
        TransportEvent::Sending => Value::from("sending"),
        TransportEvent::CloseWritten => Value::from("close_written"),
        TransportEvent::Dialing(stage) => one("dialing", Value::from(stage.as_str())),
    }
}

fn input_json(input: &Input, at: Duration, redaction: &Redaction) -> Value {
    let v = Value::obj().with("at", nanos(at));
    match input {
        Input::Connect(r) => v
            .with("in", "connect")
            .with("request", request_json(r, redaction)),
        Input::ReconnectWith(r) => v
            .with("in", "reconnect_with")
            .with("request", request_json(r, redaction)),
        Input::Send(m) => v.with("in", "send").with("message", message_json(m)),
        Input::Ping(p) => v.with("in", "ping").with("payload", hex(p)),
        Input::Close(code, reason) => v
            .with("in", "close")
            .with("code", *code)
            .with("reason", reason.as_str()),
        Input::Shutdown => v.with("in", "shutdown"),
        Input::Handle(conn, event) => v
            .with("in", "handle")
            .with("conn", Value::Num(conn.get()))
            .with("event", transport_json(event, redaction)),
        Input::Timeout => v.with("in", "timeout"),
        Input::PollAction => v.with("in", "poll_action"),
        Input::PollEvent => v.with("in", "poll_event"),
        Input::PollCompletion => v.with("in", "poll_completion"),
        Input::TrackCompletions(on) => v.with("in", "track_completions").with("on", *on),
    }
}

fn config_json(c: &SessionConfig) -> Value {
    let close_before_open = match c.close_before_open {
        CloseBeforeOpen::Abort => "abort",
        CloseBeforeOpen::AfterOpen => "after_open",
        CloseBeforeOpen::Ignore => "ignore",
    };
    let keepalive = c.keepalive.as_ref().map_or(Value::Null, |k| {
        Value::obj()
            .with("interval", nanos(k.interval))
            .with("timeout", nanos(k.timeout))
    });
    let reconnect = c.reconnect.as_ref().map_or(Value::Null, |r| {
        Value::obj()
            .with("base", nanos(r.base))
            .with("cap", nanos(r.cap))
            .with("max_attempts", r.max_attempts)
            .with("min_uptime", nanos(r.min_uptime))
            .with("carry_queue", r.carry_queue)
            .with("retry_close_codes", r.retry_close_codes.clone())
            .with("retry_http_4xx", r.retry_http_4xx)
            .with("seed", r.seed)
    });
    let acknowledge = c.acknowledge.as_ref().map_or(Value::Null, |a| {
        Value::obj()
            .with("delay", nanos(a.delay))
            .with("timeout", nanos(a.timeout))
            .with("seed", a.seed)
    });
    Value::obj()
        .with("close_before_open", close_before_open)
        .with("max_queued_messages", c.max_queued_messages)
        .with("max_queued_bytes", c.max_queued_bytes)
        .with("max_buffered_bytes", c.max_buffered_bytes)
        .with("max_message_size", c.max_message_size)
        .with("handshake_timeout", nanos(c.handshake_timeout))
        .with("close_timeout", nanos(c.close_timeout))
        .with("keepalive", keepalive)
        .with("pool_limit", c.pool_limit)
        .with("reconnect", reconnect)
        .with("receive_while_closing", c.receive_while_closing)
        .with("max_received_messages", c.max_received_messages)
        .with("max_received_bytes", c.max_received_bytes)
        .with("max_pool_received_messages", c.max_pool_received_messages)
        .with("max_pool_received_bytes", c.max_pool_received_bytes)
        .with("max_untaken_completions", c.max_untaken_completions)
        .with("send_completions", c.send_completions)
        .with("acknowledge", acknowledge)
}

// ----- reading -----

/// Why a transcript could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transcript line {line}: {message}")]
pub struct TranscriptError {
    /// The line (1-based) that could not be read.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

type Read<T> = Result<T, String>;

fn field<'a>(v: &'a Value, key: &str) -> Read<&'a Value> {
    v.get(key).ok_or_else(|| format!("missing \"{key}\""))
}

fn u64_of(v: &Value, key: &str) -> Read<u64> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| format!("\"{key}\" is not a number"))
}

fn int_of<T: TryFrom<u64>>(v: &Value, key: &str) -> Read<T> {
    T::try_from(u64_of(v, key)?).map_err(|_| format!("\"{key}\" is out of range"))
}

fn opt_int_of<T: TryFrom<u64>>(v: &Value, key: &str) -> Read<Option<T>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => int_of(v, key).map(Some),
    }
}

fn bool_of(v: &Value, key: &str) -> Read<bool> {
    field(v, key)?
        .as_bool()
        .ok_or_else(|| format!("\"{key}\" is not a boolean"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Read<&'a str> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| format!("\"{key}\" is not a string"))
}

fn opt_str_of(v: &Value, key: &str) -> Read<Option<String>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => str_of(v, key).map(|s| Some(s.to_owned())),
    }
}

fn duration_of(v: &Value, key: &str) -> Read<Duration> {
    u64_of(v, key).map(Duration::from_nanos)
}

fn unhex(s: &str) -> Read<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| "bad hex".to_owned())
        })
        .collect()
}

fn bytes_of(v: &Value, key: &str) -> Read<Bytes> {
    unhex(str_of(v, key)?).map(Bytes::from)
}

fn headers_from(v: &Value) -> Read<HeaderMap> {
    let mut headers = HeaderMap::new();
    for pair in v.as_arr().ok_or("headers are not a list")? {
        let [name, value] = pair.as_arr().ok_or("a header is not a pair")? else {
            return Err("a header is not a pair".into());
        };
        let name = HeaderName::from_bytes(name.as_str().ok_or("bad header name")?.as_bytes())
            .map_err(|e| e.to_string())?;
        let value = match value {
            Value::Str(s) => HeaderValue::from_str(s),
            other => HeaderValue::from_bytes(&unhex(str_of(other, "bytes")?)?),
        }
        .map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn deflate_options_from(v: &Value) -> Read<DeflateOptions> {
    Ok(DeflateOptions {
        server_no_context_takeover: bool_of(v, "server_no_context_takeover")?,
        client_no_context_takeover: bool_of(v, "client_no_context_takeover")?,
        server_max_window_bits: opt_int_of(v, "server_max_window_bits")?,
        client_max_window_bits: int_of(v, "client_max_window_bits")?,
        threshold: int_of(v, "threshold")?,
        level: int_of(v, "level")?,
    })
}

fn deflate_params_from(v: &Value) -> Read<DeflateParams> {
    Ok(DeflateParams {
        server_no_context_takeover: bool_of(v, "server_no_context_takeover")?,
        client_no_context_takeover: bool_of(v, "client_no_context_takeover")?,
        server_max_window_bits: int_of(v, "server_max_window_bits")?,
        client_max_window_bits: int_of(v, "client_max_window_bits")?,
    })
}

fn request_from(v: &Value) -> Read<HandshakeRequest> {
    let url = url::Url::parse(str_of(v, "url")?).map_err(|e| e.to_string())?;
    let protocols = field(v, "protocols")?
        .as_arr()
        .ok_or("protocols are not a list")?
        .iter()
        .map(|p| {
            p.as_str()
                .map(str::to_owned)
                .ok_or("a protocol is not a string")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let proxy = match field(v, "proxy")? {
        Value::Str(s) if s == "environment" => ProxyRoute::Environment,
        Value::Str(s) if s == "direct" => ProxyRoute::Direct,
        other => {
            let key = if other.get("socks5").is_some() {
                "socks5"
            } else {
                "http"
            };
            let proxy = Proxy::parse(str_of(other, key)?)?;
            if proxy_key(proxy.protocol()) != key {
                return Err(format!("a {key} proxy's URL is not a {key} proxy's"));
            }
            let credentials = matches!(other.get("credentials"), Some(Value::Bool(true)));
            ProxyRoute::Through(if credentials {
                proxy.with_redacted_credentials()
            } else {
                proxy
            })
        }
    };
    let deflate = match field(v, "deflate")? {
        Value::Null => None,
        d => Some(deflate_options_from(d)?),
    };
    let timeout = match field(v, "timeout")? {
        Value::Null => None,
        _ => Some(duration_of(v, "timeout")?),
    };
    Ok(HandshakeRequest {
        url,
        headers: {
            // As validation marks them, so that the `Dial` replays as it was recorded.
            let mut headers = headers_from(field(v, "headers")?)?;
            crate::request::mark_credentials(&mut headers);
            headers
        },
        protocols,
        tcp_no_delay: bool_of(v, "tcp_no_delay")?,
        per_message_deflate: deflate,
        timeout,
        proxy,
    })
}

/// Reads what [`handshake_json`] wrote.
fn handshake_from(v: &Value) -> Read<Handshake> {
    Ok(Handshake {
        protocol: opt_str_of(v, "protocol")?,
        headers: headers_from(field(v, "headers")?)?,
        extensions: opt_str_of(v, "extensions")?,
        deflate: match field(v, "deflate")? {
            Value::Null => None,
            d => Some(deflate_params_from(d)?),
        },
        profile: profile_from(field(v, "profile")?)?,
    })
}

fn profile_from(v: &Value) -> Read<OpenProfile> {
    let tls = match field(v, "tls")? {
        Value::Null => None,
        _ => Some(duration_of(v, "tls")?),
    };
    Ok(OpenProfile::new(
        duration_of(v, "resolved")?,
        duration_of(v, "connected")?,
        tls,
        duration_of(v, "request_written")?,
        duration_of(v, "response_received")?,
    ))
}

fn message_from(v: &Value) -> Read<Message> {
    if let Some(text) = v.get("text") {
        let text = text.as_str().ok_or("text is not a string")?;
        return Ok(Message::Text(Utf8Payload::from(text)));
    }
    Ok(Message::Binary(bytes_of(v, "binary")?))
}

fn error_from(v: &Value) -> Read<TransportError> {
    let kind = match str_of(v, "kind")? {
        "connect" => TransportErrorKind::Connect,
        "tls" => TransportErrorKind::Tls,
        "proxy_refused" => TransportErrorKind::ProxyRefused,
        "http_status" => TransportErrorKind::HttpStatus(int_of(v, "status")?),
        "protocol" => TransportErrorKind::Protocol,
        "negotiation" => TransportErrorKind::Negotiation,
        "invalid_utf8" => TransportErrorKind::InvalidUtf8,
        "message_too_big" => TransportErrorKind::MessageTooBig,
        "io" => TransportErrorKind::Io,
        other => return Err(format!("unknown error kind \"{other}\"")),
    };
    let error = TransportError::new(kind, str_of(v, "message")?);
    Ok(match v.get("retry_after") {
        None => error,
        Some(_) => error.with_retry_after(duration_of(v, "retry_after")?),
    })
}

fn transport_from(v: &Value) -> Read<TransportEvent> {
    match v.as_str() {
        Some("closed") => return Ok(TransportEvent::Closed),
        Some("receiving") => return Ok(TransportEvent::Receiving),
        Some("sending") => return Ok(TransportEvent::Sending),
        Some("close_written") => return Ok(TransportEvent::CloseWritten),
        _ => {}
    }
    let Value::Obj(members) = v else {
        return Err("a transport event is not an object".into());
    };
    let [(kind, body)] = members.as_slice() else {
        return Err("a transport event has one member".into());
    };
    let wrap = Value::obj().with("x", body.clone());
    Ok(match kind.as_ref() {
        "opened" => TransportEvent::Opened(Box::new(handshake_from(body)?)),
        "connect_failed" => TransportEvent::ConnectFailed(error_from(body)?),
        "message" => TransportEvent::Message(message_from(body)?),
        "ping" => TransportEvent::Ping(bytes_of(&wrap, "x")?),
        "pong" => TransportEvent::Pong(bytes_of(&wrap, "x")?),
        "peer_closed" => TransportEvent::PeerClosed(PeerClose {
            code: opt_int_of(body, "code")?,
            reason: str_of(body, "reason")?.to_owned(),
        }),
        "send_written" => TransportEvent::SendWritten(SendId::from_raw(u64_of(&wrap, "x")?)),
        "error" => TransportEvent::Error(error_from(body)?),
        "dialing" => {
            let name = body.as_str().ok_or("a dial stage is a string")?;
            let stage = DialStage::from_name(name)
                .ok_or_else(|| format!("unknown dial stage \"{name}\""))?;
            TransportEvent::Dialing(stage)
        }
        other => return Err(format!("unknown transport event \"{other}\"")),
    })
}

fn input_from(v: &Value) -> Read<(Duration, Input)> {
    let at = duration_of(v, "at")?;
    let input = match str_of(v, "in")? {
        "connect" => Input::Connect(Arc::new(request_from(field(v, "request")?)?)),
        "reconnect_with" => Input::ReconnectWith(Arc::new(request_from(field(v, "request")?)?)),
        "send" => Input::Send(message_from(field(v, "message")?)?),
        "ping" => Input::Ping(bytes_of(v, "payload")?),
        "close" => Input::Close(opt_int_of(v, "code")?, str_of(v, "reason")?.to_owned()),
        "shutdown" => Input::Shutdown,
        "handle" => Input::Handle(
            ConnId::from_raw(u64_of(v, "conn")?),
            transport_from(field(v, "event")?)?,
        ),
        "timeout" => Input::Timeout,
        "poll_action" => Input::PollAction,
        "poll_event" => Input::PollEvent,
        "poll_completion" => Input::PollCompletion,
        "track_completions" => Input::TrackCompletions(bool_of(v, "on")?),
        other => return Err(format!("unknown input \"{other}\"")),
    };
    Ok((at, input))
}

fn config_from(v: &Value) -> Read<SessionConfig> {
    let mut c = SessionConfig::default();
    c.close_before_open = match str_of(v, "close_before_open")? {
        "abort" => CloseBeforeOpen::Abort,
        "after_open" => CloseBeforeOpen::AfterOpen,
        "ignore" => CloseBeforeOpen::Ignore,
        other => return Err(format!("unknown close_before_open \"{other}\"")),
    };
    c.max_queued_messages = int_of(v, "max_queued_messages")?;
    c.max_queued_bytes = int_of(v, "max_queued_bytes")?;
    c.max_buffered_bytes = int_of(v, "max_buffered_bytes")?;
    c.max_message_size = int_of(v, "max_message_size")?;
    c.handshake_timeout = duration_of(v, "handshake_timeout")?;
    c.close_timeout = duration_of(v, "close_timeout")?;
    c.keepalive = match field(v, "keepalive")? {
        Value::Null => None,
        k => Some(Keepalive {
            interval: duration_of(k, "interval")?,
            timeout: duration_of(k, "timeout")?,
        }),
    };
    c.pool_limit = int_of(v, "pool_limit")?;
    c.reconnect = match field(v, "reconnect")? {
        Value::Null => None,
        r => {
            let codes = field(r, "retry_close_codes")?
                .as_arr()
                .ok_or("retry_close_codes is not a list")?
                .iter()
                .map(|c| c.as_u64().and_then(|c| u16::try_from(c).ok()))
                .collect::<Option<Vec<u16>>>()
                .ok_or("a retry close code is not a code")?;
            Some(
                ReconnectPolicy::default()
                    .backoff(duration_of(r, "base")?, duration_of(r, "cap")?)
                    .max_attempts(opt_int_of(r, "max_attempts")?)
                    // Transcripts from before it was a setting: every open ended the run.
                    .min_uptime(match r.get("min_uptime") {
                        None => Duration::ZERO,
                        Some(_) => duration_of(r, "min_uptime")?,
                    })
                    .carry_queue(bool_of(r, "carry_queue")?)
                    .retry_close_codes(codes)
                    .retry_http_4xx(bool_of(r, "retry_http_4xx")?)
                    .seed(u64_of(r, "seed")?),
            )
        }
    };
    c.receive_while_closing = bool_of(v, "receive_while_closing")?;
    c.max_received_messages = int_of(v, "max_received_messages")?;
    c.max_received_bytes = int_of(v, "max_received_bytes")?;
    c.max_pool_received_messages = int_of(v, "max_pool_received_messages")?;
    c.max_pool_received_bytes = int_of(v, "max_pool_received_bytes")?;
    c.max_untaken_completions = int_of(v, "max_untaken_completions")?;
    c.send_completions = bool_of(v, "send_completions")?;
    c.acknowledge = match field(v, "acknowledge")? {
        Value::Null => None,
        a => Some(
            Acknowledgement::new()
                .delay(duration_of(a, "delay")?)
                .timeout(duration_of(a, "timeout")?)
                .seed(u64_of(a, "seed").map_err(|e| {
                    // Before 2026-12-07 a barrier ping's payload was its counter alone.
                    format!(
                        "acknowledge: {e} (recorded by a version whose barrier pings had no \
                         seed: their payloads cannot be made again)"
                    )
                })?),
        ),
    };
    Ok(c)
}

// ----- replaying -----

/// An output the replay produced that differs from the one recorded alongside its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The transcript line (1-based) of the input.
    pub line: usize,
    /// The output written in the transcript (`None`: nothing was).
    pub recorded: Option<String>,
    /// The output of the replay, in the same form (`None`: nothing came out).
    pub replayed: Option<String>,
}

/// The outcome of [`replay`].
#[derive(Debug)]
#[non_exhaustive]
pub struct Replay {
    /// The configuration of the replayed session (from the header line).
    pub config: SessionConfig,
    /// How many inputs were fed.
    pub inputs: usize,
    /// Every event the replayed session handed out, with its time after the first input,
    /// in order (the events the transcript's `poll_event` lines took); empty from
    /// [`replay_from`], which hands them to its callback instead.
    pub events: Vec<(Duration, Event)>,
    /// Where the replay's outputs differ from the recorded ones, the first
    /// [`MISMATCHES_KEPT`] of them (once a replay has diverged, what follows usually
    /// differs too, and a long transcript would otherwise be held twice over); empty when
    /// it is exact. [`Replay::mismatched`] counts them all.
    pub mismatches: Vec<Mismatch>,
    /// How many outputs differ from the recorded ones, those past the kept
    /// [`Replay::mismatches`] included.
    pub mismatched: usize,
    /// The replayed session's state after the last input: `Connecting`, `Open` or `Closing`
    /// when the transcript ends before the session did (a recording cut short by a crash,
    /// or copied while the session ran). The replay is then exact as far as it goes.
    pub final_state: crate::state::ReadyState,
    /// The last line, when it was left out as cut off mid-way: it has no line end and is
    /// not a whole JSON object (a copy taken while the recorder was writing it). Any
    /// other line that does not parse is an error.
    pub cut_line: Option<usize>,
}

impl Replay {
    /// Whether every output matched the recorded one.
    pub fn is_exact(&self) -> bool {
        self.mismatched == 0
    }
}

/// How many [`Mismatch`]es a [`Replay`] keeps: the first ones, where a replay diverged, are
/// the ones that explain it.
pub const MISMATCHES_KEPT: usize = 100;

/// Feeds a transcript into a fresh [`Session`] (the header's configuration), input by
/// input at its recorded time, and compares every output with the one recorded alongside.
/// Mismatches do not stop the replay; a line that cannot be read does. Empty lines are
/// skipped. `base` stands for the time of the first input: any `Instant` will do (the core
/// reads no clock; only the recorded offsets matter), e.g. `Instant::now()`; an input
/// recorded later after the first than the clock reaches from `base` is an error.
/// [`replay_from`] reads the transcript as it goes instead of holding it.
pub fn replay(text: &str, base: Instant) -> Result<Replay, TranscriptError> {
    let mut events = Vec::new();
    let mut out = replay_from(text.as_bytes(), base, |at, event| {
        events.push((at, event.clone()))
    })?;
    out.events = events;
    Ok(out)
}

/// A line of a transcript being read: its number, its text without the line end (or what
/// is wrong with it), and whether it had a line end.
type Line = (usize, Result<String, String>, bool);

/// [`replay`] reading the transcript line by line from `reader` and handing each event the
/// replayed session gives out to `on_event` (with its time after the first input) instead
/// of keeping it: memory stays that of one line and the session, however long the
/// transcript (a recording of an hour's traffic), and [`Replay::events`] is empty. An
/// unreadable `reader` is an error naming the line it stopped at.
///
/// ```
/// use std::time::Instant;
/// use wxsocket_core::transcript::{self, Redaction};
/// use wxsocket_core::{ConnectOptions, Session, SessionConfig};
/// # use std::sync::{Arc, Mutex};
/// # let lines = Arc::new(Mutex::new(String::new()));
/// # let sink = Arc::clone(&lines);
/// let mut session = Session::new(SessionConfig::default()).unwrap();
/// session.start_recording(Redaction::default(), move |line| {
///     // A file in practice; here a string.
/// #   let mut text = sink.lock().unwrap();
/// #   text.push_str(line);
/// #   text.push('\n');
/// });
/// session.connect(&ConnectOptions::new("ws://127.0.0.1:9"), Instant::now()).unwrap();
/// while session.poll_event().is_some() {}
///
/// // Any `BufRead`: a `BufReader` over a `File` in practice.
/// let text = lines.lock().unwrap().clone();
/// let mut seen = 0;
/// let replay = transcript::replay_from(text.as_bytes(), Instant::now(), |_, _| seen += 1)
///     .unwrap();
/// assert!(replay.is_exact() && replay.events.is_empty());
/// assert_eq!(seen, 1); // the `Connecting` event
/// ```
pub fn replay_from(
    mut reader: impl std::io::BufRead,
    base: Instant,
    mut on_event: impl FnMut(Duration, &Event),
) -> Result<Replay, TranscriptError> {
    let bad = |line: usize| move |message: String| TranscriptError { line, message };
    let mut bytes = Vec::new();
    let mut n = 0;
    // The next line that is not empty: its number, its text without the line end, and
    // whether it had one. A last line without one may be cut off mid-way (inside a
    // character too): its text is then `Err` with what was wrong, for the caller to judge.
    let mut next_line = || -> Result<Option<Line>, TranscriptError> {
        loop {
            bytes.clear();
            n += 1;
            let read = reader
                .read_until(b'\n', &mut bytes)
                .map_err(|e| bad(n)(format!("cannot be read: {e}")))?;
            if read == 0 {
                return Ok(None);
            }
            let terminated = bytes.ends_with(b"\n");
            let text = std::str::from_utf8(&bytes)
                .map(|t| t.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("not UTF-8: {e}"));
            if text.as_ref().is_ok_and(|t| t.trim().is_empty()) {
                continue;
            }
            return Ok(Some((n, text, terminated)));
        }
    };
    let Some((n, header, _)) = next_line()? else {
        return Err(TranscriptError {
            line: 1,
            message: "empty transcript".into(),
        });
    };
    let header = header.and_then(|h| json::parse(&h)).map_err(bad(n))?;
    match header.get("wxsocket_transcript").and_then(Value::as_u64) {
        Some(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(bad(n)(format!(
                "format version {v}; this build reads version {FORMAT_VERSION}"
            )));
        }
        None => return Err(bad(n)("not a wxsocket transcript header".into())),
    }
    let config = field(&header, "config")
        .and_then(config_from)
        .map_err(bad(n))?;
    let mut redaction = Redaction::none();
    for name in field(&header, "redacted")
        .and_then(|r| r.as_arr().ok_or_else(|| "redacted is not a list".into()))
        .map_err(bad(n))?
    {
        let name = name
            .as_str()
            .and_then(|s| HeaderName::from_bytes(s.as_bytes()).ok())
            .ok_or_else(|| bad(n)("bad redacted header name".into()))?;
        redaction = redaction.header(name);
    }
    let mut session = Session::new(config.clone()).map_err(|e| bad(n)(e.to_string()))?;
    let mut out = Replay {
        config,
        inputs: 0,
        events: Vec::new(),
        mismatches: Vec::new(),
        mismatched: 0,
        final_state: crate::state::ReadyState::Idle,
        cut_line: None,
    };
    while let Some((n, text, terminated)) = next_line()? {
        let value = match text.and_then(|t| json::parse(&t)) {
            Ok(value) => value,
            // The last line, without its line end: cut off mid-way.
            Err(_) if !terminated => {
                out.cut_line = Some(n);
                break;
            }
            Err(e) => return Err(bad(n)(e)),
        };
        let (at, input) = input_from(&value).map_err(bad(n))?;
        let recorded = match value.get("out") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| bad(n)("\"out\" is not a string".into()))?
                    .to_owned(),
            ),
        };
        // `base` may be any `Instant`, one near the end of the clock too (an embedder's
        // simulated clock): a recorded time past that end is the transcript's error, not
        // the `Instant + Duration` panic.
        let now = base.checked_add(at).ok_or_else(|| {
            bad(n)(format!(
                "\"at\" {} ns after the first input is past the end of the clock from the \
                 replay's base instant",
                at.as_nanos()
            ))
        })?;
        out.inputs += 1;
        let replayed = match input {
            Input::Connect(r) => Some(format!("{:?}", session.connect_request(r, now))),
            Input::ReconnectWith(r) => {
                Some(format!("{:?}", session.reconnect_with_request(r, now)))
            }
            Input::Send(m) => Some(format!("{:?}", session.send(m, now))),
            Input::Ping(p) => Some(format!("{:?}", session.ping(p, now))),
            Input::Close(code, reason) => Some(format!("{:?}", session.close(code, &reason, now))),
            Input::Shutdown => {
                session.shutdown(now);
                None
            }
            Input::Handle(conn, event) => {
                session.handle(conn, event, now);
                None
            }
            Input::Timeout => {
                session.handle_timeout(now);
                None
            }
            Input::PollAction => session.poll_action().map(|a| redaction.action(&a)),
            Input::PollEvent => session.poll_event().map(|e| {
                let text = redaction.event(&e);
                on_event(at, &e);
                text
            }),
            Input::PollCompletion => session.poll_completion().map(|c| format!("{c:?}")),
            Input::TrackCompletions(on) => {
                session.track_completions(on);
                None
            }
        };
        if recorded != replayed {
            out.mismatched += 1;
            if out.mismatches.len() < MISMATCHES_KEPT {
                out.mismatches.push(Mismatch {
                    line: n,
                    recorded,
                    replayed,
                });
            }
        }
    }
    out.final_state = session.state();
    Ok(out)
}
