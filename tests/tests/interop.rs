//! Interop against WebSocket servers nobody here wrote: the Python `websockets` library and
//! Node's `ws` package, each driven by a small scripted server in `tests/peers/`
//! (`python_server.py`, `node_server.js`; pinned in `requirements.txt` and
//! `package-lock.json`, installed by `scripts/install-peers`).
//!
//! Every scenario is written once, generic over [`Adapter`], and the `interop!` macro
//! instantiates it for each peer × adapter: `python_tokio::…`, `python_blocking::…`,
//! `node_tokio::…`, `node_blocking::…`.
//!
//! Each test starts its own server process ([`Server`]), reads the port from its first line
//! of output, and kills the process when the guard is dropped. The server reports what it
//! saw as lines on stdout (`open PATH`, `protocols OFFERED`, `frame OPCODE FIN LEN`, `ping`,
//! `pong PAYLOAD`, `closed CODE REASON`, and `client_cert NAME` under mutual TLS), which [`Server::wait_line`] waits for with a
//! timeout. Every wait is bounded.
//!
//! The `deflate_*` scenarios cover permessage-deflate (RFC 7692) against the peers' own
//! implementations, on the peers' `/deflate…` paths. The peers report the extension they
//! answered (`extensions VALUE`) and, for each data message, whether it travelled deflated
//! (RSV1 on its first frame): `received KIND LEN compressed|plain` for what the client
//! sent, `sent KIND LEN compressed|plain` for what they sent. So the scenarios check both
//! that the payloads survive exactly and that compression really happened where it
//! should (and not where it should not).
//!
//! The `socks5_tokio::…` and `socks5_blocking::…` scenarios reach the Python peer through a
//! SOCKS5 proxy nobody here wrote either: `pproxy` (pinned in `requirements.txt`, run by
//! `tests/peers/socks5_proxy.py`, [`Socks5Proxy`]), with and without RFC 1929 user name
//! and password, for `ws://` and `wss://`, and the proxy from the environment.
//!
//! A peer that is not installed fails the test when `WXSOCKET_INTEROP=require` (set by
//! `scripts/test` after it installed the peers); otherwise the test prints
//! `interop: skipped …` to stderr and returns.
//!
//! Environment: `WXSOCKET_PEERS_DIR` (default `tests/peers`), `WXSOCKET_PYTHON` (default
//! `$WXSOCKET_PEERS_DIR/.venv/bin/python`), `WXSOCKET_NODE` (default `node`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use wxsocket_core::{
    Acknowledgement, ConnId, ConnectOptions, ConnectionError, DeflateOptions, DeflateParams, Event,
    Message, ReadyState, SendFailure, SessionConfig, TransportError, TransportErrorKind,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::TestCa;
use wxsocket_tests::scenario::{
    self, assert_quiet, client, close_event, closed_port, completions, expect_connecting, messages,
    open,
};
use wxsocket_wire::client::Config;
use wxsocket_wire::proxy::ProxyEnv;
use wxsocket_wire::tls::{ClientIdentity, TlsRoots};

/// How long a scenario waits for the server to report something.
const T: Duration = EVENT_TIMEOUT;
/// How long a server process may take to print its port (a cold Python start on a busy
/// machine is the slow case).
const STARTUP: Duration = Duration::from_secs(20);

macro_rules! interop {
    ($($scenario:ident),* $(,)?) => {
        interop!(@cell python_tokio, run, Python, TokioAdapter; $($scenario),*);
        interop!(@cell python_blocking, run, Python, BlockingAdapter; $($scenario),*);
        interop!(@cell node_tokio, run, Node, TokioAdapter; $($scenario),*);
        interop!(@cell node_blocking, run, Node, BlockingAdapter; $($scenario),*);
    };
    (@cell $module:ident, $run:ident, $peer:ident, $adapter:ident; $($scenario:ident),*) => {
        /// Every interop scenario for one peer × adapter.
        mod $module {
            $(
                #[test]
                fn $scenario() {
                    super::$run(
                        super::PeerKind::$peer,
                        concat!(stringify!($module), "::", stringify!($scenario)),
                        super::$scenario::<wxsocket_tests::adapter::$adapter>,
                    );
                }
            )*
        }
    };
}

interop!(
    text_and_binary_echo,
    one_mib_messages,
    fragmented_messages_from_the_peer,
    peer_ping_is_answered,
    keepalive_kept_alive_by_the_peer,
    keepalive_detects_a_silent_peer,
    subprotocol_selected_by_the_peer,
    subprotocol_offered_but_none_selected,
    custom_headers_seen_by_the_peer,
    client_close_with_code_and_reason,
    peer_close_4000_with_reason,
    peer_close_1001,
    peer_close_1011_with_reason,
    peer_close_1014_bad_gateway,
    peer_drops_tcp_mid_message,
    wss_with_a_generated_ca,
    wss_with_a_client_certificate,
    wss_without_the_client_certificate_the_peer_requires,
    deflate_text_and_binary_echo,
    deflate_one_mib_messages,
    deflate_fragmented_from_the_peer,
    deflate_offer_to_a_server_without_it,
    deflate_no_context_takeover_imposed_by_the_peer,
    deflate_no_context_takeover_asked_by_the_client,
    deflate_window_bits_limited_by_the_peer,
    deflate_window_bits_asked_by_the_client,
    deflate_inflated_size_limit,
    deflate_inflated_size_limit_in_the_handshake_read,
    ack_barrier_pings_are_answered_by_the_peer,
    ack_times_out_against_a_silent_peer,
);

/// The scenarios through a SOCKS5 proxy, pproxy ([`Socks5Proxy`]), to the Python peer, on
/// each adapter: `socks5_tokio::…`, `socks5_blocking::…`.
macro_rules! through_socks5 {
    ($($scenario:ident),* $(,)?) => {
        interop!(@cell socks5_tokio, run_through_socks5, Python, TokioAdapter; $($scenario),*);
        interop!(@cell socks5_blocking, run_through_socks5, Python, BlockingAdapter; $($scenario),*);
    };
}

through_socks5!(
    ws_through_pproxy_with_credentials,
    ws_through_pproxy_without_authentication,
    wss_through_pproxy_is_tls_end_to_end,
    pproxy_refuses_a_wrong_password,
    pproxy_refuses_a_client_without_credentials,
    all_proxy_to_pproxy_leaves_loopback_direct,
    pproxy_cannot_reach_the_server,
);

// ----- the peers -----

/// One independent WebSocket implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerKind {
    /// Python `websockets` (tests/peers/python_server.py).
    Python,
    /// Node `ws` (tests/peers/node_server.js).
    Node,
}

impl PeerKind {
    fn name(self) -> &'static str {
        match self {
            PeerKind::Python => "python",
            PeerKind::Node => "node",
        }
    }

    /// The command that runs this peer's server script, or why it cannot run here.
    fn command(self) -> Result<Command, String> {
        let dir = peers_dir();
        match self {
            PeerKind::Python => {
                let mut command = python()?;
                command.arg(dir.join("python_server.py"));
                Ok(command)
            }
            PeerKind::Node => {
                if !dir.join("node_modules/ws/package.json").is_file() {
                    return Err(format!("{} has no node_modules/ws", dir.display()));
                }
                let node = node_binary()?;
                let mut command = Command::new(node);
                command.arg(dir.join("node_server.js"));
                Ok(command)
            }
        }
    }
}

/// The Python of the peers' virtual environment (`WXSOCKET_PYTHON`), or why it cannot run.
fn python() -> Result<Command, String> {
    let python = std::env::var_os("WXSOCKET_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers_dir().join(".venv/bin/python"));
    if !python.is_file() {
        return Err(format!("{} does not exist", python.display()));
    }
    let mut command = Command::new(python);
    // No stale bytecode next to the scripts, no user site packages.
    command
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1");
    Ok(command)
}

fn peers_dir() -> PathBuf {
    std::env::var_os("WXSOCKET_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("peers"))
}

/// The `node` binary, checked once to run at all.
fn node_binary() -> Result<PathBuf, String> {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let node = std::env::var_os("WXSOCKET_NODE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("node"));
        match Command::new(&node)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(status) if status.success() => Ok(node),
            Ok(status) => Err(format!("`{} --version` failed: {status}", node.display())),
            Err(e) => Err(format!("cannot run {}: {e}", node.display())),
        }
    })
    .clone()
}

/// Runs one cell of the matrix, or reports that its peer is not installed (see
/// [`installed`]).
fn run(kind: PeerKind, test: &str, scenario: fn(PeerKind)) {
    let peer = format!("{} peer", kind.name());
    if installed(test, &peer, kind.command().map(drop)) {
        scenario(kind);
    }
}

