//! Server (L5): the client listener and one task per connection.
//!
//! A connection decodes every complete request already buffered and answers them in order into one output buffer,
//! written when no complete request is left: one write per pipeline batch. Pipelined single-key reads and writes
//! on different keys run concurrently (a pipeline waits for the replicas once, not once per request); requests on
//! the same key and every connection command keep their order. Shutdown is checked only between reads, so a
//! request that was read is always answered.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::sys::{TcpListener, TcpStream};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{self, NodeContext, Session};
use crate::resp::{FrameLimits, Protocol, ProtocolError, Reply, RequestCodec};
use crate::tls::Current;

/// Initial read buffer per connection; grows with the requests actually received.
const READ_BUFFER: usize = 16 << 10;
/// Replies buffered beyond this are written out before the next request runs, so a pipeline of reads of large
/// values cannot pile up unbounded output in memory.
const WRITE_CHUNK: usize = 64 << 10;
/// Most pipelined requests of one connection running at once; the next one waits for these to finish.
const MAX_IN_FLIGHT: usize = 128;

/// Accepts clients until `cancel` fires; every connection task is spawned on `tracker`. With `tls`, each
/// connection first completes a TLS handshake (within the frame timeout, 10 s if that is off) with the acceptor
/// current when it arrived.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Current<TlsAcceptor>>>,
    node: Arc<NodeContext>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        node.stats.connections_received.fetch_add(1, Ordering::Relaxed);
        let connected = node.stats.connected_clients.fetch_add(1, Ordering::AcqRel) + 1;
        if connected > node.config.limits.max_clients {
            node.stats.connected_clients.fetch_sub(1, Ordering::AcqRel);
            node.stats.rejected_connections.fetch_add(1, Ordering::Relaxed);
            // A TLS client could not read a plaintext error: it is just closed.
            if tls.is_none() {
                tracker.spawn(refuse(socket));
            }
            continue;
        }
        metrics::gauge!("dynamo_connected_clients").set(connected as f64);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let denied = protected(&node.config, peer);
        // A child token: CLIENT KILL closes this connection alone, shutdown closes them all.
        let kill = cancel.child_token();
        let laddr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        node.clients.register(id, peer.to_string(), laddr, kill.clone());
        let (node, cancel, tls) = (node.clone(), kill, tls.as_ref().map(|t| t.get()));
        tracker.spawn(async move {
            let _ = socket.set_nodelay(true);
            let result = match tls {
                None if denied => deny(socket, peer).await,
                None => {
                    let (reader, writer) = socket.into_split();
                    connection(reader, writer, &node, id, cancel).await
                }
                Some(acceptor) => {
                    let limit = node.config.limits.client_frame_timeout;
                    let limit = if limit.is_zero() { Duration::from_secs(10) } else { limit };
                    match tokio::time::timeout(limit, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) if denied => deny(stream, peer).await,
                        Ok(Ok(stream)) => {
                            let (reader, writer) = tokio::io::split(stream);
                            connection(reader, writer, &node, id, cancel).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("dynamo_tls_handshake_failures_total").increment(1);
                            Err(e)
                        }
                        Err(_) => {
                            metrics::counter!("dynamo_tls_handshake_failures_total").increment(1);
                            Err(std::io::ErrorKind::TimedOut.into())
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(client_id = id, %peer, error = %e, "connection ended with an error");
            }
            node.clients.unregister(id);
            let left = node.stats.connected_clients.fetch_sub(1, Ordering::AcqRel) - 1;
            metrics::gauge!("dynamo_connected_clients").set(left as f64);
        });
    }
}

/// Redis's protected mode: with neither a password nor users configured, a client that does not connect from this
/// machine is refused. Otherwise a node bound beyond loopback by mistake serves every key, and ADMIN, to anyone.
fn protected(config: &crate::config::Config, peer: std::net::SocketAddr) -> bool {
    config.protected_mode && !config.auth_required() && !peer.ip().to_canonical().is_loopback()
}

