//! SET key value [CONTEXT token].

use bytes::Bytes;

use super::{NodeContext, check_key, coord_error, parse_context, printable, syntax_error};
use crate::coordinator::WriteContext;
use crate::resp::Reply;

/// Redis SET options we recognise but do not offer, with the reason given to the client.
const UNSUPPORTED: &[&str] = &["NX", "XX", "GET", "EX", "PX", "EXAT", "PXAT", "KEEPTTL"];

/// SET: writes a new version. With CONTEXT it supersedes exactly what the context covers; without, everything this
/// node holds for the key.
pub async fn set(node: &NodeContext, args: &[Bytes]) -> Reply {
    let (key, value) = (&args[1], &args[2]);
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let max = node.config.limits.max_value_bytes;
    if value.len() > max {
        return Reply::error(format!(
            "ERR value is {} bytes, larger than max_value_bytes ({max})",
            value.len()
        ));
    }
    let mut context = WriteContext::Blind;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"CONTEXT" if i + 1 < args.len() => {
                if matches!(context, WriteContext::Covering(_)) {
                    return syntax_error();
                }
                match parse_context(node, key, &args[i + 1]) {
                    Ok(vv) => context = WriteContext::Covering(vv),
                    Err(r) => return r,
                }
                i += 2;
            }
            o if UNSUPPORTED.iter().any(|u| u.as_bytes() == o) => {
                return Reply::error(format!(
                    "ERR SET option '{}' is not supported: dynamo-kv has no expiry or conditional writes; \
                     use GET's context to make writes conditional on what you read",
                    printable(&args[i], 16)
                ));
            }
            _ => return syntax_error(),
        }
    }
    match node
        .coordinator
        .put(key, Some(value.clone()), context)
        .await
    {
        Ok(_) => Reply::ok(),
        Err(e) => coord_error(e),
    }
}
