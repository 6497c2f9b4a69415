//! Anti-entropy (L3, paper §4.7): replicas of a partition compare hash trees and exchange only the keys under
//! leaves that differ, merging in both directions with the versioning rules.
//!
//! * [`tree`]: the incrementally kept leaves.
//! * [`exchange`]: one comparison of one partition between two replicas, generic over [`Replica`] so it is the same
//!   code over the network and in tests. Root first (one 16-byte hash settles an in-sync partition), then the
//!   leaves, then the states under differing leaves only.
//! * [`AntiEntropy`]: the driver. One partition exchange per interval, round-robin over the partitions this node
//!   replicates and the other replicas of each, so client latency holds; `ADMIN REPAIR` runs a full pass now.

pub mod schedule;
pub mod tree;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::replication::replica::refusal;
use crate::rpc::{PeerPool, RemoteError, RemoteErrorKind};
use crate::storage::KvStore;
use crate::storage::recovery::Recovery;
use crate::storage::store::{Decision, encode};
use crate::versioning::Siblings;
use schedule::PassFound;
use tree::{Hash, HashTree};

/// Most states one range answer may carry.
pub const MAX_RANGE_ITEMS: usize = 50_000;

/// The hash-tree leaves of a partition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TreeLeaves {
    /// The partition.
    pub partition: u32,
    /// Q of the sender's ring.
    pub partitions: u32,
    /// Only the root (the XOR of the leaves): the first level of a top-down comparison.
    pub root_only: bool,
}

/// Answer to [`TreeLeaves`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Leaves {
    /// The leaf hashes (the root alone when asked for it).
    pub leaves: Vec<Hash>,
}

crate::rpc_message!(TreeLeaves => Leaves, tag 40, "tree_leaves");

/// Every stored state with ring positions in `[first, last]` (one differing leaf), at most [`MAX_RANGE_ITEMS`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RangeStates {
    /// First position.
    pub first: u128,
    /// Last position (inclusive).
    pub last: u128,
}

/// Answer to [`RangeStates`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct States {
    /// (storage key, state) pairs, in storage order.
    pub items: Vec<(Bytes, Siblings)>,
}

crate::rpc_message!(RangeStates => States, tag 41, "range_states");

/// Merge these states into the receiver's replicas (an exchange, or a handoff's sweep before it drops a range).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MergeStates {
    /// (storage key, state) pairs.
    pub items: Vec<(Bytes, Siblings)>,
}

/// Answer to [`MergeStates`].
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Merged {
    /// Keys that changed.
    pub changed: u64,
}

crate::rpc_message!(MergeStates => Merged, tag 42, "merge_states");

/// Delete these tombstones, each only if the local state is exactly the one given.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reap {
    /// (storage key, tombstone state) pairs.
    pub items: Vec<(Bytes, Siblings)>,
}

/// Answer to [`Reap`].
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Reaped {
    /// Tombstones deleted.
    pub reaped: u64,
}

crate::rpc_message!(Reap => Reaped, tag 43, "reap");

/// What an exchange needs from a replica, local or remote.
pub trait Replica: Send + Sync {
    /// The root of partition `p` of `q`'s tree.
    fn root(&self, p: u32, q: u32) -> impl Future<Output = Option<Hash>> + Send;
    /// The leaves of partition `p` of `q`.
    fn leaves(&self, p: u32, q: u32) -> impl Future<Output = Option<Vec<Hash>>> + Send;
    /// Every (storage key, state) with ring positions in `[first, last]`.
    fn states(&self, first: u128, last: u128) -> impl Future<Output = Option<Vec<(Bytes, Siblings)>>> + Send;
    /// Merges states; returns how many keys changed.
    fn merge(&self, items: Vec<(Bytes, Siblings)>) -> impl Future<Output = Option<u64>> + Send;
    /// Deletes tombstones whose state is exactly the given one; returns how many it deleted.
    fn reap(&self, items: Vec<(Bytes, Siblings)>) -> impl Future<Output = Option<u64>> + Send;
}

/// What one exchange did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Leaves that differed.
    pub differing_leaves: usize,
    /// Keys changed on either side.
    pub keys_repaired: u64,
    /// Bytes that crossed between the replicas (hashes and states).
    pub bytes: u64,
}

