use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;

/// Answers Ping with Pong and Read with an empty state after an optional delay; records peak concurrency.
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
    async fn handle(&self, _from: &str, request: Request) -> Response {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        match request {
            Request::Ping => Response::Pong,
            _ => Response::State { state: None },
        }
    }
}

fn identity(id: &str, secret: Option<&str>) -> Identity {
    Identity { node_id: id.into(), key: ClusterKey::derive("test", secret) }
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
            tokio::spawn(async move { pool.call(&addr, Request::Ping, Duration::from_secs(5)).await })
        })
        .collect();
    for c in calls {
        assert!(matches!(c.await.unwrap().unwrap(), Response::Pong));
    }
    // Requests on the one connection were served concurrently, not one after another.
    assert!(echo.peak.load(Ordering::SeqCst) > 1, "peak concurrency {}", echo.peak.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_stranger_is_refused() {
    let (addr, _c) = server(Some("right"), Duration::ZERO).await;
    let pool = PeerPool::new(identity("client", Some("wrong")));
    let err = pool.call(&addr, Request::Ping, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, RpcError::Handshake { .. }), "{err}");
    let open = PeerPool::new(identity("client", None));
    assert!(open.call(&addr, Request::Ping, Duration::from_secs(2)).await.is_err());
}

#[tokio::test]
async fn timeouts_and_reconnects() {
    let (addr, cancel) = server(None, Duration::from_millis(300)).await;
    let pool = PeerPool::new(identity("client", None));
    let err = pool
        .call(&addr, Request::Read { key: Bytes::new(), as_fallback: false }, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert!(pool.call(&addr, Request::Ping, Duration::from_secs(2)).await.is_ok());
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
        if pool.call(&addr, Request::Ping, Duration::from_millis(500)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the pool reconnects to a peer that came back");
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
    assert!(pool.call(&addr, Request::Ping, Duration::from_secs(2)).await.is_ok());
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
        let _ = postcard::from_bytes::<Envelope>(&data);
        let valid = postcard::to_stdvec(&Envelope::Request {
            id: 7,
            body: Request::Read { key: Bytes::from_static(b"some key"), as_fallback: false },
        })
        .unwrap();
        let mut mutated = valid.clone();
        for (i, b) in flip {
            if let Some(x) = mutated.get_mut(i % valid.len()) {
                *x ^= b;
            }
        }
        let _ = postcard::from_bytes::<Envelope>(&mutated);
        let _ = postcard::from_bytes::<Envelope>(&valid[..cut.min(valid.len())]);
    }
}
