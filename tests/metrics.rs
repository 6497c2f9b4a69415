//! The Prometheus endpoint: a real node serves /metrics with per-command counts and latency histograms.

mod common;

use std::io::{Read, Write};

use common::TestNode;
use redis::AsyncCommands;

#[tokio::test]
async fn metrics_endpoint_serves_command_counts_and_latency_histograms() {
    // Port 0: the node picks a free port and names it on its ready line.
    let node = TestNode::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = format!("127.0.0.1:{}", node.http_port.expect("the ready line names the metrics address"));
    let mut c = node.conn().await;
    for i in 0..10 {
        let _: () = c.set(format!("m{i}"), i).await.unwrap();
    }
    let _ = redis::cmd("GET").query_async::<()>(&mut c).await;
    for name in ["NOSUCH1", "NOSUCH2"] {
        let _ = redis::cmd(name).query_async::<()>(&mut c).await;
    }
    // State gauges refresh every 5 s, so wait for one refresh after the writes.
    let live = format!("dynamo_local_live_keys{{node=\"{}\"}} 10", node.node_id);
    let mut body = String::new();
    for _ in 0..150 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        body.clear();
        s.read_to_string(&mut body).unwrap();
        if body.contains("dynamo_commands_total") && body.contains(&live) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("dynamo_commands_total{command=\"set\"} 10"), "{body}");
    assert!(body.contains("dynamo_command_seconds_bucket{command=\"set\""), "latency histogram: {body}");
    // Refused commands count under their reason, never under the name the client sent.
    assert!(body.contains("dynamo_commands_refused_total{reason=\"arity\"} 1"), "{body}");
    assert!(body.contains("dynamo_commands_refused_total{reason=\"unknown\"} 2"), "{body}");
    assert!(!body.to_lowercase().contains("nosuch"), "{body}");
    assert!(body.contains("dynamo_connected_clients"), "{body}");
    // State gauges, labelled by node: the ten keys written above are live here.
    let node_id = &node.node_id;
    assert!(body.contains(&live), "{body}");
    assert!(body.contains(&format!("dynamo_process_resident_bytes{{node=\"{node_id}\"}}")), "{body}");
    assert!(body.contains(&format!("dynamo_storage_disk_bytes{{node=\"{node_id}\"}}")), "{body}");
    // INFO mirrors Redis's field names for the main figures.
    let info: String = redis::cmd("INFO").query_async(&mut c).await.unwrap();
    for field in ["used_memory_rss:", "keyspace_hits:", "keyspace_misses:", "connected_clients:", "db0:keys=10"] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
}

/// The sample Grafana dashboard (docker/monitoring) only charts metrics the code emits: a renamed metric must not
/// leave a silently empty panel behind.
#[test]
fn the_grafana_dashboard_charts_only_metrics_the_nodes_emit() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(root.join("docker/monitoring/grafana/dashboards/dynamo-kv.json")).unwrap();
    let mut sources = String::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                sources.push_str(&std::fs::read_to_string(path).unwrap());
            }
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut rest = dashboard.as_str();
    while let Some(i) = rest.find("dynamo_") {
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())).unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches("_bucket").to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &tail[end..];
    }
    assert!(names.len() >= 15, "the dashboard charts {} metrics: {names:?}", names.len());
    for name in &names {
        assert!(sources.contains(&format!("\"{name}\"")), "the dashboard charts {name}, which no code emits");
    }
}
