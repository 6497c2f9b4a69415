//! EXISTS key [key ...].

use bytes::Bytes;

use super::get::concurrently;
use super::{NodeContext, coord_error};
use crate::resp::Reply;

/// EXISTS: how many of the keys (repeats counted, as in Redis) have a live value, each read concurrently with the
/// default R.
pub async fn exists(node: &NodeContext, keys: Vec<Bytes>) -> Reply {
    let found = concurrently(keys.iter().map(|key| node.coordinator.exists(key)).collect()).await;
    let mut n = 0;
    for f in found {
        match f {
            Ok(live) => n += i64::from(live),
            Err(e) => return coord_error(e),
        }
    }
    Reply::Integer(n)
}
