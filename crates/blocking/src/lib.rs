// The crate documentation is the README, so its examples run as doc tests.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod busy_poll;
mod client;
mod conn;
mod driver;
mod pool;
mod websocket;
pub mod wx;

pub use busy_poll::{DEFAULT_BUSY_POLL, MAX_BUSY_POLL};
pub use client::{Client, Events, IntoIter, Iter, SendPending, TryIter};
pub use pool::{SocketTask, TaskPool};
pub use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
pub use websocket::{Messages, WebSocket, connect, connect_with};
pub use wxsocket_wire::reexports::*;
