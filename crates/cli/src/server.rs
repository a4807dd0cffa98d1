//! The echo server of `wxsocket serve` and of the demo: tokio-tungstenite's server side,
//! echoing text and binary messages and answering the client's close frame (tungstenite
//! replies with the same code and reason). With `deflate` it accepts a permessage-deflate
//! offer: the client's compressed messages are inflated before tungstenite reads them
//! (`wxsocket_wire::deflate::Inflater::server`), the echoes are compressed
//! (`Compressor::server`). Every connection counts the bytes its socket reads and writes.

use crate::output::Out;
use crate::server_stream::{ServerStream, WireCounters, core_message};
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
use wxsocket_core::{DeflateOptions, DeflateParams};
use wxsocket_wire::deflate::{Compressor, Inflater};

/// The largest message the server takes (tungstenite's default), inflated.
const MAX_MESSAGE: usize = 64 << 20;

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Wait this long after accepting a TCP connection before answering its handshake
    /// (the demo uses it to stand for a distant server, so the "connecting" phase is seen).
    pub handshake_delay: Duration,
    /// Accept permessage-deflate offers.
    pub deflate: bool,
    /// Print each connection and close on this output.
    pub log: Option<Arc<Out>>,
    /// Record each connection's byte counters here.
    pub wire: Option<Arc<WireLog>>,
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

/// What the handshake callback saw and decided.
#[derive(Debug, Default)]
struct Seen {
    target: String,
    protocol: Option<String>,
    deflate: Option<DeflateParams>,
}

async fn connection(stream: TcpStream, peer: SocketAddr, n: u64, options: Arc<Options>) {
    let _ = stream.set_nodelay(true);
    if !options.handshake_delay.is_zero() {
        tokio::time::sleep(options.handshake_delay).await;
    }
    let log = options.log.as_deref();
    let counters = Arc::new(WireCounters::default());
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let record = Arc::clone(&seen);
    let deflate = options.deflate;
    let wire_log = options.wire.clone();
    let mine = Arc::clone(&counters);
    // Answer with the first sub-protocol the client offers, so `connect -p NAME` works.
    #[allow(clippy::result_large_err)] // the callback type tungstenite asks for
    let callback = move |request: &Request, mut response: Response| {
        let protocol = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| !p.is_empty())
            .map(str::to_owned);
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
    let stream = ServerStream::new(stream, Arc::clone(&counters));
    let mut ws = match tokio_tungstenite::accept_hdr_async(stream, callback).await {
        Ok(ws) => ws,
        Err(e) => {
            if let Some(out) = log {
                out.stamped(&format!("#{n} {peer}: handshake failed: {e}"));
            }
            return;
        }
    };
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    // The client sends no frame before it has the answer: inflate from here on.
    let mut compressor = seen.deflate.map(|params| {
        ws.get_mut().inflate(Inflater::server(&params, MAX_MESSAGE));
        Compressor::server(&params, DeflateOptions::default().threshold)
    });
    if let Some(out) = log {
        let protocol = seen.protocol.as_deref().unwrap_or("none");
        let compression = match &seen.deflate {
            Some(params) => format!(", compression: {params}"),
            None => String::new(),
        };
        out.stamped(&format!(
            "#{n} {peer} connected: GET {} (protocol: {protocol}{compression})",
            seen.target
        ));
    }
    let mut echoed = 0u64;
    let mut close: Option<(u16, String)> = None;
    let end = loop {
        match ws.next().await {
            Some(Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                let reply = match (&mut compressor, core_message(message.clone())) {
                    (Some(c), Some(m)) => c.encode(m),
                    _ => message,
                };
                if let Err(e) = ws.send(reply).await {
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
            "#{n} {peer} {how} ({echoed} message{plural} echoed; on the wire, handshake included: {} B read, {} B written)",
            counters.read(),
            counters.written()
        ));
    }
}
