//! A process out of open files: what each adapter says, and that it is not taken for a
//! configuration error. Alone in its test binary, with one test, because it lowers the
//! process's open-file limit (with `prlimit(1)` on its own pid) and fills every descriptor
//! below it.
//!
//! The blocking adapter's driver needs an OS poller when a client starts: refused, that was
//! `ConfigError { field: "io" }`, "invalid configuration" to the simple path, whose
//! [`ErrorKind::Invalid`] says that retrying fails the same way, and the OS's own error was
//! dropped. It is [`StartError::Os`] now, with the OS's error, and the same call succeeds
//! once descriptors are free. The tokio adapter makes its sockets per connection, so there
//! the dial fails, saying why.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::process::Command;
use wxsocket_core::{ConnectOptions, Event, SessionConfig};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT, EventSource, TokioAdapter};
use wxsocket_tests::peer::{Mode, Peer};
use wxsocket_tests::scenario::round_trip;
use wxsocket_wire::reexports::{ErrorKind, StartError};
use wxsocket_wire::tls::TlsRoots;

/// `EMFILE` on Linux.
const EMFILE: i32 = 24;

/// The process's open-file limits (soft, hard), from `/proc/self/limits`.
fn open_file_limits() -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open-file limit");
    let mut values = line["Max open files".len()..].split_whitespace();
    let soft = values.next().expect("the soft limit").to_owned();
    let hard = values.next().expect("the hard limit").to_owned();
    (soft, hard)
}

/// Sets this process's open-file limits with `prlimit(1)` (util-linux).
fn set_open_file_limits(soft: &str, hard: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("run prlimit(1)");
    assert!(status.success(), "prlimit --nofile={soft}:{hard}: {status}");
}

/// The highest descriptor open now.
fn highest_descriptor() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .max()
        .expect("some open descriptor")
}

/// Lowers the soft limit to just above the descriptors open now and fills the gaps below
/// it: every descriptor the process asks for is refused while the returned files are held.
fn run_out_of_files(hard: &str) -> Vec<File> {
    let limit = highest_descriptor() + 1;
    set_open_file_limits(&limit.to_string(), hard);
    let mut held = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => held.push(file),
            Err(e) if e.raw_os_error() == Some(EMFILE) => return held,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
}

#[test]
fn out_of_open_files_is_the_oss_refusal_not_the_configuration() {
    let peer = Peer::start(Mode::Echo);
    let url = peer.url();
    // Made while descriptors are free: its runtime and driver hold theirs already.
    let mut tokio = TokioAdapter::new(SessionConfig::default(), TlsRoots::default()).unwrap();
    let (soft, hard) = open_file_limits();
    let held = run_out_of_files(&hard);

    let refused = wxsocket_blocking::Client::new(wxsocket_blocking::Config::default());
    let Err(error) = refused.map(|_| ()) else {
        panic!("a blocking client started without a descriptor");
    };
    assert!(
        matches!(
            error,
            StartError::Os {
                needed: "create the OS poller",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_temporary(), "{error:?}");
    assert_eq!(error.raw_os_error(), Some(EMFILE), "{error:?}");
    assert_eq!(error.field(), None, "{error:?}");
    assert!(error.to_string().contains("os error 24"), "{error}");
    let pool = wxsocket_blocking::TaskPool::new(wxsocket_blocking::Config::default());
    assert_eq!(pool.map(|_| ()).err(), Some(error.clone()));
    let wx = wxsocket_blocking::wx::WxSocket::new(wxsocket_blocking::Config::default());
    assert_eq!(wx.map(|_| ()).err(), Some(error.clone()));
    // The simple path says so, and that it is not the options' fault.
    let simple = wxsocket_blocking::connect(url.as_str()).map(|_| ());
    let Err(simple) = simple else {
        panic!("the simple path connected without a descriptor");
    };
    assert_eq!(simple.kind(), ErrorKind::Resources, "{simple}");
    assert!(!simple.to_string().contains("invalid"), "{simple}");

    // The tokio client's dial makes its socket, which is refused: the dial fails saying why.
    let conn = tokio.connect(&ConnectOptions::new(url.clone())).unwrap();
    let events = tokio.events_until_close(conn, EVENT_TIMEOUT);
    assert!(
        events.iter().any(|e| matches!(e, Event::Error { error, .. }
            if error.to_string().contains("os error 24"))),
        "{events:#?}"
    );

    // Once descriptors are free again, the same calls succeed.
    drop(held);
    set_open_file_limits(&soft, &hard);
    let mut blocking = wxsocket_tests::adapter::BlockingAdapter::new(
        SessionConfig::default(),
        TlsRoots::default(),
    )
    .expect("a blocking client, descriptors free");
    open_and_echo(&mut blocking, &url);
    open_and_echo(&mut tokio, &url);
}

/// Opens a connection to `url` and echoes a message.
fn open_and_echo<A: Adapter>(a: &mut A, url: &str) {
    wxsocket_tests::scenario::open(a, &ConnectOptions::new(url));
    round_trip(a, "after");
}
