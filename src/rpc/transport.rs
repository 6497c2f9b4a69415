//! Sockets of the internal protocol: a pool of client connections (one per peer, requests multiplexed by id) and
//! the peer listener. This is the only code that touches peer sockets. With peer TLS configured every connection is
//! mutual TLS first, then the cluster-key handshake inside it; without, the same frames go over plain TCP.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::RpcError;
use super::handshake::{ClientHandshake, ClusterKey, Handshake, HandshakeError, ServerHandshake};
use super::message::{Answer, Frame, Message, RemoteError, decode, encode};
use crate::sys::{TcpListener, TcpStream};
use crate::tls::{self, Current, PeerTls};

/// Largest frame accepted after the handshake: a sibling set at its byte limit plus framing.
pub const MAX_FRAME: usize = 80 << 20;
/// Largest frame accepted before the peer proved it holds the cluster key: a stranger gets no big buffers.
const HANDSHAKE_MAX_FRAME: usize = 4 << 10;
/// Requests one peer connection may have in flight; reading pauses beyond it.
const MAX_IN_FLIGHT: usize = 256;
/// Time a peer has to complete the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait before reconnecting to a peer that failed.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Frames queued per connection before senders wait.
const SEND_QUEUE: usize = 1024;

/// Who we are on the internal protocol.
#[derive(Clone, Debug)]
pub struct Identity {
    /// Our node id.
    pub node_id: String,
    /// The cluster key both handshake sides prove.
    pub key: ClusterKey,
    /// Mutual TLS under the cluster CA, if configured: then every peer connection, both ways, must use it. Each new
    /// connection takes the configuration current when it starts (SIGHUP reloads it).
    pub tls: Option<Arc<Current<PeerTls>>>,
}

impl Identity {
    /// A plaintext identity (no peer TLS).
    pub fn plain(node_id: &str, key: ClusterKey) -> Identity {
        Identity { node_id: node_id.to_string(), key, tls: None }
    }
}

/// What a peer connection runs over: TCP, or TLS over TCP.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerStream for S {}

/// The first byte of a TLS handshake record. A plaintext Hello frame starts with the high byte of a length below
/// HANDSHAKE_MAX_FRAME, which is 0, so a listener can tell a peer that speaks TLS to it from one that does not.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serves requests that arrive from peers: picks the message type by its tag and answers it (see
/// [`super::message::answer`]).
pub trait Handler: Send + Sync + 'static {
    /// Answers the request with tag `tag` and encoded `body` from peer `from`.
    fn handle(&self, from: &str, tag: u8, body: Bytes) -> impl Future<Output = Answer> + Send;
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(HANDSHAKE_MAX_FRAME).new_codec()
}

async fn recv<T: DeserializeOwned, S: PeerStream>(framed: &mut Framed<S, LengthDelimitedCodec>) -> Result<T, RpcError> {
    match framed.next().await {
        Some(Ok(frame)) => decode(&frame).map_err(|e| RpcError::Frame { reason: e.to_string() }),
        Some(Err(e)) => Err(RpcError::Frame { reason: e.to_string() }),
        None => Err(RpcError::Frame { reason: "connection closed during handshake".into() }),
    }
}

fn nonce() -> [u8; 16] {
    let mut n = [0u8; 16];
    crate::sys::fill_random(&mut n).expect("the OS provides randomness");
    n
}

/// A call that failed before its request was sent: the peer cannot have acted on it, so the caller may safely try
/// another node (a timeout after sending is [`RpcError::Timeout`], whose outcome is unknown).
fn unreachable(addr: &str, reason: &str) -> RpcError {
    RpcError::Unreachable { addr: addr.to_string(), reason: reason.to_string() }
}

/// Calls waiting for their reply (its encoded body, or the peer's refusal), by request id. Ordered: a connection
/// that closes fails its calls in the order they were made, which keeps a simulated run replayable (a hash map
/// would wake them in an order that changes from run to run).
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Result<Bytes, RemoteError>>>>>;

