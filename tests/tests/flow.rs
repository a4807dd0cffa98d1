//! Inbound flow control on both adapters (issue 16, SPEC §7): a server floods the client
//! while the application does not read its events, and the client's memory must stay
//! bounded, the server must feel TCP push back, and every message must arrive once, in
//! order, when the application reads again.
//!
//! The client runs alone in a child process, so its resident memory is its own: each test
//! re-runs this test binary with `--exact <its own name>` and [`CHILD_ENV`] set to the
//! server's URL, which switches the test body into the client's part. The parent runs the
//! flood server ([`wxsocket_tests::flood`]), samples the child's `VmRSS` from
//! `/proc/<pid>/status` while the flood lasts and reads its `VmHWM` (the kernel's record of
//! the peak) at the end; the child reports its own `VmHWM` before and after it reads.
//!
//! Parent and child talk over the child's stdin and stdout: the child says `open` once
//! connected (and from then on does not read its events), the parent answers `drain N`
//! after the flood with the number of messages the server sent, and the child reads them,
//! checking each number and payload, and reports its memory.
//!
//! The `harness_*` tests check the harness itself: with the receive bounds set out of
//! reach, the megabyte floods make the child grow past twice the bound (so the measurement
//! sees growth when there is some; the flood then ends), and every message still arrives
//! once, in order. They pass with and without flow control in the adapters.
//!
//! Small messages in a debug build: a client without flow control takes in 32-byte
//! messages at only 250–400 k/s (25–35 MiB/s of resident memory) on an idle machine and
//! at a fifth of that under `scripts/test --stress`, so 5 s of them may not carry it past
//! 64 MiB (the gigabytes were measured in release), and no short harness test on
//! them can be sure to see growth. What tells such a client apart is the backpressure
//! check: it keeps reading, so the server's writes stall only in bursts of tens of
//! milliseconds, never for most of the flood.
//!
//! Linux only (`/proc`).

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::flood::{self, Flood, FloodReport, FloodServer};
use wxsocket_tests::scenario::{client, open};

/// Set in the child's environment to the flood server's URL: the test body is the client.
const CHILD_ENV: &str = "WXSOCKET_FLOW_CHILD";
/// What the child prints before each line meant for the parent.
const SAY: &str = "flow-child:";
const MIB: u64 = 1 << 20;
/// The bound on the client's resident memory while it is flooded and not reading.
const BOUND: u64 = 64 * MIB;
/// How long the flood of small messages lasts (the 5 s).
const FLOOD: Duration = Duration::from_secs(5);
/// How long the floods of 1 MiB messages last. Shorter, because it takes them far less to
/// tell: with flow control the client pauses after 16 of them (the 16 MiB bound), within
/// the first 100 ms even in a debug build, and the server is blocked from then on; without
/// it, a debug build passes 64 MiB within half a second (about 250 MiB/s measured).
const MEGABYTE_FLOOD: Duration = Duration::from_secs(3);
/// How often the parent samples the child's memory.
const SAMPLE: Duration = Duration::from_millis(20);
/// Far past the bound, a bounded scenario ends its flood early (it has failed already; this
/// only keeps a client without flow control from taking gigabytes of a shared machine).
const CEILING: u64 = 4 * BOUND;
/// How far past the bound the harness tests must see the unbounded client grow.
const UNBOUNDED_GROWTH: u64 = 2 * BOUND;
/// How long the harness tests flood at most: they end as soon as the growth is seen, in a
/// debug build within 0.5 s.
const HARNESS_FLOOD: Duration = Duration::from_secs(3);
/// How long the child may take to read everything the server sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

macro_rules! flow_suite {
    ($($scenario:ident),* $(,)?) => {
        /// Every scenario against `wxsocket-tokio`.
        mod on_tokio {
            $(#[test] fn $scenario() {
                super::$scenario::<wxsocket_tests::adapter::TokioAdapter>(
                    concat!("on_tokio::", stringify!($scenario)),
                );
            })*
        }
        /// Every scenario against `wxsocket-blocking`.
        mod on_blocking {
            $(#[test] fn $scenario() {
                super::$scenario::<wxsocket_tests::adapter::BlockingAdapter>(
                    concat!("on_blocking::", stringify!($scenario)),
                );
            })*
        }
    };
}

