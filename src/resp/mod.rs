//! RESP (L0 parsing, L1 framing): the client wire protocol.
//!
//! * [`codec::RequestCodec`]: request framing in front of redis-protocol's decoder. It adds what the decoder lacks:
//!   inline commands, size limits checked before any allocation, and an incremental completeness check so a large
//!   frame arriving in pieces is not re-parsed from its start on every read.
//! * [`reply::Reply`]: what commands answer, encoded as RESP2 or RESP3 (after `HELLO 3`) by redis-protocol.

pub mod codec;
pub mod reply;

pub use codec::{FrameLimits, ProtocolError, RequestCodec};
pub use reply::{Protocol, Reply};