fn items_bytes(items: &[(Bytes, Siblings)]) -> u64 {
    items.iter().map(|(k, s)| (k.len() + encode(s).len()) as u64).sum()
}

/// Compares partition `p` (of `q`) between `local` and `remote` and makes both hold the merge of the two.
pub async fn exchange<L: Replica, R: Replica>(local: &L, remote: &R, p: u32, q: u32) -> Option<Outcome> {
    // Top-down: the root settles an in-sync partition with one hash.
    let mut out = Outcome { bytes: 16, ..Outcome::default() };
    if local.root(p, q).await? == remote.root(p, q).await? {
        return Some(out);
    }
    let mine = local.leaves(p, q).await?;
    let theirs = remote.leaves(p, q).await?;
    out.bytes += (theirs.len() * 16) as u64;
    if mine.len() != theirs.len() {
        // Different Q: not comparable, and certainly not proof of equality.
        return None;
    }
    let first = HashTree::first_leaf(p as usize, q as usize);
    for (i, _) in mine.iter().zip(&theirs).enumerate().filter(|(_, (a, b))| a != b) {
        out.differing_leaves += 1;
        let (lo, hi) = HashTree::leaf_range(first + i);
        let remote_items = remote.states(lo, hi).await?;
        let local_items = local.states(lo, hi).await?;
        out.bytes += items_bytes(&remote_items) + items_bytes(&local_items);
        out.keys_repaired += local.merge(remote_items).await?;
        out.keys_repaired += remote.merge(local_items).await?;
    }
    Some(out)
}

/// This node's own replica.
pub struct LocalReplica {
    /// The store.
    pub store: Arc<KvStore>,
    /// Its hash tree.
    pub tree: Arc<HashTree>,
    /// The ranges it cannot vouch for until exchanged with every other replica.
    pub recovery: Arc<Recovery>,
}

/// What one scan of a partition found dead (see [`LocalReplica::dead_keys`]).
#[derive(Default)]
pub struct DeadKeys {
    /// Keys dead everywhere long enough to reap, with the state to reap.
    pub reapable: Vec<(Bytes, Siblings)>,
    /// Keys that still hold values past their deadline.
    pub expired: Vec<Bytes>,
}

/// Whether a key row is a collection's whose live values are all headers (its elements all removed, or cleared):
/// with no element row left under it, it is reaped like a tombstone.
fn emptied_collection(key_row: &Siblings) -> bool {
    crate::crdt::rows::has_header(key_row)
        && key_row.versions().iter().all(|v| matches!(v.value, None | Some(crate::versioning::Value::Header(_))))
}

impl LocalReplica {
    /// Answers [`TreeLeaves`].
    pub async fn serve_tree_leaves(&self, m: TreeLeaves) -> Result<Leaves, RemoteError> {
        if !self.store.is_built() {
            let message = "hash trees are still being built after a restart";
            return Err(RemoteError::new(RemoteErrorKind::Storage, message));
        }
        let leaves = match m.root_only {
            true => self.root(m.partition, m.partitions).await.map(|r| vec![r]),
            false => Replica::leaves(self, m.partition, m.partitions).await,
        };
        let no_leaves = || RemoteError::new(RemoteErrorKind::Misdirected, "no such partition in this node's tree");
        leaves.map(|leaves| Leaves { leaves }).ok_or_else(no_leaves)
    }

    /// Answers [`RangeStates`].
    pub fn serve_range_states(&self, m: RangeStates) -> Result<States, RemoteError> {
        let items = self.store.scan_positions(m.first, m.last, None, MAX_RANGE_ITEMS).map_err(refusal)?;
        Ok(States { items })
    }

    /// Answers [`MergeStates`].
    pub async fn serve_merge_states(&self, m: MergeStates) -> Result<Merged, RemoteError> {
        self.merge_items(m.items).await.map(|changed| Merged { changed }).map_err(refusal)
    }

    /// Answers [`Reap`].
    pub fn serve_reap(&self, m: Reap) -> Result<Reaped, RemoteError> {
        self.reap_items(&m.items).map(|reaped| Reaped { reaped }).map_err(refusal)
    }

