//! The HTTP port of a real node: the JSON admin API's shapes (docs/HTTP.md), the console's files, errors, and
//! credentials when the node has users. The console itself runs in a real browser in compat/console.py.

mod common;

use std::io::{Read, Write};

use common::TestNode;
use serde_json::Value;

/// One HTTP/1.1 request; returns (status, headers, body).
fn request(port: u16, method: &str, path: &str, credentials: Option<&str>) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = credentials.map_or(String::new(), |c| {
        use base64::Engine as _;
        format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode(c))
    });
    write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn json(port: u16, path: &str, credentials: Option<&str>) -> Value {
    let (status, _, body) = request(port, "GET", path, credentials);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Starts a node serving HTTP on a port it picks (a port picked here and passed in could be taken by another
/// test's node before this one binds it), and returns it with that port.
fn start_with_http(extra: &[&str]) -> (TestNode, u16) {
    let node = TestNode::start(&[&["--http-listen", "0"], extra].concat());
    let port = node.http_port.expect("the ready line names the HTTP address");
    (node, port)
}

#[tokio::test]
async fn the_api_answers_json_views_of_the_node_and_the_console_is_served() {
    let (node, port) = start_with_http(&[]);
    let mut c = node.conn().await;
    let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut c).await.unwrap();

    let summary = json(port, "/api/node", None);
    assert_eq!(summary["node_id"], node.node_id.as_str());
    assert_eq!(summary["cluster_state"], "ok");
    let q = summary["partitions"].as_u64().unwrap();
    assert!(q > 0, "{summary}");
    for field in ["n", "r", "w", "ring_version", "members", "clock_skew_max_ms", "local_live_keys", "uptime_s"] {
        assert!(summary[field].is_u64(), "{field}: {summary}");
    }

    let members = json(port, "/api/members", None);
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["id"], node.node_id.as_str());
    assert_eq!(members[0]["status"], "up");
    assert_eq!(members[0]["member"], "valid");
    assert_eq!(members[0]["this_node"], true);
    assert_eq!(members[0]["partitions"].as_u64(), Some(q));

    let ring = json(port, "/api/ring", None);
    assert_eq!(ring["transition"], false);
    let partitions = ring["partitions"].as_array().unwrap();
    assert_eq!(partitions.len() as u64, q);
    assert_eq!(partitions[0]["preference_list"][0], node.node_id.as_str());
    assert_eq!(partitions[0]["state"], "stable");
    assert!(partitions[0]["next"].is_null());
    assert_eq!(partitions[1]["start"].as_str().unwrap().len(), 32);

    let transition = json(port, "/api/transition", None);
    assert_eq!(transition["in_progress"], false);
    assert_eq!(transition["transfers_total"], 0);
    assert!(transition["transfers"].as_array().unwrap().is_empty());
    assert!(transition["active"].is_null());

    let load = json(port, "/api/load", None);
    assert_eq!(load[0]["id"], node.node_id.as_str());
    assert!(load[0]["error"].is_null(), "{load}");
    assert_eq!(load[0]["load"]["live_keys"], 1);
    for field in ["commands_processed", "connected_clients", "disk_bytes", "hints_held"] {
        assert!(load[0]["load"][field].is_u64(), "{field}: {load}");
    }

    assert_eq!(json(port, "/api/hints", None), serde_json::json!([]));
    let ae = json(port, "/api/antientropy", None);
    assert!(ae["exchanges"].is_u64() && ae["last_exchange_s"].is_array(), "{ae}");

    // A key with a space and a slash, percent-encoded as a browser sends it.
    let key = json(port, "/api/key?key=a%20b%2Fc", None);
    assert_eq!(key["replicas"], serde_json::json!([node.node_id.as_str()]));
    assert!(key["partition"].as_u64().unwrap() < q);
    assert!(key["slot"].as_u64().unwrap() < 16384);

    let (status, _, body) = request(port, "GET", "/api/key", None);
    assert_eq!((status, body.contains("?key=")), (400, true), "{body}");
    assert_eq!(request(port, "GET", "/api/nope", None).0, 404);
    assert_eq!(request(port, "POST", "/api/node", None).0, 405);

    let (status, head, page) = request(port, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(page.contains("<script src=\"/console.js\">"), "{page}");
    let (status, head, _) = request(port, "GET", "/console.js", None);
    assert!(status == 200 && head.contains("text/javascript"), "{head}");
    let (status, _, metrics) = request(port, "GET", "/metrics", None);
    assert!(status == 200 && metrics.contains("dynamo_commands_total"), "{metrics}");
}

#[tokio::test]
async fn with_users_the_console_and_the_api_ask_for_credentials_and_metrics_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[[users]]\nname = \"viewer\"\npassword = \"view-secret\"\naccess = \"read\"\n").unwrap();
    let (_node, port) = start_with_http(&["--config", config.to_str().unwrap()]);

    for path in ["/", "/api/node", "/api/members", "/console.js"] {
        let (status, head, _) = request(port, "GET", path, None);
        assert_eq!(status, 401, "{path}");
        assert!(head.contains("www-authenticate: basic realm=\"dynamo-kv\""), "{path}: {head}");
        assert_eq!(request(port, "GET", path, Some("viewer:wrong")).0, 401, "{path}");
        // The default user is disabled once named users exist, as for AUTH.
        assert_eq!(request(port, "GET", path, Some("default:")).0, 401, "{path}");
    }
    assert_eq!(json(port, "/api/members", Some("viewer:view-secret")).as_array().unwrap().len(), 1);
    assert_eq!(request(port, "GET", "/", Some("viewer:view-secret")).0, 200);
    // The scheme's name is case-insensitive.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /api/node HTTP/1.1\r\nAuthorization: basic dmlld2VyOnZpZXctc2VjcmV0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // Prometheus scrapes without credentials, as it always has.
    assert_eq!(request(port, "GET", "/metrics", None).0, 200);
}
