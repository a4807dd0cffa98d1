//! The wx-style surface over loopback: the seven calls, callbacks in order on the
//! driver task, re-entrant calls from callbacks, WeChat's error messages.

mod common;

use common::*;
use tokio::sync::mpsc;
use wxsocket_tokio::wx::{CloseSocket, ConnectSocket, SendSocketMessage, WxSocket};
use wxsocket_tokio::{Config, ConnectOptions, DeflateOptions, Message, ReadyState};

async fn recv(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a callback within the wait")
        .expect("callbacks alive")
}

#[tokio::test]
async fn seven_calls_over_a_real_socket() {
    let server = Server::start(Behaviour {
        echo: true,
        ..Behaviour::default()
    })
    .await;
    let (tx, mut log) = mpsc::unbounded_channel::<String>();
    let wx = WxSocket::new(Config::default()).unwrap();

    // Before any connect: WeChat's words, through `fail` and `complete`.
    let (t1, t2) = (tx.clone(), tx.clone());
    let refused = wx
        .send_socket_message(
            SendSocketMessage::new("too early")
                .fail(move |r| t1.send(format!("fail: {r}")).unwrap())
                .complete(move |r| t2.send(format!("complete: {r}")).unwrap()),
        )
        .unwrap_err();
    assert_eq!(
        refused.err_msg,
        "sendSocketMessage:fail WebSocket is not connected"
    );
    assert_eq!(
        recv(&mut log).await,
        "fail: sendSocketMessage:fail WebSocket is not connected"
    );
    assert_eq!(
        recv(&mut log).await,
        "complete: sendSocketMessage:fail WebSocket is not connected"
    );

    // Listeners; the open listener calls back into the socket (WeChat's pattern).
    let weak = wx.downgrade();
    let t = tx.clone();
    wx.on_socket_open(move |res| {
        // The dial's timing, measured over the real socket (`res.profile`): no TLS for ws://.
        let p = res.profile;
        let measured = p.response_received > p.request_written && p.tls.is_none();
        t.send(format!(
            "open {:?}, profile measured: {measured}",
            res.protocol
        ))
        .unwrap();
        let wx = weak.upgrade().expect("socket alive");
        let t = t.clone();
        wx.send_socket_message(
            SendSocketMessage::new(Message::binary(vec![1, 2, 3]))
                .success(move |r| t.send(format!("sent from open: {r}")).unwrap()),
        )
        .unwrap();
    });
    let (t, weak) = (tx.clone(), wx.downgrade());
    wx.on_socket_message(move |res| {
        t.send(format!("message {:?}", res.data)).unwrap();
        if !res.data.is_text() {
            weak.upgrade()
                .unwrap()
                .close_socket(CloseSocket::with(4000, "enough"))
                .unwrap();
        }
    });
    let t = tx.clone();
    wx.on_socket_close(move |res| {
        t.send(format!("close {} {} {}", res.code, res.reason, res.clean))
            .unwrap()
    });
    let t = tx.clone();
    wx.on_socket_error(move |res| t.send(format!("error {}", res.err_msg)).unwrap());

    let t = tx.clone();
    wx.connect_socket(
        ConnectSocket::new(ConnectOptions::new(&server.url))
            .success(move |r| t.send(format!("connect: {r}")).unwrap()),
    )
    .unwrap();
    assert_eq!(wx.state(), ReadyState::Connecting);
    // Queued before open, written after.
    let t = tx.clone();
    wx.send_socket_message(
        SendSocketMessage::new("queued")
            .success(move |r| t.send(format!("sent queued: {r}")).unwrap()),
    )
    .unwrap();

    let mut lines = Vec::new();
    for _ in 0..7 {
        lines.push(recv(&mut log).await);
    }
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("{line:?} missing from {lines:?}"))
    };
    // Call results and listeners in causal order (sends complete before their echoes).
    assert_eq!(at("connect: connectSocket:ok"), 0);
    assert_eq!(at("open None, profile measured: true"), 1);
    assert!(at("sent queued: sendSocketMessage:ok") < at("message Text(\"queued\")"));
    assert!(
        at("sent from open: sendSocketMessage:ok") < at("message Binary(b\"\\x01\\x02\\x03\")")
    );
    assert_eq!(at("close 4000 enough true"), 6);
    assert_eq!(wx.state(), ReadyState::Closed);
    drop(wx);
    drop(tx);
    // Nothing else was reported (no error), and the driver let go of every callback.
    assert_eq!(tokio::time::timeout(WAIT, log.recv()).await.unwrap(), None);
}

