//! The wx-style surface: the seven calls, callbacks, messages in WeChat's style.

use std::sync::{Arc, Mutex};
use std::time::Instant;
use wxsocket_core::wx::*;
use wxsocket_core::*;

type Log = Arc<Mutex<Vec<String>>>;

fn logger(log: &Log, prefix: &'static str) -> impl FnOnce(&CallResult) + Send + 'static {
    let log = log.clone();
    move |r| log.lock().unwrap().push(format!("{prefix} {}", r.err_msg))
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn seven_calls_with_callbacks_in_the_seed_order() {
    let log: Log = Arc::default();
    let now = Instant::now();
    let mut wx = WxSocket::new(SessionConfig::default()).unwrap();
    let l = log.clone();
    wx.on_socket_open(move |r| l.lock().unwrap().push(format!("open {:?}", r.protocol)));
    let l = log.clone();
    wx.on_socket_message(move |r| l.lock().unwrap().push(format!("message {:?}", r.data)));
    let l = log.clone();
    wx.on_socket_error(move |r| l.lock().unwrap().push(format!("error {}", r.err_msg)));
    let l = log.clone();
    wx.on_socket_close(move |r| {
        l.lock()
            .unwrap()
            .push(format!("close {} {} {}", r.code, r.reason, r.clean))
    });

    let conn = wx
        .connect_socket(
            ConnectSocket::new(ConnectOptions::new("wss://example.com").protocol("v1"))
                .success(logger(&log, "success"))
                .fail(logger(&log, "fail"))
                .complete(logger(&log, "complete")),
            now,
        )
        .unwrap();
    assert_eq!(
        take(&log),
        ["success connectSocket:ok", "complete connectSocket:ok"]
    );

    // Queued before open; success only once written.
    let id = wx
        .send_socket_message(
            SendSocketMessage::new("hi")
                .success(logger(&log, "success"))
                .complete(logger(&log, "complete")),
            now,
        )
        .unwrap();
    wx.dispatch();
    assert!(take(&log).is_empty());
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::Opened(Box::new(
            Handshake::default().with_protocol(Some("v1".into())),
        )),
        now,
    );
    Driven::handle(&mut wx, conn, TransportEvent::SendWritten(id), now);
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::Message(Message::text("echo")),
        now,
    );
    wx.dispatch();
    assert_eq!(
        take(&log),
        [
            "open Some(\"v1\")",
            "success sendSocketMessage:ok",
            "complete sendSocketMessage:ok",
            "message Text(\"echo\")"
        ]
    );

    wx.close_socket(
        CloseSocket::with(4000, "bye").success(logger(&log, "success")),
        now,
    )
    .unwrap();
    assert_eq!(take(&log), ["success closeSocket:ok"]);
    let frame = std::iter::from_fn(|| Driven::poll_action(&mut wx))
        .find_map(|a| match a {
            Action::Close { frame, .. } => Some(frame),
            _ => None,
        })
        .expect("a close frame");
    assert_eq!((frame.code(), frame.reason()), (4000, "bye"));
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(4000),
            reason: "bye".into(),
        }),
        now,
    );
    Driven::handle(&mut wx, conn, TransportEvent::Closed, now);
    wx.dispatch();
    assert_eq!(take(&log), ["close 4000 bye true"]);

    // A transport failure: onSocketError, then onSocketClose (1006, unclean).
    let conn = wx
        .connect_socket(
            ConnectSocket::new(ConnectOptions::new("wss://example.com")),
            now,
        )
        .unwrap();
    Driven::handle(&mut wx, conn, TransportEvent::Opened(Box::default()), now);
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::Error(TransportError::new(TransportErrorKind::Io, "reset by peer")),
        now,
    );
    wx.dispatch();
    assert_eq!(
        take(&log),
        [
            "open None",
            "error reset by peer",
            "close 1006 reset by peer false"
        ]
    );
}