    /// Deletes dead rows whose local state is exactly the given one: tombstones, element rows their key row
    /// cleared, and the key rows of emptied collections (each checked against this replica's own rows).
    pub fn reap_items(&self, items: &[(Bytes, Siblings)]) -> Result<u64, crate::storage::StorageError> {
        let mut reaped = 0;
        for (k, s) in items {
            let removed = match crate::storage::layout::parse(k) {
                // A live element row, or a collection's key row: dead only by the rows beside it.
                Some((user_key, row)) if s.has_live_value() && (!row.is_empty() || emptied_collection(s)) => {
                    let rows = self.store.scan_rows(user_key)?;
                    let key_row = rows.key_row().cloned().unwrap_or_default();
                    let dead = match row.is_empty() {
                        true => rows.len() == 1 && emptied_collection(&key_row),
                        false => s.versions().iter().all(|v| key_row.cleared().covers(v.dot)),
                    };
                    dead && self.store.remove_if_unchanged(k, s)?
                }
                _ => self.store.remove_if_equal(k, s)?,
            };
            reaped += u64::from(removed);
        }
        Ok(reaped)
    }

    /// One scan of `[first, last]` at `now_ms`: the rows dead since before `cutoff_ms`, which reaping may remove
    /// (tombstones and expired values; element rows their key row cleared, at once; the key row of a collection
    /// once no element row is left under it), and the keys still holding expired values, which
    /// [`LocalReplica::sweep_expired`] drops.
    pub fn dead_keys(&self, first: u128, last: u128, now_ms: u64, cutoff_ms: u64) -> DeadKeys {
        let mut dead = DeadKeys::default();
        let items = self.store.scan_positions(first, last, None, MAX_RANGE_ITEMS).unwrap_or_default();
        let complete = items.len() < MAX_RANGE_ITEMS;
        // The key row being visited, and whether it is a reaping candidate (decided once its rows are passed).
        let mut key: Option<(Bytes, Siblings, bool)> = None;
        let finish = |key: &mut Option<(Bytes, Siblings, bool)>, dead: &mut DeadKeys| {
            if let Some((k, s, true)) = key.take() {
                dead.reapable.push((k, s));
            }
        };
        for (k, s) in items {
            let Some((_, row)) = crate::storage::layout::parse(&k) else { continue };
            if row.is_empty() {
                finish(&mut key, &mut dead);
                let emptied = emptied_collection(&s) && s.versions().iter().all(|v| v.timestamp_ms < cutoff_ms);
                let reapable = emptied || s.dead_since(now_ms).is_some_and(|since| since < cutoff_ms);
                if !reapable && s.versions().iter().any(|v| v.is_expired(now_ms)) {
                    dead.expired.push(k.clone());
                }
                key = Some((k, s, reapable));
                continue;
            }
            let cleared = key.as_ref().is_some_and(|(kr, ks, _)| {
                k.starts_with(kr) && s.versions().iter().all(|v| ks.cleared().covers(v.dot))
            });
            if cleared || s.dead_since(now_ms).is_some_and(|since| since < cutoff_ms) {
                dead.reapable.push((k.clone(), s));
            }
            // A key row goes only once no row is left under it.
            if let Some((kr, _, reapable)) = key.as_mut()
                && k.starts_with(kr)
            {
                *reapable = false;
            }
        }
        // The last key row of a scan cut short may have rows past the cut.
        if complete {
            finish(&mut key, &mut dead);
        }
        dead
    }

    /// Drops the expired values of `keys` (storage keys) from this replica (Redis's active expiry): the values go,
    /// their dots stay covered, so the other replicas drop them too at the next exchange, and the emptied key is
    /// reaped once its grace period is over. Returns how many keys changed.
    pub async fn sweep_expired(&self, keys: Vec<Bytes>, now_ms: u64) -> Result<u64, crate::storage::StorageError> {
        self.change_each(keys.into_iter().map(|k| (k, ())).collect(), |s, ()| {
            let had_header = crate::crdt::rows::has_header(s);
            let dropped = s.drop_expired(now_ms);
            // An expired collection clears its elements, which reaping then removes.
            crate::crdt::rows::settle(s, had_header);
            dropped > 0
        })
        .await
    }

    /// Merges states into the store; returns how many keys changed.
    pub async fn merge_items(&self, items: Vec<(Bytes, Siblings)>) -> Result<u64, crate::storage::StorageError> {
        self.change_each(items, |s, state| {
            let before = s.clone();
            s.merge(state);
            *s != before
        })
        .await
    }

