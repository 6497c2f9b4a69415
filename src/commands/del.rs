//! DEL key [key ...] (UNLINK the same) and DELCTX key context [W n].

use bytes::Bytes;

use super::get::concurrently;
use super::{NodeContext, coord_error, parse_context};
use crate::coordinator::{CoordError, WriteContext};
use crate::resp::Reply;

/// DEL (and UNLINK): for each key, a read (default R) and then a tombstone superseding exactly what that read saw,
/// so a delete through any node removes the value as in Redis when nothing fails. Values written concurrently
/// survive as siblings. The keys are deleted concurrently, each on its own (no atomicity across keys); returns how
/// many had a live value, or the first key's error if any failed.
pub async fn del(node: &NodeContext, keys: Vec<Bytes>) -> Reply {
    let outcomes = concurrently(keys.iter().map(|key| del_one(node, key)).collect()).await;
    let mut deleted = 0;
    for outcome in outcomes {
        match outcome {
            Ok(had_value) => deleted += i64::from(had_value),
            Err(e) => return coord_error(e),
        }
    }
    Reply::Integer(deleted)
}

/// Deletes one key as DEL does; true when it had a live value.
async fn del_one(node: &NodeContext, key: &Bytes) -> Result<bool, CoordError> {
    let read = node.coordinator.get(key, None).await?;
    if read.kind.is_none() {
        return Ok(false);
    }
    node.coordinator
        .put(key.clone(), None, WriteContext::after_read(read.kind, read.context), None, read.first_replier.as_deref())
        .await?;
    Ok(true)
}

/// DELCTX: a tombstone superseding exactly what the context covers. Returns 1 if it superseded a live value on its
/// coordinator. Values written concurrently (not covered) survive as siblings of the tombstone.
pub async fn delctx(node: &NodeContext, key: Bytes, context: Bytes, w: Option<usize>) -> Reply {
    let token = match parse_context(node, &key, &context) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match node.coordinator.put(key, None, WriteContext::Covering(token.clock), w, token.coordinator.as_deref()).await {
        Ok(out) => Reply::Integer(i64::from(out.superseded_live > 0)),
        Err(e) => coord_error(e),
    }
}
