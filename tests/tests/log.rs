//! Both adapters log alike: the same `tracing` records (target `wxsocket`, message, fields)
//! at the same points of a connection's life, inside a `connection` span that carries the
//! URL. One test in its own binary, because it installs the process-wide subscriber that
//! the adapters' driver threads and tasks log to.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Event as TraceEvent, Metadata, Subscriber};
use wxsocket_core::{ConnectOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::peer::{Mode, Peer};
use wxsocket_tests::scenario::{client, messages, open};

/// A record's or span's fields, name and value, in order.
type FieldList = Vec<(String, String)>;

/// Records or spans reduced to their message (or name) and field names.
type Shape = Vec<(String, Vec<String>)>;

/// One record: its message and its fields (`message` left out), in order.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    message: String,
    fields: FieldList,
}

#[derive(Default)]
struct Fields(FieldList);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }
}

/// Keeps every record of target `wxsocket`, and the fields of every span opened.
#[derive(Default)]
struct Capture {
    lines: Mutex<Vec<Line>>,
    spans: Mutex<HashMap<u64, (String, FieldList)>>,
    next_span: AtomicU64,
}

/// The subscriber installed: the capture, shared with the test.
struct Installed(Arc<Capture>);

impl Subscriber for Installed {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target() == "wxsocket"
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next_span.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = Fields::default();
        span.record(&mut fields);
        self.0
            .spans
            .lock()
            .unwrap()
            .insert(id, (span.metadata().name().to_string(), fields.0));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &SpanValues<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &TraceEvent<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let (message, fields): (Vec<_>, Vec<_>) = fields
            .0
            .into_iter()
            .partition(|(name, _)| name == "message");
        self.0.lines.lock().unwrap().push(Line {
            message: message.into_iter().map(|(_, v)| v).collect(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Capture {
    fn take(&self) -> (Vec<Line>, Vec<(String, FieldList)>) {
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let spans = std::mem::take(&mut *self.spans.lock().unwrap());
        let mut spans: Vec<_> = spans.into_iter().collect();
        spans.sort_by_key(|(id, _)| *id);
        (lines, spans.into_iter().map(|(_, s)| s).collect())
    }
}

/// A connection's life on adapter `A`: open, one echo, a clean close; then what was
/// logged, with the values that differ from run to run (addresses, the port, the
/// error text) reduced to their field names.
fn one_connection<A: Adapter>(capture: &Capture) -> (Shape, Shape) {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(SessionConfig::default().close_timeout(Duration::from_secs(2)));
    let _ = capture.take();
    // A token in the URL's query stays out of the log; the rest of the URL is in it.
    let with_token = format!("{}?room=5&token=s3cret-token", peer.url());
    let (conn, _) = open(&mut a, &ConnectOptions::new(with_token));
    a.try_send(Message::text("hello")).unwrap();
    let seen = a.events_until("the echo", EVENT_TIMEOUT, |seen| !messages(seen).is_empty());
    assert_eq!(messages(&seen), vec![Message::text("hello")]);
    a.close(None, "").unwrap();
    let seen = a.events_until_close(conn, EVENT_TIMEOUT);
    assert!(
        matches!(seen.last(), Some(Event::Close { clean: true, .. })),
        "[{}] {seen:#?}",
        A::NAME
    );
    // The transport is released after the close event; wait for its record.
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    while !capture
        .lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.message == "transport gone")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "[{}] no `transport gone` record",
            A::NAME
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let (lines, spans) = capture.take();
    let url = peer.url();
    for (name, fields) in &spans {
        assert_eq!(name, "connection", "[{}]", A::NAME);
        assert!(
            fields.contains(&("conn".into(), conn.to_string()))
                && fields.iter().any(|(n, v)| n == "url" && v.contains(&url)),
            "[{}] the span names the connection and its URL: {fields:?}",
            A::NAME
        );
    }
    let values = lines
        .iter()
        .flat_map(|l| &l.fields)
        .chain(spans.iter().flat_map(|(_, fields)| fields));
    for (name, value) in values {
        assert!(
            !value.contains("s3cret-token"),
            "[{}] the token is logged in {name}: {value}",
            A::NAME
        );
    }
    assert!(
        spans
            .iter()
            .flat_map(|(_, f)| f)
            .any(|(n, v)| n == "url" && v.contains("room=5&token=%3Credacted%3E")),
        "[{}] the span's URL keeps the query, the token's value redacted: {spans:?}",
        A::NAME
    );
    let shape = |fields: &[(String, String)]| fields.iter().map(|(n, _)| n.clone()).collect();
    for line in &lines {
        assert!(
            line.fields.contains(&("conn".into(), conn.to_string())),
            "[{}] every record names its connection: {line:?}",
            A::NAME
        );
    }
    (
        lines
            .iter()
            .map(|l| (l.message.clone(), shape(&l.fields)))
            .collect(),
        spans
            .iter()
            .map(|(name, fields)| (name.clone(), shape(fields)))
            .collect(),
    )
}

#[test]
fn both_adapters_log_a_connection_alike() {
    let capture = Arc::new(Capture::default());
    tracing::subscriber::set_global_default(Installed(Arc::clone(&capture))).unwrap();
    let tokio = one_connection::<TokioAdapter>(&capture);
    let blocking = one_connection::<BlockingAdapter>(&capture);
    let messages: Vec<&str> = tokio.0.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        messages,
        ["dial", "open", "send", "close", "transport gone"],
        "tokio's records"
    );
    assert_eq!(tokio, blocking, "the two adapters' records and spans");
    assert_eq!(tokio.1.len(), 1, "one connection span: {:?}", tokio.1);
}
