//! Many connect / close / drop cycles leave no thread and no file descriptor behind.
//! Alone in its own test binary, so no other test's threads or sockets are counted.

mod common;

use common::*;
use std::time::{Duration, Instant};
use wxsocket_blocking::*;

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process's driver threads (named `wxsocket-client`; the kernel keeps 15 bytes of a
/// thread's name).
fn driver_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.trim_end() == "wxsocket-client")
                })
                .count()
        })
        .unwrap_or(0)
}

/// The event queues (epoll instances) open in this process: among them the driver thread's
/// poller, which the thread closes itself before it returns.
fn pollers() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventpoll]")
                })
                .count()
        })
        .unwrap_or(0)
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Thread exit has no signal a test can wait on (the driver's `Events` end is the last
/// thing it does before returning), so the counts are re-read until they settle, bounded.
fn settles_to(baseline: (usize, usize)) -> (usize, usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = (threads(), fds());
        if (now.0 <= baseline.0 && now.1 <= baseline.1) || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn connect_close_cycles_leak_nothing() {
    if !std::path::Path::new("/proc/self/task").exists() {
        // Not Linux: there is nothing to count with. Say so instead of passing silently.
        panic!("this test needs /proc (Linux)");
    }
    let server = Server::start();
    // Warm up lazily-created process state (the resolver, rustls, the server's threads).
    {
        let (client, events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        until(&events, |e| matches!(e, Event::Open { .. }));
        client.close(None, "").unwrap();
        until(&events, |e| matches!(e, Event::Close { .. }));
        drop(client);
        assert_eq!(events.recv(), None);
    }
    while server.saw.try_recv().is_ok() {}
    let baseline = settles_to((threads(), fds()));

    for round in 0..30 {
        let (client, events) = Client::new(Config::default()).unwrap();
        // Replacement, clean close and close-by-drop in one session.
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        until(&events, |e| matches!(e, Event::Open { .. }));
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        until(&events, |e| matches!(e, Event::Open { .. }));
        client.send(format!("round {round}")).unwrap();
        if round % 2 == 0 {
            client.close(None, "").unwrap();
            until(&events, |e| matches!(e, Event::Close { clean: true, .. }));
        }
        drop(client);
        // `None` only after the driver dropped every transport.
        let rest: Vec<Event> = events.iter().collect();
        assert_eq!(events.recv(), None, "{rest:?}");
        // Both server connections of the round ended (the replaced one, then this one).
        server.until(|s| *s == Saw::Ended);
        server.until(|s| *s == Saw::Ended);
    }
    // `shutdown` returns once the driver thread has ended, not only finished its work: the
    // thread's last act, closing its poller, is done at that moment, without waiting for
    // anything to settle. The thread itself leaves `/proc/self/task` a moment later: the
    // join returns when the kernel clears the thread's id, before it reaps the thread (a
    // count taken at once saw it in about 1 run of 20 of this loop).
    for _ in 0..100 {
        let (client, events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        until(&events, |e| matches!(e, Event::Open { .. }));
        assert_eq!(driver_threads(), 1);
        let running = pollers();
        client.shutdown();
        // The handle still holds the registries it shares with the thread; the thread's
        // own poller is closed.
        assert!(
            pollers() < running,
            "shutdown() returned before the driver thread ended"
        );
        let reaped = Instant::now() + Duration::from_secs(1);
        while driver_threads() > 0 && Instant::now() < reaped {
            std::thread::yield_now();
        }
        assert_eq!(driver_threads(), 0, "a driver thread outlived shutdown()");
        drop((client, events));
        server.until(|s| *s == Saw::Ended);
    }
    let after = settles_to(baseline);
    assert!(
        after.0 <= baseline.0,
        "threads: {} before, {} after",
        baseline.0,
        after.0
    );
    assert!(
        after.1 <= baseline.1,
        "fds: {} before, {} after",
        baseline.1,
        after.1
    );
}
