//! Secure defaults: protected mode for clients, no open cluster on a reachable peer port, and access levels.

mod common;

use common::{TestNode, raw_exchange};

/// An IPv4 address of this machine beyond loopback (eth0, docker0, ...), from iproute2.
fn non_loopback_ip() -> String {
    let out = std::process::Command::new("ip").args(["-o", "-4", "addr", "show", "scope", "global"]).output();
    let text = String::from_utf8_lossy(&out.expect("iproute2's `ip` (installed by .ci/run)").stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .expect("this test needs an IPv4 address beyond loopback on some interface")
}

/// What a client reads after `send`, connecting to `host`, and whether the node closed the connection.
async fn exchange(host: &str, port: u16, send: &[u8]) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect((host, port)).await.unwrap();
    s.write_all(send).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn protected_mode_serves_loopback_and_denies_others_until_a_password_or_an_explicit_no() {
    let ip = non_loopback_ip();
    let open = TestNode::start_on("0.0.0.0", "p1", &[]);
    let (reply, closed) = exchange(&ip, open.port, b"PING\r\n").await;
    assert!(reply.starts_with("-DENIED") && reply.contains("--protected-mode no"), "{reply}");
    assert!(closed, "a denied client is disconnected");
    let (reply, _) = raw_exchange(open.port, b"PING\r\n", 7).await;
    assert_eq!(String::from_utf8_lossy(&reply), "+PONG\r\n", "a loopback client is served");

    let guarded = TestNode::start_on("0.0.0.0", "p2", &["--requirepass", "pw"]);
    let (reply, _) = exchange(&ip, guarded.port, b"AUTH pw\r\nPING\r\nQUIT\r\n").await;
    assert!(reply.starts_with("+OK\r\n+PONG\r\n"), "with a password every client may AUTH: {reply}");

    let trusting = TestNode::start_on("0.0.0.0", "p3", &["--protected-mode", "no"]);
    let (reply, _) = exchange(&ip, trusting.port, b"PING\r\nQUIT\r\n").await;
    assert!(reply.starts_with("+PONG\r\n"), "--protected-mode no serves everyone: {reply}");
}

#[test]
fn a_peer_port_beyond_loopback_needs_a_secret_or_an_explicit_open_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"));
        cmd.args(["serve", "--node-id", "o1", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0"])
            .args(["--peer-advertise", "198.51.100.7:17001", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra);
        cmd
    };
    let out = serve(&[]).output().unwrap();
    assert!(!out.status.success(), "an open cluster on a reachable address started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reachable beyond loopback")
            && err.contains("--cluster-secret")
            && err.contains("--insecure-open-cluster"),
        "{err}"
    );
    // The explicit way out starts (and is stopped again at once).
    let mut child = serve(&["--insecure-open-cluster"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.starts_with("dynamo-kv ready:"), "{line}");
}
