//! A small SOCKS5 proxy on `127.0.0.1:0` for the proxy tests (RFC 1928, `CONNECT` only,
//! with RFC 1929 username/password): it tunnels, demands credentials, refuses with a reply
//! code, or misbehaves on purpose, and records every connection (the methods offered, the
//! credentials, the request, its reply, and the first bytes the client sent into the
//! tunnel, from which [`SocksRequest::sni`] reads a TLS ClientHello's server name).
//!
//! It is strict, to catch a client that is not: a version byte that is not the protocol's,
//! or a reserved byte that is not 0, is recorded ([`SocksRequest::violation`]) and the
//! connection closed (after a failure reply where the protocol has one).
//!
//! Host names ending in `.test` (a reserved top-level domain) resolve to `127.0.0.1` at the
//! proxy, so a test can name a server that only the proxy can reach. The listener, the
//! records and the relay are [`crate::proxy`]'s.
//!
//! ```
//! use wxsocket_tests::socks::{SocksMode, TestSocksProxy};
//! let proxy = TestSocksProxy::start(SocksMode::Reply(2));
//! assert!(proxy.url().starts_with("socks5h://127.0.0.1:"));
//! assert!(proxy.requests().is_empty());
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::proxy::{self, Record, Server, Shared};

/// The protocol's version byte (greeting, request, reply).
const VERSION: u8 = 5;
/// The username/password sub-negotiation's version byte (RFC 1929).
const AUTH_VERSION: u8 = 1;
/// Method: no authentication required.
const NO_AUTH: u8 = 0;
/// Method: username/password (RFC 1929).
const USER_PASSWORD: u8 = 2;
/// Method: none of the offered methods is acceptable.
const NO_ACCEPTABLE: u8 = 0xFF;
/// Command: `CONNECT`.
const CONNECT: u8 = 1;
/// Replies: succeeded, general failure, host unreachable, connection refused, command not
/// supported, address type not supported.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const HOST_UNREACHABLE: u8 = 4;
const CONNECTION_REFUSED: u8 = 5;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;
/// The bound address of a reply that has none.
const UNBOUND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// The bound address [`SocksMode::ReplyWithDomain`] answers with.
const BOUND_NAME: &[u8] = b"bound.socks.test";
/// What [`SocksMode::ExtraAfterReply`] sends after its reply.
const EXTRA: &[u8] = b"surprise";

/// What the proxy does with each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocksMode {
    /// Grants the request (after the credentials, if they are required), connects to the
    /// target and relays both ways; answers 4 (host unreachable) if the target does not
    /// resolve or cannot be reached, 5 if it refuses the connection.
    Tunnel,
    /// Answers the greeting (method 0), reads the request and answers it with this reply
    /// code (e.g. 2, not allowed by ruleset; 5, connection refused), then closes.
    Reply(u8),
    /// Answers the greeting with method `0xFF` (no acceptable method) and closes.
    NoAcceptableMethod,
    /// Reads the greeting and never answers (until the client goes away).
    Silent,
    /// Reads the greeting and closes the connection without answering.
    HangUp,
    /// Answers the greeting with bytes that are not SOCKS5 (an HTTP `400`) and closes.
    Garbage,
    /// Answers the greeting, reads the request, sends the first 4 bytes of a success reply
    /// (`05 00 00 01`, recorded as reply 0) and closes.
    HangUpMidReply,
    /// Answers the request with success and, in the same write, the bytes `surprise`;
    /// then reads what the client sends first through the tunnel and closes it (the server
    /// speaks only after the client, so a client fails the dial on them, naming the proxy).
    ExtraAfterReply,
    /// Answers the request with success, reads what the client sends first through the
    /// tunnel, and closes it (a proxy that cannot reach the server after all).
    DropAfterOk,
    /// As [`SocksMode::Tunnel`], but the success reply's bound address is a domain name
    /// (address type 3, `bound.socks.test`), which is legal: a client must accept it.
    ReplyWithDomain,
}

