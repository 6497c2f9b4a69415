//! The TLS client listener: a real node with a certificate made for the test, a rustls client that trusts only
//! that certificate, and a plaintext client that gets nothing from the TLS port.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestNode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads from `s` until `want` bytes arrived (or the peer closes).
async fn read_n<S: AsyncReadExt + Unpin>(s: &mut S, want: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < want {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

#[tokio::test]
async fn clients_talk_resp_over_tls_and_plaintext_gets_nothing_from_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let node = TestNode::start(&[
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
        "--tls-cert-file",
        cert_path.to_str().unwrap(),
        "--tls-key-file",
        key_path.to_str().unwrap(),
    ]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the node");
    tls.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\ntls\r\nPING\r\n").await.unwrap();
    assert_eq!(read_n(&mut tls, 12).await, b"+OK\r\n+PONG\r\n");
    // What was written over TLS is the same data the plaintext port serves.
    let mut plain = node.conn().await;
    let (vals, _) = common::get(&mut plain, "k").await;
    assert_eq!(vals, vec!["tls"]);

    // Plaintext RESP on the TLS port is not a handshake: the node closes without answering.
    let mut s = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    s.write_all(b"PING\r\n").await.unwrap();
    let out = read_n(&mut s, 1).await;
    assert!(!out.starts_with(b"+PONG"), "plaintext on the TLS port must not be served: {out:?}");
}

#[test]
fn a_missing_or_mismatched_certificate_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["serve", "--node-id", "t", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert-file", "/nonexistent/cert.pem", "--tls-key-file"])
        .arg(dir.path().join("key.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS: cannot read certificates from /nonexistent/cert.pem"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["serve", "--node-id", "t", "--listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS needs all three"), "{err}");
}