/// One live client connection to a peer.
struct Conn {
    /// The node id the handshake proved.
    peer: String,
    tx: mpsc::Sender<Bytes>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    /// When the connection opened, and when it last received a frame (µs after opening).
    opened: Instant,
    heard_us: Arc<AtomicU64>,
}

impl Conn {
    /// Whether nothing arrived on the connection since `since`.
    fn silent_since(&self, since: Instant) -> bool {
        let heard = self.opened + Duration::from_micros(self.heard_us.load(Ordering::Acquire));
        heard < since
    }
}

/// Marks a connection dead and fails its waiting calls at once (not at their timeouts).
fn close(closed: &AtomicBool, pending: &Pending) {
    closed.store(true, Ordering::Release);
    pending.lock().expect("pending lock").clear();
}

#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    /// Consecutive failures and when the next attempt may start.
    backoff: Mutex<(u32, Option<Instant>)>,
}

/// Client connections to peers, by peer address.
pub struct PeerPool {
    identity: Identity,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl PeerPool {
    /// An empty pool.
    pub fn new(identity: Identity) -> Self {
        Self { identity, slots: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    /// Sends `message` to whatever node answers at `addr` (a seed) and waits for its reply until `timeout`.
    pub async fn call<M: Message>(&self, addr: &str, message: M, timeout: Duration) -> Result<M::Reply, RpcError> {
        self.call_inner(None, addr, message, timeout).await
    }

    /// Sends `message` to member `id` at `addr`; refuses to talk to any other node found there.
    pub async fn call_node<M: Message>(
        &self,
        id: &str,
        addr: &str,
        message: M,
        timeout: Duration,
    ) -> Result<M::Reply, RpcError> {
        self.call_inner(Some(id), addr, message, timeout).await
    }

    async fn call_inner<M: Message>(
        &self,
        expected: Option<&str>,
        addr: &str,
        message: M,
        timeout: Duration,
    ) -> Result<M::Reply, RpcError> {
        let started = Instant::now();
        let out = self.exchange(expected, addr, &message, started, started + timeout).await.and_then(|body| {
            decode::<M::Reply>(&body).map_err(|e| RpcError::Frame { reason: format!("reply to {}: {e}", M::NAME) })
        });
        metrics::histogram!("dynamo_rpc_seconds", "message" => M::NAME).record(started.elapsed().as_secs_f64());
        if out.is_err() {
            metrics::counter!("dynamo_rpc_errors_total", "message" => M::NAME).increment(1);
        }
        out
    }

    /// Sends one request and waits for its encoded reply.
    async fn exchange<M: Message>(
        &self,
        expected: Option<&str>,
        addr: &str,
        message: &M,
        started: Instant,
        deadline: Instant,
    ) -> Result<Bytes, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::request(id, message);
        // What replication costs on the wire, by message (benches/collections.py reads it per operation).
        metrics::counter!("dynamo_rpc_request_bytes_total", "message" => M::NAME).increment(frame.len() as u64);
        if frame.len() > MAX_FRAME {
            return Err(RpcError::Frame { reason: format!("request of {} bytes exceeds {MAX_FRAME}", frame.len()) });
        }
        let conn = self.connection(addr, deadline).await?;
        if let Some(expected) = expected
            && conn.peer != expected
        {
            return Err(RpcError::Handshake {
                addr: addr.to_string(),
                source: HandshakeError::WrongPeer { expected: expected.to_string(), found: conn.peer.clone() },
            });
        }
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let result = tokio::time::timeout_at(deadline, async {
            conn.tx
                .send(frame)
                .await
                .map_err(|_| unreachable(addr, "the connection closed before the request was sent"))?;
            rx.await.map_err(|_| RpcError::Closed { addr: addr.to_string() })
        })
        .await;
        let out = match result {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(refusal))) => Err(RpcError::Refused { addr: addr.to_string(), refusal }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // A connection that carried nothing back for a whole request timeout is presumed dead (a peer that
                // vanished without a reset, a middlebox that silently drops the flow): the next call reconnects
                // instead of waiting out every timeout on it. A slow peer that still answers other requests keeps it.
                if conn.silent_since(started) {
                    tracing::debug!(%addr, "no answer on the connection for a whole timeout; closing it");
                    metrics::counter!("dynamo_rpc_silent_connections_closed_total").increment(1);
                    close(&conn.closed, &conn.pending);
                }
                Err(RpcError::Timeout { addr: addr.to_string() })
            }
        };
        if out.is_err() {
            conn.pending.lock().expect("pending lock").remove(&id);
        }
        out
    }

