//! Many connect / close / drop cycles return the process's open file descriptors to where
//! they started: no socket, task or timer outlives its connection. (Its own test binary,
//! so no other test opens sockets meanwhile.)

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use wxsocket_tokio::{Client, Config, ConnectOptions, Event, SessionConfig, TaskPool};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Accepts and holds each connection until the client closes it (a handshake that never
/// completes), then drops it.
async fn holding_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

#[tokio::test]
async fn connect_close_cycles_leave_no_descriptor_behind() {
    let echo = wxsocket_test_server::EchoServer::start().unwrap();
    let stall = holding_server().await;
    let cycle = |url: String| async move {
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(&url)).unwrap();
        until_open(&mut events).await;
        client.send("ping").await.unwrap();
        client.close(None, "").unwrap();
        until_close(&mut events).await;
    };
    // Warm up (runtime, allocator, lazily created pieces), then measure.
    cycle(echo.url()).await;
    let baseline = open_fds();

    for _ in 0..30 {
        // Clean close.
        cycle(echo.url()).await;

        // Dropping the handle while open: close frame, then the stream ends.
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(echo.url())).unwrap();
        until_open(&mut events).await;
        drop(client);
        while tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .is_some()
        {}

        // Dropping the handle while the handshake stalls.
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(&stall)).unwrap();
        assert!(matches!(next(&mut events).await, Event::Connecting { .. }));
        drop(client);
        while tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .is_some()
        {}

        // Replacement while open and a handshake timeout, then drop.
        let session = SessionConfig::default().close_timeout(Duration::from_secs(2));
        let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
        client.connect(&ConnectOptions::new(echo.url())).unwrap();
        until_open(&mut events).await;
        client.connect(&ConnectOptions::new(echo.url())).unwrap();
        until(&mut events, |e| matches!(e, Event::Open { .. })).await; // after the replaced one's close
        client
            .connect(&ConnectOptions::new(&stall).timeout(Duration::from_millis(20)))
            .unwrap();
        until_close(&mut events).await; // the replaced one
        until_close(&mut events).await; // the timed-out one
        drop(client);
        while tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .is_some()
        {}

        // A pool of three, dropped while open.
        let (pool, mut events) = TaskPool::new(Config::default()).unwrap();
        let tasks: Vec<_> = (0..3)
            .map(|_| pool.connect(&ConnectOptions::new(echo.url())).unwrap())
            .collect();
        for _ in 0..3 {
            until_open(&mut events).await;
        }
        drop((pool, tasks));
        while tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap()
            .is_some()
        {}
    }

    // The client side is gone when each stream ended; the servers close their ends as
    // they notice, so allow them a bounded moment.
    let deadline = Instant::now() + WAIT;
    while open_fds() > baseline && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(open_fds(), baseline, "descriptors leaked");
}