/// [`run`], for a scenario that goes through the SOCKS5 proxy too: pproxy must be
/// installed as well.
fn run_through_socks5(kind: PeerKind, test: &str, scenario: fn(PeerKind)) {
    if installed(test, "pproxy", Socks5Proxy::command().map(drop)) {
        run(kind, test, scenario);
    }
}

/// Whether `test` can run, `ready` saying whether `what` (a peer) is installed; when it is
/// not: a failure when `WXSOCKET_INTEROP=require`, a skip line on stderr otherwise.
fn installed(test: &str, what: &str, ready: Result<(), String>) -> bool {
    let Err(why) = ready else {
        return true;
    };
    let required = std::env::var("WXSOCKET_INTEROP").is_ok_and(|v| v == "require");
    assert!(
        !required,
        "interop: {test}: the {what} is not installed ({why}) but WXSOCKET_INTEROP=require; run scripts/install-peers",
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of
    // passing tests, and this line must be seen.
    let line =
        format!("interop: skipped {test} ({what} not installed; run scripts/install-peers)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

/// What a server printed after its port, and whether its output ended.
#[derive(Default)]
struct Output {
    lines: Vec<String>,
    ended: bool,
}

#[derive(Default)]
struct Log {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Log {
    fn lock(&self) -> MutexGuard<'_, Output> {
        self.output.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running peer server; the process is killed (and its certificate files removed) on
/// drop.
struct Server {
    kind: PeerKind,
    process: Process,
    port: u16,
    tls: bool,
    /// The certificate files of a wss server, removed on drop.
    files: Option<PathBuf>,
}

impl Server {
    /// Starts a plain `ws://` server of this peer.
    fn start(kind: PeerKind) -> Server {
        Self::spawn(kind, None)
    }

    /// Starts a `wss://` server with a certificate from a freshly generated CA; returns the
    /// CA to trust.
    fn start_tls(kind: PeerKind) -> (Server, CertificateDer<'static>) {
        let (server, ca) = Self::start_tls_with(kind, false);
        (server, ca.ca_der)
    }

    /// [`Self::start_tls`], and with `client_certificates` the server requires a client
    /// certificate signed by the same CA (mutual TLS); returns the whole test CA, whose
    /// client certificate it accepts.
    fn start_tls_with(kind: PeerKind, client_certificates: bool) -> (Server, TestCa) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let ca = TestCa::generate("interop");
        let dir = std::env::temp_dir().join(format!(
            "wxsocket-interop-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let cert = dir.join("server.pem");
        let key = dir.join("server.key");
        std::fs::write(&cert, &ca.cert_pem).expect("write the server certificate");
        std::fs::write(&key, &ca.key_pem).expect("write the server key");
        let client_ca = client_certificates.then(|| {
            let path = dir.join("client-ca.pem");
            std::fs::write(&path, &ca.ca_pem).expect("write the client CA");
            path
        });
        let server = Self::spawn(kind, Some((dir, cert, key, client_ca)));
        (server, ca)
    }

    /// Starts the peer; `tls`: its certificate directory, certificate and key files, and
    /// the CA file of the client certificates it requires, if it does.
    fn spawn(kind: PeerKind, tls: Option<(PathBuf, PathBuf, PathBuf, Option<PathBuf>)>) -> Server {
        let mut command = kind
            .command()
            .unwrap_or_else(|why| panic!("the {} peer cannot run: {why}", kind.name()));
        if let Some((_, cert, key, client_ca)) = &tls {
            command.arg("--tls").arg(cert).arg(key);
            if let Some(client_ca) = client_ca {
                command.arg("--client-ca").arg(client_ca);
            }
        }
        command.arg("--lifetime").arg("120");
        let (process, first) = Process::spawn(format!("{} peer", kind.name()), command);
        let port = first.trim().parse().unwrap_or_else(|_| {
            panic!(
                "{}: expected the port as the first line, got {first:?}; {}",
                kind.name(),
                process.describe()
            )
        });
        Server {
            kind,
            process,
            port,
            tls: tls.is_some(),
            files: tls.map(|(dir, ..)| dir),
        }
    }

    /// `ws://127.0.0.1:PORT/PATH` (or `wss://`).
    fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://127.0.0.1:{}/{path}", self.port)
    }

    fn describe(&self) -> String {
        self.process.describe()
    }

    /// [`Process::wait_output`].
    fn wait_output<R>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[String]) -> Option<R>,
    ) -> R {
        self.process.wait_output(what, timeout, found)
    }

    /// Waits for the first event line (after the port) satisfying `matches`.
    fn wait_line(&self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        self.wait_output(what, T, |lines| {
            lines.iter().skip(1).find(|l| matches(l)).cloned()
        })
    }

    /// Waits for `count` event lines equal to `line`.
    fn wait_count(&self, what: &str, line: &str, count: usize) {
        self.wait_output(what, T, |lines| {
            (lines.iter().skip(1).filter(|l| *l == line).count() >= count).then_some(())
        })
    }

    /// The `Sec-WebSocket-Extensions` the peer answered (its `extensions` line; `None`
    /// when it answered none).
    fn extensions(&self) -> Option<String> {
        let line = self.wait_line("the extensions line", |l| l.starts_with("extensions "));
        let value = &line["extensions ".len()..];
        (value != "none").then(|| value.to_owned())
    }

    /// Waits for `count` lines starting with `prefix` (`"received "`, `"sent "`); returns
    /// every such line so far, in order.
    fn reports(&self, prefix: &str, count: usize) -> Vec<String> {
        self.wait_output(&format!("{count} `{prefix}` lines"), T, |lines| {
            let found: Vec<String> = lines
                .iter()
                .skip(1)
                .filter(|l| l.starts_with(prefix))
                .cloned()
                .collect();
            (found.len() >= count).then_some(found)
        })
    }

    /// The sub-protocols the client offered, as the peer's library parsed them (its
    /// `protocols` line).
    fn offered_protocols(&self) -> Vec<String> {
        let line = self.wait_line("the offered sub-protocols", |l| l.starts_with("protocols "));
        line["protocols ".len()..]
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// The frames the peer wrote (its `frame OPCODE FIN LEN` lines, `/fragmented` only), up
    /// to and including the one that ends the first binary message.
    fn frames_through_the_binary_message(&self) -> Vec<SentFrame> {
        self.wait_output("the frames of the binary message", T, |lines| {
            let frames: Vec<SentFrame> = lines
                .iter()
                .skip(1)
                .filter_map(|l| SentFrame::parse(l))
                .collect();
            let binary = frames.iter().position(|f| f.opcode == "binary")?;
            let end = binary + frames[binary..].iter().position(|f| f.is_data() && f.fin)?;
            Some(frames[..=end].to_vec())
        })
    }

    /// Waits for the `closed` line: the client's close frame as the peer got it (`None`
    /// when the client sent none).
    fn wait_closed(&self) -> Option<(u16, String)> {
        let line = self.wait_line("the connection to end", |l| {
            l == "closed" || l.starts_with("closed ")
        });
        let rest = line.strip_prefix("closed ").unwrap_or("");
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        if code == "none" {
            return None;
        }
        let code = code
            .parse()
            .unwrap_or_else(|_| panic!("bad closed line {line:?}"));
        Some((code, reason.to_owned()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(dir) = self.files.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A running child process of a test (a peer server, the SOCKS5 proxy), its output lines
/// collected as they come; killed and reaped (and its output threads joined) on drop.
struct Process {
    /// What it is, as messages name it (`python peer`).
    name: String,
    child: Child,
    /// Kept open so the process sees EOF (and exits by itself) if this process dies.
    stdin: Option<ChildStdin>,
    stdout: Arc<Log>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<JoinHandle<()>>,
}

impl Process {
    /// Starts `command` with its stdio piped, and waits for its first line of output (its
    /// port, or the line that says it), which it returns with the process.
    fn spawn(name: String, mut command: Command) -> (Process, String) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the {name}: {e}"));
        let stdout = Arc::new(Log::default());
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut threads = Vec::new();
        {
            let out = child.stdout.take().expect("piped stdout");
            let log = Arc::clone(&stdout);
            threads.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().lines.push(line);
                    log.changed.notify_all();
                }
                log.lock().ended = true;
                log.changed.notify_all();
            }));
        }
        {
            let mut err = child.stderr.take().expect("piped stderr");
            let buffer = Arc::clone(&stderr);
            threads.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                    buffer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&text);
                }
            }));
        }
        let process = Process {
            name,
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            threads,
        };
        let first = process.wait_output("its port", STARTUP, |lines| lines.first().cloned());
        (process, first)
    }

    fn describe(&self) -> String {
        let output = self.stdout.lock();
        format!(
            "the {} printed {:?}{} and on stderr: {:?}",
            self.name,
            output.lines,
            if output.ended { " (then ended)" } else { "" },
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// Waits until `found` returns something for the output lines; panics after `timeout`
    /// or when the output ended first.
    fn wait_output<R>(
        &self,
        what: &str,
        timeout: Duration,
        found: impl Fn(&[String]) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + timeout;
        let mut output = self.stdout.lock();
        loop {
            if let Some(r) = found(&output.lines) {
                return r;
            }
            let now = Instant::now();
            if output.ended || now >= deadline {
                drop(output);
                panic!(
                    "{}: {} while waiting for {what}; {}",
                    self.name,
                    if now >= deadline {
                        format!("timed out after {timeout:?}")
                    } else {
                        "its output ended".to_owned()
                    },
                    self.describe()
                );
            }
            output = self
                .stdout
                .changed
                .wait_timeout(output, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// pproxy (tests/peers/socks5_proxy.py) serving SOCKS5 on 127.0.0.1, on a port the system
/// picks; killed on drop. It prints a line for each tunnel it opens
/// (`socks5 CLIENT -> HOST:PORT`) and for each client it turns away.
struct Socks5Proxy {
    process: Process,
    port: u16,
}

/// The user name and password of a [`Socks5Proxy`] that requires them.
const SOCKS_USER: &str = "alice";
const SOCKS_PASSWORD: &str = "pp-s3cr3t";

impl Socks5Proxy {
    /// The command that runs pproxy, or why it cannot run here.
    fn command() -> Result<Command, String> {
        static IMPORTS: OnceLock<Result<(), String>> = OnceLock::new();
        IMPORTS
            .get_or_init(|| {
                let status = python()?
                    .args(["-c", "import pproxy"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                match status {
                    Ok(status) if status.success() => Ok(()),
                    Ok(_) => Err("the peers' Python cannot import pproxy".to_owned()),
                    Err(e) => Err(format!("cannot run the peers' Python: {e}")),
                }
            })
            .clone()?;
        let mut command = python()?;
        command.arg(peers_dir().join("socks5_proxy.py"));
        Ok(command)
    }

    /// Starts pproxy, requiring [`SOCKS_USER`] and [`SOCKS_PASSWORD`] with `authentication`
    /// (RFC 1929), else none. `--auth 0`: pproxy would otherwise let an address that
    /// authenticated once in without credentials, or with wrong ones, for 30 days.
    fn start(authentication: bool) -> Socks5Proxy {
        let mut command = Self::command().unwrap_or_else(|why| panic!("pproxy cannot run: {why}"));
        let users = if authentication {
            format!("#{SOCKS_USER}:{SOCKS_PASSWORD}")
        } else {
            String::new()
        };
        command
            .args(["--lifetime", "120", "-v", "--auth", "0", "-l"])
            .arg(format!("socks5://127.0.0.1:0{users}"));
        let (process, first) = Process::spawn("SOCKS5 proxy pproxy".to_owned(), command);
        // `Serving on ipv? 127.0.0.1:PORT by socks5`, printed once it listens.
        let port = first
            .split_once(" 127.0.0.1:")
            .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "pproxy: expected `Serving on … 127.0.0.1:PORT …`, got {first:?}; {}",
                    process.describe()
                )
            });
        Socks5Proxy { process, port }
    }

    /// `SCHEME://127.0.0.1:PORT` (`socks5h`, `socks5`), with `USER:PASSWORD@` if given.
    fn url(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        let userinfo = credentials
            .map(|(user, password)| format!("{user}:{password}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}127.0.0.1:{}", self.port)
    }

    /// [`Self::url`] with `socks5h` and the right credentials.
    fn url_with_credentials(&self) -> String {
        self.url("socks5h", Some((SOCKS_USER, SOCKS_PASSWORD)))
    }

    /// Waits for `count` tunnels; returns the target (`HOST:PORT`) of each so far.
    fn tunnels(&self, count: usize) -> Vec<String> {
        self.lines(&format!("{count} tunnels"), |lines| {
            let targets: Vec<String> = lines
                .iter()
                .filter_map(|l| l.strip_prefix("socks5 ")?.split_once(" -> "))
                .map(|(_, target)| target.to_owned())
                .collect();
            (targets.len() >= count).then_some(targets)
        })
    }

    /// Waits for the line that says pproxy turned a client away (`Unauthorized SOCKS …`).
    fn wait_refusal(&self) -> String {
        self.lines("its refusal of a client", |lines| {
            lines
                .iter()
                .find(|l| l.starts_with("Unauthorized SOCKS"))
                .cloned()
        })
    }

    /// Waits until `found` returns something for the lines after the first.
    fn lines<R>(&self, what: &str, found: impl Fn(&[String]) -> Option<R>) -> R {
        self.process
            .wait_output(what, T, |lines| found(lines.get(1..).unwrap_or_default()))
    }
}

/// One frame a peer reported writing (`frame OPCODE FIN LEN`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SentFrame {
    /// `text`, `binary`, `cont`, `ping`, `pong` or `close`.
    opcode: String,
    fin: bool,
    len: usize,
}

impl SentFrame {
    fn parse(line: &str) -> Option<SentFrame> {
        let mut parts = line.strip_prefix("frame ")?.split(' ');
        let frame = SentFrame {
            opcode: parts.next()?.to_owned(),
            fin: match parts.next()? {
                "1" => true,
                "0" => false,
                other => panic!("bad FIN {other:?} in {line:?}"),
            },
            len: parts.next()?.parse().ok()?,
        };
        assert!(parts.next().is_none(), "bad frame line {line:?}");
        Some(frame)
    }

    fn is_data(&self) -> bool {
        matches!(self.opcode.as_str(), "text" | "binary" | "cont")
    }
}

// ----- helpers -----

fn config() -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(5))
        .close_timeout(Duration::from_secs(2))
}

/// Sends `message`, expects it echoed and its completion, nothing else.
fn echo_once<A: Adapter>(a: &mut A, conn: ConnId, message: Message) {
    let id = a.try_send(message.clone()).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert!(
        events.iter().all(|e| e.conn() == conn),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), [id], "[{}] {events:#?}", A::NAME);
    assert_eq!(messages(&events), [message], "[{}]", A::NAME);
}

/// Closes with 1000 and expects a clean close, and the peer to have got that close frame.
fn close_normally<A: Adapter>(a: &mut A, server: &Server, conn: ConnId) {
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(
        server.wait_closed(),
        Some((1000, String::new())),
        "[{}] {}",
        A::NAME,
        server.describe()
    );
    assert_quiet(a);
}

/// Waits for `conn` to end and expects exactly `[Error, Close { code, clean: false }]`.
fn expect_error_then_close<A: Adapter>(
    a: &mut A,
    conn: ConnId,
    code: u16,
    timeout: Duration,
) -> ConnectionError {
    let events = a.events_until_close(conn, timeout);
    scenario::expect_error_then_close(A::NAME, conn, &events, code)
}

/// A flat JSON object of strings (what the peers' `/headers` route sends), parsed.
fn parse_flat_json(text: &str) -> BTreeMap<String, String> {
    fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<String> {
        if chars.next()? != '"' {
            return None;
        }
        let mut out = String::new();
        loop {
            match chars.next()? {
                '"' => return Some(out),
                '\\' => match chars.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    c => out.push(c),
                },
                c => out.push(c),
            }
        }
    }
    let parse = || -> Option<BTreeMap<String, String>> {
        let mut chars = text.trim().chars().peekable();
        let mut map = BTreeMap::new();
        if chars.next()? != '{' {
            return None;
        }
        if chars.peek() == Some(&'}') {
            return Some(map);
        }
        loop {
            let key = string(&mut chars)?;
            if chars.next()? != ':' {
                return None;
            }
            let value = string(&mut chars)?;
            map.insert(key, value);
            match chars.next()? {
                ',' => {}
                '}' => return chars.next().is_none().then_some(map),
                _ => return None,
            }
        }
    };
    parse().unwrap_or_else(|| panic!("not a flat JSON object of strings: {text}"))
}

