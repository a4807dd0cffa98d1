//! Flow control over loopback (SPEC §7): a flooding server is paced by an application that
//! does not take its events, nothing is lost or reordered, and senders wait for room
//! instead of being refused. Every wait is bounded.

mod common;

use common::{WAIT, next, until_open};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wxsocket_tokio::{
    Client, Config, ConnectOptions, Event, Events, Message, ReadyState, SendError, SessionConfig,
};

/// A server that writes `total` numbered messages of `len` bytes as fast as the client
/// takes them, counting how many it got out; it reads (and so answers pings and a close)
/// all along, and keeps the connection open afterwards.
struct Flood {
    url: String,
    /// Messages written so far.
    sent: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Flood {
    async fn start(total: u64, len: usize) -> Flood {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let sent = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let (s, d) = (Arc::clone(&sent), Arc::clone(&done));
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = common::accept(tcp).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
            for n in 0..total {
                let mut payload = format!("{n:08}").into_bytes();
                payload.resize(len.max(8), b'.');
                if tx.feed(WsMessage::binary(payload)).await.is_err() {
                    break;
                }
                if n % 64 == 63 && tx.flush().await.is_err() {
                    break;
                }
                s.store(n + 1, Ordering::Release);
            }
            let _ = tx.flush().await;
            d.store(true, Ordering::Release);
            let _ = reader.await;
        });
        Flood {
            url,
            sent,
            done,
            task,
        }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Acquire)
    }

    /// Waits until the server's writes have made no progress for `quiet` (it is blocked
    /// on a full socket), or it finished; returns whether it is blocked.
    async fn until_blocked(&self, quiet: Duration) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut last = self.sent();
        let mut since = Instant::now();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.done.load(Ordering::Acquire) {
                return false;
            }
            let now = self.sent();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return true;
            }
        }
        panic!("the server neither finished nor blocked within {WAIT:?}");
    }
}

fn number(message: &Message) -> u64 {
    std::str::from_utf8(&message.as_bytes()[..8])
        .unwrap()
        .parse()
        .unwrap()
}

/// Takes events until `count` messages arrived, checking they are 0, 1, 2, … in order.
async fn read_in_order(events: &mut Events, count: u64) {
    let mut expected = 0;
    while expected < count {
        match next(events).await {
            Event::Message { message, .. } => {
                assert_eq!(number(&message), expected, "lost or reordered");
                expected += 1;
            }
            Event::Error { error, .. } => panic!("error while reading: {error}"),
            Event::Close { code, reason, .. } => panic!("closed while reading: {code} {reason}"),
            _ => {}
        }
    }
}

