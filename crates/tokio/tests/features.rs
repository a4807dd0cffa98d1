//! The `tls` and `deflate` features: with a feature off, a `wss://` URL or a compression
//! offer is refused by every connect call, before any IO, with an error naming the feature;
//! with it on (the default) the same calls start a dial. Run under both builds:
//! `cargo test -p wxsocket-tokio --test features` and the same with `--no-default-features`.

use std::net::TcpListener;
use wxsocket_tokio::wx::{ConnectSocket, WxSocket};
use wxsocket_tokio::{Client, Config, ConnectError, ConnectOptions, ReadyState, TaskPool};

/// A listener no client may reach when a feature is off, and its `ws` / `wss` URLs.
fn listener() -> (TcpListener, String, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        listener,
        format!("ws://127.0.0.1:{port}/"),
        format!("wss://127.0.0.1:{port}/"),
    )
}

/// The cases: options, whether this build can dial them, the option and feature named.
fn cases(ws: &str, wss: &str) -> Vec<(ConnectOptions, bool, &'static str, &'static str)> {
    vec![
        (
            ConnectOptions::new(wss),
            cfg!(feature = "tls"),
            "url",
            "`tls` feature",
        ),
        (
            ConnectOptions::new(ws).per_message_deflate(true),
            cfg!(feature = "deflate"),
            "perMessageDeflate",
            "`deflate` feature",
        ),
    ]
}

fn assert_refused(result: Result<impl std::fmt::Debug, ConnectError>, option: &str, feature: &str) {
    match result {
        Err(ConnectError::Unsupported { option: named, why }) => {
            assert_eq!(named, option);
            assert!(why.contains(feature), "{why:?} names {feature}");
            let message = ConnectError::Unsupported { option: named, why }.to_string();
            assert!(message.starts_with(&format!("{option}: ")), "{message}");
        }
        other => panic!("expected {option} refused for the {feature}, got {other:?}"),
    }
}

fn assert_not_dialled(listener: &TcpListener) {
    let err = listener.accept().expect_err("nothing may connect");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
}

#[tokio::test]
async fn client_refuses_what_the_build_cannot_dial() {
    let (listener, ws, wss) = listener();
    for (options, supported, option, feature) in cases(&ws, &wss) {
        let (client, _events) = Client::new(Config::default()).unwrap();
        let result = client.connect(&options);
        if supported {
            result.unwrap();
            assert_eq!(client.state(), ReadyState::Connecting);
        } else {
            assert_refused(result, option, feature);
            assert_eq!(client.state(), ReadyState::Idle);
            assert_eq!(client.current(), None);
            assert_not_dialled(&listener);
        }
    }
}

#[tokio::test]
async fn pool_refuses_what_the_build_cannot_dial() {
    let (listener, ws, wss) = listener();
    for (options, supported, option, feature) in cases(&ws, &wss) {
        let (pool, _events) = TaskPool::new(Config::default()).unwrap();
        let result = pool.connect(&options);
        if supported {
            assert_eq!(result.unwrap().state(), ReadyState::Connecting);
        } else {
            assert_refused(result, option, feature);
            assert_eq!(pool.live(), 0);
            assert_not_dialled(&listener);
        }
    }
}

#[tokio::test]
async fn wx_socket_refuses_what_the_build_cannot_dial() {
    let (listener, ws, wss) = listener();
    for (options, supported, option, feature) in cases(&ws, &wss) {
        let wx = WxSocket::new(Config::default()).unwrap();
        let result = wx.connect_socket(ConnectSocket::new(options));
        if supported {
            result.unwrap();
            assert_eq!(wx.state(), ReadyState::Connecting);
        } else {
            let failed = result.expect_err("refused");
            assert!(
                failed
                    .err_msg
                    .starts_with(&format!("connectSocket:fail {option}: "))
                    && failed.err_msg.contains(feature),
                "{:?}",
                failed.err_msg
            );
            assert_eq!(wx.state(), ReadyState::Idle);
            assert_not_dialled(&listener);
        }
    }
}
