use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

/// A liveness probe of these tests' own: the transport carries any [`Message`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Pong;

impl Message for Ping {
    const TAG: u8 = 1;
    const NAME: &'static str = "test_ping";
    type Reply = Pong;
}

/// Asks for the length of `key`; the handler refuses an empty key.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Measure {
    key: Bytes,
}

impl Message for Measure {
    const TAG: u8 = 2;
    const NAME: &'static str = "test_measure";
    type Reply = u64;
}

/// A message the server below does not know.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Unknown;

impl Message for Unknown {
    const TAG: u8 = 99;
    const NAME: &'static str = "test_unknown";
    type Reply = ();
}

/// Answers Ping and Measure after an optional delay; records peak concurrency.
struct Echo {
    delay: Duration,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl Echo {
    fn new(delay: Duration) -> Self {
        Self { delay, in_flight: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }
}

impl Handler for Echo {
    async fn handle(&self, _from: &str, tag: u8, body: Bytes) -> Answer {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match tag {
            Ping::TAG => answer(&body, |_: Ping| async { Ok(Pong) }).await,
            Measure::TAG => {
                answer(&body, |m: Measure| async move {
                    match m.key.len() {
                        0 => Err(RemoteError::new(RemoteErrorKind::Misdirected, "an empty key")),
                        n => Ok(n as u64),
                    }
                })
                .await
            }
            tag => Answer::Malformed(message::Malformed { reason: format!("unknown tag {tag}") }),
        }
    }
}

fn identity(id: &str, secret: Option<&str>) -> Identity {
    Identity::plain(id, ClusterKey::derive("test", secret))
}

async fn server_with(secret: Option<&str>, echo: Arc<Echo>) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cancel = CancellationToken::new();
    tokio::spawn(transport::serve(listener, identity("server", secret), echo, cancel.clone(), TaskTracker::new()));
    (addr, cancel)
}

async fn server(secret: Option<&str>, delay: Duration) -> (String, CancellationToken) {
    server_with(secret, Arc::new(Echo::new(delay))).await
}

#[tokio::test]
async fn many_requests_share_one_connection() {
    let echo = Arc::new(Echo::new(Duration::from_millis(20)));
    let (addr, _c) = server_with(Some("s"), echo.clone()).await;
    let pool = Arc::new(PeerPool::new(identity("client", Some("s"))));
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move { pool.call(&addr, Ping, Duration::from_secs(5)).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), Pong);
    }
    // Requests on the one connection were served concurrently, not one after another.
    assert!(echo.peak.load(Ordering::SeqCst) > 1, "peak concurrency {}", echo.peak.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_stranger_is_refused() {
    let (addr, _c) = server(Some("right"), Duration::ZERO).await;
    let pool = PeerPool::new(identity("client", Some("wrong")));
    let err = pool.call(&addr, Ping, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RpcError::Handshake { .. }), "{err}");
    let open = PeerPool::new(identity("client", None));
    assert!(open.call(&addr, Ping, Duration::from_secs(2)).await.is_err());
}

#[tokio::test]
async fn timeouts_and_reconnects() {
    let (addr, cancel) = server(None, Duration::from_millis(300)).await;
    let pool = PeerPool::new(identity("client", None));
    let err = pool.call(&addr, Measure { key: Bytes::from_static(b"k") }, Duration::from_millis(50)).await.unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(pool.call(&addr, Ping, Duration::from_secs(2)).await.is_ok());
    // The server goes away: calls fail fast, then work again once it is back on the same address.
    cancel.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let listener = loop {
        match TcpListener::bind(&addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let cancel2 = CancellationToken::new();
    tokio::spawn(transport::serve(
        listener,
        identity("server", None),
        Arc::new(Echo::new(Duration::ZERO)),
        cancel2.clone(),
        TaskTracker::new(),
    ));
    let mut ok = false;
    for _ in 0..50 {
        if pool.call(&addr, Ping, Duration::from_millis(500)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the pool reconnects to a peer that came back");
}

#[tokio::test]
async fn a_deadline_that_expires_before_the_request_is_sent_is_unreachable_not_a_timeout() {
    // A listener that accepts and never answers the handshake: the request never leaves the caller, so callers
    // (a forwarding node) may try another node without risking a double write.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let pool = PeerPool::new(identity("client", None));
    let err = pool.call(&addr, Ping, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, RpcError::Unreachable { .. }), "{err}");
}

#[tokio::test]
async fn garbage_closes_only_that_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _c) = server(None, Duration::ZERO).await;
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A length prefix far above MAX_FRAME.
    raw.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(2), raw.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "the server closes a connection that sends garbage");
    let pool = PeerPool::new(identity("client", None));
    assert!(pool.call(&addr, Ping, Duration::from_secs(2)).await.is_ok());
}

#[tokio::test]
async fn typed_replies_and_refusals() {
    let (addr, _c) = server(None, Duration::ZERO).await;
    let pool = PeerPool::new(identity("client", None));
    let t = Duration::from_secs(2);
    assert_eq!(pool.call(&addr, Measure { key: Bytes::from_static(b"four") }, t).await.unwrap(), 4);
    let err = pool.call(&addr, Measure { key: Bytes::new() }, t).await.unwrap_err();
    assert!(matches!(&err, RpcError::Refused { refusal, .. } if refusal.kind == RemoteErrorKind::Misdirected), "{err}");
    // A message the peer cannot decode ends that connection (the call fails at once, not at its timeout); the
    // next call reconnects.
    let err = pool.call(&addr, Unknown, Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(err, RpcError::Closed { .. }), "{err}");
    assert_eq!(pool.call(&addr, Ping, t).await.unwrap(), Pong);
}