#[test]
fn failures_use_the_seed_messages() {
    let log: Log = Arc::default();
    let now = Instant::now();
    let mut wx = WxSocket::new(SessionConfig::default()).unwrap();
    let r = wx.send_socket_message(
        SendSocketMessage::new("x")
            .fail(logger(&log, "fail"))
            .complete(logger(&log, "complete")),
        now,
    );
    let failed = r.unwrap_err();
    assert_eq!(
        failed.err_msg,
        "sendSocketMessage:fail WebSocket is not connected"
    );
    // Shown as WeChat's errMsg.
    assert_eq!(failed.to_string(), failed.err_msg);
    assert!(!failed.is_ok());
    assert_eq!(
        take(&log),
        [
            "fail sendSocketMessage:fail WebSocket is not connected",
            "complete sendSocketMessage:fail WebSocket is not connected"
        ]
    );
    let r = wx.close_socket(CloseSocket::new().fail(logger(&log, "fail")), now);
    assert_eq!(
        r.unwrap_err().err_msg,
        "closeSocket:fail WebSocket is not connected"
    );
    let r = wx.connect_socket(
        ConnectSocket::new(ConnectOptions::new("wss://h").header("Referer", "x"))
            .fail(logger(&log, "fail")),
        now,
    );
    assert!(
        r.unwrap_err()
            .err_msg
            .starts_with("connectSocket:fail header: \"Referer\" may not be set")
    );
    take(&log);

    // A queued send that can never be written fails later, through dispatch.
    let conn = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    wx.send_socket_message(SendSocketMessage::new("q").fail(logger(&log, "fail")), now)
        .unwrap();
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::ConnectFailed(TransportError::new(TransportErrorKind::Connect, "refused")),
        now,
    );
    wx.dispatch();
    assert_eq!(
        take(&log),
        ["fail sendSocketMessage:fail the connection could not be established"]
    );
    assert_eq!(wx.session().state(), ReadyState::Closed);
}

#[test]
fn connect_socket_replaces_the_current_socket() {
    let log: Log = Arc::default();
    let now = Instant::now();
    let mut wx = WxSocket::new(SessionConfig::default()).unwrap();
    let l = log.clone();
    wx.on_socket_close(move |r| {
        l.lock()
            .unwrap()
            .push(format!("close {} {} {}", r.conn, r.code, r.reason))
    });
    let a = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    let b = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    wx.dispatch();
    assert_eq!(take(&log), [format!("close {a} 1000 {REPLACED_REASON}")]);
    assert_eq!(wx.session().current(), Some(b));
}

#[test]
fn deferred_mode_queues_every_callback_for_the_driver() {
    let log: Log = Arc::default();
    let now = Instant::now();
    let mut wx = WxSocket::deferred(SessionConfig::default()).unwrap();
    wx.set_connect_check(|request| {
        if request.per_message_deflate.is_some() {
            Err(ConnectError::Unsupported {
                option: "perMessageDeflate",
                why: "not here",
            })
        } else {
            Ok(())
        }
    });
    let l = log.clone();
    wx.on_socket_open(move |_| l.lock().unwrap().push("open".into()));
    let r = wx.connect_socket(
        ConnectSocket::new(ConnectOptions::new("wss://h").per_message_deflate(true))
            .fail(logger(&log, "fail")),
        now,
    );
    assert_eq!(
        r.unwrap_err().err_msg,
        "connectSocket:fail perMessageDeflate: not here"
    );
    assert!(wx.session().current().is_none(), "refused before any dial");
    let conn = wx
        .connect_socket(
            ConnectSocket::new(ConnectOptions::new("wss://h")).success(logger(&log, "success")),
            now,
        )
        .unwrap();
    Driven::handle(&mut wx, conn, TransportEvent::Opened(Box::default()), now);
    wx.dispatch();
    assert!(take(&log).is_empty(), "nothing runs in place");
    assert!(wx.has_callbacks());
    while let Some(cb) = wx.poll_callback() {
        cb.run();
    }
    assert_eq!(
        take(&log),
        [
            "fail connectSocket:fail perMessageDeflate: not here",
            "success connectSocket:ok",
            "open"
        ]
    );
    assert!(!wx.has_callbacks());
}

/// A wx socket runs every send's callbacks from its completion: a configuration that turns
/// completions off is refused, naming the field (it used to be taken, and then `success`
/// never ran and every send's callbacks stayed in memory).
#[test]
fn a_wx_socket_refuses_send_completions_off() {
    let config = SessionConfig::default().send_completions(false);
    for made in [
        WxSocket::new(config.clone()),
        WxSocket::deferred(config.clone()),
    ] {
        let error = made.expect_err("send_completions(false) was taken");
        assert_eq!(error.field, "send_completions");
    }
}