flow_suite!(
    small_messages_flooding_an_application_that_does_not_read,
    megabyte_messages_flooding_an_application_that_does_not_read,
    compressed_megabyte_messages_flooding_an_application_that_does_not_read,
    harness_sees_an_unbounded_client_grow_with_megabyte_messages,
    harness_sees_an_unbounded_client_grow_with_compressed_messages,
);

// ----- scenarios -----

/// 32-byte messages for 5 s: the count bound (1024 messages by default) is what holds.
fn small_messages_flooding_an_application_that_does_not_read<A: Adapter>(test: &str) {
    run::<A>(test, &Spec::bounded(32, false));
}

/// 1 MiB messages for 3 s ([`MEGABYTE_FLOOD`]): the byte bound (16 MiB by default) is
/// what holds; afterwards the bound plus what the TCP buffers hold (a few dozen messages)
/// is read.
fn megabyte_messages_flooding_an_application_that_does_not_read<A: Adapter>(test: &str) {
    run::<A>(test, &Spec::bounded(1 << 20, false));
}

/// 1 MiB messages that travel as about 6 KiB each with permessage-deflate, for 3 s: the
/// bound holds on the inflated size (the TCP buffers alone hold hundreds of megabytes'
/// worth, all read and checked afterwards).
fn compressed_megabyte_messages_flooding_an_application_that_does_not_read<A: Adapter>(test: &str) {
    run::<A>(test, &Spec::bounded(1 << 20, true));
}

/// The megabyte flood with the receive bounds out of reach: the client grows past twice
/// the bound (then the flood ends), and every message still arrives once, in order.
fn harness_sees_an_unbounded_client_grow_with_megabyte_messages<A: Adapter>(test: &str) {
    run::<A>(test, &Spec::unbounded(1 << 20, false));
}

/// The compressed flood with the receive bounds out of reach: 256 messages, 256 MiB
/// inflated from about 1.5 MiB on the wire (so the TCP buffers take them all at once and
/// the client inflates them at its own pace).
fn harness_sees_an_unbounded_client_grow_with_compressed_messages<A: Adapter>(test: &str) {
    run::<A>(test, &Spec::unbounded(1 << 20, true));
}

// ----- the harness -----

/// What a test floods, and what it expects.
#[derive(Debug, Clone)]
struct Spec {
    /// Payload bytes of each message.
    size: usize,
    /// permessage-deflate on.
    deflate: bool,
    /// The default receive bounds (`true`), or bounds out of reach (`false`).
    bounded: bool,
}

impl Spec {
    fn bounded(size: usize, deflate: bool) -> Self {
        Self {
            size,
            deflate,
            bounded: true,
        }
    }

    fn unbounded(size: usize, deflate: bool) -> Self {
        Self {
            size,
            deflate,
            bounded: false,
        }
    }

    /// How long the flood lasts at most.
    fn duration(&self) -> Duration {
        match (self.bounded, self.size) {
            (false, _) => HARNESS_FLOOD,
            (true, 0..=1024) => FLOOD,
            (true, _) => MEGABYTE_FLOOD,
        }
    }

    fn flood(&self) -> Flood {
        let flood = Flood::new(self.size)
            .duration(self.duration())
            .deflate(self.deflate);
        if self.deflate && !self.bounded {
            // Compressed, the TCP buffers hold gigabytes' worth: send twice what the client
            // must grow by (it need not have inflated them all when the growth is seen).
            flood.max_messages(2 * UNBOUNDED_GROWTH / self.size as u64)
        } else {
            flood
        }
    }

    /// The child's configuration (the default receive bounds unless out of reach).
    fn session(&self) -> SessionConfig {
        let config = SessionConfig::default()
            .handshake_timeout(Duration::from_secs(5))
            .close_timeout(Duration::from_secs(1));
        if self.bounded {
            config
        } else {
            config.receive_bounds(usize::MAX / 2, usize::MAX / 2)
        }
    }
}

/// The parent's part, or the child's when [`CHILD_ENV`] is set.
fn run<A: Adapter>(test: &str, spec: &Spec) {
    match std::env::var(CHILD_ENV) {
        Ok(url) => child::<A>(&url, spec),
        Err(_) => parent::<A>(test, spec),
    }
}

/// Resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    /// `VmRSS`: resident now.
    rss: u64,
    /// `VmHWM`: the most it was resident.
    peak: u64,
}