#[tokio::test]
async fn unsupported_options_fail_in_the_seed_style() {
    let wx = WxSocket::new(Config::default()).unwrap();
    let (tx, mut log) = mpsc::unbounded_channel::<String>();
    let err = wx
        .connect_socket(
            ConnectSocket::new(
                ConnectOptions::new("ws://127.0.0.1:9/")
                    .deflate(DeflateOptions::default().server_max_window_bits(Some(16))),
            )
            .fail(move |r| tx.send(r.err_msg.clone()).unwrap()),
        )
        .unwrap_err();
    assert!(
        err.err_msg
            .starts_with("connectSocket:fail perMessageDeflate: server_max_window_bits=16"),
        "{err}"
    );
    assert_eq!(recv(&mut log).await, err.err_msg);
    let err = wx.close_socket(CloseSocket::new()).unwrap_err();
    assert_eq!(err.err_msg, "closeSocket:fail WebSocket is not connected");
}

/// A queued send's `success` callback holds the last handle of the socket, and the send
/// fails (the handshake times out): the callback that does not run is dropped outside the
/// driver's lock, after `complete` ran. Dropped under the lock, the last handle's drop (a
/// shutdown, which takes that lock) deadlocked the driver and, with it, the runtime's
/// workers: this test waits on a plain channel, not on the runtime.
#[test]
fn a_failed_send_whose_callbacks_hold_the_last_handle_does_not_deadlock() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tx, done) = std::sync::mpsc::channel::<String>();
    runtime.block_on(async {
        // The listener task outlives its handle (dropping a JoinHandle detaches it).
        let (url, _server) = silent_server().await;
        let wx = WxSocket::new(Config::default()).unwrap();
        let options = ConnectOptions::new(url).timeout(std::time::Duration::from_millis(300));
        wx.connect_socket(ConnectSocket::new(options)).unwrap();
        let last = wx.clone();
        wx.send_socket_message(
            SendSocketMessage::new("queued")
                .success(move |_| drop(last))
                .complete(move |r| tx.send(format!("complete: {r}")).unwrap()),
        )
        .unwrap();
    });
    let done = done.recv_timeout(WAIT);
    // A deadlocked worker would hold up the runtime's drop.
    runtime.shutdown_background();
    let done = done.expect("complete did not run: the driver is stuck");
    assert!(
        done.starts_with("complete: sendSocketMessage:fail"),
        "the failed send's complete callback: {done}"
    );
}

/// A shutdown while 300 sends wait for the connection (more than the driver turns into
/// callbacks at a time): every send's `complete` runs before `shutdown` returns (those past
/// the first batch were left behind). A call after the shutdown runs its own `fail` and
/// `complete` before it returns, since no driver is left to run them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_runs_every_callback_it_makes_due_and_later_calls_run_theirs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const SENDS: usize = 300;
    let (url, _server) = silent_server().await;
    let wx = WxSocket::new(Config::default()).unwrap();
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new(url)))
        .unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    for i in 0..SENDS {
        let c = Arc::clone(&completed);
        wx.send_socket_message(SendSocketMessage::new(format!("m{i}")).complete(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        }))
        .unwrap();
    }
    tokio::time::timeout(WAIT, wx.shutdown())
        .await
        .expect("shutdown in time");
    assert_eq!(completed.load(Ordering::SeqCst), SENDS);
    let (tx, mut log) = mpsc::unbounded_channel::<String>();
    let (t1, t2) = (tx.clone(), tx);
    wx.send_socket_message(
        SendSocketMessage::new("late")
            .fail(move |r| t1.send(format!("fail: {r}")).unwrap())
            .complete(move |r| t2.send(format!("complete: {r}")).unwrap()),
    )
    .unwrap_err();
    let ran: Vec<String> = std::iter::from_fn(|| log.try_recv().ok()).collect();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_send_failed(&ran);
}

