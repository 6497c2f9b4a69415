//! Server (L5): the client listener and one task per connection.
//!
//! A connection decodes every complete request already buffered, runs each in order and appends its reply to one
//! output buffer, and writes that buffer only when no complete request is left: pipelined requests are answered in
//! order with one write per batch. Shutdown is checked only between reads, so a request that was read is always
//! answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{self, NodeContext, Session};
use crate::resp::{FrameLimits, ProtocolError, Reply, RequestCodec};

/// Initial read buffer per connection; grows with the requests actually received.
const READ_BUFFER: usize = 16 << 10;
/// Replies buffered beyond this are written out before the next request runs, so a pipeline of reads of large
/// values cannot pile up unbounded output in memory.
const WRITE_CHUNK: usize = 64 << 10;

/// Accepts clients until `cancel` fires; every connection task is spawned on `tracker`.
pub async fn serve(listener: TcpListener, node: Arc<NodeContext>, cancel: CancellationToken, tracker: TaskTracker) {
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let (socket, peer) = tokio::select! {
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
            tracker.spawn(refuse(socket));
            continue;
        }
        metrics::gauge!("dynamo_connected_clients").set(connected as f64);
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (node, cancel) = (node.clone(), cancel.clone());
        tracker.spawn(async move {
            let _ = socket.set_nodelay(true);
            if let Err(e) = connection(socket, &node, id, cancel).await {
                tracing::debug!(client_id = id, %peer, error = %e, "connection ended with an error");
            }
            let left = node.stats.connected_clients.fetch_sub(1, Ordering::AcqRel) - 1;
            metrics::gauge!("dynamo_connected_clients").set(left as f64);
        });
    }
}

async fn refuse(mut socket: TcpStream) {
    let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
    let _ = socket.shutdown().await;
}

/// Serves one client until it quits, breaks the protocol, disconnects or the node shuts down.
async fn connection(socket: TcpStream, node: &NodeContext, id: u64, cancel: CancellationToken) -> std::io::Result<()> {
    let limits = &node.config.limits;
    let mut codec = RequestCodec::new(FrameLimits {
        max_request_bytes: limits.max_request_bytes,
        max_array_len: limits.max_array_len,
        // A bulk string is a key, a value or a token: the value limit bounds them all; SET checks keys itself.
        max_bulk_bytes: limits.max_value_bytes.max(limits.max_key_bytes),
    });
    let mut session = Session::new(id, node.config.requirepass.is_some());
    let (mut reader, mut writer) = socket.into_split();
    let mut rbuf = BytesMut::with_capacity(READ_BUFFER);
    let mut wbuf = BytesMut::with_capacity(READ_BUFFER);
    loop {
        loop {
            match codec.decode(&mut rbuf) {
                Ok(Some(args)) => {
                    let reply = commands::execute(node, &mut session, args).await;
                    reply.encode(session.protocol, &mut wbuf);
                    if session.closing {
                        writer.write_all(&wbuf).await?;
                        return writer.shutdown().await;
                    }
                    if wbuf.len() >= WRITE_CHUNK {
                        writer.write_all(&wbuf).await?;
                        wbuf.clear();
                    }
                }
                Ok(None) => break,
                Err(ProtocolError::Io(e)) => return Err(e),
                Err(e) => {
                    // Answer what came before, then the error, then close: nothing after a broken frame can be
                    // trusted to be framed as the client meant.
                    node.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("dynamo_protocol_errors_total").increment(1);
                    Reply::error(format!("ERR {e}")).encode(session.protocol, &mut wbuf);
                    writer.write_all(&wbuf).await?;
                    return writer.shutdown().await;
                }
            }
        }
        if !wbuf.is_empty() {
            writer.write_all(&wbuf).await?;
            wbuf.clear();
            if wbuf.capacity() > 4 * READ_BUFFER {
                // Give back the memory of one huge reply.
                wbuf = BytesMut::with_capacity(READ_BUFFER);
            }
        }
        if rbuf.capacity() - rbuf.len() < READ_BUFFER / 4 {
            rbuf.reserve(READ_BUFFER);
        }
        let n = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            n = reader.read_buf(&mut rbuf) => n?,
        };
        if n == 0 {
            return Ok(());
        }
    }
}
