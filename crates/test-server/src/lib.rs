//! # wxsocket-test-server (not published)
//!
//! A WebSocket echo server on 127.0.0.1, for the library crates' doc tests and examples and
//! for tests that need a well-behaved peer: plain tungstenite on std threads, so it depends
//! on neither adapter. It echoes text and binary messages and answers close frames; every
//! connection and thread ends when the server is dropped.
//!
//! ```
//! let server = wxsocket_test_server::EchoServer::start().unwrap();
//! assert!(server.url().starts_with("ws://127.0.0.1:"));
//! ```
#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tungstenite::Message;

/// A running echo server; dropping it stops it (its connections are shut down and their
/// threads joined).
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Conns,
}

/// Per connection: a clone of its socket (emptied by the connection's thread when it ends),
/// to shut it down when the server stops, and the thread.
type Conns = Arc<Mutex<Vec<(Arc<Mutex<Option<TcpStream>>>, JoinHandle<()>)>>>;

impl EchoServer {
    /// Binds 127.0.0.1 on a free port and starts accepting.
    pub fn start() -> io::Result<Self> {
        Self::flooding(0, 0)
    }

    /// A server that sends every connection the first fragment of a text message, then
    /// empty continuation frames for as long as the client reads them (until the server is
    /// dropped): frames that complete no message, and so take none of the client's read
    /// credit. It answers nothing.
    pub fn fragments_without_end() -> io::Result<Self> {
        Self::spawn(Behaviour::Fragments)
    }

    /// An echo server that first sends every connection `count` binary messages of `size`
    /// bytes as fast as the socket takes them (the `n`th filled with `n as u8`), then echoes.
    pub fn flooding(count: usize, size: usize) -> io::Result<Self> {
        Self::spawn(Behaviour::Flood {
            count,
            size,
            end: false,
        })
    }

    /// As [`Self::flooding`], but each connection ends after its flood: the server drops
    /// the TCP connection without a close frame (the client reports 1006).
    pub fn flooding_then_ending(count: usize, size: usize) -> io::Result<Self> {
        Self::spawn(Behaviour::Flood {
            count,
            size,
            end: true,
        })
    }

    fn spawn(behaviour: Behaviour) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("test-echo-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let Ok(peer) = stream.try_clone() else {
                            continue;
                        };
                        let slot = Arc::new(Mutex::new(Some(peer)));
                        let mine = Arc::clone(&slot);
                        let handle = std::thread::Builder::new()
                            .name("test-echo-conn".into())
                            .spawn(move || {
                                match behaviour {
                                    Behaviour::Flood { count, size, end } => {
                                        echo(stream, count, size, end)
                                    }
                                    Behaviour::Fragments => fragments(stream),
                                }
                                mine.lock().unwrap_or_else(|e| e.into_inner()).take();
                            });
                        if let Ok(handle) = handle {
                            let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                            // Forget connections that have ended.
                            conns.retain(|(_, h)| !h.is_finished());
                            conns.push((slot, handle));
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            stop,
            accept: Some(accept),
            conns,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL, with the server left running until the process ends (for an example that
    /// only wants a URL to connect to).
    pub fn leak_url(self) -> String {
        let url = self.url();
        std::mem::forget(self);
        url
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Unblock `accept`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for (slot, handle) in conns {
            if let Some(stream) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            let _ = handle.join();
        }
    }
}

/// What the server does with each connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// [`EchoServer::flooding`], or [`EchoServer::flooding_then_ending`] with `end`.
    Flood {
        count: usize,
        size: usize,
        end: bool,
    },
    /// [`EchoServer::fragments_without_end`].
    Fragments,
}

/// Sends the first fragment of a text message, then empty continuation frames until a
/// write fails (the client went, or the server shut the socket down).
fn fragments(stream: TcpStream) {
    use std::io::Write;
    let Ok(ws) = tungstenite::accept(stream) else {
        return;
    };
    let mut tcp = ws.into_inner();
    let empties = [0x00u8, 0x00].repeat(32 << 10);
    if tcp.write_all(&[0x01, 0x01, b'a']).is_err() {
        return;
    }
    while tcp.write_all(&empties).is_ok() {}
}

/// Sends the flood (`count` messages of `size` bytes), then (unless it `end`s there) echoes
/// text and binary messages until the connection ends; tungstenite answers pings and the client's close frame (with
/// the same code and reason) by itself.
fn echo(stream: TcpStream, count: usize, size: usize, end: bool) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    for n in 0..count {
        if ws.write(Message::binary(vec![n as u8; size])).is_err() {
            return;
        }
    }
    if ws.flush().is_err() || end {
        return;
    }
    loop {
        match ws.read() {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(message).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// A loopback address that drops connection attempts, as a host behind a broken route (or
/// a firewall that drops packets) does: a listener with a backlog of 0 whose accept queue
/// its own connections fill, so the kernel drops the SYN of every later connect, which then
/// waits (retransmitting) until its caller gives up. Dropping it closes everything.
///
/// ```
/// let hole = wxsocket_test_server::Blackhole::start().unwrap();
/// let attempt = std::net::TcpStream::connect_timeout(&hole.addr(), std::time::Duration::from_millis(50));
/// assert_eq!(attempt.unwrap_err().kind(), std::io::ErrorKind::TimedOut);
/// ```
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    _listener: socket2::Socket,
    _fillers: Vec<socket2::Socket>,
}

impl Blackhole {
    /// Binds 127.0.0.1 on a free port and fills the accept queue; fails unless a connect
    /// to it then times out.
    pub fn start() -> io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        listener.listen(0)?;
        let addr = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP address"))?;
        let mut fillers = Vec::new();
        // Connects until one times out: the queue is full from then on.
        for _ in 0..8 {
            let filler = Socket::new(Domain::IPV4, Type::STREAM, None)?;
            match filler.connect_timeout(&addr.into(), std::time::Duration::from_millis(100)) {
                Ok(()) => fillers.push(filler),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Ok(Blackhole {
                        addr,
                        _listener: listener,
                        _fillers: fillers,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("the listener kept accepting connections"))
    }

    /// The address connects to which are dropped.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// A host with a dead address and a live one after it, as a name that resolves to a broken
/// IPv6 route and a working IPv4 address looks to a client: a [`Blackhole`], then a listener
/// that accepts (and reads nothing).
#[derive(Debug)]
pub struct DeadThenLive {
    /// The dead address's listener.
    pub dead: Blackhole,
    /// The live address's listener.
    pub live: TcpListener,
}

impl DeadThenLive {
    /// Starts both on 127.0.0.1.
    pub fn start() -> io::Result<Self> {
        Ok(DeadThenLive {
            dead: Blackhole::start()?,
            live: TcpListener::bind("127.0.0.1:0")?,
        })
    }

    /// The addresses in the order a resolver would give them: the dead one first.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let live = self.live.local_addr().expect("a bound listener");
        vec![self.dead.addr(), live]
    }

    /// A `ws://` URL of the live address.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addrs()[1])
    }
}
