//! Coordinator (L4): one client get or put as a quorum operation over the key's replicas (paper §4.5, §6.4).
//!
//! * get: ask the top N of the preference list (this node's replica directly) and a fallback for each one believed
//!   down, answer once R replies count with the merge of their states, and keep listening in the background:
//!   replicas found stale are repaired with the merge (read repair) without delaying the answer. A "not found"
//!   counts only from a replica that can vouch for it ([`quorum::ReadQuorum`]): a read never calls a key absent
//!   because it reached only fallbacks or replicas recovering from a lost disk.
//! * put: coordinated by a replica in the top N, which stamps the new dot, writes locally and replicates the new
//!   state to the other N-1, answering once W acknowledged (itself included). A node outside the top N forwards to
//!   one inside it, preferring the replica that answered the client's read first.
//! * A quorum that cannot be met is an `Unavailable { needed, got }` error, never a partial success. A failed write
//!   may still have reached some replicas, and can appear later (as in any Dynamo): retry with the same context.
//!
//! The decisions are pure: [`operation`] (whom to ask, when to answer, what to repair and hint, where to forward),
//! over [`plan`] (one sloppy-quorum rule) and [`quorum`] (counting). This file is the I/O around them, and the
//! messages a coordinator sends to another ([`Coordinate`]); replica reads and writes are
//! `replication::replica`'s.

pub mod operation;
pub mod plan;
pub mod quorum;
pub mod scan;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;

use crate::cluster::Cluster;
use crate::config::{Quorum, VersioningOptions};
use crate::crdt::rows::{RowSelect, Rows};
use crate::crdt::zorder::{ZAnswer, ZQuery};
use crate::crdt::{Op, OpError, OpReply, Stamp};
use crate::replication::replica::{
    Ack, Counted, KeepHint, LocalReplica, Read, ReadRows, ReadTally, ReplicaRead, Replicate,
};
use crate::rpc::{PeerPool, RemoteError, RemoteErrorKind, RpcError};
use crate::storage::hints::HintStore;
use crate::storage::recovery::Recovery;
use crate::storage::store::Decision;
use crate::storage::{KvStore, StorageError, meta::NodeMeta};
use crate::versioning::{ContextKey, Siblings, VersionVector};
use operation::{AfterForward, Candidate, ForwardFailure, QuorumFailure, ReadOperation, Route, WriteOperation};

/// Errors a client request can meet in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Storage failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Fewer replicas answered than the quorum needs.
    #[error("needed {needed} replicas, got {got}")]
    Unavailable {
        /// Replies or acknowledgements required.
        needed: usize,
        /// Received.
        got: usize,
    },
    /// A per-request R or W outside 1..=N.
    #[error("{which} must be between 1 and N ({n}), got {value}")]
    QuorumRange {
        /// R or W.
        which: QuorumOf,
        /// The value asked for.
        value: usize,
        /// N.
        n: usize,
    },
    /// Too few replicas that could hold the key answered a read: the others that answered said "not found" without
    /// being able to vouch for it (fallbacks without a hint, replicas recovering from a wiped disk), so the key may
    /// well exist. Reporting it absent would invite a write that drops it.
    #[error("needed {needed} replicas, got {got}; {unproven} not-found answers could not be vouched for")]
    Unproven {
        /// Replies required.
        needed: usize,
        /// Replies that counted.
        got: usize,
        /// Not-found replies that did not count.
        unproven: usize,
    },
    /// This node knows no ring yet (it is starting, joining, waiting for bootstrap, or its data directory was
    /// wiped): no replicas.
    #[error("this node knows no ring yet: {reason}")]
    NoRing {
        /// Why it waits (from the cluster layer).
        reason: String,
    },
    /// The context claims writes of this node that it never made (it was not minted by a read).
    #[error("context covers writes this node never made")]
    ContextAhead,
    /// The write would leave more sibling bytes than allowed.
    #[error("write would leave {bytes} bytes of siblings, above max_siblings_bytes ({limit})")]
    SiblingsTooLarge {
        /// Bytes the surviving siblings and the new value would hold.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The write would leave more siblings than the hard limit allows.
    #[error("write would leave {count} siblings, above the hard limit of {limit}")]
    TooManySiblings {
        /// Siblings the write would leave.
        count: usize,
        /// The configured hard limit.
        limit: usize,
    },
    /// A typed write cannot apply to what the key holds.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The coordinator this write was forwarded to refused it.
    #[error("{message}")]
    Remote {
        /// The remote classification.
        kind: RemoteErrorKind,
        /// The text a client sees.
        message: String,
    },
}

impl CoordError {
    /// The error line a client sees, starting with its code word. Forwarded errors keep the remote's text, so a
    /// client sees the same words whichever node it talks to.
    pub fn client_text(&self) -> String {
        match self {
            CoordError::Unavailable { needed, got } => format!("UNAVAILABLE needed {needed} replicas, got {got}"),
            CoordError::Unproven { needed, got, unproven } => format!(
                "UNAVAILABLE needed {needed} replicas, got {got}: {unproven} more answered not-found but cannot vouch \
                 for it (fallbacks, or replicas recovering from a lost disk), so the key may exist; retry"
            ),
            CoordError::QuorumRange { .. } => format!("ERR {self}"),
            CoordError::NoRing { reason } => {
                format!("UNAVAILABLE this node knows no ring yet, {reason}; retry on another node")
            }
            CoordError::ContextAhead => "ERR invalid context: it covers writes this node never made".into(),
            CoordError::SiblingsTooLarge { bytes, limit } => format!(
                "SIBLINGS write would leave {bytes} bytes of siblings (max_siblings_bytes {limit}); read the key and \
                 write back with its CONTEXT to resolve them"
            ),
            CoordError::TooManySiblings { count, limit } => format!(
                "SIBLINGS write would leave {count} siblings (hard limit {limit}); read the key and write back with \
                 its CONTEXT to resolve them"
            ),
            CoordError::Storage(StorageError::Closed) => {
                "UNAVAILABLE node is shutting down; retry on another node".into()
            }
            CoordError::Storage(StorageError::WritesStopped { reason }) => {
                format!("STORAGE this node takes no writes and no other replica of the key took this one: {reason}")
            }
            CoordError::Storage(e) => format!("STORAGE {e}"),
            CoordError::Op(e) => e.to_string(),
            CoordError::Remote { message, .. } => message.clone(),
        }
    }

    /// How a peer that coordinated this request classifies it for the node that forwarded it.
    pub fn remote_kind(&self) -> RemoteErrorKind {
        match self {
            CoordError::Unavailable { .. }
            | CoordError::Unproven { .. }
            | CoordError::NoRing { .. }
            | CoordError::Storage(StorageError::Closed) => RemoteErrorKind::Unavailable,
            CoordError::Storage(StorageError::WritesStopped { .. }) => RemoteErrorKind::WritesStopped,
            CoordError::Storage(_) => RemoteErrorKind::Storage,
            CoordError::Remote { kind, .. } => *kind,
            _ => RemoteErrorKind::Refused,
        }
    }
}

impl From<QuorumFailure> for CoordError {
    fn from(f: QuorumFailure) -> Self {
        match f {
            QuorumFailure::Unavailable { needed, got } => CoordError::Unavailable { needed, got },
            QuorumFailure::Unproven { needed, got, unproven } => CoordError::Unproven { needed, got, unproven },
        }
    }
}

impl From<CoordError> for RemoteError {
    fn from(e: CoordError) -> Self {
        RemoteError::new(e.remote_kind(), e.client_text())
    }
}

/// Coordinate a client write: sent by a node that cannot coordinate it (not among the key's top N, or its storage
/// stopped writes) to one of the key's replicas.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Coordinate {
    /// User key.
    pub key: Bytes,
    /// The write.
    pub op: WriteOp,
    /// Write quorum for this request, when the client overrode it.
    pub w: Option<u8>,
}