/// `WxSocket` as a driver drives it: the handshake's deadline, the count `dispatch`
/// returns, and a shutdown that aborts the dial, fails the queued message and is drained
/// once the transport is gone.
#[test]
fn a_driver_sees_the_deadline_the_dispatch_count_and_the_shutdown() {
    let log: Log = Arc::default();
    let now = Instant::now();
    let handshake = std::time::Duration::from_secs(5);
    let mut wx = WxSocket::new(SessionConfig::default().handshake_timeout(handshake)).unwrap();
    let l = log.clone();
    wx.on_socket_close(move |r| l.lock().unwrap().push(format!("close {}", r.code)));
    let conn = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("ws://h/")), now)
        .unwrap();
    assert_eq!(
        Driven::poll_timeout(&wx),
        Some(now + handshake),
        "the handshake timeout"
    );
    wx.send_socket_message(
        SendSocketMessage::new(Message::text("queued")).fail(logger(&log, "fail")),
        now,
    )
    .unwrap();
    assert_eq!(wx.dispatch(), 1, "Connecting");
    while Driven::poll_action(&mut wx).is_some() {}
    assert!(!Driven::is_drained(&wx));
    Driven::shutdown(&mut wx, now);
    let actions: Vec<Action> = std::iter::from_fn(|| Driven::poll_action(&mut wx)).collect();
    assert_eq!(actions, [Action::Abort { conn }]);
    assert_eq!(
        wx.dispatch(),
        2,
        "SendFailed, Close (no error: the end is our own)"
    );
    assert_eq!(
        take(&log),
        [
            "fail sendSocketMessage:fail cancelled: the socket was closed before the message was sent",
            "close 1006"
        ]
    );
    Driven::handle(&mut wx, conn, TransportEvent::Closed, now);
    assert!(Driven::is_drained(&wx));
}

/// An embedder that runs the due callbacks whenever it has called into the socket (its
/// `sendSocketMessage` does), so a listener that sends runs callbacks inside itself: one
/// due for the same listener waits until the running call returns, as in JavaScript, instead of
/// deadlocking on the listener. Every message is seen once, in order.
#[test]
fn a_listener_that_runs_due_callbacks_inside_itself_does_not_deadlock() {
    type Shared = Arc<Mutex<WxSocket>>;
    fn pump(wx: &Shared) {
        // One at a time, the lock released while each runs.
        loop {
            let due = {
                let mut wx = wx.lock().unwrap();
                wx.dispatch();
                wx.poll_callback()
            };
            match due {
                Some(callback) => callback.run(),
                None => return,
            }
        }
    }
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let now = Instant::now();
        let wx: Shared = Arc::new(Mutex::new(
            WxSocket::deferred(SessionConfig::default()).unwrap(),
        ));
        let log: Log = Arc::default();
        let (l, weak) = (log.clone(), Arc::downgrade(&wx));
        wx.lock().unwrap().on_socket_message(move |r| {
            let text = r.data.as_text().unwrap_or_default().to_owned();
            l.lock().unwrap().push(format!("{text} begins"));
            let wx = weak.upgrade().unwrap();
            let echo = SendSocketMessage::new(format!("echo {text}"));
            wx.lock().unwrap().send_socket_message(echo, now).unwrap();
            pump(&wx);
            l.lock().unwrap().push(format!("{text} ends"));
        });
        let conn = wx
            .lock()
            .unwrap()
            .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
            .unwrap();
        {
            let mut wx = wx.lock().unwrap();
            Driven::handle(&mut *wx, conn, TransportEvent::Opened(Box::default()), now);
            for text in ["a", "b", "c"] {
                Driven::handle(
                    &mut *wx,
                    conn,
                    TransportEvent::Message(Message::text(text)),
                    now,
                );
            }
        }
        pump(&wx);
        let _ = done.send(take(&log));
    });
    let log = finished
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the nested callback deadlocked on its listener");
    assert_eq!(
        log,
        [
            "a begins", "a ends", "b begins", "b ends", "c begins", "c ends"
        ]
    );
}

/// A listener that panics is still there for the next event (a driver catches the panic of
/// a callback and goes on).
#[test]
fn a_listener_that_panicked_still_hears_the_next_event() {
    let now = Instant::now();
    let mut wx = WxSocket::deferred(SessionConfig::default()).unwrap();
    let log: Log = Arc::default();
    let l = log.clone();
    wx.on_socket_message(move |r| {
        let text = r.data.as_text().unwrap_or_default().to_owned();
        assert_ne!(text, "boom", "the listener fails on this one");
        l.lock().unwrap().push(text);
    });
    let conn = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    Driven::handle(&mut wx, conn, TransportEvent::Opened(Box::default()), now);
    for text in ["boom", "after"] {
        Driven::handle(
            &mut wx,
            conn,
            TransportEvent::Message(Message::text(text)),
            now,
        );
    }
    wx.dispatch();
    assert_eq!(run_due_catching(&mut wx), 1);
    assert_eq!(take(&log), ["after"]);
}

