//! MULTI / EXEC / DISCARD, as Redis queues them, and WATCH refused.
//!
//! After `MULTI` a connection's commands are checked (known, arity, authentication, permission) and queued
//! (`+QUEUED`) instead of run. An error while queuing marks the transaction, and `EXEC` then answers `EXECABORT`
//! and runs nothing: a client that sent `MULTI`, its commands and `EXEC` in one batch never finds half of them
//! applied after an error. `EXEC` runs the queued commands in order and answers their replies as one array.
//!
//! What holds, and what does not: the commands run one after another on this connection, each as its own quorum
//! operation. There is no isolation across keys (other clients' writes interleave, as they may between any two
//! writes in a leaderless store) and no rollback: a command that fails at `EXEC` (a quorum not met, a syntax error
//! found when it runs) answers its error in the array and the others still apply, as in Redis. `WATCH` would need
//! a check at `EXEC` that a key is unchanged on every replica, which a leaderless store cannot make: it is refused,
//! so optimistic-locking code fails loudly instead of racing silently. A context token (`GET` then `SET ... CONTEXT`)
//! is this store's optimistic concurrency.

use bytes::Bytes;

use crate::resp::Reply;

/// Commands queued by `MULTI`.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Each queued request, command name first.
    pub queued: Vec<Vec<Bytes>>,
    /// An error while queuing: `EXEC` runs nothing.
    pub aborted: bool,
    /// Bytes of the queued arguments: bounded, so one connection cannot hold unbounded memory.
    pub bytes: usize,
}

impl Transaction {
    /// Queues a request, unless the queue would exceed `limit` bytes (then the transaction aborts).
    pub fn queue(&mut self, args: Vec<Bytes>, limit: usize) -> Reply {
        let size: usize = args.iter().map(Bytes::len).sum();
        if self.bytes + size > limit {
            self.aborted = true;
            return Reply::error(format!(
                "ERR transaction too large: its queued commands would exceed max_request_bytes ({limit}); EXEC \
                 will apply nothing"
            ));
        }
        self.bytes += size;
        self.queued.push(args);
        queued()
    }
}

/// The reply of a command queued inside `MULTI`.
pub fn queued() -> Reply {
    Reply::simple("QUEUED")
}

/// Redis's words for `EXEC` after an error while queuing.
pub fn exec_abort() -> Reply {
    Reply::error("EXECABORT Transaction discarded because of previous errors.")
}

/// `WATCH`: refused, with the reason and what to use instead.
pub fn watch() -> Reply {
    Reply::error(
        "ERR WATCH is not supported: a leaderless store cannot check at EXEC that a key is unchanged on every \
         replica. Read the key with GET and write back with SET ... CONTEXT: the write then supersedes only what \
         was read, and a concurrent write survives as a sibling",
    )
}