    async fn connection(&self, addr: &str, deadline: Instant) -> Result<Arc<Conn>, RpcError> {
        let slot = self.slots.lock().expect("slots lock").entry(addr.to_string()).or_default().clone();
        let mut guard = tokio::time::timeout_at(deadline, slot.conn.lock())
            .await
            .map_err(|_| unreachable(addr, "no connection before the deadline"))?;
        if let Some(c) = guard.as_ref().filter(|c| !c.closed.load(Ordering::Acquire)) {
            return Ok(c.clone());
        }
        if let (_, Some(retry_at)) = *slot.backoff.lock().expect("backoff lock")
            && Instant::now() < retry_at
        {
            return Err(RpcError::Unreachable { addr: addr.to_string(), reason: "backing off after failures".into() });
        }
        let attempt = tokio::time::timeout_at(deadline, self.connect(addr)).await;
        let result = match attempt {
            Ok(r) => r,
            Err(_) => Err(unreachable(addr, "no connection before the deadline")),
        };
        let mut backoff = slot.backoff.lock().expect("backoff lock");
        match result {
            Ok(conn) => {
                *backoff = (0, None);
                *guard = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let failures = backoff.0.saturating_add(1);
                let wait = BACKOFF_MIN.saturating_mul(1 << failures.min(6)).min(BACKOFF_MAX);
                *backoff = (failures, Some(Instant::now() + wait));
                *guard = None;
                Err(e)
            }
        }
    }

    async fn connect(&self, addr: &str) -> Result<Arc<Conn>, RpcError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| RpcError::Unreachable { addr: addr.to_string(), reason: e.to_string() })?;
        let _ = stream.set_nodelay(true);
        match &self.identity.tls {
            None => self.attach(addr, stream).await,
            Some(current) => {
                let peer_tls = current.get();
                let tls_error = |reason: String| RpcError::Tls { addr: addr.to_string(), reason };
                let name = tls::server_name(addr).ok_or_else(|| tls_error("not a host name or IP address".into()))?;
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, peer_tls.connector.connect(name, stream))
                    .await
                    .map_err(|_| unreachable(addr, "the TLS handshake timed out"))?
                    .map_err(|e| {
                        metrics::counter!("dynamo_rpc_tls_failures_total", "side" => "dial").increment(1);
                        tls_error(e.to_string())
                    })?;
                self.attach(addr, stream).await
            }
        }
    }

    /// Runs the cluster-key handshake over a fresh `stream` and starts the connection's reader and writer.
    async fn attach<S: PeerStream>(&self, addr: &str, stream: S) -> Result<Arc<Conn>, RpcError> {
        let mut framed = Framed::new(stream, codec());
        let key = &self.identity.key;
        let (mut hs, hello) = ClientHandshake::start(key, &self.identity.node_id, nonce());
        let handshake = async {
            framed.send(encode(&hello)).await.map_err(|e| RpcError::Frame { reason: e.to_string() })?;
            let proof = hs
                .on_challenge(key, recv(&mut framed).await?)
                .map_err(|source| RpcError::Handshake { addr: addr.to_string(), source })?;
            framed.send(encode(&proof)).await.map_err(|e| RpcError::Frame { reason: e.to_string() })?;
            hs.on_result(recv::<Handshake, _>(&mut framed).await?)
                .map_err(|source| RpcError::Handshake { addr: addr.to_string(), source })
        };
        let peer = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| unreachable(addr, "the handshake timed out"))??;
        tracing::debug!(%addr, %peer, "connected to peer");
        framed.codec_mut().set_max_frame_length(MAX_FRAME);

        let (mut sink, mut stream) = framed.split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (opened, heard_us) = (Instant::now(), Arc::new(AtomicU64::new(0)));
        let (writer_pending, writer_closed) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            let _ = write_frames(&mut rx, &mut sink).await;
            // A writer that stopped leaves nothing to wait for on this connection: the next call reconnects.
            close(&writer_closed, &writer_pending);
            let _ = sink.close().await;
        });
        let (reader_pending, reader_closed, reader_addr) = (pending.clone(), closed.clone(), addr.to_string());
        let reader_heard = heard_us.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                reader_heard.store(opened.elapsed().as_micros() as u64, Ordering::Release);
                match Frame::parse(frame.freeze()) {
                    Ok(Frame::Reply { id, body }) => {
                        if let Some(tx) = reader_pending.lock().expect("pending lock").remove(&id) {
                            let _ = tx.send(body);
                        }
                    }
                    _ => {
                        metrics::counter!("dynamo_rpc_bad_frames_total").increment(1);
                        tracing::warn!(addr = %reader_addr, "malformed frame from peer; closing the connection");
                        break;
                    }
                }
            }
            close(&reader_closed, &reader_pending);
        });
        Ok(Arc::new(Conn { peer, tx, pending, closed, opened, heard_us }))
    }
}

