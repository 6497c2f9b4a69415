//! EXISTS key [key ...].

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error};
use crate::resp::Reply;

/// EXISTS: how many of the keys (repeats counted, as in Redis) have a live value, each read with the default R.
pub async fn exists(node: &NodeContext, args: &[Bytes]) -> Reply {
    let mut n = 0;
    for key in &args[1..] {
        if let Err(r) = check_key(node, key) {
            return r;
        }
        match node.coordinator.exists(key).await {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => return coord_error(e),
        }
    }
    Reply::Integer(n)
}
