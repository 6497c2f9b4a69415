//! GET key → [siblings, context].

use bytes::Bytes;

use super::{NodeContext, check_key, context_token, coord_error};
use crate::resp::Reply;

/// GET: the live siblings (array of bulk strings, empty when missing or deleted) and the context token (nil only
/// when the key was never written on this node).
pub fn get(node: &NodeContext, args: &[Bytes]) -> Reply {
    if let Err(r) = check_key(node, &args[1]) {
        return r;
    }
    match node.coordinator.get(&args[1]) {
        Ok(read) => Reply::Array(vec![
            Reply::Array(read.values.into_iter().map(Reply::Bulk).collect()),
            read.context
                .map_or(Reply::Nil, |c| context_token(node, &args[1], &c)),
        ]),
        Err(e) => coord_error(e),
    }
}