impl Memory {
    /// `pid` is a number or `self`; `None` once the process is gone.
    fn of(pid: &str) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        Some(Memory {
            rss: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

// ----- the child: the client -----

fn child<A: Adapter>(url: &str, spec: &Spec) {
    let say = |line: String| {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{SAY} {line}")
            .and_then(|()| out.flush())
            .expect("stdout");
    };
    let mut a: A = client(spec.session());
    let options = ConnectOptions::new(url).per_message_deflate(spec.deflate);
    let (conn, handshake) = open(&mut a, &options);
    assert_eq!(
        handshake.deflate.is_some(),
        spec.deflate,
        "[{}] permessage-deflate agreed: {handshake:?}",
        A::NAME
    );
    let at_open = Memory::of("self").expect("own /proc status");
    say(format!("open rss={}", at_open.rss));
    // From here the application does not read its events until the parent says so.
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    let Some(count) = line.trim().strip_prefix("drain ") else {
        // The parent went away (EOF) or wants nothing more.
        return;
    };
    let count: u64 = count.parse().expect("drain <count>");
    let paused = Memory::of("self").expect("own /proc status");
    say(format!("paused rss={} peak={}", paused.rss, paused.peak));
    let started = Instant::now();
    for seq in 0..count {
        // As fast as it can: what is ready, else wait (bounded) for the next.
        let next = a.try_event().or_else(|| a.next_event(EVENT_TIMEOUT));
        match next {
            Some(Event::Message {
                conn: c,
                message: Message::Binary(bytes),
                ..
            }) if c == conn => {
                if let Err(e) = flood::check(seq, spec.size, &bytes) {
                    panic!("[{}] {e} (of {count} sent)", A::NAME);
                }
            }
            Some(other) => panic!(
                "[{}] expected message {seq} of {count}, got {}",
                A::NAME,
                describe(&other)
            ),
            None => panic!(
                "[{}] message {seq} of {count} did not arrive within {EVENT_TIMEOUT:?} ({})",
                A::NAME,
                a.describe()
            ),
        }
    }
    // Nothing more (the server sent no more): no message twice.
    if let Some(extra) = a.next_event(Duration::from_millis(200)) {
        panic!(
            "[{}] after all {count} messages: {}",
            A::NAME,
            describe(&extra)
        );
    }
    let drained = Memory::of("self").expect("own /proc status");
    say(format!(
        "drained {count} in {}ms rss={} peak={}",
        started.elapsed().as_millis(),
        drained.rss,
        drained.peak
    ));
}

/// An event for a failure message, without megabytes of payload.
fn describe(event: &Event) -> String {
    match event {
        Event::Message { conn, message, .. } => format!(
            "{} message of {} bytes on {conn}",
            if message.is_text() {
                "a text"
            } else {
                "a binary"
            },
            message.as_bytes().len()
        ),
        other => format!("{other:?}"),
    }
}

// ----- the parent: the server and the measurement -----

/// The child process; killed (if still running) and reaped when dropped.
struct ChildClient {
    name: String,
    process: Child,
    stdin: Option<ChildStdin>,
    /// The child's lines for the parent ([`SAY`] removed).
    said: Receiver<String>,
    /// Everything else it printed, for failure messages.
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl ChildClient {
    fn spawn(test: &str, url: &str) -> Self {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut process = Command::new(exe)
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child client");
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, said) = mpsc::channel();
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = process.stderr.take().expect("piped stderr");
        let readers = vec![
            {
                let output = Arc::clone(&output);
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                        // libtest may have begun the line (`test NAME ... `).
                        match line.split_once(SAY) {
                            Some((before, said)) => {
                                push_line(&output, before);
                                let _ = tx.send(said.trim().to_owned());
                            }
                            None => push_line(&output, &line),
                        }
                    }
                })
            },
            {
                let output = Arc::clone(&output);
                std::thread::spawn(move || {
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        push_line(&output, &line);
                    }
                })
            },
        ];
        Self {
            name: test.to_owned(),
            stdin: process.stdin.take(),
            process,
            said,
            output,
            readers,
        }
    }

    fn pid(&self) -> String {
        self.process.id().to_string()
    }

    fn memory(&self) -> Option<Memory> {
        Memory::of(&self.pid())
    }

    /// What the child printed besides its lines for the parent, and how it ended.
    fn diagnosis(&mut self) -> String {
        let status = match self.process.try_wait() {
            Ok(Some(status)) => format!("exited: {status}"),
            _ => "still running".into(),
        };
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        format!("child {} {status}; its output:\n{output}", self.name)
    }

    /// Fails the test if the child already ended.
    fn assert_running(&mut self, when: &str) {
        if let Ok(Some(_)) = self.process.try_wait() {
            // Its output pipes close as it exits; give the readers its last lines.
            self.join_readers();
            panic!("the child ended {when}; {}", self.diagnosis());
        }
    }

    /// The next line the child says, which must start with `word`; the rest of it.
    fn expect(&mut self, word: &str, timeout: Duration) -> String {
        match self.said.recv_timeout(timeout) {
            Ok(line) => match line.strip_prefix(word) {
                Some(rest) => rest.trim().to_owned(),
                None => panic!("expected `{word} …` from the child, got `{line}`"),
            },
            Err(RecvTimeoutError::Timeout) => panic!(
                "the child did not say `{word}` within {timeout:?}; {}",
                self.diagnosis()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = self.process.wait();
                self.join_readers();
                panic!(
                    "the child ended before it said `{word}`; {}",
                    self.diagnosis()
                )
            }
        }
    }

    fn tell(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("the child's stdin");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
            panic!("telling the child `{line}`: {e}; {}", self.diagnosis());
        }
    }

    /// Waits (bounded) for the child to end, which it does after its last line; its status.
    fn finish(&mut self, timeout: Duration) -> ExitStatus {
        self.stdin = None;
        match self.said.recv_timeout(timeout) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(line) => panic!("unexpected line from the child: `{line}`"),
            Err(RecvTimeoutError::Timeout) => panic!(
                "the child did not end within {timeout:?}; {}",
                self.diagnosis()
            ),
        }
        let status = self.process.wait().expect("wait for the child");
        self.join_readers();
        status
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for ChildClient {
    fn drop(&mut self) {
        if let Ok(None) = self.process.try_wait() {
            let _ = self.process.kill();
        }
        let _ = self.process.wait();
        self.join_readers();
    }
}

