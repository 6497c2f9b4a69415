//! INCR, DECR, INCRBY, DECRBY (counters) and INCRBYFLOAT (refused): see [`crate::crdt::counter`] for how
//! concurrent increments add up.

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error};
use crate::crdt::{Op, OpReply};
use crate::resp::Reply;

/// INCR, DECR, INCRBY and DECRBY: the counter's value after the increment, as Redis answers. A missing key counts
/// from 0 and a string from its integer value.
pub async fn incr(node: &NodeContext, name: &str, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let by = match name {
        "incr" => 1,
        "decr" => -1,
        _ => match std::str::from_utf8(&args[2]).ok().and_then(|s| crate::crdt::counter::parse_integer(s).ok()) {
            Some(n) if name == "incrby" => n,
            Some(n) => match n.checked_neg() {
                Some(n) => n,
                None => return Reply::error("ERR decrement would overflow"),
            },
            None => return Reply::error("ERR value is not an integer or out of range"),
        },
    };
    match node.coordinator.apply(key.clone(), Op::Increment { by }, None).await {
        Ok(OpReply::Integer(total)) => Reply::Integer(total),
        Ok(other) => unreachable!("an increment answers an integer, not {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// INCRBYFLOAT: refused with the reason. A float counter cannot add concurrent increments exactly (the sum of
/// floats depends on their order, so replicas could disagree), and last-writer-wins would drop increments.
pub fn incrbyfloat() -> Reply {
    Reply::error(
        "ERR INCRBYFLOAT is not supported: counters are 64-bit integers, so that concurrent increments through \
         different nodes add up exactly; scale the value (count cents, not dollars) and use INCRBY",
    )
}