/// Answer to [`Coordinate`]: written, with the quorum reached.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Live values the write superseded on its coordinator.
    pub superseded_live: u32,
    /// A typed write's answer.
    pub reply: Option<OpReply>,
}

crate::rpc_message!(Coordinate => Written, tag 20, "coordinate");

/// A client write, as a coordinator applies it to its replica.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum WriteOp {
    /// SET or DEL: a new string, or a tombstone.
    Put {
        /// New value, or `None` for a delete.
        value: Option<Bytes>,
        /// What the write supersedes; `None` for a blind write (what the coordinator holds).
        context: Option<VersionVector>,
        /// The context is a read's that found a collection: the write clears the elements it covers
        /// ([`WriteContext::CoveringCollection`]).
        over_collection: bool,
        /// The new value's deadline (SET EX), ms since the Unix epoch.
        expires_at_ms: Option<u64>,
    },
    /// A typed write (INCRBY, SADD, ...), applied after a quorum read.
    Typed(Op),
}

/// Which quorum a request sets: R (replies a read waits for) or W (acknowledgements a write waits for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumOf {
    /// R.
    Reads,
    /// W.
    Writes,
}

impl std::fmt::Display for QuorumOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuorumOf::Reads => "R",
            QuorumOf::Writes => "W",
        })
    }
}

/// What a read found.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// The kind of value the key holds (`None`: no live value).
    pub kind: Option<crate::crdt::Kind>,
    /// Values of the causally-maximal live versions (tombstones excluded).
    pub values: Vec<Bytes>,
    /// Of those, the one written last by its coordinator's clock (what a plain-mode read may answer).
    pub newest: Option<Bytes>,
    /// The causal context covering everything read: empty when no replica that answered holds the key. Always
    /// given to the client, so that a write back supersedes only what was read (an empty one: nothing).
    pub context: VersionVector,
    /// The replica that answered first (the preferred coordinator of a write with this context).
    pub first_replier: Option<String>,
    /// When the key expires (ms since the Unix epoch; `None`: never, or no live value).
    pub expires_at_ms: Option<u64>,
}

/// Which versions a write supersedes.
#[derive(Clone, Debug)]
pub enum WriteContext {
    /// Everything the coordinating replica holds now (plain Redis `SET`).
    Blind,
    /// Exactly what this context (from a previous read) covers.
    Covering(VersionVector),
    /// Exactly what this context covers, from a read that found a collection (`DEL`, or `SET NX` over a set): the
    /// write also clears the collection's elements that the context covers. The coordinator's own copy cannot
    /// tell: it may not have received the collection yet, and a tombstone that clears nothing would leave the
    /// elements to come back with the next element written.
    CoveringCollection(VersionVector),
}

impl WriteContext {
    /// The context of a write after a read that found `kind` (`None`: nothing) and `context`.
    pub fn after_read(kind: Option<crate::crdt::Kind>, context: VersionVector) -> WriteContext {
        match kind.and_then(crate::crdt::rows::row_kind) {
            Some(_) => WriteContext::CoveringCollection(context),
            None => WriteContext::Covering(context),
        }
    }

    /// The context a write carries (`None` for a blind write), and whether it is a collection's.
    fn into_parts(self) -> (Option<VersionVector>, bool) {
        match self {
            WriteContext::Blind => (None, false),
            WriteContext::Covering(c) => (Some(c), false),
            WriteContext::CoveringCollection(c) => (Some(c), true),
        }
    }

    /// The inverse of [`into_parts`](Self::into_parts).
    fn from_parts(context: Option<VersionVector>, over_collection: bool) -> WriteContext {
        match (context, over_collection) {
            (None, _) => WriteContext::Blind,
            (Some(c), false) => WriteContext::Covering(c),
            (Some(c), true) => WriteContext::CoveringCollection(c),
        }
    }
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Live values the write superseded on its coordinator.
    pub superseded_live: usize,
    /// A typed write's answer (a counter's value after an increment, a count of members, popped members).
    pub reply: Option<OpReply>,
}

/// One replica of a key for this request.
#[derive(Clone, Debug)]
struct Replica {
    id: String,
    addr: String,
    local: bool,
}

/// A reply to one ask of a read: its index, and what came back (`Err`: nothing).
type ReadReply<S = Siblings> = (usize, Result<ReplicaRead<S>, ()>);

/// What a quorum read asks each replica for: a key row ([`KeyRowRead`]), or rows of a collection ([`RowsRead`]).
trait ReadShape: Send + Sync + 'static {
    /// What a replica answers with.
    type S: quorum::State + Into<Rows> + Send + Sync + 'static;
    /// The local replica's answer.
    fn local(
        &self,
        replica: &LocalReplica,
        key: &[u8],
        as_fallback: bool,
        cluster_id: u64,
    ) -> Result<ReplicaRead<Self::S>, StorageError>;
    /// A remote replica's answer.
    fn remote(
        &self,
        pool: Arc<PeerPool>,
        to: Replica,
        key: Bytes,
        as_fallback: bool,
        cluster_id: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ReplicaRead<Self::S>, RpcError>>;
}

/// A read of a key's key row: a string's, a counter's, a list's or a sorted set's whole state.
struct KeyRowRead;

impl ReadShape for KeyRowRead {
    type S = Siblings;

    fn local(
        &self,
        replica: &LocalReplica,
        key: &[u8],
        as_fallback: bool,
        cluster_id: u64,
    ) -> Result<ReplicaRead, StorageError> {
        match as_fallback {
            true => replica.read_as_fallback(key),
            false => replica.read(key, cluster_id),
        }
    }

    fn remote(
        &self,
        pool: Arc<PeerPool>,
        to: Replica,
        key: Bytes,
        as_fallback: bool,
        cluster_id: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ReplicaRead, RpcError>> {
        Box::pin(async move { pool.call_node(&to.id, &to.addr, Read { key, as_fallback, cluster_id }, timeout).await })
    }
}

/// A read of rows of a key: its key row and the rows selected.
struct RowsRead(RowSelect);

impl ReadShape for RowsRead {
    type S = Rows;

    fn local(
        &self,
        replica: &LocalReplica,
        key: &[u8],
        as_fallback: bool,
        cluster_id: u64,
    ) -> Result<ReplicaRead<Rows>, StorageError> {
        match as_fallback {
            true => replica.read_rows_as_fallback(key, &self.0),
            false => replica.read_rows(key, &self.0, cluster_id),
        }
    }

    fn remote(
        &self,
        pool: Arc<PeerPool>,
        to: Replica,
        key: Bytes,
        as_fallback: bool,
        cluster_id: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ReplicaRead<Rows>, RpcError>> {
        let req = ReadRows { key, rows: self.0.clone(), as_fallback, cluster_id };
        Box::pin(async move { pool.call_node(&to.id, &to.addr, req, timeout).await })
    }
}
/// A read of a collection's key row and tally, for a count, and with a query the answer to that read of a sorted
/// set's order.
struct TallyRead(Option<ZQuery>);

impl ReadShape for TallyRead {
    type S = Counted;

    fn local(
        &self,
        replica: &LocalReplica,
        key: &[u8],
        as_fallback: bool,
        cluster_id: u64,
    ) -> Result<ReplicaRead<Counted>, StorageError> {
        match as_fallback {
            true => replica.read_tally_as_fallback(key),
            false => replica.read_tally(key, cluster_id, self.0.as_ref()),
        }
    }

