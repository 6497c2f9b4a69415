//! Internal protocol messages. Postcard is not self-describing, so every frame is a tagged enum and the
//! handshake pins the protocol version.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::membership::ClusterState;
pub use crate::membership::PeerInfo;
use crate::versioning::{Siblings, VersionVector};

/// Version of the internal protocol; peers with another version are refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 7;

/// A request from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe.
    Ping,
    /// Gossip: the sender's whole cluster state; the answer is the receiver's after merging (push-pull).
    Gossip {
        /// The sender's state.
        state: Box<ClusterState>,
    },
    /// Stream part of a key range to a node that is receiving it (handoff).
    HandoffPull {
        /// The key range (partition).
        partition: u32,
        /// Resume after this storage key (exclusive); `None` from the start.
        after: Option<Bytes>,
        /// Most keys in the answer.
        limit: u32,
    },
    /// Digest of a key range, to verify a handoff.
    RangeDigest {
        /// The key range (partition).
        partition: u32,
    },
    /// The hash-tree leaves of a partition (anti-entropy).
    TreeLeaves {
        /// The partition.
        partition: u32,
        /// Q of the sender's ring.
        partitions: u32,
        /// Only the root (the XOR of the leaves): the first level of a top-down comparison.
        root_only: bool,
    },
    /// Every stored state with ring positions in `[first, last]` (anti-entropy, one differing leaf).
    RangeStates {
        /// First position.
        first: u128,
        /// Last position (inclusive).
        last: u128,
    },
    /// The stored keys with ring positions in `[first, last]`, in storage order, their states without values
    /// (SCAN): at least `limit` of them when there are, and then every further key that shares the last one's
    /// scan cursor (the top 63 bits of its position), so a cursor never splits keys.
    ScanKeys {
        /// First position.
        first: u128,
        /// Last position (inclusive).
        last: u128,
        /// Keys wanted.
        limit: u32,
    },
    /// Merge these states into the local replica (anti-entropy).
    MergeStates {
        /// (storage key, state) pairs.
        items: Vec<(Bytes, Siblings)>,
    },
    /// Delete these tombstones, each only if the local state is exactly the one given.
    Reap {
        /// (storage key, tombstone state) pairs.
        items: Vec<(Bytes, Siblings)>,
    },
    /// Read the receiver's local replica of a key, or, as a fallback, what it holds as hints for it.
    Read {
        /// User key.
        key: Bytes,
        /// The receiver stands in for an unreachable replica: answer from hints only (its own store may hold a
        /// stale copy from an older ring).
        as_fallback: bool,
        /// The asking node's cluster identity: a node of another cluster (one that lost its disk and founded anew)
        /// never vouches for a not-found of this one.
        cluster_id: u64,
    },
    /// Merge a state into the receiver's local replica (replication, read repair, hint delivery), or, with
    /// `hint_for`, keep it as a hint for that unreachable replica (sloppy quorum).
    Replicate {
        /// User key.
        key: Bytes,
        /// State to merge.
        state: Siblings,
        /// The replica this copy is meant for, when the receiver stands in for it.
        hint_for: Option<String>,
    },
    /// Coordinate a client write (sent by a node outside the key's top N to one inside it).
    Coordinate {
        /// User key.
        key: Bytes,
        /// The write.
        op: WriteOp,
        /// Write quorum for this request, when the client overrode it.
        w: Option<u8>,
    },
    /// What the receiver is carrying (the console's per-member load).
    NodeLoad,
}

/// A client write, as a coordinator applies it to its replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WriteOp {
    /// SET or DEL: a new string, or a tombstone.
    Put {
        /// New value, or `None` for a delete.
        value: Option<Bytes>,
        /// What the write supersedes; `None` for a blind write (what the coordinator holds).
        context: Option<VersionVector>,
        /// The new value's deadline (SET EX), ms since the Unix epoch.
        expires_at_ms: Option<u64>,
    },
    /// A typed write (INCRBY, SADD, ...), applied after a quorum read.
    Typed(crate::crdt::Op),
}

impl Request {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Gossip { .. } => "gossip",
            Request::HandoffPull { .. } => "handoff_pull",
            Request::RangeDigest { .. } => "range_digest",
            Request::TreeLeaves { .. } => "tree_leaves",
            Request::RangeStates { .. } => "range_states",
            Request::ScanKeys { .. } => "scan_keys",
            Request::MergeStates { .. } => "merge_states",
            Request::Reap { .. } => "reap",
            Request::Read { .. } => "read",
            Request::Replicate { .. } => "replicate",
            Request::Coordinate { .. } => "coordinate",
            Request::NodeLoad => "node_load",
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
    /// The receiver's storage takes no writes now (a full or failing disk); it applied nothing, so another
    /// replica may take the write.
    WritesStopped,
}

/// A response to one request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `Gossip`.
    Gossip {
        /// The receiver's state after merging.
        state: Box<ClusterState>,
        /// The receiver's wall clock when it answered (ms since the Unix epoch): the sender measures the skew
        /// between their clocks from it.
        clock_ms: u64,
    },
    /// Answer to `HandoffPull`.
    HandoffBatch {
        /// (storage key, state) of each key, in storage order.
        items: Vec<(Bytes, Siblings)>,
        /// Whether the range is exhausted.
        done: bool,
    },
    /// Answer to `ScanKeys`.
    Keys {
        /// (storage key, state without values) of each key, in storage order.
        items: Vec<(Bytes, Siblings)>,
        /// Whether the range is exhausted.
        done: bool,
    },
    /// Answer to `TreeLeaves`.
    Leaves {
        /// The leaf hashes.
        leaves: Vec<u128>,
    },
    /// Answer to `MergeStates`.
    Merged {
        /// Keys that changed.
        changed: u64,
    },
    /// Answer to `RangeDigest`.
    Digest {
        /// Keys in the range.
        keys: u64,
        /// Order-independent hash of every (key, state).
        hash: [u8; 16],
        /// The sender is recovering this range after a lost disk: its copy may lack acknowledged writes.
        recovering: bool,
    },
    /// Answer to `Read`: the local state, `None` when never stored.
    State {
        /// The replica's state.
        state: Option<Siblings>,
        /// Whether a `None` is evidence that the key was never acknowledged here: the receiver holds the key's
        /// whole range in its own ring view and has nothing to recover there. Always false from a fallback.
        vouches: bool,
    },
    /// Answer to `Replicate`: merged.
    Ack,
    /// Answer to `Coordinate`: written with the quorum reached.
    Written {
        /// Live values the write superseded on its coordinator.
        superseded_live: u32,
        /// A typed write's answer.
        reply: Option<crate::crdt::OpReply>,
    },
    /// The request failed on the receiver.
    Error {
        /// Classification.
        kind: RemoteErrorKind,
        /// The message a client would see.
        message: String,
    },
    /// Answer to `NodeLoad`.
    NodeLoad(Load),
}

/// What a node is carrying, as counted by the node itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Load {
    /// Commands run since it started (clients' and forwarded ones).
    pub commands_processed: u64,
    /// Clients connected now.
    pub connected_clients: u64,
    /// Keys with a live value it stores.
    pub live_keys: u64,
    /// Bytes its storage takes on disk.
    pub disk_bytes: u64,
    /// Hints it holds for other nodes.
    pub hints_held: u64,
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
