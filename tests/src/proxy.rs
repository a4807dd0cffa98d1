//! A small HTTP `CONNECT` proxy on `127.0.0.1:0` for the proxy tests: it tunnels, demands
//! Basic credentials, refuses with a status, or never answers, and records every request
//! (the target, the `Proxy-Authorization` it got, its answer, and the first bytes the
//! client sent into the tunnel, from which [`Tunnel::sni`] reads a TLS ClientHello's
//! server name).
//!
//! Host names ending in `.test` (a reserved top-level domain) resolve to `127.0.0.1` at the
//! proxy, so a test can name a server that only the proxy can reach.
//!
//! ```
//! use wxsocket_tests::proxy::{ProxyMode, TestProxy};
//! let proxy = TestProxy::start(ProxyMode::Refuse(403));
//! assert!(proxy.url().starts_with("http://127.0.0.1:"));
//! assert!(proxy.requests().is_empty());
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many bytes of what the client sends into a tunnel are kept ([`Tunnel::first_bytes`]).
const KEEP_FIRST: usize = 8 * 1024;

/// What the proxy does with each `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyMode {
    /// Opens the tunnel (after checking the credentials, if any are required).
    Tunnel,
    /// Answers with this status (e.g. 403, 502) and closes.
    Refuse(u16),
    /// Reads the request and never answers (until the client goes away).
    Silent,
    /// Reads the request and closes the connection without answering.
    HangUp,
    /// Answers with bytes that are not HTTP.
    Garbage,
    /// Answers `200` and then one header line that never ends (until the client goes
    /// away), testing the bound on the answer's size.
    EndlessHead,
    /// Answers `200`, reads what the client sends first through the tunnel, and closes it
    /// (a proxy that cannot reach the server after all).
    DropAfterOk,
}

/// One `CONNECT` request the proxy received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tunnel {
    /// The request's method (`CONNECT` for a client that behaves).
    pub method: String,
    /// The request target, `host:port`.
    pub target: String,
    /// The `Proxy-Authorization` header, as sent.
    pub authorization: Option<String>,
    /// The status the proxy answered (`None` while it has not answered).
    pub status: Option<u16>,
    /// The first bytes the client sent through the open tunnel.
    pub first_bytes: Vec<u8>,
}

impl Tunnel {
    /// The server name (SNI) of the TLS ClientHello at the start of
    /// [`Self::first_bytes`], if they hold one.
    pub fn sni(&self) -> Option<String> {
        client_hello_sni(&self.first_bytes)
    }
}

#[derive(Default)]
struct State {
    tunnels: Vec<Tunnel>,
    sockets: Vec<TcpStream>,
    handlers: Vec<JoinHandle<()>>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    mode: ProxyMode,
    credentials: Option<(String, String)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Tunnel)) {
        f(&mut self.lock().tunnels[index]);
        self.changed.notify_all();
    }
}