// ----- scenarios -----

fn text_and_binary_echo<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, handshake) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    assert_eq!(handshake.protocol, None);
    assert_eq!(handshake.extensions, None, "[{}] no extension", A::NAME);
    let text = Message::text("hello 你好 🌍");
    let empty = Message::text("");
    let binary = Message::binary(vec![0u8, 1, 2, 127, 128, 255]);
    let ids = [
        a.try_send(text.clone()).unwrap(),
        a.try_send(empty.clone()).unwrap(),
        a.try_send(binary.clone()).unwrap(),
    ];
    let events = a.events_until("three echoes and completions", T, |e| e.len() >= 6);
    assert!(
        events.iter().all(|e| e.conn() == conn),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), ids, "[{}] {events:#?}", A::NAME);
    assert_eq!(
        messages(&events),
        [text, empty, binary],
        "[{}] echoed in order, text as text and binary as binary",
        A::NAME
    );
    assert_eq!(
        server.wait_line("the open line", |l| l.starts_with("open ")),
        "open /echo"
    );
    close_normally(&mut a, &server, conn);
}

fn one_mib_messages<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    const MIB: usize = 1 << 20;
    let binary = Message::binary((0..MIB).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let text: String = (0..MIB)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let text = Message::text(text);
    assert_eq!((binary.len(), text.len()), (MIB, MIB));
    let b = a
        .send(binary.clone())
        .unwrap_or_else(|e| panic!("[{}] 1 MiB binary send failed: {e:?}", A::NAME));
    let t = a
        .send(text.clone())
        .unwrap_or_else(|e| panic!("[{}] 1 MiB text send failed: {e:?}", A::NAME));
    let events = a.events_until("two 1 MiB echoes", T, |e| messages(e).len() >= 2);
    let echoed = messages(&events);
    assert!(
        echoed[0] == binary && echoed[1] == text,
        "[{}] the 1 MiB messages came back changed (lengths {} and {})",
        A::NAME,
        echoed[0].len(),
        echoed[1].len()
    );
    assert!(b < t);
    close_normally(&mut a, &server, conn);
}