    /// Applies `change` to the stored state of each storage key with its item; a state it changed (it answers
    /// true) is written. Returns how many keys changed.
    async fn change_each<T: Send + Sync>(
        &self,
        items: Vec<(Bytes, T)>,
        change: impl Fn(&mut Siblings, &T) -> bool + Sync,
    ) -> Result<u64, crate::storage::StorageError> {
        let mut changed = 0;
        for (storage_key, item) in items {
            if crate::storage::layout::parse(&storage_key).is_none() {
                continue;
            }
            let did = self
                .store
                .update_row(storage_key, |s: &mut Siblings, _| {
                    Ok::<_, crate::storage::StorageError>(if change(s, &item) {
                        Decision::Write(true)
                    } else {
                        Decision::Keep(false)
                    })
                })
                .await?;
            changed += u64::from(did);
        }
        Ok(changed)
    }
}

impl Replica for LocalReplica {
    async fn root(&self, p: u32, q: u32) -> Option<Hash> {
        Some(HashTree::root(&self.tree.partition_leaves(p as usize, q as usize)?))
    }

    async fn leaves(&self, p: u32, q: u32) -> Option<Vec<Hash>> {
        self.tree.partition_leaves(p as usize, q as usize)
    }

    async fn states(&self, first: u128, last: u128) -> Option<Vec<(Bytes, Siblings)>> {
        self.store.scan_positions(first, last, None, MAX_RANGE_ITEMS).ok()
    }

    async fn merge(&self, items: Vec<(Bytes, Siblings)>) -> Option<u64> {
        self.merge_items(items).await.ok()
    }

    async fn reap(&self, items: Vec<(Bytes, Siblings)>) -> Option<u64> {
        self.reap_items(&items).ok()
    }
}

/// Another node's replica, over the internal protocol.
pub struct RemoteReplica<'a> {
    pool: &'a PeerPool,
    id: &'a str,
    addr: &'a str,
    timeout: Duration,
}

impl RemoteReplica<'_> {
    async fn tree(&self, p: u32, q: u32, root_only: bool) -> Option<Vec<Hash>> {
        let req = TreeLeaves { partition: p, partitions: q, root_only };
        self.pool.call_node(self.id, self.addr, req, self.timeout).await.ok().map(|l| l.leaves)
    }
}

impl Replica for RemoteReplica<'_> {
    async fn root(&self, p: u32, q: u32) -> Option<Hash> {
        self.tree(p, q, true).await?.first().copied()
    }

    async fn leaves(&self, p: u32, q: u32) -> Option<Vec<Hash>> {
        self.tree(p, q, false).await
    }

    async fn states(&self, first: u128, last: u128) -> Option<Vec<(Bytes, Siblings)>> {
        let states = self.pool.call_node(self.id, self.addr, RangeStates { first, last }, self.timeout).await;
        states.ok().map(|s| s.items)
    }

    async fn merge(&self, items: Vec<(Bytes, Siblings)>) -> Option<u64> {
        if items.is_empty() {
            return Some(0);
        }
        let merged = self.pool.call_node(self.id, self.addr, MergeStates { items }, self.timeout).await;
        merged.ok().map(|m| m.changed)
    }

    async fn reap(&self, items: Vec<(Bytes, Siblings)>) -> Option<u64> {
        let reaped = self.pool.call_node(self.id, self.addr, Reap { items }, self.timeout).await;
        reaped.ok().map(|r| r.reaped)
    }
}

/// Figures for INFO and metrics.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Exchanges completed.
    pub exchanges: u64,
    /// Keys changed by exchanges (on either side).
    pub keys_repaired: u64,
    /// Bytes exchanged.
    pub bytes: u64,
    /// Full passes over every partition this node replicates.
    pub full_passes: u64,
    /// When each partition was last exchanged with all its other replicas.
    pub last_exchange: BTreeMap<u32, Instant>,
    /// Tombstones reaped (on every replica) after proof that all held them.
    pub tombstones_reaped: u64,
}

/// The anti-entropy driver of this node.
pub struct AntiEntropy {
    cluster: Arc<Cluster>,
    local: LocalReplica,
    pool: Arc<PeerPool>,
    timeout: Duration,
    interval: Duration,
    grace: Duration,
    stats: Mutex<Stats>,
    cursor: Mutex<usize>,
    urgent: AtomicBool,
    wake: Notify,
}

