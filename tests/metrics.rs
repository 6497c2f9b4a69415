//! The Prometheus endpoint: a real node serves /metrics with per-command counts and latency histograms.

mod common;

use std::io::{Read, Write};

use common::TestNode;
use redis::AsyncCommands;

#[tokio::test]
async fn metrics_endpoint_serves_command_counts_and_latency_histograms() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let node = TestNode::start(&["--metrics-listen", &addr]);
    let mut c = node.conn().await;
    for i in 0..10 {
        let _: () = c.set(format!("m{i}"), i).await.unwrap();
    }
    let _ = redis::cmd("GET").query_async::<()>(&mut c).await;
    let mut body = String::new();
    for _ in 0..50 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        body.clear();
        s.read_to_string(&mut body).unwrap();
        if body.contains("dynamo_commands_total") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("dynamo_commands_total{command=\"set\"} 10"), "{body}");
    assert!(body.contains("dynamo_command_seconds_bucket{command=\"set\""), "latency histogram: {body}");
    assert!(body.contains("dynamo_connected_clients"), "{body}");
}