/// A deferred socket with an open connection and `texts` received and dispatched: their
/// listener calls are due, not run.
fn due_messages(wx: &mut WxSocket, texts: &[&str], now: Instant) {
    let conn = wx
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    Driven::handle(wx, conn, TransportEvent::Opened(Box::default()), now);
    for text in texts {
        Driven::handle(wx, conn, TransportEvent::Message(Message::text(*text)), now);
    }
    wx.dispatch();
}

/// Runs the due callbacks as a driver does, going on past one that panics; returns how
/// many panicked.
fn run_due_catching(wx: &mut WxSocket) -> usize {
    let mut panicked = 0;
    while let Some(callback) = wx.poll_callback() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback.run()));
        panicked += usize::from(ran.is_err());
    }
    panicked
}

fn run_due(wx: &mut WxSocket) {
    while let Some(callback) = wx.poll_callback() {
        callback.run();
    }
}

/// `on_socket_message` replaces the listener for every event not yet handed to it, those
/// already due included: the old listener is not called again once the call returns (a
/// page that re-registers its listener stops hearing the old page's handler), also when
/// the listener replaces itself while it runs.
#[test]
fn a_replaced_listener_is_not_called_again_even_for_events_already_due() {
    let now = Instant::now();
    let log: Log = Arc::default();
    let mut wx = WxSocket::deferred(SessionConfig::default()).unwrap();
    let l = log.clone();
    wx.on_socket_message(move |r| l.lock().unwrap().push(format!("old {:?}", r.data)));
    due_messages(&mut wx, &["1", "2"], now);
    let l = log.clone();
    wx.on_socket_message(move |r| l.lock().unwrap().push(format!("new {:?}", r.data)));
    run_due(&mut wx);
    assert_eq!(take(&log), [r#"new Text("1")"#, r#"new Text("2")"#]);

    // From inside: the listener that sees "a" sets another, which takes "b" and "c" (due
    // with "a", and queued on the running call when the driver runs them from inside it).
    let wx = Arc::new(Mutex::new(
        WxSocket::deferred(SessionConfig::default()).unwrap(),
    ));
    let (l, socket) = (log.clone(), Arc::clone(&wx));
    let mut guard = wx.lock().unwrap();
    guard.on_socket_message(move |r| {
        l.lock().unwrap().push(format!("first {:?}", r.data));
        let l = l.clone();
        // The listener runs outside the socket's lock, as a driver runs it.
        socket
            .lock()
            .unwrap()
            .on_socket_message(move |r| l.lock().unwrap().push(format!("second {:?}", r.data)));
    });
    due_messages(&mut guard, &["a", "b", "c"], now);
    let due: Vec<_> = std::iter::from_fn(|| guard.poll_callback()).collect();
    drop(guard);
    for callback in due {
        callback.run();
    }
    assert_eq!(
        take(&log),
        [
            r#"first Text("a")"#,
            r#"second Text("b")"#,
            r#"second Text("c")"#
        ]
    );
}

/// A listener set for the first time while another callback runs hears the events already
/// due after it, as one set while an earlier event is handled in JavaScript hears the next
/// (WeChat's own sample sets `onSocketClose` after calling `closeSocket`); before, an event
/// dispatched while its slot had never been set was dropped, unlike one whose listener was
/// only replaced.
#[test]
fn a_listener_set_for_the_first_time_inside_a_callback_hears_the_events_already_due() {
    let now = Instant::now();
    let log: Log = Arc::default();
    let wx = Arc::new(Mutex::new(
        WxSocket::deferred(SessionConfig::default()).unwrap(),
    ));
    let (l, socket) = (log.clone(), Arc::clone(&wx));
    let mut guard = wx.lock().unwrap();
    guard.on_socket_message(move |r| {
        l.lock().unwrap().push(format!("message {:?}", r.data));
        let l = l.clone();
        socket
            .lock()
            .unwrap()
            .on_socket_close(move |r| l.lock().unwrap().push(format!("close {}", r.code)));
    });
    let conn = guard
        .connect_socket(ConnectSocket::new(ConnectOptions::new("wss://h")), now)
        .unwrap();
    Driven::handle(
        &mut *guard,
        conn,
        TransportEvent::Opened(Box::default()),
        now,
    );
    Driven::handle(
        &mut *guard,
        conn,
        TransportEvent::Message(Message::text("bye")),
        now,
    );
    let close = PeerClose {
        code: Some(4000),
        reason: String::new(),
    };
    Driven::handle(&mut *guard, conn, TransportEvent::PeerClosed(close), now);
    Driven::handle(&mut *guard, conn, TransportEvent::Closed, now);
    guard.dispatch();
    let due: Vec<_> = std::iter::from_fn(|| guard.poll_callback()).collect();
    drop(guard);
    for callback in due {
        callback.run();
    }
    assert_eq!(take(&log), [r#"message Text("bye")"#, "close 4000"]);

    // An event due while no listener is set, and none is set before it runs, calls nothing.
    let mut wx = WxSocket::deferred(SessionConfig::default()).unwrap();
    due_messages(&mut wx, &["unheard"], now);
    run_due(&mut wx);
    let l = log.clone();
    wx.on_socket_message(move |r| l.lock().unwrap().push(format!("late {:?}", r.data)));
    run_due(&mut wx);
    assert!(take(&log).is_empty());
}

/// A send's `complete` runs when its `success` (or `fail`) panics, as WeChat runs it
/// whatever the outcome; the panic still reaches whoever runs the callback.
#[test]
fn complete_runs_when_success_or_fail_panics() {
    let now = Instant::now();
    let log: Log = Arc::default();
    let mut wx = WxSocket::deferred(SessionConfig::default()).unwrap();
    due_messages(&mut wx, &[], now);
    let conn = wx.session().current().expect("a connection");
    let id = wx
        .send_socket_message(
            SendSocketMessage::new("m")
                .success(|_| panic!("success fails"))
                .complete(logger(&log, "complete")),
            now,
        )
        .unwrap();
    // Written: `success` panics.
    Driven::handle(&mut wx, conn, TransportEvent::SendWritten(id), now);
    wx.dispatch();
    assert_eq!(run_due_catching(&mut wx), 1);
    assert_eq!(take(&log), ["complete sendSocketMessage:ok"]);

    // In place, a refused send's `fail` panics out of the call, after `complete` ran.
    let mut direct = WxSocket::new(SessionConfig::default()).unwrap();
    let l = log.clone();
    let call = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        direct.send_socket_message(
            SendSocketMessage::new("m")
                .fail(|_| panic!("fail fails"))
                .complete(move |r| l.lock().unwrap().push(format!("complete {}", r.err_msg))),
            now,
        )
    }));
    assert!(call.is_err(), "the panic reaches the caller");
    let logged = take(&log);
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        logged[0].starts_with("complete sendSocketMessage:fail"),
        "{logged:?}"
    );
}