/// What a client refused by protected mode reads before the connection closes.
const DENIED: &[u8] = b"-DENIED dynamo-kv is running in protected mode because it accepts connections beyond loopback \
and no password is set: only clients on this machine are served. To serve remote clients, do one of these: 1) set \
a password with --requirepass (or users in the config file) and AUTH with it; 2) bind --listen to 127.0.0.1 and \
reach the node through a tunnel; 3) if every client that can reach this port is trusted, restart the node with \
--protected-mode no (DYNAMO_KV_PROTECTED_MODE=no).\r\n";

async fn deny(mut stream: impl AsyncWrite + Unpin, peer: std::net::SocketAddr) -> std::io::Result<()> {
    metrics::counter!("dynamo_protected_mode_denials_total").increment(1);
    tracing::debug!(%peer, "protected mode: refused a client from beyond loopback");
    stream.write_all(DENIED).await?;
    stream.shutdown().await
}

async fn refuse(mut socket: TcpStream) {
    let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
    let _ = socket.shutdown().await;
}

/// Serves one client until it quits, breaks the protocol, disconnects or the node shuts down. Any byte stream will
/// do: [`serve`] passes TCP or TLS halves, the fuzz target a byte slice and a sink.
pub async fn connection<R, W>(
    mut reader: R,
    mut writer: W,
    node: &NodeContext,
    id: u64,
    cancel: CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let limits = &node.config.limits;
    let mut codec = RequestCodec::new(FrameLimits {
        max_request_bytes: limits.max_request_bytes,
        max_array_len: limits.max_array_len,
        // A bulk string is a key, a value or a token: the value limit bounds them all; SET checks keys itself.
        max_bulk_bytes: limits.max_value_bytes.max(limits.max_key_bytes),
    });
    let mut session = Session::new(id, node.config.auth_required(), node.config.values);
    let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut wbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut batch = Vec::new();
    // The keys of the requests in flight, kept across batches so its table is allocated once per connection.
    let mut keys: HashSet<Bytes> = HashSet::new();
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut broken = None;
        loop {
            match codec.decode(&mut rbuf) {
                Ok(Some(args)) => batch.push(args),
                Ok(None) => break,
                Err(ProtocolError::Io(e)) => return Err(e),
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        let mut out = Output { writer: &mut writer, timeout: limits.client_write_timeout };
        let last_cmd = batch.last().and_then(|args: &Vec<Bytes>| args.first().cloned());
        match run_batch(node, &mut session, batch.drain(..), &mut keys, &mut wbuf, &mut out).await {
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return timed_out(node, id, "replies unread"),
            other => other?,
        }
        if last_cmd.is_some() {
            node.clients.update(&session, last_cmd.as_deref());
        }
        if session.closing {
            out.write(&mut wbuf).await?;
            return writer.shutdown().await;
        }
        if let Some(e) = broken {
            // Answer what came before, then the error, then close: nothing after a broken frame can be trusted
            // to be framed as the client meant.
            node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dynamo_protocol_errors_total").increment(1);
            Reply::error(format!("ERR {e}")).encode(session.protocol, &mut wbuf);
            out.write(&mut wbuf).await?;
            return writer.shutdown().await;
        }
        if !wbuf.is_empty() {
            if let Err(e) = out.write(&mut wbuf).await {
                return if e.kind() == std::io::ErrorKind::TimedOut {
                    timed_out(node, id, "replies unread")
                } else {
                    Err(e)
                };
            }
            if wbuf.capacity() > 4 * READ_BUFFER {
                // Give back the memory of one huge reply.
                wbuf = BytesMut::with_capacity(READ_BUFFER);
            }
        }
        if rbuf.capacity() - rbuf.len() < READ_BUFFER / 4 {
            rbuf.reserve(READ_BUFFER);
        }
        // A started request must be complete within the frame timeout of its first byte, however slowly the rest
        // trickles in; between requests the idle timeout applies.
        let (limit, reason) = if rbuf.is_empty() {
            partial_since = None;
            (limits.client_idle_timeout, "idle")
        } else {
            let since = *partial_since.get_or_insert_with(Instant::now);
            let frame = limits.client_frame_timeout;
            let left = if frame.is_zero() {
                Duration::ZERO
            } else {
                frame.saturating_sub(since.elapsed()).max(Duration::from_millis(1))
            };
            (left, "incomplete request")
        };
        let n = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(()),
            _ = expiry(limit) => return timed_out(node, id, reason),
            n = reader.read_buf(&mut rbuf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Runs the requests of one read, replies in order. Single-key data commands on different keys run concurrently
/// (a pipeline of writes waits for the replicas once, not once per request); a request on a key already in flight,
/// and every other command, first waits for the requests before it. Stops early after QUIT.
async fn run_batch<W: AsyncWrite + Unpin>(
    node: &NodeContext,
    session: &mut Session,
    batch: impl Iterator<Item = Vec<Bytes>>,
    keys: &mut HashSet<Bytes>,
    wbuf: &mut BytesMut,
    out: &mut Output<'_, W>,
) -> std::io::Result<()> {
    let mut in_flight = FuturesOrdered::new();
    keys.clear();
    for args in batch {
        if let Some((spec, key)) = commands::concurrent_key(session, &args) {
            if keys.contains(key) || in_flight.len() >= MAX_IN_FLIGHT {
                drain(&mut in_flight, session.protocol, wbuf, out).await?;
                keys.clear();
            }
            keys.insert(key.clone());
            in_flight.push_back(commands::execute_data(node, spec, args, session.data()));
            continue;
        }
        drain(&mut in_flight, session.protocol, wbuf, out).await?;
        keys.clear();
        let reply = commands::execute(node, session, args).await;
        reply.encode(session.protocol, wbuf);
        if session.closing {
            return Ok(());
        }
        out.flush_full(wbuf).await?;
    }
    drain(&mut in_flight, session.protocol, wbuf, out).await
}

/// Waits for the requests in flight and appends their replies in request order.
async fn drain<F: Future<Output = Reply>, W: AsyncWrite + Unpin>(
    in_flight: &mut FuturesOrdered<F>,
    protocol: Protocol,
    wbuf: &mut BytesMut,
    out: &mut Output<'_, W>,
) -> std::io::Result<()> {
    while let Some(reply) = in_flight.next().await {
        reply.encode(protocol, wbuf);
        out.flush_full(wbuf).await?;
    }
    Ok(())
}

/// The client's side of the socket, with the time a write may take.
struct Output<'a, W> {
    writer: &'a mut W,
    timeout: Duration,
}

impl<W: AsyncWrite + Unpin> Output<'_, W> {
    /// Writes and empties `wbuf`. A client that takes none of it for the whole timeout gets `TimedOut`: replies
    /// cannot pile up for a client that does not read, and it cannot hold a task forever. A slow reader that keeps
    /// taking bytes is not cut off.
    async fn write(&mut self, wbuf: &mut BytesMut) -> std::io::Result<()> {
        let mut written = 0;
        let result = loop {
            if written == wbuf.len() {
                break Ok(());
            }
            let write = self.writer.write(&wbuf[written..]);
            let n = if self.timeout.is_zero() {
                write.await
            } else {
                tokio::time::timeout(self.timeout, write)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            };
            match n {
                Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) => break Err(e),
            }
        };
        wbuf.clear();
        result
    }

    /// Writes the buffered replies out once they pass [`WRITE_CHUNK`].
    async fn flush_full(&mut self, wbuf: &mut BytesMut) -> std::io::Result<()> {
        if wbuf.len() >= WRITE_CHUNK { self.write(wbuf).await } else { Ok(()) }
    }
}

/// Completes after `limit`, or never for a zero limit.
async fn expiry(limit: Duration) {
    if limit.is_zero() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(limit).await;
}

/// Ends a connection that hit one of the client timeouts.
fn timed_out(node: &NodeContext, id: u64, reason: &'static str) -> std::io::Result<()> {
    node.stats.client_timeouts.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("dynamo_client_timeouts_total", "reason" => reason).increment(1);
    tracing::debug!(client_id = id, reason, "client disconnected by a timeout");
    Ok(())
}
