//! A small HTTP `CONNECT` proxy on `127.0.0.1:0` for the proxy tests: it tunnels, demands
//! Basic credentials, refuses with a status, or never answers, and records every request
//! (the target, the `Proxy-Authorization` it got, its answer, and the first bytes the
//! client sent into the tunnel, from which [`Tunnel::sni`] reads a TLS ClientHello's
//! server name).
//!
//! Host names ending in `.test` (a reserved top-level domain) resolve to `127.0.0.1` at the
//! proxy, so a test can name a server that only the proxy can reach. The SOCKS5 proxy,
//! [`crate::socks`], shares its listener, records and relay.
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
pub(crate) const KEEP_FIRST: usize = 8 * 1024;

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

impl Record for Tunnel {
    fn first_bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.first_bytes
    }
}

/// The proxy; stopped (every socket shut, every thread joined) when dropped.
pub struct TestProxy {
    server: Server<Tunnel, ProxyMode>,
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
        TestProxy {
            server: Server::launch("proxy", mode, credentials, serve),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// `http://USER:PASSWORD@127.0.0.1:PORT` (the parts as given, not encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.server.addr())
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Tunnel> {
        self.server.records()
    }

    /// Waits until `done` holds for the requests (panics after `timeout`, showing them).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Tunnel]) -> bool,
    ) -> Vec<Tunnel> {
        self.server.wait_for(what, timeout, done)
    }
}

/// What a test proxy records of each connection: the harness keeps the first bytes the
/// client sends through a tunnel in it.
pub(crate) trait Record: Clone + Default + std::fmt::Debug + Send + 'static {
    /// Where the first bytes through the tunnel go.
    fn first_bytes_mut(&mut self) -> &mut Vec<u8>;
}

struct State<R> {
    records: Vec<R>,
    sockets: Vec<TcpStream>,
    handlers: Vec<JoinHandle<()>>,
    stop: bool,
}

/// What a test proxy's connection threads share: the records, the sockets to shut and the
/// threads to join on drop, the mode and the credentials it requires.
pub(crate) struct Shared<R, M> {
    state: Mutex<State<R>>,
    changed: Condvar,
    pub(crate) mode: M,
    pub(crate) credentials: Option<(String, String)>,
}

impl<R: Record, M> Shared<R, M> {
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the record of connection `index` (and wakes [`Server::wait_for`]).
    pub(crate) fn update(&self, index: usize, f: impl FnOnce(&mut R)) {
        f(&mut self.lock().records[index]);
        self.changed.notify_all();
    }

    /// The record of connection `index` as it is now.
    pub(crate) fn record(&self, index: usize) -> R {
        self.lock().records[index].clone()
    }

    /// Has the proxy's drop shut `socket` (at once if it is already stopping).
    pub(crate) fn register(&self, socket: &TcpStream) {
        let Ok(clone) = socket.try_clone() else {
            return;
        };
        let mut state = self.lock();
        if state.stop {
            let _ = clone.shutdown(Shutdown::Both);
        } else {
            state.sockets.push(clone);
        }
    }

    /// Adds to the first bytes of connection `index`, up to [`KEEP_FIRST`].
    fn keep_first(&self, index: usize, bytes: &[u8]) {
        self.update(index, |r| {
            let first = r.first_bytes_mut();
            let room = KEEP_FIRST.saturating_sub(first.len());
            first.extend_from_slice(&bytes[..bytes.len().min(room)]);
        });
    }
}

/// Serves one accepted connection, the `index`-th.
pub(crate) type Serve<R, M> = fn(TcpStream, usize, &Arc<Shared<R, M>>) -> io::Result<()>;

/// A test proxy's listener on `127.0.0.1:0`, with a thread per connection, each recorded;
/// stopped (every socket shut, every thread joined) when dropped.
pub(crate) struct Server<R: Record, M: Send + Sync + 'static> {
    name: &'static str,
    addr: SocketAddr,
    shared: Arc<Shared<R, M>>,
    acceptor: Option<JoinHandle<()>>,
}

