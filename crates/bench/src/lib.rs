//! # wxsocket-bench (not published)
//!
//! wxsocket's benchmarks, kept out of the library crates: the echo servers, the plain
//! tungstenite / tokio-tungstenite baseline clients, the workloads and the tables.
//!
//! - [`tokio_echo`]: `wxsocket-tokio` against a plain tokio-tungstenite client, and with
//!   permessage-deflate against itself without it;
//! - [`blocking_echo`]: `wxsocket-blocking` against a plain tungstenite client, likewise;
//! - [`flood`]: a server flooding a reading application, each adapter against the plain
//!   client of its stack, each client's throughput and peak memory (flow control);
//! - [`ack`]: delivery acknowledgement on against off, pipelined, on both adapters;
//! - [`scale`]: many idle connections in one process, each adapter's pool against plain
//!   tokio-tungstenite: memory and CPU per connection;
//! - [`workload`]: the payloads and counters both use;
//! - [`zlib`]: the zlib limit the compressed cases are measured against;
//! - [`python`]: the Python `websockets` client the level-6 compressed rows are also set
//!   against;
//! - [`report`]: both in one table (and as JSON), as the `wxsocket-bench` command prints it:
//!
//! ```sh
//! cargo run --release -p wxsocket-bench -- [--quick] [--json FILE]
//! ```
#![forbid(unsafe_code)]

pub mod ack;
pub mod blocking_echo;
pub mod flood;
pub mod python;
pub mod report;
pub mod scale;
pub mod tokio_echo;
pub mod workload;
pub mod zlib;
