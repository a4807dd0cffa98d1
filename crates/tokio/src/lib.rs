// The crate documentation is the README, so its examples run as doc tests.
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod conn;
mod driver;
mod pool;
mod websocket;
pub mod wx;

pub use client::{Client, Events};
pub use pool::{SocketTask, TaskPool};
/// What [`Events::try_recv`] says when it has no event: none yet, or none ever again (the
/// blocking adapter's type, so that code naming it ports unchanged).
pub use std::sync::mpsc::TryRecvError;
pub use websocket::{WebSocket, connect, connect_with};
pub use wxsocket_wire::reexports::*;