impl AntiEntropy {
    /// A driver exchanging one partition every `interval`.
    pub fn new(
        cluster: Arc<Cluster>,
        local: LocalReplica,
        pool: Arc<PeerPool>,
        timeout: Duration,
        interval: Duration,
        grace: Duration,
    ) -> Arc<Self> {
        // A node recovering from a lost disk starts with a full pass: until each partition was exchanged with every
        // other replica, its not-found answers do not count toward read quorums.
        let urgent = !local.recovery.state().is_clear();
        Arc::new(Self {
            cluster,
            local,
            pool,
            timeout,
            interval,
            grace,
            stats: Mutex::new(Stats::default()),
            cursor: Mutex::new(0),
            urgent: AtomicBool::new(urgent),
            wake: Notify::new(),
        })
    }

    /// This node's replica (for the peer service).
    pub fn local(&self) -> &LocalReplica {
        &self.local
    }

    /// The figures so far.
    pub fn stats(&self) -> Stats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Starts a full pass now, without waiting between partitions (`ADMIN REPAIR`).
    pub fn repair_now(&self) {
        *self.cursor.lock().expect("cursor lock") = 0;
        self.urgent.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Exchanges until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut idle = false;
        loop {
            // An urgent pass runs back to back, except while there is nothing to exchange (no ring yet, a
            // transition): then it waits like any other, rather than spin.
            // A node recovering partitions exchanges them back to back too: until then its not-founds do not count.
            let urgent = self.urgent.load(Ordering::Acquire) || !self.local.recovery.is_clear();
            if idle || !urgent {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.interval) => {}
                    _ = self.wake.notified() => {}
                }
            } else if cancel.is_cancelled() {
                return;
            }
            idle = !self.step().await;
            // A pass with no other replica to reach (N = 1) never awaits: yield, so that back-to-back passes can
            // never hold a runtime worker from the node's other tasks.
            tokio::task::yield_now().await;
        }
    }

    /// Exchanges the next partition this node replicates with each of its other replicas; false when there was
    /// nothing to exchange, or nothing that calls for the next pass at once (see `run`).
    async fn step(&self) -> bool {
        let view = self.cluster.view();
        let Some(ring) = view.ring.as_ref() else { return false };
        let me = &self.cluster.me().member.id;
        let n = self.cluster.n();
        // A node recovering from a lost disk names its recovering partitions by the first ring it knows, before
        // any transfer of a transition could give it a range in full.
        self.local.recovery.resolve(|| view.held_ranges(me, n));
        // Not before the start-up count has built the tree: a partial tree would make every exchange a repair.
        if !self.local.store.is_built() {
            return false;
        }
        // Not for a range that is moving: handoff is moving it and its replica set is changing. A range that has
        // moved already has its final replicas, so the range a transfer gave this node recovers during the
        // transition.
        let q = ring.partitions();
        let mine: Vec<usize> =
            (0..q).filter(|&p| !view.is_moving(p) && view.replicas_of(p, n).iter().any(|id| id == me)).collect();
        let recovery = &self.local.recovery;
        if !recovery.is_clear() && view.next.is_none() {
            recovery.retain_held(&mine.iter().map(|&p| p as u32).collect::<Vec<_>>());
        }
        // Recovering partitions first: each one counts once it has met every other replica.
        let recovering: Vec<usize> = mine.iter().copied().filter(|&p| !recovery.vouches(p as u32)).collect();
        // What still recovers may all be moving (a range handoff just gave this node): it waits for the flip, and
        // meanwhile passes go at the normal pace, not back to back.
        let recovery_waits = !recovery.is_clear() && recovering.is_empty();
        let picked = {
            let mut c = self.cursor.lock().expect("cursor lock");
            let picked = schedule::pick(&mine, &recovering, *c);
            *c += usize::from(picked.is_some());
            picked
        };
        let Some((p, round_done)) = picked else { return false };
        if round_done {
            self.stats.lock().expect("stats lock").full_passes += 1;
            self.urgent.store(false, Ordering::Release);
        }
        let replicas = view.replicas_of(p, n);
        let peers: Vec<(String, String)> = replicas
            .iter()
            .filter(|id| *id != me && self.cluster.is_reachable(id))
            .filter_map(|id| view.members.get(id).map(|r| (id.clone(), r.info.peer_addr.clone())))
            .collect();
        let mut found = PassFound { replicas: replicas.len(), asked: peers.len(), ..PassFound::default() };
        let others: Vec<String> = replicas.iter().filter(|id| *id != me).cloned().collect();
        if others.is_empty() {
            // The only replica (N = 1, or a one-node cluster): no one to recover from, what it holds is all there is.
            self.local.recovery.exchanged(p as u32, me, &others);
        }
        for (id, addr) in &peers {
            let (id, addr) = (id.as_str(), addr.as_str());
            let remote = RemoteReplica { pool: &self.pool, id, addr, timeout: self.timeout * 4 };
            match exchange(&self.local, &remote, p as u32, q as u32).await {
                Some(o) => {
                    found.exchanged += 1;
                    // In sync only if this exchange found nothing to do (else: prove it again next pass).
                    found.in_sync += usize::from(o.differing_leaves == 0);
                    let mut s = self.stats.lock().expect("stats lock");
                    s.exchanges += 1;
                    s.keys_repaired += o.keys_repaired;
                    s.bytes += o.bytes;
                    s.last_exchange.insert(p as u32, Instant::now());
                    drop(s);
                    self.local.recovery.exchanged(p as u32, id, &others);
                    metrics::counter!("dynamo_antientropy_exchanges_total").increment(1);
                    metrics::counter!("dynamo_antientropy_keys_repaired_total").increment(o.keys_repaired);
                    metrics::counter!("dynamo_antientropy_bytes_total").increment(o.bytes);
                    if o.keys_repaired > 0 {
                        tracing::info!(partition = p, peer = %id, keys = o.keys_repaired, "anti-entropy repaired keys");
                    }
                }
                None => {
                    tracing::debug!(partition = p, peer = %id, "anti-entropy exchange failed");
                }
            }
        }
        if found.may_reap() {
            self.reap(p, &peers).await;
        }
        // A pass that reached no other replica never waits back to back. (Found by the simulator: a recovering node
        // cut off from its peers, or backing off from them, passed back to back without ever awaiting, spinning a
        // core until a peer returned.)
        found.next_at_once(!recovery_waits || self.urgent.load(Ordering::Acquire))
    }

    /// Every replica of partition `p` holds identical states (equal roots, proven just now): tombstones older than
    /// the grace period can go everywhere. Each replica deletes a tombstone only if its state is exactly the one
    /// reaped, so a write that raced in is kept. A replica that misses the reap merges the tombstone back from the
    /// others (harmless) and the next proof reaps it again.
    /// Expired values are dropped from this replica on the way (Redis's active expiry).
    async fn reap(&self, p: usize, peers: &[(String, String)]) {
        let cutoff = crate::versioning::clock::now_ms().saturating_sub(self.grace.as_millis() as u64);
        let (first, last) = {
            let view = self.cluster.view();
            let Some(ring) = view.ring.as_ref() else { return };
            ring.partition_range(p)
        };
        let now = crate::versioning::clock::now_ms();
        let DeadKeys { reapable: tombstones, expired } = self.local.dead_keys(first, last, now, cutoff);
        if !expired.is_empty() {
            match self.local.sweep_expired(expired, now).await {
                Ok(n) => metrics::counter!("dynamo_expired_keys_swept_total").increment(n),
                Err(e) => tracing::warn!(error = %e, "dropping expired values failed"),
            }
        }
        if tombstones.is_empty() {
            return;
        }
        for (id, addr) in peers {
            let remote = RemoteReplica { pool: &self.pool, id, addr, timeout: self.timeout * 4 };
            if remote.reap(tombstones.clone()).await.is_none() {
                return;
            }
        }
        match self.local.reap_items(&tombstones) {
            Ok(n) => {
                self.stats.lock().expect("stats lock").tombstones_reaped += n;
                metrics::counter!("dynamo_tombstones_reaped_total").increment(n);
                tracing::debug!(partition = p, reaped = n, "tombstones reaped");
            }
            Err(e) => tracing::warn!(error = %e, "reaping tombstones failed"),
        }
    }
}

#[cfg(test)]
mod tests;