/// One connection the proxy accepted, as far as the client got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocksRequest {
    /// The methods the client offered in its greeting.
    pub methods: Vec<u8>,
    /// The method the proxy chose in answer (0, 2, or `0xFF` for none acceptable; `None`
    /// while it has not answered).
    pub method: Option<u8>,
    /// The username and password the client sent (RFC 1929), if it did (as UTF-8, lossily).
    pub credentials: Option<(String, String)>,
    /// The request's command byte (1 for `CONNECT`).
    pub command: Option<u8>,
    /// The request's address type: 1 (IPv4), 3 (domain name) or 4 (IPv6).
    pub address_type: Option<u8>,
    /// The request's target, `host:port`, as sent: the domain name or the IP address
    /// (`[::1]:443` for IPv6).
    pub target: String,
    /// The reply code the proxy answered the request with (`None` while it has not).
    pub reply: Option<u8>,
    /// The first bytes the client sent through the open tunnel (up to 8 KiB).
    pub first_bytes: Vec<u8>,
    /// What the client sent against the protocol, which made the proxy close (a version
    /// or reserved byte that is wrong, an unknown address type, no method offered).
    pub violation: Option<String>,
}

impl SocksRequest {
    /// The server name (SNI) of the TLS ClientHello at the start of
    /// [`Self::first_bytes`], if they hold one.
    pub fn sni(&self) -> Option<String> {
        proxy::client_hello_sni(&self.first_bytes)
    }
}

impl Record for SocksRequest {
    fn first_bytes_mut(&mut self) -> &mut Vec<u8> {
        &mut self.first_bytes
    }
}

/// The proxy; stopped (every socket shut, every thread joined) when dropped.
pub struct TestSocksProxy {
    server: Server<SocksRequest, SocksMode>,
}

impl TestSocksProxy {
    /// A proxy in this mode that asks for no credentials (it accepts method 0, and only 0).
    pub fn start(mode: SocksMode) -> TestSocksProxy {
        Self::launch(mode, None)
    }

    /// A tunnelling proxy that requires username/password (method 2): it answers `0xFF` to
    /// a greeting without method 2, status 1 (and closes) to other credentials than these,
    /// status 0 to these, and then tunnels.
    pub fn with_credentials(user: &str, password: &str) -> TestSocksProxy {
        Self::launch(
            SocksMode::Tunnel,
            Some((user.to_owned(), password.to_owned())),
        )
    }

    fn launch(mode: SocksMode, credentials: Option<(String, String)>) -> TestSocksProxy {
        TestSocksProxy {
            server: Server::launch("socks", mode, credentials, serve),
        }
    }

    /// `socks5h://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("socks5h://{}", self.server.addr())
    }

    /// `socks5h://USER:PASSWORD@127.0.0.1:PORT` (the parts as given, not encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("socks5h://{user}:{password}@{}", self.server.addr())
    }

    /// The proxy's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every connection so far, in arrival order.
    pub fn requests(&self) -> Vec<SocksRequest> {
        self.server.records()
    }

    /// Waits until `done` holds for the connections (panics after `timeout`, showing them).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[SocksRequest]) -> bool,
    ) -> Vec<SocksRequest> {
        self.server.wait_for(what, timeout, done)
    }
}

type SocksShared = Shared<SocksRequest, SocksMode>;

