//! DEL key [key ...] (blind) and DELCTX key context (versioned).

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error, parse_context};
use crate::coordinator::WriteContext;
use crate::resp::Reply;

/// DEL: for each key, a tombstone superseding every version this node holds. Returns how many keys had a live value.
pub async fn del(node: &NodeContext, args: &[Bytes]) -> Reply {
    for key in &args[1..] {
        if let Err(r) = check_key(node, key) {
            return r;
        }
    }
    let mut deleted = 0;
    for key in &args[1..] {
        match node.coordinator.put(key, None, WriteContext::Blind).await {
            Ok(out) => deleted += i64::from(out.superseded_live > 0),
            Err(e) => return coord_error(e),
        }
    }
    Reply::Integer(deleted)
}

/// DELCTX: a tombstone superseding exactly what the context covers. Returns 1 if it superseded a live value here.
/// Values written concurrently (not covered) survive as siblings of the tombstone.
pub async fn delctx(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    let context = match parse_context(node, &args[1], &args[2]) {
        Ok(vv) => vv,
        Err(r) => return r,
    };
    match node
        .coordinator
        .put(&args[1], None, WriteContext::Covering(context))
        .await
    {
        Ok(out) => Reply::Integer(i64::from(out.superseded_live > 0)),
        Err(e) => coord_error(e),
    }
}