/// The proxy; stopped (every socket shut, every thread joined) when dropped.
pub struct TestProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// A proxy in this mode that asks for no credentials.
    pub fn start(mode: ProxyMode) -> TestProxy {
        Self::launch(mode, None)
    }

    /// A tunnelling proxy that answers 407 unless the request carries
    /// `Proxy-Authorization: Basic` with exactly these credentials.
    pub fn with_credentials(user: &str, password: &str) -> TestProxy {
        Self::launch(
            ProxyMode::Tunnel,
            Some((user.to_owned(), password.to_owned())),
        )
    }

    fn launch(mode: ProxyMode, credentials: Option<(String, String)>) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            mode,
            credentials,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(&listener, &shared))
                .expect("spawn the proxy's accept thread")
        };
        TestProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT` (the parts as given, not encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Tunnel> {
        self.shared.lock().tunnels.clone()
    }

    /// Waits until `done` holds for the requests (panics after `timeout`, showing them).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Tunnel]) -> bool,
    ) -> Vec<Tunnel> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.tunnels) {
                return state.tunnels.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "proxy: timed out after {timeout:?} waiting for {what}; requests: {:#?}",
                state.tunnels
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let handlers = {
            let mut state = self.shared.lock();
            state.stop = true;
            for socket in state.sockets.drain(..) {
                let _ = socket.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut state.handlers)
        };
        // Wakes the accept loop, which then sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let mut state = shared.lock();
        if state.stop {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            state.sockets.push(clone);
        }
        let index = state.tunnels.len();
        state.tunnels.push(Tunnel::default());
        let shared2 = Arc::clone(shared);
        let handler = std::thread::Builder::new()
            .name(format!("proxy-conn-{index}"))
            .spawn(move || {
                let _ = serve(stream, index, &shared2);
            })
            .expect("spawn a proxy thread");
        state.handlers.push(handler);
    }
}

fn serve(mut client: TcpStream, index: usize, shared: &Arc<Shared>) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let head_len = loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let authorization = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                let (method, target) = (
                    request.method.unwrap_or("").to_owned(),
                    request.path.unwrap_or("").to_owned(),
                );
                shared.update(index, |t| {
                    t.method = method;
                    t.target = target;
                    t.authorization = authorization;
                });
                break len;
            }
            Ok(httparse::Status::Partial) if head.len() < 16 * 1024 => {}
            _ => return answer(&mut client, index, shared, 400, "Bad Request"),
        }
    };
    let tunnel = shared.lock().tunnels[index].clone();
    if tunnel.method != "CONNECT" {
        return answer(&mut client, index, shared, 405, "Method Not Allowed");
    }
    match shared.mode {
        ProxyMode::Refuse(status) => {
            let reason = match status {
                403 => "Forbidden",
                502 => "Bad Gateway",
                503 => "Service Unavailable",
                _ => "Refused",
            };
            return answer(&mut client, index, shared, status, reason);
        }
        ProxyMode::Silent => {
            // Holds the connection until the client or the proxy's drop ends it.
            while client.read(&mut buf)? > 0 {}
            return Ok(());
        }
        ProxyMode::HangUp => return client.shutdown(Shutdown::Both),
        ProxyMode::Garbage => {
            client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")?;
            return client.shutdown(Shutdown::Write);
        }
        ProxyMode::EndlessHead => {
            client.write_all(b"HTTP/1.1 200 OK\r\nX-Padding: ")?;
            let chunk = [b'a'; 4096];
            let mut sent = 0usize;
            // Stops when the client gives up (or after 64 MiB, far past any bound).
            while sent < 64 << 20 && client.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            return Ok(());
        }
        ProxyMode::DropAfterOk => {
            client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
            // Read first, so that closing sends a FIN, not a reset for unread bytes.
            let _ = client.read(&mut buf)?;
            client.shutdown(Shutdown::Write)?;
            while client.read(&mut buf)? > 0 {}
            return Ok(());
        }
        ProxyMode::Tunnel => {}
    }
    if let Some((user, password)) = &shared.credentials {
        let expected = format!(
            "Basic {}",
            data_encoding::BASE64.encode(format!("{user}:{password}").as_bytes())
        );
        if tunnel.authorization.as_deref() != Some(expected.as_str()) {
            return answer(
                &mut client,
                index,
                shared,
                407,
                "Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"",
            );
        }
    }
    let Some(server) = dial(&tunnel.target) else {
        return answer(&mut client, index, shared, 502, "Bad Gateway");
    };
    if let Ok(clone) = server.try_clone() {
        shared.lock().sockets.push(clone);
    }
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    shared.update(index, |t| t.status = Some(200));
    let early = head.split_off(head_len);
    relay(client, server, early, index, shared)
}

/// Answers `status` (the reason may carry extra header lines) and closes.
fn answer(
    client: &mut TcpStream,
    index: usize,
    shared: &Arc<Shared>,
    status: u16,
    reason: &str,
) -> io::Result<()> {
    shared.update(index, |t| t.status = Some(status));
    write!(
        client,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    client.flush()?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// Connects to `host:port`; `*.test` names go to 127.0.0.1.
fn dial(target: &str) -> Option<TcpStream> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.ends_with(".test") {
        "127.0.0.1"
    } else {
        host
    };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(5)).ok())
}

/// Copies both ways until either side ends; keeps the first bytes the client sends.
fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    early: Vec<u8>,
    index: usize,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let (mut client_r, mut server_w) = (client.try_clone()?, server.try_clone()?);
    let keep = Arc::clone(shared);
    let upstream = std::thread::spawn(move || {
        let record = |bytes: &[u8]| {
            keep.update(index, |t| {
                let room = KEEP_FIRST.saturating_sub(t.first_bytes.len());
                t.first_bytes
                    .extend_from_slice(&bytes[..bytes.len().min(room)]);
            });
        };
        let mut buf = [0u8; 16 * 1024];
        if !early.is_empty() {
            record(&early);
            if server_w.write_all(&early).is_err() {
                return;
            }
        }
        loop {
            match client_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    record(&buf[..n]);
                    if server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_w.shutdown(Shutdown::Write);
    });
    let _ = io::copy(&mut server, &mut client);
    let _ = client.shutdown(Shutdown::Write);
    let _ = upstream.join();
    Ok(())
}

/// The SNI host name of a TLS ClientHello record at the start of `bytes`.
fn client_hello_sni(bytes: &[u8]) -> Option<String> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn u8(&mut self) -> Option<usize> {
            self.take(1).map(|b| usize::from(b[0]))
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2)
                .map(|b| usize::from(b[0]) << 8 | usize::from(b[1]))
        }
    }
    let mut r = Reader(bytes);
    // Record: handshake (22), version, length; then a ClientHello (1) and its length.
    if r.u8()? != 22 {
        return None;
    }
    r.take(2)?;
    let record_len = r.u16()?;
    let mut r = Reader(r.take(record_len)?);
    if r.u8()? != 1 {
        return None;
    }
    r.take(3)?;
    r.take(2 + 32)?; // version, random
    let n = r.u8()?;
    r.take(n)?; // session id
    let n = r.u16()?;
    r.take(n)?; // cipher suites
    let n = r.u8()?;
    r.take(n)?; // compression methods
    let n = r.u16()?;
    let mut ext = Reader(r.take(n)?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let n = ext.u16()?;
        let mut data = Reader(ext.take(n)?);
        if kind == 0 {
            data.u16()?; // list length
            if data.u8()? != 0 {
                return None; // not a host name
            }
            let n = data.u16()?;
            return String::from_utf8(data.take(n)?.to_vec()).ok();
        }
    }
    None
}