impl<R: Record, M: Send + Sync + 'static> Server<R, M> {
    /// Listens, and serves each connection with `serve` (`name` names its threads and its
    /// panics).
    pub(crate) fn launch(
        name: &'static str,
        mode: M,
        credentials: Option<(String, String)>,
        serve: Serve<R, M>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                records: Vec::new(),
                sockets: Vec::new(),
                handlers: Vec::new(),
                stop: false,
            }),
            changed: Condvar::new(),
            mode,
            credentials,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("{name}-accept-{}", addr.port()))
                .spawn(move || accept_loop(name, &listener, &shared, serve))
                .unwrap_or_else(|e| panic!("spawn the {name} accept thread: {e}"))
        };
        Server {
            name,
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn records(&self) -> Vec<R> {
        self.shared.lock().records.clone()
    }

    /// Waits until `done` holds for the records (panics after `timeout`, showing them).
    pub(crate) fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[R]) -> bool,
    ) -> Vec<R> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if done(&state.records) {
                return state.records.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: timed out after {timeout:?} waiting for {what}; requests: {:#?}",
                self.name,
                state.records
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

impl<R: Record, M: Send + Sync + 'static> Drop for Server<R, M> {
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

fn accept_loop<R: Record, M: Send + Sync + 'static>(
    name: &str,
    listener: &TcpListener,
    shared: &Arc<Shared<R, M>>,
    serve: Serve<R, M>,
) {
    for stream in listener.incoming() {
        let mut state = shared.lock();
        if state.stop {
            return;
        }
        let Ok(stream) = stream else { continue };
        if let Ok(clone) = stream.try_clone() {
            state.sockets.push(clone);
        }
        let index = state.records.len();
        state.records.push(R::default());
        let shared2 = Arc::clone(shared);
        let handler = std::thread::Builder::new()
            .name(format!("{name}-conn-{index}"))
            .spawn(move || {
                let _ = serve(stream, index, &shared2);
            })
            .unwrap_or_else(|e| panic!("spawn a {name} thread: {e}"));
        state.handlers.push(handler);
    }
}

fn serve(
    mut client: TcpStream,
    index: usize,
    shared: &Arc<Shared<Tunnel, ProxyMode>>,
) -> io::Result<()> {
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
    let tunnel = shared.record(index);
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
        ProxyMode::Silent => return hold(client),
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
            shared.update(index, |t| t.status = Some(200));
            return close_after_first(client, head.split_off(head_len), index, shared);
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
    let Ok(server) = dial(&tunnel.target) else {
        return answer(&mut client, index, shared, 502, "Bad Gateway");
    };
    shared.register(&server);
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    shared.update(index, |t| t.status = Some(200));
    let early = head.split_off(head_len);
    relay(client, server, early, index, shared)
}

/// Answers `status` (the reason may carry extra header lines) and closes.
fn answer(
    client: &mut TcpStream,
    index: usize,
    shared: &Arc<Shared<Tunnel, ProxyMode>>,
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

/// Holds the connection, reading and dropping what comes, until the client or the proxy's
/// drop ends it.
pub(crate) fn hold(mut client: TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 1024];
    while client.read(&mut buf)? > 0 {}
    Ok(())
}

/// After a success answer: keeps what the client sends first through the tunnel (`early`,
/// if it came with the request, else one read), then closes the tunnel (a proxy that
/// cannot reach the server after all).
pub(crate) fn close_after_first<R: Record, M>(
    mut client: TcpStream,
    early: Vec<u8>,
    index: usize,
    shared: &Shared<R, M>,
) -> io::Result<()> {
    // Read first, so that closing sends a FIN, not a reset for unread bytes.
    if early.is_empty() {
        let mut buf = [0u8; 16 * 1024];
        let n = client.read(&mut buf)?;
        shared.keep_first(index, &buf[..n]);
    } else {
        shared.keep_first(index, &early);
    }
    client.shutdown(Shutdown::Write)?;
    hold(client)
}

/// Connects to `host:port` (the host in brackets if it is IPv6); `*.test` names go to
/// 127.0.0.1. The error is the last address's, or the name's if it does not resolve.
pub(crate) fn dial(target: &str) -> io::Result<TcpStream> {
    let invalid = || io::Error::new(io::ErrorKind::InvalidInput, format!("target {target:?}"));
    let (host, port) = target.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.ends_with(".test") {
        "127.0.0.1"
    } else {
        host
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copies both ways until either side ends; keeps the first bytes the client sends (from
/// `early`, what came with the request, on).
pub(crate) fn relay<R: Record, M: Send + Sync + 'static>(
    mut client: TcpStream,
    mut server: TcpStream,
    early: Vec<u8>,
    index: usize,
    shared: &Arc<Shared<R, M>>,
) -> io::Result<()> {
    let (mut client_r, mut server_w) = (client.try_clone()?, server.try_clone()?);
    let keep = Arc::clone(shared);
    let upstream = std::thread::spawn(move || {
        let record = |bytes: &[u8]| keep.keep_first(index, bytes);
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
pub(crate) fn client_hello_sni(bytes: &[u8]) -> Option<String> {
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
