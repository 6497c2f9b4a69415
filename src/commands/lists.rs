//! Lists: LPUSH, RPUSH, LPOP, RPOP, LREM, LTRIM (typed writes, see [`crate::crdt::rows`]) and LRANGE, LINDEX
//! (quorum reads of the merged list), with Redis's replies. LLEN is a count (`commands::card`).

use bytes::Bytes;

use super::{
    NodeContext, check_key, check_key_and_values, check_row_kind, coord_error, integer_reply, parse_int, pop_count,
    read_collection,
};
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
            check_key(node, key)?;
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
pub async fn push(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key_and_values(node, key, &args[2..]) {
        return r;
    }
    let op = Op::ListPush { head: name == "lpush", values: args[2..].to_vec() };
    integer_reply(node.coordinator.apply(key.clone(), op, None).await)
}

/// LPOP and RPOP key [count]: one element or nil; with a count an array (nil when the list is missing).
pub async fn pop(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let count = match pop_count(args) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if count == Some(0) {
        // Nothing to pop: as Redis, an empty array for a list, nil for no key (and WRONGTYPE for another kind).
        return match read_items(node, key, Some((true, 1))).await {
            Ok(items) if !items.is_empty() => Reply::Array(Vec::new()),
            Ok(_) => Reply::Nil,
            Err(reply) => reply,
        };
    }
    let op = Op::ListPop { head: name == "lpop", count: count.unwrap_or(1) };
    match node.coordinator.apply(key.clone(), op, None).await {
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
pub async fn lrem(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let count = match parse_int(&args[2]) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let op = Op::ListRemove { count, value: args[3].clone() };
    integer_reply(node.coordinator.apply(args[1].clone(), op, None).await)
}

/// LTRIM key start stop: OK.
pub async fn ltrim(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let (start, stop) = match (parse_int(&args[2]), parse_int(&args[3])) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match integer_reply(node.coordinator.apply(args[1].clone(), Op::ListTrim { start, stop }, None).await) {
        Reply::Integer(_) => Reply::ok(),
        other => other,
    }
}

/// LRANGE, LLEN and LINDEX, after a quorum read.
pub async fn read(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let ints: Result<Vec<i64>, Reply> = args[2..].iter().map(|a| parse_int(a)).collect();
    let ints = match ints {
        Ok(i) => i,
        Err(r) => return r,
    };
    // Indexes counted from one end read that end only: LRANGE 0 99 the first hundred items, LINDEX -1 the last.
    let end = match (name, ints.as_slice()) {
        ("lrange", &[start, stop]) if start >= 0 && stop >= 0 => Some((true, stop.saturating_add(1))),
        ("lrange", &[start, stop]) if start < 0 && stop < 0 => Some((false, start.saturating_neg())),
        ("lindex", &[i]) if i >= 0 => Some((true, i.saturating_add(1))),
        ("lindex", &[i]) => Some((false, i.saturating_neg())),
        _ => None,
    };
    let values = match read_items(node, &args[1], end).await {
        Ok(v) => v,
        Err(reply) => return reply,
    };
    match name {
        "lrange" => {
            let range = list::index_range(ints[0], ints[1], values.len());
            Reply::Array(values[range].iter().cloned().map(Reply::Bulk).collect())
        }
        "lindex" => {
            let i = if ints[0] < 0 { values.len() as i64 + ints[0] } else { ints[0] };
            usize::try_from(i).ok().and_then(|i| values.get(i)).cloned().map_or(Reply::Nil, Reply::Bulk)
        }
        other => unreachable!("'{other}' is not a list read"),
    }
}