fn fragmented_messages_from_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("fragmented")));
    let events = a.events_until("two reassembled messages", T, |e| messages(e).len() >= 2);
    assert_eq!(
        messages(&events),
        [
            Message::text("fragment one, fragment two, fragment three"),
            Message::binary(vec![0u8, 1, 2, 3, 255]),
        ],
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(events.len(), 2, "[{}] {events:#?}", A::NAME);
    // The peer really fragmented them: what its library wrote, frame by frame, is each
    // message as a first frame without FIN and continuations up to one with FIN, the
    // route's three chunks being the non-empty ones (Python's `websockets` ends a
    // fragmented send with an empty final frame), and a ping between two fragments of the
    // text (control frames may interleave).
    let frames = server.frames_through_the_binary_message();
    let data: Vec<&SentFrame> = frames.iter().filter(|f| f.is_data()).collect();
    let text_end = data
        .iter()
        .position(|f| f.fin)
        .unwrap_or_else(|| panic!("[{}] no final text frame: {frames:#?}", A::NAME));
    for (message, kind, chunks) in [
        (&data[..=text_end], "text", [14, 14, 14]),
        (&data[text_end + 1..], "binary", [2, 1, 2]),
    ] {
        assert!(
            message[0].opcode == kind
                && !message[0].fin
                && message[1..].iter().all(|f| f.opcode == "cont")
                && message.iter().rev().skip(1).all(|f| !f.fin)
                && message.last().is_some_and(|f| f.fin),
            "[{}] the {kind} message as a fragmented sequence: {frames:#?}",
            A::NAME
        );
        let lengths: Vec<usize> = message.iter().map(|f| f.len).filter(|n| *n > 0).collect();
        assert_eq!(lengths, chunks, "[{}] {kind}: {frames:#?}", A::NAME);
    }
    let first_text = frames.iter().position(|f| f.opcode == "text").unwrap();
    let last_text = first_text
        + frames[first_text..]
            .iter()
            .position(|f| f.is_data() && f.fin)
            .unwrap();
    assert!(
        frames[first_text..last_text]
            .iter()
            .any(|f| f.opcode == "ping" && f.len == "between fragments".len()),
        "[{}] a ping between two fragments of the text: {frames:#?}",
        A::NAME
    );
    // The client's pong to that ping reached the peer.
    server.wait_line("the pong to the ping between fragments", |l| {
        l == "pong between fragments"
    });
    // Still in sync afterwards.
    echo_once(&mut a, conn, Message::text("after the fragments"));
    close_normally(&mut a, &server, conn);
}

fn peer_ping_is_answered<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("ping")));
    server.wait_line("the client's pong", |l| l == "pong are you there");
    assert_eq!(a.state(), ReadyState::Open);
    echo_once(&mut a, conn, Message::text("pinged"));
    close_normally(&mut a, &server, conn);
}

fn keepalive_kept_alive_by_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A =
        client(config().keepalive(Duration::from_millis(40), Duration::from_millis(400)));
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    server.wait_count("three keepalive pings", "ping", 3);
    assert_eq!(
        a.state(),
        ReadyState::Open,
        "[{}] the peer's pongs keep the connection alive",
        A::NAME
    );
    let id = a.send(Message::text("still here")).unwrap();
    let events = a.events_until("the echo", T, |e| !messages(e).is_empty());
    assert_eq!(completions(&events), [id], "[{}] {events:#?}", A::NAME);
    assert_eq!(messages(&events), [Message::text("still here")]);
    close_normally(&mut a, &server, conn);
}

fn keepalive_detects_a_silent_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A =
        client(config().keepalive(Duration::from_millis(100), Duration::from_millis(200)));
    let started = Instant::now();
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("silent")));
    let error = expect_error_then_close(&mut a, conn, 1006, T);
    let elapsed = started.elapsed();
    assert_eq!(
        error,
        ConnectionError::KeepaliveTimeout(Duration::from_millis(200)),
        "[{}]",
        A::NAME
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "[{}] declared dead too early: {elapsed:?}",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Closed);
    // The peer saw the ping it did not answer, then the client drop the connection
    // without a close frame.
    server.wait_line("the unanswered ping", |l| l == "ping");
    assert_eq!(server.wait_closed(), None, "[{}]", A::NAME);
    assert_quiet(&mut a);
}

fn subprotocol_selected_by_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let options = ConnectOptions::new(server.url("protocol/chat.v2"))
        .protocol("chat.v1")
        .protocol("chat.v2");
    let (conn, handshake) = open(&mut a, &options);
    assert_eq!(
        handshake.protocol.as_deref(),
        Some("chat.v2"),
        "[{}] the peer's choice (not the first offered) is reported",
        A::NAME
    );
    assert_eq!(
        server.offered_protocols(),
        ["chat.v1", "chat.v2"],
        "[{}] the peer got both offers, in order",
        A::NAME
    );
    echo_once(&mut a, conn, Message::text("over chat.v2"));
    close_normally(&mut a, &server, conn);
}

fn subprotocol_offered_but_none_selected<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    // The peer selects a protocol only when its name is in the path.
    let options = ConnectOptions::new(server.url("protocol/other"))
        .protocol("chat.v1")
        .protocol("chat.v2");
    let (conn, handshake) = open(&mut a, &options);
    assert_eq!(handshake.protocol, None, "[{}]", A::NAME);
    // The peer selected none although it got the offer (not because none arrived).
    assert_eq!(
        server.offered_protocols(),
        ["chat.v1", "chat.v2"],
        "[{}] the peer got both offers, in order",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Open);
    echo_once(&mut a, conn, Message::binary(vec![9u8; 3]));
    close_normally(&mut a, &server, conn);
}

fn custom_headers_seen_by_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let options = ConnectOptions::new(server.url("headers"))
        .header("X-Token", "abc 123")
        .header("X-Trace-Id", "t-42")
        .header("Content-Type", "application/json")
        .data("room", "lobby 1");
    let (conn, _) = open(&mut a, &options);
    let event = a.expect_event("the headers message");
    let Event::Message {
        conn: c,
        message: Message::Text(json),
        ..
    } = event
    else {
        panic!("[{}] expected a text message, got {event:#?}", A::NAME);
    };
    assert_eq!(c, conn);
    let headers = parse_flat_json(json.as_str());
    let get = |name: &str| headers.get(name).map(String::as_str);
    assert_eq!(
        get("x-token"),
        Some("abc 123"),
        "[{}] {headers:#?}",
        A::NAME
    );
    assert_eq!(
        get("x-trace-id"),
        Some("t-42"),
        "[{}] {headers:#?}",
        A::NAME
    );
    assert_eq!(
        get("content-type"),
        Some("application/json"),
        "[{}] {headers:#?}",
        A::NAME
    );
    assert_eq!(
        get("host"),
        Some(format!("127.0.0.1:{}", server.port).as_str()),
        "[{}] {headers:#?}",
        A::NAME
    );
    assert_eq!(get("sec-websocket-version"), Some("13"));
    assert!(
        get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "[{}] {headers:#?}",
        A::NAME
    );
    assert_eq!(
        get("sec-websocket-protocol"),
        None,
        "[{}] none offered",
        A::NAME
    );
    assert_eq!(
        get("sec-websocket-extensions"),
        None,
        "[{}] no extension offered",
        A::NAME
    );
    server.wait_line("the request line", |l| l == "open /headers?room=lobby+1");
    close_normally(&mut a, &server, conn);
}

fn client_close_with_code_and_reason<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    let reason = "done here, ünïcode";
    a.close(Some(4321), reason).unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4321, reason, true)],
        "[{}]",
        A::NAME
    );
    assert_eq!(
        server.wait_closed(),
        Some((4321, reason.to_owned())),
        "[{}] what the peer got",
        A::NAME
    );
    assert_quiet(&mut a);
}