/// A cluster CA, and node certificates it signs, written as PEM files for [`PeerTls::from_pem_files`].
struct TestCa {
    dir: tempfile::TempDir,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        TestCa { dir, cert, key }
    }

    /// Mutual-TLS settings of a node whose certificate names `names`, trusting `trust`'s CA.
    fn node(&self, file: &str, names: &[&str], trust: &TestCa) -> crate::tls::PeerTls {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{file}.pem")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        crate::tls::PeerTls::from_pem_files(&cert_path, &key_path, &trust.dir.path().join("ca.pem")).unwrap()
    }
}

async fn serve_identity(identity: Identity) -> (String, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cancel = CancellationToken::new();
    let echo = Arc::new(Echo::new(Duration::ZERO));
    tokio::spawn(transport::serve(listener, identity, echo, cancel.clone(), TaskTracker::new()));
    (addr, cancel)
}

fn tls_identity(id: &str, tls: crate::tls::PeerTls) -> Identity {
    Identity { tls: Some(crate::tls::Current::shared(tls)), ..identity(id, Some("s")) }
}

async fn ping(identity: Identity, addr: &str) -> Result<Pong, RpcError> {
    PeerPool::new(identity).call(addr, Ping, Duration::from_secs(3)).await
}

#[tokio::test]
async fn peers_talk_over_mutual_tls_under_one_ca() {
    let ca = TestCa::new();
    let (addr, _c) = serve_identity(tls_identity("server", ca.node("server", &["127.0.0.1"], &ca))).await;
    let reply = ping(tls_identity("client", ca.node("client", &["127.0.0.1"], &ca)), &addr).await;
    assert!(matches!(reply, Ok(Pong)), "{reply:?}");
    // TLS does not replace the cluster secret: a CA-signed node with the wrong secret is still refused.
    let tls = Some(crate::tls::Current::shared(ca.node("other", &["127.0.0.1"], &ca)));
    let wrong_secret = Identity { tls, ..identity("client", Some("x")) };
    let err = ping(wrong_secret, &addr).await.unwrap_err();
    assert!(matches!(err, RpcError::Handshake { .. }), "{err}");
}

#[tokio::test]
async fn certificates_from_another_ca_or_for_another_host_are_refused() {
    let (ca, rogue) = (TestCa::new(), TestCa::new());
    let (addr, _c) = serve_identity(tls_identity("server", ca.node("server", &["127.0.0.1"], &ca))).await;
    // A client whose certificate another CA signed (it even trusts ours): the server refuses it.
    let err = ping(tls_identity("client", rogue.node("client", &["127.0.0.1"], &ca)), &addr).await.unwrap_err();
    assert!(matches!(err, RpcError::Tls { .. } | RpcError::Closed { .. } | RpcError::Frame { .. }), "{err}");
    // A client that trusts only another CA: it refuses the server.
    let err = ping(tls_identity("client", rogue.node("c2", &["127.0.0.1"], &rogue)), &addr).await.unwrap_err();
    assert!(matches!(err, RpcError::Tls { .. }), "{err}");
    // A server whose certificate names another host than the one dialled.
    let (addr, _c2) = serve_identity(tls_identity("server", ca.node("elsewhere", &["n9.example"], &ca))).await;
    let err = ping(tls_identity("client", ca.node("c3", &["127.0.0.1"], &ca)), &addr).await.unwrap_err();
    assert!(matches!(&err, RpcError::Tls { reason, .. } if reason.contains("not valid for name")), "{err}");
}

#[tokio::test]
async fn plaintext_and_tls_peers_do_not_mix() {
    let ca = TestCa::new();
    let (tls_addr, _c) = serve_identity(tls_identity("server", ca.node("server", &["127.0.0.1"], &ca))).await;
    assert!(ping(identity("client", Some("s")), &tls_addr).await.is_err(), "plaintext peer on a TLS port");
    let (plain_addr, _c2) = serve_identity(identity("server", Some("s"))).await;
    let err = ping(tls_identity("client", ca.node("client", &["127.0.0.1"], &ca)), &plain_addr).await.unwrap_err();
    assert!(matches!(err, RpcError::Tls { .. }), "TLS peer on a plaintext port: {err}");
}

proptest::proptest! {
    /// The internal frame decoder (a peer's frame after the length prefix) refuses any byte string without
    /// panicking, including valid frames with bytes flipped or cut short: a broken peer cannot crash a node.
    #[test]
    fn any_frame_decodes_or_fails_without_panicking(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        flip in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 0..4),
        cut in 0usize..64,
    ) {
        let parse = |frame: &[u8]| {
            if let Ok(Frame::Request { body, .. }) = Frame::parse(Bytes::copy_from_slice(frame)) {
                let _ = message::decode::<Measure>(&body);
            }
        };
        parse(&data);
        let valid = Frame::request(7, &Measure { key: Bytes::from_static(b"some key") });
        let mut mutated = valid.to_vec();
        for (i, b) in flip {
            if let Some(x) = mutated.get_mut(i % valid.len()) {
                *x ^= b;
            }
        }
        parse(&mutated);
        parse(&valid[..cut.min(valid.len())]);
    }
}