async fn connect(session: SessionConfig, url: &str) -> (Client, Events) {
    let (client, mut events) = Client::new(Config::new().session(session)).unwrap();
    client.connect(&ConnectOptions::new(url)).unwrap();
    until_open(&mut events).await;
    (client, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_pauses_reading_at_the_bound_and_loses_nothing() {
    // 20 000 × 1 KiB = 20 MiB, far more than the loopback socket buffers hold.
    let total = 20_000;
    let flood = Flood::start(total, 1024).await;
    let session = SessionConfig::default().receive_bounds(100, 64 << 10);
    let (client, mut events) = connect(session, &flood.url).await;
    assert!(
        flood.until_blocked(Duration::from_millis(300)).await,
        "the server's writes never blocked"
    );
    let backlog = client.backlog();
    assert!(backlog.messages <= 100, "{backlog:?}");
    // The byte bound may be crossed by the one message that reached it.
    assert!(backlog.bytes < (64 << 10) + 1024, "{backlog:?}");
    assert!(client.stats().read_pauses >= 1);
    assert!(
        flood.sent() < total,
        "the server wrote everything: no backpressure"
    );
    read_in_order(&mut events, total).await;
    assert_eq!(flood.sent(), total);
    assert_eq!(client.state(), ReadyState::Open);
    assert!(client.stats().read_pauses >= 2, "{:?}", client.stats());
}

/// The keepalive of the test below: a short interval, and a pong timeout a loaded machine's
/// scheduling cannot run past (once reading resumes, the pongs must be read in time).
const KEEPALIVE: Duration = Duration::from_millis(30);
const PONG_TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_does_not_end_a_connection_paused_for_the_application() {
    let total = 20_000;
    let flood = Flood::start(total, 1024).await;
    let session = SessionConfig::default()
        .receive_bounds(100, 64 << 10)
        .keepalive(KEEPALIVE, PONG_TIMEOUT);
    let (client, mut events) = connect(session, &flood.url).await;
    assert!(flood.until_blocked(Duration::from_millis(300)).await);
    // The application stays away for three keepalive periods (a ping and its timeout): a
    // session that pinged while paused could not read the pong and would be dead by now.
    tokio::time::sleep(3 * (KEEPALIVE + PONG_TIMEOUT)).await;
    assert_eq!(client.state(), ReadyState::Open);
    read_in_order(&mut events, total).await;
    assert_eq!(client.state(), ReadyState::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_paused_finishes_the_close_handshake() {
    let flood = Flood::start(20_000, 1024).await;
    let session = SessionConfig::default().receive_bounds(100, 64 << 10);
    let (client, mut events) = connect(session, &flood.url).await;
    assert!(flood.until_blocked(Duration::from_millis(300)).await);
    client.close(None, "enough").unwrap();
    // The messages received before the close are still delivered, then a clean close.
    let mut messages = 0;
    loop {
        match next(&mut events).await {
            Event::Message { message, .. } => {
                assert_eq!(number(&message), messages);
                messages += 1;
            }
            Event::Close { clean, code, .. } => {
                assert!(clean, "close not clean ({code})");
                break;
            }
            Event::Error { error, .. } => panic!("{error}"),
            _ => {}
        }
    }
    // Reading paused at the byte bound (64 KiB of 1 KiB messages; up to one batch more when
    // `Events` had taken a batch before the bound was reached), all delivered.
    assert!(messages >= 64, "only {messages} delivered");
}

/// A server that reads slowly: `delay` per message, then reports every payload's first
/// byte and length.
async fn slow_reader(delay: Duration) -> (String, JoinHandle<Vec<(u8, usize)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        let mut seen = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            match message {
                WsMessage::Binary(b) => {
                    seen.push((b[0], b.len()));
                    tokio::time::sleep(delay).await;
                }
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
        seen
    });
    (url, task)
}

/// Samples the client's `buffered_amount` until stopped; returns the largest seen.
fn sample_buffered(client: &Client, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    let client = client.clone();
    tokio::spawn(async move {
        let mut max = 0;
        while !stop.load(Ordering::Acquire) {
            max = max.max(client.buffered_amount());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        max
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_through_the_sink_paces_a_fast_producer() {
    let (url, server) = slow_reader(Duration::from_millis(3)).await;
    let bound = 4 << 20;
    let session = SessionConfig::default()
        .queue_bounds(1024, bound)
        .max_buffered_bytes(bound);
    let (mut client, mut events) = connect(session, &url).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_buffered(&client, Arc::clone(&stop));
    let mut messages =
        futures_util::stream::iter((0..100u8).map(|i| Ok(Message::binary(vec![i; 1 << 20]))));
    tokio::time::timeout(WAIT, client.send_all(&mut messages))
        .await
        .expect("send_all did not finish")
        .expect("a message was refused");
    stop.store(true, Ordering::Release);
    let max = sampler.await.unwrap();
    assert!(max <= bound, "buffered_amount reached {max} > {bound}");
    client.close(None, "").unwrap();
    let seen = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(seen.len(), 100);
    for (i, (first, len)) in seen.into_iter().enumerate() {
        assert_eq!((first, len), (i as u8, 1 << 20));
    }
    // Every completion was delivered too, once.
    let completed = common::until(&mut events, |e| matches!(e, Event::Close { .. }))
        .await
        .iter()
        .filter(|e| matches!(e, Event::SendCompleted { .. }))
        .count();
    assert_eq!(completed, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_wait_for_room_instead_of_failing() {
    let (url, server) = slow_reader(Duration::from_millis(1)).await;
    let bound = 4 << 20;
    let session = SessionConfig::default()
        .queue_bounds(1024, bound)
        .max_buffered_bytes(bound);
    let (client, _events) = connect(session, &url).await;
    let refused = Arc::new(AtomicUsize::new(0));
    let sends: Vec<_> = (0..100u8)
        .map(|i| {
            let (client, refused) = (client.clone(), Arc::clone(&refused));
            tokio::spawn(async move {
                if client
                    .send(Message::binary(vec![i; 1 << 20]))
                    .await
                    .is_err()
                {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for send in sends {
        tokio::time::timeout(WAIT, send).await.unwrap().unwrap();
    }
    assert_eq!(refused.load(Ordering::Relaxed), 0);
    client.close(None, "").unwrap();
    let seen = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(seen.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untaken_completions_make_try_send_refuse_and_send_wait() {
    let (url, _server) = slow_reader(Duration::ZERO).await;
    let session = SessionConfig::default().max_untaken_completions(10);
    let (client, mut events) = connect(session, &url).await;
    // Ten sends complete, and nobody takes their completions.
    for i in 0..10u8 {
        client.send(Message::binary(vec![i])).await.unwrap();
    }
    match client.try_send(Message::binary(vec![10])) {
        Err(SendError::CompletionsFull(m)) => assert_eq!(m.as_bytes(), [10]),
        other => panic!("expected CompletionsFull, got {other:?}"),
    }
    // An awaited send waits until the application takes its events.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send(Message::binary(vec![11])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "send did not wait for room");
    let mut completed = 0;
    while completed < 11 {
        if let Event::SendCompleted { .. } = next(&mut events).await {
            completed += 1;
        }
    }
    tokio::time::timeout(WAIT, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Dropping `Events` discards the completions nobody will take any more: a send waiting
/// for room under their bound goes on at once, with no traffic needed to wake it (the
/// server sends nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_events_lets_a_send_waiting_for_completion_room_go_on() {
    let (url, _server) = slow_reader(Duration::ZERO).await;
    let session = SessionConfig::default().max_untaken_completions(10);
    let (client, events) = connect(session, &url).await;
    for i in 0..10u8 {
        client.send(Message::binary(vec![i])).await.unwrap();
    }
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send(Message::binary(vec![10])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "send did not wait for room");
    drop(events);
    tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the send still waits for room after the events were dropped")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_completion_events_nothing_queues_for_senders() {
    let (url, _server) = slow_reader(Duration::ZERO).await;
    let session = SessionConfig::default()
        .max_untaken_completions(10)
        .send_completions(false);
    let (client, mut events) = connect(session, &url).await;
    for i in 0..100u8 {
        client.send(Message::binary(vec![i])).await.unwrap();
    }
    assert_eq!(client.backlog().completions, 0);
    assert!(events.try_next().is_none(), "a completion event was queued");
}

/// A server that reads nothing until `go` is set, then reports every payload's first byte.
async fn held_reader() -> (String, Arc<AtomicBool>, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let go = Arc::new(AtomicBool::new(false));
    let release = Arc::clone(&go);
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        while !release.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut seen = Vec::new();
        while let Some(Ok(message)) = ws.next().await {
            match message {
                WsMessage::Binary(b) => seen.push(b[0]),
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
        seen
    });
    (url, go, task)
}

/// A client of `held_reader` whose socket and send buffer (256 KiB) are full: the server
/// reads nothing, so once the kernel's buffers are full nothing more is written. Returns
/// the client, its events, how many 64 KiB messages it accepted (numbered from 0) and the
/// last one refused for lack of room.
async fn filled_client(url: &str) -> (Client, Events, u8, Message) {
    let bound = 256 << 10;
    let session = SessionConfig::default()
        .queue_bounds(1024, bound)
        .max_buffered_bytes(bound);
    let (client, events) = connect(session, url).await;
    let mut accepted = 0u8;
    let mut progress = Instant::now();
    let mut refused = None;
    while progress.elapsed() < Duration::from_millis(300) {
        match client.try_send(Message::binary(vec![accepted; 64 << 10])) {
            Ok(_) => {
                accepted += 1;
                progress = Instant::now();
            }
            Err(SendError::BufferFull(message)) => {
                refused = Some(message);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 250, "the socket never filled");
    }
    (
        client,
        events,
        accepted,
        refused.expect("the buffer filled"),
    )
}

/// A send waiting for room when the application closes the connection is refused at once
/// (`Closing`, its message handed back), as a new send is and as the blocking adapter's
/// is; it waited out the close timeout, then said "not connected" (a prober's port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waiting_for_room_is_refused_when_the_application_closes() {
    let (url, _go, _server) = held_reader().await;
    let (client, _events, _, refused) = filled_client(&url).await;
    let waiting = tokio::spawn({
        let client = client.clone();
        let refused = refused.clone();
        async move {
            let start = Instant::now();
            (client.send(refused).await, start.elapsed())
        }
    });
    // The send is waiting for room (the server reads nothing) when the close comes.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the send did not wait for room");
    client.close(None, "done").unwrap();
    let (result, waited) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    match result {
        Err(wxsocket_tokio::SendFailed::Refused(SendError::Closing(message))) => {
            assert_eq!(message, refused)
        }
        other => panic!("expected a refusal while closing, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(5), "refused after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_cancelled_while_waiting_for_room_was_never_taken() {
    let (url, go, server) = held_reader().await;
    let (client, mut events, accepted, _) = filled_client(&url).await;
    // This send waits for room; it is cancelled while it waits.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        client.send(Message::binary(vec![0xEE; 64 << 10])),
    )
    .await;
    assert!(cancelled.is_err(), "the send did not wait for room");
    // An awaited send that was accepted and then dropped is still written: once the
    // server reads and the buffer has drained, its first poll is accepted.
    go.store(true, Ordering::Release);
    let deadline = Instant::now() + WAIT;
    while client.buffered_amount() > 0 {
        assert!(Instant::now() < deadline, "the buffer never drained");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut kept = Box::pin(client.send(Message::binary(vec![0xAA; 16])));
    std::future::poll_fn(|cx| {
        let _ = kept.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    drop(kept);
    let mut completed = 0;
    while completed < usize::from(accepted) + 1 {
        match next(&mut events).await {
            Event::SendCompleted { .. } => completed += 1,
            Event::SendFailed { .. } => panic!("a send failed"),
            _ => {}
        }
    }
    client.close(None, "").unwrap();
    let seen = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    let mut expected: Vec<u8> = (0..accepted).collect();
    expected.push(0xAA);
    assert_eq!(
        seen, expected,
        "the cancelled send was written, or one was lost"
    );
}
