//! SET key value [CONTEXT token] [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL] [W n], SETNX, GETSET,
//! GETDEL and MSET key value [key value ...].

use bytes::Bytes;

use super::expire::{SetExpiry, parse_set_option};
use super::get::concurrently;
use super::parse::Parse;
use super::{NodeContext, coord_error, parse_context, parse_quorum};
use crate::config::ValueMode;
use crate::coordinator::WriteContext;
use crate::resp::Reply;

/// SET's condition on what a quorum read finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Condition {
    /// Write only when the read found no live value (NX, SETNX).
    Absent,
    /// Write only when the read found one (XX).
    Present,
}

/// SET's options, parsed.
#[derive(Debug)]
pub struct Set {
    key: Bytes,
    value: Bytes,
    /// CONTEXT, as sent (decoded by `apply`, which holds the key to check it against).
    context: Option<Bytes>,
    w: Option<usize>,
    condition: Option<Condition>,
    get: bool,
    expiry: SetExpiry,
}

impl Set {
    /// SET key value [CONTEXT token] [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL] [W n], the options
    /// in any order, each at most once.
    pub fn parse(p: &mut Parse) -> Result<Self, Reply> {
        let (key, value) = (p.key()?, p.value()?);
        let (mut context, mut w, mut condition, mut get, mut expiry) = (None, None, None, false, None);
        while let Some(option) = p.peek() {
            let upper = option.to_ascii_uppercase();
            let has_value = p.remaining() >= 2;
            match upper.as_slice() {
                b"GET" if !get => get = true,
                b"NX" if condition.is_none() => condition = Some(Condition::Absent),
                b"XX" if condition.is_none() => condition = Some(Condition::Present),
                b"CONTEXT" if has_value && context.is_none() => {
                    p.next()?;
                    context = Some(p.bytes()?);
                    continue;
                }
                b"W" if has_value && w.is_none() => {
                    p.next()?;
                    w = Some(parse_quorum(p.next()?)?);
                    continue;
                }
                _ => {
                    parse_set_option(p, &mut expiry)?;
                    continue;
                }
            }
            p.next()?;
        }
        if get && context.is_some() {
            return Err(Reply::error("ERR SET GET takes no CONTEXT: it reads the key itself"));
        }
        if condition.is_some() && context.is_some() && !get {
            return Err(Reply::error("ERR SET NX and XX take no CONTEXT: they read the key themselves"));
        }
        Ok(Set { key, value, context, w, condition, get, expiry: expiry.unwrap_or_default() })
    }

    /// SET: writes a new version. With CONTEXT it supersedes exactly what the context covers; without, everything
    /// the coordinating replica holds for the key. `W n` overrides the write quorum.
    pub async fn apply(self, node: &NodeContext, mode: ValueMode) -> Reply {
        let Set { key, value, context, w, condition, get, expiry } = self;
        if get {
            return read_then_write(node, &key, Some(&value), condition, expiry, w, mode).await;
        }
        if let Some(condition) = condition {
            return match set_if(node, &key, &value, condition, expiry, w).await {
                Ok(true) => Reply::ok(),
                Ok(false) => Reply::Nil,
                Err(r) => r,
            };
        }
        let (context, preferred) = match context.map(|c| parse_context(node, &key, &c)).transpose() {
            Ok(Some(t)) => (WriteContext::Covering(t.clock), t.coordinator),
            Ok(None) => (WriteContext::Blind, None),
            Err(r) => return r,
        };
        let expires_at_ms = match expiry {
            // KEEPTTL: the deadline the key has, by a quorum read.
            SetExpiry::Keep => match node.coordinator.get(&key, None).await {
                Ok(read) => read.expires_at_ms,
                Err(e) => return coord_error(e),
            },
            other => other.resolve(None),
        };
        match node.coordinator.put_expiring(key, value, context, expires_at_ms, w, preferred.as_deref()).await {
            Ok(_) => Reply::ok(),
            Err(e) => coord_error(e),
        }
    }
}

/// SETNX: SET NX answering 1 when it wrote and 0 when the key had a value.
pub async fn setnx(node: &NodeContext, key: Bytes, value: Bytes) -> Reply {
    match set_if(node, &key, &value, Condition::Absent, SetExpiry::Never, None).await {
        Ok(wrote) => Reply::Integer(i64::from(wrote)),
        Err(r) => r,
    }
}

