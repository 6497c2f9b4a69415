//! Lists: LPUSH, RPUSH, LPOP, RPOP, LREM, LTRIM (typed writes, see [`crate::crdt::rows`]) and LRANGE, LINDEX
//! (quorum reads of the merged list), with Redis's replies. LLEN is a count (`commands::card`).

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, check_row_kind, coord_error, integer_reply, read_collection};
use crate::coordinator::now_ms;
use crate::crdt::{Op, OpReply, list, rows};
use crate::resp::Reply;
use crate::versioning::RowKind;

/// The most items a read takes from one end of a list before it reads the whole list instead.
const MAX_END_READ: i64 = 100_000;

/// The items of the list at `key` after a quorum read, in order: of one end (`Some((head, count))`: up to `count`
/// items from the head or the tail), or the whole list; or the reply to give instead (WRONGTYPE, a failed read).
async fn read_items(node: &NodeContext, key: &Bytes, end: Option<(bool, i64)>) -> Result<Vec<Bytes>, Reply> {
    let rows = match end {
        Some((head, count)) if (1..=MAX_END_READ).contains(&count) => {
            let rows = node.coordinator.read_list_end(key, head, count as u32, None).await.map_err(coord_error)?;
            check_row_kind(rows.key_row(), RowKind::List)?;
            rows
        }
        _ => read_collection(node, key, RowKind::List, None).await?,
    };
    let mut items: Vec<Bytes> = rows::items(&rows, now_ms()).into_iter().map(|(_, v)| v).collect();
    match end {
        // The end read holds the first `count` items, or the last `count` (or the whole list, when shorter).
        Some((true, count)) => items.truncate(count.max(0) as usize),
        Some((false, count)) => {
            let keep = items.len().min(count.max(0) as usize);
            items.drain(..items.len() - keep);
        }
        None => {}
    }
    Ok(items)
}

/// LPUSH and RPUSH: the list's length after the push.
pub async fn push(node: &NodeContext, key: Bytes, head: bool, values: Vec<Bytes>) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::ListPush { head, values }, None).await)
}

/// LPOP and RPOP key [count]: one element or nil; with a count an array (nil when the list is missing).
pub async fn pop(node: &NodeContext, key: Bytes, head: bool, count: Option<usize>) -> Reply {
    if count == Some(0) {
        // Nothing to pop: as Redis, an empty array for a list, nil for no key (and WRONGTYPE for another kind).
        return match read_items(node, &key, Some((true, 1))).await {
            Ok(items) if !items.is_empty() => Reply::Array(Vec::new()),
            Ok(_) => Reply::Nil,
            Err(reply) => reply,
        };
    }
    let op = Op::ListPop { head, count: count.unwrap_or(1) };
    match node.coordinator.apply(key, op, None).await {
        Ok(OpReply::Members(items)) => match count {
            None => items.into_iter().next().map_or(Reply::Nil, Reply::Bulk),
            Some(_) if items.is_empty() => Reply::Nil,
            Some(_) => Reply::Array(items.into_iter().map(Reply::Bulk).collect()),
        },
        Ok(other) => unreachable!("a pop answers items, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// LREM key count element: how many were removed.
pub async fn lrem(node: &NodeContext, key: Bytes, count: i64, value: Bytes) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::ListRemove { count, value }, None).await)
}

/// LTRIM key start stop: OK.
pub async fn ltrim(node: &NodeContext, key: Bytes, start: i64, stop: i64) -> Reply {
    match integer_reply(node.coordinator.apply(key, Op::ListTrim { start, stop }, None).await) {
        Reply::Integer(_) => Reply::ok(),
        other => other,
    }
}

/// A read of a list, parsed.
#[derive(Debug)]
pub enum ListRead {
    /// LRANGE key start stop.
    Range(i64, i64),
    /// LINDEX key index.
    Index(i64),
}

impl ListRead {
    /// The read command `name`'s arguments after the key.
    pub fn parse(name: &str, p: &mut Parse) -> Result<Self, Reply> {
        Ok(match name {
            "lrange" => ListRead::Range(p.int()?, p.int()?),
            "lindex" => ListRead::Index(p.int()?),
            other => unreachable!("'{other}' is not a list read"),
        })
    }

    /// Runs the read on the list at `key`, after a quorum read.
    pub async fn apply(self, node: &NodeContext, key: Bytes) -> Reply {
        // Indexes counted from one end read that end only: LRANGE 0 99 the first hundred items, LINDEX -1 the last.
        let end = match self {
            ListRead::Range(start, stop) if start >= 0 && stop >= 0 => Some((true, stop.saturating_add(1))),
            ListRead::Range(start, stop) if start < 0 && stop < 0 => Some((false, start.saturating_neg())),
            ListRead::Range(..) => None,
            ListRead::Index(i) if i >= 0 => Some((true, i.saturating_add(1))),
            ListRead::Index(i) => Some((false, i.saturating_neg())),
        };
        let values = match read_items(node, &key, end).await {
            Ok(v) => v,
            Err(reply) => return reply,
        };
        match self {
            ListRead::Range(start, stop) => {
                let range = list::index_range(start, stop, values.len());
                Reply::Array(values[range].iter().cloned().map(Reply::Bulk).collect())
            }
            ListRead::Index(i) => {
                let i = if i < 0 { values.len() as i64 + i } else { i };
                usize::try_from(i).ok().and_then(|i| values.get(i)).cloned().map_or(Reply::Nil, Reply::Bulk)
            }
        }
    }
}
