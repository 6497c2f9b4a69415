//! Hashes: HSET, HMSET, HSETNX, HDEL, HINCRBY (typed writes, see [`crate::crdt::hash`]) and HGET, HMGET, HGETALL,
//! HEXISTS, HKEYS, HVALS, HSTRLEN (quorum reads of the merged hash), with Redis's replies. HLEN is a count
//! (`commands::card`).

use bytes::Bytes;

use super::parse::Parse;
use super::{NodeContext, integer_reply, read_collection};
use crate::coordinator::now_ms;
use crate::crdt::{Op, rows};
use crate::resp::Reply;
use crate::versioning::RowKind;

/// What a hash write of HSET, HMSET or HSETNX answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetAnswer {
    /// HSET: how many fields are new.
    Count,
    /// HMSET: OK.
    Ok,
    /// HSETNX: 1 when the one field was new (and set), 0 when it was there (and kept).
    OnlyNew,
}

impl SetAnswer {
    /// The answer of the command `name`.
    pub fn of(name: &str) -> Self {
        match name {
            "hmset" => SetAnswer::Ok,
            "hsetnx" => SetAnswer::OnlyNew,
            _ => SetAnswer::Count,
        }
    }
}

/// HSET key field value [field value ...], HMSET, HSETNX key field value.
pub async fn set(node: &NodeContext, key: Bytes, pairs: Vec<(Bytes, Bytes)>, answer: SetAnswer) -> Reply {
    let op = Op::HashSet { pairs, only_new: answer == SetAnswer::OnlyNew };
    match integer_reply(node.coordinator.apply(key, op, None).await) {
        Reply::Integer(_) if answer == SetAnswer::Ok => Reply::ok(),
        other => other,
    }
}

/// HDEL key field [field ...]: how many of the fields existed.
pub async fn del(node: &NodeContext, key: Bytes, fields: Vec<Bytes>) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::HashDel { fields }, None).await)
}

/// HINCRBY key field increment: the field's value after it.
pub async fn incrby(node: &NodeContext, key: Bytes, field: Bytes, by: i64) -> Reply {
    integer_reply(node.coordinator.apply(key, Op::HashIncr { field, by }, None).await)
}

/// A read of a hash, parsed.
#[derive(Debug)]
pub enum HashRead {
    /// HGET key field.
    Get(Bytes),
    /// HMGET key field [field ...].
    GetMany(Vec<Bytes>),
    /// HEXISTS key field.
    Exists(Bytes),
    /// HSTRLEN key field.
    StrLen(Bytes),
    /// HKEYS.
    Keys,
    /// HVALS.
    Values,
    /// HGETALL.
    All,
}

impl HashRead {
    /// The read command `name`'s arguments after the key.
    pub fn parse(name: &str, p: &mut Parse) -> Result<Self, Reply> {
        Ok(match name {
            "hget" => HashRead::Get(p.bytes()?),
            "hmget" => HashRead::GetMany(p.rest().to_vec()),
            "hexists" => HashRead::Exists(p.bytes()?),
            "hstrlen" => HashRead::StrLen(p.bytes()?),
            "hkeys" => HashRead::Keys,
            "hvals" => HashRead::Values,
            "hgetall" => HashRead::All,
            other => unreachable!("'{other}' is not a hash read"),
        })
    }

    /// Runs the read on the hash at `key`, after a quorum read.
    pub async fn apply(self, node: &NodeContext, key: Bytes) -> Reply {
        // Reads of named fields read those fields' rows; the others read every field.
        let asked = match &self {
            HashRead::Get(f) | HashRead::Exists(f) | HashRead::StrLen(f) => Some(std::slice::from_ref(f)),
            HashRead::GetMany(fs) => Some(fs.as_slice()),
            HashRead::Keys | HashRead::Values | HashRead::All => None,
        };
        let fields = match read_collection(node, &key, RowKind::Hash, asked).await {
            Ok(rows) => rows::fields(&rows, now_ms()),
            Err(reply) => return reply,
        };
        let value = |f: &Bytes| fields.binary_search_by(|(x, _)| x.cmp(f)).ok().map(|i| fields[i].1.clone());
        match self {
            HashRead::Get(f) => value(&f).map_or(Reply::Nil, Reply::Bulk),
            HashRead::GetMany(fs) => {
                Reply::Array(fs.iter().map(|f| value(f).map_or(Reply::Nil, Reply::Bulk)).collect())
            }
            HashRead::Exists(f) => Reply::Integer(i64::from(value(&f).is_some())),
            HashRead::StrLen(f) => Reply::Integer(value(&f).map_or(0, |v| v.len() as i64)),
            HashRead::Keys => Reply::Array(fields.into_iter().map(|(f, _)| Reply::Bulk(f)).collect()),
            HashRead::Values => Reply::Array(fields.into_iter().map(|(_, v)| Reply::Bulk(v)).collect()),
            HashRead::All => Reply::Map(fields.into_iter().map(|(f, v)| (Reply::Bulk(f), Reply::Bulk(v))).collect()),
        }
    }
}

/// HINCRBYFLOAT: refused, for the reason INCRBYFLOAT is.
pub fn incrbyfloat() -> Reply {
    Reply::error(
        "ERR HINCRBYFLOAT is not supported: hash counters are 64-bit integers, so that concurrent increments \
         through different nodes add up exactly; use HINCRBY",
    )
}