    fn remote(
        &self,
        pool: Arc<PeerPool>,
        to: Replica,
        key: Bytes,
        as_fallback: bool,
        cluster_id: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<ReplicaRead<Counted>, RpcError>> {
        let req = ReadTally { key, as_fallback, cluster_id, ranked: self.0.clone() };
        Box::pin(async move { pool.call_node(&to.id, &to.addr, req, timeout).await })
    }
}

/// An outcome of one send of a write: its index, and whether it was acknowledged.
type AckReply = (usize, bool);

/// Coordinates client reads and writes over the key's replicas.
pub struct Coordinator {
    store: Arc<KvStore>,
    meta: Arc<NodeMeta>,
    options: VersioningOptions,
    cluster: Arc<Cluster>,
    pool: Arc<PeerPool>,
    quorum: Quorum,
    timeout: Duration,
    context_key: ContextKey,
    hints: Arc<HintStore>,
    recovery: Arc<Recovery>,
    /// This node as a replica: its reads, merges and hints.
    replica: LocalReplica,
    routing: Routing,
    tasks: tokio_util::task::TaskTracker,
    /// Pops coordinated here take their key's stripe, read to acknowledgement: two pops through one node never
    /// take the same item, and a pop's read does not race the pops before it (which would make it read deeper).
    pops: Box<[tokio::sync::Mutex<()>]>,
    /// Live values per read (`dynamo_read_siblings`): the handle is kept, as a lookup in the recorder on every
    /// read costs a hash and a lock.
    read_siblings: metrics::Histogram,
}

/// Stripes of [`Coordinator::pops`].
const POP_STRIPES: usize = 256;

/// The pop stripe of a user key.
fn pop_stripe(key: &[u8]) -> usize {
    (crate::storage::layout::ring_position(key) % POP_STRIPES as u128) as usize
}

/// How well clients route: requests that reached a node holding no replica of their key cost an extra hop (a
/// forwarded write, or a read whose every replica is remote). Partition-aware clients keep both near zero.
#[derive(Debug, Default)]
pub struct Routing {
    /// Writes this node forwarded to a replica.
    pub writes_forwarded: std::sync::atomic::AtomicU64,
    /// Reads this node coordinated without being one of the key's replicas.
    pub reads_off_replica: std::sync::atomic::AtomicU64,
    /// `MOVED` replies sent to cluster clients whose map was stale.
    pub redirects: std::sync::atomic::AtomicU64,
}

/// Everything a coordinator needs.
pub struct CoordinatorParts {
    /// Local replica store.
    pub store: Arc<KvStore>,
    /// Identity and dot counter.
    pub meta: Arc<NodeMeta>,
    /// Versioning limits.
    pub options: VersioningOptions,
    /// Membership and ring.
    pub cluster: Arc<Cluster>,
    /// Connections to peers.
    pub pool: Arc<PeerPool>,
    /// Default N, R, W.
    pub quorum: Quorum,
    /// How long to wait for replicas.
    pub timeout: Duration,
    /// Key of the context tokens.
    pub context_key: ContextKey,
    /// Hints held for unreachable replicas.
    pub hints: Arc<HintStore>,
    /// Key ranges this node cannot vouch for yet (after a wipe or a lossy crash).
    pub recovery: Arc<Recovery>,
    /// Where the work a request leaves behind runs (read repair, replication after the quorum answered, hints):
    /// the node's background tracker, which shutdown waits for before the final flush.
    pub tasks: tokio_util::task::TaskTracker,
}

impl Coordinator {
    /// A coordinator from its parts.
    pub fn new(p: CoordinatorParts) -> Arc<Self> {
        let replica =
            LocalReplica::new(p.store.clone(), p.hints.clone(), p.recovery.clone(), p.cluster.clone(), p.quorum.n);
        Arc::new(Self {
            store: p.store,
            meta: p.meta,
            options: p.options,
            cluster: p.cluster,
            pool: p.pool,
            quorum: p.quorum,
            timeout: p.timeout,
            context_key: p.context_key,
            replica,
            hints: p.hints,
            recovery: p.recovery,
            routing: Routing::default(),
            tasks: p.tasks,
            pops: (0..POP_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            read_siblings: metrics::histogram!("dynamo_read_siblings"),
        })
    }

    /// Requests that reached this node off their key's replicas.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The node's metadata (identity, actor).
    pub fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    /// The local store.
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// Membership and ring.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Connections to the other nodes.
    pub fn pool(&self) -> &Arc<PeerPool> {
        &self.pool
    }

    /// Default N, R, W.
    pub fn quorum(&self) -> Quorum {
        self.quorum
    }

    /// The key that authenticates context tokens.
    pub fn context_key(&self) -> &ContextKey {
        &self.context_key
    }

    /// N, R and W as the cluster allows now: N is capped by the ring's member count (a one-node cluster is 1/1/1),
    /// and the default R and W by that N. Before a joining node knows a ring there are no replicas at all.
    pub fn effective_quorum(&self) -> Quorum {
        let members = self.cluster.view().ring.as_ref().map_or(0, |r| r.members().len());
        let n = self.quorum.n.min(members);
        Quorum { n, r: self.quorum.r.min(n), w: self.quorum.w.min(n) }
    }

    /// Whether this node is among the key's replicas in its current ring view.
    pub fn is_replica(&self, key: &[u8]) -> bool {
        self.replicas(key).iter().any(|r| r.local)
    }

    /// The top N of the key's preference list in the current ring (empty before a joining node knows a ring).
    fn replicas(&self, key: &[u8]) -> Vec<Replica> {
        let view = self.cluster.view();
        view.preference_list(key).into_iter().take(self.quorum.n).map(|p| self.replica_of(p)).collect()
    }

    /// Each member of a preference list as a quorum operation plans with it: whether it is this node, and whether
    /// it can take part (this node always can; another when `usable`, the operation's liveness test, says so).
    fn candidates(&self, list: &[&crate::membership::PeerInfo], usable: impl Fn(&str) -> bool) -> Vec<Candidate> {
        let me = &self.cluster.me().member.id;
        list.iter()
            .map(|p| {
                let local = p.member.id == *me;
                Candidate { local, usable: local || usable(&p.member.id) }
            })
            .collect()
    }

    fn replica_of(&self, p: &crate::membership::PeerInfo) -> Replica {
        Replica {
            id: p.member.id.clone(),
            addr: p.peer_addr.clone(),
            local: p.member.id == self.cluster.me().member.id,
        }
    }

    /// The quorum for one request: the client's override, checked against the effective N, or the default.
    fn check(&self, which: QuorumOf, value: Option<usize>) -> Result<usize, CoordError> {
        let q = self.effective_quorum();
        if q.n == 0 {
            let reason = self.cluster.waiting().unwrap_or_else(|| "the ring has no members".into());
            return Err(CoordError::NoRing { reason });
        }
        let value = value.unwrap_or(match which {
            QuorumOf::Reads => q.r,
            QuorumOf::Writes => q.w,
        });
        if value == 0 || value > q.n.max(1) {
            return Err(CoordError::QuorumRange { which, value, n: q.n });
        }
        Ok(value)
    }

    /// This node's own replica of `key`, without asking anyone (admin views, tests).
    pub fn read_local(&self, key: &[u8]) -> Result<Option<Siblings>, CoordError> {
        Ok(self.store.get(key)?)
    }

    /// This node as a replica (what peers' reads, replication and hints reach).
    pub fn replica(&self) -> &LocalReplica {
        &self.replica
    }

    /// Key ranges this node cannot vouch for yet.
    pub fn recovery(&self) -> &Arc<Recovery> {
        &self.recovery
    }

    /// Reads `key` from R of its N replicas; stale replicas are repaired in the background.
    pub async fn get(self: &Arc<Self>, key: &Bytes, r: Option<usize>) -> Result<ReadResult, CoordError> {
        let (merged, first_replier) = self.read_state(key, r).await?;
        self.read_siblings.record(merged.as_ref().map_or(0, |s| s.live_values().count()) as f64);
        let mut folded = merged.as_ref().map(crate::crdt::fold).unwrap_or_default();
        if folded.kind.and_then(crate::crdt::rows::row_kind).is_some() {
            // A collection kept as rows exists while one of its elements does: each replica's first live one tells.
            let rows = self.read_rows(key, RowSelect::Named { rows: Vec::new(), first_live: 1 }, r).await?;
            folded.kind = crate::crdt::rows::kind_of(&rows, now_ms());
        }
        Ok(ReadResult {
            kind: folded.kind,
            values: folded.values,
            newest: folded.newest,
            expires_at_ms: merged.as_ref().and_then(|s| s.deadline(now_ms()).flatten()),
            context: merged.map(Siblings::into_context).unwrap_or_default(),
            first_replier,
        })
    }

    /// The merged state of `key` from R of its N replicas (`None`: no replica that answered holds it), and the
    /// replica that answered first; stale replicas are repaired in the background.
    pub async fn read_state(
        self: &Arc<Self>,
        key: &Bytes,
        r: Option<usize>,
    ) -> Result<(Option<Siblings>, Option<String>), CoordError> {
        let (merged, first) = self.quorum_read(key, r, KeyRowRead).await?;
        // What a client sees: values past their deadline read as absent (their dots stay in the context, so a write
        // back supersedes them).
        let merged = merged.map(|mut s| {
            s.drop_expired(now_ms());
            s
        });
        Ok((merged, first))
    }

    /// The merged rows of `key` from R of its N replicas: its key row and the rows selected, as stored (the reader
    /// interprets deadlines and cleared elements, `crdt::rows`).
    pub async fn read_rows(
        self: &Arc<Self>,
        key: &Bytes,
        rows: RowSelect,
        r: Option<usize>,
    ) -> Result<Rows, CoordError> {
        Ok(self.quorum_read(key, r, RowsRead(rows)).await?.0.unwrap_or_default())
    }

    /// How many live elements the collection of `kind` at `key` holds (0 when it holds another kind or none), and
    /// its key row (`None`: absent), from R replicas. Each answers its key row, its tally ([`Tally`]) and the
    /// tally's latest changes; when every replica holding the key answered the same tally, their states are equal
    /// and so is the count of their merge. Replicas a few writes apart (a stream of writes reaches them at
    /// different moments) are merged by those changes ([`merged_count`]). Neither costs a read of the elements.
    /// Otherwise (a fallback's hints, a failed tally read, replicas further apart) every row is read, merged and
    /// counted, which also repairs.
    ///
    /// [`Tally`]: crate::crdt::rows::Tally
    /// [`merged_count`]: crate::crdt::rows::merged_count
    pub async fn read_count(
        self: &Arc<Self>,
        key: &Bytes,
        kind: crate::versioning::RowKind,
    ) -> Result<(u64, Option<Siblings>), CoordError> {
        match self.quorum_read(key, None, TallyRead(None)).await {
            Ok((None, _)) => return Ok((0, None)),
            Ok((Some(Counted::Tallied(replies)), _)) => {
                if let Some(counted) = crate::crdt::rows::merged_count(&replies, kind, now_ms()) {
                    if replies.iter().any(|r| r.tally != replies[0].tally) {
                        metrics::counter!("dynamo_count_merged_tallies_total").increment(1);
                    }
                    return Ok(counted);
                }
                metrics::counter!("dynamo_count_full_reads_total", "why" => "differ").increment(1);
            }
            Ok((Some(Counted::Untallied | Counted::Nothing), _)) => {
                metrics::counter!("dynamo_count_full_reads_total", "why" => "untallied").increment(1);
            }
            Err(e) => {
                metrics::counter!("dynamo_count_full_reads_total", "why" => "failed").increment(1);
                tracing::debug!(error = %e, "tally read failed; reading every row");
            }
        }
        let rows = self.read_rows(key, RowSelect::All, None).await?;
        Ok((crate::crdt::rows::card(&rows, kind, now_ms()), rows.key_row().cloned()))
    }

    /// The answer to `query` (ZRANGE and its kin, ZRANK, ZCOUNT) over the sorted set at `key` (empty when it
    /// holds another kind or none), with its key row (`None`: absent), from R replicas. Each answers from its
    /// members kept in score order, with its key row and tally ([`TallyRead`]); when every replica holding the key
    /// gave the same reply, their rows are equal (as for a count) and so are their answers: the answer costs the
    /// members it holds, not the set's size. Otherwise (replicas apart, even by one write in flight, a fallback's
    /// hints, a set too large to keep in order) every member is read, merged and ordered, which also repairs.
    pub async fn read_ranked(
        self: &Arc<Self>,
        key: &Bytes,
        query: &ZQuery,
    ) -> Result<(ZAnswer, Option<Siblings>), CoordError> {
        use crate::versioning::RowKind;
        match self.quorum_read(key, None, TallyRead(Some(query.clone()))).await {
            Ok((None, _)) => return Ok((query.empty(), None)),
            Ok((Some(Counted::Tallied(mut replies)), _)) if replies.len() == 1 && replies[0].answer.is_some() => {
                let reply = replies.pop().expect("one reply");
                let answer = match &reply.key_row {
                    Some(k) if crate::crdt::rows::live_kind(k, now_ms()) == Some(RowKind::ZSet) => reply.answer,
                    _ => None,
                };
                return Ok((answer.unwrap_or_else(|| query.empty()), reply.key_row));
            }
            Ok((Some(Counted::Tallied(replies)), _)) if replies.iter().any(|r| r.answer.is_none()) => {
                metrics::counter!("dynamo_ranked_full_reads_total", "why" => "unordered").increment(1);
            }
            Ok((Some(Counted::Tallied(_)), _)) => {
                metrics::counter!("dynamo_ranked_full_reads_total", "why" => "differ").increment(1);
            }
            Ok((Some(Counted::Untallied | Counted::Nothing), _)) => {
                metrics::counter!("dynamo_ranked_full_reads_total", "why" => "untallied").increment(1);
            }
            Err(e) => {
                metrics::counter!("dynamo_ranked_full_reads_total", "why" => "failed").increment(1);
                tracing::debug!(error = %e, "ranked tally read failed; reading every member");
            }
        }
        let rows = self.read_rows(key, RowSelect::All, None).await?;
        let all = crate::crdt::rows::scored(&rows, now_ms());
        Ok((query.answer(all.as_slice()), rows.key_row().cloned()))
    }

    /// The rows a ZPOPMIN (ZPOPMAX with `max`) of `count` members reads: the rows of the `count` lowest (highest)
    /// members a read of the order finds ([`Self::read_ranked`]), and one live member's row more, to know whether
    /// the pop empties the set, as ZREM reads. A member whose score a concurrent write lowers past them is popped
    /// after it, as if the pop had come first.
    async fn pop_candidates(self: &Arc<Self>, key: &Bytes, max: bool, count: usize) -> Result<RowSelect, CoordError> {
        let last = i64::try_from(count).unwrap_or(i64::MAX) - 1;
        let query = ZQuery::Range { rev: max, bounds: crate::crdt::zorder::ZBounds::Index(0, last), limit: None };
        let members = match self.read_ranked(key, &query).await?.0 {
            ZAnswer::Members(members) => members.into_iter().map(|(m, _)| m).collect::<Vec<_>>(),
            other => unreachable!("a range answers members, not {other:?}"),
        };
        // The first live rows in row order, as many as the members named and one more: at least one other than
        // those popped, if the set holds one.
        let first_live = u32::try_from(members.len()).unwrap_or(u32::MAX).saturating_add(1);
        let rows =
            members.iter().map(|m| crate::crdt::rows::element_row(crate::versioning::RowKind::ZSet, m)).collect();
        Ok(RowSelect::Named { rows, first_live })
    }

    /// Up to `count` live items at one end of the list at `key`, with its key row, from R replicas. A replica that
    /// missed a pop still holds the popped item in its live range, and the others no longer show it there: the
    /// items found are read again by name, which finds a removed item in either home. When some turn out removed,
    /// a replica that showed them may hide live items behind them, so the end is read again, that many items
    /// deeper. Once a round finds no removed item it did not know, every replica that answered showed `count` items
    /// that are live (or all it has), so the answer holds the list's first `count` live items whenever the list
    /// does. Pops racing on the same end can keep finding new removed items: after a few rounds the whole list is
    /// read instead.
    pub async fn read_list_end(
        self: &Arc<Self>,
        key: &Bytes,
        head: bool,
        count: u32,
        r: Option<usize>,
    ) -> Result<Rows, CoordError> {
        const ROUNDS: usize = 6;
        let mut found = self.read_rows(key, RowSelect::End { head, count }, r).await?;
        if self.effective_quorum().n == 1 {
            return Ok(found);
        }
        // Items the earlier rounds found removed, with the state that says so.
        let mut removed: Vec<(Bytes, Siblings)> = Vec::new();
        for round in 1..=ROUNDS {
            for (row, state) in &removed {
                found.merge_row(row.clone(), state);
            }
            let named: Vec<Bytes> =
                crate::crdt::rows::items(&found, now_ms()).into_iter().map(|(row, _)| row).collect();
            if named.is_empty() {
                return Ok(found);
            }
            let again = self.read_rows(key, RowSelect::Named { rows: named.clone(), first_live: 0 }, r).await?;
            // Only the items are taken from the second read: the key row stays the one that goes with the items
            // found (a remove that empties the list clears what that key row saw, and a newer key row may cover
            // items pushed since, which the end read did not show).
            for (row, state) in again.rows().iter().filter(|(row, _)| !row.is_empty()) {
                found.merge_row(row.clone(), state);
            }
            let live: std::collections::HashSet<Bytes> =
                crate::crdt::rows::items(&found, now_ms()).into_iter().map(|(row, _)| row).collect();
            let newly: Vec<Bytes> = named.into_iter().filter(|row| !live.contains(row)).collect();
            if newly.is_empty() {
                return Ok(found);
            }
            metrics::counter!("dynamo_list_stale_ends_total").increment(1);
            removed.extend(newly.into_iter().filter_map(|row| found.get(&row).cloned().map(|state| (row, state))));
            if round < ROUNDS {
                let deeper = count.saturating_add(u32::try_from(removed.len()).unwrap_or(u32::MAX));
                found = self.read_rows(key, RowSelect::End { head, count: deeper }, r).await?;
            }
        }
        metrics::counter!("dynamo_list_end_full_reads_total").increment(1);
        self.read_rows(key, RowSelect::All, r).await
    }

    /// Live elements of the collection at `key`, with its key row, from R replicas, for a pop or a random pick: a
    /// sample of a set's members ([`RowSelect::Sample`], SPOP and SRANDMEMBER) or every live element
    /// ([`RowSelect::Live`], ZPOPMIN and ZPOPMAX). A
    /// replica answers only the elements it holds live, so one that missed a remove still shows the element and the
    /// others, which hold its removal, do not say so: the elements found are read again by name, which brings the
    /// removals. For every live element, that settles each one found. A sample may then hold fewer live elements
    /// than it asked for, while a replica hides live ones behind those removed: when some turn out removed and
    /// fewer are left than asked, the whole collection is read instead; otherwise each replica showed as many live
    /// elements as asked (or all it has), which is what the pop needs: elements to take, and whether one more is
    /// left.
    pub async fn read_live(self: &Arc<Self>, key: &Bytes, select: RowSelect) -> Result<Rows, CoordError> {
        let asked = match select {
            RowSelect::Sample { count, .. } => Some(count as usize),
            _ => None,
        };
        let mut found = self.read_rows(key, select, None).await?;
        if self.effective_quorum().n == 1 {
            return Ok(found);
        }
        let live = |rows: &Rows| -> Vec<Bytes> {
            let Some(key_row) = rows.key_row() else { return Vec::new() };
            rows.rows()
                .iter()
                .filter(|(row, state)| {
                    crate::crdt::rows::parse_row(row).is_some() && crate::crdt::rows::element_is_live(key_row, state)
                })
                .map(|(row, _)| row.clone())
                .collect()
        };
        let named = live(&found);
        if named.is_empty() {
            return Ok(found);
        }
        let again = self.read_rows(key, RowSelect::Named { rows: named.clone(), first_live: 0 }, None).await?;
        // Only the elements are taken from the second read, as for a list's end (`read_list_end`).
        for (row, state) in again.rows().iter().filter(|(row, _)| !row.is_empty()) {
            found.merge_row(row.clone(), state);
        }
        let left = live(&found).len();
        if let Some(asked) = asked
            && left < named.len()
            && left < asked
        {
            metrics::counter!("dynamo_pop_sample_full_reads_total").increment(1);
            return self.read_rows(key, RowSelect::All, None).await;
        }
        Ok(found)
    }

    /// A quorum read of `key` in the given shape: the merge of R replies, and the replica that answered first.
    async fn quorum_read<R: ReadShape>(
        self: &Arc<Self>,
        key: &Bytes,
        r: Option<usize>,
        shape: R,
    ) -> Result<(Option<R::S>, Option<String>), CoordError> {
        let r = self.check(QuorumOf::Reads, r)?;
        let view = self.cluster.view();
        // Borrowed from the view: an owned `Replica` (two strings each) only for a remote ask, and for the list
        // a read repair takes along. A read the local replica answers alone allocates none of them.
        let prefs = view.preference_list(key);
        let candidates = self.candidates(&prefs, |id| self.cluster.is_reachable(id));
        if !candidates.iter().take(self.quorum.n).any(|c| c.local) {
            self.routing.reads_off_replica.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("dynamo_reads_off_replica_total").increment(1);
        }
        let mut op = ReadOperation::<R::S>::plan(&candidates, self.quorum.n, r);
        // The remote asks (sent once polled, below), then the local one, answered at once.
        let mut pending: Option<FuturesUnordered<BoxFuture<'static, ReadReply<R::S>>>> = None;
        for (i, ask) in op.asks().iter().enumerate().filter(|(_, a)| !candidates[a.node].local) {
            let rep = self.replica_of(prefs[ask.node]);
            let read = shape.remote(
                self.pool.clone(),
                rep.clone(),
                key.clone(),
                ask.as_fallback,
                view.cluster_id,
                self.timeout,
            );
            pending.get_or_insert_with(FuturesUnordered::new).push(self.read_remote(i, &rep, read));
        }
        let mut answer = None;
        for i in 0..op.asks().len() {
            let ask = op.asks()[i];
            if candidates[ask.node].local {
                let local = shape.local(&self.replica, key, ask.as_fallback, view.cluster_id);
                let reply = local.map_err(|e| tracing::error!(error = %e, "local read failed"));
                answer = answer.or(op.on_reply(i, reply));
            }
        }
        // A read answered by the local replica alone (one node, or R=1) never looks at the clock.
        let mut deadline = None;
        let answer = loop {
            if let Some(answer) = answer {
                break answer;
            }
            let Some(pending) = pending.as_mut() else { break op.give_up().expect("an undecided read gives up") };
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.timeout);
            answer = match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((i, reply))) => op.on_reply(i, reply),
                Ok(None) | Err(_) => op.give_up(),
            };
        };
        let found = match answer {
            Ok(found) => found,
            Err(failure) => {
                metrics::counter!("dynamo_quorum_failures_total", "op" => "read").increment(1);
                if let QuorumFailure::Unproven { .. } = failure {
                    metrics::counter!("dynamo_read_unproven_absent_total").increment(1);
                }
                return Err(failure.into());
            }
        };
        let first = found.first.map(|i| prefs[i].member.id.clone());
        // When every replica asked has answered the same state there is nothing left to collect or repair: no task
        // (a one-replica read, or a healthy one whose replies all came in before the quorum was counted).
        if !op.settled() {
            let this = self.clone();
            let key = key.clone();
            let list: Vec<Replica> = prefs.iter().map(|p| self.replica_of(p)).collect();
            let pending = pending.unwrap_or_default();
            let deadline = deadline.unwrap_or_else(|| tokio::time::Instant::now() + self.timeout);
            self.tasks.spawn(async move { this.finish_read(key, list, op, pending, deadline).await });
        }
        Ok((found.merged, first))
    }

