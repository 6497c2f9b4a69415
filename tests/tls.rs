//! TLS on real nodes. The client listener: a certificate made for the test, a rustls client that trusts only that
//! certificate, and a plaintext client that gets nothing from the TLS port. The peer protocol: a cluster whose nodes
//! replicate over mutual TLS under a test CA, and a node with the right secret but another CA's certificate that
//! cannot join.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestNode, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

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

/// A node with a TLS client listener on a free port, serving the certificate and key in these files.
fn tls_node(cert: &std::path::Path, key: &std::path::Path) -> (TestNode, u16) {
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{tls_port}");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let node = TestNode::start(&["--tls-listen", &listen, "--tls-cert-file", cert, "--tls-key-file", key]);
    (node, tls_port)
}

/// A TLS connection to the node's TLS port from a rustls client that trusts only `cert` (named localhost).
async fn tls_connect(port: u16, cert: &rcgen::Certificate) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

#[tokio::test]
async fn clients_talk_resp_over_tls_and_plaintext_gets_nothing_from_the_tls_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let (node, tls_port) = tls_node(&cert_path, &key_path);
    let mut tls = tls_connect(tls_port, &cert.cert).await.expect("TLS handshake with the node");
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

/// Runs `serve` with `extra` flags on a fresh data directory, expects it to refuse to start, and returns its stderr.
fn serve_refused(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
        .args(["serve", "--node-id", "t", "--listen", "127.0.0.1:0", "--peer-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node started with {extra:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_missing_or_mismatched_certificate_stops_the_node_with_a_clear_error() {
    let err = serve_refused(&[
        "--tls-listen",
        "127.0.0.1:0",
        "--tls-cert-file",
        "/nonexistent/cert.pem",
        "--tls-key-file",
        "/nonexistent/key.pem",
    ]);
    assert!(err.contains("client TLS: cannot read certificates from /nonexistent/cert.pem"), "{err}");
    let err = serve_refused(&["--tls-listen", "127.0.0.1:0"]);
    assert!(err.contains("TLS needs all three"), "{err}");
}

/// Writes a CA and one node certificate it signs for 127.0.0.1 (server and client use); returns the serve flags.
fn peer_tls_files(dir: &std::path::Path) -> Vec<String> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut node = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    node.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = node.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let files = [("ca.pem", ca.pem()), ("node.pem", cert.pem()), ("node.key", key.serialize_pem())];
    for (name, pem) in &files {
        std::fs::write(dir.join(name), pem).unwrap();
    }
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    vec![
        "--peer-tls-cert-file".into(),
        path("node.pem"),
        "--peer-tls-key-file".into(),
        path("node.key"),
        "--peer-tls-ca-file".into(),
        path("ca.pem"),
    ]
}

#[tokio::test]
async fn a_cluster_replicates_over_peer_tls_and_a_node_of_another_ca_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = peer_tls_files(&dir.path().join("cluster"));
    flags.extend(["--cluster-secret".to_string(), "s3cret".to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let nodes = common::start_cluster(3, &flags).await;

    let mut c1 = nodes[0].conn().await;
    let _: () = redis::cmd("SET").arg("k").arg("over tls").query_async(&mut c1).await.unwrap();
    // N = 3 on 3 nodes: every node holds a replica, which only the TLS peer connections could have carried.
    for node in &nodes {
        eventually(Duration::from_secs(10), &format!("{} gets its replica", node.node_id), || async {
            let held = common::local_get(node, "k").await;
            if held == vec!["over tls"] { Ok(()) } else { Err(format!("{held:?}")) }
        })
        .await;
    }

    // Same secret, but a certificate from another CA: no member accepts its connections, so it never joins.
    let mut rogue = peer_tls_files(&dir.path().join("rogue"));
    rogue.extend(["--cluster-secret".into(), "s3cret".into(), "--seeds".into(), nodes[0].peer_addr()]);
    let rogue: Vec<&str> = rogue.iter().map(String::as_str).collect();
    let rogue = TestNode::start_named("rogue", &rogue);
    // The rogue's attempt through its seed fails at the TLS handshake, which it reports as why it waits.
    common::wait_seeds_answered(&rogue).await;
    let members: Vec<redis::Value> = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut c1).await.unwrap();
    assert_eq!(members.len(), 3, "the rogue node must not be listed: {members:?}");
    assert!(!format!("{members:?}").contains("rogue"));
}

#[test]
fn peer_tls_needs_all_three_files_and_readable_ones() {
    let err = serve_refused(&["--peer-tls-cert-file", "/nonexistent/node.pem"]);
    assert!(err.contains("peer TLS needs all three"), "{err}");
    let err = serve_refused(&[
        "--peer-tls-cert-file",
        "/nonexistent/node.pem",
        "--peer-tls-key-file",
        "/nonexistent/node.key",
        "--peer-tls-ca-file",
        "/nonexistent/ca.pem",
    ]);
    assert!(err.contains("peer TLS: cannot read certificates from /nonexistent/node.pem"), "{err}");
}

/// Whether a TLS client that trusts only `cert` completes a handshake with the node on `port` and gets PONG.
async fn tls_ping(port: u16, cert: &rcgen::Certificate) -> bool {
    let Ok(mut tls) = tls_connect(port, cert).await else { return false };
    tls.write_all(b"PING\r\n").await.unwrap();
    read_n(&mut tls, 7).await == b"+PONG\r\n"
}

#[tokio::test]
async fn sighup_rotates_the_certificate_and_a_broken_file_keeps_the_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |c: &rcgen::CertifiedKey| {
        std::fs::write(&cert_path, c.cert.pem()).unwrap();
        std::fs::write(&key_path, c.key_pair.serialize_pem()).unwrap();
    };
    let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let new = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write(&old);
    let (node, tls_port) = tls_node(&cert_path, &key_path);
    assert!(tls_ping(tls_port, &old.cert).await);
    let hangup = || {
        let status = std::process::Command::new("kill").args(["-HUP", &node.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };

    // New files on disk change nothing until SIGHUP.
    write(&new);
    assert!(tls_ping(tls_port, &old.cert).await);
    hangup();
    eventually(Duration::from_secs(10), "the node serves the new certificate", || async {
        if tls_ping(tls_port, &new.cert).await { Ok(()) } else { Err("the old one".into()) }
    })
    .await;
    assert!(!tls_ping(tls_port, &old.cert).await, "the old certificate is no longer served");

    // A broken file: the reload fails, the node keeps serving the certificate in use.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    hangup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(tls_ping(tls_port, &new.cert).await);
    let mut plain = node.conn().await;
    let _: () = redis::cmd("PING").query_async(&mut plain).await.unwrap();
}
