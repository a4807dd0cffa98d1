//! The echo server of `wxsocket serve` and of the demo: tokio-tungstenite's server side,
//! echoing text and binary messages and answering the client's close frame (tungstenite
//! replies with the same code and reason).

use crate::output::Out;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long after accepting a TCP connection before answering its handshake
    /// (the demo uses it to stand for a distant server, so the "connecting" phase is seen).
    pub handshake_delay: Duration,
    /// Print each connection and close on this output.
    pub log: Option<Arc<Out>>,
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, options: Options) {
    let options = Arc::new(options);
    let counter = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(connection(stream, peer, n, Arc::clone(&options)));
    }
}

/// Binds `127.0.0.1:0` and serves in the background on the shared runtime; returns the
/// `ws://` URL.
pub fn start_background(options: Options) -> std::io::Result<String> {
    let rt = crate::backend::runtime();
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let _entered = rt.enter();
    let listener = TcpListener::from_std(listener)?;
    rt.spawn(serve(listener, options));
    Ok(format!("ws://{addr}/"))
}

async fn connection(stream: TcpStream, peer: SocketAddr, n: u64, options: Arc<Options>) {
    let _ = stream.set_nodelay(true);
    if !options.handshake_delay.is_zero() {
        tokio::time::sleep(options.handshake_delay).await;
    }
    let log = options.log.as_deref();
    let seen: Arc<Mutex<(String, Option<String>)>> = Arc::default();
    let record = Arc::clone(&seen);
    // Answer with the first sub-protocol the client offers, so `connect -p NAME` works.
    #[allow(clippy::result_large_err)] // the callback type tungstenite asks for
    let callback = move |request: &Request, mut response: Response| {
        let offered = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| !p.is_empty())
            .map(str::to_owned);
        if let Some(protocol) = &offered
            && let Ok(value) = HeaderValue::from_str(protocol)
        {
            response
                .headers_mut()
                .insert("sec-websocket-protocol", value);
        }
        let target = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        *record.lock().unwrap_or_else(|e| e.into_inner()) = (target, offered);
        Ok::<Response, ErrorResponse>(response)
    };
    let mut ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(out) = log {
                out.stamped(&format!("#{n} {peer}: handshake failed: {e}"));
            }
            return;
        }
    };
    if let Some(out) = log {
        let (target, protocol) = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let protocol = protocol.as_deref().unwrap_or("none");
        out.stamped(&format!(
            "#{n} {peer} connected: GET {target} (protocol: {protocol})"
        ));
    }
    let mut echoed = 0u64;
    let mut close: Option<(u16, String)> = None;
    let end = loop {
        match ws.next().await {
            Some(Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                if let Err(e) = ws.send(message).await {
                    break Some(e.to_string());
                }
                echoed += 1;
            }
            Some(Ok(WsMessage::Close(frame))) => {
                // tungstenite queues the reply; the next read flushes it and ends the stream.
                close = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (u16::from(CloseCode::Status), String::new()),
                });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => break Some(e.to_string()),
            None => break None,
        }
    };
    if let Some(out) = log {
        let how = match (close, end) {
            (Some((code, reason)), _) => format!("closed by the client: {code} {reason:?}"),
            (None, Some(error)) => format!("ended: {error}"),
            (None, None) => "ended without a close frame".to_owned(),
        };
        let plural = if echoed == 1 { "" } else { "s" };
        out.stamped(&format!(
            "#{n} {peer} {how} ({echoed} message{plural} echoed)"
        ));
    }
}