    /// Collects the replies that came after the answer, then repairs every replica that answered stale.
    async fn finish_read<S: quorum::State + Into<Rows>>(
        self: Arc<Self>,
        key: Bytes,
        list: Vec<Replica>,
        mut op: ReadOperation<S>,
        mut pending: FuturesUnordered<BoxFuture<'static, ReadReply<S>>>,
        deadline: tokio::time::Instant,
    ) {
        while let Ok(Some((i, reply))) = tokio::time::timeout_at(deadline, pending.next()).await {
            op.on_reply(i, reply);
        }
        for (node, merged) in op.repairs() {
            let rep = &list[node];
            let rows: Rows = merged.into();
            if rows.is_empty() {
                // A tally read's join holds no rows to send.
                continue;
            }
            metrics::counter!("dynamo_read_repairs_total").increment(1);
            tracing::debug!(replica = %rep.id, key = %String::from_utf8_lossy(&key), "read repair");
            if rep.local {
                if let Err(e) = self.replica.merge_rows(&key, &rows).await {
                    tracing::warn!(error = %e, "local read repair failed");
                }
            } else {
                let repair = Replicate { key: key.clone(), rows };
                if let Err(e) = self.pool.call_node(&rep.id, &rep.addr, repair, self.timeout).await {
                    tracing::debug!(replica = %rep.id, error = %e, "read repair not delivered");
                }
            }
        }
    }

