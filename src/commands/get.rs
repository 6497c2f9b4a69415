//! GET key [R n] → [siblings, context].

use bytes::Bytes;

use super::{NodeContext, check_key, context_token, coord_error, parse_quorum, syntax_error};
use crate::resp::Reply;

/// GET: the live siblings (array of bulk strings, empty when missing or deleted) and the context token, always
/// given: for a missing key it covers nothing, so a write back with it supersedes nothing and a concurrent creation
/// stays a sibling. `R n` overrides the read quorum.
pub async fn get(node: &NodeContext, args: &[Bytes]) -> Reply {
    let key = &args[1];
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let r = match args.len() {
        2 => None,
        4 if args[2].eq_ignore_ascii_case(b"R") => match parse_quorum(&args[3]) {
            Ok(r) => Some(r),
            Err(reply) => return reply,
        },
        _ => return syntax_error(),
    };
    match node.coordinator.get(key, r).await {
        Ok(read) => {
            let counter = if read.values.is_empty() { &node.stats.keyspace_misses } else { &node.stats.keyspace_hits };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Reply::Array(vec![
                Reply::Array(read.values.into_iter().map(Reply::Bulk).collect()),
                context_token(node, key, read.context, read.first_replier),
            ])
        }
        Err(e) => coord_error(e),
    }
}