fn serve(mut client: TcpStream, index: usize, shared: &Arc<SocksShared>) -> io::Result<()> {
    // Greeting: VER NMETHODS METHODS (at most 255).
    let [version] = read_array(&mut client)?;
    if version != VERSION {
        violation(index, shared, format!("greeting version {version}, not 5"));
        return client.shutdown(Shutdown::Both);
    }
    let [count] = read_array(&mut client)?;
    let methods = read_field(&mut client, count)?;
    shared.update(index, |r| r.methods.clone_from(&methods));
    if methods.is_empty() {
        violation(index, shared, "greeting offers no method".to_owned());
        return choose(&mut client, index, shared, NO_ACCEPTABLE);
    }
    match shared.mode {
        SocksMode::Silent => return proxy::hold(client),
        SocksMode::HangUp => return client.shutdown(Shutdown::Both),
        SocksMode::Garbage => {
            client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")?;
            return client.shutdown(Shutdown::Write);
        }
        SocksMode::NoAcceptableMethod => {
            return choose(&mut client, index, shared, NO_ACCEPTABLE);
        }
        _ => {}
    }
    let wanted = match shared.credentials {
        Some(_) => USER_PASSWORD,
        None => NO_AUTH,
    };
    if !methods.contains(&wanted) {
        return choose(&mut client, index, shared, NO_ACCEPTABLE);
    }
    choose(&mut client, index, shared, wanted)?;
    if let Some((user, password)) = &shared.credentials {
        // RFC 1929: VER ULEN UNAME PLEN PASSWD; answered VER STATUS.
        let [version] = read_array(&mut client)?;
        if version != AUTH_VERSION {
            violation(index, shared, format!("auth version {version}, not 1"));
            client.write_all(&[AUTH_VERSION, 1])?;
            return client.shutdown(Shutdown::Write);
        }
        let [len] = read_array(&mut client)?;
        let sent_user = read_field(&mut client, len)?;
        let [len] = read_array(&mut client)?;
        let sent_password = read_field(&mut client, len)?;
        let right = sent_user == user.as_bytes() && sent_password == password.as_bytes();
        shared.update(index, |r| {
            r.credentials = Some((
                String::from_utf8_lossy(&sent_user).into_owned(),
                String::from_utf8_lossy(&sent_password).into_owned(),
            ));
        });
        client.write_all(&[AUTH_VERSION, if right { 0 } else { 1 }])?;
        if !right {
            return client.shutdown(Shutdown::Write);
        }
    }
    // Request: VER CMD RSV ATYP DST.ADDR DST.PORT.
    let [version, command, reserved, address_type] = read_array(&mut client)?;
    shared.update(index, |r| {
        r.command = Some(command);
        r.address_type = Some(address_type);
    });
    if version != VERSION {
        violation(index, shared, format!("request version {version}, not 5"));
        return answer(&mut client, index, shared, GENERAL_FAILURE);
    }
    let host = match address_type {
        1 => Ipv4Addr::from(read_array::<4>(&mut client)?).to_string(),
        3 => {
            let [len] = read_array(&mut client)?;
            String::from_utf8_lossy(&read_field(&mut client, len)?).into_owned()
        }
        4 => format!("[{}]", Ipv6Addr::from(read_array::<16>(&mut client)?)),
        _ => {
            violation(index, shared, format!("address type {address_type}"));
            return answer(&mut client, index, shared, ADDRESS_TYPE_NOT_SUPPORTED);
        }
    };
    let port = u16::from_be_bytes(read_array(&mut client)?);
    let target = format!("{host}:{port}");
    shared.update(index, |r| r.target.clone_from(&target));
    if reserved != 0 {
        violation(
            index,
            shared,
            format!("request reserved byte {reserved}, not 0"),
        );
        return answer(&mut client, index, shared, GENERAL_FAILURE);
    }
    if command != CONNECT {
        return answer(&mut client, index, shared, COMMAND_NOT_SUPPORTED);
    }
    let domain_reply = match shared.mode {
        SocksMode::Reply(code) => return answer(&mut client, index, shared, code),
        SocksMode::HangUpMidReply => {
            client.write_all(&reply(SUCCEEDED, UNBOUND)[..4])?;
            shared.update(index, |r| r.reply = Some(SUCCEEDED));
            return client.shutdown(Shutdown::Both);
        }
        SocksMode::DropAfterOk | SocksMode::ExtraAfterReply => {
            let mut bytes = reply(SUCCEEDED, UNBOUND);
            if shared.mode == SocksMode::ExtraAfterReply {
                bytes.extend_from_slice(EXTRA);
            }
            client.write_all(&bytes)?;
            shared.update(index, |r| r.reply = Some(SUCCEEDED));
            return proxy::close_after_first(client, Vec::new(), index, shared);
        }
        SocksMode::ReplyWithDomain => true,
        _ => false,
    };
    let server = match proxy::dial(&target) {
        Ok(server) => server,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return answer(&mut client, index, shared, CONNECTION_REFUSED);
        }
        Err(_) => return answer(&mut client, index, shared, HOST_UNREACHABLE),
    };
    shared.register(&server);
    let bound = server.local_addr().unwrap_or(UNBOUND);
    let bytes = if domain_reply {
        let mut bytes = vec![VERSION, SUCCEEDED, 0, 3, BOUND_NAME.len() as u8];
        bytes.extend_from_slice(BOUND_NAME);
        bytes.extend_from_slice(&bound.port().to_be_bytes());
        bytes
    } else {
        reply(SUCCEEDED, bound)
    };
    client.write_all(&bytes)?;
    shared.update(index, |r| r.reply = Some(SUCCEEDED));
    proxy::relay(client, server, Vec::new(), index, shared)
}

/// Reads exactly `N` bytes.
fn read_array<const N: usize>(client: &mut TcpStream) -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    client.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Reads a field of `len` bytes (its length a byte, so at most 255).
fn read_field(client: &mut TcpStream, len: u8) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; usize::from(len)];
    client.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Records what the client got wrong.
fn violation(index: usize, shared: &SocksShared, what: String) {
    shared.update(index, |r| r.violation = Some(what));
}

