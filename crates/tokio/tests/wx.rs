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