/// The first two callbacks logged are a failed send's `fail` and `complete`, in order.
fn assert_send_failed(ran: &[String]) {
    assert!(
        ran.len() >= 2
            && ran[0].starts_with("fail: sendSocketMessage:fail")
            && ran[1].starts_with("complete: sendSocketMessage:fail"),
        "{ran:?}"
    );
}

/// A socket made on a runtime that is dropped before it ran anything, while it dials
/// with a message queued: the driver task goes with the runtime unpolled, and the
/// callbacks that ending makes due still run (the send's `fail` and `complete`,
/// `onSocketClose` with 1006). Before, they never ran and the socket stayed `Connecting`.
#[test]
fn a_socket_whose_runtime_is_dropped_still_runs_its_last_callbacks() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, log) = std::sync::mpsc::channel::<String>();
    let wx = {
        let _on_runtime = runtime.enter();
        WxSocket::new(Config::default()).unwrap()
    };
    let t = tx.clone();
    wx.on_socket_close(move |res| t.send(format!("close {}", res.code)).unwrap());
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new("ws://127.0.0.1:9/")))
        .unwrap();
    let (t1, t2) = (tx.clone(), tx);
    wx.send_socket_message(
        SendSocketMessage::new("queued")
            .fail(move |r| t1.send(format!("fail: {r}")).unwrap())
            .complete(move |r| t2.send(format!("complete: {r}")).unwrap()),
    )
    .unwrap();
    drop(runtime);
    let ran: Vec<String> = std::iter::from_fn(|| log.recv_timeout(WAIT).ok())
        .take(3)
        .collect();
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert_send_failed(&ran);
    assert_eq!(ran[2], "close 1006", "{ran:?}");
    assert_eq!(wx.state(), ReadyState::Closed);
}

/// A listener replaced while a burst of echoes is due (the old one slow, so callbacks queue
/// up behind it) is not called again once `on_socket_message` returns; the new one takes
/// the rest, and every message is seen once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_listener_hears_nothing_after_the_call_returns() {
    use std::sync::{Arc, Mutex};
    const COUNT: usize = 200;
    let server = Server::start(Behaviour {
        echo: true,
        ..Behaviour::default()
    })
    .await;
    let wx = WxSocket::new(Config::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<(bool, String)>::new()));
    let s = seen.clone();
    wx.on_socket_message(move |res| {
        s.lock()
            .unwrap()
            .push((false, res.data.as_text().unwrap().to_owned()));
        // Slow, so the echoes queue up as due callbacks behind this one.
        std::thread::sleep(std::time::Duration::from_millis(2));
    });
    let (tx, mut opened) = mpsc::unbounded_channel::<String>();
    wx.on_socket_open(move |_| tx.send("open".into()).unwrap());
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new(&server.url)))
        .unwrap();
    assert_eq!(recv(&mut opened).await, "open");
    for i in 0..COUNT {
        wx.send_socket_message(SendSocketMessage::new(i.to_string()))
            .unwrap();
    }
    // The replacement comes from a thread of its own, while the driver task runs the old
    // listener's queued calls.
    let (s, socket) = (seen.clone(), wx.clone());
    let replacer = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while s.lock().unwrap().len() < 5 {
            assert!(start.elapsed() < WAIT, "no echoes");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let s2 = s.clone();
        socket.on_socket_message(move |res| {
            s2.lock()
                .unwrap()
                .push((true, res.data.as_text().unwrap().to_owned()));
        });
        // What the old listener had seen when the call returned: one call of it may have
        // begun before and logged after this.
        s.lock().unwrap().len()
    });
    let at_return = tokio::task::spawn_blocking(move || replacer.join().unwrap())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    while seen.lock().unwrap().len() < COUNT {
        assert!(start.elapsed() < WAIT, "the echoes stopped");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let seen = seen.lock().unwrap().clone();
    let texts: Vec<String> = seen.iter().map(|(_, t)| t.clone()).collect();
    let expected: Vec<String> = (0..COUNT).map(|i| i.to_string()).collect();
    assert_eq!(texts, expected, "every echo once, in order");
    let old = seen.iter().filter(|(new, _)| !new).count();
    assert!(
        old <= at_return + 1,
        "the old listener was called {} times after the replacement returned",
        old - at_return
    );
    // The old listener's calls all come first.
    assert!(seen.iter().skip_while(|(new, _)| !new).all(|(new, _)| *new));
}
