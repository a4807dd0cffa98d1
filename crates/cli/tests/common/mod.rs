//! Shared by the process-level tests: running the built `wxsocket` binary with bounded
//! waits, and an in-process WebSocket server (tokio-tungstenite) that records what it saw.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The longest any single wait of a test may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wxsocket")
}

/// A running `wxsocket` process: stdin to write, stdout lines to expect, killed on drop.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Option<String>>,
    stdout_done: bool,
    /// The longest wait for one line of output.
    wait: Duration,
    /// Every stdout line seen so far.
    pub seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    /// Starts `wxsocket ARGS`.
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_waiting(args, WAIT)
    }

    /// Starts `wxsocket ARGS`, allowing `wait` for each line of output.
    pub fn spawn_waiting(args: &[&str], wait: Duration) -> Proc {
        let mut command = Command::new(bin());
        command.args(args);
        Self::start(command, wait)
    }

    /// Starts `wxsocket ARGS` through `sh` with SIGHUP ignored, as `nohup` starts a
    /// command (the disposition is inherited across `exec`).
    #[cfg(unix)]
    pub fn spawn_with_hangup_ignored(args: &[&str]) -> Proc {
        let mut command = Command::new("sh");
        command
            .args(["-c", "trap '' HUP; exec \"$0\" \"$@\""])
            .arg(bin())
            .args(args);
        Self::start(command, WAIT)
    }

    fn start(mut command: Command, wait: Duration) -> Proc {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wxsocket");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(Some(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(None);
        });
        let mut pipe = child.stderr.take().expect("stderr");
        let stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        }));
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            stdout_done: false,
            wait,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the process's standard input.
    pub fn write(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{line}").expect("write to wxsocket");
        stdin.flush().expect("flush");
    }

    /// Ends the process's standard input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn context(&mut self) -> String {
        // Stop the process so its stderr can be read in full.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        format!(
            "stdout so far:\n{}\nstderr:\n{stderr}",
            self.seen.join("\n")
        )
    }

    /// The next stdout line, or `None` at end of output; panics after [`WAIT`].
    pub fn next_line(&mut self) -> Option<String> {
        if self.stdout_done {
            return None;
        }
        match self.lines.recv_timeout(self.wait) {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.stdout_done = true;
                None
            }
            Err(RecvTimeoutError::Timeout) => {
                let wait = self.wait;
                panic!(
                    "no output from wxsocket within {wait:?}\n{}",
                    self.context()
                )
            }
        }
    }

    /// Reads stdout lines until one matches; panics at end of output or after [`WAIT`].
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.next_line() {
                Some(line) if pred(&line) => return line,
                Some(_) => {}
                None => panic!("output ended before {what}\n{}", self.context()),
            }
        }
        panic!("no {what} within {WAIT:?}\n{}", self.context())
    }

    /// Reads JSON lines until one matches; every line must be a JSON object.
    pub fn expect_json(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let line = self.expect(what, |line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            pred(&value)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Closes stdin, reads the rest of stdout and waits for the exit (bounded).
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, String) {
        self.close_stdin();
        self.exit()
    }

    /// With stdin still open, reads the rest of stdout and waits for the exit (bounded):
    /// the process must end on its own.
    pub fn exit(mut self) -> (ExitStatus, Vec<String>, String) {
        while self.next_line().is_some() {}
        // stdout is closed: the process is exiting.
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "wxsocket did not exit\n{}",
                self.context()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        // The process has exited, so its stderr pipe is closed and the reader ends.
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        (status, std::mem::take(&mut self.seen), stderr)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `args` for the blocking adapter when `blocking` (`--blocking` appended), else as they are.
pub fn with_adapter(mut args: Vec<&str>, blocking: bool) -> Vec<&str> {
    if blocking {
        args.push("--blocking");
    }
    args
}

/// The `"event"` of a `--json` line ("" if it has none).
pub fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

/// Runs `wxsocket ARGS` with `input` on stdin to the end: exit status, stdout lines, stderr.
pub fn run(args: &[&str], input: &str) -> (ExitStatus, Vec<String>, String) {
    let mut proc = Proc::spawn(args);
    for line in input.lines() {
        proc.write(line);
    }
    proc.finish()
}

/// What the test server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Echo text and binary, answer the close.
    Echo,
    /// As `Echo`, but answer the first connection's close frame only this many
    /// milliseconds after it came.
    LateCloseAnswerFirst(u64),
    /// Close the first connection with this code right after the handshake; echo later ones.
    CloseFirstWith(u16),
    /// Close every connection with this code right after the handshake (1005: a close
    /// frame without a code).
    CloseEachWith(u16),
    /// Complete the handshake, then never read: pings go unanswered.
    Silent,
    /// Refuse every handshake with this HTTP status.
    Reject(u16),
    /// Echo the first message, then close with this code.
    EchoThenClose(u16),
    /// Complete the handshake, then drop the TCP connection without a close frame.
    DropAfterHandshake,
    /// Complete the handshake, then send a text frame that is not UTF-8 (the client fails
    /// the connection with 1007).
    InvalidUtf8,
    /// Hold the echoes until the client's close frame arrives, then send them before the
    /// close answer: every reply arrives after the client's close frame (RFC 6455 §5.5.1
    /// allows it).
    EchoAfterClose,
    /// Never quiet: a text message `tick N` every 20 ms from the handshake on, and echoes;
    /// the client's close frame is recorded (`close`, and `close_answered` when it came)
    /// and answered.
    Ticker,
    /// As `Ticker`, but as fast as the client reads: `flood` messages written in bursts
    /// of 8192 frames.
    Flood,
    /// As `Echo`, but answer the client's close frame with this code instead of its own.
    AnswerCloseWith(u16),
}

/// Writes `bytes` to `stream` as they are (frames built by hand).
async fn write_raw(stream: &tokio::net::TcpStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        if stream.writable().await.is_err() {
            return;
        }
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// An unmasked server frame (`opcode` 1 text, 2 binary) of a payload under 64 KiB.
fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(n as u8),
        n => {
            let n = u16::try_from(n).expect("a payload under 64 KiB");
            frame.push(126);
            frame.extend_from_slice(&n.to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// One handshake the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub target: String,
    /// Request headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// When the server read the request, before it answered: the client cannot have
    /// opened before this.
    pub at: Instant,
    /// What the client's close frame said (code, reason), once it arrived.
    pub close: Option<(u16, String)>,
    /// When the server went on to send its answer to that close frame.
    pub close_answered: Option<Instant>,
}

/// An in-process WebSocket server on 127.0.0.1 (its own runtime), stopped on drop.
pub struct TestServer {
    url: String,
    release: watch::Sender<bool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Starts a server; with `hold`, handshakes wait until [`release`](Self::release).
    pub fn start(mode: Mode, hold: bool) -> TestServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            if mode == Mode::Flood {
                // What the flood keeps in flight is drained before the close's answer: a
                // small send buffer keeps it to the client's receive buffer.
                socket.set_send_buffer_size(64 << 10)?;
            }
            socket.bind("127.0.0.1:0".parse().unwrap())?;
            socket.listen(1024)
        });
        let listener: TcpListener = listener.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (release, released) = watch::channel(!hold);
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        runtime.spawn(async move {
            let mut n = 0usize;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                n += 1;
                let mut released = released.clone();
                let record = Arc::clone(&record);
                let first = n == 1;
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    if released.wait_for(|r| *r).await.is_err() {
                        return;
                    }
                    let index = Arc::new(Mutex::new(None::<usize>));
                    let at = Arc::clone(&index);
                    let rec = Arc::clone(&record);
                    #[allow(clippy::result_large_err)] // the type tungstenite asks for
                    let callback = move |req: &Request, mut resp: Response| {
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                            })
                            .collect();
                        let offered = req
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.split(',').next())
                            .map(|p| p.trim().to_owned());
                        if let Some(p) = offered {
                            resp.headers_mut().insert(
                                "sec-websocket-protocol",
                                HeaderValue::from_str(&p).unwrap(),
                            );
                        }
                        let mut all = rec.lock().unwrap();
                        all.push(Seen {
                            target: req.uri().to_string(),
                            headers,
                            at: Instant::now(),
                            close: None,
                            close_answered: None,
                        });
                        *at.lock().unwrap() = Some(all.len() - 1);
                        if let Mode::Reject(status) = mode {
                            let mut refusal = ErrorResponse::new(Some("refused".into()));
                            *refusal.status_mut() =
                                tokio_tungstenite::tungstenite::http::StatusCode::from_u16(status)
                                    .unwrap();
                            return Err(refusal);
                        }
                        Ok::<Response, ErrorResponse>(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    if let Mode::EchoThenClose(code) = mode {
                        while let Some(Ok(message)) = ws.next().await {
                            if message.is_text() || message.is_binary() {
                                let _ = ws.send(message).await;
                                let _ = ws
                                    .close(Some(CloseFrame {
                                        code: CloseCode::from(code),
                                        reason: "done".into(),
                                    }))
                                    .await;
                            }
                        }
                        return;
                    }
                    if mode == Mode::DropAfterHandshake {
                        drop(ws);
                        return;
                    }
                    if mode == Mode::InvalidUtf8 {
                        write_raw(ws.get_ref(), &server_frame(1, &[0xff, 0xfe])).await;
                        while let Some(Ok(_)) = ws.next().await {}
                        return;
                    }
                    if mode == Mode::EchoAfterClose {
                        let mut held = Vec::new();
                        while let Some(Ok(message)) = ws.next().await {
                            match message {
                                WsMessage::Text(t) => held.push(server_frame(1, t.as_bytes())),
                                WsMessage::Binary(b) => held.push(server_frame(2, &b)),
                                WsMessage::Close(_) => {
                                    // tungstenite has queued its answer; the held echoes go
                                    // out first, straight on the socket.
                                    for frame in held.drain(..) {
                                        write_raw(ws.get_ref(), &frame).await;
                                    }
                                }
                                _ => {}
                            }
                        }
                        return;
                    }
                    if matches!(mode, Mode::Ticker | Mode::Flood) {
                        let flood = mode == Mode::Flood;
                        // Frames written in bulk, straight on the socket: faster than the
                        // client prints them, so its events never stop coming.
                        let burst: Vec<u8> = (0..8192)
                            .flat_map(|_| server_frame(1, b"flood"))
                            .collect();
                        let mut ticks = tokio::time::interval(Duration::from_millis(20));
                        let mut n = 0u64;
                        loop {
                            // A flood's next message is due at once (the client's reading
                            // paces it: a send waits while the socket is full).
                            let pace = async {
                                if flood {
                                    tokio::task::yield_now().await;
                                } else {
                                    ticks.tick().await;
                                }
                            };
                            tokio::select! {
                                _ = pace => {
                                    n += 1;
                                    if flood {
                                        // Whole frames: tungstenite has nothing half
                                        // written (its sends below are flushed).
                                        write_raw(ws.get_ref(), &burst).await;
                                    } else if ws.send(WsMessage::text(format!("tick {n}"))).await.is_err() {
                                        return;
                                    }
                                }
                                message = ws.next() => match message {
                                    Some(Ok(WsMessage::Close(frame))) => {
                                        let close = frame
                                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                                            .unwrap_or((1005, String::new()));
                                        if let Some(i) = *index.lock().unwrap() {
                                            let mut all = record.lock().unwrap();
                                            all[i].close = Some(close);
                                            all[i].close_answered = Some(Instant::now());
                                        }
                                        // Reading on sends tungstenite's queued answer.
                                        while let Some(Ok(_)) = ws.next().await {}
                                        return;
                                    }
                                    Some(Ok(message)) if message.is_text() || message.is_binary() => {
                                        if ws.send(message).await.is_err() {
                                            return;
                                        }
                                    }
                                    Some(Ok(_)) => {}
                                    _ => return,
                                },
                            }
                        }
                    }
                    if mode == Mode::Silent {
                        // Hold the socket open without reading it until the server stops.
                        std::future::pending::<()>().await;
                        drop(ws);
                        return;
                    }
                    let close_with = match mode {
                        Mode::CloseFirstWith(code) if first => Some(code),
                        Mode::CloseEachWith(code) => Some(code),
                        _ => None,
                    };
                    if let Some(code) = close_with {
                        let frame = (code != 1005).then(|| CloseFrame {
                            code: CloseCode::from(code),
                            reason: "restarting".into(),
                        });
                        let _ = ws.close(frame).await;
                        while let Some(Ok(_)) = ws.next().await {}
                        return;
                    }
                    while let Some(Ok(message)) = ws.next().await {
                        match message {
                            WsMessage::Text(_) | WsMessage::Binary(_) => {
                                let Ok(()) = ws.send(message).await else {
                                    return;
                                };
                            }
                            WsMessage::Close(frame) => {
                                let close = frame
                                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                                    .unwrap_or((1005, String::new()));
                                let at = *index.lock().unwrap();
                                if let Some(i) = at {
                                    record.lock().unwrap()[i].close = Some(close);
                                }
                                if let (Mode::LateCloseAnswerFirst(ms), true) = (mode, first) {
                                    tokio::time::sleep(Duration::from_millis(ms)).await;
                                }
                                if let Mode::AnswerCloseWith(code) = mode {
                                    // Ours, before tungstenite's queued echo goes (it never
                                    // does: the connection is dropped).
                                    let answer = server_frame(8, &code.to_be_bytes());
                                    write_raw(ws.get_ref(), &answer).await;
                                    return;
                                }
                                // The next read sends tungstenite's queued answer.
                                if let Some(i) = at {
                                    record.lock().unwrap()[i].close_answered = Some(Instant::now());
                                }
                            }
                            _ => {}
                        }
                    }
                });
            }
        });
        TestServer {
            url,
            release,
            seen,
            runtime: Some(runtime),
        }
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lets held handshakes (and later ones) complete.
    pub fn release(&self) {
        let _ = self.release.send(true);
    }

    /// The handshakes seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// A file under the test target's temporary directory, unique to this process and `name`.