/// An embedder's driver: `dispatch` after its turn takes the received messages, and a
/// connection paused for flow control gets its `ResumeReading` only then: with no timer
/// armed, a driver that waits for a timer or a readable socket right after `dispatch` never
/// reads that connection again unless it polls the actions once more (the type's docs now
/// say so).
#[test]
fn dispatch_can_queue_a_resume_that_the_driver_must_carry_out() {
    let mut wx = WxSocket::new(SessionConfig::default().receive_bounds(2, 1 << 20)).unwrap();
    let now = Instant::now();
    let conn = wx
        .connect_socket(
            ConnectSocket::new(ConnectOptions::new("ws://127.0.0.1:1/")),
            now,
        )
        .unwrap();
    wx.handle(conn, TransportEvent::Opened(Box::default()), now);
    for _ in 0..2 {
        wx.handle(conn, TransportEvent::Message(Message::text("m")), now);
    }
    assert!(wx.read_credit(conn).is_paused());
    // The driver's turn: every action carried out.
    while wx.poll_action().is_some() {}
    assert_eq!(wx.dispatch(), 4); // connecting, open, two messages
    assert_eq!(
        wx.poll_timeout(),
        None,
        "nothing would wake a waiting driver"
    );
    assert!(wx.session().has_output());
    assert_eq!(wx.poll_action(), Some(Action::ResumeReading { conn }));
}