/// Accepts peers until `cancel` fires: handshake, then requests answered concurrently by `handler`.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    identity: Identity,
    handler: Arc<H>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let identity = Arc::new(identity);
    loop {
        let (socket, remote) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (identity, handler, cancel) = (identity.clone(), handler.clone(), cancel.clone());
        let mut socket = socket;
        tracker.spawn(async move {
            let _ = socket.set_nodelay(true);
            let result = match &identity.tls {
                None => match speaks_tls(&mut socket).await {
                    true => {
                        metrics::counter!("dynamo_rpc_tls_failures_total", "side" => "accept").increment(1);
                        Err(RpcError::Tls {
                            addr: remote.to_string(),
                            reason: "the peer speaks TLS to this plaintext peer port: set --peer-tls-* on every \
                                     node or on none"
                                .into(),
                        })
                    }
                    false => serve_peer(socket, &identity, handler, cancel).await,
                },
                Some(current) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, current.get().acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => serve_peer(stream, &identity, handler, cancel).await,
                        Ok(Err(e)) => {
                            metrics::counter!("dynamo_rpc_tls_failures_total", "side" => "accept").increment(1);
                            Err(RpcError::Tls { addr: remote.to_string(), reason: e.to_string() })
                        }
                        Err(_) => Err(RpcError::Timeout { addr: remote.to_string() }),
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!(%remote, error = %e, "peer connection ended");
            }
        });
    }
}

/// Whether the first bytes a peer sent on a plaintext port are a TLS handshake (false on timeout or close: the
/// handshake that follows reports those).
async fn speaks_tls(socket: &mut TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD
    )
}