    /// One remote ask of a read, noting whether its replica answered.
    fn read_remote<S: Send + 'static>(
        &self,
        i: usize,
        rep: &Replica,
        read: BoxFuture<'static, Result<ReplicaRead<S>, RpcError>>,
    ) -> BoxFuture<'static, ReadReply<S>> {
        let (cluster, id) = (self.cluster.clone(), rep.id.clone());
        Box::pin(async move {
            let reply = match read.await {
                Ok(read) => {
                    cluster.note_reachable(&id, true);
                    Ok(read)
                }
                Err(e) => {
                    if !matches!(e, RpcError::Refused { .. }) {
                        cluster.note_reachable(&id, false);
                    }
                    Err(())
                }
            };
            (i, reply)
        })
    }

    /// True when `key` has at least one live value (read with the default R).
    pub async fn exists(self: &Arc<Self>, key: &Bytes) -> Result<bool, CoordError> {
        Ok(self.get(key, None).await?.kind.is_some())
    }

    /// A client write: coordinated here when this node is among the key's top N, else forwarded to one that is
    /// (`preferred` first, when it is one).
    pub async fn put(
        self: &Arc<Self>,
        key: Bytes,
        value: Option<Bytes>,
        context: WriteContext,
        w: Option<usize>,
        preferred: Option<&str>,
    ) -> Result<WriteOutcome, CoordError> {
        let (context, over_collection) = context.into_parts();
        let op = WriteOp::Put { value, context, over_collection, expires_at_ms: None };
        self.write(key, op, w, preferred).await
    }

    /// [`Coordinator::put`] of a value that expires at `expires_at_ms` (ms since the Unix epoch; `None`: never).
    pub async fn put_expiring(
        self: &Arc<Self>,
        key: Bytes,
        value: Bytes,
        context: WriteContext,
        expires_at_ms: Option<u64>,
        w: Option<usize>,
        preferred: Option<&str>,
    ) -> Result<WriteOutcome, CoordError> {
        let (context, over_collection) = context.into_parts();
        let op = WriteOp::Put { value: Some(value), context, over_collection, expires_at_ms };
        self.write(key, op, w, preferred).await
    }

    /// A typed write (INCRBY, SADD, ...): coordinated like a put, by a replica that first reads the key at the
    /// default R and merges what it found, so the answer reflects every write acknowledged before this one began
    /// (a counter's value, whether a member was there), and a remove removes what that read saw.
    pub async fn apply(self: &Arc<Self>, key: Bytes, op: Op, w: Option<usize>) -> Result<OpReply, CoordError> {
        let outcome = self.write(key, WriteOp::Typed(op), w, None).await?;
        Ok(outcome.reply.expect("a typed write answers"))
    }

    /// A client write of any kind, coordinated here or forwarded (see [`Coordinator::put`]).
    pub async fn write(
        self: &Arc<Self>,
        key: Bytes,
        op: WriteOp,
        w: Option<usize>,
        preferred: Option<&str>,
    ) -> Result<WriteOutcome, CoordError> {
        let needed = self.check(QuorumOf::Writes, w)?;
        let replicas = self.replicas(&key);
        let local_writes = self.store.write_stop().is_none();
        let candidates: Vec<Candidate> = replicas
            .iter()
            .map(|r| Candidate {
                local: r.local,
                usable: if r.local { local_writes } else { self.cluster.takes_writes(&r.id) },
            })
            .collect();
        let preferred = preferred.and_then(|p| replicas.iter().position(|r| r.id == p));
        let order = match operation::route(&candidates, preferred) {
            Route::Here => return self.coordinate(key, op, w).await,
            Route::Forward(order) => order,
        };
        self.routing.writes_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("dynamo_forwards_total").increment(1);
        for rep in order.into_iter().map(|i| &replicas[i]) {
            if rep.local {
                // The replicas tried before did not take it; this node is a replica itself.
                return self.coordinate(key, op, w).await;
            }
            let forward = Coordinate { key: key.clone(), op: op.clone(), w: w.map(|w| w as u8) };
            // The remote coordinator waits for its own quorum: give it that long plus the hop.
            let error = match self.pool.call_node(&rep.id, &rep.addr, forward, self.timeout * 2).await {
                Ok(Written { superseded_live, reply }) => {
                    return Ok(WriteOutcome { superseded_live: superseded_live as usize, reply });
                }
                Err(e) => e,
            };
            let failure = match &error {
                RpcError::Refused { refusal, .. } => ForwardFailure::Refused(refusal.kind),
                RpcError::Unreachable { .. } | RpcError::Handshake { .. } | RpcError::Tls { .. } => {
                    ForwardFailure::NotSent
                }
                _ => ForwardFailure::NoAnswer,
            };
            if !matches!(failure, ForwardFailure::Refused(_)) {
                // Unreachable, or silent: until it answers again, later writes go to the other replicas first.
                self.cluster.note_reachable(&rep.id, false);
            }
            match (operation::after_forward(failure), error) {
                (AfterForward::TryNext, e) => {
                    tracing::debug!(replica = %rep.id, error = %e, "forward failed; trying the next replica")
                }
                (AfterForward::Fail, RpcError::Refused { refusal, .. }) => {
                    return Err(CoordError::Remote { kind: refusal.kind, message: refusal.message });
                }
                (AfterForward::Fail, e) => {
                    return Err(CoordError::Remote {
                        kind: RemoteErrorKind::Unavailable,
                        message: format!(
                            "UNAVAILABLE coordinator {} did not answer ({e}); the write may still have been applied: \
                             read the key and retry with its context",
                            rep.id
                        ),
                    });
                }
            }
        }
        metrics::counter!("dynamo_quorum_failures_total", "op" => "write").increment(1);
        Err(CoordError::Unavailable { needed, got: 0 })
    }

    /// Answers [`Coordinate`] from a node that forwarded a client write here.
    pub async fn serve_coordinate(self: &Arc<Self>, m: Coordinate) -> Result<Written, RemoteError> {
        if !self.is_replica(&m.key) {
            let message = format!("{} is not a replica of this key in its ring view", self.cluster.me().member.id);
            return Err(RemoteError::new(RemoteErrorKind::Misdirected, message));
        }
        let out = self.coordinate(m.key, m.op, m.w.map(usize::from)).await?;
        Ok(Written { superseded_live: out.superseded_live as u32, reply: out.reply })
    }

    /// Coordinates a write here: stamp the dot, write locally, replicate to the other replicas, wait for W.
    pub async fn coordinate(
        self: &Arc<Self>,
        key: Bytes,
        op: WriteOp,
        w: Option<usize>,
    ) -> Result<WriteOutcome, CoordError> {
        let needed = self.check(QuorumOf::Writes, w)?;
        let _popping = match &op {
            WriteOp::Typed(o) if o.is_pop() => Some(self.pops[pop_stripe(&key)].lock().await),
            _ => None,
        };
        let view = self.cluster.view();
        let me = &self.cluster.me().member.id;
        // Borrowed from the view, as a read's are: an owned `Replica` only for a copy sent to another node.
        let mut targets = view.preference_list(&key);
        // Sloppy quorum (paper §4.6): a replica known to be unreachable, or whose storage stopped writes, is stood in
        // for by the next healthy fallback of the preference list, which keeps the copy as a hint and counts toward W.
        let candidates = self.candidates(&targets, |id| self.cluster.takes_writes(id));
        // A range in transit: its next replicas get the write too (not counted), so nothing written during the move
        // is missing when ownership flips. The handoff's verification pass covers a miss.
        let incoming: Vec<_> =
            view.incoming_replicas(&key, self.quorum.n).into_iter().filter(|p| p.member.id != *me).collect();
        let mut plan = WriteOperation::plan(&candidates, self.quorum.n, needed, incoming.len())?;
        targets.extend(incoming);
        let (outcome, rows) = match op {
            WriteOp::Put { value, context, over_collection, expires_at_ms } => {
                let context = WriteContext::from_parts(context, over_collection);
                let (outcome, state) = self.update_local(&key, value, context, expires_at_ms).await?;
                (outcome, Rows::key_only(state))
            }
            WriteOp::Typed(op) => {
                // The quorum read makes the answer include every write acknowledged before this one began, and
                // a remove remove what it saw. It reads the rows the write touches: the key row, and the rows of
                // the elements it names (every row of the key for SPOP).
                let select = match &op {
                    Op::ZPop { max, count } => self.pop_candidates(&key, *max, *count).await?,
                    _ => op.rows_read(),
                };
                let read = match select {
                    // A push only needs a rank past the end: an item at the end that turns out removed still
                    // gives one. A pop needs the live items (`read_list_end`).
                    RowSelect::End { head, count } if op.is_pop() => {
                        self.read_list_end(&key, head, count, None).await?
                    }
                    RowSelect::Sample { .. } | RowSelect::Live => self.read_live(&key, select.clone()).await?,
                    _ => self.read_rows(&key, select.clone(), None).await?,
                };
                let (mut outcome, changed) = match self.apply_local(&key, select.named(), read.clone(), &op).await {
                    Err(CoordError::Op(OpError::WrongType)) => self.over_emptied(&key, read, &op).await?,
                    other => other?,
                };
                if let Op::ListPush { .. } = op {
                    // A push answers the length of the list as this replica holds it: no merge of the replicas'
                    // rows counts a list without reading every item.
                    outcome.reply = Some(OpReply::Integer(self.store.list_len(&key)? as i64));
                }
                if changed.is_empty() {
                    // Nothing to write (a remove of what is not there): nothing to replicate either.
                    return Ok(outcome);
                }
                (outcome, changed)
            }
        };
        let mut answer = match candidates.iter().take(self.quorum.n).any(|c| c.local) {
            true => plan.on_local_write(),
            false => None,
        };
        for intended in plan.take_hints() {
            self.hint_locally(&targets[intended].member.id, &key, &rows);
        }
        let mut pending: Option<FuturesUnordered<BoxFuture<'static, AckReply>>> = None;
        for (i, send) in plan.sends().iter().enumerate() {
            if send.stands_in() {
                metrics::counter!("dynamo_sloppy_writes_total").increment(1);
            }
            let hint_for = send.stands_in().then(|| targets[send.intended].member.id.clone());
            let to = self.replica_of(targets[send.to]);
            let copy = self.replicate_remote(i, &to, hint_for, key.clone(), rows.clone());
            pending.get_or_insert_with(FuturesUnordered::new).push(copy);
        }
        let mut deadline = None;
        let answer = loop {
            if let Some(answer) = answer {
                break answer;
            }
            let Some(pending) = pending.as_mut() else { break plan.give_up().expect("an undecided write gives up") };
            let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.timeout);
            answer = match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((i, ok))) => plan.on_ack(i, ok),
                Ok(None) | Err(_) => plan.give_up(),
            };
        };
        match pending.filter(|p| !p.is_empty()) {
            // Every send answered (or there was none, as on one node): no task is needed for the rest.
            None => {
                for intended in plan.take_hints() {
                    self.hint_locally(&targets[intended].member.id, &key, &rows);
                }
            }
            // The remaining replicas still get the write after the client has its answer; every copy that could not
            // be delivered becomes a hint here, delivered when its replica answers again.
            Some(mut pending) => {
                let this = self.clone();
                let targets: Vec<String> = targets.iter().map(|p| p.member.id.clone()).collect();
                self.tasks.spawn(async move {
                    while let Some((i, ok)) = pending.next().await {
                        plan.on_ack(i, ok);
                    }
                    for intended in plan.take_hints() {
                        this.hint_locally(&targets[intended], &key, &rows);
                    }
                });
            }
        }
        answer.map(|()| outcome).map_err(|failure| {
            metrics::counter!("dynamo_quorum_failures_total", "op" => "write").increment(1);
            failure.into()
        })
    }

    /// Keeps a copy meant for `target` as a local hint.
    fn hint_locally(&self, target: &str, key: &[u8], rows: &Rows) {
        if target == self.cluster.me().member.id {
            return;
        }
        if let Err(e) = self.hints.put(target, key, rows, now_ms()) {
            tracing::error!(error = %e, %target, "could not store a hint");
        }
    }

    /// The hints this node holds.
    pub fn hints(&self) -> &HintStore {
        &self.hints
    }

    /// Sends send `i` of a write: the changed rows to a replica, or to a stand-in keeping them as a hint for
    /// `hint_for`.
    fn replicate_remote(
        &self,
        i: usize,
        to: &Replica,
        hint_for: Option<String>,
        key: Bytes,
        rows: Rows,
    ) -> BoxFuture<'static, AckReply> {
        let (pool, cluster, timeout, to) = (self.pool.clone(), self.cluster.clone(), self.timeout, to.clone());
        Box::pin(async move {
            let sent = match hint_for {
                Some(target) => pool.call_node(&to.id, &to.addr, KeepHint { target, key, rows }, timeout).await,
                None => pool.call_node(&to.id, &to.addr, Replicate { key, rows }, timeout).await,
            };
            let ok = match sent {
                Ok(Ack) => true,
                Err(RpcError::Refused { refusal, .. }) => {
                    tracing::warn!(replica = %to.id, %refusal, "replica refused a write");
                    false
                }
                Err(_) => {
                    cluster.note_reachable(&to.id, false);
                    false
                }
            };
            (i, ok)
        })
    }

    /// Applies a client write to the local replica: checks the limits, stamps a fresh dot, prunes the vector.
    /// Returns the outcome and the new state to replicate.
    async fn update_local(
        &self,
        key: &[u8],
        value: Option<Bytes>,
        context: WriteContext,
        expires_at_ms: Option<u64>,
    ) -> Result<(WriteOutcome, Siblings), CoordError> {
        let opts = &self.options;
        let meta = &self.meta;
        // The coordinator's own copy is the request's durable write (paper §6.1): in buffered mode it reaches the
        // engine before the write counts, while the other replicas buffer theirs. A lone replica (N = 1) keeps the
        // buffered mode's promise instead: there is no other copy to stand in while it is buffered.
        let durable = self.effective_quorum().n >= 2;
        let store = &self.store;
        let update = |s: &mut Siblings, _existed| {
            // A read found a collection: the write clears what it covers even if this copy has no header yet.
            let had_header = crate::crdt::rows::has_header(s) || matches!(context, WriteContext::CoveringCollection(_));
            // Expired values are gone before the write counts what it supersedes and what survives.
            s.drop_expired(now_ms());
            let covered = match context {
                WriteContext::Blind => s.context().clone(),
                WriteContext::Covering(c) | WriteContext::CoveringCollection(c) => {
                    // Tokens are authenticated, so this only trips on a bug or a leaked secret; it keeps a bad
                    // context from marking this node's future dots as already superseded.
                    if c.get(meta.actor()) > meta.issued_counter() {
                        return Err(CoordError::ContextAhead);
                    }
                    c
                }
            };
            let superseded_live = s.versions().iter().filter(|v| !v.is_tombstone() && covered.covers(v.dot)).count();
            let survivors = s.versions().iter().filter(|v| !covered.covers(v.dot)).count();
            if survivors + 1 > opts.sibling_hard_limit {
                metrics::counter!("dynamo_sibling_limit_rejections_total").increment(1);
                return Err(CoordError::TooManySiblings { count: survivors + 1, limit: opts.sibling_hard_limit });
            }
            let bytes = value.as_ref().map_or(0, Bytes::len)
                + s.versions()
                    .iter()
                    .filter(|v| !covered.covers(v.dot))
                    .filter_map(|v| v.value.as_ref().map(crate::versioning::Value::len))
                    .sum::<usize>();
            if bytes > opts.max_siblings_bytes {
                metrics::counter!("dynamo_sibling_limit_rejections_total").increment(1);
                return Err(CoordError::SiblingsTooLarge { bytes, limit: opts.max_siblings_bytes });
            }
            // After everything this write read, even when this node's clock is behind the writer of that.
            let (dot, timestamp) = (meta.next_dot(), s.causal_timestamp(now_ms()));
            s.update(&covered, dot, timestamp, value);
            if expires_at_ms.is_some() {
                s.set_expiry(|v| v.dot == dot, crate::versioning::Expiry::new(expires_at_ms, timestamp, dot.actor));
            }
            // A write over a collection (SET, DEL) clears its elements; its key row keeps every actor (see
            // `apply_local`).
            crate::crdt::rows::settle(s, had_header);
            if s.cleared().is_empty() {
                s.prune_context(opts.max_vv_entries);
            }
            if s.sibling_count() > opts.sibling_soft_limit {
                metrics::counter!("dynamo_sibling_soft_limit_warnings_total").increment(1);
                tracing::warn!(
                    key = %String::from_utf8_lossy(&key[..key.len().min(64)]),
                    siblings = s.sibling_count(),
                    soft_limit = opts.sibling_soft_limit,
                    "key has many siblings: read it and write back with its context to resolve them"
                );
            }
            Ok(Decision::Write((WriteOutcome { superseded_live, reply: None }, s.clone())))
        };
        if durable { store.update_durable(key, update).await } else { store.update(key, update).await }
    }

    /// A write of one kind refused because the key row says the key is a collection of another: a collection whose
    /// every element was removed keeps its header (a remove cannot know that no replica holds an element it did not
    /// see, so it never takes the key away), and reads as absent. If a read of every row finds no live element, the
    /// write goes ahead over it: the empty collection's headers are dropped from the rows it applies to (their dots
    /// stay covered, so every replica drops them), and nothing is cleared, so an element no replica showed lives on.
    async fn over_emptied(
        self: &Arc<Self>,
        key: &Bytes,
        mut read: Rows,
        op: &Op,
    ) -> Result<(WriteOutcome, Rows), CoordError> {
        let all = self.read_rows(key, RowSelect::All, None).await?;
        let now = now_ms();
        let mut key_row = all.key_row().cloned().unwrap_or_default();
        key_row.drop_expired(now);
        let emptied = crate::crdt::kind(&key_row).and_then(crate::crdt::rows::row_kind).is_some()
            && crate::crdt::rows::kind_of(&all, now).is_none();
        if !emptied {
            return Err(CoordError::Op(OpError::WrongType));
        }
        read.merge(&all);
        read.entry(&[]).remove_versions(|v| matches!(v.value, Some(crate::versioning::Value::Header(_))));
        let select = op.rows_read();
        self.apply_local(key, select.named(), read, op).await
    }

    /// Applies a typed write to the local replica's rows (`named`: those it names besides the key row), after
    /// merging what a quorum read found ([`crate::crdt::apply_to_rows`] stamps fresh dots), and prunes the key row's
    /// vector. Returns the outcome and the rows it changed, to replicate.
    async fn apply_local(
        &self,
        key: &[u8],
        named: &[Bytes],
        read: Rows,
        op: &Op,
    ) -> Result<(WriteOutcome, Rows), CoordError> {
        let (meta, opts) = (&self.meta, &self.options);
        let durable = self.effective_quorum().n >= 2;
        // Every row the read found, and those the write names (SADD of a new member creates its row).
        let mut names: Vec<Bytes> = read.rows().iter().map(|(r, _)| r.clone()).collect();
        names.extend(named.iter().cloned());
        names.sort();
        names.dedup();
        let update = |rows: &mut Rows| {
            rows.merge(&read);
            let before = rows.clone();
            let next_dot = || meta.next_dot();
            let now = now_ms();
            let stamp = Stamp {
                actor: meta.actor(),
                next_dot: &next_dot,
                now_ms: now,
                timestamp_ms: now,
                siblings: opts.plain_siblings,
                may_empty: self.effective_quorum().n == 1,
                read: Some(&read),
            };
            let (reply, changed) = crate::crdt::apply_to_rows(rows, op, &stamp)?;
            // A collection's key row keeps every actor: its context must cover every element write, so that a
            // removal of the whole key clears exactly what it saw (`crdt::rows`).
            if let Some(key_row) = rows.key_row()
                && key_row.context().len() > opts.max_vv_entries
                && !crate::crdt::rows::has_header(key_row)
                && key_row.cleared().is_empty()
            {
                rows.entry(&[]).prune_context(opts.max_vv_entries);
            }
            let outcome = WriteOutcome { superseded_live: 0, reply: Some(reply) };
            let changed_rows = match changed {
                true => Rows::from_rows(rows.rows().iter().filter(|(r, s)| before.get(r) != Some(s)).cloned()),
                false => Rows::new(),
            };
            // The local rows also take what the read brought when the write changes nothing: the store writes
            // every row that differs from what it held.
            Ok::<_, CoordError>(Decision::Write((outcome, changed_rows)))
        };
        self.store.update_rows(key, &names, durable, update).await
    }
}

pub use crate::versioning::clock::now_ms;

#[cfg(test)]
mod tests;
