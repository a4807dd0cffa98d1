//! # wxsocket-tests
//!
//! Shared helpers for the cross-adapter conformance suite (`tests/conformance.rs`):
//!
//! - [`peer`]: a scriptable WebSocket test server on `127.0.0.1:0` that can also misbehave
//!   on purpose (stall, refuse, never answer a close, go silent, send invalid frames, TLS
//!   with a CA generated at test time), and records what it saw.
//! - [`adapter`]: one synchronous interface ([`adapter::Adapter`]) over the tokio and the
//!   blocking adapter, so each scenario is written once and run against both.
//! - [`flood`]: a server that floods its one client with numbered messages as fast as TCP
//!   lets it, and reports how long its writes were blocked (the flow-control suite,
//!   `tests/flow.rs`).
//! - [`proxy`]: a small HTTP `CONNECT` proxy (tunnels, demands Basic credentials, refuses,
//!   or stays silent) that records what it was asked.
//! - [`socks`]: a small SOCKS5 proxy (RFC 1928 `CONNECT`, RFC 1929 username/password) that
//!   tunnels, demands credentials, refuses with a reply code, or misbehaves on purpose, and
//!   records what it was asked.
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_tests::peer::{Mode, Peer};
//!
//! let peer = Peer::start(Mode::HttpStatus(403));
//! let snapshot = peer.wait_for("nothing", Duration::from_millis(10), |s| s.accepted == 0);
//! assert!(snapshot.connections.is_empty());
//! ```
#![forbid(unsafe_code)]

pub mod adapter;
pub mod flood;
pub mod memory;
/// The scriptable peer, from the published test kit.
pub use wxsocket_testkit::peer;
pub mod proxy;
pub mod scenario;
pub mod socks;

/// The workspace README's Rust examples, compiled and run as doc tests (this crate depends on
/// every adapter, and is not published, so the README outside any package can be read).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct WorkspaceReadmeDoctests;

/// Instantiates each generic scenario `fn name<A: Adapter>()` as a test for both adapters:
/// `on_tokio::name` against `wxsocket-tokio` and `on_blocking::name` against
/// `wxsocket-blocking` (the scenarios are written once, in the calling file).
#[macro_export]
macro_rules! on_both_adapters {
    ($($scenario:ident),* $(,)?) => {
        /// Every scenario against `wxsocket-tokio`.
        mod on_tokio {
            $(#[test] fn $scenario() { super::$scenario::<wxsocket_tests::adapter::TokioAdapter>(); })*
        }
        /// Every scenario against `wxsocket-blocking`.
        mod on_blocking {
            $(#[test] fn $scenario() { super::$scenario::<wxsocket_tests::adapter::BlockingAdapter>(); })*
        }
    };
}

/// Instantiates each generic pool scenario `fn name<P: PoolAdapter>()` for both adapters'
/// `TaskPool`: `pool_on_tokio::name` and `pool_on_blocking::name`.
#[macro_export]
macro_rules! on_both_pools {
    ($($scenario:ident),* $(,)?) => {
        /// Every pool scenario against `wxsocket-tokio`.
        mod pool_on_tokio {
            $(#[test] fn $scenario() { super::$scenario::<wxsocket_tests::adapter::TokioPool>(); })*
        }
        /// Every pool scenario against `wxsocket-blocking`.
        mod pool_on_blocking {
            $(#[test] fn $scenario() { super::$scenario::<wxsocket_tests::adapter::BlockingPool>(); })*
        }
    };
}