/// Answers the greeting with `method` (and closes if it is `0xFF`).
fn choose(
    client: &mut TcpStream,
    index: usize,
    shared: &SocksShared,
    method: u8,
) -> io::Result<()> {
    client.write_all(&[VERSION, method])?;
    shared.update(index, |r| r.method = Some(method));
    if method == NO_ACCEPTABLE {
        client.shutdown(Shutdown::Write)?;
    }
    Ok(())
}

/// `05 REP 00 01 ADDR PORT`, the bound address IPv4 (`0.0.0.0` if it is not).
fn reply(code: u8, bound: SocketAddr) -> Vec<u8> {
    let ip = match bound {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let mut bytes = vec![VERSION, code, 0, 1];
    bytes.extend_from_slice(&ip.octets());
    bytes.extend_from_slice(&bound.port().to_be_bytes());
    bytes
}

/// Answers the request with `code` (bound to `0.0.0.0:0`) and closes.
fn answer(client: &mut TcpStream, index: usize, shared: &SocksShared, code: u8) -> io::Result<()> {
    shared.update(index, |r| r.reply = Some(code));
    client.write_all(&reply(code, UNBOUND))?;
    client.shutdown(Shutdown::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread::JoinHandle;

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// A client socket to the proxy, every read and write bounded.
    fn connect(proxy: &TestSocksProxy) -> TcpStream {
        let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; n];
        stream.read_exact(&mut bytes).expect("read from the proxy");
        bytes
    }

    /// What is left before the proxy closes (a timeout fails the test).
    fn rest(stream: &mut TcpStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("read to the end");
        bytes
    }

    /// A one-connection echo server on 127.0.0.1.
    fn echo() -> (u16, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut reader = stream.try_clone().unwrap();
            let _ = io::copy(&mut reader, &mut stream);
        });
        (port, thread)
    }

    /// A port on 127.0.0.1 where nothing listens.
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn connect_ipv4(port: u16) -> Vec<u8> {
        let mut request = vec![5, 1, 0, 1, 127, 0, 0, 1];
        request.extend_from_slice(&port.to_be_bytes());
        request
    }

    fn connect_domain(name: &[u8], port: u16) -> Vec<u8> {
        let mut request = vec![5, 1, 0, 3, name.len() as u8];
        request.extend_from_slice(name);
        request.extend_from_slice(&port.to_be_bytes());
        request
    }

    fn credentials(user: &str, password: &str) -> Vec<u8> {
        let mut bytes = vec![1, user.len() as u8];
        bytes.extend_from_slice(user.as_bytes());
        bytes.push(password.len() as u8);
        bytes.extend_from_slice(password.as_bytes());
        bytes
    }

    /// Sends `ping` through an open tunnel to the echo server and reads it back.
    fn ping(stream: &mut TcpStream) {
        stream.write_all(b"ping").unwrap();
        assert_eq!(read_n(stream, 4), b"ping");
    }

    fn one(
        proxy: &TestSocksProxy,
        what: &str,
        done: impl Fn(&SocksRequest) -> bool,
    ) -> SocksRequest {
        proxy
            .wait_for(what, TIMEOUT, |r| r.len() == 1 && done(&r[0]))
            .remove(0)
    }

    #[test]
    fn tunnels_to_an_ipv4_target_without_credentials() {
        let (port, echo) = echo();
        let proxy = TestSocksProxy::start(SocksMode::Tunnel);
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 0]);
        s.write_all(&connect_ipv4(port)).unwrap();
        let reply = read_n(&mut s, 10);
        assert_eq!(reply[..8], [5, 0, 0, 1, 127, 0, 0, 1]);
        assert_ne!(reply[8..], [0, 0], "the bound port");
        ping(&mut s);
        let r = one(&proxy, "the ping", |r| r.first_bytes == b"ping");
        assert_eq!(r.methods, [0]);
        assert_eq!(r.method, Some(0));
        assert_eq!(r.credentials, None);
        assert_eq!((r.command, r.address_type), (Some(1), Some(1)));
        assert_eq!(r.target, format!("127.0.0.1:{port}"));
        assert_eq!(r.reply, Some(0));
        assert_eq!(r.violation, None);
        drop(s);
        drop(proxy);
        echo.join().unwrap();
    }

    #[test]
    fn a_test_domain_resolves_to_loopback() {
        let (port, echo) = echo();
        let proxy = TestSocksProxy::start(SocksMode::Tunnel);
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 0]);
        s.write_all(&connect_domain(b"echo.test", port)).unwrap();
        assert_eq!(read_n(&mut s, 10)[..2], [5, 0]);
        ping(&mut s);
        let r = one(&proxy, "the ping", |r| r.first_bytes == b"ping");
        assert_eq!(r.address_type, Some(3));
        assert_eq!(r.target, format!("echo.test:{port}"));
        drop(proxy);
        echo.join().unwrap();
    }

    #[test]
    fn credentials_right_wrong_and_not_offered() {
        let (port, echo) = echo();
        let proxy = TestSocksProxy::with_credentials("bob", "s3cret");
        assert_eq!(
            proxy.url_with("bob", "s3cret"),
            format!("socks5h://bob:s3cret@{}", proxy.addr())
        );

        let mut right = connect(&proxy);
        right.write_all(&[5, 2, 0, 2]).unwrap();
        assert_eq!(read_n(&mut right, 2), [5, 2]);
        right.write_all(&credentials("bob", "s3cret")).unwrap();
        assert_eq!(read_n(&mut right, 2), [1, 0]);
        right.write_all(&connect_ipv4(port)).unwrap();
        assert_eq!(read_n(&mut right, 10)[..2], [5, 0]);
        ping(&mut right);

        let mut wrong = connect(&proxy);
        wrong.write_all(&[5, 1, 2]).unwrap();
        assert_eq!(read_n(&mut wrong, 2), [5, 2]);
        wrong.write_all(&credentials("bob", "guess")).unwrap();
        assert_eq!(rest(&mut wrong), [1, 1]);

        let mut none = connect(&proxy);
        none.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(rest(&mut none), [5, 0xFF]);

        let requests = proxy.wait_for("three connections", TIMEOUT, |r| {
            r.len() == 3 && r[0].first_bytes == b"ping" && r[2].method.is_some()
        });
        let pair = |u: &str, p: &str| Some((u.to_owned(), p.to_owned()));
        assert_eq!(requests[0].credentials, pair("bob", "s3cret"));
        assert_eq!(requests[0].reply, Some(0));
        assert_eq!(requests[1].credentials, pair("bob", "guess"));
        assert_eq!(requests[1].command, None, "no request after a refusal");
        assert_eq!(
            (requests[2].methods.as_slice(), requests[2].method),
            (&[0][..], Some(0xFF))
        );
        assert_eq!(requests[2].credentials, None);
        drop(proxy);
        echo.join().unwrap();
    }

    #[test]
    fn a_reply_mode_answers_its_code_and_closes() {
        let proxy = TestSocksProxy::start(SocksMode::Reply(5));
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 0]);
        s.write_all(&connect_domain(b"example.test", 80)).unwrap();
        assert_eq!(rest(&mut s), [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
        let r = one(&proxy, "the reply", |r| r.reply.is_some());
        assert_eq!((r.target.as_str(), r.reply), ("example.test:80", Some(5)));
    }

    #[test]
    fn an_ipv6_target_is_recorded_in_brackets() {
        let proxy = TestSocksProxy::start(SocksMode::Reply(2));
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 0]);
        let mut request = vec![5, 1, 0, 4];
        request.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        request.extend_from_slice(&443u16.to_be_bytes());
        s.write_all(&request).unwrap();
        assert_eq!(rest(&mut s)[..2], [5, 2]);
        let r = one(&proxy, "the reply", |r| r.reply.is_some());
        assert_eq!((r.address_type, r.target.as_str()), (Some(4), "[::1]:443"));
    }

    #[test]
    fn an_unreachable_target_is_answered_as_a_real_proxy_would() {
        let proxy = TestSocksProxy::start(SocksMode::Tunnel);
        let refused = connect_ipv4(closed_port());
        // A name no resolver takes (a NUL in it), so that no lookup leaves the machine.
        let unresolvable = connect_domain(b"no\0where.example", 80);
        for (request, code) in [(refused, 5), (unresolvable, 4)] {
            let mut s = connect(&proxy);
            s.write_all(&[5, 1, 0]).unwrap();
            assert_eq!(read_n(&mut s, 2), [5, 0]);
            s.write_all(&request).unwrap();
            assert_eq!(rest(&mut s), [5, code, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn a_client_that_breaks_the_protocol_is_recorded_and_closed() {
        let proxy = TestSocksProxy::start(SocksMode::Tunnel);
        let wrong_request = |bytes: &[u8]| {
            let mut s = connect(&proxy);
            s.write_all(&[5, 1, 0]).unwrap();
            assert_eq!(read_n(&mut s, 2), [5, 0]);
            s.write_all(bytes).unwrap();
            rest(&mut s)
        };
        let mut s = connect(&proxy);
        s.write_all(&[4, 1, 0, 80, 0, 0, 0, 1, 0]).unwrap();
        assert_eq!(rest(&mut s), b"", "no answer to SOCKS4");
        let failure = [5, 1, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(wrong_request(&[4, 1, 0, 1, 127, 0, 0, 1, 0, 80]), failure);
        assert_eq!(wrong_request(&[5, 1, 1, 1, 127, 0, 0, 1, 0, 80]), failure);
        assert_eq!(wrong_request(&[5, 1, 0, 9])[..2], [5, 8]);
        assert_eq!(
            wrong_request(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])[..2],
            [5, 7]
        );

        let with_credentials = TestSocksProxy::with_credentials("bob", "s3cret");
        let mut s = connect(&with_credentials);
        s.write_all(&[5, 1, 2]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 2]);
        s.write_all(&[5, 3]).unwrap();
        assert_eq!(rest(&mut s), [1, 1]);

        let requests = proxy.wait_for("five connections", TIMEOUT, |r| {
            r.len() == 5 && r.iter().all(|r| r.violation.is_some() || r.reply.is_some())
        });
        let violations: Vec<_> = requests.iter().map(|r| r.violation.as_deref()).collect();
        assert_eq!(
            violations,
            [
                Some("greeting version 4, not 5"),
                Some("request version 4, not 5"),
                Some("request reserved byte 1, not 0"),
                Some("address type 9"),
                None, // BIND is a command the protocol has, that this proxy refuses.
            ]
        );
        assert_eq!(requests[2].target, "127.0.0.1:80");
        let r = one(&with_credentials, "the violation", |r| {
            r.violation.is_some()
        });
        assert_eq!(r.violation.as_deref(), Some("auth version 5, not 1"));
    }

    #[test]
    fn misbehaving_modes_send_what_they_say() {
        let greeting_only = [
            (SocksMode::NoAcceptableMethod, &[5, 0xFF][..]),
            (SocksMode::HangUp, b""),
            (SocksMode::Garbage, b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        ];
        for (mode, expected) in greeting_only {
            let proxy = TestSocksProxy::start(mode.clone());
            let mut s = connect(&proxy);
            s.write_all(&[5, 1, 0]).unwrap();
            assert_eq!(rest(&mut s), expected, "{mode:?}");
        }

        let proxy = TestSocksProxy::start(SocksMode::Silent);
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        one(&proxy, "the greeting", |r| r.methods == [0]);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let silent = s.read(&mut [0u8; 1]).unwrap_err();
        assert!(matches!(
            silent.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        drop(proxy); // Shuts the silent connection.
        assert_eq!(rest(&mut s), b"");

        let after_request = |mode: SocksMode, tunnel: &[u8]| {
            let proxy = TestSocksProxy::start(mode);
            let mut s = connect(&proxy);
            s.write_all(&[5, 1, 0]).unwrap();
            assert_eq!(read_n(&mut s, 2), [5, 0]);
            s.write_all(&connect_ipv4(closed_port())).unwrap();
            s.write_all(tunnel).unwrap();
            let got = rest(&mut s);
            let r = one(&proxy, "the reply", |r| r.reply.is_some());
            (got, r)
        };
        let (got, r) = after_request(SocksMode::HangUpMidReply, b"");
        assert_eq!((got.as_slice(), r.reply), (&[5, 0, 0, 1][..], Some(0)));
        let (got, r) = after_request(SocksMode::DropAfterOk, b"hello");
        assert_eq!(got, [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.first_bytes, b"hello");
        let (got, r) = after_request(SocksMode::ExtraAfterReply, b"hello");
        assert_eq!(got, b"\x05\x00\x00\x01\x00\x00\x00\x00\x00\x00surprise");
        assert_eq!(r.first_bytes, b"hello");

        let (port, echo) = echo();
        let proxy = TestSocksProxy::start(SocksMode::ReplyWithDomain);
        let mut s = connect(&proxy);
        s.write_all(&[5, 1, 0]).unwrap();
        assert_eq!(read_n(&mut s, 2), [5, 0]);
        s.write_all(&connect_ipv4(port)).unwrap();
        let name = b"bound.socks.test";
        let reply = read_n(&mut s, 5 + name.len() + 2);
        assert_eq!(reply[..5], [5, 0, 0, 3, name.len() as u8]);
        assert_eq!(&reply[5..5 + name.len()], name);
        ping(&mut s);
        drop(proxy);
        echo.join().unwrap();
    }
}
