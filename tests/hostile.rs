//! Hostile clients against one real node: garbage, huge declared lengths, deep nesting, half frames and a flood
//! of connections. The node must keep serving a well-behaved client with bounded memory.

mod common;

use std::time::Duration;

use common::TestNode;
use redis::AsyncCommands;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `bytes` and reads until the server closes the connection; returns what it answered.
async fn send_and_wait_close(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may close before taking everything; a failed write is part of the expected outcome.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept the connection open after {:?}", String::from_utf8_lossy(&out)),
        }
    }
}

#[tokio::test]
async fn garbage_huge_lengths_nesting_half_frames_and_floods_leave_the_node_serving() {
    let node = TestNode::start(&["--max-clients", "300", "--client-frame-timeout-secs", "2"]);
    let mut good = node.conn().await;
    let _: () = good.set("canary", "alive").await.unwrap();
    let rss_start = node.rss_bytes();

    // Declared sizes far beyond the limits are refused before anything is allocated for them.
    for frame in [
        &b"*2147483647\r\n"[..],
        b"*2\r\n$4294967296\r\n",
        b"*1\r\n$-5\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999999\r\n",
    ] {
        let out = send_and_wait_close(node.port, frame).await;
        assert!(
            out.starts_with(b"-ERR"),
            "{:?} -> {:?}",
            String::from_utf8_lossy(frame),
            String::from_utf8_lossy(&out)
        );
    }
    // Deep nesting: a request must be a flat array of bulk strings, so depth is refused at the first level.
    let nested = b"*1\r\n".repeat(100_000);
    let out = send_and_wait_close(node.port, &nested).await;
    assert!(out.starts_with(b"-ERR"), "{}", String::from_utf8_lossy(&out));
    // Random garbage on many connections at once.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut garbage = Vec::new();
    for _ in 0..50 {
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly binary noise, with RESP type bytes now and then so the parser goes deeper.
                if seed.is_multiple_of(7) { b"*$:+-\r\n"[((seed >> 8) % 7) as usize] } else { seed as u8 }
            })
            .collect();
        let port = node.port;
        garbage.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = s.write_all(&bytes).await;
            let mut buf = [0u8; 1024];
            // Either an error and a close, or (for noise that reads as inline commands) error replies.
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        }));
    }
    // Half frames held open: each costs a connection until the frame timeout closes it.
    let mut half = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
        s.write_all(format!("*3\r\n$3\r\nSET\r\n$2\r\nh{}\r\n$1000\r\nabc", i % 10).as_bytes()).await.unwrap();
        half.push(s);
    }
    // A flood of connections past max-clients: the extra ones are refused with an error, not queued.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        match TcpStream::connect(("127.0.0.1", node.port)).await {
            Ok(s) => flood.push(s),
            Err(_) => refused += 1,
        }
    }
    // The well-behaved client was connected before the flood and is served throughout.
    let v: String = redis::cmd("ECHO").arg("still here").query_async(&mut good).await.unwrap();
    assert_eq!(v, "still here");
    let mut refusals = 0;
    for s in flood.iter_mut() {
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await
            && buf[..n].starts_with(b"-ERR max number of clients reached")
        {
            refusals += 1;
        }
    }
    assert!(refusals + refused > 0, "connections past max-clients were refused");
    for g in garbage {
        g.await.unwrap();
    }
    // The half frames are closed by the frame timeout, and nothing of them was applied.
    for mut s in half {
        let mut buf = [0u8; 64];
        let closed =
            matches!(tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await, Ok(Ok(0) | Err(_)));
        assert!(closed, "a half frame was closed by the frame timeout");
    }
    drop(flood);
    let (vals, _) = common::get(&mut good, "h1").await;
    assert!(vals.is_empty());
    let (vals, _) = common::get(&mut good, "canary").await;
    assert_eq!(vals, vec!["alive"]);
    let rss_end = node.rss_bytes();
    println!("node RSS: {} MiB at start, {} MiB after the abuse", rss_start >> 20, rss_end >> 20);
    assert!(rss_end < rss_start + (256 << 20), "memory stayed bounded: {rss_start} -> {rss_end} bytes");
}
