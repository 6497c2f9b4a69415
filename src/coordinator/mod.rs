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
//! The quorum logic itself is the pure [`quorum`] module; this file is the I/O around it.

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
use crate::crdt::{Op, OpError, OpReply, Stamp};
use crate::rpc::WriteOp;
use crate::rpc::{PeerPool, RemoteErrorKind, Request, Response, RpcError};
use crate::storage::hints::HintStore;
use crate::storage::recovery::Recovery;
use crate::storage::store::Decision;
use crate::storage::{KvStore, StorageError, meta::NodeMeta};
use crate::versioning::{ContextKey, Siblings, VersionVector};
use quorum::{Progress, ReadQuorum, ReplicaRead, WriteQuorum};

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
}

impl WriteContext {
    /// The context a write carries: `None` for a blind write.
    fn into_covered(self) -> Option<VersionVector> {
        match self {
            WriteContext::Blind => None,
            WriteContext::Covering(c) => Some(c),
        }
    }
}

impl From<Option<VersionVector>> for WriteContext {
    fn from(c: Option<VersionVector>) -> Self {
        c.map_or(WriteContext::Blind, WriteContext::Covering)
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

type ReadReply = (usize, Result<ReplicaRead, ()>);
/// Which replica a write was meant for, and whether it (or a fallback for it) acknowledged.
type AckReply = (String, bool);

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
    routing: Routing,
    tasks: tokio_util::task::TaskTracker,
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
        Arc::new(Self {
            store: p.store,
            meta: p.meta,
            options: p.options,
            cluster: p.cluster,
            pool: p.pool,
            quorum: p.quorum,
            timeout: p.timeout,
            context_key: p.context_key,
            hints: p.hints,
            recovery: p.recovery,
            routing: Routing::default(),
            tasks: p.tasks,
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
        view.preference_list(key).into_iter().take(self.quorum.n).map(|p| self.replica(p)).collect()
    }

    /// Replicas a transition adds for the key: they get every write but do not count toward W until the flip.
    fn incoming(&self, key: &[u8]) -> Vec<Replica> {
        let view = self.cluster.view();
        view.incoming_replicas(key, self.quorum.n).into_iter().map(|p| self.replica(p)).collect()
    }

    fn replica(&self, p: &crate::membership::PeerInfo) -> Replica {
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

    /// This node's answer as a replica of `key` to a coordinator of cluster `cluster_id`: its state, and whether
    /// it vouches for a not-found (same cluster, it holds the key's whole range in its own view, and has nothing to
    /// recover there).
    pub fn read_as_replica(&self, key: &[u8], cluster_id: u64) -> Result<ReplicaRead, CoordError> {
        let state = self.read_local(key)?;
        let same_cluster = cluster_id == self.cluster.view().cluster_id;
        let vouches = state.is_some() || (same_cluster && self.vouches_for(key));
        Ok(ReplicaRead { state, vouches })
    }

    /// Whether this node's "not found" for `key` is evidence that no write of it was ever acknowledged here.
    fn vouches_for(&self, key: &[u8]) -> bool {
        let view = self.cluster.view();
        let Some(ring) = view.ring.as_ref() else { return false };
        let p = ring.partition_of_key(key) as u32;
        let (me, n) = (&self.cluster.me().member.id, self.quorum.n);
        // A coordinator with an older ring may ask a node that already handed the range off and swept it, or one
        // with a newer ring a node that has not received it: neither holds the range by its own view.
        view.holds_range(me, p, n) && self.recovery.vouches(p)
    }

    /// Key ranges this node cannot vouch for yet.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// What this node can answer for `key` as a fallback: the hints it holds for it, never its own store (which
    /// may keep a stale copy of a range it replicated under an older ring).
    pub fn read_hints(&self, key: &[u8]) -> Result<Option<Siblings>, CoordError> {
        Ok(self.hints.get_any(key)?)
    }

    /// Reads `key` from R of its N replicas; stale replicas are repaired in the background.
    pub async fn get(self: &Arc<Self>, key: &Bytes, r: Option<usize>) -> Result<ReadResult, CoordError> {
        let (merged, first_replier) = self.read_state(key, r).await?;
        metrics::histogram!("dynamo_read_siblings")
            .record(merged.as_ref().map_or(0, |s| s.live_values().count()) as f64);
        let folded = merged.as_ref().map(crate::crdt::fold).unwrap_or_default();
        Ok(ReadResult {
            kind: folded.kind,
            values: folded.values,
            newest: folded.newest,
            expires_at_ms: merged.as_ref().and_then(|s| s.deadline(now_ms()).flatten()),
            context: merged.map(|s| s.context().clone()).unwrap_or_default(),
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
        let r = self.check(QuorumOf::Reads, r)?;
        // Every one of the top N is asked, even one believed down: it may answer after all, and only the replicas
        // can vouch that a key is absent. Sloppy quorum (paper §4.6): each one believed down also gets a stand-in,
        // the next healthy fallback of the preference list, which answers from its hints. What a fallback holds
        // counts toward R; its "not found" does not (see `quorum::ReadQuorum`).
        let view = self.cluster.view();
        let list: Vec<Replica> = view.preference_list(key).into_iter().map(|p| self.replica(p)).collect();
        if !list.iter().take(self.quorum.n).any(|r| r.local) {
            self.routing.reads_off_replica.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("dynamo_reads_off_replica_total").increment(1);
        }
        let usable: Vec<bool> = list.iter().map(|r| r.local || self.cluster.is_reachable(&r.id)).collect();
        let mut replicas: Vec<(Replica, bool)> = Vec::new();
        for (rep, stand_in) in list.iter().zip(plan::stand_ins(&usable, self.quorum.n)) {
            replicas.push((rep.clone(), false));
            if let Some(f) = stand_in {
                replicas.push((list[f].clone(), true));
            }
        }
        let mut q = ReadQuorum::new(r, replicas.len());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pending: FuturesUnordered<BoxFuture<'static, ReadReply>> = FuturesUnordered::new();
        for (i, (rep, fallback)) in replicas.iter().enumerate() {
            if rep.local {
                let local = if *fallback {
                    self.read_hints(key).map(|state| ReplicaRead { state, vouches: false })
                } else {
                    self.read_as_replica(key, view.cluster_id)
                };
                q.on_reply(i, local.map_err(|e| tracing::error!(error = %e, "local read failed")));
            } else {
                pending.push(self.read_remote(i, rep, key.clone(), *fallback, view.cluster_id));
            }
        }
        while q.progress() == Progress::Pending {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((i, reply))) => {
                    q.on_reply(i, reply);
                }
                Ok(None) | Err(_) => break,
            }
        }
        if q.progress() != Progress::Reached {
            metrics::counter!("dynamo_quorum_failures_total", "op" => "read").increment(1);
            if q.unproven() > 0 {
                metrics::counter!("dynamo_read_unproven_absent_total").increment(1);
                return Err(CoordError::Unproven { needed: r, got: q.successes(), unproven: q.unproven() });
            }
            return Err(CoordError::Unavailable { needed: r, got: q.successes() });
        }
        let merged = q.merged();
        let first_replier = q.first_replier().map(|i| replicas[i].0.id.clone());
        // When every replica asked has answered the same state there is nothing left to collect or repair: no task
        // (a one-replica read, or a healthy one whose replies all came in before the quorum was counted).
        let settled = pending.is_empty() && merged.as_ref().is_none_or(|m| q.stale(m).is_empty());
        if !settled {
            let this = self.clone();
            let key = key.clone();
            self.tasks.spawn(async move { this.finish_read(key, replicas, q, pending, deadline).await });
        }
        // What a client sees: values past their deadline read as absent (their dots stay in the context, so a write
        // back supersedes them).
        let merged = merged.map(|mut s| {
            s.drop_expired(now_ms());
            s
        });
        Ok((merged, first_replier))
    }

    /// Collects the replies that came after the quorum, then repairs every replica that answered stale.
    async fn finish_read(
        self: Arc<Self>,
        key: Bytes,
        replicas: Vec<(Replica, bool)>,
        mut q: ReadQuorum,
        mut pending: FuturesUnordered<BoxFuture<'static, ReadReply>>,
        deadline: tokio::time::Instant,
    ) {
        while let Ok(Some((i, reply))) = tokio::time::timeout_at(deadline, pending.next()).await {
            q.on_reply(i, reply);
        }
        let Some(merged) = q.merged() else { return };
        for i in q.stale(&merged) {
            let (rep, fallback) = &replicas[i];
            if *fallback {
                continue;
            }
            metrics::counter!("dynamo_read_repairs_total").increment(1);
            tracing::debug!(replica = %rep.id, key = %String::from_utf8_lossy(&key), "read repair");
            if rep.local {
                if let Err(e) = self.merge_local(&key, &merged).await {
                    tracing::warn!(error = %e, "local read repair failed");
                }
            } else {
                let req = Request::Replicate { key: key.clone(), state: merged.clone(), hint_for: None };
                if let Err(e) = self.pool.call_node(&rep.id, &rep.addr, req, self.timeout).await {
                    tracing::debug!(replica = %rep.id, error = %e, "read repair not delivered");
                }
            }
        }
    }

    fn read_remote(
        &self,
        i: usize,
        rep: &Replica,
        key: Bytes,
        as_fallback: bool,
        cluster_id: u64,
    ) -> BoxFuture<'static, ReadReply> {
        let (pool, cluster, timeout, rep) = (self.pool.clone(), self.cluster.clone(), self.timeout, rep.clone());
        Box::pin(async move {
            let request = Request::Read { key, as_fallback, cluster_id };
            let reply = match pool.call_node(&rep.id, &rep.addr, request, timeout).await {
                Ok(Response::State { state, vouches }) => {
                    cluster.note_reachable(&rep.id, true);
                    // A fallback answers from its hints: never evidence of absence, whatever it says.
                    Ok(ReplicaRead { state, vouches: vouches && !as_fallback })
                }
                Ok(other) => {
                    tracing::warn!(replica = %rep.id, ?other, "unexpected answer to a read");
                    Err(())
                }
                Err(_) => {
                    cluster.note_reachable(&rep.id, false);
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
        let op = WriteOp::Put { value, context: context.into_covered(), expires_at_ms: None };
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
        let op = WriteOp::Put { value: Some(value), context: context.into_covered(), expires_at_ms };
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
        let mut replicas = self.replicas(&key);
        let me = &self.cluster.me().member.id;
        // Paper §6.4: the replica that answered the client's read first coordinates its write, so the client's next
        // read likely sees it. Without such a hint (or when the hint is us, or not a replica), a replica coordinates
        // here and anything else forwards.
        // A replica known to be unreachable is skipped as the hinted coordinator and tried only after every other:
        // a forward to a partitioned peer would wait out the whole timeout, for every write, until the partition
        // heals. A replica whose storage stopped writes (this one included) is tried last for the same reason.
        let local_writes = self.store.write_stop().is_none();
        let reachable = |r: &Replica| if r.local { local_writes } else { self.cluster.takes_writes(&r.id) };
        let hinted =
            preferred.filter(|p| p != me).and_then(|p| replicas.iter().position(|r| r.id == p && reachable(r)));
        if hinted.is_none() && local_writes && replicas.iter().any(|r| r.local) {
            return self.coordinate(key, op, w).await;
        }
        if let Some(pos) = hinted {
            let first = replicas.remove(pos);
            replicas.insert(0, first);
        }
        replicas.sort_by_key(|r| !reachable(r));
        self.routing.writes_forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("dynamo_forwards_total").increment(1);
        for rep in &replicas {
            if rep.local {
                // The hinted replica did not answer; this node is a replica itself.
                return self.coordinate(key, op, w).await;
            }
            let req = Request::Coordinate { key: key.clone(), op: op.clone(), w: w.map(|w| w as u8) };
            // The remote coordinator waits for its own quorum: give it that long plus the hop.
            match self.pool.call_node(&rep.id, &rep.addr, req, self.timeout * 2).await {
                Ok(Response::Written { superseded_live, reply }) => {
                    return Ok(WriteOutcome { superseded_live: superseded_live as usize, reply });
                }
                Ok(Response::Error { kind: RemoteErrorKind::Misdirected, message }) => {
                    // Its ring view differs from ours (a transition is spreading): the next replica may agree.
                    tracing::debug!(replica = %rep.id, %message, "forward misdirected; trying the next replica");
                }
                Ok(Response::Error { kind: RemoteErrorKind::WritesStopped, message }) => {
                    // Its storage refused before writing anything: another replica may take it.
                    tracing::debug!(replica = %rep.id, %message, "forward refused by storage; trying the next replica");
                }
                Ok(Response::Error { kind, message }) => return Err(CoordError::Remote { kind, message }),
                Ok(other) => {
                    tracing::warn!(replica = %rep.id, ?other, "unexpected answer to a forwarded write");
                }
                Err(RpcError::Unreachable { .. } | RpcError::Handshake { .. } | RpcError::Tls { .. }) => {
                    // Never reached it: safe to try the next replica.
                    self.cluster.note_reachable(&rep.id, false);
                }
                Err(e) => {
                    // It may have applied the write: retrying elsewhere would apply it twice. Until it answers
                    // again, later writes go to the other replicas first.
                    self.cluster.note_reachable(&rep.id, false);
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

    /// Coordinates a write here: stamp the dot, write locally, replicate to the other replicas, wait for W.
    pub async fn coordinate(
        self: &Arc<Self>,
        key: Bytes,
        op: WriteOp,
        w: Option<usize>,
    ) -> Result<WriteOutcome, CoordError> {
        let needed = self.check(QuorumOf::Writes, w)?;
        let view = self.cluster.view();
        let list: Vec<Replica> = view.preference_list(&key).into_iter().map(|p| self.replica(p)).collect();
        let replicas = &list[..self.quorum.n.min(list.len())];
        let mut q = WriteQuorum::new(needed, replicas.len());
        if let Progress::Failed { needed, got } = q.progress() {
            // Fewer replicas exist than W: refuse before writing anything.
            return Err(CoordError::Unavailable { needed, got });
        }
        let (outcome, state) = match op {
            WriteOp::Put { value, context, expires_at_ms } => {
                self.update_local(&key, value, WriteContext::from(context), expires_at_ms).await?
            }
            WriteOp::Typed(op) => {
                // The quorum read makes the answer include every write acknowledged before this one began, and
                // a remove remove what it saw.
                let (read, _) = self.read_state(&key, None).await?;
                self.apply_local(&key, read, &op).await?
            }
        };
        if replicas.iter().any(|r| r.local) {
            q.on_ack(true);
        }
        let incoming = self.incoming(&key);
        if !incoming.is_empty() {
            // A range in transit: its next replicas get the write too (best effort, not counted), so nothing
            // written during the move is missing when ownership flips. The handoff's verification pass covers a miss.
            let mut extra: FuturesUnordered<BoxFuture<'static, AckReply>> = incoming
                .iter()
                .filter(|r| !r.local)
                .map(|rep| self.replicate_remote(rep, None, key.clone(), state.clone()))
                .collect();
            let this = self.clone();
            let (hint_key, hint_state) = (key.clone(), state.clone());
            self.tasks.spawn(async move {
                // A copy an incoming replica missed is hinted like any other.
                while let Some((intended, ok)) = extra.next().await {
                    if !ok {
                        this.hint_locally(&intended, &hint_key, &hint_state);
                    }
                }
            });
        }
        // Sloppy quorum (paper §4.6): a replica known to be unreachable, or whose storage stopped writes, is stood in
        // for by the next healthy fallback of the preference list, which keeps the copy as a hint and counts toward W.
        let usable: Vec<bool> = list.iter().map(|r| r.local || self.cluster.takes_writes(&r.id)).collect();
        let mut pending: FuturesUnordered<BoxFuture<'static, AckReply>> = FuturesUnordered::new();
        for (i, stand_in) in plan::stand_ins(&usable, self.quorum.n).into_iter().enumerate() {
            let rep = &replicas[i];
            match (rep.local, usable[i], stand_in) {
                (true, _, _) => {}
                (false, true, _) => pending.push(self.replicate_remote(rep, None, key.clone(), state.clone())),
                (false, false, Some(f)) => {
                    metrics::counter!("dynamo_sloppy_writes_total").increment(1);
                    pending.push(self.replicate_remote(&list[f], Some(rep.id.clone()), key.clone(), state.clone()));
                }
                (false, false, None) => {
                    // No fallback node: keep the hint here (it does not count toward W).
                    self.hint_locally(&rep.id, &key, &state);
                    q.on_ack(false);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut failed = Vec::new();
        while q.progress() == Progress::Pending {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((intended, ok))) => {
                    q.on_ack(ok);
                    if !ok {
                        failed.push(intended);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        // The remaining replicas still get the write after the client has its answer; every copy that could not be
        // delivered becomes a hint here, delivered when its replica answers again.
        let this = self.clone();
        let (hint_key, hint_state) = (key.clone(), state.clone());
        self.tasks.spawn(async move {
            while let Some((intended, ok)) = pending.next().await {
                if !ok {
                    failed.push(intended);
                }
            }
            for intended in failed {
                this.hint_locally(&intended, &hint_key, &hint_state);
            }
        });
        match q.progress() {
            Progress::Reached => Ok(outcome),
            _ => {
                metrics::counter!("dynamo_quorum_failures_total", "op" => "write").increment(1);
                Err(CoordError::Unavailable { needed, got: q.acks() })
            }
        }
    }

    /// Keeps a copy meant for `target` as a local hint.
    fn hint_locally(&self, target: &str, key: &[u8], state: &Siblings) {
        if target == self.cluster.me().member.id {
            return;
        }
        if let Err(e) = self.hints.put(target, key, state, now_ms()) {
            tracing::error!(error = %e, %target, "could not store a hint");
        }
    }

    /// Stores a hint another coordinator sent here for `target` (this node stands in for it).
    pub fn store_hint(&self, target: &str, key: &[u8], state: &Siblings) -> Result<(), CoordError> {
        // Hints live on the same disk as the data: a node whose storage stopped writes keeps none.
        self.store.check_writes()?;
        Ok(self.hints.put(target, key, state, now_ms())?)
    }

    /// The hints this node holds.
    pub fn hints(&self) -> &HintStore {
        &self.hints
    }

    fn replicate_remote(
        &self,
        to: &Replica,
        hint_for: Option<String>,
        key: Bytes,
        state: Siblings,
    ) -> BoxFuture<'static, AckReply> {
        let (pool, cluster, timeout, to) = (self.pool.clone(), self.cluster.clone(), self.timeout, to.clone());
        Box::pin(async move {
            let intended = hint_for.clone().unwrap_or_else(|| to.id.clone());
            let ok = match pool.call_node(&to.id, &to.addr, Request::Replicate { key, state, hint_for }, timeout).await
            {
                Ok(Response::Ack) => true,
                Ok(other) => {
                    tracing::warn!(replica = %to.id, ?other, "replica refused a write");
                    false
                }
                Err(_) => {
                    cluster.note_reachable(&to.id, false);
                    false
                }
            };
            (intended, ok)
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
            // Expired values are gone before the write counts what it supersedes and what survives.
            s.drop_expired(now_ms());
            let covered = match context {
                WriteContext::Blind => s.context().clone(),
                WriteContext::Covering(c) => {
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
            s.prune_context(opts.max_vv_entries);
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

    /// Applies a typed write to the local replica, after merging what a quorum read found ([`crate::crdt::apply`]
    /// stamps fresh dots), and prunes the vector. Returns the outcome and the state to replicate.
    async fn apply_local(
        &self,
        key: &[u8],
        read: Option<Siblings>,
        op: &Op,
    ) -> Result<(WriteOutcome, Siblings), CoordError> {
        let (meta, opts) = (&self.meta, &self.options);
        let durable = self.effective_quorum().n >= 2;
        let update = |s: &mut Siblings, _existed| {
            if let Some(read) = &read {
                s.merge(read);
            }
            let next_dot = || meta.next_dot();
            let now = now_ms();
            let stamp = Stamp {
                actor: meta.actor(),
                next_dot: &next_dot,
                now_ms: now,
                timestamp_ms: now,
                siblings: opts.plain_siblings,
            };
            let reply = crate::crdt::apply(s, op, &stamp)?;
            s.prune_context(opts.max_vv_entries);
            let out = (WriteOutcome { superseded_live: 0, reply: Some(reply) }, s.clone());
            // A write that found nothing and did nothing (SREM, EXPIRE of a missing key) stores nothing: an empty
            // state would be a row that no replica holds and nothing ever reaps.
            if s.versions().is_empty() && s.context().is_empty() {
                return Ok(Decision::Keep(out));
            }
            Ok::<_, CoordError>(Decision::Write(out))
        };
        let store = &self.store;
        if durable { store.update_durable(key, update).await } else { store.update(key, update).await }
    }

    /// Merges a state sent by another replica (replication, read repair) into the local one.
    pub async fn merge_local(&self, key: &[u8], state: &Siblings) -> Result<(), CoordError> {
        self.store
            .update(key, |s: &mut Siblings, _| {
                let before = s.clone();
                s.merge(state);
                Ok::<_, CoordError>(if *s == before { Decision::Keep(()) } else { Decision::Write(()) })
            })
            .await
    }
}

pub use crate::versioning::clock::now_ms;

#[cfg(test)]
mod tests;
