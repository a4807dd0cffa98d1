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
pub use websocket::{WebSocket, connect, connect_with};
pub use wxsocket_wire::reexports::*;