/// The peer closes at once with `code` and `reason`: a clean close event with both, and
/// the client answered the close frame (the peer reports the echoed code).
fn peer_closes<A: Adapter>(kind: PeerKind, code: u16, reason: &str) {
    peer_closes_answered::<A>(kind, code, reason, code);
}

/// Like [`peer_closes`], the client's answer carrying `answer`.
fn peer_closes_answered<A: Adapter>(kind: PeerKind, code: u16, reason: &str, answer: u16) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let path = if reason.is_empty() {
        format!("close/{code}")
    } else {
        format!("close/{code}/{}", reason.replace(' ', "%20"))
    };
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url(&path)));
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, code, reason, true)],
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Closed);
    let answered = server.wait_closed();
    assert_eq!(
        answered.map(|(c, _)| c),
        Some(answer),
        "[{}] the client answers the close frame",
        A::NAME
    );
    assert_quiet(&mut a);
}

fn peer_close_4000_with_reason<A: Adapter>(kind: PeerKind) {
    peer_closes::<A>(kind, 4000, "server says bye");
}

fn peer_close_1001<A: Adapter>(kind: PeerKind) {
    peer_closes::<A>(kind, 1001, "");
}

fn peer_close_1011_with_reason<A: Adapter>(kind: PeerKind) {
    peer_closes::<A>(kind, 1011, "internal error");
}

/// 1014 (Bad Gateway, RFC 6455 §7.4.2) is reported as the peer sent it. tungstenite 0.30
/// answers every close frame itself, with 1002 "Protocol violation" for a code it does not
/// know as allowed, 1014 among them; the client hands it 1014 as 1000, so the peer gets a
/// normal close (RFC 6455 §5.5.1 only says an endpoint "typically" echoes the code; an
/// echo of 1014 itself would need tungstenite to know the code).
fn peer_close_1014_bad_gateway<A: Adapter>(kind: PeerKind) {
    peer_closes_answered::<A>(kind, 1014, "bad gateway", 1000);
}

fn peer_drops_tcp_mid_message<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("drop-mid-message")));
    let error = expect_error_then_close(&mut a, conn, 1006, T);
    match &error {
        ConnectionError::Transport(e) => {
            assert_eq!(e.kind, TransportErrorKind::Io, "[{}] {e:?}", A::NAME)
        }
        other => panic!("[{}] expected a transport error, got {other:?}", A::NAME),
    }
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(server.wait_closed(), None, "[{}]", A::NAME);
    assert_quiet(&mut a);
}

fn wss_with_a_generated_ca<A: Adapter>(kind: PeerKind) {
    let (server, ca) = Server::start_tls(kind);
    let mut a: A = A::new(config(), TlsRoots::only(vec![ca]))
        .unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME));
    let url = server.url("echo");
    assert!(url.starts_with("wss://"));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url).require_tls(true));
    echo_once(&mut a, conn, Message::text("secret"));
    echo_once(&mut a, conn, Message::binary(vec![7u8; 70_000]));
    close_normally(&mut a, &server, conn);
}

/// Mutual TLS: the peer requires a client certificate of its CA, and sees the configured
/// one (it reports its common name); messages go both ways over it.
fn wss_with_a_client_certificate<A: Adapter>(kind: PeerKind) {
    let (server, ca) = Server::start_tls_with(kind, true);
    let identity = ClientIdentity::new(
        ca.client_chain.clone(),
        PrivateKeyDer::Pkcs8(ca.client_key.clone().into()),
    );
    let config = Config::new()
        .session(config())
        .tls(TlsRoots::only(vec![ca.ca_der.clone()]))
        .client_identity(identity);
    let mut a: A =
        A::with_config(config).unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME));
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    let seen = server.wait_line("the client certificate", |l| l.starts_with("client_cert "));
    assert_eq!(
        seen,
        format!("client_cert {}", wxsocket_test_pki::CLIENT_NAME),
        "[{}]",
        A::NAME
    );
    echo_once(&mut a, conn, Message::text("mutual"));
    close_normally(&mut a, &server, conn);
}

/// The same peer, and the client has no certificate configured, or one of a CA the peer
/// does not trust: the dial fails and says the server wanted a client certificate and what
/// it got. Node sends the TLS alert that says so; Python's asyncio TLS closes without it,
/// so there the error says the server had asked and may have refused.
fn wss_without_the_client_certificate_the_peer_requires<A: Adapter>(kind: PeerKind) {
    let (server, ca) = Server::start_tls_with(kind, true);
    let stranger = TestCa::generate("stranger");
    let stranger = ClientIdentity::new(
        stranger.client_chain.clone(),
        PrivateKeyDer::Pkcs8(stranger.client_key.clone().into()),
    );
    let roots = TlsRoots::only(vec![ca.ca_der.clone()]);
    for (identity, said) in [
        (None, "none is configured (`client_identity`)"),
        (Some(stranger), "refused"),
    ] {
        let mut config = Config::new().session(config()).tls(roots.clone());
        config.client_identity = identity;
        let mut a: A =
            A::with_config(config).unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME));
        let conn = a.connect(&ConnectOptions::new(server.url("echo"))).unwrap();
        let events = a.events_until_close(conn, T);
        let error = events.iter().find_map(|e| match e {
            Event::Error {
                error: ConnectionError::ConnectFailed(error),
                ..
            } => Some(error.message.clone()),
            _ => None,
        });
        let text = error.unwrap_or_else(|| panic!("[{}] no failed dial: {events:#?}", A::NAME));
        eprintln!("[{}] {said:?}: {text}", A::NAME);
        assert!(
            text.contains("client certificate") && text.contains(said),
            "[{}] {text}",
            A::NAME
        );
        assert!(
            matches!(events.last(), Some(Event::Close { code: 1006, .. })),
            "[{}] {events:#?}",
            A::NAME
        );
    }
}

// ----- permessage-deflate -----

/// The agreed parameters, spelled out.
#[expect(
    clippy::field_reassign_with_default,
    reason = "DeflateParams is non_exhaustive: no struct literal outside its crate"
)]
fn params(
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: u8,
    client_max_window_bits: u8,
) -> DeflateParams {
    let mut p = DeflateParams::default();
    p.server_no_context_takeover = server_no_context_takeover;
    p.client_no_context_takeover = client_no_context_takeover;
    p.server_max_window_bits = server_max_window_bits;
    p.client_max_window_bits = client_max_window_bits;
    p
}

/// What each peer agrees to on `/deflate` (its library's defaults) when the client offers
/// `permessage-deflate; client_max_window_bits` and nothing else: Python's
/// `compression="deflate"` limits both windows to 2^12; `ws` keeps 2^15 and context
/// takeover.
fn library_defaults(kind: PeerKind) -> DeflateParams {
    match kind {
        PeerKind::Python => params(false, false, 12, 12),
        PeerKind::Node => DeflateParams::default(),
    }
}

/// Whether the peer deflates a message of `len` bytes it sends under `agreed`: Python's
/// `websockets` deflates every message; `ws` skips messages under its 1024-byte threshold
/// only when it resets its context per message (`server_no_context_takeover`).
fn peer_deflates(kind: PeerKind, agreed: &DeflateParams, len: usize) -> bool {
    match kind {
        PeerKind::Python => true,
        PeerKind::Node => !agreed.server_no_context_takeover || len >= 1024,
    }
}

/// A peer's report line: `VERB KIND LEN compressed|plain`.
fn report(verb: &str, message: &Message, compressed: bool) -> String {
    format!(
        "{verb} {} {} {}",
        if message.is_text() { "text" } else { "binary" },
        message.len(),
        if compressed { "compressed" } else { "plain" }
    )
}

/// The report lines a peer should have printed so far, to compare with what it printed.
#[derive(Default)]
struct Reports {
    received: Vec<String>,
    sent: Vec<String>,
}

impl Reports {
    fn check<A: Adapter>(&self, server: &Server) {
        assert_eq!(
            server.reports("received ", self.received.len()),
            self.received,
            "[{}] what the peer received, and whether deflated; {}",
            A::NAME,
            server.describe()
        );
        assert_eq!(
            server.reports("sent ", self.sent.len()),
            self.sent,
            "[{}] what the peer sent, and whether deflated; {}",
            A::NAME,
            server.describe()
        );
    }
}

/// Opens `path` with `options` and checks the negotiation: the agreed parameters are
/// `expected` (`None`: no compression), and the raw extension header is the one the peer
/// says it answered.
fn open_deflate<A: Adapter>(
    a: &mut A,
    server: &Server,
    options: &ConnectOptions,
    expected: Option<DeflateParams>,
) -> ConnId {
    let (conn, handshake) = open(a, options);
    assert_eq!(
        handshake.deflate,
        expected,
        "[{}] the parameters agreed (the peer answered {:?})",
        A::NAME,
        handshake.extensions
    );
    assert_eq!(
        handshake.extensions,
        server.extensions(),
        "[{}] the extension header reported on open is the one the peer sent",
        A::NAME
    );
    conn
}

