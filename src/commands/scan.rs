//! SCAN cursor [MATCH pattern] [COUNT n] [TYPE type], KEYS pattern and RANDOMKEY: the whole cluster's keyspace,
//! through any node (see [`crate::coordinator::scan`] for the cursor and the guarantee).

use super::session::Scan;
use super::{NodeContext, coord_error, pattern};
use crate::resp::Reply;

/// SCAN: one page of keys and the next cursor (0 when done). A cursor is a position on the ring, so any node
/// continues a scan another began, and a node's failure does not end it.
pub async fn scan(node: &NodeContext, scan: Scan) -> Reply {
    let Scan { cursor, pattern, count, only_type } = scan;
    let keep = |k: &[u8], kind: crate::crdt::Kind| {
        only_type.is_none_or(|t| kind.redis_type() == t) && pattern.as_ref().is_none_or(|p| pattern::matches(p, k))
    };
    match node.coordinator.scan(cursor, count, keep).await {
        Ok(page) => Reply::Array(vec![
            Reply::bulk(page.next.to_string()),
            Reply::Array(page.keys.into_iter().map(Reply::Bulk).collect()),
        ]),
        Err(e) => coord_error(e),
    }
}

/// KEYS: every key matching the pattern, by a full scan of the cluster (as costly as in Redis, and more: use SCAN
/// on a large keyspace). A key may appear twice if it was rewritten during the scan; it is listed once here.
pub async fn keys(node: &NodeContext, pattern: &[u8]) -> Reply {
    let mut found = std::collections::BTreeSet::new();
    let mut cursor = 0;
    loop {
        match node
            .coordinator
            .scan(cursor, crate::coordinator::scan::MAX_COUNT, |k, _| pattern::matches(pattern, k))
            .await
        {
            Ok(page) => {
                found.extend(page.keys);
                if page.next == 0 {
                    break;
                }
                cursor = page.next;
            }
            Err(e) => return coord_error(e),
        }
    }
    Reply::Array(found.into_iter().map(Reply::Bulk).collect())
}

/// RANDOMKEY: the first live key from a random cursor on (wrapping around once), or nil when there is none.
pub async fn randomkey(node: &NodeContext) -> Reply {
    let mut bytes = [0u8; 8];
    if crate::sys::fill_random(&mut bytes).is_err() {
        return Reply::error("ERR no randomness available");
    }
    let start = u64::from_le_bytes(bytes);
    let mut cursor = start;
    let mut wrapped = false;
    loop {
        let page = match node.coordinator.scan(cursor, 1, |_, _| true).await {
            Ok(page) => page,
            Err(e) => return coord_error(e),
        };
        if let Some(key) = page.keys.into_iter().next() {
            return Reply::Bulk(key);
        }
        if page.next == 0 {
            if wrapped || start == 0 {
                return Reply::Nil;
            }
            wrapped = true;
        }
        cursor = page.next;
        if wrapped && cursor >= start {
            return Reply::Nil;
        }
    }
}
