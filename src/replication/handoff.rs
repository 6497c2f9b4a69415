//! Handoff (paper §4.9): when a transition adds this node to the replicas of a key range, this node pulls the
//! range from one of its current replicas, verifies it, and marks the transfer done so the ring can flip.
//!
//! * Pull, in batches, in storage order, merging every state (idempotent, order-free): a retry or a concurrent
//!   write can never make things worse.
//! * Resumable: the cursor (last storage key received) is persisted after every batch, so a transfer broken by a
//!   crash resumes where it stopped instead of restarting from zero.
//! * Verified: the source's digest of the range is compared with ours; when they differ (we may hold extra or
//!   newer states, or writes raced the stream) a second full pass merges everything again and must change nothing
//!   for the transfer to count as done.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::replica::refusal;
use super::transfer::{Effect, Next, Pull, Step};
use crate::antientropy::{MergeStates, Merged};
use crate::cluster::Cluster;
use crate::membership::Transfer;
use crate::rpc::{PeerPool, RemoteError, RemoteErrorKind};
use crate::storage::KvStore;
use crate::storage::recovery::Recovery;
use crate::storage::store::Decision;
use crate::versioning::Siblings;

/// Keys per batch.
const BATCH: u32 = 512;
/// Most keys one batch may carry, whatever the receiver asks.
const MAX_BATCH: usize = 4096;
/// How often ranges this node no longer replicates are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often the driver looks for work.
const POLL: Duration = Duration::from_millis(200);
/// File of the persisted cursors.
const CURSOR_FILE: &str = "handoff.cursors";

/// Forgets the persisted cursors under `data_dir` (an upgrade of the storage layout invalidates them: the transfers
/// start over).
pub fn forget_cursors(data_dir: &std::path::Path) -> Result<(), crate::storage::StorageError> {
    let path = data_dir.join(CURSOR_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => {
            Err(crate::storage::StorageError::Io { action: "removing", path: path.display().to_string(), source })
        }
    }
}

/// Why a transfer did not complete (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// No source answered.
    #[error("no source of partition {partition} answered")]
    NoSource {
        /// The range.
        partition: u32,
    },
    /// The received range could not be recorded as recovering.
    #[error("partition {partition}: could not record it as recovering: {reason}")]
    Recovery {
        /// The range.
        partition: u32,
        /// Why.
        reason: String,
    },
    /// A new plan replaced the one the transfer belonged to while it ran.
    #[error("partition {partition}: the ring changed during the transfer")]
    Superseded {
        /// The range.
        partition: u32,
    },
    /// The verification pass still changed data.
    #[error("partition {partition} did not verify: the check pass changed {changed} keys")]
    Unverified {
        /// The range.
        partition: u32,
        /// Keys the last pass changed.
        changed: u64,
    },
}

/// What `admin status` shows of a transfer.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The key range.
    pub partition: u32,
    /// The source replica.
    pub from: String,
    /// This node.
    pub to: String,
    /// Keys received.
    pub keys: u64,
    /// Bytes received (values and clocks, as encoded).
    pub bytes: u64,
    /// Keys the source holds in the range (from its digest), when known.
    pub total_keys: Option<u64>,
    /// When the transfer started.
    pub started: Instant,
    /// Where the transfer is.
    pub phase: Phase,
}

/// Where a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Receiving the range, batch by batch.
    Streaming,
    /// Comparing digests with the source (and streaming once more if they differ).
    Verifying,
    /// Every replica of the range was removed: nothing to receive.
    Empty,
}

impl Phase {
    /// The word the admin views show.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Streaming => "streaming",
            Phase::Verifying => "verifying",
            Phase::Empty => "empty",
        }
    }
}

/// Why a pull from one source stopped.
enum PullError {
    /// The source failed or stopped answering (or this node could not take a batch): another source may serve.
    Source,
    /// The transfer cannot complete, from this source or another.
    Transfer(HandoffError),
}

/// Stream part of a key range to a node that is receiving it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandoffPull {
    /// The key range (partition).
    pub partition: u32,
    /// Resume after this storage key (exclusive); `None` from the start.
    pub after: Option<Bytes>,
    /// Most keys in the answer.
    pub limit: u32,
}

