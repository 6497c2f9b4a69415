//! EXISTS key [key ...].

use bytes::Bytes;

use super::get::concurrently;
use super::{NodeContext, check_key, coord_error};
use crate::resp::Reply;

/// EXISTS: how many of the keys (repeats counted, as in Redis) have a live value, each read concurrently with the
/// default R.
pub async fn exists(node: &NodeContext, args: &[Bytes]) -> Reply {
    for key in &args[1..] {
        if let Err(r) = check_key(node, key) {
            return r;
        }
    }
    let found = concurrently(args[1..].iter().map(|key| node.coordinator.exists(key)).collect()).await;
    let mut n = 0;
    for f in found {
        match f {
            Ok(live) => n += i64::from(live),
            Err(e) => return coord_error(e),
        }
    }
    Reply::Integer(n)
}