async fn serve_peer<H: Handler, S: PeerStream>(
    socket: S,
    identity: &Identity,
    handler: Arc<H>,
    cancel: CancellationToken,
) -> Result<(), RpcError> {
    let mut framed = Framed::new(socket, codec());
    let key = &identity.key;
    let accept = async {
        let mut hs = ServerHandshake::new(&identity.node_id, nonce());
        let result = match hs.on_hello(key, recv(&mut framed).await?) {
            Ok(challenge) => {
                framed.send(encode(&challenge)).await.map_err(|e| RpcError::Frame { reason: e.to_string() })?;
                hs.on_proof(key, recv(&mut framed).await?)
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((peer, welcome)) => {
                framed.send(encode(&welcome)).await.map_err(|e| RpcError::Frame { reason: e.to_string() })?;
                Ok(peer)
            }
            Err(e) => {
                // Tell the peer why (a misconfigured operator reads it in the other node's log too).
                let _ = framed.send(encode(&Handshake::Refused { reason: e.to_string() })).await;
                Err(RpcError::Handshake { addr: "incoming".into(), source: e })
            }
        }
    };
    let peer = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => {
            metrics::counter!("dynamo_rpc_refused_peers_total").increment(1);
            return Err(e);
        }
        Err(_) => {
            return Err(RpcError::Timeout { addr: "incoming".into() });
        }
    };
    let peer: Arc<str> = Arc::from(peer);
    framed.codec_mut().set_max_frame_length(MAX_FRAME);
    let (mut sink, mut stream) = framed.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(SEND_QUEUE);
    let broken = CancellationToken::new();
    let failed = broken.clone();
    let writer = tokio::spawn(async move {
        if write_frames(&mut rx, &mut sink).await.is_err() {
            failed.cancel();
        }
    });
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Backpressure: a peer with MAX_IN_FLIGHT requests unanswered is not read from until one completes.
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = broken.cancelled() => break,
            p = in_flight.clone().acquire_owned() => p.expect("semaphore never closed"),
        };
        let frame = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = broken.cancelled() => break,
            f = stream.next() => f,
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                metrics::counter!("dynamo_rpc_bad_frames_total").increment(1);
                tracing::warn!(%peer, error = %e, "bad frame from peer; closing the connection");
                break;
            }
            None => break,
        };
        let (id, tag, body) = match Frame::parse(frame.freeze()) {
            Ok(Frame::Request { id, tag, body }) => (id, tag, body),
            other => {
                metrics::counter!("dynamo_rpc_bad_frames_total").increment(1);
                let reason = other.err().map_or_else(|| "a reply where a request belongs".into(), |e| e.reason);
                tracing::warn!(%peer, %reason, "malformed message from peer; closing the connection");
                break;
            }
        };
        let (handler, tx, peer, broken) = (handler.clone(), tx.clone(), peer.clone(), broken.clone());
        tokio::spawn(async move {
            let body = match handler.handle(&peer, tag, body).await {
                Answer::Reply(reply) if reply.len() + 16 > MAX_FRAME => {
                    // Answer, rather than send a frame the peer must refuse (which would end the connection).
                    let message = format!("reply of {} bytes exceeds the frame limit", reply.len());
                    Err(RemoteError::new(super::RemoteErrorKind::Refused, message))
                }
                Answer::Reply(reply) => Ok(reply),
                Answer::Refused(refusal) => Err(refusal),
                Answer::Malformed(e) => {
                    // A peer that sends what this node cannot decode speaks another protocol or is broken: the
                    // connection ends, as for a frame that does not parse.
                    metrics::counter!("dynamo_rpc_bad_frames_total").increment(1);
                    tracing::warn!(%peer, tag, reason = %e.reason, "malformed request from peer; closing the connection");
                    broken.cancel();
                    return;
                }
            };
            let _ = tx.send(Frame::reply(id, body)).await;
            drop(permit);
        });
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// Sends queued frames until the queue closes (Ok) or the socket fails (Err). Frames already queued behind the first
/// go out in the same write: under load, many replications share one syscall instead of paying one each. Before
/// the write it yields once, so the requests already running on this runtime queue their frames too: without it
/// the writer woke for every frame and sent 1.4 frames per `writev` under 50 clients (3 nodes, `SET -c 50`, where
/// the links' writes were 18% of the cluster's CPU). A yield is one turn of the scheduler, not a timer: an idle
/// runtime comes straight back.
async fn write_frames<S>(rx: &mut mpsc::Receiver<Bytes>, sink: &mut S) -> Result<(), S::Error>
where
    S: futures::Sink<Bytes> + Unpin,
{
    while let Some(frame) = rx.recv().await {
        sink.feed(frame).await?;
        tokio::task::yield_now().await;
        while let Ok(more) = rx.try_recv() {
            sink.feed(more).await?;
        }
        sink.flush().await?;
    }
    Ok(())
}