fn push_line(output: &Mutex<String>, line: &str) {
    let mut output = output.lock().unwrap_or_else(|e| e.into_inner());
    output.push_str(line);
    output.push('\n');
}

/// A `key=value` number from a line of the child.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `{key}=` in the child's `{line}`"))
}

/// What the parent saw of the child's memory during the flood.
#[derive(Debug, Default)]
struct Watch {
    /// `VmRSS` as the child reported it when its connection opened.
    at_open: Option<u64>,
    /// The largest `VmHWM` read: the child's peak so far.
    peak: u64,
    /// `VmRSS` about every 500 ms: (ms since the child started, bytes).
    timeline: Vec<(u128, u64)>,
    /// When the flood was ended early because the child passed `stop_at`: (ms, `VmRSS`).
    ended_early: Option<(u128, u64)>,
}

impl Watch {
    fn open_line(&mut self, line: &str) {
        match line.strip_prefix("open") {
            Some(rest) => self.at_open = Some(field(rest, "rss")),
            None => panic!("expected `open …` from the child, got `{line}`"),
        }
    }

    fn timeline(&self) -> String {
        self.timeline
            .iter()
            .map(|(ms, rss)| format!("{ms}ms {}", mib(*rss)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Samples the child's memory from its start until the flood report arrives (and, for
/// the harness tests, until the child grew past [`UNBOUNDED_GROWTH`]); ends the flood once
/// the child is resident beyond `stop_at`. /proc signals no change, so this polls every
/// [`SAMPLE`].
fn watch(server: &FloodServer, child: &mut ChildClient, spec: &Spec) -> (FloodReport, Watch) {
    let stop_at = if spec.bounded {
        CEILING
    } else {
        UNBOUNDED_GROWTH
    };
    // Time for the child to start and connect, on a loaded machine.
    let limit = spec.duration() + Duration::from_secs(15);
    let mut watch = Watch::default();
    let mut report = None;
    let started = Instant::now();
    let mut next_point = Duration::ZERO;
    // After the report, how long a harness test waits for the client to read what is still
    // in the TCP buffers (it grows as it does; about 75 MiB/s inflating under
    // `scripts/test --stress`).
    let mut catch_up = None;
    loop {
        if watch.at_open.is_none()
            && let Ok(line) = child.said.try_recv()
        {
            watch.open_line(&line);
        }
        child.assert_running("during the flood");
        let elapsed = started.elapsed();
        if let Some(m) = child.memory() {
            watch.peak = watch.peak.max(m.peak);
            if elapsed >= next_point {
                watch.timeline.push((elapsed.as_millis(), m.rss));
                next_point += Duration::from_millis(500);
            }
            if m.rss > stop_at && watch.ended_early.is_none() && report.is_none() {
                watch.ended_early = Some((elapsed.as_millis(), m.rss));
                server.end_flood();
            }
        }
        match &report {
            None => {
                report = server.report(SAMPLE);
                catch_up = Some(Instant::now() + Duration::from_secs(5));
            }
            Some(_) if spec.bounded || watch.peak > stop_at || catch_up < Some(Instant::now()) => {
                return (report.expect("the report"), watch);
            }
            Some(_) => std::thread::sleep(SAMPLE),
        }
        assert!(
            report.is_some() || elapsed < limit,
            "no flood report within {limit:?} (did the child connect?); {}",
            child.diagnosis()
        );
    }
}

/// One flood at a time in this process: a flood keeps a client and the server busy, and on
/// two cores two floods at once halve each other's rates, so a client without flow control
/// would grow more slowly, and every backlog take longer to read.
static ALONE: Mutex<()> = Mutex::new(());

fn parent<A: Adapter>(test: &str, spec: &Spec) {
    let _alone = ALONE.lock().unwrap_or_else(|e| e.into_inner());
    let server = FloodServer::start(spec.flood());
    let mut child = ChildClient::spawn(test, &server.url());
    let (report, mut watch) = watch(&server, &mut child, spec);
    if watch.at_open.is_none() {
        let line = child.expect("open", Duration::from_secs(10));
        watch.open_line(&format!("open {line}"));
    }
    child.assert_running("before it was told to read");
    let peak = child
        .memory()
        .expect("the child's /proc status")
        .peak
        .max(watch.peak);
    let summary = format!(
        "[{}] {} × {} B{}: the server sent {} messages ({} on the wire) in {:?}; its writes \
         stalled {} times ({:?} in all, longest {:?}, {:?} at the end, first after {:?}); \
         the child's RSS: {} when open, peak {} (samples: {}); {}",
        A::NAME,
        report.sent,
        spec.size,
        if spec.deflate { " compressed" } else { "" },
        report.sent,
        mib(report.wire_bytes),
        report.flooded,
        report.stalls,
        report.stalled,
        report.longest_stall,
        report.stalled_at_end,
        report.first_stall,
        mib(watch.at_open.unwrap_or(0)),
        mib(peak),
        watch.timeline(),
        match watch.ended_early {
            Some((ms, rss)) => format!("flood ended early at {ms}ms, RSS {}", mib(rss)),
            None => "the flood ran its course".into(),
        }
    );
    eprintln!("{summary}");
    assert_eq!(report.error, None, "the flood failed: {summary}");
    assert_eq!(
        report.deflate.is_some(),
        spec.deflate,
        "compression agreed: {summary}"
    );
    if spec.bounded {
        assert!(
            watch.ended_early.is_none() && peak < BOUND,
            "the client's resident memory passed {} while flooded and not reading: {summary}",
            mib(BOUND)
        );
        assert!(
            report.stalled_at_end >= spec.duration() / 2,
            "the server's writes had not been blocked for half the flood when it ended: \
             TCP did not push back: {summary}"
        );
    }
    child.tell(&format!("drain {}", report.sent));
    child.expect("paused", Duration::from_secs(5));
    let drained = child.expect(&format!("drained {}", report.sent), DRAIN_TIMEOUT);
    let status = child.finish(Duration::from_secs(10));
    assert!(status.success(), "the child failed: {}", child.diagnosis());
    let after = field(&drained, "peak");
    eprintln!(
        "[{}] then read all {} in {} (peak {})",
        A::NAME,
        report.sent,
        drained.split_whitespace().nth(1).unwrap_or("?"),
        mib(after)
    );
    if spec.bounded {
        assert!(
            after < BOUND,
            "the client's resident memory passed {} while it read the backlog: peak {}; \
             {summary}",
            mib(BOUND),
            mib(after)
        );
    } else {
        assert!(
            peak.max(after) > UNBOUNDED_GROWTH,
            "with the receive bounds out of reach the client should grow past {} \
             (peak {}): {summary}",
            mib(UNBOUNDED_GROWTH),
            mib(peak.max(after))
        );
    }
}
