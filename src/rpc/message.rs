//! Internal protocol messages. Postcard is not self-describing, so every frame is a tagged enum and the
//! handshake pins the protocol version.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ring::Member;
use crate::versioning::{Siblings, VersionVector};

/// Version of the internal protocol; peers with another version are refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 1;

/// How a peer is reached and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Ring identity: id, weight, zone.
    pub member: Member,
    /// Address RESP clients use.
    pub client_addr: String,
    /// Address of the internal protocol.
    pub peer_addr: String,
}

/// A request from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe.
    Ping,
    /// Membership exchange: the sender's view; the answer is the receiver's (static seeds).
    Members {
        /// What the sender knows, itself included.
        known: Vec<PeerInfo>,
    },
    /// Read the receiver's local replica of a key.
    Read {
        /// User key.
        key: Bytes,
    },
    /// Merge a state into the receiver's local replica (replication, read repair).
    Replicate {
        /// User key.
        key: Bytes,
        /// State to merge.
        state: Siblings,
    },
    /// Coordinate a client write (sent by a node outside the key's top N to one inside it).
    Coordinate {
        /// User key.
        key: Bytes,
        /// New value, or `None` for a delete.
        value: Option<Bytes>,
        /// What the write supersedes; `None` for a blind write.
        context: Option<VersionVector>,
        /// Write quorum for this request, when the client overrode it.
        w: Option<u8>,
    },
}

impl Request {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Members { .. } => "members",
            Request::Read { .. } => "read",
            Request::Replicate { .. } => "replicate",
            Request::Coordinate { .. } => "coordinate",
        }
    }
}

/// Why a remote request failed, as the remote classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    /// Not enough replicas answered.
    Unavailable,
    /// The write was refused (sibling limits, bad context).
    Refused,
    /// Storage failed.
    Storage,
    /// The receiver cannot serve this request (e.g. not a replica of the key).
    Misdirected,
}

/// A response to one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Members`.
    Members {
        /// The receiver's view.
        known: Vec<PeerInfo>,
    },
    /// Answer to `Read`: the local state, `None` when never stored.
    State {
        /// The replica's state.
        state: Option<Siblings>,
    },
    /// Answer to `Replicate`: merged.
    Ack,
    /// Answer to `Coordinate`: written with the quorum reached.
    Written {
        /// Live values the write superseded on its coordinator.
        superseded_live: u32,
    },
    /// The request failed on the receiver.
    Error {
        /// Classification.
        kind: RemoteErrorKind,
        /// The message a client would see.
        message: String,
    },
}

/// One frame after the handshake.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Envelope {
    /// A request with its id.
    Request {
        /// Id the response will carry.
        id: u64,
        /// The request.
        body: Request,
    },
    /// The response to request `id`.
    Response {
        /// Id of the request.
        id: u64,
        /// The response.
        body: Response,
    },
}
