//! The benchmark code the CLI calls works end to end (quick variant): the rows against
//! tokio-tungstenite, and the compressed case really compressed (fewer bytes on the
//! wire). Rates are not judged here (debug build, shared machine).

use wxsocket_bench::tokio_echo::{self as bench, BenchRow};
use wxsocket_tokio::{Client, Config, ConnectOptions, Event, Message};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_echo_bench_has_the_compressed_case() {
    let rows: Vec<BenchRow> = bench::run_echo_bench(true).await.unwrap();
    let cases: Vec<&str> = rows.iter().map(|r| r.case.as_str()).collect();
    assert_eq!(
        cases,
        [
            "small, one at a time",
            "small, pipelined",
            "small, pipelined vs hand-batched",
            "16 KiB, one at a time",
            "16 KiB, pipelined",
            "compressed, pipelined, 4 KiB JSON-like",
            "compressed, pipelined, 4 KiB JSON-like, level 1",
        ]
    );
    for row in &rows {
        assert!(
            row.adapter_per_sec > 0.0 && row.plain_per_sec > 0.0,
            "{row:?}"
        );
        assert!(row.ratio().is_finite(), "{row:?}");
    }
    assert!(
        rows[..5]
            .iter()
            .all(|r| r.compression.is_none() && r.zlib.is_none())
    );
    for (compressed, level) in rows[5..].iter().zip([6, 1]) {
        assert_eq!(compressed.size, 4096);
        let wire = compressed
            .compression
            .expect("wire bytes of the compressed case");
        // Uncompressed, a 4 KiB message and its echo are at least 2 x 4096 bytes on the
        // wire (plus frame headers); compressed, the JSON-like payload takes well under
        // half.
        assert!(wire.uncompressed >= 2.0 * 4096.0, "{wire:?}");
        assert!(wire.deflate < wire.uncompressed / 2.0, "{wire:?}");
        let zlib = compressed
            .zlib
            .expect("the zlib limit of the compressed case");
        assert_eq!(zlib.level, level);
        assert!(zlib.limit_per_sec > 0.0 && zlib.share > 0.0, "{zlib:?}");
    }
    // Level 1 trades bytes for speed: more bytes on the wire than level 6.
    let bytes = |r: &BenchRow| r.compression.unwrap().deflate;
    assert!(bytes(&rows[6]) > bytes(&rows[5]), "{rows:?}");

    let table = bench::table(&rows);
    assert!(table.contains("| 16 KiB, pipelined |"));
    assert!(table.contains("wire B/msg deflate"));
    assert!(table.contains("| compressed, pipelined, 4 KiB JSON-like |"));
    assert!(table.contains("| compressed, pipelined, 4 KiB JSON-like, level 1 |"));
}

#[tokio::test]
async fn deflate_echo_server_counts_and_still_serves_plain_clients() {
    let server = bench::EchoServer::start_deflate().unwrap();
    let wire = server.wire().unwrap();
    for deflate in [false, true] {
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client
            .connect(&ConnectOptions::new(server.url()).per_message_deflate(deflate))
            .unwrap();
        let next = async |events: &mut wxsocket_tokio::Events| {
            tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
                .await
                .expect("an event within 10 s")
                .expect("the event stream goes on")
        };
        loop {
            match next(&mut events).await {
                Event::Open { handshake, .. } => {
                    assert_eq!(handshake.deflate.is_some(), deflate);
                    break;
                }
                Event::Close { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        let before = (wire.read(), wire.written());
        let text = bench::json_like_payload(1, 2000);
        client.try_send(Message::text(text.clone())).unwrap();
        loop {
            if let Event::Message { message, .. } = next(&mut events).await {
                assert_eq!(message, Message::text(text.clone()));
                break;
            }
        }
        let read = wire.read() - before.0;
        let written = wire.written() - before.1;
        if deflate {
            assert!(read < 1000 && written < 1000, "{read} {written}");
        } else {
            // 2000 bytes: 2 + 2 header bytes (+ 4 mask bytes from the client).
            assert_eq!((read, written), (2008, 2004));
        }
        client.close(None, "").unwrap();
        while !matches!(next(&mut events).await, Event::Close { .. }) {}
    }
}

#[test]
fn json_like_payloads_have_the_asked_size_and_differ() {
    for size in [64, 100, 4096, 10_000] {
        assert_eq!(bench::json_like_payload(3, size).len(), size);
    }
    assert_ne!(
        bench::json_like_payload(1, 4096),
        bench::json_like_payload(2, 4096)
    );
}
