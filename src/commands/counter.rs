//! INCR, DECR, INCRBY, DECRBY (counters) and INCRBYFLOAT (refused): see [`crate::crdt::counter`] for how
//! concurrent increments add up.

use bytes::Bytes;

use super::{NodeContext, coord_error};
use crate::crdt::{Op, OpReply};
use crate::resp::Reply;

/// INCR, DECR, INCRBY and DECRBY: the counter's value after the increment, as Redis answers. A missing key counts
/// from 0 and a string from its integer value.
pub async fn incr(node: &NodeContext, key: Bytes, by: i64) -> Reply {
    match node.coordinator.apply(key, Op::Increment { by }, None).await {
        Ok(OpReply::Integer(total)) => Reply::Integer(total),
        Ok(other) => unreachable!("an increment answers an integer, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// An increment argument (INCRBY, DECRBY, HINCRBY), as Redis reads it and words its refusal.
pub fn amount(arg: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| crate::crdt::counter::parse_integer(s).ok())
        .ok_or_else(|| Reply::error("ERR value is not an integer or out of range"))
}

/// INCRBYFLOAT: refused with the reason. A float counter cannot add concurrent increments exactly (the sum of
/// floats depends on their order, so replicas could disagree), and last-writer-wins would drop increments.
pub fn incrbyfloat() -> Reply {
    Reply::error(
        "ERR INCRBYFLOAT is not supported: counters are 64-bit integers, so that concurrent increments through \
         different nodes add up exactly; scale the value (count cents, not dollars) and use INCRBY",
    )
}