/// Sends `batch` at once, expects every message echoed exactly and in order with its
/// completion, then the peer's reports: each message received deflated exactly when it is
/// at least `threshold` bytes long (the client's choice), each echo sent deflated as the
/// peer's library does (`agreed`: `None` when nothing was negotiated, then all plain).
fn echo_batch<A: Adapter>(
    a: &mut A,
    server: &Server,
    conn: ConnId,
    batch: &[Message],
    threshold: usize,
    agreed: Option<DeflateParams>,
    reports: &mut Reports,
) {
    let ids: Vec<_> = batch
        .iter()
        .map(|m| {
            a.try_send(m.clone())
                .unwrap_or_else(|e| panic!("[{}] send refused: {e:?}", A::NAME))
        })
        .collect();
    let n = batch.len();
    let events = a.events_until("the echoes and completions", T, |e| {
        messages(e).len() >= n && completions(e).len() >= n
    });
    assert!(
        events.iter().all(|e| e.conn() == conn),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(events.len(), 2 * n, "[{}] {events:#?}", A::NAME);
    assert_eq!(completions(&events), ids, "[{}]", A::NAME);
    let echoed = messages(&events);
    for (i, (got, sent)) in echoed.iter().zip(batch).enumerate() {
        assert!(
            got == sent,
            "[{}] echo {i} differs: {} {} bytes sent, {} {} bytes back",
            A::NAME,
            if sent.is_text() { "text" } else { "binary" },
            sent.len(),
            if got.is_text() { "text" } else { "binary" },
            got.len()
        );
    }
    for m in batch {
        let deflated_by_client = agreed.is_some() && m.len() >= threshold;
        reports
            .received
            .push(report("received", m, deflated_by_client));
        let deflated_by_peer = agreed.is_some_and(|p| peer_deflates(server.kind, &p, m.len()));
        reports.sent.push(report("sent", m, deflated_by_peer));
    }
    reports.check::<A>(server);
}

/// `len` bytes of JSON records, one a line: the kind of text compression is for.
fn json_text(len: usize) -> Message {
    let mut s = String::with_capacity(len + 128);
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"tags\":[\"red\",\"green\"],\"price\":{}.{:02},\"ok\":true}}\n",
            i % 97,
            i % 100
        ));
        i += 1;
    }
    s.truncate(len);
    Message::text(s)
}

/// `len` bytes repeating with period 251: very compressible binary.
fn pattern_binary(len: usize) -> Message {
    Message::binary((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>())
}

/// Text with multi-byte characters (2, 3 and 4 bytes in UTF-8), repeated to `copies`.
fn unicode_text(copies: usize) -> Message {
    Message::text("héllo wörld 你好 🌍 — ".repeat(copies))
}

/// A 6000-byte pseudo-random block repeated to `len` bytes: deflate finds nothing inside a
/// block, and each repetition 6000 bytes back, farther than a 2^12 window reaches. Deflated
/// with a larger window than agreed, it cannot be inflated by a peer holding the agreed
/// one (zlib: "invalid distance too far back").
fn far_repeats(len: usize) -> Message {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let block: Vec<u8> = (0..6000)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u8
        })
        .collect();
    Message::binary(block.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

/// Default options: text and binary, large and small (under the 32-byte threshold, at it)
/// on one connection with context takeover.
fn deflate_text_and_binary_echo<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let agreed = library_defaults(kind);
    let options = ConnectOptions::new(server.url("deflate")).per_message_deflate(true);
    let conn = open_deflate(&mut a, &server, &options, Some(agreed));
    assert_eq!(
        server.wait_line("the open line", |l| l.starts_with("open ")),
        "open /deflate"
    );
    let batch = [
        json_text(100 << 10),
        Message::text("hi"),
        Message::text("x".repeat(31)),
        Message::text("y".repeat(32)),
        pattern_binary(64 << 10),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(""),
        unicode_text(500),
        // The same again: with context takeover both sides refer back to the first.
        json_text(100 << 10),
    ];
    let mut reports = Reports::default();
    echo_batch(
        &mut a,
        &server,
        conn,
        &batch,
        32,
        Some(agreed),
        &mut reports,
    );
    // One at a time as well, after the batch.
    echo_batch(
        &mut a,
        &server,
        conn,
        &[pattern_binary(10_000)],
        32,
        Some(agreed),
        &mut reports,
    );
    close_normally(&mut a, &server, conn);
}

fn deflate_one_mib_messages<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let agreed = library_defaults(kind);
    let options = ConnectOptions::new(server.url("deflate")).per_message_deflate(true);
    let conn = open_deflate(&mut a, &server, &options, Some(agreed));
    const MIB: usize = 1 << 20;
    let text = json_text(MIB);
    let binary = pattern_binary(MIB);
    assert_eq!((text.len(), binary.len()), (MIB, MIB));
    let t = a
        .send(text.clone())
        .unwrap_or_else(|e| panic!("[{}] 1 MiB text send failed: {e:?}", A::NAME));
    let b = a
        .send(binary.clone())
        .unwrap_or_else(|e| panic!("[{}] 1 MiB binary send failed: {e:?}", A::NAME));
    assert!(t < b);
    let events = a.events_until("two 1 MiB echoes", T, |e| messages(e).len() >= 2);
    let echoed = messages(&events);
    assert!(
        echoed.len() == 2 && echoed[0] == text && echoed[1] == binary,
        "[{}] the 1 MiB messages came back changed (lengths {:?})",
        A::NAME,
        echoed.iter().map(Message::len).collect::<Vec<_>>()
    );
    let reports = Reports {
        received: vec![
            report("received", &text, true),
            report("received", &binary, true),
        ],
        sent: vec![report("sent", &text, true), report("sent", &binary, true)],
    };
    reports.check::<A>(&server);
    close_normally(&mut a, &server, conn);
}

/// The peer deflates a text and a binary message in fragments, with a ping between two
/// fragments of the text, then sends an uncompressed message (RSV1 clear) on the same
/// connection; the context carries on across it.
fn deflate_fragmented_from_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let agreed = library_defaults(kind);
    let options = ConnectOptions::new(server.url("deflate-fragmented")).per_message_deflate(true);
    let conn = open_deflate(&mut a, &server, &options, Some(agreed));
    let expected = [
        Message::text("compressed one, compressed two, compressed three"),
        Message::binary(vec![0u8, 1, 2, 3, 255]),
        Message::text("plain after compressed"),
    ];
    let events = a.events_until("three messages", T, |e| messages(e).len() >= 3);
    assert_eq!(messages(&events), expected, "[{}] {events:#?}", A::NAME);
    assert_eq!(events.len(), 3, "[{}] {events:#?}", A::NAME);
    server.wait_line("the pong to the ping between fragments", |l| {
        l == "pong between fragments"
    });
    let mut reports = Reports {
        received: Vec::new(),
        sent: vec![
            report("sent", &expected[0], true),
            report("sent", &expected[1], true),
            report("sent", &expected[2], false),
        ],
    };
    // Still in sync afterwards; the first echo repeats the peer's first message, which its
    // deflater can refer back to.
    echo_batch(
        &mut a,
        &server,
        conn,
        &[expected[0].clone(), json_text(4096), expected[2].clone()],
        32,
        Some(agreed),
        &mut reports,
    );
    close_normally(&mut a, &server, conn);
}

/// A server path that does not do permessage-deflate: the offer is sent, declined, and the
/// connection works uncompressed.
fn deflate_offer_to_a_server_without_it<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    // `/headers` refuses compression, shows the request headers, then echoes.
    let options = ConnectOptions::new(server.url("headers")).per_message_deflate(true);
    let conn = open_deflate(&mut a, &server, &options, None);
    let event = a.expect_event("the headers message");
    let Event::Message {
        message: Message::Text(json),
        ..
    } = event
    else {
        panic!("[{}] expected a text message, got {event:#?}", A::NAME);
    };
    let headers = parse_flat_json(json.as_str());
    assert_eq!(
        headers.get("sec-websocket-extensions").map(String::as_str),
        Some(
            "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits"
        ),
        "[{}] the offer was made: {headers:#?}",
        A::NAME
    );
    let mut reports = Reports::default();
    echo_batch(
        &mut a,
        &server,
        conn,
        &[
            json_text(100 << 10),
            Message::text("small"),
            pattern_binary(5000),
        ],
        32,
        None,
        &mut reports,
    );
    close_normally(&mut a, &server, conn);
}