/// Answer to [`HandoffPull`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandoffBatch {
    /// (storage key, state) of each key, in storage order.
    pub items: Vec<(Bytes, Siblings)>,
    /// Whether the range is exhausted.
    pub done: bool,
}

crate::rpc_message!(HandoffPull => HandoffBatch, tag 30, "handoff_pull");

/// Digest of a key range, to verify a handoff.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DigestRange {
    /// The key range (partition).
    pub partition: u32,
}

/// A source's digest of a range: answer to [`DigestRange`].
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct RangeDigest {
    /// Keys in the range.
    pub keys: u64,
    /// Order-independent hash of every (key, state).
    pub hash: [u8; 16],
    /// The source is recovering the range after a lost disk: its copy may lack acknowledged writes.
    pub recovering: bool,
}

crate::rpc_message!(DigestRange => RangeDigest, tag 31, "range_digest");

/// A range this node cannot place (it knows no ring yet).
fn no_ring() -> RemoteError {
    RemoteError::new(RemoteErrorKind::Misdirected, "no ring yet")
}

#[derive(Default, Serialize, Deserialize)]
struct Cursors {
    /// (ring version, partition) → last storage key merged.
    by_transfer: BTreeMap<(u64, u32), Bytes>,
}

/// The handoff driver of this node.
pub struct Handoff {
    cluster: Arc<Cluster>,
    store: Arc<KvStore>,
    recovery: Arc<Recovery>,
    pool: Arc<PeerPool>,
    timeout: Duration,
    cursor_path: PathBuf,
    cursors: Mutex<Cursors>,
    active: Mutex<Option<Progress>>,
    completed: Mutex<Vec<Progress>>,
}

impl Handoff {
    /// A driver for this node, persisting its cursors under `data_dir`.
    pub fn new(
        cluster: Arc<Cluster>,
        store: Arc<KvStore>,
        recovery: Arc<Recovery>,
        pool: Arc<PeerPool>,
        timeout: Duration,
        data_dir: PathBuf,
    ) -> Arc<Self> {
        let cursor_path = data_dir.join(CURSOR_FILE);
        let cursors = std::fs::read(&cursor_path).ok().and_then(|b| postcard::from_bytes(&b).ok()).unwrap_or_default();
        Arc::new(Self {
            cluster,
            store,
            recovery,
            pool,
            timeout,
            cursor_path,
            cursors: Mutex::new(cursors),
            active: Mutex::new(None),
            completed: Mutex::new(Vec::new()),
        })
    }

    /// The transfer running now, if any.
    pub fn active(&self) -> Option<Progress> {
        self.active.lock().expect("progress lock").clone()
    }

    /// Transfers completed by this node in the current transition.
    pub fn completed(&self) -> Vec<Progress> {
        self.completed.lock().expect("progress lock").clone()
    }

