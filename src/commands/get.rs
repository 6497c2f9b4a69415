//! GET key [R n] and MGET key [key ...]: in the versioned mode [siblings, context] per key, in the plain mode
//! Redis's bulk string.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesOrdered;

use super::{NodeContext, context_token, coord_error, printable};
use crate::config::{PlainSiblings, ValueMode};
use crate::coordinator::ReadResult;
use crate::resp::Reply;

/// How many keys of one multi-key command are in flight at once: enough to overlap the replicas' round trips,
/// few enough that one huge MGET cannot flood the cluster.
pub const MULTI_KEY_CONCURRENCY: usize = 64;

/// Runs the operations of a multi-key command, at most [`MULTI_KEY_CONCURRENCY`] at once; outcomes in order.
pub async fn concurrently<F: Future>(ops: Vec<F>) -> Vec<F::Output> {
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut waiting = ops.into_iter();
    let mut running: FuturesOrdered<F> = waiting.by_ref().take(MULTI_KEY_CONCURRENCY).collect();
    while let Some(outcome) = running.next().await {
        outcomes.push(outcome);
        if let Some(op) = waiting.next() {
            running.push_back(op);
        }
    }
    outcomes
}

/// GET: in the versioned mode the live siblings (array of bulk strings, empty when missing or deleted) and the
/// context token, always given: for a missing key it covers nothing, so a write back with it supersedes nothing and
/// a concurrent creation stays a sibling. In the plain mode the value, nil, or what `plain_siblings` says for a key
/// with several. `R n` overrides the read quorum.
pub async fn get(node: &NodeContext, key: Bytes, r: Option<usize>, mode: ValueMode) -> Reply {
    match node.coordinator.get(&key, r).await {
        Ok(read) if is_collection(&read) => Reply::error(crate::crdt::OpError::WrongType.to_string()),
        Ok(read) => read_reply(node, &key, read, mode),
        Err(e) => coord_error(e),
    }
}

/// True for a key whose value is no Redis string (GET answers WRONGTYPE, MGET nil).
fn is_collection(read: &ReadResult) -> bool {
    read.kind.is_some_and(|k| k.redis_type() != "string")
}

/// MGET: one reply per key, in order, each exactly what GET would answer in the session's mode. The keys are read
/// concurrently (each its own quorum read: no snapshot across keys). A key that fails fails the whole command, so
/// a client never mistakes an unreachable key for a missing one.
pub async fn mget(node: &NodeContext, keys: Vec<Bytes>, mode: ValueMode) -> Reply {
    let reads = concurrently(keys.iter().map(|key| node.coordinator.get(key, None)).collect()).await;
    let mut replies = Vec::with_capacity(keys.len());
    for (key, read) in keys.iter().zip(reads) {
        match read {
            // As in Redis, a key of another type reads as missing in an MGET.
            Ok(read) if is_collection(&read) => replies.push(Reply::Nil),
            Ok(read) => replies.push(read_reply(node, key, read, mode)),
            Err(e) => return coord_error(e),
        }
    }
    Reply::Array(replies)
}

/// TYPE: the key's Redis type (`string` for strings and counters, `set`), `none` without a live value.
pub async fn key_type(node: &NodeContext, key: Bytes) -> Reply {
    match node.coordinator.get(&key, None).await {
        Ok(read) => Reply::Simple(Bytes::from_static(read.kind.map_or("none", |k| k.redis_type()).as_bytes())),
        Err(e) => coord_error(e),
    }
}

/// STRLEN: the length of the value a plain-mode GET would answer (0 when missing; a key with siblings answers as
/// `plain_siblings` says).
pub async fn strlen(node: &NodeContext, key: Bytes) -> Reply {
    match node.coordinator.get(&key, None).await {
        Ok(read) if is_collection(&read) => Reply::error(crate::crdt::OpError::WrongType.to_string()),
        Ok(read) => match read_reply(node, &key, read, ValueMode::Plain) {
            Reply::Bulk(value) => Reply::Integer(value.len() as i64),
            Reply::Nil => Reply::Integer(0),
            other => other,
        },
        Err(e) => coord_error(e),
    }
}

/// MEMORY USAGE key [SAMPLES n]: the bytes the key takes on each replica, estimated from a quorum read (storage
/// key, every version's value, dot and timestamp, the version vector); nil when the key has no live value.
pub async fn memory_usage(node: &NodeContext, key: &Bytes) -> Reply {
    // Per version: a dot (actor and counter) and a timestamp; per version-vector entry: actor, counter, time.
    const PER_VERSION: usize = 24;
    const PER_CLOCK_ENTRY: usize = 24;
    // Every row of the key (a collection kept as rows has one per element), each under its storage key.
    let rows = match node.coordinator.read_rows(key, crate::crdt::rows::RowSelect::All, None).await {
        Ok(rows) => rows,
        Err(e) => return coord_error(e),
    };
    if crate::crdt::rows::kind_of(&rows, crate::coordinator::now_ms()).is_none() {
        return Reply::Nil;
    }
    let bytes: usize = rows
        .rows()
        .iter()
        .map(|(row, state)| {
            let versions: usize =
                state.versions().iter().map(|v| v.value.as_ref().map_or(0, |x| x.len()) + PER_VERSION).sum();
            let clocks = (state.context().len() + state.cleared().len()) * PER_CLOCK_ENTRY;
            crate::storage::layout::row_key(key, row).len() + versions + clocks
        })
        .sum();
    Reply::Integer(bytes as i64)
}

/// The reply to a read of `key` in `mode`, counted as a keyspace hit or miss.
pub(super) fn read_reply(node: &NodeContext, key: &[u8], read: ReadResult, mode: ValueMode) -> Reply {
    let counter = if read.kind.is_none() { &node.stats.keyspace_misses } else { &node.stats.keyspace_hits };
    counter.fetch_add(1, Ordering::Relaxed);
    match mode {
        ValueMode::Versioned => Reply::Array(vec![
            Reply::Array(read.values.into_iter().map(Reply::Bulk).collect()),
            context_token(node, key, read.context, read.first_replier),
        ]),
        ValueMode::Plain => match (read.values.len(), node.config.plain_siblings) {
            (0, _) => Reply::Nil,
            (1, _) | (_, PlainSiblings::Newest) => read.newest.map_or(Reply::Nil, Reply::Bulk),
            (n, PlainSiblings::Error) => {
                metrics::counter!("dynamo_plain_sibling_errors_total").increment(1);
                Reply::error(format!(
                    "SIBLINGS key '{}' has {n} concurrent values: read them with CLIENT VALUES VERSIONED and GET, \
                     then SET their merge with the CONTEXT given",
                    printable(key, 64)
                ))
            }
        },
    }
}