/// One compressed connection to `path` with `options`: opened with `agreed` in force,
/// `batch` echoed exactly (what the peer saw checked against `threshold`), closed cleanly.
fn deflate_echo_case<A: Adapter>(
    kind: PeerKind,
    path: &str,
    options: impl FnOnce(ConnectOptions) -> ConnectOptions,
    agreed: DeflateParams,
    threshold: usize,
    batch: &[Message],
) {
    let server = Server::start(kind);
    let mut a: A = client(config());
    let options = options(ConnectOptions::new(server.url(path)));
    let conn = open_deflate(&mut a, &server, &options, Some(agreed));
    let mut reports = Reports::default();
    echo_batch(
        &mut a,
        &server,
        conn,
        batch,
        threshold,
        Some(agreed),
        &mut reports,
    );
    close_normally(&mut a, &server, conn);
}

/// The peer imposes no context takeover on both sides (the client did not ask); the
/// client resets its context per message (the same message twice would otherwise refer
/// back to the first, which the peer's fresh inflater cannot resolve). Threshold 0: every
/// message deflated, the empty ones too.
fn deflate_no_context_takeover_imposed_by_the_peer<A: Adapter>(kind: PeerKind) {
    let same = json_text(20_000);
    let batch = [
        Message::text(""),
        Message::text("a"),
        same.clone(),
        same.clone(),
        pattern_binary(2000),
        Message::binary(Vec::<u8>::new()),
        same,
        unicode_text(40),
    ];
    deflate_echo_case::<A>(
        kind,
        "deflate-no-context",
        |o| o.deflate(DeflateOptions::default().threshold(0)),
        params(true, true, 15, 15),
        0,
        &batch,
    );
}

/// The client asks for no context takeover on both sides; the peer's library defaults
/// agree to it.
fn deflate_no_context_takeover_asked_by_the_client<A: Adapter>(kind: PeerKind) {
    let mut agreed = library_defaults(kind);
    agreed.server_no_context_takeover = true;
    agreed.client_no_context_takeover = true;
    let offer = DeflateOptions::default()
        .server_no_context_takeover(true)
        .client_no_context_takeover(true);
    let same = json_text(20_000);
    let batch = [same.clone(), same.clone(), Message::text("short"), same];
    deflate_echo_case::<A>(kind, "deflate", |o| o.deflate(offer), agreed, 32, &batch);
}

/// The peer limits both windows to 2^10: the client must deflate with at most that window
/// (the peer's inflater has no more), and inflate the peer's.
fn deflate_window_bits_limited_by_the_peer<A: Adapter>(kind: PeerKind) {
    let batch = [far_repeats(60_000), json_text(30_000), unicode_text(300)];
    deflate_echo_case::<A>(
        kind,
        "deflate-window-bits",
        |o| o.per_message_deflate(true),
        params(false, false, 10, 10),
        32,
        &batch,
    );
}

/// The client asks the peer for a 2^10 window and declares 2^12 for itself; both peers'
/// defaults agree to exactly that.
fn deflate_window_bits_asked_by_the_client<A: Adapter>(kind: PeerKind) {
    let offer = DeflateOptions::default()
        .server_max_window_bits(Some(10))
        .client_max_window_bits(12);
    let batch = [far_repeats(60_000), json_text(30_000), far_repeats(60_000)];
    deflate_echo_case::<A>(
        kind,
        "deflate",
        |o| o.deflate(offer),
        params(false, false, 10, 12),
        32,
        &batch,
    );
}

/// `max_message_size` bounds the inflated size: the peer's 1 MiB of "x" (about a
/// kilobyte on the wire), sent as soon as the connection opens, arrives whole at a 1 MiB
/// limit, and is refused with 1009 at one byte less.
fn deflate_inflated_size_limit<A: Adapter>(kind: PeerKind) {
    inflated_size_limit::<A>(kind, "deflate-large");
}

/// [`deflate_inflated_size_limit`] with the message in the same TCP write as the
/// handshake answer: the client reads it together with the answer, and must still open
/// first and then fail the connection with 1009 (not fail the handshake).
fn deflate_inflated_size_limit_in_the_handshake_read<A: Adapter>(kind: PeerKind) {
    inflated_size_limit::<A>(kind, "deflate-large-coalesced");
}

fn inflated_size_limit<A: Adapter>(kind: PeerKind, route: &str) {
    const MIB: usize = 1 << 20;
    let server = Server::start(kind);
    let path = format!("{route}/{MIB}");
    let options = ConnectOptions::new(server.url(&path)).per_message_deflate(true);
    let agreed = library_defaults(kind);
    let expected = Message::text("x".repeat(MIB));
    {
        let mut a: A = client(config().max_message_size(MIB));
        let conn = open_deflate(&mut a, &server, &options, Some(agreed));
        let events = a.events_until("the 1 MiB message", T, |e| !messages(e).is_empty());
        assert_eq!(events.len(), 1, "[{}] one event", A::NAME);
        assert!(
            messages(&events)[0] == expected,
            "[{}] the 1 MiB message arrived changed",
            A::NAME
        );
        assert_eq!(
            server.reports("sent ", 1),
            [report("sent", &expected, true)],
            "[{}] {}",
            A::NAME,
            server.describe()
        );
        close_normally(&mut a, &server, conn);
    }
    {
        let mut a: A = client(config().max_message_size(MIB - 1));
        let (conn, handshake) = open(&mut a, &options);
        assert_eq!(handshake.deflate, Some(agreed), "[{}]", A::NAME);
        let error = expect_error_then_close(&mut a, conn, 1009, T);
        match &error {
            ConnectionError::Transport(e) => {
                assert_eq!(
                    e.kind,
                    TransportErrorKind::MessageTooBig,
                    "[{}] {e:?}",
                    A::NAME
                )
            }
            other => panic!("[{}] expected a transport error, got {other:?}", A::NAME),
        }
        assert_eq!(a.state(), ReadyState::Closed);
        assert_eq!(
            server.reports("sent ", 2),
            [
                report("sent", &expected, true),
                report("sent", &expected, true)
            ],
            "[{}] {}",
            A::NAME,
            server.describe()
        );
        // The client failed the connection with a close frame saying 1009.
        let closed = server.wait_line("the second connection's end", |l| {
            l.starts_with("closed ") && !l.starts_with("closed 1000")
        });
        assert!(
            closed.starts_with("closed 1009"),
            "[{}] {closed:?}; {}",
            A::NAME,
            server.describe()
        );
        assert_quiet(&mut a);
    }
}

/// Delivery acknowledgement against the peer's own ping handling: 50 pipelined messages
/// are echoed, and each is delivered once a pong answers a barrier ping sent after it. What
/// the peer's pong proves is that its WebSocket stack read the message (its application, a
/// scripted echo here, handled it independently).
fn ack_barrier_pings_are_answered_by_the_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let mut a: A = client(config().acknowledge(Acknowledgement::new()));
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("echo")));
    let sent: Vec<_> = (0..50)
        .map(|i| a.try_send(Message::text(format!("m{i}"))).unwrap())
        .collect();
    let delivered = |e: &[Event]| {
        e.iter()
            .filter_map(|e| match e {
                Event::SendDelivered { id, duplicate, .. } => Some((*id, *duplicate)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let events = a.events_until("50 echoes and deliveries", T, |e| e.len() >= 100);
    assert_eq!(
        delivered(&events),
        sent.iter().map(|id| (*id, false)).collect::<Vec<_>>(),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(messages(&events).len(), 50, "[{}]", A::NAME);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::SendCompleted { .. })),
        "[{}]",
        A::NAME
    );
    server.wait_line("the barrier ping", |l| l == "ping");
    close_normally(&mut a, &server, conn);
}

/// A peer that answers no ping: the acknowledgement timeout ends the connection, and the
/// unacknowledged message fails as possibly delivered, handed back.
fn ack_times_out_against_a_silent_peer<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let timeout = Duration::from_millis(300);
    let mut a: A = client(config().acknowledge(Acknowledgement::new().timeout(timeout)));
    let (conn, _) = open(&mut a, &ConnectOptions::new(server.url("silent")));
    let id = a.try_send(Message::text("anyone?")).unwrap();
    let events = a.events_until_close(conn, T);
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error { error: ConnectionError::AckTimeout(t), .. } if *t == timeout
        )),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::SendFailed { id: i, reason: SendFailure::MaybeDelivered, message: Some(m), .. }
                if *i == id && *m == Message::text("anyone?")
        )),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::Close {
                code: 1006,
                clean: false,
                ..
            })
        ),
        "[{}] {events:#?}",
        A::NAME
    );
    server.wait_line("the unanswered ping", |l| l == "ping");
}

// ----- through a SOCKS5 proxy -----

/// A client whose proxy environment is exactly `env` (never the machine's), trusting
/// `roots`.
fn client_with_proxy_env<A: Adapter>(env: ProxyEnv, roots: TlsRoots) -> A {
    A::with_config(Config::new().session(config()).tls(roots).proxy_env(env))
        .unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME))
}