/// SET NX / XX: a quorum read (default R), then, if the condition holds on what it found, a write superseding
/// exactly that. Not a lock: two clients can both find a key absent and both write, and then both values stay,
/// as siblings (a concurrent creation is never overwritten). True when it wrote.
async fn set_if(
    node: &NodeContext,
    key: &Bytes,
    value: &Bytes,
    condition: Condition,
    expiry: SetExpiry,
    w: Option<usize>,
) -> Result<bool, Reply> {
    let read = node.coordinator.get(key, None).await.map_err(coord_error)?;
    let holds = match condition {
        Condition::Absent => read.kind.is_none(),
        Condition::Present => read.kind.is_some(),
    };
    if !holds {
        return Ok(false);
    }
    let at = expiry.resolve(read.expires_at_ms);
    let context = WriteContext::after_read(read.kind, read.context);
    node.coordinator
        .put_expiring(key.clone(), value.clone(), context, at, w, read.first_replier.as_deref())
        .await
        .map_err(coord_error)?;
    Ok(true)
}

/// GETSET key value: SET key value GET.
pub async fn getset(node: &NodeContext, key: Bytes, value: Bytes, mode: ValueMode) -> Reply {
    read_then_write(node, &key, Some(&value), None, SetExpiry::Never, None, mode).await
}

/// GETDEL key: the value, and a delete of exactly what was read.
pub async fn getdel(node: &NodeContext, key: Bytes, mode: ValueMode) -> Reply {
    read_then_write(node, &key, None, None, SetExpiry::Never, None, mode).await
}

/// SET ... GET, GETSET and GETDEL: a quorum read (default R), then, when `condition` holds on what it found, a
/// write of `value` (`None`: a delete) that supersedes exactly that. Answers what the read found, as GET answers
/// in `mode`. Not atomic: a value written concurrently is not returned and survives as a sibling of the write.
async fn read_then_write(
    node: &NodeContext,
    key: &Bytes,
    value: Option<&Bytes>,
    condition: Option<Condition>,
    expiry: SetExpiry,
    w: Option<usize>,
    mode: ValueMode,
) -> Reply {
    let read = match node.coordinator.get(key, None).await {
        Ok(read) => read,
        Err(e) => return coord_error(e),
    };
    if read.kind.is_some_and(|k| k.redis_type() != "string") {
        return Reply::error(crate::crdt::OpError::WrongType.to_string());
    }
    let old = super::get::read_reply(node, key, read.clone(), mode);
    if old.is_error() {
        // Siblings the plain mode will not pick from: nothing is written.
        return old;
    }
    let holds = match condition {
        None => true,
        Some(Condition::Absent) => read.kind.is_none(),
        Some(Condition::Present) => read.kind.is_some(),
    };
    if holds && (value.is_some() || read.kind.is_some()) {
        let context = WriteContext::after_read(read.kind, read.context);
        let preferred = read.first_replier.as_deref();
        let written = match value {
            Some(v) => {
                let at = expiry.resolve(read.expires_at_ms);
                node.coordinator.put_expiring(key.clone(), v.clone(), context, at, w, preferred).await
            }
            None => node.coordinator.put(key.clone(), None, context, w, preferred).await,
        };
        if let Err(e) = written {
            return coord_error(e);
        }
    }
    old
}

/// MSET: each pair is its own blind write (as SET without CONTEXT), run concurrently: there is no atomicity across
/// keys, and a failure leaves the other keys written. OK when every write reached its quorum; otherwise an error
/// saying how many did.
pub async fn mset(node: &NodeContext, pairs: Vec<(Bytes, Bytes)>) -> Reply {
    let count = pairs.len();
    let outcomes = concurrently(
        pairs
            .into_iter()
            .map(|(key, value)| node.coordinator.put(key, Some(value), WriteContext::Blind, None, None))
            .collect(),
    )
    .await;
    let written = outcomes.iter().filter(|o| o.is_ok()).count();
    match outcomes.into_iter().find_map(Result::err) {
        None => Reply::ok(),
        Some(e) => {
            let Reply::Error(text) = coord_error(e) else { unreachable!("coord_error answers an error") };
            Reply::error(format!(
                "{text} (MSET wrote {written} of {count} keys; a failed key may still be written on some replicas)"
            ))
        }
    }
}