pub fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("wxsocket-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write a temporary file");
    path
}

/// A `wss://` echo server on 127.0.0.1 (a thread per connection, rustls over std IO),
/// stopped on drop.
pub struct TlsEchoServer {
    port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl TlsEchoServer {
    /// Starts the server with `config`.
    pub fn start(config: Arc<rustls::ServerConfig>) -> TlsEchoServer {
        use std::sync::atomic::Ordering;
        use tokio_tungstenite::tungstenite;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let config = Arc::clone(&config);
                std::thread::spawn(move || {
                    // Bounded: a stuck connection ends its thread.
                    let _ = stream.set_read_timeout(Some(WAIT));
                    let Ok(tls) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let stream = rustls::StreamOwned::new(tls, stream);
                    let Ok(mut ws) = tungstenite::accept(stream) else {
                        return;
                    };
                    while let Ok(message) = ws.read() {
                        if (message.is_text() || message.is_binary()) && ws.send(message).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TlsEchoServer {
            port,
            stop,
            accept: Some(accept),
        }
    }

    /// `wss://HOST:PORT/` for `host` (`localhost` or `127.0.0.1`).
    pub fn url(&self, host: &str) -> String {
        format!("wss://{host}:{}/", self.port)
    }
}

impl Drop for TlsEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// A port on 127.0.0.1 that refuses connections and that no other test can take: the
/// local port of a connected client socket, held (with its peer) until the process exits.
/// Nothing listens on it, so a dial is refused; being bound, it is never handed out again
/// (a port bound and released could be, to a listener of a test running alongside).
pub fn closed_port() -> u16 {
    static HELD: Mutex<Vec<(std::net::TcpListener, std::net::TcpStream)>> = Mutex::new(Vec::new());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let port = client.local_addr().unwrap().port();
    HELD.lock().unwrap().push((listener, client));
    port
}

/// Runs `program ARGS` with `stdin` (a file, `Stdio::null()`, …) to the end, killing it
/// after [`WAIT`]: exit status, stdout as bytes, stderr.
pub fn run_program(program: &str, args: &[&str], stdin: Stdio) -> (ExitStatus, Vec<u8>, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let Some(status) = wait_bounded(&mut child) else {
        panic!(
            "{program} {args:?} did not exit within {WAIT:?}; stderr:\n{}",
            err.join().unwrap_or_default()
        );
    };
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Waits for `child` to exit, at most [`WAIT`]; past that it is killed and this gives
/// `None`.
pub fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `wxsocket ARGS` with `input` as its whole standard input (closed after it).
pub fn run_bytes(args: &[&str], input: &[u8]) -> (ExitStatus, Vec<u8>, String) {
    let path = temp_file(
        &format!("stdin-{:?}", std::thread::current().id()).replace(['(', ')'], ""),
        "",
    );
    std::fs::write(&path, input).expect("write stdin");
    let file = std::fs::File::open(&path).expect("open stdin");
    let result = run_program(bin(), args, Stdio::from(file));
    let _ = std::fs::remove_file(&path);
    result
}

/// `wxsocket serve ARGS --addr 127.0.0.1:0` running, and its URL (from the first line).
pub fn serve(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["serve", "--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = Proc::spawn(&all);
    let first = server.expect("listening line", |l| l.contains("ws://"));
    let url = first
        .split(|c: char| c.is_whitespace() || c == '"')
        .find(|w| w.starts_with("ws://"))
        .expect("a URL")
        .to_owned();
    (server, url)
}

/// The `open` event's `profile`: every phase's end in milliseconds from the dial, in
/// order, TLS present exactly for `wss://`, and the last no later than the event's own
/// time since the command started (`t`, whole milliseconds, rounded down).
pub fn assert_plausible_profile(open: &Value, tls: bool) {
    let profile = &open["profile"];
    let at = |key: &str| {
        profile[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is a number: {open}"))
    };
    let mut ends = vec![at("resolved_ms"), at("connected_ms")];
    if tls {
        ends.push(at("tls_ms"));
    } else {
        assert!(profile["tls_ms"].is_null(), "no TLS for ws://: {open}");
    }
    ends.extend([at("request_written_ms"), at("response_received_ms")]);
    assert!(ends[0] >= 0.0, "{open}");
    assert!(ends.windows(2).all(|w| w[0] <= w[1]), "in order: {open}");
    let t = open["t"].as_f64().unwrap();
    assert!(
        ends[ends.len() - 1] <= t + 1.0,
        "within the run so far: {open}"
    );
    if tls {
        // A TLS handshake takes at least one round trip after the TCP connect.
        assert!(at("tls_ms") > at("connected_ms"), "{open}");
    }
}
