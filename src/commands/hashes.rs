//! Hashes: HSET, HMSET, HSETNX, HDEL, HINCRBY (typed writes, see [`crate::crdt::hash`]) and HGET, HMGET, HGETALL,
//! HEXISTS, HKEYS, HVALS, HSTRLEN (quorum reads of the merged hash), with Redis's replies. HLEN is a count
//! (`commands::card`).

use bytes::Bytes;

use super::{NodeContext, check_key, check_key_and_values, integer_reply, read_collection, wrong_arity};
use crate::coordinator::now_ms;
use crate::crdt::{Op, rows};
use crate::resp::Reply;
use crate::versioning::RowKind;

/// HSET key field value [field value ...] (how many fields are new), HMSET (OK), HSETNX key field value (1 or 0).
pub async fn set(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if !args.len().is_multiple_of(2) || (name == "hsetnx" && args.len() != 4) {
        return wrong_arity(name);
    }
    if let Err(r) = check_key_and_values(node, key, &args[2..]) {
        return r;
    }
    let pairs = args[2..].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    let op = Op::HashSet { pairs, only_new: name == "hsetnx" };
    match integer_reply(node.coordinator.apply(key.clone(), op, None).await) {
        Reply::Integer(_) if name == "hmset" => Reply::ok(),
        other => other,
    }
}

/// HDEL key field [field ...]: how many of the fields existed.
pub async fn del(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let op = Op::HashDel { fields: args[2..].to_vec() };
    integer_reply(node.coordinator.apply(args[1].clone(), op, None).await)
}

/// HINCRBY key field increment: the field's value after it.
pub async fn incrby(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let by = match std::str::from_utf8(&args[3]).ok().and_then(|s| crate::crdt::counter::parse_integer(s).ok()) {
        Some(n) => n,
        None => return Reply::error("ERR value is not an integer or out of range"),
    };
    let op = Op::HashIncr { field: args[2].clone(), by };
    integer_reply(node.coordinator.apply(args[1].clone(), op, None).await)
}

/// HGET, HMGET, HGETALL, HLEN, HEXISTS, HKEYS, HVALS and HSTRLEN, after a quorum read.
pub async fn read(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    // Reads of named fields read those fields' rows; the others read every field.
    let asked = matches!(name, "hget" | "hmget" | "hexists" | "hstrlen").then(|| &args[2..]);
    let fields = match read_collection(node, &args[1], RowKind::Hash, asked).await {
        Ok(rows) => rows::fields(&rows, now_ms()),
        Err(reply) => return reply,
    };
    let value = |f: &Bytes| fields.binary_search_by(|(x, _)| x.cmp(f)).ok().map(|i| fields[i].1.clone());
    match name {
        "hget" => value(&args[2]).map_or(Reply::Nil, Reply::Bulk),
        "hmget" => Reply::Array(args[2..].iter().map(|f| value(f).map_or(Reply::Nil, Reply::Bulk)).collect()),
        "hexists" => Reply::Integer(i64::from(value(&args[2]).is_some())),
        "hstrlen" => Reply::Integer(value(&args[2]).map_or(0, |v| v.len() as i64)),
        "hkeys" => Reply::Array(fields.into_iter().map(|(f, _)| Reply::Bulk(f)).collect()),
        "hvals" => Reply::Array(fields.into_iter().map(|(_, v)| Reply::Bulk(v)).collect()),
        "hgetall" => Reply::Map(fields.into_iter().map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v))).collect()),
        other => unreachable!("'{other}' is not a hash read"),
    }
}

/// HINCRBYFLOAT: refused, for the reason INCRBYFLOAT is.
pub fn incrbyfloat() -> Reply {
    Reply::error(
        "ERR HINCRBYFLOAT is not supported: hash counters are 64-bit integers, so that concurrent increments \
         through different nodes add up exactly; use HINCRBY",
    )
}
