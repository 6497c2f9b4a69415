//! SET key value [CONTEXT token] [NX | XX] [GET] [EX s | PX ms | EXAT t | PXAT t | KEEPTTL] [W n], SETNX, GETSET,
//! GETDEL and MSET key value [key value ...].

use bytes::Bytes;

use super::expire::{SetExpiry, parse_set_option};
use super::get::concurrently;
use super::{NodeContext, check_key, coord_error, parse_context, parse_quorum, syntax_error, wrong_arity};
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

/// SET: writes a new version. With CONTEXT it supersedes exactly what the context covers; without, everything the
/// coordinating replica holds for the key. `W n` overrides the write quorum.
pub async fn set(node: &NodeContext, args: &[Bytes], mode: ValueMode) -> Reply {
    let (key, value) = (&args[1], &args[2]);
    if let Err(r) = check_key(node, key) {
        return r;
    }
    if let Err(r) = check_value(node, value) {
        return r;
    }
    let mut token = None;
    let mut w = None;
    let mut condition = None;
    let mut get = false;
    let mut expiry = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"GET" if !get => {
                get = true;
                i += 1;
            }
            b"NX" | b"XX" if condition.is_none() => {
                condition = Some(if opt.as_slice() == b"NX" { Condition::Absent } else { Condition::Present });
                i += 1;
            }
            b"CONTEXT" if i + 1 < args.len() && token.is_none() => {
                match parse_context(node, key, &args[i + 1]) {
                    Ok(t) => token = Some(t),
                    Err(r) => return r,
                }
                i += 2;
            }
            b"W" if i + 1 < args.len() && w.is_none() => {
                match parse_quorum(&args[i + 1]) {
                    Ok(n) => w = Some(n),
                    Err(r) => return r,
                }
                i += 2;
            }
            _ => match parse_set_option(args, i, &mut expiry) {
                Some(Ok(n)) => i += n,
                Some(Err(r)) => return r,
                None => return syntax_error(),
            },
        }
    }
    let expiry = expiry.unwrap_or_default();
    if get {
        if token.is_some() {
            return Reply::error("ERR SET GET takes no CONTEXT: it reads the key itself");
        }
        return read_then_write(node, key, Some(value), condition, expiry, w, mode).await;
    }
    if let Some(condition) = condition {
        if token.is_some() {
            return Reply::error("ERR SET NX and XX take no CONTEXT: they read the key themselves");
        }
        return match set_if(node, key, value, condition, expiry, w).await {
            Ok(true) => Reply::ok(),
            Ok(false) => Reply::Nil,
            Err(r) => r,
        };
    }
    let (context, preferred) = match token {
        Some(t) => (WriteContext::Covering(t.clock), t.coordinator),
        None => (WriteContext::Blind, None),
    };
    let expires_at_ms = match expiry {
        // KEEPTTL: the deadline the key has, by a quorum read.
        SetExpiry::Keep => match node.coordinator.get(key, None).await {
            Ok(read) => read.expires_at_ms,
            Err(e) => return coord_error(e),
        },
        other => other.resolve(None),
    };
    let put =
        node.coordinator.put_expiring(key.clone(), value.clone(), context, expires_at_ms, w, preferred.as_deref());
    match put.await {
        Ok(_) => Reply::ok(),
        Err(e) => coord_error(e),
    }
}

/// SETNX: SET NX answering 1 when it wrote and 0 when the key had a value.
pub async fn setnx(node: &NodeContext, args: &[Bytes]) -> Reply {
    let (key, value) = (&args[1], &args[2]);
    if let Err(r) = check_key(node, key).and_then(|()| check_value(node, value)) {
        return r;
    }
    match set_if(node, key, value, Condition::Absent, SetExpiry::Never, None).await {
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
pub async fn getset(node: &NodeContext, args: &[Bytes], mode: ValueMode) -> Reply {
    let (key, value) = (&args[1], &args[2]);
    if let Err(r) = check_key(node, key).and_then(|()| check_value(node, value)) {
        return r;
    }
    read_then_write(node, key, Some(value), None, SetExpiry::Never, None, mode).await
}

/// GETDEL key: the value, and a delete of exactly what was read.
pub async fn getdel(node: &NodeContext, args: &[Bytes], mode: ValueMode) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    read_then_write(node, &args[1], None, None, SetExpiry::Never, None, mode).await
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
pub async fn mset(node: &NodeContext, args: &[Bytes]) -> Reply {
    if args.len().is_multiple_of(2) {
        return wrong_arity("mset");
    }
    let pairs: Vec<(&Bytes, &Bytes)> = args[1..].chunks_exact(2).map(|p| (&p[0], &p[1])).collect();
    for (key, value) in &pairs {
        if let Err(r) = check_key(node, key).and_then(|()| check_value(node, value)) {
            return r;
        }
    }
    let outcomes = concurrently(
        pairs
            .iter()
            .map(|(key, value)| {
                node.coordinator.put((*key).clone(), Some((*value).clone()), WriteContext::Blind, None, None)
            })
            .collect(),
    )
    .await;
    let written = outcomes.iter().filter(|o| o.is_ok()).count();
    match outcomes.into_iter().find_map(Result::err) {
        None => Reply::ok(),
        Some(e) => {
            let Reply::Error(text) = coord_error(e) else { unreachable!("coord_error answers an error") };
            Reply::error(format!(
                "{text} (MSET wrote {written} of {} keys; a failed key may still be written on some replicas)",
                pairs.len()
            ))
        }
    }
}

/// Checks a value against the configured limit.
fn check_value(node: &NodeContext, value: &[u8]) -> Result<(), Reply> {
    let max = node.config.limits.max_value_bytes;
    if value.len() > max {
        return Err(Reply::error(format!("ERR value is {} bytes, larger than max_value_bytes ({max})", value.len())));
    }
    Ok(())
}
