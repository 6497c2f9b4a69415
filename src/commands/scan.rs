//! SCAN cursor [MATCH pattern] [COUNT n] [TYPE type], KEYS pattern and RANDOMKEY: the whole cluster's keyspace,
//! through any node (see [`crate::coordinator::scan`] for the cursor and the guarantee).

use bytes::Bytes;

use super::{NodeContext, coord_error, parse_int, pattern, printable, syntax_error};
use crate::resp::Reply;

/// Key types SCAN's TYPE knows (Redis's names; counters are strings).
const TYPES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];

/// COUNT when none is given, as in Redis.
const DEFAULT_COUNT: usize = 10;

/// SCAN: one page of keys and the next cursor (0 when done). A cursor is a position on the ring, so any node
/// continues a scan another began, and a node's failure does not end it.
pub async fn scan(node: &NodeContext, args: &[Bytes]) -> Reply {
    let cursor = match std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()) {
        Some(c) => c,
        None => return Reply::error("ERR invalid cursor"),
    };
    let (mut pattern, mut count, mut only_type) = (None, DEFAULT_COUNT, None);
    let mut i = 2;
    while i < args.len() {
        let Some(value) = args.get(i + 1) else { return syntax_error() };
        match args[i].to_ascii_uppercase().as_slice() {
            b"MATCH" => pattern = Some(value.clone()),
            b"COUNT" => match parse_int(value) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => return syntax_error(),
                Err(r) => return r,
            },
            b"TYPE" => {
                let name = value.to_ascii_lowercase();
                match TYPES.iter().find(|t| t.as_bytes() == name.as_slice()) {
                    Some(t) => only_type = Some(*t),
                    None => return Reply::error(format!("ERR unknown type name '{}'", printable(value, 32))),
                }
            }
            _ => return syntax_error(),
        }
        i += 2;
    }
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
pub async fn keys(node: &NodeContext, args: &[Bytes]) -> Reply {
    let pattern = &args[1];
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