    /// Runs transfers whenever a transition needs this node, until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let me = self.cluster.me().member.id.clone();
        let mut last_version = 0;
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep().await;
            }
            let state = self.cluster.state();
            if state.ring.version != last_version {
                last_version = state.ring.version;
                self.completed.lock().expect("progress lock").clear();
                self.forget_other_versions(last_version);
            }
            if state.ring.next.is_none() {
                continue;
            }
            let (version, author) = (state.ring.version, state.ring.author.clone());
            let mine: Vec<Transfer> = state
                .required_transfers(self.cluster.n())
                .into_iter()
                .filter(|t| t.to == me && !state.ring.done.contains(&(t.partition, me.clone())))
                .collect();
            for t in mine {
                let now = self.cluster.state();
                if cancel.is_cancelled() || now.ring.version != version || now.ring.author != author {
                    break;
                }
                match self.transfer(&t, version, &author).await {
                    Ok(p) => {
                        self.completed.lock().expect("progress lock").push(p);
                        let _ = self.cluster.update(|s| {
                            s.mark_done_for(version, &author, t.partition, &me);
                            Ok(())
                        });
                        metrics::counter!("dynamo_handoff_transfers_total").increment(1);
                    }
                    Err(e) => {
                        metrics::counter!("dynamo_handoff_errors_total").increment(1);
                        tracing::warn!(partition = t.partition, error = %e, "handoff did not complete; will retry");
                    }
                }
                *self.active.lock().expect("progress lock") = None;
            }
        }
    }

    /// Pushes the keys of ranges this node no longer replicates (it did under an older ring) to the current
    /// replicas, and deletes them here once every replica acknowledged: a write that only reached a dropped replica
    /// still reaches the new ones, and no stale copy is left behind to come back later. During a transition a range
    /// is swept only if this node replicates it in neither ring (it is no source of the transition then), and goes
    /// to the replicas of both: a node that left must not wait for, nor skip, a transition it takes no part in.
    /// Returns the keys moved, or `None` if some replica did not answer (the data stays until the next sweep).
    pub async fn sweep(&self) -> Option<u64> {
        let view = self.cluster.view();
        let ring = view.ring.as_ref()?;
        let me = &self.cluster.me().member.id;
        let n = self.cluster.n();
        let mut moved = 0;
        for p in 0..ring.partitions() {
            let mut replicas: Vec<String> = ring.preference_list(p).take(n).map(|m| m.id.clone()).collect();
            for m in view.next.iter().flat_map(|next| next.preference_list(p).take(n)) {
                if !replicas.contains(&m.id) {
                    replicas.push(m.id.clone());
                }
            }
            if replicas.contains(me) {
                continue;
            }
            let (first, last) = ring.partition_range(p);
            loop {
                let items = self.store.scan_positions(first, last, None, BATCH as usize).ok()?;
                if items.is_empty() {
                    break;
                }
                for id in &replicas {
                    let addr = view.members.get(id)?.info.peer_addr.clone();
                    let req = MergeStates { items: items.clone() };
                    let Ok(Merged { .. }) = self.pool.call_node(id, &addr, req, self.timeout * 4).await else {
                        return None;
                    };
                }
                let mut removed = 0;
                for (k, s) in &items {
                    removed += u64::from(self.store.remove_if_unchanged(k, s).ok()?);
                }
                moved += removed;
                if removed == 0 || items.len() < BATCH as usize {
                    break;
                }
            }
        }
        if moved > 0 {
            tracing::info!(keys = moved, "moved the keys of ranges this node no longer replicates to their replicas");
            metrics::counter!("dynamo_handoff_swept_keys_total").increment(moved);
        }
        Some(moved)
    }

    /// Sweeps until nothing is left or `timeout` passes (a leaving node, before it exits).
    pub async fn sweep_until_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.sweep().await == Some(0) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Receives one key range from the first source that answers; returns its final progress.
    async fn transfer(&self, t: &Transfer, version: u64, author: &str) -> Result<Progress, HandoffError> {
        let me = &self.cluster.me().member.id;
        let view = self.cluster.view();
        let mut sources: Vec<&String> = t.sources.iter().filter(|s| *s != me).collect();
        if sources.is_empty() {
            // Every replica the range had was removed by an operator (`admin remove`): there is nothing to
            // rebuild it from, and waiting would block the transition for good. It starts empty here.
            tracing::error!(
                partition = t.partition,
                "every replica of this key range was removed: it starts empty here, and the data only those \
                 replicas held is lost (restore it from a backup if it matters)"
            );
            metrics::counter!("dynamo_handoff_ranges_lost_total").increment(1);
            let empty = Progress {
                partition: t.partition,
                from: "(none: every replica was removed)".into(),
                to: me.clone(),
                keys: 0,
                bytes: 0,
                total_keys: Some(0),
                started: Instant::now(),
                phase: Phase::Empty,
            };
            return self.transfer_done(t.partition, empty);
        }
        // Reachable sources first.
        sources.sort_by_key(|s| !self.cluster.is_reachable(s));
        // A source recovering the range after a lost disk may lack writes it acknowledged: it serves only when no
        // other source answers. Whichever source serves, the range recovers here afterwards (see `transfer_done`).
        let mut recovering = Vec::new();
        for source in sources {
            let Some(addr) = view.members.get(source).map(|m| m.info.peer_addr.clone()) else { continue };
            let Some(digest) = self.digest_remote(source, &addr, t.partition).await else {
                self.cluster.note_reachable(source, false);
                continue;
            };
            if digest.recovering {
                recovering.push((source, addr, digest));
                continue;
            }
            match self.pull_from(t, (version, author), source, &addr, digest).await {
                Ok(p) => return self.transfer_done(t.partition, p),
                Err(PullError::Transfer(e)) => return Err(e),
                Err(PullError::Source) => self.cluster.note_reachable(source, false),
            }
        }
        for (source, addr, digest) in recovering {
            match self.pull_from(t, (version, author), source, &addr, digest).await {
                Ok(p) => {
                    tracing::warn!(partition = t.partition, from = %source, "received a range from a recovering replica");
                    return self.transfer_done(t.partition, p);
                }
                Err(PullError::Transfer(e)) => return Err(e),
                Err(PullError::Source) => self.cluster.note_reachable(source, false),
            }
        }
        Err(HandoffError::NoSource { partition: t.partition })
    }

    /// A received range is as complete as its one source, which may have missed writes that other replicas took
    /// (W of N), and writes that reach this node best-effort until the flip can be missed too: the range recovers
    /// here, by anti-entropy with every other replica after the flip, before this node vouches for a not-found in
    /// it. Persisted before the transfer counts as done.
    fn transfer_done(&self, partition: u32, progress: Progress) -> Result<Progress, HandoffError> {
        self.recovery.taint(&[partition]).map_err(|e| HandoffError::Recovery { partition, reason: e.to_string() })?;
        Ok(progress)
    }

    /// Streams and verifies from one source: runs a [`Pull`] machine, doing the requests, merges and cursor saves
    /// it asks for. `plan` is the ring (version, author) the transfer belongs to: once the ring moves on, the pull
    /// ends.
    async fn pull_from(
        &self,
        t: &Transfer,
        (version, author): (u64, &str),
        source: &str,
        addr: &str,
        remote_digest: RangeDigest,
    ) -> Result<Progress, PullError> {
        let (partition, me) = (t.partition, self.cluster.me().member.id.clone());
        let mut progress = Progress {
            partition,
            from: source.to_string(),
            to: me,
            keys: 0,
            bytes: 0,
            total_keys: Some(remote_digest.keys),
            started: Instant::now(),
            phase: Phase::Streaming,
        };
        let resume = self.cursors.lock().expect("cursor lock").by_transfer.get(&(version, partition)).cloned();
        if resume.is_some() {
            tracing::info!(partition, "resuming an interrupted handoff");
        }
        let mut pull = Pull::new(resume);
        loop {
            let ring = self.cluster.view();
            let effects = if ring.ring_version != version || ring.ring_author != author {
                pull.on_ring_changed()
            } else {
                Vec::new()
            };
            self.apply_effects(version, partition, effects);
            let effects = match pull.next() {
                Next::Batch { after } => match self.pull_batch(partition, source, addr, after, &mut progress).await {
                    Some((last, done, changed)) => pull.on_batch(last, done, changed),
                    None => {
                        pull.on_failure();
                        Vec::new()
                    }
                },
                Next::Compare => {
                    let local = self
                        .cluster
                        .view()
                        .partition_range(partition)
                        .and_then(|(first, last)| self.store.digest_positions(first, last).ok());
                    match (local, self.digest_remote(source, addr, partition).await) {
                        (Some(local), Some(remote)) => pull.on_compare(local == (remote.keys, remote.hash)),
                        _ => {
                            pull.on_failure();
                            Vec::new()
                        }
                    }
                }
                Next::Done => {
                    tracing::info!(partition, from = source, keys = progress.keys, "handoff complete and verified");
                    return Ok(progress);
                }
                Next::SourceFailed => return Err(PullError::Source),
                Next::Unverified { changed } => {
                    return Err(PullError::Transfer(HandoffError::Unverified { partition, changed }));
                }
                Next::Superseded => return Err(PullError::Transfer(HandoffError::Superseded { partition })),
            };
            self.apply_effects(version, partition, effects);
            progress.phase = match pull.step() {
                Step::Streaming => Phase::Streaming,
                Step::Verifying => Phase::Verifying,
            };
            *self.active.lock().expect("progress lock") = Some(progress.clone());
        }
    }

    /// Asks `source` for the batch after `after` and merges it here; returns its last key, whether the range ended
    /// with it and how many keys it changed, or `None` when the source failed or a merge did.
    async fn pull_batch(
        &self,
        partition: u32,
        source: &str,
        addr: &str,
        after: Option<Bytes>,
        progress: &mut Progress,
    ) -> Option<(Option<Bytes>, bool, u64)> {
        let req = HandoffPull { partition, after, limit: BATCH };
        let Ok(HandoffBatch { items, done }) = self.pool.call_node(source, addr, req, self.timeout * 4).await else {
            return None;
        };
        let mut changed = 0;
        for (storage_key, state) in &items {
            if crate::storage::layout::parse(storage_key).is_none() {
                continue;
            }
            progress.bytes += storage_key.len() as u64 + crate::storage::store::encode(state).len() as u64;
            progress.keys += 1;
            changed += u64::from(self.merge(storage_key.clone(), state).await.ok()?);
        }
        metrics::counter!("dynamo_handoff_keys_total").increment(items.len() as u64);
        Some((items.last().map(|(k, _)| k.clone()), done, changed))
    }

    /// Merges one row, by its storage key.
    async fn merge(&self, storage_key: Bytes, state: &Siblings) -> Result<bool, crate::storage::StorageError> {
        self.store
            .update_row(storage_key, |s: &mut Siblings, _| {
                let before = s.clone();
                s.merge(state);
                Ok(if *s == before { Decision::Keep(false) } else { Decision::Write(true) })
            })
            .await
    }

    /// Records what a pull asked for: its cursor saved or forgotten.
    fn apply_effects(&self, version: u64, partition: u32, effects: Vec<Effect>) {
        for effect in effects {
            let mut cursors = self.cursors.lock().expect("cursor lock");
            match effect {
                Effect::SaveCursor(key) => cursors.by_transfer.insert((version, partition), key),
                Effect::ForgetCursor => cursors.by_transfer.remove(&(version, partition)),
            };
            drop(cursors);
            self.save_cursors();
        }
    }

    async fn digest_remote(&self, source: &str, addr: &str, partition: u32) -> Option<RangeDigest> {
        self.pool.call_node(source, addr, DigestRange { partition }, self.timeout * 4).await.ok()
    }

    /// Answers [`HandoffPull`]: the next batch of a range this node holds.
    pub fn serve_pull(&self, m: HandoffPull) -> Result<HandoffBatch, RemoteError> {
        let (first, last) = self.cluster.view().partition_range(m.partition).ok_or_else(no_ring)?;
        let limit = (m.limit as usize).clamp(1, MAX_BATCH);
        let items = self.store.scan_positions(first, last, m.after.as_deref(), limit).map_err(refusal)?;
        Ok(HandoffBatch { done: items.len() < limit, items })
    }

    /// Answers [`DigestRange`]: this node's digest of a range, and whether it is still recovering it.
    pub fn serve_digest(&self, m: DigestRange) -> Result<RangeDigest, RemoteError> {
        let (first, last) = self.cluster.view().partition_range(m.partition).ok_or_else(no_ring)?;
        let (keys, hash) = self.store.digest_positions(first, last).map_err(refusal)?;
        Ok(RangeDigest { keys, hash, recovering: !self.recovery.vouches(m.partition) })
    }

    fn forget_other_versions(&self, version: u64) {
        let mut c = self.cursors.lock().expect("cursor lock");
        let before = c.by_transfer.len();
        c.by_transfer.retain(|(v, _), _| *v == version);
        if c.by_transfer.len() != before {
            drop(c);
            self.save_cursors();
        }
    }

    fn save_cursors(&self) {
        let bytes = postcard::to_stdvec(&*self.cursors.lock().expect("cursor lock")).expect("cursors serialize");
        let tmp = self.cursor_path.with_extension("tmp");
        // A lost cursor only means re-sending part of a range (merges are idempotent): no fsync needed.
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &self.cursor_path)) {
            tracing::warn!(error = %e, "could not save handoff cursors");
        }
    }
}