/// Opens `url` through `proxy_url` (the URL of `proxy`), checks the socket is the proxy's,
/// echoes a text and a binary message and closes normally.
fn echo_through_pproxy<A: Adapter>(
    a: &mut A,
    server: &Server,
    proxy: &Socks5Proxy,
    proxy_url: &str,
    url: &str,
) {
    let (conn, _) = open(a, &ConnectOptions::new(url).proxy(proxy_url));
    let socket = a.socket_info().expect("an open connection has a socket");
    assert!(
        socket.proxied && socket.peer_addr.port() == proxy.port,
        "[{}] {socket:?}",
        A::NAME
    );
    assert_eq!(socket.tls, url.starts_with("wss:"), "[{}]", A::NAME);
    echo_once(a, conn, Message::text("through pproxy"));
    echo_once(a, conn, Message::binary(vec![7u8; 70_000]));
    close_normally(a, server, conn);
    assert_eq!(
        server.wait_line("the open line", |l| l.starts_with("open ")),
        "open /echo"
    );
    // The proxy opened one tunnel, to the URL's host and port as written (a name stays a
    // name: the proxy resolves it).
    let tunnel = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next());
    assert_eq!(
        proxy.tunnels(1),
        [tunnel.expect("a URL with an authority")],
        "[{}] {}",
        A::NAME,
        proxy.process.describe()
    );
}

/// The server's host as a name: pproxy resolves it, and its reply to `CONNECT` binds to
/// that name (pproxy echoes the request's address: ATYP 3, `localhost`).
fn ws_through_pproxy_with_credentials<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let proxy = Socks5Proxy::start(true);
    let mut a: A = client_with_proxy_env(ProxyEnv::empty(), TlsRoots::default());
    let url = format!("ws://localhost:{}/echo", server.port);
    echo_through_pproxy(&mut a, &server, &proxy, &proxy.url_with_credentials(), &url);
}

/// `socks5://` (not `socks5h`) to a proxy without authentication; the server's host an
/// IPv4 address, which the request and reply carry as one (ATYP 1).
fn ws_through_pproxy_without_authentication<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let proxy = Socks5Proxy::start(false);
    let mut a: A = client_with_proxy_env(ProxyEnv::empty(), TlsRoots::default());
    let proxy_url = proxy.url("socks5", None);
    echo_through_pproxy(&mut a, &server, &proxy, &proxy_url, &server.url("echo"));
}

/// `wss://` by name through the tunnel: the certificate is checked against `localhost`,
/// which only the server's certificate matches; pproxy relays bytes it cannot read.
fn wss_through_pproxy_is_tls_end_to_end<A: Adapter>(kind: PeerKind) {
    let (server, ca) = Server::start_tls(kind);
    let proxy = Socks5Proxy::start(true);
    let mut a: A = client_with_proxy_env(ProxyEnv::empty(), TlsRoots::only(vec![ca]));
    let url = format!("wss://localhost:{}/echo", server.port);
    echo_through_pproxy(&mut a, &server, &proxy, &proxy.url_with_credentials(), &url);
}

/// Dials `url` through `proxy_url` and expects the dial to fail: `[Error(ConnectFailed),
/// Close 1006]`; returns the error.
fn dial_failure<A: Adapter>(proxy_url: &str, url: &str) -> TransportError {
    let mut a: A = client_with_proxy_env(ProxyEnv::empty(), TlsRoots::default());
    let conn = a
        .connect(&ConnectOptions::new(url).proxy(proxy_url))
        .unwrap_or_else(|e| panic!("[{}] connect refused: {e}", A::NAME));
    expect_connecting(&mut a, conn);
    match expect_error_then_close(&mut a, conn, 1006, T) {
        ConnectionError::ConnectFailed(e) => e,
        other => panic!("[{}] expected ConnectFailed, got {other:?}", A::NAME),
    }
}

/// The right password opens a tunnel, then a wrong one on the next dial is refused: a
/// refusal of this client (final for the reconnect policy), naming the proxy, never a
/// password.
fn pproxy_refuses_a_wrong_password<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let proxy = Socks5Proxy::start(true);
    let url = server.url("echo");
    let mut a: A = client_with_proxy_env(ProxyEnv::empty(), TlsRoots::default());
    echo_through_pproxy(&mut a, &server, &proxy, &proxy.url_with_credentials(), &url);
    let wrong = "wr0ng-pw";
    let e = dial_failure::<A>(&proxy.url("socks5h", Some((SOCKS_USER, wrong))), &url);
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains(&proxy.url("socks5h", None)),
        "[{}] {shown}",
        A::NAME
    );
    assert!(
        !shown.contains(wrong) && !shown.contains(SOCKS_PASSWORD),
        "[{}] a password leaked: {shown}",
        A::NAME
    );
    proxy.wait_refusal();
    assert_eq!(proxy.tunnels(1).len(), 1, "[{}] one tunnel only", A::NAME);
    assert_eq!(
        e.kind,
        TransportErrorKind::ProxyRefused,
        "[{}] {e}",
        A::NAME
    );
}

/// No credentials for a proxy that requires them: refused, and the error says the proxy
/// URL has none.
fn pproxy_refuses_a_client_without_credentials<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let proxy = Socks5Proxy::start(true);
    let proxy_url = proxy.url("socks5h", None);
    let e = dial_failure::<A>(&proxy_url, &server.url("echo"));
    assert!(e.message.contains(&proxy_url), "[{}] {e}", A::NAME);
    proxy.wait_refusal();
    // A close after the greeting may also be a forwarder whose proxy is down: retried.
    assert!(
        e.kind == TransportErrorKind::Protocol && e.message.contains("no user name and password"),
        "[{}] {e:?}",
        A::NAME
    );
}

/// `all_proxy` names pproxy, and the server is on loopback (`localhost`): the connection
/// goes direct, as a proxy elsewhere could not reach this machine's loopback; pproxy sees
/// nothing. (A host that only the proxy can resolve is hard to have here, so the proxied
/// scenarios name the proxy with `ConnectOptions::proxy`.)
fn all_proxy_to_pproxy_leaves_loopback_direct<A: Adapter>(kind: PeerKind) {
    let server = Server::start(kind);
    let proxy = Socks5Proxy::start(true);
    let env = ProxyEnv::from_vars([("all_proxy", proxy.url_with_credentials())]);
    // The variable is read, and would route a host elsewhere through pproxy.
    let elsewhere = env.proxy_for("ws", "chat.example.com", 80).unwrap();
    assert_eq!(
        elsewhere.map(|p| p.to_string()),
        Some(proxy.url("socks5h", None))
    );
    let mut a: A = client_with_proxy_env(env, TlsRoots::default());
    let url = format!("ws://localhost:{}/echo", server.port);
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let socket = a.socket_info().expect("an open connection has a socket");
    assert!(
        !socket.proxied && socket.peer_addr.port() == server.port,
        "[{}] {socket:?}",
        A::NAME
    );
    echo_once(&mut a, conn, Message::text("direct"));
    close_normally(&mut a, &server, conn);
    let seen = proxy.lines("pproxy's output", |lines| Some(lines.to_vec()));
    assert!(seen.is_empty(), "[{}] pproxy saw {seen:?}", A::NAME);
}

/// A server pproxy cannot reach, written as each address type carries it (IPv4, a name,
/// IPv6). pproxy grants `CONNECT` before it dials (its reply echoes the request's
/// address), then closes the tunnel when the dial is refused: the client's tunnel opens,
/// and the dial fails in the handshake, naming the proxy: `Connect`, not final, as a server
/// that is down is. The close is a reset when the upgrade request was in the tunnel
/// unread, which the error says.
fn pproxy_cannot_reach_the_server<A: Adapter>(_kind: PeerKind) {
    let proxy = Socks5Proxy::start(false);
    let port = closed_port();
    let proxy_url = proxy.url("socks5h", None);
    let hosts = ["127.0.0.1", "localhost", "[::1]"];
    for host in hosts {
        let e = dial_failure::<A>(&proxy_url, &format!("ws://{host}:{port}/"));
        assert_eq!(e.kind, TransportErrorKind::Connect, "[{}] {e}", A::NAME);
        let tunnel = format!("handshake: the tunnel through proxy {proxy_url} ");
        let end = e.message.strip_prefix(&tunnel).unwrap_or_default();
        assert!(
            end == "closed before the server answered"
                || end.starts_with("was broken before the server answered ("),
            "[{}] {host}: {e}",
            A::NAME
        );
    }
    assert_eq!(
        proxy.tunnels(hosts.len()),
        hosts.map(|h| format!("{}:{port}", h.trim_matches(['[', ']']))),
        "[{}] {}",
        A::NAME,
        proxy.process.describe()
    );
}
